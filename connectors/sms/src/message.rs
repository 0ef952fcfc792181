//! Provider-neutral SMS in both directions: an incoming text becomes one or more
//! [`InboundMessage`]s; a [`Reply`]'s content becomes a body and media URLs; a delivery
//! receipt becomes a `delivery.status` event.
//!
//! [`Reply`]: switchboard_sdk::Reply

use serde_json::{Map, Value};
use switchboard_sdk::text::truncate_chars;
use switchboard_sdk::{Content, DeliveryError, Event, InboundMessage};

use crate::optout::Keyword;

/// One media item of an MMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Where the provider serves it.
    pub url: String,
    /// MIME type, when the provider says.
    pub content_type: Option<String>,
}

/// An incoming SMS/MMS as read from any provider.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingSms {
    /// The provider's message id (Twilio MessageSid); the dedupe key.
    pub message_id: String,
    /// Sender, E.164.
    pub from: String,
    /// Our number it was sent to.
    pub to: Option<String>,
    /// The text (already joined when it came in parts).
    pub text: String,
    /// MMS media.
    pub media: Vec<Media>,
    /// A keyword the provider already recognised (Twilio Advanced Opt-Out).
    pub provider_keyword: Option<Keyword>,
    /// The original payload, when raw capture is on.
    pub raw: Option<Value>,
}

impl IncomingSms {
    /// The messages to accept, in order. A plain text is one message. With media, each
    /// item is a message of its own (image, video, voice or file by MIME type); the text
    /// rides as the caption of a first image, or else comes first as a text message. The
    /// first message's dedupe key is the provider's message id, later ones add `:{n}`, so a
    /// provider's retry produces the same keys.
    pub fn to_messages(&self) -> Vec<InboundMessage> {
        let mut contents = Vec::new();
        let text = self.text.trim();
        let caption_on_image = !text.is_empty()
            && self
                .media
                .first()
                .is_some_and(|m| mime_major(m) == Some("image"));
        if self.media.is_empty() || (!text.is_empty() && !caption_on_image) {
            contents.push(Content::Text {
                text: self.text.clone(),
                extra: self.extra(None),
            });
        }
        for (i, media) in self.media.iter().enumerate() {
            let caption = (i == 0 && caption_on_image).then(|| self.text.clone());
            contents.push(self.media_content(i, media, caption));
        }
        contents
            .into_iter()
            .enumerate()
            .map(|(n, content)| {
                let dedupe = if n == 0 {
                    self.message_id.clone()
                } else {
                    format!("{}:{n}", self.message_id)
                };
                let mut message = InboundMessage::new(self.from.clone(), content, dedupe);
                message.phone = Some(self.from.clone());
                message.raw = self.raw.clone();
                message
            })
            .collect()
    }

    fn extra(&self, media_index: Option<usize>) -> Map<String, Value> {
        let mut extra = Map::new();
        extra.insert("message_id".into(), Value::String(self.message_id.clone()));
        if let Some(to) = &self.to {
            extra.insert("to".into(), Value::String(to.clone()));
        }
        if let Some(i) = media_index {
            extra.insert("media_index".into(), Value::from(i));
        }
        extra
    }

    fn media_content(&self, i: usize, media: &Media, caption: Option<String>) -> Content {
        let url = media.url.clone();
        let mut extra = self.extra(Some(i));
        if let Some(mime) = &media.content_type {
            extra.insert("content_type".into(), Value::String(mime.clone()));
        }
        match mime_major(media) {
            Some("image") => Content::Image {
                url: Some(url),
                media_id: None,
                caption,
                extra,
            },
            Some("video") => Content::Video {
                url: Some(url),
                media_id: None,
                title: None,
                extra,
            },
            Some("audio") => Content::Voice {
                url: Some(url),
                media_id: None,
                format: media
                    .content_type
                    .as_deref()
                    .and_then(|m| m.split('/').nth(1))
                    .map(str::to_owned),
                recognition: None,
                extra,
            },
            _ => Content::File {
                url,
                name: None,
                mime: media.content_type.clone(),
                size: None,
            },
        }
    }
}

fn mime_major(media: &Media) -> Option<&str> {
    media
        .content_type
        .as_deref()
        .and_then(|m| m.split('/').next())
        .map(str::trim)
}

/// A delivery receipt as read from any provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryStatus {
    /// The provider's id of the message sent.
    pub message_id: String,
    /// The reply it carried, when known.
    pub reply_id: Option<String>,
    /// The recipient, E.164, when the provider named a phone number.
    pub to: Option<String>,
    /// The status, lowercase (`queued`, `sent`, `delivered`, `undelivered`, `failed`, ...).
    pub status: String,
    /// The provider's error code, for failures.
    pub error_code: Option<String>,
}

impl DeliveryStatus {
    /// Whether the message did not reach the handset.
    pub fn failed(&self) -> bool {
        matches!(self.status.as_str(), "failed" | "undelivered")
    }

    /// The `delivery.status` event of connector `kind`/`connector_id`, `data` holding
    /// `status` and `error_code`; the caller adds what its provider says about a failure.
    pub fn to_event(&self, kind: &str, connector_id: &str) -> Event {
        let mut event = Event::new("delivery.status");
        event.channel_message_id = Some(self.message_id.clone());
        event.reply_id = self.reply_id.clone();
        event.conversation_id = self
            .to
            .as_ref()
            .map(|to| format!("{kind}:{connector_id}:{to}"));
        let mut data = Map::new();
        data.insert("status".into(), Value::String(self.status.clone()));
        data.insert(
            "error_code".into(),
            self.error_code.clone().map_or(Value::Null, Value::String),
        );
        event.data = data;
        event
    }
}

/// At most 200 characters of a provider's answer, for error texts.
pub(crate) fn excerpt(body: &[u8]) -> String {
    truncate_chars(&String::from_utf8_lossy(body), 200).to_owned()
}

/// What an SMS reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingSms {
    /// The body.
    pub text: String,
    /// MMS media URLs.
    pub media_urls: Vec<String>,
    /// Sent even during quiet hours (`"urgent": true` in the content's `extra`).
    pub urgent: bool,
}

impl OutgoingSms {
    /// Turns reply content into an SMS: text, or media with an optional caption; links and
    /// locations as text. Events and calls cannot be texted (`unsupported_content`).
    pub fn from_content(content: &Content) -> Result<Self, DeliveryError> {
        let urgent = |extra: &Map<String, Value>| extra.get("urgent") == Some(&Value::Bool(true));
        let sms = match content {
            Content::Text { text, extra } => Self {
                text: text.clone(),
                media_urls: Vec::new(),
                urgent: urgent(extra),
            },
            Content::Image {
                url: Some(url),
                caption,
                extra,
                ..
            } => Self {
                text: caption.clone().unwrap_or_default(),
                media_urls: vec![url.clone()],
                urgent: urgent(extra),
            },
            Content::Video {
                url: Some(url),
                title,
                extra,
                ..
            } => Self {
                text: title.clone().unwrap_or_default(),
                media_urls: vec![url.clone()],
                urgent: urgent(extra),
            },
            Content::Voice {
                url: Some(url),
                extra,
                ..
            } => Self {
                text: String::new(),
                media_urls: vec![url.clone()],
                urgent: urgent(extra),
            },
            Content::File { url, .. } => Self {
                text: String::new(),
                media_urls: vec![url.clone()],
                urgent: false,
            },
            Content::Link { url, title, .. } => Self {
                text: match title {
                    Some(title) if !title.is_empty() => format!("{title}\n{url}"),
                    _ => url.clone(),
                },
                media_urls: Vec::new(),
                urgent: false,
            },
            Content::Location {
                latitude,
                longitude,
                label,
                extra,
            } => Self {
                text: match label {
                    Some(label) => format!("{label} ({latitude:.6}, {longitude:.6})"),
                    None => format!("{latitude:.6}, {longitude:.6}"),
                },
                media_urls: Vec::new(),
                urgent: urgent(extra),
            },
            other => {
                return Err(DeliveryError::Permanent {
                    code: "unsupported_content".into(),
                    text: format!("{} content cannot be sent as sms", other.kind()),
                });
            }
        };
        if sms.text.is_empty() && sms.media_urls.is_empty() {
            return Err(DeliveryError::Permanent {
                code: "empty_message".into(),
                text: "nothing to send".into(),
            });
        }
        Ok(sms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sms(text: &str, media: &[(&str, Option<&str>)]) -> IncomingSms {
        IncomingSms {
            message_id: "MM1".into(),
            from: "+8613812345678".into(),
            to: Some("+15005550006".into()),
            text: text.into(),
            media: media
                .iter()
                .map(|(url, mime)| Media {
                    url: (*url).into(),
                    content_type: mime.map(str::to_owned),
                })
                .collect(),
            provider_keyword: None,
            raw: None,
        }
    }

    #[test]
    fn plain_text_is_one_message_keyed_by_message_id() {
        let messages = sms("where is my parcel", &[]).to_messages();
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        assert_eq!(m.channel_user_id, "+8613812345678");
        assert_eq!(m.phone.as_deref(), Some("+8613812345678"));
        assert_eq!(m.dedupe_key, "MM1");
        assert_eq!(m.content.searchable_text(), Some("where is my parcel"));
    }

    #[test]
    fn media_become_their_own_messages_with_the_text_as_caption() {
        let messages = sms(
            "the box",
            &[
                ("https://m/0", Some("image/jpeg")),
                ("https://m/1", Some("application/pdf")),
            ],
        )
        .to_messages();
        let keys: Vec<&str> = messages.iter().map(|m| m.dedupe_key.as_str()).collect();
        assert_eq!(keys, ["MM1", "MM1:1"]);
        assert!(matches!(
            &messages[0].content,
            Content::Image { url: Some(u), caption: Some(c), .. } if u == "https://m/0" && c == "the box"
        ));
        assert!(matches!(
            &messages[1].content,
            Content::File { url, mime: Some(m), .. } if url == "https://m/1" && m == "application/pdf"
        ));

        let messages = sms("listen", &[("https://m/0", Some("audio/amr"))]).to_messages();
        assert_eq!(messages.len(), 2);
        assert!(matches!(&messages[0].content, Content::Text { text, .. } if text == "listen"));
        assert!(matches!(
            &messages[1].content,
            Content::Voice { format: Some(f), .. } if f == "amr"
        ));
    }

    #[test]
    fn reply_content_maps_to_body_and_media() {
        let mut extra = Map::new();
        extra.insert("urgent".into(), Value::Bool(true));
        let got = OutgoingSms::from_content(&Content::Text {
            text: "hi".into(),
            extra,
        });
        assert_eq!(
            got,
            Ok(OutgoingSms {
                text: "hi".into(),
                media_urls: vec![],
                urgent: true
            })
        );
        let got = OutgoingSms::from_content(&Content::Image {
            url: Some("https://img".into()),
            media_id: None,
            caption: Some("label".into()),
            extra: Map::new(),
        });
        assert_eq!(
            got.map(|s| (s.text, s.media_urls)),
            Ok(("label".into(), vec!["https://img".into()]))
        );
        let err = OutgoingSms::from_content(&Content::Event {
            name: "x".into(),
            key: None,
            data: Map::new(),
        })
        .unwrap_err();
        assert!(
            matches!(err, DeliveryError::Permanent { code, .. } if code == "unsupported_content")
        );
        let err = OutgoingSms::from_content(&Content::text("")).unwrap_err();
        assert!(matches!(err, DeliveryError::Permanent { code, .. } if code == "empty_message"));
    }
}
