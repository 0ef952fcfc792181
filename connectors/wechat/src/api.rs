//! Calls to the WeChat API with an access token: customer-service messages, the typing
//! indicator and media download. Every answer is checked for `errcode`, because WeChat
//! reports most failures in a 200.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use switchboard_sdk::DeliveryError;
use switchboard_sdk::connector::parse_retry_after;
use switchboard_sdk::text::truncate_chars;

use crate::token::TokenSource;

/// Errcodes that mean "this access token is not (or no longer) valid".
pub const TOKEN_ERRCODES: [i64; 3] = [40001, 40014, 42001];

/// How much of an unexpected answer is kept in error texts.
const EXCERPT: usize = 200;

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// Classifies a non-zero WeChat `errcode` (reference §5).
pub fn classify_errcode(code: i64, errmsg: &str) -> DeliveryError {
    let permanent = |meaning: &str| DeliveryError::Permanent {
        code: code.to_string(),
        text: format!("{meaning} ({errmsg})"),
    };
    match code {
        -1 => DeliveryError::Retryable {
            code: Some(code.to_string()),
            text: format!("system busy ({errmsg})"),
            retry_after: Some(Duration::from_secs(1)),
        },
        // Per-minute and daily API quotas: waiting is the only cure.
        45011 => DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
        },
        45009 => DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
        },
        // Still failing after one refresh and one retry: worth another try later.
        40001 | 40014 | 42001 => DeliveryError::Retryable {
            code: Some(code.to_string()),
            text: format!("access token refused after a refresh ({errmsg})"),
            retry_after: Some(Duration::from_secs(5)),
        },
        45015 => permanent(
            "outside the 48-hour customer-service window, or the user unfollowed the account",
        ),
        45047 => permanent("per-user reply quota used up until the user writes again"),
        43004 => permanent("the user does not follow the account"),
        40003 => permanent("invalid openid for this account"),
        45002 => permanent("content too long"),
        45008 => permanent("too many articles (one allowed)"),
        40033 => permanent("body carries \\uXXXX escapes or invalid characters"),
        40007 => permanent("invalid media id"),
        48001 => permanent("api not authorized for this account"),
        40164 => permanent("caller ip not in the account's whitelist"),
        _ => permanent("refused by wechat"),
    }
}

/// Why a media file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// WeChat does not know the media id (or it expired after 3 days).
    #[error("media not found")]
    NotFound,
    /// Anything else: token, transport, upstream status.
    #[error("media download failed: {0}")]
    Upstream(String),
}

/// What a media download gave.
pub enum MediaAnswer {
    /// The file itself, to be streamed on.
    File(reqwest::Response),
    /// A video: WeChat answers with a download URL instead of the bytes.
    VideoUrl(String),
}

/// Outcome of one API call with one token.
enum Attempt<T> {
    Done(T),
    TokenRefused,
}

/// The API client of one account.
pub struct Api {
    http: reqwest::Client,
    api_base: String,
    tokens: Arc<TokenSource>,
}

impl Api {
    /// A client for `api_base` (no trailing slash) using `tokens`.
    pub fn new(http: reqwest::Client, api_base: String, tokens: Arc<TokenSource>) -> Self {
        Self {
            http,
            api_base,
            tokens,
        }
    }

    /// The token source, shared with whoever else needs it.
    pub fn tokens(&self) -> &Arc<TokenSource> {
        &self.tokens
    }

    /// POSTs `body` to `path` with a token; on a token errcode invalidates that token,
    /// refreshes and tries exactly once more.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<(), DeliveryError> {
        // serde_json writes raw UTF-8, never \uXXXX escapes (WeChat refuses those: 40033).
        let bytes = serde_json::to_vec(body).map_err(|e| DeliveryError::Permanent {
            code: "unserializable".to_owned(),
            text: e.to_string(),
        })?;
        let token = self.tokens.get().await?;
        if let Attempt::Done(result) = self.post_once(path, &token, &bytes).await {
            return result;
        }
        tracing::info!(path, "access token refused; refreshing and retrying once");
        self.tokens.invalidate(&token).await?;
        let token = self.tokens.get().await?;
        match self.post_once(path, &token, &bytes).await {
            Attempt::Done(result) => result,
            Attempt::TokenRefused => Err(classify_errcode(40001, "after refresh")),
        }
    }

    async fn post_once(
        &self,
        path: &str,
        token: &str,
        body: &[u8],
    ) -> Attempt<Result<(), DeliveryError>> {
        let sent = self
            .http
            .post(format!("{}{path}", self.api_base))
            .query(&[("access_token", token)])
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                return Attempt::Done(Err(DeliveryError::transport(err)));
            }
        };
        let status = response.status();
        let retry_after = parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
        let text = match response.text().await {
            Ok(text) => text,
            Err(err) => {
                return Attempt::Done(Err(DeliveryError::transport(err)));
            }
        };
        if !status.is_success() {
            return Attempt::Done(Err(DeliveryError::from_http_status(
                status.as_u16(),
                &excerpt(&text),
                retry_after,
            )));
        }
        let Ok(answer) = serde_json::from_str::<Status>(&text) else {
            // A proxy or gateway page in a 200: not WeChat's answer, so try again later.
            return Attempt::Done(Err(DeliveryError::Retryable {
                code: None,
                text: format!("unexpected answer: {}", excerpt(&text)),
                retry_after: None,
            }));
        };
        match answer.errcode {
            0 => Attempt::Done(Ok(())),
            code if TOKEN_ERRCODES.contains(&code) => Attempt::TokenRefused,
            code => Attempt::Done(Err(classify_errcode(code, &answer.errmsg))),
        }
    }

    /// Downloads a temporary media file through `/cgi-bin/media/get`, with the same token
    /// refresh-and-retry-once rule as sends.
    pub async fn media_get(&self, media_id: &str) -> Result<MediaAnswer, MediaError> {
        let upstream = |e: DeliveryError| MediaError::Upstream(e.to_string());
        let token = self.tokens.get().await.map_err(|e| upstream(e.into()))?;
        if let Attempt::Done(result) = self.media_once(media_id, &token).await {
            return result;
        }
        self.tokens
            .invalidate(&token)
            .await
            .map_err(|e| upstream(e.into()))?;
        let token = self.tokens.get().await.map_err(|e| upstream(e.into()))?;
        match self.media_once(media_id, &token).await {
            Attempt::Done(result) => result,
            Attempt::TokenRefused => Err(MediaError::Upstream(
                "access token refused after refresh".to_owned(),
            )),
        }
    }

    async fn media_once(
        &self,
        media_id: &str,
        token: &str,
    ) -> Attempt<Result<MediaAnswer, MediaError>> {
        let sent = self
            .http
            .get(format!("{}/cgi-bin/media/get", self.api_base))
            .query(&[("access_token", token), ("media_id", media_id)])
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                return Attempt::Done(Err(MediaError::Upstream(err.without_url().to_string())));
            }
        };
        if !response.status().is_success() {
            return Attempt::Done(Err(MediaError::Upstream(format!(
                "http {}",
                response.status().as_u16()
            ))));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        // Files come with their own type; errors and video links come as JSON (sometimes
        // labelled text/plain).
        if !(content_type.starts_with("application/json") || content_type.starts_with("text/plain"))
        {
            return Attempt::Done(Ok(MediaAnswer::File(response)));
        }
        let text = match response.text().await {
            Ok(text) => text,
            Err(err) => {
                return Attempt::Done(Err(MediaError::Upstream(err.without_url().to_string())));
            }
        };
        let value: Value = match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(_) => {
                return Attempt::Done(Err(MediaError::Upstream(format!(
                    "unexpected answer: {}",
                    excerpt(&text)
                ))));
            }
        };
        if let Some(url) = value.get("video_url").and_then(Value::as_str) {
            return Attempt::Done(Ok(MediaAnswer::VideoUrl(url.to_owned())));
        }
        let code = value.get("errcode").and_then(Value::as_i64).unwrap_or(0);
        match code {
            code if TOKEN_ERRCODES.contains(&code) => Attempt::TokenRefused,
            40007 => Attempt::Done(Err(MediaError::NotFound)),
            code => Attempt::Done(Err(MediaError::Upstream(format!("errcode {code}")))),
        }
    }
}

fn excerpt(text: &str) -> String {
    truncate_chars(text, EXCERPT).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_are_classified_per_the_reference() {
        type Check = Box<dyn Fn(&DeliveryError) -> bool>;
        fn permanent(code: &'static str) -> Check {
            Box::new(move |e| matches!(e, DeliveryError::Permanent { code: c, .. } if c == code))
        }
        let table: Vec<(i64, Check)> = vec![
            (
                -1,
                Box::new(|e| {
                    matches!(
                        e,
                        DeliveryError::Retryable {
                            retry_after: Some(_),
                            ..
                        }
                    )
                }),
            ),
            (
                45009,
                Box::new(|e| {
                    matches!(
                        e,
                        DeliveryError::RateLimited {
                            retry_after: Some(_)
                        }
                    )
                }),
            ),
            (
                45011,
                Box::new(|e| {
                    matches!(
                        e,
                        DeliveryError::RateLimited {
                            retry_after: Some(_)
                        }
                    )
                }),
            ),
            (40001, Box::new(|e| e.is_retryable())),
            (42001, Box::new(|e| e.is_retryable())),
            (45015, (permanent("45015"))),
            (45047, (permanent("45047"))),
            (43004, (permanent("43004"))),
            (40003, (permanent("40003"))),
            (45002, (permanent("45002"))),
            (12345, (permanent("12345"))),
        ];
        for (code, expected) in table {
            let err = classify_errcode(code, "msg");
            assert!(expected(&err), "{code}: {err:?}");
        }
        let text = classify_errcode(45015, "response out of time limit").to_string();
        assert!(
            text.contains("48-hour") && text.contains("response out of time limit"),
            "{text}"
        );
    }
}
