//! Shared services the daemon hands a connector at build time. A connector never opens its
//! own broker or Redis connection: one pool serves the process, and tests hand in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

/// A key-value store failure (Redis unreachable, ...).
#[derive(Debug, Clone, thiserror::Error)]
#[error("key-value store: {0}")]
pub struct KvError(pub String);

/// A key-value store with expiry and the atomic operations shared state needs. Redis when
/// configured (shared by every instance), memory otherwise.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// The value at `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;

    /// Sets `key`, with an expiry when `ttl` is given.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError>;

    /// Sets `key` only if absent; true when this call set it. The building block for
    /// dedupe markers and short locks.
    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, KvError>;

    /// Deletes `key` only while it still holds `expected` (releasing a lock we own).
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, KvError>;

    /// Deletes `key`.
    async fn delete(&self, key: &str) -> Result<(), KvError>;

    /// Adds 1 to the integer at `key` (0 when absent) and returns the new value.
    async fn increment(&self, key: &str) -> Result<u64, KvError>;
}

/// Delivers a message to the subscribers of a topic on every instance, this one included:
/// how a web chat reply consumed by one instance reaches the socket held by another. Redis
/// pub/sub when configured, in-process otherwise. At most once: a subscriber that is not
/// listening when a message is published does not get it, so callers keep their own
/// durable copy (history) for replay.
#[async_trait]
pub trait Fanout: Send + Sync + 'static {
    /// Sends `payload` to every current subscriber of `topic`.
    async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), KvError>;

    /// Receives what is published to `topic` from now on.
    fn subscribe(&self, topic: &str) -> broadcast::Receiver<Vec<u8>>;
}

/// In-process [`Fanout`]: one broadcast channel per topic.
#[derive(Debug, Default)]
pub struct LocalFanout {
    topics: Mutex<HashMap<String, broadcast::Sender<Vec<u8>>>>,
}

/// Messages a slow subscriber may fall behind by before it misses some.
pub const FANOUT_BUFFER: usize = 1024;

impl LocalFanout {
    /// The sender of `topic`, created on first use.
    pub fn sender(&self, topic: &str) -> broadcast::Sender<Vec<u8>> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        // Topics nobody listens to any more are dropped on the way, so the map stays bounded.
        topics.retain(|_, sender| sender.receiver_count() > 0);
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(FANOUT_BUFFER).0)
            .clone()
    }
}

#[async_trait]
impl Fanout for LocalFanout {
    async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), KvError> {
        let sender = self
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned();
        if let Some(sender) = sender {
            // No receiver is not an error: nobody on this instance holds that socket.
            let _ = sender.send(payload);
        }
        Ok(())
    }

    fn subscribe(&self, topic: &str) -> broadcast::Receiver<Vec<u8>> {
        self.sender(topic).subscribe()
    }
}

/// What every connector may use.
#[derive(Clone)]
pub struct ConnectorContext {
    /// Shared key-value store (Redis or memory).
    pub kv: Arc<dyn KvStore>,
    /// Fan-out to every instance (Redis pub/sub or in-process).
    pub fanout: Arc<dyn Fanout>,
    /// An HTTP client with the daemon's timeouts, for channel APIs.
    pub http: reqwest::Client,
    /// This instance's name, for logs and locks.
    pub instance_id: String,
}

impl ConnectorContext {
    /// A context with in-memory services, for tests and `check-config`.
    pub fn in_memory() -> Self {
        Self {
            kv: Arc::new(MemoryKv::default()),
            fanout: Arc::new(LocalFanout::default()),
            http: reqwest::Client::new(),
            instance_id: "local".to_owned(),
        }
    }
}

#[derive(Debug)]
struct Slot {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl Slot {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// An in-process [`KvStore`]; expired keys are dropped lazily and by [`MemoryKv::prune`].
#[derive(Debug, Default)]
pub struct MemoryKv {
    slots: Mutex<HashMap<String, Slot>>,
}

impl MemoryKv {
    /// Drops expired keys; the daemon calls this periodically so memory stays bounded.
    pub fn prune(&self) -> usize {
        let now = Instant::now();
        let mut slots = self.lock();
        let before = slots.len();
        slots.retain(|_, slot| slot.live(now));
        before - slots.len()
    }

    /// Number of keys held, expired or not.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding the lock cannot leave a half-written map behind (every
        // critical section is a single insert or remove), so a poisoned lock is still usable.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .get(key)
            .filter(|slot| slot.live(now))
            .map(|slot| slot.value.clone()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let expires_at = ttl.map(|ttl| Instant::now() + ttl);
        self.lock().insert(
            key.to_owned(),
            Slot {
                value: value.to_vec(),
                expires_at,
            },
        );
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, KvError> {
        let now = Instant::now();
        let mut slots = self.lock();
        if slots.get(key).is_some_and(|slot| slot.live(now)) {
            return Ok(false);
        }
        slots.insert(
            key.to_owned(),
            Slot {
                value: value.to_vec(),
                expires_at: Some(now + ttl),
            },
        );
        Ok(true)
    }

    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, KvError> {
        let now = Instant::now();
        let mut slots = self.lock();
        let owned = slots
            .get(key)
            .is_some_and(|slot| slot.live(now) && slot.value == expected);
        if owned {
            slots.remove(key);
        }
        Ok(owned)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.lock().remove(key);
        Ok(())
    }

    async fn increment(&self, key: &str) -> Result<u64, KvError> {
        let now = Instant::now();
        let mut slots = self.lock();
        let current = slots
            .get(key)
            .filter(|slot| slot.live(now))
            .map(|slot| {
                std::str::from_utf8(&slot.value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| KvError(format!("value at {key} is not an integer")))
            })
            .transpose()?
            .unwrap_or(0);
        let next = current + 1;
        let expires_at = slots.get(key).and_then(|slot| slot.expires_at);
        slots.insert(
            key.to_owned(),
            Slot {
                value: next.to_string().into_bytes(),
                expires_at,
            },
        );
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_if_absent_is_a_lock_and_expiry_frees_it() {
        let kv = MemoryKv::default();
        assert!(
            kv.set_if_absent("k", b"a", Duration::from_millis(1))
                .await
                .unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            kv.set_if_absent("k", b"b", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            !kv.set_if_absent("k", b"c", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(!kv.delete_if_equals("k", b"c").await.unwrap());
        assert!(kv.delete_if_equals("k", b"b").await.unwrap());
        assert_eq!(kv.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn increment_counts_from_one_and_refuses_non_integers() {
        let kv = MemoryKv::default();
        assert_eq!(kv.increment("n").await.unwrap(), 1);
        assert_eq!(kv.increment("n").await.unwrap(), 2);
        kv.set("s", b"x", None).await.unwrap();
        assert!(kv.increment("s").await.is_err());
    }

    #[tokio::test]
    async fn local_fanout_reaches_current_subscribers_only() {
        let fanout = LocalFanout::default();
        fanout.publish("t", b"before".to_vec()).await.unwrap();
        let mut a = fanout.subscribe("t");
        let mut b = fanout.subscribe("t");
        let mut other = fanout.subscribe("u");
        fanout.publish("t", b"hello".to_vec()).await.unwrap();
        assert_eq!(a.recv().await.unwrap(), b"hello");
        assert_eq!(b.recv().await.unwrap(), b"hello");
        assert!(other.try_recv().is_err(), "other topics hear nothing");
    }

    #[tokio::test]
    async fn prune_drops_only_expired_keys() {
        let kv = MemoryKv::default();
        kv.set("old", b"1", Some(Duration::from_millis(1)))
            .await
            .unwrap();
        kv.set("new", b"1", None).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.prune(), 1);
        assert_eq!(kv.len(), 1);
    }
}
