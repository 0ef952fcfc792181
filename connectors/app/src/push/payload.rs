//! What a notification says, independent of the provider, and the one way every provider
//! shortens it to its payload limit.

use switchboard_sdk::DeliveryError;

/// Appended to a body that had to be shortened.
pub(crate) const ELLIPSIS: &str = "…";

/// One notification for one device, before a provider shapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notification {
    /// Shown in bold (the configured title, per locale).
    pub title: String,
    /// The reply's text, or the collapsed "3 new messages" line; shortened by providers.
    pub body: String,
    /// Same for every notification of one conversation, so a later one replaces the earlier
    /// one on the device (at most 64 bytes: APNs' limit).
    pub collapse_id: String,
    /// Replies the notification stands for (1 unless collapsed).
    pub count: u64,
    /// Sent without sound and at low priority (quiet hours).
    pub silent: bool,
    /// How long the provider may keep it for an offline device, seconds.
    pub ttl_secs: u64,
    /// Key-value data for the app (conversation id, reply id, deep link, count).
    pub data: Vec<(&'static str, String)>,
    /// The provider's id of the notification this one replaces on the device, for
    /// providers that collapse by message id (JPush on Android).
    pub replaces: Option<String>,
}

/// Why a payload cannot be made small enough.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload is {size} bytes with an empty body, the limit is {limit}")]
pub(crate) struct TooLarge {
    /// The smallest size reached.
    pub size: usize,
    /// The provider's limit.
    pub limit: usize,
}

impl From<TooLarge> for DeliveryError {
    fn from(err: TooLarge) -> Self {
        DeliveryError::Permanent {
            code: "payload_too_large".to_owned(),
            text: err.to_string(),
        }
    }
}

/// Builds a payload with `body`, shortening `body` (on a character boundary, with an
/// ellipsis) to the longest prefix whose serialized payload is at most `limit` bytes. JSON
/// escaping makes the payload grow by more than the text, so it measures the real bytes.
pub(crate) fn fit<F>(body: &str, limit: usize, build: F) -> Result<Vec<u8>, TooLarge>
where
    F: Fn(&str) -> Vec<u8>,
{
    let payload = build(body);
    if payload.len() <= limit {
        return Ok(payload);
    }
    let shortened = |keep: usize| {
        if keep == 0 {
            String::new()
        } else {
            format!("{}{ELLIPSIS}", &body[..keep])
        }
    };
    // Prefix lengths that end on a character boundary; the payload grows with the prefix,
    // so a binary search finds the longest one that fits.
    let boundaries: Vec<usize> = body.char_indices().map(|(at, _)| at).collect();
    let fitting = boundaries.partition_point(|&keep| build(&shortened(keep)).len() <= limit);
    match fitting.checked_sub(1).and_then(|last| boundaries.get(last)) {
        Some(&keep) => Ok(build(&shortened(keep))),
        None => Err(TooLarge {
            size: build("").len(),
            limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(body: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"aps": {"alert": {"title": "Support", "body": body}}}))
            .unwrap_or_default()
    }

    #[test]
    fn a_small_payload_is_left_alone() {
        let payload = fit("hello", 4096, build).unwrap();
        assert_eq!(payload, build("hello"));
    }

    #[test]
    fn shortens_to_the_limit_on_character_boundaries() {
        let overhead = build("").len();
        // (body, limit): multi-byte scripts, emoji, escaped characters and ASCII.
        let cases = [
            ("您的包裹已从深圳发出，预计明天送达。".repeat(200), 4096),
            ("📦🚚✅".repeat(500), 4096),
            ("a\"b\\c\n".repeat(1000), 4096),
            ("x".repeat(10_000), overhead + 10),
            ("é".repeat(100), overhead + 4),
        ];
        for (body, limit) in cases {
            let payload = fit(&body, limit, build).unwrap();
            assert!(payload.len() <= limit, "{} > {limit}", payload.len());
            let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let text = value["aps"]["alert"]["body"].as_str().unwrap();
            let kept = text.strip_suffix(ELLIPSIS).unwrap_or(text);
            assert!(body.starts_with(kept), "kept text is not a prefix");
            assert!(text.ends_with(ELLIPSIS) || text.is_empty(), "{text:?}");
            // Not needlessly short: one more character would not have fitted.
            let next = body[kept.len()..].chars().next().map_or(0, char::len_utf8);
            let longer = format!("{}{ELLIPSIS}", &body[..kept.len() + next]);
            assert!(
                build(&longer).len() > limit,
                "cut too much for limit {limit}"
            );
        }
    }

    #[test]
    fn a_payload_too_large_without_any_body_is_an_error() {
        let overhead = build("").len();
        let err = fit("hello", overhead - 1, build).unwrap_err();
        assert_eq!(
            err,
            TooLarge {
                size: overhead,
                limit: overhead - 1
            }
        );
        assert!(matches!(
            DeliveryError::from(err),
            DeliveryError::Permanent { code, .. } if code == "payload_too_large"
        ));
    }
}
