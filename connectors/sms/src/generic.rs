//! The generic profile: a documented signed-JSON protocol any SMS gateway can be adapted to
//! without code (see the crate README for the wire format). Inbound messages may arrive in
//! parts, which are put back together through the shared key-value store.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_sdk::connector::parse_retry_after;
use switchboard_sdk::phone::normalize_e164;
use switchboard_sdk::schedule::Clock;
use switchboard_sdk::signature::hmac_webhook::HmacSigner;
use switchboard_sdk::{DeliveryError, Event, KvError, KvStore, RejectReason, Rejection};

use crate::message::{DeliveryStatus, IncomingSms, Media, OutgoingSms, excerpt};
use crate::segments::{self, Encoding};

/// Most parts a concatenated SMS can have (the UDH counts parts in one byte).
pub const MAX_PARTS: u16 = 255;

/// How long the progress of a split reply is remembered, so a retry skips parts already
/// sent.
pub const SPLIT_PROGRESS_TTL: Duration = Duration::from_secs(24 * 3600);

fn malformed(detail: impl Into<String>) -> Rejection {
    Rejection::new(RejectReason::Malformed, detail)
}

/// `POST /inbound` body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InboundBody {
    /// The gateway's id of this message (of this part, for concatenated ones).
    pub message_id: String,
    /// Sender number; E.164, or national when `default_country_code` is configured.
    pub from: String,
    /// Our number or sender id it was sent to.
    #[serde(default)]
    pub to: Option<String>,
    /// The text (of this part).
    #[serde(default)]
    pub text: String,
    /// MMS media.
    #[serde(default)]
    pub media: Vec<MediaBody>,
    /// Present when this is one part of a concatenated message.
    #[serde(default)]
    pub concat: Option<Concat>,
}

/// One media item in a generic body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaBody {
    /// Where it can be fetched.
    pub url: String,
    /// MIME type.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// Concatenation info of one part.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Concat {
    /// Reference shared by all parts of one message (the UDH reference number).
    #[serde(rename = "ref")]
    pub reference: String,
    /// This part's number, from 1.
    pub part: u16,
    /// How many parts the message has.
    pub total: u16,
}

/// Parses and checks an inbound body.
pub fn parse_inbound(
    body: &[u8],
    default_cc: Option<&str>,
) -> Result<(InboundBody, String), Rejection> {
    let parsed: InboundBody = serde_json::from_slice(body)
        .map_err(|err| malformed(format!("body is not the documented json: {err}")))?;
    if parsed.message_id.trim().is_empty() {
        return Err(malformed("message_id must not be empty"));
    }
    let from = normalize_e164(&parsed.from, default_cc)
        .map_err(|err| malformed(format!("from is not a phone number: {err}")))?;
    if let Some(concat) = &parsed.concat
        && (concat.reference.trim().is_empty()
            || concat.total == 0
            || concat.total > MAX_PARTS
            || concat.part == 0
            || concat.part > concat.total)
    {
        return Err(malformed("concat needs a ref, 1 <= part <= total <= 255"));
    }
    Ok((parsed, from))
}

/// A stored part of a concatenated message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPart {
    /// The gateway's id of the part.
    pub message_id: String,
    /// Its text.
    pub text: String,
    /// Its media.
    #[serde(default)]
    pub media: Vec<MediaBody>,
}

/// Puts concatenated messages back together in the shared store (so parts may reach
/// different instances). Each part is kept with a TTL; the request that stores the last
/// missing part gets the whole message. Two parts finishing at once may both see it
/// complete: both accept it with the same dedupe key and the pipeline drops the second.
#[derive(Clone)]
pub struct Reassembly {
    kv: Arc<dyn KvStore>,
    prefix: String,
    ttl: Duration,
}

impl Reassembly {
    /// Reassembly for one connector, parts kept for `ttl`.
    pub fn new(kv: Arc<dyn KvStore>, kind: &str, connector_id: &str, ttl: Duration) -> Self {
        Self {
            kv,
            prefix: format!("{kind}:{connector_id}:concat:"),
            ttl,
        }
    }

    fn key(&self, from: &str, concat: &Concat, part: u16) -> String {
        format!(
            "{}{from}:{}:{}:{part}",
            self.prefix, concat.reference, concat.total
        )
    }

    /// Stores `part`; returns every part in order once all are there.
    pub async fn add(
        &self,
        from: &str,
        concat: &Concat,
        part: &StoredPart,
    ) -> Result<Option<Vec<StoredPart>>, KvError> {
        let value = serde_json::to_vec(part).map_err(|e| KvError(e.to_string()))?;
        self.kv
            .set(&self.key(from, concat, concat.part), &value, Some(self.ttl))
            .await?;
        let mut parts = Vec::with_capacity(usize::from(concat.total));
        for n in 1..=concat.total {
            let Some(raw) = self.kv.get(&self.key(from, concat, n)).await? else {
                return Ok(None);
            };
            let stored: StoredPart =
                serde_json::from_slice(&raw).map_err(|e| KvError(e.to_string()))?;
            parts.push(stored);
        }
        Ok(Some(parts))
    }

    /// Forgets the parts of a message that was accepted.
    pub async fn clear(&self, from: &str, concat: &Concat) -> Result<(), KvError> {
        for n in 1..=concat.total {
            self.kv.delete(&self.key(from, concat, n)).await?;
        }
        Ok(())
    }
}

/// Builds the message from a whole body or from all of its parts. A reassembled message
/// takes the first part's message id as dedupe key.
pub fn incoming(
    body: &InboundBody,
    from: String,
    parts: Option<Vec<StoredPart>>,
    raw: Option<Value>,
) -> IncomingSms {
    let to_media = |m: &MediaBody| Media {
        url: m.url.clone(),
        content_type: m.content_type.clone(),
    };
    let (message_id, text, media) = match parts {
        Some(parts) => (
            parts
                .first()
                .map_or_else(|| body.message_id.clone(), |p| p.message_id.clone()),
            parts.iter().map(|p| p.text.as_str()).collect::<String>(),
            parts
                .iter()
                .flat_map(|p| p.media.iter().map(to_media))
                .collect(),
        ),
        None => (
            body.message_id.clone(),
            body.text.clone(),
            body.media.iter().map(to_media).collect(),
        ),
    };
    IncomingSms {
        message_id,
        from,
        to: body.to.clone(),
        text,
        media,
        provider_keyword: None,
        raw,
    }
}

/// `POST /status` body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusBody {
    /// The gateway's message id, as returned by the send call.
    pub message_id: String,
    /// `queued`, `sent`, `delivered`, `undelivered` or `failed` (others are passed on).
    pub status: String,
    /// The gateway's error code, for failures.
    #[serde(default)]
    pub error_code: Option<Value>,
    /// The gateway's error text.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Whether sending again could help, for failures.
    #[serde(default)]
    pub retryable: Option<bool>,
    /// The recipient.
    #[serde(default)]
    pub to: Option<String>,
    /// The reply id, if the gateway echoes it rather than calling the status_callback URL.
    #[serde(default)]
    pub reply_id: Option<String>,
}

/// Reads a status callback into a `delivery.status` event; the `reply_id` query parameter
/// wins over the body's.
pub fn parse_status(
    body: &[u8],
    query_reply_id: Option<String>,
    default_cc: Option<&str>,
    kind: &str,
    connector_id: &str,
) -> Result<Event, Rejection> {
    let parsed: StatusBody = serde_json::from_slice(body)
        .map_err(|err| malformed(format!("body is not the documented json: {err}")))?;
    if parsed.message_id.trim().is_empty() || parsed.status.trim().is_empty() {
        return Err(malformed("message_id and status must not be empty"));
    }
    let receipt = DeliveryStatus {
        message_id: parsed.message_id,
        reply_id: query_reply_id.or(parsed.reply_id),
        to: parsed
            .to
            .as_deref()
            .and_then(|to| normalize_e164(to, default_cc).ok()),
        status: parsed.status.trim().to_ascii_lowercase(),
        error_code: match parsed.error_code {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        },
    };
    let mut event = receipt.to_event(kind, connector_id);
    if receipt.failed() {
        event.retryable = Some(parsed.retryable.unwrap_or(false));
        event.code = receipt.error_code;
        event.text = parsed.error_message;
    }
    Ok(event)
}

/// The send request body.
#[derive(Debug, Serialize)]
struct SendBody<'a> {
    id: String,
    reply_id: &'a str,
    to: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    text: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    media_urls: &'a [String],
    part: usize,
    parts: usize,
    encoding: Encoding,
    segments: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_callback: Option<&'a str>,
}

/// The send answer.
#[derive(Debug, Default, Deserialize)]
struct SendAnswer {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    error: Option<SendError>,
}

#[derive(Debug, Deserialize)]
struct SendError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    retryable: Option<bool>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    sent: usize,
    first_id: Option<String>,
}

/// Sends replies to the configured endpoint as signed JSON.
#[derive(Clone)]
pub struct GenericClient {
    /// HTTP client from the daemon.
    pub http: reqwest::Client,
    /// The endpoint.
    pub send_url: String,
    /// Signs each request.
    pub signer: HmacSigner,
    /// The `from` field.
    pub from: Option<String>,
    /// One request per part.
    pub split: bool,
    /// Time for signatures.
    pub clock: Clock,
    /// Split progress store.
    pub kv: Arc<dyn KvStore>,
    /// Key prefix for split progress (`sms:{id}:sent:`).
    pub progress_prefix: String,
}

impl GenericClient {
    /// Sends `sms` for reply `reply_id`; returns the gateway's id of the (first) message.
    pub async fn send(
        &self,
        reply_id: &str,
        to: &str,
        sms: &OutgoingSms,
        status_callback: Option<&str>,
    ) -> Result<Option<String>, DeliveryError> {
        let count = segments::count(&sms.text);
        let parts = if self.split {
            segments::split(&sms.text)
        } else {
            vec![sms.text.clone()]
        };
        if parts.len() <= 1 {
            let body = SendBody {
                id: reply_id.to_owned(),
                reply_id,
                to,
                from: self.from.as_deref(),
                text: &sms.text,
                media_urls: &sms.media_urls,
                part: 1,
                parts: 1,
                encoding: count.encoding,
                segments: count.segments,
                status_callback,
            };
            return self.post(&body).await;
        }
        let key = format!("{}{reply_id}", self.progress_prefix);
        let mut progress: Progress = match self.kv.get(&key).await {
            Ok(Some(raw)) => serde_json::from_slice(&raw).unwrap_or_default(),
            Ok(None) => Progress::default(),
            Err(err) => {
                return Err(DeliveryError::Retryable {
                    code: None,
                    text: err.to_string(),
                    retry_after: None,
                });
            }
        };
        let total = parts.len();
        for (i, text) in parts.iter().enumerate().skip(progress.sent) {
            let body = SendBody {
                id: format!("{reply_id}:{}", i + 1),
                reply_id,
                to,
                from: self.from.as_deref(),
                text,
                media_urls: if i == 0 { &sms.media_urls } else { &[] },
                part: i + 1,
                parts: total,
                encoding: count.encoding,
                segments: 1,
                status_callback,
            };
            let id = self.post(&body).await?;
            progress.sent = i + 1;
            if i == 0 {
                progress.first_id = id;
            }
            // Losing this write only risks resending a part on retry, never losing one.
            if let Ok(value) = serde_json::to_vec(&progress)
                && let Err(err) = self.kv.set(&key, &value, Some(SPLIT_PROGRESS_TTL)).await
            {
                tracing::warn!(error = %err, "could not record split sms progress");
            }
        }
        Ok(progress.first_id)
    }

    async fn post(&self, body: &SendBody<'_>) -> Result<Option<String>, DeliveryError> {
        let bytes = serde_json::to_vec(body).map_err(|err| DeliveryError::Permanent {
            code: "encode".into(),
            text: err.to_string(),
        })?;
        let mut request = self
            .http
            .post(&self.send_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in self.signer.sign(&bytes, (self.clock)()) {
            request = request.header(name, value);
        }
        let response = request
            .body(bytes)
            .send()
            .await
            .map_err(DeliveryError::transport)?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
        let raw = response.bytes().await.map_err(DeliveryError::transport)?;
        let answer: Option<SendAnswer> = serde_json::from_slice(&raw).ok();
        classify_answer(status, answer, &raw, retry_after)
    }
}

fn classify_answer(
    status: u16,
    answer: Option<SendAnswer>,
    raw: &[u8],
    retry_after: Option<Duration>,
) -> Result<Option<String>, DeliveryError> {
    let success = (200..300).contains(&status);
    match answer {
        Some(SendAnswer {
            error: None,
            message_id,
        }) if success => Ok(message_id),
        // A 2xx whose body we cannot read still means the gateway took the message.
        None if success => Ok(None),
        Some(SendAnswer {
            error: Some(error), ..
        }) => {
            let code = error.code.unwrap_or_else(|| status.to_string());
            let text = error.message.unwrap_or_default();
            if status == 429 || code == "rate_limited" {
                return Err(DeliveryError::RateLimited { retry_after });
            }
            let retryable = error.retryable.unwrap_or(matches!(status, 408 | 500..=599));
            Err(if retryable {
                DeliveryError::Retryable {
                    code: Some(code),
                    text,
                    retry_after,
                }
            } else {
                DeliveryError::Permanent { code, text }
            })
        }
        _ => Err(DeliveryError::from_http_status(
            status,
            &excerpt(raw),
            retry_after,
        )),
    }
}

#[cfg(test)]
mod tests {
    use switchboard_sdk::services::MemoryKv;

    use super::*;

    #[test]
    fn inbound_body_is_checked() {
        let ok = br#"{"message_id":"g1","from":"13812345678","text":"hi"}"#;
        let (body, from) = parse_inbound(ok, Some("86")).unwrap();
        assert_eq!(from, "+8613812345678");
        assert_eq!(body.text, "hi");
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "json"),
            (br#"{"message_id":"","from":"+8613812345678"}"#, "message_id"),
            (br#"{"message_id":"g","from":"13812345678"}"#, "country code"),
            (
                br#"{"message_id":"g","from":"+8613812345678","concat":{"ref":"a","part":3,"total":2}}"#,
                "concat",
            ),
            (
                br#"{"message_id":"g","from":"+8613812345678","concat":{"ref":"a","part":1,"total":0}}"#,
                "concat",
            ),
        ];
        for (raw, mentions) in cases {
            let err = parse_inbound(raw, None).unwrap_err();
            assert_eq!(err.reason, RejectReason::Malformed);
            assert!(err.detail.contains(mentions), "{}", err.detail);
        }
    }

    #[tokio::test]
    async fn parts_complete_in_any_order_and_expire() {
        let kv = Arc::new(MemoryKv::default());
        let store = Reassembly::new(kv.clone(), "sms", "gw", Duration::from_secs(60));
        let concat = |part| Concat {
            reference: "r1".into(),
            part,
            total: 3,
        };
        let part = |n: u16, text: &str| StoredPart {
            message_id: format!("g{n}"),
            text: text.into(),
            media: vec![],
        };
        let from = "+8613812345678";
        assert_eq!(
            store.add(from, &concat(3), &part(3, "C")).await.unwrap(),
            None
        );
        assert_eq!(
            store.add(from, &concat(1), &part(1, "A")).await.unwrap(),
            None
        );
        // A resent part is stored again, not counted twice.
        assert_eq!(
            store.add(from, &concat(1), &part(1, "A")).await.unwrap(),
            None
        );
        let all = store
            .add(from, &concat(2), &part(2, "B"))
            .await
            .unwrap()
            .unwrap();
        let body = InboundBody {
            message_id: "g2".into(),
            from: from.into(),
            to: None,
            text: "B".into(),
            media: vec![],
            concat: Some(concat(2)),
        };
        let sms = incoming(&body, from.into(), Some(all), None);
        assert_eq!(sms.text, "ABC");
        assert_eq!(sms.message_id, "g1");
        store.clear(from, &concat(1)).await.unwrap();
        assert!(kv.is_empty());

        let short = Reassembly::new(kv.clone(), "sms", "gw", Duration::from_millis(1));
        assert_eq!(
            short.add(from, &concat(1), &part(1, "A")).await.unwrap(),
            None
        );
        assert_eq!(kv.len(), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while kv.prune() == 0 && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert!(kv.is_empty(), "an incomplete part expires");
    }

    #[test]
    fn status_body_reads_reply_id_from_query_first() {
        let body = br#"{"message_id":"m1","status":"FAILED","error_code":4001,"error_message":"blocked","to":"+8613812345678","reply_id":"from-body"}"#;
        let event = parse_status(body, Some("from-query".into()), None, "sms", "gw").unwrap();
        assert_eq!(event.reply_id.as_deref(), Some("from-query"));
        assert_eq!(event.data["status"], "failed");
        assert_eq!(event.data["error_code"], "4001");
        assert_eq!(event.retryable, Some(false));
        assert_eq!(event.text.as_deref(), Some("blocked"));
        let event = parse_status(body, None, None, "sms", "gw").unwrap();
        assert_eq!(event.reply_id.as_deref(), Some("from-body"));
        assert!(parse_status(b"{}", None, None, "sms", "gw").is_err());
    }

    #[test]
    fn answers_are_classified() {
        let ok = |id: &str| SendAnswer {
            message_id: Some(id.into()),
            error: None,
        };
        let err = |code: &str, retryable: Option<bool>| SendAnswer {
            message_id: None,
            error: Some(SendError {
                code: Some(code.into()),
                message: Some("m".into()),
                retryable,
            }),
        };
        assert_eq!(
            classify_answer(200, Some(ok("x")), b"", None),
            Ok(Some("x".into()))
        );
        assert_eq!(classify_answer(202, None, b"accepted", None), Ok(None));
        assert!(matches!(
            classify_answer(200, Some(err("blocked", None)), b"", None),
            Err(DeliveryError::Permanent { code, .. }) if code == "blocked"
        ));
        assert!(matches!(
            classify_answer(200, Some(err("rate_limited", None)), b"", None),
            Err(DeliveryError::RateLimited { .. })
        ));
        assert!(matches!(
            classify_answer(503, Some(err("busy", None)), b"", None),
            Err(DeliveryError::Retryable { .. })
        ));
        assert!(matches!(
            classify_answer(400, Some(err("later", Some(true))), b"", None),
            Err(DeliveryError::Retryable { .. })
        ));
        assert!(matches!(
            classify_answer(429, None, b"", None),
            Err(DeliveryError::RateLimited { .. })
        ));
        assert!(matches!(
            classify_answer(404, None, b"nope", None),
            Err(DeliveryError::Permanent { .. })
        ));
    }
}
