use super::*;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "switchboard-spool-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("spool.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A record whose size does not depend on `n` (fixed-width ids), so budgets can be exact.
fn record(n: u64, body_len: usize) -> SpoolRecord {
    SpoolRecord {
        exchange: "switchboard.inbound".into(),
        routing_key: "billing.gold".into(),
        message_id: format!("01J{n:023}"),
        priority: Some(5),
        headers: vec![
            ("x-schema".into(), "switchboard.envelope.v1".into()),
            ("x-channel".into(), "wechat".into()),
        ],
        body: format!("{{\"text\":\"{}\"}}", "x".repeat(body_len)),
        spooled_at_ms: 1_700_000_000_000 + n,
    }
}

fn stored_size(record: &SpoolRecord) -> u64 {
    serde_json::to_vec(record).expect("encode").len() as u64
}

const BIG: u64 = 1 << 40;

#[tokio::test]
async fn append_peek_remove_keep_order() {
    let dir = TempDir::new("order");
    // A nested path also checks that `open` creates the parent directories.
    let store = LocalStore::open(&dir.0.join("a/b/spool.redb"), BIG).expect("open");
    assert_eq!(store.stats(), SpoolStats::default());

    let first = store
        .append(vec![record(1, 10), record(2, 20)])
        .await
        .expect("append");
    let second = store.append(vec![record(3, 30)]).await.expect("append");
    let ids: Vec<u64> = first.iter().chain(&second).copied().collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");

    let all = store.peek(10).expect("peek");
    assert_eq!(
        all,
        vec![
            (ids[0], record(1, 10)),
            (ids[1], record(2, 20)),
            (ids[2], record(3, 30))
        ]
    );
    assert_eq!(store.peek(2).expect("peek").len(), 2);
    assert!(store.peek(0).expect("peek").is_empty());
    let bytes: u64 = [record(1, 10), record(2, 20), record(3, 30)]
        .iter()
        .map(stored_size)
        .sum();
    assert_eq!(
        store.stats(),
        SpoolStats {
            depth: 3,
            bytes,
            oldest_spooled_at_ms: Some(record(1, 0).spooled_at_ms),
        }
    );

    // Removing the oldest (plus an id that never existed) moves `oldest` on.
    store.remove(vec![ids[0], 999_999]).await.expect("remove");
    assert_eq!(
        store.peek(10).expect("peek"),
        vec![(ids[1], record(2, 20)), (ids[2], record(3, 30))]
    );
    let stats = store.stats();
    assert_eq!(stats.depth, 2);
    assert_eq!(stats.bytes, bytes - stored_size(&record(1, 10)));
    assert_eq!(stats.oldest_spooled_at_ms, Some(record(2, 0).spooled_at_ms));

    store.remove(vec![ids[2], ids[1]]).await.expect("remove");
    assert!(store.peek(10).expect("peek").is_empty());
    assert_eq!(store.stats(), SpoolStats::default());
    assert_eq!(
        store.append(Vec::new()).await.expect("empty"),
        Vec::<u64>::new()
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn ids_and_counts_survive_reopen() {
    let dir = TempDir::new("reopen");
    let store = LocalStore::open(&dir.file(), BIG).expect("open");
    let gone = store
        .append(vec![record(1, 5), record(2, 5)])
        .await
        .expect("append");
    store.remove(gone.clone()).await.expect("remove");
    let kept = store
        .append(vec![record(3, 50), record(4, 60)])
        .await
        .expect("append");
    let before = store.stats();
    store.close().await.expect("close");

    let store = LocalStore::open(&dir.file(), BIG).expect("reopen");
    assert_eq!(store.stats(), before, "recovered depth/bytes/oldest");
    assert_eq!(
        store.peek(10).expect("peek"),
        vec![(kept[0], record(3, 50)), (kept[1], record(4, 60))]
    );
    store.remove(kept.clone()).await.expect("remove");
    // Appended and removed within one session: only the writer's bookkeeping remembers it.
    let last = store.append(vec![record(5, 5)]).await.expect("append");
    assert!(last[0] > kept[1], "{last:?} after {kept:?}");
    store.remove(last.clone()).await.expect("remove");
    store.close().await.expect("close");

    // Empty spool on disk: the next id must still come after every id ever handed out.
    let store = LocalStore::open(&dir.file(), BIG).expect("reopen empty");
    assert_eq!(store.stats(), SpoolStats::default());
    let next = store.append(vec![record(6, 5)]).await.expect("append");
    assert!(next[0] > last[0], "{next:?} after {last:?}");
    store.close().await.expect("close");
}

#[tokio::test]
async fn sequences_count_per_conversation_and_survive_reopen() {
    let dir = TempDir::new("seq");
    let store = LocalStore::open(&dir.file(), BIG).expect("open");
    let mut got = Vec::new();
    for conversation in ["a", "b", "a", "a", "b"] {
        got.push((
            conversation,
            store.next_sequence(conversation).await.expect("seq"),
        ));
    }
    assert_eq!(got, vec![("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)]);
    store.close().await.expect("close");

    let store = LocalStore::open(&dir.file(), BIG).expect("reopen");
    let cases = [("a", 4), ("b", 3), ("c", 1), ("a", 5)];
    for (conversation, expected) in cases {
        assert_eq!(
            store.next_sequence(conversation).await.expect("seq"),
            expected,
            "{conversation}"
        );
    }
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sequences_have_no_gaps_or_repeats() {
    let dir = TempDir::new("seqconc");
    let store = LocalStore::open(&dir.file(), BIG).expect("open");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.next_sequence("busy").await })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for task in tasks {
        seen.insert(task.await.expect("join").expect("seq"));
    }
    assert_eq!(seen, (1..=100).collect::<BTreeSet<u64>>());
    store.close().await.expect("close");
}

#[tokio::test]
async fn full_writes_nothing_and_remove_frees_space() {
    let dir = TempDir::new("full");
    let size = stored_size(&record(1, 100));
    let store = LocalStore::open(&dir.file(), 2 * size).expect("open");
    assert!(store.would_fit(2 * size));
    assert!(!store.would_fit(2 * size + 1));
    assert!(!store.would_fit(u64::MAX));

    let ids = store
        .append(vec![record(1, 100), record(2, 100)])
        .await
        .expect("fits exactly");
    let full = store.stats();
    assert!(!store.would_fit(1));
    assert!(store.would_fit(0));

    match store.append(vec![record(3, 100)]).await {
        Err(SpoolError::Full { bytes, max_bytes }) => {
            assert_eq!((bytes, max_bytes), (2 * size, 2 * size));
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(store.stats(), full);
    assert_eq!(store.peek(10).expect("peek").len(), 2);

    store.remove(vec![ids[0]]).await.expect("remove");
    assert!(store.would_fit(size));
    // Two records where only one fits: all or nothing.
    let err = store
        .append(vec![record(4, 100), record(5, 100)])
        .await
        .expect_err("over budget");
    assert!(matches!(err, SpoolError::Full { .. }), "{err:?}");
    assert_eq!(store.stats().depth, 1);

    let again = store.append(vec![record(6, 100)]).await.expect("fits now");
    // Refused appends do not use up ids.
    assert_eq!(again, vec![ids[1] + 1]);
    assert_eq!(
        store
            .peek(10)
            .expect("peek")
            .into_iter()
            .map(|(id, r)| (id, r.message_id))
            .collect::<Vec<_>>(),
        vec![
            (ids[1], record(2, 0).message_id),
            (again[0], record(6, 0).message_id)
        ]
    );
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed() {
    let dir = TempDir::new("group");
    let store = LocalStore::open(&dir.file(), BIG).expect("open");
    let commits_before = store.commit_count();
    let start = Arc::new(tokio::sync::Barrier::new(500));
    let tasks: Vec<_> = (0..500u64)
        .map(|n| {
            let store = store.clone();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                store.append(vec![record(n, 64)]).await
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for task in tasks {
        let got = task.await.expect("join").expect("append");
        assert_eq!(got.len(), 1);
        ids.insert(got[0]);
    }
    assert_eq!(ids.len(), 500, "ids are unique");
    assert_eq!(store.stats().depth, 500);
    let commits = store.commit_count() - commits_before;
    assert!(commits < 500, "{commits} commits for 500 appends");
    store.close().await.expect("close");
}

#[tokio::test]
async fn corrupt_record_is_reported_and_removable() {
    let dir = TempDir::new("corrupt");
    let store = LocalStore::open(&dir.file(), BIG).expect("open");
    let ids = store
        .append(vec![record(1, 10), record(2, 10), record(3, 10)])
        .await
        .expect("append");
    store.close().await.expect("close");

    // Damage record 2 behind the store's back, keeping its length so accounting still holds.
    let garbage = {
        let db = Database::create(dir.file()).expect("raw open");
        let txn = db.begin_write().expect("txn");
        let garbage = {
            let mut table = txn.open_table(SPOOL).expect("table");
            let len = table
                .get(ids[1])
                .expect("get")
                .expect("present")
                .value()
                .len();
            let mut garbage = vec![b'#'; len];
            garbage[0] = 0xff;
            table.insert(ids[1], garbage.as_slice()).expect("insert");
            garbage
        };
        txn.commit().expect("commit");
        garbage
    };

    let store = LocalStore::open(&dir.file(), BIG).expect("reopen");
    // Good records before the bad one still come out.
    assert_eq!(store.peek(10).expect("peek"), vec![(ids[0], record(1, 10))]);
    store.remove(vec![ids[0]]).await.expect("remove");
    match store.peek(10) {
        Err(SpoolError::Corrupt { id, reason }) => {
            assert_eq!(id, ids[1]);
            assert!(!reason.is_empty());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(store.read_raw(ids[1]).expect("raw"), Some(garbage));
    store.remove(vec![ids[1]]).await.expect("remove corrupt");
    assert_eq!(store.peek(10).expect("peek"), vec![(ids[2], record(3, 10))]);
    assert_eq!(store.stats().bytes, stored_size(&record(3, 10)));
    store.close().await.expect("close");
}

#[tokio::test]
async fn closed_store_refuses_writes_and_releases_the_file() {
    let dir = TempDir::new("closed");
    let store = LocalStore::open(&dir.file(), BIG).expect("open");
    match LocalStore::open(&dir.file(), BIG) {
        Err(SpoolError::Storage(reason)) => assert!(!reason.is_empty()),
        other => panic!("second open of a locked file: {other:?}"),
    }
    let ids = store.append(vec![record(1, 1)]).await.expect("append");
    let other = store.clone();
    store.close().await.expect("close");

    assert!(matches!(
        other.append(vec![record(2, 1)]).await,
        Err(SpoolError::Closed)
    ));
    assert!(matches!(
        other.next_sequence("a").await,
        Err(SpoolError::Closed)
    ));
    assert!(matches!(other.remove(ids).await, Err(SpoolError::Closed)));
    assert_eq!(other.stats().depth, 1);
    other.close().await.expect("second close");

    let store = LocalStore::open(&dir.file(), BIG).expect("reopen after close");
    assert_eq!(store.stats().depth, 1);
    store.close().await.expect("close");
}

#[test]
fn store_handle_is_send_sync_and_clone() {
    fn assert_handle<T: Send + Sync + Clone + 'static>() {}
    assert_handle::<LocalStore>();
}

#[test]
fn error_messages_are_lowercase_without_period() {
    let cases = [
        (
            SpoolError::Full {
                bytes: 10,
                max_bytes: 8,
            },
            "spool is full: 10 of 8 bytes in use",
        ),
        (
            SpoolError::Corrupt {
                id: 7,
                reason: "expected value".into(),
            },
            "spool record 7 is corrupt: expected value",
        ),
        (SpoolError::Closed, "spool is closed"),
        (
            SpoolError::Storage("boom".into()),
            "spool storage error: boom",
        ),
    ];
    for (err, expected) in cases {
        assert_eq!(err.to_string(), expected);
    }
}

/// Env var that turns `crash_child_appender` into the child of `kill_9_loses_nothing_acknowledged`;
/// its value is the spool path.
const CRASH_CHILD_ENV: &str = "SWITCHBOARD_SPOOL_CRASH_CHILD";
const CRASH_CONVERSATION: &str = "crash-conversation";

#[test]
fn crash_child_appender() {
    // Only does something when re-executed by `kill_9_loses_nothing_acknowledged`.
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = LocalStore::open(Path::new(&path), BIG).expect("child open");
        // Several appenders, so the kill lands among group commits with many callers.
        let workers: Vec<_> = (0..8u64)
            .map(|worker| {
                let store = store.clone();
                tokio::spawn(async move {
                    // Bounded, so an orphaned child stops on its own.
                    for n in 0..5_000u64 {
                        let ids = store
                            .append(vec![record(worker * 1_000_000 + n, 200)])
                            .await
                            .expect("child append");
                        let seq = store
                            .next_sequence(CRASH_CONVERSATION)
                            .await
                            .expect("child seq");
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "acked id={} seq={seq}", ids[0]).expect("stdout");
                        out.flush().expect("flush");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("worker");
        }
    });
}

/// Kills the child on every way out of the test, so no orphan keeps writing.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn parse_ack(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("acked id=")?;
    let (id, seq) = rest.split_once(" seq=")?;
    Some((id.parse().ok()?, seq.parse().ok()?))
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    let dir = TempDir::new("crash");
    let module = module_path!();
    let test_name = format!(
        "{}::crash_child_appender",
        module.split_once("::").map_or(module, |(_, rest)| rest)
    );
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("current exe"))
            .args([
                test_name.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_ENV, dir.file())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child"),
    );
    let stdout = child.0.stdout.take().expect("child stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                // A line cut short by the kill has no newline and is not an acknowledgement.
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    if lines_tx.send(line.trim_end().to_owned()).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
    });

    let wanted = 300;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked = Vec::new();
    while acked.len() < wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => acked.extend(parse_ack(&line)),
            Err(err) => panic!("child acknowledged {} appends before {err:?}", acked.len()),
        }
    }
    // SIGKILL while the child is still appending (it stops on its own only after 40 000).
    child.0.kill().expect("kill child");
    let status = child.0.wait().expect("wait child");
    assert!(
        !status.success(),
        "child was killed, not finished: {status:?}"
    );
    reader.join().expect("reader thread");
    acked.extend(lines.try_iter().filter_map(|line| parse_ack(&line)));
    drop(child);

    let store = LocalStore::open(&dir.file(), BIG).expect("open after kill -9");
    let stored = store.peek(usize::MAX).expect("peek after crash");
    let stored_ids: BTreeSet<u64> = stored.iter().map(|(id, _)| *id).collect();
    let missing: Vec<u64> = acked
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !stored_ids.contains(id))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");

    // The recovered counters match what is really on disk.
    let stats = store.stats();
    assert_eq!(stats.depth, stored.len() as u64);
    assert_eq!(
        stats.bytes,
        stored.iter().map(|(_, r)| stored_size(r)).sum::<u64>()
    );
    assert_eq!(
        stats.oldest_spooled_at_ms,
        stored.first().map(|(_, r)| r.spooled_at_ms)
    );

    // Acknowledged sequence numbers were unique, and none is handed out again.
    let seqs: BTreeSet<u64> = acked.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs.len(), acked.len(), "a sequence number repeated");
    let max_id = acked.iter().map(|(id, _)| *id).max().unwrap_or(0);
    let max_seq = seqs.last().copied().unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let next_seq = store.next_sequence(CRASH_CONVERSATION).await.expect("seq");
        assert!(next_seq > max_seq, "{next_seq} after {max_seq}");
        let next_id = store.append(vec![record(0, 1)]).await.expect("append");
        assert!(next_id[0] > max_id, "{next_id:?} after {max_id}");
        store.close().await.expect("close");
    });
}

/// Measures append throughput with 1 KiB bodies; run with `--nocapture` to see the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_throughput_grows_with_concurrency() {
    let dir = TempDir::new("throughput");
    let store = LocalStore::open(&dir.file(), BIG).expect("open");

    let single = 200u64;
    let started = Instant::now();
    for n in 0..single {
        store.append(vec![record(n, 1024)]).await.expect("append");
    }
    let single_rate = single as f64 / started.elapsed().as_secs_f64();

    let appenders = 64u64;
    let each = 32u64;
    let commits_before = store.commit_count();
    let started = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|worker| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..each {
                    store
                        .append(vec![record(worker * 1_000 + n, 1024)])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join");
    }
    let concurrent_rate = (appenders * each) as f64 / started.elapsed().as_secs_f64();
    let commits = store.commit_count() - commits_before;
    eprintln!(
        "spool append, 1 KiB bodies: 1 appender {single_rate:.0} records/s; \
         {appenders} appenders {concurrent_rate:.0} records/s in {commits} commits"
    );
    assert_eq!(store.stats().depth, single + appenders * each);
    assert!(
        commits < appenders * each,
        "{commits} commits for {} appends",
        appenders * each
    );
    store.close().await.expect("close");
}
