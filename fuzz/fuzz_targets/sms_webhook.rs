//! SMS webhooks: the generic gateway's JSON inbound and status bodies, Twilio's form-encoded
//! inbound and status callbacks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_connector_sms::{generic, twilio};
use switchboard_sdk::webhook::FormParams;

fuzz_target!(|data: &[u8]| {
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
});
