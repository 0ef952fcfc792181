//! Routing rules: each condition given must hold, any entry of a list is enough. Checking a
//! rule allocates nothing; the words of an explanation are written only when asked for.

use jiff::Timestamp;

use super::calendar::Calendar;
use crate::config::RuleConfig;

/// What rules look at, for one message.
#[derive(Debug, Clone)]
pub struct RuleContext<'a> {
    /// Channel kind.
    pub channel: &'a str,
    /// Connector id.
    pub connector: &'a str,
    /// The message's intent and its confidence.
    pub intent: Option<(&'a str, f64)>,
    /// Entity kinds present.
    pub entity_kinds: &'a [&'a str],
    /// Shipment status from the enrichment hook.
    pub shipment_status: Option<&'a str>,
    /// Customer tier.
    pub tier: &'a str,
    /// Flags set so far.
    pub flags: &'a [String],
    /// Lexicon words found in the text (indices, ascending, no repeats).
    pub words: &'a [usize],
    /// Now.
    pub now: Timestamp,
    /// Calendars by index.
    pub calendars: &'a [Calendar],
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name.
    pub name: String,
    channels: Vec<String>,
    connectors: Vec<String>,
    intents: Vec<String>,
    min_confidence: Option<f64>,
    entities: Vec<String>,
    shipment_status: Vec<String>,
    tiers: Vec<String>,
    flags: Vec<String>,
    open_in: Option<usize>,
    closed_in: Option<usize>,
    /// Lexicon indices of its keywords, and the keywords as written (normalized).
    keywords: Vec<(usize, String)>,
    /// Skill.
    pub skill: String,
    /// Priority, the default route's when the rule gives none.
    pub priority: u8,
    /// Fixed routing key.
    pub queue_key: Option<String>,
}

/// The first condition that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Channel kind not listed.
    Channel,
    /// Connector not listed.
    Connector,
    /// No intent, or another one.
    Intent,
    /// The intent's confidence is below `min_confidence`.
    Confidence,
    /// None of the entity kinds present.
    Entities,
    /// No status, or another one.
    ShipmentStatus,
    /// Tier not listed.
    Tier,
    /// None of the flags set.
    Flags,
    /// The calendar is closed.
    Closed,
    /// The calendar is open.
    Open,
    /// None of the keywords found.
    Keywords,
}

impl Rule {
    /// The intents it names; empty when it has no intent condition.
    pub fn intent_names(&self) -> &[String] {
        &self.intents
    }

    /// Compiles `config`; `calendar` maps a calendar name to its index, `keyword` a
    /// normalized keyword to its lexicon index.
    pub fn new(
        config: &RuleConfig,
        default_priority: u8,
        calendar: impl Fn(&str) -> Option<usize>,
        keywords: Vec<(usize, String)>,
    ) -> Self {
        Self {
            name: config.name.clone(),
            channels: config.channels.clone(),
            connectors: config.connectors.clone(),
            intents: config.intents.clone(),
            min_confidence: config.min_confidence,
            entities: config.entities.clone(),
            shipment_status: config.shipment_status.clone(),
            tiers: config.tiers.clone(),
            flags: config.flags.clone(),
            open_in: config.open_in.as_deref().and_then(&calendar),
            closed_in: config.closed_in.as_deref().and_then(&calendar),
            keywords,
            skill: config.skill.clone(),
            priority: config.priority.unwrap_or(default_priority),
            queue_key: config.queue_key.clone(),
        }
    }

    /// `Ok` when every condition holds, else the first that does not.
    pub fn check(&self, cx: &RuleContext<'_>) -> Result<(), Miss> {
        if !self.channels.is_empty() && !self.channels.iter().any(|c| c == cx.channel) {
            return Err(Miss::Channel);
        }
        if !self.connectors.is_empty() && !self.connectors.iter().any(|c| c == cx.connector) {
            return Err(Miss::Connector);
        }
        if !self.intents.is_empty() {
            let Some((intent, confidence)) = cx.intent else {
                return Err(Miss::Intent);
            };
            if !self.intents.iter().any(|i| i == intent) {
                return Err(Miss::Intent);
            }
            if self.min_confidence.is_some_and(|min| confidence < min) {
                return Err(Miss::Confidence);
            }
        }
        if !self.entities.is_empty()
            && !self
                .entities
                .iter()
                .any(|k| cx.entity_kinds.contains(&k.as_str()))
        {
            return Err(Miss::Entities);
        }
        if !self.shipment_status.is_empty()
            && !cx
                .shipment_status
                .is_some_and(|s| self.shipment_status.iter().any(|w| w == s))
        {
            return Err(Miss::ShipmentStatus);
        }
        if !self.tiers.is_empty() && !self.tiers.iter().any(|t| t == cx.tier) {
            return Err(Miss::Tier);
        }
        if !self.flags.is_empty() && !self.flags.iter().any(|f| cx.flags.contains(f)) {
            return Err(Miss::Flags);
        }
        if let Some(c) = self.open_in
            && !cx.calendars.get(c).is_some_and(|c| c.at(cx.now).open)
        {
            return Err(Miss::Closed);
        }
        if let Some(c) = self.closed_in
            && cx.calendars.get(c).is_none_or(|c| c.at(cx.now).open)
        {
            return Err(Miss::Open);
        }
        if !self.keywords.is_empty()
            && !self
                .keywords
                .iter()
                .any(|(w, _)| cx.words.binary_search(w).is_ok())
        {
            return Err(Miss::Keywords);
        }
        Ok(())
    }

    /// Why the rule matched: each condition it has, as it held.
    pub fn why(&self, cx: &RuleContext<'_>) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.channels.is_empty() {
            parts.push(format!("channel {}", cx.channel));
        }
        if !self.connectors.is_empty() {
            parts.push(format!("connector {}", cx.connector));
        }
        if let Some((intent, confidence)) = cx.intent
            && !self.intents.is_empty()
        {
            parts.push(format!("intent {intent} ({confidence:.2})"));
        }
        if !self.entities.is_empty() {
            let present: Vec<&str> = self
                .entities
                .iter()
                .filter(|k| cx.entity_kinds.contains(&k.as_str()))
                .map(String::as_str)
                .collect();
            parts.push(format!("entity {}", present.join(", ")));
        }
        if let Some(status) = cx.shipment_status
            && !self.shipment_status.is_empty()
        {
            parts.push(format!("shipment {status}"));
        }
        if !self.tiers.is_empty() {
            parts.push(format!("tier {}", cx.tier));
        }
        if !self.flags.is_empty() {
            let set: Vec<&str> = self
                .flags
                .iter()
                .filter(|f| cx.flags.contains(f))
                .map(String::as_str)
                .collect();
            parts.push(format!("flag {}", set.join(", ")));
        }
        for (index, open) in [(self.open_in, true), (self.closed_in, false)] {
            if let Some(calendar) = index.and_then(|i| cx.calendars.get(i)) {
                let state = calendar.at(cx.now);
                parts.push(format!(
                    "{} {} ({})",
                    calendar.name,
                    if open { "open" } else { "closed" },
                    state.local
                ));
            }
        }
        if let Some((_, word)) = self
            .keywords
            .iter()
            .find(|(w, _)| cx.words.binary_search(w).is_ok())
        {
            parts.push(format!("keyword {word:?}"));
        }
        if parts.is_empty() {
            parts.push("no conditions".to_owned());
        }
        parts.join(", ")
    }

    /// Why the rule did not match.
    pub fn why_not(&self, miss: Miss, cx: &RuleContext<'_>) -> String {
        match miss {
            Miss::Channel => format!("channel {} not in {:?}", cx.channel, self.channels),
            Miss::Connector => format!("connector {} not in {:?}", cx.connector, self.connectors),
            Miss::Intent => match cx.intent {
                Some((intent, _)) => format!("intent {intent} not in {:?}", self.intents),
                None => format!("no intent, needs one of {:?}", self.intents),
            },
            Miss::Confidence => format!(
                "intent confidence {:.2} below {:.2}",
                cx.intent.map_or(0.0, |(_, c)| c),
                self.min_confidence.unwrap_or(0.0)
            ),
            Miss::Entities => format!("no entity of {:?}", self.entities),
            Miss::ShipmentStatus => match cx.shipment_status {
                Some(status) => format!("shipment {status} not in {:?}", self.shipment_status),
                None => format!(
                    "no shipment status, needs one of {:?}",
                    self.shipment_status
                ),
            },
            Miss::Tier => format!("tier {} not in {:?}", cx.tier, self.tiers),
            Miss::Flags => format!("none of the flags {:?}", self.flags),
            Miss::Closed | Miss::Open => {
                let index = if miss == Miss::Closed {
                    self.open_in
                } else {
                    self.closed_in
                };
                match index.and_then(|i| cx.calendars.get(i)) {
                    Some(calendar) => format!(
                        "{} is {} ({})",
                        calendar.name,
                        if miss == Miss::Closed {
                            "closed"
                        } else {
                            "open"
                        },
                        calendar.at(cx.now).local
                    ),
                    None => "calendar unknown".to_owned(),
                }
            }
            Miss::Keywords => "no keyword found".to_owned(),
        }
    }
}
