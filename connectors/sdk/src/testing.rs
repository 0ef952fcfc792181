//! Test doubles and the compliance harness every connector runs (`features = ["testing"]`).
//!
//! The harness checks the promises the daemon relies on, the same way for every channel:
//! a valid request is accepted once and answered with success; a forged, stale or malformed
//! one is refused with the right status, publishes nothing and says why; a message the
//! pipeline cannot make safe is never answered with success; a retried request carries the
//! same dedupe key.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tower::ServiceExt;

use crate::connector::Connector;
use crate::envelope::ChannelRef;
use crate::event::Event;
use crate::inbound::{AcceptError, Accepted, Inbound, InboundMessage, InboundSink};
use crate::signature::hmac_webhook::HmacSigner;
use crate::signature::twilio;
use crate::webhook::{FormParams, RejectReason, RejectedBecause};

/// An [`InboundSink`] that records what it accepts, or refuses with a set error.
#[derive(Default)]
pub struct RecordingSink {
    accepted: Mutex<Vec<(ChannelRef, InboundMessage)>>,
    reported: Mutex<Vec<(ChannelRef, Event)>>,
    refuse_with: Mutex<Option<AcceptError>>,
    refused: Mutex<Vec<RejectReason>>,
}

impl RecordingSink {
    /// Makes every later `accept` fail with `err` (or succeed again with `None`).
    pub fn refuse_with(&self, err: Option<AcceptError>) {
        *self.refuse_with.lock().unwrap() = err;
    }

    /// Every event reported so far.
    pub fn reported(&self) -> Vec<(ChannelRef, Event)> {
        self.reported.lock().unwrap().clone()
    }

    /// Every refusal counted through [`InboundSink::refused`] so far.
    pub fn refusals(&self) -> Vec<RejectReason> {
        self.refused.lock().unwrap().clone()
    }

    /// Everything accepted so far.
    pub fn accepted(&self) -> Vec<(ChannelRef, InboundMessage)> {
        self.accepted.lock().unwrap().clone()
    }
}

#[async_trait]
impl InboundSink for RecordingSink {
    async fn accept(
        &self,
        channel: &ChannelRef,
        message: InboundMessage,
    ) -> Result<Accepted, AcceptError> {
        if let Some(err) = self.refuse_with.lock().unwrap().clone() {
            return Err(err);
        }
        let mut accepted = self.accepted.lock().unwrap();
        accepted.push((channel.clone(), message));
        Ok(Accepted {
            envelope_id: format!("test-{}", accepted.len()),
            duplicate: false,
        })
    }

    async fn report(&self, channel: &ChannelRef, event: Event) -> Result<(), AcceptError> {
        if let Some(err) = self.refuse_with.lock().unwrap().clone() {
            return Err(err);
        }
        self.reported.lock().unwrap().push((channel.clone(), event));
        Ok(())
    }

    fn refused(&self, _channel: &ChannelRef, reason: RejectReason) {
        self.refused.lock().unwrap().push(reason);
    }
}

/// Mounts `connector`'s routes the way the daemon does, with a [`RecordingSink`] behind them.
pub fn mount(connector: &dyn Connector) -> (Router, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let channel = ChannelRef {
        kind: connector.kind().to_owned(),
        connector_id: connector.id().to_owned(),
    };
    (connector.routes(Inbound::new(sink.clone(), channel)), sink)
}

/// What a router answered to one request, read whole.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
    /// Why the request was refused, when it went through a `Rejection`.
    pub rejected: Option<RejectedBecause>,
}

/// A connector's routes with a recording sink, driven in-process.
pub struct Harness {
    /// The mounted routes.
    pub router: Router,
    /// What the routes accepted and reported.
    pub sink: Arc<RecordingSink>,
}

impl Harness {
    /// Mounts `connector` (see [`mount`]).
    pub fn new(connector: &dyn Connector) -> Self {
        let (router, sink) = mount(connector);
        Self { router, sink }
    }

    /// Sends `request` through the routes and reads the whole answer.
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

/// Serves `router` on 127.0.0.1 at a free port for as long as the test's runtime lives: the
/// local fake of a provider's API that a connector's configurable base URL points at.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|err| panic!("bind: {err}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|err| panic!("local addr: {err}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// The payload of fixture `name` in `dir` (a connector's `fixtures/`), its leading `#` lines
/// (the origin note) dropped; panics naming the file when it cannot be read.
pub fn fixture(dir: impl AsRef<Path>, name: &str) -> String {
    let path = dir.as_ref().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("fixture {}: {err}", path.display()));
    text.lines()
        .skip_while(|line| line.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// The `[[connectors.{kind}]]` tables of a config fragment (a connector's `config.toml`),
/// each deserialized into `C` as the daemon does; any other key in the fragment is an error,
/// so an example cannot carry a table the daemon would refuse.
pub fn connector_tables<C: DeserializeOwned>(text: &str, kind: &str) -> Result<Vec<C>, String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|err| err.to_string())?;
    let missing = || format!("no [[connectors.{kind}]] table");
    let Some(toml::Value::Table(mut connectors)) = doc.remove("connectors") else {
        return Err(missing());
    };
    if let Some(key) = doc.keys().next() {
        return Err(format!("unexpected top-level key {key:?}"));
    }
    let Some(toml::Value::Array(tables)) = connectors.remove(kind) else {
        return Err(missing());
    };
    if let Some(key) = connectors.keys().next() {
        return Err(format!("unexpected table connectors.{key}"));
    }
    tables
        .into_iter()
        .map(|table| {
            table
                .try_into()
                .map_err(|err: toml::de::Error| err.to_string())
        })
        .collect()
}

/// A form POST as Twilio sends it to `path_and_query` (relative to the connector's mount),
/// signed for `public_url` with `auth_token`, or carrying `signature` when given.
pub fn twilio_request(
    public_url: &str,
    auth_token: &str,
    path_and_query: &str,
    body: &str,
    signature: Option<&str>,
) -> Request<Body> {
    let url = format!("{}{path_and_query}", public_url.trim_end_matches('/'));
    let signature = signature.map(str::to_owned).unwrap_or_else(|| {
        let params = FormParams::parse(body.as_bytes());
        twilio::compute(auth_token.as_bytes(), &url, &params.0)
    });
    Request::post(path_and_query)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(twilio::HEADER, signature)
        .body(Body::from(body.to_owned()))
        .unwrap_or_default()
}

/// A JSON POST to `path` signed by `signer` as of `at`, with the signer's header names.
pub fn hmac_request(
    signer: &HmacSigner,
    path: &str,
    body: &str,
    at: OffsetDateTime,
) -> Request<Body> {
    let mut request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap_or_default();
    for (name, value) in signer.sign(body.as_bytes(), at) {
        if let Ok(value) = value.parse() {
            request.headers_mut().insert(name, value);
        }
    }
    request
}

/// Requests a connector's compliance check sends. Each call must return a fresh request; a
/// valid one built twice must describe the same message (as a channel's retry would).
pub trait ComplianceFixture {
    /// A correctly signed request carrying one message.
    fn valid_request(&self) -> Request<Body>;
    /// The same message with a wrong or missing signature.
    fn forged_request(&self) -> Request<Body>;
    /// A correctly signed request whose body the connector cannot parse.
    fn malformed_request(&self) -> Request<Body>;
    /// A correctly signed request from outside the replay window, if the channel has one.
    fn stale_request(&self) -> Option<Request<Body>>;
}

/// Runs the compliance checks against `connector`; panics with a message naming the broken
/// promise.
pub async fn check_connector(connector: Arc<dyn Connector>, fixture: &dyn ComplianceFixture) {
    let channel = ChannelRef {
        kind: connector.kind().to_owned(),
        connector_id: connector.id().to_owned(),
    };
    let (router, sink) = mount(connector.as_ref());
    let call = |request: Request<Body>| {
        let router = router.clone();
        async move {
            router
                .oneshot(request)
                .await
                .expect("routers are infallible")
        }
    };

    let ok = call(fixture.valid_request()).await;
    assert!(
        ok.status().is_success(),
        "a valid request must succeed, got {}",
        ok.status()
    );
    let first = sink.accepted();
    assert_eq!(
        first.len(),
        1,
        "a valid request must be accepted exactly once"
    );
    assert_eq!(
        first[0].0, channel,
        "accepted on behalf of the wrong channel"
    );
    assert!(
        !first[0].1.dedupe_key.is_empty(),
        "a message needs a dedupe key"
    );

    let again = call(fixture.valid_request()).await;
    assert!(
        again.status().is_success(),
        "a retried request must succeed, got {}",
        again.status()
    );
    let both = sink.accepted();
    assert_eq!(
        both.len(),
        2,
        "the pipeline, not the connector, drops duplicates"
    );
    assert_eq!(
        both[0].1.dedupe_key, both[1].1.dedupe_key,
        "a retry must keep its dedupe key"
    );

    let refusals = [
        (
            "forged",
            Some(fixture.forged_request()),
            StatusCode::FORBIDDEN,
            RejectReason::BadSignature,
        ),
        (
            "stale",
            fixture.stale_request(),
            StatusCode::FORBIDDEN,
            RejectReason::StaleTimestamp,
        ),
        (
            "malformed",
            Some(fixture.malformed_request()),
            StatusCode::BAD_REQUEST,
            RejectReason::Malformed,
        ),
    ];
    for (name, request, status, reason) in refusals {
        let Some(request) = request else { continue };
        let response = call(request).await;
        assert_eq!(
            response.status(),
            status,
            "a {name} request must get {status}"
        );
        let because = response
            .extensions()
            .get::<RejectedBecause>()
            .unwrap_or_else(|| panic!("a {name} request must be refused through Rejection"));
        assert_eq!(
            because.reason, reason,
            "a {name} request is refused for the wrong reason"
        );
        assert_eq!(
            sink.accepted().len(),
            2,
            "a {name} request must not be accepted"
        );
    }

    sink.refuse_with(Some(AcceptError::Unavailable("spool full".into())));
    let unavailable = call(fixture.valid_request()).await;
    assert!(
        !unavailable.status().is_success(),
        "a message the pipeline could not make safe must not be answered with success"
    );
    sink.refuse_with(Some(AcceptError::RateLimited {
        retry_after: Duration::from_secs(3),
    }));
    let limited = call(fixture.valid_request()).await;
    assert_eq!(
        limited.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a rate-limited sender gets 429"
    );
    sink.refuse_with(None);
}

#[cfg(test)]
mod tests {
    use axum::http::Uri;
    use serde::Deserialize;

    use super::*;
    use crate::config::Secret;
    use crate::signature::twilio::TwilioVerifier;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        id: String,
    }

    #[test]
    fn connector_tables_take_only_the_kinds_tables() {
        let two = "[[connectors.sms]]\nid = \"a\"\n[[connectors.sms]]\nid = \"b\"\n";
        assert_eq!(
            connector_tables::<Table>(two, "sms"),
            Ok(vec![Table { id: "a".into() }, Table { id: "b".into() }])
        );
        let cases = [
            (
                "[[connectors.sms]]\nid = \"a\"\n",
                "app",
                "no [[connectors.app]] table",
            ),
            (
                "x = 1\n[[connectors.sms]]\nid = \"a\"\n",
                "sms",
                "top-level key \"x\"",
            ),
            (
                "[[connectors.sms]]\nid = \"a\"\n[[connectors.app]]\nid = \"b\"\n",
                "sms",
                "connectors.app",
            ),
            (
                "[[connectors.sms]]\nid = \"a\"\nsurprise = 1\n",
                "sms",
                "surprise",
            ),
            (
                "[connectors.sms]\nid = \"a\"\n",
                "sms",
                "no [[connectors.sms]] table",
            ),
        ];
        for (text, kind, error) in cases {
            let got = connector_tables::<Table>(text, kind);
            assert!(
                got.as_ref().is_err_and(|e| e.contains(error)),
                "{text}: {got:?}"
            );
        }
    }

    #[test]
    fn fixtures_lose_their_origin_note() {
        let dir = std::env::temp_dir().join(format!("sb-fixture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("{err}"));
        std::fs::write(
            dir.join("f.json"),
            "# from the docs\n# page 2\n{\"a\": 1}\n",
        )
        .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(fixture(&dir, "f.json"), "{\"a\": 1}");
        std::fs::remove_dir_all(&dir).unwrap_or_else(|err| panic!("{err}"));
    }

    #[test]
    fn signed_requests_verify() {
        let body = "Body=hi&From=%2B14155550100";
        let request = twilio_request(
            "https://sb.example.com/sms/main/",
            "t",
            "/inbound?x=1",
            body,
            None,
        );
        let uri: Uri = "/inbound?x=1".parse().unwrap_or_default();
        let verifier = TwilioVerifier::new(Secret::new("t"), "https://sb.example.com/sms/main");
        let params = verifier.verify_request("/inbound", &uri, request.headers(), body.as_bytes());
        assert_eq!(
            params.map(|p| p.get("Body").map(str::to_owned)),
            Ok(Some("hi".into()))
        );

        let signer = HmacSigner::new(Secret::new("k"));
        let now = OffsetDateTime::now_utc();
        let request = hmac_request(&signer, "/inbound", "{}", now);
        assert_eq!(signer.verify(request.headers(), b"{}", now), Ok(()));
        assert!(signer.verify(request.headers(), b"{ }", now).is_err());
    }
}
