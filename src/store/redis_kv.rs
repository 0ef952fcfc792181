//! [`KvStore`] on Redis, through one multiplexed connection per process.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use switchboard_sdk::{KvError, KvStore};
use tokio::sync::OnceCell;

/// Deletes the key only while it holds the expected value (lock release).
const DELETE_IF_EQUALS: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Redis-backed store. The connection is made on first use and re-made by the manager after
/// failures, so Redis being down at start does not stop the daemon.
pub struct RedisKv {
    client: redis::Client,
    prefix: String,
    connection: OnceCell<ConnectionManager>,
}

impl RedisKv {
    /// A store on `url`, writing every key under `prefix`.
    pub fn new(url: &str, prefix: &str) -> Result<Self, KvError> {
        let client =
            redis::Client::open(url).map_err(|e| KvError(format!("bad redis url: {e}")))?;
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
            connection: OnceCell::new(),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, KvError> {
        let manager = self
            .connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(Duration::from_secs(2))
                    .set_number_of_retries(1);
                self.client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(|e| KvError(format!("redis unreachable: {e}")))
            })
            .await?;
        Ok(manager.clone())
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn err(e: redis::RedisError) -> KvError {
    KvError(format!("redis: {e}"))
}

fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl RedisKv {
    /// Publishes on a pub/sub channel (not prefixed: the caller names it whole).
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), KvError> {
        let mut conn = self.conn().await?;
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(err)
    }
}

#[async_trait]
impl KvStore for RedisKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut conn = self.conn().await?;
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(err)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let mut conn = self.conn().await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(millis(ttl));
        }
        cmd.query_async::<()>(&mut conn).await.map_err(err)
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, KvError> {
        let mut conn = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(set.is_some())
    }

    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, KvError> {
        let mut conn = self.conn().await?;
        let deleted: i64 = redis::cmd("EVAL")
            .arg(DELETE_IF_EQUALS)
            .arg(1)
            .arg(self.key(key))
            .arg(expected)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(deleted == 1)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let mut conn = self.conn().await?;
        redis::cmd("DEL")
            .arg(self.key(key))
            .query_async::<()>(&mut conn)
            .await
            .map_err(err)
    }

    async fn increment(&self, key: &str) -> Result<u64, KvError> {
        let mut conn = self.conn().await?;
        redis::cmd("INCR")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(err)
    }
}
