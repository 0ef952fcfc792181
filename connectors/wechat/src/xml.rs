//! A small, defensive XML reader for WeChat pushes: one `<xml>` root, no DOCTYPE, no entity
//! other than the five predefined ones and character references, bounded size and depth,
//! CDATA or text for every value. Unknown elements are kept, never refused.

use quick_xml::Reader;
use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// Deepest nesting accepted; WeChat's deepest (`SendPicsInfo/PicList/item/PicMd5Sum`) is 5.
const MAX_DEPTH: usize = 16;
/// Most elements accepted in one document; real pushes have a few dozen.
const MAX_ELEMENTS: usize = 2048;

/// Why a body is not a WeChat XML document we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Larger than the configured cap.
    #[error("xml body of {size} bytes exceeds the {limit} byte limit")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// Bytes allowed.
        limit: usize,
    },
    /// Not UTF-8.
    #[error("xml body is not utf-8")]
    NotUtf8,
    /// A document type declaration, the door to external and expanding entities.
    #[error("doctype declarations are not accepted")]
    Doctype,
    /// A reference to an entity that is not predefined.
    #[error("entity reference &{0}; is not accepted")]
    Entity(String),
    /// Nested deeper than [`MAX_DEPTH`] or more than [`MAX_ELEMENTS`] elements.
    #[error("xml document is nested too deeply or has too many elements")]
    TooComplex,
    /// The root element is not `<xml>`.
    #[error("root element must be <xml>, got <{0}>")]
    Root(String),
    /// No root element, or content after it.
    #[error("xml body must hold exactly one <xml> element")]
    NotOneRoot,
    /// Not well-formed.
    #[error("xml syntax error: {0}")]
    Syntax(String),
}

/// One element: its name, its text (CDATA and text joined), its children in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The element name as written.
    pub name: String,
    /// Text and CDATA content, joined, untrimmed.
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name` (names are case-sensitive: `MsgId` is not `MsgID`).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The element as JSON: a leaf is its text, a container an object of its children
    /// (keys in snake_case, repeated children as an array). WeChat's list elements (`item`,
    /// `List`) are arrays even when they hold one entry, so consumers see one shape.
    pub fn to_json(&self) -> Value {
        if self.children.is_empty() {
            return Value::String(self.text.clone());
        }
        let mut map = Map::new();
        for child in &self.children {
            let key = snake_case(&child.name);
            if matches!(key.as_str(), "item" | "list") && !map.contains_key(&key) {
                map.insert(key, Value::Array(vec![child.to_json()]));
            } else {
                insert_repeatable(&mut map, key, child.to_json());
            }
        }
        Value::Object(map)
    }
}

/// Inserts `value` at `key`, turning a repeated key into an array.
pub fn insert_repeatable(map: &mut Map<String, Value>, key: String, value: Value) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

/// `MsgId` → `msg_id`, `Location_X` → `location_x`, `PicMd5Sum` → `pic_md5_sum`,
/// `MsgID` → `msg_id`, `bizmsgmenuid` unchanged.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None | Some('_') => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                Some(_) => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses a WeChat XML body into its `<xml>` root element.
pub fn parse(body: &[u8], limit: usize) -> Result<Element, XmlError> {
    if body.len() > limit {
        return Err(XmlError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let syntax = |err: quick_xml::Error| XmlError::Syntax(err.to_string());
    loop {
        let event = reader.read_event().map_err(syntax)?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(XmlError::NotOneRoot);
            }
            Event::Start(start) => {
                elements += 1;
                if stack.len() >= MAX_DEPTH || elements > MAX_ELEMENTS {
                    return Err(XmlError::TooComplex);
                }
                stack.push(Element {
                    name: start.name().as_ref().to_owned(),
                    ..Element::default()
                });
            }
            Event::Empty(start) => {
                elements += 1;
                if stack.len() >= MAX_DEPTH || elements > MAX_ELEMENTS {
                    return Err(XmlError::TooComplex);
                }
                let element = Element {
                    name: start.name().as_ref().to_owned(),
                    ..Element::default()
                };
                close(&mut stack, &mut root, element)?;
            }
            Event::End(_) => {
                let element = stack.pop().ok_or(XmlError::NotOneRoot)?;
                close(&mut stack, &mut root, element)?;
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content())?,
            // As written: line ends inside CDATA are kept as the sender wrote them.
            Event::CData(c) => push_text(&mut stack, &c.into_inner())?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(syntax)? {
                    Some(ch) => ch.to_string(),
                    None => {
                        let name = r.into_inner();
                        resolve_xml_entity(&name)
                            .ok_or_else(|| XmlError::Entity(name.chars().take(32).collect()))?
                            .to_owned()
                    }
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Syntax("unclosed element".to_owned()));
    }
    let root = root.ok_or(XmlError::NotOneRoot)?;
    if root.name != "xml" {
        return Err(XmlError::Root(root.name.chars().take(32).collect()));
    }
    Ok(root)
}

fn close(
    stack: &mut [Element],
    root: &mut Option<Element>,
    element: Element,
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None if root.is_none() => *root = Some(element),
        None => return Err(XmlError::NotOneRoot),
    }
    Ok(())
}

fn push_text(stack: &mut [Element], content: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(top) => top.text.push_str(content),
        // Whitespace around the root is fine; anything else is not one document.
        None if content.trim().is_empty() => {}
        None => return Err(XmlError::NotOneRoot),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    #[test]
    fn reads_cdata_and_text_alike() {
        let root = parse(
            b"<?xml version=\"1.0\"?>\n<xml>\n<A><![CDATA[x]]></A>\n<B>1</B><C><![CDATA[218]]></C><D/></xml>\n",
            LIMIT,
        )
        .unwrap();
        assert_eq!(root.text_of("A"), Some("x"));
        assert_eq!(root.text_of("B"), Some("1"));
        assert_eq!(root.text_of("C"), Some("218"));
        assert_eq!(root.text_of("D"), Some(""));
    }

    #[test]
    fn predefined_and_character_references_resolve() {
        let root = parse(b"<xml><A>a &amp; b &#20320;&#x597D;</A></xml>", LIMIT).unwrap();
        assert_eq!(root.text_of("A"), Some("a & b 你好"));
    }

    #[test]
    fn refuses_what_is_not_a_plain_wechat_document() {
        type Check = fn(&XmlError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (
                b"<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><A>&x;</A></xml>",
                |e| matches!(e, XmlError::Doctype),
            ),
            (
                b"<xml><A>&xxe;</A></xml>",
                |e| matches!(e, XmlError::Entity(n) if n == "xxe"),
            ),
            (b"<root><A>1</A></root>", |e| matches!(e, XmlError::Root(_))),
            (b"<xml></xml><xml></xml>", |e| {
                matches!(e, XmlError::NotOneRoot)
            }),
            (b"", |e| matches!(e, XmlError::NotOneRoot)),
            (b"text<xml/>", |e| matches!(e, XmlError::NotOneRoot)),
            (b"<xml><A></B></xml>", |e| matches!(e, XmlError::Syntax(_))),
            (b"<xml><A>", |e| matches!(e, XmlError::Syntax(_))),
            (b"<xml>\xff</xml>", |e| matches!(e, XmlError::NotUtf8)),
        ];
        for (input, expected) in cases {
            let err = parse(input, LIMIT).unwrap_err();
            assert!(
                expected(&err),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn caps_size_and_depth() {
        let big = format!("<xml><A>{}</A></xml>", "x".repeat(100));
        assert!(matches!(
            parse(big.as_bytes(), 50),
            Err(XmlError::TooLarge { limit: 50, .. })
        ));
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(parse(deep.as_bytes(), LIMIT), Err(XmlError::TooComplex));
        let wide = format!("<xml>{}</xml>", "<a/>".repeat(MAX_ELEMENTS + 1));
        assert_eq!(parse(wide.as_bytes(), LIMIT), Err(XmlError::TooComplex));
    }

    #[test]
    fn snake_case_table() {
        for (from, to) in [
            ("MsgId", "msg_id"),
            ("MsgID", "msg_id"),
            ("Location_X", "location_x"),
            ("PicMd5Sum", "pic_md5_sum"),
            ("bizmsgmenuid", "bizmsgmenuid"),
            ("KfAccount", "kf_account"),
            ("ScanCodeInfo", "scan_code_info"),
            ("URL", "url"),
            ("AgentID", "agent_id"),
        ] {
            assert_eq!(snake_case(from), to, "{from}");
        }
    }

    #[test]
    fn nested_and_repeated_elements_become_json() {
        let root = parse(
            b"<xml><SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum><![CDATA[a]]></PicMd5Sum></item><item><PicMd5Sum><![CDATA[b]]></PicMd5Sum></item></PicList></SendPicsInfo></xml>",
            LIMIT,
        )
        .unwrap();
        let json = root.child("SendPicsInfo").unwrap().to_json();
        assert_eq!(
            json,
            serde_json::json!({"count": "2", "pic_list": {"item": [{"pic_md5_sum": "a"}, {"pic_md5_sum": "b"}]}})
        );
    }
}
