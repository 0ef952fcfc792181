//! Recognising a message seen before. A key is claimed as pending while its message is being
//! made safe and marked done with the envelope id afterwards, so a retry that arrives while
//! the first attempt is still in flight is neither published twice nor told "accepted"
//! before the first attempt actually succeeded.
//!
//! A pending claim names its envelope id and the process holding it, and lives as long as
//! the dedupe window: whether its holder still runs decides when it may be taken over, not
//! an expiry. A holder killed mid-request may have its message in its spool, to be published
//! when it starts again; the retry that takes its claim over publishes under the envelope id
//! the claim names, so if the message ever arrives twice it carries one id.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_sdk::{KvError, KvStore};
use ulid::Ulid;

use crate::liveness;

/// A pending claim older than this is taken over even from a running holder: making one
/// message safe takes seconds, so such a claim is one whose completion was lost (written to
/// the local fallback while Redis failed, say). Taking it over risks at most a duplicate
/// under the same envelope id; waiting would refuse the channel's retries for the whole
/// dedupe window.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// The incarnation recorded in an abandoned claim: no process has it, so every claimer
/// sees the holder as gone.
const NOBODY: &str = "00000000000000000000000000";

/// Why a pending claim was taken over (the `reason` label of
/// `switchboard_dedupe_takeovers_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// Made by an earlier process of this instance id, which died (or gave the claim up).
    PreviousProcess,
    /// Made by another instance whose heartbeat is gone or shows a later process.
    HolderGone,
    /// Older than [`STALE_AFTER`] although its holder runs.
    Stale,
}

impl Takeover {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Takeover::PreviousProcess => "previous_process",
            Takeover::HolderGone => "holder_gone",
            Takeover::Stale => "stale",
        }
    }
}

/// The state of a dedupe key.
#[derive(Debug)]
pub enum Claim {
    /// First time: ours to publish, under the envelope id we asked for.
    New(Held),
    /// Pending with a holder that is gone: ours now, to publish under the envelope id the
    /// claim already named ([`Held::envelope_id`]), not the one we asked for.
    TakenOver(Held, Takeover),
    /// Accepted before, as this envelope.
    Done(String),
    /// Another request is making the same message safe right now.
    InProgress,
}

/// A pending claim in a stored value: `p:{envelope id}:{claim id}:{incarnation}:{instance}`.
/// The ids are ULIDs, 26 characters each, so the instance id (any characters) goes last
/// and the value parses one way only. The claim id's timestamp is when the claim was made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending<'a> {
    envelope_id: &'a str,
    claimed_at_ms: u64,
    incarnation: &'a str,
    instance: &'a str,
}

const ULID_LEN: usize = 26;

fn pending_value(envelope_id: &str, incarnation: &str, instance: &str) -> String {
    format!("p:{envelope_id}:{}:{incarnation}:{instance}", Ulid::new())
}

/// Splits off one ULID and the `:` after it.
fn take_ulid(text: &str) -> Option<(&str, Ulid, &str)> {
    let (id, rest) = text.split_at_checked(ULID_LEN)?;
    let ulid = Ulid::from_string(id).ok()?;
    Some((id, ulid, rest.strip_prefix(':')?))
}

fn parse_pending(value: &str) -> Option<Pending<'_>> {
    let rest = value.strip_prefix("p:")?;
    let (envelope_id, _, rest) = take_ulid(rest)?;
    let (_, claim, rest) = take_ulid(rest)?;
    let (incarnation, _, instance) = take_ulid(rest)?;
    (!instance.is_empty()).then_some(Pending {
        envelope_id,
        claimed_at_ms: claim.timestamp_ms(),
        incarnation,
        instance,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Dedupe claims of this process in the shared store.
pub struct Claims {
    kv: Arc<dyn KvStore>,
    instance: String,
    incarnation: String,
    window: Duration,
}

impl Claims {
    /// Claims of this process of `instance`, remembered for `window`
    /// (`pipeline.dedupe_ttl_secs`).
    pub fn new(kv: Arc<dyn KvStore>, instance: &str, window: Duration) -> Self {
        Self::with_incarnation(kv, instance, liveness::incarnation(), window)
    }

    fn with_incarnation(
        kv: Arc<dyn KvStore>,
        instance: &str,
        incarnation: &str,
        window: Duration,
    ) -> Self {
        Self {
            kv,
            instance: instance.to_owned(),
            incarnation: incarnation.to_owned(),
            window,
        }
    }

    fn held(&self, key: &str, envelope_id: &str, value: String, taken_over: bool) -> Held {
        Held {
            kv: self.kv.clone(),
            key: key.to_owned(),
            envelope_id: envelope_id.to_owned(),
            abandoned: taken_over.then(|| pending_value(envelope_id, NOBODY, &self.instance)),
            value,
            window: self.window,
        }
    }

    /// Claims `key` for a message that gets `envelope_id` if it is new.
    pub async fn claim(&self, key: &str, envelope_id: &str) -> Result<Claim, KvError> {
        let ours = pending_value(envelope_id, &self.incarnation, &self.instance);
        if self
            .kv
            .set_if_absent(key, ours.as_bytes(), self.window)
            .await?
        {
            return Ok(Claim::New(self.held(key, envelope_id, ours, false)));
        }
        let value = self.kv.get(key).await?.unwrap_or_default();
        let value = String::from_utf8_lossy(&value).into_owned();
        if let Some(id) = value.strip_prefix("d:") {
            return Ok(Claim::Done(id.to_owned()));
        }
        // Gone between the two calls, or in a form this version does not write (a claim of
        // an older version expires by itself): try again later.
        let Some(holder) = parse_pending(&value) else {
            return Ok(Claim::InProgress);
        };
        let Some(reason) = self.takeover_reason(&holder).await? else {
            return Ok(Claim::InProgress);
        };
        // Between the delete and the set the key is free, and a retry arriving in that
        // instant would claim it under a new id; two store round trips wide, against
        // channel retries seconds apart.
        let taken = pending_value(holder.envelope_id, &self.incarnation, &self.instance);
        if self.kv.delete_if_equals(key, value.as_bytes()).await?
            && self
                .kv
                .set_if_absent(key, taken.as_bytes(), self.window)
                .await?
        {
            tracing::info!(
                envelope_id = holder.envelope_id,
                holder = holder.instance,
                reason = reason.as_str(),
                "took over a pending dedupe claim; the message keeps its envelope id"
            );
            return Ok(Claim::TakenOver(
                self.held(key, holder.envelope_id, taken, true),
                reason,
            ));
        }
        Ok(Claim::InProgress)
    }

    /// Why `holder`'s claim may be taken over, if it may.
    async fn takeover_reason(&self, holder: &Pending<'_>) -> Result<Option<Takeover>, KvError> {
        if holder.instance == self.instance {
            // Instance ids are unique among running instances: another process of ours is
            // an earlier one, dead.
            if holder.incarnation != self.incarnation {
                return Ok(Some(Takeover::PreviousProcess));
            }
        } else if !liveness::is_alive(self.kv.as_ref(), holder.instance, holder.incarnation).await?
        {
            return Ok(Some(Takeover::HolderGone));
        }
        let age = Duration::from_millis(now_ms().saturating_sub(holder.claimed_at_ms));
        Ok((age >= STALE_AFTER).then_some(Takeover::Stale))
    }
}

/// A pending claim of this process, held while its message is made safe.
#[must_use = "a held claim is completed or released"]
pub struct Held {
    kv: Arc<dyn KvStore>,
    key: String,
    envelope_id: String,
    /// The stored value, which only this claim has.
    value: String,
    /// For a claim taken over: what a release leaves behind.
    abandoned: Option<String>,
    window: Duration,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("envelope_id", &self.envelope_id)
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

impl Held {
    /// The envelope id to publish under.
    pub fn envelope_id(&self) -> &str {
        &self.envelope_id
    }

    /// Marks the message accepted, remembered for the dedupe window.
    pub async fn complete(self) -> Result<(), KvError> {
        self.kv
            .set(
                &self.key,
                format!("d:{}", self.envelope_id).as_bytes(),
                Some(self.window),
            )
            .await
    }

    /// Gives the claim up because its message could not be made safe, so the channel's
    /// retry can succeed. A claim made here is deleted: the retry starts afresh. One taken
    /// over stays pending under its envelope id with no live holder, since the message may
    /// still sit in its dead holder's spool under that id: the retry takes it over again.
    pub async fn release(self) -> Result<(), KvError> {
        match &self.abandoned {
            None => self
                .kv
                .delete_if_equals(&self.key, self.value.as_bytes())
                .await
                .map(|_| ()),
            // Overwritten only while still ours; never deleted, so the key is never free
            // for a retry to claim under a new id.
            Some(abandoned) => {
                if self.kv.get(&self.key).await?.as_deref() == Some(self.value.as_bytes()) {
                    self.kv
                        .set(&self.key, abandoned.as_bytes(), Some(self.window))
                        .await?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_sdk::services::MemoryKv;

    const WINDOW: Duration = Duration::from_secs(600);

    fn id() -> String {
        Ulid::new().to_string()
    }

    fn claims(kv: &Arc<dyn KvStore>, instance: &str, incarnation: &str) -> Claims {
        Claims::with_incarnation(kv.clone(), instance, incarnation, WINDOW)
    }

    async fn beat(kv: &Arc<dyn KvStore>, instance: &str, incarnation: &str) {
        liveness::Heartbeat::new(kv.clone(), instance, incarnation)
            .beat()
            .await;
    }

    /// The envelope id a claim gives to publish under, for claims that are ours.
    fn ours(claim: &Claim) -> Option<&str> {
        match claim {
            Claim::New(held) | Claim::TakenOver(held, _) => Some(held.envelope_id()),
            _ => None,
        }
    }

    #[test]
    fn pending_values_parse_one_way_whatever_the_instance_id() {
        let (envelope, incarnation) = (id(), id());
        for instance in ["a", "a:b", "01ARZ3NDEKTSV4RRFFQ69G5FAV:x", "実例 1"] {
            let value = pending_value(&envelope, &incarnation, instance);
            let parsed = parse_pending(&value).expect("parses");
            assert_eq!(parsed.envelope_id, envelope);
            assert_eq!(parsed.incarnation, incarnation);
            assert_eq!(parsed.instance, instance);
        }
        let older_version = format!("p:{envelope}");
        for bad in [
            older_version.as_str(),
            "p:",
            "p:short:x",
            "d:01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "p:01ARZ3NDEKTSV4RRFFQ69G5FAV:01ARZ3NDEKTSV4RRFFQ69G5FAV:01ARZ3NDEKTSV4RRFFQ69G5FAV:",
            "p:01ARZ3NDEKTSV4RRFFQ69G5FA\u{e9}:01ARZ3NDEKTSV4RRFFQ69G5FAV:01ARZ3NDEKTSV4RRFFQ69G5FAV:a",
        ] {
            assert_eq!(parse_pending(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn claim_complete_and_release() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let a = claims(&kv, "a", &id());
        let (e1, e2) = (id(), id());
        let first = a.claim("k", &e1).await.unwrap();
        assert_eq!(ours(&first), Some(e1.as_str()));
        assert!(matches!(first, Claim::New(_)));
        assert!(
            matches!(a.claim("k", &e2).await.unwrap(), Claim::InProgress),
            "its own request in flight"
        );
        let Claim::New(held) = first else {
            unreachable!()
        };
        held.complete().await.unwrap();
        assert!(matches!(a.claim("k", &e2).await.unwrap(), Claim::Done(done) if done == e1));

        let Claim::New(held) = a.claim("j", &e1).await.unwrap() else {
            panic!("j is new")
        };
        held.release().await.unwrap();
        assert_eq!(ours(&a.claim("j", &e2).await.unwrap()), Some(e2.as_str()));
    }

    #[tokio::test]
    async fn a_restarted_instance_takes_over_its_previous_process_claims() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let before = claims(&kv, "a", &id());
        let after = claims(&kv, "a", &id());
        let (original, retry) = (id(), id());
        let _lost = before.claim("k", &original).await.unwrap();

        let claim = after.claim("k", &retry).await.unwrap();
        assert!(matches!(
            claim,
            Claim::TakenOver(_, Takeover::PreviousProcess)
        ));
        assert_eq!(ours(&claim), Some(original.as_str()));
        assert!(
            matches!(after.claim("k", &id()).await.unwrap(), Claim::InProgress),
            "taken over, it is this process's own claim in flight"
        );
    }

    #[tokio::test]
    async fn a_claim_of_an_instance_without_heartbeat_is_taken_over() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let ghost = claims(&kv, "ghost", &id());
        let live = claims(&kv, "live", &id());
        let original = id();
        let _lost = ghost.claim("k", &original).await.unwrap();

        let claim = live.claim("k", &id()).await.unwrap();
        assert!(matches!(claim, Claim::TakenOver(_, Takeover::HolderGone)));
        assert_eq!(ours(&claim), Some(original.as_str()));
        let Claim::TakenOver(held, _) = claim else {
            unreachable!()
        };
        held.complete().await.unwrap();
        assert!(
            matches!(ghost.claim("k", &id()).await.unwrap(), Claim::Done(done) if done == original)
        );
    }

    #[tokio::test]
    async fn a_claim_of_a_later_process_of_its_instance_is_not_the_holders() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let (old, new) = (id(), id());
        let _lost = claims(&kv, "b", &old).claim("k", &id()).await.unwrap();
        beat(&kv, "b", &new).await;
        assert!(matches!(
            claims(&kv, "a", &id()).claim("k", &id()).await.unwrap(),
            Claim::TakenOver(_, Takeover::HolderGone)
        ));
    }

    #[tokio::test]
    async fn a_claim_of_a_running_instance_is_in_progress() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let incarnation = id();
        beat(&kv, "b", &incarnation).await;
        let _held = claims(&kv, "b", &incarnation)
            .claim("k", &id())
            .await
            .unwrap();
        let a = claims(&kv, "a", &id());
        assert!(matches!(
            a.claim("k", &id()).await.unwrap(),
            Claim::InProgress
        ));
        assert!(
            matches!(
                claims(&kv, "bc", &incarnation)
                    .claim("k", &id())
                    .await
                    .unwrap(),
                Claim::InProgress
            ),
            "another instance whose id starts the same"
        );
    }

    #[tokio::test]
    async fn a_stale_claim_is_taken_over_even_from_a_running_holder() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let incarnation = id();
        beat(&kv, "b", &incarnation).await;
        let original = id();
        let long_ago = Ulid::from_parts(now_ms() - STALE_AFTER.as_millis() as u64 - 1000, 0);
        let value = format!("p:{original}:{long_ago}:{incarnation}:b");
        kv.set("k", value.as_bytes(), Some(WINDOW)).await.unwrap();

        let claim = claims(&kv, "a", &id()).claim("k", &id()).await.unwrap();
        assert!(matches!(claim, Claim::TakenOver(_, Takeover::Stale)));
        assert_eq!(ours(&claim), Some(original.as_str()));
    }

    #[tokio::test]
    async fn a_claim_of_an_older_version_waits_for_its_expiry() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let original = id();
        kv.set("k", format!("p:{original}").as_bytes(), Some(WINDOW))
            .await
            .unwrap();
        assert!(matches!(
            claims(&kv, "a", &id()).claim("k", &id()).await.unwrap(),
            Claim::InProgress
        ));
    }

    #[tokio::test]
    async fn a_released_takeover_keeps_its_envelope_id_for_the_next_retry() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let incarnation = id();
        beat(&kv, "live", &incarnation).await;
        let live = claims(&kv, "live", &incarnation);
        let original = id();
        let _lost = claims(&kv, "ghost", &id())
            .claim("k", &original)
            .await
            .unwrap();
        let Claim::TakenOver(held, _) = live.claim("k", &id()).await.unwrap() else {
            panic!("the ghost's claim is taken over")
        };
        held.release().await.unwrap();

        for retry in [&live, &claims(&kv, "other", &id())] {
            let claim = retry.claim("k", &id()).await.unwrap();
            assert!(matches!(claim, Claim::TakenOver(..)), "{claim:?}");
            assert_eq!(ours(&claim), Some(original.as_str()));
            let Claim::TakenOver(held, _) = claim else {
                unreachable!()
            };
            held.release().await.unwrap();
        }
    }

    #[tokio::test]
    async fn releasing_a_claim_no_longer_ours_leaves_it() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let original = id();
        let _lost = claims(&kv, "ghost", &id())
            .claim("k", &original)
            .await
            .unwrap();
        let a = claims(&kv, "a", &id());
        let b = claims(&kv, "b", &id());
        let Claim::TakenOver(slow, _) = a.claim("k", &id()).await.unwrap() else {
            panic!("taken over by a")
        };
        // a stops beating meanwhile (it never beat here), so b takes the claim from a.
        let Claim::TakenOver(held, _) = b.claim("k", &id()).await.unwrap() else {
            panic!("taken over by b")
        };
        held.complete().await.unwrap();
        slow.release().await.unwrap();
        assert!(
            matches!(b.claim("k", &id()).await.unwrap(), Claim::Done(done) if done == original)
        );
    }
}
