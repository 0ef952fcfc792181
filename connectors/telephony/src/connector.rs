//! The telephony connector: the IVR routes, call events and voicemail.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use switchboard_sdk::phone::Masked;
use switchboard_sdk::schedule::{Clock, system_clock};
use switchboard_sdk::signature::hmac_webhook::HmacSigner;
use switchboard_sdk::signature::twilio::TwilioVerifier;
use switchboard_sdk::webhook::FormParams;
use switchboard_sdk::{
    BuildError, Connector, ConnectorContext, ConnectorFactory, ConnectorLimits, Content, Delivered,
    DeliveryError, Event, Inbound, InboundMessage, Recipient, RejectReason, Rejection, Reply,
};

use crate::call::CallRequest;
use crate::config::{ProviderSettings, TelephonyConfig};
use crate::ivr::{ChosenBy, Ivr, MenuItem, Verb};
use crate::twiml;

/// The channel kind.
pub const KIND: &str = "telephony";

/// Handoff results after which no agent took the call, so voicemail is offered.
const UNANSWERED: &[&str] = &[
    "queue-full",
    "error",
    "system-error",
    "busy",
    "no-answer",
    "failed",
];

/// Builds telephony connectors from `[[connectors.telephony]]` tables; the daemon's
/// registry line.
pub struct TelephonyFactory;

impl ConnectorFactory for TelephonyFactory {
    const KIND: &'static str = KIND;
    type Config = TelephonyConfig;

    fn id(config: &Self::Config) -> &str {
        &config.id
    }

    fn build(
        config: &Self::Config,
        _context: &ConnectorContext,
    ) -> Result<Arc<dyn Connector>, BuildError> {
        Ok(Arc::new(TelephonyConnector::new(config)?))
    }
}

#[derive(Clone)]
enum Provider {
    Twilio(TwilioVerifier),
    Generic {
        signer: HmacSigner,
        default_cc: Option<String>,
    },
}

/// One configured phone line.
#[derive(Clone)]
pub struct TelephonyConnector {
    id: String,
    limits: ConnectorLimits,
    provider: Provider,
    ivr: Arc<Ivr>,
    keep_raw: bool,
    clock: Clock,
}

/// The three webhook routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Incoming,
    Gather,
    Status,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Incoming => "/incoming",
            Route::Gather => "/gather",
            Route::Status => "/status",
        }
    }
}

impl TelephonyConnector {
    /// Checks `config` and builds the connector; no I/O besides reading secret files.
    pub fn new(config: &TelephonyConfig) -> Result<Self, BuildError> {
        let (provider, ivr) = config.validate().map_err(BuildError)?;
        let provider = match provider {
            ProviderSettings::Twilio(token) => {
                Provider::Twilio(TwilioVerifier::new(token, &ivr.public_url))
            }
            ProviderSettings::Generic(signer, default_cc) => {
                Provider::Generic { signer, default_cc }
            }
        };
        Ok(Self {
            id: config.id.clone(),
            limits: config.limits.clone(),
            provider,
            ivr: Arc::new(ivr),
            keep_raw: config.keep_raw,
            clock: system_clock(),
        })
    }

    /// Replaces the clock (business hours, signature windows); for tests and simulations.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The checked IVR.
    pub fn ivr(&self) -> &Ivr {
        &self.ivr
    }

    fn default_cc(&self) -> Option<&str> {
        match &self.provider {
            Provider::Twilio(_) => None,
            Provider::Generic { default_cc, .. } => default_cc.as_deref(),
        }
    }

    /// Verifies and reads one request.
    fn read(
        &self,
        route: Route,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<CallRequest, Rejection> {
        match &self.provider {
            Provider::Twilio(verifier) => {
                let params = verifier.verify_request(route.path(), uri, headers, body)?;
                CallRequest::from_twilio(&params, self.keep_raw)
            }
            Provider::Generic { signer, .. } => {
                signer.verify(headers, body, (self.clock)())?;
                CallRequest::from_generic(body, self.keep_raw)
            }
        }
    }

    /// The provider's rendering of `plan`.
    fn answer(&self, plan: &[Verb]) -> Result<Response, Rejection> {
        match &self.provider {
            Provider::Twilio(_) => {
                let xml = twiml::render(plan, self.ivr.voice.as_deref()).map_err(|err| {
                    tracing::warn!(connector = %self.id, error = %err, "twiml not written");
                    Rejection::new(RejectReason::Unavailable, "cannot answer right now")
                })?;
                Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                    xml,
                )
                    .into_response())
            }
            Provider::Generic { .. } => {
                Ok((StatusCode::OK, axum::Json(json!({ "actions": plan }))).into_response())
            }
        }
    }

    async fn handle(
        &self,
        route: Route,
        inbound: &Inbound,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, Rejection> {
        let call = self.read(route, uri, headers, body)?;
        let query = Query::parse(uri);
        let plan = match route {
            Route::Incoming => {
                let attempt = query.attempt(self.ivr.timing.attempts);
                let (user, _) = call.caller(self.default_cc());
                let open = self.ivr.is_open((self.clock)());
                tracing::info!(connector = %self.id, call = %call.call_id, caller = %Masked(&user),
                    attempt, open, "call at the menu");
                self.ivr.incoming((self.clock)(), attempt)
            }
            Route::Gather => self.gather(inbound, &call, &query).await?,
            Route::Status => self.status(inbound, &call, &query).await?,
        };
        self.answer(&plan)
    }

    async fn gather(
        &self,
        inbound: &Inbound,
        call: &CallRequest,
        query: &Query,
    ) -> Result<Vec<Verb>, Rejection> {
        match query.get("step").unwrap_or("menu") {
            "menu" => {
                let attempt = query.attempt(self.ivr.timing.attempts);
                let Some((item, by)) = self
                    .ivr
                    .choose(call.digits.as_deref(), call.speech_result.as_deref())
                else {
                    tracing::info!(connector = %self.id, call = %call.call_id, attempt,
                        "menu choice matched nothing");
                    return Ok(self.ivr.invalid_choice(attempt));
                };
                if item.ask_tracking_number {
                    return Ok(self.ivr.ask_tracking_number(item));
                }
                self.ring(inbound, call, item, by, None).await?;
                Ok(self.ivr.handoff(item))
            }
            "tracking" => {
                let item = query
                    .get("choice")
                    .and_then(|choice| self.ivr.item(choice))
                    .ok_or_else(|| {
                        Rejection::new(RejectReason::Malformed, "choice names no menu entry")
                    })?;
                let tracking: String = call
                    .digits
                    .as_deref()
                    .unwrap_or_default()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect();
                let tracking = (!tracking.is_empty()).then_some(tracking);
                self.ring(inbound, call, item, ChosenBy::Dtmf, tracking)
                    .await?;
                Ok(self.ivr.handoff(item))
            }
            other => Err(Rejection::new(
                RejectReason::Malformed,
                format!("unknown gather step {other:?}"),
            )),
        }
    }

    /// Accepts the `ringing` call message that screen-pops the customer for agents.
    async fn ring(
        &self,
        inbound: &Inbound,
        call: &CallRequest,
        item: &MenuItem,
        by: ChosenBy,
        tracking_number: Option<String>,
    ) -> Result<(), Rejection> {
        let (user, number) = call.caller(self.default_cc());
        let mut data = Map::new();
        data.insert("skill".into(), Value::String(item.skill.clone()));
        data.insert("call_sid".into(), Value::String(call.call_id.clone()));
        data.insert("digit".into(), Value::String(item.digit.to_string()));
        data.insert("chosen_by".into(), Value::String(by.as_str().into()));
        if let Some(tracking) = &tracking_number {
            data.insert("tracking_number".into(), Value::String(tracking.clone()));
        }
        if let (ChosenBy::Speech, Some(speech)) = (by, &call.speech_result) {
            data.insert("speech_result".into(), Value::String(speech.clone()));
        }
        if let Some(to) = &call.to {
            data.insert("to".into(), Value::String(to.clone()));
        }
        let content = Content::Call {
            event: "ringing".into(),
            caller: number.clone(),
            data,
        };
        self.accept(
            inbound,
            call,
            &user,
            number,
            content,
            format!("{}:ringing", call.call_id),
        )
        .await?;
        tracing::info!(connector = %self.id, call = %call.call_id, caller = %Masked(&user),
            skill = %item.skill, tracking = tracking_number.is_some(), "call handed to agents");
        Ok(())
    }

    async fn accept(
        &self,
        inbound: &Inbound,
        call: &CallRequest,
        user: &str,
        number: Option<String>,
        content: Content,
        dedupe_key: String,
    ) -> Result<(), Rejection> {
        let mut message = InboundMessage::new(user, content, dedupe_key);
        message.phone = number;
        message.raw = call.raw.clone();
        inbound.accept(message).await.map(|_| ()).map_err(|err| {
            tracing::warn!(connector = %self.id, call = %call.call_id, error = %err,
                "call message not accepted");
            Rejection::from(err)
        })
    }

    async fn report(
        &self,
        inbound: &Inbound,
        call: &CallRequest,
        event: Event,
    ) -> Result<(), Rejection> {
        let kind = event.kind.clone();
        inbound.report(event).await.map_err(|err| {
            tracing::warn!(connector = %self.id, call = %call.call_id, error = %err,
                "call event not reported");
            Rejection::from(err)
        })?;
        tracing::info!(connector = %self.id, call = %call.call_id, kind = %kind, "call event reported");
        Ok(())
    }

    fn event(&self, call: &CallRequest, kind: &str, mut data: Map<String, Value>) -> Event {
        let (user, _) = call.caller(self.default_cc());
        let mut event = Event::new(kind);
        event.conversation_id = Some(format!("{KIND}:{}:{user}", self.id));
        data.insert("call_sid".into(), Value::String(call.call_id.clone()));
        if let Some(from) = &call.from {
            data.insert("from".into(), Value::String(from.clone()));
        }
        if let Some(to) = &call.to {
            data.insert("to".into(), Value::String(to.clone()));
        }
        event.data = data;
        event
    }

    async fn status(
        &self,
        inbound: &Inbound,
        call: &CallRequest,
        query: &Query,
    ) -> Result<Vec<Verb>, Rejection> {
        let (user, number) = call.caller(self.default_cc());
        match query.get("event") {
            Some("voicemail") => {
                let Some(url) = &call.recording_url else {
                    // Nothing was recorded: nothing to keep.
                    return Ok(self.ivr.hangup());
                };
                let mut data = Map::new();
                data.insert("recording_url".into(), Value::String(url.clone()));
                data.insert(
                    "duration".into(),
                    call.recording_duration.map_or(Value::Null, Value::from),
                );
                data.insert("call_sid".into(), Value::String(call.call_id.clone()));
                if let Some(id) = &call.recording_id {
                    data.insert("recording_sid".into(), Value::String(id.clone()));
                }
                let content = Content::Call {
                    event: "voicemail".into(),
                    caller: number.clone(),
                    data,
                };
                let key = format!("{}:voicemail", call.call_id);
                self.accept(inbound, call, &user, number, content, key)
                    .await?;
                tracing::info!(connector = %self.id, call = %call.call_id, caller = %Masked(&user),
                    "voicemail accepted");
                Ok(self.ivr.voicemail_thanks())
            }
            Some("transcription") => {
                let failed = call
                    .transcription_status
                    .as_deref()
                    .is_some_and(|s| !s.eq_ignore_ascii_case("completed"));
                let Some(text) = call.transcription_text.as_ref().filter(|_| !failed) else {
                    tracing::info!(connector = %self.id, call = %call.call_id,
                        "voicemail transcription failed or empty");
                    return Ok(Vec::new());
                };
                let mut extra = Map::new();
                extra.insert(
                    "source".into(),
                    Value::String("voicemail_transcription".into()),
                );
                extra.insert("call_sid".into(), Value::String(call.call_id.clone()));
                if let Some(url) = &call.recording_url {
                    extra.insert("recording_url".into(), Value::String(url.clone()));
                }
                let content = Content::Text {
                    text: text.clone(),
                    extra,
                };
                let key = format!("{}:transcription", call.call_id);
                self.accept(inbound, call, &user, number, content, key)
                    .await?;
                Ok(Vec::new())
            }
            Some("handoff") => {
                let result = call
                    .queue_result
                    .as_deref()
                    .or(call.dial_status.as_deref())
                    .unwrap_or("unknown")
                    .to_ascii_lowercase();
                let mut data = Map::new();
                data.insert("result".into(), Value::String(result.clone()));
                if let Some(skill) = query.get("skill") {
                    data.insert("skill".into(), Value::String(skill.to_owned()));
                }
                let event = self.event(call, "call.handoff", data);
                self.report(inbound, call, event).await?;
                if UNANSWERED.contains(&result.as_str()) {
                    Ok(self.ivr.agents_unavailable())
                } else {
                    Ok(self.ivr.hangup())
                }
            }
            Some(other) => Err(Rejection::new(
                RejectReason::Malformed,
                format!("unknown status event {other:?}"),
            )),
            None => {
                let status = call
                    .call_status
                    .as_deref()
                    .ok_or_else(|| Rejection::new(RejectReason::Malformed, "missing CallStatus"))?
                    .to_ascii_lowercase();
                let kind = call_event_kind(&status).ok_or_else(|| {
                    Rejection::new(
                        RejectReason::Malformed,
                        format!("unknown CallStatus {status:?}"),
                    )
                })?;
                let mut data = Map::new();
                data.insert("status".into(), Value::String(status));
                if let Some(duration) = call.call_duration {
                    data.insert("duration".into(), Value::from(duration));
                }
                if let Some(direction) = &call.direction {
                    data.insert("direction".into(), Value::String(direction.clone()));
                }
                let event = self.event(call, kind, data);
                self.report(inbound, call, event).await?;
                Ok(Vec::new())
            }
        }
    }
}

/// The event kind of a call status (Twilio's CallStatus values).
pub fn call_event_kind(status: &str) -> Option<&'static str> {
    Some(match status {
        "queued" => "call.queued",
        "initiated" => "call.initiated",
        "ringing" => "call.ringing",
        "in-progress" | "answered" => "call.answered",
        "completed" => "call.completed",
        "busy" => "call.busy",
        "no-answer" => "call.no_answer",
        "failed" => "call.failed",
        "canceled" => "call.canceled",
        _ => return None,
    })
}

/// The query string of a callback URL (the IVR's own state).
struct Query(FormParams);

impl Query {
    fn parse(uri: &Uri) -> Self {
        Self(FormParams::from_query(uri))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    /// The menu attempt, 1 when absent, clamped to `max`.
    fn attempt(&self, max: u32) -> u32 {
        self.get("attempt")
            .and_then(|a| a.parse::<u32>().ok())
            .unwrap_or(1)
            .clamp(1, max.max(1))
    }
}

#[derive(Clone)]
struct RouteState {
    connector: Arc<TelephonyConnector>,
    inbound: Inbound,
}

async fn serve(
    route: Route,
    state: RouteState,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match state
        .connector
        .handle(route, &state.inbound, &uri, &headers, &body)
        .await
    {
        Ok(response) => response,
        Err(rejection) => {
            tracing::debug!(connector = %state.connector.id, route = route.path(),
                reason = rejection.reason.as_str(), detail = %rejection.detail,
                "telephony webhook refused");
            rejection.into_response()
        }
    }
}

async fn incoming_route(State(s): State<RouteState>, uri: Uri, h: HeaderMap, b: Bytes) -> Response {
    serve(Route::Incoming, s, uri, h, b).await
}

async fn gather_route(State(s): State<RouteState>, uri: Uri, h: HeaderMap, b: Bytes) -> Response {
    serve(Route::Gather, s, uri, h, b).await
}

async fn status_route(State(s): State<RouteState>, uri: Uri, h: HeaderMap, b: Bytes) -> Response {
    serve(Route::Status, s, uri, h, b).await
}

#[async_trait]
impl Connector for TelephonyConnector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn limits(&self) -> &ConnectorLimits {
        &self.limits
    }

    fn routes(&self, inbound: Inbound) -> Router {
        let state = RouteState {
            connector: Arc::new(self.clone()),
            inbound,
        };
        Router::new()
            .route("/incoming", post(incoming_route))
            .route("/gather", post(gather_route))
            .route("/status", post(status_route))
            .with_state(state)
    }

    /// A reply cannot be spoken into a call that has moved on: agents talk on the call
    /// itself, and a written answer belongs on SMS (same caller number) instead.
    async fn deliver(
        &self,
        reply: &Reply,
        _recipient: &Recipient,
    ) -> Result<Delivered, DeliveryError> {
        tracing::info!(connector = %self.id, reply = %reply.id, "reply to a call refused");
        Err(DeliveryError::Permanent {
            code: "unsupported".into(),
            text:
                "replies cannot be delivered to a phone call; answer by sms to the caller's number"
                    .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_statuses_map_to_event_kinds() {
        let cases = [
            ("in-progress", Some("call.answered")),
            ("completed", Some("call.completed")),
            ("no-answer", Some("call.no_answer")),
            ("busy", Some("call.busy")),
            ("failed", Some("call.failed")),
            ("canceled", Some("call.canceled")),
            ("ringing", Some("call.ringing")),
            ("exploded", None),
        ];
        for (status, kind) in cases {
            assert_eq!(call_event_kind(status), kind, "{status}");
        }
    }

    #[test]
    fn attempts_are_clamped() {
        let q = |s: &str| Query::parse(&s.parse::<Uri>().unwrap_or_default());
        assert_eq!(q("/x").attempt(3), 1);
        assert_eq!(q("/x?attempt=2").attempt(3), 2);
        assert_eq!(q("/x?attempt=99").attempt(3), 3);
        assert_eq!(q("/x?attempt=0").attempt(3), 1);
        assert_eq!(q("/x?attempt=x").attempt(3), 1);
    }
}
