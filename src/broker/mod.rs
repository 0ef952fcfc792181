//! The RabbitMQ link: one supervisor owns the AMQP connection, declares the topology,
//! reconnects with capped jittered backoff, and lends the live connection to publishers and
//! consumers through a watch channel.

pub mod signing;
mod supervisor;
pub mod tls;
pub mod topic;
mod topology;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use std::time::Duration;

use lapin::PublisherConfirm;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::watch;

pub use signing::{EnvelopeSigner, SigningKey};
pub use supervisor::Broker;
pub use topology::Topology;

/// A message ready for the broker (or, when the broker is away, for the spool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Exchange to publish to.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// AMQP `message_id` (envelope or event id).
    pub message_id: String,
    /// AMQP priority.
    pub priority: Option<u8>,
    /// String headers (`x-schema`, `x-channel`, `x-conversation-id`, ...).
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: String,
    /// Whether an unroutable publish should come back to us.
    pub mandatory: bool,
}

/// The state of the link, as publishers and consumers see it.
#[derive(Clone)]
pub enum Link {
    /// Not connected; the last error, if any.
    Down(Option<String>),
    /// Connected and the topology declared.
    Up(Arc<LiveLink>),
}

/// A live connection with its confirm-mode publishing channel.
pub struct LiveLink {
    /// The connection, for consumers to open their own channels.
    pub connection: Connection,
    /// The channel publishes go through, in confirm mode.
    pub publisher: Channel,
    /// Increases with every new connection.
    pub generation: u64,
    /// Signs every publish when `[broker.signing]` is configured; swapped on reload.
    pub signer: Arc<ArcSwapOption<EnvelopeSigner>>,
}

/// A publish the broker did not take.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// No connection right now.
    #[error("broker not connected")]
    NotConnected,
    /// The publish could not be written to the channel.
    #[error("publish failed: {0}")]
    Failed(String),
    /// The broker refused it.
    #[error("broker nacked the publish")]
    Nacked,
    /// No confirm within the deadline (blocked connection, alarm, lost link).
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
}

impl LiveLink {
    /// Writes `message` to the channel; the returned future resolves with the broker's
    /// confirm. Callers publish many before awaiting any, so confirms overlap.
    pub async fn publish(
        &self,
        message: &OutgoingMessage,
    ) -> Result<PublisherConfirm, PublishError> {
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert(
                name.as_str().into(),
                AMQPValue::LongString(value.as_str().into()),
            );
        }
        if let Some(signer) = self.signer.load().as_ref() {
            for (name, value) in signer.headers(message.body.as_bytes()) {
                headers.insert(name.into(), AMQPValue::LongString(value.into()));
            }
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message.message_id.as_str().into())
            .with_timestamp(time::OffsetDateTime::now_utc().unix_timestamp() as u64)
            .with_headers(headers);
        if let Some(priority) = message.priority {
            properties = properties.with_priority(priority);
        }
        self.publisher
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: message.mandatory,
                    ..BasicPublishOptions::default()
                },
                message.body.as_bytes(),
                properties,
            )
            .await
            .map_err(|e| PublishError::Failed(e.to_string()))
    }
}

/// Waits for a publisher confirm, up to `deadline`.
pub async fn confirmed(confirm: PublisherConfirm, deadline: Duration) -> Result<(), PublishError> {
    match tokio::time::timeout(deadline, confirm).await {
        Err(_) => Err(PublishError::Timeout(deadline)),
        Ok(Err(e)) => Err(PublishError::Failed(e.to_string())),
        Ok(Ok(confirmation)) if confirmation.is_nack() => Err(PublishError::Nacked),
        Ok(Ok(confirmation)) => {
            if let Some(returned) = confirmation.take_message() {
                // Inbound publishes go through an alternate exchange and events are not
                // mandatory, so a return means the topology was changed under us.
                tracing::warn!(
                    exchange = %returned.delivery.exchange,
                    routing_key = %returned.delivery.routing_key,
                    reply = %returned.reply_text,
                    "publish returned as unroutable"
                );
            }
            Ok(())
        }
    }
}

/// Waits until the link is up, or `None` when the watch closes.
pub async fn wait_up(links: &mut watch::Receiver<Link>) -> Option<Arc<LiveLink>> {
    loop {
        if let Link::Up(live) = &*links.borrow_and_update() {
            return Some(live.clone());
        }
        links.changed().await.ok()?;
    }
}
