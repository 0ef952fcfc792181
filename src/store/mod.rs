//! The shared key-value store handed to the pipeline and to connectors: Redis when
//! `[redis]` is configured (every instance sees the same dedupe keys, tokens, sequences),
//! memory otherwise.

mod fallback;
mod redis_fanout;
mod redis_kv;

use std::sync::Arc;
use std::time::Duration;

use switchboard_sdk::services::{LocalFanout, MemoryKv};
use switchboard_sdk::{Fanout, KvStore};
use tokio_util::sync::CancellationToken;

pub use fallback::FallbackKv;
pub use redis_fanout::RedisFanout;
pub use redis_kv::RedisKv;

use crate::config::Config;
use crate::metrics::Metrics;

/// The store chosen by config, and whether it is shared between instances.
pub struct SharedState {
    /// The store.
    pub kv: Arc<dyn KvStore>,
    /// Fan-out to every instance.
    pub fanout: Arc<dyn Fanout>,
    /// True when backed by Redis.
    pub shared: bool,
    memory: Option<Arc<MemoryKv>>,
    redis_fanout: Option<Arc<RedisFanout>>,
    metrics: Arc<Metrics>,
}

impl SharedState {
    /// Builds the store `config` asks for; Redis is connected lazily, so a daemon starts
    /// even while Redis is down, and falls back to memory while it fails.
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> Result<Self, String> {
        match &config.redis {
            Some(redis) => {
                let url = redis.resolve_url().map_err(|p| p.message)?;
                let redis_kv =
                    Arc::new(RedisKv::new(&url, &redis.key_prefix).map_err(|e| e.to_string())?);
                let fanout = Arc::new(
                    RedisFanout::new(&url, &redis.key_prefix, redis_kv.clone())
                        .map_err(|e| e.to_string())?,
                );
                let memory = Arc::new(MemoryKv::default());
                Ok(Self {
                    kv: Arc::new(FallbackKv::new(redis_kv, memory.clone(), metrics.clone())),
                    fanout: fanout.clone(),
                    shared: true,
                    memory: Some(memory),
                    redis_fanout: Some(fanout),
                    metrics,
                })
            }
            None => {
                let memory = Arc::new(MemoryKv::default());
                Ok(Self {
                    kv: memory.clone(),
                    fanout: Arc::new(LocalFanout::default()),
                    shared: false,
                    memory: Some(memory),
                    redis_fanout: None,
                    metrics,
                })
            }
        }
    }

    /// Background work until `shutdown`: the Redis fan-out subscription, and pruning expired
    /// in-memory keys (the store itself, or Redis's fallback) every minute so memory stays
    /// bounded (Redis expires its own). The key count after each prune is the
    /// `memory_store_keys` gauge: without Redis it is what the dedupe windows cost.
    pub async fn run(&self, shutdown: CancellationToken) {
        let prune = async {
            let Some(memory) = &self.memory else { return };
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        let dropped = memory.prune();
                        let held = memory.len();
                        self.metrics.memory_store_keys.set(held as i64);
                        tracing::debug!(dropped, held, "pruned expired in-memory keys");
                    }
                }
            }
        };
        match &self.redis_fanout {
            Some(fanout) => {
                tokio::join!(fanout.run(shutdown.clone()), prune);
            }
            None => prune.await,
        }
    }
}
