//! The IVR as data: what to say and do at each step of a call, independent of the
//! provider. Twilio gets it as TwiML ([`crate::twiml`]), a generic gateway as JSON.
//!
//! State travels in the action URLs (`/gather?step=menu&attempt=2`), which the provider
//! calls back exactly as given (and Twilio signs), so no call state is stored here.

use std::collections::BTreeMap;

use serde::Serialize;
use switchboard_sdk::schedule::BusinessHours;
use switchboard_sdk::time::OffsetDateTime;

use crate::config::Handoff;
use crate::prompts::Prompts;

/// One sentence to speak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Say {
    /// The words.
    pub text: String,
    /// The language tag to speak them in.
    pub language: String,
}

/// What input a gather listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// Keypad only.
    Dtmf,
    /// Keypad or speech.
    DtmfSpeech,
}

impl Input {
    /// Twilio's spelling of the `input` attribute.
    pub fn twiml(self) -> &'static str {
        match self {
            Input::Dtmf => "dtmf",
            Input::DtmfSpeech => "dtmf speech",
        }
    }
}

/// One step of a call plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Verb {
    /// Speak.
    Say(Say),
    /// Speak the prompts while collecting keys or speech, then call `action` with them.
    Gather {
        /// Keys, or keys and speech.
        input: Input,
        /// Stop after this many keys.
        #[serde(skip_serializing_if = "Option::is_none")]
        num_digits: Option<u32>,
        /// Stop at this key (`#`).
        #[serde(skip_serializing_if = "Option::is_none")]
        finish_on_key: Option<String>,
        /// Seconds to wait for input.
        timeout_secs: u32,
        /// Where the result goes.
        action: String,
        /// Call `action` even without input.
        action_on_empty_result: bool,
        /// Speech recognition language.
        #[serde(skip_serializing_if = "Option::is_none")]
        language: Option<String>,
        /// Words that help speech recognition.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        hints: Vec<String>,
        /// Spoken while waiting.
        prompts: Vec<Say>,
    },
    /// Put the call in a provider queue (TwiML `<Enqueue>`).
    Enqueue {
        /// Queue name.
        name: String,
        /// Called when the call leaves the queue.
        action: String,
    },
    /// Connect to a provider queue (TwiML `<Dial><Queue>`).
    DialQueue {
        /// Queue name.
        name: String,
        /// Called when the dial ends.
        action: String,
    },
    /// Connect over SIP (TwiML `<Dial><Sip>`).
    DialSip {
        /// SIP URI.
        uri: String,
        /// Called when the dial ends.
        action: String,
    },
    /// Record a voicemail after a beep.
    Record {
        /// Called with the recording.
        action: String,
        /// Called with the transcription.
        transcribe_callback: String,
        /// Longest recording, seconds.
        max_length_secs: u32,
    },
    /// Continue at another URL.
    Redirect {
        /// Where.
        url: String,
    },
    /// End the call.
    Hangup,
}

/// A menu entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    /// The key.
    pub digit: char,
    /// The skill it routes to.
    pub skill: String,
    /// What the menu says for it, per language.
    pub prompt: BTreeMap<String, String>,
    /// Lowercase words that pick it when spoken.
    pub keywords: Vec<String>,
    /// Ask for a tracking number first.
    pub ask_tracking_number: bool,
    /// Where the call goes.
    pub handoff: Handoff,
}

/// Timeouts and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Menu attempts before hanging up.
    pub attempts: u32,
    /// Menu input timeout.
    pub gather_timeout_secs: u32,
    /// Tracking-number input timeout.
    pub tracking_timeout_secs: u32,
    /// Longest voicemail.
    pub voicemail_max_secs: u32,
}

/// How the caller chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChosenBy {
    /// A key.
    Dtmf,
    /// Speech.
    Speech,
}

impl ChosenBy {
    /// The label used in message data.
    pub fn as_str(self) -> &'static str {
        match self {
            ChosenBy::Dtmf => "dtmf",
            ChosenBy::Speech => "speech",
        }
    }
}

/// The whole checked IVR of one connector.
#[derive(Debug, Clone)]
pub struct Ivr {
    /// Public URL without trailing `/`.
    pub public_url: String,
    /// Languages in speaking order.
    pub languages: Vec<String>,
    /// Speech recognition language.
    pub speech_language: String,
    /// Twilio voice.
    pub voice: Option<String>,
    /// Prompts per language.
    pub prompts: BTreeMap<String, Prompts>,
    /// Menu entries.
    pub menu: Vec<MenuItem>,
    /// Timeouts and counts.
    pub timing: Timing,
    /// Opening hours, if limited.
    pub business_hours: Option<BusinessHours>,
}

impl Ivr {
    /// `{public_url}{route}?{query}` with the query encoded.
    pub fn url(&self, route: &str, query: &[(&str, &str)]) -> String {
        if query.is_empty() {
            return format!("{}{route}", self.public_url);
        }
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            q.append_pair(k, v);
        }
        format!("{}{route}?{}", self.public_url, q.finish())
    }

    /// One prompt in every language, in order.
    fn say_all(&self, pick: impl Fn(&Prompts) -> &str) -> Vec<Say> {
        self.languages
            .iter()
            .filter_map(|lang| {
                self.prompts.get(lang).map(|p| Say {
                    text: pick(p).to_owned(),
                    language: lang.clone(),
                })
            })
            .collect()
    }

    fn said(&self, pick: impl Fn(&Prompts) -> &str) -> Vec<Verb> {
        self.say_all(pick).into_iter().map(Verb::Say).collect()
    }

    /// Whether calls are taken at `now`.
    pub fn is_open(&self, now: OffsetDateTime) -> bool {
        self.business_hours.as_ref().is_none_or(|b| b.is_open(now))
    }

    /// The answer to an incoming call (or to the menu's `attempt`-th offer).
    pub fn incoming(&self, now: OffsetDateTime, attempt: u32) -> Vec<Verb> {
        if !self.is_open(now) {
            let mut plan = self.said(|p| &p.closed);
            plan.extend(self.voicemail());
            return plan;
        }
        self.menu_offer(attempt)
    }

    fn menu_offer(&self, attempt: u32) -> Vec<Verb> {
        let mut prompts = Vec::new();
        for lang in &self.languages {
            let Some(p) = self.prompts.get(lang) else {
                continue;
            };
            if attempt <= 1 {
                prompts.push(Say {
                    text: p.greeting.clone(),
                    language: lang.clone(),
                });
            }
            for item in &self.menu {
                if let Some(text) = item.prompt.get(lang) {
                    prompts.push(Say {
                        text: text.clone(),
                        language: lang.clone(),
                    });
                }
            }
        }
        let attempt_s = attempt.to_string();
        let mut plan = vec![Verb::Gather {
            input: Input::DtmfSpeech,
            num_digits: Some(1),
            finish_on_key: None,
            timeout_secs: self.timing.gather_timeout_secs,
            action: self.url("/gather", &[("step", "menu"), ("attempt", &attempt_s)]),
            action_on_empty_result: false,
            language: Some(self.speech_language.clone()),
            hints: self
                .menu
                .iter()
                .flat_map(|i| i.keywords.iter().cloned())
                .collect(),
            prompts,
        }];
        // Reached only when the gather got nothing.
        plan.extend(self.said(|p| &p.no_input));
        plan.extend(self.again_or_goodbye(attempt));
        plan
    }

    fn again_or_goodbye(&self, attempt: u32) -> Vec<Verb> {
        if attempt < self.timing.attempts {
            let next = (attempt + 1).to_string();
            vec![Verb::Redirect {
                url: self.url("/incoming", &[("attempt", &next)]),
            }]
        } else {
            let mut plan = self.said(|p| &p.goodbye);
            plan.push(Verb::Hangup);
            plan
        }
    }

    /// The menu entry chosen by `digits` (first key) or, without keys, by `speech`.
    pub fn choose(
        &self,
        digits: Option<&str>,
        speech: Option<&str>,
    ) -> Option<(&MenuItem, ChosenBy)> {
        if let Some(key) = digits.and_then(|d| d.trim().chars().next()) {
            return self
                .menu
                .iter()
                .find(|i| i.digit == key)
                .map(|i| (i, ChosenBy::Dtmf));
        }
        let speech = speech?.to_lowercase();
        self.menu
            .iter()
            .find(|i| {
                i.keywords.iter().any(|k| speech.contains(k.as_str()))
                    || speech.trim().trim_end_matches('.') == i.digit.to_string()
            })
            .map(|i| (i, ChosenBy::Speech))
    }

    /// The menu entry of `digit`.
    pub fn item(&self, digit: &str) -> Option<&MenuItem> {
        let mut chars = digit.chars();
        match (chars.next(), chars.next()) {
            (Some(d), None) => self.menu.iter().find(|i| i.digit == d),
            _ => None,
        }
    }

    /// The answer to a choice that matched nothing.
    pub fn invalid_choice(&self, attempt: u32) -> Vec<Verb> {
        let mut plan = self.said(|p| &p.invalid_choice);
        plan.extend(self.again_or_goodbye(attempt));
        plan
    }

    /// Asks for the tracking number of `item`'s path, ended with `#`.
    pub fn ask_tracking_number(&self, item: &MenuItem) -> Vec<Verb> {
        let digit = item.digit.to_string();
        vec![Verb::Gather {
            input: Input::Dtmf,
            num_digits: None,
            finish_on_key: Some("#".to_owned()),
            timeout_secs: self.timing.tracking_timeout_secs,
            action: self.url("/gather", &[("step", "tracking"), ("choice", &digit)]),
            // Without a number the call still goes to an agent.
            action_on_empty_result: true,
            language: None,
            hints: Vec::new(),
            prompts: self.say_all(|p| &p.ask_tracking_number),
        }]
    }

    /// Hands the call to `item`'s queue.
    pub fn handoff(&self, item: &MenuItem) -> Vec<Verb> {
        let action = self.url("/status", &[("event", "handoff"), ("skill", &item.skill)]);
        let mut plan = self.said(|p| &p.connecting);
        plan.push(match &item.handoff {
            Handoff::Enqueue(name) => Verb::Enqueue {
                name: name.clone(),
                action,
            },
            Handoff::Queue(name) => Verb::DialQueue {
                name: name.clone(),
                action,
            },
            Handoff::Sip(uri) => Verb::DialSip {
                uri: uri.clone(),
                action,
            },
        });
        plan
    }

    /// Offers a voicemail: prompt, record (transcribed), goodbye.
    pub fn voicemail(&self) -> Vec<Verb> {
        let mut plan = self.said(|p| &p.voicemail);
        plan.push(Verb::Record {
            action: self.url("/status", &[("event", "voicemail")]),
            transcribe_callback: self.url("/status", &[("event", "transcription")]),
            max_length_secs: self.timing.voicemail_max_secs,
        });
        // Reached only when nothing was recorded.
        plan.extend(self.said(|p| &p.goodbye));
        plan.push(Verb::Hangup);
        plan
    }

    /// After the handoff ended without an agent: apologise and offer a voicemail.
    pub fn agents_unavailable(&self) -> Vec<Verb> {
        let mut plan = self.said(|p| &p.agents_unavailable);
        plan.extend(self.voicemail());
        plan
    }

    /// Thanks for the voicemail and hangs up.
    pub fn voicemail_thanks(&self) -> Vec<Verb> {
        let mut plan = self.said(|p| &p.voicemail_thanks);
        plan.push(Verb::Hangup);
        plan
    }

    /// Ends the call.
    pub fn hangup(&self) -> Vec<Verb> {
        vec![Verb::Hangup]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use switchboard_sdk::schedule::BusinessHours;
    use switchboard_sdk::time::Weekday;
    use time::macros::{datetime, offset, time};

    use super::*;
    use crate::prompts::builtin;

    pub(crate) fn ivr() -> Ivr {
        let item = |digit: char, skill: &str, tracking: bool, handoff: Handoff| MenuItem {
            digit,
            skill: skill.into(),
            prompt: BTreeMap::from([
                ("zh-CN".to_owned(), format!("{skill}请按{digit}")),
                ("en".to_owned(), format!("For {skill}, press {digit}")),
            ]),
            keywords: vec![skill.to_owned()],
            ask_tracking_number: tracking,
            handoff,
        };
        let mut prompts = BTreeMap::new();
        for lang in ["zh-CN", "en"] {
            if let Some(p) = builtin(lang) {
                prompts.insert(lang.to_owned(), p);
            }
        }
        Ivr {
            public_url: "https://sb.example.com/telephony/hotline".into(),
            languages: vec!["zh-CN".into(), "en".into()],
            speech_language: "zh-CN".into(),
            voice: None,
            prompts,
            menu: vec![
                item('1', "tracking", true, Handoff::Enqueue("tracking".into())),
                item('2', "claims", false, Handoff::Enqueue("claims".into())),
                item(
                    '3',
                    "sales",
                    false,
                    Handoff::Sip("sip:sales@pbx.example.com".into()),
                ),
            ],
            timing: Timing {
                attempts: 2,
                gather_timeout_secs: 5,
                tracking_timeout_secs: 10,
                voicemail_max_secs: 120,
            },
            business_hours: Some(BusinessHours {
                offset: offset!(+8),
                days: vec![Weekday::Monday],
                open: time!(9:00),
                close: time!(18:00),
            }),
        }
    }

    // 2024-05-06 is a Monday; 02:00 UTC is 10:00 in +08:00.
    pub(crate) const OPEN: OffsetDateTime = datetime!(2024-05-06 02:00 UTC);
    pub(crate) const CLOSED: OffsetDateTime = datetime!(2024-05-06 12:00 UTC);

    #[test]
    fn an_open_line_offers_the_menu_in_every_language() {
        let plan = ivr().incoming(OPEN, 1);
        let Verb::Gather {
            input,
            num_digits,
            action,
            prompts,
            hints,
            ..
        } = &plan[0]
        else {
            panic!("expected a gather first, got {plan:?}");
        };
        assert_eq!(*input, Input::DtmfSpeech);
        assert_eq!(*num_digits, Some(1));
        assert_eq!(
            action,
            "https://sb.example.com/telephony/hotline/gather?step=menu&attempt=1"
        );
        let langs: Vec<&str> = prompts.iter().map(|s| s.language.as_str()).collect();
        assert_eq!(
            langs,
            ["zh-CN", "zh-CN", "zh-CN", "zh-CN", "en", "en", "en", "en"]
        );
        assert_eq!(prompts[2].text, "claims请按2");
        assert_eq!(hints, &["tracking", "claims", "sales"]);
        // No input: apologise and offer again, then give up at the last attempt.
        assert!(
            matches!(plan.last(), Some(Verb::Redirect { url }) if url.ends_with("/incoming?attempt=2"))
        );
        let last = ivr().incoming(OPEN, 2);
        assert_eq!(last.last(), Some(&Verb::Hangup));
        let Verb::Gather { prompts, .. } = &last[0] else {
            panic!("expected a gather");
        };
        assert_eq!(prompts.len(), 6, "the greeting is said only once");
    }

    #[test]
    fn a_closed_line_offers_voicemail() {
        let plan = ivr().incoming(CLOSED, 1);
        assert!(matches!(&plan[0], Verb::Say(s) if s.text == "您好，现在是非工作时间。"));
        assert!(plan.iter().any(|v| matches!(v,
            Verb::Record { action, transcribe_callback, max_length_secs: 120 }
                if action.ends_with("/status?event=voicemail")
                && transcribe_callback.ends_with("/status?event=transcription"))));
        assert_eq!(plan.last(), Some(&Verb::Hangup));
    }

    #[test]
    fn choices_by_key_or_speech() {
        let ivr = ivr();
        let skill = |c: Option<(&MenuItem, ChosenBy)>| c.map(|(i, by)| (i.skill.clone(), by));
        assert_eq!(
            skill(ivr.choose(Some("2"), None)),
            Some(("claims".into(), ChosenBy::Dtmf))
        );
        assert_eq!(skill(ivr.choose(Some("9"), Some("claims"))), None);
        assert_eq!(
            skill(ivr.choose(None, Some("I want to make a Claims report"))),
            Some(("claims".into(), ChosenBy::Speech))
        );
        assert_eq!(
            skill(ivr.choose(Some(""), Some("3."))),
            Some(("sales".into(), ChosenBy::Speech))
        );
        assert_eq!(skill(ivr.choose(None, Some("hello"))), None);
        assert_eq!(skill(ivr.choose(None, None)), None);
    }

    #[test]
    fn handoffs_follow_the_config() {
        let ivr = ivr();
        let plan = ivr.handoff(&ivr.menu[1]);
        assert!(matches!(plan.last(), Some(Verb::Enqueue { name, action })
            if name == "claims" && action.ends_with("/status?event=handoff&skill=claims")));
        let plan = ivr.handoff(&ivr.menu[2]);
        assert!(
            matches!(plan.last(), Some(Verb::DialSip { uri, .. }) if uri == "sip:sales@pbx.example.com")
        );
        let plan = ivr.ask_tracking_number(&ivr.menu[0]);
        assert!(
            matches!(&plan[0], Verb::Gather { input: Input::Dtmf, finish_on_key: Some(k), action_on_empty_result: true, action, .. }
            if k == "#" && action.ends_with("/gather?step=tracking&choice=1"))
        );
    }

    #[test]
    fn plans_serialize_as_the_documented_json() {
        let ivr = ivr();
        let json = serde_json::to_value(ivr.handoff(&ivr.menu[1])).unwrap_or_default();
        assert_eq!(json[0]["verb"], "say");
        assert_eq!(json[0]["language"], "zh-CN");
        assert_eq!(json[2]["verb"], "enqueue");
        assert_eq!(json[2]["name"], "claims");
        let json = serde_json::to_value(ivr.incoming(OPEN, 1)).unwrap_or_default();
        assert_eq!(json[0]["verb"], "gather");
        assert_eq!(json[0]["input"], "dtmf_speech");
        assert_eq!(json[0]["num_digits"], 1);
    }
}
