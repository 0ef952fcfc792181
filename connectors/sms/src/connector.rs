//! The SMS connector: webhook routes, the compliance bookkeeping, and delivery.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use switchboard_sdk::phone::{Masked, is_e164};
use switchboard_sdk::schedule::{Clock, QuietHours, system_clock};
use switchboard_sdk::signature::twilio::TwilioVerifier;
use switchboard_sdk::webhook::FormParams;
use switchboard_sdk::{
    BuildError, Connector, ConnectorContext, ConnectorFactory, ConnectorLimits, Delivered,
    DeliveryError, Inbound, KvStore, Recipient, RejectReason, Rejection, Reply,
};

use crate::config::{ProviderSettings, SmsConfig};
use crate::generic::{self, GenericClient, Reassembly, StoredPart};
use crate::message::{IncomingSms, OutgoingSms};
use crate::optout::{self, OptOuts};
use crate::twilio::{self, EMPTY_TWIML, TwilioClient};

/// The channel kind.
pub const KIND: &str = "sms";

/// Builds SMS connectors from `[[connectors.sms]]` tables; the daemon's registry line.
pub struct SmsFactory;

impl ConnectorFactory for SmsFactory {
    const KIND: &'static str = KIND;
    type Config = SmsConfig;

    fn id(config: &Self::Config) -> &str {
        &config.id
    }

    fn build(
        config: &Self::Config,
        context: &ConnectorContext,
    ) -> Result<Arc<dyn Connector>, BuildError> {
        Ok(Arc::new(SmsConnector::new(config, context)?))
    }
}

#[derive(Clone)]
enum Provider {
    Twilio {
        client: TwilioClient,
        verifier: TwilioVerifier,
    },
    Generic {
        client: GenericClient,
        reassembly: Reassembly,
        default_cc: Option<String>,
    },
}

/// One configured SMS account.
#[derive(Clone)]
pub struct SmsConnector {
    id: String,
    limits: ConnectorLimits,
    public_url: Option<String>,
    provider: Provider,
    optouts: OptOuts,
    quiet_hours: Option<QuietHours>,
    keep_raw: bool,
    clock: Clock,
}

impl SmsConnector {
    /// Checks `config` and builds the connector; no I/O besides reading secret files.
    pub fn new(config: &SmsConfig, context: &ConnectorContext) -> Result<Self, BuildError> {
        let settings = config.validate().map_err(BuildError)?;
        let clock = system_clock();
        let kv: Arc<dyn KvStore> = context.kv.clone();
        let provider = match settings.provider {
            ProviderSettings::Twilio(t) => Provider::Twilio {
                verifier: TwilioVerifier::new(
                    t.auth_token.clone(),
                    settings.public_url.as_deref().unwrap_or_default(),
                ),
                client: TwilioClient {
                    http: context.http.clone(),
                    api_base: t.api_base,
                    account_sid: t.account_sid,
                    auth_token: t.auth_token,
                    sender: t.sender,
                },
            },
            ProviderSettings::Generic(g) => Provider::Generic {
                reassembly: Reassembly::new(kv.clone(), KIND, &config.id, g.concat_ttl),
                default_cc: g.default_country_code,
                client: GenericClient {
                    http: context.http.clone(),
                    send_url: g.send_url,
                    signer: g.signer,
                    from: g.from,
                    split: g.split,
                    clock: clock.clone(),
                    kv: kv.clone(),
                    progress_prefix: format!("{KIND}:{}:sent:", config.id),
                },
            },
        };
        Ok(Self {
            id: config.id.clone(),
            limits: config.limits.clone(),
            public_url: settings.public_url,
            provider,
            optouts: OptOuts::new(kv, KIND, &config.id),
            quiet_hours: settings.quiet_hours,
            keep_raw: config.keep_raw,
            clock,
        })
    }

    /// Replaces the clock (quiet hours, signature timestamps); for tests and simulations.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        if let Provider::Generic { client, .. } = &mut self.provider {
            client.clock = clock.clone();
        }
        self.clock = clock;
        self
    }

    /// The opt-out store of this connector.
    pub fn opt_outs(&self) -> &OptOuts {
        &self.optouts
    }

    /// The StatusCallback URL for a reply: `{public_url}/status?reply_id=...`.
    pub fn status_callback_url(&self, reply_id: &str) -> Option<String> {
        let base = self.public_url.as_deref()?;
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("reply_id", reply_id)
            .finish();
        Some(format!("{base}/status?{query}"))
    }

    /// Records a compliance keyword, then accepts every message of `sms`; answers the
    /// provider only after all were accepted.
    async fn take(&self, inbound: &Inbound, sms: IncomingSms) -> Result<(), Rejection> {
        let keyword = sms.provider_keyword.or_else(|| optout::keyword(&sms.text));
        if let Some(keyword) = keyword {
            // Recorded before accepting: a customer's STOP must hold even if the pipeline
            // then asks the provider to retry.
            let via = sms.text.trim();
            if let Err(err) = self
                .optouts
                .apply(&sms.from, keyword, via, (self.clock)())
                .await
            {
                tracing::warn!(connector = %self.id, from = %Masked(&sms.from), error = %err,
                    "could not record sms opt-out keyword");
                return Err(Rejection::new(
                    RejectReason::Unavailable,
                    "cannot record the opt-out right now",
                ));
            }
            tracing::info!(connector = %self.id, from = %Masked(&sms.from), ?keyword,
                "sms compliance keyword recorded");
        }
        for message in sms.to_messages() {
            let kind = message.content.kind();
            match inbound.accept(message).await {
                Ok(accepted) => tracing::info!(connector = %self.id, from = %Masked(&sms.from),
                    message_id = %sms.message_id, content = kind,
                    envelope = %accepted.envelope_id, duplicate = accepted.duplicate,
                    "sms accepted"),
                Err(err) => {
                    tracing::warn!(connector = %self.id, from = %Masked(&sms.from),
                        message_id = %sms.message_id, error = %err, "sms not accepted");
                    return Err(Rejection::from(err));
                }
            }
        }
        Ok(())
    }

    async fn handle_inbound(
        &self,
        inbound: &Inbound,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, Rejection> {
        match &self.provider {
            Provider::Twilio { verifier, .. } => {
                let params = verifier.verify_request("/inbound", uri, headers, body)?;
                let sms = twilio::parse_incoming(&params, self.keep_raw)?;
                self.take(inbound, sms).await?;
                Ok(twiml(EMPTY_TWIML))
            }
            Provider::Generic {
                client,
                reassembly,
                default_cc,
            } => {
                client.signer.verify(headers, body, (self.clock)())?;
                let (parsed, from) = generic::parse_inbound(body, default_cc.as_deref())?;
                let raw = self
                    .keep_raw
                    .then(|| serde_json::from_slice(body).ok())
                    .flatten();
                let parts = match &parsed.concat {
                    Some(concat) if concat.total > 1 => {
                        let part = StoredPart {
                            message_id: parsed.message_id.clone(),
                            text: parsed.text.clone(),
                            media: parsed.media.clone(),
                        };
                        let added = reassembly.add(&from, concat, &part).await.map_err(|err| {
                            tracing::warn!(connector = %self.id, error = %err,
                                "could not store sms part");
                            Rejection::new(
                                RejectReason::Unavailable,
                                "cannot store the part right now",
                            )
                        })?;
                        match added {
                            None => {
                                tracing::debug!(connector = %self.id, from = %Masked(&from),
                                    part = concat.part, total = concat.total, "sms part stored");
                                return Ok(Json200(json!({
                                    "status": "stored",
                                    "part": concat.part,
                                    "total": concat.total,
                                }))
                                .into_response());
                            }
                            Some(parts) => Some(parts),
                        }
                    }
                    _ => None,
                };
                let sms = generic::incoming(&parsed, from.clone(), parts, raw);
                self.take(inbound, sms).await?;
                if let Some(concat) = parsed.concat.as_ref().filter(|c| c.total > 1) {
                    // Accepted; the parts only wait for their TTL if this fails.
                    if let Err(err) = reassembly.clear(&from, concat).await {
                        tracing::warn!(connector = %self.id, error = %err,
                            "could not clear sms parts");
                    }
                }
                Ok(Json200(json!({"status": "accepted"})).into_response())
            }
        }
    }

    async fn handle_status(
        &self,
        inbound: &Inbound,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, Rejection> {
        let reply_id = FormParams::from_query(uri)
            .get("reply_id")
            .map(str::to_owned);
        let (event, answer) = match &self.provider {
            Provider::Twilio { verifier, .. } => {
                let params = verifier.verify_request("/status", uri, headers, body)?;
                let event = twilio::parse_status(&params, reply_id, KIND, &self.id)?;
                (event, twiml(EMPTY_TWIML))
            }
            Provider::Generic {
                client, default_cc, ..
            } => {
                client.signer.verify(headers, body, (self.clock)())?;
                let event =
                    generic::parse_status(body, reply_id, default_cc.as_deref(), KIND, &self.id)?;
                (
                    event,
                    Json200(json!({"status": "accepted"})).into_response(),
                )
            }
        };
        // A provider saying the recipient unsubscribed is as good as their STOP.
        if event.code.as_deref() == Some("21610")
            && let Some(number) = event
                .conversation_id
                .as_deref()
                .and_then(|c| c.rsplit(':').next())
            && let Err(err) = self.optouts.opt_out(number, "21610", (self.clock)()).await
        {
            tracing::warn!(connector = %self.id, error = %err, "could not record opt-out");
        }
        let status = event.data.get("status").cloned();
        let message_id = event.channel_message_id.clone();
        inbound.report(event).await.map_err(|err| {
            tracing::warn!(connector = %self.id, error = %err, "sms status not reported");
            Rejection::from(err)
        })?;
        tracing::info!(connector = %self.id, message_id = ?message_id, status = ?status,
            "sms status reported");
        Ok(answer)
    }

    async fn send(&self, reply: &Reply, to: &str) -> Result<Delivered, DeliveryError> {
        let sms = OutgoingSms::from_content(&reply.content)?;
        match self.optouts.get(to).await {
            Ok(Some(record)) => {
                return Err(DeliveryError::Permanent {
                    code: "opted_out".into(),
                    text: format!("recipient opted out ({})", record.via),
                });
            }
            Ok(None) => {}
            Err(err) => {
                return Err(DeliveryError::Retryable {
                    code: None,
                    text: format!("cannot check opt-out: {err}"),
                    retry_after: None,
                });
            }
        }
        if !sms.urgent
            && let Some(wait) = self.quiet_hours.and_then(|q| q.remaining((self.clock)()))
        {
            return Err(DeliveryError::Retryable {
                code: Some("quiet_hours".into()),
                text: "quiet hours: held until they end".into(),
                retry_after: Some(wait),
            });
        }
        let callback = self.status_callback_url(&reply.id);
        let sent = match &self.provider {
            Provider::Twilio { client, .. } => client.send(to, &sms, callback.as_deref()).await,
            Provider::Generic { client, .. } => {
                client.send(&reply.id, to, &sms, callback.as_deref()).await
            }
        };
        match sent {
            Ok(id) => Ok(Delivered {
                channel_message_id: id,
            }),
            Err(err) => {
                if matches!(&err, DeliveryError::Permanent { code, .. } if code == "21610" || code == "opted_out")
                    && let Err(kv) = self.optouts.opt_out(to, "provider", (self.clock)()).await
                {
                    tracing::warn!(connector = %self.id, error = %kv, "could not record opt-out");
                }
                Err(err)
            }
        }
    }
}

/// 200 with a JSON body.
struct Json200(serde_json::Value);

impl IntoResponse for Json200 {
    fn into_response(self) -> Response {
        (StatusCode::OK, axum::Json(self.0)).into_response()
    }
}

fn twiml(body: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

#[derive(Clone)]
struct RouteState {
    connector: Arc<SmsConnector>,
    inbound: Inbound,
}

async fn inbound_route(
    State(state): State<RouteState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let handled = state
        .connector
        .handle_inbound(&state.inbound, &uri, &headers, &body)
        .await;
    answer(&state.connector.id, "/inbound", handled)
}

async fn status_route(
    State(state): State<RouteState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let handled = state
        .connector
        .handle_status(&state.inbound, &uri, &headers, &body)
        .await;
    answer(&state.connector.id, "/status", handled)
}

/// The handler's response, or its rejection logged with the route (the daemon logs every
/// refusal too, but without the route that tells a wrong `public_url` apart).
fn answer(id: &str, route: &str, handled: Result<Response, Rejection>) -> Response {
    handled.unwrap_or_else(|rejection| {
        tracing::debug!(connector = %id, route, reason = rejection.reason.as_str(),
            detail = %rejection.detail, "sms webhook refused");
        rejection.into_response()
    })
}

#[async_trait]
impl Connector for SmsConnector {
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
            .route("/inbound", post(inbound_route))
            .route("/status", post(status_route))
            .with_state(state)
    }

    async fn deliver(
        &self,
        reply: &Reply,
        recipient: &Recipient,
    ) -> Result<Delivered, DeliveryError> {
        let to = recipient.channel_user_id();
        if !is_e164(to) {
            return Err(DeliveryError::Permanent {
                code: "invalid_recipient".into(),
                text: "conversation user is not an E.164 phone number".into(),
            });
        }
        let result = self.send(reply, to).await;
        match &result {
            Ok(delivered) => tracing::info!(connector = %self.id, to = %Masked(to),
                reply = %reply.id, message_id = ?delivered.channel_message_id, "sms sent"),
            Err(err) => tracing::warn!(connector = %self.id, to = %Masked(to),
                reply = %reply.id, error = %err, "sms not sent"),
        }
        result
    }
}
