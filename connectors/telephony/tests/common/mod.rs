//! Helpers shared by the integration tests: fixtures, signed requests, a router harness.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use switchboard_connector_sms::twilio_signature;
use switchboard_sdk::testing::RecordingSink;
use switchboard_sdk::webhook::RejectedBecause;
use switchboard_sdk::{ChannelRef, Connector, Inbound};
use tower::ServiceExt;

/// A fixture's payload: its leading `#` comment lines (the origin note) dropped.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("fixture {}: {err}", path.display()));
    text.lines()
        .skip_while(|line| line.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// Decoded form pairs.
pub fn pairs(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A POST as Twilio sends it to `path_and_query` (relative to the mount), signed for
/// `public_url` with `token`, or carrying `signature` when given.
pub fn twilio_post(
    public_url: &str,
    token: &str,
    path_and_query: &str,
    body: &str,
    signature: Option<&str>,
) -> Request<Body> {
    let url = format!("{}{path_and_query}", public_url.trim_end_matches('/'));
    let signature = signature
        .map(str::to_owned)
        .unwrap_or_else(|| twilio_signature::compute(token.as_bytes(), &url, &pairs(body)));
    Request::post(path_and_query)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature)
        .body(Body::from(body.to_owned()))
        .unwrap_or_default()
}

/// The answer of a router to one request.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub rejected: Option<RejectedBecause>,
}

/// A connector's routes with a recording sink.
pub struct Harness {
    pub router: Router,
    pub sink: Arc<RecordingSink>,
}

impl Harness {
    pub fn new(connector: &dyn Connector) -> Self {
        let sink = Arc::new(RecordingSink::default());
        let channel = ChannelRef {
            kind: connector.kind().to_owned(),
            connector_id: connector.id().to_owned(),
        };
        let router = connector.routes(Inbound::new(sink.clone(), channel));
        Self { router, sink }
    }

    pub async fn call(&self, request: Request<Body>) -> Answer {
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let headers = response.headers().clone();
        let rejected = response.extensions().get::<RejectedBecause>().cloned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            rejected,
        }
    }
}
