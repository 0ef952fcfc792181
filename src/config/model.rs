//! The typed configuration model of the core's sections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use switchboard_sdk::Secret;

use crate::registry::ConnectorsConfig;

/// The whole configuration file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Listeners.
    #[serde(default)]
    pub server: ServerConfig,
    /// The RabbitMQ link and the names of the AMQP topology.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// The durable local spool used while the broker is away.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Shared state for several instances; memory (one instance) when absent.
    pub redis: Option<RedisConfig>,
    /// Inbound pipeline settings.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Customer tiers.
    #[serde(default)]
    pub tiers: TiersConfig,
    /// Intents recognised in message text, best first by score.
    #[serde(default)]
    pub intents: Vec<IntentConfig>,
    /// Agent queues, declared and bound by the daemon.
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    /// Routing rules.
    pub routing: RoutingConfig,
    /// Reply dispatch.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Channel connectors, one table per account: `[[connectors.KIND]]`.
    #[serde(default)]
    pub connectors: ConnectorsConfig,
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// This instance's name in logs, locks and the AMQP connection name. Default: host name.
    pub instance_id: Option<String>,
    /// Seconds to drain on SIGTERM/SIGINT before giving up; keep it below systemd's
    /// TimeoutStopSec. Default 20.
    pub shutdown_grace_secs: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            instance_id: None,
            shutdown_grace_secs: 20,
        }
    }
}

/// Listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener for channel webhooks and sockets. Default 0.0.0.0:8080.
    pub listen: SocketAddr,
    /// Admin listener (health, metrics, reload, the console and its API). Default
    /// 127.0.0.1:9090; any other than a loopback address needs `admin_token`.
    pub admin_listen: SocketAddr,
    /// Bearer token every admin endpoint but `/healthz` requires when set; or
    /// `admin_token_env` / `admin_token_file`.
    pub admin_token: Option<Secret>,
    /// Environment variable holding the admin token.
    pub admin_token_env: Option<String>,
    /// File holding the admin token.
    pub admin_token_file: Option<PathBuf>,
    /// Seconds a webhook may take before the daemon answers 503 (the handler still finishes,
    /// so the channel's retry is answered as a duplicate). Default 10.
    pub request_timeout_secs: u64,
    /// TLS on the public listener; plain HTTP when absent.
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: the public listener's certificate, re-read on reload (SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            admin_token: None,
            admin_token_env: None,
            admin_token_file: None,
            request_timeout_secs: 10,
            tls: None,
        }
    }
}

/// The RabbitMQ link and topology names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// AMQP URL; may carry credentials, so `url_env` / `url_file` work too.
    /// Default amqp://guest:guest@127.0.0.1:5672/%2f.
    pub url: Option<Secret>,
    /// Environment variable holding the URL.
    pub url_env: Option<String>,
    /// File holding the URL.
    pub url_file: Option<PathBuf>,
    /// Prefix of every daemon-owned exchange and queue name. Default "switchboard".
    pub prefix: String,
    /// Milliseconds to wait for a publisher confirm before spooling. Default 2000.
    pub confirm_timeout_ms: u64,
    /// First reconnect delay in milliseconds. Default 200.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in milliseconds. Default 30000.
    pub reconnect_max_ms: u64,
    /// A connection that stayed up this many seconds resets the backoff. Default 30.
    pub stable_after_secs: u64,
    /// AMQP heartbeat in seconds. Default 15.
    pub heartbeat_secs: u16,
    /// HMAC signatures on every published message; none when absent.
    pub signing: Option<SigningConfig>,
    /// RabbitMQ's management HTTP API (`http://127.0.0.1:15672`), read by the console for
    /// unacked counts and message ages; credentials in the URL, else the AMQP URL's.
    pub management_url: Option<Secret>,
    /// PEM file of CA certificates trusted for `amqps://` besides the bundled public roots
    /// (a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain, leaf first) for brokers that require mutual TLS;
    /// needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

/// `[broker.signing]`: the key every published message is signed with, and the previous
/// keys still signed with during a rotation. Reloadable (SIGHUP).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The current key's id, sent in `x-switchboard-key-id`.
    pub key_id: String,
    /// The current key (or `key_env` / `key_file`); at least 32 bytes.
    pub key: Option<Secret>,
    /// Environment variable holding the key.
    pub key_env: Option<String>,
    /// File holding the key.
    pub key_file: Option<PathBuf>,
    /// Keys being retired: messages carry their signatures too, so helpdesks not yet given
    /// the current key keep verifying.
    #[serde(default)]
    pub previous: Vec<PreviousSigningKey>,
}

/// `[[broker.signing.previous]]`: a key being retired.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousSigningKey {
    /// Its id.
    pub key_id: String,
    /// The key (or `key_env` / `key_file`).
    pub key: Option<Secret>,
    /// Environment variable holding the key.
    pub key_env: Option<String>,
    /// File holding the key.
    pub key_file: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: None,
            url_env: None,
            url_file: None,
            prefix: "switchboard".to_owned(),
            confirm_timeout_ms: 2000,
            reconnect_min_ms: 200,
            reconnect_max_ms: 30_000,
            stable_after_secs: 30,
            heartbeat_secs: 15,
            signing: None,
            management_url: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl BrokerConfig {
    /// `{prefix}.inbound`: topic exchange of envelopes.
    pub fn inbound_exchange(&self) -> String {
        format!("{}.inbound", self.prefix)
    }
    /// `{prefix}.unroutable`: alternate exchange (and queue) of the inbound exchange.
    pub fn unroutable(&self) -> String {
        format!("{}.unroutable", self.prefix)
    }
    /// `{prefix}.outbound`: replies from helpdesks (queue and direct exchange).
    pub fn outbound(&self) -> String {
        format!("{}.outbound", self.prefix)
    }
    /// `{prefix}.events`: topic exchange of events.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// `{prefix}.dead`: what could not be processed (exchange and queue).
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }
}

/// The durable local spool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Database file. Default /var/lib/switchboard/spool.redb (systemd's StateDirectory).
    pub path: PathBuf,
    /// Largest total size of spooled messages in bytes; above it new messages get 503.
    /// Default 1 GiB.
    pub max_bytes: u64,
    /// Messages drained per batch once the broker is back. Default 256.
    pub drain_batch: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/switchboard/spool.redb"),
            max_bytes: 1 << 30,
            drain_batch: 256,
        }
    }
}

/// Redis, for state shared by several instances.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL (`redis://127.0.0.1:6379/0`).
    pub url: Option<Secret>,
    /// Environment variable holding the URL.
    pub url_env: Option<String>,
    /// File holding the URL.
    pub url_file: Option<PathBuf>,
    /// Prefix of every key the daemon writes. Default "switchboard:".
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
}

fn default_redis_prefix() -> String {
    "switchboard:".to_owned()
}

/// Inbound pipeline settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Seconds a message's dedupe key is remembered. Default 86400.
    pub dedupe_ttl_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            dedupe_ttl_secs: 86_400,
        }
    }
}

/// Customer tiers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    /// Every tier name in use, in no particular order. Default ["standard", "vip"].
    pub names: Vec<String>,
    /// Tier of customers not listed. Default "standard".
    pub default: String,
    /// Known customers: conversation id (`app:shop-app:u-42`) or customer id → tier. Looked
    /// at before `source`.
    pub customers: BTreeMap<String, String>,
    /// Where the tier of customers not in `customers` comes from. Default static (the
    /// `customers` table alone).
    pub source: TierSourceKind,
    /// Settings of `source = "redis"`.
    pub redis: TierRedisConfig,
    /// Settings of `source = "http"`; required with it.
    pub http: Option<TierHttpConfig>,
}

impl Default for TiersConfig {
    fn default() -> Self {
        Self {
            names: vec!["standard".to_owned(), "vip".to_owned()],
            default: "standard".to_owned(),
            customers: BTreeMap::new(),
            source: TierSourceKind::Static,
            redis: TierRedisConfig::default(),
            http: None,
        }
    }
}

/// Where customer tiers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierSourceKind {
    /// `tiers.customers` only.
    Static,
    /// One key per customer in the shared store (Redis when `[redis]` is configured).
    Redis,
    /// A CRM answering HTTP lookups.
    Http,
}

/// Tier keys in the shared store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierRedisConfig {
    /// Key template; `{id}` is the customer id, then the conversation id, then the phone
    /// number, tried in that order. Default "tier:{id}" (after `redis.key_prefix`).
    pub key: String,
}

impl Default for TierRedisConfig {
    fn default() -> Self {
        Self {
            key: "tier:{id}".to_owned(),
        }
    }
}

/// A CRM lookup over HTTP: `GET url` with the placeholders filled in, answering
/// `{"tier": "...", "customer_id": "..."}` (200) or 404 for an unknown customer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierHttpConfig {
    /// URL template; placeholders `{conversation_id}`, `{channel}`, `{connector}`, `{user}`,
    /// `{customer_id}`, `{phone}` are filled in percent-encoded (empty when unknown).
    pub url: String,
    /// Milliseconds a lookup may take before the default tier is used. Default 300.
    #[serde(default = "default_tier_timeout_ms")]
    pub timeout_ms: u64,
    /// Seconds an answer (found or not) is reused. Default 300; 0 disables the cache.
    #[serde(default = "default_tier_cache_ttl_secs")]
    pub cache_ttl_secs: u64,
    /// Most answers kept in the cache. Default 100000.
    #[serde(default = "default_tier_cache_entries")]
    pub cache_entries: usize,
    /// Consecutive failures after which lookups stop for `open_secs`. Default 5.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Seconds the circuit stays open before one lookup is tried again. Default 30.
    #[serde(default = "default_open_secs")]
    pub open_secs: u64,
    /// JSON field holding the tier. Default "tier".
    #[serde(default = "default_tier_field")]
    pub tier_field: String,
    /// JSON field holding the CRM's customer id. Default "customer_id".
    #[serde(default = "default_customer_id_field")]
    pub customer_id_field: String,
    /// Bearer token sent as `Authorization`, or `token_env` / `token_file`. Optional.
    pub token: Option<Secret>,
    /// Environment variable holding the token.
    pub token_env: Option<String>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
}

fn default_tier_timeout_ms() -> u64 {
    300
}
fn default_tier_cache_ttl_secs() -> u64 {
    300
}
fn default_tier_cache_entries() -> usize {
    100_000
}
fn default_failure_threshold() -> u32 {
    5
}
fn default_open_secs() -> u64 {
    30
}
fn default_tier_field() -> String {
    "tier".to_owned()
}
fn default_customer_id_field() -> String {
    "customer_id".to_owned()
}

/// One intent: words and patterns that point at what the customer wants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentConfig {
    /// Intent name (`where_is_my_parcel`), used by rules and in envelopes.
    pub name: String,
    /// Words or phrases, matched after normalization (full-width to half-width, lowercase,
    /// Traditional to Simplified). Words of Latin letters or digits match whole words only;
    /// a trailing `*` lets them match as a prefix (`refund*`).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Regular expressions (Rust syntax), matched case-insensitively on the normalized text.
    #[serde(default)]
    pub regexes: Vec<String>,
    /// Words that rule this intent out when present (`not damaged`).
    #[serde(default)]
    pub negative_keywords: Vec<String>,
    /// Score of each distinct keyword found. Default 1.0.
    #[serde(default = "default_keyword_weight")]
    pub weight: f64,
    /// Score of each regex that matches. Default 2.0.
    #[serde(default = "default_regex_weight")]
    pub regex_weight: f64,
    /// Lowest score at which this intent counts. Default 1.0.
    #[serde(default = "default_min_score")]
    pub min_score: f64,
    /// Whether this intent ends a conversation's stickiness (a complaint after a tracking
    /// question goes where complaints go). Default false.
    #[serde(default)]
    pub breaks_stickiness: bool,
}

fn default_keyword_weight() -> f64 {
    1.0
}
fn default_regex_weight() -> f64 {
    2.0
}
fn default_min_score() -> f64 {
    1.0
}

/// How an agent queue is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    /// Classic queue with `x-max-priority`.
    Classic,
    /// Quorum queue (replicated; RabbitMQ ≥ 4 honours two priority levels).
    Quorum,
}

/// One agent queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue name.
    pub name: String,
    /// Routing-key patterns on the inbound exchange (`claims.*`, `*.vip`, `#`).
    pub bindings: Vec<String>,
    /// Queue type. Default classic.
    #[serde(default = "default_queue_type", rename = "type")]
    pub queue_type: QueueType,
    /// Highest priority for classic queues, 1-9. Default 9.
    #[serde(default = "default_max_priority")]
    pub max_priority: u8,
}

fn default_queue_type() -> QueueType {
    QueueType::Classic
}

fn default_max_priority() -> u8 {
    9
}

/// Routing: rules tried in order (the first that matches wins, else the default) and what
/// feeds them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Ordered rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// What applies when no rule matches. Required.
    pub default: DefaultRoute,
    /// Text normalization before matching.
    #[serde(default)]
    pub normalize: NormalizeConfig,
    /// Entity recognition.
    #[serde(default)]
    pub entities: EntitiesConfig,
    /// Named business-hours calendars for rules' `open_in` / `closed_in`.
    #[serde(default)]
    pub calendars: Vec<CalendarConfig>,
    /// Follow-up messages keeping their conversation's skill.
    #[serde(default)]
    pub stickiness: StickinessConfig,
    /// Agent queues whose backlog sends new messages elsewhere.
    #[serde(default)]
    pub overflow: Vec<OverflowConfig>,
    /// Abusive and sensitive words.
    #[serde(default)]
    pub abuse: AbuseConfig,
    /// Optional lookups that refine a decision (shipment status, an external classifier).
    #[serde(default)]
    pub enrichment: EnrichmentConfig,
}

/// One routing rule. Every condition given must hold; an absent condition always holds.
/// Within a list, any one entry is enough.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name, shown in envelopes and explanations.
    pub name: String,
    /// Channel kinds this rule applies to.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Connector ids this rule applies to.
    #[serde(default)]
    pub connectors: Vec<String>,
    /// Intents (from `[[intents]]`) of which the message's must be one.
    #[serde(default)]
    pub intents: Vec<String>,
    /// Lowest confidence of that intent, 0-1. Needs `intents`. Default: any.
    pub min_confidence: Option<f64>,
    /// Entity kinds of which at least one must be present (`tracking_number`, ...).
    #[serde(default)]
    pub entities: Vec<String>,
    /// Shipment statuses (from the shipment enrichment hook) of which one must be reported.
    #[serde(default)]
    pub shipment_status: Vec<String>,
    /// Tiers this rule applies to.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Flags of which at least one must be set (`abusive`, `tier_lookup_failed`, ...).
    #[serde(default)]
    pub flags: Vec<String>,
    /// A calendar that must be open now.
    pub open_in: Option<String>,
    /// A calendar that must be closed now.
    pub closed_in: Option<String>,
    /// Words of which at least one must appear (normalized like intent keywords).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Skill to route to.
    pub skill: String,
    /// AMQP priority 0-9. Default: the default route's priority.
    pub priority: Option<u8>,
    /// Fixed routing key instead of `{skill}.{tier}`.
    pub queue_key: Option<String>,
}

/// The route of messages no rule matched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRoute {
    /// Skill.
    pub skill: String,
    /// Priority 0-9. Default 0.
    #[serde(default)]
    pub priority: u8,
}

/// Text normalization.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeConfig {
    /// Convert Traditional Chinese to Simplified before matching. Default true.
    pub traditional_to_simplified: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        Self {
            traditional_to_simplified: true,
        }
    }
}

/// Entity recognition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntitiesConfig {
    /// Order number patterns (Rust regex, case-insensitive, matched on whole words).
    pub order_numbers: Vec<String>,
    /// Carriers whose tracking numbers are recognised. Default: every built-in carrier.
    pub carriers: Option<Vec<String>>,
    /// Recognise mainland and Hong Kong phone numbers. Default true.
    pub phones: bool,
    /// Recognise amounts of money. Default true.
    pub amounts: bool,
}

impl Default for EntitiesConfig {
    fn default() -> Self {
        Self {
            order_numbers: Vec::new(),
            carriers: None,
            phones: true,
            amounts: true,
        }
    }
}

/// A business-hours calendar.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// Calendar name, used by rules.
    pub name: String,
    /// IANA time zone (`Asia/Shanghai`).
    pub time_zone: String,
    /// Open weekdays (`mon` ... `sun`). Default Monday to Friday.
    #[serde(default = "default_days")]
    pub days: Vec<String>,
    /// Opening time, `HH:MM`. Default "09:00".
    #[serde(default = "default_open")]
    pub open: String,
    /// Closing time, `HH:MM`, after `open`. Default "18:00".
    #[serde(default = "default_close")]
    pub close: String,
    /// Dates (`YYYY-MM-DD`) closed all day.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Dates open although their weekday is not (make-up working days).
    #[serde(default)]
    pub workdays: Vec<String>,
}

fn default_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .map(str::to_owned)
        .to_vec()
}
fn default_open() -> String {
    "09:00".to_owned()
}
fn default_close() -> String {
    "18:00".to_owned()
}

/// Stickiness of a conversation's skill.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StickinessConfig {
    /// Seconds a conversation keeps the skill its last routed message got; 0 turns
    /// stickiness off (transfers still hold). Default 0.
    pub ttl_secs: u64,
    /// Seconds a helpdesk's `transfer` holds. Default 86400.
    pub transfer_ttl_secs: u64,
}

impl Default for StickinessConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 0,
            transfer_ttl_secs: 86_400,
        }
    }
}

/// Overflow of one agent queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverflowConfig {
    /// The agent queue (from `[[queues]]`) whose ready count is watched.
    pub queue: String,
    /// Ready messages above which new messages bound for it go to `queue_key`.
    pub ready_above: u32,
    /// Routing key used instead.
    pub queue_key: String,
    /// Added to the priority of overflowed messages (capped at 9). Default 1.
    #[serde(default = "default_priority_boost")]
    pub priority_boost: u8,
    /// Milliseconds a ready count is reused before the broker is asked again. Default 3000.
    #[serde(default = "default_check_every_ms")]
    pub check_every_ms: u64,
}

fn default_priority_boost() -> u8 {
    1
}
fn default_check_every_ms() -> u64 {
    3000
}

/// Abusive and sensitive words.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseConfig {
    /// Words that flag a message `abusive`. Default: a built-in Chinese and English list.
    pub words: Option<Vec<String>>,
    /// Words added to `words` (or to the built-in list).
    pub extra_words: Vec<String>,
    /// Publish `conversation.flagged` to the events exchange. Default true.
    pub publish_event: bool,
    /// Characters of the message quoted in the event. Default 200.
    pub excerpt_chars: usize,
    /// Skill that abusive messages go to, ahead of every rule. Optional.
    pub skill: Option<String>,
    /// Priority of those messages. Default: the default route's priority.
    pub priority: Option<u8>,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            words: None,
            extra_words: Vec::new(),
            publish_event: true,
            excerpt_chars: 200,
            skill: None,
            priority: None,
        }
    }
}

/// Optional lookups, each called only when configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichmentConfig {
    /// Milliseconds any hook of one message may take at most. Default 300.
    pub budget_ms: u64,
    /// Status of a tracking number found in the message.
    pub shipment: Option<ShipmentHookConfig>,
    /// An external intent classifier (an NLU service).
    pub classifier: Option<ClassifierHookConfig>,
}

impl Default for EnrichmentConfig {
    fn default() -> Self {
        Self {
            budget_ms: 300,
            shipment: None,
            classifier: None,
        }
    }
}

/// `GET url` for the first tracking number found, answering `{"status": "..."}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipmentHookConfig {
    /// URL template with `{tracking_number}` and `{carrier}`.
    pub url: String,
    /// Milliseconds it may take (within the budget). Default 250.
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    /// JSON field holding the status word. Default "status".
    #[serde(default = "default_status_field")]
    pub status_field: String,
}

/// `POST url` with `{"text", "normalized", "channel"}`, answering
/// `{"intent": "...", "confidence": 0.0-1.0}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierHookConfig {
    /// Endpoint URL.
    pub url: String,
    /// Milliseconds it may take (within the budget). Default 250.
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    /// Confidence from which its intent wins over the keywords. Default 0.8.
    #[serde(default = "default_classifier_confidence")]
    pub min_confidence: f64,
}

fn default_hook_timeout_ms() -> u64 {
    250
}
fn default_status_field() -> String {
    "status".to_owned()
}
fn default_classifier_confidence() -> f64 {
    0.8
}

/// Reply dispatch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Replies handled at once (the AMQP prefetch). Default 64.
    pub prefetch: u16,
    /// Attempts per reply before `delivery.failed`. Default 5.
    pub max_attempts: u32,
    /// First retry delay in milliseconds. Default 500.
    pub retry_min_ms: u64,
    /// Longest retry delay in milliseconds. Default 30000.
    pub retry_max_ms: u64,
    /// Seconds a sent reply id is remembered to drop duplicates. Default 86400.
    pub dedupe_ttl_secs: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            prefetch: 64,
            max_attempts: 5,
            retry_min_ms: 500,
            retry_max_ms: 30_000,
            dedupe_ttl_secs: 86_400,
        }
    }
}
