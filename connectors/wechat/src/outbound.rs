//! Replies as customer-service message bodies (`/cgi-bin/message/custom/send`).

use serde_json::{Map, Value, json};
use switchboard_sdk::{Content, DeliveryError};

/// Message types reachable through `Content::Text { extra: { "msgtype": … } }`, with the
/// keys their object must carry.
const EXTRA_TYPES: &[(&str, &[&str])] = &[
    ("msgmenu", &["list"]),
    ("miniprogrampage", &["appid", "pagepath", "thumb_media_id"]),
    ("music", &["musicurl", "thumb_media_id"]),
    ("news", &["articles"]),
    ("mpnews", &["media_id"]),
    ("mpnewsarticle", &["article_id"]),
    ("wxcard", &["card_id"]),
];

fn unsupported(text: impl Into<String>) -> DeliveryError {
    DeliveryError::Permanent {
        code: "unsupported_content".to_owned(),
        text: text.into(),
    }
}

fn require_media_id(kind: &str, media_id: &Option<String>) -> Result<String, DeliveryError> {
    media_id.clone().filter(|m| !m.is_empty()).ok_or_else(|| {
        unsupported(format!(
            "{kind} replies need a media_id from the material api; urls are not uploaded"
        ))
    })
}

/// Builds the JSON body sending `content` to `touser`, as seat `kf_account` when given
/// (`extra.kf_account` of a text reply overrides it).
pub fn custom_message(
    touser: &str,
    content: &Content,
    kf_account: Option<&str>,
) -> Result<Value, DeliveryError> {
    let mut kf_account = kf_account.map(str::to_owned);
    let (msgtype, object) = match content {
        Content::Text { text, extra } => {
            if let Some(kf) = extra.get("kf_account").and_then(Value::as_str) {
                kf_account = Some(kf.to_owned());
            }
            text_like(text, extra)?
        }
        Content::Image { media_id, .. } => (
            "image".to_owned(),
            json!({ "media_id": require_media_id("image", media_id)? }),
        ),
        Content::Voice { media_id, .. } => (
            "voice".to_owned(),
            json!({ "media_id": require_media_id("voice", media_id)? }),
        ),
        Content::Video {
            media_id,
            title,
            extra,
            ..
        } => {
            let mut video = Map::new();
            video.insert(
                "media_id".into(),
                Value::String(require_media_id("video", media_id)?),
            );
            for key in ["thumb_media_id", "description"] {
                if let Some(value) = extra.get(key).and_then(Value::as_str) {
                    video.insert(key.into(), Value::String(value.to_owned()));
                }
            }
            if let Some(title) = title {
                video.insert("title".into(), Value::String(title.clone()));
            }
            ("video".to_owned(), Value::Object(video))
        }
        Content::Link {
            url,
            title,
            description,
        } => (
            "news".to_owned(),
            json!({ "articles": [{
                "title": title.clone().unwrap_or_else(|| url.clone()),
                "description": description.clone().unwrap_or_default(),
                "url": url,
            }]}),
        ),
        other => {
            return Err(unsupported(format!(
                "{} replies cannot be sent as wechat customer-service messages",
                other.kind()
            )));
        }
    };
    let mut body = Map::new();
    body.insert("touser".into(), Value::String(touser.to_owned()));
    body.insert("msgtype".into(), Value::String(msgtype.clone()));
    body.insert(msgtype, object);
    if let Some(kf) = kf_account {
        body.insert("customservice".into(), json!({ "kf_account": kf }));
    }
    Ok(Value::Object(body))
}

/// A text reply, or one of the richer types chosen by `extra.msgtype`.
fn text_like(text: &str, extra: &Map<String, Value>) -> Result<(String, Value), DeliveryError> {
    let msgtype = match extra.get("msgtype") {
        None => "text",
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(unsupported("extra.msgtype must be a string")),
    };
    if msgtype == "text" {
        return Ok(("text".to_owned(), json!({ "content": text })));
    }
    let Some((_, required)) = EXTRA_TYPES.iter().find(|(t, _)| *t == msgtype) else {
        return Err(unsupported(format!(
            "extra.msgtype {msgtype:?} is not supported"
        )));
    };
    let Some(Value::Object(object)) = extra.get(msgtype) else {
        return Err(unsupported(format!(
            "extra.msgtype {msgtype:?} needs an object at extra.{msgtype}"
        )));
    };
    let mut object = object.clone();
    for key in *required {
        if object.get(*key).is_none_or(Value::is_null) {
            return Err(unsupported(format!("extra.{msgtype}.{key} is required")));
        }
    }
    // The reply's text fills the field a person reads first, when the object leaves it out.
    let text_field = match msgtype {
        "msgmenu" => Some("head_content"),
        "miniprogrampage" | "music" => Some("title"),
        _ => None,
    };
    if let Some(field) = text_field
        && !object.contains_key(field)
    {
        object.insert(field.into(), Value::String(text.to_owned()));
    }
    if msgtype == "news"
        && object
            .get("articles")
            .and_then(Value::as_array)
            .is_none_or(|a| a.len() != 1)
    {
        return Err(unsupported(
            "extra.news.articles must hold exactly one article",
        ));
    }
    Ok((msgtype.to_owned(), Value::Object(object)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn maps_each_content_to_its_message_type() {
        let cases: Vec<(Content, Value)> = vec![
            (
                Content::text("您好 hello"),
                json!({"touser":"o1","msgtype":"text","text":{"content":"您好 hello"}}),
            ),
            (
                Content::Image {
                    url: None,
                    media_id: Some("m1".into()),
                    caption: None,
                    extra: Map::new(),
                },
                json!({"touser":"o1","msgtype":"image","image":{"media_id":"m1"}}),
            ),
            (
                Content::Voice {
                    url: None,
                    media_id: Some("v1".into()),
                    format: None,
                    recognition: None,
                    extra: Map::new(),
                },
                json!({"touser":"o1","msgtype":"voice","voice":{"media_id":"v1"}}),
            ),
            (
                Content::Video {
                    url: None,
                    media_id: Some("vd".into()),
                    title: Some("T".into()),
                    extra: extra(json!({"thumb_media_id":"th","description":"D"})),
                },
                json!({"touser":"o1","msgtype":"video","video":{"media_id":"vd","thumb_media_id":"th","title":"T","description":"D"}}),
            ),
            (
                Content::Link {
                    url: "https://x.example/p".into(),
                    title: Some("P".into()),
                    description: None,
                },
                json!({"touser":"o1","msgtype":"news","news":{"articles":[{"title":"P","description":"","url":"https://x.example/p"}]}}),
            ),
            (
                Content::Text {
                    text: "请选择".into(),
                    extra: extra(
                        json!({"msgtype":"msgmenu","msgmenu":{"list":[{"id":"101","content":"满意"}],"tail_content":"谢谢"}}),
                    ),
                },
                json!({"touser":"o1","msgtype":"msgmenu","msgmenu":{"head_content":"请选择","list":[{"id":"101","content":"满意"}],"tail_content":"谢谢"}}),
            ),
            (
                Content::Text {
                    text: "Open".into(),
                    extra: extra(
                        json!({"msgtype":"miniprogrampage","miniprogrampage":{"appid":"wxa","pagepath":"p/i","thumb_media_id":"t"},"kf_account":"a@b"}),
                    ),
                },
                json!({"touser":"o1","msgtype":"miniprogrampage","miniprogrampage":{"title":"Open","appid":"wxa","pagepath":"p/i","thumb_media_id":"t"},"customservice":{"kf_account":"a@b"}}),
            ),
            (
                Content::Text {
                    text: "Song".into(),
                    extra: extra(
                        json!({"msgtype":"music","music":{"musicurl":"http://m","hqmusicurl":"http://h","thumb_media_id":"t","description":"d"}}),
                    ),
                },
                json!({"touser":"o1","msgtype":"music","music":{"title":"Song","musicurl":"http://m","hqmusicurl":"http://h","thumb_media_id":"t","description":"d"}}),
            ),
        ];
        for (content, expected) in cases {
            assert_eq!(
                custom_message("o1", &content, None).unwrap(),
                expected,
                "{content:?}"
            );
        }
    }

    #[test]
    fn configured_seat_is_used() {
        let body = custom_message("o1", &Content::text("x"), Some("kf1@acct")).unwrap();
        assert_eq!(body["customservice"]["kf_account"], "kf1@acct");
    }

    #[test]
    fn chinese_is_sent_as_raw_utf8() {
        let body = custom_message("o1", &Content::text("您好"), None).unwrap();
        let bytes = serde_json::to_vec(&body).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("您好") && !text.contains("\\u"), "{text}");
    }

    #[test]
    fn unsendable_content_is_permanent() {
        let cases = vec![
            Content::Image {
                url: Some("https://x/p.png".into()),
                media_id: None,
                caption: None,
                extra: Map::new(),
            },
            Content::Location {
                latitude: 1.0,
                longitude: 2.0,
                label: None,
                extra: Map::new(),
            },
            Content::Event {
                name: "x".into(),
                key: None,
                data: Map::new(),
            },
            Content::Text {
                text: "x".into(),
                extra: extra(json!({"msgtype":"hologram"})),
            },
            Content::Text {
                text: "x".into(),
                extra: extra(json!({"msgtype":"msgmenu"})),
            },
            Content::Text {
                text: "x".into(),
                extra: extra(json!({"msgtype":"miniprogrampage","miniprogrampage":{"appid":"a"}})),
            },
        ];
        for content in cases {
            let err = custom_message("o1", &content, None).unwrap_err();
            assert!(
                matches!(&err, DeliveryError::Permanent { code, .. } if code == "unsupported_content"),
                "{content:?} gave {err:?}"
            );
        }
    }
}
