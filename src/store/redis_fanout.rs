//! [`Fanout`] on Redis pub/sub: every instance subscribes to one pattern and hands what
//! arrives to its local subscribers, so a publish on any instance reaches them all.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use switchboard_sdk::services::LocalFanout;
use switchboard_sdk::{Fanout, KvError};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::RedisKv;

/// Redis-backed fan-out.
pub struct RedisFanout {
    client: redis::Client,
    channel_prefix: String,
    publisher: Arc<RedisKv>,
    local: LocalFanout,
}

impl RedisFanout {
    /// Fan-out through `url`, on channels named `{key_prefix}fanout:{topic}`.
    pub fn new(url: &str, key_prefix: &str, publisher: Arc<RedisKv>) -> Result<Self, KvError> {
        let client =
            redis::Client::open(url).map_err(|e| KvError(format!("bad redis url: {e}")))?;
        Ok(Self {
            client,
            channel_prefix: format!("{key_prefix}fanout:"),
            publisher,
            local: LocalFanout::default(),
        })
    }

    /// Listens to Redis until `shutdown`, re-subscribing after a lost connection. Messages
    /// published while the subscription is down are not seen (pub/sub keeps nothing), which
    /// is why fan-out users keep their own history for replay.
    pub async fn run(&self, shutdown: CancellationToken) {
        let pattern = format!("{}*", self.channel_prefix);
        loop {
            let listened = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.psubscribe(&pattern).await?;
                tracing::info!("listening for fan-out on redis");
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    if let Some(topic) = message
                        .get_channel_name()
                        .strip_prefix(&self.channel_prefix)
                    {
                        let _ = self
                            .local
                            .sender(topic)
                            .send(message.get_payload_bytes().to_vec());
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                result = listened => {
                    match result {
                        Ok(()) => tracing::warn!("redis fan-out subscription ended, re-subscribing"),
                        Err(err) => tracing::warn!(error = %err, "redis fan-out unavailable, retrying"),
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[async_trait]
impl Fanout for RedisFanout {
    async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), KvError> {
        self.publisher
            .publish(&format!("{}{topic}", self.channel_prefix), &payload)
            .await
    }

    fn subscribe(&self, topic: &str) -> broadcast::Receiver<Vec<u8>> {
        self.local.subscribe(topic)
    }
}
