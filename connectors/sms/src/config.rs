//! The `[[connectors.sms]]` table: typed, unknown keys denied, checked as a whole by
//! [`SmsConfig::validate`] which reports every problem with its key.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchboard_sdk::config::{check_base_url, check_id};
use switchboard_sdk::phone::check_country_code;
use switchboard_sdk::profile::{Profile, ProviderKind};
use switchboard_sdk::schedule::{QuietHours, parse_local_time, parse_utc_offset};
use switchboard_sdk::signature::hmac_webhook::{HmacConfig, HmacSigner};
use switchboard_sdk::{ConfigProblem, ConnectorLimits, Secret, SecretRef};

/// Twilio's REST API, used unless `twilio.api_base` says otherwise.
pub const DEFAULT_TWILIO_API_BASE: &str = "https://api.twilio.com";
/// How long parts of a concatenated generic message wait for the rest, by default.
pub const DEFAULT_CONCAT_TTL_SECS: u64 = 900;

/// One SMS account: `[[connectors.sms]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// Unique id (lowercase letters, digits, `-`); the HTTP paths are `/sms/{id}/...`.
    pub id: String,
    /// Which provider speaks to the network: `twilio` (Programmable Messaging) or `generic`.
    pub provider: ProviderKind,
    /// The URL the provider reaches this connector at, e.g. `https://sb.example.com/sms/main`:
    /// Twilio signatures are checked against it and status callbacks point to it. Required
    /// for `twilio`; for `generic` it only enables status callbacks.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Twilio account settings; required when `provider = "twilio"`.
    #[serde(default)]
    pub twilio: Option<TwilioConfig>,
    /// Generic gateway settings; required when `provider = "generic"`.
    #[serde(default)]
    pub generic: Option<GenericConfig>,
    /// Local hours during which non-urgent replies wait; none by default.
    #[serde(default)]
    pub quiet_hours: Option<QuietHoursConfig>,
    /// Keep the provider's original payload in envelopes (`raw`). Default false.
    #[serde(default)]
    pub keep_raw: bool,
    /// Limits the daemon enforces for this connector.
    #[serde(default)]
    pub limits: ConnectorLimits,
}

/// `[connectors.sms.twilio]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// The account SID (`AC...`); also the basic-auth user of the REST API.
    pub account_sid: String,
    /// The auth token, inline (prefer `auth_token_env` or `auth_token_file`).
    #[serde(default)]
    pub auth_token: Option<Secret>,
    /// Environment variable holding the auth token.
    #[serde(default)]
    pub auth_token_env: Option<String>,
    /// File holding the auth token.
    #[serde(default)]
    pub auth_token_file: Option<PathBuf>,
    /// Sender number (E.164), short code or alphanumeric sender id; or use
    /// `messaging_service_sid`.
    #[serde(default)]
    pub from: Option<String>,
    /// Messaging Service (`MG...`) that picks the sender; instead of `from`.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// REST API base URL. Default `https://api.twilio.com`.
    #[serde(default)]
    pub api_base: Option<String>,
}

/// `[connectors.sms.generic]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericConfig {
    /// Where replies are POSTed as signed JSON.
    pub send_url: String,
    /// Shared HMAC-SHA256 key for both directions, inline.
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
    /// Seconds a webhook timestamp may be away from now. Default 300.
    #[serde(default)]
    pub replay_window_secs: Option<i64>,
    /// Sender number or id put in the `from` field of sends; none by default.
    #[serde(default)]
    pub from: Option<String>,
    /// Send a long reply as one request per SMS part (`true`) or whole (`false`, default).
    #[serde(default)]
    pub split: bool,
    /// Country calling code for numbers the gateway sends without one (`86`); none by
    /// default, so such numbers are refused.
    #[serde(default)]
    pub default_country_code: Option<String>,
    /// Seconds the parts of a concatenated message wait for the rest. Default 900.
    #[serde(default)]
    pub concat_ttl_secs: Option<u64>,
}

/// `[connectors.sms.quiet_hours]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursConfig {
    /// Offset of local time from UTC, `+08:00`.
    pub utc_offset: String,
    /// When quiet hours start, local `HH:MM`.
    pub start: String,
    /// When they end, local `HH:MM`; earlier than `start` means the next morning.
    pub end: String,
}

/// How a reply picks its Twilio sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioSender {
    /// `From`.
    From(String),
    /// `MessagingServiceSid`.
    MessagingService(String),
}

/// A checked Twilio table.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// Account SID.
    pub account_sid: String,
    /// Auth token.
    pub auth_token: Secret,
    /// The sender.
    pub sender: TwilioSender,
    /// API base without trailing `/`.
    pub api_base: String,
}

/// A checked generic table.
#[derive(Debug, Clone)]
pub struct GenericSettings {
    /// Send endpoint.
    pub send_url: String,
    /// Signer for both directions.
    pub signer: HmacSigner,
    /// Sender for the `from` field.
    pub from: Option<String>,
    /// One request per part.
    pub split: bool,
    /// Country code for national numbers.
    pub default_country_code: Option<String>,
    /// How long concatenation parts wait.
    pub concat_ttl: Duration,
}

/// The provider side of a checked config.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    /// Twilio.
    Twilio(TwilioSettings),
    /// Generic gateway.
    Generic(GenericSettings),
}

/// Everything [`SmsConfig::validate`] resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Public URL without trailing `/`.
    pub public_url: Option<String>,
    /// Provider.
    pub provider: ProviderSettings,
    /// Quiet hours.
    pub quiet_hours: Option<QuietHours>,
}

impl SmsConfig {
    /// Checks the whole table, resolves secrets, and reports every problem with its key.
    pub fn validate(&self) -> Result<Settings, Vec<ConfigProblem>> {
        let mut problems: Vec<ConfigProblem> = check_id(&self.id).into_iter().collect();
        problems.extend(self.limits.validate());

        let public_url = match &self.public_url {
            Some(raw) => match check_base_url("public_url", raw) {
                Ok(url) => Some(url),
                Err(problem) => {
                    problems.push(problem);
                    None
                }
            },
            None => {
                if self.provider == ProviderKind::Twilio {
                    problems.push(ConfigProblem::new(
                        "public_url",
                        "required for twilio: signatures are computed over it",
                    ));
                }
                None
            }
        };

        let picked = self.provider.pick(
            "connectors.sms",
            self.twilio.as_ref(),
            self.generic.as_ref(),
            &mut problems,
        );
        let provider = match picked {
            Some(Profile::Twilio(twilio)) => {
                twilio.validate(&mut problems).map(ProviderSettings::Twilio)
            }
            Some(Profile::Generic(generic)) => generic
                .validate(&mut problems)
                .map(ProviderSettings::Generic),
            None => None,
        };

        let quiet_hours = self
            .quiet_hours
            .as_ref()
            .and_then(|q| q.validate(&mut problems));

        match provider {
            Some(provider) if problems.is_empty() => Ok(Settings {
                public_url,
                provider,
                quiet_hours,
            }),
            _ => Err(problems),
        }
    }
}

impl TwilioConfig {
    fn validate(&self, problems: &mut Vec<ConfigProblem>) -> Option<TwilioSettings> {
        let before = problems.len();
        if !self.account_sid.starts_with("AC") || self.account_sid.len() < 4 {
            problems.push(ConfigProblem::new(
                "twilio.account_sid",
                "must be a twilio account sid starting with AC",
            ));
        }
        let token = SecretRef::new(
            "auth_token",
            &self.auth_token,
            &self.auth_token_env,
            &self.auth_token_file,
        )
        .required()
        .map_err(|problem| problems.push(problem.within("twilio")))
        .ok();
        let sender = match (&self.from, &self.messaging_service_sid) {
            (Some(from), None) if !from.trim().is_empty() => {
                Some(TwilioSender::From(from.trim().to_owned()))
            }
            (None, Some(sid)) if sid.starts_with("MG") => {
                Some(TwilioSender::MessagingService(sid.clone()))
            }
            (None, Some(_)) => {
                problems.push(ConfigProblem::new(
                    "twilio.messaging_service_sid",
                    "must be a messaging service sid starting with MG",
                ));
                None
            }
            (Some(_), Some(_)) => {
                problems.push(ConfigProblem::new(
                    "twilio.from",
                    "give either from or messaging_service_sid, not both",
                ));
                None
            }
            _ => {
                problems.push(ConfigProblem::new(
                    "twilio.from",
                    "missing sender: set from or messaging_service_sid",
                ));
                None
            }
        };
        let api_base = check_base_url(
            "twilio.api_base",
            self.api_base.as_deref().unwrap_or(DEFAULT_TWILIO_API_BASE),
        )
        .map_err(|problem| problems.push(problem))
        .ok();
        match (token, sender, api_base) {
            (Some(auth_token), Some(sender), Some(api_base)) if problems.len() == before => {
                Some(TwilioSettings {
                    account_sid: self.account_sid.clone(),
                    auth_token,
                    sender,
                    api_base,
                })
            }
            _ => None,
        }
    }
}

impl GenericConfig {
    /// The signing fields as the shared [`HmacConfig`].
    pub fn hmac(&self) -> HmacConfig {
        HmacConfig {
            signing_key: self.signing_key.clone(),
            signing_key_env: self.signing_key_env.clone(),
            signing_key_file: self.signing_key_file.clone(),
            signature_header: self.signature_header.clone(),
            timestamp_header: self.timestamp_header.clone(),
            replay_window_secs: self.replay_window_secs,
        }
    }

    fn validate(&self, problems: &mut Vec<ConfigProblem>) -> Option<GenericSettings> {
        let before = problems.len();
        let send_url = url::Url::parse(&self.send_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .map(|_| self.send_url.clone());
        if send_url.is_none() {
            problems.push(ConfigProblem::new(
                "generic.send_url",
                format!("{:?} must be an absolute http or https url", self.send_url),
            ));
        }
        let signer = self
            .hmac()
            .build("generic")
            .map_err(|found| problems.extend(found))
            .ok();
        if let Some(cc) = &self.default_country_code {
            problems.extend(check_country_code("generic.default_country_code", cc));
        }
        let ttl = self.concat_ttl_secs.unwrap_or(DEFAULT_CONCAT_TTL_SECS);
        if ttl == 0 {
            problems.push(ConfigProblem::new(
                "generic.concat_ttl_secs",
                "must be greater than 0",
            ));
        }
        match (send_url, signer) {
            (Some(send_url), Some(signer)) if problems.len() == before => Some(GenericSettings {
                send_url,
                signer,
                from: self.from.clone(),
                split: self.split,
                default_country_code: self.default_country_code.clone(),
                concat_ttl: Duration::from_secs(ttl),
            }),
            _ => None,
        }
    }
}

impl QuietHoursConfig {
    fn validate(&self, problems: &mut Vec<ConfigProblem>) -> Option<QuietHours> {
        let mut report = |key: &str, err: String| {
            problems.push(ConfigProblem::new(format!("quiet_hours.{key}"), err));
        };
        let offset = parse_utc_offset(&self.utc_offset)
            .map_err(|e| report("utc_offset", e.to_string()))
            .ok();
        let start = parse_local_time(&self.start)
            .map_err(|e| report("start", e.to_string()))
            .ok();
        let end = parse_local_time(&self.end)
            .map_err(|e| report("end", e.to_string()))
            .ok();
        let (offset, start, end) = (offset?, start?, end?);
        if start == end {
            report("end", "must differ from start".to_owned());
            return None;
        }
        Some(QuietHours { offset, start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> SmsConfig {
        match toml::from_str(toml_text) {
            Ok(config) => config,
            Err(err) => panic!("test config does not parse: {err}"),
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<SmsConfig>("id = \"a\"\nprovider = \"twilio\"\nsurprise = 1\n")
            .unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let config = parse(
            r#"
            id = "Main"
            provider = "twilio"
            public_url = "ftp://x"
            [twilio]
            account_sid = "XX1"
            from = "+1"
            messaging_service_sid = "MG1"
            api_base = "not a url"
            [generic]
            send_url = "https://gw.example"
            signing_key = "k"
            [quiet_hours]
            utc_offset = "8"
            start = "21:00"
            end = "25:00"
            "#,
        );
        let problems = config.validate().unwrap_err();
        let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "generic",
                "id",
                "public_url",
                "quiet_hours.end",
                "quiet_hours.utc_offset",
                "twilio.account_sid",
                "twilio.api_base",
                "twilio.auth_token",
                "twilio.from",
            ]
        );
    }

    #[test]
    fn twilio_needs_public_url_and_generic_needs_its_table() {
        let config = parse(
            r#"
            id = "main"
            provider = "twilio"
            [twilio]
            account_sid = "AC123"
            auth_token = "t"
            from = "+15005550006"
            "#,
        );
        let problems = config.validate().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "public_url");

        let config = parse("id = \"gw\"\nprovider = \"generic\"\n");
        let problems = config.validate().unwrap_err();
        assert_eq!(problems[0].key, "generic");
    }
}

#[cfg(test)]
mod example_file {
    use std::sync::Arc;

    use switchboard_sdk::testing::connector_tables;
    use switchboard_sdk::{ConnectorContext, ConnectorFactory, Secret};

    use super::*;
    use crate::connector::SmsFactory;

    /// The shipped config.toml parses, and builds once its secrets are resolvable.
    #[test]
    fn the_example_config_parses_and_builds() {
        let tables: Vec<SmsConfig> = connector_tables(include_str!("../config.toml"), "sms")
            .unwrap_or_else(|err| panic!("config.toml: {err}"));
        let [mut twilio, mut generic] = match <[SmsConfig; 2]>::try_from(tables) {
            Ok(both) => both,
            Err(all) => panic!("expected two tables, got {}", all.len()),
        };
        assert_eq!(twilio.provider, ProviderKind::Twilio);
        assert_eq!(generic.provider, ProviderKind::Generic);

        // As shipped, the secrets point at a variable and a file this machine lacks: the
        // build names exactly those keys.
        let context = ConnectorContext::in_memory();
        let err = SmsFactory::build(&twilio, &context).err().map(|e| e.0);
        let keys: Vec<String> = err.unwrap_or_default().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["twilio.auth_token_env"]);
        let err = SmsFactory::build(&generic, &context).err().map(|e| e.0);
        let keys: Vec<String> = err.unwrap_or_default().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["generic.signing_key_file"]);

        if let Some(t) = twilio.twilio.as_mut() {
            t.auth_token_env = None;
            t.auth_token = Some(Secret::new("token"));
        }
        if let Some(g) = generic.generic.as_mut() {
            g.signing_key_file = None;
            g.signing_key = Some(Secret::new("key"));
        }
        for config in [&twilio, &generic] {
            let built: Result<Arc<dyn switchboard_sdk::Connector>, _> =
                SmsFactory::build(config, &context);
            match built {
                Ok(connector) => assert_eq!(connector.id(), config.id),
                Err(err) => panic!("{}: {:?}", config.id, err.0),
            }
        }
        assert!(twilio.validate().is_ok_and(|s| s.quiet_hours.is_some()));
    }
}
