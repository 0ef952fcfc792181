//! What the daemon sees of its own traffic, for the operator console: the live tail of
//! routed envelopes, per-minute inbound rates of the last hour, and daily statistics.
//! Everything here is fed from the inbound pipeline and the reply dispatcher and read by
//! the admin API; none of it may slow the message path.

pub mod mask;
pub mod rates;
pub mod stats;

use std::sync::Arc;

use switchboard_sdk::{Envelope, KvStore};
use tokio::sync::broadcast;

use crate::pipeline::routing::Routed;
use crate::pipeline::routing::explain::explain;
pub use rates::Rates;
pub use stats::Stats;

/// One routed envelope as the live tail shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tapped {
    /// The envelope as published.
    pub envelope: Envelope,
    /// The routing explanation, as `switchboard route` prints it.
    pub explanation: String,
    /// Whether it went to the spool rather than straight to the broker.
    pub spooled: bool,
}

/// Envelopes kept for a slow tail reader before it starts missing some.
const TAP_CAPACITY: usize = 256;

/// The daemon's view of its own traffic.
pub struct Observer {
    tap: broadcast::Sender<Arc<Tapped>>,
    /// Inbound rates per route and per connector.
    pub rates: Rates,
    /// Daily statistics in the shared store.
    pub stats: Stats,
}

impl Observer {
    /// An observer keeping statistics in `kv`.
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self {
            tap: broadcast::channel(TAP_CAPACITY).0,
            rates: Rates::default(),
            stats: Stats::new(kv),
        }
    }

    /// Whether anyone follows the tail: building the explanation costs, so only then.
    pub fn tapped(&self) -> bool {
        self.tap.receiver_count() > 0
    }

    /// Follows the tail.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Tapped>> {
        self.tap.subscribe()
    }

    /// Counts one routed envelope, and shows it to tail readers.
    pub fn routed(&self, envelope: &Envelope, routed: Option<&Routed>, spooled: bool) {
        let channel = &envelope.channel;
        self.rates.record(&envelope.route.queue_key, &channel.kind);
        self.rates
            .seen_connector(&format!("{}:{}", channel.kind, channel.connector_id));
        self.stats.record_routed(envelope);
        if let Some(routed) = routed
            && self.tapped()
        {
            let text = envelope.content.searchable_text().unwrap_or_default();
            let _ = self.tap.send(Arc::new(Tapped {
                envelope: envelope.clone(),
                explanation: explain(text, routed),
                spooled,
            }));
        }
    }
}
