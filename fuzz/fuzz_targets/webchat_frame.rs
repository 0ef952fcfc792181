//! A frame a web chat client sends over its socket.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = switchboard_connector_webchat::parse_client_frame(text);
    }
});
