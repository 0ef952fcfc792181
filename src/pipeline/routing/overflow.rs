//! Agent-queue backlog for overflow: the ready count from a passive declare on a channel of
//! the live broker connection, reused for a few seconds so the broker is asked at most once
//! per queue per interval whatever the message rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::broker::Broker;

/// Longest a backlog check may take before routing goes on without it.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Tells how many messages wait in a queue.
#[async_trait]
pub trait Backlog: Send + Sync + 'static {
    /// Ready messages in `queue`, at most `max_age` old; `None` when unknown (broker away).
    async fn ready(&self, queue: &str, max_age: Duration) -> Option<u32>;
}

/// No broker: the backlog is never known, so nothing overflows (the `route` command).
pub struct NoBacklog;

#[async_trait]
impl Backlog for NoBacklog {
    async fn ready(&self, _queue: &str, _max_age: Duration) -> Option<u32> {
        None
    }
}

/// The broker's view of queue backlogs.
pub struct BrokerBacklog {
    broker: Broker,
    cache: Mutex<HashMap<String, (Instant, u32)>>,
    /// The channel used for checks with its link generation; held while asking, so
    /// concurrent misses of one queue ask once.
    channel: tokio::sync::Mutex<Option<(u64, lapin::Channel)>>,
}

impl BrokerBacklog {
    /// Checks through `broker`'s live connection.
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            cache: Mutex::new(HashMap::new()),
            channel: tokio::sync::Mutex::new(None),
        }
    }

    fn cached(&self, queue: &str, max_age: Duration) -> Option<u32> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(queue)
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, ready)| *ready)
    }

    async fn ask(&self, queue: &str, max_age: Duration) -> Option<u32> {
        let live = self.broker.live()?;
        let mut slot = self.channel.lock().await;
        // Another message may have refreshed it while this one waited for the channel.
        if let Some(ready) = self.cached(queue, max_age) {
            return Some(ready);
        }
        let usable = matches!(&*slot, Some((generation, channel))
            if *generation == live.generation && channel.status().connected());
        if !usable {
            let channel = live.connection.create_channel().await.ok()?;
            *slot = Some((live.generation, channel));
        }
        let (_, channel) = slot.as_ref()?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(queue) => Some(queue.message_count()),
            Err(err) => {
                // A missing queue closes the channel; the next check opens another.
                tracing::warn!(%queue, error = %err, "cannot read the queue's backlog");
                *slot = None;
                None
            }
        }
    }
}

#[async_trait]
impl Backlog for BrokerBacklog {
    async fn ready(&self, queue: &str, max_age: Duration) -> Option<u32> {
        if let Some(ready) = self.cached(queue, max_age) {
            return Some(ready);
        }
        let asked = tokio::time::timeout(PROBE_TIMEOUT, self.ask(queue, max_age))
            .await
            .ok()
            .flatten()?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.to_owned(), (Instant::now(), asked));
        Some(asked)
    }
}
