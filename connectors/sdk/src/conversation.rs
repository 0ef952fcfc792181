//! Conversation ids: `{channel kind}:{connector id}:{channel user id}`, so any instance can
//! deliver a reply without shared state.

use std::fmt;

/// A parsed conversation id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConversationId {
    /// Channel kind (`app`, `wechat`, ...).
    pub kind: String,
    /// The connector's configured id.
    pub connector_id: String,
    /// The user's id in that channel; may itself contain `:`.
    pub channel_user_id: String,
}

/// Why a string is not a conversation id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("conversation id must look like kind:connector:user, got {0:?}")]
pub struct BadConversationId(pub String);

impl ConversationId {
    /// Builds the id of a user's conversation on one connector.
    pub fn new(kind: &str, connector_id: &str, channel_user_id: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            connector_id: connector_id.to_owned(),
            channel_user_id: channel_user_id.to_owned(),
        }
    }

    /// Parses `kind:connector:user`; the user part keeps any further colons.
    pub fn parse(s: &str) -> Result<Self, BadConversationId> {
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(kind), Some(connector), Some(user))
                if !kind.is_empty() && !connector.is_empty() && !user.is_empty() =>
            {
                Ok(Self::new(kind, connector, user))
            }
            _ => Err(BadConversationId(s.to_owned())),
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.kind, self.connector_id, self.channel_user_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_colons_in_the_user_part() {
        let id = ConversationId::parse("sms:cn-main:+86:138").unwrap();
        assert_eq!(id.channel_user_id, "+86:138");
        assert_eq!(id.to_string(), "sms:cn-main:+86:138");
    }

    #[test]
    fn rejects_missing_parts() {
        for bad in ["", "app", "app:x", "app::u", ":x:u"] {
            assert!(ConversationId::parse(bad).is_err(), "{bad}");
        }
    }
}
