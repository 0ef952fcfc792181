//! How a connector hands a message to the pipeline and learns that it is safe.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::content::Content;
use crate::envelope::ChannelRef;
use crate::event::Event;
use crate::webhook::RejectReason;

/// A channel-neutral message, as a connector parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// The user's id in the channel.
    pub channel_user_id: String,
    /// Name to show an agent, if the channel gives one.
    pub display_name: Option<String>,
    /// Phone number (E.164), if the channel gives one.
    pub phone: Option<String>,
    /// Customer id, if the channel already knows it (an app backend does).
    pub customer_id: Option<String>,
    /// The customer's tier, when a party the channel trusts vouches for it (a site token
    /// signed by the site's backend). The pipeline uses it instead of its own lookup when
    /// it names a tier in `tiers.names`.
    pub tier: Option<String>,
    /// What the message says.
    pub content: Content,
    /// The channel's idea of "the same message again" (a message id, or a hash of the
    /// fields the channel resends unchanged); the pipeline scopes it to the conversation.
    pub dedupe_key: String,
    /// The original payload, kept in the envelope when raw capture is enabled.
    pub raw: Option<Value>,
}

impl InboundMessage {
    /// A message with only the required parts.
    pub fn new(
        channel_user_id: impl Into<String>,
        content: Content,
        dedupe_key: impl Into<String>,
    ) -> Self {
        Self {
            channel_user_id: channel_user_id.into(),
            display_name: None,
            phone: None,
            customer_id: None,
            tier: None,
            content,
            dedupe_key: dedupe_key.into(),
            raw: None,
        }
    }
}

/// The pipeline's word that a message is safe: confirmed by the broker or durably spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The envelope id (the first one, when this is a duplicate).
    pub envelope_id: String,
    /// True when the message had been accepted before and was not published again.
    pub duplicate: bool,
}

/// Why the pipeline did not accept a message; the channel should be told to retry later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The user (or connector) sends faster than configured.
    #[error("rate limited")]
    RateLimited {
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// Neither the broker nor the spool could take the message (spool full, disk failure).
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

/// The pipeline side of [`Inbound`]; implemented by the daemon, and by test doubles.
#[async_trait]
pub trait InboundSink: Send + Sync + 'static {
    /// Takes one message from `channel`; returns once it is safe or refused.
    async fn accept(
        &self,
        channel: &ChannelRef,
        message: InboundMessage,
    ) -> Result<Accepted, AcceptError>;

    /// Publishes `event` to `switchboard.events` (routing key = its kind) with the same
    /// guarantee as `accept`: confirmed or spooled before it returns `Ok`. For what is not a
    /// conversation message: delivery receipts, location reports, job results, call events.
    async fn report(&self, channel: &ChannelRef, event: Event) -> Result<(), AcceptError>;

    /// Counts a refusal that no HTTP answer carries (inside a WebSocket: an oversize frame,
    /// a flood, an idle timeout), in the same metric as refused requests. Refused requests
    /// need not come here: their [`crate::Rejection`] is counted by the daemon.
    fn refused(&self, channel: &ChannelRef, reason: RejectReason) {
        let _ = (channel, reason);
    }
}

/// The handle a connector's routes get: accepts messages on behalf of that connector.
#[derive(Clone)]
pub struct Inbound {
    sink: Arc<dyn InboundSink>,
    channel: ChannelRef,
}

impl Inbound {
    /// A handle that accepts on behalf of `channel`.
    pub fn new(sink: Arc<dyn InboundSink>, channel: ChannelRef) -> Self {
        Self { sink, channel }
    }

    /// The channel this handle speaks for.
    pub fn channel(&self) -> &ChannelRef {
        &self.channel
    }

    /// Hands `message` to the pipeline. Answer the channel only after this returns `Ok`.
    pub async fn accept(&self, message: InboundMessage) -> Result<Accepted, AcceptError> {
        self.sink.accept(&self.channel, message).await
    }

    /// Counts a refusal on behalf of this channel; see [`InboundSink::refused`].
    pub fn refused(&self, reason: RejectReason) {
        self.sink.refused(&self.channel, reason);
    }

    /// Publishes an event on behalf of this channel; see [`InboundSink::report`].
    pub async fn report(&self, event: Event) -> Result<(), AcceptError> {
        self.sink.report(&self.channel, event).await
    }
}
