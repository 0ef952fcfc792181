//! The config loader: TOML parse, validation and the location of each problem in the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(source) = std::str::from_utf8(data) {
        let _ = switchboard::config::load_str("fuzz.toml", source);
    }
});
