//! The app channel: a mobile app's backend posts its users' messages as signed JSON to
//! `POST /app/{id}/messages`, and agent replies go back to the backend as signed webhook
//! POSTs. Both directions sign `timestamp + "." + body` with HMAC-SHA256 and one shared key.
//! With `[connectors.app.push]`, users who are not in the app also get the reply as a push
//! notification (FCM, APNs or JPush per device; devices registered at `POST /devices`).
//! See README.md for the wire contract.

#![warn(missing_docs)]

mod config;
mod inbound;
mod push;
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
pub use push::config::{
    ApnsConfig, DEFAULT_APNS_API_BASE, DEFAULT_ATTACHMENT_TEXT, DEFAULT_COLLAPSE_TEXT,
    DEFAULT_COLLAPSE_WINDOW_SECS, DEFAULT_DEVICE_TTL_DAYS, DEFAULT_FCM_API_BASE,
    DEFAULT_FCM_TOKEN_URI, DEFAULT_JPUSH_API_BASE, DEFAULT_MAX_DEVICES_PER_USER,
    DEFAULT_PROVIDER_TIMEOUT_MS, DEFAULT_TITLE, DEFAULT_TTL_SECS, FcmConfig, JpushConfig,
    LocaleTexts, PushConfig, QuietHoursConfig, QuietMode,
};
pub use push::devices::{MAX_TOKEN_BYTES, Platform, Provider};
pub use push::{
    APNS_PAYLOAD_LIMIT, FCM_PAYLOAD_LIMIT, FCM_SCOPE, JPUSH_PAYLOAD_LIMIT,
    PROVIDER_TOKEN_REUSE_SECS,
};
pub use transport::MAX_ERROR_TEXT_CHARS;

/// Parses an (already authenticated) `POST /messages` body into the message the pipeline
/// takes, refusing it as the webhook would. Public for the fuzz targets (fuzz/).
pub fn parse_message_body(
    body: &[u8],
    keep_raw: bool,
) -> Result<switchboard_sdk::InboundMessage, switchboard_sdk::Rejection> {
    inbound::parse_message(body, keep_raw).map_err(Into::into)
}

use config::Settings;
use inbound::InboundSettings;
use push::devices::{DevicesState, post_devices};
use push::{Clock, Pusher};
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
        )?))
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
    /// Push delivery and the device registry, when configured.
    push: Option<Arc<Pusher>>,
    /// What `POST /devices` needs, when push is configured.
    devices: Option<Arc<DevicesState>>,
}

impl AppConnector {
    /// `clock` is the time used for replay checks and outbound timestamps, so tests can
    /// replay a fixed, signed example.
    fn new(
        settings: Settings,
        context: &ConnectorContext,
        clock: fn() -> OffsetDateTime,
    ) -> Result<Self, BuildError> {
        Self::with_push_clock(settings, context, clock, Arc::new(clock))
    }

    /// Like [`AppConnector::new`], with a separate clock for push (token lifetimes, quiet
    /// hours, collapse windows) that tests can turn forward.
    fn with_push_clock(
        settings: Settings,
        context: &ConnectorContext,
        clock: fn() -> OffsetDateTime,
        push_clock: Clock,
    ) -> Result<Self, BuildError> {
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
        let push = match settings.push {
            Some(push) => Some(Arc::new(Pusher::new(
                &settings.id,
                push,
                context,
                push_clock.clone(),
            )?)),
            None => None,
        };
        let devices = push.as_ref().map(|push| {
            Arc::new(DevicesState {
                inbound: inbound.clone(),
                registry: push.registry(),
                providers: push.configured(),
                clock: push_clock.clone(),
            })
        });
        Ok(Self {
            id: settings.id,
            limits: settings.limits,
            inbound,
            webhook,
            push,
            devices,
        })
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
        let messages = Router::new()
            .route("/messages", post(inbound::post_message))
            .with_state((self.inbound.clone(), inbound));
        match &self.devices {
            Some(devices) => messages.merge(
                Router::new()
                    .route("/devices", post(post_devices))
                    .with_state(devices.clone()),
            ),
            None => messages,
        }
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
        let user_id = recipient.channel_user_id();
        let (outcome, transport) = match &self.push {
            Some(push) => (
                push.deliver(user_id, reply, self.webhook.as_ref()).await,
                "push",
            ),
            None => (self.webhook.send(user_id, reply).await, self.webhook.name()),
        };
        match &outcome {
            Ok(delivered) => tracing::debug!(
                connector = %self.id,
                transport,
                reply_id = %reply.id,
                channel_message_id = delivered.channel_message_id.as_deref().unwrap_or("-"),
                "app reply delivered"
            ),
            Err(err) => tracing::info!(
                connector = %self.id,
                transport,
                reply_id = %reply.id,
                retryable = err.is_retryable(),
                error = %err,
                "app reply not delivered"
            ),
        }
        outcome
    }
}
