//! Recognising a message seen before. A key is claimed as pending while its message is being
//! made safe and marked done with the envelope id afterwards, so a retry that arrives while
//! the first attempt is still in flight is neither published twice nor told "accepted"
//! before the first attempt actually succeeded.

use std::time::Duration;

use switchboard_sdk::{KvError, KvStore};

/// How long a pending claim lives if its holder dies before finishing.
const PENDING_TTL: Duration = Duration::from_secs(60);

/// The state of a dedupe key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time: ours to publish.
    New,
    /// Accepted before, as this envelope.
    Done(String),
    /// Another request is making the same message safe right now.
    InProgress,
}

/// Claims `key` for `envelope_id`.
pub async fn claim(kv: &dyn KvStore, key: &str, envelope_id: &str) -> Result<Claim, KvError> {
    let pending = format!("p:{envelope_id}");
    if kv
        .set_if_absent(key, pending.as_bytes(), PENDING_TTL)
        .await?
    {
        return Ok(Claim::New);
    }
    let value = kv.get(key).await?.unwrap_or_default();
    let value = String::from_utf8_lossy(&value);
    Ok(match value.strip_prefix("d:") {
        Some(id) => Claim::Done(id.to_owned()),
        // Expired between the two calls, or pending elsewhere: either way, try again later.
        None => Claim::InProgress,
    })
}

/// Marks `key` as accepted as `envelope_id`, remembered for `ttl`.
pub async fn complete(
    kv: &dyn KvStore,
    key: &str,
    envelope_id: &str,
    ttl: Duration,
) -> Result<(), KvError> {
    kv.set(key, format!("d:{envelope_id}").as_bytes(), Some(ttl))
        .await
}

/// Gives up a pending claim so the channel's retry can succeed.
pub async fn release(kv: &dyn KvStore, key: &str, envelope_id: &str) -> Result<(), KvError> {
    kv.delete_if_equals(key, format!("p:{envelope_id}").as_bytes())
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_sdk::services::MemoryKv;

    #[tokio::test]
    async fn claim_complete_and_release() {
        let kv = MemoryKv::default();
        assert_eq!(claim(&kv, "k", "e1").await.unwrap(), Claim::New);
        assert_eq!(claim(&kv, "k", "e2").await.unwrap(), Claim::InProgress);
        complete(&kv, "k", "e1", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            claim(&kv, "k", "e3").await.unwrap(),
            Claim::Done("e1".into())
        );

        assert_eq!(claim(&kv, "j", "e4").await.unwrap(), Claim::New);
        release(&kv, "j", "e4").await.unwrap();
        assert_eq!(claim(&kv, "j", "e5").await.unwrap(), Claim::New);
    }
}
