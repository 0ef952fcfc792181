//! The `[[connectors.wechat]]` table and its validation into ready-to-use settings.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;
use switchboard_sdk::config::is_connector_id;
use switchboard_sdk::{ConfigProblem, ConnectorLimits, Secret, SecretRef};
use time::{Time, UtcOffset, Weekday};

use crate::crypto::{AesKey, MessageCrypt};

/// The WeChat API used unless `api_base` says otherwise.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";

/// Events handed to agents through the pipeline unless `events_to_agents` says otherwise;
/// every other event is published on `switchboard.events`.
pub const DEFAULT_EVENTS_TO_AGENTS: &[&str] = &[
    "subscribe",
    "scan",
    "click",
    "view",
    "view_miniprogram",
    "scancode_push",
    "scancode_waitmsg",
    "pic_sysphoto",
    "pic_photo_or_album",
    "pic_weixin",
    "location_select",
    "kf_create_session",
    "kf_close_session",
    "kf_switch_session",
];

/// Longest passive text reply accepted in config; WeChat cuts off around 2047 bytes.
const MAX_REPLY_TEXT_BYTES: usize = 2000;

/// One WeChat official account, `[[connectors.wechat]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatConfig {
    /// Connector id (lowercase letters, digits, `-`): the `{id}` in `/wechat/{id}`.
    pub id: String,
    /// The account's AppID (`wx…`); also the app id expected inside encrypted frames.
    pub app_id: String,
    /// The AppSecret, inline.
    pub app_secret: Option<Secret>,
    /// The AppSecret, from this environment variable.
    pub app_secret_env: Option<String>,
    /// The AppSecret, from this file.
    pub app_secret_file: Option<PathBuf>,
    /// The server-config Token (3 to 32 letters or digits), inline.
    pub token: Option<Secret>,
    /// The Token, from this environment variable.
    pub token_env: Option<String>,
    /// The Token, from this file.
    pub token_file: Option<PathBuf>,
    /// The current EncodingAESKey (43 characters), inline; needed for compatible and safe mode.
    pub encoding_aes_key: Option<Secret>,
    /// The current EncodingAESKey, from this environment variable.
    pub encoding_aes_key_env: Option<String>,
    /// The current EncodingAESKey, from this file.
    pub encoding_aes_key_file: Option<PathBuf>,
    /// The EncodingAESKey before the last rotation, tried when the current one fails, inline.
    pub previous_encoding_aes_key: Option<Secret>,
    /// The previous EncodingAESKey, from this environment variable.
    pub previous_encoding_aes_key_env: Option<String>,
    /// The previous EncodingAESKey, from this file.
    pub previous_encoding_aes_key_file: Option<PathBuf>,
    /// Refuse encrypted frames made for another app id (turn off for third-party platforms,
    /// whose frames carry the component app id). Default true.
    #[serde(default = "default_true")]
    pub strict_app_id: bool,
    /// Refuse pushes whose `timestamp` is further than this from now (seconds). Default off.
    pub timestamp_window_secs: Option<u64>,
    /// Base URL of the WeChat API. Default `https://api.weixin.qq.com`.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// How access tokens are fetched: `stable_token` (default) or `classic`.
    #[serde(default)]
    pub token_endpoint: TokenEndpoint,
    /// Customer-service seat (`name@account`) replies are sent as. Default none.
    pub kf_account: Option<String>,
    /// Event names (lowercase) handed to agents; every other event is reported on
    /// `switchboard.events`. Default: see the README.
    #[serde(default = "default_events_to_agents")]
    pub events_to_agents: Vec<String>,
    /// Keep the decrypted push as JSON in the envelope's `raw`. Default false.
    #[serde(default)]
    pub keep_raw: bool,
    /// Passive auto-replies. Default none.
    #[serde(default)]
    pub auto_reply: AutoReplyConfig,
    /// Signed daemon URLs for inbound media. Default off.
    #[serde(default)]
    pub media_proxy: MediaProxyConfig,
    /// Body size, request rate and reply rate limits.
    #[serde(default)]
    pub limits: ConnectorLimits,
}

/// Which access-token endpoint to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpoint {
    /// `POST /cgi-bin/stable_token`: tokens isolated from other systems using the account.
    #[default]
    StableToken,
    /// `GET /cgi-bin/token`: each fetch replaces the token for every user of the account.
    Classic,
}

/// `[connectors.wechat.auto_reply]`: fixed passive replies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoReplyConfig {
    /// Answer to a new follower. Default none.
    pub subscribe_text: Option<String>,
    /// Answer to a message outside business hours. Default none.
    pub after_hours_text: Option<String>,
    /// Opening time, `HH:MM` local. Default `09:00`.
    #[serde(default = "default_open")]
    pub business_hours_start: String,
    /// Closing time, `HH:MM` local, after the opening time. Default `18:00`.
    #[serde(default = "default_close")]
    pub business_hours_end: String,
    /// Open days, ISO numbers (1 Monday … 7 Sunday). Default Monday to Friday.
    #[serde(default = "default_days")]
    pub business_days: Vec<u8>,
    /// The local time zone as a UTC offset, `+HH:MM`. Default `+08:00`.
    #[serde(default = "default_offset")]
    pub utc_offset: String,
    /// Seconds before one user gets the after-hours notice again. Default 43200.
    #[serde(default = "default_repeat")]
    pub after_hours_repeat_secs: u64,
}

impl Default for AutoReplyConfig {
    fn default() -> Self {
        Self {
            subscribe_text: None,
            after_hours_text: None,
            business_hours_start: default_open(),
            business_hours_end: default_close(),
            business_days: default_days(),
            utc_offset: default_offset(),
            after_hours_repeat_secs: default_repeat(),
        }
    }
}

/// `[connectors.wechat.media_proxy]`: daemon URLs for inbound media.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaProxyConfig {
    /// Put signed `/wechat/{id}/media/{media_id}` URLs into inbound media. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// HMAC key (at least 32 bytes) signing media URLs, inline.
    pub signing_key: Option<Secret>,
    /// The signing key, from this environment variable.
    pub signing_key_env: Option<String>,
    /// The signing key, from this file.
    pub signing_key_file: Option<PathBuf>,
    /// Seconds a media URL stays valid. Default 86400.
    #[serde(default = "default_url_ttl")]
    pub url_ttl_secs: u64,
    /// Public origin of the daemon (`https://cs.example.com`) for absolute URLs. Default
    /// none: URLs are relative to the daemon.
    pub public_base_url: Option<String>,
}

impl Default for MediaProxyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            signing_key: None,
            signing_key_env: None,
            signing_key_file: None,
            url_ttl_secs: default_url_ttl(),
            public_base_url: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_api_base() -> String {
    DEFAULT_API_BASE.to_owned()
}
fn default_events_to_agents() -> Vec<String> {
    DEFAULT_EVENTS_TO_AGENTS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}
fn default_open() -> String {
    "09:00".to_owned()
}
fn default_close() -> String {
    "18:00".to_owned()
}
fn default_days() -> Vec<u8> {
    vec![1, 2, 3, 4, 5]
}
fn default_offset() -> String {
    "+08:00".to_owned()
}
fn default_repeat() -> u64 {
    12 * 3600
}
fn default_url_ttl() -> u64 {
    86_400
}

/// Validated, resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Connector id.
    pub id: String,
    /// AppID.
    pub app_id: String,
    /// AppSecret.
    pub app_secret: Secret,
    /// Server Token.
    pub token: Secret,
    /// Keys for encrypted pushes (may hold none).
    pub crypt: MessageCrypt,
    /// Replay window, seconds.
    pub timestamp_window_secs: Option<u64>,
    /// API base without a trailing slash.
    pub api_base: String,
    /// Token endpoint.
    pub token_endpoint: TokenEndpoint,
    /// Default customer-service seat.
    pub kf_account: Option<String>,
    /// Lowercase event names handed to agents.
    pub events_to_agents: BTreeSet<String>,
    /// Keep raw pushes.
    pub keep_raw: bool,
    /// Passive auto-replies, if any is configured.
    pub auto_reply: Option<AutoReply>,
    /// Media proxy, when enabled.
    pub media_proxy: Option<MediaProxy>,
    /// Limits.
    pub limits: ConnectorLimits,
}

/// Resolved auto-reply settings.
#[derive(Debug, Clone)]
pub struct AutoReply {
    /// Greeting for new followers.
    pub subscribe_text: Option<String>,
    /// After-hours notice.
    pub after_hours_text: Option<String>,
    /// Opening time.
    pub open: Time,
    /// Closing time.
    pub close: Time,
    /// Open days.
    pub days: Vec<Weekday>,
    /// Local offset.
    pub offset: UtcOffset,
    /// Repeat interval of the after-hours notice, seconds.
    pub after_hours_repeat_secs: u64,
}

/// Resolved media proxy settings.
#[derive(Debug, Clone)]
pub struct MediaProxy {
    /// HMAC key.
    pub signing_key: Secret,
    /// URL lifetime, seconds.
    pub url_ttl_secs: u64,
    /// Public origin without a trailing slash, or empty for relative URLs.
    pub public_base_url: String,
}

fn is_http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.contains(char::is_whitespace)
}

fn parse_hhmm(value: &str) -> Option<Time> {
    let (h, m) = value.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::from_hms(h.parse().ok()?, m.parse().ok()?, 0).ok()
}

fn parse_offset(value: &str) -> Option<UtcOffset> {
    let sign = match value.as_bytes().first()? {
        b'+' => 1i8,
        b'-' => -1i8,
        _ => return None,
    };
    let time = parse_hhmm(&value[1..])?;
    UtcOffset::from_hms(sign * time.hour() as i8, sign * time.minute() as i8, 0).ok()
}

fn reply_text(
    problems: &mut Vec<ConfigProblem>,
    key: &str,
    value: &Option<String>,
) -> Option<String> {
    let text = value.as_ref()?;
    if text.trim().is_empty() {
        problems.push(ConfigProblem::new(key, "must not be empty when given"));
    } else if text.len() > MAX_REPLY_TEXT_BYTES {
        problems.push(ConfigProblem::new(
            key,
            format!("must be at most {MAX_REPLY_TEXT_BYTES} bytes of utf-8"),
        ));
    }
    Some(text.clone())
}

impl WechatConfig {
    /// Checks every key and resolves secrets; returns every problem found, not just the first.
    pub fn validate(&self) -> Result<Settings, Vec<ConfigProblem>> {
        let mut problems = self.limits.validate();
        if !is_connector_id(&self.id) {
            problems.push(ConfigProblem::new(
                "id",
                "must be lowercase letters, digits and '-'",
            ));
        }
        let app_id = self.app_id.trim();
        if app_id.is_empty() || app_id.contains(char::is_whitespace) {
            problems.push(ConfigProblem::new(
                "app_id",
                "must be the account's AppID, without spaces",
            ));
        }

        let mut secret = |r: SecretRef<'_>, required: bool| {
            let resolved = if required {
                r.required().map(Some)
            } else {
                r.optional()
            };
            resolved.unwrap_or_else(|problem| {
                problems.push(problem);
                None
            })
        };
        let app_secret = secret(
            SecretRef::new(
                "app_secret",
                &self.app_secret,
                &self.app_secret_env,
                &self.app_secret_file,
            ),
            true,
        );
        let token = secret(
            SecretRef::new("token", &self.token, &self.token_env, &self.token_file),
            true,
        );
        let current_key = secret(
            SecretRef::new(
                "encoding_aes_key",
                &self.encoding_aes_key,
                &self.encoding_aes_key_env,
                &self.encoding_aes_key_file,
            ),
            false,
        );
        let previous_key = secret(
            SecretRef::new(
                "previous_encoding_aes_key",
                &self.previous_encoding_aes_key,
                &self.previous_encoding_aes_key_env,
                &self.previous_encoding_aes_key_file,
            ),
            false,
        );
        let media_key = if self.media_proxy.enabled {
            secret(
                SecretRef::new(
                    "media_proxy.signing_key",
                    &self.media_proxy.signing_key,
                    &self.media_proxy.signing_key_env,
                    &self.media_proxy.signing_key_file,
                ),
                true,
            )
        } else {
            None
        };

        if let Some(token) = &token {
            let t = token.expose();
            if !(3..=32).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_alphanumeric()) {
                problems.push(ConfigProblem::new(
                    "token",
                    "must be 3 to 32 letters or digits, as in the account's server config",
                ));
            }
        }
        let mut keys = Vec::new();
        for (name, value) in [
            ("encoding_aes_key", &current_key),
            ("previous_encoding_aes_key", &previous_key),
        ] {
            if let Some(value) = value {
                match AesKey::from_encoding_aes_key(value.expose()) {
                    Ok(key) => keys.push(key),
                    Err(err) => problems.push(ConfigProblem::new(name, err.to_string())),
                }
            }
        }
        if previous_key.is_some() && current_key.is_none() {
            problems.push(ConfigProblem::new(
                "previous_encoding_aes_key",
                "needs encoding_aes_key: the previous key is only a fallback",
            ));
        }
        if self.timestamp_window_secs == Some(0) {
            problems.push(ConfigProblem::new(
                "timestamp_window_secs",
                "must be greater than 0 (leave it out to turn the check off)",
            ));
        }
        let api_base = self.api_base.trim_end_matches('/').to_owned();
        if !is_http_url(&api_base) {
            problems.push(ConfigProblem::new(
                "api_base",
                "must be an http:// or https:// url",
            ));
        }
        if let Some(kf) = &self.kf_account
            && (kf.trim().is_empty() || !kf.contains('@'))
        {
            problems.push(ConfigProblem::new(
                "kf_account",
                "must look like name@account",
            ));
        }
        let mut events_to_agents = BTreeSet::new();
        for (i, name) in self.events_to_agents.iter().enumerate() {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                problems.push(ConfigProblem::new(
                    format!("events_to_agents.{i}"),
                    "must not be empty",
                ));
            }
            events_to_agents.insert(name);
        }

        let auto_reply = self.auto_reply(&mut problems);
        let media_proxy = self.media_proxy(&mut problems, media_key);

        match (app_secret, token) {
            (Some(app_secret), Some(token)) if problems.is_empty() => {
                let crypt = MessageCrypt::new(token.expose(), keys, app_id, self.strict_app_id);
                Ok(Settings {
                    id: self.id.clone(),
                    app_id: app_id.to_owned(),
                    app_secret,
                    token,
                    crypt,
                    timestamp_window_secs: self.timestamp_window_secs,
                    api_base,
                    token_endpoint: self.token_endpoint,
                    kf_account: self.kf_account.clone(),
                    events_to_agents,
                    keep_raw: self.keep_raw,
                    auto_reply,
                    media_proxy,
                    limits: self.limits.clone(),
                })
            }
            _ => Err(problems),
        }
    }

    fn auto_reply(&self, problems: &mut Vec<ConfigProblem>) -> Option<AutoReply> {
        let c = &self.auto_reply;
        let subscribe_text = reply_text(problems, "auto_reply.subscribe_text", &c.subscribe_text);
        let after_hours_text =
            reply_text(problems, "auto_reply.after_hours_text", &c.after_hours_text);
        let open = parse_hhmm(&c.business_hours_start);
        if open.is_none() {
            problems.push(ConfigProblem::new(
                "auto_reply.business_hours_start",
                "must be HH:MM",
            ));
        }
        let close = parse_hhmm(&c.business_hours_end);
        if close.is_none() {
            problems.push(ConfigProblem::new(
                "auto_reply.business_hours_end",
                "must be HH:MM",
            ));
        }
        if let (Some(open), Some(close)) = (open, close)
            && close <= open
        {
            problems.push(ConfigProblem::new(
                "auto_reply.business_hours_end",
                "must be after business_hours_start",
            ));
        }
        let mut days = Vec::new();
        for (i, day) in c.business_days.iter().enumerate() {
            match day {
                1..=7 => days.push(Weekday::Sunday.nth_next(*day)),
                _ => problems.push(ConfigProblem::new(
                    format!("auto_reply.business_days.{i}"),
                    "must be 1 (Monday) to 7 (Sunday)",
                )),
            }
        }
        let offset = parse_offset(&c.utc_offset);
        if offset.is_none() {
            problems.push(ConfigProblem::new(
                "auto_reply.utc_offset",
                "must look like +08:00",
            ));
        }
        if c.after_hours_repeat_secs == 0 {
            problems.push(ConfigProblem::new(
                "auto_reply.after_hours_repeat_secs",
                "must be greater than 0",
            ));
        }
        if subscribe_text.is_none() && after_hours_text.is_none() {
            return None;
        }
        Some(AutoReply {
            subscribe_text,
            after_hours_text,
            open: open?,
            close: close?,
            days,
            offset: offset?,
            after_hours_repeat_secs: c.after_hours_repeat_secs,
        })
    }

    fn media_proxy(
        &self,
        problems: &mut Vec<ConfigProblem>,
        signing_key: Option<Secret>,
    ) -> Option<MediaProxy> {
        let c = &self.media_proxy;
        if c.url_ttl_secs == 0 {
            problems.push(ConfigProblem::new(
                "media_proxy.url_ttl_secs",
                "must be greater than 0",
            ));
        }
        let public_base_url = c
            .public_base_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_default();
        if c.public_base_url.is_some() && !is_http_url(&public_base_url) {
            problems.push(ConfigProblem::new(
                "media_proxy.public_base_url",
                "must be an http:// or https:// url",
            ));
        }
        if !c.enabled {
            return None;
        }
        let signing_key = signing_key?;
        if signing_key.expose().len() < 32 {
            problems.push(ConfigProblem::new(
                "media_proxy.signing_key",
                "must be at least 32 bytes",
            ));
        }
        Some(MediaProxy {
            signing_key,
            url_ttl_secs: c.url_ttl_secs,
            public_base_url,
        })
    }
}

impl AutoReply {
    /// Whether `now` falls inside business hours in the configured zone.
    pub fn is_open(&self, now: time::OffsetDateTime) -> bool {
        let local = now.to_offset(self.offset);
        self.days.contains(&local.weekday())
            && local.time() >= self.open
            && local.time() < self.close
    }
}

#[cfg(test)]
mod tests {
    use switchboard_sdk::testing::connector_tables;
    use switchboard_sdk::{ConnectorContext, ConnectorFactory};

    use super::*;
    use crate::WechatFactory;

    fn parse(text: &str) -> WechatConfig {
        toml::from_str(text).unwrap()
    }

    const MINIMAL: &str = "id = \"a\"\napp_id = \"wx1\"\napp_secret = \"s\"\ntoken = \"tok\"\n";

    #[test]
    fn the_example_parses_and_builds() {
        let tables: Vec<WechatConfig> =
            connector_tables(include_str!("../config.toml"), "wechat").unwrap();
        let config = &tables[0];
        let connector = WechatFactory::build(config, &ConnectorContext::in_memory()).unwrap();
        assert_eq!(connector.kind(), "wechat");
        assert_eq!(connector.id(), "cs-main");
        let settings = config.validate().unwrap();
        assert!(settings.auto_reply.is_some() && settings.media_proxy.is_some());
        assert!(settings.crypt.has_keys());
        assert!(!settings.events_to_agents.contains("location"));
    }

    #[test]
    fn defaults_are_as_documented() {
        let settings = parse(MINIMAL).validate().unwrap();
        assert_eq!(settings.api_base, DEFAULT_API_BASE);
        assert_eq!(settings.token_endpoint, TokenEndpoint::StableToken);
        assert!(settings.auto_reply.is_none() && settings.media_proxy.is_none());
        assert!(!settings.crypt.has_keys());
        assert!(settings.timestamp_window_secs.is_none());
        assert!(!settings.keep_raw);
        let expected: BTreeSet<String> = DEFAULT_EVENTS_TO_AGENTS
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(settings.events_to_agents, expected);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<WechatConfig>(&format!("{MINIMAL}colour = 1")).is_err());
        assert!(
            toml::from_str::<WechatConfig>(&format!("{MINIMAL}[auto_reply]\ncolour = 1")).is_err()
        );
        assert!(
            toml::from_str::<WechatConfig>(&format!("{MINIMAL}token_endpoint = \"magic\""))
                .is_err()
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            id = "Bad Id"
            app_id = " "
            app_secret = "s"
            app_secret_env = "ALSO"
            token = "x"
            encoding_aes_key = "short"
            previous_encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF!"
            timestamp_window_secs = 0
            api_base = "ftp://example"
            kf_account = "nobody"
            events_to_agents = ["click", " "]
            [auto_reply]
            subscribe_text = " "
            business_hours_start = "9am"
            business_hours_end = "25:00"
            business_days = [0, 8]
            utc_offset = "CST"
            after_hours_repeat_secs = 0
            [media_proxy]
            enabled = true
            signing_key = "short"
            url_ttl_secs = 0
            public_base_url = "cs.example.com"
            [limits]
            max_body_bytes = 0
        "#;
        let problems = parse(text).validate().unwrap_err();
        let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        let mut expected = vec![
            "id",
            "app_id",
            // Given two ways: the sdk points at the later way, the key surely in the file.
            "app_secret_env",
            "token",
            "encoding_aes_key",
            "previous_encoding_aes_key",
            "timestamp_window_secs",
            "api_base",
            "kf_account",
            "events_to_agents.1",
            "auto_reply.subscribe_text",
            "auto_reply.business_hours_start",
            "auto_reply.business_hours_end",
            "auto_reply.business_days.0",
            "auto_reply.business_days.1",
            "auto_reply.utc_offset",
            "auto_reply.after_hours_repeat_secs",
            "media_proxy.signing_key",
            "media_proxy.url_ttl_secs",
            "media_proxy.public_base_url",
            "limits.max_body_bytes",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected, "{problems:#?}");
        assert!(problems.iter().all(|p| !p.message.ends_with('.')));
    }

    #[test]
    fn secrets_resolve_from_files_and_missing_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("sb-wechat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("aes");
        std::fs::write(&key, "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\n").unwrap();
        let text = format!(
            "id = \"a\"\napp_id = \"wx1\"\napp_secret = \"s\"\ntoken = \"tok\"\nencoding_aes_key_file = {:?}\n",
            key.display().to_string()
        );
        assert!(parse(&text).validate().unwrap().crypt.has_keys());
        std::fs::remove_dir_all(&dir).unwrap();

        let problems = parse("id = \"a\"\napp_id = \"wx1\"\n")
            .validate()
            .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["app_secret", "token"]);
        let problems = parse(&format!(
            "{MINIMAL}previous_encoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\""
        ))
        .validate()
        .unwrap_err();
        assert_eq!(problems[0].key, "previous_encoding_aes_key");
    }

    #[test]
    fn business_hours_follow_the_offset_and_days() {
        let config = parse(&format!(
            "{MINIMAL}[auto_reply]\nafter_hours_text = \"closed\"\nbusiness_days = [1, 2, 3, 4, 5, 6]\nutc_offset = \"+08:00\""
        ));
        let auto = config.validate().unwrap().auto_reply.unwrap();
        use time::macros::datetime;
        assert!(auto.is_open(datetime!(2024-06-10 01:00 UTC))); // Monday 09:00 in +08:00
        assert!(!auto.is_open(datetime!(2024-06-10 00:59 UTC)));
        assert!(!auto.is_open(datetime!(2024-06-10 10:00 UTC))); // 18:00 local: closed
        assert!(auto.is_open(datetime!(2024-06-15 05:00 UTC))); // Saturday 13:00
        assert!(!auto.is_open(datetime!(2024-06-16 05:00 UTC))); // Sunday
    }
}
