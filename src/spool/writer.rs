//! The single writer thread and its group commit.

use std::sync::{Arc, mpsc};

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata};
use tokio::sync::oneshot;

use super::{
    META, META_BYTES, META_NEXT_ID, SEQUENCES, SPOOL, SPOOLED_AT, Shared, SpoolError, SpoolRecord,
    SpoolStats,
};

/// Most requests applied in one transaction, so one huge burst cannot build a transaction
/// whose memory and commit latency are unbounded; the rest go into the next one.
const MAX_BATCH: usize = 1024;

/// A record serialized by the caller, so the writer thread only writes.
pub(super) struct EncodedRecord {
    json: Vec<u8>,
    spooled_at_ms: u64,
}

impl EncodedRecord {
    pub(super) fn encode(record: &SpoolRecord) -> Result<EncodedRecord, SpoolError> {
        let json = serde_json::to_vec(record)
            .map_err(|err| SpoolError::Storage(format!("cannot encode spool record: {err}")))?;
        Ok(EncodedRecord {
            json,
            spooled_at_ms: record.spooled_at_ms,
        })
    }
}

/// A caller waiting for its answer, and the answer once the batch has been applied.
pub(super) struct Pending<T> {
    reply: oneshot::Sender<Result<T, SpoolError>>,
    result: Option<Result<T, SpoolError>>,
}

impl<T> Pending<T> {
    pub(super) fn new(reply: oneshot::Sender<Result<T, SpoolError>>) -> Self {
        Pending {
            reply,
            result: None,
        }
    }

    fn set(&mut self, result: Result<T, SpoolError>) {
        self.result = Some(result);
    }

    fn finish(self) {
        let result = self
            .result
            .unwrap_or_else(|| Err(SpoolError::Storage("request was not applied".into())));
        // The caller may have stopped waiting; the write stands either way.
        let _ = self.reply.send(result);
    }

    fn fail(self, reason: &str) {
        let _ = self.reply.send(Err(SpoolError::Storage(reason.to_owned())));
    }
}

/// One unit of work for the writer.
pub(super) enum Request {
    /// Store these records under fresh ids, all or none.
    Append {
        records: Vec<EncodedRecord>,
        reply: Pending<Vec<u64>>,
    },
    /// Delete these ids; unknown ids are skipped.
    Remove { ids: Vec<u64>, reply: Pending<()> },
    /// Increment and return the conversation's counter.
    NextSequence {
        conversation_id: String,
        reply: Pending<u64>,
    },
    /// Stop after the requests queued before this one.
    Shutdown { done: oneshot::Sender<()> },
}

impl Request {
    fn finish(self) {
        match self {
            Request::Append { reply, .. } => reply.finish(),
            Request::Remove { reply, .. } => reply.finish(),
            Request::NextSequence { reply, .. } => reply.finish(),
            Request::Shutdown { done } => {
                let _ = done.send(());
            }
        }
    }

    fn fail(self, reason: &str) {
        match self {
            Request::Append { reply, .. } => reply.fail(reason),
            Request::Remove { reply, .. } => reply.fail(reason),
            Request::NextSequence { reply, .. } => reply.fail(reason),
            Request::Shutdown { done } => {
                let _ = done.send(());
            }
        }
    }
}

/// The writer's view of the committed state.
#[derive(Debug, Clone, Copy)]
pub(super) struct State {
    /// Id the next appended record gets.
    pub(super) next_id: u64,
    /// Sum of stored record sizes.
    pub(super) bytes: u64,
    /// Number of stored records.
    pub(super) depth: u64,
    /// `spooled_at_ms` of the lowest id.
    pub(super) oldest: Option<u64>,
}

impl State {
    pub(super) fn stats(&self) -> SpoolStats {
        SpoolStats {
            depth: self.depth,
            bytes: self.bytes,
            oldest_spooled_at_ms: self.oldest,
        }
    }
}

/// Creates missing tables and reads the committed state back from the file.
pub(super) fn recover(db: &Database) -> Result<State, SpoolError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let state = {
        let spool = txn.open_table(SPOOL)?;
        let times = txn.open_table(SPOOLED_AT)?;
        txn.open_table(SEQUENCES)?;
        let mut meta = txn.open_table(META)?;

        let depth = spool.len()?;
        let after_last = spool
            .last()?
            .map_or(1, |(id, _)| id.value().saturating_add(1));
        let stored_next = meta.get(META_NEXT_ID)?.map(|v| v.value()).unwrap_or(1);
        let next_id = stored_next.max(after_last);
        let bytes = match meta.get(META_BYTES)?.map(|v| v.value()) {
            _ if depth == 0 => 0,
            Some(bytes) => bytes,
            // Only a file written by something else lacks the counter: count once.
            None => {
                let mut total = 0u64;
                for entry in spool.iter()? {
                    let (_, value) = entry?;
                    total = total.saturating_add(value.value().len() as u64);
                }
                total
            }
        };
        let oldest = times.first()?.map(|(_, at)| at.value());
        meta.insert(META_NEXT_ID, next_id)?;
        meta.insert(META_BYTES, bytes)?;
        State {
            next_id,
            bytes,
            depth,
            oldest,
        }
    };
    txn.commit()?;
    Ok(state)
}

/// The writer loop: one batch per transaction until shutdown or until every handle is gone.
pub(super) fn run(
    db: Arc<Database>,
    queue: mpsc::Receiver<Request>,
    shared: Arc<Shared>,
    mut state: State,
) {
    let mut shutdowns = Vec::new();
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next {
            if let Request::Shutdown { done } = request {
                shutdowns.push(done);
                break;
            }
            batch.push(request);
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = queue.try_recv().ok();
        }
        if !batch.is_empty() {
            commit_batch(&db, &shared, &mut state, batch);
        }
        if !shutdowns.is_empty() {
            break;
        }
    }
    // Work queued behind the shutdown is not applied: dropping its reply tells the caller
    // `Closed`. A second close from another clone is answered like the first.
    while let Ok(request) = queue.try_recv() {
        if let Request::Shutdown { done } = request {
            shutdowns.push(done);
        }
    }
    drop(queue);
    drop(db);
    for done in shutdowns {
        let _ = done.send(());
    }
}

fn commit_batch(db: &Database, shared: &Shared, state: &mut State, mut batch: Vec<Request>) {
    let mut work = *state;
    match apply(db, &mut work, &mut batch, shared.max_bytes) {
        Ok(committed) => {
            if committed {
                *state = work;
                // Published before anyone is answered, so a caller sees its own write.
                shared.publish(state.stats());
            }
            tracing::debug!(requests = batch.len(), committed, "spool batch applied");
            for request in batch {
                request.finish();
            }
        }
        Err(err) => {
            let reason = match err {
                SpoolError::Storage(reason) => reason,
                other => other.to_string(),
            };
            tracing::error!(error = %reason, requests = batch.len(), "spool commit failed");
            for request in batch {
                request.fail(&reason);
            }
        }
    }
}

/// Applies the batch in one transaction; returns whether anything was committed.
///
/// `state` is a working copy: the caller keeps it only when this returns `Ok`.
fn apply(
    db: &Database,
    state: &mut State,
    batch: &mut [Request],
    max_bytes: u64,
) -> Result<bool, SpoolError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let mut dirty = false;
    {
        let mut spool = txn.open_table(SPOOL)?;
        let mut times = txn.open_table(SPOOLED_AT)?;
        let mut sequences = txn.open_table(SEQUENCES)?;
        let mut spool_changed = false;
        for request in batch.iter_mut() {
            match request {
                Request::Append { records, reply } => {
                    let size = records
                        .iter()
                        .fold(0u64, |sum, r| sum.saturating_add(r.json.len() as u64));
                    if state
                        .bytes
                        .checked_add(size)
                        .is_none_or(|total| total > max_bytes)
                    {
                        reply.set(Err(SpoolError::Full {
                            bytes: state.bytes,
                            max_bytes,
                        }));
                        continue;
                    }
                    if state.next_id.checked_add(records.len() as u64).is_none() {
                        reply.set(Err(SpoolError::Storage("spool ids exhausted".into())));
                        continue;
                    }
                    let mut ids = Vec::with_capacity(records.len());
                    for record in records.iter() {
                        let id = state.next_id;
                        state.next_id += 1;
                        spool.insert(id, record.json.as_slice())?;
                        times.insert(id, record.spooled_at_ms)?;
                        ids.push(id);
                    }
                    state.bytes += size;
                    spool_changed = true;
                    reply.set(Ok(ids));
                }
                Request::Remove { ids, reply } => {
                    for &id in ids.iter() {
                        if let Some(old) = spool.remove(id)? {
                            state.bytes = state.bytes.saturating_sub(old.value().len() as u64);
                            spool_changed = true;
                        }
                        if times.remove(id)?.is_some() {
                            spool_changed = true;
                        }
                    }
                    reply.set(Ok(()));
                }
                Request::NextSequence {
                    conversation_id,
                    reply,
                } => {
                    let last = sequences
                        .get(conversation_id.as_str())?
                        .map_or(0, |v| v.value());
                    match last.checked_add(1) {
                        Some(next) => {
                            sequences.insert(conversation_id.as_str(), next)?;
                            dirty = true;
                            reply.set(Ok(next));
                        }
                        None => reply.set(Err(SpoolError::Storage(
                            "conversation sequence exhausted".into(),
                        ))),
                    }
                }
                Request::Shutdown { .. } => {}
            }
        }
        if spool_changed {
            dirty = true;
            let mut meta = txn.open_table(META)?;
            meta.insert(META_NEXT_ID, state.next_id)?;
            meta.insert(META_BYTES, state.bytes)?;
            state.depth = spool.len()?;
            state.oldest = times.first()?.map(|(_, at)| at.value());
        }
    }
    if dirty {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(dirty)
}
