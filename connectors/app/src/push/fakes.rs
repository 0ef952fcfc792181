//! Local fakes of the three push providers, speaking their request and error formats: FCM
//! (OAuth2 token endpoint and `messages:send`) and JPush over HTTP/1.1, APNs over HTTP/2
//! with TLS from a certificate made here. Each fake checks credentials the way the provider
//! does (JWTs verified with the public key of a key pair the test generated), records what
//! it received, and answers success unless a test scripted other answers.
//!
//! Used by the unit tests and, through `#[path]`, by `benches/push_rate.rs`, so it depends
//! on external crates only.

// The tests and the benchmark each use a part of this module.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

/// The scope a Google access token for FCM must be asked for.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request path.
    pub path: String,
    /// HTTP/1.1 or HTTP/2.
    pub version: Version,
    /// The request headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Seen {
    /// The body as JSON (null when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// An answer a test scripts.
#[derive(Debug, Clone)]
pub struct Canned {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body text.
    pub body: String,
}

impl Canned {
    /// A JSON answer.
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string(),
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.body).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// What every fake shares: the record, the script and an optional rate limit.
#[derive(Default)]
pub struct Recorder {
    seen: Mutex<Vec<Seen>>,
    script: Mutex<VecDeque<Canned>>,
    limiter: Mutex<Option<Arc<DefaultDirectRateLimiter>>>,
    throttled: AtomicU64,
    counter: AtomicU64,
}

impl Recorder {
    fn record(&self, path: &str, version: Version, headers: &HeaderMap, body: &[u8]) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen {
                path: path.to_owned(),
                version,
                headers: headers.clone(),
                body: body.to_vec(),
                at: std::time::Instant::now(),
            });
    }

    fn next_canned(&self) -> Option<Canned> {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// True when the provider's rate limit refuses this request (counted).
    fn over_limit(&self) -> bool {
        let limiter = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let over = limiter.is_some_and(|l| l.check().is_err());
        if over {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        over
    }

    fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Answers the next requests with these, in order, then success again.
    pub fn script(&self, answers: impl IntoIterator<Item = Canned>) {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(answers);
    }

    /// Refuses requests beyond `limiter` with the provider's 429.
    pub fn limit(&self, limiter: Arc<DefaultDirectRateLimiter>) {
        *self.limiter.lock().unwrap_or_else(|p| p.into_inner()) = Some(limiter);
    }

    /// Requests refused by the rate limit.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

/// A provider-side rate limit: `per_second` sustained, `burst` at once.
pub fn limiter(per_second: u32, burst: u32) -> Arc<DefaultDirectRateLimiter> {
    let per_second = std::num::NonZeroU32::new(per_second).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(
        Quota::per_second(per_second).allow_burst(burst),
    ))
}

async fn serve_http(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------------- keys

/// An RSA key pair for a fake service account: PKCS#8 private PEM, SPKI public PEM. Made
/// once per process (2048-bit generation is slow in a debug build).
pub fn rsa_key() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let mut rng = rand::thread_rng();
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048)
            .unwrap_or_else(|e| panic!("rsa key generation: {e}"));
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap_or_else(|e| panic!("pkcs8: {e}"))
            .to_string();
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_else(|e| panic!("spki: {e}"));
        (private_pem, public_pem)
    })
}

/// A P-256 key pair like an APNs `.p8` auth key: PKCS#8 private PEM, SPKI public PEM.
pub fn p256_key() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("p256 key: {e}"));
    (key.serialize_pem(), key.public_key_pem())
}

/// A service-account JSON key for the fake FCM, as the Google console writes it.
pub fn service_account_json(project_id: &str, client_email: &str, token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "fake-key-id-1",
        "private_key": rsa_key().0,
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

// ---------------------------------------------------------------- FCM

/// The fake FCM's state.
pub struct FcmState {
    /// `messages:send` requests.
    pub sends: Recorder,
    /// Token endpoint requests.
    pub token_requests: Recorder,
    /// Who may get tokens.
    client_email: String,
    /// The assertion's required audience: our token URL.
    token_uri: Mutex<String>,
    /// Tokens handed out and still good.
    valid: Mutex<HashSet<String>>,
    /// `expires_in` of the next tokens.
    expires_in: AtomicI64,
    /// Tokens handed out so far.
    issued: AtomicU64,
}

/// A fake FCM: `POST /token` and `POST /v1/projects/{project}/messages:send`.
pub struct FakeFcm {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// What it saw and will answer.
    pub state: Arc<FcmState>,
}

impl FakeFcm {
    /// Starts a fake that accepts assertions from `client_email` signed by [`rsa_key`].
    pub async fn start(client_email: &str) -> Self {
        let state = Arc::new(FcmState {
            sends: Recorder::default(),
            token_requests: Recorder::default(),
            client_email: client_email.to_owned(),
            token_uri: Mutex::new(String::new()),
            valid: Mutex::new(HashSet::new()),
            expires_in: AtomicI64::new(3600),
            issued: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/token", post(fcm_token))
            .route("/v1/projects/{project}/{action}", post(fcm_send))
            .with_state(state.clone());
        let base = serve_http(router).await;
        *state.token_uri.lock().unwrap_or_else(|p| p.into_inner()) = format!("{base}/token");
        Self { base, state }
    }

    /// The token endpoint's URL.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base)
    }

    /// Access tokens handed out so far.
    pub fn tokens_issued(&self) -> u64 {
        self.state.issued.load(Ordering::Relaxed)
    }

    /// Makes every token handed out so far invalid (a revoked key, a token FCM expired).
    pub fn revoke_tokens(&self) {
        self.state
            .valid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// `expires_in` of tokens handed out from now on.
    pub fn set_expires_in(&self, secs: i64) {
        self.state.expires_in.store(secs, Ordering::Relaxed);
    }
}

#[derive(serde::Deserialize)]
struct AssertionClaims {
    scope: String,
}

async fn fcm_token(
    State(state): State<Arc<FcmState>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .token_requests
        .record("/token", version, &headers, &body);
    if let Some(canned) = state.token_requests.next_canned() {
        return canned.into_response();
    }
    let invalid = |description: &str| {
        Canned::json(
            400,
            json!({"error": "invalid_grant", "error_description": description}),
        )
        .into_response()
    };
    let form: Vec<(String, String)> = url_form(&body);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return Canned::json(400, json!({"error": "unsupported_grant_type"})).into_response();
    }
    let token_uri = state
        .token_uri
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[token_uri]);
    validation.set_issuer(std::slice::from_ref(&state.client_email));
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let Ok(key) = DecodingKey::from_rsa_pem(rsa_key().1.as_bytes()) else {
        return invalid("fake has no key");
    };
    let claims =
        match jsonwebtoken::decode::<AssertionClaims>(field("assertion"), &key, &validation) {
            Ok(data) => data.claims,
            Err(_) => return invalid("Invalid JWT Signature."),
        };
    if claims.scope != FCM_SCOPE {
        return invalid("Invalid scope");
    }
    let n = state.issued.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("ya29.fake-{n}");
    state
        .valid
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token.clone());
    Canned::json(
        200,
        json!({
            "access_token": token,
            "expires_in": state.expires_in.load(Ordering::Relaxed),
            "token_type": "Bearer"
        }),
    )
    .into_response()
}

async fn fcm_send(
    State(state): State<Arc<FcmState>>,
    Path((project, action)): Path<(String, String)>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/projects/{project}/{action}");
    state.sends.record(&path, version, &headers, &body);
    if action != "messages:send" {
        return Canned::json(404, json!({"error": {"code": 404, "status": "NOT_FOUND"}}))
            .into_response();
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let known = state
        .valid
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&bearer);
    if !known {
        return Canned::json(
            401,
            json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
                "message": "Request had invalid authentication credentials."}}),
        )
        .into_response();
    }
    if state.sends.over_limit() {
        return Canned::json(
            429,
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                "message": "Quota exceeded",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": "QUOTA_EXCEEDED"}]}}),
        )
        .into_response();
    }
    if let Some(canned) = state.sends.next_canned() {
        return canned.into_response();
    }
    let n = state.sends.next_id();
    Canned::json(
        200,
        json!({"name": format!("projects/{project}/messages/0:{n}%fake")}),
    )
    .into_response()
}

/// Decodes `application/x-www-form-urlencoded` (what the token endpoint takes).
fn url_form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect()
}

fn form_decode(text: &str) -> String {
    let replaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&replaced)
        .decode_utf8_lossy()
        .into_owned()
}

// ---------------------------------------------------------------- APNs

/// The fake APNs's state.
pub struct ApnsState {
    /// Notification requests.
    pub sends: Recorder,
    /// The provider key's public half.
    public_pem: String,
    /// Required issuer.
    team_id: String,
    /// Required `kid`.
    key_id: String,
    /// Required `apns-topic`.
    topic: String,
    /// Provider tokens this fake calls expired from now on.
    expired: Mutex<HashSet<String>>,
    /// Distinct provider tokens seen, in order.
    tokens: Mutex<Vec<String>>,
}

/// A fake APNs over HTTP/2 and TLS.
pub struct FakeApns {
    /// `https://127.0.0.1:port`.
    pub base: String,
    /// The CA certificate that signed its certificate, PEM: what the client must trust.
    pub ca_pem: String,
    /// What it saw and will answer.
    pub state: Arc<ApnsState>,
}

impl FakeApns {
    /// Starts a fake that accepts provider tokens of `team_id`/`key_id` signed with the
    /// private half of `public_pem`.
    pub async fn start(public_pem: &str, team_id: &str, key_id: &str, topic: &str) -> Self {
        let state = Arc::new(ApnsState {
            sends: Recorder::default(),
            public_pem: public_pem.to_owned(),
            team_id: team_id.to_owned(),
            key_id: key_id.to_owned(),
            topic: topic.to_owned(),
            expired: Mutex::new(HashSet::new()),
            tokens: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/3/device/{token}", post(apns_send))
            .with_state(state.clone());
        let (base, ca_pem) = serve_h2_tls(router).await;
        Self {
            base,
            ca_pem,
            state,
        }
    }

    /// Distinct provider tokens seen so far.
    pub fn provider_tokens(&self) -> Vec<String> {
        self.state
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Answers `ExpiredProviderToken` to every token seen so far.
    pub fn expire_provider_tokens(&self) {
        let seen = self.provider_tokens();
        self.state
            .expired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(seen);
    }
}

#[derive(serde::Deserialize)]
struct ProviderClaims {
    iat: i64,
}

async fn apns_send(
    State(state): State<Arc<ApnsState>>,
    Path(token): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .sends
        .record(&format!("/3/device/{token}"), version, &headers, &body);
    let reason =
        |status: u16, reason: &str| Canned::json(status, json!({"reason": reason})).into_response();
    let Some(jwt) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
        .map(str::to_owned)
    else {
        return reason(403, "MissingProviderToken");
    };
    {
        let mut tokens = state.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if !tokens.contains(&jwt) {
            tokens.push(jwt.clone());
        }
    }
    let header_ok = jsonwebtoken::decode_header(&jwt)
        .is_ok_and(|h| h.alg == Algorithm::ES256 && h.kid.as_deref() == Some(&state.key_id));
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iss"]);
    validation.set_issuer(std::slice::from_ref(&state.team_id));
    let verified = DecodingKey::from_ec_pem(state.public_pem.as_bytes())
        .ok()
        .and_then(|key| jsonwebtoken::decode::<ProviderClaims>(&jwt, &key, &validation).ok());
    if !header_ok || verified.is_none_or(|data| data.claims.iat <= 0) {
        return reason(403, "InvalidProviderToken");
    }
    if state
        .expired
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&jwt)
    {
        return reason(403, "ExpiredProviderToken");
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if header("apns-topic") != state.topic {
        return reason(400, "BadTopic");
    }
    if !matches!(header("apns-push-type").as_str(), "alert" | "background") {
        return reason(400, "InvalidPushType");
    }
    if header("apns-expiration").parse::<i64>().is_err() {
        return reason(400, "BadExpirationDate");
    }
    if header("apns-collapse-id").len() > 64 {
        return reason(400, "BadCollapseId");
    }
    if !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return reason(400, "BadDeviceToken");
    }
    if state.sends.over_limit() {
        return reason(429, "TooManyRequests");
    }
    if let Some(canned) = state.sends.next_canned() {
        return canned.into_response();
    }
    let n = state.sends.next_id();
    let mut response = StatusCode::OK.into_response();
    if let Ok(id) = HeaderValue::from_str(&format!("00000000-0000-4000-8000-{n:012}")) {
        response.headers_mut().insert("apns-id", id);
    }
    response
}

/// Serves `router` over TLS with HTTP/2 only (ALPN `h2`), with a certificate for
/// 127.0.0.1 signed by a CA made here; returns the base URL and the CA's PEM.
async fn serve_h2_tls(router: Router) -> (String, String) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("ca params: {e}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "switchboard test ca");
    let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("ca key: {e}"));
    let ca =
        CertifiedIssuer::self_signed(ca_params, ca_key).unwrap_or_else(|e| panic!("ca cert: {e}"));
    let leaf_key = KeyPair::generate().unwrap_or_else(|e| panic!("leaf key: {e}"));
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .and_then(|params| params.signed_by(&leaf_key, &ca))
        .unwrap_or_else(|e| panic!("leaf cert: {e}"));

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("tls versions: {e}"))
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap_or_else(|e| panic!("tls config: {e}"));
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://{addr}"), ca.pem())
}

// ---------------------------------------------------------------- JPush

/// The fake JPush's state.
pub struct JpushState {
    /// Push requests.
    pub sends: Recorder,
    /// The `Authorization` header it accepts.
    expected_auth: String,
}

/// A fake JPush: `POST /v3/push` with basic auth.
pub struct FakeJpush {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// What it saw and will answer.
    pub state: Arc<JpushState>,
}

impl FakeJpush {
    /// Starts a fake for one application.
    pub async fn start(app_key: &str, master_secret: &str) -> Self {
        use base64::Engine;
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{app_key}:{master_secret}"));
        let state = Arc::new(JpushState {
            sends: Recorder::default(),
            expected_auth: format!("Basic {credentials}"),
        });
        let router = Router::new()
            .route("/v3/push", post(jpush_send))
            .with_state(state.clone());
        let base = serve_http(router).await;
        Self { base, state }
    }
}

async fn jpush_send(
    State(state): State<Arc<JpushState>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.sends.record("/v3/push", version, &headers, &body);
    let error = |status: u16, code: u32, message: &str| {
        Canned::json(status, json!({"error": {"code": code, "message": message}})).into_response()
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != state.expected_auth {
        return error(401, 1004, "Authen failed");
    }
    let Ok(push) = serde_json::from_slice::<Value>(&body) else {
        return error(400, 1003, "Invalid json");
    };
    if push["audience"]["registration_id"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        return error(400, 1003, "Audience value must be JSON Array format!");
    }
    if state.sends.over_limit() {
        return error(429, 2002, "Rate limit exceeded");
    }
    if let Some(canned) = state.sends.next_canned() {
        return canned.into_response();
    }
    let n = state.sends.next_id();
    Canned::json(
        200,
        json!({"sendno": "0", "msg_id": format!("{}", 54_043_195_528_u64 + n)}),
    )
    .into_response()
}
