//! The fuzz targets' bodies: what each feeds its input to. Shared by the cargo-fuzz binaries
//! (`fuzz_targets/`) and by `tests/fuzz_corpus.rs`, which runs every committed seed through
//! them in the ordinary test suite, so a seed that once crashed stays a regression test
//! without libFuzzer's instrumented build.

use switchboard_connector_sms::{generic, twilio};
use switchboard_connector_telephony::call::CallRequest;
use switchboard_connector_telephony::connector::call_event_kind;
use switchboard_connector_wechat::crypto::{self, AesKey, MessageCrypt};
use switchboard_connector_wechat::{message, xml};
use switchboard_sdk::webhook::FormParams;
use switchboard_sdk::{Command, ConversationId, Reply};

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target by name, as its seed folder `fuzz/seeds/<name>` is called.
pub const TARGETS: &[(&str, Target)] = &[
    ("wechat_xml", wechat_xml),
    ("wechat_decrypt", wechat_decrypt),
    ("app_webhook", app_webhook),
    ("sms_webhook", sms_webhook),
    ("telephony_webhook", telephony_webhook),
    ("webchat_frame", webchat_frame),
    ("amqp_reply", amqp_reply),
    ("config", config),
];

/// A push body from WeChat: XML parse, JSON view, normalization into content.
pub fn wechat_xml(data: &[u8]) {
    let Ok(root) = xml::parse(data, 64 * 1024) else {
        return;
    };
    let _ = root.to_json();
    if let Ok(push) = message::normalize(&root) {
        let mut content = push.content();
        let _ = push.event_name().map(message::report_kind);
        let _ = push.media_id();
        message::attach_media_url(&mut content, "https://example.test/media/1");
    }
}

const TOKEN: &str = "fuzztoken";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const PREVIOUS: &str = "GFEDCBA9876543210zyxwvutsrqponmlkjihgfedcba";

/// Safe-mode decryption: the frame parser on arbitrary plaintext (what any key turns a
/// ciphertext into), and `MessageCrypt::open` on an arbitrary `Encrypt` value that carries a
/// valid signature, so the input reaches base64, AES and the frame checks. The first byte
/// picks the entry point.
pub fn wechat_decrypt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = crypto::parse_frame(rest);
        }
        1 => {
            let Ok(encrypt) = std::str::from_utf8(rest) else {
                return;
            };
            let keys = vec![
                AesKey::from_encoding_aes_key(KEY).expect("valid key"),
                AesKey::from_encoding_aes_key(PREVIOUS).expect("valid key"),
            ];
            let crypt = MessageCrypt::new(TOKEN, keys, "wxfuzz", true);
            let signature = crypto::signature(&[TOKEN, "1700000000", "nonce", encrypt]);
            let _ = crypt.open("1700000000", "nonce", encrypt, &signature);
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = AesKey::from_encoding_aes_key(text);
            }
        }
    }
}

/// The app channel's `POST /messages` body, after authentication.
pub fn app_webhook(data: &[u8]) {
    let _ = switchboard_connector_app::parse_message_body(data, true);
}

/// SMS webhooks: the generic gateway's JSON inbound and status bodies, Twilio's
/// form-encoded inbound and status callbacks. The first byte picks the entry point.
pub fn sms_webhook(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Ok((inbound, from)) = generic::parse_inbound(body, Some("86")) {
                let _ = generic::incoming(&inbound, from, None, None);
            }
        }
        1 => {
            let _ = generic::parse_status(body, Some("r1".into()), Some("1"), "sms", "fuzz");
        }
        2 => {
            let _ = twilio::parse_incoming(&FormParams::parse(body), true);
        }
        _ => {
            let _ = twilio::parse_status(&FormParams::parse(body), None, "sms", "fuzz");
        }
    }
}

/// Telephony webhooks: a call as Twilio posts it (form) and as the generic provider posts
/// it (JSON), then the caller's identity. The first byte picks the provider.
pub fn telephony_webhook(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let call = if mode % 2 == 0 {
        let params = FormParams::parse(body);
        if let Some(status) = params.get("CallStatus") {
            let _ = call_event_kind(status);
        }
        CallRequest::from_twilio(&params, true)
    } else {
        CallRequest::from_generic(body, true)
    };
    if let Ok(call) = call {
        let _ = call.caller(Some("1"));
        let _ = call.caller(None);
    }
}

/// A frame a web chat client sends over its socket.
pub fn webchat_frame(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = switchboard_connector_webchat::parse_client_frame(text);
    }
}

/// What a helpdesk publishes to `switchboard.outbound`: a reply or a command, parsed as the
/// dispatcher does, then a reply's content rendered as a WeChat customer-service message.
pub fn amqp_reply(data: &[u8]) {
    if Command::is_command(data) {
        if let Ok(command) = Command::from_slice(data) {
            let _ = ConversationId::parse(&command.conversation_id);
            let _ = command.action.name();
        }
        return;
    }
    let Ok(reply) = Reply::from_slice(data) else {
        return;
    };
    if let Ok(conversation) = ConversationId::parse(&reply.conversation_id) {
        let _ = conversation.to_string();
    }
    let _ = switchboard_connector_wechat::outbound::custom_message("openid", &reply.content, None);
}

/// The config loader: TOML parse, validation and the location of each problem in the text.
pub fn config(data: &[u8]) {
    if let Ok(source) = std::str::from_utf8(data) {
        let _ = switchboard::config::load_str("fuzz.toml", source);
    }
}
