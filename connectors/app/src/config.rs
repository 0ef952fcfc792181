//! The `[[connectors.app]]` table and its validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchboard_sdk::config::is_connector_id;
use switchboard_sdk::reqwest::Url;
use switchboard_sdk::{ConfigProblem, ConnectorLimits, Secret, SecretRef};

use crate::push::config::{PushConfig, PushSettings};

/// Replay window used when `replay_window_secs` is not set.
pub const DEFAULT_REPLAY_WINDOW_SECS: u64 = 300;
/// Webhook timeout used when `webhook.timeout_ms` is not set.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 5000;
/// Shortest signing key accepted, in bytes: shorter HMAC keys are guessable.
pub const MIN_SIGNING_KEY_BYTES: usize = 16;

const MAX_ID_CHARS: usize = 32;
const REPLAY_WINDOW_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;

/// One app backend: `[[connectors.app]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Unique id of this connector (lowercase letters, digits, `-`; 1 to 32 chars).
    pub id: String,
    /// Shared HMAC key, inline.
    #[serde(default)]
    pub signing_key: Option<Secret>,
    /// Shared HMAC key, read from this environment variable.
    #[serde(default)]
    pub signing_key_env: Option<String>,
    /// Shared HMAC key, read from this file (one trailing newline ignored).
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// How far a request's timestamp may be from now, either way, in seconds (1..=3600).
    #[serde(default = "default_replay_window_secs")]
    pub replay_window_secs: u64,
    /// Keep the posted JSON as the envelope's `raw`.
    #[serde(default)]
    pub keep_raw: bool,
    /// Where agent replies are posted.
    pub webhook: WebhookConfig,
    /// Push notifications for users who are not in the app (FCM, APNs, JPush).
    #[serde(default)]
    pub push: Option<PushConfig>,
    /// Limits the daemon enforces for this connector.
    #[serde(default)]
    pub limits: ConnectorLimits,
}

/// The app backend's endpoint for agent replies: `[connectors.app.webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Absolute http or https URL the replies are posted to.
    pub url: String,
    /// How long one delivery may take, connect to last body byte, in ms (100..=60000).
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_replay_window_secs() -> u64 {
    DEFAULT_REPLAY_WINDOW_SECS
}

fn default_webhook_timeout_ms() -> u64 {
    DEFAULT_WEBHOOK_TIMEOUT_MS
}

/// An [`AppConfig`] that passed validation, with its secret resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The connector id.
    pub id: String,
    /// The shared HMAC key, resolved.
    pub signing_key: Secret,
    /// Allowed timestamp distance, seconds.
    pub replay_window_secs: i64,
    /// Keep the posted JSON as `raw`.
    pub keep_raw: bool,
    /// Where replies go.
    pub webhook_url: Url,
    /// Limit of one delivery attempt.
    pub webhook_timeout: Duration,
    /// Push delivery, when configured.
    pub push: Option<PushSettings>,
    /// Limits the daemon enforces.
    pub limits: ConnectorLimits,
}

impl AppConfig {
    /// Checks every setting and resolves the signing key; returns every problem found.
    pub(crate) fn validate(&self) -> Result<Settings, Vec<ConfigProblem>> {
        let mut problems = Vec::new();

        if let Err(message) = check_id(&self.id) {
            problems.push(ConfigProblem::new("id", message));
        }

        let signing_key = match SecretRef::new(
            "signing_key",
            &self.signing_key,
            &self.signing_key_env,
            &self.signing_key_file,
        )
        .required()
        {
            Ok(key) if key.expose().len() < MIN_SIGNING_KEY_BYTES => {
                problems.push(ConfigProblem::new(
                    self.signing_key_source(),
                    format!(
                        "signing key is {} bytes, it must be at least {MIN_SIGNING_KEY_BYTES}",
                        key.expose().len()
                    ),
                ));
                None
            }
            Ok(key) => Some(key),
            Err(problem) => {
                problems.push(problem);
                None
            }
        };

        if !REPLAY_WINDOW_RANGE.contains(&self.replay_window_secs) {
            problems.push(ConfigProblem::new(
                "replay_window_secs",
                format!(
                    "must be between {} and {} seconds, got {}",
                    REPLAY_WINDOW_RANGE.start(),
                    REPLAY_WINDOW_RANGE.end(),
                    self.replay_window_secs
                ),
            ));
        }

        let webhook_url = match check_webhook_url(&self.webhook.url) {
            Ok(url) => Some(url),
            Err(message) => {
                problems.push(ConfigProblem::new("webhook.url", message));
                None
            }
        };

        if !TIMEOUT_RANGE.contains(&self.webhook.timeout_ms) {
            problems.push(ConfigProblem::new(
                "webhook.timeout_ms",
                format!(
                    "must be between {} and {} ms, got {}",
                    TIMEOUT_RANGE.start(),
                    TIMEOUT_RANGE.end(),
                    self.webhook.timeout_ms
                ),
            ));
        }

        let push = self
            .push
            .as_ref()
            .and_then(|push| push.validate(&mut problems));

        problems.extend(self.limits.validate());

        match (signing_key, webhook_url) {
            (Some(signing_key), Some(webhook_url)) if problems.is_empty() => Ok(Settings {
                id: self.id.clone(),
                signing_key,
                // Bounded by REPLAY_WINDOW_RANGE above, so the conversion cannot fail.
                replay_window_secs: i64::try_from(self.replay_window_secs).unwrap_or(i64::MAX),
                keep_raw: self.keep_raw,
                webhook_url,
                webhook_timeout: Duration::from_millis(self.webhook.timeout_ms),
                push,
                limits: self.limits.clone(),
            }),
            _ => Err(problems),
        }
    }

    /// The key the signing key was given under, so a length problem points at that line.
    fn signing_key_source(&self) -> &'static str {
        if self.signing_key_env.is_some() {
            "signing_key_env"
        } else if self.signing_key_file.is_some() {
            "signing_key_file"
        } else {
            "signing_key"
        }
    }
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(format!("must be at most {MAX_ID_CHARS} characters"));
    }
    if !is_connector_id(id) {
        return Err(format!(
            "{id:?} may only hold lowercase letters, digits and '-'"
        ));
    }
    Ok(())
}

fn check_webhook_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|err| format!("not a valid url: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, got {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("url has no host".to_owned());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AppConnectorFactory;
    use switchboard_sdk::testing::connector_tables;
    use switchboard_sdk::{ConnectorContext, ConnectorFactory};

    const EXAMPLE: &str = include_str!("../config.toml");

    fn parse_table(toml_text: &str) -> Result<AppConfig, String> {
        connector_tables(toml_text, "app")?
            .into_iter()
            .next()
            .ok_or_else(|| "no [[connectors.app]] table".to_owned())
    }

    fn problems_of(toml_text: &str) -> Vec<ConfigProblem> {
        let config = parse_table(toml_text).unwrap_or_else(|e| panic!("parse: {e}"));
        match config.validate() {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    const GOOD: &str = r#"
        [[connectors.app]]
        id = "main-app"
        signing_key = "0123456789abcdef0123"
        [connectors.app.webhook]
        url = "https://backend.example.com/switchboard/replies"
    "#;

    #[test]
    fn example_fragment_parses_and_builds() {
        let config = parse_table(EXAMPLE).unwrap();
        assert_eq!(AppConnectorFactory::id(&config), config.id);
        let connector = AppConnectorFactory::build(&config, &ConnectorContext::in_memory())
            .unwrap_or_else(|e| panic!("example does not build: {:?}", e.0));
        assert_eq!(connector.kind(), "app");
        assert_eq!(connector.id(), config.id);
    }

    #[test]
    fn defaults_apply_when_optional_keys_are_absent() {
        let config = parse_table(GOOD).unwrap();
        let settings = config.validate().unwrap();
        assert_eq!(settings.replay_window_secs, 300);
        assert!(!settings.keep_raw);
        assert_eq!(settings.webhook_timeout, Duration::from_millis(5000));
        assert_eq!(settings.limits, ConnectorLimits::default());
    }

    #[test]
    fn each_invalid_setting_is_reported_under_its_key() {
        let missing_file = std::env::temp_dir().join("sb-app-surely-missing-key-file");
        let cases: Vec<(&str, String, &str)> = vec![
            ("uppercase id", GOOD.replace("main-app", "Main"), "id"),
            ("empty id", GOOD.replace("main-app", ""), "id"),
            ("id with dot", GOOD.replace("main-app", "a.b"), "id"),
            ("long id", GOOD.replace("main-app", &"a".repeat(33)), "id"),
            (
                "no signing key",
                GOOD.replace("signing_key = \"0123456789abcdef0123\"", ""),
                "signing_key",
            ),
            (
                "two signing keys",
                GOOD.replace(
                    "signing_key = ",
                    "signing_key_env = \"HOME\"\n signing_key = ",
                ),
                // The later of the two ways given: the key surely in the file.
                "signing_key_env",
            ),
            (
                "short signing key",
                GOOD.replace("0123456789abcdef0123", "short"),
                "signing_key",
            ),
            (
                "unset env",
                GOOD.replace(
                    "signing_key = \"0123456789abcdef0123\"",
                    "signing_key_env = \"SWITCHBOARD_APP_TEST_SURELY_UNSET\"",
                ),
                "signing_key_env",
            ),
            (
                "missing file",
                GOOD.replace(
                    "signing_key = \"0123456789abcdef0123\"",
                    &format!(
                        "signing_key_file = {:?}",
                        missing_file.display().to_string()
                    ),
                ),
                "signing_key_file",
            ),
            (
                "zero window",
                GOOD.replace("id = ", "replay_window_secs = 0\n id = "),
                "replay_window_secs",
            ),
            (
                "huge window",
                GOOD.replace("id = ", "replay_window_secs = 3601\n id = "),
                "replay_window_secs",
            ),
            (
                "ftp url",
                GOOD.replace("https://backend", "ftp://backend"),
                "webhook.url",
            ),
            (
                "relative url",
                GOOD.replace("https://backend.example.com", ""),
                "webhook.url",
            ),
            (
                "short timeout",
                GOOD.replace("url = ", "timeout_ms = 99\n url = "),
                "webhook.timeout_ms",
            ),
            (
                "long timeout",
                GOOD.replace("url = ", "timeout_ms = 60001\n url = "),
                "webhook.timeout_ms",
            ),
            (
                "zero limit",
                format!("{GOOD}\n[connectors.app.limits]\nmax_body_bytes = 0\n"),
                "limits.max_body_bytes",
            ),
        ];
        for (name, text, key) in cases {
            let problems = problems_of(&text);
            assert!(
                problems.iter().any(|p| p.key == key),
                "{name}: expected a problem at {key}, got {problems:?}"
            );
            assert!(
                problems
                    .iter()
                    .all(|p| !p.message.contains("0123456789abcdef")),
                "{name}: a problem message shows the key"
            );
        }
    }

    #[test]
    fn a_short_key_from_a_file_is_reported_at_the_file_key() {
        let path = std::env::temp_dir().join(format!("sb-app-short-key-{}", std::process::id()));
        std::fs::write(&path, "tooshort\n").unwrap();
        let text = GOOD.replace(
            "signing_key = \"0123456789abcdef0123\"",
            &format!("signing_key_file = {:?}", path.display().to_string()),
        );
        let problems = problems_of(&text);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "signing_key_file");
    }

    #[test]
    fn every_problem_is_collected_not_only_the_first() {
        let text = r#"
            [[connectors.app]]
            id = "Bad Id"
            replay_window_secs = 0
            [connectors.app.webhook]
            url = "mailto:ops@example.com"
            timeout_ms = 1
            [connectors.app.limits]
            outbound_per_second = 0
        "#;
        let config = parse_table(text).unwrap();
        let problems = match AppConnectorFactory::build(&config, &ConnectorContext::in_memory()) {
            Ok(_) => panic!("a config this bad must not build"),
            Err(err) => err.0,
        };
        let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "id",
                "limits.outbound_per_second",
                "replay_window_secs",
                "signing_key",
                "webhook.timeout_ms",
                "webhook.url"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused_by_the_parser() {
        let top = GOOD.replace("id = ", "colour = \"blue\"\n id = ");
        assert!(parse_table(&top).unwrap_err().contains("colour"));
        let nested = GOOD.replace("url = ", "retries = 3\n url = ");
        assert!(parse_table(&nested).unwrap_err().contains("retries"));
        let no_webhook = r#"
            [[connectors.app]]
            id = "a"
            signing_key = "0123456789abcdef0123"
        "#;
        assert!(parse_table(no_webhook).unwrap_err().contains("webhook"));
    }

    #[test]
    fn the_signing_key_never_shows_in_debug_output() {
        let config = parse_table(GOOD).unwrap();
        let settings = config.validate().unwrap();
        let printed = format!("{config:?} {settings:?}");
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
    }
}
