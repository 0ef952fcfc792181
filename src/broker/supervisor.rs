//! Owning the connection: connect, declare, watch, reconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::{ConnectionProperties, DefaultConnectionBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Longest a connection attempt may take from TCP to a declared topology and a confirming
/// publisher channel.
const SET_UP_DEADLINE: Duration = Duration::from_secs(20);
/// Longest the supervisor waits for a lost link to close before connecting anew.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

use super::{EnvelopeSigner, Link, LiveLink, Topology};
use crate::config::BrokerConfig;
use crate::metrics::Metrics;

/// The broker link's owner. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    config: BrokerConfig,
    topology: ArcSwap<Topology>,
    signer: Arc<ArcSwapOption<EnvelopeSigner>>,
    connection_name: String,
    link: watch::Sender<Link>,
    generation: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Broker {
    /// A supervisor for `url`; nothing connects until [`Broker::run`].
    pub fn new(
        url: String,
        config: BrokerConfig,
        topology: Topology,
        signer: Option<EnvelopeSigner>,
        instance: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (link, _) = watch::channel(Link::Down(None));
        Self {
            inner: Arc::new(Inner {
                url,
                config,
                topology: ArcSwap::from_pointee(topology),
                signer: Arc::new(ArcSwapOption::from(signer.map(Arc::new))),
                connection_name: format!("switchboard@{instance}"),
                link,
                generation: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// Follows the link's state.
    pub fn subscribe(&self) -> watch::Receiver<Link> {
        self.inner.link.subscribe()
    }

    /// The live link, if connected now.
    pub fn live(&self) -> Option<Arc<LiveLink>> {
        match &*self.inner.link.borrow() {
            Link::Up(live) => Some(live.clone()),
            Link::Down(_) => None,
        }
    }

    /// The last connection error while down.
    pub fn last_error(&self) -> Option<String> {
        match &*self.inner.link.borrow() {
            Link::Down(err) => err.clone(),
            Link::Up(_) => None,
        }
    }

    /// Replaces the topology (after a reload) and declares it now if connected; the next
    /// connection declares it too.
    pub async fn set_topology(&self, topology: Topology) -> Result<(), lapin::Error> {
        // Declared first, on a channel of its own: a topology the broker refuses (a queue
        // redeclared with other arguments) closes only that channel, and the old topology
        // stays the one every reconnection declares.
        if let Some(live) = self.live() {
            let channel = live.connection.create_channel().await?;
            let declared = topology.declare(&channel).await;
            let _ = channel.close(200, "declared".into()).await;
            declared?;
        }
        self.inner.topology.store(Arc::new(topology));
        Ok(())
    }

    /// Replaces the envelope signer (after a reload); the next publish uses it.
    pub fn set_signer(&self, signer: Option<EnvelopeSigner>) {
        self.inner.signer.store(signer.map(Arc::new));
    }

    /// Marks the current link as broken (a publish failed on it) so the supervisor replaces
    /// it without waiting for the next health check.
    pub fn report_broken(&self, generation: u64, error: &str) {
        self.inner.link.send_if_modified(|link| match link {
            Link::Up(live) if live.generation == generation => {
                *link = Link::Down(Some(error.to_owned()));
                true
            }
            _ => false,
        });
    }

    /// Connects, declares, watches and reconnects until `shutdown`; then closes cleanly.
    pub async fn run(&self, shutdown: CancellationToken) {
        let config = &self.inner.config;
        let backoff_builder = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(config.reconnect_min_ms))
            .with_max_delay(Duration::from_millis(config.reconnect_max_ms))
            .with_jitter()
            .without_max_times();
        let mut backoff = backoff_builder.build();
        let stable_after = Duration::from_secs(config.stable_after_secs);
        loop {
            // The whole set-up is bounded, not only the TCP and AMQP handshake: a broker that
            // is still booting can accept a connection and then leave a channel open or a
            // declaration unanswered, and the link must not wait on it forever.
            let connected = tokio::time::timeout(SET_UP_DEADLINE, self.connect())
                .await
                .unwrap_or_else(|_| Err("connection set-up timed out".to_owned()));
            match connected {
                Ok(live) => {
                    let connected_at = Instant::now();
                    let generation = live.generation;
                    if generation > 1 {
                        self.inner.metrics.broker_reconnects.inc();
                    }
                    self.inner.metrics.broker_connected.set(1);
                    tracing::info!(generation, "broker connected, topology declared");
                    self.inner.link.send_replace(Link::Up(live.clone()));
                    let reason = self.watch(&live, &shutdown).await;
                    self.inner.metrics.broker_connected.set(0);
                    if shutdown.is_cancelled() {
                        self.inner
                            .link
                            .send_replace(Link::Down(Some("shutting down".into())));
                        let _ = live.publisher.close(200, "shutting down".into()).await;
                        let _ = live.connection.close(200, "shutting down".into()).await;
                        tracing::info!("broker connection closed");
                        return;
                    }
                    tracing::warn!(%reason, "broker link lost");
                    self.inner.link.send_replace(Link::Down(Some(reason)));
                    // A half-dead connection may never answer the close.
                    let _ = tokio::time::timeout(
                        CLOSE_DEADLINE,
                        live.connection.close(320, "reconnecting".into()),
                    )
                    .await;
                    if connected_at.elapsed() >= stable_after {
                        backoff = backoff_builder.build();
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "broker connection failed");
                    self.inner.link.send_replace(Link::Down(Some(err)));
                }
            }
            let delay = backoff
                .next()
                .unwrap_or(Duration::from_millis(config.reconnect_max_ms));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn connect(&self) -> Result<Arc<LiveLink>, String> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.inner.connection_name.as_str().into());
        let url = with_heartbeat(&self.inner.url, self.inner.config.heartbeat_secs);
        let tls = super::tls::tls_config(&self.inner.config).map_err(|e| format!("tls: {e}"))?;
        let connect = DefaultConnectionBuilder::new()
            .map_err(|e| format!("connect: {e}"))?
            .with_uri_str(url)
            .with_properties(properties)
            .with_tls_config(tls);
        let connect = connect.connect();
        let connection = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e}"))?;
        let declare_channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("channel: {e}"))?;
        self.inner
            .topology
            .load()
            .declare(&declare_channel)
            .await
            .map_err(|e| format!("declare topology: {e}"))?;
        let _ = declare_channel.close(200, "declared".into()).await;
        let publisher = connection
            .create_channel()
            .await
            .map_err(|e| format!("channel: {e}"))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("confirm mode: {e}"))?;
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(LiveLink {
            connection,
            publisher,
            generation,
            signer: self.inner.signer.clone(),
        }))
    }

    /// Returns why the link ended, or when shutdown fires.
    async fn watch(&self, live: &LiveLink, shutdown: &CancellationToken) -> String {
        let mut events = live.connection.events_listener();
        let mut links = self.inner.link.subscribe();
        let mut check = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return "shutdown".into(),
                event = events.next() => match event {
                    Some(lapin::Event::Error(err)) => return format!("connection error: {err}"),
                    Some(lapin::Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(%reason, "broker blocked publishing");
                    }
                    Some(lapin::Event::ConnectionUnblocked) => tracing::info!("broker unblocked publishing"),
                    Some(_) => {}
                    None => return "connection events ended".into(),
                },
                changed = links.changed() => {
                    if changed.is_err() {
                        return "supervisor dropped".into();
                    }
                    if let Link::Down(err) = &*links.borrow_and_update() {
                        return err.clone().unwrap_or_else(|| "reported broken".into());
                    }
                }
                _ = check.tick() => {
                    if !live.connection.status().connected() {
                        return "connection closed".into();
                    }
                    if !live.publisher.status().connected() {
                        return "publishing channel closed".into();
                    }
                }
            }
        }
    }
}

/// Adds the configured heartbeat to the URL unless the URL sets one itself.
fn with_heartbeat(url: &str, heartbeat_secs: u16) -> String {
    if url.contains("heartbeat=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat={heartbeat_secs}")
}
