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
    /// Admin listener (health, metrics, reload). Default 127.0.0.1:9090.
    pub admin_listen: SocketAddr,
    /// Seconds a webhook may take before the daemon answers 503 (the handler still finishes,
    /// so the channel's retry is answered as a duplicate). Default 10.
    pub request_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            request_timeout_secs: 10,
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
    /// Known customers: conversation id (`app:shop-app:u-42`) or customer id → tier.
    pub customers: BTreeMap<String, String>,
}

impl Default for TiersConfig {
    fn default() -> Self {
        Self {
            names: vec!["standard".to_owned(), "vip".to_owned()],
            default: "standard".to_owned(),
            customers: BTreeMap::new(),
        }
    }
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

/// Routing rules, tried in order; the first that matches wins, else the default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Ordered rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// What applies when no rule matches. Required.
    pub default: DefaultRoute,
}

/// One routing rule. Every condition given must hold; an absent condition always holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name, shown in envelopes and explanations.
    pub name: String,
    /// Channel kinds this rule applies to.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Tiers this rule applies to.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Words of which at least one must appear (case-insensitive).
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
