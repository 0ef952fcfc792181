//! Telephony webhooks: a call as Twilio posts it (form) and as the generic provider posts it
//! (JSON), then the caller's identity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_connector_telephony::call::CallRequest;
use switchboard_connector_telephony::connector::call_event_kind;
use switchboard_sdk::webhook::FormParams;

fuzz_target!(|data: &[u8]| {
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
});
