//! The frame protocol, version 1: JSON text frames tagged by `type`. README.md documents it
//! for widget authors; this module is its single definition.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this server speaks (`?v=` on connect, `v` in `hello` and `ready`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest client message id, characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// What a client may send.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// First frame on every socket; `resume` is the same frame after a reconnect.
    #[serde(alias = "resume")]
    Hello {
        /// Protocol version the client speaks.
        v: u32,
        /// Highest agent-message sequence number the client has shown.
        #[serde(default)]
        last_seq: u64,
        /// The conversation epoch the client's `last_seq` belongs to.
        #[serde(default)]
        epoch: Option<String>,
    },
    /// A visitor's message; acked once the pipeline has it.
    Message {
        /// Client-generated id, unique per visitor; a resend reuses it.
        id: String,
        /// What the visitor sent.
        content: ClientContent,
    },
    /// The visitor is typing (accepted, not forwarded in version 1).
    Typing {
        /// Typing started or stopped.
        #[serde(default)]
        on: bool,
    },
    /// The widget has shown agent messages up to `seq`.
    Read {
        /// Highest sequence number shown.
        seq: u64,
    },
    /// Keep-alive; answered with `pong`.
    Ping {},
}

/// Content a visitor may send.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientContent {
    /// Text (emoji included).
    Text {
        /// The words.
        text: String,
    },
    /// An image uploaded first through `POST /upload`.
    Image {
        /// The id the upload returned.
        media_id: String,
        /// An optional caption.
        #[serde(default)]
        caption: Option<String>,
    },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// Answer to `hello`: who the visitor is and where the conversation stands.
    Ready {
        /// Protocol version.
        v: u32,
        /// The signed visitor id to keep and present next time.
        visitor: &'a str,
        /// The conversation id agents see.
        conversation_id: &'a str,
        /// Identifies this run of the conversation's numbering; a new epoch means
        /// sequence numbers started again, so the client forgets its `last_seq`.
        epoch: &'a str,
        /// Highest sequence number stored so far.
        seq: u64,
        /// The client's epoch was not this one: its `last_seq` was ignored.
        reset: bool,
        /// Some messages after the client's `last_seq` are no longer kept.
        gap: bool,
        /// How often to ping, milliseconds.
        ping_interval_ms: u64,
        /// Longest text accepted, characters.
        max_text_chars: usize,
        /// Largest image accepted, bytes (0: uploads off).
        max_image_bytes: usize,
    },
    /// A visitor message is safe with the pipeline.
    Ack {
        /// The client's id of the message.
        id: &'a str,
        /// The envelope id it became.
        envelope_id: &'a str,
        /// It had been accepted before; not published again.
        duplicate: bool,
    },
    /// The agent is typing (not stored, no sequence number).
    Typing {
        /// Typing started or stopped.
        on: bool,
        /// The agent's name, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        agent: Option<&'a str>,
    },
    /// Something went wrong; `fatal` frames are followed by a close.
    Error {
        /// Machine-readable code (README lists them).
        code: &'a str,
        /// Human-readable explanation, never containing secrets.
        message: &'a str,
        /// The client message id concerned, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// When to try again, milliseconds, for retryable errors.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// The socket closes after this frame.
        fatal: bool,
    },
    /// Answer to `ping`.
    Pong {},
}

/// An agent message as stored in history and sent to the widget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentMessage {
    /// Always `agent`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Position in the conversation, from 1 within an epoch, no gaps.
    pub seq: u64,
    /// The conversation epoch.
    pub epoch: String,
    /// The helpdesk's reply id.
    pub id: String,
    /// The content, as the helpdesk sent it (`text`, `image`, `link`, `file`, ...).
    pub content: Value,
    /// The agent's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// When it was stored (RFC 3339, UTC).
    pub at: String,
}

impl ServerFrame<'_> {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // A frame of strings, integers and booleans always serializes.
        serde_json::to_string(self).unwrap_or_else(|_| unreachable!("frames always serialize"))
    }
}

/// Close codes sent by the server, with the reason text beside them (RFC 6455 §7.4).
pub mod close {
    /// The server is restarting or the socket was idle too long: reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the protocol (bad JSON, unknown frame, no hello in time).
    pub const PROTOCOL: u16 = 1002;
    /// The client sent frames faster than allowed.
    pub const POLICY: u16 = 1008;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server could not keep up with this socket: reconnect and resume.
    pub const TRY_AGAIN: u16 = 1013;
    /// Credentials or origin refused: do not retry with the same ones.
    pub const FORBIDDEN: u16 = 4003;
    /// Too many sockets or connects: retry later.
    pub const TOO_MANY: u16 = 4029;
    /// Unsupported protocol version.
    pub const VERSION: u16 = 4000;
}

/// Parses one client frame, naming what is wrong when it cannot.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, String> {
    serde_json::from_str(text).map_err(|err| {
        // serde's messages name the field or variant but never echo the input's values.
        let message = err.to_string();
        match message.find(" at line ") {
            Some(cut) => message[..cut].to_owned(),
            None => message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_frames_parse_table() {
        let cases: Vec<(&str, ClientFrame)> = vec![
            (
                r#"{"type":"hello","v":1}"#,
                ClientFrame::Hello {
                    v: 1,
                    last_seq: 0,
                    epoch: None,
                },
            ),
            (
                r#"{"type":"resume","v":1,"last_seq":7,"epoch":"e1"}"#,
                ClientFrame::Hello {
                    v: 1,
                    last_seq: 7,
                    epoch: Some("e1".into()),
                },
            ),
            (
                r#"{"type":"message","id":"c1","content":{"type":"text","text":"你好 👋"}}"#,
                ClientFrame::Message {
                    id: "c1".into(),
                    content: ClientContent::Text {
                        text: "你好 👋".into(),
                    },
                },
            ),
            (
                r#"{"type":"message","id":"c2","content":{"type":"image","media_id":"m"}}"#,
                ClientFrame::Message {
                    id: "c2".into(),
                    content: ClientContent::Image {
                        media_id: "m".into(),
                        caption: None,
                    },
                },
            ),
            (
                r#"{"type":"typing","on":true}"#,
                ClientFrame::Typing { on: true },
            ),
            (r#"{"type":"read","seq":3}"#, ClientFrame::Read { seq: 3 }),
            (r#"{"type":"ping"}"#, ClientFrame::Ping {}),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_client_frame(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_frames_name_the_problem_without_echoing_values() {
        for (text, needle) in [
            (r#"{"type":"shout","v":1}"#, "shout"),
            (
                r#"{"type":"message","content":{"type":"text","text":"x"}}"#,
                "id",
            ),
            (r#"{"type":"hello","v":1,"secret":"hunter2"}"#, "secret"),
            ("not json", "expected"),
        ] {
            let err = parse_client_frame(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("line"), "{err}");
        }
    }

    #[test]
    fn server_frames_have_their_documented_shape() {
        let ack = ServerFrame::Ack {
            id: "c1",
            envelope_id: "01J",
            duplicate: true,
        }
        .to_text();
        assert_eq!(
            serde_json::from_str::<Value>(&ack).unwrap(),
            json!({"type": "ack", "id": "c1", "envelope_id": "01J", "duplicate": true})
        );
        let error = ServerFrame::Error {
            code: "flood",
            message: "slow down",
            id: None,
            retry_after_ms: Some(1000),
            fatal: true,
        }
        .to_text();
        assert_eq!(
            serde_json::from_str::<Value>(&error).unwrap(),
            json!({"type": "error", "code": "flood", "message": "slow down", "retry_after_ms": 1000, "fatal": true})
        );
        assert_eq!(ServerFrame::Pong {}.to_text(), r#"{"type":"pong"}"#);
    }

    #[test]
    fn the_recorded_session_parses_both_ways() {
        // fixtures/session.jsonl: made for this connector, see fixtures/README.md.
        let session = include_str!("../fixtures/session.jsonl");
        let (mut client, mut server) = (0, 0);
        for line in session.lines() {
            if let Some(frame) = line.strip_prefix("> ") {
                parse_client_frame(frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
                client += 1;
            } else if let Some(frame) = line.strip_prefix("< ") {
                let value: Value = serde_json::from_str(frame).unwrap();
                if value["type"] == "agent" {
                    let message: AgentMessage = serde_json::from_value(value.clone()).unwrap();
                    assert_eq!(serde_json::to_value(&message).unwrap(), value);
                }
                server += 1;
            }
        }
        assert_eq!((client, server), (4, 5));
    }
}
