//! Three instances behind one address (haproxy, started here from a generated config on
//! free ports), one RabbitMQ, one Redis: the deployment of docs/operations.md ("Several
//! instances"). Needs Debian's `haproxy` (/usr/sbin/haproxy).

mod common;
mod faults_support;
mod webchat_support;
mod wechat_support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use faults_support::*;
use serde_json::json;
use wechat_support::{ACCOUNT, openid, safe_push, send_push, text_xml};

const WAIT: Duration = Duration::from_secs(30);

/// One instance: its ports and scratch dir (spool), so it can be killed and started again.
struct Instance {
    name: String,
    scratch: Scratch,
    public: u16,
    admin: u16,
    config: String,
    daemon: Option<Daemon>,
}

impl Instance {
    fn start(&mut self) {
        self.daemon = Some(Daemon::start(&self.scratch.0, &self.config));
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("running")
    }
}

/// haproxy in the foreground, stopped on drop.
struct Balancer {
    child: Child,
    port: u16,
    _dir: Scratch,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The haproxy config of docs/operations.md for `instances`.
fn haproxy_config(port: u16, instances: &[Instance]) -> String {
    let mut config = format!(
        r#"global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # Web chat sockets stay open.
    timeout tunnel 1h
    # A connection refused by a dead instance is tried on another.
    retries 3
    option redispatch

frontend switchboard
    bind 127.0.0.1:{port}
    default_backend instances

backend instances
    balance roundrobin
    option httpchk GET /readyz
"#
    );
    for instance in instances {
        config.push_str(&format!(
            "    server {} 127.0.0.1:{} check port {} inter 500 fall 2 rise 1\n",
            instance.name, instance.public, instance.admin
        ));
    }
    config
}

struct Cluster {
    prefix: String,
    setup: Setup,
    instances: Vec<Instance>,
    balancer: Balancer,
    apis: FakeApis,
}

impl Cluster {
    /// Three instances; `broken_broker` names one started with an unreachable broker, so
    /// everything it accepts waits in its spool.
    async fn start(name: &str, broken_broker: Option<&str>) -> Self {
        let prefix = unique_prefix(name);
        let apis = FakeApis::start().await;
        let mut setup = Setup::new(&prefix);
        setup.webhook_url = format!("{}/replies", apis.base);
        setup.extra = format!(
            "{}{}",
            webchat_support::webchat_table("", ""),
            channels_config(&prefix, &apis.base, &format!("{prefix}:"))
        );
        let mut instances: Vec<Instance> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let scratch = Scratch::new(&format!("{prefix}-{name}"));
                let (public, admin) = (free_port(), free_port());
                let mut config = instance_config(&setup, &scratch.0, public, admin).replace(
                    &format!("instance_id = \"{prefix}\""),
                    &format!("instance_id = \"{name}\""),
                );
                if broken_broker == Some(*name) {
                    config = config.replace(&amqp_url(), "amqp://guest:guest@127.0.0.1:1/%2f");
                }
                Instance {
                    name: (*name).to_owned(),
                    scratch,
                    public,
                    admin,
                    config,
                    daemon: None,
                }
            })
            .collect();
        for instance in &mut instances {
            instance.start();
        }
        for instance in &instances {
            if broken_broker != Some(instance.name.as_str()) {
                instance.daemon().wait_broker().await;
            }
        }
        let dir = Scratch::new(&format!("{prefix}-haproxy"));
        let port = free_port();
        let config_path = dir.0.join("haproxy.cfg");
        std::fs::write(&config_path, haproxy_config(port, &instances)).unwrap();
        let child = Command::new(haproxy())
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let balancer = Balancer {
            child,
            port,
            _dir: dir,
        };
        let url = format!("http://127.0.0.1:{port}/webchat/site/widget.js");
        wait_for("haproxy to listen", WAIT, || {
            let url = url.clone();
            async move { reqwest::get(url).await.ok().map(|_| ()) }
        })
        .await;
        Self {
            prefix,
            setup,
            instances,
            balancer,
            apis,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.balancer.port)
    }

    async fn finish(self) {
        cleanup(
            &self.prefix,
            &[self.setup.queue("claims"), self.setup.queue("general")],
        )
        .await;
        wechat_support::redis_cleanup(&format!("{}:", self.prefix)).await;
    }
}

fn haproxy() -> &'static str {
    if std::path::Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    }
}

#[tokio::test]
async fn wechat_retries_landing_on_different_instances_publish_once() {
    let cluster = Cluster::start("multi-retry", None).await;
    let client = reqwest::Client::new();
    let user = openid();
    const N: usize = 20;
    for i in 0..N {
        let msg_id = wechat_support::msg_id();
        let inner = text_xml(&user, now(), msg_id, &format!("hello {i}"));
        let push = safe_push(&ACCOUNT, &user, &inner, now());
        // WeChat's retries of one push, the same request each time, land on every instance
        // at once; each is retried until it gets its 200 as WeChat would.
        let sends = cluster.instances.iter().map(|instance| {
            let url = format!("http://127.0.0.1:{}{}", instance.public, ACCOUNT.path());
            let (client, push) = (client.clone(), push.clone());
            async move {
                wait_for("the push accepted", WAIT, || {
                    let (client, url, push) = (client.clone(), url.clone(), push.clone());
                    async move {
                        let answer = send_push(&client, &url, &push).await;
                        assert!(matches!(answer.status, 200 | 503), "{answer:?}");
                        (answer.status == 200).then_some(())
                    }
                })
                .await
            }
        });
        futures_util::future::join_all(sends).await;
    }
    let conn = amqp().await;
    let got = take(&conn, &cluster.setup.queue("general"), N + 5, WAIT).await;
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for message in &got {
        *per_key
            .entry(message.body["dedupe_key"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_key.len(), N, "every message published");
    assert_eq!(got.len(), N, "each exactly once: {per_key:?}");
    let duplicates: f64 = {
        let mut sum = 0.0;
        for instance in &cluster.instances {
            sum += instance
                .daemon()
                .metric("switchboard_accepted_total", "outcome=\"duplicate\"")
                .await;
        }
        sum
    };
    assert!(
        duplicates >= N as f64,
        "the retries were recognised ({duplicates})"
    );
    cluster.finish().await;
}

#[tokio::test]
async fn web_chat_replies_reach_the_instance_holding_the_socket_and_the_wechat_token_is_fetched_once()
 {
    let cluster = Cluster::start("multi-socket", None).await;
    // The visitor connects through the balancer; whichever instance holds the socket, every
    // instance consumes replies.
    let url = format!(
        "ws://127.0.0.1:{}/webchat/site/ws?v=1",
        cluster.balancer.port
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert(
        "origin",
        format!("http://127.0.0.1:{}", cluster.balancer.port)
            .parse()
            .unwrap(),
    );
    request
        .headers_mut()
        .insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket through haproxy");
    webchat_support::send(
        &mut ws,
        json!({"type": "hello", "v": 1, "last_seq": 0, "epoch": null}),
    )
    .await;
    let ready = webchat_support::recv(&mut ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let conversation = ready["conversation_id"].as_str().unwrap().to_owned();

    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    const N: u64 = 30;
    // A WeChat follower writes first (replies go to people who wrote).
    let wechat_user = openid();
    let inner = text_xml(&wechat_user, now(), wechat_support::msg_id(), "hello");
    let push = safe_push(&ACCOUNT, &wechat_user, &inner, now());
    let answer = send_push(
        &reqwest::Client::new(),
        &format!("{}{}", cluster.base(), ACCOUNT.path()),
        &push,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    for i in 1..=N {
        publish_reply(
            &channel,
            &cluster.prefix,
            &webchat_support::reply(&conversation, &format!("r-{i}"), &format!("reply {i}")),
        )
        .await;
        publish_reply(
            &channel,
            &cluster.prefix,
            &webchat_support::reply(
                &ACCOUNT.conversation(&wechat_user),
                &format!("rw-{i}"),
                &format!("wechat reply {i}"),
            ),
        )
        .await;
    }
    for expected in 1..=N {
        let frame = webchat_support::recv_kind(&mut ws, "agent").await;
        assert_eq!(frame["seq"], expected, "in order, no gaps: {frame}");
    }
    let filter = |kind: &str, id: &str| {
        format!("channel=\"{kind}\",connector=\"{id}\",outcome=\"succeeded\"")
    };
    let (per_instance, _) = wait_for("every delivery counted", WAIT, || async {
        let mut webchat = Vec::new();
        let mut wechat = 0.0;
        for instance in &cluster.instances {
            let daemon = instance.daemon();
            webchat.push(
                daemon
                    .metric("switchboard_deliveries_total", &filter("webchat", "site"))
                    .await,
            );
            wechat += daemon
                .metric(
                    "switchboard_deliveries_total",
                    &filter("wechat", ACCOUNT.id),
                )
                .await;
        }
        (webchat.iter().sum::<f64>() >= N as f64 && wechat >= N as f64).then_some((webchat, wechat))
    })
    .await;
    assert!(
        per_instance.iter().filter(|n| **n > 0.0).count() >= 2,
        "replies were consumed by several instances and all reached the one socket: {per_instance:?}"
    );
    assert_eq!(
        cluster.apis.token_calls.load(Ordering::SeqCst),
        1,
        "one access token for the three instances"
    );
    cluster.finish().await;
}

#[tokio::test]
async fn killing_one_instance_mid_stream_loses_nothing_and_its_spool_drains_on_restart() {
    // Instance b cannot reach the broker, so what it accepts waits in its spool when it dies.
    let mut cluster = Cluster::start("multi-kill", Some("b")).await;
    let tally: Arc<Tally> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let inbound = tokio::spawn(stream(
        cluster.base(),
        People::default(),
        tally.clone(),
        stop.clone(),
        Duration::from_millis(40),
        // A channel gives up within this. A message in flight on the killed instance leaves
        // its pending claim: retries are answered 503 until b's heartbeat expires (15 s), then
        // accepted under the envelope id the claim names, which b publishes too when it
        // drains its spool; count_inbound checks that every message arrives under one id
        // (docs/RELIABILITY.md, "Several instances").
        Duration::from_secs(40),
    ));
    let accepted_at_least = |n: usize| {
        let tally = tally.clone();
        move || {
            let count = tally.accepted_count();
            async move { (count >= n).then_some(()) }
        }
    };
    wait_for("100 accepted", WAIT, accepted_at_least(100)).await;
    let spooled = wait_for("b to spool some", WAIT, || async {
        let depth = cluster.instances[1]
            .daemon()
            .metric("switchboard_spool_depth", "")
            .await;
        (depth > 0.0).then_some(depth)
    })
    .await;
    cluster.instances[1].daemon.take().unwrap().kill9();
    let after = tally.accepted_count() + 100;
    wait_for(
        "100 more accepted without b",
        WAIT,
        accepted_at_least(after),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    inbound.await.unwrap();

    // b comes back, now able to reach the broker, and drains what it had spooled.
    let b = &mut cluster.instances[1];
    b.config = b
        .config
        .replace("amqp://guest:guest@127.0.0.1:1/%2f", &amqp_url());
    b.start();
    b.daemon().wait_broker().await;
    let accepted = tally.accepted.lock().unwrap().clone();
    let queues = [
        cluster.setup.queue("general"),
        cluster.setup.queue("claims"),
    ];
    let (delivered, duplicated, lost) = count_inbound(&queues, &accepted, WAIT * 4).await;
    wait_for("b's spool to drain", WAIT, || async {
        (cluster.instances[1]
            .daemon()
            .metric("switchboard_spool_depth", "")
            .await
            == 0.0)
            .then_some(())
    })
    .await;
    eprintln!(
        "kill one of three: {} accepted, {delivered} delivered, {duplicated} duplicated, {lost} lost, {spooled} spooled on b when killed",
        accepted.len()
    );
    assert_eq!(lost, 0, "nothing accepted was lost");
    cluster.finish().await;
}
