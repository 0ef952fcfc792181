//! Request ids: every request on the public listener gets one (the caller's `X-Request-Id`
//! when it is a sane token, else a new ULID), logged in the request's span, returned in the
//! response, and carried into the envelopes the request produces (`request_id` and the
//! `x-request-id` header), so one id follows a message from the channel to the helpdesk.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};

/// The header, in both directions.
pub const HEADER: &str = "x-request-id";

/// Longest accepted caller id, bytes; longer ones are replaced, not cut.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: RequestId;
}

/// One request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The caller's id when it is 1 to [`MAX_LEN`] characters of letters, digits and
    /// `-_.:/+=@`; a new ULID otherwise, so nothing a caller sends can break a log line or
    /// a header.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| is_acceptable(id))
            .map_or_else(Self::generate, |id| Self(id.into()))
    }

    /// A new id.
    pub fn generate() -> Self {
        Self(ulid::Ulid::new().to_string().into())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a response header value.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// Runs `future` with this id as the current one.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// The id of the request being handled on this task, if any.
    pub fn current() -> Option<RequestId> {
        CURRENT.try_with(Clone::clone).ok()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_acceptable(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/+=@".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn sane_ids_are_kept_and_anything_else_replaced() {
        for kept in ["abc-123", "01JAZ/req:7", &"a".repeat(MAX_LEN)] {
            assert_eq!(RequestId::from_headers(&with(kept)).as_str(), kept);
        }
        for replaced in ["", "a b", "x\ty", "<script>", &"a".repeat(MAX_LEN + 1)] {
            let id = RequestId::from_headers(&with(replaced));
            assert_ne!(id.as_str(), replaced);
            assert_eq!(id.as_str().len(), 26, "a ULID");
        }
        assert_eq!(
            RequestId::from_headers(&HeaderMap::new()).as_str().len(),
            26
        );
    }

    #[tokio::test]
    async fn the_current_id_is_the_scoped_one() {
        assert_eq!(RequestId::current(), None);
        let id = RequestId::generate();
        let seen = id.clone().scope(async { RequestId::current() }).await;
        assert_eq!(seen, Some(id));
    }
}
