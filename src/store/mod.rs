//! The shared key-value store handed to the pipeline and to connectors: Redis when
//! `[redis]` is configured (every instance sees the same dedupe keys, tokens, sequences),
//! memory otherwise.

mod redis_kv;

use std::sync::Arc;
use std::time::Duration;

use switchboard_sdk::KvStore;
use switchboard_sdk::services::MemoryKv;
use tokio_util::sync::CancellationToken;

pub use redis_kv::RedisKv;

use crate::config::Config;

/// The store chosen by config, and whether it is shared between instances.
pub struct SharedState {
    /// The store.
    pub kv: Arc<dyn KvStore>,
    /// True when backed by Redis.
    pub shared: bool,
    memory: Option<Arc<MemoryKv>>,
}

impl SharedState {
    /// Builds the store `config` asks for; Redis is connected lazily, so a daemon starts
    /// even while Redis is down.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        match &config.redis {
            Some(redis) => {
                let url = redis.resolve_url().map_err(|p| p.message)?;
                let kv = RedisKv::new(&url, &redis.key_prefix).map_err(|e| e.to_string())?;
                Ok(Self {
                    kv: Arc::new(kv),
                    shared: true,
                    memory: None,
                })
            }
            None => {
                let memory = Arc::new(MemoryKv::default());
                Ok(Self {
                    kv: memory.clone(),
                    shared: false,
                    memory: Some(memory),
                })
            }
        }
    }

    /// Drops expired in-memory keys every minute until `shutdown`, so memory stays bounded
    /// (Redis expires its own).
    pub async fn prune_until(&self, shutdown: CancellationToken) {
        let Some(memory) = &self.memory else { return };
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let dropped = memory.prune();
                    tracing::debug!(dropped, "pruned expired in-memory keys");
                }
            }
        }
    }
}
