//! Access tokens, shared by every instance through the context's key-value store: refreshed
//! early, fetched by one caller at a time (a process-local mutex plus a store lock), and
//! invalidated only while the cached token is still the one that failed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_sdk::{DeliveryError, KvError, KvStore, Secret};

use crate::clock::Clock;
use crate::config::TokenEndpoint;

/// Refresh once this share of the token's lifetime has passed.
const REFRESH_AT_SHARE: f64 = 0.8;
/// How long the store lock guards one fetch; longer than the HTTP client's timeout.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// How long a caller waits for another instance's fetch before giving up.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(10);
/// How often a waiting caller looks at the store.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Why no access token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint could not be reached.
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    /// The token endpoint answered with a non-2xx status.
    #[error("token endpoint answered http {0}")]
    Http(u16),
    /// The token endpoint answered with an error code.
    #[error("token endpoint refused: errcode {code}: {message}")]
    Api {
        /// WeChat's errcode.
        code: i64,
        /// WeChat's errmsg.
        message: String,
    },
    /// The answer was not the JSON we expect.
    #[error("token endpoint answered something unexpected: {0}")]
    Malformed(String),
    /// The shared store failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// Another instance held the refresh lock and published nothing in time.
    #[error("timed out waiting for another instance to refresh the access token")]
    Timeout,
}

impl From<TokenError> for DeliveryError {
    fn from(err: TokenError) -> Self {
        match &err {
            // Credentials, whitelist or account problems do not heal by retrying.
            TokenError::Api { code, .. } if *code != -1 && *code != 45009 && *code != 45011 => {
                DeliveryError::Permanent {
                    code: code.to_string(),
                    text: format!("access token: {err}"),
                }
            }
            TokenError::Api { code, .. } if *code == 45009 || *code == 45011 => {
                DeliveryError::RateLimited {
                    retry_after: Some(Duration::from_secs(60)),
                }
            }
            _ => DeliveryError::Retryable {
                code: None,
                text: format!("access token: {err}"),
                retry_after: Some(Duration::from_secs(1)),
            },
        }
    }
}

/// A token as cached locally and in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedToken {
    access_token: String,
    /// Unix milliseconds after which WeChat no longer takes it.
    expires_at_ms: i64,
    /// Unix milliseconds after which a new one is fetched.
    refresh_at_ms: i64,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<i64>,
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// Where and how tokens are fetched.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// AppID.
    pub app_id: String,
    /// AppSecret.
    pub app_secret: Secret,
    /// API base without a trailing slash.
    pub api_base: String,
    /// Endpoint kind.
    pub endpoint: TokenEndpoint,
}

/// One account's access token, shared through `kv`.
pub struct TokenSource {
    config: TokenConfig,
    http: reqwest::Client,
    kv: Arc<dyn KvStore>,
    instance_id: String,
    clock: Arc<dyn Clock>,
    /// Held across a refresh: the in-process single flight.
    local: tokio::sync::Mutex<Option<CachedToken>>,
    /// The token last invalidated, so a stable_token answer repeating it forces a new one.
    invalidated: Mutex<Option<String>>,
}

impl TokenSource {
    /// A token source for one account.
    pub fn new(
        config: TokenConfig,
        http: reqwest::Client,
        kv: Arc<dyn KvStore>,
        instance_id: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            http,
            kv,
            instance_id,
            clock,
            local: tokio::sync::Mutex::new(None),
            invalidated: Mutex::new(None),
        }
    }

    fn cache_key(&self) -> String {
        format!("wechat:token:{}", self.config.app_id)
    }

    fn lock_key(&self) -> String {
        format!("wechat:token-lock:{}", self.config.app_id)
    }

    async fn read_shared(&self) -> Result<Option<(CachedToken, Vec<u8>)>, KvError> {
        let Some(bytes) = self.kv.get(&self.cache_key()).await? else {
            return Ok(None);
        };
        // Something unreadable in the store is treated as absent and overwritten.
        Ok(serde_json::from_slice(&bytes).ok().map(|t| (t, bytes)))
    }

    /// Seconds until the shared token expires and until it is refreshed, for the console;
    /// `None` when no token is cached. Never fetches and never shows the token.
    pub async fn status(&self) -> Result<Option<(i64, i64)>, KvError> {
        let now = self.clock.unix_ms();
        Ok(self.read_shared().await?.map(|(t, _)| {
            (
                (t.expires_at_ms - now) / 1000,
                (t.refresh_at_ms - now).max(0) / 1000,
            )
        }))
    }

    /// A valid access token, fetched if none is cached or the cached one is due.
    pub async fn get(&self) -> Result<String, TokenError> {
        let mut local = self.local.lock().await;
        let now = self.clock.unix_ms();
        if let Some(token) = local.as_ref().filter(|t| now < t.refresh_at_ms) {
            return Ok(token.access_token.clone());
        }
        let deadline = Instant::now() + WAIT_FOR_OTHERS;
        loop {
            let now = self.clock.unix_ms();
            let shared = self.read_shared().await?.map(|(t, _)| t);
            if let Some(token) = shared.as_ref().filter(|t| now < t.refresh_at_ms) {
                *local = Some(token.clone());
                return Ok(token.access_token.clone());
            }
            // Due for refresh but still accepted by WeChat: usable while someone refreshes.
            let still_valid = shared.filter(|t| now < t.expires_at_ms);

            let lock_value = format!("{}:{:016x}", self.instance_id, rand::random::<u64>());
            if self
                .kv
                .set_if_absent(&self.lock_key(), lock_value.as_bytes(), LOCK_TTL)
                .await?
            {
                // Another instance may have published and released between our read and
                // our lock: look once more before fetching.
                let fetched = match self.read_shared().await {
                    Ok(Some((token, _))) if self.clock.unix_ms() < token.refresh_at_ms => Ok(token),
                    _ => self.fetch_and_publish().await,
                };
                if let Err(err) = self
                    .kv
                    .delete_if_equals(&self.lock_key(), lock_value.as_bytes())
                    .await
                {
                    tracing::warn!(app_id = %self.config.app_id, error = %err, "could not release the token lock; it expires by itself");
                }
                return match fetched {
                    Ok(token) => {
                        let value = token.access_token.clone();
                        *local = Some(token);
                        Ok(value)
                    }
                    Err(err) => match still_valid {
                        Some(token) => {
                            tracing::warn!(app_id = %self.config.app_id, error = %err, "token refresh failed; the current token is still valid");
                            Ok(token.access_token)
                        }
                        None => Err(err),
                    },
                };
            }
            if let Some(token) = still_valid {
                return Ok(token.access_token);
            }
            if Instant::now() >= deadline {
                return Err(TokenError::Timeout);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Drops `failing` from the local and shared cache, unless it was replaced already (so a
    /// late failure never throws away a fresh token another instance just fetched).
    pub async fn invalidate(&self, failing: &str) -> Result<(), TokenError> {
        let mut local = self.local.lock().await;
        if local.as_ref().is_some_and(|t| t.access_token == failing) {
            *local = None;
        }
        if let Some((token, bytes)) = self.read_shared().await?
            && token.access_token == failing
        {
            self.kv.delete_if_equals(&self.cache_key(), &bytes).await?;
        }
        *self.invalidated.lock().unwrap_or_else(|p| p.into_inner()) = Some(failing.to_owned());
        Ok(())
    }

    async fn fetch_and_publish(&self) -> Result<CachedToken, TokenError> {
        let invalidated = self
            .invalidated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut token = self.fetch(false).await?;
        if self.config.endpoint == TokenEndpoint::StableToken
            && invalidated.as_deref() == Some(token.access_token.as_str())
        {
            // stable_token hands out the current token until it rotates; WeChat refused that
            // one, so ask for a new one (limited to 20 a day, hence only here).
            token = self.fetch(true).await?;
        }
        let ttl_ms = (token.expires_at_ms - self.clock.unix_ms()).max(1000);
        let bytes = serde_json::to_vec(&token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        self.kv
            .set(
                &self.cache_key(),
                &bytes,
                Some(Duration::from_millis(ttl_ms as u64)),
            )
            .await?;
        Ok(token)
    }

    async fn fetch(&self, force_refresh: bool) -> Result<CachedToken, TokenError> {
        let c = &self.config;
        let request = match c.endpoint {
            TokenEndpoint::StableToken => self
                .http
                .post(format!("{}/cgi-bin/stable_token", c.api_base))
                .json(&json!({
                    "grant_type": "client_credential",
                    "appid": c.app_id,
                    "secret": c.app_secret.expose(),
                    "force_refresh": force_refresh,
                })),
            TokenEndpoint::Classic => self
                .http
                .get(format!("{}/cgi-bin/token", c.api_base))
                .query(&[
                    ("grant_type", "client_credential"),
                    ("appid", c.app_id.as_str()),
                    ("secret", c.app_secret.expose()),
                ]),
        };
        // reqwest errors may carry the URL, and the classic URL carries the secret.
        let response = request
            .send()
            .await
            .map_err(|e| TokenError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(TokenError::Http(status.as_u16()));
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| TokenError::Malformed(e.without_url().to_string()))?;
        if answer.errcode != 0 {
            return Err(TokenError::Api {
                code: answer.errcode,
                message: answer.errmsg,
            });
        }
        let (Some(access_token), Some(expires_in)) = (answer.access_token, answer.expires_in)
        else {
            return Err(TokenError::Malformed(
                "no access_token or expires_in".to_owned(),
            ));
        };
        if access_token.is_empty() || expires_in <= 0 {
            return Err(TokenError::Malformed(
                "empty access_token or non-positive expires_in".to_owned(),
            ));
        }
        let now = self.clock.unix_ms();
        let lifetime_ms = expires_in.saturating_mul(1000);
        tracing::info!(app_id = %c.app_id, expires_in, force_refresh, "access token fetched");
        Ok(CachedToken {
            access_token,
            expires_at_ms: now + lifetime_ms,
            refresh_at_ms: now + (lifetime_ms as f64 * REFRESH_AT_SHARE) as i64,
        })
    }
}
