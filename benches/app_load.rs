//! Load client for the signed app webhook (`POST /app/{id}/messages`), and with
//! `BENCH_CHANNEL` for WeChat safe-mode pushes (`POST /wechat/{id}?...&encrypt_type=aes`) and
//! Twilio-signed SMS webhooks (`POST /sms/{id}/inbound`).
//!
//! Posts unique, signed messages to a running daemon, either closed-loop at a fixed
//! concurrency (each of C workers sends its next message as soon as the previous answer
//! arrived) or open-loop at a fixed rate (sends are scheduled at `start + i / rate` whatever
//! the answers do, and latency counts from the scheduled time, so a slow daemon cannot hide
//! its queueing delay by slowing the client down).
//!
//! Settings come from environment variables (cargo passes `--bench` as an argument, so
//! arguments are ignored):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BENCH_CHANNEL` | app | `app`, `wechat` or `sms`: which webhook to load |
//! | `BENCH_URL` | required | full URL of `/app/{id}/messages`, `/wechat/{id}` or `/sms/{id}/inbound` |
//! | `BENCH_KEY` | required for app | the app connector's signing key |
//! | `BENCH_WECHAT_TOKEN` | required for wechat | the account's server-config Token |
//! | `BENCH_WECHAT_AES_KEY` | required for wechat | the account's EncodingAESKey (43 characters) |
//! | `BENCH_WECHAT_APP_ID` | required for wechat | the account's AppID, sealed into every frame |
//! | `BENCH_SMS_TOKEN` | required for sms | the Twilio auth token |
//! | `BENCH_SMS_PUBLIC_URL` | required for sms | the connector's configured `public_url` |
//! | `BENCH_N` | 50000 | messages to post |
//! | `BENCH_CONCURRENCY` | 64 | closed-loop workers; open-loop: most requests in flight |
//! | `BENCH_RATE` | 0 | messages per second; above 0 switches to open loop |
//! | `BENCH_USERS` | 1000 | distinct user ids the messages are spread over |
//! | `BENCH_RUN_ID` | process id and time | prefix of every `message_id`, so runs never collide |
//! | `BENCH_MAX_SECS` | 600 | stop starting new requests after this long |
//! | `BENCH_CLK_TCK` | 100 | kernel clock ticks per second, for this process's CPU time |
//!
//! Prints a human summary on stderr and one `RESULT key=value ...` line on stdout.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use switchboard_connector_wechat::crypto::{AesKey, signature as wechat_signature};
use switchboard_sdk::signature::twilio;

/// Which webhook is loaded, with what it needs to sign.
enum Channel {
    /// Signed JSON to `/app/{id}/messages`.
    App { key: Vec<u8> },
    /// Safe-mode (AES) pushes to `/wechat/{id}`.
    Wechat {
        token: String,
        key: AesKey,
        app_id: String,
    },
    /// Twilio-signed form posts to `/sms/{id}/inbound`.
    Sms { token: Vec<u8>, public_url: String },
}

impl Channel {
    fn from_env() -> Result<Channel, String> {
        match env_or("BENCH_CHANNEL", "app".to_owned())?.as_str() {
            "app" => Ok(Channel::App {
                key: required("BENCH_KEY")?.into_bytes(),
            }),
            "wechat" => Ok(Channel::Wechat {
                token: required("BENCH_WECHAT_TOKEN")?,
                key: AesKey::from_encoding_aes_key(&required("BENCH_WECHAT_AES_KEY")?)
                    .map_err(|e| format!("BENCH_WECHAT_AES_KEY: {e}"))?,
                app_id: required("BENCH_WECHAT_APP_ID")?,
            }),
            "sms" => Ok(Channel::Sms {
                token: required("BENCH_SMS_TOKEN")?.into_bytes(),
                public_url: required("BENCH_SMS_PUBLIC_URL")?
                    .trim_end_matches('/')
                    .to_owned(),
            }),
            other => Err(format!(
                "BENCH_CHANNEL must be app, wechat or sms, not {other:?}"
            )),
        }
    }
}

/// What one run is asked to do.
struct Settings {
    url: String,
    channel: Channel,
    n: usize,
    concurrency: usize,
    rate: f64,
    users: usize,
    run_id: String,
    max_secs: u64,
    clk_tck: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}: cannot parse {value:?}")),
        _ => Ok(default),
    }
}

fn required(name: &str) -> Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{name} is required"))
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let default_run = format!(
            "bench-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        let settings = Settings {
            url: required("BENCH_URL")?,
            channel: Channel::from_env()?,
            n: env_or("BENCH_N", 50_000)?,
            concurrency: env_or("BENCH_CONCURRENCY", 64)?,
            rate: env_or("BENCH_RATE", 0.0)?,
            users: env_or("BENCH_USERS", 1000)?,
            run_id: env_or("BENCH_RUN_ID", default_run)?,
            max_secs: env_or("BENCH_MAX_SECS", 600)?,
            clk_tck: env_or("BENCH_CLK_TCK", 100.0)?,
        };
        if settings.concurrency == 0 || settings.users == 0 {
            return Err("BENCH_CONCURRENCY and BENCH_USERS must be at least 1".into());
        }
        if !settings.rate.is_finite() || settings.rate < 0.0 {
            return Err("BENCH_RATE must be a non-negative number".into());
        }
        Ok(settings)
    }
}

/// The JSON body of message `i`; the wording hits the "where-is-my-parcel" routing rule of
/// the example config, like a typical customer question.
fn body(settings: &Settings, i: usize) -> String {
    let user = i % settings.users;
    format!(
        concat!(
            r#"{{"message_id":"{run}-{i}","user_id":"u-{user}","display_name":"Bench User {user}","#,
            r#""phone":"+86138{user:08}","customer_id":"c-{user}","#,
            r#""content":{{"type":"text","text":"Where is my parcel SF{i:010}? It was due yesterday and the tracking page has not changed since."}}}}"#
        ),
        run = settings.run_id,
        i = i,
        user = user,
    )
}

/// The customer's question of message `i`, the same words in every channel.
fn question(i: usize) -> String {
    format!(
        "Where is my parcel SF{i:010}? It was due yesterday and the tracking page has not changed since."
    )
}

fn unix_now() -> Result<u64, String> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|e| format!("clock before 1970: {e}"))
}

/// A number unique to this run, so `MsgId`s of different runs never meet in the dedupe store.
fn run_number(run_id: &str) -> u64 {
    // FNV-1a: stable and dependency-free; collisions only matter within one daemon's day.
    run_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) % 1_000_000_000
}

/// A WeChat safe-mode push of message `i`, as WeChat sends it: the query string (with
/// `signature` and `msg_signature`) and the outer XML carrying only `Encrypt`.
fn wechat_push(
    settings: &Settings,
    token: &str,
    key: &AesKey,
    app_id: &str,
    i: usize,
) -> Result<(String, String), String> {
    let user = i % settings.users;
    let now = unix_now()?;
    let msg_id = run_number(&settings.run_id) * 1_000_000_000 + i as u64;
    let plain = format!(
        "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[o-bench-{user}]]></FromUserName><CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{}]]></Content><MsgId>{msg_id}</MsgId></xml>",
        question(i)
    );
    // The random prefix only has to differ between messages; it is not secret here.
    let mut random = [0_u8; 16];
    random[..8].copy_from_slice(&msg_id.to_le_bytes());
    let encrypt = key.encrypt(&random, &plain, app_id);
    let timestamp = now.to_string();
    let nonce = format!("{}", msg_id % 10_000_000_000);
    let signature = wechat_signature(&[token, &timestamp, &nonce]);
    let msg_signature = wechat_signature(&[token, &timestamp, &nonce, &encrypt]);
    let query = format!(
        "signature={signature}&timestamp={timestamp}&nonce={nonce}&openid=o-bench-{user}&encrypt_type=aes&msg_signature={msg_signature}"
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    Ok((query, body))
}

/// A Twilio inbound-SMS webhook of message `i`: the form body and its `X-Twilio-Signature`
/// over the connector's public URL.
fn sms_form(settings: &Settings, token: &[u8], public_url: &str, i: usize) -> (String, String) {
    let user = i % settings.users;
    let params: Vec<(String, String)> = vec![
        ("MessageSid".into(), format!("SM{}x{i}", settings.run_id)),
        (
            "AccountSid".into(),
            "AC00000000000000000000000000000001".into(),
        ),
        ("From".into(), format!("+86138{user:08}")),
        ("To".into(), "+14155550100".into()),
        ("Body".into(), question(i)),
        ("NumMedia".into(), "0".into()),
        ("NumSegments".into(), "1".into()),
    ];
    let signature = twilio::compute(token, &format!("{public_url}/inbound"), &params);
    let body = params
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={}",
                utf8_percent_encode(name, NON_ALPHANUMERIC),
                utf8_percent_encode(value, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    (body, signature)
}

/// The two signature headers for `body`, signed now.
fn sign(key: &[u8], body: &str) -> Result<(String, String), String> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("clock before 1970: {e}"))?
        .as_secs()
        .to_string();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).map_err(|e| format!("signing key refused: {e}"))?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Ok((timestamp, hex::encode(mac.finalize().into_bytes())))
}

/// How one request ended: an HTTP status (200 split by `duplicate`, and for WeChat by
/// whether the answer was `success`) or a transport error.
fn outcome_label(channel: &Channel, status: u16, answer: &[u8]) -> String {
    if status == 200 && contains(answer, br#""duplicate":true"#) {
        "200-duplicate".to_owned()
    } else if status == 200 && matches!(channel, Channel::Wechat { .. }) && answer != b"success" {
        "200-not-success".to_owned()
    } else {
        status.to_string()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The request of message `i` in the run's channel, signed now.
fn request(
    client: &reqwest::Client,
    settings: &Settings,
    i: usize,
) -> Result<reqwest::RequestBuilder, String> {
    Ok(match &settings.channel {
        Channel::App { key } => {
            let body = body(settings, i);
            let (timestamp, signature) = sign(key, &body)?;
            client
                .post(&settings.url)
                .header("content-type", "application/json")
                .header("x-switchboard-timestamp", timestamp)
                .header("x-switchboard-signature", signature)
                .body(body)
        }
        Channel::Wechat { token, key, app_id } => {
            let (query, body) = wechat_push(settings, token, key, app_id, i)?;
            client
                .post(format!("{}?{query}", settings.url))
                .header("content-type", "text/xml")
                .body(body)
        }
        Channel::Sms { token, public_url } => {
            let (body, signature) = sms_form(settings, token, public_url, i);
            client
                .post(&settings.url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header(twilio::HEADER, signature)
                .body(body)
        }
    })
}

/// Posts message `i`; returns its outcome label.
async fn post(client: &reqwest::Client, settings: &Settings, i: usize) -> String {
    let request = match request(client, settings, i) {
        Ok(request) => request,
        Err(err) => return format!("sign-error({err})"),
    };
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(answer) => outcome_label(&settings.channel, status, &answer),
                Err(_) => "io-body".to_owned(),
            }
        }
        Err(err) if err.is_timeout() => "io-timeout".to_owned(),
        Err(err) if err.is_connect() => "io-connect".to_owned(),
        Err(_) => "io-other".to_owned(),
    }
}

/// Latencies (microseconds) and outcome counts gathered by the workers.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    outcomes: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, outcome: String, latency: Duration) {
        self.latencies_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        *self.outcomes.entry(outcome).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (outcome, count) in other.outcomes {
            *self.outcomes.entry(outcome).or_default() += count;
        }
    }
}

/// Closed loop: `concurrency` workers, each sending its next message once answered.
async fn closed_loop(client: reqwest::Client, settings: Arc<Settings>, deadline: Instant) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..settings.concurrency {
        let client = client.clone();
        let settings = settings.clone();
        let next = next.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= settings.n || Instant::now() >= deadline {
                    return tally;
                }
                let started = Instant::now();
                let outcome = post(&client, &settings, i).await;
                tally.record(outcome, started.elapsed());
            }
        });
    }
    let mut total = Tally::default();
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(tally) => total.merge(tally),
            Err(err) => eprintln!("worker failed: {err}"),
        }
    }
    total
}

/// Open loop: message `i` is due at `start + i / rate`; latency counts from that moment.
async fn open_loop(client: reqwest::Client, settings: Arc<Settings>, deadline: Instant) -> Tally {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(settings.concurrency));
    let results = Arc::new(Mutex::new(Tally::default()));
    let mut requests = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    for i in 0..settings.n {
        let due = start + Duration::from_secs_f64(i as f64 / settings.rate);
        tokio::time::sleep_until(due).await;
        if Instant::now() >= deadline {
            break;
        }
        // Waiting for a permit delays the send but not the clock it is measured from.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        let settings = settings.clone();
        let results = results.clone();
        requests.spawn(async move {
            let outcome = post(&client, &settings, i).await;
            let latency = due.elapsed();
            drop(permit);
            results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(outcome, latency);
        });
        // Reap finished tasks so the set stays small.
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
    std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()))
}

/// This process's user+system CPU seconds, from `/proc/self/stat`.
fn own_cpu_seconds(clk_tck: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

async fn run(settings: Settings) -> Result<bool, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(settings.concurrency.max(1))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let settings = Arc::new(settings);
    let deadline = Instant::now() + Duration::from_secs(settings.max_secs);
    let open = settings.rate > 0.0;
    let cpu_before = own_cpu_seconds(settings.clk_tck);
    let started = Instant::now();
    let mut tally = if open {
        open_loop(client, settings.clone(), deadline).await
    } else {
        closed_loop(client, settings.clone(), deadline).await
    };
    let elapsed = started.elapsed().as_secs_f64();
    let client_cpu = match (cpu_before, own_cpu_seconds(settings.clk_tck)) {
        (Some(before), Some(after)) => format!("{:.2}", after - before),
        _ => "na".to_owned(),
    };

    tally.latencies_us.sort_unstable();
    let sent = tally.latencies_us.len();
    let ok = tally.outcomes.get("200").copied().unwrap_or(0);
    let failed = sent as u64 - ok;
    let rate = ok as f64 / elapsed;
    let outcomes = tally
        .outcomes
        .iter()
        .map(|(outcome, count)| format!("{outcome}:{count}"))
        .collect::<Vec<_>>()
        .join(",");
    let lat = &tally.latencies_us;
    let (p50, p90, p99, max) = (
        percentile(lat, 50.0),
        percentile(lat, 90.0),
        percentile(lat, 99.0),
        lat.last().copied().unwrap_or(0),
    );
    eprintln!(
        "{} loop: {sent} sent, {ok} accepted, {failed} not, in {elapsed:.2} s = {rate:.0} msg/s; \
         latency ms p50 {} p90 {} p99 {} max {}; outcomes {outcomes}; client cpu {client_cpu} s",
        if open { "open" } else { "closed" },
        ms(p50),
        ms(p90),
        ms(p99),
        ms(max),
    );
    println!(
        "RESULT channel={} mode={} n={} sent={sent} ok={ok} failed={failed} elapsed_s={elapsed:.3} \
         rate={rate:.1} target_rate={:.1} concurrency={} p50_ms={} p90_ms={} p99_ms={} max_ms={} \
         client_cpu_s={client_cpu} outcomes={}",
        match settings.channel {
            Channel::App { .. } => "app",
            Channel::Wechat { .. } => "wechat",
            Channel::Sms { .. } => "sms",
        },
        if open { "open" } else { "closed" },
        settings.n,
        settings.rate,
        settings.concurrency,
        ms(p50),
        ms(p90),
        ms(p99),
        ms(max),
        if outcomes.is_empty() {
            "none"
        } else {
            &outcomes
        },
    );
    Ok(sent == settings.n && failed == 0)
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("app_load: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("app_load: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        // The numbers are printed either way; the script decides what a failure means.
        Ok(false) => ExitCode::from(3),
        Err(err) => {
            eprintln!("app_load: {err}");
            ExitCode::from(1)
        }
    }
}
