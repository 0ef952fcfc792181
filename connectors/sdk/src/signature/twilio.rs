//! Twilio's request signature (`X-Twilio-Signature`): base64 of HMAC-SHA1, keyed with the
//! account's auth token, over the full request URL followed by every POST parameter sorted by
//! name, each name immediately followed by its value.
//!
//! The URL is the one Twilio requested, which behind a TLS-terminating proxy is not the one
//! this process sees; so it is rebuilt from the configured public URL of the connector, the
//! route, and the query string as received.

use axum::http::{HeaderMap, Uri};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::Secret;
use crate::webhook::{FormParams, RejectReason, Rejection};

type HmacSha1 = Hmac<Sha1>;

/// The header Twilio puts its signature in.
pub const HEADER: &str = "x-twilio-signature";

/// The signature Twilio sends for a POST of `params` to `url`.
pub fn compute(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    // HMAC takes keys of any length, so `mac` cannot fail; an empty string would never verify.
    mac(auth_token, url, params)
        .map(|mac| STANDARD.encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Checks a base64 signature against `url` and `params`, in constant time.
pub fn verify(auth_token: &[u8], url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(given) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    mac(auth_token, url, params).is_some_and(|mac| mac.verify_slice(&given).is_ok())
}

fn mac(auth_token: &[u8], url: &str, params: &[(String, String)]) -> Option<HmacSha1> {
    // A stable sort keeps repeated names (MediaUrl in some callbacks) in the order sent.
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut mac = HmacSha1::new_from_slice(auth_token).ok()?;
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    Some(mac)
}

/// `url` with its default port added when absent (`https://h/p` → `https://h:443/p`) or
/// removed when present; `None` for a non-default port or an unknown scheme.
fn with_other_port_form(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The port follows the last ':' outside an IPv6 literal's brackets.
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            (port == default).then(|| format!("{scheme}://{host}{tail}"))
        }
        _ => Some(format!("{scheme}://{authority}:{default}{tail}")),
    }
}

/// Checks Twilio webhooks for one connector: knows the auth token and the public URL the
/// connector is mounted at.
#[derive(Clone)]
pub struct TwilioVerifier {
    auth_token: Secret,
    public_url: String,
}

impl std::fmt::Debug for TwilioVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioVerifier")
            .field("auth_token", &self.auth_token)
            .field("public_url", &self.public_url)
            .finish()
    }
}

impl TwilioVerifier {
    /// A verifier for requests Twilio sends to `public_url` + a route (trailing `/` ignored).
    pub fn new(auth_token: Secret, public_url: &str) -> Self {
        Self {
            auth_token,
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The URL Twilio signed for `route` (like `/inbound`) with the query as received.
    pub fn signed_url(&self, route: &str, uri: &Uri) -> String {
        match uri.query() {
            Some(query) if !query.is_empty() => format!("{}{route}?{query}", self.public_url),
            _ => format!("{}{route}", self.public_url),
        }
    }

    /// Parses the form body and checks its signature; a missing or wrong signature is a
    /// 403 [`Rejection`] naming no secret.
    pub fn verify_request(
        &self,
        route: &str,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<FormParams, Rejection> {
        let Some(signature) = headers.get(HEADER).and_then(|v| v.to_str().ok()) else {
            return Err(Rejection::new(
                RejectReason::BadSignature,
                "missing X-Twilio-Signature header",
            ));
        };
        let params = FormParams::parse(body);
        let url = self.signed_url(route, uri);
        let token = self.auth_token.expose().as_bytes();
        // Twilio signs the URL as configured at Twilio, which may or may not spell out the
        // default port; its own validators accept both, and so does this.
        let matches = verify(token, &url, &params.0, signature)
            || with_other_port_form(&url)
                .is_some_and(|other| verify(token, &other, &params.0, signature));
        if matches {
            Ok(params)
        } else {
            Err(Rejection::new(
                RejectReason::BadSignature,
                "X-Twilio-Signature does not match the configured public_url and auth token",
            ))
        }
    }

    /// Signs `params` as Twilio would for `route` + `query`; for tests and fake providers.
    pub fn sign(&self, route: &str, query: Option<&str>, params: &[(String, String)]) -> String {
        let url = match query {
            Some(q) => format!("{}{route}?{q}", self.public_url),
            None => format!("{}{route}", self.public_url),
        };
        compute(self.auth_token.expose().as_bytes(), &url, params)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Twilio's published examples (docs "Webhooks security", section "Validating signatures
    /// from Twilio"; the older numbers are the ones in twilio-python's validation tests).
    /// Both values were recomputed independently with Python's `hmac` module. Note that the
    /// expected value "RSOYDt4T1cUTdK1PDd93/VVr8B8=" belongs to the +14158675309 numbers; with
    /// the +12349013030 numbers of the current docs the signature is
    /// "0/KCTR6DLpKmkAf8muzZqo1nDgQ=".
    #[test]
    fn matches_twilios_published_examples() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let cases = [
            ("+14158675309", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            ("+12349013030", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        ];
        for (caller, expected) in cases {
            // Deliberately not in sorted order: the signature sorts.
            let params = pairs(&[
                ("To", "+18005551212"),
                ("Digits", "1234"),
                ("CallSid", "CA1234567890ABCDE"),
                ("From", caller),
                ("Caller", caller),
            ]);
            assert_eq!(compute(b"12345", url, &params), expected, "{caller}");
            assert!(verify(b"12345", url, &params, expected));
            assert!(!verify(b"54321", url, &params, expected));
            assert!(!verify(
                b"12345",
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &params,
                expected
            ));
            let mut tampered = params.clone();
            tampered[1].1 = "9999".to_owned();
            assert!(!verify(b"12345", url, &tampered, expected));
            assert!(!verify(b"12345", url, &params, "not base64!"));
            assert!(!verify(b"12345", url, &params, ""));
        }
    }

    #[test]
    fn verifier_uses_public_url_route_and_query() {
        let verifier = TwilioVerifier::new(Secret::new("12345"), "https://mycompany.com/");
        let body = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234\
                     &From=%2B14158675309&To=%2B18005551212";
        let uri: Uri = "/myapp.php?foo=1&bar=2".parse().unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert(
            HEADER,
            HeaderValue::from_static("RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        );
        let params = verifier.verify_request("/myapp.php", &uri, &headers, body);
        assert_eq!(
            params.map(|p| p.get("Digits").map(str::to_owned)),
            Ok(Some("1234".to_owned()))
        );

        let other_query: Uri = "/myapp.php?foo=1".parse().unwrap_or_default();
        let err = verifier
            .verify_request("/myapp.php", &other_query, &headers, body)
            .unwrap_err();
        assert_eq!(err.reason, RejectReason::BadSignature);

        let err = verifier
            .verify_request("/myapp.php", &uri, &HeaderMap::new(), body)
            .unwrap_err();
        assert_eq!(err.reason, RejectReason::BadSignature);
        assert!(err.detail.contains("missing"), "{}", err.detail);
    }

    #[test]
    fn the_default_port_may_be_spelled_out_or_not() {
        let cases = [
            (
                "https://h.example/p?q=1",
                Some("https://h.example:443/p?q=1"),
            ),
            ("https://h.example:443/p", Some("https://h.example/p")),
            ("http://h.example/p", Some("http://h.example:80/p")),
            ("http://h.example:80", Some("http://h.example")),
            ("https://h.example:8443/p", None),
            ("https://[::1]/p", Some("https://[::1]:443/p")),
            ("ftp://h/p", None),
        ];
        for (url, other) in cases {
            assert_eq!(with_other_port_form(url).as_deref(), other, "{url}");
        }
        let params = pairs(&[("Body", "hi")]);
        let verifier = TwilioVerifier::new(Secret::new("t"), "https://sb.example.com/sms/main");
        let signed_with_port =
            compute(b"t", "https://sb.example.com:443/sms/main/inbound", &params);
        let mut headers = HeaderMap::new();
        headers.insert(
            HEADER,
            HeaderValue::from_str(&signed_with_port).unwrap_or(HeaderValue::from_static("x")),
        );
        let uri: Uri = "/inbound".parse().unwrap_or_default();
        assert!(
            verifier
                .verify_request("/inbound", &uri, &headers, b"Body=hi")
                .is_ok()
        );
        let signed_other_port = compute(
            b"t",
            "https://sb.example.com:8443/sms/main/inbound",
            &params,
        );
        headers.insert(
            HEADER,
            HeaderValue::from_str(&signed_other_port).unwrap_or(HeaderValue::from_static("x")),
        );
        assert!(
            verifier
                .verify_request("/inbound", &uri, &headers, b"Body=hi")
                .is_err()
        );
    }
}
