//! `GET /api/queues`: every agent queue with its broker counts (a passive declare), what
//! the management API adds when configured (unacked, oldest message's age), its overflow
//! rule, and the last hour's inbound rate by channel from the daemon's counters.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::json;

use super::ConsoleState;
use crate::broker::topic;
use crate::observe::rates::MINUTES;

pub(super) async fn queues(State(state): State<ConsoleState>) -> Response {
    let view = state.view.load_full();
    let routes = state.observer.rates.routes();
    let live = state.broker.live();
    let names: Vec<String> = view.queues.iter().map(|q| q.name.clone()).collect();
    let management = match view.management.as_ref() {
        Ok(management) => management.queues(&names).await.map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    let now_secs = crate::durable::now_ms() / 1000;
    let mut channel = None;
    let mut out = Vec::new();
    for queue in &view.queues {
        // A passive declare of a missing queue closes its channel: a fresh one each time
        // the previous was closed.
        let counts = match &live {
            None => Err("broker not connected".to_owned()),
            Some(live) => {
                if channel
                    .as_ref()
                    .is_none_or(|c: &lapin::Channel| !c.status().connected())
                {
                    channel = live.connection.create_channel().await.ok();
                }
                match &channel {
                    None => Err("cannot open a channel".to_owned()),
                    Some(c) => c
                        .queue_declare(
                            queue.name.as_str().into(),
                            QueueDeclareOptions {
                                passive: true,
                                ..QueueDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .map(|q| (q.message_count(), q.consumer_count()))
                        .map_err(|e| e.to_string()),
                }
            }
        };
        let mut by_channel: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for route in routes.iter().filter(|r| {
            queue
                .bindings
                .iter()
                .any(|b| topic::matches(b, &r.queue_key))
        }) {
            let sum = by_channel
                .entry(route.channel.clone())
                .or_insert_with(|| vec![0; MINUTES]);
            for (total, count) in sum.iter_mut().zip(&route.per_minute) {
                *total += count;
            }
        }
        let overflow = view.overflow.iter().find(|o| o.queue == queue.name);
        let ready = counts.as_ref().ok().map(|c| c.0);
        let stats = match &management {
            Ok(all) => all
                .get(&queue.name)
                .ok_or_else(|| "not known to the management API".to_owned()),
            Err(err) => Err(err.clone()),
        };
        let sampled = stats.as_ref().ok();
        out.push(json!({
            "name": queue.name,
            "bindings": queue.bindings,
            "ready": ready,
            "consumers": counts.as_ref().ok().map(|c| c.1),
            "error": counts.as_ref().err(),
            "unacked": sampled.and_then(|s| s.messages_unacknowledged),
            "oldest_age_secs": sampled
                .and_then(|s| s.head_message_timestamp)
                .map(|at| now_secs.saturating_sub(at)),
            "management": sampled.map(|s| json!({
                "ready": s.messages_ready,
                "unacked": s.messages_unacknowledged,
                "consumers": s.consumers,
                "head_message_timestamp": s.head_message_timestamp,
            })),
            "management_error": stats.as_ref().err(),
            "overflow": overflow.map(|o| json!({
                "ready_above": o.ready_above,
                "queue_key": o.queue_key,
                "overflowing": ready.is_some_and(|r| r > o.ready_above),
            })),
            "rates_per_minute": by_channel,
        }));
    }
    if let Some(channel) = channel {
        let _ = channel.close(200, "queues read".into()).await;
    }
    axum::Json(json!({
        "queues": out,
        "minutes": MINUTES,
    }))
    .into_response()
}
