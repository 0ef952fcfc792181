//! `switchboard run`: wires the parts together, serves, reloads on SIGHUP or `POST /reload`,
//! and drains on SIGTERM/SIGINT within the grace period.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::serve::ListenerExt;
use switchboard_sdk::{Connector, ConnectorContext, InboundSink};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, Topology};
use crate::config::{self, Config, ConfigError};
use crate::durable::{self, DurablePublisher};
use crate::live::{LiveSet, live_connectors};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::observe::Observer;
use crate::outbound::{Dispatcher, OutboundNames};
use crate::pipeline::routing::Policy;
use crate::pipeline::{Exchanges, Pipeline, Sequences};
use crate::server::tls::{Certificates, TlsListener};
use crate::server::{self, AdminState, ReloadFn};
use crate::spool::LocalStore;
use crate::store::SharedState;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config is invalid (exit 2).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Something at runtime failed (exit 1).
    #[error("{0}")]
    Runtime(String),
}

fn runtime(context: &str) -> impl FnOnce(String) -> DaemonError + '_ {
    move |err| DaemonError::Runtime(format!("{context}: {err}"))
}

/// Everything a reload touches.
struct Reloader {
    path: PathBuf,
    pipeline: Arc<Pipeline>,
    live: Arc<ArcSwap<LiveSet>>,
    broker: Broker,
    context: ConnectorContext,
    metrics: Arc<Metrics>,
    connector_tasks: std::sync::Mutex<CancellationToken>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    lock: tokio::sync::Mutex<()>,
    request_timeout: Duration,
    /// Settings a reload cannot change, as the daemon started with them.
    restart_only: Vec<(&'static str, String)>,
    /// What the console shows of the config.
    console_view: Arc<ArcSwap<crate::console::View>>,
    observer: Arc<Observer>,
    /// The public listener's certificate, re-read on every reload.
    certificates: Option<Arc<Certificates>>,
}

/// Settings bound at start (listeners, broker and Redis links, names, the spool file): a
/// reload that changes them is refused rather than half applied.
fn restart_only(config: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("server.listen", config.server.listen.to_string()),
        ("server.tls", format!("{:?}", config.server.tls)),
        (
            "server.admin_listen",
            config.server.admin_listen.to_string(),
        ),
        (
            "server.request_timeout_secs",
            config.server.request_timeout_secs.to_string(),
        ),
        (
            "broker.url",
            config.broker.resolve_url().unwrap_or_default(),
        ),
        ("broker.prefix", config.broker.prefix.clone()),
        (
            "broker.tls",
            format!(
                "{:?}",
                (
                    &config.broker.tls_ca_file,
                    &config.broker.tls_cert_file,
                    &config.broker.tls_key_file
                )
            ),
        ),
        (
            "broker.confirm_timeout_ms",
            config.broker.confirm_timeout_ms.to_string(),
        ),
        (
            "spool",
            format!(
                "{:?}",
                (
                    &config.spool.path,
                    config.spool.max_bytes,
                    config.spool.drain_batch
                )
            ),
        ),
        (
            "redis",
            config
                .redis
                .as_ref()
                .map(|r| format!("{:?} {}", r.resolve_url().ok(), r.key_prefix))
                .unwrap_or_default(),
        ),
        ("outbound", format!("{:?}", config.outbound)),
        ("pipeline", format!("{:?}", config.pipeline)),
        ("daemon", format!("{:?}", config.daemon)),
    ]
}

impl Reloader {
    fn apply_connectors(&self, connectors: Vec<Arc<dyn Connector>>) {
        let sink: Arc<dyn InboundSink> = self.pipeline.clone();
        let router = server::connector_router(
            &connectors,
            sink,
            self.request_timeout,
            self.metrics.clone(),
            self.observer.clone(),
        );
        self.pipeline.set_user_limits(
            &connectors
                .iter()
                .map(|c| {
                    (
                        format!("{}:{}", c.kind(), c.id()),
                        c.limits().per_user_per_minute,
                    )
                })
                .collect::<Vec<_>>(),
        );
        // Old connectors' background work stops; requests and sockets they still serve keep
        // their connector alive until done.
        let token = self.shutdown.child_token();
        let previous = std::mem::replace(
            &mut *self
                .connector_tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            token.clone(),
        );
        previous.cancel();
        for connector in &connectors {
            let connector = connector.clone();
            let token = token.clone();
            self.tracker
                .spawn(async move { connector.run(token).await });
        }
        self.live.store(Arc::new(LiveSet {
            connectors: live_connectors(&connectors),
            router,
        }));
    }

    async fn reload(&self) -> Result<String, String> {
        let _one_at_a_time = self.lock.lock().await;
        let outcome = self.try_reload().await;
        let label = if outcome.is_ok() {
            "applied"
        } else {
            "refused"
        };
        self.metrics
            .reloads
            .get_or_create(&OutcomeLabels {
                outcome: label.into(),
            })
            .inc();
        match &outcome {
            Ok(hash) => tracing::info!(%hash, "config reloaded"),
            Err(problems) => {
                tracing::error!(%problems, "config reload refused, the old config keeps running")
            }
        }
        outcome
    }

    async fn try_reload(&self) -> Result<String, String> {
        let loaded = config::load(&self.path).map_err(|e| e.to_string())?;
        let changed: Vec<&str> = restart_only(&loaded.config)
            .into_iter()
            .zip(&self.restart_only)
            .filter(|(new, old)| new.1 != old.1)
            .map(|(new, _)| new.0)
            .collect();
        if !changed.is_empty() {
            return Err(format!(
                "{} cannot change without a restart; restart the daemon to apply them",
                changed.join(", ")
            ));
        }
        if let Some(certificates) = &self.certificates {
            certificates.reload().map_err(|e| e.to_string())?;
        }
        let connectors = loaded
            .config
            .connectors
            .build(&self.context)
            .map_err(|problems| format!("{problems:?}"))?;
        self.broker
            .set_topology(Topology::from_config(
                &loaded.config.broker,
                &loaded.config.queues,
            ))
            .await
            .map_err(|e| format!("cannot declare the new topology: {e}"))?;
        let signer = loaded
            .config
            .broker
            .signer()
            .map_err(|p| format!("broker.signing.{}: {}", p.key, p.message))?;
        self.broker.set_signer(signer);
        self.pipeline
            .set_policy(Policy::from_config(&loaded.config));
        self.apply_connectors(connectors);
        self.console_view
            .store(Arc::new(crate::console::View::from_config(&loaded.config)));
        know_statistics(&self.observer, &loaded.config);
        self.metrics.set_config_hash(&loaded.hash);
        Ok(loaded.hash)
    }
}

/// Makes the configured intents and tiers known to the statistics, so they read as zeros
/// rather than missing on quiet days.
fn know_statistics(observer: &Observer, config: &Config) {
    observer
        .stats
        .know("tier", config.tiers.names.iter().cloned());
    observer.stats.know(
        "intent",
        config
            .intents
            .iter()
            .map(|i| i.name.clone())
            .chain(["none".to_owned()]),
    );
    observer.stats.know(
        "channel",
        crate::registry::KINDS.iter().map(|k| (*k).to_owned()),
    );
    observer.stats.know("flag", ["abusive".to_owned()]);
    observer.stats.know("total", ["messages".to_owned()]);
}

/// The instance name: configured, else the host name.
fn instance_id(config: &Config) -> String {
    config
        .daemon
        .instance_id
        .clone()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchboard".to_owned())
}

/// Runs the daemon with the config at `path` until SIGTERM/SIGINT.
pub async fn run(path: &Path) -> Result<(), DaemonError> {
    let loaded = config::load(path)?;
    let config = &loaded.config;
    let instance = instance_id(config);
    let metrics = Arc::new(Metrics::default());
    metrics.set_config_hash(&loaded.hash);

    let spool = LocalStore::open(&config.spool.path, config.spool.max_bytes).map_err(|e| {
        DaemonError::Runtime(format!(
            "cannot open spool {}: {e}",
            config.spool.path.display()
        ))
    })?;
    let shared =
        SharedState::from_config(config, metrics.clone()).map_err(runtime("shared state"))?;
    let broker_url = config
        .broker
        .resolve_url()
        .map_err(|p| DaemonError::Runtime(p.message))?;
    let signer = config
        .broker
        .signer()
        .map_err(|p| DaemonError::Runtime(p.message))?;
    let broker = Broker::new(
        broker_url,
        config.broker.clone(),
        Topology::from_config(&config.broker, &config.queues),
        signer,
        &instance,
        metrics.clone(),
    );
    let confirm_timeout = Duration::from_millis(config.broker.confirm_timeout_ms);
    let publisher = DurablePublisher::start(
        spool.clone(),
        broker.clone(),
        metrics.clone(),
        confirm_timeout,
    );
    let sequences = if shared.shared {
        Sequences::Shared(shared.kv.clone())
    } else {
        Sequences::Local(spool.clone())
    };
    let pipeline = Arc::new(Pipeline::new(
        Policy::from_config(config),
        shared.kv.clone(),
        sequences,
        publisher.clone(),
        Exchanges {
            inbound: config.broker.inbound_exchange(),
            events: config.broker.events_exchange(),
        },
        crate::pipeline::dedupe::Claims::new(
            shared.kv.clone(),
            &instance,
            Duration::from_secs(config.pipeline.dedupe_ttl_secs),
        ),
        metrics.clone(),
    ));
    let observer = Arc::new(Observer::new(shared.kv.clone()));
    know_statistics(&observer, config);
    pipeline.set_observer(observer.clone());
    let admin_token = config
        .server
        .resolve_admin_token()
        .map_err(|p| DaemonError::Runtime(p.message))?
        .map(|t| Arc::<str>::from(t.expose()));
    pipeline.set_backlog(Arc::new(
        crate::pipeline::routing::overflow::BrokerBacklog::new(broker.clone()),
    ));
    let http = switchboard_sdk::reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| DaemonError::Runtime(format!("http client: {e}")))?;
    let console_kv = shared.kv.clone();
    let context = ConnectorContext {
        kv: shared.kv.clone(),
        fanout: shared.fanout.clone(),
        http,
        instance_id: instance.clone(),
    };
    let connectors = config.connectors.build(&context).map_err(|problems| {
        DaemonError::Runtime(format!(
            "connectors failed to build after validation: {problems:?}"
        ))
    })?;

    let public = TcpListener::bind(config.server.listen).await.map_err(|e| {
        DaemonError::Runtime(format!("cannot listen on {}: {e}", config.server.listen))
    })?;
    let admin = TcpListener::bind(config.server.admin_listen)
        .await
        .map_err(|e| {
            DaemonError::Runtime(format!(
                "cannot listen on {}: {e}",
                config.server.admin_listen
            ))
        })?;
    let public_addr = public
        .local_addr()
        .map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let certificates = match &config.server.tls {
        Some(tls) => Some(
            Certificates::load(&tls.cert_file, &tls.key_file)
                .map_err(|e| DaemonError::Runtime(e.to_string()))?,
        ),
        None => None,
    };
    let admin_addr = admin
        .local_addr()
        .map_err(|e| DaemonError::Runtime(e.to_string()))?;

    let shutdown = CancellationToken::new();
    let stop_http = shutdown.child_token();
    let stop_core = CancellationToken::new();
    let tracker = TaskTracker::new();

    let live = Arc::new(ArcSwap::from_pointee(LiveSet {
        connectors: Default::default(),
        router: axum::Router::new(),
    }));
    let console_view = Arc::new(ArcSwap::from_pointee(crate::console::View::from_config(
        config,
    )));
    let reloader = Arc::new(Reloader {
        path: path.to_owned(),
        pipeline: pipeline.clone(),
        live: live.clone(),
        broker: broker.clone(),
        context,
        metrics: metrics.clone(),
        connector_tasks: std::sync::Mutex::new(stop_http.child_token()),
        tracker: tracker.clone(),
        shutdown: stop_http.clone(),
        lock: tokio::sync::Mutex::new(()),
        request_timeout: Duration::from_secs(config.server.request_timeout_secs),
        restart_only: restart_only(config),
        console_view: console_view.clone(),
        observer: observer.clone(),
        certificates: certificates.clone(),
    });
    reloader.apply_connectors(connectors);

    let core = TaskTracker::new();
    // Beats until the very end, after in-flight requests are done, so no claim of this
    // process is taken over while it is still being worked on. Only other instances read
    // it: with memory-only state there are none.
    if shared.shared {
        let heartbeat = crate::liveness::Heartbeat::new(
            shared.kv.clone(),
            &instance,
            crate::liveness::incarnation(),
        );
        core.spawn(heartbeat.run(stop_core.clone()));
    }
    {
        let broker = broker.clone();
        let token = stop_core.clone();
        core.spawn(async move { broker.run(token).await });
    }
    core.spawn(durable::drain(
        spool.clone(),
        broker.clone(),
        metrics.clone(),
        config.spool.drain_batch,
        confirm_timeout,
        config.broker.events_exchange(),
        stop_core.clone(),
    ));
    let dispatcher = Arc::new(
        Dispatcher::new(
            broker.clone(),
            live.clone(),
            shared.kv.clone(),
            publisher.clone(),
            config.outbound.clone(),
            OutboundNames {
                queue: config.broker.outbound(),
                events: config.broker.events_exchange(),
                dead: config.broker.dead(),
            },
            instance.clone(),
            metrics.clone(),
        )
        .with_conversations(pipeline.clone())
        .with_observer(observer.clone()),
    );
    tracker.spawn(dispatcher.run(stop_http.clone()));
    {
        let pipeline = pipeline.clone();
        let token = stop_http.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tick.tick() => pipeline.prune_limiters(),
                }
            }
        });
    }
    {
        let token = stop_http.clone();
        tracker.spawn(async move { shared.run(token).await });
    }
    tracker.spawn(crate::heap::run(metrics.clone(), stop_http.clone()));

    let reload_fn: ReloadFn = {
        let reloader = reloader.clone();
        Arc::new(move || {
            let reloader = reloader.clone();
            Box::pin(async move { reloader.reload().await })
        })
    };
    let admin_app = server::admin_router(AdminState {
        broker: broker.clone(),
        spool: spool.clone(),
        metrics: metrics.clone(),
        reload: reload_fn,
        console: crate::console::ConsoleState {
            broker: broker.clone(),
            spool: spool.clone(),
            metrics: metrics.clone(),
            observer: observer.clone(),
            pipeline: pipeline.clone(),
            live: live.clone(),
            view: console_view.clone(),
            kv: console_kv,
            redis: config.redis.is_some(),
            names: crate::console::Names {
                inbound: config.broker.inbound_exchange(),
                outbound: config.broker.outbound(),
                events: config.broker.events_exchange(),
                dead: config.broker.dead(),
            },
            confirm_timeout,
        },
        token: admin_token,
    });
    let public_app = server::public_router(live.clone());

    let public_server = {
        let token = stop_http.clone();
        tokio::spawn(async move {
            // Connectors see the peer address (per-IP limits of web chat) as ConnectInfo.
            let app = public_app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let stop = async move { token.cancelled().await };
            match certificates {
                // tap_io: the wrapper axum gives ConnectInfo<SocketAddr> for any listener.
                Some(certificates) => {
                    let listener = TlsListener::new(public, certificates)?.tap_io(|_| {});
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                }
                None => axum::serve(public, app).with_graceful_shutdown(stop).await,
            }
        })
    };
    let admin_server = {
        // The admin listener stays up while draining so health checks and metrics answer.
        let token = stop_core.clone();
        tokio::spawn(async move {
            axum::serve(admin, admin_app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
        })
    };
    tracing::info!(%public_addr, %admin_addr, instance, config_hash = %loaded.hash, "switchboard running");
    // Tests and scripts started with port 0 read the bound addresses from this line.
    println!("listening public={public_addr} admin={admin_addr}");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    spawn_watchdog(stop_core.clone());

    wait_for_signals(reloader.clone()).await;
    tracing::info!("shutting down: no new requests, finishing in-flight work");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    let grace = Duration::from_secs(config.daemon.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        let _ = public_server.await;
        tracker.close();
        tracker.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(?grace, "grace period over, stopping with work in flight");
    }
    stop_core.cancel();
    core.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), core.wait()).await;
    let _ = admin_server.await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signals(reloader: Arc<Reloader>) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; waiting for ctrl-c only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                let _ = reloader.reload().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
    }
}

/// Pings systemd's watchdog at half its interval while the runtime is responsive.
fn spawn_watchdog(stop: CancellationToken) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => { let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]); }
            }
        }
    });
}
