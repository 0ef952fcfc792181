//! Daily statistics a contact centre looks at: volume by channel, intent and tier, the share
//! flagged abusive, failed deliveries by reason. Counters live in the shared store (Redis
//! when configured, so every instance adds to the same day; memory otherwise), one key per
//! day, dimension and value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use switchboard_sdk::{Envelope, KvStore};
use time::{Date, Duration, OffsetDateTime};

/// The dimensions counted.
pub const DIMENSIONS: [&str; 5] = ["total", "channel", "intent", "tier", "flag"];
/// Failed deliveries are counted under this dimension, by reason.
pub const FAILED: &str = "failed";

/// One day's counts: dimension → value → count.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Day {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// Counts by dimension and value.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The statistics recorder and reader.
pub struct Stats {
    kv: Arc<dyn KvStore>,
    /// Values seen per dimension, so reading knows which keys to ask for.
    seen: Mutex<BTreeMap<&'static str, BTreeSet<String>>>,
}

/// Keeps what a helpdesk or a channel wrote out of key names.
fn clean(value: &str) -> String {
    let value: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(48)
        .collect();
    if value.is_empty() {
        "other".to_owned()
    } else {
        value
    }
}

fn day_of(at: OffsetDateTime) -> Date {
    at.date()
}

impl Stats {
    /// Statistics in `kv`.
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self {
            kv,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Makes `values` of `dimension` known, so days with no counts show zeros and other
    /// instances' counts are read even before this one saw the value.
    pub fn know(&self, dimension: &'static str, values: impl IntoIterator<Item = String>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.entry(dimension)
            .or_default()
            .extend(values.into_iter().map(|v| clean(&v)));
    }

    fn count(&self, dimension: &'static str, value: &str) {
        let value = clean(value);
        let key = format!(
            "stats:{}:{dimension}:{value}",
            day_of(OffsetDateTime::now_utc())
        );
        self.know(dimension, [value]);
        let kv = self.kv.clone();
        // Off the message path: a slow or absent store must not delay routing.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(err) = kv.increment(&key).await {
                    tracing::debug!(error = %err, key, "cannot count a statistic");
                }
            });
        }
    }

    /// Counts one routed envelope.
    pub fn record_routed(&self, envelope: &Envelope) {
        self.count("total", "messages");
        self.count("channel", &envelope.channel.kind);
        self.count(
            "intent",
            envelope.intent.as_ref().map_or("none", |i| i.name.as_str()),
        );
        self.count("tier", &envelope.route.tier);
        for flag in &envelope.flags {
            self.count("flag", flag);
        }
    }

    /// Counts one reply that could not be delivered, or was dead-lettered.
    pub fn record_failed(&self, reason: &str) {
        self.count(FAILED, reason);
    }

    /// The last `days` days, today first.
    pub async fn days(&self, days: u32) -> Vec<Day> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let today = day_of(OffsetDateTime::now_utc());
        let mut out = Vec::new();
        for back in 0..days {
            let date = today - Duration::days(i64::from(back));
            let mut day = Day {
                date: date.to_string(),
                counts: BTreeMap::new(),
            };
            for (dimension, values) in &seen {
                let counts = day.counts.entry((*dimension).to_owned()).or_default();
                for value in values {
                    let key = format!("stats:{date}:{dimension}:{value}");
                    let count = match self.kv.get(&key).await {
                        Ok(Some(bytes)) => std::str::from_utf8(&bytes)
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                            .unwrap_or(0),
                        _ => 0,
                    };
                    counts.insert(value.clone(), count);
                }
            }
            out.push(day);
        }
        out
    }
}

/// The days as CSV: `date,dimension,value,count`.
pub fn csv(days: &[Day]) -> String {
    let mut out = String::from("date,dimension,value,count\n");
    for day in days {
        for (dimension, values) in &day.counts {
            for (value, count) in values {
                out += &format!("{},{dimension},{value},{count}\n", day.date);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_by_day_and_dimension_and_exports_csv() {
        let kv: Arc<dyn KvStore> = Arc::new(switchboard_sdk::services::MemoryKv::default());
        let stats = Stats::new(kv.clone());
        stats.know("tier", ["gold".to_owned()]);
        stats.record_failed("window closed!");
        // The increments run on spawned tasks; wait for them.
        let today = day_of(OffsetDateTime::now_utc());
        let key = format!("stats:{today}:failed:windowclosed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while kv.get(&key).await.unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "count not written");
            tokio::task::yield_now().await;
        }
        let days = stats.days(2).await;
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].counts["failed"]["windowclosed"], 1);
        assert_eq!(days[0].counts["tier"]["gold"], 0);
        assert_eq!(days[1].counts["failed"]["windowclosed"], 0);
        let csv = csv(&days);
        assert!(
            csv.contains(&format!("{today},failed,windowclosed,1\n")),
            "{csv}"
        );
    }
}
