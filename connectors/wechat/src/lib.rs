//! Switchboard connector for a WeChat official account (公众号): verifies the server URL,
//! takes message pushes in plaintext, compatible and safe mode, normalizes every message and
//! event type, answers WeChat within its 5 seconds (`success` or a passive auto-reply), and
//! delivers helpdesk replies through the customer-service message API with a shared,
//! early-refreshed access token. See README.md for modes, keys, mappings and failure modes.

pub mod api;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod media;
pub mod message;
pub mod outbound;
pub mod passive;
mod routes;
pub mod token;
pub mod xml;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use serde_json::json;
use switchboard_sdk::{
    BuildError, Connector, ConnectorContext, ConnectorFactory, ConnectorLimits, Delivered,
    DeliveryError, Inbound, KvError, KvStore, Recipient, Reply,
};

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::config::{Settings, TokenEndpoint, WechatConfig};
use crate::media::MediaSigner;
use crate::token::{TokenConfig, TokenSource};

/// The channel kind, as in `[[connectors.wechat]]` and `/wechat/{id}`.
pub const KIND: &str = "wechat";

/// How long after a user's last message a reply may be sent (WeChat's service window).
pub const SERVICE_WINDOW: Duration = Duration::from_secs(48 * 3600);
/// How long the last-interaction mark is kept: the window plus a margin.
const LAST_SEEN_TTL: Duration = Duration::from_secs(49 * 3600);

/// Builds WeChat connectors from `[[connectors.wechat]]` tables.
pub struct WechatFactory;

impl ConnectorFactory for WechatFactory {
    const KIND: &'static str = KIND;
    type Config = WechatConfig;

    fn id(config: &Self::Config) -> &str {
        &config.id
    }

    fn build(
        config: &Self::Config,
        context: &ConnectorContext,
    ) -> Result<Arc<dyn Connector>, BuildError> {
        let connector = WechatConnector::from_config(config, context, Arc::new(SystemClock))?;
        Ok(Arc::new(connector))
    }
}

/// What the routes and `deliver` share.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) api: api::Api,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) media: Option<MediaSigner>,
}

impl Shared {
    fn last_seen_key(&self, openid: &str) -> String {
        format!("wechat:{}:last_seen:{openid}", self.settings.id)
    }

    /// Marks now as the user's last interaction.
    pub(crate) async fn record_interaction(&self, openid: &str) -> Result<(), KvError> {
        self.kv
            .set(
                &self.last_seen_key(openid),
                self.clock.unix().to_string().as_bytes(),
                Some(LAST_SEEN_TTL),
            )
            .await
    }

    /// Whether the user wrote within the service window.
    async fn window_open(&self, openid: &str) -> Result<bool, KvError> {
        let Some(bytes) = self.kv.get(&self.last_seen_key(openid)).await? else {
            return Ok(false);
        };
        let last = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse::<i64>().ok());
        Ok(last.is_some_and(|last| self.clock.unix() - last < SERVICE_WINDOW.as_secs() as i64))
    }
}

/// One WeChat official account.
pub struct WechatConnector {
    shared: Arc<Shared>,
}

impl WechatConnector {
    /// Validates `config` and builds the connector on `context`'s services, with `clock`.
    pub fn from_config(
        config: &WechatConfig,
        context: &ConnectorContext,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        let settings = config.validate().map_err(BuildError)?;
        Ok(Self::new(settings, context, clock))
    }

    /// Builds the connector from validated settings.
    pub fn new(settings: Settings, context: &ConnectorContext, clock: Arc<dyn Clock>) -> Self {
        let tokens = Arc::new(TokenSource::new(
            TokenConfig {
                app_id: settings.app_id.clone(),
                app_secret: settings.app_secret.clone(),
                api_base: settings.api_base.clone(),
                endpoint: settings.token_endpoint,
            },
            context.http.clone(),
            context.kv.clone(),
            context.instance_id.clone(),
            clock.clone(),
        ));
        let api = api::Api::new(context.http.clone(), settings.api_base.clone(), tokens);
        let media = settings.media_proxy.as_ref().map(|m| {
            MediaSigner::new(
                m.signing_key.clone(),
                m.url_ttl_secs,
                &m.public_base_url,
                &settings.id,
            )
        });
        Self {
            shared: Arc::new(Shared {
                settings,
                kv: context.kv.clone(),
                api,
                clock,
                media,
            }),
        }
    }

    /// The account's access-token source (shared through the context's store).
    pub fn tokens(&self) -> &Arc<TokenSource> {
        self.shared.api.tokens()
    }

    /// Shows (`true`) or cancels (`false`) the "typing" indicator in the user's chat through
    /// `/cgi-bin/message/custom/typing`. WeChat only allows it within 30 s of the user's last
    /// message (45080) and not while already shown (45081).
    pub async fn typing(&self, openid: &str, typing: bool) -> Result<(), DeliveryError> {
        let command = if typing { "Typing" } else { "CancelTyping" };
        self.shared
            .api
            .post_json(
                "/cgi-bin/message/custom/typing",
                &json!({ "touser": openid, "command": command }),
            )
            .await
    }
}

#[async_trait]
impl Connector for WechatConnector {
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
        routes::router(self.shared.clone(), inbound)
    }

    async fn status(&self) -> serde_json::Value {
        match self.tokens().status().await {
            Ok(Some((expires_in, refresh_in))) => serde_json::json!({
                "access_token": {"expires_in_secs": expires_in, "refresh_in_secs": refresh_in},
            }),
            Ok(None) => serde_json::json!({"access_token": null}),
            Err(err) => serde_json::json!({"access_token_error": err.to_string()}),
        }
    }

    async fn deliver(
        &self,
        reply: &Reply,
        recipient: &Recipient,
    ) -> Result<Delivered, DeliveryError> {
        let shared = &self.shared;
        let openid = recipient.channel_user_id();
        let open = shared
            .window_open(openid)
            .await
            .map_err(|err| DeliveryError::Retryable {
                code: None,
                text: format!("cannot check the service window: {err}"),
                retry_after: Some(Duration::from_secs(1)),
            })?;
        if !open {
            return Err(DeliveryError::Permanent {
                code: "window_closed".to_owned(),
                text: "the user has not written in the last 48 hours".to_owned(),
            });
        }
        let body = outbound::custom_message(
            openid,
            &reply.content,
            shared.settings.kf_account.as_deref(),
        )?;
        shared
            .api
            .post_json("/cgi-bin/message/custom/send", &body)
            .await?;
        tracing::debug!(connector = %shared.settings.id, reply = %reply.id, "reply delivered");
        // The custom-send API answers without a message id.
        Ok(Delivered::default())
    }
}
