//! One provider callback about a call, read from Twilio's form fields or the generic JSON
//! into the same shape.

use serde::Deserialize;
use serde_json::Value;
use switchboard_sdk::phone::normalize_e164;
use switchboard_sdk::webhook::FormParams;
use switchboard_sdk::{RejectReason, Rejection};

fn malformed(detail: impl Into<String>) -> Rejection {
    Rejection::new(RejectReason::Malformed, detail)
}

/// What a provider told us about a call in one request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CallRequest {
    /// The provider's call id (Twilio CallSid).
    pub call_id: String,
    /// The caller as sent.
    #[serde(default)]
    pub from: Option<String>,
    /// The number called.
    #[serde(default)]
    pub to: Option<String>,
    /// Keys pressed.
    #[serde(default)]
    pub digits: Option<String>,
    /// Recognised speech.
    #[serde(default)]
    pub speech_result: Option<String>,
    /// Call status (`in-progress`, `completed`, `busy`, `no-answer`, `failed`, ...).
    #[serde(default)]
    pub call_status: Option<String>,
    /// Call length in seconds, on completion.
    #[serde(default)]
    pub call_duration: Option<u64>,
    /// `inbound` or an outbound kind.
    #[serde(default)]
    pub direction: Option<String>,
    /// Where the voicemail recording can be fetched.
    #[serde(default)]
    pub recording_url: Option<String>,
    /// Recording length in seconds.
    #[serde(default)]
    pub recording_duration: Option<u64>,
    /// The provider's recording id.
    #[serde(default)]
    pub recording_id: Option<String>,
    /// Transcription of the voicemail.
    #[serde(default)]
    pub transcription_text: Option<String>,
    /// `completed` or `failed`.
    #[serde(default)]
    pub transcription_status: Option<String>,
    /// How the call left the provider queue (Twilio QueueResult: `bridged`, `queue-full`, ...).
    #[serde(default)]
    pub queue_result: Option<String>,
    /// How a dial ended (Twilio DialCallStatus: `completed`, `busy`, `no-answer`, ...).
    #[serde(default)]
    pub dial_status: Option<String>,
    /// The original payload, when raw capture is on.
    #[serde(skip)]
    pub raw: Option<Value>,
}

impl CallRequest {
    /// Reads Twilio's voice webhook fields (Twilio "TwiML voice webhooks" request
    /// parameters: CallSid, From/Caller, To/Called, Digits, SpeechResult, CallStatus,
    /// CallDuration, Direction, RecordingUrl, RecordingDuration, RecordingSid,
    /// TranscriptionText, TranscriptionStatus, QueueResult, DialCallStatus).
    pub fn from_twilio(params: &FormParams, keep_raw: bool) -> Result<Self, Rejection> {
        let text = |name: &str| params.non_empty(name).map(str::to_owned);
        let number = |name: &str| -> Result<Option<u64>, Rejection> {
            params
                .non_empty(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| malformed(format!("{name} is not a whole number")))
                })
                .transpose()
        };
        Ok(Self {
            call_id: text("CallSid").ok_or_else(|| malformed("missing CallSid"))?,
            from: text("From").or_else(|| text("Caller")),
            to: text("To").or_else(|| text("Called")),
            digits: text("Digits"),
            speech_result: text("SpeechResult"),
            call_status: text("CallStatus"),
            call_duration: number("CallDuration")?,
            direction: text("Direction"),
            recording_url: text("RecordingUrl"),
            recording_duration: number("RecordingDuration")?,
            recording_id: text("RecordingSid"),
            transcription_text: text("TranscriptionText"),
            transcription_status: text("TranscriptionStatus"),
            queue_result: text("QueueResult"),
            dial_status: text("DialCallStatus"),
            raw: keep_raw.then(|| params.to_json()),
        })
    }

    /// Reads the generic JSON body (the same fields in snake_case, see the README).
    pub fn from_generic(body: &[u8], keep_raw: bool) -> Result<Self, Rejection> {
        let mut request: CallRequest = serde_json::from_slice(body)
            .map_err(|err| malformed(format!("body is not the documented json: {err}")))?;
        if request.call_id.trim().is_empty() {
            return Err(malformed("call_id must not be empty"));
        }
        if keep_raw {
            request.raw = serde_json::from_slice(body).ok();
        }
        Ok(request)
    }

    /// The caller's conversation user id and E.164 number. A withheld or non-phone caller
    /// ("anonymous", a SIP client) gets a per-call id `anonymous-{call id}` and no number.
    pub fn caller(&self, default_cc: Option<&str>) -> (String, Option<String>) {
        match self
            .from
            .as_deref()
            .and_then(|from| normalize_e164(from, default_cc).ok())
        {
            Some(number) => (number.clone(), Some(number)),
            None => (format!("anonymous-{}", self.call_id), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_fields_are_read_and_checked() {
        let params = FormParams::parse(
            b"CallSid=CA1&From=%2B8613812345678&To=%2B14155550100&Digits=2&CallDuration=42",
        );
        let call = CallRequest::from_twilio(&params, false).unwrap_or_default();
        assert_eq!(call.call_id, "CA1");
        assert_eq!(call.digits.as_deref(), Some("2"));
        assert_eq!(call.call_duration, Some(42));
        assert_eq!(
            call.caller(None),
            (
                "+8613812345678".to_owned(),
                Some("+8613812345678".to_owned())
            )
        );

        let bad = FormParams::parse(b"CallSid=CA1&CallDuration=long");
        let err = CallRequest::from_twilio(&bad, false).unwrap_err();
        assert!(err.detail.contains("CallDuration"), "{}", err.detail);
        let err = CallRequest::from_twilio(&FormParams::parse(b"From=%2B1"), false).unwrap_err();
        assert_eq!(err.reason, RejectReason::Malformed);
    }

    #[test]
    fn anonymous_callers_get_a_per_call_id() {
        let params = FormParams::parse(b"CallSid=CA9&From=anonymous");
        let call = CallRequest::from_twilio(&params, false).unwrap_or_default();
        assert_eq!(call.caller(None), ("anonymous-CA9".to_owned(), None));
    }

    #[test]
    fn generic_json_is_read_with_national_numbers() {
        let call = CallRequest::from_generic(
            br#"{"call_id":"c-1","from":"13812345678","digits":"1","recording_duration":15}"#,
            true,
        )
        .unwrap_or_default();
        assert_eq!(call.caller(Some("86")).1.as_deref(), Some("+8613812345678"));
        assert_eq!(call.recording_duration, Some(15));
        assert!(call.raw.is_some());
        assert!(CallRequest::from_generic(br#"{"from":"x"}"#, false).is_err());
        assert!(CallRequest::from_generic(br#"{"call_id":" "}"#, false).is_err());
    }
}
