//! The device registry: which push tokens reach an app user, kept in the shared key-value
//! store (Redis when configured, memory otherwise), and `POST /devices`, through which the
//! app backend registers and removes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use switchboard_sdk::{KvError, KvStore, RejectReason, Rejection};

use super::Clock;
use super::config::is_language_tag;
use crate::inbound::{InboundError, InboundSettings, authenticate, check_user_id};

/// Longest push token accepted, in bytes (FCM tokens are about 160, JPush ids about 20).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest `app_version`, in characters.
const MAX_APP_VERSION_CHARS: usize = 64;
/// How long a registry lock may be held before it frees itself.
const LOCK_TTL: Duration = Duration::from_secs(5);
/// How long a change waits for another change of the same user.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Pause between attempts to take a busy lock.
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// A push service a device is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Firebase Cloud Messaging.
    Fcm,
    /// Apple Push Notification service.
    Apns,
    /// JPush (Aurora).
    Jpush,
}

impl Provider {
    /// The lowercase name used on the wire and in error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Fcm => "fcm",
            Provider::Apns => "apns",
            Provider::Jpush => "jpush",
        }
    }
}

/// The operating system of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Android (FCM or JPush).
    Android,
    /// iOS (APNs, or FCM / JPush relaying to APNs).
    Ios,
}

impl Platform {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Android => "android",
            Platform::Ios => "ios",
        }
    }
}

/// One registered device of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Device {
    /// The push service.
    pub provider: Provider,
    /// Android or iOS.
    pub platform: Platform,
    /// The provider's token (FCM registration token, APNs device token, JPush registration id).
    pub token: String,
    /// The device's language (`zh-CN`), for the notification texts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The app's version on the device, for support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// When it was last registered, unix seconds.
    pub updated_at: i64,
}

impl Device {
    /// A short, stable name for logs and keys that does not reveal the token.
    pub fn token_hash(&self) -> String {
        token_hash(self.provider, &self.token)
    }
}

fn token_hash(provider: Provider, token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(provider.as_str())
        .chain_update(b":")
        .chain_update(token)
        .finalize();
    hex::encode(&digest[..12])
}

/// What the store holds per user.
#[derive(Debug, Default, Serialize, Deserialize)]
struct DeviceList {
    /// The user's devices, oldest registration first.
    devices: Vec<Device>,
}

/// Why the registry could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RegistryError {
    /// The key-value store failed.
    #[error(transparent)]
    Store(#[from] KvError),
    /// Another change of the same user held the lock too long.
    #[error("device list of this user is busy, try again")]
    Busy,
}

/// Devices per user in the shared key-value store.
pub(crate) struct DeviceRegistry {
    /// The shared store.
    kv: Arc<dyn KvStore>,
    /// The connector id, in every key.
    connector_id: String,
    /// This instance's name, in lock values.
    instance_id: String,
    /// Devices not registered again within this are forgotten.
    device_ttl: Duration,
    /// Devices kept per user.
    max_devices: usize,
    /// Registration times.
    clock: Clock,
    /// Makes lock values unique within this instance.
    lock_counter: AtomicU64,
}

/// A held registry lock.
struct Lock {
    key: String,
    owner: String,
}

impl DeviceRegistry {
    /// A registry for one connector.
    pub fn new(
        kv: Arc<dyn KvStore>,
        connector_id: &str,
        instance_id: &str,
        device_ttl: Duration,
        max_devices: usize,
        clock: Clock,
    ) -> Self {
        Self {
            kv,
            connector_id: connector_id.to_owned(),
            instance_id: instance_id.to_owned(),
            device_ttl,
            max_devices,
            clock,
            lock_counter: AtomicU64::new(0),
        }
    }

    fn list_key(&self, user_id: &str) -> String {
        format!("app:{}:push:devices:{user_id}", self.connector_id)
    }

    fn lock_key(&self, user_id: &str) -> String {
        format!("app:{}:push:lock:{user_id}", self.connector_id)
    }

    fn owner_key(&self, provider: Provider, token: &str) -> String {
        format!(
            "app:{}:push:token:{}",
            self.connector_id,
            token_hash(provider, token)
        )
    }

    fn now(&self) -> i64 {
        (self.clock)().unix_timestamp()
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.device_ttl.as_secs()).unwrap_or(i64::MAX)
    }

    /// The user's devices that have not outlived the device lifetime.
    pub async fn devices(&self, user_id: &str) -> Result<Vec<Device>, RegistryError> {
        let oldest = self.now().saturating_sub(self.ttl_secs());
        let mut list = self.load(user_id).await?;
        list.devices.retain(|d| d.updated_at > oldest);
        Ok(list.devices)
    }

    /// Adds or refreshes a device and returns how many the user now has. A token registered
    /// by another user before moves to this one (the phone changed hands or accounts), so
    /// one user's replies never reach another's phone.
    pub async fn register(&self, user_id: &str, device: Device) -> Result<usize, RegistryError> {
        let (provider, token) = (device.provider, device.token.clone());
        let owner_key = self.owner_key(provider, &token);
        let previous_owner = self.kv.get(&owner_key).await?;

        let lock = self.lock(user_id).await?;
        let count = self.change(user_id, |list, oldest| {
            list.devices
                .retain(|d| d.updated_at > oldest && !(d.provider == provider && d.token == token));
            list.devices.push(device);
            if list.devices.len() > self.max_devices {
                list.devices.sort_by_key(|d| d.updated_at);
                let extra = list.devices.len() - self.max_devices;
                list.devices.drain(..extra);
            }
            list.devices.len()
        });
        let count = self.finish(lock, count.await).await?;

        self.kv
            .set(&owner_key, user_id.as_bytes(), Some(self.device_ttl))
            .await?;
        if let Some(previous) = previous_owner
            && previous != user_id.as_bytes()
        {
            let previous = String::from_utf8_lossy(&previous).into_owned();
            let moved_at = self.now();
            self.remove_where(&previous, |d| {
                d.provider == provider && d.token == token && d.updated_at <= moved_at
            })
            .await?;
            tracing::info!(
                connector = %self.connector_id,
                from_user = %previous,
                to_user = %user_id,
                provider = provider.as_str(),
                "push token moved to another user"
            );
        }
        Ok(count)
    }

    /// Removes one token of the user; returns how many devices were removed.
    pub async fn remove(
        &self,
        user_id: &str,
        provider: Option<Provider>,
        token: &str,
    ) -> Result<usize, RegistryError> {
        let removed = self
            .remove_where(user_id, |d| {
                d.token == token && provider.is_none_or(|p| p == d.provider)
            })
            .await?;
        for device in &removed {
            self.release_owner(user_id, device).await?;
        }
        Ok(removed.len())
    }

    /// Removes every device of the user (logout everywhere).
    pub async fn remove_all(&self, user_id: &str) -> Result<usize, RegistryError> {
        let removed = self.remove_where(user_id, |_| true).await?;
        for device in &removed {
            self.release_owner(user_id, device).await?;
        }
        Ok(removed.len())
    }

    /// Removes a token a provider called dead, unless it was registered again after
    /// `sent_at` (a fresh registration is newer news than our send).
    pub async fn remove_dead(
        &self,
        user_id: &str,
        provider: Provider,
        token: &str,
        sent_at: i64,
    ) -> Result<bool, RegistryError> {
        let removed = self
            .remove_where(user_id, |d| {
                d.provider == provider && d.token == token && d.updated_at <= sent_at
            })
            .await?;
        for device in &removed {
            self.release_owner(user_id, device).await?;
        }
        Ok(!removed.is_empty())
    }

    async fn release_owner(&self, user_id: &str, device: &Device) -> Result<(), RegistryError> {
        self.kv
            .delete_if_equals(
                &self.owner_key(device.provider, &device.token),
                user_id.as_bytes(),
            )
            .await?;
        Ok(())
    }

    /// Removes the devices matching `which` under the user's lock and returns them.
    async fn remove_where<F>(&self, user_id: &str, which: F) -> Result<Vec<Device>, RegistryError>
    where
        F: Fn(&Device) -> bool,
    {
        let lock = self.lock(user_id).await?;
        let removed = self.change(user_id, |list, _| {
            let (gone, kept): (Vec<Device>, Vec<Device>) =
                list.devices.drain(..).partition(|d| which(d));
            list.devices = kept;
            gone
        });
        self.finish(lock, removed.await).await
    }

    /// Loads the list, applies `edit`, saves the result; call with the user's lock held.
    async fn change<T, F>(&self, user_id: &str, edit: F) -> Result<T, RegistryError>
    where
        F: FnOnce(&mut DeviceList, i64) -> T,
    {
        let mut list = self.load(user_id).await?;
        let oldest = self.now().saturating_sub(self.ttl_secs());
        let answer = edit(&mut list, oldest);
        let key = self.list_key(user_id);
        if list.devices.is_empty() {
            self.kv.delete(&key).await?;
        } else {
            let bytes = serde_json::to_vec(&list).unwrap_or_default();
            self.kv.set(&key, &bytes, Some(self.device_ttl)).await?;
        }
        Ok(answer)
    }

    async fn load(&self, user_id: &str) -> Result<DeviceList, RegistryError> {
        let Some(bytes) = self.kv.get(&self.list_key(user_id)).await? else {
            return Ok(DeviceList::default());
        };
        match serde_json::from_slice(&bytes) {
            Ok(list) => Ok(list),
            Err(err) => {
                // Written by a different version, or damaged by hand: the app re-registers
                // its devices at start, so starting over is safe.
                tracing::warn!(
                    connector = %self.connector_id,
                    user_id = %user_id,
                    error = %err,
                    "unreadable device list, starting over"
                );
                Ok(DeviceList::default())
            }
        }
    }

    /// Takes the user's lock, waiting a little for a concurrent change.
    async fn lock(&self, user_id: &str) -> Result<Lock, RegistryError> {
        let key = self.lock_key(user_id);
        let owner = format!(
            "{}:{}",
            self.instance_id,
            self.lock_counter.fetch_add(1, Ordering::Relaxed)
        );
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            if self
                .kv
                .set_if_absent(&key, owner.as_bytes(), LOCK_TTL)
                .await?
            {
                return Ok(Lock { key, owner });
            }
            if Instant::now() >= deadline {
                return Err(RegistryError::Busy);
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }

    /// Releases `lock` whatever `result` is, then returns `result`.
    async fn finish<T>(
        &self,
        lock: Lock,
        result: Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        if let Err(err) = self
            .kv
            .delete_if_equals(&lock.key, lock.owner.as_bytes())
            .await
        {
            // It expires by itself within LOCK_TTL.
            tracing::warn!(connector = %self.connector_id, error = %err, "could not release a device lock");
        }
        result
    }
}

/// What `POST /devices` takes.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum DeviceRequest {
    /// Adds or refreshes a device.
    Register {
        /// The app user.
        user_id: String,
        /// `android` or `ios`.
        platform: Platform,
        /// `fcm`, `apns` or `jpush`.
        provider: Provider,
        /// The provider's token for this device.
        token: String,
        /// The device's language.
        #[serde(default)]
        locale: Option<String>,
        /// The app's version.
        #[serde(default)]
        app_version: Option<String>,
    },
    /// Removes one token.
    Remove {
        /// The app user.
        user_id: String,
        /// The token's provider; any provider when absent.
        #[serde(default)]
        provider: Option<Provider>,
        /// The token to remove.
        token: String,
    },
    /// Removes every device of the user.
    RemoveAll {
        /// The app user.
        user_id: String,
    },
}

/// What the `/devices` handler needs.
pub(crate) struct DevicesState {
    /// Signature settings shared with `/messages`.
    pub inbound: Arc<InboundSettings>,
    /// The registry.
    pub registry: Arc<DeviceRegistry>,
    /// Providers configured for this connector.
    pub providers: Vec<Provider>,
    /// Registration times.
    pub clock: Clock,
}

/// The `POST /devices` handler.
pub(crate) async fn post_devices(
    State(state): State<Arc<DevicesState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let connector = state.inbound.connector_id.clone();
    let request = match authenticate(&state.inbound, &headers, &body)
        .and_then(|()| parse_request(&body, &state.providers))
    {
        Ok(request) => request,
        Err(err) => return refuse(&connector, Rejection::from(err)),
    };
    let now = (state.clock)().unix_timestamp();
    let outcome = match request {
        Checked::Register {
            user_id,
            mut device,
        } => {
            device.updated_at = now;
            let provider = device.provider;
            state
                .registry
                .register(&user_id, device)
                .await
                .map(|count| {
                    tracing::debug!(connector = %connector, user_id = %user_id, provider = provider.as_str(), devices = count, "device registered");
                    json!({"status": "registered", "devices": count})
                })
        }
        Checked::Remove {
            user_id,
            provider,
            token,
        } => state
            .registry
            .remove(&user_id, provider, &token)
            .await
            .map(|removed| json!({"status": "removed", "removed": removed})),
        Checked::RemoveAll { user_id } => state
            .registry
            .remove_all(&user_id)
            .await
            .map(|removed| json!({"status": "removed", "removed": removed})),
    };
    match outcome {
        Ok(answer) => Json(answer).into_response(),
        Err(err) => {
            let mut rejection = Rejection::new(RejectReason::Unavailable, err.to_string());
            rejection.retry_after_secs = Some(1);
            refuse(&connector, rejection)
        }
    }
}

fn refuse(connector_id: &str, rejection: Rejection) -> Response {
    tracing::info!(
        connector = %connector_id,
        reason = rejection.reason.as_str(),
        detail = %rejection.detail,
        "device request refused"
    );
    rejection.into_response()
}

/// A request whose fields passed every check.
#[derive(Debug, PartialEq)]
enum Checked {
    Register {
        user_id: String,
        device: Device,
    },
    Remove {
        user_id: String,
        provider: Option<Provider>,
        token: String,
    },
    RemoveAll {
        user_id: String,
    },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InboundError {
    InboundError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// Parses and checks an authenticated `/devices` body. `updated_at` is left 0 for the
/// handler to stamp.
fn parse_request(body: &[u8], configured: &[Provider]) -> Result<Checked, InboundError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
        InboundError::Malformed(format!(
            "body is not valid JSON (line {}, column {})",
            err.line(),
            err.column()
        ))
    })?;
    if !value.is_object() {
        return Err(InboundError::Malformed(
            "body must be a JSON object".to_owned(),
        ));
    }
    let request: DeviceRequest = serde_json::from_value(value)
        .map_err(|err| InboundError::Malformed(without_values(&err.to_string())))?;
    match request {
        DeviceRequest::Register {
            user_id,
            platform,
            provider,
            token,
            locale,
            app_version,
        } => {
            check_user_id(&user_id)?;
            if !configured.contains(&provider) {
                return Err(invalid(
                    "provider",
                    format!("{} is not configured for this connector", provider.as_str()),
                ));
            }
            if provider == Provider::Apns && platform != Platform::Ios {
                return Err(invalid("platform", "apns reaches ios devices only"));
            }
            check_token(provider, &token)?;
            let locale = match locale.filter(|l| !l.is_empty()) {
                // Android reports zh_CN, browsers zh-CN: one form for matching.
                Some(locale) => {
                    let locale = locale.replace('_', "-");
                    if !is_language_tag(&locale) {
                        return Err(invalid("locale", "must be a language tag like zh-CN"));
                    }
                    Some(locale)
                }
                None => None,
            };
            let app_version = match app_version.filter(|v| !v.is_empty()) {
                Some(version)
                    if version.chars().count() > MAX_APP_VERSION_CHARS
                        || version.chars().any(char::is_control) =>
                {
                    return Err(invalid(
                        "app_version",
                        format!(
                            "must be at most {MAX_APP_VERSION_CHARS} characters, no control characters"
                        ),
                    ));
                }
                other => other,
            };
            Ok(Checked::Register {
                user_id,
                device: Device {
                    provider,
                    platform,
                    token,
                    locale,
                    app_version,
                    updated_at: 0,
                },
            })
        }
        DeviceRequest::Remove {
            user_id,
            provider,
            token,
        } => {
            check_user_id(&user_id)?;
            if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
                return Err(invalid(
                    "token",
                    format!("must be 1 to {MAX_TOKEN_BYTES} bytes"),
                ));
            }
            Ok(Checked::Remove {
                user_id,
                provider,
                token,
            })
        }
        DeviceRequest::RemoveAll { user_id } => {
            check_user_id(&user_id)?;
            Ok(Checked::RemoveAll { user_id })
        }
    }
}

/// serde's words without the values it quotes from the body (a token, an unknown provider):
/// field and variant names stay, they are ours.
fn without_values(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((_, expected)) = rest.split_once("`, ")
    {
        return format!("unknown variant, {expected}");
    }
    crate::inbound::without_quoted_value(message)
}

/// A token must be printable ASCII; an APNs token is hex because it goes into the path.
fn check_token(provider: Provider, token: &str) -> Result<(), InboundError> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(invalid(
            "token",
            format!("must be 1 to {MAX_TOKEN_BYTES} bytes"),
        ));
    }
    let ok = match provider {
        Provider::Apns => {
            token.len().is_multiple_of(2) && token.bytes().all(|b| b.is_ascii_hexdigit())
        }
        Provider::Fcm | Provider::Jpush => token.bytes().all(|b| b.is_ascii_graphic()),
    };
    if !ok {
        let what = match provider {
            Provider::Apns => "an apns token must be hex digits",
            Provider::Fcm | Provider::Jpush => "must be printable ascii without spaces",
        };
        return Err(invalid("token", what));
    }
    Ok(())
}
