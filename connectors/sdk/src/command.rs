//! `switchboard.command.v1`: what a helpdesk publishes to `switchboard.outbound` (routing
//! key `command`) to steer a conversation instead of answering it. Each command is
//! acknowledged with an event on `switchboard.events`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reply::Agent;

/// The schema name of a command.
pub const COMMAND_SCHEMA: &str = "switchboard.command.v1";

/// A helpdesk's instruction about a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Command {
    /// Always `switchboard.command.v1`.
    pub schema: String,
    /// The helpdesk's id for this command, echoed in its acknowledgement.
    pub id: String,
    /// The conversation concerned, as found in the envelope.
    pub conversation_id: String,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
    /// The agent who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
    /// Free text for the record (why the transfer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The commands, tagged by `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Action {
    /// Send this conversation's next messages to `skill` (acknowledged with
    /// `conversation.transferred`).
    Transfer {
        /// The skill to route to from now on.
        skill: String,
        /// Priority of those messages, 0-9; the rules decide when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(max = 9))]
        priority: Option<u8>,
    },
    /// Forget the conversation's stickiness and transfer (acknowledged with
    /// `conversation.closed`).
    Close,
}

impl Action {
    /// The command's name as written in `command`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Transfer { .. } => "transfer",
            Action::Close => "close",
        }
    }
}

/// Why bytes from `switchboard.outbound` are not a command we can carry out.
#[derive(Debug, thiserror::Error)]
pub enum BadCommand {
    /// Not JSON, an unknown `command`, or a field of the wrong shape.
    #[error("malformed command: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A required field is empty.
    #[error("field {0} must not be empty")]
    Empty(&'static str),
}

#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    schema: Option<String>,
}

impl Command {
    /// Whether `body` declares itself a command (its `schema`); everything else on the
    /// outbound queue is treated as a reply.
    pub fn is_command(body: &[u8]) -> bool {
        serde_json::from_slice::<Peek>(body)
            .ok()
            .and_then(|p| p.schema)
            .is_some_and(|s| s == COMMAND_SCHEMA)
    }

    /// Parses and checks a command from an AMQP body.
    pub fn from_slice(body: &[u8]) -> Result<Self, BadCommand> {
        let command: Command = serde_json::from_slice(body)?;
        if command.id.trim().is_empty() {
            return Err(BadCommand::Empty("id"));
        }
        if command.conversation_id.trim().is_empty() {
            return Err(BadCommand::Empty("conversation_id"));
        }
        if let Action::Transfer { skill, .. } = &command.action
            && skill.trim().is_empty()
        {
            return Err(BadCommand::Empty("skill"));
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transfer_and_close() {
        let transfer =
            br#"{"schema":"switchboard.command.v1","id":"c1","conversation_id":"app:a:u",
            "command":"transfer","skill":"claims","priority":7,"agent":{"id":"a-1"}}"#;
        assert!(Command::is_command(transfer));
        let command = Command::from_slice(transfer).unwrap();
        assert_eq!(
            command.action,
            Action::Transfer {
                skill: "claims".into(),
                priority: Some(7)
            }
        );
        let close = br#"{"schema":"switchboard.command.v1","id":"c2","conversation_id":"app:a:u","command":"close"}"#;
        assert_eq!(Command::from_slice(close).unwrap().action, Action::Close);
        let json = serde_json::to_value(Command::from_slice(close).unwrap()).unwrap();
        assert_eq!(json["command"], "close");
    }

    #[test]
    fn names_what_is_wrong_and_tells_replies_apart() {
        let reply = br#"{"schema":"switchboard.reply.v1","id":"r","conversation_id":"a:b:c"}"#;
        assert!(!Command::is_command(reply));
        assert!(!Command::is_command(b"not json"));
        let unknown = br#"{"schema":"switchboard.command.v1","id":"c","conversation_id":"a:b:c","command":"explode"}"#;
        assert!(matches!(
            Command::from_slice(unknown),
            Err(BadCommand::Malformed(_))
        ));
        let no_skill = br#"{"schema":"switchboard.command.v1","id":"c","conversation_id":"a:b:c","command":"transfer","skill":" "}"#;
        assert!(matches!(
            Command::from_slice(no_skill),
            Err(BadCommand::Empty("skill"))
        ));
    }
}
