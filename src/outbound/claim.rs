//! Reply ids already handled: a helpdesk that publishes a reply twice, or a redelivery after
//! a lost ack, must not reach the customer twice.

use std::sync::Arc;
use std::time::Duration;

use switchboard_sdk::{KvError, KvStore};

use crate::liveness::incarnation;

/// How long a claim protects a reply being sent; longer than any retry sequence.
const LEASE: Duration = Duration::from_secs(600);

/// The state of a reply id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours to send; the token releases it.
    Ours(String),
    /// Already handled; the recorded outcome event (JSON), possibly empty.
    Done(String),
    /// Being sent by another delivery right now.
    InProgressElsewhere,
}

/// Claims on reply ids in the shared store.
pub struct ReplyClaims {
    kv: Arc<dyn KvStore>,
    ttl: Duration,
    /// This instance's id.
    instance: String,
    /// This process's incarnation.
    incarnation: String,
    /// `p:{instance}:{incarnation}`, the start of this process's claim tokens.
    owner: String,
}

impl ReplyClaims {
    /// Claims remembered for `ttl` once done.
    pub fn new(kv: Arc<dyn KvStore>, ttl: Duration, instance: &str) -> Self {
        Self::with_incarnation(kv, ttl, instance, incarnation())
    }

    fn with_incarnation(
        kv: Arc<dyn KvStore>,
        ttl: Duration,
        instance: &str,
        incarnation: &str,
    ) -> Self {
        Self {
            kv,
            ttl,
            instance: instance.to_owned(),
            incarnation: incarnation.to_owned(),
            owner: format!("p:{instance}:{incarnation}"),
        }
    }

    fn key(reply_id: &str) -> String {
        format!("reply:{reply_id}")
    }

    /// Claims `reply_id` for sending. Each claim has its own token, so two deliveries of
    /// one id on the same instance exclude each other too.
    pub async fn claim(&self, reply_id: &str) -> Result<Claim, KvError> {
        let key = Self::key(reply_id);
        let token = format!("{}:{}", self.owner, ulid::Ulid::new());
        if self.kv.set_if_absent(&key, token.as_bytes(), LEASE).await? {
            return Ok(Claim::Ours(token));
        }
        let value = self.kv.get(&key).await?.unwrap_or_default();
        let value = String::from_utf8_lossy(&value).into_owned();
        if let Some(event) = value.strip_prefix("d:") {
            return Ok(Claim::Done(event.to_owned()));
        }
        // Left by this instance's previous process, which died sending: nobody is sending
        // it now, so take it over rather than wait out the lease. (Instance ids are unique
        // among running instances.)
        if self.left_by_previous_process(&value)
            && self.kv.delete_if_equals(&key, value.as_bytes()).await?
            && self.kv.set_if_absent(&key, token.as_bytes(), LEASE).await?
        {
            tracing::info!(
                reply_id,
                "took over a reply claim left by a previous process"
            );
            return Ok(Claim::Ours(token));
        }
        Ok(Claim::InProgressElsewhere)
    }

    /// Whether a pending claim's token, `p:{instance}:{incarnation}:{ulid}`, names this
    /// instance and another incarnation. Read from the right: the incarnation and the ulid
    /// never hold a ':', so the instance id is compared whole.
    fn left_by_previous_process(&self, value: &str) -> bool {
        let Some(rest) = value.strip_prefix("p:") else {
            return false;
        };
        let mut parts = rest.rsplitn(3, ':');
        let (Some(_ulid), Some(incarnation), Some(instance)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        instance == self.instance && incarnation != self.incarnation
    }

    /// Records the outcome of `reply_id`.
    pub async fn complete(&self, reply_id: &str, event_json: &str) {
        if let Err(err) = self
            .kv
            .set(
                &Self::key(reply_id),
                format!("d:{event_json}").as_bytes(),
                Some(self.ttl),
            )
            .await
        {
            tracing::warn!(error = %err, "cannot record reply outcome");
        }
    }

    /// Gives up a claim without an outcome, so a redelivery can send.
    pub async fn release(&self, reply_id: &str, token: &str) {
        let _ = self
            .kv
            .delete_if_equals(&Self::key(reply_id), token.as_bytes())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_sdk::services::MemoryKv;

    #[tokio::test]
    async fn a_reply_is_claimed_once_and_remembered() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let a = ReplyClaims::new(kv.clone(), Duration::from_secs(60), "a");
        let b = ReplyClaims::new(kv, Duration::from_secs(60), "b");
        assert!(matches!(a.claim("r1").await.unwrap(), Claim::Ours(_)));
        assert_eq!(b.claim("r1").await.unwrap(), Claim::InProgressElsewhere);
        assert_eq!(
            a.claim("r1").await.unwrap(),
            Claim::InProgressElsewhere,
            "even for its owner"
        );
        a.complete("r1", "{}").await;
        assert_eq!(b.claim("r1").await.unwrap(), Claim::Done("{}".into()));

        let Claim::Ours(token) = a.claim("r2").await.unwrap() else {
            panic!("r2 is new")
        };
        a.release("r2", "someone else's token").await;
        assert_eq!(b.claim("r2").await.unwrap(), Claim::InProgressElsewhere);
        a.release("r2", &token).await;
        assert!(matches!(b.claim("r2").await.unwrap(), Claim::Ours(_)));
    }

    #[tokio::test]
    async fn a_restarted_instance_takes_over_the_claims_of_its_previous_process() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let before = ReplyClaims::with_incarnation(kv.clone(), Duration::from_secs(60), "a", "1");
        let other = ReplyClaims::with_incarnation(kv.clone(), Duration::from_secs(60), "ab", "2");
        let after = ReplyClaims::with_incarnation(kv, Duration::from_secs(60), "a", "3");
        assert!(matches!(before.claim("r1").await.unwrap(), Claim::Ours(_)));
        assert_eq!(other.claim("r1").await.unwrap(), Claim::InProgressElsewhere);
        assert!(matches!(after.claim("r1").await.unwrap(), Claim::Ours(_)));
        assert_eq!(after.claim("r1").await.unwrap(), Claim::InProgressElsewhere);
    }

    #[tokio::test]
    async fn an_instance_id_that_starts_another_one_is_not_mistaken_for_it() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let longer = ReplyClaims::with_incarnation(kv.clone(), Duration::from_secs(60), "a-b", "1");
        let shorter = ReplyClaims::with_incarnation(kv.clone(), Duration::from_secs(60), "a", "2");
        assert!(matches!(longer.claim("r1").await.unwrap(), Claim::Ours(_)));
        assert_eq!(
            shorter.claim("r1").await.unwrap(),
            Claim::InProgressElsewhere,
            "a-b is alive and sending; a must not take its claim"
        );
        kv.set("reply:r2", b"p:a:b:3:01JZZZZZZZZZZZZZZZZZZZZZZZ", None)
            .await
            .unwrap();
        assert_eq!(
            shorter.claim("r2").await.unwrap(),
            Claim::InProgressElsewhere,
            "a token of instance 'a:b' read from the right is not instance 'a'"
        );
    }
}
