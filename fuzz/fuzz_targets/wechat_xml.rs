//! A push body from WeChat: XML parse, JSON view, normalization into content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_connector_wechat::{message, xml};

fuzz_target!(|data: &[u8]| {
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
});
