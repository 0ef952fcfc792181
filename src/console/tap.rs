//! `GET /api/tap`: routed envelopes as Server-Sent Events, filtered; phone numbers masked
//! unless `unmask=true`, which is logged.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::ConsoleState;
use crate::broker::topic;
use crate::observe::Tapped;
use crate::observe::mask::mask_tapped;

/// What the tail shows; every given field must match.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Filter {
    channel: Option<String>,
    skill: Option<String>,
    tier: Option<String>,
    intent: Option<String>,
    flag: Option<String>,
    /// Agent queue: envelopes whose routing key one of its bindings matches.
    queue: Option<String>,
    #[serde(default)]
    unmask: bool,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

impl Filter {
    fn matches(&self, tapped: &Tapped, bindings: &[String]) -> bool {
        let envelope = &tapped.envelope;
        given(&self.channel).is_none_or(|c| envelope.channel.kind == c)
            && given(&self.skill).is_none_or(|s| envelope.route.skill == s)
            && given(&self.tier).is_none_or(|t| envelope.route.tier == t)
            && given(&self.intent)
                .is_none_or(|i| envelope.intent.as_ref().is_some_and(|x| x.name == i))
            && given(&self.flag).is_none_or(|f| envelope.flags.iter().any(|x| x == f))
            && (given(&self.queue).is_none()
                || bindings
                    .iter()
                    .any(|b| topic::matches(b, &envelope.route.queue_key)))
    }
}

/// Serializes a tapped envelope for the wire, masked unless asked otherwise.
pub(super) fn shown(mut value: serde_json::Value, unmask: bool) -> String {
    if !unmask {
        mask_tapped(&mut value);
    }
    value.to_string()
}

pub(super) async fn tap(
    State(state): State<ConsoleState>,
    Query(filter): Query<Filter>,
) -> Response {
    let bindings = match given(&filter.queue) {
        None => Vec::new(),
        Some(name) => match state.view.load().queues.iter().find(|q| q.name == name) {
            Some(queue) => queue.bindings.clone(),
            None => {
                return super::error(
                    axum::http::StatusCode::NOT_FOUND,
                    format!("no agent queue {name:?}"),
                );
            }
        },
    };
    if filter.unmask {
        tracing::warn!(filter = ?filter, "live tail opened with phone numbers unmasked");
    }
    let receiver = state.observer.subscribe();
    let ready =
        stream::once(async { Ok::<_, Infallible>(Event::default().event("ready").data("{}")) });
    let events = stream::unfold(
        (receiver, filter, bindings),
        |(mut receiver, filter, bindings)| async move {
            loop {
                match receiver.recv().await {
                    Ok(tapped) => {
                        if !filter.matches(&tapped, &bindings) {
                            continue;
                        }
                        let value = serde_json::to_value(&*tapped).unwrap_or_default();
                        let event = Event::default()
                            .event("envelope")
                            .data(shown(value, filter.unmask));
                        return Some((Ok(event), (receiver, filter, bindings)));
                    }
                    Err(RecvError::Lagged(missed)) => {
                        let event = Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{missed}}}"));
                        return Some((Ok(event), (receiver, filter, bindings)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    sse(ready.chain(events))
}

pub(super) fn sse(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
