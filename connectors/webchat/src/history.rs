//! Agent messages kept per conversation in the shared key-value store, numbered without gaps,
//! so a widget that was away (dropped link, restart, another instance) replays what it
//! missed. Bounded by count and by time.
//!
//! Keys, under `webchat:{connector}:`: `head:{user}` (epoch and last sequence number),
//! `h:{user}:{seq}` (one stored frame), `reply:{reply id}` (the sequence number a reply got,
//! so a redelivered reply is not stored twice), `read:{user}` (last sequence number shown),
//! `lock:{user}` (held while a number is taken). Each expires with the history TTL.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_sdk::{KvError, KvStore};

/// How long a numbering lock lives if its holder dies.
const LOCK_TTL: Duration = Duration::from_secs(5);
/// How long to keep trying for a busy lock before giving up (the dispatcher retries).
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Why history could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HistoryError {
    /// The store failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// Another writer held the conversation's lock for too long.
    #[error("conversation is busy, try again")]
    Busy,
    /// A stored value is not what this code writes.
    #[error("corrupt history value at {0}")]
    Corrupt(String),
}

/// Where a conversation's numbering stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Identifies this run of numbering; new when the history expired or never existed.
    pub epoch: String,
    /// The last sequence number given.
    pub seq: u64,
}

/// A frame stored under a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its sequence number.
    pub seq: u64,
    /// Its epoch.
    pub epoch: String,
    /// The frame text, as sent to the widget.
    pub text: String,
    /// The reply had been stored before; this is the earlier copy.
    pub duplicate: bool,
}

/// What a resuming widget should get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Where the conversation stands (a fresh epoch at 0 if it has no history).
    pub head: Head,
    /// The client's epoch was another one, so its position was ignored.
    pub reset: bool,
    /// Some messages after the client's position are no longer kept.
    pub gap: bool,
    /// The frames to send, oldest first.
    pub frames: Vec<(u64, String)>,
}

/// One connector's histories.
#[derive(Clone)]
pub struct History {
    kv: Arc<dyn KvStore>,
    prefix: String,
    max_messages: u64,
    ttl: Duration,
    owner: String,
}

impl History {
    /// Histories of connector `connector_id`, keeping `max_messages` for `ttl`.
    pub fn new(
        kv: Arc<dyn KvStore>,
        connector_id: &str,
        max_messages: u64,
        ttl: Duration,
        owner: &str,
    ) -> Self {
        Self {
            kv,
            prefix: format!("webchat:{connector_id}:"),
            max_messages,
            ttl,
            owner: owner.to_owned(),
        }
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }

    fn entry_key(&self, user: &str, seq: u64) -> String {
        format!("{}h:{user}:{seq}", self.prefix)
    }

    /// The conversation's head, if it has history.
    pub async fn head(&self, user: &str) -> Result<Option<Head>, HistoryError> {
        let key = self.key("head", user);
        match self.kv.get(&key).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| HistoryError::Corrupt(key)),
            None => Ok(None),
        }
    }

    /// Stores the frame `make(seq, epoch)` under the conversation's next sequence number,
    /// unless `reply_id` was stored before (then the earlier copy is returned).
    pub async fn append(
        &self,
        user: &str,
        reply_id: &str,
        make: impl Fn(u64, &str) -> String,
    ) -> Result<Stored, HistoryError> {
        let lock_key = self.key("lock", user);
        let token = format!("{}:{}", self.owner, ulid::Ulid::new());
        self.lock(&lock_key, &token).await?;
        let result = self.append_locked(user, reply_id, make).await;
        // A lock we fail to release expires on its own after LOCK_TTL.
        let _ = self.kv.delete_if_equals(&lock_key, token.as_bytes()).await;
        result
    }

    async fn lock(&self, key: &str, token: &str) -> Result<(), HistoryError> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            if self
                .kv
                .set_if_absent(key, token.as_bytes(), LOCK_TTL)
                .await?
            {
                return Ok(());
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(HistoryError::Busy);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn append_locked(
        &self,
        user: &str,
        reply_id: &str,
        make: impl Fn(u64, &str) -> String,
    ) -> Result<Stored, HistoryError> {
        let marker_key = self.key("reply", reply_id);
        if let Some(marker) = self.kv.get(&marker_key).await? {
            let marker = String::from_utf8_lossy(&marker).into_owned();
            let (epoch, seq) = marker
                .rsplit_once(':')
                .and_then(|(e, s)| Some((e.to_owned(), s.parse::<u64>().ok()?)))
                .ok_or_else(|| HistoryError::Corrupt(marker_key.clone()))?;
            let text = self
                .kv
                .get(&self.entry_key(user, seq))
                .await?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            return Ok(Stored {
                seq,
                epoch,
                text,
                duplicate: true,
            });
        }
        let head = self.head(user).await?.unwrap_or_else(|| Head {
            epoch: new_epoch(),
            seq: 0,
        });
        let seq = head.seq + 1;
        let text = make(seq, &head.epoch);
        // The entry first, then the head: whoever reads the head finds every entry below it.
        self.kv
            .set(&self.entry_key(user, seq), text.as_bytes(), Some(self.ttl))
            .await?;
        let next = Head {
            epoch: head.epoch.clone(),
            seq,
        };
        let encoded =
            serde_json::to_vec(&next).map_err(|_| HistoryError::Corrupt(self.key("head", user)))?;
        self.kv
            .set(&self.key("head", user), &encoded, Some(self.ttl))
            .await?;
        if seq > self.max_messages {
            let _ = self
                .kv
                .delete(&self.entry_key(user, seq - self.max_messages))
                .await;
        }
        self.kv
            .set(
                &marker_key,
                format!("{}:{seq}", head.epoch).as_bytes(),
                Some(self.ttl),
            )
            .await?;
        Ok(Stored {
            seq,
            epoch: head.epoch,
            text,
            duplicate: false,
        })
    }

    /// The frames after `last_seq` of `epoch`; everything kept when the epoch is not the
    /// conversation's.
    pub async fn replay(
        &self,
        user: &str,
        last_seq: u64,
        epoch: Option<&str>,
    ) -> Result<Replay, HistoryError> {
        let Some(head) = self.head(user).await? else {
            return Ok(Replay {
                head: Head {
                    epoch: new_epoch(),
                    seq: 0,
                },
                reset: last_seq > 0,
                gap: false,
                frames: Vec::new(),
            });
        };
        let reset = last_seq > 0 && epoch != Some(head.epoch.as_str());
        let after = if reset { 0 } else { last_seq.min(head.seq) };
        let oldest_kept = head.seq.saturating_sub(self.max_messages) + 1;
        let start = (after + 1).max(oldest_kept);
        let mut gap = start > after + 1;
        let mut frames = Vec::new();
        for seq in start..=head.seq {
            match self.kv.get(&self.entry_key(user, seq)).await? {
                Some(bytes) => frames.push((seq, String::from_utf8_lossy(&bytes).into_owned())),
                None => gap = true,
            }
        }
        Ok(Replay {
            head,
            reset,
            gap,
            frames,
        })
    }

    /// Frames `from..=to` that are still kept, for filling a hole in what a socket saw.
    pub async fn range(
        &self,
        user: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, String)>, HistoryError> {
        let mut frames = Vec::new();
        for seq in from..=to {
            if let Some(bytes) = self.kv.get(&self.entry_key(user, seq)).await? {
                frames.push((seq, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
        Ok(frames)
    }

    /// Records that the widget showed up to `seq`; returns the frames newly read (for the
    /// read receipt), nothing when `seq` is not beyond what was recorded.
    pub async fn mark_read(
        &self,
        user: &str,
        seq: u64,
    ) -> Result<Vec<(u64, String)>, HistoryError> {
        let Some(head) = self.head(user).await? else {
            return Ok(Vec::new());
        };
        let seq = seq.min(head.seq);
        let key = self.key("read", user);
        let recorded = self
            .kv
            .get(&key)
            .await?
            .and_then(|b| String::from_utf8_lossy(&b).parse::<u64>().ok())
            .unwrap_or(0);
        if seq <= recorded {
            return Ok(Vec::new());
        }
        self.kv
            .set(&key, seq.to_string().as_bytes(), Some(self.ttl))
            .await?;
        let from = (recorded + 1).max(head.seq.saturating_sub(self.max_messages) + 1);
        self.range(user, from, seq).await
    }
}

fn new_epoch() -> String {
    ulid::Ulid::new().to_string().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_sdk::services::MemoryKv;

    fn history(max: u64) -> History {
        History::new(
            Arc::new(MemoryKv::default()),
            "site",
            max,
            Duration::from_secs(60),
            "test",
        )
    }

    fn frame(seq: u64, epoch: &str) -> String {
        format!("{epoch}/{seq}")
    }

    #[tokio::test]
    async fn numbers_from_one_without_gaps_and_stores_a_reply_once() {
        let h = history(10);
        let a = h.append("v-1", "r1", frame).await.unwrap();
        let b = h.append("v-1", "r2", frame).await.unwrap();
        let again = h.append("v-1", "r1", frame).await.unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert!(!a.duplicate && again.duplicate);
        assert_eq!(again.seq, 1);
        assert_eq!(again.text, a.text);
        assert_eq!(h.head("v-1").await.unwrap().unwrap().seq, 2);
        let other = h.append("v-2", "r3", frame).await.unwrap();
        assert_eq!(other.seq, 1, "numbering is per conversation");
    }

    #[tokio::test]
    async fn concurrent_appends_get_distinct_numbers() {
        let h = history(100);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                h.append("v-1", &format!("r{i}"), frame).await.unwrap().seq
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn replay_table() {
        let h = history(3);
        for i in 1..=5 {
            h.append("v-1", &format!("r{i}"), frame).await.unwrap();
        }
        let epoch = h.head("v-1").await.unwrap().unwrap().epoch;
        // (last_seq, epoch given, expected seqs, reset, gap)
        type Case<'a> = (u64, Option<&'a str>, Vec<u64>, bool, bool);
        let cases: Vec<Case> = vec![
            (4, Some(&epoch), vec![5], false, false),
            (5, Some(&epoch), vec![], false, false),
            (3, Some(&epoch), vec![4, 5], false, false),
            (1, Some(&epoch), vec![3, 4, 5], false, true),
            (0, None, vec![3, 4, 5], false, true),
            (4, Some("another"), vec![3, 4, 5], true, true),
            (9, Some(&epoch), vec![], false, false),
        ];
        for (last, given, seqs, reset, gap) in cases {
            let replay = h.replay("v-1", last, given).await.unwrap();
            let got: Vec<u64> = replay.frames.iter().map(|(s, _)| *s).collect();
            assert_eq!(got, seqs, "last_seq {last}");
            assert_eq!((replay.reset, replay.gap), (reset, gap), "last_seq {last}");
            for (seq, text) in &replay.frames {
                assert_eq!(text, &frame(*seq, &epoch));
            }
        }
        let fresh = h.replay("v-new", 7, Some("old")).await.unwrap();
        assert!(fresh.reset && fresh.frames.is_empty() && fresh.head.seq == 0);
    }

    #[tokio::test]
    async fn read_marks_move_forward_only() {
        let h = history(10);
        for i in 1..=3 {
            h.append("v-1", &format!("r{i}"), frame).await.unwrap();
        }
        assert_eq!(h.mark_read("v-1", 2).await.unwrap().len(), 2);
        assert!(h.mark_read("v-1", 1).await.unwrap().is_empty());
        let third = h.mark_read("v-1", 99).await.unwrap();
        assert_eq!(third.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [3]);
        assert!(h.mark_read("v-none", 1).await.unwrap().is_empty());
    }
}
