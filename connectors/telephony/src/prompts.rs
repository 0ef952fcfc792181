//! What the IVR says, per language: built-in texts for Chinese (`zh*`) and English (`en*`),
//! any of which a config can override; other languages must configure all of them.

/// Every prompt of one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompts {
    /// Said first when a call comes in.
    pub greeting: String,
    /// The choice matched no menu entry.
    pub invalid_choice: String,
    /// The menu got no input.
    pub no_input: String,
    /// Asks for the tracking number on the keypad.
    pub ask_tracking_number: String,
    /// Before the call goes to the agent queue.
    pub connecting: String,
    /// Outside business hours.
    pub closed: String,
    /// Invites a voicemail.
    pub voicemail: String,
    /// Thanks after a voicemail.
    pub voicemail_thanks: String,
    /// No agent could take the call.
    pub agents_unavailable: String,
    /// Before hanging up.
    pub goodbye: String,
}

/// The built-in prompts for `language` (a BCP 47 tag), when there are some.
pub fn builtin(language: &str) -> Option<Prompts> {
    let primary = language
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let texts: [&str; 10] = match primary.as_str() {
        "zh" | "cmn" => [
            "您好，感谢致电。",
            "对不起，您的选择无效。",
            "对不起，我们没有收到您的选择。",
            "请用电话按键输入您的运单号，以井号键结束。",
            "正在为您转接客服，请稍候。",
            "您好，现在是非工作时间。",
            "请在提示音后留言，留言完毕请挂机。",
            "感谢您的留言，我们会尽快与您联系。再见。",
            "对不起，目前没有客服可以接听。",
            "感谢您的来电，再见。",
        ],
        "en" => [
            "Hello, thank you for calling.",
            "Sorry, that is not a valid choice.",
            "Sorry, we did not receive your choice.",
            "Please enter your tracking number on the keypad, then press the pound key.",
            "Please hold while we connect you to an agent.",
            "Hello, we are currently closed.",
            "Please leave a message after the tone, then hang up.",
            "Thank you for your message, we will get back to you soon. Goodbye.",
            "Sorry, no agent is available right now.",
            "Thank you for calling. Goodbye.",
        ],
        _ => return None,
    };
    let [
        greeting,
        invalid_choice,
        no_input,
        ask_tracking_number,
        connecting,
        closed,
        voicemail,
        voicemail_thanks,
        agents_unavailable,
        goodbye,
    ] = texts.map(str::to_owned);
    Some(Prompts {
        greeting,
        invalid_choice,
        no_input,
        ask_tracking_number,
        connecting,
        closed,
        voicemail,
        voicemail_thanks,
        agents_unavailable,
        goodbye,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_cover_chinese_and_english_tags() {
        for tag in ["zh-CN", "zh", "cmn-Hans-CN", "en", "en-US", "EN-gb"] {
            assert!(builtin(tag).is_some(), "{tag}");
        }
        for tag in ["fr-FR", "yue-HK", ""] {
            assert!(builtin(tag).is_none(), "{tag}");
        }
        let zh = builtin("zh-CN").map(|p| p.connecting);
        let en = builtin("en").map(|p| p.connecting);
        assert_ne!(zh, en);
    }
}
