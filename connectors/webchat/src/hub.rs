//! The sockets this instance holds, and how agent messages reach them: a reply stored by any
//! instance is published on the connector's fan-out topic; every instance listens to that
//! one topic and hands the message to the mailboxes of the visitor's local sockets.
//!
//! One topic per connector rather than one per visitor: the in-process fan-out keeps a
//! 1024-slot buffer per topic (tens of KiB), which would cost more than the socket itself,
//! and Redis pub/sub delivers every topic to every instance anyway.
//!
//! A hub outlives a config reload: the connector built from the new config finds the hub
//! of the old one (same fan-out, same id), so sockets opened before the reload keep
//! getting their messages.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use switchboard_sdk::Fanout;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Messages a socket may have waiting before it is told to reconnect and resume.
pub const MAILBOX_LIMIT: usize = 256;

/// Something for one socket to send.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A stored agent message.
    Stored {
        /// Its sequence number.
        seq: u64,
        /// Its epoch.
        epoch: Arc<str>,
        /// The frame.
        text: Utf8Bytes,
    },
    /// A frame that is not stored (typing).
    Ephemeral(Utf8Bytes),
    /// Messages may have been missed: compare with the stored head.
    Check,
}

/// One socket's queue of frames to send.
#[derive(Debug, Default)]
pub struct Mailbox {
    queue: Mutex<VecDeque<Outgoing>>,
    notify: Notify,
    overflowed: AtomicBool,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Outgoing>> {
        // Every critical section is one push or pop, so a poisoned queue is still whole.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`; past [`MAILBOX_LIMIT`] the socket is marked to reconnect instead.
    pub fn push(&self, item: Outgoing) {
        {
            let mut queue = self.lock();
            if queue.len() >= MAILBOX_LIMIT {
                self.overflowed.store(true, Ordering::Relaxed);
            } else {
                queue.push_back(item);
            }
        }
        self.notify.notify_one();
    }

    /// The next item, waiting for one; `None` once the mailbox overflowed.
    pub async fn next(&self) -> Option<Outgoing> {
        loop {
            if self.overflowed.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(item) = self.lock().pop_front() {
                return Some(item);
            }
            self.notify.notified().await;
        }
    }
}

/// What travels on the fan-out topic.
#[derive(Debug, Serialize, Deserialize)]
pub struct FanoutMessage {
    /// The visitor's user id.
    pub user: String,
    /// Sequence number, for stored messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Epoch, for stored messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The frame text.
    pub frame: String,
}

impl FanoutMessage {
    /// The mailbox item this message becomes.
    pub fn into_outgoing(self) -> (String, Outgoing) {
        let item = match (self.seq, self.epoch) {
            (Some(seq), Some(epoch)) => Outgoing::Stored {
                seq,
                epoch: epoch.into(),
                text: self.frame.into(),
            },
            _ => Outgoing::Ephemeral(self.frame.into()),
        };
        (self.user, item)
    }
}

/// Sockets held and counts kept by one connector on this instance.
pub struct Hub {
    topic: String,
    fanout: Arc<dyn Fanout>,
    sockets: Mutex<HashMap<String, Vec<Arc<Mailbox>>>>,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    total: AtomicU32,
    listening: AtomicBool,
    stop: CancellationToken,
}

type HubKey = (usize, String);

static HUBS: LazyLock<Mutex<HashMap<HubKey, Weak<Hub>>>> = LazyLock::new(Default::default);

impl Hub {
    /// The hub of connector `connector_id` on `fanout`, shared with an earlier build of the
    /// same connector while that one is alive.
    pub fn shared(fanout: &Arc<dyn Fanout>, connector_id: &str) -> Arc<Hub> {
        // The fan-out object identifies "this process's services": the hub keeps it alive,
        // so its address cannot be reused while the entry is live.
        let key = (
            Arc::as_ptr(fanout).cast::<()>() as usize,
            connector_id.to_owned(),
        );
        let mut hubs = HUBS.lock().unwrap_or_else(|p| p.into_inner());
        hubs.retain(|_, hub| hub.strong_count() > 0);
        if let Some(hub) = hubs.get(&key).and_then(Weak::upgrade) {
            return hub;
        }
        let hub = Arc::new(Hub {
            topic: topic(connector_id),
            fanout: fanout.clone(),
            sockets: Mutex::default(),
            per_ip: Mutex::default(),
            total: AtomicU32::new(0),
            listening: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        hubs.insert(key, Arc::downgrade(&hub));
        hub
    }

    /// Starts listening to the fan-out topic, once; must run inside the runtime.
    pub fn listen(self: &Arc<Self>) {
        if self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        // Subscribed before returning, so nothing published after this call is missed.
        let mut receiver = self.fanout.subscribe(&self.topic);
        let hub = Arc::downgrade(self);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    _ = stop.cancelled() => return,
                    received = receiver.recv() => received,
                };
                let Some(hub) = hub.upgrade() else { return };
                match received {
                    Ok(payload) => match serde_json::from_slice::<FanoutMessage>(&payload) {
                        Ok(message) => {
                            let (user, item) = message.into_outgoing();
                            hub.push(&user, item);
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "unreadable web chat fan-out message")
                        }
                    },
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "web chat fan-out fell behind; sockets will check history"
                        );
                        hub.push_all(Outgoing::Check);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// The fan-out topic of this hub's connector.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn sockets(&self) -> MutexGuard<'_, HashMap<String, Vec<Arc<Mailbox>>>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `item` to every local socket of `user`; false when there is none.
    pub fn push(&self, user: &str, item: Outgoing) -> bool {
        let mailboxes = self.sockets().get(user).cloned().unwrap_or_default();
        for mailbox in &mailboxes {
            mailbox.push(item.clone());
        }
        !mailboxes.is_empty()
    }

    fn push_all(&self, item: Outgoing) {
        let all: Vec<Arc<Mailbox>> = self.sockets().values().flatten().cloned().collect();
        for mailbox in all {
            mailbox.push(item.clone());
        }
    }

    /// Sockets of `user` held here.
    pub fn sockets_of(&self, user: &str) -> usize {
        self.sockets().get(user).map_or(0, Vec::len)
    }

    /// Registers a socket of `user`, unless that would exceed `max_per_visitor`.
    pub fn register(self: &Arc<Self>, user: &str, max_per_visitor: u32) -> Option<Registration> {
        let mailbox = Arc::new(Mailbox::default());
        {
            let mut sockets = self.sockets();
            let list = sockets.entry(user.to_owned()).or_default();
            if list.len() >= max_per_visitor as usize {
                return None;
            }
            list.push(mailbox.clone());
        }
        Some(Registration {
            hub: self.clone(),
            user: user.to_owned(),
            mailbox,
        })
    }

    /// Counts a new connection from `ip` against the caps; `None` when a cap is reached.
    pub fn admit(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        max_total: u32,
        max_per_ip: u32,
    ) -> Option<Admission> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if let Some(ip) = ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let count = per_ip.entry(ip).or_default();
            if *count >= max_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *count += 1;
        }
        Some(Admission {
            hub: self.clone(),
            ip,
        })
    }

    /// Connections held now.
    pub fn connections(&self) -> u32 {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The fan-out topic of connector `connector_id`.
pub fn topic(connector_id: &str) -> String {
    format!("webchat:{connector_id}")
}

/// A counted connection; uncounted on drop.
pub struct Admission {
    hub: Arc<Hub>,
    ip: Option<IpAddr>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self.hub.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// A socket's place in the hub; removed on drop.
pub struct Registration {
    hub: Arc<Hub>,
    user: String,
    /// Where this socket's frames arrive.
    pub mailbox: Arc<Mailbox>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sockets = self.hub.sockets();
        if let Some(list) = sockets.get_mut(&self.user) {
            list.retain(|m| !Arc::ptr_eq(m, &self.mailbox));
            if list.is_empty() {
                sockets.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_sdk::services::LocalFanout;

    fn stored(seq: u64) -> Outgoing {
        Outgoing::Stored {
            seq,
            epoch: "e".into(),
            text: format!("{seq}").into(),
        }
    }

    #[tokio::test]
    async fn a_published_message_reaches_only_its_visitors_sockets() {
        let fanout: Arc<dyn Fanout> = Arc::new(LocalFanout::default());
        let hub = Hub::shared(&fanout, "t-reach");
        hub.listen();
        let a1 = hub.register("v-a", 4).unwrap();
        let a2 = hub.register("v-a", 4).unwrap();
        let b = hub.register("v-b", 4).unwrap();
        let message = FanoutMessage {
            user: "v-a".into(),
            seq: Some(1),
            epoch: Some("e".into()),
            frame: "hello".into(),
        };
        fanout
            .publish(hub.topic(), serde_json::to_vec(&message).unwrap())
            .await
            .unwrap();
        for reg in [&a1, &a2] {
            match reg.mailbox.next().await {
                Some(Outgoing::Stored { seq: 1, text, .. }) => assert_eq!(text.as_str(), "hello"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(b.mailbox.lock().is_empty());
    }

    #[test]
    fn caps_count_and_release() {
        let fanout: Arc<dyn Fanout> = Arc::new(LocalFanout::default());
        let hub = Hub::shared(&fanout, "t-caps");
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let first = hub.admit(Some(ip), 10, 2).unwrap();
        let _second = hub.admit(Some(ip), 10, 2).unwrap();
        assert!(hub.admit(Some(ip), 10, 2).is_none(), "per-ip cap");
        assert!(
            hub.admit(None, 3, 2).is_some(),
            "unknown addresses count only in total"
        );
        assert!(hub.admit(None, 2, 2).is_none(), "total cap");
        drop(first);
        assert!(
            hub.admit(Some(ip), 10, 2).is_some(),
            "a closed socket frees its slot"
        );

        let r1 = hub.register("v-x", 1).unwrap();
        assert!(hub.register("v-x", 1).is_none(), "per-visitor cap");
        drop(r1);
        assert_eq!(hub.sockets_of("v-x"), 0);
        assert!(hub.register("v-x", 1).is_some());
    }

    #[test]
    fn a_rebuilt_connector_finds_the_same_hub_while_it_lives() {
        let fanout: Arc<dyn Fanout> = Arc::new(LocalFanout::default());
        let other: Arc<dyn Fanout> = Arc::new(LocalFanout::default());
        let hub = Hub::shared(&fanout, "t-share");
        assert!(Arc::ptr_eq(&hub, &Hub::shared(&fanout, "t-share")));
        assert!(!Arc::ptr_eq(&hub, &Hub::shared(&other, "t-share")));
        assert!(!Arc::ptr_eq(&hub, &Hub::shared(&fanout, "t-other")));
    }

    #[tokio::test]
    async fn an_overflowing_mailbox_asks_for_a_reconnect() {
        let mailbox = Mailbox::default();
        for seq in 0..=MAILBOX_LIMIT as u64 {
            mailbox.push(stored(seq));
        }
        assert!(mailbox.next().await.is_none());
    }
}
