//! The Redis fan-out reaches subscribers on another instance (real Redis).

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::store::{RedisFanout, RedisKv};
use switchboard_sdk::Fanout;
use tokio_util::sync::CancellationToken;

const URL: &str = "redis://127.0.0.1:6379/0";

fn instance(prefix: &str) -> Arc<RedisFanout> {
    let kv = Arc::new(RedisKv::new(URL, prefix).unwrap());
    Arc::new(RedisFanout::new(URL, prefix, kv).unwrap())
}

#[tokio::test]
async fn a_publish_on_one_instance_reaches_subscribers_on_another() {
    let prefix = format!("sbtest-fanout-{}:", ulid::Ulid::new());
    let (a, b) = (instance(&prefix), instance(&prefix));
    let stop = CancellationToken::new();
    for fanout in [&a, &b] {
        let (fanout, stop) = (fanout.clone(), stop.clone());
        tokio::spawn(async move { fanout.run(stop).await });
    }
    let mut on_b = b.subscribe("webchat:visitor-1");
    let mut unrelated = b.subscribe("webchat:visitor-2");

    // The subscription is made in the background; publish until it is in place.
    let start = Instant::now();
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let got = loop {
        poll.tick().await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing reached instance b"
        );
        a.publish("webchat:visitor-1", b"reply".to_vec())
            .await
            .unwrap();
        if let Ok(message) = on_b.try_recv() {
            break message;
        }
    };
    assert_eq!(got, b"reply");
    assert!(unrelated.try_recv().is_err(), "other topics hear nothing");
    stop.cancel();
}
