//! Dead letters (`{prefix}.dead`): list, show, replay (back to where each was going, from
//! the `x-original-*` headers the dispatcher sets or RabbitMQ's `x-death`), discard; every
//! replay and discard publishes an audit event on the events exchange.
//!
//! Reading uses `basic.get` without acking on a channel of its own: what is taken is acked,
//! everything else returns to the queue (in place) when that channel closes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{ConsoleState, error};
use crate::broker::OutgoingMessage;

/// Most messages looked at in one request.
const MAX_SCAN: usize = 1000;

fn amqp_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(v) => json!(v),
        AMQPValue::ShortShortUInt(v) => json!(v),
        AMQPValue::ShortInt(v) => json!(v),
        AMQPValue::ShortUInt(v) => json!(v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => json!(v),
        AMQPValue::LongLongInt(v) => json!(v),
        AMQPValue::Float(v) => json!(v),
        AMQPValue::Double(v) => json!(v),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(amqp_json).collect())
        }
        AMQPValue::FieldTable(table) => table_json(table),
        other => json!(format!("{other:?}")),
    }
}

fn table_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), amqp_json(v)))
            .collect(),
    )
}

/// One dead letter as the API shows it.
struct Letter {
    id: String,
    headers: Value,
    body: Vec<u8>,
    routing_key: String,
}

impl Letter {
    fn of(message: &BasicGetMessage) -> Self {
        let delivery = &message.delivery;
        let headers = delivery
            .properties
            .headers()
            .as_ref()
            .map(table_json)
            .unwrap_or_else(|| json!({}));
        // The dispatcher gives each dead letter a ULID; anything else is named by its body.
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_else(|| hex::encode(&Sha256::digest(&delivery.data)[..8]));
        Self {
            id,
            headers,
            body: delivery.data.clone(),
            routing_key: delivery.routing_key.to_string(),
        }
    }

    fn reason(&self) -> Option<String> {
        self.headers["x-reason"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                self.headers["x-death"][0]["reason"]
                    .as_str()
                    .map(str::to_owned)
            })
    }

    /// Where it was going: exchange and routing key.
    fn origin(&self) -> Option<(String, String)> {
        if let (Some(exchange), Some(key)) = (
            self.headers["x-original-exchange"].as_str(),
            self.headers["x-original-routing-key"].as_str(),
        ) {
            return Some((exchange.to_owned(), key.to_owned()));
        }
        let death = &self.headers["x-death"][0];
        Some((
            death["exchange"].as_str()?.to_owned(),
            death["routing-keys"][0].as_str()?.to_owned(),
        ))
    }

    fn summary(&self) -> Value {
        let preview: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(160)
            .collect();
        json!({
            "id": self.id,
            "reason": self.reason(),
            "error": self.headers["x-error"],
            "routing_key": self.routing_key,
            "origin": self.origin().map(|(e, k)| json!({"exchange": e, "routing_key": k})),
            "bytes": self.body.len(),
            "preview": preview,
        })
    }

    fn full(&self) -> Value {
        let mut value = self.summary();
        value["headers"] = self.headers.clone();
        value["body"] = json!(String::from_utf8_lossy(&self.body));
        value
    }
}

/// A walk through the dead queue on a channel of its own.
struct Reader {
    channel: lapin::Channel,
    queue: String,
    seen: usize,
}

impl Reader {
    async fn open(state: &ConsoleState) -> Result<Self, String> {
        let live = state.broker.live().ok_or("broker not connected")?;
        let channel = live
            .connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            channel,
            queue: state.names.dead.clone(),
            seen: 0,
        })
    }

    /// The next message and its delivery tag, or None at the end (or after MAX_SCAN).
    async fn next(&mut self) -> Result<Option<(Letter, u64)>, String> {
        if self.seen >= MAX_SCAN {
            return Ok(None);
        }
        self.seen += 1;
        let got = self
            .channel
            .basic_get(
                self.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(got.map(|m| (Letter::of(&m), m.delivery.delivery_tag)))
    }

    /// Removes a message from the queue for good.
    async fn take(&self, tag: u64) -> Result<(), String> {
        self.channel
            .basic_ack(tag, BasicAckOptions::default())
            .await
            .map_err(|e| e.to_string())
    }

    /// Puts back everything not taken, in place.
    async fn close(self) {
        let _ = self.channel.close(200, "dead letters read".into()).await;
    }
}

/// Walks the queue until `id` (or the end); the reader stays open on it.
async fn find(state: &ConsoleState, id: &str) -> Result<(Reader, Option<(Letter, u64)>), String> {
    let mut reader = Reader::open(state).await?;
    loop {
        match reader.next().await {
            Err(err) => {
                reader.close().await;
                return Err(err);
            }
            Ok(None) => return Ok((reader, None)),
            Ok(Some((letter, tag))) if letter.id == id => return Ok((reader, Some((letter, tag)))),
            Ok(Some(_)) => {}
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    reason: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list(
    State(state): State<ConsoleState>,
    Query(q): Query<ListQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(100).min(MAX_SCAN);
    let mut reader = match Reader::open(&state).await {
        Ok(reader) => reader,
        Err(err) => return error(StatusCode::SERVICE_UNAVAILABLE, err),
    };
    let mut letters = Vec::new();
    let mut total = 0;
    let outcome = loop {
        match reader.next().await {
            Err(err) => break Err(err),
            Ok(None) => break Ok(()),
            Ok(Some((letter, _))) => {
                total += 1;
                if q.reason
                    .as_deref()
                    .is_none_or(|r| letter.reason().as_deref() == Some(r))
                    && letters.len() < limit
                {
                    letters.push(letter.summary());
                }
            }
        }
    };
    reader.close().await;
    match outcome {
        Ok(()) => Json(json!({ "dead_letters": letters, "total": total })).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err),
    }
}

pub(super) async fn show(State(state): State<ConsoleState>, Path(id): Path<String>) -> Response {
    match find(&state, &id).await {
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err),
        Ok((reader, found)) => {
            reader.close().await;
            match found {
                None => error(StatusCode::NOT_FOUND, format!("no dead letter {id:?}")),
                Some((letter, _)) => Json(letter.full()).into_response(),
            }
        }
    }
}

/// Republishes `letter` where it was going, with `body` instead of its own if given.
async fn replay(
    state: &ConsoleState,
    letter: &Letter,
    body: Option<&str>,
) -> Result<Value, String> {
    let (exchange, routing_key) = letter
        .origin()
        .ok_or("no x-original-exchange / x-death header says where it was going")?;
    let mut headers: Vec<(String, String)> = letter
        .headers
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            !(k.starts_with("x-original-")
                || ["x-reason", "x-error", "x-death"].contains(&k.as_str()))
        })
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
        .collect();
    headers.push(("x-replayed-from".to_owned(), letter.id.clone()));
    let body = body.map_or_else(
        || String::from_utf8_lossy(&letter.body).into_owned(),
        str::to_owned,
    );
    let message = OutgoingMessage {
        exchange: exchange.clone(),
        routing_key: routing_key.clone(),
        message_id: ulid::Ulid::new().to_string(),
        priority: None,
        headers,
        body,
        mandatory: true,
    };
    super::publish(state, &message).await?;
    let mut data = Map::new();
    data.insert("dead_letter_id".into(), json!(letter.id));
    data.insert("reason".into(), json!(letter.reason()));
    data.insert("exchange".into(), json!(exchange));
    data.insert("routing_key".into(), json!(routing_key));
    data.insert(
        "edited".into(),
        json!(message.body.as_bytes() != letter.body.as_slice()),
    );
    // The replay is done; an audit event that cannot be published is logged, not undone.
    if let Err(err) = super::audit(state, "dead_letter.replayed", data).await {
        tracing::warn!(error = %err, "cannot publish the dead_letter.replayed audit event");
    }
    tracing::info!(id = %letter.id, exchange, routing_key, "dead letter replayed");
    Ok(json!({ "id": letter.id, "exchange": exchange, "routing_key": routing_key }))
}

#[derive(Deserialize, Default)]
struct ReplayBody {
    /// A corrected body to send instead of the dead one.
    body: Option<String>,
}

pub(super) async fn replay_one(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    request: Bytes,
) -> Response {
    let edit: ReplayBody = if request.is_empty() {
        ReplayBody::default()
    } else {
        match serde_json::from_slice(&request) {
            Ok(edit) => edit,
            Err(err) => return error(StatusCode::BAD_REQUEST, err),
        }
    };
    let (reader, found) = match find(&state, &id).await {
        Ok(found) => found,
        Err(err) => return error(StatusCode::SERVICE_UNAVAILABLE, err),
    };
    let response = match found {
        None => error(StatusCode::NOT_FOUND, format!("no dead letter {id:?}")),
        Some((letter, tag)) => match replay(&state, &letter, edit.body.as_deref()).await {
            Err(err) => error(StatusCode::CONFLICT, err),
            Ok(done) => match reader.take(tag).await {
                Ok(()) => Json(json!({ "replayed": [done] })).into_response(),
                // Replayed but still in the dead queue: say so rather than pretend.
                Err(err) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("replayed, but could not remove it from the dead queue: {err}"),
                ),
            },
        },
    };
    reader.close().await;
    response
}

#[derive(Deserialize)]
pub(super) struct Matching {
    /// Only those dead-lettered for this reason; all when absent and `all` is true.
    reason: Option<String>,
    #[serde(default)]
    all: bool,
}

pub(super) async fn replay_matching(
    State(state): State<ConsoleState>,
    Json(matching): Json<Matching>,
) -> Response {
    if matching.reason.is_none() && !matching.all {
        return error(StatusCode::BAD_REQUEST, "give a reason, or all: true");
    }
    let mut reader = match Reader::open(&state).await {
        Ok(reader) => reader,
        Err(err) => return error(StatusCode::SERVICE_UNAVAILABLE, err),
    };
    let mut replayed = Vec::new();
    let mut failed = Vec::new();
    let outcome = loop {
        let (letter, tag) = match reader.next().await {
            Err(err) => break Err(err),
            Ok(None) => break Ok(()),
            Ok(Some(next)) => next,
        };
        if matching
            .reason
            .as_deref()
            .is_some_and(|r| letter.reason().as_deref() != Some(r))
        {
            continue;
        }
        match replay(&state, &letter, None).await {
            Ok(done) => {
                if let Err(err) = reader.take(tag).await {
                    break Err(err);
                }
                replayed.push(done);
            }
            Err(err) => failed.push(json!({ "id": letter.id, "error": err })),
        }
    };
    reader.close().await;
    match outcome {
        Ok(()) => Json(json!({ "replayed": replayed, "failed": failed })).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err),
    }
}

pub(super) async fn discard(State(state): State<ConsoleState>, Path(id): Path<String>) -> Response {
    let (reader, found) = match find(&state, &id).await {
        Ok(found) => found,
        Err(err) => return error(StatusCode::SERVICE_UNAVAILABLE, err),
    };
    let response = match found {
        None => error(StatusCode::NOT_FOUND, format!("no dead letter {id:?}")),
        Some((letter, tag)) => match reader.take(tag).await {
            Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err),
            Ok(()) => {
                let mut data = Map::new();
                data.insert("dead_letter_id".into(), json!(id));
                data.insert("reason".into(), json!(letter.reason()));
                if let Err(err) = super::audit(&state, "dead_letter.discarded", data).await {
                    tracing::warn!(error = %err, "cannot publish the dead_letter.discarded audit event");
                }
                tracing::info!(id, "dead letter discarded");
                Json(json!({ "discarded": id })).into_response()
            }
        },
    };
    reader.close().await;
    response
}
