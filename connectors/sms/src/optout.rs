//! Opt-out compliance: the keywords that unsubscribe and resubscribe a number, and where the
//! choice is kept (the shared key-value store, without expiry, per connector and number).
//!
//! The keyword message itself is still accepted as a message: agents should see that a
//! customer said STOP (and may need to close the case), and the pipeline's dedupe and audit
//! trail stay complete. Only replies are refused afterwards.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::{KvError, KvStore};

/// Words that unsubscribe, compared to the whole message (trimmed, case-insensitive). `TD`
/// and 退订 are the customary Chinese ones (退订 = "unsubscribe").
pub const OPT_OUT_KEYWORDS: &[&str] = &[
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "退订",
    "TD",
];

/// Words that subscribe again.
pub const OPT_IN_KEYWORDS: &[&str] = &["START", "UNSTOP", "YES"];

/// What a compliance keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keyword {
    /// Stop sending to this number.
    OptOut,
    /// Sending is welcome again.
    OptIn,
}

/// The compliance keyword `text` is, if it is one. Only a message that is nothing but the
/// keyword counts ("stop." and " 退订。" do; "please stop the delivery" does not), as carriers
/// do it.
pub fn keyword(text: &str) -> Option<Keyword> {
    let word = text
        .trim()
        .trim_end_matches(['.', '!', '。', '！'])
        .trim()
        .to_uppercase();
    if OPT_OUT_KEYWORDS.contains(&word.as_str()) {
        Some(Keyword::OptOut)
    } else if OPT_IN_KEYWORDS.contains(&word.as_str()) {
        Some(Keyword::OptIn)
    } else {
        None
    }
}

/// What is stored for an opted-out number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOutRecord {
    /// When the customer opted out (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// How: the keyword, or a provider error code that said the recipient unsubscribed.
    pub via: String,
}

/// Opt-outs of one connector, in the shared store.
#[derive(Clone)]
pub struct OptOuts {
    kv: Arc<dyn KvStore>,
    prefix: String,
}

impl OptOuts {
    /// The opt-outs of connector `connector_id` of channel kind `kind`.
    pub fn new(kv: Arc<dyn KvStore>, kind: &str, connector_id: &str) -> Self {
        Self {
            kv,
            prefix: format!("{kind}:{connector_id}:optout:"),
        }
    }

    fn key(&self, number: &str) -> String {
        format!("{}{number}", self.prefix)
    }

    /// Records that `number` opted out; kept until it opts in again (no expiry).
    pub async fn opt_out(
        &self,
        number: &str,
        via: &str,
        at: OffsetDateTime,
    ) -> Result<(), KvError> {
        let record = OptOutRecord {
            at,
            via: via.to_owned(),
        };
        let value = serde_json::to_vec(&record).map_err(|e| KvError(e.to_string()))?;
        self.kv.set(&self.key(number), &value, None).await
    }

    /// Forgets an opt-out.
    pub async fn opt_in(&self, number: &str) -> Result<(), KvError> {
        self.kv.delete(&self.key(number)).await
    }

    /// The opt-out of `number`, if any. A value that does not parse still counts as an
    /// opt-out: refusing a reply is the safe side.
    pub async fn get(&self, number: &str) -> Result<Option<OptOutRecord>, KvError> {
        Ok(self.kv.get(&self.key(number)).await?.map(|raw| {
            serde_json::from_slice(&raw).unwrap_or(OptOutRecord {
                at: OffsetDateTime::UNIX_EPOCH,
                via: "unknown".to_owned(),
            })
        }))
    }

    /// Applies `keyword` for `number`.
    pub async fn apply(
        &self,
        number: &str,
        keyword: Keyword,
        via: &str,
        at: OffsetDateTime,
    ) -> Result<(), KvError> {
        match keyword {
            Keyword::OptOut => self.opt_out(number, via, at).await,
            Keyword::OptIn => self.opt_in(number).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_sdk::services::MemoryKv;

    use super::*;

    #[test]
    fn recognises_whole_message_keywords_only() {
        let cases = [
            ("STOP", Some(Keyword::OptOut)),
            ("  stop  ", Some(Keyword::OptOut)),
            ("Stop.", Some(Keyword::OptOut)),
            ("stopall", Some(Keyword::OptOut)),
            ("Unsubscribe", Some(Keyword::OptOut)),
            ("cancel", Some(Keyword::OptOut)),
            ("END", Some(Keyword::OptOut)),
            ("quit!", Some(Keyword::OptOut)),
            ("退订", Some(Keyword::OptOut)),
            (" 退订。", Some(Keyword::OptOut)),
            ("td", Some(Keyword::OptOut)),
            ("START", Some(Keyword::OptIn)),
            ("unstop", Some(Keyword::OptIn)),
            ("Yes", Some(Keyword::OptIn)),
            ("please stop the delivery", None),
            ("stopp", None),
            ("", None),
            ("where is my parcel", None),
        ];
        for (text, want) in cases {
            assert_eq!(keyword(text), want, "{text:?}");
        }
    }

    #[tokio::test]
    async fn opt_out_is_kept_without_expiry_and_opt_in_clears_it() {
        let kv = Arc::new(MemoryKv::default());
        let store = OptOuts::new(kv.clone(), "sms", "main");
        let other = OptOuts::new(kv, "sms", "other");
        let at = OffsetDateTime::UNIX_EPOCH;
        store
            .apply("+8613812345678", Keyword::OptOut, "STOP", at)
            .await
            .unwrap();
        let got = store.get("+8613812345678").await.unwrap();
        assert_eq!(got.map(|r| r.via), Some("STOP".to_owned()));
        assert_eq!(other.get("+8613812345678").await.unwrap(), None);
        store
            .apply("+8613812345678", Keyword::OptIn, "START", at)
            .await
            .unwrap();
        assert_eq!(store.get("+8613812345678").await.unwrap(), None);
    }
}
