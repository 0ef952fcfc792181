//! WeChat pushes (messages and events) normalized into the sdk's [`Content`] union.

use serde_json::{Map, Value};
use switchboard_sdk::Content;

use crate::xml::{Element, insert_repeatable, snake_case};

/// Elements every push carries; never repeated in `extra` or `data`.
const HEADER: [&str; 4] = ["ToUserName", "FromUserName", "CreateTime", "MsgType"];

/// Why a well-formed document is not a push we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A required element is absent or empty.
    #[error("missing element {0}")]
    Missing(&'static str),
    /// An element holds something other than what it should (a number, a coordinate).
    #[error("element {0} is not a valid {1}")]
    Invalid(&'static str, &'static str),
}

/// One push from WeChat, trusted (plaintext, or the decrypted copy) and normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// The account's original id (`gh_…`).
    pub to_user: String,
    /// The user's OpenID.
    pub from_user: String,
    /// Unix seconds, as WeChat stamped it.
    pub create_time: i64,
    /// `MsgType` as sent.
    pub msg_type: String,
    /// A user message or an event.
    pub body: PushBody,
    /// Same for every retry of this push (see the crate README).
    pub dedupe_key: String,
}

/// What a push says.
#[derive(Debug, Clone, PartialEq)]
pub enum PushBody {
    /// Something the user sent (text, image, ..., or a message type we do not know).
    Message {
        /// The normalized content.
        content: Content,
    },
    /// Something the user did, or the platform reports.
    Event {
        /// `Event` lowercased (`subscribe`, `scan`, `location`, `templatesendjobfinish`).
        name: String,
        /// The event's key (menu key, URL, QR scene without `qrscene_`), if any.
        key: Option<String>,
        /// Every other element, keys in snake_case.
        data: Map<String, Value>,
    },
}

impl Push {
    /// The content handed to agents.
    pub fn content(&self) -> Content {
        match &self.body {
            PushBody::Message { content } => content.clone(),
            PushBody::Event { name, key, data } => Content::Event {
                name: name.clone(),
                key: key.clone(),
                data: data.clone(),
            },
        }
    }

    /// The event name, for events.
    pub fn event_name(&self) -> Option<&str> {
        match &self.body {
            PushBody::Event { name, .. } => Some(name),
            PushBody::Message { .. } => None,
        }
    }

    /// The media id of an image, voice or video message.
    pub fn media_id(&self) -> Option<&str> {
        match &self.body {
            PushBody::Message {
                content:
                    Content::Image { media_id, .. }
                    | Content::Voice { media_id, .. }
                    | Content::Video { media_id, .. },
            } => media_id.as_deref(),
            _ => None,
        }
    }
}

/// The `switchboard.events` kind for an event that is reported rather than handed to agents.
pub fn report_kind(event_name: &str) -> &'static str {
    match event_name {
        "location" => "wechat.location_reported",
        "templatesendjobfinish" | "masssendjobfinish" | "publishjobfinish" => "wechat.job_finished",
        "unsubscribe" => "wechat.unsubscribed",
        name if name.starts_with("kf_") => "wechat.kf_session",
        _ => "wechat.event",
    }
}

/// The key under which `data`/`extra` keep an element: snake_case, with the one name the
/// generic rule mangles spelled out.
fn field_key(name: &str) -> String {
    match name {
        "MediaId16K" => "media_id_16k".to_owned(),
        other => snake_case(other),
    }
}

fn required<'a>(root: &'a Element, name: &'static str) -> Result<&'a str, MessageError> {
    match root.text_of(name).map(str::trim) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(MessageError::Missing(name)),
    }
}

fn optional(root: &Element, name: &str) -> Option<String> {
    root.text_of(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn coordinate(root: &Element, name: &'static str) -> Result<f64, MessageError> {
    required(root, name)?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or(MessageError::Invalid(name, "number"))
}

/// Every child except the header and `consumed`, as JSON keyed in snake_case.
fn rest(root: &Element, consumed: &[&str]) -> Map<String, Value> {
    let mut map = Map::new();
    for child in &root.children {
        if HEADER.contains(&child.name.as_str()) || consumed.contains(&child.name.as_str()) {
            continue;
        }
        insert_repeatable(&mut map, field_key(&child.name), child.to_json());
    }
    map
}

/// Normalizes a trusted push document.
pub fn normalize(root: &Element) -> Result<Push, MessageError> {
    let to_user = required(root, "ToUserName")?.to_owned();
    let from_user = required(root, "FromUserName")?.to_owned();
    let create_time_text = required(root, "CreateTime")?;
    let create_time = create_time_text
        .parse::<i64>()
        .map_err(|_| MessageError::Invalid("CreateTime", "unix time"))?;
    let msg_type = required(root, "MsgType")?.to_owned();

    let (body, dedupe_key) = if msg_type.eq_ignore_ascii_case("event") {
        let event = required(root, "Event")?;
        let name = event.to_ascii_lowercase();
        let raw_key = optional(root, "EventKey");
        let mut data = rest(root, &["Event", "EventKey"]);
        let mut key = raw_key.clone();
        if name == "subscribe" {
            // Following by scanning a parametric QR code: the scene is the useful part.
            if let Some(scene) = raw_key.as_deref().and_then(|k| k.strip_prefix("qrscene_")) {
                data.insert("scene".into(), Value::String(scene.to_owned()));
                key = Some(scene.to_owned());
            }
        }
        if let Some(raw) = &raw_key {
            data.insert("event_key".into(), Value::String(raw.clone()));
        }
        if name == "location" {
            for field in ["latitude", "longitude", "precision"] {
                let number = data
                    .get(field)
                    .and_then(Value::as_str)
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .and_then(serde_json::Number::from_f64);
                if let Some(number) = number {
                    data.insert(field.into(), Value::Number(number));
                }
            }
        }
        // Concurrent same-second events of one user differ by event and key; job results
        // also by their job id (`MsgID`, capital D).
        let mut dedupe = format!(
            "{from_user}|{create_time}|{event}|{}",
            raw_key.as_deref().unwrap_or("")
        );
        if let Some(job) = optional(root, "MsgID") {
            dedupe.push('|');
            dedupe.push_str(&job);
        }
        (PushBody::Event { name, key, data }, dedupe)
    } else {
        let content = message_content(root, &msg_type)?;
        // MsgId alone collided across users in practice; the sender and time make it unique.
        let dedupe = match optional(root, "MsgId") {
            Some(id) => format!("{from_user}|{create_time}|{id}"),
            None => format!("{from_user}|{create_time}|{msg_type}"),
        };
        (PushBody::Message { content }, dedupe)
    };

    Ok(Push {
        to_user,
        from_user,
        create_time,
        msg_type,
        body,
        dedupe_key,
    })
}

fn message_content(root: &Element, msg_type: &str) -> Result<Content, MessageError> {
    let content = match msg_type {
        "text" => Content::Text {
            text: root
                .text_of("Content")
                .ok_or(MessageError::Missing("Content"))?
                .to_owned(),
            extra: rest(root, &["Content"]),
        },
        "image" => Content::Image {
            url: optional(root, "PicUrl"),
            media_id: Some(required(root, "MediaId")?.to_owned()),
            caption: None,
            extra: rest(root, &["PicUrl", "MediaId"]),
        },
        "voice" => Content::Voice {
            url: None,
            media_id: Some(required(root, "MediaId")?.to_owned()),
            format: optional(root, "Format"),
            recognition: optional(root, "Recognition"),
            extra: rest(root, &["MediaId", "Format", "Recognition"]),
        },
        "video" | "shortvideo" => {
            let mut extra = rest(root, &["MediaId"]);
            if msg_type == "shortvideo" {
                extra.insert("short".into(), Value::Bool(true));
            }
            Content::Video {
                url: None,
                media_id: Some(required(root, "MediaId")?.to_owned()),
                title: None,
                extra,
            }
        }
        "location" => Content::Location {
            latitude: coordinate(root, "Location_X")?,
            longitude: coordinate(root, "Location_Y")?,
            label: optional(root, "Label"),
            extra: rest(root, &["Location_X", "Location_Y", "Label"]),
        },
        "link" => Content::Link {
            url: required(root, "Url")?.to_owned(),
            title: optional(root, "Title"),
            description: optional(root, "Description"),
        },
        // Unknown message types (miniprogrampage, types added later) are kept, not refused.
        other => {
            let mut data = rest(root, &[]);
            data.insert("msg_type".into(), Value::String(other.to_owned()));
            Content::Event {
                name: format!("message.{}", other.to_ascii_lowercase()),
                key: None,
                data,
            }
        }
    };
    Ok(content)
}

/// Puts the daemon's media URL into a message's content: as `url` where the content has
/// none (voice, video), and always as `extra.media_url`.
pub fn attach_media_url(content: &mut Content, media_url: &str) {
    match content {
        Content::Image { url, extra, .. }
        | Content::Voice { url, extra, .. }
        | Content::Video { url, extra, .. } => {
            if url.is_none() {
                *url = Some(media_url.to_owned());
            }
            extra.insert("media_url".into(), Value::String(media_url.to_owned()));
        }
        _ => {}
    }
}
