//! Glue between the broker's in-memory state and its durable [`Store`]: conversions between
//! routed messages and stored ones, restoring sessions and retained messages at startup, and
//! the asynchronous write-through helpers (which log and count failures instead of failing
//! the client: the in-memory state stays authoritative while the broker runs).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use wulian_mqtt::{Publish, QoS};

use crate::Shared;
use crate::metrics::Metrics;
use crate::router::{Delivery, RoutedMessage, SubEntry};
use crate::session::{InflightEntry, OutState, Parked, Persistent, Queued};
use crate::store::{self, Store, StoredMessage, StoredRetained, StoredSession};

/// Wall-clock expiry of a message from its expiry interval and age.
fn expires_at_ms(msg: &RoutedMessage, now_ms: u64) -> Option<u64> {
    let interval = msg.properties.message_expiry_interval?;
    let left = Duration::from_secs(u64::from(interval)).saturating_sub(msg.received_at.elapsed());
    Some(now_ms.saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)))
}

fn to_publish(msg: &RoutedMessage, qos: QoS, retain: bool) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: msg.topic.clone(),
        packet_id: 0,
        payload: msg.payload.clone(),
        properties: msg.properties.clone(),
    }
}

pub(crate) fn stored_message(
    seq: u64,
    delivery: &Delivery,
    inflight: Option<(u16, OutState)>,
    now_ms: u64,
) -> StoredMessage {
    let mut publish = to_publish(&delivery.msg, delivery.qos, delivery.retain);
    publish.properties.subscription_identifiers = delivery.sub_ids.clone();
    StoredMessage {
        seq,
        inflight: inflight.map(|(id, s)| (id, s.to_u8())),
        publish: Some(publish),
        expires_at_ms: expires_at_ms(&delivery.msg, now_ms),
    }
}

/// A stored message as a routed one; None when it has expired.
fn routed_from(mut p: Publish, expires_at_ms: Option<u64>, now_ms: u64) -> Option<Delivery> {
    if let Some(at) = expires_at_ms {
        let left = store::remaining(at, now_ms)?;
        // Round up so a message with 0.5 s left is not announced as already expired.
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        p.properties.message_expiry_interval = Some(u32::try_from(secs).unwrap_or(u32::MAX));
    }
    let sub_ids = std::mem::take(&mut p.properties.subscription_identifiers);
    let msg = RoutedMessage {
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: p.properties,
        received_at: Instant::now(),
        origin: None,
    };
    Some(Delivery {
        msg: Arc::new(msg),
        qos: p.qos,
        retain: p.retain,
        sub_ids,
    })
}

/// The durable form of a persistent session's state (taken under its lock).
pub(crate) fn snapshot(
    p: &Persistent,
    state: &Parked,
    now_ms: u64,
    next_seq: u64,
) -> StoredSession {
    let mut messages = Vec::with_capacity(state.inflight.len() + state.queue.len());
    // In-flight messages get sequence numbers above every queued one; they are told apart
    // by their packet id and resent first.
    for (seq, e) in (next_seq..).zip(state.inflight.iter()) {
        let m = match &e.delivery {
            Some(d) => stored_message(seq, d, Some((e.packet_id, e.state)), now_ms),
            None => StoredMessage {
                seq,
                inflight: Some((e.packet_id, e.state.to_u8())),
                publish: None,
                expires_at_ms: None,
            },
        };
        messages.push(m);
    }
    for q in &state.queue {
        messages.push(stored_message(q.seq, &q.delivery, None, now_ms));
    }
    let mut inbound_qos2: Vec<u16> = state.inbound_qos2.iter().copied().collect();
    inbound_qos2.sort_unstable();
    StoredSession {
        tenant: p.tenant.clone(),
        client_id: p.client_id.clone(),
        expiry_secs: state.expiry_secs,
        disconnected_at_ms: state.offline_since_ms,
        subscriptions: state
            .subscriptions
            .iter()
            .map(|(f, e)| (f.clone(), e.options, e.id))
            .collect(),
        inbound_qos2,
        messages,
    }
}

/// Rebuilds persistent sessions and retained messages from the store (at startup).
pub(crate) fn restore(shared: &Shared, store: &dyn Store) -> store::Result<()> {
    let now_ms = store::now_ms();
    let now = Instant::now();
    let mut max_seq = 0;
    let sessions = store.load_sessions()?;
    let limits = shared.router.limits();
    let count = sessions.len();
    for s in sessions {
        let mut state = Parked {
            expiry_secs: s.expiry_secs,
            ..Parked::default()
        };
        // Offline since the recorded disconnect; a session that was connected when the
        // broker stopped counts as disconnected now.
        let since_ms = s.disconnected_at_ms.unwrap_or(now_ms);
        let ago = Duration::from_millis(now_ms.saturating_sub(since_ms));
        state.offline_since = Some(now.checked_sub(ago).unwrap_or(now));
        state.offline_since_ms = Some(since_ms);
        state.inbound_qos2 = s.inbound_qos2.into_iter().collect::<HashSet<_>>();
        let mut queue = VecDeque::new();
        for m in s.messages {
            max_seq = max_seq.max(m.seq);
            match (m.inflight, m.publish) {
                (Some((packet_id, code)), publish) => {
                    let Some(st) = OutState::from_u8(code) else {
                        continue;
                    };
                    let delivery = match publish {
                        Some(p) => match routed_from(p, m.expires_at_ms, now_ms) {
                            Some(d) => Some(d),
                            // Expired while unacknowledged: nothing to resend.
                            None => continue,
                        },
                        None => None,
                    };
                    state.inflight.push(InflightEntry {
                        packet_id,
                        state: st,
                        delivery,
                    });
                }
                (None, Some(p)) => {
                    if let Some(delivery) = routed_from(p, m.expires_at_ms, now_ms) {
                        queue.push_back(Queued {
                            seq: m.seq,
                            delivery,
                        });
                    }
                }
                (None, None) => {}
            }
        }
        // Rows dropped by the overflow policy may linger until the next snapshot.
        while queue.len() > limits.max.max(1) {
            queue.pop_front();
        }
        state.queue = queue;
        let sub_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let persistent = Arc::new(Persistent {
            tenant: s.tenant.clone(),
            client_id: s.client_id.clone(),
            sub_id,
            state: parking_lot::Mutex::new(state),
        });
        shared.router.attach(&s.tenant, sub_id, None, &persistent);
        for (filter, options, id) in s.subscriptions {
            shared
                .router
                .subscribe(&s.tenant, sub_id, &filter, options, id);
            persistent
                .state
                .lock()
                .subscriptions
                .insert(filter, SubEntry { options, id });
        }
        shared.sessions.insert_persistent(persistent);
        Metrics::inc(&shared.metrics.sessions_persistent);
    }
    shared
        .router
        .next_seq
        .fetch_max(max_seq + 1, Ordering::Relaxed);

    let mut retained = 0;
    for r in store.load_retained()? {
        let Some(d) = routed_from(r.publish, r.expires_at_ms, now_ms) else {
            continue;
        };
        let msg = Arc::try_unwrap(d.msg).unwrap_or_else(|a| RoutedMessage {
            topic: a.topic.clone(),
            payload: a.payload.clone(),
            qos: a.qos,
            retain: a.retain,
            properties: a.properties.clone(),
            received_at: a.received_at,
            origin: None,
        });
        shared.retained.set(&r.tenant, Arc::new(msg));
        retained += 1;
    }
    shared
        .metrics
        .retained_messages
        .store(shared.retained.len() as u64, Ordering::Relaxed);
    tracing::info!(
        sessions = count,
        retained,
        "broker state restored from the store"
    );
    Ok(())
}

impl Shared {
    /// Runs a store write if the broker has a store; failures are logged and counted.
    pub(crate) async fn store_write<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&dyn Store) -> store::Result<()> + Send + 'static,
    {
        let Some(s) = &self.store else {
            return;
        };
        if let Err(e) = store::run(s, f).await {
            Metrics::inc(&self.metrics.store_errors_total);
            tracing::error!(error = %e, what, "broker store write failed");
        }
    }

    /// Makes messages queued for offline sessions durable.
    pub(crate) async fn persist_parked(&self, parked: Vec<(Arc<Persistent>, Queued)>) {
        if parked.is_empty() || self.store.is_none() {
            return;
        }
        let now_ms = store::now_ms();
        let batch: Vec<(String, String, StoredMessage)> = parked
            .iter()
            .map(|(p, q)| {
                (
                    p.tenant.clone(),
                    p.client_id.clone(),
                    stored_message(q.seq, &q.delivery, None, now_ms),
                )
            })
            .collect();
        self.store_write("queue message", move |s| s.append_messages(&batch))
            .await;
    }

    /// Stores or deletes a retained message.
    pub(crate) async fn persist_retained(&self, tenant: &str, msg: &RoutedMessage) {
        if self.store.is_none() {
            return;
        }
        let tenant = tenant.to_owned();
        if msg.payload.is_empty() {
            let retained = [(tenant, msg.topic.clone())];
            self.store_write("delete retained", move |s| s.delete_retained(&retained))
                .await;
        } else {
            let r = StoredRetained {
                tenant,
                publish: to_publish(msg, msg.qos, true),
                expires_at_ms: expires_at_ms(msg, store::now_ms()),
            };
            self.store_write("store retained", move |s| s.put_retained(&r))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use wulian_mqtt::Properties;

    fn expiry_of(d: &Delivery) -> Option<u32> {
        d.msg.properties.message_expiry_interval
    }

    #[test]
    fn stored_roundtrip_keeps_remaining_expiry() {
        let props = Properties {
            message_expiry_interval: Some(100),
            ..Properties::default()
        };
        let d = Delivery {
            msg: Arc::new(RoutedMessage::new(
                "a".into(),
                Bytes::from_static(b"x"),
                QoS::AtLeastOnce,
                false,
                &props,
                None,
            )),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: vec![4],
        };
        let now = 1_000_000;
        let m = stored_message(1, &d, None, now);
        let at = m.expires_at_ms.unwrap();
        assert!((now + 99_000..=now + 100_000).contains(&at));
        let back = routed_from(
            m.publish.clone().unwrap(),
            Some(now + 100_000),
            now + 40_000,
        )
        .unwrap();
        assert_eq!(expiry_of(&back), Some(60));
        assert_eq!(back.sub_ids, vec![4]);
        assert!(routed_from(m.publish.unwrap(), Some(now + 100_000), now + 100_000).is_none());
    }
}
