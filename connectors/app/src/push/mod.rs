//! Push delivery: when the app user is not in the app, an agent's reply reaches their
//! devices through FCM, APNs or JPush (chosen per device), after a copy went to the backend's
//! webhook. When the in-app web view is connected (web chat presence), the webhook alone
//! carries the reply.
//!
//! Everything shared between instances (devices, collapse windows, what an earlier attempt
//! already sent) lives in the key-value store, so any instance can deliver any reply and a
//! retry repeats only the steps that did not succeed.

mod apns;
pub(crate) mod config;
pub(crate) mod devices;
mod fcm;
mod http;
mod jpush;
pub(crate) mod payload;

#[cfg(test)]
pub(crate) mod fakes;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};
use switchboard_sdk::{
    ConfigProblem, ConnectorContext, Content, Delivered, DeliveryError, KvStore, Reply,
};

use crate::transport::ReplyTransport;
use config::{PushSettings, QuietMode, Texts};
use devices::{Device, DeviceRegistry, Provider};
use payload::Notification;

pub use apns::{APNS_PAYLOAD_LIMIT, PROVIDER_TOKEN_REUSE_SECS};
pub use fcm::{FCM_PAYLOAD_LIMIT, FCM_SCOPE};
pub use jpush::JPUSH_PAYLOAD_LIMIT;

pub(crate) use switchboard_sdk::schedule::Clock;

/// How long the record of a step done for a reply is kept: longer than any retry, quiet
/// hours included.
const DONE_TTL: Duration = Duration::from_secs(2 * 86_400);

/// Characters left as they are when an id goes into the deep link (RFC 3986 unreserved).
const LINK_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a provider took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// The provider's id for the notification (FCM message name, `apns-id`, JPush msg_id).
    pub message_id: Option<String>,
}

/// Why a provider did not take a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The token will never work again; it is removed from the registry.
    DeadToken {
        /// `fcm_unregistered`, `apns_unregistered`, `jpush_1011`...
        code: String,
        /// The provider's words.
        text: String,
    },
    /// Anything else, classified for the daemon's retry.
    Failed(DeliveryError),
}

impl From<PushError> for DeliveryError {
    fn from(err: PushError) -> Self {
        match err {
            PushError::DeadToken { code, text } => DeliveryError::Permanent { code, text },
            PushError::Failed(err) => err,
        }
    }
}

/// One push service.
#[async_trait]
pub(crate) trait PushProvider: Send + Sync + 'static {
    /// Which one.
    fn provider(&self) -> Provider;

    /// Sends `note` to `device`: one request (two when credentials must be renewed).
    async fn send(&self, device: &Device, note: &Notification) -> Result<Sent, PushError>;
}

/// The push side of one app connector.
pub(crate) struct Pusher {
    /// The connector id, in keys and logs.
    connector_id: String,
    /// Policy and texts.
    settings: PushSettings,
    /// Presence, collapse windows and done-markers.
    kv: Arc<dyn KvStore>,
    /// The user's devices.
    registry: Arc<DeviceRegistry>,
    /// The configured providers.
    providers: BTreeMap<Provider, Arc<dyn PushProvider>>,
    /// Quiet hours, expiry and registration times.
    clock: Clock,
}

impl Pusher {
    /// Builds the configured providers; a problem is reported under the provider's key.
    pub fn new(
        connector_id: &str,
        settings: PushSettings,
        context: &ConnectorContext,
        clock: Clock,
    ) -> Result<Self, ConfigProblem> {
        let mut built: Vec<Arc<dyn PushProvider>> = Vec::new();
        if let Some(fcm) = &settings.fcm {
            let http = http::client_for(&context.http, fcm.tls_ca.as_deref())
                .map_err(|e| ConfigProblem::new("push.fcm.tls_ca_file", e.to_string()))?;
            built.push(Arc::new(fcm::Fcm::new(fcm.clone(), http, clock.clone())));
        }
        if let Some(apns) = &settings.apns {
            let http = http::client_for(&context.http, apns.tls_ca.as_deref())
                .map_err(|e| ConfigProblem::new("push.apns.tls_ca_file", e.to_string()))?;
            built.push(Arc::new(apns::Apns::new(apns.clone(), http, clock.clone())));
        }
        if let Some(jpush) = &settings.jpush {
            let http = http::client_for(&context.http, jpush.tls_ca.as_deref())
                .map_err(|e| ConfigProblem::new("push.jpush.tls_ca_file", e.to_string()))?;
            built.push(Arc::new(jpush::Jpush::new(jpush.clone(), http)));
        }
        let providers: BTreeMap<Provider, Arc<dyn PushProvider>> = built
            .into_iter()
            .map(|provider| (provider.provider(), provider))
            .collect();
        let registry = Arc::new(DeviceRegistry::new(
            context.kv.clone(),
            connector_id,
            &context.instance_id,
            settings.device_ttl,
            settings.max_devices_per_user,
            clock.clone(),
        ));
        Ok(Self {
            connector_id: connector_id.to_owned(),
            settings,
            kv: context.kv.clone(),
            registry,
            providers,
            clock,
        })
    }

    /// The providers devices may register with.
    pub fn configured(&self) -> Vec<Provider> {
        self.providers.keys().copied().collect()
    }

    /// The device registry.
    pub fn registry(&self) -> Arc<DeviceRegistry> {
        self.registry.clone()
    }

    /// The key the web chat connector sets while the user's in-app web view is connected.
    pub fn presence_key(&self, user_id: &str) -> String {
        format!("presence:app:{}:{user_id}", self.connector_id)
    }

    fn key(&self, rest: &str) -> String {
        format!("app:{}:push:{rest}", self.connector_id)
    }

    /// Delivers one reply by the policy: webhook only while the user is in the app;
    /// otherwise a webhook copy (unless disabled), then a notification to every live device.
    pub async fn deliver(
        &self,
        user_id: &str,
        reply: &Reply,
        webhook: &dyn ReplyTransport,
    ) -> Result<Delivered, DeliveryError> {
        let in_app = self
            .kv
            .get(&self.presence_key(user_id))
            .await
            .map_err(|err| store_error("presence", &err))?
            .is_some();
        if in_app {
            tracing::debug!(connector = %self.connector_id, user_id = %user_id, reply_id = %reply.id, "user is in the app, webhook only");
            return webhook.send(user_id, reply).await;
        }

        let webhook_copy = if self.settings.also_webhook {
            Some(self.webhook_once(user_id, reply, webhook).await?)
        } else {
            None
        };

        let devices =
            self.registry
                .devices(user_id)
                .await
                .map_err(|err| DeliveryError::Retryable {
                    code: Some("device_registry".to_owned()),
                    text: err.to_string(),
                    retry_after: None,
                })?;
        let devices: Vec<Device> = devices
            .into_iter()
            .filter(|d| self.providers.contains_key(&d.provider))
            .collect();
        if devices.is_empty() {
            return webhook_copy.ok_or_else(|| DeliveryError::Permanent {
                code: "no_device".to_owned(),
                text: "the user has no registered device and the webhook copy is off".to_owned(),
            });
        }

        let silent = match self.quiet(reply) {
            None => false,
            Some((QuietMode::Silent, _)) => true,
            Some((QuietMode::Hold, remaining)) => {
                return Err(DeliveryError::Retryable {
                    code: Some("quiet_hours".to_owned()),
                    text: "quiet hours: the notification waits until they end".to_owned(),
                    retry_after: Some(remaining),
                });
            }
        };
        let window = self.collapse(user_id, &reply.id).await;
        let sends = devices
            .iter()
            .map(|device| self.send_once(user_id, reply, device, &window, silent));
        let outcomes = join_all(sends).await;
        settle(outcomes, webhook_copy)
    }

    /// Posts the webhook copy unless an earlier attempt already did.
    async fn webhook_once(
        &self,
        user_id: &str,
        reply: &Reply,
        webhook: &dyn ReplyTransport,
    ) -> Result<Delivered, DeliveryError> {
        let marker = self.key(&format!("done:{}:webhook", reply.id));
        if let Some(id) = self.done(&marker).await {
            return Ok(Delivered {
                channel_message_id: id,
            });
        }
        let delivered = webhook.send(user_id, reply).await?;
        self.mark_done(&marker, delivered.channel_message_id.as_deref())
            .await;
        Ok(delivered)
    }

    /// Sends to one device unless an earlier attempt already did; removes a dead token.
    async fn send_once(
        &self,
        user_id: &str,
        reply: &Reply,
        device: &Device,
        window: &Window,
        silent: bool,
    ) -> Result<Option<String>, DeliveryError> {
        let hash = device.token_hash();
        let marker = self.key(&format!("done:{}:{hash}", reply.id));
        if let Some(id) = self.done(&marker).await {
            return Ok(id);
        }
        let Some(provider) = self.providers.get(&device.provider) else {
            return Err(DeliveryError::Permanent {
                code: "provider_not_configured".to_owned(),
                text: format!("{} is not configured", device.provider.as_str()),
            });
        };
        let last_key = self.key(&format!("last:{}:{hash}", window.id));
        let replaces = if window.count > 1 && device.provider == Provider::Jpush {
            self.kv
                .get(&last_key)
                .await
                .ok()
                .flatten()
                .map(|id| String::from_utf8_lossy(&id).into_owned())
        } else {
            None
        };
        let note = self.notification(user_id, reply, device, window, silent, replaces);
        let sent_at = (self.clock)().unix_timestamp();
        let outcome = provider.send(device, &note).await;
        match outcome {
            Ok(sent) => {
                tracing::debug!(
                    connector = %self.connector_id,
                    user_id = %user_id,
                    reply_id = %reply.id,
                    provider = device.provider.as_str(),
                    device = %hash,
                    count = window.count,
                    silent,
                    "push sent"
                );
                self.mark_done(&marker, sent.message_id.as_deref()).await;
                if let Some(id) = &sent.message_id
                    && device.provider == Provider::Jpush
                {
                    let _ = self
                        .kv
                        .set(&last_key, id.as_bytes(), Some(window.ttl))
                        .await;
                }
                Ok(sent.message_id)
            }
            Err(PushError::DeadToken { code, text }) => {
                let removed = self
                    .registry
                    .remove_dead(user_id, device.provider, &device.token, sent_at)
                    .await;
                tracing::info!(
                    connector = %self.connector_id,
                    user_id = %user_id,
                    reply_id = %reply.id,
                    provider = device.provider.as_str(),
                    device = %hash,
                    code = %code,
                    removed = ?removed.as_ref().map_err(ToString::to_string),
                    "push token is dead, removed"
                );
                Err(DeliveryError::Permanent { code, text })
            }
            Err(PushError::Failed(err)) => {
                tracing::info!(
                    connector = %self.connector_id,
                    user_id = %user_id,
                    reply_id = %reply.id,
                    provider = device.provider.as_str(),
                    device = %hash,
                    retryable = err.is_retryable(),
                    error = %err,
                    "push not sent"
                );
                Err(err)
            }
        }
    }

    /// The stored result of a step an earlier attempt finished: `Some(message id)`.
    async fn done(&self, marker: &str) -> Option<Option<String>> {
        match self.kv.get(marker).await {
            Ok(Some(id)) if id.is_empty() => Some(None),
            Ok(Some(id)) => Some(Some(String::from_utf8_lossy(&id).into_owned())),
            Ok(None) => None,
            // Unknown: doing the step again risks a duplicate, skipping it risks a loss.
            Err(err) => {
                tracing::warn!(connector = %self.connector_id, error = %err, "cannot read a delivery marker");
                None
            }
        }
    }

    async fn mark_done(&self, marker: &str, message_id: Option<&str>) {
        let value = message_id.unwrap_or_default();
        if let Err(err) = self.kv.set(marker, value.as_bytes(), Some(DONE_TTL)).await {
            tracing::warn!(connector = %self.connector_id, error = %err, "cannot record a delivery step; a retry may repeat it");
        }
    }

    /// Quiet hours in force for this reply: its mode and how long they last.
    fn quiet(&self, reply: &Reply) -> Option<(QuietMode, Duration)> {
        if is_urgent(&reply.content) {
            return None;
        }
        let (hours, mode) = self.settings.quiet_hours?;
        hours
            .remaining((self.clock)())
            .map(|remaining| (mode, remaining))
    }

    /// Joins the user's current collapse window (or opens one) and counts this reply in it
    /// once, however often it is retried. Never delays: the reply is sent at once, and a
    /// later one in the window replaces it on the device under the same collapse id.
    async fn collapse(&self, user_id: &str, reply_id: &str) -> Window {
        let window = self.settings.collapse_window;
        let alone = Window {
            id: reply_id.to_owned(),
            count: 1,
            ttl: DONE_TTL,
        };
        if window.is_zero() {
            return alone;
        }
        match self.count_in_window(user_id, reply_id, window).await {
            Ok(window) => window,
            Err(err) => {
                // Without the store there is no window: the reply goes out on its own.
                tracing::warn!(connector = %self.connector_id, error = %err, "collapse window unavailable");
                alone
            }
        }
    }

    async fn count_in_window(
        &self,
        user_id: &str,
        reply_id: &str,
        window: Duration,
    ) -> Result<Window, switchboard_sdk::KvError> {
        let window_key = self.key(&format!("window:{user_id}"));
        self.kv
            .set_if_absent(&window_key, reply_id.as_bytes(), window)
            .await?;
        let id = self
            .kv
            .get(&window_key)
            .await?
            .map(|id| String::from_utf8_lossy(&id).into_owned())
            .unwrap_or_else(|| reply_id.to_owned());
        // Longer than the window so late retries still find the count.
        let ttl = window * 2 + Duration::from_secs(60);
        let count_key = self.key(&format!("count:{id}"));
        let first_time = self
            .kv
            .set_if_absent(
                &self.key(&format!("counted:{reply_id}")),
                id.as_bytes(),
                DONE_TTL,
            )
            .await?;
        self.kv.set_if_absent(&count_key, b"0", ttl).await?;
        let count = if first_time {
            self.kv.increment(&count_key).await?
        } else {
            self.kv
                .get(&count_key)
                .await?
                .and_then(|n| String::from_utf8_lossy(&n).parse().ok())
                .unwrap_or(1)
        };
        Ok(Window {
            id,
            count: count.max(1),
            ttl,
        })
    }

    /// The notification for one device, in its language.
    fn notification(
        &self,
        user_id: &str,
        reply: &Reply,
        device: &Device,
        window: &Window,
        silent: bool,
        replaces: Option<String>,
    ) -> Notification {
        let texts = self.texts_for(device.locale.as_deref());
        let body = if window.count > 1 {
            texts
                .collapse_text
                .replace("{count}", &window.count.to_string())
        } else {
            reply_text(&reply.content).unwrap_or_else(|| texts.attachment_text.clone())
        };
        let mut data = vec![
            ("conversation_id", reply.conversation_id.clone()),
            ("reply_id", reply.id.clone()),
            ("content_type", reply.content.kind().to_owned()),
            ("count", window.count.to_string()),
        ];
        if let Some(template) = &self.settings.deep_link {
            data.push(("deep_link", deep_link(template, reply, user_id)));
        }
        Notification {
            title: texts.title.clone(),
            body,
            collapse_id: collapse_id(&reply.conversation_id, &window.id),
            count: window.count,
            silent,
            ttl_secs: self.settings.ttl_secs,
            data,
            replaces,
        }
    }

    /// Texts for a locale: the exact tag, then its language, then the defaults.
    fn texts_for(&self, locale: Option<&str>) -> &Texts {
        let Some(locale) = locale.map(str::to_ascii_lowercase) else {
            return &self.settings.texts;
        };
        let language = locale.split('-').next().unwrap_or_default();
        self.settings
            .locales
            .get(&locale)
            .or_else(|| self.settings.locales.get(language))
            .unwrap_or(&self.settings.texts)
    }
}

/// A collapse window as one reply sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    /// The id of the window's first reply: names the window in keys and collapse ids.
    id: String,
    /// Replies counted in the window so far, this one included.
    count: u64,
    /// How long per-window records are kept.
    ttl: Duration,
}

/// The outcome of one reply from the outcomes of its devices. A retryable failure on any
/// device asks for a retry (devices already served are skipped then); otherwise one device
/// reached is a delivery; otherwise the first device's error stands.
fn settle(
    outcomes: Vec<Result<Option<String>, DeliveryError>>,
    webhook_copy: Option<Delivered>,
) -> Result<Delivered, DeliveryError> {
    let mut first_id = None;
    let mut delivered = false;
    let mut retry: Option<DeliveryError> = None;
    let mut permanent: Option<DeliveryError> = None;
    for outcome in outcomes {
        match outcome {
            Ok(id) => {
                delivered = true;
                if first_id.is_none() {
                    first_id = id;
                }
            }
            Err(err) if err.is_retryable() => {
                let longer = match &retry {
                    None => true,
                    Some(seen) => err.retry_after() > seen.retry_after(),
                };
                if longer {
                    retry = Some(err);
                }
            }
            Err(err) => {
                permanent.get_or_insert(err);
            }
        }
    }
    if let Some(err) = retry {
        return Err(err);
    }
    if delivered {
        let channel_message_id =
            first_id.or_else(|| webhook_copy.and_then(|w| w.channel_message_id));
        return Ok(Delivered { channel_message_id });
    }
    match permanent {
        Some(err) => Err(err),
        None => webhook_copy.ok_or_else(|| DeliveryError::Permanent {
            code: "no_device".to_owned(),
            text: "no device to send to".to_owned(),
        }),
    }
}

/// A reply is urgent when its content's `extra` says `"urgent": true`.
fn is_urgent(content: &Content) -> bool {
    let extra = match content {
        Content::Text { extra, .. }
        | Content::Image { extra, .. }
        | Content::Voice { extra, .. }
        | Content::Video { extra, .. }
        | Content::Location { extra, .. } => extra,
        _ => return false,
    };
    extra.get("urgent").and_then(serde_json::Value::as_bool) == Some(true)
}

/// The words a notification can show for a reply, if it has any.
fn reply_text(content: &Content) -> Option<String> {
    let text = match content {
        Content::Text { text, .. } => Some(text.as_str()),
        Content::Image { caption, .. } => caption.as_deref(),
        Content::Voice { recognition, .. } => recognition.as_deref(),
        Content::Video { title, .. } => title.as_deref(),
        Content::Link { title, .. } => title.as_deref(),
        Content::Location { label, .. } => label.as_deref(),
        Content::File { .. } | Content::Event { .. } | Content::Call { .. } => None,
    }?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// `sb-` and 32 hex digits: the same for every notification of one conversation in one
/// window, within APNs' 64-byte limit whatever the ids' length.
fn collapse_id(conversation_id: &str, window_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(conversation_id)
        .chain_update(b"\n")
        .chain_update(window_id)
        .finalize();
    format!("sb-{}", hex::encode(&digest[..16]))
}

fn deep_link(template: &str, reply: &Reply, user_id: &str) -> String {
    let escape = |value: &str| utf8_percent_encode(value, LINK_ESCAPE).to_string();
    template
        .replace("{conversation_id}", &escape(&reply.conversation_id))
        .replace("{user_id}", &escape(user_id))
        .replace("{reply_id}", &escape(&reply.id))
}

fn store_error(what: &str, err: &switchboard_sdk::KvError) -> DeliveryError {
    DeliveryError::Retryable {
        code: Some("store_unavailable".to_owned()),
        text: format!("cannot read {what}: {err}"),
        retry_after: None,
    }
}
