//! `switchboard.envelope.v1`: one normalized inbound message, as published to
//! `switchboard.inbound`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::content::Content;

/// The schema name carried in `schema` and in the `x-schema` header.
pub const ENVELOPE_SCHEMA: &str = "switchboard.envelope.v1";

/// One customer message, normalized, enriched and routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// Always `switchboard.envelope.v1`.
    pub schema: String,
    /// ULID of this envelope; also the AMQP `message_id`. Redeliveries keep it.
    pub id: String,
    /// `{channel kind}:{connector id}:{channel user id}`.
    pub conversation_id: String,
    /// Position in the conversation, from 1, without gaps, so consumers can spot gaps and
    /// restore order.
    pub sequence: u64,
    /// Where the message came in.
    pub channel: ChannelRef,
    /// Who sent it.
    pub sender: Sender,
    /// When the daemon received it (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub received_at: OffsetDateTime,
    /// What the message says.
    pub content: Content,
    /// The best intent found, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    /// Things recognised in the text (tracking numbers, order numbers, phones, amounts).
    #[serde(default)]
    pub entities: Vec<Entity>,
    /// Labels for supervisors and routing (`abusive`, `tier_lookup_failed`, ...).
    #[serde(default)]
    pub flags: Vec<String>,
    /// The routing decision.
    pub route: Route,
    /// The key under which duplicates of this message are recognised.
    pub dedupe_key: String,
    /// The channel's original payload, when the connector is configured to keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Value>,
    /// The id of the HTTP request that brought the message in (the channel's
    /// `X-Request-Id`, or one the daemon made); absent for messages that came over a
    /// socket. Also in the `x-request-id` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The channel a message came in on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelRef {
    /// Channel kind: `wechat`, `webchat`, `sms`, `telephony`, `app`.
    pub kind: String,
    /// The connector's configured id.
    pub connector_id: String,
}

/// The customer behind a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Sender {
    /// The user's id in the channel (openid, phone number, app user id).
    pub channel_user_id: String,
    /// The CRM's customer id linking this person across channels, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Customer tier (`standard`, `vip`, ...).
    pub tier: String,
    /// Name to show an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Phone number, E.164, when the channel knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// A classified intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Intent {
    /// Intent name (`where_is_my_parcel`, ...).
    pub name: String,
    /// Confidence between 0 and 1.
    pub confidence: f64,
}

/// Something recognised in a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Entity {
    /// What it is: `tracking_number`, `order_number`, `phone`, `amount`, `keyword`, ...
    pub kind: String,
    /// The value as found (normalized where that is unambiguous).
    pub value: String,
    /// Details that depend on the kind (carrier, currency, ...).
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

/// Where a message was sent, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Route {
    /// Agent skill (`tracking`, `claims`, ...).
    pub skill: String,
    /// The tier used in the routing key.
    pub tier: String,
    /// The AMQP routing key on `switchboard.inbound`, `{skill}.{tier}` unless a rule fixes it.
    pub queue_key: String,
    /// AMQP priority 0-9.
    pub priority: u8,
    /// Name of the rule that matched.
    pub rule: String,
    /// Why that rule matched, for people reading the envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_details_are_flattened_beside_kind_and_value() {
        let mut details = Map::new();
        details.insert("carrier".into(), "sf_express".into());
        let entity = Entity {
            kind: "tracking_number".into(),
            value: "SF1234567890123".into(),
            details,
        };
        let json = serde_json::to_value(&entity).unwrap();
        assert_eq!(json["carrier"], "sf_express");
        let back: Entity = serde_json::from_value(json).unwrap();
        assert_eq!(back, entity);
    }
}
