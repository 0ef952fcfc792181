//! A conversation's skill kept for its follow-up messages, in the shared store (Redis when
//! configured, so every instance sees it), and a helpdesk's `transfer` / `close`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_sdk::{KvError, KvStore};

/// What the store keeps per conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sticky {
    /// The skill kept.
    pub skill: String,
    /// A fixed routing key the deciding rule had, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_key: Option<String>,
    /// Priority to keep; `None` lets the rules decide it per message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// The rule that decided, or `transfer`.
    pub rule: String,
    /// Set by a helpdesk's transfer: holds even against intents that end stickiness.
    #[serde(default)]
    pub transferred: bool,
}

/// The store key of a conversation's record.
pub fn key(conversation_id: &str) -> String {
    format!("sticky:{conversation_id}")
}

/// The record of `conversation_id`, if any. An unreadable record counts as none.
pub async fn load(kv: &dyn KvStore, conversation_id: &str) -> Result<Option<Sticky>, KvError> {
    Ok(kv
        .get(&key(conversation_id))
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Stores `sticky` for `ttl`.
pub async fn save(
    kv: &dyn KvStore,
    conversation_id: &str,
    sticky: &Sticky,
    ttl: Duration,
) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(sticky).map_err(|e| KvError(e.to_string()))?;
    kv.set(&key(conversation_id), &bytes, Some(ttl)).await
}

/// Forgets the conversation's record.
pub async fn forget(kv: &dyn KvStore, conversation_id: &str) -> Result<(), KvError> {
    kv.delete(&key(conversation_id)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_sdk::services::MemoryKv;

    #[tokio::test]
    async fn records_round_trip_and_are_forgotten() {
        let kv = MemoryKv::default();
        let sticky = Sticky {
            skill: "claims".into(),
            queue_key: None,
            priority: Some(6),
            rule: "damaged".into(),
            transferred: false,
        };
        save(&kv, "app:shop:u-1", &sticky, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(load(&kv, "app:shop:u-1").await.unwrap(), Some(sticky));
        forget(&kv, "app:shop:u-1").await.unwrap();
        assert_eq!(load(&kv, "app:shop:u-1").await.unwrap(), None);
        kv.set(&key("app:shop:u-2"), b"not json", None)
            .await
            .unwrap();
        assert_eq!(load(&kv, "app:shop:u-2").await.unwrap(), None);
    }
}
