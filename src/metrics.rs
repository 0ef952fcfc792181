//! The daemon's Prometheus metrics: `switchboard_<noun>_total` counters and `_seconds`
//! histograms, labelled by channel and connector with bounded cardinality (label values come
//! from config and fixed reason lists, never from message content).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Channel kind and connector id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    /// Channel kind.
    pub channel: String,
    /// Connector id.
    pub connector: String,
}

/// A connector plus a fixed-vocabulary word (reason, outcome).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorOutcomeLabels {
    /// Channel kind.
    pub channel: String,
    /// Connector id.
    pub connector: String,
    /// Reason or outcome.
    pub outcome: String,
}

/// A connector plus the reason a request was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorReasonLabels {
    /// Channel kind.
    pub channel: String,
    /// Connector id.
    pub connector: String,
    /// Why it was refused (the sdk's `RejectReason`).
    pub reason: String,
}

/// Where a publish went and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    /// `inbound`, `events`, `dead` or `spool_drain`.
    pub target: String,
    /// `confirmed`, `nacked`, `timeout`, `failed`.
    pub outcome: String,
}

/// A single word label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The outcome.
    pub outcome: String,
}

/// The hash of the running config.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    /// SHA-256 of the config file.
    pub hash: String,
}

/// A routing rule's name (from config, or `default`, `sticky`, `transfer`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// What decided.
    pub rule: String,
}

/// An agent queue's name (from config).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Queue name.
    pub queue: String,
}

/// A routing lookup (tier source or enrichment hook) and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// `tier`, `shipment` or `classifier`.
    pub lookup: String,
    /// `found`, `not_found`, `cached`, `timeout`, `failed`, `circuit_open`, `ok`, ...
    pub outcome: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Webhook requests per connector.
    pub requests: Family<ConnectorLabels, Counter>,
    /// Refused requests per connector and reason.
    pub rejections: Family<ConnectorReasonLabels, Counter>,
    /// Accepted messages per connector and outcome (`published`, `spooled`, `duplicate`).
    pub accepted: Family<ConnectorOutcomeLabels, Counter>,
    /// Pending dedupe claims taken over from a holder that is gone, per connector and why.
    pub dedupe_takeovers: Family<ConnectorReasonLabels, Counter>,
    /// Publishes by target and outcome.
    pub published: Family<PublishLabels, Counter>,
    /// Time from publish to broker confirm.
    pub confirm_seconds: Histogram,
    /// Messages waiting in the spool.
    pub spool_depth: Gauge,
    /// Bytes waiting in the spool.
    pub spool_bytes: Gauge,
    /// Age of the oldest spooled message.
    pub spool_oldest_age_seconds: Gauge,
    /// Messages drained from the spool to the broker.
    pub spool_drained: Counter,
    /// 1 while the broker link is up.
    pub broker_connected: Gauge,
    /// Broker connections made after the first.
    pub broker_reconnects: Counter,
    /// Replies per connector and outcome (`succeeded`, `failed`, `retried`, `duplicate`).
    pub deliveries: Family<ConnectorOutcomeLabels, Counter>,
    /// Replies sent to the dead-letter exchange, by reason.
    pub dead_lettered: Family<OutcomeLabels, Counter>,
    /// Reload attempts by result (`applied`, `refused`).
    pub reloads: Family<OutcomeLabels, Counter>,
    /// 1 for the hash of the config in force.
    pub config_info: Family<ConfigLabels, Gauge>,
    /// Operations on shared state that fell back or failed, by outcome.
    pub kv_errors: Family<OutcomeLabels, Counter>,
    /// 1 while Redis fails and shared state is served from this instance's memory.
    pub shared_state_degraded: Gauge,
    /// Keys held in this process's memory (the whole store without Redis, the fallback with
    /// it), expired ones included until the next prune.
    pub memory_store_keys: Gauge,
    /// Heap bytes allocated and not freed, as glibc last reported (src/heap.rs).
    pub heap_in_use_bytes: Gauge,
    /// Freed heap bytes the allocator still holds, resident or not.
    pub heap_free_bytes: Gauge,
    /// Times freed heap memory was handed back to the OS.
    pub heap_trims: Counter,
    /// Resident bytes those trims gave back.
    pub heap_trim_released_bytes: Counter,
    /// Routed messages by what decided.
    pub routed: Family<RuleLabels, Counter>,
    /// Messages moved to an overflow key, by the agent queue that was too full.
    pub overflowed: Family<QueueLabels, Counter>,
    /// Ready messages of watched agent queues, as last checked.
    pub queue_ready: Family<QueueLabels, Gauge>,
    /// Tier lookups and enrichment hooks by outcome.
    pub lookups: Family<LookupLabels, Counter>,
    /// Messages flagged, by flag.
    pub flagged: Family<OutcomeLabels, Counter>,
    /// Helpdesk commands by outcome (`transferred`, `closed`, `failed`, `malformed`).
    pub commands: Family<OutcomeLabels, Counter>,
    /// Time spent routing one message (analysis, lookups, decision).
    pub routing_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let requests = Family::default();
        let rejections = Family::default();
        let accepted = Family::default();
        let dedupe_takeovers = Family::default();
        let published = Family::default();
        let confirm_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let spool_depth = Gauge::default();
        let spool_bytes = Gauge::default();
        let spool_oldest_age_seconds = Gauge::default();
        let spool_drained = Counter::default();
        let broker_connected = Gauge::default();
        let broker_reconnects = Counter::default();
        let deliveries = Family::default();
        let dead_lettered = Family::default();
        let reloads = Family::default();
        let config_info = Family::default();
        let kv_errors = Family::default();
        let shared_state_degraded = Gauge::default();
        let memory_store_keys = Gauge::default();
        let heap_in_use_bytes = Gauge::default();
        let heap_free_bytes = Gauge::default();
        let heap_trims = Counter::default();
        let heap_trim_released_bytes = Counter::default();
        let routed = Family::default();
        let overflowed = Family::default();
        let queue_ready = Family::default();
        let lookups = Family::default();
        let flagged = Family::default();
        let commands = Family::default();
        let routing_seconds = Histogram::new(exponential_buckets(0.000_005, 2.0, 18));
        registry.register(
            "routing_decisions",
            "Routed messages by deciding rule",
            routed.clone(),
        );
        registry.register(
            "routing_overflow",
            "Messages moved to an overflow key, by full agent queue",
            overflowed.clone(),
        );
        registry.register(
            "queue_ready_messages",
            "Ready messages of watched agent queues",
            queue_ready.clone(),
        );
        registry.register(
            "routing_lookups",
            "Tier lookups and enrichment hooks by outcome",
            lookups.clone(),
        );
        registry.register(
            "flagged_messages",
            "Messages flagged, by flag",
            flagged.clone(),
        );
        registry.register("commands", "Helpdesk commands by outcome", commands.clone());
        registry.register(
            "routing_seconds",
            "Time spent routing one message",
            routing_seconds.clone(),
        );
        registry.register(
            "requests",
            "Webhook requests by connector",
            requests.clone(),
        );
        registry.register(
            "rejections",
            "Refused requests by connector and reason",
            rejections.clone(),
        );
        registry.register(
            "accepted",
            "Accepted messages by connector and outcome",
            accepted.clone(),
        );
        registry.register(
            "dedupe_takeovers",
            "Pending dedupe claims taken over by connector and reason",
            dedupe_takeovers.clone(),
        );
        registry.register(
            "published",
            "AMQP publishes by target and outcome",
            published.clone(),
        );
        registry.register(
            "confirm_seconds",
            "Publish to broker confirm latency",
            confirm_seconds.clone(),
        );
        registry.register(
            "spool_depth",
            "Messages waiting in the spool",
            spool_depth.clone(),
        );
        registry.register(
            "spool_bytes",
            "Bytes waiting in the spool",
            spool_bytes.clone(),
        );
        registry.register(
            "spool_oldest_age_seconds",
            "Age of the oldest spooled message",
            spool_oldest_age_seconds.clone(),
        );
        registry.register(
            "spool_drained",
            "Messages drained from the spool",
            spool_drained.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while the broker link is up",
            broker_connected.clone(),
        );
        registry.register(
            "broker_reconnects",
            "Broker reconnections",
            broker_reconnects.clone(),
        );
        registry.register(
            "deliveries",
            "Replies by connector and outcome",
            deliveries.clone(),
        );
        registry.register(
            "dead_lettered",
            "Messages dead-lettered by reason",
            dead_lettered.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads by result",
            reloads.clone(),
        );
        registry.register(
            "config_info",
            "The config in force, by hash",
            config_info.clone(),
        );
        registry.register(
            "kv_errors",
            "Shared-state failures by outcome",
            kv_errors.clone(),
        );
        registry.register(
            "shared_state_degraded",
            "1 while Redis fails and shared state is local to this instance",
            shared_state_degraded.clone(),
        );
        registry.register(
            "memory_store_keys",
            "Keys held by the in-memory store, as of its last prune",
            memory_store_keys.clone(),
        );
        registry.register(
            "heap_in_use_bytes",
            "Heap bytes allocated and not freed, sampled every 10 s",
            heap_in_use_bytes.clone(),
        );
        registry.register(
            "heap_free_bytes",
            "Freed heap bytes the allocator still holds, sampled every 10 s",
            heap_free_bytes.clone(),
        );
        registry.register(
            "heap_trims",
            "Times freed heap memory was handed back to the OS",
            heap_trims.clone(),
        );
        registry.register(
            "heap_trim_released_bytes",
            "Resident bytes handed back to the OS by heap trims",
            heap_trim_released_bytes.clone(),
        );
        Self {
            registry,
            requests,
            rejections,
            accepted,
            dedupe_takeovers,
            published,
            confirm_seconds,
            spool_depth,
            spool_bytes,
            spool_oldest_age_seconds,
            spool_drained,
            broker_connected,
            broker_reconnects,
            deliveries,
            dead_lettered,
            reloads,
            config_info,
            kv_errors,
            shared_state_degraded,
            memory_store_keys,
            heap_in_use_bytes,
            heap_free_bytes,
            heap_trims,
            heap_trim_released_bytes,
            routed,
            overflowed,
            queue_ready,
            lookups,
            flagged,
            commands,
            routing_seconds,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one outcome for a connector in `family`.
    pub fn count(
        family: &Family<ConnectorOutcomeLabels, Counter>,
        channel: &str,
        connector: &str,
        outcome: &str,
    ) {
        family
            .get_or_create(&ConnectorOutcomeLabels {
                channel: channel.to_owned(),
                connector: connector.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Adds one to `family` for a connector and a reason.
    pub fn count_reason(
        family: &Family<ConnectorReasonLabels, Counter>,
        channel: &str,
        connector: &str,
        reason: &str,
    ) {
        family
            .get_or_create(&ConnectorReasonLabels {
                channel: channel.to_owned(),
                connector: connector.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one publish.
    pub fn publish(&self, target: &str, outcome: &str) {
        self.published
            .get_or_create(&PublishLabels {
                target: target.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one lookup outcome.
    pub fn lookup(&self, lookup: &str, outcome: &str) {
        self.lookups
            .get_or_create(&LookupLabels {
                lookup: lookup.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records the config in force, clearing the previous hash.
    pub fn set_config_hash(&self, hash: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&ConfigLabels {
                hash: hash.to_owned(),
            })
            .set(1);
    }
}
