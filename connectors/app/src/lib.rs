//! The app channel: a mobile app's backend posts its users' messages as signed JSON to
//! `POST /app/{id}/messages`, and agent replies go back to the backend as signed webhook
//! POSTs. Both directions sign `timestamp + "." + body` with HMAC-SHA256 and one shared key.
//! See README.md for the wire contract.

#![warn(missing_docs)]

mod config;
mod inbound;
mod transport;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::routing::post;
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::{
    BuildError, Connector, ConnectorContext, ConnectorFactory, ConnectorLimits, Delivered,
    DeliveryError, Inbound, Recipient, Reply,
};

pub use config::{
    AppConfig, DEFAULT_REPLAY_WINDOW_SECS, DEFAULT_WEBHOOK_TIMEOUT_MS, MIN_SIGNING_KEY_BYTES,
    WebhookConfig,
};
pub use inbound::{MAX_ID_CHARS, MAX_TEXT_CHARS};
pub use transport::MAX_ERROR_TEXT_CHARS;

use config::Settings;
use inbound::InboundSettings;
use transport::{ReplyTransport, WebhookTransport};

/// The channel kind, as in `[[connectors.app]]` and `/app/{id}/...`.
pub const KIND: &str = "app";
/// Header carrying the signing time, unix seconds, in both directions.
pub const TIMESTAMP_HEADER: &str = "X-Switchboard-Timestamp";
/// Header carrying lowercase hex HMAC-SHA256(key, timestamp + "." + body), in both directions.
pub const SIGNATURE_HEADER: &str = "X-Switchboard-Signature";

/// Builds app connectors from `[[connectors.app]]` tables.
pub struct AppConnectorFactory;

impl ConnectorFactory for AppConnectorFactory {
    const KIND: &'static str = KIND;
    type Config = AppConfig;

    fn id(config: &AppConfig) -> &str {
        &config.id
    }

    fn build(
        config: &AppConfig,
        context: &ConnectorContext,
    ) -> Result<Arc<dyn Connector>, BuildError> {
        let settings = config.validate().map_err(BuildError)?;
        Ok(Arc::new(AppConnector::new(
            settings,
            context,
            OffsetDateTime::now_utc,
        )))
    }
}

/// One app backend.
struct AppConnector {
    /// The configured id.
    id: String,
    /// Limits the daemon enforces.
    limits: ConnectorLimits,
    /// What the inbound handler needs.
    inbound: Arc<InboundSettings>,
    /// The backend's reply webhook.
    webhook: Arc<dyn ReplyTransport>,
}

impl AppConnector {
    /// `clock` is the time used for replay checks and outbound timestamps, so tests can
    /// replay a fixed, signed example.
    fn new(settings: Settings, context: &ConnectorContext, clock: fn() -> OffsetDateTime) -> Self {
        let inbound = Arc::new(InboundSettings {
            connector_id: settings.id.clone(),
            signing_key: settings.signing_key.clone(),
            replay_window_secs: settings.replay_window_secs,
            keep_raw: settings.keep_raw,
            clock,
        });
        let webhook = Arc::new(WebhookTransport {
            http: context.http.clone(),
            url: settings.webhook_url,
            timeout: settings.webhook_timeout,
            signing_key: settings.signing_key,
            clock,
        });
        Self {
            id: settings.id,
            limits: settings.limits,
            inbound,
            webhook,
        }
    }

    /// The transport that reaches this user. Every user is reached through the backend's
    /// webhook for now; per-device push transports will be chosen here.
    fn transport_for(&self, _recipient: &Recipient) -> &dyn ReplyTransport {
        self.webhook.as_ref()
    }
}

#[async_trait]
impl Connector for AppConnector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn limits(&self) -> &ConnectorLimits {
        &self.limits
    }

    fn routes(&self, inbound: Inbound) -> Router {
        Router::new()
            .route("/messages", post(inbound::post_message))
            .with_state((self.inbound.clone(), inbound))
    }

    async fn deliver(
        &self,
        reply: &Reply,
        recipient: &Recipient,
    ) -> Result<Delivered, DeliveryError> {
        let conversation = &recipient.conversation;
        if conversation.kind != KIND || conversation.connector_id != self.id {
            return Err(DeliveryError::Permanent {
                code: "wrong_connector".to_owned(),
                text: format!(
                    "conversation belongs to {}:{}, not {KIND}:{}",
                    conversation.kind, conversation.connector_id, self.id
                ),
            });
        }
        let transport = self.transport_for(recipient);
        let outcome = transport.send(recipient.channel_user_id(), reply).await;
        match &outcome {
            Ok(delivered) => tracing::debug!(
                connector = %self.id,
                transport = transport.name(),
                reply_id = %reply.id,
                channel_message_id = delivered.channel_message_id.as_deref().unwrap_or("-"),
                "app reply delivered"
            ),
            Err(err) => tracing::info!(
                connector = %self.id,
                transport = transport.name(),
                reply_id = %reply.id,
                retryable = err.is_retryable(),
                error = %err,
                "app reply not delivered"
            ),
        }
        outcome
    }
}
