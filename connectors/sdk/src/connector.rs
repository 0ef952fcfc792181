//! The seam between the daemon and a channel.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigProblem, ConnectorLimits};
use crate::conversation::ConversationId;
use crate::inbound::Inbound;
use crate::reply::Reply;
use crate::services::ConnectorContext;

/// One configured account on one channel (one WeChat official account, one SMS number...).
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// Channel kind, as in `[[connectors.KIND]]` and the first part of HTTP paths.
    fn kind(&self) -> &'static str;

    /// The configured id, unique per kind.
    fn id(&self) -> &str;

    /// The limits the daemon enforces for this connector.
    fn limits(&self) -> &ConnectorLimits;

    /// The HTTP routes of this connector, mounted under `/{kind}/{id}`. Handlers call
    /// [`Inbound::accept`] and answer the channel only after it returns.
    fn routes(&self, inbound: Inbound) -> Router;

    /// Long-lived work (token refresh, housekeeping) until `shutdown` fires.
    async fn run(&self, shutdown: CancellationToken) {
        let _ = shutdown;
    }

    /// What the operator console shows of this connector's own state (a token's expiry, a
    /// breaker), as a JSON object; nothing by default. Must not call out to the channel.
    async fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Sends one reply to the channel.
    async fn deliver(
        &self,
        reply: &Reply,
        recipient: &Recipient,
    ) -> Result<Delivered, DeliveryError>;
}

/// Who a reply goes to, taken from its conversation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The parsed conversation id.
    pub conversation: ConversationId,
}

impl Recipient {
    /// The user's id in the channel.
    pub fn channel_user_id(&self) -> &str {
        &self.conversation.channel_user_id
    }
}

/// A reply the channel took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The channel's own message id, where it gives one.
    pub channel_message_id: Option<String>,
}

/// Why a reply did not reach the channel. Classification lives here, with the error, so the
/// dispatcher's retry policy is written once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// A passing fault (timeout, 5xx, connection reset): try again later.
    #[error("retryable delivery failure {code:?}: {text}")]
    Retryable {
        /// The channel's error code, if it gave one.
        code: Option<String>,
        /// What went wrong.
        text: String,
        /// How long the channel asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The channel is throttling us: wait, then try again.
    #[error("rate limited by the channel")]
    RateLimited {
        /// How long the channel asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Sending again will not help (bad recipient, rejected content, window closed).
    #[error("permanent delivery failure {code}: {text}")]
    Permanent {
        /// The channel's error code, or a reason of ours (`window_closed`, `opted_out`).
        code: String,
        /// What went wrong.
        text: String,
    },
}

impl DeliveryError {
    /// Whether the dispatcher should try again.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, DeliveryError::Permanent { .. })
    }

    /// The wait the channel asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Retryable { retry_after, .. }
            | DeliveryError::RateLimited { retry_after } => *retry_after,
            DeliveryError::Permanent { .. } => None,
        }
    }

    /// Classifies an HTTP answer from a channel API the common way: 429 rate limited, 408 and
    /// 5xx retryable, other 4xx permanent. Channels with their own codes map those first.
    pub fn from_http_status(
        status: u16,
        body_excerpt: &str,
        retry_after: Option<Duration>,
    ) -> Self {
        let text = format!("http {status}: {body_excerpt}");
        match status {
            429 => DeliveryError::RateLimited { retry_after },
            408 | 500..=599 => DeliveryError::Retryable {
                code: Some(status.to_string()),
                text,
                retry_after,
            },
            _ => DeliveryError::Permanent {
                code: status.to_string(),
                text,
            },
        }
    }

    /// Classifies a transport error: every failure to get an answer is worth retrying. The
    /// text keeps the request URL; where it may carry a token use [`DeliveryError::transport`].
    pub fn from_transport(err: &reqwest::Error) -> Self {
        DeliveryError::Retryable {
            code: None,
            text: format!("transport: {err}"),
            retry_after: None,
        }
    }

    /// Classifies a transport error as retryable, with [`transport_text`]: no URL, every
    /// cause named.
    pub fn transport(err: reqwest::Error) -> Self {
        DeliveryError::Retryable {
            code: None,
            text: transport_text(err),
            retry_after: None,
        }
    }
}

/// Describes a failed request for errors and logs: `transport: ` and the error without its
/// URL (which may carry a token in its query), followed by each cause (reqwest's own text
/// says only "error sending request"; the cause says "connection refused").
pub fn transport_text(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = format!("transport: {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why a connector could not be built from its config.
#[derive(Debug, thiserror::Error)]
#[error("invalid connector config")]
pub struct BuildError(pub Vec<ConfigProblem>);

impl From<ConfigProblem> for BuildError {
    fn from(problem: ConfigProblem) -> Self {
        BuildError(vec![problem])
    }
}

/// How the daemon's registry makes a connector of one kind: its typed config table and the
/// build step. `check-config` builds every connector too, so building must not do I/O beyond
/// reading secret files.
pub trait ConnectorFactory: 'static {
    /// The channel kind, as in `[[connectors.KIND]]`.
    const KIND: &'static str;

    /// The connector's own config table, deserialized with unknown keys denied.
    type Config: DeserializeOwned + Send + Sync + 'static;

    /// The configured id of one table.
    fn id(config: &Self::Config) -> &str;

    /// Checks the table and builds the live connector.
    fn build(
        config: &Self::Config,
        context: &ConnectorContext,
    ) -> Result<Arc<dyn Connector>, BuildError>;
}

/// Reads at most `max_bytes` of an answer's body and stops there: a channel API's answers are
/// small, and one that is not must not hold a delivery in memory.
pub async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut answer = Vec::new();
    while answer.len() < max_bytes {
        let Some(chunk) = response.chunk().await? else {
            break;
        };
        let room = max_bytes - answer.len();
        answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(answer)
}

/// Parses a `Retry-After` header given in seconds (the form channel APIs use).
pub fn parse_retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_classified() {
        assert!(matches!(
            DeliveryError::from_http_status(429, "", None),
            DeliveryError::RateLimited { .. }
        ));
        assert!(DeliveryError::from_http_status(503, "", None).is_retryable());
        assert!(DeliveryError::from_http_status(408, "", None).is_retryable());
        assert!(!DeliveryError::from_http_status(400, "", None).is_retryable());
        assert!(!DeliveryError::from_http_status(410, "", None).is_retryable());
    }

    #[tokio::test]
    async fn answers_are_read_up_to_the_cap() {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(err) => panic!("bind: {err}"),
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let app = Router::new().route("/big", axum::routing::get(|| async { "x".repeat(100_000) }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let client = reqwest::Client::new();
        for (cap, want) in [(10, 10), (100_000, 100_000), (1 << 20, 100_000), (0, 0)] {
            let response = match client.get(format!("http://{addr}/big")).send().await {
                Ok(response) => response,
                Err(err) => panic!("get: {err}"),
            };
            let body = read_capped(response, cap).await.map(|b| b.len());
            assert_eq!(body.ok(), Some(want), "cap {cap}");
        }
    }

    #[tokio::test]
    async fn transport_errors_name_their_cause_but_not_the_url() {
        // A port that was just free: the connection is refused.
        let port = match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(listener) => listener.local_addr().map(|a| a.port()).unwrap_or(9),
            Err(err) => panic!("bind: {err}"),
        };
        let url = format!("http://127.0.0.1:{port}/hook?token=secret-token");
        let Err(err) = reqwest::Client::new().get(&url).send().await else {
            panic!("nothing listens on {port}");
        };
        match DeliveryError::transport(err) {
            DeliveryError::Retryable { code, text, .. } => {
                assert_eq!(code, None);
                assert!(text.starts_with("transport: "), "{text}");
                assert!(!text.contains("secret-token"), "{text}");
                assert!(!text.contains(&port.to_string()), "{text}");
                assert!(text.matches(": ").count() >= 2, "a cause is named: {text}");
            }
            other => panic!("expected retryable, got {other:?}"),
        }
    }
}
