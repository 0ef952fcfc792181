//! `amqps://` end to end: a private RabbitMQ node whose only AMQP listener is TLS, with a
//! certificate from a CA this test makes and client certificates required; the real binary
//! trusts that CA through `broker.tls_ca_file` and presents its own certificate through
//! `tls_cert_file` / `tls_key_file`, and without the CA refuses the broker and spools.
//!
//! One test function, so the node (10-20 s to boot) is started once and stopped at the end
//! by its guard, whatever happens in between.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{ConnectionProperties, DefaultConnectionBuilder};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

const WAIT: Duration = Duration::from_secs(30);
/// Longest the private node may take to boot.
const NODE_BOOT: Duration = Duration::from_secs(90);
/// The user the daemon logs in as; its password must never show in logs or answers.
const USER: &str = "sbtls";

/// A port free right now on loopback.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A CA, and a `localhost` server certificate and a client certificate it signed: PEM texts.
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
    client_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "switchboard test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server_params.signed_by(&server_key, &ca).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "switchboard");
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_pem: server.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// A RabbitMQ node of this test's own: TLS listener only, client certificates from the
/// test's CA required, no plugins, files in `dir`. Stopped on drop.
struct TlsNode {
    name: String,
    tls_port: u16,
}

impl TlsNode {
    fn start(dir: &Path, pki: &Pki, node: &str) -> Self {
        let tls_port = free_port();
        let dist_port = free_port();
        let file = |name: &str, text: &str| -> PathBuf {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write node file");
            path
        };
        let ca = file("ca.pem", &pki.ca_pem);
        let cert = file("server.pem", &pki.server_pem);
        let key = file("server-key.pem", &pki.server_key_pem);
        let config = file(
            "rabbitmq.conf",
            &format!(
                "listeners.tcp = none\n\
                 listeners.ssl.default = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = true\n",
                ca.display(),
                cert.display(),
                key.display()
            ),
        );
        let plugins = file("enabled_plugins", "[].\n");
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("node dir");
        }
        // Run as root, rabbitmq-server drops to the rabbitmq user, which must own the files;
        // as anyone else it runs as that user and the chown is not needed.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir)
            .status();
        let name = format!("{node}@localhost");
        let node_guard = Self { name, tls_port };
        let started = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &node_guard.name)
            .env("RABBITMQ_CONFIG_FILE", &config)
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .status()
            .expect("rabbitmq-server runs");
        assert!(started.success(), "rabbitmq-server -detached failed");
        // await_startup gives up at once while the node has not registered with epmd yet,
        // so it is asked again (each try starts a CLI VM, about a second) until the deadline.
        let deadline = Instant::now() + NODE_BOOT;
        let mut up = false;
        while !up && Instant::now() < deadline {
            up = node_guard
                .ctl(&["await_startup", "--timeout", "60"])
                .status
                .success();
        }
        assert!(
            up,
            "private node did not start; log:\n{}",
            std::fs::read_to_string(dir.join("log").join(format!("{}.log", node_guard.name)))
                .unwrap_or_default()
        );
        node_guard
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.name])
            .args(args)
            .output()
            .expect("rabbitmqctl runs")
    }

    fn add_user(&self, user: &str, password: &str) {
        for args in [
            vec!["add_user", user, password],
            vec!["set_permissions", "-p", "/", user, ".*", ".*", ".*"],
        ] {
            let out = self.ctl(&args);
            assert!(
                out.status.success(),
                "rabbitmqctl {}: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// `(user, ssl)` of every client connection.
    fn connections(&self) -> Vec<(String, String)> {
        let out = self.ctl(&["list_connections", "user", "ssl", "--no-table-headers"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
            })
            .collect()
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
    }
}

/// The shared harness config pointed at the private node, with `broker_tls` added to
/// `[broker]`.
fn config(setup: &Setup, dir: &Path, url: &str, broker_tls: &str) -> String {
    let shared = format!("url = \"{}\"\n", amqp_url());
    let generated = setup.config(dir);
    assert!(
        generated.contains(&shared),
        "the harness config sets the URL"
    );
    generated.replacen(&shared, &format!("url = \"{url}\"\n{broker_tls}\n"), 1)
}

async fn readyz(daemon: &Daemon) -> serde_json::Value {
    reqwest::get(daemon.admin_url("/readyz"))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz json")
}

#[tokio::test]
async fn amqps_with_private_ca_and_client_certificate_works_and_without_the_ca_stays_down() {
    let prefix = unique_prefix("tls");
    let scratch = Scratch::new(&prefix);
    let node_dir = scratch.0.join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let pki = pki();
    let node = TlsNode::start(&node_dir, &pki, &prefix);
    let password = format!("pw-{}", ulid::Ulid::new());
    node.add_user(USER, &password);
    let url = format!("amqps://{USER}:{password}@localhost:{}/%2f", node.tls_port);
    let ca_file = scratch.0.join("broker-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let cert_file = scratch.0.join("client.pem");
    std::fs::write(&cert_file, &pki.client_pem).unwrap();
    let key_file = scratch.0.join("client-key.pem");
    std::fs::write(&key_file, &pki.client_key_pem).unwrap();
    let client_pair = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        cert_file.display(),
        key_file.display()
    );

    // Trusting the private CA and presenting the client certificate: the link comes up over
    // TLS and a webhook's message arrives.
    let trusted_dir = scratch.0.join("trusted");
    std::fs::create_dir_all(&trusted_dir).unwrap();
    let setup = Setup::new(&prefix);
    let trusted_config = config(
        &setup,
        &trusted_dir,
        &url,
        &format!("tls_ca_file = \"{}\"\n{client_pair}", ca_file.display()),
    );
    let daemon = Daemon::start(&trusted_dir, &trusted_config);
    daemon.wait_broker().await;
    let client = reqwest::Client::new();
    let (status, answer) = post_signed(
        &client,
        &daemon,
        text_message("tls-1", "u-1", "my parcel is damaged"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let connect = |identity: Option<OwnedIdentity>| {
        let tls = OwnedTLSConfig {
            cert_chain: Some(pki.ca_pem.clone()),
            identity,
        };
        let url = url.clone();
        async move {
            DefaultConnectionBuilder::new()
                .unwrap()
                .with_uri_str(url)
                .with_properties(ConnectionProperties::default())
                .with_tls_config(tls)
                .connect()
                .await
        }
    };
    assert!(
        connect(None).await.is_err(),
        "the node refuses clients without a certificate"
    );
    let conn = connect(Some(OwnedIdentity::PKCS8 {
        pem: pki.client_pem.clone().into_bytes(),
        key: pki.client_key_pem.clone().into_bytes(),
    }))
    .await
    .expect("the test's own amqps connection");
    let got = take(&conn, &setup.queue("claims"), 1, WAIT).await;
    assert_eq!(got.len(), 1, "the envelope reached the agent queue");
    assert_eq!(got[0].body["id"], answer["envelope_id"]);
    assert_eq!(got[0].body["content"]["text"], "my parcel is damaged");
    let connections = node.connections();
    assert!(
        connections
            .iter()
            .any(|(user, ssl)| user == USER && ssl == "true"),
        "the daemon's connection is a TLS one: {connections:?}"
    );
    let _ = conn.close(200, "taken".into()).await;

    // check-config shows the broker without its password.
    let checked = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("check-config")
        .arg(trusted_dir.join("switchboard.toml"))
        .output()
        .expect("check-config runs");
    let summary = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "check-config: {summary}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(summary.contains("amqps://****@localhost"), "{summary}");
    assert!(!summary.contains(&password), "{summary}");

    // Without the CA the broker's certificate is not trusted: the link stays down with the
    // TLS error, and webhooks are still answered 200 from the spool.
    let untrusted_prefix = unique_prefix("tls-untrusted");
    let untrusted_dir = scratch.0.join("untrusted");
    std::fs::create_dir_all(&untrusted_dir).unwrap();
    let untrusted_setup = Setup::new(&untrusted_prefix);
    let untrusted = Daemon::start(
        &untrusted_dir,
        &config(&untrusted_setup, &untrusted_dir, &url, &client_pair),
    );
    let ready = wait_for("the TLS error on /readyz", WAIT, || async {
        Some(readyz(&untrusted).await).filter(|r| {
            r["broker_error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains("certificate"))
        })
    })
    .await;
    assert_eq!(ready["broker"], "down", "{ready}");
    let error = ready["broker_error"].as_str().unwrap();
    assert!(error.contains("UnknownIssuer"), "{error}");
    let (status, answer) =
        post_signed(&client, &untrusted, text_message("tls-2", "u-2", "hello")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted");
    assert_eq!(readyz(&untrusted).await["spool"]["depth"], 1);

    for (name, log) in [
        ("trusted", daemon.log_text()),
        ("untrusted", untrusted.log_text()),
    ] {
        assert!(
            !log.contains(&password),
            "the {name} daemon logged the password"
        );
    }
    assert!(!ready.to_string().contains(&password), "{ready}");
    drop(untrusted);
    drop(daemon);
    drop(node);
}
