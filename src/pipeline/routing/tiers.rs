//! Customer tier and identity: the static `customers` table first, then the configured
//! source (a key per customer in the shared store, or a CRM over HTTP with a timeout, a
//! cache and a circuit breaker). A source that fails or is slow never holds a message up:
//! the default tier is used and the message is flagged `tier_lookup_failed`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use switchboard_sdk::{KvStore, SecretRef};

use crate::config::{TierHttpConfig, TierSourceKind, TiersConfig};

/// What identifies the customer of a message.
#[derive(Debug, Clone, Default)]
pub struct Ids<'a> {
    /// `{kind}:{connector}:{user}`.
    pub conversation_id: &'a str,
    /// Channel kind.
    pub channel: &'a str,
    /// Connector id.
    pub connector: &'a str,
    /// The user's id in the channel.
    pub user: &'a str,
    /// The customer id the channel gave, if any.
    pub customer_id: Option<&'a str>,
    /// The phone number the channel gave (E.164), if any.
    pub phone: Option<&'a str>,
}

/// The tier found and where from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierLookup {
    /// Tier name.
    pub tier: String,
    /// Where it came from, for explanations: `override`, `customers[conversation]`,
    /// `redis tier:…`, `http`, `http (cached)`, `default`, `default (http timed out)`, ...
    pub source: String,
    /// The CRM's customer id, when the source gave one.
    pub customer_id: Option<String>,
    /// True when the source failed and the default was used.
    pub failed: bool,
    /// One word for metrics: `override`, `static`, `found`, `not_found`, `cached`,
    /// `failed`, `timeout`, `circuit_open`, `default`.
    pub outcome: &'static str,
}

/// A found record: tier and customer id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    tier: String,
    customer_id: Option<String>,
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    trial: bool,
}

/// A circuit breaker as the operator console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerState {
    /// What it guards: `tiers.http`.
    pub name: &'static str,
    /// Host (and port) it calls.
    pub target: String,
    /// `closed`, `open` (calls skipped) or `half_open` (the next call is a trial).
    pub state: &'static str,
    /// Consecutive failures counted.
    pub failures: u32,
    /// Failures that open it.
    pub failure_threshold: u32,
    /// While open: seconds until it lets a trial call through (half-open).
    pub half_open_in_secs: Option<u64>,
    /// Seconds it stays open each time.
    pub open_secs: u64,
}

/// What the breaker lets through now.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    Go,
    Trial,
    Open,
}

#[derive(Debug)]
struct Http {
    config: TierHttpConfig,
    token: Option<String>,
    client: reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, Option<Found>)>>,
    breaker: Mutex<Breaker>,
}

#[derive(Debug)]
enum Source {
    Static,
    Redis { key: String },
    Http(Box<Http>),
}

/// Resolves tiers; one per policy, so a reload starts with an empty cache and a closed
/// circuit.
#[derive(Debug)]
pub struct Tiers {
    /// Every tier name.
    pub names: Vec<String>,
    /// Default tier.
    pub default: String,
    customers: BTreeMap<String, String>,
    source: Source,
}

/// Characters kept as they are in URL placeholders: the unreserved set of RFC 3986.
const PLACEHOLDER: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Fills `{name}` placeholders with percent-encoded values.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        let encoded = utf8_percent_encode(value, PLACEHOLDER).to_string();
        out = out.replace(&format!("{{{name}}}"), &encoded);
    }
    out
}

/// Placeholders a tier URL template may use.
pub const TIER_PLACEHOLDERS: [&str; 6] = [
    "conversation_id",
    "channel",
    "connector",
    "user",
    "customer_id",
    "phone",
];

/// Names inside `{}` in `template`.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        names.push(&after[..close]);
        rest = &after[close + 1..];
    }
    names
}

impl Tiers {
    /// Tiers as configured. The HTTP client is built here; no request is made.
    pub fn new(config: &TiersConfig) -> Self {
        let source = match (config.source, &config.http) {
            (TierSourceKind::Redis, _) => Source::Redis {
                key: config.redis.key.clone(),
            },
            (TierSourceKind::Http, Some(http)) => {
                let token = SecretRef::new("token", &http.token, &http.token_env, &http.token_file)
                    .optional()
                    .ok()
                    .flatten()
                    .map(|s| s.expose().to_owned());
                let client = reqwest::Client::builder()
                    .connect_timeout(Duration::from_millis(http.timeout_ms))
                    .build()
                    .unwrap_or_default();
                Source::Http(Box::new(Http {
                    config: http.clone(),
                    token,
                    client,
                    cache: Mutex::new(HashMap::new()),
                    breaker: Mutex::new(Breaker::default()),
                }))
            }
            _ => Source::Static,
        };
        Self {
            names: config.names.clone(),
            default: config.default.clone(),
            customers: config.customers.clone(),
            source,
        }
    }

    fn fallback(&self, source: String, failed: bool, outcome: &'static str) -> TierLookup {
        TierLookup {
            tier: self.default.clone(),
            source,
            customer_id: None,
            failed,
            outcome,
        }
    }

    /// The CRM lookup's circuit breaker, when the source is HTTP.
    pub fn breaker(&self) -> Option<BreakerState> {
        match &self.source {
            Source::Http(http) => Some(http.state()),
            _ => None,
        }
    }

    /// The tier from the static table alone, if listed there.
    pub fn lookup_static(&self, ids: &Ids<'_>) -> Option<TierLookup> {
        let listed = |key: &str, source: &str| {
            self.customers.get(key).map(|tier| TierLookup {
                tier: tier.clone(),
                source: source.to_owned(),
                customer_id: None,
                failed: false,
                outcome: "static",
            })
        };
        listed(ids.conversation_id, "customers[conversation]").or_else(|| {
            ids.customer_id
                .and_then(|id| listed(id, "customers[customer]"))
        })
    }

    /// Looks the tier up: an override wins, then the static table, then the source.
    pub async fn lookup(
        &self,
        ids: &Ids<'_>,
        tier_override: Option<&str>,
        kv: &dyn KvStore,
    ) -> TierLookup {
        if let Some(tier) = tier_override {
            return TierLookup {
                tier: tier.to_owned(),
                source: "override".to_owned(),
                customer_id: None,
                failed: false,
                outcome: "override",
            };
        }
        if let Some(found) = self.lookup_static(ids) {
            return found;
        }
        match &self.source {
            Source::Static => self.fallback("default".to_owned(), false, "default"),
            Source::Redis { key } => self.lookup_store(key, ids, kv).await,
            Source::Http(http) => self.lookup_http(http, ids).await,
        }
    }

    /// A found record, checked against the configured names.
    fn accept(&self, found: Found, source: String, outcome: &'static str) -> TierLookup {
        if self.names.contains(&found.tier) {
            TierLookup {
                tier: found.tier,
                source,
                customer_id: found.customer_id,
                failed: false,
                outcome,
            }
        } else {
            tracing::warn!(%source, "tier source answered a tier not in tiers.names, using the default");
            let mut lookup = self.fallback(
                format!("default ({source} gave an unknown tier)"),
                true,
                "failed",
            );
            lookup.customer_id = found.customer_id;
            lookup
        }
    }

    async fn lookup_store(&self, template: &str, ids: &Ids<'_>, kv: &dyn KvStore) -> TierLookup {
        let candidates = [ids.customer_id, Some(ids.conversation_id), ids.phone];
        for id in candidates.into_iter().flatten() {
            let key = template.replace("{id}", id);
            match kv.get(&key).await {
                Ok(Some(bytes)) => {
                    let Some(found) = parse_record(&bytes, "tier", "customer_id") else {
                        tracing::warn!(
                            "tier record in the shared store is not a tier or a JSON object with one"
                        );
                        return self.fallback(
                            "default (unreadable record)".to_owned(),
                            true,
                            "failed",
                        );
                    };
                    return self.accept(
                        found,
                        format!("redis {}", template.replace("{id}", "…")),
                        "found",
                    );
                }
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "tier lookup in the shared store failed, using the default tier");
                    return self.fallback("default (redis unavailable)".to_owned(), true, "failed");
                }
            }
        }
        self.fallback("default (not in redis)".to_owned(), false, "not_found")
    }

    async fn lookup_http(&self, http: &Http, ids: &Ids<'_>) -> TierLookup {
        let url = fill(
            &http.config.url,
            &[
                ("conversation_id", ids.conversation_id),
                ("channel", ids.channel),
                ("connector", ids.connector),
                ("user", ids.user),
                ("customer_id", ids.customer_id.unwrap_or("")),
                ("phone", ids.phone.unwrap_or("")),
            ],
        );
        let ttl = Duration::from_secs(http.config.cache_ttl_secs);
        if !ttl.is_zero() {
            let cache = http.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, answer)) = cache.get(&url)
                && at.elapsed() < ttl
            {
                return match answer.clone() {
                    Some(found) => self.accept(found, "http (cached)".to_owned(), "cached"),
                    None => self.fallback(
                        "default (unknown to the crm, cached)".to_owned(),
                        false,
                        "cached",
                    ),
                };
            }
        }
        let pass = http.pass();
        if pass == Pass::Open {
            return self.fallback(
                "default (crm circuit open)".to_owned(),
                true,
                "circuit_open",
            );
        }
        let timeout = Duration::from_millis(http.config.timeout_ms);
        let result = tokio::time::timeout(timeout, http.fetch(&url)).await;
        let answer = match result {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                http.failed(pass);
                tracing::warn!(error = %err, "crm tier lookup failed, using the default tier");
                return self.fallback("default (crm failed)".to_owned(), true, "failed");
            }
            Err(_) => {
                http.failed(pass);
                tracing::warn!(
                    ?timeout,
                    "crm tier lookup timed out, using the default tier"
                );
                return self.fallback(
                    format!(
                        "default (crm timed out after {} ms)",
                        http.config.timeout_ms
                    ),
                    true,
                    "timeout",
                );
            }
        };
        http.succeeded();
        if !ttl.is_zero() {
            let mut cache = http.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= http.config.cache_entries {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
                if cache.len() >= http.config.cache_entries {
                    cache.clear();
                }
            }
            cache.insert(url, (Instant::now(), answer.clone()));
        }
        match answer {
            Some(found) => self.accept(found, "http".to_owned(), "found"),
            None => self.fallback(
                "default (unknown to the crm)".to_owned(),
                false,
                "not_found",
            ),
        }
    }
}

/// A tier record: a bare tier name, or a JSON object with the two fields.
fn parse_record(bytes: &[u8], tier_field: &str, customer_field: &str) -> Option<Found> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let tier = value.get(tier_field)?.as_str()?.to_owned();
        let customer_id = value
            .get(customer_field)
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty());
        return Some(Found { tier, customer_id });
    }
    (!text.is_empty()).then(|| Found {
        tier: text.to_owned(),
        customer_id: None,
    })
}

/// Why a CRM answer was not usable.
#[derive(Debug, thiserror::Error)]
enum CrmError {
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("status {0}")]
    Status(u16),
    #[error("answer has no {0:?} field")]
    Shape(String),
}

impl Http {
    fn pass(&self) -> Pass {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match breaker.open_until {
            None => Pass::Go,
            Some(until) if Instant::now() < until => Pass::Open,
            Some(_) if breaker.trial => Pass::Open,
            Some(_) => {
                breaker.trial = true;
                Pass::Trial
            }
        }
    }

    fn failed(&self, pass: Pass) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        breaker.trial = false;
        breaker.failures = breaker.failures.saturating_add(1);
        if pass == Pass::Trial || breaker.failures >= self.config.failure_threshold {
            breaker.open_until = Some(Instant::now() + Duration::from_secs(self.config.open_secs));
            tracing::warn!(
                failures = breaker.failures,
                open_secs = self.config.open_secs,
                "crm tier lookups failing, circuit open"
            );
        }
    }

    fn succeeded(&self) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        *breaker = Breaker::default();
    }

    fn state(&self) -> BreakerState {
        let breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (state, half_open_in) = match breaker.open_until {
            None => ("closed", None),
            Some(until) if now < until => ("open", Some(until - now)),
            Some(_) => ("half_open", None),
        };
        let target = reqwest::Url::parse(&self.config.url)
            .ok()
            .and_then(|url| {
                let host = url.host_str()?.to_owned();
                Some(match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                })
            })
            .unwrap_or_default();
        BreakerState {
            name: "tiers.http",
            target,
            state,
            failures: breaker.failures,
            failure_threshold: self.config.failure_threshold,
            // Rounded up, so an open breaker never reads 0 seconds.
            half_open_in_secs: half_open_in.map(|d| d.as_millis().div_ceil(1000) as u64),
            open_secs: self.config.open_secs,
        }
    }

    /// `Some(found)`, `None` for an unknown customer (404), or an error.
    async fn fetch(&self, url: &str) -> Result<Option<Found>, CrmError> {
        // The caller bounds the whole exchange, body included, with the configured timeout.
        let mut request = self.client.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(CrmError::Status(status));
        }
        let bytes = response.bytes().await?;
        parse_record(
            &bytes,
            &self.config.tier_field,
            &self.config.customer_id_field,
        )
        .filter(|_| bytes.first() == Some(&b'{'))
        .map(Some)
        .ok_or_else(|| CrmError::Shape(self.config.tier_field.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_percent_encoded() {
        assert_eq!(
            fill(
                "http://crm/c?conv={conversation_id}&p={phone}&x={missing}",
                &[
                    ("conversation_id", "app:shop:u 1"),
                    ("phone", "+8613800138000")
                ]
            ),
            "http://crm/c?conv=app%3Ashop%3Au%201&p=%2B8613800138000&x={missing}"
        );
        assert_eq!(placeholders("a{b}c{d}{"), vec!["b", "d"]);
    }

    #[test]
    fn records_are_a_bare_tier_or_a_json_object() {
        assert_eq!(
            parse_record(b" vip\n", "tier", "customer_id"),
            Some(Found {
                tier: "vip".into(),
                customer_id: None
            })
        );
        assert_eq!(
            parse_record(br#"{"tier":"vip","customer_id":42}"#, "tier", "customer_id"),
            Some(Found {
                tier: "vip".into(),
                customer_id: Some("42".into())
            })
        );
        assert_eq!(
            parse_record(br#"{"level":"vip"}"#, "tier", "customer_id"),
            None
        );
        assert_eq!(parse_record(b"", "tier", "customer_id"), None);
    }
}

#[cfg(test)]
mod breaker_tests {
    use super::*;

    #[test]
    fn the_breaker_reads_closed_open_then_half_open() {
        let config = TiersConfig {
            source: TierSourceKind::Http,
            http: Some(
                toml::from_str(
                    "url = \"http://crm.example:8080/tier/{user}\"\nfailure_threshold = 2\nopen_secs = 30",
                )
                .unwrap(),
            ),
            ..TiersConfig::default()
        };
        let tiers = Tiers::new(&config);
        let Source::Http(http) = &tiers.source else {
            panic!("an http source")
        };
        let state = tiers.breaker().unwrap();
        assert_eq!((state.state, state.failures), ("closed", 0));
        assert_eq!(state.target, "crm.example:8080");
        http.failed(http.pass());
        assert_eq!(tiers.breaker().unwrap().state, "closed");
        http.failed(http.pass());
        let state = tiers.breaker().unwrap();
        assert_eq!((state.state, state.failures), ("open", 2));
        assert!(
            state
                .half_open_in_secs
                .is_some_and(|s| (29..=30).contains(&s))
        );
        // Once the open time is over the next lookup is a trial.
        http.breaker.lock().unwrap().open_until = Some(Instant::now());
        let state = tiers.breaker().unwrap();
        assert_eq!((state.state, state.half_open_in_secs), ("half_open", None));
        http.succeeded();
        assert_eq!(tiers.breaker().unwrap().state, "closed");
    }
}
