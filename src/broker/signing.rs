//! Signatures on everything the daemon publishes, so a helpdesk can tell our messages from
//! ones injected by anyone else with publish rights on the broker.
//!
//! `x-switchboard-signature` lists `key_id=hex(HMAC-SHA256(key, body))` for the current key
//! and then each previous key, comma-separated; `x-switchboard-key-id` names the current key.
//! During a rotation a helpdesk holding only the old key or only the new one verifies alike;
//! it accepts a message when any listed signature of a key id it knows matches the body.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use switchboard_sdk::Secret;

type HmacSha256 = Hmac<Sha256>;

/// AMQP header with the signatures.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";
/// AMQP header naming the current key.
pub const KEY_ID_HEADER: &str = "x-switchboard-key-id";

/// One signing key and its public id.
#[derive(Clone)]
pub struct SigningKey {
    /// The id helpdesks look the key up by.
    pub id: String,
    /// The shared secret.
    pub key: Secret,
}

fn mac(key: &Secret) -> HmacSha256 {
    HmacSha256::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"))
}

/// Signs published bodies with the current key and every previous one.
#[derive(Clone)]
pub struct EnvelopeSigner {
    current: SigningKey,
    previous: Vec<SigningKey>,
}

impl EnvelopeSigner {
    /// A signer with `current` first, then `previous`, still listed during a rotation.
    pub fn new(current: SigningKey, previous: Vec<SigningKey>) -> Self {
        Self { current, previous }
    }

    /// The two headers to put on a message with `body`.
    pub fn headers(&self, body: &[u8]) -> [(&'static str, String); 2] {
        let signatures = std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|key| {
                let mut mac = mac(&key.key);
                mac.update(body);
                format!("{}={}", key.id, hex::encode(mac.finalize().into_bytes()))
            })
            .collect::<Vec<_>>()
            .join(",");
        [
            (KEY_ID_HEADER, self.current.id.clone()),
            (SIGNATURE_HEADER, signatures),
        ]
    }
}

/// What a helpdesk does: whether any signature in `header` made with a key in `keys` matches
/// `body` (compared in constant time).
pub fn verify(keys: &[SigningKey], header: &str, body: &[u8]) -> bool {
    header.split(',').any(|entry| {
        let Some((id, signature)) = entry.trim().split_once('=') else {
            return false;
        };
        let Ok(given) = hex::decode(signature) else {
            return false;
        };
        keys.iter().filter(|key| key.id == id).any(|key| {
            let mut mac = mac(&key.key);
            mac.update(body);
            mac.verify_slice(&given).is_ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: &str) -> SigningKey {
        SigningKey {
            id: id.to_owned(),
            key: Secret::new(secret),
        }
    }

    #[test]
    fn both_sides_of_a_rotation_verify_and_nothing_else_does() {
        let old = key("2026-10", "old-key-0123456789abcdef");
        let new = key("2026-11", "new-key-0123456789abcdef");
        let signer = EnvelopeSigner::new(new.clone(), vec![old.clone()]);
        let body = br#"{"schema":"switchboard.envelope.v1"}"#;
        let [(_, id), (_, header)] = signer.headers(body);
        assert_eq!(id, "2026-11");
        assert!(header.starts_with("2026-11="), "{header}");
        assert!(verify(std::slice::from_ref(&old), &header, body));
        assert!(verify(std::slice::from_ref(&new), &header, body));
        assert!(!verify(&[new.clone(), old.clone()], &header, b"{}"));
        assert!(!verify(&[key("2026-11", "someone-else")], &header, body));
        // A key id that is known but a signature made with another key under that id.
        let forged = EnvelopeSigner::new(key("2026-11", "attacker"), vec![]).headers(body);
        assert!(!verify(&[new], &forged[1].1, body));
        assert!(!verify(&[old], "garbage", body));
    }

    #[test]
    fn the_signature_is_plain_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let signer = EnvelopeSigner::new(key("k", "Jefe"), vec![]);
        let [_, (_, header)] = signer.headers(b"what do ya want for nothing?");
        assert_eq!(
            header,
            "k=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
