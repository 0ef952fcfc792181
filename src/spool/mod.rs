//! Durable local spool: where accepted messages wait while RabbitMQ is away, and where
//! per-conversation sequence numbers live when Redis is not configured.
//!
//! # Durability promise
//!
//! When [`LocalStore::append`] returns `Ok`, the records are on disk: the write transaction
//! that holds them was committed with [`redb::Durability::Immediate`], which fsyncs before
//! the commit returns. They survive `kill -9`, a crash of the daemon and a power cut (as far
//! as the disk honours fsync). The same holds for [`LocalStore::remove`] (a removed record
//! does not come back after a crash) and [`LocalStore::next_sequence`] (a number handed out
//! is never handed out again). So the daemon may answer a channel with HTTP 200 as soon as
//! `append` returned, and it must not before.
//!
//! The drainer peeks, publishes, waits for the broker's confirm, then removes. A crash
//! between confirm and remove publishes that record again on the next start: delivery out
//! of the spool is at least once, and consumers must tolerate a repeated `message_id`.
//!
//! # Group commit
//!
//! Every write goes through one writer thread fed by a channel. The writer takes the first
//! request, drains every other request already queued, applies them all in one redb write
//! transaction, commits once (one fsync) and only then answers every caller. An fsync costs
//! the same for one record as for a hundred, so throughput grows with the number of
//! concurrent callers instead of being capped at one fsync per message. A request that
//! cannot be applied on its own terms (the spool would overflow `max_bytes`) is refused
//! before anything of it is written and does not disturb the others; if the commit itself
//! fails, every caller of that batch gets the error and nothing of the batch is kept.
//! Dropping an `append` future does not cancel the write once it was queued.
//!
//! # Why redb
//!
//! redb is a crash-safe embedded B-tree store written in pure Rust: copy-on-write pages,
//! checksummed commits and recovery on open, so a torn write after `kill -9` leaves the
//! last committed state, not a half-written record. A home-made append-only log would need
//! its own framing, checksums, truncation of torn tails, compaction and fsync discipline,
//! each a place for a silent loss; SQLite or RocksDB would pull in a C toolchain.
//!
//! # Layout and accounting
//!
//! Tables: `spool` (`u64` id -> record JSON as bytes), `spooled_at` (id -> unix millis, so
//! the age of the oldest record is known without parsing it), `sequences`
//! (conversation id -> last number handed out) and `meta` (next id and stored bytes). The
//! record value is stored as bytes rather than `&str` because redb decodes `&str` values
//! with a panicking UTF-8 check; a damaged record must surface as
//! [`SpoolError::Corrupt`], never as a panic. `max_bytes` bounds the sum of the stored
//! record sizes (their JSON length), not the file size: redb reuses freed pages but does
//! not shrink the file, and adds its own overhead. Sequence entries are never pruned.

mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use writer::{EncodedRecord, Pending, Request};

/// Spooled records: id -> record JSON (UTF-8 bytes).
const SPOOL: TableDefinition<u64, &[u8]> = TableDefinition::new("spool");
/// Id -> `spooled_at_ms` of the record, kept apart so the oldest age survives a bad record.
const SPOOLED_AT: TableDefinition<u64, u64> = TableDefinition::new("spooled_at");
/// Conversation id -> last sequence number handed out.
const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("sequences");
/// Bookkeeping counters, see the `META_*` keys.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Next record id; kept because the spool may be empty when the daemon stops.
const META_NEXT_ID: &str = "next_id";
/// Sum of stored record sizes, so opening does not have to read every record.
const META_BYTES: &str = "bytes";
/// redb's page cache; its default (1 GiB) is sized for a database, not a queue that is
/// written once and read once.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// One message waiting for the broker, exactly as it will be published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolRecord {
    /// Exchange to publish to.
    pub exchange: String,
    /// Routing key to publish with.
    pub routing_key: String,
    /// AMQP `message_id` (the envelope id).
    pub message_id: String,
    /// AMQP priority, when the route sets one.
    pub priority: Option<u8>,
    /// AMQP string headers (`x-schema`, `x-channel`, ...).
    pub headers: Vec<(String, String)>,
    /// Message body, always JSON text.
    pub body: String,
    /// When the record was spooled, unix milliseconds.
    pub spooled_at_ms: u64,
}

/// A snapshot of the spool's committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Number of records waiting.
    pub depth: u64,
    /// Sum of the stored sizes of the waiting records.
    pub bytes: u64,
    /// `spooled_at_ms` of the record that `peek` returns first, if any.
    pub oldest_spooled_at_ms: Option<u64>,
}

/// Errors of the local store.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The records would take the spool past its byte budget; nothing was written.
    #[error("spool is full: {bytes} of {max_bytes} bytes in use")]
    Full {
        /// Bytes in use when the request was refused.
        bytes: u64,
        /// The configured budget.
        max_bytes: u64,
    },
    /// The file system refused something (creating the directory, starting the writer).
    #[error("spool i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// redb reported an error; the text is redb's.
    #[error("spool storage error: {0}")]
    Storage(String),
    /// A stored record could not be decoded; remove it (after dead-lettering it).
    #[error("spool record {id} is corrupt: {reason}")]
    Corrupt {
        /// Id of the undecodable record.
        id: u64,
        /// Why it could not be decoded.
        reason: String,
    },
    /// The store was closed; no more writes are accepted.
    #[error("spool is closed")]
    Closed,
}

macro_rules! storage_error_from {
    ($($ty:ty),* $(,)?) => {
        $(impl From<$ty> for SpoolError {
            fn from(err: $ty) -> Self {
                SpoolError::Storage(err.to_string())
            }
        })*
    };
}

storage_error_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
);

/// State shared between the handles and the writer thread.
struct Shared {
    /// Committed state, replaced by the writer after each commit.
    stats: Mutex<SpoolStats>,
    /// Write transactions committed since open.
    commits: AtomicU64,
    /// Budget for the sum of stored record sizes.
    max_bytes: u64,
}

impl Shared {
    fn stats(&self) -> SpoolStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a commit and the state it left.
    fn publish(&self, stats: SpoolStats) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = stats;
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

struct Inner {
    db: Arc<Database>,
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    path: PathBuf,
}

/// Handle to the durable local store; cheap to clone, all clones share one writer.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("path", &self.inner.path)
            .field("max_bytes", &self.inner.shared.max_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

impl LocalStore {
    /// Opens (or creates) the spool file at `path`, recovering its state from disk.
    ///
    /// Blocks while redb checks the file; after a crash that is a full repair walk, which
    /// takes time proportional to the file size.
    pub fn open(path: &Path, max_bytes: u64) -> Result<LocalStore, SpoolError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let db = Arc::new(
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(path)?,
        );
        let state = writer::recover(&db)?;
        let shared = Arc::new(Shared {
            stats: Mutex::new(state.stats()),
            commits: AtomicU64::new(0),
            max_bytes,
        });
        let (requests, queue) = mpsc::channel();
        let writer_db = Arc::clone(&db);
        let writer_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer::run(writer_db, queue, writer_shared, state))?;
        tracing::info!(
            path = %path.display(),
            depth = state.depth,
            bytes = state.bytes,
            max_bytes,
            "spool opened"
        );
        Ok(LocalStore {
            inner: Arc::new(Inner {
                db,
                requests,
                shared,
                path: path.to_path_buf(),
            }),
        })
    }

    /// Durably stores `records` and returns their ids, in order; all of them or none.
    ///
    /// Ids increase strictly in append order, also across restarts. Refused with
    /// [`SpoolError::Full`] when the records would take the spool past `max_bytes`.
    pub async fn append(&self, records: Vec<SpoolRecord>) -> Result<Vec<u64>, SpoolError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let records = records
            .iter()
            .map(EncodedRecord::encode)
            .collect::<Result<Vec<_>, _>>()?;
        self.call(|reply| Request::Append { records, reply }).await
    }

    /// Whether `approx_bytes` more would fit now; a hint, `append` decides.
    pub fn would_fit(&self, approx_bytes: u64) -> bool {
        self.inner
            .shared
            .stats()
            .bytes
            .checked_add(approx_bytes)
            .is_some_and(|total| total <= self.inner.shared.max_bytes)
    }

    /// Returns up to `max` records, oldest first, without removing them.
    ///
    /// Reads the disk, so it blocks: call it from `spawn_blocking`. A record that cannot be
    /// decoded ends the list before it; when it is the very first one the call returns
    /// [`SpoolError::Corrupt`] with its id, so the caller can dead-letter it (see
    /// [`LocalStore::read_raw`]) and [`LocalStore::remove`] it.
    pub fn peek(&self, max: usize) -> Result<Vec<(u64, SpoolRecord)>, SpoolError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(SPOOL)?;
        let mut out = Vec::with_capacity(max.min(1024));
        for entry in table.iter()?.take(max) {
            let (key, value) = entry?;
            let id = key.value();
            match serde_json::from_slice::<SpoolRecord>(value.value()) {
                Ok(record) => out.push((id, record)),
                Err(err) if out.is_empty() => {
                    tracing::warn!(id, error = %err, "corrupt spool record");
                    return Err(SpoolError::Corrupt {
                        id,
                        reason: err.to_string(),
                    });
                }
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Returns the stored bytes of record `id`, undecoded; for dead-lettering a corrupt one.
    ///
    /// Blocks like [`LocalStore::peek`].
    pub fn read_raw(&self, id: u64) -> Result<Option<Vec<u8>>, SpoolError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(SPOOL)?;
        Ok(table.get(id)?.map(|value| value.value().to_vec()))
    }

    /// Durably removes the records with these ids; ids not in the spool are ignored.
    pub async fn remove(&self, ids: Vec<u64>) -> Result<(), SpoolError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.call(|reply| Request::Remove { ids, reply }).await
    }

    /// Hands out the next sequence number of a conversation: 1, 2, 3, ... without gaps.
    ///
    /// Durable when it returns, so a number is never handed out twice, even after a crash.
    pub async fn next_sequence(&self, conversation_id: &str) -> Result<u64, SpoolError> {
        let conversation_id = conversation_id.to_owned();
        self.call(|reply| Request::NextSequence {
            conversation_id,
            reply,
        })
        .await
    }

    /// The committed state, from memory.
    pub fn stats(&self) -> SpoolStats {
        self.inner.shared.stats()
    }

    /// The byte budget this store was opened with.
    pub fn max_bytes(&self) -> u64 {
        self.inner.shared.max_bytes
    }

    /// Number of write transactions (fsyncs) committed since open.
    pub fn commit_count(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }

    /// Finishes the writes queued so far and stops the writer.
    ///
    /// Requests queued behind the close, and later writes through any clone, fail with
    /// [`SpoolError::Closed`]. The file is released when the last clone is dropped.
    pub async fn close(self) -> Result<(), SpoolError> {
        let (done, finished) = oneshot::channel();
        if self
            .inner
            .requests
            .send(Request::Shutdown { done })
            .is_err()
        {
            // Another clone closed it already.
            return Ok(());
        }
        finished
            .await
            .map_err(|_| SpoolError::Storage("spool writer stopped unexpectedly".into()))?;
        tracing::info!(path = %self.inner.path.display(), "spool closed");
        Ok(())
    }

    async fn call<T>(&self, request: impl FnOnce(Pending<T>) -> Request) -> Result<T, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(request(Pending::new(reply)))
            .map_err(|_| SpoolError::Closed)?;
        // A dropped reply means the writer stopped first (a close was queued ahead of this
        // request), so the request was not applied.
        answer.await.map_err(|_| SpoolError::Closed)?
    }
}
