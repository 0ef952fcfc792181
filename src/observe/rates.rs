//! Per-minute counters of the last hour, kept in memory: enough to draw a rate chart per
//! agent queue and to tell which connectors saw traffic lately, without outside monitoring.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

/// Minutes kept.
pub const MINUTES: usize = 60;

/// One key's counts: slot `m % MINUTES` holds minute `m` when `stamps` says so.
#[derive(Clone)]
struct Series {
    counts: [u32; MINUTES],
    stamps: [u64; MINUTES],
}

impl Series {
    fn new() -> Self {
        Self {
            counts: [0; MINUTES],
            stamps: [u64::MAX; MINUTES],
        }
    }

    fn add(&mut self, minute: u64) {
        let slot = (minute % MINUTES as u64) as usize;
        if self.stamps[slot] != minute {
            self.stamps[slot] = minute;
            self.counts[slot] = 0;
        }
        self.counts[slot] = self.counts[slot].saturating_add(1);
    }

    /// Oldest first, ending with `now`'s minute.
    fn history(&self, now: u64) -> Vec<u32> {
        (0..MINUTES as u64)
            .rev()
            .map(|ago| {
                let Some(minute) = now.checked_sub(ago) else {
                    return 0;
                };
                let slot = (minute % MINUTES as u64) as usize;
                if self.stamps[slot] == minute {
                    self.counts[slot]
                } else {
                    0
                }
            })
            .collect()
    }
}

/// A route's (routing key and channel) history, as the admin API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteHistory {
    /// Routing key on the inbound exchange.
    pub queue_key: String,
    /// Channel kind.
    pub channel: String,
    /// Messages per minute, oldest first, the last being the current minute.
    pub per_minute: Vec<u32>,
}

/// Last traffic of one connector.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorTraffic {
    /// Unix milliseconds of its last accepted message.
    pub last_message_ms: u64,
    /// Messages in the last 5 minutes.
    pub last_5_minutes: u32,
}

#[derive(Default)]
struct Inner {
    routes: HashMap<(String, String), Series>,
    connectors: HashMap<String, (u64, Series)>,
}

/// The counters.
#[derive(Default)]
pub struct Rates {
    inner: Mutex<Inner>,
}

fn minute_of(ms: u64) -> u64 {
    ms / 60_000
}

impl Rates {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a message routed with `queue_key` from `channel`, now.
    pub fn record(&self, queue_key: &str, channel: &str) {
        self.record_at(queue_key, channel, crate::durable::now_ms());
    }

    fn record_at(&self, queue_key: &str, channel: &str, now_ms: u64) {
        let mut inner = self.lock();
        // Routing keys come from config (skills and tiers), so the map stays small.
        inner
            .routes
            .entry((queue_key.to_owned(), channel.to_owned()))
            .or_insert_with(Series::new)
            .add(minute_of(now_ms));
    }

    /// Notes a message from connector `kind:id`, now.
    pub fn seen_connector(&self, connector: &str) {
        let now = crate::durable::now_ms();
        let mut inner = self.lock();
        let entry = inner
            .connectors
            .entry(connector.to_owned())
            .or_insert_with(|| (now, Series::new()));
        entry.0 = now;
        entry.1.add(minute_of(now));
    }

    /// Every route's last hour.
    pub fn routes(&self) -> Vec<RouteHistory> {
        self.routes_at(crate::durable::now_ms())
    }

    fn routes_at(&self, now_ms: u64) -> Vec<RouteHistory> {
        let now = minute_of(now_ms);
        let mut out: Vec<RouteHistory> = self
            .lock()
            .routes
            .iter()
            .map(|((queue_key, channel), series)| RouteHistory {
                queue_key: queue_key.clone(),
                channel: channel.clone(),
                per_minute: series.history(now),
            })
            .filter(|h| h.per_minute.iter().any(|c| *c > 0))
            .collect();
        out.sort_by(|a, b| (&a.queue_key, &a.channel).cmp(&(&b.queue_key, &b.channel)));
        out
    }

    /// Traffic of connector `kind:id`, if it had any since the daemon started.
    pub fn connector(&self, connector: &str) -> Option<ConnectorTraffic> {
        let now = minute_of(crate::durable::now_ms());
        let inner = self.lock();
        let (last, series) = inner.connectors.get(connector)?;
        let history = series.history(now);
        Some(ConnectorTraffic {
            last_message_ms: *last,
            last_5_minutes: history[MINUTES - 5..].iter().sum(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_hour_by_minute_and_forgets_older() {
        let rates = Rates::default();
        let base = 1_000 * 60_000;
        rates.record_at("claims.gold", "webchat", base);
        rates.record_at("claims.gold", "webchat", base + 1_000);
        rates.record_at("claims.gold", "webchat", base + 60_000);
        let history = &rates.routes_at(base + 60_000)[0];
        assert_eq!(history.per_minute.len(), MINUTES);
        assert_eq!(history.per_minute[MINUTES - 1], 1);
        assert_eq!(history.per_minute[MINUTES - 2], 2);
        // An hour later the slot is reused and the old minute no longer counts.
        rates.record_at("claims.gold", "webchat", base + 60 * 60_000);
        let history = &rates.routes_at(base + 60 * 60_000)[0];
        assert_eq!(history.per_minute.iter().sum::<u32>(), 2);
        assert_eq!(history.per_minute[MINUTES - 1], 1);
        assert!(rates.routes_at(base + 3 * 60 * 60_000).is_empty());
    }
}
