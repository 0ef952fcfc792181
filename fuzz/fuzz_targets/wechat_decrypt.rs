//! Safe-mode decryption: the frame parser on arbitrary plaintext (what any key turns a
//! ciphertext into), and `MessageCrypt::open` on an arbitrary `Encrypt` value that carries
//! a valid signature, so the input reaches base64, AES and the frame checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_connector_wechat::crypto::{self, AesKey, MessageCrypt};

const TOKEN: &str = "fuzztoken";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const PREVIOUS: &str = "GFEDCBA9876543210zyxwvutsrqponmlkjihgfedcba";

fuzz_target!(|data: &[u8]| {
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
});
