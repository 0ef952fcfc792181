//! Who is on the other end of a socket: an anonymous visitor holding an id we signed, or a
//! customer the site's backend vouched for with a token signed by the site key.
//!
//! Site tokens are compact JWTs signed with HS256, the one algorithm accepted (so any JWT
//! library on the site's side can make them). Only that subset is verified here, with the
//! RustCrypto HMAC: the general JWT crates pull in RSA and elliptic-curve stacks this
//! channel never uses.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use switchboard_sdk::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Hex characters of a visitor id's signature (128 bits).
const VISITOR_SIG_HEX: usize = 32;
/// Clock difference allowed when checking a token's `exp` and `nbf`, seconds.
const CLOCK_SKEW_SECS: i64 = 60;
/// Longest site token accepted, bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a visitor's credentials were refused; the text is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The visitor id's signature is wrong (forged, or the secret changed).
    #[error("visitor id is not valid here")]
    BadVisitor,
    /// The site token cannot be read or its signature is wrong.
    #[error("site token is not valid: {0}")]
    BadToken(&'static str),
    /// The site token's `exp` has passed (or `nbf` has not come).
    #[error("site token has expired")]
    ExpiredToken,
    /// A token came but this connector has no site key.
    #[error("this chat does not accept site tokens")]
    TokensNotAccepted,
    /// Anonymous visitors are not allowed.
    #[error("a site token is required")]
    TokenRequired,
}

/// Who a socket speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The channel user id: `v-{ulid}` for anonymous visitors, `c-{sub}` for customers.
    pub user: String,
    /// Whether a site token vouched for this visitor.
    pub verified: bool,
    /// Customer id from the token's `sub`.
    pub customer_id: Option<String>,
    /// Name from the token.
    pub display_name: Option<String>,
    /// Phone from the token.
    pub phone: Option<String>,
    /// Tier the site claims for this customer.
    pub tier: Option<String>,
    /// The customer's user id in the mobile app, for app presence.
    pub app_user_id: Option<String>,
}

impl Identity {
    /// An anonymous visitor.
    pub fn anonymous(user: String) -> Self {
        Self {
            user,
            verified: false,
            customer_id: None,
            display_name: None,
            phone: None,
            tier: None,
            app_user_id: None,
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// The claims read from a site token; unknown claims are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    app_user_id: Option<String>,
}

/// Signs visitor ids and checks site tokens for one connector.
pub(crate) struct Signer {
    connector_id: String,
    visitor_secret: Secret,
    site_key: Option<Secret>,
}

impl Signer {
    /// A signer for `connector_id`.
    pub fn new(connector_id: &str, visitor_secret: Secret, site_key: Option<Secret>) -> Self {
        Self {
            connector_id: connector_id.to_owned(),
            visitor_secret,
            site_key,
        }
    }

    /// A new anonymous visitor's user id.
    pub fn new_visitor() -> String {
        format!("v-{}", ulid::Ulid::new().to_string().to_ascii_lowercase())
    }

    fn visitor_mac(&self, user: &str) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(self.visitor_secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
        // The connector id is signed too, so an id from one chat is refused by another.
        mac.update(b"switchboard.webchat.visitor\0");
        mac.update(self.connector_id.as_bytes());
        mac.update(b"\0");
        mac.update(user.as_bytes());
        mac
    }

    /// `user.signature`: what the widget stores and presents on every connection.
    pub fn sign_visitor(&self, user: &str) -> String {
        let tag = hex::encode(self.visitor_mac(user).finalize().into_bytes());
        format!("{user}.{}", &tag[..VISITOR_SIG_HEX])
    }

    /// The user id inside a signed visitor id, if the signature holds.
    pub fn verify_visitor(&self, signed: &str) -> Result<String, IdentityError> {
        let (user, tag) = signed.rsplit_once('.').ok_or(IdentityError::BadVisitor)?;
        if !is_user_id(user) || tag.len() != VISITOR_SIG_HEX {
            return Err(IdentityError::BadVisitor);
        }
        let given = hex::decode(tag).map_err(|_| IdentityError::BadVisitor)?;
        self.visitor_mac(user)
            .verify_truncated_left(&given)
            .map_err(|_| IdentityError::BadVisitor)?;
        Ok(user.to_owned())
    }

    /// Checks a site token (HS256 JWT) at unix time `now` and returns who it names.
    pub fn verify_token(&self, token: &str, now: i64) -> Result<Identity, IdentityError> {
        let key = self
            .site_key
            .as_ref()
            .ok_or(IdentityError::TokensNotAccepted)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(IdentityError::BadToken("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdentityError::BadToken("expected header.payload.signature"));
        };
        let header: Header = decode_json(header).ok_or(IdentityError::BadToken("bad header"))?;
        if header.alg != "HS256" {
            return Err(IdentityError::BadToken("only HS256 is accepted"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| IdentityError::BadToken("signature is not base64url"))?;
        let mut mac = HmacSha256::new_from_slice(key.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
        mac.update(&token.as_bytes()[..token.len() - signature_len(token)]);
        mac.verify_slice(&signature)
            .map_err(|_| IdentityError::BadToken("signature does not match"))?;

        // Nothing in the payload is looked at before the signature holds.
        let claims: Claims = decode_json(payload).ok_or(IdentityError::BadToken("bad claims"))?;
        if claims.exp + CLOCK_SKEW_SECS < now
            || claims.nbf.is_some_and(|nbf| nbf - CLOCK_SKEW_SECS > now)
        {
            return Err(IdentityError::ExpiredToken);
        }
        if claims.sub.is_empty()
            || claims.sub.len() > 64
            || !claims
                .sub
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
        {
            return Err(IdentityError::BadToken(
                "sub must be 1 to 64 of A-Z a-z 0-9 . _ @ -",
            ));
        }
        let text = |value: Option<String>, max: usize| {
            value.map(|v| v.trim().to_owned()).filter(|v| {
                !v.is_empty() && v.chars().count() <= max && !v.chars().any(char::is_control)
            })
        };
        let tier = claims.tier.filter(|t| {
            (1..=32).contains(&t.len())
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
        });
        let app_user_id =
            text(claims.app_user_id, 128).filter(|v| !v.contains(char::is_whitespace));
        Ok(Identity {
            user: format!("c-{}", claims.sub),
            verified: true,
            customer_id: Some(claims.sub),
            display_name: text(claims.name, 128),
            phone: text(claims.phone, 32),
            tier,
            app_user_id,
        })
    }
}

/// Length of the `.signature` tail of a token, dot included.
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The user ids this connector hands out: `v-` or `c-` then letters, digits and `.` `_` `@` `-`.
pub fn is_user_id(user: &str) -> bool {
    (3..=80).contains(&user.len())
        && (user.starts_with("v-") || user.starts_with("c-"))
        && user[2..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

/// Makes an HS256 site token the way a site's backend would; for tests and examples.
pub fn make_site_token(site_key: &str, claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = HmacSha256::new_from_slice(site_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn signer() -> Signer {
        Signer::new(
            "site",
            Secret::new("visitor-secret-0123456789abcdef0123"),
            Some(Secret::new("site-key-0123456789")),
        )
    }

    #[test]
    fn a_signed_visitor_id_verifies_and_a_changed_one_does_not() {
        let s = signer();
        let user = Signer::new_visitor();
        let signed = s.sign_visitor(&user);
        assert_eq!(s.verify_visitor(&signed), Ok(user.clone()));

        let other_connector = Signer::new(
            "other",
            Secret::new("visitor-secret-0123456789abcdef0123"),
            None,
        );
        let mut flipped = signed.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        let forged_user = signed.replacen("v-", "v-x", 1);
        for bad in [
            flipped.as_str(),
            forged_user.as_str(),
            "v-abc",
            "",
            "v-abc.zz",
            &format!("c-admin.{}", "0".repeat(32)),
        ] {
            assert_eq!(
                s.verify_visitor(bad),
                Err(IdentityError::BadVisitor),
                "{bad}"
            );
        }
        assert_eq!(
            other_connector.verify_visitor(&signed),
            Err(IdentityError::BadVisitor),
            "an id is bound to its connector"
        );
    }

    #[test]
    fn matches_an_independent_hs256_vector() {
        // Computed with Python: base64url(hmac.new(b"site-key-0123456789",
        // b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjLTkiLCJleHAiOjE3MDAwMDM2MDB9",
        // hashlib.sha256).digest()).rstrip("=")
        // fixtures/site-token.txt, computed with Python (fixtures/README.md).
        let token = include_str!("../fixtures/site-token.txt").trim();
        let identity = signer().verify_token(token, NOW).unwrap();
        assert_eq!(identity.user, "c-c-9");
        assert_eq!(identity.customer_id.as_deref(), Some("c-9"));
    }

    #[test]
    fn token_claims_are_carried_and_cleaned() {
        let token = make_site_token(
            "site-key-0123456789",
            &json!({"sub": "cust-42", "exp": NOW + 600, "name": " Li Lei ", "phone": "+8613800138000",
                    "tier": "vip", "app_user_id": "u-42", "iat": NOW}),
        );
        let identity = signer().verify_token(&token, NOW).unwrap();
        assert_eq!(
            identity,
            Identity {
                user: "c-cust-42".into(),
                verified: true,
                customer_id: Some("cust-42".into()),
                display_name: Some("Li Lei".into()),
                phone: Some("+8613800138000".into()),
                tier: Some("vip".into()),
                app_user_id: Some("u-42".into()),
            }
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let s = signer();
        let good = |claims: serde_json::Value| make_site_token("site-key-0123456789", &claims);
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(json!({"sub": "a", "exp": NOW + 60}).to_string())
        );
        let cases: Vec<(&str, String, IdentityError)> = vec![
            (
                "wrong key",
                make_site_token("another-key-0123456", &json!({"sub": "a", "exp": NOW + 60})),
                IdentityError::BadToken("signature does not match"),
            ),
            (
                "expired",
                good(json!({"sub": "a", "exp": NOW - 3600})),
                IdentityError::ExpiredToken,
            ),
            (
                "not yet valid",
                good(json!({"sub": "a", "exp": NOW + 7200, "nbf": NOW + 3600})),
                IdentityError::ExpiredToken,
            ),
            (
                "no exp",
                good(json!({"sub": "a"})),
                IdentityError::BadToken("bad claims"),
            ),
            (
                "bad sub",
                good(json!({"sub": "a b", "exp": NOW + 60})),
                IdentityError::BadToken("sub must be 1 to 64 of A-Z a-z 0-9 . _ @ -"),
            ),
            (
                "alg none",
                none_alg,
                IdentityError::BadToken("only HS256 is accepted"),
            ),
            (
                "two parts",
                "abc.def".into(),
                IdentityError::BadToken("expected header.payload.signature"),
            ),
            (
                "garbage",
                "%%%.%%%.%%%".into(),
                IdentityError::BadToken("bad header"),
            ),
        ];
        for (name, token, expected) in cases {
            assert_eq!(s.verify_token(&token, NOW), Err(expected), "{name}");
        }
        let keyless = Signer::new(
            "site",
            Secret::new("visitor-secret-0123456789abcdef0123"),
            None,
        );
        assert_eq!(
            keyless.verify_token(&good(json!({"sub": "a", "exp": NOW + 60})), NOW),
            Err(IdentityError::TokensNotAccepted)
        );
    }

    #[test]
    fn user_ids_are_checked() {
        for good in ["v-01hzy", "c-cust-42", "c-a@b.c"] {
            assert!(is_user_id(good), "{good}");
        }
        for bad in ["", "v-", "x-abc", "v-a:b", "c-a b", "v-ünï"] {
            assert!(!is_user_id(bad), "{bad}");
        }
    }
}
