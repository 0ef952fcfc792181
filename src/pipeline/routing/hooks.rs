//! Optional enrichment hooks, called only when configured and always within the latency
//! budget: the status of a tracking number found in the message, and an external intent
//! classifier. A hook that fails or is late leaves the built-in result in place.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::tiers::fill;
use crate::config::{ClassifierHookConfig, EnrichmentConfig, ShipmentHookConfig};

/// What a hook came back with.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum HookResult<T> {
    /// Not configured, or nothing to ask about.
    Skipped,
    /// An answer.
    Ok {
        /// The answer.
        value: T,
        /// Milliseconds it took.
        millis: u64,
    },
    /// No answer within the time allowed.
    Timeout {
        /// Milliseconds allowed.
        millis: u64,
    },
    /// An error answer or no usable body.
    Failed {
        /// What went wrong.
        error: String,
    },
}

impl<T> HookResult<T> {
    /// One word for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            HookResult::Skipped => "skipped",
            HookResult::Ok { .. } => "ok",
            HookResult::Timeout { .. } => "timeout",
            HookResult::Failed { .. } => "failed",
        }
    }

    /// The answer, if any.
    pub fn value(&self) -> Option<&T> {
        match self {
            HookResult::Ok { value, .. } => Some(value),
            _ => None,
        }
    }

    /// True when the hook was asked and gave nothing usable.
    pub fn is_failure(&self) -> bool {
        matches!(self, HookResult::Timeout { .. } | HookResult::Failed { .. })
    }
}

/// The classifier's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierAnswer {
    /// Intent name.
    pub intent: String,
    /// Confidence 0-1.
    pub confidence: f64,
}

/// The configured hooks and their client.
#[derive(Debug)]
pub struct Hooks {
    budget: Duration,
    shipment: Option<ShipmentHookConfig>,
    classifier: Option<ClassifierHookConfig>,
    client: reqwest::Client,
}

/// A shipment status word: lowercase, anything but letters and digits made `_`.
pub fn status_word(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}

impl Hooks {
    /// Hooks as configured; nothing is called here.
    pub fn new(config: &EnrichmentConfig) -> Self {
        Self {
            budget: Duration::from_millis(config.budget_ms),
            shipment: config.shipment.clone(),
            classifier: config.classifier.clone(),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(config.budget_ms.max(1)))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Confidence from which the classifier wins.
    pub fn classifier_min_confidence(&self) -> Option<f64> {
        self.classifier.as_ref().map(|c| c.min_confidence)
    }

    /// Whether a shipment hook is configured.
    pub fn has_shipment(&self) -> bool {
        self.shipment.is_some()
    }

    async fn bounded<T, F>(&self, own: u64, call: F) -> HookResult<T>
    where
        F: std::future::Future<Output = Result<T, String>>,
    {
        let allowed = Duration::from_millis(own).min(self.budget);
        let started = std::time::Instant::now();
        match tokio::time::timeout(allowed, call).await {
            Ok(Ok(value)) => HookResult::Ok {
                value,
                millis: started.elapsed().as_millis() as u64,
            },
            Ok(Err(error)) => HookResult::Failed { error },
            Err(_) => HookResult::Timeout {
                millis: allowed.as_millis() as u64,
            },
        }
    }

    /// The status of `tracking` (number, carrier), when a shipment hook is configured.
    pub async fn shipment(&self, tracking: Option<(&str, &str)>) -> HookResult<String> {
        let (Some(config), Some((number, carrier))) = (&self.shipment, tracking) else {
            return HookResult::Skipped;
        };
        let url = fill(
            &config.url,
            &[("tracking_number", number), ("carrier", carrier)],
        );
        let field = config.status_field.clone();
        let result = self
            .bounded(config.timeout_ms, async {
                let response = self
                    .client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("request failed: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("status {}", response.status().as_u16()));
                }
                let body: serde_json::Value = response
                    .json()
                    .await
                    .map_err(|e| format!("not JSON: {e}"))?;
                body.get(&field)
                    .and_then(|v| v.as_str())
                    .map(status_word)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| format!("answer has no {field:?} string"))
            })
            .await;
        if result.is_failure() {
            tracing::warn!(
                outcome = result.outcome(),
                "shipment status lookup gave nothing"
            );
        }
        result
    }

    /// The classifier's intent for the text, when a classifier is configured.
    pub async fn classify(
        &self,
        text: Option<&str>,
        folded: &str,
        channel: &str,
    ) -> HookResult<ClassifierAnswer> {
        let (Some(config), Some(text)) = (&self.classifier, text) else {
            return HookResult::Skipped;
        };
        if text.trim().is_empty() {
            return HookResult::Skipped;
        }
        let body = serde_json::json!({ "text": text, "normalized": folded, "channel": channel });
        let result = self
            .bounded(config.timeout_ms, async {
                let response = self
                    .client
                    .post(&config.url)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("request failed: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("status {}", response.status().as_u16()));
                }
                let answer: ClassifierAnswer = response
                    .json()
                    .await
                    .map_err(|e| format!("unexpected answer: {e}"))?;
                if !(0.0..=1.0).contains(&answer.confidence) {
                    return Err("confidence outside 0-1".to_owned());
                }
                Ok(answer)
            })
            .await;
        if result.is_failure() {
            tracing::warn!(outcome = result.outcome(), "classifier gave nothing");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_are_lowercase_with_underscores() {
        assert_eq!(status_word("Customs Hold"), "customs_hold");
        assert_eq!(status_word(" EXCEPTION!! "), "exception");
        assert_eq!(status_word("in-transit"), "in_transit");
    }
}
