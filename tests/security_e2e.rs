//! Request ids from the public listener to the envelope, and envelope signatures with key
//! rotation, against the real daemon and RabbitMQ.

mod common;

use std::time::Duration;

use common::*;
use switchboard::broker::signing::{self, KEY_ID_HEADER, SIGNATURE_HEADER, SigningKey};
use switchboard_sdk::Secret;

const WAIT: Duration = Duration::from_secs(20);

const KEY_1: &str = "envelope-key-one-0123456789abcdef";
const KEY_2: &str = "envelope-key-two-0123456789abcdef";
const KEY_3: &str = "envelope-key-three-0123456789abcd";

fn key(id: &str, secret: &str) -> SigningKey {
    SigningKey {
        id: id.to_owned(),
        key: Secret::new(secret),
    }
}

async fn post_with_id(
    client: &reqwest::Client,
    daemon: &Daemon,
    body: Vec<u8>,
    request_id: Option<&str>,
) -> reqwest::Response {
    let (ts, sig) = sign(&body, now());
    let mut request = client
        .post(daemon.url("/app/shop/messages"))
        .header("X-Switchboard-Timestamp", ts)
        .header("X-Switchboard-Signature", sig)
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(id) = request_id {
        request = request.header("X-Request-Id", id);
    }
    request.send().await.expect("post")
}

fn response_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .expect("an x-request-id on every answer")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn request_ids_reach_the_answer_the_log_and_the_envelope() {
    let prefix = unique_prefix("reqid");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let mut daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let conn = amqp().await;
    let client = reqwest::Client::new();

    // The caller's id is kept.
    let given = "lb-7f3a9c/2026:11";
    let answer = post_with_id(
        &client,
        &daemon,
        text_message("m-1", "u-1", "one"),
        Some(given),
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(response_id(&answer), given);

    // None given, or one that could break a log line: a fresh ULID.
    let answer = post_with_id(&client, &daemon, text_message("m-2", "u-1", "two"), None).await;
    assert_eq!(answer.status(), 200);
    let generated = response_id(&answer);
    assert!(ulid::Ulid::from_string(&generated).is_ok(), "{generated}");
    let answer = post_with_id(
        &client,
        &daemon,
        text_message("m-3", "u-1", "three"),
        Some("evil id\" injected=1"),
    )
    .await;
    let replaced = response_id(&answer);
    assert!(ulid::Ulid::from_string(&replaced).is_ok(), "{replaced}");

    // Refusals carry one too.
    let refused = client
        .post(daemon.url("/app/shop/messages"))
        .header("X-Request-Id", "refused-1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(response_id(&refused), "refused-1");

    let got = take(&conn, &setup.queue("general"), 3, WAIT).await;
    assert_eq!(got.len(), 3);
    for (message, id) in got.iter().zip([given, &generated, &replaced]) {
        assert_eq!(message.body["request_id"], id, "{}", message.body);
        assert_eq!(message.header("x-request-id").as_deref(), Some(id));
    }

    assert!(daemon.terminate(WAIT).await.success());
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("request_id={given}")) && l.contains("accepted")),
        "the acceptance is logged in the request's span:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("request_id=refused-1") && l.contains("refused")),
        "the refusal is logged in the request's span"
    );
    drop(conn);
    cleanup(&prefix, &[setup.queue("general"), setup.queue("claims")]).await;
}

fn signing_config(current: (&str, &str), previous: Option<(&str, &str)>) -> String {
    let mut text = format!(
        "\n[broker.signing]\nkey_id = \"{}\"\nkey = \"{}\"\n",
        current.0, current.1
    );
    if let Some((id, secret)) = previous {
        text.push_str(&format!(
            "\n[[broker.signing.previous]]\nkey_id = \"{id}\"\nkey = \"{secret}\"\n"
        ));
    }
    text
}

#[tokio::test]
async fn envelopes_and_events_are_signed_and_rotation_keeps_both_keys_valid() {
    let prefix = unique_prefix("signing");
    let scratch = Scratch::new(&prefix);
    let (_backend, webhook_url) = Backend::start().await;
    let mut setup = Setup::new(&prefix);
    setup.webhook_url = webhook_url;
    setup.extra = signing_config(("k2", KEY_2), Some(("k1", KEY_1)));
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &prefix, "delivery.*").await;
    let client = reqwest::Client::new();

    // During the rotation: signed with both, so either key alone verifies.
    let (status, _) = post_signed(&client, &daemon, text_message("m-1", "u-1", "one")).await;
    assert_eq!(status, 200);
    let envelope = take(&conn, &setup.queue("general"), 1, WAIT)
        .await
        .remove(0);
    assert_eq!(envelope.header(KEY_ID_HEADER).as_deref(), Some("k2"));
    let header = envelope.header(SIGNATURE_HEADER).expect("signed");
    assert!(signing::verify(&[key("k1", KEY_1)], &header, &envelope.raw));
    assert!(signing::verify(&[key("k2", KEY_2)], &header, &envelope.raw));
    assert!(!signing::verify(
        &[key("k2", KEY_1)],
        &header,
        &envelope.raw
    ));
    let mut tampered = envelope.raw.clone();
    tampered[10] ^= 1;
    assert!(!signing::verify(
        &[key("k1", KEY_1), key("k2", KEY_2)],
        &header,
        &tampered
    ));

    // Events the daemon publishes are signed the same way.
    publish_reply(
        &channel,
        &prefix,
        &serde_json::json!({
            "schema": "switchboard.reply.v1",
            "id": "r-1",
            "conversation_id": "app:shop:u-1",
            "content": {"type": "text", "text": "answer"},
        }),
    )
    .await;
    let event = take(&conn, &events, 1, WAIT).await.remove(0);
    let header = event.header(SIGNATURE_HEADER).expect("events are signed");
    assert!(signing::verify(&[key("k2", KEY_2)], &header, &event.raw));

    // The rotation done: k3 alone after a reload; k1 and k2 no longer verify.
    setup.extra = signing_config(("k3", KEY_3), None);
    std::fs::write(scratch.0.join("switchboard.toml"), setup.config(&scratch.0)).unwrap();
    signal(daemon.pid(), "HUP");
    wait_for("the reload", WAIT, || async {
        (daemon
            .metric("switchboard_config_reloads_total", "outcome=\"applied\"")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    let (status, _) = post_signed(&client, &daemon, text_message("m-2", "u-1", "two")).await;
    assert_eq!(status, 200);
    let envelope = take(&conn, &setup.queue("general"), 1, WAIT)
        .await
        .remove(0);
    assert_eq!(envelope.header(KEY_ID_HEADER).as_deref(), Some("k3"));
    let header = envelope.header(SIGNATURE_HEADER).expect("signed");
    assert!(signing::verify(&[key("k3", KEY_3)], &header, &envelope.raw));
    assert!(!signing::verify(
        &[key("k1", KEY_1), key("k2", KEY_2)],
        &header,
        &envelope.raw
    ));

    drop(channel);
    drop(conn);
    cleanup(
        &prefix,
        &[setup.queue("general"), setup.queue("claims"), events],
    )
    .await;
}

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (issued.cert.pem(), issued.signing_key.serialize_pem())
}

/// A client that trusts only `cert_pem` and reaches `localhost` at the daemon's address.
fn client_trusting(cert_pem: &str, daemon: &Daemon) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", daemon.public)
        .build()
        .unwrap()
}

async fn post_https(client: &reqwest::Client, daemon: &Daemon, id: &str) -> reqwest::Result<u16> {
    let body = text_message(id, "u-tls", "over tls");
    let (ts, sig) = sign(&body, now());
    let response = client
        .post(format!(
            "https://localhost:{}/app/shop/messages",
            daemon.public.port()
        ))
        .header("X-Switchboard-Timestamp", ts)
        .header("X-Switchboard-Signature", sig)
        .body(body)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn the_public_listener_speaks_tls_and_takes_a_new_certificate_on_sighup() {
    let prefix = unique_prefix("tls");
    let scratch = Scratch::new(&prefix);
    let (old_cert, old_key) = certificate();
    let cert_file = scratch.0.join("cert.pem");
    let key_file = scratch.0.join("key.pem");
    std::fs::write(&cert_file, &old_cert).unwrap();
    std::fs::write(&key_file, &old_key).unwrap();
    let setup = Setup::new(&prefix);
    let config = setup.config(&scratch.0).replace(
        "[server]\n",
        &format!(
            "[server]\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n",
            cert_file.display(),
            key_file.display()
        ),
    );
    let daemon = Daemon::start(&scratch.0, &config);
    daemon.wait_broker().await;

    let trusts_old = client_trusting(&old_cert, &daemon);
    assert_eq!(post_https(&trusts_old, &daemon, "t-1").await.unwrap(), 200);
    let plain = reqwest::Client::new()
        .post(daemon.url("/app/shop/messages"))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP is not served: {plain:?}");

    // A renewed certificate: in force after SIGHUP, without a restart.
    let (new_cert, new_key) = certificate();
    std::fs::write(&cert_file, &new_cert).unwrap();
    std::fs::write(&key_file, &new_key).unwrap();
    signal(daemon.pid(), "HUP");
    wait_for("the reload", WAIT, || async {
        let applied = daemon
            .metric("switchboard_config_reloads_total", "outcome=\"applied\"")
            .await;
        (applied >= 1.0).then_some(())
    })
    .await;
    let trusts_new = client_trusting(&new_cert, &daemon);
    assert_eq!(post_https(&trusts_new, &daemon, "t-2").await.unwrap(), 200);
    let fresh_old = client_trusting(&old_cert, &daemon);
    assert!(
        post_https(&fresh_old, &daemon, "t-3").await.is_err(),
        "the old certificate is no longer presented"
    );

    let conn = amqp().await;
    let got = take(&conn, &setup.queue("general"), 2, WAIT).await;
    assert_eq!(
        got.len(),
        2,
        "both TLS messages were accepted and published"
    );
    drop(conn);
    cleanup(&prefix, &[setup.queue("general"), setup.queue("claims")]).await;
}
