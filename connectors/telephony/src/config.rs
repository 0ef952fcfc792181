//! The `[[connectors.telephony]]` table: typed, unknown keys denied, checked as a whole by
//! [`TelephonyConfig::validate`] which reports every problem with its key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use switchboard_sdk::config::{check_base_url, check_id};
use switchboard_sdk::phone::check_country_code;
use switchboard_sdk::profile::{Profile, ProviderKind};
use switchboard_sdk::schedule::{BusinessHours, parse_local_time, parse_utc_offset, parse_weekday};
use switchboard_sdk::signature::hmac_webhook::{HmacConfig, HmacSigner};
use switchboard_sdk::{ConfigProblem, ConnectorLimits, Secret, SecretRef};

use crate::ivr::{Ivr, MenuItem, Timing};
use crate::prompts::{Prompts, builtin};

/// Menu attempts before the call is ended, by default.
pub const DEFAULT_MENU_ATTEMPTS: u32 = 3;
/// Seconds the menu waits for a key or speech, by default.
pub const DEFAULT_GATHER_TIMEOUT_SECS: u32 = 5;
/// Seconds the tracking-number prompt waits between keys, by default.
pub const DEFAULT_TRACKING_TIMEOUT_SECS: u32 = 10;
/// Longest voicemail in seconds, by default.
pub const DEFAULT_VOICEMAIL_MAX_SECS: u32 = 120;

/// One phone line: `[[connectors.telephony]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelephonyConfig {
    /// Unique id (lowercase letters, digits, `-`); the HTTP paths are `/telephony/{id}/...`.
    pub id: String,
    /// Which provider runs the calls: `twilio` (Programmable Voice, TwiML) or `generic`.
    pub provider: ProviderKind,
    /// The URL the provider reaches this connector at, e.g.
    /// `https://sb.example.com/telephony/hotline`: menu actions point there and Twilio
    /// signatures are checked against it.
    pub public_url: String,
    /// Languages the prompts are spoken in, in order (`zh-CN`, `en`). Default `["zh-CN"]`.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Language for speech recognition in the menu. Default: the first of `languages`.
    #[serde(default)]
    pub speech_language: Option<String>,
    /// Twilio `<Say voice=...>` (`alice`, `Polly.Zhiyu`, ...). Default: Twilio's.
    #[serde(default)]
    pub voice: Option<String>,
    /// Times the menu is offered before the call ends. Default 3.
    #[serde(default)]
    pub menu_attempts: Option<u32>,
    /// Seconds the menu waits for input. Default 5.
    #[serde(default)]
    pub gather_timeout_secs: Option<u32>,
    /// Seconds the tracking-number prompt waits for the next key. Default 10.
    #[serde(default)]
    pub tracking_timeout_secs: Option<u32>,
    /// Longest voicemail, seconds. Default 120.
    #[serde(default)]
    pub voicemail_max_secs: Option<u32>,
    /// Keep the provider's original payload in envelopes (`raw`). Default false.
    #[serde(default)]
    pub keep_raw: bool,
    /// Twilio settings; required when `provider = "twilio"`.
    #[serde(default)]
    pub twilio: Option<TwilioConfig>,
    /// Generic gateway settings; required when `provider = "generic"`.
    #[serde(default)]
    pub generic: Option<GenericConfig>,
    /// Prompt texts per language, overriding the built-in zh-CN and en ones.
    #[serde(default)]
    pub prompts: BTreeMap<String, PromptsConfig>,
    /// The digit menu, at least one entry.
    #[serde(default)]
    pub menu: Vec<MenuItemConfig>,
    /// Opening hours; outside them callers hear the closed message and may leave a
    /// voicemail. Default: always open.
    #[serde(default)]
    pub business_hours: Option<BusinessHoursConfig>,
    /// Limits the daemon enforces for this connector.
    #[serde(default)]
    pub limits: ConnectorLimits,
}

/// `[connectors.telephony.twilio]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// The auth token that signs webhooks, inline (prefer `_env` or `_file`).
    #[serde(default)]
    pub auth_token: Option<Secret>,
    /// Environment variable holding the auth token.
    #[serde(default)]
    pub auth_token_env: Option<String>,
    /// File holding the auth token.
    #[serde(default)]
    pub auth_token_file: Option<PathBuf>,
}

/// `[connectors.telephony.generic]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericConfig {
    /// Shared HMAC-SHA256 key, inline.
    #[serde(default)]
    pub signing_key: Option<Secret>,
    /// Environment variable holding the signing key.
    #[serde(default)]
    pub signing_key_env: Option<String>,
    /// File holding the signing key.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Header with the hex signature. Default `X-Signature`.
    #[serde(default)]
    pub signature_header: Option<String>,
    /// Header with the unix-seconds timestamp. Default `X-Timestamp`.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// Seconds a timestamp may be away from now. Default 300.
    #[serde(default)]
    pub replay_window_secs: Option<i64>,
    /// Country calling code for numbers sent without one (`86`). Default none.
    #[serde(default)]
    pub default_country_code: Option<String>,
}

/// `[connectors.telephony.prompts.LANG]`: any prompt left out keeps the built-in text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsConfig {
    /// Said first when a call comes in.
    #[serde(default)]
    pub greeting: Option<String>,
    /// Said when the key pressed or words spoken match no menu entry.
    #[serde(default)]
    pub invalid_choice: Option<String>,
    /// Said when the menu got no input.
    #[serde(default)]
    pub no_input: Option<String>,
    /// Asks for the tracking number on the keypad, ended with `#`.
    #[serde(default)]
    pub ask_tracking_number: Option<String>,
    /// Said before the call goes to the agent queue.
    #[serde(default)]
    pub connecting: Option<String>,
    /// Said outside business hours.
    #[serde(default)]
    pub closed: Option<String>,
    /// Invites a voicemail after the tone.
    #[serde(default)]
    pub voicemail: Option<String>,
    /// Thanks after a voicemail.
    #[serde(default)]
    pub voicemail_thanks: Option<String>,
    /// Said when no agent could take the call, before offering voicemail.
    #[serde(default)]
    pub agents_unavailable: Option<String>,
    /// Said before hanging up.
    #[serde(default)]
    pub goodbye: Option<String>,
}

/// `[[connectors.telephony.menu]]`: one menu entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuItemConfig {
    /// The key to press, `0`-`9`.
    pub digit: String,
    /// The skill calls from this entry are routed to (`claims`).
    pub skill: String,
    /// What the menu says for this entry, per language (`{ en = "For claims, press 2." }`).
    pub prompt: BTreeMap<String, String>,
    /// Words that pick this entry when spoken (matched case-insensitively in the speech).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Ask for a tracking number on the keypad before handing the call over.
    #[serde(default)]
    pub ask_tracking_number: bool,
    /// Where the provider puts the call: `{ enqueue = "name" }`, `{ queue = "name" }` (Dial
    /// Queue) or `{ sip = "sip:agents@pbx.example.com" }`.
    pub handoff: Handoff,
}

/// Where a call goes after the menu, on the provider side.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handoff {
    /// TwiML `<Enqueue>name</Enqueue>`: wait in a Twilio queue that agents dequeue.
    Enqueue(String),
    /// TwiML `<Dial><Queue>name</Queue></Dial>`.
    Queue(String),
    /// TwiML `<Dial><Sip>uri</Sip></Dial>`: an ACD or PBX over SIP.
    Sip(String),
}

/// `[connectors.telephony.business_hours]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHoursConfig {
    /// Offset of local time from UTC, `+08:00`.
    pub utc_offset: String,
    /// Open days: `mon` ... `sun`.
    pub days: Vec<String>,
    /// Opening time, local `HH:MM`.
    pub open: String,
    /// Closing time, local `HH:MM`, after `open`.
    pub close: String,
}

/// The provider side of a checked config.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    /// Twilio: the auth token.
    Twilio(Secret),
    /// Generic: the signer and the default country code.
    Generic(HmacSigner, Option<String>),
}

impl TelephonyConfig {
    /// Checks the whole table, resolves secrets, and reports every problem with its key.
    pub fn validate(&self) -> Result<(ProviderSettings, Ivr), Vec<ConfigProblem>> {
        let mut problems: Vec<ConfigProblem> = check_id(&self.id).into_iter().collect();
        problems.extend(self.limits.validate());
        let public_url = check_base_url("public_url", &self.public_url)
            .map_err(|p| problems.push(p))
            .ok();
        let provider = self.provider_settings(&mut problems);

        let languages = if self.languages.is_empty() {
            vec!["zh-CN".to_owned()]
        } else {
            self.languages.clone()
        };
        for (i, lang) in languages.iter().enumerate() {
            if lang.trim().is_empty() || languages[..i].contains(lang) {
                problems.push(ConfigProblem::new(
                    "languages",
                    format!("{lang:?} is empty or listed twice"),
                ));
            }
        }
        for lang in self.prompts.keys() {
            if !languages.contains(lang) {
                problems.push(ConfigProblem::new(
                    format!("prompts.{lang}"),
                    format!("{lang:?} is not one of languages"),
                ));
            }
        }
        let prompts = self.resolve_prompts(&languages, &mut problems);
        let menu = self.resolve_menu(&languages, &mut problems);
        let business_hours = self
            .business_hours
            .as_ref()
            .and_then(|b| b.validate(&mut problems));

        let positive = |key: &str,
                        value: Option<u32>,
                        default: u32,
                        max: u32,
                        problems: &mut Vec<ConfigProblem>| {
            let v = value.unwrap_or(default);
            if v == 0 || v > max {
                problems.push(ConfigProblem::new(key, format!("must be from 1 to {max}")));
            }
            v
        };
        let timing = Timing {
            attempts: positive(
                "menu_attempts",
                self.menu_attempts,
                DEFAULT_MENU_ATTEMPTS,
                10,
                &mut problems,
            ),
            gather_timeout_secs: positive(
                "gather_timeout_secs",
                self.gather_timeout_secs,
                DEFAULT_GATHER_TIMEOUT_SECS,
                60,
                &mut problems,
            ),
            tracking_timeout_secs: positive(
                "tracking_timeout_secs",
                self.tracking_timeout_secs,
                DEFAULT_TRACKING_TIMEOUT_SECS,
                60,
                &mut problems,
            ),
            voicemail_max_secs: positive(
                "voicemail_max_secs",
                self.voicemail_max_secs,
                DEFAULT_VOICEMAIL_MAX_SECS,
                3600,
                &mut problems,
            ),
        };

        match (provider, public_url) {
            (Some(provider), Some(public_url)) if problems.is_empty() => Ok((
                provider,
                Ivr {
                    public_url,
                    speech_language: self
                        .speech_language
                        .clone()
                        .unwrap_or_else(|| languages[0].clone()),
                    languages,
                    voice: self.voice.clone(),
                    prompts,
                    menu,
                    timing,
                    business_hours,
                },
            )),
            _ => Err(problems),
        }
    }

    fn provider_settings(&self, problems: &mut Vec<ConfigProblem>) -> Option<ProviderSettings> {
        let picked = self.provider.pick(
            "connectors.telephony",
            self.twilio.as_ref(),
            self.generic.as_ref(),
            problems,
        )?;
        match picked {
            Profile::Twilio(twilio) => SecretRef::new(
                "auth_token",
                &twilio.auth_token,
                &twilio.auth_token_env,
                &twilio.auth_token_file,
            )
            .required()
            .map(ProviderSettings::Twilio)
            .map_err(|problem| problems.push(problem.within("twilio")))
            .ok(),
            Profile::Generic(generic) => {
                if let Some(cc) = &generic.default_country_code {
                    problems.extend(check_country_code("generic.default_country_code", cc));
                }
                let hmac = HmacConfig {
                    signing_key: generic.signing_key.clone(),
                    signing_key_env: generic.signing_key_env.clone(),
                    signing_key_file: generic.signing_key_file.clone(),
                    signature_header: generic.signature_header.clone(),
                    timestamp_header: generic.timestamp_header.clone(),
                    replay_window_secs: generic.replay_window_secs,
                };
                hmac.build("generic")
                    .map(|signer| {
                        ProviderSettings::Generic(signer, generic.default_country_code.clone())
                    })
                    .map_err(|found| problems.extend(found))
                    .ok()
            }
        }
    }

    fn resolve_prompts(
        &self,
        languages: &[String],
        problems: &mut Vec<ConfigProblem>,
    ) -> BTreeMap<String, Prompts> {
        let mut resolved = BTreeMap::new();
        for lang in languages {
            let given = self.prompts.get(lang).cloned().unwrap_or_default();
            let base = builtin(lang);
            let mut missing = Vec::new();
            // Each prompt: the configured text, else the built-in one for the language.
            macro_rules! pick {
                ($name:ident) => {
                    given
                        .$name
                        .clone()
                        .or_else(|| base.as_ref().map(|b| b.$name.clone()))
                        .unwrap_or_else(|| {
                            missing.push(stringify!($name));
                            String::new()
                        })
                };
            }
            let prompts = Prompts {
                greeting: pick!(greeting),
                invalid_choice: pick!(invalid_choice),
                no_input: pick!(no_input),
                ask_tracking_number: pick!(ask_tracking_number),
                connecting: pick!(connecting),
                closed: pick!(closed),
                voicemail: pick!(voicemail),
                voicemail_thanks: pick!(voicemail_thanks),
                agents_unavailable: pick!(agents_unavailable),
                goodbye: pick!(goodbye),
            };
            for name in missing {
                problems.push(ConfigProblem::new(
                    format!("prompts.{lang}.{name}"),
                    format!("there is no built-in {lang} prompt: give one"),
                ));
            }
            resolved.insert(lang.clone(), prompts);
        }
        resolved
    }

    fn resolve_menu(
        &self,
        languages: &[String],
        problems: &mut Vec<ConfigProblem>,
    ) -> Vec<MenuItem> {
        if self.menu.is_empty() {
            problems.push(ConfigProblem::new(
                "menu",
                "at least one [[connectors.telephony.menu]] entry is needed",
            ));
        }
        let mut items = Vec::new();
        for (i, item) in self.menu.iter().enumerate() {
            let key = |field: &str| format!("menu.{i}.{field}");
            let digit = match item.digit.as_bytes() {
                [d @ b'0'..=b'9'] => Some(char::from(*d)),
                _ => {
                    problems.push(ConfigProblem::new(
                        key("digit"),
                        "must be one key from 0 to 9",
                    ));
                    None
                }
            };
            if self.menu[..i].iter().any(|other| other.digit == item.digit) {
                problems.push(ConfigProblem::new(
                    key("digit"),
                    format!("{:?} is used twice", item.digit),
                ));
            }
            if item.skill.trim().is_empty() {
                problems.push(ConfigProblem::new(key("skill"), "must not be empty"));
            }
            for lang in languages {
                if item.prompt.get(lang).is_none_or(|p| p.trim().is_empty()) {
                    problems.push(ConfigProblem::new(
                        key("prompt"),
                        format!("missing the {lang} prompt"),
                    ));
                }
            }
            for lang in item.prompt.keys() {
                if !languages.contains(lang) {
                    problems.push(ConfigProblem::new(
                        key("prompt"),
                        format!("{lang:?} is not one of languages"),
                    ));
                }
            }
            let target_ok = match &item.handoff {
                Handoff::Enqueue(name) | Handoff::Queue(name) => !name.trim().is_empty(),
                Handoff::Sip(uri) => uri.starts_with("sip:") || uri.starts_with("sips:"),
            };
            if !target_ok {
                problems.push(ConfigProblem::new(
                    key("handoff"),
                    "needs a queue name, or a sip: / sips: uri",
                ));
            }
            if let Some(digit) = digit {
                items.push(MenuItem {
                    digit,
                    skill: item.skill.trim().to_owned(),
                    prompt: item.prompt.clone(),
                    keywords: item.keywords.iter().map(|k| k.to_lowercase()).collect(),
                    ask_tracking_number: item.ask_tracking_number,
                    handoff: item.handoff.clone(),
                });
            }
        }
        items
    }
}

impl BusinessHoursConfig {
    fn validate(&self, problems: &mut Vec<ConfigProblem>) -> Option<BusinessHours> {
        let before = problems.len();
        let mut report = |key: &str, message: String| {
            problems.push(ConfigProblem::new(format!("business_hours.{key}"), message));
        };
        let offset = parse_utc_offset(&self.utc_offset)
            .map_err(|e| report("utc_offset", e.to_string()))
            .ok();
        let open = parse_local_time(&self.open)
            .map_err(|e| report("open", e.to_string()))
            .ok();
        let close = parse_local_time(&self.close)
            .map_err(|e| report("close", e.to_string()))
            .ok();
        let mut days = Vec::new();
        for day in &self.days {
            match parse_weekday(day) {
                Ok(d) => days.push(d),
                Err(e) => report("days", e.to_string()),
            }
        }
        if self.days.is_empty() {
            report("days", "name at least one day".to_owned());
        }
        if let (Some(open), Some(close)) = (open, close)
            && open >= close
        {
            report(
                "close",
                "must be after open (overnight hours are not supported)".to_owned(),
            );
        }
        match (offset, open, close) {
            (Some(offset), Some(open), Some(close)) if problems.len() == before => {
                Some(BusinessHours {
                    offset,
                    days,
                    open,
                    close,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_sdk::testing::connector_tables;
    use switchboard_sdk::{ConnectorContext, ConnectorFactory, Secret};

    use super::*;
    use crate::connector::TelephonyFactory;

    fn parse(text: &str) -> TelephonyConfig {
        toml::from_str(text).unwrap_or_else(|err| panic!("{err}"))
    }

    /// The shipped config.toml parses, and builds once its secret is resolvable.
    #[test]
    fn the_example_config_parses_and_builds() {
        let tables: Vec<TelephonyConfig> =
            connector_tables(include_str!("../config.toml"), "telephony")
                .unwrap_or_else(|err| panic!("config.toml: {err}"));
        let [mut config] = <[TelephonyConfig; 1]>::try_from(tables)
            .unwrap_or_else(|all| panic!("expected one table, got {}", all.len()));
        let context = ConnectorContext::in_memory();
        let keys: Vec<String> = TelephonyFactory::build(&config, &context)
            .err()
            .map(|e| e.0.into_iter().map(|p| p.key).collect())
            .unwrap_or_default();
        assert_eq!(keys, ["twilio.auth_token_env"]);
        if let Some(t) = config.twilio.as_mut() {
            t.auth_token_env = None;
            t.auth_token = Some(Secret::new("token"));
        }
        match TelephonyFactory::build(&config, &context) {
            Ok(connector) => assert_eq!(connector.id(), "hotline"),
            Err(err) => panic!("{:?}", err.0),
        }
        let (_, ivr) = config.validate().unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(ivr.menu.len(), 3);
        assert_eq!(
            ivr.prompts.get("en").map(|p| p.greeting.as_str()),
            Some("Hello, welcome to Example Express.")
        );
        assert_eq!(
            ivr.prompts.get("en").map(|p| p.goodbye.as_str()),
            Some("Thank you for calling. Goodbye."),
            "unconfigured prompts keep the built-in text"
        );
        assert!(ivr.business_hours.is_some());
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let config = parse(
            r#"
            id = "hot line"
            provider = "generic"
            public_url = "hotline"
            languages = ["fr-FR"]
            menu_attempts = 0
            [twilio]
            auth_token = "x"
            [generic]
            signing_key = "k"
            default_country_code = "+86"
            [prompts.fr-FR]
            greeting = "Bonjour"
            [prompts.de]
            greeting = "Hallo"
            [business_hours]
            utc_offset = "+08:00"
            days = ["mon", "someday"]
            open = "18:00"
            close = "09:00"
            [[menu]]
            digit = "12"
            skill = ""
            prompt = { en = "press 12" }
            handoff = { sip = "tel:123" }
            [[menu]]
            digit = "12"
            skill = "b"
            prompt = { "fr-FR" = "b" }
            handoff = { enqueue = "b" }
            "#,
        );
        let problems = config.validate().err().unwrap_or_default();
        let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(
            keys,
            [
                "business_hours.close",
                "business_hours.days",
                "generic.default_country_code",
                "id",
                "menu.0.digit",
                "menu.0.handoff",
                "menu.0.prompt",
                "menu.0.skill",
                "menu.1.digit",
                "menu_attempts",
                "prompts.de",
                "prompts.fr-FR.agents_unavailable",
                "prompts.fr-FR.ask_tracking_number",
                "prompts.fr-FR.closed",
                "prompts.fr-FR.connecting",
                "prompts.fr-FR.goodbye",
                "prompts.fr-FR.invalid_choice",
                "prompts.fr-FR.no_input",
                "prompts.fr-FR.voicemail",
                "prompts.fr-FR.voicemail_thanks",
                "public_url",
                "twilio",
            ]
        );
    }

    #[test]
    fn a_menu_is_required_and_unknown_keys_are_refused() {
        let config = parse(
            "id = \"a\"\nprovider = \"twilio\"\npublic_url = \"https://x\"\n[twilio]\nauth_token = \"t\"\n",
        );
        let problems = config.validate().err().unwrap_or_default();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "menu");
        let err = toml::from_str::<TelephonyConfig>(
            "id = \"a\"\nprovider = \"twilio\"\npublic_url = \"https://x\"\nmenus = []\n",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("menus"), "{err}");
    }
}
