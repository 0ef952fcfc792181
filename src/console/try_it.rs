//! "Try it": the console acts as a helpdesk. `GET /api/try/{queue}` declares a temporary
//! exclusive auto-delete queue bound like agent queue `{queue}` and streams what arrives as
//! Server-Sent Events; `POST /api/reply` publishes a `switchboard.reply.v1` (or anything
//! else, to see how the dispatcher treats it) to the outbound exchange.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, stream};
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde::Deserialize;
use serde_json::json;

use super::{ConsoleState, error};
use crate::broker::OutgoingMessage;

#[derive(Deserialize)]
pub(super) struct TryQuery {
    #[serde(default)]
    unmask: bool,
}

/// Closes the temporary queue's channel when the browser goes away, so the broker deletes
/// the queue.
struct Closing(lapin::Channel);

impl Drop for Closing {
    fn drop(&mut self) {
        let channel = self.0.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = channel.close(200, "try-it closed".into()).await;
            });
        }
    }
}

async fn open(
    state: &ConsoleState,
    bindings: &[String],
) -> Result<(Closing, String, lapin::Consumer), String> {
    let live = state.broker.live().ok_or("broker not connected")?;
    let channel = Closing(
        live.connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?,
    );
    let queue = channel
        .0
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let name = queue.name().to_string();
    for pattern in bindings {
        channel
            .0
            .queue_bind(
                name.as_str().into(),
                state.names.inbound.as_str().into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    let consumer = channel
        .0
        .basic_consume(
            name.as_str().into(),
            "switchboard-console".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((channel, name, consumer))
}

pub(super) async fn consume(
    State(state): State<ConsoleState>,
    Path(queue): Path<String>,
    Query(query): Query<TryQuery>,
) -> Response {
    let Some(bindings) = state
        .view
        .load()
        .queues
        .iter()
        .find(|q| q.name == queue)
        .map(|q| q.bindings.clone())
    else {
        return error(StatusCode::NOT_FOUND, format!("no agent queue {queue:?}"));
    };
    let (closing, name, consumer) = match open(&state, &bindings).await {
        Ok(opened) => opened,
        Err(err) => return error(StatusCode::SERVICE_UNAVAILABLE, err),
    };
    if query.unmask {
        tracing::warn!(queue, "try-it opened with phone numbers unmasked");
    }
    tracing::info!(queue, temporary = name, "try-it queue bound");
    let ready = json!({ "queue": queue, "temporary_queue": name, "bindings": bindings });
    let ready = stream::once(async move {
        Ok::<_, Infallible>(Event::default().event("ready").data(ready.to_string()))
    });
    let unmask = query.unmask;
    let deliveries = stream::unfold(
        (consumer, closing),
        move |(mut consumer, closing)| async move {
            let delivery = consumer.next().await?.ok()?;
            let envelope: serde_json::Value = serde_json::from_slice(&delivery.data)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&delivery.data).into_owned()));
            let data = super::tap::shown(
                json!({ "envelope": envelope, "routing_key": delivery.routing_key.as_str() }),
                unmask,
            );
            Some((
                Ok(Event::default().event("envelope").data(data)),
                (consumer, closing),
            ))
        },
    );
    super::tap::sse(ready.chain(deliveries))
}

pub(super) async fn reply(State(state): State<ConsoleState>, body: Bytes) -> Response {
    // Only JSON is published; whether it is a good reply is the dispatcher's to judge, so
    // the console can also show what happens to a bad one (the dead-letter queue).
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let id = value["id"]
        .as_str()
        .map_or_else(|| ulid::Ulid::new().to_string(), str::to_owned);
    let mut headers = vec![(
        "x-schema".to_owned(),
        switchboard_sdk::reply::REPLY_SCHEMA.to_owned(),
    )];
    if let Some(conversation) = value["conversation_id"].as_str() {
        headers.push(("x-conversation-id".to_owned(), conversation.to_owned()));
    }
    let message = OutgoingMessage {
        exchange: state.names.outbound.clone(),
        routing_key: "reply".to_owned(),
        message_id: id.clone(),
        priority: None,
        headers,
        body: value.to_string(),
        mandatory: true,
    };
    match super::publish(&state, &message).await {
        Ok(()) => {
            tracing::info!(reply_id = id, "reply published from the console");
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({ "published": true, "id": id })),
            )
                .into_response()
        }
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err),
    }
}
