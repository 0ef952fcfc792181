//! The app channel's `POST /messages` body, after authentication.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = switchboard_connector_app::parse_message_body(data, true);
});
