//! Which processes are running, as the shared store knows it. A process is one incarnation
//! of its instance id; it keeps `alive:{instance}` set to its incarnation while it runs, so
//! a claim another process left behind can be recognised as orphaned (its holder was
//! killed) and taken over instead of waited out.

use std::sync::Arc;
use std::time::Duration;

use switchboard_sdk::{KvError, KvStore};
use tokio_util::sync::CancellationToken;

/// How long a heartbeat outlives its last refresh: how soon other instances take over the
/// claims of a killed instance.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(15);

/// How often the heartbeat is refreshed; a third of its lifetime, so one slow or failed
/// refresh does not make a running process look dead.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);

/// This process among the lifetimes of its instance id (a ULID, 26 characters): a claim
/// of the same instance made by another incarnation is one a previous life left behind
/// when it died (SIGKILL, crash).
pub fn incarnation() -> &'static str {
    static INCARNATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INCARNATION.get_or_init(|| ulid::Ulid::new().to_string())
}

/// The key holding the incarnation of `instance` that is running.
pub fn heartbeat_key(instance: &str) -> String {
    format!("alive:{instance}")
}

/// Whether `incarnation` of `instance` has beaten within [`HEARTBEAT_TTL`]. No heartbeat,
/// or another incarnation's, means that process is gone.
pub async fn is_alive(
    kv: &dyn KvStore,
    instance: &str,
    incarnation: &str,
) -> Result<bool, KvError> {
    Ok(kv
        .get(&heartbeat_key(instance))
        .await?
        .is_some_and(|beating| beating == incarnation.as_bytes()))
}

/// This process's heartbeat.
pub struct Heartbeat {
    kv: Arc<dyn KvStore>,
    key: String,
    incarnation: String,
}

impl Heartbeat {
    /// The heartbeat of `incarnation` of `instance` in `kv`.
    pub fn new(kv: Arc<dyn KvStore>, instance: &str, incarnation: &str) -> Self {
        Self {
            kv,
            key: heartbeat_key(instance),
            incarnation: incarnation.to_owned(),
        }
    }

    /// Says "running" for the next [`HEARTBEAT_TTL`].
    pub async fn beat(&self) {
        if let Err(err) = self
            .kv
            .set(&self.key, self.incarnation.as_bytes(), Some(HEARTBEAT_TTL))
            .await
        {
            tracing::warn!(error = %err, "cannot refresh this instance's heartbeat");
        }
    }

    /// Beats now and every [`HEARTBEAT_PERIOD`] until `shutdown`, then withdraws the
    /// heartbeat: after a clean stop nothing of this process is in flight any more, so
    /// whatever claim it still holds may be taken over at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.beat().await,
            }
        }
        let _ = self
            .kv
            .delete_if_equals(&self.key, self.incarnation.as_bytes())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_sdk::services::MemoryKv;

    #[tokio::test]
    async fn a_process_is_alive_while_it_beats_and_gone_after_a_clean_stop() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        assert!(!is_alive(kv.as_ref(), "a", "1").await.unwrap());
        let heartbeat = Heartbeat::new(kv.clone(), "a", "1");
        heartbeat.beat().await;
        assert!(is_alive(kv.as_ref(), "a", "1").await.unwrap());
        assert!(
            !is_alive(kv.as_ref(), "a", "2").await.unwrap(),
            "another incarnation of the same instance"
        );
        assert!(!is_alive(kv.as_ref(), "ab", "1").await.unwrap());

        let shutdown = CancellationToken::new();
        shutdown.cancel();
        heartbeat.run(shutdown).await;
        assert!(!is_alive(kv.as_ref(), "a", "1").await.unwrap());
    }

    #[tokio::test]
    async fn a_clean_stop_leaves_a_newer_incarnation_beating() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let old = Heartbeat::new(kv.clone(), "a", "1");
        Heartbeat::new(kv.clone(), "a", "2").beat().await;
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        old.run(shutdown).await;
        assert!(is_alive(kv.as_ref(), "a", "2").await.unwrap());
    }
}
