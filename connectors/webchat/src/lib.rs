//! The web chat channel: an embeddable widget (`GET /webchat/{id}/widget.js`) that talks to
//! Switchboard over a WebSocket (`GET /webchat/{id}/ws`) in a small, versioned JSON frame
//! protocol. Visitor messages are acked only once the pipeline has them; agent replies are
//! numbered per conversation, kept in the shared store for replay, and reach the visitor's
//! socket on whichever instance holds it. See README.md for the protocol.

#![warn(missing_docs)]

mod assets;
mod config;
mod history;
mod hub;
mod identity;
mod protocol;
mod socket;
mod web;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::time::format_description::well_known::Rfc3339;
use switchboard_sdk::{
    BuildError, Connector, ConnectorContext, ConnectorFactory, ConnectorLimits, Content, Delivered,
    DeliveryError, Fanout, Inbound, KvStore, Recipient, Reply,
};
use tokio_util::sync::CancellationToken;

pub use config::{
    HistoryConfig, MIN_SITE_KEY_BYTES, MIN_VISITOR_SECRET_BYTES, MediaConfig, SocketConfig,
    WebchatConfig,
};
pub use identity::{IdentityError, MAX_TOKEN_BYTES, make_site_token};
pub use protocol::{ClientContent, ClientFrame, PROTOCOL_VERSION, close, parse_client_frame};

use config::Settings;
use history::History;
use hub::{FanoutMessage, Hub, Outgoing};
use identity::Signer;
use protocol::{AgentMessage, ServerFrame};

/// The channel kind, as in `[[connectors.webchat]]` and `/webchat/{id}/...`.
pub const KIND: &str = "webchat";

/// Builds web chat connectors from `[[connectors.webchat]]` tables.
pub struct WebchatFactory;

impl ConnectorFactory for WebchatFactory {
    const KIND: &'static str = KIND;
    type Config = WebchatConfig;

    fn id(config: &WebchatConfig) -> &str {
        &config.id
    }

    fn build(
        config: &WebchatConfig,
        context: &ConnectorContext,
    ) -> Result<Arc<dyn Connector>, BuildError> {
        let settings = config.validate().map_err(BuildError)?;
        Ok(Arc::new(WebchatConnector::new(settings, context)))
    }
}

/// What every handler and socket of one connector shares.
pub(crate) struct Shared {
    /// The validated config.
    pub settings: Settings,
    /// Visitor ids and site tokens.
    pub signer: Signer,
    /// Stored agent messages.
    pub history: History,
    /// The shared store (presence, media).
    pub kv: Arc<dyn KvStore>,
    /// Fan-out to every instance.
    pub fanout: Arc<dyn Fanout>,
    /// Sockets on this instance.
    pub hub: Arc<Hub>,
    /// This instance's name, the value of presence keys.
    pub instance_id: String,
    /// New sockets per client address.
    pub connects: DefaultKeyedRateLimiter<IpAddr>,
    /// Messages per client address.
    pub messages: DefaultKeyedRateLimiter<IpAddr>,
    /// Refusals inside sockets, by reason (the daemon counts handshake refusals).
    pub refusals: socket::Refusals,
}

impl Shared {
    /// `presence:webchat:{connector}:{user}`: set while the visitor has a socket.
    pub fn presence_key(&self, user: &str) -> String {
        format!("presence:webchat:{}:{user}", self.settings.id)
    }

    /// `presence:app:{app connector}:{app user}`, when both are known.
    pub fn app_presence_key(&self, app_user_id: Option<&str>) -> Option<String> {
        let app = self.settings.app_connector_id.as_deref()?;
        Some(format!("presence:app:{app}:{}", app_user_id?))
    }

    /// The conversation id of `user`.
    pub fn conversation_id(&self, user: &str) -> String {
        format!("{KIND}:{}:{user}", self.settings.id)
    }
}

/// One website chat.
struct WebchatConnector {
    shared: Arc<Shared>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl WebchatConnector {
    fn new(settings: Settings, context: &ConnectorContext) -> Self {
        let signer = Signer::new(
            &settings.id,
            settings.visitor_secret.clone(),
            settings.site_key.clone(),
        );
        let history = History::new(
            context.kv.clone(),
            &settings.id,
            settings.history.max_messages,
            settings.history_ttl(),
            &context.instance_id,
        );
        let connects = RateLimiter::keyed(per_minute(settings.socket.connects_per_ip_per_minute));
        let messages = RateLimiter::keyed(per_minute(settings.socket.messages_per_ip_per_minute));
        let shared = Shared {
            hub: Hub::shared(&context.fanout, &settings.id),
            settings,
            signer,
            history,
            kv: context.kv.clone(),
            fanout: context.fanout.clone(),
            instance_id: context.instance_id.clone(),
            connects,
            messages,
            refusals: socket::Refusals::default(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    async fn publish(&self, message: &FanoutMessage) {
        let topic = self.shared.hub.topic();
        let payload = match serde_json::to_vec(message) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(error = %err, "cannot encode a fan-out message");
                return;
            }
        };
        // A lost publish is not a lost message: it is stored, and sockets that miss it get
        // it on their next ping or resume.
        if let Err(err) = self.shared.fanout.publish(topic, payload).await {
            tracing::warn!(connector = %self.shared.settings.id, error = %err, "web chat fan-out publish failed");
        }
    }
}

#[async_trait]
impl Connector for WebchatConnector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn id(&self) -> &str {
        &self.shared.settings.id
    }

    fn limits(&self) -> &ConnectorLimits {
        &self.shared.settings.limits
    }

    fn routes(&self, inbound: Inbound) -> Router {
        let state = web::AppState {
            shared: self.shared.clone(),
            inbound,
        };
        Router::new()
            .route("/", get(assets::demo_page))
            .route("/widget.js", get(assets::widget_js))
            .route("/assets/{file}", get(assets::asset))
            .route("/ws", get(socket::upgrade))
            .route("/messages", post(web::post_message))
            .route("/upload", post(web::upload))
            .route("/media/{media_id}", get(web::media))
            .with_state(state)
    }

    async fn run(&self, shutdown: CancellationToken) {
        self.shared.hub.listen();
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    // Keyed limiters keep a cell per address seen; drop the idle ones.
                    self.shared.connects.retain_recent();
                    self.shared.messages.retain_recent();
                    self.shared.connects.shrink_to_fit();
                    self.shared.messages.shrink_to_fit();
                    self.shared.refusals.log(&self.shared.settings.id, self.shared.hub.connections());
                }
            }
        }
    }

    /// Stores the reply in the conversation's history and sends it to every socket of the
    /// visitor, on this instance directly and on the others through the fan-out. Succeeds
    /// once stored: `delivery.succeeded` means "stored for the visitor, and shown if they
    /// are online"; a `delivery.read` event follows when the widget shows it.
    async fn deliver(
        &self,
        reply: &Reply,
        recipient: &Recipient,
    ) -> Result<Delivered, DeliveryError> {
        let conversation = &recipient.conversation;
        let shared = &self.shared;
        if conversation.kind != KIND || conversation.connector_id != shared.settings.id {
            return Err(DeliveryError::Permanent {
                code: "wrong_connector".to_owned(),
                text: format!(
                    "conversation belongs to {}:{}, not {KIND}:{}",
                    conversation.kind, conversation.connector_id, shared.settings.id
                ),
            });
        }
        let user = recipient.channel_user_id();
        if !identity::is_user_id(user) {
            return Err(DeliveryError::Permanent {
                code: "bad_recipient".to_owned(),
                text: "not a web chat visitor id".to_owned(),
            });
        }
        shared.hub.listen();
        let agent = reply.agent.as_ref().and_then(|a| a.name.clone());

        if let Content::Event { name, key, .. } = &reply.content
            && name == "typing"
        {
            // Typing is shown when it happens or never: not stored, not numbered.
            let on = key.as_deref() != Some("off");
            let frame = ServerFrame::Typing {
                on,
                agent: agent.as_deref(),
            }
            .to_text();
            // Only through the fan-out, which reaches this instance too: an unnumbered
            // frame pushed both ways would be shown twice.
            self.publish(&FanoutMessage {
                user: user.to_owned(),
                seq: None,
                epoch: None,
                frame,
            })
            .await;
            return Ok(Delivered::default());
        }

        let content =
            serde_json::to_value(&reply.content).map_err(|err| DeliveryError::Permanent {
                code: "bad_content".to_owned(),
                text: err.to_string(),
            })?;
        let at = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let stored = shared
            .history
            .append(user, &reply.id, |seq, epoch| {
                let message = AgentMessage {
                    kind: "agent".to_owned(),
                    seq,
                    epoch: epoch.to_owned(),
                    id: reply.id.clone(),
                    content: content.clone(),
                    agent: agent.clone(),
                    at: at.clone(),
                };
                serde_json::to_string(&message).unwrap_or_default()
            })
            .await
            .map_err(|err| DeliveryError::Retryable {
                code: Some("history".to_owned()),
                text: err.to_string(),
                retry_after: Some(Duration::from_millis(500)),
            })?;

        if !stored.text.is_empty() {
            let local = shared.hub.push(
                user,
                Outgoing::Stored {
                    seq: stored.seq,
                    epoch: stored.epoch.as_str().into(),
                    text: stored.text.clone().into(),
                },
            );
            // Always published, even when shown here: the visitor may have another tab on
            // another instance. Sockets drop what they already sent by its number.
            self.publish(&FanoutMessage {
                user: user.to_owned(),
                seq: Some(stored.seq),
                epoch: Some(stored.epoch.clone()),
                frame: stored.text,
            })
            .await;
            tracing::debug!(
                connector = %shared.settings.id,
                reply_id = %reply.id,
                seq = stored.seq,
                duplicate = stored.duplicate,
                local,
                "web chat reply stored"
            );
        }
        Ok(Delivered {
            channel_message_id: Some(format!("{}:{}", stored.epoch, stored.seq)),
        })
    }
}
