//! A timestamped HMAC webhook signature, in both directions: lowercase hex HMAC-SHA256 over
//! `timestamp + "." + body` (the scheme of [`crate::signature`]), the timestamp in unix
//! seconds in one header and the signature in another, with a replay window. Header names
//! are configurable so a gateway that already signs this way fits without code; the SMS and
//! telephony connectors' `generic` profile speaks it.

use axum::http::{HeaderMap, HeaderName};
use time::OffsetDateTime;

use super::{TimestampError, check_timestamp, sign_timestamped, verify_timestamped};
use crate::config::{ConfigProblem, Secret, SecretRef};
use crate::webhook::{RejectReason, Rejection};

/// Default header carrying the hex signature.
pub const DEFAULT_SIGNATURE_HEADER: &str = "x-signature";
/// Default header carrying the unix-seconds timestamp.
pub const DEFAULT_TIMESTAMP_HEADER: &str = "x-timestamp";
/// Default replay window, seconds either side of now.
pub const DEFAULT_REPLAY_WINDOW_SECS: i64 = 300;

/// The signing keys of a config table, as given. A connector declares them as flat,
/// documented fields of its own table (serde cannot combine `flatten` with
/// `deny_unknown_fields`) and copies them into this to resolve and check them the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct HmacConfig {
    /// Shared HMAC-SHA256 key, inline (prefer `signing_key_env` or `signing_key_file`).
    pub signing_key: Option<Secret>,
    /// Environment variable holding the signing key.
    pub signing_key_env: Option<String>,
    /// File holding the signing key.
    pub signing_key_file: Option<std::path::PathBuf>,
    /// Header with the hex signature. Default `X-Signature`.
    pub signature_header: Option<String>,
    /// Header with the unix-seconds timestamp. Default `X-Timestamp`.
    pub timestamp_header: Option<String>,
    /// Seconds a timestamp may be away from now, either way. Default 300.
    pub replay_window_secs: Option<i64>,
}

impl HmacConfig {
    /// Resolves the key and checks the header names; problems are keyed under `prefix`
    /// (like `generic`).
    pub fn build(&self, prefix: &str) -> Result<HmacSigner, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let key = match SecretRef::new(
            "signing_key",
            &self.signing_key,
            &self.signing_key_env,
            &self.signing_key_file,
        )
        .required()
        {
            Ok(key) => Some(key),
            Err(problem) => {
                problems.push(problem.within(prefix));
                None
            }
        };
        let mut header = |name: &str, value: &Option<String>, default: &str| {
            let raw = value.as_deref().unwrap_or(default);
            match HeaderName::from_bytes(raw.trim().as_bytes()) {
                Ok(header) => Some(header),
                Err(_) => {
                    problems.push(ConfigProblem::new(
                        format!("{prefix}.{name}"),
                        format!("{raw:?} is not a valid http header name"),
                    ));
                    None
                }
            }
        };
        let signature_header = header(
            "signature_header",
            &self.signature_header,
            DEFAULT_SIGNATURE_HEADER,
        );
        let timestamp_header = header(
            "timestamp_header",
            &self.timestamp_header,
            DEFAULT_TIMESTAMP_HEADER,
        );
        let window = self
            .replay_window_secs
            .unwrap_or(DEFAULT_REPLAY_WINDOW_SECS);
        if window <= 0 {
            problems.push(ConfigProblem::new(
                format!("{prefix}.replay_window_secs"),
                "must be greater than 0",
            ));
        }
        match (key, signature_header, timestamp_header) {
            (Some(key), Some(signature_header), Some(timestamp_header)) if problems.is_empty() => {
                Ok(HmacSigner {
                    key,
                    signature_header,
                    timestamp_header,
                    window_secs: window,
                })
            }
            _ => Err(problems),
        }
    }
}

/// Signs outgoing and checks incoming generic-profile requests.
#[derive(Debug, Clone)]
pub struct HmacSigner {
    key: Secret,
    signature_header: HeaderName,
    timestamp_header: HeaderName,
    window_secs: i64,
}

impl HmacSigner {
    /// A signer with the default header names and replay window.
    pub fn new(key: Secret) -> Self {
        Self {
            key,
            signature_header: HeaderName::from_static(DEFAULT_SIGNATURE_HEADER),
            timestamp_header: HeaderName::from_static(DEFAULT_TIMESTAMP_HEADER),
            window_secs: DEFAULT_REPLAY_WINDOW_SECS,
        }
    }

    /// The header carrying the signature.
    pub fn signature_header(&self) -> &HeaderName {
        &self.signature_header
    }

    /// The header carrying the timestamp.
    pub fn timestamp_header(&self) -> &HeaderName {
        &self.timestamp_header
    }

    /// The two headers to send with `body` at `now`: `(name, value)` for timestamp and
    /// signature.
    pub fn sign(&self, body: &[u8], now: OffsetDateTime) -> [(HeaderName, String); 2] {
        let ts = now.unix_timestamp().to_string();
        let signature = sign_timestamped(self.key.expose().as_bytes(), &ts, body);
        [
            (self.timestamp_header.clone(), ts),
            (self.signature_header.clone(), signature),
        ]
    }

    /// Checks a request: signature first (so nothing is learnt without the key), then the
    /// replay window. Missing or wrong is 403 `bad_signature`, outside the window 403
    /// `stale_timestamp`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), Rejection> {
        let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(ts), Some(signature)) = (
            header(&self.timestamp_header),
            header(&self.signature_header),
        ) else {
            return Err(Rejection::new(
                RejectReason::BadSignature,
                format!(
                    "missing {} or {} header",
                    self.signature_header, self.timestamp_header
                ),
            ));
        };
        if !verify_timestamped(self.key.expose().as_bytes(), ts, body, signature) {
            return Err(Rejection::new(
                RejectReason::BadSignature,
                format!("{} does not match the body", self.signature_header),
            ));
        }
        match check_timestamp(ts, now, self.window_secs) {
            Ok(_) => Ok(()),
            Err(TimestampError::Malformed) => Err(Rejection::new(
                RejectReason::BadSignature,
                format!("{} is not unix seconds", self.timestamp_header),
            )),
            Err(err @ TimestampError::OutsideWindow(_)) => Err(Rejection::new(
                RejectReason::StaleTimestamp,
                err.to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers_of(pairs: [(HeaderName, String); 2]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        headers
    }

    #[test]
    fn signs_and_verifies_with_a_window() {
        let signer = HmacSigner::new(Secret::new("k"));
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let signed = signer.sign(b"{}", now);
        // The same vector as the sdk's own test, computed there with Python's hmac.
        assert_eq!(
            signed[1].1,
            "c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"
        );
        let headers = headers_of(signed);
        assert_eq!(signer.verify(&headers, b"{}", now), Ok(()));

        let err = signer.verify(&headers, b"{ }", now).unwrap_err();
        assert_eq!(err.reason, RejectReason::BadSignature);

        let later = now + time::Duration::seconds(301);
        let err = signer.verify(&headers, b"{}", later).unwrap_err();
        assert_eq!(err.reason, RejectReason::StaleTimestamp);

        let err = signer.verify(&HeaderMap::new(), b"{}", now).unwrap_err();
        assert_eq!(err.reason, RejectReason::BadSignature);
    }

    #[test]
    fn config_reports_every_problem_with_its_key() {
        let config = HmacConfig {
            signing_key: None,
            signing_key_env: None,
            signing_key_file: None,
            signature_header: Some("bad header".to_owned()),
            timestamp_header: None,
            replay_window_secs: Some(0),
        };
        let problems = config.build("generic").unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "generic.signing_key",
                "generic.signature_header",
                "generic.replay_window_secs"
            ]
        );
    }
}
