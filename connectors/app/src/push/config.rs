//! `[connectors.app.push]`: the push providers and the delivery policy, and their check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::EncodingKey;
use serde::Deserialize;
use switchboard_sdk::config::check_base_url;
use switchboard_sdk::reqwest::{self, Url};
use switchboard_sdk::schedule::{QuietHours, parse_local_time, parse_utc_offset};
use switchboard_sdk::{ConfigProblem, Secret, SecretRef};

/// Title used when `push.title` is not set.
pub const DEFAULT_TITLE: &str = "Customer service";
/// Body used for a reply without text when `push.attachment_text` is not set.
pub const DEFAULT_ATTACHMENT_TEXT: &str = "New message from customer service";
/// Body used for collapsed replies when `push.collapse_text` is not set.
pub const DEFAULT_COLLAPSE_TEXT: &str = "{count} new messages from customer service";
/// Collapse window used when `push.collapse_window_secs` is not set.
pub const DEFAULT_COLLAPSE_WINDOW_SECS: u64 = 120;
/// Offline lifetime used when `push.ttl_secs` is not set.
pub const DEFAULT_TTL_SECS: u64 = 86_400;
/// Device lifetime used when `push.device_ttl_days` is not set.
pub const DEFAULT_DEVICE_TTL_DAYS: u64 = 180;
/// Devices kept per user when `push.max_devices_per_user` is not set.
pub const DEFAULT_MAX_DEVICES_PER_USER: usize = 10;
/// Provider request timeout used when `timeout_ms` is not set.
pub const DEFAULT_PROVIDER_TIMEOUT_MS: u64 = 10_000;
/// FCM's API when `push.fcm.api_base` is not set.
pub const DEFAULT_FCM_API_BASE: &str = "https://fcm.googleapis.com";
/// Google's token endpoint when neither `push.fcm.token_uri` nor the key names one.
pub const DEFAULT_FCM_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// APNs production host when `push.apns.api_base` is not set.
pub const DEFAULT_APNS_API_BASE: &str = "https://api.push.apple.com";
/// JPush's API when `push.jpush.api_base` is not set.
pub const DEFAULT_JPUSH_API_BASE: &str = "https://api.jpush.cn";

// JPush keeps offline notifications for at most 10 days; the others longer.
const TTL_RANGE: std::ops::RangeInclusive<u64> = 0..=864_000;
const COLLAPSE_WINDOW_RANGE: std::ops::RangeInclusive<u64> = 0..=3600;
const DEVICE_TTL_RANGE: std::ops::RangeInclusive<u64> = 1..=3650;
const MAX_DEVICES_RANGE: std::ops::RangeInclusive<usize> = 1..=100;
const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;
const MAX_TEXT_CHARS: usize = 200;
const MAX_DEEP_LINK_CHARS: usize = 1024;

/// Push delivery for one app backend: `[connectors.app.push]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Post the reply to the webhook too when the user is pushed (the backend keeps history).
    #[serde(default = "yes")]
    pub also_webhook: bool,
    /// Notification title.
    #[serde(default = "default_title")]
    pub title: String,
    /// Body for a reply without text (picture, file, location...).
    #[serde(default = "default_attachment_text")]
    pub attachment_text: String,
    /// Body when replies collapse into one notification; `{count}` is the number of replies.
    #[serde(default = "default_collapse_text")]
    pub collapse_text: String,
    /// Texts per language (`zh`, `zh-TW`), matched against the device's locale.
    #[serde(default)]
    pub locales: BTreeMap<String, LocaleTexts>,
    /// Seconds after a conversation's first notification during which later replies update
    /// it instead of adding one (0..=3600; 0 never collapses).
    #[serde(default = "default_collapse_window_secs")]
    pub collapse_window_secs: u64,
    /// Link the app opens; `{conversation_id}`, `{user_id}` and `{reply_id}` are replaced.
    #[serde(default)]
    pub deep_link: Option<String>,
    /// How long a provider keeps a notification for an offline device, seconds (0..=864000).
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
    /// A device not registered again within this many days is forgotten (1..=3650).
    #[serde(default = "default_device_ttl_days")]
    pub device_ttl_days: u64,
    /// Devices kept per user; registering one more drops the oldest (1..=100).
    #[serde(default = "default_max_devices_per_user")]
    pub max_devices_per_user: usize,
    /// Daily window in which non-urgent notifications are silent or held.
    #[serde(default)]
    pub quiet_hours: Option<QuietHoursConfig>,
    /// Firebase Cloud Messaging (HTTP v1).
    #[serde(default)]
    pub fcm: Option<FcmConfig>,
    /// Apple Push Notification service, token-based.
    #[serde(default)]
    pub apns: Option<ApnsConfig>,
    /// JPush (Aurora) REST API v3.
    #[serde(default)]
    pub jpush: Option<JpushConfig>,
}

/// Texts for one language: `[connectors.app.push.locales.LANG]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocaleTexts {
    /// Notification title in this language.
    #[serde(default)]
    pub title: Option<String>,
    /// Body for a reply without text in this language.
    #[serde(default)]
    pub attachment_text: Option<String>,
    /// Collapsed body in this language, with `{count}`.
    #[serde(default)]
    pub collapse_text: Option<String>,
}

/// What happens to a non-urgent notification during quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuietMode {
    /// Sent at once, without sound and at low priority.
    Silent,
    /// Not sent: `deliver` answers retryable with `retry_after` = the time until they end.
    Hold,
}

/// `[connectors.app.push.quiet_hours]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursConfig {
    /// Offset of local time from UTC (`+08:00`).
    pub utc_offset: String,
    /// First quiet minute, local `HH:MM`.
    pub start: String,
    /// End of the quiet period, local `HH:MM`; before `start` means the next morning.
    pub end: String,
    /// `silent` (default): sent without sound; `hold`: sent when quiet hours end.
    #[serde(default = "default_quiet_mode")]
    pub mode: QuietMode,
}

/// `[connectors.app.push.fcm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service-account JSON key, inline.
    #[serde(default)]
    pub service_account: Option<Secret>,
    /// The service-account JSON key, from this environment variable.
    #[serde(default)]
    pub service_account_env: Option<String>,
    /// The service-account JSON key, from this file.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    /// Firebase project id; defaults to the key's `project_id`.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Base URL of the FCM API.
    #[serde(default = "default_fcm_api_base")]
    pub api_base: String,
    /// OAuth2 token endpoint; defaults to the key's `token_uri`.
    #[serde(default)]
    pub token_uri: Option<String>,
    /// One request's limit, connect to last byte, ms (100..=60000).
    #[serde(default = "default_provider_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra PEM CA certificate to trust (testing, private gateways).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

/// `[connectors.app.push.apns]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// Apple developer team id (10 characters).
    pub team_id: String,
    /// Id of the APNs auth key (10 characters).
    pub key_id: String,
    /// The `.p8` key (PKCS#8 PEM), inline.
    #[serde(default)]
    pub private_key: Option<Secret>,
    /// The `.p8` key, from this environment variable.
    #[serde(default)]
    pub private_key_env: Option<String>,
    /// The `.p8` key, from this file.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// The app's bundle id, sent as `apns-topic`.
    pub topic: String,
    /// Base URL of APNs (production or `https://api.sandbox.push.apple.com`).
    #[serde(default = "default_apns_api_base")]
    pub api_base: String,
    /// One request's limit, connect to last byte, ms (100..=60000).
    #[serde(default = "default_provider_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra PEM CA certificate to trust (testing, private gateways).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

/// `[connectors.app.push.jpush]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JpushConfig {
    /// The JPush application's AppKey.
    pub app_key: String,
    /// The Master Secret, inline.
    #[serde(default)]
    pub master_secret: Option<Secret>,
    /// The Master Secret, from this environment variable.
    #[serde(default)]
    pub master_secret_env: Option<String>,
    /// The Master Secret, from this file.
    #[serde(default)]
    pub master_secret_file: Option<PathBuf>,
    /// Base URL of the JPush API.
    #[serde(default = "default_jpush_api_base")]
    pub api_base: String,
    /// iOS devices through JPush use APNs production (true) or sandbox (false).
    #[serde(default = "yes")]
    pub apns_production: bool,
    /// One request's limit, connect to last byte, ms (100..=60000).
    #[serde(default = "default_provider_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra PEM CA certificate to trust (testing, private gateways).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}
fn default_title() -> String {
    DEFAULT_TITLE.to_owned()
}
fn default_attachment_text() -> String {
    DEFAULT_ATTACHMENT_TEXT.to_owned()
}
fn default_collapse_text() -> String {
    DEFAULT_COLLAPSE_TEXT.to_owned()
}
fn default_collapse_window_secs() -> u64 {
    DEFAULT_COLLAPSE_WINDOW_SECS
}
fn default_ttl_secs() -> u64 {
    DEFAULT_TTL_SECS
}
fn default_device_ttl_days() -> u64 {
    DEFAULT_DEVICE_TTL_DAYS
}
fn default_max_devices_per_user() -> usize {
    DEFAULT_MAX_DEVICES_PER_USER
}
fn default_quiet_mode() -> QuietMode {
    QuietMode::Silent
}
fn default_provider_timeout_ms() -> u64 {
    DEFAULT_PROVIDER_TIMEOUT_MS
}
fn default_fcm_api_base() -> String {
    DEFAULT_FCM_API_BASE.to_owned()
}
fn default_apns_api_base() -> String {
    DEFAULT_APNS_API_BASE.to_owned()
}
fn default_jpush_api_base() -> String {
    DEFAULT_JPUSH_API_BASE.to_owned()
}

/// Texts of one language, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Texts {
    /// Notification title.
    pub title: String,
    /// Body for replies without text.
    pub attachment_text: String,
    /// Collapsed body with `{count}`.
    pub collapse_text: String,
}

/// A checked `[connectors.app.push]`.
#[derive(Debug, Clone)]
pub(crate) struct PushSettings {
    /// Webhook copy when pushing.
    pub also_webhook: bool,
    /// Default texts.
    pub texts: Texts,
    /// Texts per lowercase language tag.
    pub locales: BTreeMap<String, Texts>,
    /// Collapse window; zero never collapses.
    pub collapse_window: Duration,
    /// Deep-link template.
    pub deep_link: Option<String>,
    /// Offline lifetime, seconds.
    pub ttl_secs: u64,
    /// Device lifetime.
    pub device_ttl: Duration,
    /// Devices per user.
    pub max_devices_per_user: usize,
    /// Quiet hours and what they do.
    pub quiet_hours: Option<(QuietHours, QuietMode)>,
    /// FCM, when configured.
    pub fcm: Option<FcmSettings>,
    /// APNs, when configured.
    pub apns: Option<ApnsSettings>,
    /// JPush, when configured.
    pub jpush: Option<JpushSettings>,
}

/// The fields of a service-account JSON key that FCM needs.
#[derive(Deserialize)]
struct ServiceAccountKey {
    /// Must be `service_account`.
    #[serde(rename = "type")]
    kind: String,
    /// Default project id.
    #[serde(default)]
    project_id: Option<String>,
    /// Id of the key, sent as the JWT's `kid`.
    #[serde(default)]
    private_key_id: Option<String>,
    /// PKCS#8 PEM RSA key.
    private_key: String,
    /// The JWT's issuer.
    client_email: String,
    /// Where to trade the assertion for an access token.
    #[serde(default)]
    token_uri: Option<String>,
}

/// A checked FCM provider.
#[derive(Clone)]
pub(crate) struct FcmSettings {
    /// Project the messages are sent in.
    pub project_id: String,
    /// `{api_base}/v1/projects/{project_id}/messages:send`.
    pub send_url: Url,
    /// OAuth2 token endpoint; also the assertion's audience.
    pub token_uri: Url,
    /// The service account's e-mail: the assertion's issuer.
    pub client_email: String,
    /// The key's id, sent as `kid`.
    pub key_id: Option<String>,
    /// The RSA signing key.
    pub key: EncodingKey,
    /// Per-request limit.
    pub timeout: Duration,
    /// Extra CA to trust, PEM.
    pub tls_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for FcmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmSettings")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("key", &"****")
            .finish_non_exhaustive()
    }
}

/// A checked APNs provider.
#[derive(Clone)]
pub(crate) struct ApnsSettings {
    /// Team id: the provider token's issuer.
    pub team_id: String,
    /// Key id: the provider token's `kid`.
    pub key_id: String,
    /// The P-256 signing key.
    pub key: EncodingKey,
    /// `apns-topic`.
    pub topic: String,
    /// Base URL, without a trailing slash.
    pub api_base: Url,
    /// Per-request limit.
    pub timeout: Duration,
    /// Extra CA to trust, PEM.
    pub tls_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for ApnsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsSettings")
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .field("topic", &self.topic)
            .field("key", &"****")
            .finish_non_exhaustive()
    }
}

/// A checked JPush provider.
#[derive(Debug, Clone)]
pub(crate) struct JpushSettings {
    /// AppKey: the basic-auth user.
    pub app_key: String,
    /// Master Secret: the basic-auth password.
    pub master_secret: Secret,
    /// `{api_base}/v3/push`.
    pub push_url: Url,
    /// `options.apns_production`.
    pub apns_production: bool,
    /// Per-request limit.
    pub timeout: Duration,
    /// Extra CA to trust, PEM.
    pub tls_ca: Option<Vec<u8>>,
}

/// Collects problems under `push.` keys.
struct Problems<'a>(&'a mut Vec<ConfigProblem>);

impl Problems<'_> {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0
            .push(ConfigProblem::new(format!("push.{key}"), message));
    }
}

impl PushConfig {
    /// Checks every push setting and reads its keys; problems go to `problems` with their
    /// dotted key (`push.apns.team_id`).
    pub(crate) fn validate(&self, problems: &mut Vec<ConfigProblem>) -> Option<PushSettings> {
        let before = problems.len();
        let mut p = Problems(problems);

        let texts = Texts {
            title: self.title.clone(),
            attachment_text: self.attachment_text.clone(),
            collapse_text: self.collapse_text.clone(),
        };
        check_text(&mut p, "title", &texts.title);
        check_text(&mut p, "attachment_text", &texts.attachment_text);
        check_collapse_text(&mut p, "collapse_text", &texts.collapse_text);

        let mut locales = BTreeMap::new();
        for (tag, given) in &self.locales {
            if !is_language_tag(tag) {
                p.add(
                    &format!("locales.{tag}"),
                    "must be a language tag like zh or zh-TW",
                );
                continue;
            }
            let resolved = Texts {
                title: given.title.clone().unwrap_or_else(|| texts.title.clone()),
                attachment_text: given
                    .attachment_text
                    .clone()
                    .unwrap_or_else(|| texts.attachment_text.clone()),
                collapse_text: given
                    .collapse_text
                    .clone()
                    .unwrap_or_else(|| texts.collapse_text.clone()),
            };
            check_text(&mut p, &format!("locales.{tag}.title"), &resolved.title);
            check_text(
                &mut p,
                &format!("locales.{tag}.attachment_text"),
                &resolved.attachment_text,
            );
            check_collapse_text(
                &mut p,
                &format!("locales.{tag}.collapse_text"),
                &resolved.collapse_text,
            );
            locales.insert(tag.to_ascii_lowercase(), resolved);
        }

        check_range(
            &mut p,
            "collapse_window_secs",
            self.collapse_window_secs,
            &COLLAPSE_WINDOW_RANGE,
        );
        check_range(&mut p, "ttl_secs", self.ttl_secs, &TTL_RANGE);
        check_range(
            &mut p,
            "device_ttl_days",
            self.device_ttl_days,
            &DEVICE_TTL_RANGE,
        );
        if !MAX_DEVICES_RANGE.contains(&self.max_devices_per_user) {
            p.add(
                "max_devices_per_user",
                format!(
                    "must be between {} and {}, got {}",
                    MAX_DEVICES_RANGE.start(),
                    MAX_DEVICES_RANGE.end(),
                    self.max_devices_per_user
                ),
            );
        }
        if let Some(link) = &self.deep_link {
            check_deep_link(&mut p, link);
        }
        let quiet_hours = self
            .quiet_hours
            .as_ref()
            .and_then(|quiet| quiet.validate(&mut p));

        if self.fcm.is_none() && self.apns.is_none() && self.jpush.is_none() {
            p.0.push(ConfigProblem::new(
                "push",
                "configure at least one provider: fcm, apns or jpush",
            ));
        }
        let fcm = self.fcm.as_ref().and_then(|fcm| fcm.validate(&mut p));
        let apns = self.apns.as_ref().and_then(|apns| apns.validate(&mut p));
        let jpush = self.jpush.as_ref().and_then(|jpush| jpush.validate(&mut p));

        if problems.len() > before {
            return None;
        }
        Some(PushSettings {
            also_webhook: self.also_webhook,
            texts,
            locales,
            collapse_window: Duration::from_secs(self.collapse_window_secs),
            deep_link: self.deep_link.clone(),
            ttl_secs: self.ttl_secs,
            device_ttl: Duration::from_secs(self.device_ttl_days * 86_400),
            max_devices_per_user: self.max_devices_per_user,
            quiet_hours,
            fcm,
            apns,
            jpush,
        })
    }
}

impl QuietHoursConfig {
    fn validate(&self, p: &mut Problems<'_>) -> Option<(QuietHours, QuietMode)> {
        let offset = parse_utc_offset(&self.utc_offset)
            .map_err(|e| p.add("quiet_hours.utc_offset", e.to_string()))
            .ok();
        let start = parse_local_time(&self.start)
            .map_err(|e| p.add("quiet_hours.start", e.to_string()))
            .ok();
        let end = parse_local_time(&self.end)
            .map_err(|e| p.add("quiet_hours.end", e.to_string()))
            .ok();
        let (offset, start, end) = (offset?, start?, end?);
        if start == end {
            p.add("quiet_hours.end", "must differ from start");
            return None;
        }
        Some((QuietHours { offset, start, end }, self.mode))
    }
}

impl FcmConfig {
    fn validate(&self, p: &mut Problems<'_>) -> Option<FcmSettings> {
        let secret = SecretRef::new(
            "service_account",
            &self.service_account,
            &self.service_account_env,
            &self.service_account_file,
        );
        let source = format!("fcm.{}", given_as(&secret));
        let key = match secret.required() {
            Ok(json) => match parse_service_account(&json) {
                Ok(key) => Some(key),
                Err(message) => {
                    p.add(&source, message);
                    None
                }
            },
            Err(problem) => {
                p.add(&format!("fcm.{}", problem.key), problem.message);
                None
            }
        };
        let api_base = check_base(p, "fcm.api_base", &self.api_base, false);
        let timeout = check_timeout(p, "fcm.timeout_ms", self.timeout_ms);
        let tls_ca = read_ca(p, "fcm.tls_ca_file", self.tls_ca_file.as_ref());
        let (key, signing_key) = key?;
        let project_id = match self.project_id.clone().or(key.project_id.clone()) {
            Some(id) if is_project_id(&id) => Some(id),
            Some(_) => {
                p.add(
                    "fcm.project_id",
                    "must be lowercase letters, digits and '-'",
                );
                None
            }
            None => {
                p.add(
                    "fcm.project_id",
                    "not set and the service-account key has no project_id",
                );
                None
            }
        };
        let token_uri_text = self
            .token_uri
            .clone()
            .or(key.token_uri.clone())
            .unwrap_or_else(|| DEFAULT_FCM_TOKEN_URI.to_owned());
        let token_uri = check_url(p, "fcm.token_uri", &token_uri_text, false);
        let project_id = project_id?;
        let send_url = api_base?
            .join(&format!("v1/projects/{project_id}/messages:send"))
            .map_err(|e| p.add("fcm.api_base", format!("cannot build the send url: {e}")))
            .ok()?;
        Some(FcmSettings {
            project_id,
            send_url,
            token_uri: token_uri?,
            client_email: key.client_email,
            key_id: key.private_key_id,
            key: signing_key,
            timeout: timeout?,
            tls_ca: tls_ca?,
        })
    }
}

fn parse_service_account(json: &Secret) -> Result<(ServiceAccountKey, EncodingKey), String> {
    // serde's message names the field but never quotes the key's content.
    let key: ServiceAccountKey = serde_json::from_str(json.expose())
        .map_err(|e| format!("not a service-account JSON key: {}", e.classify_message()))?;
    if key.kind != "service_account" {
        return Err(format!(
            "key type is {:?}, expected \"service_account\"",
            key.kind
        ));
    }
    if key.client_email.trim().is_empty() {
        return Err("client_email is empty".to_owned());
    }
    let signing_key = EncodingKey::from_rsa_pem(key.private_key.as_bytes())
        .map_err(|e| format!("private_key is not an RSA PEM key: {e}"))?;
    Ok((key, signing_key))
}

/// A serde_json error's category without the quoted input.
trait ClassifyMessage {
    fn classify_message(&self) -> String;
}

impl ClassifyMessage for serde_json::Error {
    fn classify_message(&self) -> String {
        match self.classify() {
            serde_json::error::Category::Data => {
                let text = self.to_string();
                // "missing field `x` at line..." names a field and holds no key material.
                if text.starts_with("missing field") {
                    text.split(" at line")
                        .next()
                        .unwrap_or("bad field")
                        .to_owned()
                } else {
                    "a field has the wrong type".to_owned()
                }
            }
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("invalid JSON at line {}", self.line())
            }
            serde_json::error::Category::Io => "unreadable".to_owned(),
        }
    }
}

impl ApnsConfig {
    fn validate(&self, p: &mut Problems<'_>) -> Option<ApnsSettings> {
        let team_id = check_apple_id(p, "apns.team_id", &self.team_id);
        let key_id = check_apple_id(p, "apns.key_id", &self.key_id);
        let secret = SecretRef::new(
            "private_key",
            &self.private_key,
            &self.private_key_env,
            &self.private_key_file,
        );
        let source = format!("apns.{}", given_as(&secret));
        let key = match secret.required() {
            Ok(pem) => EncodingKey::from_ec_pem(pem.expose().as_bytes())
                .map_err(|e| p.add(&source, format!("not a PKCS#8 P-256 PEM key (.p8): {e}")))
                .ok(),
            Err(problem) => {
                p.add(&format!("apns.{}", problem.key), problem.message);
                None
            }
        };
        let topic = self.topic.trim();
        let topic_ok = !topic.is_empty()
            && topic.len() <= 255
            && topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !topic_ok {
            p.add(
                "apns.topic",
                "must be the app's bundle id (letters, digits, '.', '-', '_')",
            );
        }
        let api_base = check_base(p, "apns.api_base", &self.api_base, true);
        let timeout = check_timeout(p, "apns.timeout_ms", self.timeout_ms);
        let tls_ca = read_ca(p, "apns.tls_ca_file", self.tls_ca_file.as_ref());
        if !topic_ok {
            return None;
        }
        Some(ApnsSettings {
            team_id: team_id?,
            key_id: key_id?,
            key: key?,
            topic: topic.to_owned(),
            api_base: api_base?,
            timeout: timeout?,
            tls_ca: tls_ca?,
        })
    }
}

impl JpushConfig {
    fn validate(&self, p: &mut Problems<'_>) -> Option<JpushSettings> {
        let app_key = self.app_key.trim();
        let app_key_ok = !app_key.is_empty()
            && app_key.len() <= 64
            && app_key.chars().all(|c| c.is_ascii_alphanumeric());
        if !app_key_ok {
            p.add("jpush.app_key", "must be the AppKey (letters and digits)");
        }
        let secret = match SecretRef::new(
            "master_secret",
            &self.master_secret,
            &self.master_secret_env,
            &self.master_secret_file,
        )
        .required()
        {
            Ok(secret) => Some(secret),
            Err(problem) => {
                p.add(&format!("jpush.{}", problem.key), problem.message);
                None
            }
        };
        let api_base = check_base(p, "jpush.api_base", &self.api_base, false);
        let timeout = check_timeout(p, "jpush.timeout_ms", self.timeout_ms);
        let tls_ca = read_ca(p, "jpush.tls_ca_file", self.tls_ca_file.as_ref());
        let push_url = api_base?
            .join("v3/push")
            .map_err(|e| p.add("jpush.api_base", format!("cannot build the push url: {e}")))
            .ok()?;
        if !app_key_ok {
            return None;
        }
        Some(JpushSettings {
            app_key: app_key.to_owned(),
            master_secret: secret?,
            push_url,
            apns_production: self.apns_production,
            timeout: timeout?,
            tls_ca: tls_ca?,
        })
    }
}

/// The key a secret was given under, so a problem with its content points at that line.
fn given_as(secret: &SecretRef<'_>) -> String {
    if secret.env.is_some() {
        format!("{}_env", secret.name)
    } else if secret.file.is_some() {
        format!("{}_file", secret.name)
    } else {
        secret.name.to_owned()
    }
}

fn check_text(p: &mut Problems<'_>, key: &str, text: &str) {
    if text.trim().is_empty() {
        p.add(key, "must not be empty");
    } else if text.chars().count() > MAX_TEXT_CHARS {
        p.add(key, format!("must be at most {MAX_TEXT_CHARS} characters"));
    }
}

fn check_collapse_text(p: &mut Problems<'_>, key: &str, text: &str) {
    check_text(p, key, text);
    if !text.contains("{count}") {
        p.add(key, "must contain {count}");
    }
}

fn check_range(p: &mut Problems<'_>, key: &str, value: u64, range: &std::ops::RangeInclusive<u64>) {
    if !range.contains(&value) {
        p.add(
            key,
            format!(
                "must be between {} and {}, got {value}",
                range.start(),
                range.end()
            ),
        );
    }
}

fn check_timeout(p: &mut Problems<'_>, key: &str, ms: u64) -> Option<Duration> {
    if TIMEOUT_RANGE.contains(&ms) {
        Some(Duration::from_millis(ms))
    } else {
        p.add(
            key,
            format!(
                "must be between {} and {} ms, got {ms}",
                TIMEOUT_RANGE.start(),
                TIMEOUT_RANGE.end()
            ),
        );
        None
    }
}

fn check_deep_link(p: &mut Problems<'_>, link: &str) {
    if link.trim().is_empty() || link.chars().count() > MAX_DEEP_LINK_CHARS {
        p.add(
            "deep_link",
            format!("must be 1 to {MAX_DEEP_LINK_CHARS} characters"),
        );
        return;
    }
    if link.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.add("deep_link", "must not contain whitespace");
    }
    // Only the documented placeholders: a typo would otherwise reach every device.
    let mut rest = link;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            p.add("deep_link", "has a '{' without '}'");
            return;
        };
        let name = &after[..close];
        if !matches!(name, "conversation_id" | "user_id" | "reply_id") {
            p.add(
                "deep_link",
                format!(
                    "unknown placeholder {{{name}}} (use conversation_id, user_id or reply_id)"
                ),
            );
        }
        rest = &after[close + 1..];
    }
}

/// A URL a provider is reached at, normalised to end in `/` so paths join under it.
fn check_base(p: &mut Problems<'_>, key: &str, raw: &str, https_only: bool) -> Option<Url> {
    let base = check_base_url(key, raw)
        .map_err(|problem| p.add(key, problem.message))
        .ok()?;
    let url = check_url(p, key, &format!("{base}/"), https_only)?;
    Some(url)
}

fn check_url(p: &mut Problems<'_>, key: &str, raw: &str, https_only: bool) -> Option<Url> {
    let url = match Url::parse(raw) {
        Ok(url) => url,
        Err(err) => {
            p.add(key, format!("not a valid url: {err}"));
            return None;
        }
    };
    let scheme_ok = if https_only {
        url.scheme() == "https"
    } else {
        matches!(url.scheme(), "http" | "https")
    };
    if !scheme_ok {
        let wanted = if https_only {
            "https (the provider speaks HTTP/2 over TLS only)"
        } else {
            "http or https"
        };
        p.add(
            key,
            format!("scheme must be {wanted}, got {:?}", url.scheme()),
        );
        return None;
    }
    if url.host_str().is_none_or(str::is_empty) {
        p.add(key, "url has no host");
        return None;
    }
    Some(url)
}

/// Reads an extra CA certificate; `Some(None)` when none is configured.
fn read_ca(p: &mut Problems<'_>, key: &str, path: Option<&PathBuf>) -> Option<Option<Vec<u8>>> {
    let Some(path) = path else {
        return Some(None);
    };
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(err) => {
            p.add(key, format!("cannot read {}: {err}", path.display()));
            return None;
        }
    };
    // Checked now so a bad file is a config problem, not a failure at the first send.
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Some(Some(pem)),
        Ok(_) => {
            p.add(key, format!("{} holds no PEM certificate", path.display()));
            None
        }
        Err(err) => {
            p.add(
                key,
                format!("{} is not a PEM certificate: {err}", path.display()),
            );
            None
        }
    }
}

fn check_apple_id(p: &mut Problems<'_>, key: &str, id: &str) -> Option<String> {
    if id.len() == 10
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        Some(id.to_owned())
    } else {
        p.add(
            key,
            "must be 10 characters, uppercase letters and digits (from the developer account)",
        );
        None
    }
}

fn is_project_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `zh`, `zh-TW`, `pt-BR`: letters and digits in `-`-separated parts.
pub(crate) fn is_language_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 35
        && tag
            .split('-')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
}
