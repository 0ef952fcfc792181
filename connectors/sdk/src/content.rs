//! The message content union shared by envelopes (inbound) and replies (outbound).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a message says, tagged by `type`. Channels map their own message kinds onto these;
/// anything channel-specific that has no field here stays in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// The text as the customer or agent wrote it.
        text: String,
        /// Channel-specific extras (for example a tapped quick-reply menu id).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Map<String, Value>,
    },
    /// A picture.
    Image {
        /// Where the picture can be fetched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The channel's own media id, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        /// A caption shown with the picture.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        /// Channel-specific extras.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Map<String, Value>,
    },
    /// A voice message.
    Voice {
        /// Where the recording can be fetched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The channel's own media id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        /// Audio format as the channel names it (amr, speex, mp3...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
        /// Speech recognised by the channel, when it offers it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recognition: Option<String>,
        /// Channel-specific extras.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Map<String, Value>,
    },
    /// A video clip.
    Video {
        /// Where the clip can be fetched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The channel's own media id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        /// Title shown with the clip.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        /// Channel-specific extras (thumbnail ids and the like).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Map<String, Value>,
    },
    /// Any other file.
    File {
        /// Where the file can be fetched.
        url: String,
        /// The file's name as shown to a person.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// MIME type, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime: Option<String>,
        /// Size in bytes, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// A point on the map.
    Location {
        /// Latitude in degrees (WGS-84 unless the channel says otherwise in `extra`).
        latitude: f64,
        /// Longitude in degrees.
        longitude: f64,
        /// A human-readable place name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// Channel-specific extras (map scale and the like).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Map<String, Value>,
    },
    /// A shared link.
    Link {
        /// The target address.
        url: String,
        /// Title of the linked page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        /// Description of the linked page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Something the customer did rather than said (followed the account, opened a page).
    Event {
        /// The event's name in the channel's words, lowercase (`subscribe`, `opened_order_page`).
        name: String,
        /// The event's key or argument, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Everything else the channel sent with it.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        data: Map<String, Value>,
    },
    /// A phone call's state.
    Call {
        /// `ringing`, `answered`, `completed`, `voicemail`, ...
        event: String,
        /// The caller's number, E.164.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caller: Option<String>,
        /// Everything else about the call (skill chosen, duration, recording url).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        data: Map<String, Value>,
    },
}

impl Content {
    /// Plain text content.
    pub fn text(text: impl Into<String>) -> Self {
        Content::Text {
            text: text.into(),
            extra: Map::new(),
        }
    }

    /// The `type` tag, as it appears on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Text { .. } => "text",
            Content::Image { .. } => "image",
            Content::Voice { .. } => "voice",
            Content::Video { .. } => "video",
            Content::File { .. } => "file",
            Content::Location { .. } => "location",
            Content::Link { .. } => "link",
            Content::Event { .. } => "event",
            Content::Call { .. } => "call",
        }
    }

    /// The words a classifier should look at, if the content has any.
    pub fn searchable_text(&self) -> Option<&str> {
        match self {
            Content::Text { text, .. } => Some(text),
            Content::Voice { recognition, .. } => recognition.as_deref(),
            Content::Image { caption, .. } => caption.as_deref(),
            Content::Link { title, .. } => title.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_tagged_by_type_and_omits_empty_extras() {
        let json = serde_json::to_value(Content::text("hi")).unwrap();
        assert_eq!(json, serde_json::json!({"type": "text", "text": "hi"}));
    }

    #[test]
    fn unknown_type_is_an_error_not_a_panic() {
        let err = serde_json::from_str::<Content>(r#"{"type":"hologram"}"#).unwrap_err();
        assert!(err.to_string().contains("hologram"), "{err}");
    }
}
