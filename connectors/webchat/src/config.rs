//! The `[[connectors.webchat]]` table and its validation.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchboard_sdk::reqwest::Url;
use switchboard_sdk::{ConfigProblem, ConnectorLimits, Secret, SecretRef};

/// Shortest visitor secret accepted, in bytes: it signs every visitor id.
pub const MIN_VISITOR_SECRET_BYTES: usize = 32;
/// Shortest site key accepted, in bytes: shorter HMAC keys are guessable.
pub const MIN_SITE_KEY_BYTES: usize = 16;

const MAX_ID_CHARS: usize = 32;

/// One website chat: `[[connectors.webchat]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebchatConfig {
    /// Unique id of this connector (lowercase letters, digits, `-`; 1 to 32 chars).
    pub id: String,
    /// Key that signs anonymous visitor ids, inline (at least 32 bytes).
    #[serde(default)]
    pub visitor_secret: Option<Secret>,
    /// Visitor-id key, read from this environment variable.
    #[serde(default)]
    pub visitor_secret_env: Option<String>,
    /// Visitor-id key, read from this file (one trailing newline ignored).
    #[serde(default)]
    pub visitor_secret_file: Option<PathBuf>,
    /// HMAC key the site's backend signs visitor tokens with, inline (optional).
    #[serde(default)]
    pub site_key: Option<Secret>,
    /// Site token key, read from this environment variable.
    #[serde(default)]
    pub site_key_env: Option<String>,
    /// Site token key, read from this file.
    #[serde(default)]
    pub site_key_file: Option<PathBuf>,
    /// Refuse visitors without a valid site token (needs a site key).
    #[serde(default)]
    pub require_site_token: bool,
    /// Page origins allowed to open the socket (`https://shop.example.com`); `"*"` allows
    /// any. The daemon's own origin (the demo page) is always allowed.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Accept sockets whose request has no `Origin` header (non-browser clients).
    #[serde(default)]
    pub allow_missing_origin: bool,
    /// Header holding the client address set by a trusted proxy (`x-forwarded-for`: its
    /// last entry is used); without it the peer address, when the server provides it.
    #[serde(default)]
    pub client_ip_header: Option<String>,
    /// Absolute URL this connector is reachable at from helpdesks
    /// (`https://chat.example.com/webchat/site`), for links to uploaded images.
    #[serde(default)]
    pub public_url: Option<String>,
    /// An `[[connectors.app]]` id: visitors whose site token names an `app_user_id` are
    /// marked present as that app user too, so app replies can go to the web chat.
    #[serde(default)]
    pub app_connector_id: Option<String>,
    /// Keep each client frame as the envelope's `raw`.
    #[serde(default)]
    pub keep_raw: bool,
    /// Socket limits and buffers.
    #[serde(default)]
    pub socket: SocketConfig,
    /// Conversation history kept for replay.
    #[serde(default)]
    pub history: HistoryConfig,
    /// Image uploads.
    #[serde(default)]
    pub media: MediaConfig,
    /// Limits the daemon enforces for this connector's HTTP requests.
    #[serde(default)]
    pub limits: ConnectorLimits,
}

/// `[connectors.webchat.socket]`: what one socket may cost and do.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    /// Largest frame a client may send, bytes (1024..=1048576).
    pub max_frame_bytes: usize,
    /// Initial read buffer of a socket, bytes (256..=131072).
    pub read_buffer_bytes: usize,
    /// Bytes buffered before a write is flushed, bytes (0..=131072).
    pub write_buffer_bytes: usize,
    /// Longest silence from a client before its socket is closed, seconds (10..=3600).
    pub idle_timeout_secs: u64,
    /// Time a client has to send `hello` after connecting, seconds (1..=60).
    pub hello_timeout_secs: u64,
    /// How often the widget pings, seconds; below `idle_timeout_secs`.
    pub ping_interval_secs: u64,
    /// Sockets this connector holds on one instance.
    pub max_connections: u32,
    /// Sockets one client address may hold on one instance.
    pub max_connections_per_ip: u32,
    /// Sockets one visitor may hold on one instance (tabs).
    pub max_connections_per_visitor: u32,
    /// New sockets one client address may open per minute.
    pub connects_per_ip_per_minute: u32,
    /// Frames per second one socket may send (sustained).
    pub frames_per_second: u32,
    /// Frames one socket may send in a burst.
    pub frame_burst: u32,
    /// Messages per minute from one client address, all its visitors together.
    pub messages_per_ip_per_minute: u32,
    /// Longest text message, characters.
    pub max_text_chars: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 * 1024,
            read_buffer_bytes: 4096,
            write_buffer_bytes: 0,
            idle_timeout_secs: 75,
            hello_timeout_secs: 10,
            ping_interval_secs: 25,
            max_connections: 100_000,
            max_connections_per_ip: 50,
            max_connections_per_visitor: 8,
            connects_per_ip_per_minute: 120,
            frames_per_second: 10,
            frame_burst: 40,
            messages_per_ip_per_minute: 300,
            max_text_chars: 4000,
        }
    }
}

/// `[connectors.webchat.history]`: agent messages kept for replay.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Messages kept per conversation (1..=10000); older ones are dropped.
    pub max_messages: u64,
    /// How long a conversation's history lives after its last message, seconds.
    pub ttl_secs: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_messages: 200,
            ttl_secs: 7 * 24 * 3600,
        }
    }
}

/// `[connectors.webchat.media]`: images visitors upload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest image, bytes; at most `limits.max_body_bytes`. 0 turns uploads off.
    pub max_image_bytes: usize,
    /// How long an uploaded image can be fetched, seconds.
    pub ttl_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_image_bytes: 0,
            ttl_secs: 7 * 24 * 3600,
        }
    }
}

/// A [`WebchatConfig`] that passed validation, with its secrets resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The connector id.
    pub id: String,
    /// Signs visitor ids.
    pub visitor_secret: Secret,
    /// Verifies site tokens.
    pub site_key: Option<Secret>,
    /// Anonymous visitors refused.
    pub require_site_token: bool,
    /// Allowed origins, normalized (`scheme://host[:port]`, lowercase).
    pub allowed_origins: Vec<String>,
    /// Any origin allowed.
    pub any_origin: bool,
    /// Requests without `Origin` allowed.
    pub allow_missing_origin: bool,
    /// Trusted client address header, lowercase.
    pub client_ip_header: Option<String>,
    /// Base URL for media links, without a trailing slash.
    pub public_url: Option<String>,
    /// App connector for app presence.
    pub app_connector_id: Option<String>,
    /// Keep frames as `raw`.
    pub keep_raw: bool,
    /// Socket settings.
    pub socket: SocketConfig,
    /// History settings.
    pub history: HistoryConfig,
    /// Media settings.
    pub media: MediaConfig,
    /// HTTP limits.
    pub limits: ConnectorLimits,
}

impl Settings {
    /// How long a conversation's history lives.
    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history.ttl_secs)
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    problems: &mut Vec<ConfigProblem>,
    key: &str,
    value: T,
    range: RangeInclusive<T>,
) {
    if !range.contains(&value) {
        problems.push(ConfigProblem::new(
            key,
            format!(
                "must be between {} and {}, got {value}",
                range.start(),
                range.end()
            ),
        ));
    }
}

impl WebchatConfig {
    /// Checks every setting and resolves the secrets; returns every problem found.
    pub(crate) fn validate(&self) -> Result<Settings, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        if let Err(message) = check_id(&self.id) {
            problems.push(ConfigProblem::new("id", message));
        }

        let visitor_secret = resolve(
            &mut problems,
            SecretRef::new(
                "visitor_secret",
                &self.visitor_secret,
                &self.visitor_secret_env,
                &self.visitor_secret_file,
            ),
            true,
            MIN_VISITOR_SECRET_BYTES,
        );
        let site_key = resolve(
            &mut problems,
            SecretRef::new(
                "site_key",
                &self.site_key,
                &self.site_key_env,
                &self.site_key_file,
            ),
            false,
            MIN_SITE_KEY_BYTES,
        );
        if self.require_site_token
            && !has_secret(&self.site_key, &self.site_key_env, &self.site_key_file)
        {
            problems.push(ConfigProblem::new(
                "require_site_token",
                "needs site_key (or site_key_env / site_key_file) to verify tokens",
            ));
        }

        let mut allowed_origins = Vec::new();
        let mut any_origin = false;
        for (index, origin) in self.allowed_origins.iter().enumerate() {
            if origin == "*" {
                any_origin = true;
                continue;
            }
            match normalize_origin(origin) {
                Ok(origin) => allowed_origins.push(origin),
                Err(message) => {
                    problems.push(ConfigProblem::new(
                        format!("allowed_origins[{index}]"),
                        message,
                    ));
                }
            }
        }

        let client_ip_header = match &self.client_ip_header {
            Some(name) => match axum::http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(header) => Some(header.as_str().to_owned()),
                Err(_) => {
                    problems.push(ConfigProblem::new(
                        "client_ip_header",
                        format!("{name:?} is not a valid header name"),
                    ));
                    None
                }
            },
            None => None,
        };

        let public_url = match &self.public_url {
            Some(raw) => match Url::parse(raw) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    Some(raw.trim_end_matches('/').to_owned())
                }
                Ok(_) => {
                    problems.push(ConfigProblem::new(
                        "public_url",
                        "must be an absolute http or https url",
                    ));
                    None
                }
                Err(err) => {
                    problems.push(ConfigProblem::new(
                        "public_url",
                        format!("not a valid url: {err}"),
                    ));
                    None
                }
            },
            None => None,
        };

        if let Some(app) = &self.app_connector_id
            && let Err(message) = check_id(app)
        {
            problems.push(ConfigProblem::new("app_connector_id", message));
        }

        let s = &self.socket;
        in_range(
            &mut problems,
            "socket.max_frame_bytes",
            s.max_frame_bytes,
            1024..=1_048_576,
        );
        in_range(
            &mut problems,
            "socket.read_buffer_bytes",
            s.read_buffer_bytes,
            256..=131_072,
        );
        in_range(
            &mut problems,
            "socket.write_buffer_bytes",
            s.write_buffer_bytes,
            0..=131_072,
        );
        in_range(
            &mut problems,
            "socket.idle_timeout_secs",
            s.idle_timeout_secs,
            10..=3600,
        );
        in_range(
            &mut problems,
            "socket.hello_timeout_secs",
            s.hello_timeout_secs,
            1..=60,
        );
        in_range(
            &mut problems,
            "socket.ping_interval_secs",
            s.ping_interval_secs,
            5..=3600,
        );
        if s.ping_interval_secs >= s.idle_timeout_secs {
            problems.push(ConfigProblem::new(
                "socket.ping_interval_secs",
                format!(
                    "must be below socket.idle_timeout_secs ({}), or idle widgets are cut off",
                    s.idle_timeout_secs
                ),
            ));
        }
        for (key, value) in [
            ("socket.max_connections", s.max_connections),
            ("socket.max_connections_per_ip", s.max_connections_per_ip),
            (
                "socket.max_connections_per_visitor",
                s.max_connections_per_visitor,
            ),
            (
                "socket.connects_per_ip_per_minute",
                s.connects_per_ip_per_minute,
            ),
            ("socket.frames_per_second", s.frames_per_second),
            ("socket.frame_burst", s.frame_burst),
            (
                "socket.messages_per_ip_per_minute",
                s.messages_per_ip_per_minute,
            ),
        ] {
            if value == 0 {
                problems.push(ConfigProblem::new(key, "must be greater than 0"));
            }
        }
        in_range(
            &mut problems,
            "socket.max_text_chars",
            s.max_text_chars,
            1..=100_000,
        );
        in_range(
            &mut problems,
            "history.max_messages",
            self.history.max_messages,
            1..=10_000,
        );
        in_range(
            &mut problems,
            "history.ttl_secs",
            self.history.ttl_secs,
            60..=90 * 24 * 3600,
        );
        in_range(
            &mut problems,
            "media.ttl_secs",
            self.media.ttl_secs,
            60..=90 * 24 * 3600,
        );
        if self.media.max_image_bytes > self.limits.max_body_bytes {
            problems.push(ConfigProblem::new(
                "media.max_image_bytes",
                format!(
                    "must not exceed limits.max_body_bytes ({}), the daemon refuses larger bodies",
                    self.limits.max_body_bytes
                ),
            ));
        }
        problems.extend(self.limits.validate());

        match visitor_secret {
            Some(visitor_secret) if problems.is_empty() => Ok(Settings {
                id: self.id.clone(),
                visitor_secret,
                site_key,
                require_site_token: self.require_site_token,
                allowed_origins,
                any_origin,
                allow_missing_origin: self.allow_missing_origin,
                client_ip_header,
                public_url,
                app_connector_id: self.app_connector_id.clone(),
                keep_raw: self.keep_raw,
                socket: self.socket.clone(),
                history: self.history.clone(),
                media: self.media.clone(),
                limits: self.limits.clone(),
            }),
            _ => Err(problems),
        }
    }
}

fn has_secret(inline: &Option<Secret>, env: &Option<String>, file: &Option<PathBuf>) -> bool {
    inline.is_some() || env.is_some() || file.is_some()
}

/// Resolves one secret, checking its length; problems are pointed at the key it was given
/// under.
fn resolve(
    problems: &mut Vec<ConfigProblem>,
    secret: SecretRef<'_>,
    required: bool,
    min_bytes: usize,
) -> Option<Secret> {
    let resolved = if required {
        secret.required().map(Some)
    } else {
        secret.optional()
    };
    match resolved {
        Ok(Some(value)) if value.expose().len() < min_bytes => {
            let key = if secret.env.is_some() {
                format!("{}_env", secret.name)
            } else if secret.file.is_some() {
                format!("{}_file", secret.name)
            } else {
                secret.name.to_owned()
            };
            problems.push(ConfigProblem::new(
                key,
                format!(
                    "{} is {} bytes, it must be at least {min_bytes}",
                    secret.name,
                    value.expose().len()
                ),
            ));
            None
        }
        Ok(value) => value,
        Err(problem) => {
            problems.push(problem);
            None
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
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "{id:?} may only hold lowercase letters, digits and '-'"
        ));
    }
    Ok(())
}

/// `scheme://host[:port]` in lowercase, the form browsers send in `Origin`.
pub(crate) fn normalize_origin(raw: &str) -> Result<String, String> {
    let url = Url::parse(raw).map_err(|err| format!("{raw:?} is not an origin: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} must be an http or https origin"));
    }
    let Some(host) = url.host_str() else {
        return Err(format!("{raw:?} has no host"));
    };
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{raw:?} must be an origin only (scheme, host, port), without a path"
        ));
    }
    Ok(match url.port() {
        Some(port) => format!("{}://{}:{port}", url.scheme(), host.to_ascii_lowercase()),
        None => format!("{}://{}", url.scheme(), host.to_ascii_lowercase()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WebchatFactory;
    use switchboard_sdk::{ConnectorContext, ConnectorFactory};

    const EXAMPLE: &str = include_str!("../config.toml");

    fn parse_table(toml_text: &str) -> Result<WebchatConfig, String> {
        let mut doc: toml::Table = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        let table = doc
            .remove("connectors")
            .and_then(|c| c.as_table().cloned())
            .and_then(|mut c| c.remove("webchat"))
            .and_then(|a| a.as_array().cloned())
            .and_then(|mut a| (!a.is_empty()).then(|| a.remove(0)))
            .ok_or("no [[connectors.webchat]] table")?;
        table.try_into().map_err(|e: toml::de::Error| e.to_string())
    }

    fn problems_of(toml_text: &str) -> Vec<ConfigProblem> {
        let config = parse_table(toml_text).unwrap_or_else(|e| panic!("parse: {e}"));
        match config.validate() {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    const GOOD: &str = r#"
        [[connectors.webchat]]
        id = "site"
        visitor_secret = "0123456789abcdef0123456789abcdef"
    "#;

    #[test]
    fn example_fragment_parses_and_builds() {
        let config = parse_table(EXAMPLE).unwrap();
        assert_eq!(WebchatFactory::id(&config), config.id);
        let connector = WebchatFactory::build(&config, &ConnectorContext::in_memory())
            .unwrap_or_else(|e| panic!("example does not build: {:?}", e.0));
        assert_eq!(connector.kind(), "webchat");
        assert_eq!(connector.id(), config.id);
    }

    #[test]
    fn defaults_apply_when_optional_keys_are_absent() {
        let settings = parse_table(GOOD).unwrap().validate().unwrap();
        assert_eq!(settings.socket, SocketConfig::default());
        assert_eq!(settings.history, HistoryConfig::default());
        assert_eq!(settings.media.max_image_bytes, 0);
        assert!(settings.allowed_origins.is_empty() && !settings.any_origin);
        assert!(settings.site_key.is_none() && !settings.require_site_token);
    }

    #[test]
    fn origins_are_normalized_and_star_allows_any() {
        let text = GOOD.replace(
            "id = ",
            "allowed_origins = [\"HTTPS://Shop.Example.com\", \"http://127.0.0.1:8080\", \"*\"]\n id = ",
        );
        let settings = parse_table(&text).unwrap().validate().unwrap();
        assert_eq!(
            settings.allowed_origins,
            ["https://shop.example.com", "http://127.0.0.1:8080"]
        );
        assert!(settings.any_origin);
    }

    #[test]
    fn each_invalid_setting_is_reported_under_its_key() {
        let secret_line = "visitor_secret = \"0123456789abcdef0123456789abcdef\"";
        let cases: Vec<(&str, String, &str)> = vec![
            ("uppercase id", GOOD.replace("\"site\"", "\"Site\""), "id"),
            (
                "no visitor secret",
                GOOD.replace(secret_line, ""),
                "visitor_secret",
            ),
            (
                "short visitor secret",
                GOOD.replace("0123456789abcdef0123456789abcdef", "short"),
                "visitor_secret",
            ),
            (
                "unset env",
                GOOD.replace(
                    secret_line,
                    "visitor_secret_env = \"SB_WEBCHAT_SURELY_UNSET\"",
                ),
                "visitor_secret_env",
            ),
            (
                "short site key",
                format!("{GOOD}site_key = \"short\"\n"),
                "site_key",
            ),
            (
                "token required without key",
                format!("{GOOD}require_site_token = true\n"),
                "require_site_token",
            ),
            (
                "origin with path",
                format!("{GOOD}allowed_origins = [\"https://a.example/x\"]\n"),
                "allowed_origins[0]",
            ),
            (
                "origin not a url",
                format!("{GOOD}allowed_origins = [\"shop.example.com\"]\n"),
                "allowed_origins[0]",
            ),
            (
                "bad header",
                format!("{GOOD}client_ip_header = \"x forwarded\"\n"),
                "client_ip_header",
            ),
            (
                "relative public url",
                format!("{GOOD}public_url = \"/webchat/site\"\n"),
                "public_url",
            ),
            (
                "bad app connector",
                format!("{GOOD}app_connector_id = \"Shop App\"\n"),
                "app_connector_id",
            ),
            (
                "tiny frames",
                format!("{GOOD}[connectors.webchat.socket]\nmax_frame_bytes = 10\n"),
                "socket.max_frame_bytes",
            ),
            (
                "ping slower than idle",
                format!("{GOOD}[connectors.webchat.socket]\nping_interval_secs = 80\n"),
                "socket.ping_interval_secs",
            ),
            (
                "zero per ip",
                format!("{GOOD}[connectors.webchat.socket]\nmax_connections_per_ip = 0\n"),
                "socket.max_connections_per_ip",
            ),
            (
                "no history",
                format!("{GOOD}[connectors.webchat.history]\nmax_messages = 0\n"),
                "history.max_messages",
            ),
            (
                "image over body limit",
                format!("{GOOD}[connectors.webchat.media]\nmax_image_bytes = 1000000\n"),
                "media.max_image_bytes",
            ),
            (
                "zero limit",
                format!("{GOOD}[connectors.webchat.limits]\ninbound_burst = 0\n"),
                "limits.inbound_burst",
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
                "{name}: a problem message shows the secret"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_the_parser() {
        let top = GOOD.replace("id = ", "colour = \"blue\"\n id = ");
        assert!(parse_table(&top).unwrap_err().contains("colour"));
        let nested = format!("{GOOD}[connectors.webchat.socket]\nbuffer = 3\n");
        assert!(parse_table(&nested).unwrap_err().contains("buffer"));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let text = format!("{GOOD}site_key = \"site-key-0123456789\"\n");
        let config = parse_table(&text).unwrap();
        let settings = config.validate().unwrap();
        let printed = format!("{config:?} {settings:?}");
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
        assert!(!printed.contains("site-key-0123"), "{printed}");
    }
}
