//! The routing engine: what a message says (normalized text, intent, entities, abusive
//! words), who sent it (tier and CRM identity), and where it goes (ordered rules, a
//! channel's own choice, a helpdesk's transfer, stickiness, overflow), with an explanation
//! of every step.
//!
//! The work is split so the decision itself stays pure and testable:
//! 1. [`Policy::analyze`] (pure): normalization, intents, entities, abuse.
//! 2. [`Policy::enrich`] (async, bounded): tier lookup and the optional hooks.
//! 3. [`Policy::finish`] (async, inside the conversation's lock): the stickiness record is
//!    read, [`Policy::decide`] (pure) decides, the overflow check may move the message, and
//!    the record is written back.
//!
//! A policy is built whole from one config and swapped whole on reload, and a message holds
//! one policy from start to end, so it never sees half of an old config and half of a new
//! one.

pub mod calendar;
pub mod carriers;
pub mod entities;
pub mod explain;
pub mod hooks;
pub mod intents;
pub mod lexicon;
pub mod normalize;
pub mod overflow;
pub mod rules;
pub mod stickiness;
pub mod tiers;

use std::time::Duration;

use serde::Serialize;
use switchboard_sdk::{Entity, Event, Intent, KvStore};
use time::OffsetDateTime;

use crate::broker::topic;
use crate::config::{Config, QueueConfig};
use calendar::Calendar;
use entities::Extractor;
use hooks::{ClassifierAnswer, HookResult, Hooks};
use intents::{Classified, IntentScore, Intents};
use lexicon::{Lexicon, LexiconBuilder, Owner};
use normalize::Normalized;
use overflow::Backlog;
use rules::{Rule, RuleContext};
use stickiness::Sticky;
use tiers::{Ids, TierLookup, Tiers};

/// Abusive words used when `routing.abuse.words` is not given: common Mandarin, Cantonese
/// and English insults, written as the normalizer leaves them (lowercase, Simplified).
pub const DEFAULT_ABUSE_WORDS: &[&str] = &[
    "傻逼",
    "傻b",
    "煞笔",
    "沙比",
    "草泥马",
    "操你妈",
    "操你",
    "艹你",
    "你妈的",
    "他妈的",
    "去你妈",
    "狗日的",
    "王八蛋",
    "混蛋",
    "贱人",
    "去死",
    "死全家",
    "滚蛋",
    "垃圾公司",
    "仆街",
    "屌你",
    "戆鸠",
    "痴线",
    "on9",
    "fuck*",
    "motherfucker",
    "shit",
    "shitty",
    "bitch",
    "asshole",
    "bastard",
    "dickhead",
    "cunt",
    "screw you",
    "moron",
    "stfu",
];

/// Flags that exist before the decision and that rules may test.
pub const RULE_FLAGS: [&str; 4] = [
    "abusive",
    "tier_lookup_failed",
    "shipment_lookup_failed",
    "classifier_failed",
];

/// What the policy is asked about.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// Channel kind.
    pub channel: &'a str,
    /// Connector id.
    pub connector: &'a str,
    /// `{kind}:{connector}:{user}`.
    pub conversation_id: &'a str,
    /// The user's id in the channel.
    pub user: &'a str,
    /// CRM customer id, when the channel knows it.
    pub customer_id: Option<&'a str>,
    /// Phone number (E.164), when the channel knows it.
    pub phone: Option<&'a str>,
    /// A tier given by the caller (the `route` command's `--tier`), overriding lookup.
    pub tier_override: Option<&'a str>,
    /// The message's words, if any.
    pub text: Option<&'a str>,
    /// A skill the customer already chose in the channel (an IVR digit); it wins over rules.
    pub skill_hint: Option<&'a str>,
    /// When the message arrived (business hours are judged at this instant).
    pub now: OffsetDateTime,
}

impl<'a> Subject<'a> {
    /// A subject with only channel, conversation and text; the rest empty, now as time.
    pub fn text_only(channel: &'a str, conversation_id: &'a str, text: &'a str) -> Self {
        let mut parts = conversation_id.splitn(3, ':');
        let _kind = parts.next();
        let connector = parts.next().unwrap_or("");
        let user = parts.next().unwrap_or("");
        Self {
            channel,
            connector,
            conversation_id,
            user,
            customer_id: None,
            phone: None,
            tier_override: None,
            text: Some(text),
            skill_hint: None,
            now: OffsetDateTime::now_utc(),
        }
    }

    fn ids(&self) -> Ids<'a> {
        Ids {
            conversation_id: self.conversation_id,
            channel: self.channel,
            connector: self.connector,
            user: self.user,
            customer_id: self.customer_id,
            phone: self.phone,
        }
    }
}

/// What the text says: the pure part of routing.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// The text after normalization (`None` for content without text).
    pub normalized: Option<String>,
    /// The text with compatibility forms folded but case and script kept.
    #[serde(skip)]
    pub compat: Option<String>,
    /// Lexicon words found (indices, ascending, no repeats).
    #[serde(skip)]
    pub words: Vec<usize>,
    /// Every intent with evidence.
    pub intent_scores: Vec<IntentScore>,
    /// The best intent from keywords and regexes.
    pub keyword_intent: Option<Classified>,
    /// Entities found.
    pub entities: Vec<Entity>,
    /// Abusive words found.
    pub abusive_words: Vec<String>,
}

/// What lookups found: the asynchronous, bounded part of routing.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// Tier and identity.
    pub tier: TierLookup,
    /// Shipment status hook.
    pub shipment: HookResult<String>,
    /// Classifier hook.
    pub classifier: HookResult<ClassifierAnswer>,
    /// The conversation's stickiness record, read in [`Policy::finish`].
    pub sticky: Option<Sticky>,
}

/// The intent used for routing, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChosenIntent {
    /// Name.
    pub name: String,
    /// Confidence 0-1.
    pub confidence: f64,
    /// `keywords` or `classifier`.
    pub source: &'static str,
    /// Index into the configured intents; `None` for a classifier's intent not among them.
    #[serde(skip)]
    pub index: Option<usize>,
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

/// The routing decision with its explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Customer tier.
    pub tier: String,
    /// Where the tier came from (`override`, `customers[conversation]`, `http`, `default`, ...).
    pub tier_source: String,
    /// Skill.
    pub skill: String,
    /// Priority 0-9.
    pub priority: u8,
    /// Routing key on the inbound exchange.
    pub queue_key: String,
    /// What decided: a rule's name, `default`, `channel_choice`, `transfer`, `sticky`,
    /// `abuse`.
    pub rule: String,
    /// One line on why.
    pub reason: String,
    /// The intent used.
    pub intent: Option<ChosenIntent>,
    /// Flags for the envelope.
    pub flags: Vec<String>,
    /// Rules tried, in order, up to the one that matched; filled when explaining.
    pub tried: Vec<RuleTrace>,
    /// The backlog check of the queue this message was bound for, when one is watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<BacklogCheck>,
    /// The stickiness record to write after the decision, if any.
    #[serde(skip)]
    pub stick: Option<Sticky>,
}

impl Decision {
    /// The intent as the envelope carries it.
    pub fn envelope_intent(&self) -> Option<Intent> {
        self.intent.as_ref().map(|i| Intent {
            name: i.name.clone(),
            confidence: i.confidence,
        })
    }
}

/// A backlog check made for overflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BacklogCheck {
    /// The watched queue.
    pub queue: String,
    /// Its ready count, when the broker could tell.
    pub ready: Option<u32>,
    /// Whether the message moved to the overflow key.
    pub overflowed: bool,
}

/// Overflow of one agent queue, compiled.
#[derive(Debug, Clone)]
pub struct OverflowRule {
    /// Watched queue.
    pub queue: String,
    bindings: Vec<String>,
    /// Ready count above which messages move.
    pub ready_above: u32,
    /// Where they move.
    pub queue_key: String,
    boost: u8,
    /// How long a ready count is reused.
    pub max_age: Duration,
}

#[derive(Debug, Clone)]
struct AbuseRoute {
    skill: Option<String>,
    priority: u8,
    publish_event: bool,
    excerpt_chars: usize,
}

/// Everything routing needs, compiled from one config.
#[derive(Debug)]
pub struct Policy {
    to_simplified: bool,
    lexicon: Lexicon,
    intents: Intents,
    extractor: Extractor,
    calendars: Vec<Calendar>,
    rules: Vec<Rule>,
    /// For each intent index, the rules that can match a message of that intent (those
    /// naming it and those without an intent condition), in order; the last entry is for
    /// messages without an intent. Lets a message skip the rules that cannot match it.
    candidates: Vec<Vec<usize>>,
    /// Whether some rule names an intent outside `[[intents]]` (a classifier's), which
    /// the candidate lists cannot know.
    foreign_intents: bool,
    default_skill: String,
    default_priority: u8,
    tiers: Tiers,
    hooks: Hooks,
    sticky_ttl: Duration,
    transfer_ttl: Duration,
    overflow: Vec<OverflowRule>,
    abuse: AbuseRoute,
    queues: Vec<QueueConfig>,
}

/// Services the asynchronous steps use.
#[derive(Clone, Copy)]
pub struct Services<'a> {
    /// The shared store (tiers in Redis, stickiness).
    pub kv: &'a dyn KvStore,
    /// Agent-queue backlogs.
    pub backlog: &'a dyn Backlog,
}

/// Everything about one routed message.
#[derive(Debug, Clone, Serialize)]
pub struct Routed {
    /// What the text says.
    pub analysis: Analysis,
    /// What the lookups found.
    pub facts: Facts,
    /// Where it goes.
    pub decision: Decision,
}

/// Why a transfer cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Not a routing-key word.
    #[error("skill {0:?} must be lowercase letters, digits, '-' or '_'")]
    BadSkill(String),
    /// No queue is bound for it.
    #[error("skill {0:?} routes to no agent queue")]
    Unroutable(String),
    /// Priority above 9.
    #[error("priority must be between 0 and 9")]
    BadPriority,
    /// The shared store failed.
    #[error("cannot record the transfer: {0}")]
    Store(String),
}

impl Policy {
    /// The policy `config` describes. Validation has checked everything that could fail
    /// here; what still does not compile is left out and logged.
    pub fn from_config(config: &Config) -> Self {
        let to_simplified = config.routing.normalize.traditional_to_simplified;
        let norm = |w: &str| normalize::keyword(w, to_simplified);
        let mut builder = LexiconBuilder::default();
        for (i, intent) in config.intents.iter().enumerate() {
            for word in &intent.keywords {
                builder.add(&norm(word), Owner::Keyword(i));
            }
            for word in &intent.negative_keywords {
                builder.add(&norm(word), Owner::Negative(i));
            }
        }
        let mut rule_words = Vec::new();
        for (r, rule) in config.routing.rules.iter().enumerate() {
            let words: Vec<(usize, String)> = rule
                .keywords
                .iter()
                .filter_map(|w| {
                    let n = norm(w);
                    builder.add(&n, Owner::Rule(r)).map(|i| (i, n))
                })
                .collect();
            rule_words.push(words);
        }
        let abuse = &config.routing.abuse;
        let abuse_words: Vec<String> = match &abuse.words {
            Some(words) => words.clone(),
            None => DEFAULT_ABUSE_WORDS
                .iter()
                .map(|w| (*w).to_owned())
                .collect(),
        };
        for word in abuse_words.iter().chain(&abuse.extra_words) {
            builder.add(&norm(word), Owner::Abuse);
        }
        for (c, name) in Extractor::carrier_names() {
            builder.add(&norm(name), Owner::Carrier(c));
        }
        let lexicon = builder.build().unwrap_or_else(|err| {
            tracing::error!(error = %err, "keyword matching disabled");
            Lexicon::default()
        });
        let intents = Intents::new(&config.intents).unwrap_or_else(|err| {
            tracing::error!(error = %err, "intent regexes disabled");
            let without: Vec<_> = config
                .intents
                .iter()
                .cloned()
                .map(|mut i| {
                    i.regexes.clear();
                    i
                })
                .collect();
            Intents::new(&without).unwrap_or_default()
        });
        let calendars: Vec<Calendar> = config
            .routing
            .calendars
            .iter()
            .filter_map(Calendar::new)
            .collect();
        let default_priority = config.routing.default.priority;
        let rules: Vec<Rule> = config
            .routing
            .rules
            .iter()
            .zip(rule_words)
            .map(|(rule, words)| {
                Rule::new(
                    rule,
                    default_priority,
                    |name| calendars.iter().position(|c| c.name == name),
                    words,
                )
            })
            .collect();
        let intent_count = intents.defs.len();
        let mut candidates = vec![Vec::new(); intent_count + 1];
        let mut foreign_intents = false;
        for (r, rule) in rules.iter().enumerate() {
            if rule.intent_names().is_empty() {
                candidates.iter_mut().for_each(|list| list.push(r));
                continue;
            }
            for name in rule.intent_names() {
                match intents.index(name) {
                    Some(i) => {
                        if candidates[i].last() != Some(&r) {
                            candidates[i].push(r);
                        }
                    }
                    None => foreign_intents = true,
                }
            }
        }
        let overflow = config
            .routing
            .overflow
            .iter()
            .map(|o| OverflowRule {
                queue: o.queue.clone(),
                bindings: config
                    .queues
                    .iter()
                    .find(|q| q.name == o.queue)
                    .map(|q| q.bindings.clone())
                    .unwrap_or_default(),
                ready_above: o.ready_above,
                queue_key: o.queue_key.clone(),
                boost: o.priority_boost,
                max_age: Duration::from_millis(o.check_every_ms),
            })
            .collect();
        Self {
            to_simplified,
            lexicon,
            intents,
            extractor: Extractor::new(&config.routing.entities),
            calendars,
            rules,
            candidates,
            foreign_intents,
            default_skill: config.routing.default.skill.clone(),
            default_priority,
            tiers: Tiers::new(&config.tiers),
            hooks: Hooks::new(&config.routing.enrichment),
            sticky_ttl: Duration::from_secs(config.routing.stickiness.ttl_secs),
            transfer_ttl: Duration::from_secs(config.routing.stickiness.transfer_ttl_secs),
            overflow,
            abuse: AbuseRoute {
                skill: abuse.skill.clone(),
                priority: abuse.priority.unwrap_or(default_priority),
                publish_event: abuse.publish_event,
                excerpt_chars: abuse.excerpt_chars,
            },
            queues: config.queues.clone(),
        }
    }

    /// Number of distinct words in the automaton.
    pub fn keyword_count(&self) -> usize {
        self.lexicon.len()
    }

    /// The compiled parts of the analysis, for benchmarks and tools.
    pub fn parts(&self) -> (&Lexicon, &Intents, &Extractor) {
        (&self.lexicon, &self.intents, &self.extractor)
    }

    /// The circuit breakers of this policy's lookups (the hooks have none: each call is
    /// bounded by the latency budget instead).
    pub fn breakers(&self) -> Vec<tiers::BreakerState> {
        self.tiers.breaker().into_iter().collect()
    }

    /// Whether `tier` is one of `tiers.names`.
    pub fn knows_tier(&self, tier: &str) -> bool {
        self.tiers.names.iter().any(|name| name == tier)
    }

    /// Normalization, intents, entities and abusive words of `text`.
    pub fn analyze(&self, text: Option<&str>) -> Analysis {
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            return Analysis {
                normalized: None,
                compat: None,
                words: Vec::new(),
                intent_scores: Vec::new(),
                keyword_intent: None,
                entities: Vec::new(),
                abusive_words: Vec::new(),
            };
        };
        let Normalized { compat, folded } = normalize::normalize(text, self.to_simplified);
        let hits = self.lexicon.find(&folded);
        let mut words: Vec<usize> = hits.iter().map(|h| h.word).collect();
        words.sort_unstable();
        words.dedup();
        let intent_scores = self.intents.score(&self.lexicon, &hits, &folded);
        let keyword_intent = self.intents.best(&intent_scores);
        let mut named = [false; carriers::CARRIERS.len()];
        let mut abusive_words = Vec::new();
        for &w in &words {
            let word = &self.lexicon.words[w];
            for owner in &word.owners {
                match *owner {
                    Owner::Carrier(c) => {
                        if let Some(slot) = named.get_mut(c) {
                            *slot = true;
                        }
                    }
                    Owner::Abuse if !abusive_words.contains(&word.text) => {
                        abusive_words.push(word.text.clone())
                    }
                    _ => {}
                }
            }
        }
        let is_named = |carrier: &str| {
            carriers::carrier_index(carrier).is_some_and(|i| named[i])
                // China Post and EMS are named interchangeably.
                || (carrier == "ems" && carriers::carrier_index("china_post").is_some_and(|i| named[i]))
                || (carrier == "china_post" && carriers::carrier_index("ems").is_some_and(|i| named[i]))
        };
        let entities = self.extractor.extract(&compat, &is_named);
        Analysis {
            normalized: Some(folded),
            compat: Some(compat),
            words,
            intent_scores,
            keyword_intent,
            entities,
            abusive_words,
        }
    }

    /// Tier lookup and hooks, concurrently, each within its time limit.
    pub async fn enrich(
        &self,
        subject: &Subject<'_>,
        analysis: &Analysis,
        kv: &dyn KvStore,
    ) -> Facts {
        let ids = subject.ids();
        let tracking = analysis
            .entities
            .iter()
            .find(|e| e.kind == "tracking_number")
            .map(|e| {
                (
                    e.value.as_str(),
                    e.details
                        .get("carrier")
                        .and_then(|c| c.as_str())
                        .unwrap_or(""),
                )
            });
        let (tier, shipment, classifier) = tokio::join!(
            self.tiers.lookup(&ids, subject.tier_override, kv),
            self.hooks.shipment(tracking),
            self.hooks.classify(
                subject.text,
                analysis.normalized.as_deref().unwrap_or(""),
                subject.channel
            ),
        );
        Facts {
            tier,
            shipment,
            classifier,
            sticky: None,
        }
    }

    /// The intent used for routing: the classifier's when it is confident enough, else
    /// the keywords'.
    fn chosen_intent(&self, analysis: &Analysis, facts: &Facts) -> Option<ChosenIntent> {
        if let (Some(answer), Some(min)) = (
            facts.classifier.value(),
            self.hooks.classifier_min_confidence(),
        ) && answer.confidence >= min
            && topic::is_word(&answer.intent)
        {
            return Some(ChosenIntent {
                name: answer.intent.clone(),
                confidence: intents::round3(answer.confidence),
                source: "classifier",
                index: self.intents.index(&answer.intent),
            });
        }
        analysis.keyword_intent.as_ref().map(|c| ChosenIntent {
            name: c.name.clone(),
            confidence: c.confidence,
            source: "keywords",
            index: Some(c.index),
        })
    }

    /// Flags known before the decision.
    fn flags(analysis: &Analysis, facts: &Facts) -> Vec<String> {
        let mut flags = Vec::new();
        if !analysis.abusive_words.is_empty() {
            flags.push("abusive".to_owned());
        }
        if facts.tier.failed {
            flags.push("tier_lookup_failed".to_owned());
        }
        if facts.shipment.is_failure() {
            flags.push("shipment_lookup_failed".to_owned());
        }
        if facts.classifier.is_failure() {
            flags.push("classifier_failed".to_owned());
        }
        flags
    }

    /// Whether some agent queue is bound for `key`.
    pub fn routable(&self, key: &str) -> bool {
        self.queues
            .iter()
            .any(|q| q.bindings.iter().any(|p| topic::matches(p, key)))
    }

    fn key_for(skill: &str, fixed: Option<&str>, tier: &str) -> String {
        fixed.map_or_else(|| format!("{skill}.{tier}"), str::to_owned)
    }

    /// Decides; pure. `explain` fills `tried` with every rule's verdict.
    pub fn decide(
        &self,
        subject: &Subject<'_>,
        analysis: &Analysis,
        facts: &Facts,
        explain: bool,
    ) -> Decision {
        let tier = facts.tier.tier.clone();
        let intent = self.chosen_intent(analysis, facts);
        let mut flags = Self::flags(analysis, facts);
        let entity_kinds: Vec<&str> = {
            let mut kinds: Vec<&str> = analysis.entities.iter().map(|e| e.kind.as_str()).collect();
            kinds.dedup();
            kinds
        };
        let now = jiff::Timestamp::from_second(subject.now.unix_timestamp())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let cx = RuleContext {
            channel: subject.channel,
            connector: subject.connector,
            intent: intent.as_ref().map(|i| (i.name.as_str(), i.confidence)),
            entity_kinds: &entity_kinds,
            shipment_status: facts.shipment.value().map(String::as_str),
            tier: &tier,
            flags: &flags,
            words: &analysis.words,
            now,
            calendars: &self.calendars,
        };

        let mut tried = Vec::new();
        let mut matched = None;
        // Explaining shows every rule; deciding looks only at those that can match.
        let all: Vec<usize>;
        let order: &[usize] = match (explain, intent.as_ref().map(|i| i.index)) {
            (false, None) => &self.candidates[self.intents.defs.len()],
            (false, Some(Some(i))) if !self.foreign_intents => &self.candidates[i],
            _ => {
                all = (0..self.rules.len()).collect();
                &all
            }
        };
        for &index in order {
            let rule = &self.rules[index];
            let verdict = rule.check(&cx);
            if explain {
                tried.push(RuleTrace {
                    rule: rule.name.clone(),
                    matched: verdict.is_ok(),
                    why: match verdict {
                        Ok(()) => rule.why(&cx),
                        Err(miss) => rule.why_not(miss, &cx),
                    },
                });
            }
            if verdict.is_ok() {
                matched = Some(index);
                break;
            }
        }
        let (mut skill, mut priority, mut fixed, mut rule_name, mut reason) = match matched {
            Some(i) => {
                let rule = &self.rules[i];
                (
                    rule.skill.clone(),
                    rule.priority,
                    rule.queue_key.clone(),
                    rule.name.clone(),
                    rule.why(&cx),
                )
            }
            None => (
                self.default_skill.clone(),
                self.default_priority,
                None,
                "default".to_owned(),
                "no rule matched".to_owned(),
            ),
        };
        let rules_decided = rule_name.clone();
        let breaks = intent
            .as_ref()
            .and_then(|i| i.index)
            .is_some_and(|x| self.intents.defs[x].breaks_stickiness);
        let usable_sticky = facts.sticky.as_ref().filter(|s| {
            topic::is_word(&s.skill)
                && self.routable(&Self::key_for(&s.skill, s.queue_key.as_deref(), &tier))
        });
        let hint = subject.skill_hint.filter(|s| topic::is_word(s));

        let mut stick = None;
        if let (true, Some(abuse_skill)) = (!analysis.abusive_words.is_empty(), &self.abuse.skill) {
            skill = abuse_skill.clone();
            priority = self.abuse.priority;
            fixed = None;
            rule_name = "abuse".to_owned();
            reason = format!(
                "abusive words {:?} go to {abuse_skill}",
                analysis.abusive_words
            );
        } else if let Some(sticky) = usable_sticky.filter(|s| s.transferred) {
            skill = sticky.skill.clone();
            priority = sticky.priority.unwrap_or(priority);
            fixed = sticky.queue_key.clone();
            rule_name = "transfer".to_owned();
            reason = format!(
                "a helpdesk transferred the conversation to {}",
                sticky.skill
            );
            flags.push("transferred".to_owned());
        } else if let Some(hint) = hint {
            skill = hint.to_owned();
            priority = self.default_priority;
            fixed = None;
            rule_name = "channel_choice".to_owned();
            reason = format!("the customer chose {hint} in the channel");
            stick = Some(Sticky {
                skill: skill.clone(),
                queue_key: None,
                priority: Some(priority),
                rule: rule_name.clone(),
                transferred: false,
            });
        } else if let (Some(sticky), false, false) =
            (usable_sticky, breaks, self.sticky_ttl.is_zero())
        {
            let instead = if rules_decided == "default" {
                String::new()
            } else {
                format!(" (rule {rules_decided} would have sent it to {skill})")
            };
            skill = sticky.skill.clone();
            priority = sticky.priority.unwrap_or(priority);
            fixed = sticky.queue_key.clone();
            reason = format!(
                "follow-up kept on {} from rule {}{instead}",
                sticky.skill, sticky.rule
            );
            rule_name = "sticky".to_owned();
            flags.push("sticky".to_owned());
            stick = Some(sticky.clone());
        } else if rule_name != "default" {
            if let (Some(sticky), true) = (usable_sticky, breaks) {
                reason = format!(
                    "{reason}; intent {} ends stickiness to {}",
                    intent.as_ref().map_or("", |i| i.name.as_str()),
                    sticky.skill
                );
            }
            stick = Some(Sticky {
                skill: skill.clone(),
                queue_key: fixed.clone(),
                priority: Some(priority),
                rule: rule_name.clone(),
                transferred: false,
            });
        }
        if self.sticky_ttl.is_zero() {
            stick = None;
        }
        Decision {
            queue_key: Self::key_for(&skill, fixed.as_deref(), &tier),
            tier,
            tier_source: facts.tier.source.clone(),
            skill,
            priority,
            rule: rule_name,
            reason,
            intent,
            flags,
            tried,
            backlog: None,
            stick,
        }
    }

    /// The overflow rule watching the queue `decision` routes to, if any.
    pub fn overflow_for(&self, decision: &Decision) -> Option<&OverflowRule> {
        self.overflow.iter().find(|o| {
            o.bindings
                .iter()
                .any(|pattern| topic::matches(pattern, &decision.queue_key))
        })
    }

    /// Moves `decision` to the overflow key when `ready` is above the threshold; pure.
    pub fn apply_overflow(decision: &mut Decision, rule: &OverflowRule, ready: Option<u32>) {
        decision.backlog = Some(BacklogCheck {
            queue: rule.queue.clone(),
            ready,
            overflowed: false,
        });
        let Some(ready) = ready else { return };
        if ready <= rule.ready_above {
            return;
        }
        if let Some(check) = decision.backlog.as_mut() {
            check.overflowed = true;
        }
        let from = std::mem::replace(&mut decision.queue_key, rule.queue_key.clone());
        decision.priority = decision.priority.saturating_add(rule.boost).min(9);
        decision.flags.push("overflow".to_owned());
        decision.reason = format!(
            "{}; overflow: {} has {ready} ready (above {}), so {from} -> {}",
            decision.reason, rule.queue, rule.ready_above, rule.queue_key
        );
    }

    /// The asynchronous end of routing, run while the conversation's lock is held: reads
    /// the stickiness record, decides, checks overflow, writes the record back.
    pub async fn finish(
        &self,
        subject: &Subject<'_>,
        analysis: &Analysis,
        facts: &mut Facts,
        services: Services<'_>,
        explain: bool,
    ) -> Decision {
        // Read even with stickiness off: a helpdesk's transfer holds regardless.
        match stickiness::load(services.kv, subject.conversation_id).await {
            Ok(sticky) => facts.sticky = sticky,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read stickiness, routing without it")
            }
        }
        let mut decision = self.decide(subject, analysis, facts, explain);
        if let Some(rule) = self.overflow_for(&decision) {
            let ready = services.backlog.ready(&rule.queue, rule.max_age).await;
            Self::apply_overflow(&mut decision, rule, ready);
        }
        if let Some(stick) = &decision.stick
            && let Err(err) =
                stickiness::save(services.kv, subject.conversation_id, stick, self.sticky_ttl).await
        {
            tracing::warn!(error = %err, "cannot record stickiness");
        }
        decision
    }

    /// Every step, start to end: for the `route` command and tests.
    pub async fn route(
        &self,
        subject: &Subject<'_>,
        services: Services<'_>,
        explain: bool,
    ) -> Routed {
        let analysis = self.analyze(subject.text);
        let mut facts = self.enrich(subject, &analysis, services.kv).await;
        let decision = self
            .finish(subject, &analysis, &mut facts, services, explain)
            .await;
        Routed {
            analysis,
            facts,
            decision,
        }
    }

    /// The `conversation.flagged` event for an abusive message, when events are on.
    pub fn flag_event(
        &self,
        subject: &Subject<'_>,
        analysis: &Analysis,
        envelope_id: &str,
    ) -> Option<Event> {
        if analysis.abusive_words.is_empty() || !self.abuse.publish_event {
            return None;
        }
        let excerpt: String = subject
            .text
            .unwrap_or("")
            .chars()
            .take(self.abuse.excerpt_chars)
            .collect();
        let mut event = Event::new("conversation.flagged");
        event.conversation_id = Some(subject.conversation_id.to_owned());
        event.reason = Some("abusive".to_owned());
        event.data.insert("flag".into(), "abusive".into());
        event.data.insert("excerpt".into(), excerpt.into());
        event
            .data
            .insert("words".into(), analysis.abusive_words.clone().into());
        event
            .data
            .insert("envelope_id".into(), envelope_id.to_owned().into());
        Some(event)
    }

    /// Records a helpdesk's transfer of `conversation_id` to `skill` from now on.
    pub async fn transfer(
        &self,
        kv: &dyn KvStore,
        conversation_id: &str,
        skill: &str,
        priority: Option<u8>,
    ) -> Result<(), TransferError> {
        if !topic::is_word(skill) {
            return Err(TransferError::BadSkill(skill.to_owned()));
        }
        if priority.is_some_and(|p| p > 9) {
            return Err(TransferError::BadPriority);
        }
        let routable = self
            .tiers
            .names
            .iter()
            .any(|tier| self.routable(&Self::key_for(skill, None, tier)));
        if !routable {
            return Err(TransferError::Unroutable(skill.to_owned()));
        }
        let sticky = Sticky {
            skill: skill.to_owned(),
            queue_key: None,
            priority,
            rule: "transfer".to_owned(),
            transferred: true,
        };
        stickiness::save(kv, conversation_id, &sticky, self.transfer_ttl)
            .await
            .map_err(|e| TransferError::Store(e.to_string()))
    }

    /// Forgets `conversation_id`'s stickiness and transfer.
    pub async fn close(&self, kv: &dyn KvStore, conversation_id: &str) -> Result<(), String> {
        stickiness::forget(kv, conversation_id)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
