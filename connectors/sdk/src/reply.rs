//! `switchboard.reply.v1`: what a helpdesk publishes to `switchboard.outbound`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::content::Content;

/// The schema name of a reply.
pub const REPLY_SCHEMA: &str = "switchboard.reply.v1";

/// An agent's answer to a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reply {
    /// Always `switchboard.reply.v1`.
    pub schema: String,
    /// The helpdesk's id for this reply; a reply published twice with one id is sent once.
    pub id: String,
    /// The conversation to answer, as found in the envelope.
    pub conversation_id: String,
    /// What to send.
    pub content: Content,
    /// The envelope id this answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// The agent who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
}

/// An agent as the helpdesk knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Agent {
    /// The helpdesk's agent id.
    pub id: String,
    /// Name shown to the customer where the channel can show one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Why bytes from `switchboard.outbound` are not a reply we can send.
#[derive(Debug, thiserror::Error)]
pub enum BadReply {
    /// Not JSON, or a field has the wrong shape.
    #[error("malformed reply: {0}")]
    Malformed(#[from] serde_json::Error),
    /// JSON of another schema.
    #[error("unsupported schema {0:?}, expected {REPLY_SCHEMA}")]
    Schema(String),
    /// A required field is empty.
    #[error("field {0} must not be empty")]
    Empty(&'static str),
}

impl Reply {
    /// Parses and checks a reply from an AMQP body.
    pub fn from_slice(body: &[u8]) -> Result<Self, BadReply> {
        let reply: Reply = serde_json::from_slice(body)?;
        if reply.schema != REPLY_SCHEMA {
            return Err(BadReply::Schema(reply.schema));
        }
        if reply.id.trim().is_empty() {
            return Err(BadReply::Empty("id"));
        }
        if reply.conversation_id.trim().is_empty() {
            return Err(BadReply::Empty("conversation_id"));
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_minimal_reply() {
        let body = br#"{"schema":"switchboard.reply.v1","id":"r1","conversation_id":"app:a:u",
            "content":{"type":"text","text":"hello"}}"#;
        let reply = Reply::from_slice(body).unwrap();
        assert_eq!(reply.content, Content::text("hello"));
    }

    #[test]
    fn names_what_is_wrong() {
        let wrong_schema = br#"{"schema":"x","id":"r","conversation_id":"a:b:c","content":{"type":"text","text":""}}"#;
        assert!(matches!(
            Reply::from_slice(wrong_schema),
            Err(BadReply::Schema(_))
        ));
        let empty_id = br#"{"schema":"switchboard.reply.v1","id":" ","conversation_id":"a:b:c","content":{"type":"text","text":""}}"#;
        assert!(matches!(
            Reply::from_slice(empty_id),
            Err(BadReply::Empty("id"))
        ));
        assert!(matches!(
            Reply::from_slice(b"{"),
            Err(BadReply::Malformed(_))
        ));
    }
}
