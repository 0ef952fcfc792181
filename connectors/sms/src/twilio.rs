//! Twilio Programmable Messaging: the inbound and status-callback webhook fields, the
//! Messages API call, and what Twilio's error codes mean for retrying.

use std::time::Duration;

use serde::Deserialize;
use switchboard_sdk::connector::parse_retry_after;
use switchboard_sdk::phone::{is_e164, normalize_e164};
use switchboard_sdk::webhook::FormParams;
use switchboard_sdk::{DeliveryError, Event, RejectReason, Rejection, Secret};

use crate::config::TwilioSender;
use crate::message::{DeliveryStatus, IncomingSms, Media, OutgoingSms, excerpt};
use crate::optout::Keyword;

/// The empty TwiML answer: "received, send nothing back".
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// Twilio refuses bodies longer than this many characters (error 21617).
pub const MAX_BODY_CHARS: usize = 1600;

/// Twilio sends at most this many media items with one message.
const MAX_MEDIA: usize = 10;

fn malformed(detail: impl Into<String>) -> Rejection {
    Rejection::new(RejectReason::Malformed, detail)
}

/// Reads an incoming-message webhook (fields as documented in Twilio's "Messaging webhooks"
/// reference: MessageSid, From, To, Body, NumMedia, MediaUrl{N}, MediaContentType{N},
/// OptOutType).
pub fn parse_incoming(params: &FormParams, keep_raw: bool) -> Result<IncomingSms, Rejection> {
    let message_id = params
        .non_empty("MessageSid")
        .or_else(|| params.non_empty("SmsSid"))
        .ok_or_else(|| malformed("missing MessageSid"))?
        .to_owned();
    let from_raw = params
        .non_empty("From")
        .ok_or_else(|| malformed("missing From"))?;
    let from = normalize_e164(from_raw, None)
        .map_err(|err| malformed(format!("From is not a phone number: {err}")))?;
    let to = params.non_empty("To").map(str::to_owned);
    let text = params.get("Body").unwrap_or("").to_owned();
    let num_media = match params.non_empty("NumMedia") {
        None => 0,
        Some(n) => n
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_MEDIA)
            .ok_or_else(|| malformed("NumMedia is not a number from 0 to 10"))?,
    };
    let mut media = Vec::with_capacity(num_media);
    for i in 0..num_media {
        let url = params.non_empty(&format!("MediaUrl{i}")).ok_or_else(|| {
            malformed(format!(
                "NumMedia is {num_media} but MediaUrl{i} is missing"
            ))
        })?;
        media.push(Media {
            url: url.to_owned(),
            content_type: params
                .non_empty(&format!("MediaContentType{i}"))
                .map(str::to_owned),
        });
    }
    // With Advanced Opt-Out Twilio has already classified the keyword for us.
    let provider_keyword = match params.non_empty("OptOutType").map(str::to_ascii_uppercase) {
        Some(t) if t == "STOP" => Some(Keyword::OptOut),
        Some(t) if t == "START" => Some(Keyword::OptIn),
        _ => None,
    };
    Ok(IncomingSms {
        message_id,
        from,
        to,
        text,
        media,
        provider_keyword,
        raw: keep_raw.then(|| params.to_json()),
    })
}

/// Reads a status callback (MessageSid, MessageStatus, ErrorCode, To) into a
/// `delivery.status` event; `reply_id` comes from the `?reply_id=` we put on the
/// StatusCallback URL.
pub fn parse_status(
    params: &FormParams,
    reply_id: Option<String>,
    kind: &str,
    connector_id: &str,
) -> Result<Event, Rejection> {
    let sid = params
        .non_empty("MessageSid")
        .or_else(|| params.non_empty("SmsSid"))
        .ok_or_else(|| malformed("missing MessageSid"))?;
    let status = params
        .non_empty("MessageStatus")
        .or_else(|| params.non_empty("SmsStatus"))
        .ok_or_else(|| malformed("missing MessageStatus"))?
        .to_ascii_lowercase();
    let receipt = DeliveryStatus {
        message_id: sid.to_owned(),
        reply_id,
        to: params
            .non_empty("To")
            .and_then(|to| normalize_e164(to, None).ok()),
        status,
        error_code: params.non_empty("ErrorCode").map(str::to_owned),
    };
    let mut event = receipt.to_event(kind, connector_id);
    if receipt.failed() {
        let class = receipt
            .error_code
            .as_deref()
            .and_then(|c| c.parse::<u32>().ok())
            .and_then(error_class);
        event.retryable = Some(class.is_some_and(|(class, _)| class != CodeClass::Permanent));
        event.code = receipt.error_code;
        event.text = class.map(|(_, text)| text.to_owned());
    }
    Ok(event)
}

/// What an error code means for sending again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    /// Twilio is throttling: wait, then retry.
    RateLimited,
    /// A passing condition: retry later.
    Retryable,
    /// Retrying will not help.
    Permanent,
}

/// The codes this connector knows, from Twilio's error dictionary
/// (<https://www.twilio.com/docs/api/errors>), with their meaning.
pub fn error_class(code: u32) -> Option<(CodeClass, &'static str)> {
    use CodeClass::*;
    Some(match code {
        20003 => (
            Permanent,
            "authentication failed: check account_sid and auth_token",
        ),
        20404 => (Permanent, "resource not found"),
        20429 => (RateLimited, "too many requests"),
        21211 => (Permanent, "invalid 'To' phone number"),
        21408 => (
            Permanent,
            "permission to send to this region is not enabled",
        ),
        21606 => (
            Permanent,
            "the 'From' number is not a valid message-capable number",
        ),
        21610 => (Permanent, "recipient has unsubscribed (replied STOP)"),
        21612 => (
            Permanent,
            "the 'To' number cannot be reached from this sender",
        ),
        21614 => (Permanent, "'To' is not a valid mobile number"),
        21617 => (Permanent, "the body exceeds 1600 characters"),
        30001 => (
            Retryable,
            "queue overflow: too many messages queued for this sender",
        ),
        30002 => (Permanent, "account suspended"),
        30003 => (
            Retryable,
            "unreachable destination handset (switched off or out of coverage)",
        ),
        30004 => (Permanent, "message blocked by the recipient or carrier"),
        30005 => (Permanent, "unknown destination handset"),
        30006 => (Permanent, "landline or unreachable carrier"),
        30007 => (Permanent, "message filtered by the carrier"),
        30008 => (Retryable, "unknown error from the carrier"),
        30009 => (Retryable, "missing segment of a concatenated message"),
        30010 => (Permanent, "message price exceeds the configured max price"),
        _ => return None,
    })
}

/// Maps an answer of the Messages API that is not a success. Twilio's own code wins over
/// the HTTP status; 429 and 20429 are always rate limits, never permanent.
pub fn classify_failure(
    status: u16,
    code: Option<u32>,
    message: &str,
    retry_after: Option<Duration>,
) -> DeliveryError {
    if status == 429 || code == Some(20429) {
        return DeliveryError::RateLimited { retry_after };
    }
    let known = code.and_then(|c| error_class(c).map(|class| (c, class)));
    match known {
        Some((code, (class, meaning))) => {
            let text = if message.is_empty() {
                meaning.to_owned()
            } else {
                message.to_owned()
            };
            match class {
                CodeClass::RateLimited => DeliveryError::RateLimited { retry_after },
                CodeClass::Retryable => DeliveryError::Retryable {
                    code: Some(code.to_string()),
                    text,
                    retry_after,
                },
                CodeClass::Permanent => DeliveryError::Permanent {
                    code: code.to_string(),
                    text,
                },
            }
        }
        None => match (
            DeliveryError::from_http_status(status, message, retry_after),
            code,
        ) {
            // Keep Twilio's code where it gave one: it is what an operator looks up.
            (DeliveryError::Permanent { text, .. }, Some(code)) => DeliveryError::Permanent {
                code: code.to_string(),
                text,
            },
            (
                DeliveryError::Retryable {
                    text, retry_after, ..
                },
                Some(code),
            ) => DeliveryError::Retryable {
                code: Some(code.to_string()),
                text,
                retry_after,
            },
            (other, _) => other,
        },
    }
}

/// A Twilio REST error body.
#[derive(Debug, Deserialize)]
struct ApiError {
    code: Option<u32>,
    #[serde(default)]
    message: String,
}

/// The part of a Message resource we read.
#[derive(Debug, Deserialize)]
struct ApiMessage {
    sid: Option<String>,
}

/// Sends messages through `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`.
#[derive(Debug, Clone)]
pub struct TwilioClient {
    /// HTTP client from the daemon.
    pub http: reqwest::Client,
    /// API base without trailing `/`.
    pub api_base: String,
    /// Account SID (basic-auth user).
    pub account_sid: String,
    /// Auth token (basic-auth password).
    pub auth_token: Secret,
    /// The sender.
    pub sender: TwilioSender,
}

impl TwilioClient {
    /// The Messages endpoint of the account.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.api_base, self.account_sid
        )
    }

    /// Sends `sms` to `to` as one message (Twilio concatenates long bodies itself) and
    /// returns the message sid.
    pub async fn send(
        &self,
        to: &str,
        sms: &OutgoingSms,
        status_callback: Option<&str>,
    ) -> Result<Option<String>, DeliveryError> {
        if !is_e164(to) {
            return Err(DeliveryError::Permanent {
                code: "invalid_recipient".into(),
                text: "recipient is not an E.164 phone number".into(),
            });
        }
        if sms.text.chars().count() > MAX_BODY_CHARS {
            return Err(DeliveryError::Permanent {
                code: "body_too_long".into(),
                text: format!("twilio takes at most {MAX_BODY_CHARS} characters per message"),
            });
        }
        let mut form: Vec<(&str, &str)> = vec![("To", to)];
        match &self.sender {
            TwilioSender::From(from) => form.push(("From", from)),
            TwilioSender::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
        }
        if !sms.text.is_empty() {
            form.push(("Body", &sms.text));
        }
        for url in &sms.media_urls {
            form.push(("MediaUrl", url));
        }
        if let Some(callback) = status_callback {
            form.push(("StatusCallback", callback));
        }
        let response = self
            .http
            .post(self.messages_url())
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .form(&form)
            .send()
            .await
            .map_err(DeliveryError::transport)?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
        let body = response.bytes().await.map_err(DeliveryError::transport)?;
        if (200..300).contains(&status) {
            // The message was created; a body we cannot read must not cause a resend.
            return Ok(serde_json::from_slice::<ApiMessage>(&body)
                .ok()
                .and_then(|m| m.sid));
        }
        let error: Option<ApiError> = serde_json::from_slice(&body).ok();
        let (code, message) = match error {
            Some(e) => (e.code, e.message),
            None => (None, excerpt(&body)),
        };
        Err(classify_failure(status, code, &message, retry_after))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn form(pairs: &[(&str, &str)]) -> FormParams {
        FormParams(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn incoming_reads_text_media_and_opt_out_type() {
        let params = form(&[
            ("MessageSid", "MM1"),
            ("From", "+8613812345678"),
            ("To", "+15005550006"),
            ("Body", "look"),
            ("NumMedia", "2"),
            ("MediaUrl0", "https://api.twilio.com/m0"),
            ("MediaContentType0", "image/jpeg"),
            ("MediaUrl1", "https://api.twilio.com/m1"),
            ("OptOutType", "STOP"),
        ]);
        let sms = parse_incoming(&params, true).unwrap();
        assert_eq!(sms.message_id, "MM1");
        assert_eq!(sms.from, "+8613812345678");
        assert_eq!(sms.media.len(), 2);
        assert_eq!(sms.media[0].content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(sms.media[1].content_type, None);
        assert_eq!(sms.provider_keyword, Some(Keyword::OptOut));
        assert!(sms.raw.is_some());
    }

    #[test]
    fn incoming_refuses_what_it_cannot_use() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("From", "+8613812345678")], "MessageSid"),
            (&[("MessageSid", "SM1")], "From"),
            (&[("MessageSid", "SM1"), ("From", "alice")], "From"),
            (
                &[
                    ("MessageSid", "SM1"),
                    ("From", "+8613812345678"),
                    ("NumMedia", "x"),
                ],
                "NumMedia",
            ),
            (
                &[
                    ("MessageSid", "SM1"),
                    ("From", "+8613812345678"),
                    ("NumMedia", "1"),
                ],
                "MediaUrl0",
            ),
        ];
        for (pairs, mentions) in cases {
            let err = parse_incoming(&form(pairs), false).unwrap_err();
            assert_eq!(err.reason, RejectReason::Malformed);
            assert!(err.detail.contains(mentions), "{}", err.detail);
        }
    }

    #[test]
    fn status_becomes_an_event_with_reply_id_and_classified_error() {
        let params = form(&[
            ("MessageSid", "SM9"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
            ("To", "+8613812345678"),
        ]);
        let event = parse_status(&params, Some("r-1".into()), "sms", "main").unwrap();
        assert_eq!(event.kind, "delivery.status");
        assert_eq!(event.channel_message_id.as_deref(), Some("SM9"));
        assert_eq!(event.reply_id.as_deref(), Some("r-1"));
        assert_eq!(
            event.conversation_id.as_deref(),
            Some("sms:main:+8613812345678")
        );
        assert_eq!(event.data["status"], "undelivered");
        assert_eq!(event.data["error_code"], "30003");
        assert_eq!(event.retryable, Some(true));

        let delivered = form(&[("MessageSid", "SM9"), ("MessageStatus", "delivered")]);
        let event = parse_status(&delivered, None, "sms", "main").unwrap();
        assert_eq!(event.data["error_code"], Value::Null);
        assert_eq!(event.retryable, None);
    }

    #[test]
    fn failures_are_classified_by_code_then_status() {
        let rate = |e: &DeliveryError| matches!(e, DeliveryError::RateLimited { .. });
        let permanent = |e: &DeliveryError, want: &str| matches!(e, DeliveryError::Permanent { code, .. } if code == want);
        let retryable = |e: &DeliveryError| matches!(e, DeliveryError::Retryable { .. });
        assert!(rate(&classify_failure(429, None, "", None)));
        assert!(rate(&classify_failure(429, Some(21211), "", None)));
        assert!(rate(&classify_failure(400, Some(20429), "", None)));
        assert!(permanent(
            &classify_failure(400, Some(21211), "bad", None),
            "21211"
        ));
        assert!(permanent(
            &classify_failure(400, Some(21610), "", None),
            "21610"
        ));
        assert!(permanent(
            &classify_failure(400, Some(21999), "", None),
            "21999"
        ));
        assert!(permanent(
            &classify_failure(401, Some(20003), "", None),
            "20003"
        ));
        assert!(retryable(&classify_failure(400, Some(30001), "", None)));
        assert!(retryable(&classify_failure(503, None, "", None)));
        assert!(retryable(&classify_failure(500, Some(20500), "", None)));
        for code in 30001..=30010 {
            assert!(error_class(code).is_some(), "{code} is documented");
        }
    }
}
