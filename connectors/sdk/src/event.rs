//! `switchboard.event.v1`: what the daemon reports on `switchboard.events`
//! (delivery receipts, flags, call events). The routing key is the event's `kind`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// The schema name of an event.
pub const EVENT_SCHEMA: &str = "switchboard.event.v1";

/// Something that happened, for helpdesks and supervisors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Always `switchboard.event.v1`.
    pub schema: String,
    /// ULID of this event.
    pub id: String,
    /// What happened: `delivery.succeeded`, `delivery.failed`, `conversation.flagged`, `call.*`.
    pub kind: String,
    /// When it happened (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub occurred_at: OffsetDateTime,
    /// The conversation it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The reply it concerns (delivery events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_id: Option<String>,
    /// The channel's own id for the delivered message, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_message_id: Option<String>,
    /// For failures: whether sending again later could succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// For failures: a short machine-readable reason (`permanent`, `retries_exhausted`,
    /// `unknown_connector`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For failures: the channel's error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For failures: the channel's error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Anything else that belongs to this kind of event.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub data: Map<String, Value>,
}

impl Event {
    /// A new event of `kind`, now, with a fresh id.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            schema: EVENT_SCHEMA.to_owned(),
            id: ulid::Ulid::new().to_string(),
            kind: kind.into(),
            occurred_at: OffsetDateTime::now_utc(),
            conversation_id: None,
            reply_id: None,
            channel_message_id: None,
            retryable: None,
            reason: None,
            code: None,
            text: None,
            data: Map::new(),
        }
    }
}
