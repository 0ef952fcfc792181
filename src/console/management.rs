//! RabbitMQ's management HTTP API, for what AMQP does not tell: unacknowledged counts and
//! the age of a queue's oldest message (`head_message_timestamp`: the AMQP `timestamp`
//! property, in seconds, which the daemon sets on every publish, of the oldest message the
//! queue holds, unacknowledged ones included). The broker refreshes these figures every few
//! seconds (`collect_statistics_interval`).

use std::collections::HashMap;
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use reqwest::Url;
use serde::Deserialize;
use switchboard_sdk::Secret;

use crate::config::BrokerConfig;

/// How long the console waits for the management API; a slow broker must not stall the page.
const TIMEOUT: Duration = Duration::from_secs(3);

/// A queue as the management API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueueStats {
    /// Messages ready for delivery.
    #[serde(default)]
    pub messages_ready: Option<u64>,
    /// Messages delivered and not yet acknowledged.
    #[serde(default)]
    pub messages_unacknowledged: Option<u64>,
    /// Consumers.
    #[serde(default)]
    pub consumers: Option<u64>,
    /// Unix seconds of the oldest held message's `timestamp` property, when it has one.
    #[serde(default)]
    pub head_message_timestamp: Option<u64>,
}

/// Why the management API gave nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManagementError {
    /// Not configured.
    #[error("broker.management_url is not set")]
    NotConfigured,
    /// The URL in the config is unusable.
    #[error("broker.management_url: {0}")]
    BadUrl(String),
    /// No answer.
    #[error("management API unreachable: {0}")]
    Unreachable(String),
    /// An error answer (wrong credentials, missing queue, ...).
    #[error("management API answered {0}")]
    Status(u16),
    /// An answer that is not what the API documents.
    #[error("management API answer unreadable: {0}")]
    Body(String),
}

/// A client of the management API for one vhost.
#[derive(Debug)]
pub struct Management {
    base: Url,
    user: String,
    /// Kept out of `Debug`.
    password: Secret,
    vhost: String,
    http: reqwest::Client,
}

impl Management {
    /// The client `broker` asks for, `Err(NotConfigured)` when it asks for none.
    pub fn from_config(broker: &BrokerConfig) -> Result<Self, ManagementError> {
        let configured = broker
            .management_url
            .as_ref()
            .ok_or(ManagementError::NotConfigured)?;
        let mut base =
            Url::parse(configured.expose()).map_err(|e| ManagementError::BadUrl(e.to_string()))?;
        let amqp = broker
            .resolve_url()
            .ok()
            .and_then(|url| Url::parse(&url).ok());
        // Credentials written in the management URL win over the AMQP URL's.
        let (user, password) = if base.username().is_empty() {
            match &amqp {
                Some(amqp) if !amqp.username().is_empty() => (
                    decode(amqp.username()),
                    decode(amqp.password().unwrap_or_default()),
                ),
                _ => ("guest".to_owned(), "guest".to_owned()),
            }
        } else {
            (
                decode(base.username()),
                decode(base.password().unwrap_or_default()),
            )
        };
        let _ = base.set_username("");
        let _ = base.set_password(None);
        // The AMQP URL's path is the vhost; none means the default vhost "/".
        let vhost = amqp
            .map(|amqp| decode(amqp.path().trim_start_matches('/')))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        let http = reqwest::Client::builder()
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| ManagementError::BadUrl(e.to_string()))?;
        Ok(Self {
            base,
            user,
            password: Secret::new(password),
            vhost,
            http,
        })
    }

    /// The statistics of each of `queues` (missing ones are left out), one request each.
    pub async fn queues(
        &self,
        queues: &[String],
    ) -> Result<HashMap<String, QueueStats>, ManagementError> {
        let requests = queues
            .iter()
            .map(|name| async move { (name.clone(), self.queue(name).await) });
        let mut out = HashMap::new();
        for (name, result) in futures_util::future::join_all(requests).await {
            match result {
                Ok(Some(stats)) => {
                    out.insert(name, stats);
                }
                Ok(None) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    async fn queue(&self, name: &str) -> Result<Option<QueueStats>, ManagementError> {
        let path = format!(
            "api/queues/{}/{}",
            utf8_percent_encode(&self.vhost, NON_ALPHANUMERIC),
            utf8_percent_encode(name, NON_ALPHANUMERIC)
        );
        let mut url = self
            .base
            .join(&format!(
                "{}/{path}",
                self.base.path().trim_end_matches('/')
            ))
            .map_err(|e| ManagementError::BadUrl(e.to_string()))?;
        url.set_query(Some(
            "columns=messages_ready,messages_unacknowledged,consumers,head_message_timestamp",
        ));
        let response = self
            .http
            .get(url)
            .basic_auth(&self.user, Some(self.password.expose()))
            .send()
            .await
            .map_err(|e| ManagementError::Unreachable(e.without_url().to_string()))?;
        match response.status().as_u16() {
            200 => response
                .json::<QueueStats>()
                .await
                .map(Some)
                .map_err(|e| ManagementError::Body(e.without_url().to_string())),
            404 => Ok(None),
            status => Err(ManagementError::Status(status)),
        }
    }
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(amqp: &str, management: &str) -> BrokerConfig {
        BrokerConfig {
            url: Some(Secret::new(amqp)),
            management_url: Some(Secret::new(management)),
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn credentials_and_vhost_come_from_the_amqp_url_unless_given() {
        let m = Management::from_config(&broker(
            "amqp://ops:s%40cret@rabbit:5672/shop%2fcn",
            "http://rabbit:15672",
        ))
        .unwrap();
        assert_eq!((m.user.as_str(), m.password.expose()), ("ops", "s@cret"));
        assert!(
            !format!("{m:?}").contains("s@cret"),
            "the password stays out of logs"
        );
        assert_eq!(m.vhost, "shop/cn");

        let m = Management::from_config(&broker(
            "amqp://ops:pw@rabbit:5672",
            "https://admin:other@rabbit:15671/mgmt/",
        ))
        .unwrap();
        assert_eq!((m.user.as_str(), m.password.expose()), ("admin", "other"));
        assert_eq!(m.vhost, "/");
        assert_eq!(m.base.as_str(), "https://rabbit:15671/mgmt/");

        assert!(matches!(
            Management::from_config(&BrokerConfig::default()),
            Err(ManagementError::NotConfigured)
        ));
    }
}
