//! Tier lookups and enrichment hooks against a fake CRM, shipment API and classifier on
//! 127.0.0.1: answers are used and cached, a CRM that does not answer costs at most its
//! timeout and leaves the default tier with the `tier_lookup_failed` flag, failures open the
//! circuit so later messages do not wait at all, hooks fall back to the built-in result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use switchboard::pipeline::routing::overflow::NoBacklog;
use switchboard::pipeline::routing::{Policy, Routed, Services, Subject};
use switchboard_sdk::services::MemoryKv;
use switchboard_sdk::{KvError, KvStore};

/// What the fake answers, per path.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Answer,
    Hang,
    Fail,
}

#[derive(Clone)]
struct Fake {
    mode: Arc<Mutex<Mode>>,
    hits: Arc<Mutex<Vec<String>>>,
    auth: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn hits(&self) -> usize {
        self.hits.lock().unwrap().len()
    }
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

async fn tier(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let conversation = query.get("conversation").cloned().unwrap_or_default();
    fake.hits.lock().unwrap().push(conversation.clone());
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        fake.auth.lock().unwrap().push(auth.to_owned());
    }
    let mode = *fake.mode.lock().unwrap();
    match mode {
        Mode::Hang => std::future::pending::<Response>().await,
        Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Mode::Answer => match conversation.as_str() {
            "app:shop:gold" => Json(json!({"tier": "gold", "customer_id": "c-9"})).into_response(),
            c if c.starts_with("app:shop:vip") => {
                Json(json!({"level": "vip", "crm_id": 42})).into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        },
    }
}

async fn shipment(
    State(fake): State<Fake>,
    axum::extract::Path(number): axum::extract::Path<String>,
) -> Response {
    fake.hits.lock().unwrap().push(number.clone());
    let mode = *fake.mode.lock().unwrap();
    match mode {
        Mode::Hang => std::future::pending::<Response>().await,
        Mode::Fail => StatusCode::BAD_GATEWAY.into_response(),
        Mode::Answer => Json(json!({"state": "Customs Hold", "number": number})).into_response(),
    }
}

async fn classify(State(fake): State<Fake>, Json(body): Json<serde_json::Value>) -> Response {
    fake.hits
        .lock()
        .unwrap()
        .push(body["normalized"].as_str().unwrap_or("").to_owned());
    let mode = *fake.mode.lock().unwrap();
    match mode {
        Mode::Hang => std::future::pending::<Response>().await,
        Mode::Fail => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::Answer => Json(json!({"intent": "damaged", "confidence": 0.93})).into_response(),
    }
}

async fn start() -> (Fake, String) {
    let fake = Fake {
        mode: Arc::new(Mutex::new(Mode::Answer)),
        hits: Arc::default(),
        auth: Arc::default(),
    };
    let app = Router::new()
        .route("/tier", get(tier))
        .route("/shipments/{number}", get(shipment))
        .route("/classify", post(classify))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, format!("http://{addr}"))
}

fn config(base: &str, extra: &str) -> String {
    format!(
        r##"
[tiers]
names = ["standard", "vip"]
source = "http"

[tiers.http]
url = "{base}/tier?conversation={{conversation_id}}"
timeout_ms = 200
cache_ttl_secs = 60
failure_threshold = 2
open_secs = 60
tier_field = "level"
customer_id_field = "crm_id"
token = "crm-secret"

[[queues]]
name = "q"
bindings = ["#"]

[[intents]]
name = "damaged"
keywords = ["damaged"]

[[intents]]
name = "tracking"
keywords = ["where"]

[[routing.rules]]
name = "crm-down"
flags = ["tier_lookup_failed"]
skill = "fallback"

[[routing.rules]]
name = "customs"
shipment_status = ["customs_hold"]
skill = "claims"

[[routing.rules]]
name = "damaged"
intents = ["damaged"]
skill = "claims"

[routing.default]
skill = "general"

[routing.enrichment]
budget_ms = 300

[routing.enrichment.shipment]
url = "{base}/shipments/{{tracking_number}}"
timeout_ms = 150
status_field = "state"
{extra}
"##
    )
}

fn policy(source: &str) -> Policy {
    Policy::from_config(&switchboard::config::load_str("lookups.toml", source).unwrap())
}

async fn route(policy: &Policy, conversation: &str, text: &str) -> Routed {
    let subject = Subject::text_only("app", conversation, text);
    policy
        .route(
            &subject,
            Services {
                kv: &MemoryKv::default(),
                backlog: &NoBacklog,
            },
            false,
        )
        .await
}

#[tokio::test]
async fn a_crm_answer_gives_tier_and_customer_id_and_is_cached() {
    let (crm, base) = start().await;
    let p = policy(&config(&base, ""));
    let r = route(&p, "app:shop:vip-1", "hello").await;
    assert_eq!(
        (r.decision.tier.as_str(), r.facts.tier.source.as_str()),
        ("vip", "http")
    );
    assert_eq!(r.facts.tier.customer_id.as_deref(), Some("42"));
    assert_eq!(r.decision.queue_key, "general.vip");
    assert_eq!(crm.auth.lock().unwrap().as_slice(), ["Bearer crm-secret"]);
    let again = route(&p, "app:shop:vip-1", "hello").await;
    assert_eq!(
        (again.facts.tier.source.as_str(), again.facts.tier.outcome),
        ("http (cached)", "cached")
    );
    assert_eq!(
        crm.hits(),
        1,
        "the second lookup is answered from the cache"
    );

    let unknown = route(&p, "app:shop:nobody", "hello").await;
    assert_eq!(
        (unknown.decision.tier.as_str(), unknown.facts.tier.failed),
        ("standard", false)
    );
    assert!(
        unknown.decision.flags.is_empty(),
        "404 is an answer, not a failure"
    );
}

#[tokio::test]
async fn a_tier_the_config_does_not_know_falls_back_with_the_flag() {
    let (_crm, base) = start().await;
    let p = policy(&config(&base, "").replace("tier_field = \"level\"", "tier_field = \"tier\""));
    let r = route(&p, "app:shop:gold", "hello").await;
    assert_eq!(r.decision.tier, "standard");
    assert!(r.facts.tier.failed);
    assert_eq!(r.decision.rule, "crm-down");
}

#[tokio::test]
async fn a_crm_that_does_not_answer_costs_at_most_its_timeout_then_the_circuit_opens() {
    let (crm, base) = start().await;
    crm.set(Mode::Hang);
    let p = policy(&config(&base, ""));
    for attempt in 1..=2 {
        let started = Instant::now();
        let r = route(&p, &format!("app:shop:hang-{attempt}"), "hello").await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(200 + 900),
            "lookup {attempt} took {took:?} with a 200 ms timeout"
        );
        assert_eq!(r.decision.tier, "standard");
        assert_eq!(r.facts.tier.outcome, "timeout");
        assert!(r.decision.flags.contains(&"tier_lookup_failed".to_owned()));
        assert_eq!(r.decision.rule, "crm-down");
    }
    assert_eq!(crm.hits(), 2);
    // Two failures opened the circuit: no request, no wait.
    let started = Instant::now();
    let r = route(&p, "app:shop:hang-3", "hello").await;
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.facts.tier.outcome, "circuit_open");
    assert!(r.decision.flags.contains(&"tier_lookup_failed".to_owned()));
    assert_eq!(crm.hits(), 2, "an open circuit sends nothing");
    // A reload builds a new policy with a closed circuit.
    crm.set(Mode::Answer);
    let reloaded = policy(&config(&base, ""));
    assert_eq!(
        route(&reloaded, "app:shop:vip-2", "hi").await.decision.tier,
        "vip"
    );
}

#[tokio::test]
async fn error_answers_count_as_failures_too() {
    let (crm, base) = start().await;
    crm.set(Mode::Fail);
    let p = policy(&config(&base, ""));
    let r = route(&p, "app:shop:x", "hello").await;
    assert_eq!(
        (r.facts.tier.outcome, r.facts.tier.failed),
        ("failed", true)
    );
    route(&p, "app:shop:y", "hello").await;
    assert_eq!(
        route(&p, "app:shop:z", "hello").await.facts.tier.outcome,
        "circuit_open"
    );
    assert_eq!(crm.hits(), 2);
}

#[tokio::test]
async fn the_shipment_status_of_a_tracking_number_found_routes_it() {
    let (api, base) = start().await;
    let p = policy(&config(&base, ""));
    let r = route(&p, "app:shop:s-1", "where is SF1234567890123").await;
    assert_eq!(
        r.facts.shipment.value().map(String::as_str),
        Some("customs_hold")
    );
    assert_eq!(r.decision.rule, "customs");
    assert_eq!(
        api.hits.lock().unwrap().last().map(String::as_str),
        Some("SF1234567890123")
    );

    let no_number = route(&p, "app:shop:s-2", "where is it").await;
    assert_eq!(
        no_number.facts.shipment.outcome(),
        "skipped",
        "nothing to ask about"
    );

    api.set(Mode::Hang);
    let started = Instant::now();
    let r = route(&p, "app:shop:s-3", "where is SF1234567890123").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(150 + 900),
        "{took:?} with a 150 ms hook timeout"
    );
    assert_eq!(r.facts.shipment.outcome(), "timeout");
    assert!(
        r.decision
            .flags
            .contains(&"shipment_lookup_failed".to_owned())
    );
}

#[tokio::test]
async fn a_confident_classifier_wins_and_a_slow_one_is_left_behind_within_the_budget() {
    let (api, base) = start().await;
    let p = policy(&config(
        &base,
        &format!(
            "\n[routing.enrichment.classifier]\nurl = \"{base}/classify\"\ntimeout_ms = 1000\nmin_confidence = 0.9\n"
        ),
    ));
    let r = route(&p, "app:shop:c-1", "where is it?").await;
    let intent = r.decision.intent.clone().unwrap();
    assert_eq!(
        (intent.name.as_str(), intent.source),
        ("damaged", "classifier")
    );
    assert_eq!(r.decision.rule, "damaged");

    api.set(Mode::Hang);
    let started = Instant::now();
    let r = route(&p, "app:shop:c-2", "where is it?").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(300 + 900),
        "{took:?}: the 300 ms budget caps the 1000 ms hook timeout"
    );
    let intent = r.decision.intent.unwrap();
    assert_eq!(
        (intent.name.as_str(), intent.source),
        ("tracking", "keywords")
    );
    assert!(r.decision.flags.contains(&"classifier_failed".to_owned()));
}

/// A store that always fails, like Redis while it is down.
struct DownKv;

#[async_trait]
impl KvStore for DownKv {
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, KvError> {
        Err(KvError("connection refused".into()))
    }
    async fn set(&self, _: &str, _: &[u8], _: Option<Duration>) -> Result<(), KvError> {
        Err(KvError("connection refused".into()))
    }
    async fn set_if_absent(&self, _: &str, _: &[u8], _: Duration) -> Result<bool, KvError> {
        Err(KvError("connection refused".into()))
    }
    async fn delete_if_equals(&self, _: &str, _: &[u8]) -> Result<bool, KvError> {
        Err(KvError("connection refused".into()))
    }
    async fn delete(&self, _: &str) -> Result<(), KvError> {
        Err(KvError("connection refused".into()))
    }
    async fn increment(&self, _: &str) -> Result<u64, KvError> {
        Err(KvError("connection refused".into()))
    }
}

const REDIS_SOURCE: &str = r##"
[redis]
url = "redis://127.0.0.1:9/0"

[tiers]
names = ["standard", "vip"]
source = "redis"

[[queues]]
name = "q"
bindings = ["#"]

[routing.default]
skill = "general"
"##;

#[tokio::test]
async fn tiers_in_the_shared_store_by_customer_then_conversation() {
    let p = policy(REDIS_SOURCE);
    let kv = MemoryKv::default();
    kv.set("tier:app:shop:u-1", b"vip", None).await.unwrap();
    kv.set(
        "tier:crm-5",
        br#"{"tier":"vip","customer_id":"crm-5"}"#,
        None,
    )
    .await
    .unwrap();
    let services = Services {
        kv: &kv,
        backlog: &NoBacklog,
    };
    let s = Subject::text_only("app", "app:shop:u-1", "hi");
    let r = p.route(&s, services, false).await;
    assert_eq!(
        (r.decision.tier.as_str(), r.facts.tier.outcome),
        ("vip", "found")
    );
    let mut s = Subject::text_only("app", "app:shop:u-2", "hi");
    s.customer_id = Some("crm-5");
    let r = p.route(&s, services, false).await;
    assert_eq!(r.facts.tier.customer_id.as_deref(), Some("crm-5"));
    let s = Subject::text_only("app", "app:shop:u-3", "hi");
    let r = p.route(&s, services, false).await;
    assert_eq!(
        (r.decision.tier.as_str(), r.facts.tier.failed),
        ("standard", false)
    );

    let down = Services {
        kv: &DownKv,
        backlog: &NoBacklog,
    };
    let r = p.route(&s, down, false).await;
    assert_eq!(r.decision.tier, "standard");
    assert!(r.decision.flags.contains(&"tier_lookup_failed".to_owned()));
    assert_eq!(
        r.decision.rule, "default",
        "a store that is down still routes"
    );
}
