//! What the three providers share on the wire: the client, capped answers, and transport
//! failures as retryable errors that never show a URL.

use std::time::Duration;

use switchboard_sdk::DeliveryError;
use switchboard_sdk::connector::transport_text;
use switchboard_sdk::reqwest::{self, Certificate};
use switchboard_sdk::text::truncate_chars;

/// Most of a provider's answer read; their answers are small JSON documents.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest provider error text kept, in characters.
pub(crate) const MAX_PROVIDER_TEXT_CHARS: usize = 200;

/// The client a provider uses: the daemon's, or one that also trusts `tls_ca` (a PEM
/// bundle, checked when the config was read).
pub(crate) fn client_for(
    shared: &reqwest::Client,
    tls_ca: Option<&[u8]>,
) -> Result<reqwest::Client, reqwest::Error> {
    let Some(pem) = tls_ca else {
        return Ok(shared.clone());
    };
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    for certificate in Certificate::from_pem_bundle(pem)? {
        builder = builder.add_root_certificate(certificate);
    }
    builder.build()
}

/// Reads at most [`MAX_ANSWER_BYTES`] of an answer.
pub(crate) async fn read_capped(response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    switchboard_sdk::connector::read_capped(response, MAX_ANSWER_BYTES).await
}

/// A request that got no answer: worth retrying. The URL is left out (an APNs URL holds the
/// device token).
pub(crate) fn transport_error(
    provider: &str,
    err: reqwest::Error,
    timeout: Duration,
) -> DeliveryError {
    let text = if err.is_timeout() {
        format!(
            "{provider} did not answer within {} ms",
            timeout.as_millis()
        )
    } else {
        format!("{provider} {}", transport_text(err))
    };
    DeliveryError::Retryable {
        code: Some(format!("{provider}_unreachable")),
        text,
        retry_after: None,
    }
}

/// At most [`MAX_PROVIDER_TEXT_CHARS`] characters of `text`.
pub(crate) fn short(text: &str) -> String {
    truncate_chars(text.trim(), MAX_PROVIDER_TEXT_CHARS).to_owned()
}

/// The start of an answer body as text.
pub(crate) fn excerpt(answer: &[u8]) -> String {
    short(&String::from_utf8_lossy(answer))
}
