//! Customer tier and the simple routing rules: the first rule whose conditions all hold
//! decides skill and priority; otherwise the required default. Every decision carries the
//! trace of the rules tried, for `switchboard route` and the envelope's `route.reason`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, DefaultRoute, RuleConfig};

/// Tiers and rules in force; rebuilt and swapped whole on reload, so one message never sees
/// half of an old config and half of a new one.
#[derive(Debug, Clone)]
pub struct Policy {
    default_tier: String,
    customers: BTreeMap<String, String>,
    rules: Vec<Rule>,
    default: DefaultRoute,
}

#[derive(Debug, Clone)]
struct Rule {
    config: RuleConfig,
    /// Keywords lowercased once, at load.
    keywords: Vec<String>,
}

/// What the policy is asked about.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// Channel kind.
    pub channel: &'a str,
    /// `{kind}:{connector}:{user}`.
    pub conversation_id: &'a str,
    /// CRM customer id, when known.
    pub customer_id: Option<&'a str>,
    /// A tier given by the caller (the `route` command's `--tier`), overriding lookup.
    pub tier_override: Option<&'a str>,
    /// The message's words, if any.
    pub text: Option<&'a str>,
    /// A skill the customer already chose in the channel (an IVR digit); it wins over rules.
    pub skill_hint: Option<&'a str>,
}

/// The routing decision with its explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Customer tier.
    pub tier: String,
    /// Where the tier came from: `override`, `customers[conversation]`, `customers[customer]`, `default`.
    pub tier_source: String,
    /// Skill.
    pub skill: String,
    /// Priority 0-9.
    pub priority: u8,
    /// Routing key on the inbound exchange.
    pub queue_key: String,
    /// Name of the rule that decided (`default` when none matched).
    pub rule: String,
    /// One line on why.
    pub reason: String,
    /// Every rule tried, in order.
    pub tried: Vec<RuleTrace>,
}

/// One rule's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct RuleTrace {
    /// Rule name.
    pub rule: String,
    /// Whether it matched.
    pub matched: bool,
    /// Why or why not.
    pub why: String,
}

impl Policy {
    /// The policy `config` describes.
    pub fn from_config(config: &Config) -> Self {
        Self {
            default_tier: config.tiers.default.clone(),
            customers: config.tiers.customers.clone(),
            rules: config
                .routing
                .rules
                .iter()
                .map(|rule| Rule {
                    keywords: rule.keywords.iter().map(|k| k.to_lowercase()).collect(),
                    config: rule.clone(),
                })
                .collect(),
            default: config.routing.default.clone(),
        }
    }

    /// Looks up the tier and routes.
    pub fn decide(&self, subject: &Subject<'_>) -> Decision {
        let (tier, tier_source) = self.tier(subject);
        if let Some(skill) = subject
            .skill_hint
            .filter(|s| crate::broker::topic::is_word(s))
        {
            return Decision {
                skill: skill.to_owned(),
                priority: self.default.priority,
                queue_key: format!("{skill}.{tier}"),
                rule: "channel_choice".to_owned(),
                reason: format!("the customer chose {skill} in the channel"),
                tier,
                tier_source,
                tried: Vec::new(),
            };
        }
        let text = subject.text.map(str::to_lowercase);
        let mut tried = Vec::new();
        for rule in &self.rules {
            let verdict = rule.verdict(subject.channel, &tier, text.as_deref());
            let matched = verdict.is_ok();
            let why = verdict.unwrap_or_else(|why| why);
            tried.push(RuleTrace {
                rule: rule.config.name.clone(),
                matched,
                why: why.clone(),
            });
            if matched {
                let queue_key = rule
                    .config
                    .queue_key
                    .clone()
                    .unwrap_or_else(|| format!("{}.{tier}", rule.config.skill));
                return Decision {
                    skill: rule.config.skill.clone(),
                    priority: rule.config.priority.unwrap_or(self.default.priority),
                    queue_key,
                    rule: rule.config.name.clone(),
                    reason: why,
                    tier,
                    tier_source,
                    tried,
                };
            }
        }
        Decision {
            skill: self.default.skill.clone(),
            priority: self.default.priority,
            queue_key: format!("{}.{tier}", self.default.skill),
            rule: "default".to_owned(),
            reason: "no rule matched".to_owned(),
            tier,
            tier_source,
            tried,
        }
    }

    fn tier(&self, subject: &Subject<'_>) -> (String, String) {
        if let Some(tier) = subject.tier_override {
            return (tier.to_owned(), "override".to_owned());
        }
        if let Some(tier) = self.customers.get(subject.conversation_id) {
            return (tier.clone(), "customers[conversation]".to_owned());
        }
        if let Some(tier) = subject.customer_id.and_then(|id| self.customers.get(id)) {
            return (tier.clone(), "customers[customer]".to_owned());
        }
        (self.default_tier.clone(), "default".to_owned())
    }
}

impl Rule {
    /// `Ok(why it matched)` or `Err(why not)`.
    fn verdict(&self, channel: &str, tier: &str, text: Option<&str>) -> Result<String, String> {
        let rule = &self.config;
        let mut why = Vec::new();
        if !rule.channels.is_empty() {
            if !rule.channels.iter().any(|c| c == channel) {
                return Err(format!("channel {channel} not in {:?}", rule.channels));
            }
            why.push(format!("channel {channel}"));
        }
        if !rule.tiers.is_empty() {
            if !rule.tiers.iter().any(|t| t == tier) {
                return Err(format!("tier {tier} not in {:?}", rule.tiers));
            }
            why.push(format!("tier {tier}"));
        }
        if !self.keywords.is_empty() {
            let found =
                text.and_then(|text| self.keywords.iter().find(|k| text.contains(k.as_str())));
            match found {
                Some(keyword) => why.push(format!("keyword {keyword:?}")),
                None => return Err("no keyword found".to_owned()),
            }
        }
        if why.is_empty() {
            why.push("no conditions".to_owned());
        }
        Ok(why.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let config = crate::config::load_str(
            "test.toml",
            r##"
[tiers]
names = ["standard", "vip"]
customers = { "app:shop:u-vip" = "vip", "crm-7" = "vip" }

[[queues]]
name = "q"
bindings = ["#"]

[[routing.rules]]
name = "vip-claims"
tiers = ["vip"]
keywords = ["Damaged", "破损"]
skill = "claims"
priority = 8

[[routing.rules]]
name = "tracking"
keywords = ["where is", "包裹"]
skill = "tracking"

[routing.default]
skill = "general"
priority = 1
"##,
        )
        .unwrap();
        Policy::from_config(&config)
    }

    fn subject<'a>(conversation: &'a str, text: &'a str) -> Subject<'a> {
        Subject {
            channel: "app",
            conversation_id: conversation,
            customer_id: None,
            tier_override: None,
            text: Some(text),
            skill_hint: None,
        }
    }

    #[test]
    fn first_matching_rule_wins_with_its_tier_in_the_key() {
        let d = policy().decide(&subject("app:shop:u-vip", "my parcel is DAMAGED"));
        assert_eq!(
            (d.rule.as_str(), d.queue_key.as_str(), d.priority),
            ("vip-claims", "claims.vip", 8)
        );
        assert_eq!(d.tier_source, "customers[conversation]");
        assert!(d.reason.contains("keyword \"damaged\""), "{}", d.reason);
    }

    #[test]
    fn falls_through_to_later_rules_and_the_default() {
        let p = policy();
        let d = p.decide(&subject("app:shop:u-1", "我的包裹在哪"));
        assert_eq!(
            (d.rule.as_str(), d.queue_key.as_str(), d.priority),
            ("tracking", "tracking.standard", 1)
        );
        assert!(!d.tried[0].matched && d.tried[0].why.contains("tier standard"));
        let d = p.decide(&subject("app:shop:u-1", "hello"));
        assert_eq!(
            (d.rule.as_str(), d.queue_key.as_str()),
            ("default", "general.standard")
        );
        assert_eq!(d.tried.len(), 2);
    }

    #[test]
    fn a_skill_chosen_in_the_channel_wins_over_rules() {
        let mut s = subject("telephony:hotline:+8613800138000", "damaged");
        s.skill_hint = Some("tracking");
        let d = policy().decide(&s);
        assert_eq!(
            (d.rule.as_str(), d.queue_key.as_str()),
            ("channel_choice", "tracking.standard")
        );
        s.skill_hint = Some("Not A Word");
        assert_eq!(
            policy().decide(&s).rule,
            "default",
            "an invalid hint is ignored"
        );
    }

    #[test]
    fn customer_id_and_override_set_the_tier() {
        let p = policy();
        let mut s = subject("app:shop:u-2", "damaged");
        s.customer_id = Some("crm-7");
        assert_eq!(p.decide(&s).rule, "vip-claims");
        s.customer_id = None;
        s.tier_override = Some("vip");
        assert_eq!(p.decide(&s).tier_source, "override");
    }
}
