//! `GET /api/links`: connectors with their recent traffic and how close they run to their
//! rate limits, the lookups' circuit breakers, the broker link, Redis, the spool.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ConsoleState;

pub(super) async fn links(State(state): State<ConsoleState>) -> Response {
    let live = state.live.load_full();
    let mut connectors = Vec::new();
    for c in live.connectors.values() {
        let (kind, id) = (c.connector.kind(), c.connector.id());
        let key = format!("{kind}:{id}");
        let limits = c.connector.limits();
        connectors.push(json!({
            "kind": kind,
            "id": id,
            "path": format!("/{kind}/{id}"),
            "traffic": state.observer.rates.connector(&key),
            "limits": {
                "inbound_per_second": limits.inbound_per_second,
                "inbound_burst": limits.inbound_burst,
                "per_user_per_minute": limits.per_user_per_minute,
                "outbound_per_second": limits.outbound_per_second,
            },
            "pressure": state.observer.rates.pressure(&key),
            "status": c.connector.status().await,
        }));
    }
    connectors.sort_by_key(|c| c["path"].as_str().unwrap_or_default().to_owned());
    let broker = json!({
        "connected": state.broker.live().is_some(),
        "reconnects": state.metrics.broker_reconnects.get(),
        "last_error": state.broker.last_error(),
    });
    let redis = if state.redis {
        match state.kv.get("console:ping").await {
            Ok(_) => json!({"configured": true, "ok": true}),
            Err(err) => json!({"configured": true, "ok": false, "error": err.to_string()}),
        }
    } else {
        json!({"configured": false})
    };
    axum::Json(json!({
        "connectors": connectors,
        "breakers": state.pipeline.policy().breakers(),
        "broker": broker,
        "redis": redis,
        "spool": super::spool_json(&state),
    }))
    .into_response()
}
