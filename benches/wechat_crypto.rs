//! What one WeChat safe-mode push costs the connector before the pipeline sees it: the URL
//! signature check, the outer XML parse, `msg_signature` check + base64 + AES-256-CBC
//! decrypt + frame check, the inner XML parse and the normalization into a push — the same
//! public functions, in the same order, as the connector's push handler.
//!
//! A plain `Instant` loop (no harness): `BENCH_ITERATIONS` (default 20000) pushes, made
//! beforehand with distinct `MsgId`s, timestamps and nonces, opened one after the other after
//! a warm-up of a tenth as many. Prints ns/message for the whole path and for each step.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use switchboard_connector_wechat::crypto::{AesKey, MessageCrypt, signature, verify_signature};
use switchboard_connector_wechat::{message, xml};

const TOKEN: &str = "benchtoken";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";
const LIMIT: usize = 64 * 1024;

/// One push as it reaches the handler: the query's fields and the body.
struct Push {
    timestamp: String,
    nonce: String,
    signature: String,
    msg_signature: String,
    body: Vec<u8>,
}

fn make(key: &AesKey, i: usize) -> Push {
    let timestamp = (1_763_000_000 + i).to_string();
    let nonce = format!(
        "{}",
        1_000_000_007_u64.wrapping_mul(i as u64 + 1) % 10_000_000_000
    );
    let plain = format!(
        "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[o-bench-{user}]]></FromUserName><CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[Where is my parcel SF{i:010}? It was due yesterday and the tracking page has not changed since.]]></Content><MsgId>{msg_id}</MsgId></xml>",
        user = i % 1000,
        msg_id = 24_000_000_000_000_000_u64 + i as u64,
    );
    let mut random = [0_u8; 16];
    random[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let encrypt = key.encrypt(&random, &plain, APP_ID);
    Push {
        signature: signature(&[TOKEN, &timestamp, &nonce]),
        msg_signature: signature(&[TOKEN, &timestamp, &nonce, &encrypt]),
        body: format!(
            "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        )
        .into_bytes(),
        timestamp,
        nonce,
    }
}

/// Nanoseconds spent in each step of one push.
#[derive(Default, Clone, Copy)]
struct Steps {
    url_signature: u128,
    outer_xml: u128,
    open: u128,
    inner_xml: u128,
    normalize: u128,
}

/// The handler's path for one push; `Err` names the step that refused it.
fn handle(crypt: &MessageCrypt, push: &Push, steps: &mut Steps) -> Result<(), String> {
    let t0 = Instant::now();
    if !verify_signature(&[TOKEN, &push.timestamp, &push.nonce], &push.signature) {
        return Err("url signature".into());
    }
    let t1 = Instant::now();
    let outer = xml::parse(&push.body, LIMIT).map_err(|e| e.to_string())?;
    let encrypt = outer.text_of("Encrypt").ok_or("missing Encrypt")?;
    let t2 = Instant::now();
    let opened = crypt
        .open(&push.timestamp, &push.nonce, encrypt, &push.msg_signature)
        .map_err(|e| e.to_string())?;
    let t3 = Instant::now();
    let inner = xml::parse(opened.frame.message.as_bytes(), LIMIT).map_err(|e| e.to_string())?;
    let t4 = Instant::now();
    let normalized = message::normalize(&inner).map_err(|e| e.to_string())?;
    black_box(normalized.content());
    black_box(&normalized.dedupe_key);
    let t5 = Instant::now();
    steps.url_signature += (t1 - t0).as_nanos();
    steps.outer_xml += (t2 - t1).as_nanos();
    steps.open += (t3 - t2).as_nanos();
    steps.inner_xml += (t4 - t3).as_nanos();
    steps.normalize += (t5 - t4).as_nanos();
    Ok(())
}

fn main() -> ExitCode {
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(20_000);
    let key = match AesKey::from_encoding_aes_key(AES_KEY) {
        Ok(key) => key,
        Err(err) => {
            eprintln!("wechat_crypto: {err}");
            return ExitCode::from(1);
        }
    };
    let crypt = MessageCrypt::new(TOKEN, vec![key.clone()], APP_ID, true);
    let pushes: Vec<Push> = (0..iterations).map(|i| make(&key, i)).collect();
    let body_bytes = pushes.first().map_or(0, |p| p.body.len());

    let mut warm = Steps::default();
    for push in pushes.iter().take(iterations / 10) {
        if let Err(err) = handle(&crypt, push, &mut warm) {
            eprintln!("wechat_crypto: warm-up push refused at {err}");
            return ExitCode::from(1);
        }
    }
    let mut steps = Steps::default();
    let started = Instant::now();
    for push in &pushes {
        if let Err(err) = handle(&crypt, black_box(push), &mut steps) {
            eprintln!("wechat_crypto: push refused at {err}");
            return ExitCode::from(1);
        }
    }
    let total = started.elapsed().as_nanos();
    let per = |ns: u128| ns as f64 / iterations as f64;
    println!(
        "wechat safe-mode push, {iterations} pushes of {body_bytes} bytes: {:.0} ns/message \
         (wall clock, {:.0} messages/s on one core)",
        per(total),
        1e9 / per(total),
    );
    println!(
        "  url signature {:.0} ns, outer xml {:.0} ns, msg_signature + decrypt {:.0} ns, \
         inner xml {:.0} ns, normalize {:.0} ns",
        per(steps.url_signature),
        per(steps.outer_xml),
        per(steps.open),
        per(steps.inner_xml),
        per(steps.normalize),
    );
    ExitCode::SUCCESS
}
