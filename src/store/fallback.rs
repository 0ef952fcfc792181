//! Shared state that degrades instead of failing: while Redis errors, every operation is
//! served from this instance's memory (dedupe, sequences, tokens become per-instance), with a
//! warning when it starts, a counter per fallen-back operation and a gauge while degraded.
//! Redis is probed again at most once a second and used as soon as it answers.
//!
//! Keys written locally during an outage are still consulted after it, so a channel retry of
//! a message accepted while Redis was down is recognised once Redis is back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchboard_sdk::services::MemoryKv;
use switchboard_sdk::{KvError, KvStore};

use crate::metrics::{Metrics, OutcomeLabels};

/// How long to stay on local state after a Redis failure before probing Redis again: short,
/// so instances share state again soon, and long enough that a dead Redis costs one failed
/// call per second rather than one per request.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Health {
    /// Set while degraded: when the next probe of Redis is due.
    retry_at: Option<Instant>,
}

/// A [`KvStore`] on `primary` (Redis) falling back to memory.
pub struct FallbackKv {
    primary: Arc<dyn KvStore>,
    local: Arc<MemoryKv>,
    metrics: Arc<Metrics>,
    health: Mutex<Health>,
}

impl FallbackKv {
    /// `primary` with `local` as the fallback.
    pub fn new(primary: Arc<dyn KvStore>, local: Arc<MemoryKv>, metrics: Arc<Metrics>) -> Self {
        Self {
            primary,
            local,
            metrics,
            health: Mutex::new(Health::default()),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this call should try Redis: always while healthy; while degraded, only the
    /// one call that takes the due probe.
    fn try_primary(&self) -> bool {
        let mut health = self.health();
        match health.retry_at {
            None => true,
            Some(at) if Instant::now() >= at => {
                health.retry_at = Some(Instant::now() + PROBE_INTERVAL);
                true
            }
            Some(_) => false,
        }
    }

    fn succeeded(&self) {
        let mut health = self.health();
        if health.retry_at.take().is_some() {
            self.metrics.shared_state_degraded.set(0);
            tracing::warn!("redis answers again; shared state is shared again");
        }
    }

    fn failed(&self, op: &str, err: &KvError) {
        {
            let mut health = self.health();
            if health.retry_at.is_none() {
                self.metrics.shared_state_degraded.set(1);
                tracing::warn!(op, error = %err,
                    "redis unavailable; dedupe, sequences and tokens fall back to this instance's memory");
            }
            health.retry_at = Some(Instant::now() + PROBE_INTERVAL);
        }
        self.count_fallback();
    }

    fn count_fallback(&self) {
        self.metrics
            .kv_errors
            .get_or_create(&OutcomeLabels {
                outcome: "redis_fallback".into(),
            })
            .inc();
    }
}

#[async_trait]
impl KvStore for FallbackKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        if self.try_primary() {
            match self.primary.get(key).await {
                Ok(Some(value)) => {
                    self.succeeded();
                    return Ok(Some(value));
                }
                Ok(None) => self.succeeded(),
                Err(err) => self.failed("get", &err),
            }
        } else {
            self.count_fallback();
        }
        self.local.get(key).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        if self.try_primary() {
            match self.primary.set(key, value, ttl).await {
                Ok(()) => {
                    self.succeeded();
                    // A value written locally during an outage must not shadow this one.
                    return self.local.delete(key).await;
                }
                Err(err) => self.failed("set", &err),
            }
        } else {
            self.count_fallback();
        }
        self.local.set(key, value, ttl).await
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, KvError> {
        // Held locally since an outage: taken, even though Redis never saw it.
        if self.local.get(key).await?.is_some() {
            return Ok(false);
        }
        if self.try_primary() {
            match self.primary.set_if_absent(key, value, ttl).await {
                Ok(set) => {
                    self.succeeded();
                    return Ok(set);
                }
                Err(err) => self.failed("set_if_absent", &err),
            }
        } else {
            self.count_fallback();
        }
        self.local.set_if_absent(key, value, ttl).await
    }

    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, KvError> {
        let local = self.local.delete_if_equals(key, expected).await?;
        if self.try_primary() {
            match self.primary.delete_if_equals(key, expected).await {
                Ok(deleted) => {
                    self.succeeded();
                    return Ok(deleted || local);
                }
                Err(err) => self.failed("delete_if_equals", &err),
            }
        } else {
            self.count_fallback();
        }
        Ok(local)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.local.delete(key).await?;
        if self.try_primary() {
            match self.primary.delete(key).await {
                Ok(()) => self.succeeded(),
                Err(err) => self.failed("delete", &err),
            }
        } else {
            self.count_fallback();
        }
        Ok(())
    }

    async fn increment(&self, key: &str) -> Result<u64, KvError> {
        if self.try_primary() {
            match self.primary.increment(key).await {
                Ok(value) => {
                    self.succeeded();
                    return Ok(value);
                }
                Err(err) => self.failed("increment", &err),
            }
        } else {
            self.count_fallback();
        }
        self.local.increment(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that fails while `down` is set.
    #[derive(Default)]
    struct Flaky {
        down: std::sync::atomic::AtomicBool,
        inner: MemoryKv,
    }

    impl Flaky {
        fn check(&self) -> Result<(), KvError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                Err(KvError("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl KvStore for Flaky {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            self.check()?;
            self.inner.get(key).await
        }
        async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
            self.check()?;
            self.inner.set(key, value, ttl).await
        }
        async fn set_if_absent(
            &self,
            key: &str,
            value: &[u8],
            ttl: Duration,
        ) -> Result<bool, KvError> {
            self.check()?;
            self.inner.set_if_absent(key, value, ttl).await
        }
        async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, KvError> {
            self.check()?;
            self.inner.delete_if_equals(key, expected).await
        }
        async fn delete(&self, key: &str) -> Result<(), KvError> {
            self.check()?;
            self.inner.delete(key).await
        }
        async fn increment(&self, key: &str) -> Result<u64, KvError> {
            self.check()?;
            self.inner.increment(key).await
        }
    }

    #[tokio::test]
    async fn an_outage_is_served_locally_counted_and_remembered_after_it() {
        let flaky = Arc::new(Flaky::default());
        let metrics = Arc::new(Metrics::default());
        let kv = FallbackKv::new(flaky.clone(), Arc::default(), metrics.clone());
        assert!(
            kv.set_if_absent("a", b"1", Duration::from_secs(60))
                .await
                .unwrap()
        );

        flaky.down.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(
            kv.set_if_absent("b", b"1", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            !kv.set_if_absent("b", b"2", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert_eq!(kv.increment("seq").await.unwrap(), 1);
        assert_eq!(metrics.shared_state_degraded.get(), 1);
        assert!(metrics.render().contains("redis_fallback"));

        flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
        kv.health().retry_at = Some(Instant::now());
        assert!(
            !kv.set_if_absent("b", b"3", Duration::from_secs(60))
                .await
                .unwrap(),
            "the key taken during the outage is still taken"
        );
        assert_eq!(kv.get("b").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert!(
            !kv.set_if_absent("a", b"2", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert_eq!(metrics.shared_state_degraded.get(), 0);
    }
}
