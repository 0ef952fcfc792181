//! Per-minute counters of the last hour, kept in memory: enough to draw a rate chart per
//! agent queue, to tell which connectors saw traffic lately, and how close each connector
//! runs to its rate limits, without outside monitoring.

use std::collections::{BTreeMap, HashMap};
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

/// How one connector's requests and replies fared in the last 5 minutes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConnectorPressure {
    /// Requests that reached the connector's gate.
    pub requests: u32,
    /// Of those, refused, by reason (`rate_limited`, `oversize`, ...).
    pub refused: BTreeMap<String, u32>,
    /// Share of requests refused as `rate_limited` (0 to 1), `None` without requests.
    pub rate_limited_share: Option<f64>,
    /// Reply sending attempts.
    pub reply_attempts: u32,
    /// Of those, held back by the connector's outbound limiter before going out.
    pub replies_throttled: u32,
}

#[derive(Default)]
struct Inner {
    routes: HashMap<(String, String), Series>,
    connectors: HashMap<String, (u64, Series)>,
    /// Requests per connector `kind:id`.
    requests: HashMap<String, Series>,
    /// Refusals per connector and reason; reasons are the SDK's fixed set.
    refusals: HashMap<(String, String), Series>,
    /// Reply attempts per connector, and those the outbound limiter held back.
    replies: HashMap<String, (Series, Series)>,
}

/// Minutes a connector's pressure looks back.
const PRESSURE_MINUTES: usize = 5;

/// The counters.
#[derive(Default)]
pub struct Rates {
    inner: Mutex<Inner>,
}

/// Counts one event at `now_ms` in the series `key` of `series`.
fn count_in<K: std::hash::Hash + Eq>(series: &mut HashMap<K, Series>, key: K, now_ms: u64) {
    series
        .entry(key)
        .or_insert_with(Series::new)
        .add(minute_of(now_ms));
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
        // Routing keys come from config (skills and tiers), so the map stays small.
        count_in(
            &mut self.lock().routes,
            (queue_key.to_owned(), channel.to_owned()),
            now_ms,
        );
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

    /// Counts a request reaching connector `kind:id`'s gate, now.
    pub fn request(&self, connector: &str) {
        self.request_at(connector, crate::durable::now_ms());
    }

    fn request_at(&self, connector: &str, now_ms: u64) {
        // Connector keys come from config, so the map stays small.
        count_in(&mut self.lock().requests, connector.to_owned(), now_ms);
    }

    /// Counts a request connector `kind:id` refused with `reason`, now.
    pub fn refused(&self, connector: &str, reason: &str) {
        self.refused_at(connector, reason, crate::durable::now_ms());
    }

    fn refused_at(&self, connector: &str, reason: &str, now_ms: u64) {
        // Reasons are the sdk's fixed list.
        count_in(
            &mut self.lock().refusals,
            (connector.to_owned(), reason.to_owned()),
            now_ms,
        );
    }

    /// Counts an attempt to send a reply through connector `kind:id`, now; `throttled` when
    /// its outbound limiter made it wait.
    pub fn reply_attempt(&self, connector: &str, throttled: bool) {
        self.reply_attempt_at(connector, throttled, crate::durable::now_ms());
    }

    fn reply_attempt_at(&self, connector: &str, throttled: bool, now_ms: u64) {
        let mut inner = self.lock();
        let (attempts, held) = inner
            .replies
            .entry(connector.to_owned())
            .or_insert_with(|| (Series::new(), Series::new()));
        attempts.add(minute_of(now_ms));
        if throttled {
            held.add(minute_of(now_ms));
        }
    }

    /// Connector `kind:id`'s requests, refusals and replies of the last 5 minutes.
    pub fn pressure(&self, connector: &str) -> ConnectorPressure {
        self.pressure_at(connector, crate::durable::now_ms())
    }

    fn pressure_at(&self, connector: &str, now_ms: u64) -> ConnectorPressure {
        let now = minute_of(now_ms);
        let recent = |series: &Series| -> u32 {
            series.history(now)[MINUTES - PRESSURE_MINUTES..]
                .iter()
                .sum()
        };
        let inner = self.lock();
        let requests = inner.requests.get(connector).map(recent).unwrap_or(0);
        let refused: BTreeMap<String, u32> = inner
            .refusals
            .iter()
            .filter(|((c, _), _)| c == connector)
            .map(|((_, reason), series)| (reason.clone(), recent(series)))
            .filter(|(_, count)| *count > 0)
            .collect();
        let limited = refused.get("rate_limited").copied().unwrap_or(0);
        let (reply_attempts, replies_throttled) = inner
            .replies
            .get(connector)
            .map(|(attempts, held)| (recent(attempts), recent(held)))
            .unwrap_or((0, 0));
        ConnectorPressure {
            requests,
            rate_limited_share: (requests > 0)
                .then(|| f64::from(limited.min(requests)) / f64::from(requests)),
            refused,
            reply_attempts,
            replies_throttled,
        }
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

    #[test]
    fn pressure_counts_the_last_five_minutes_of_one_connector() {
        let rates = Rates::default();
        let base = 2_000 * 60_000;
        assert_eq!(
            rates.pressure_at("webchat:site", base).rate_limited_share,
            None
        );
        for _ in 0..3 {
            rates.request_at("webchat:site", base);
        }
        rates.request_at("webchat:site", base - 10 * 60_000);
        rates.request_at("app:shop", base);
        rates.refused_at("webchat:site", "rate_limited", base);
        rates.refused_at("webchat:site", "oversize", base);
        rates.refused_at("app:shop", "rate_limited", base);
        rates.reply_attempt_at("webchat:site", false, base);
        rates.reply_attempt_at("webchat:site", true, base);
        let pressure = rates.pressure_at("webchat:site", base + 60_000);
        assert_eq!(
            (pressure.reply_attempts, pressure.replies_throttled),
            (2, 1)
        );
        assert_eq!(pressure.requests, 3);
        assert_eq!(pressure.refused["rate_limited"], 1);
        assert_eq!(pressure.refused["oversize"], 1);
        assert_eq!(pressure.rate_limited_share, Some(1.0 / 3.0));
        // Five minutes on, all of it is out of the window.
        let later = rates.pressure_at("webchat:site", base + 5 * 60_000);
        assert_eq!(later, ConnectorPressure::default());
    }
}
