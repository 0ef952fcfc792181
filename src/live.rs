//! The connectors in force and what is derived from them, swapped whole on reload so a
//! request or a reply always sees one consistent set.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use switchboard_sdk::Connector;

/// A built connector with its outbound limiter.
pub struct LiveConnector {
    /// The connector.
    pub connector: Arc<dyn Connector>,
    /// Smooths replies to the connector's configured rate.
    pub outbound: Arc<DefaultDirectRateLimiter>,
}

/// Every connector in force, and the public router mounting them.
pub struct LiveSet {
    /// Keyed by `kind:id`.
    pub connectors: HashMap<String, LiveConnector>,
    /// The public HTTP router.
    pub router: axum::Router,
}

impl LiveSet {
    /// The connector a conversation belongs to.
    pub fn connector(&self, kind: &str, id: &str) -> Option<&LiveConnector> {
        self.connectors.get(&format!("{kind}:{id}"))
    }
}

/// Wraps built connectors with their limiters.
pub fn live_connectors(connectors: &[Arc<dyn Connector>]) -> HashMap<String, LiveConnector> {
    connectors
        .iter()
        .map(|connector| {
            let limits = connector.limits();
            let per_second = NonZeroU32::new(limits.outbound_per_second).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(limits.outbound_burst).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::per_second(per_second).allow_burst(burst);
            (
                format!("{}:{}", connector.kind(), connector.id()),
                LiveConnector {
                    connector: connector.clone(),
                    outbound: Arc::new(RateLimiter::direct(quota)),
                },
            )
        })
        .collect()
}
