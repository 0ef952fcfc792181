//! Passive replies: the XML answered in the push's HTTP response.

/// Wraps `value` in CDATA; a `]]>` inside is split across two sections so user-controlled
/// text cannot close the section early.
pub fn cdata(value: &str) -> String {
    format!("<![CDATA[{}]]>", value.replace("]]>", "]]]]><![CDATA[>"))
}

/// A passive text reply from the account (`from_account`, the `gh_` id) to `to_user`.
pub fn text_reply(to_user: &str, from_account: &str, create_time: i64, text: &str) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>{}</Content></xml>",
        cdata(to_user),
        cdata(from_account),
        cdata(text),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml;

    #[test]
    fn cdata_split_survives_a_round_trip() {
        for text in ["plain", "a]]>b", "]]>", "]]]]>>", "x]]><y/>&amp;", ""] {
            let reply = text_reply("o1", "gh_1", 1_700_000_000, text);
            let root = xml::parse(reply.as_bytes(), 1 << 16).unwrap();
            assert_eq!(root.text_of("Content"), Some(text), "{reply}");
            assert_eq!(root.text_of("ToUserName"), Some("o1"));
            assert_eq!(root.text_of("MsgType"), Some("text"));
        }
    }
}
