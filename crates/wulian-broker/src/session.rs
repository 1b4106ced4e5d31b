//! Per-client MQTT session state and the registry of connected clients and persistent
//! sessions.
//!
//! A [`Session`] is what the connection task's state machine works on (subscriptions, the
//! will, in-flight QoS 1/2 messages in both directions). A clean session lives exactly as long
//! as its connection. A persistent session (3.1.1 clean session = 0, 5.0 session expiry > 0)
//! additionally has a [`Persistent`] record that outlives the connection: while the client is
//! offline the router queues matching messages into it ([`Parked`]), and when the client comes
//! back the connection takes the queue, the in-flight messages and the subscriptions over.
//!
//! The [`SessionRegistry`] maps (tenant, client id) to the live connection so that a second
//! CONNECT with the same client id takes the session over, and so the broker can answer
//! "is this client connected?"; it also holds the persistent sessions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;
use tokio::time::Instant;
use wulian_mqtt::{LastWill, QoS, ReasonCode};

use crate::auth::Identity;
use crate::config::QueueOverflow;
use crate::mailbox::Postbox;
use crate::router::{Delivery, SubEntry, SubscriberId};

/// Where an outgoing QoS 1/2 message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    Qos1Sent,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    Qos2Sent,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

impl OutState {
    /// Code used by the store.
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            OutState::Qos1Sent => 1,
            OutState::Qos2Sent => 2,
            OutState::Released => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<OutState> {
        match v {
            1 => Some(OutState::Qos1Sent),
            2 => Some(OutState::Qos2Sent),
            3 => Some(OutState::Released),
            _ => None,
        }
    }
}

/// An unacknowledged outgoing message: what to resend on reconnect (MQTT 4.4).
#[derive(Debug, Clone)]
pub(crate) struct InflightEntry {
    pub(crate) packet_id: u16,
    pub(crate) state: OutState,
    /// The message; None once released (only PUBREL is resent).
    pub(crate) delivery: Option<Delivery>,
}

#[derive(Debug)]
struct Slot {
    state: OutState,
    delivery: Option<Delivery>,
    order: u64,
}

/// A collection that exists only once something is in it: every connection holds its session
/// for its whole life, mostly empty, and a null pointer is 8 bytes where an empty B-tree map
/// is 24 and a `HashMap` 48 (its hasher state).
#[derive(Debug)]
pub(crate) struct Lazy<T>(Option<Box<T>>);

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Lazy(None)
    }
}

impl<T: Default> Lazy<T> {
    pub(crate) fn get(&self) -> Option<&T> {
        self.0.as_deref()
    }

    /// The collection, created if need be.
    pub(crate) fn make_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }

    pub(crate) fn get_mut(&mut self) -> Option<&mut T> {
        self.0.as_deref_mut()
    }

    /// Everything, leaving nothing allocated.
    pub(crate) fn take(&mut self) -> T {
        self.0.take().map(|b| *b).unwrap_or_default()
    }
}

impl<K: Ord, V> Lazy<BTreeMap<K, V>> {
    pub(crate) fn len(&self) -> usize {
        self.get().map_or(0, BTreeMap::len)
    }

    /// Removes `key`; the map goes when it is empty.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let map = self.0.as_deref_mut()?;
        let v = map.remove(key);
        if map.is_empty() {
            self.0 = None;
        }
        v
    }
}

impl<K: Ord> Lazy<BTreeSet<K>> {
    pub(crate) fn len(&self) -> usize {
        self.get().map_or(0, BTreeSet::len)
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.get().is_some_and(|s| s.contains(key))
    }

    /// Removes `key`; the set goes when it is empty.
    pub(crate) fn remove(&mut self, key: &K) -> bool {
        let Some(set) = self.0.as_deref_mut() else {
            return false;
        };
        let removed = set.remove(key);
        if set.is_empty() {
            self.0 = None;
        }
        removed
    }
}

/// Packet identifiers of outgoing QoS 1/2 messages that are not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Outgoing {
    next_id: u16,
    next_order: u64,
    inflight: Lazy<BTreeMap<u16, Slot>>,
    /// How many may be unacknowledged at once (client Receive Maximum ∧ our max_inflight).
    window: u16,
}

impl Outgoing {
    pub(crate) fn new(window: u16) -> Outgoing {
        Outgoing {
            next_id: 1,
            next_order: 0,
            inflight: Lazy::default(),
            window: window.max(1),
        }
    }

    /// Is there room for one more QoS 1/2 message?
    pub(crate) fn has_room(&self) -> bool {
        self.inflight.len() < usize::from(self.window)
    }

    /// A packet identifier not currently in flight (not yet reserved: call [`Self::commit`]).
    pub(crate) fn next_packet_id(&mut self) -> u16 {
        // The window is below 65535, so a free id always exists.
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.inflight.get().is_some_and(|m| m.contains_key(&id)) {
                return id;
            }
        }
    }

    /// Records a sent QoS 1/2 message (kept for redelivery after a reconnect).
    pub(crate) fn commit(&mut self, packet_id: u16, delivery: Delivery) {
        let state = match delivery.qos {
            QoS::ExactlyOnce => OutState::Qos2Sent,
            _ => OutState::Qos1Sent,
        };
        self.insert(packet_id, state, Some(delivery));
    }

    fn insert(&mut self, packet_id: u16, state: OutState, delivery: Option<Delivery>) {
        let order = self.next_order;
        self.next_order += 1;
        self.inflight.make_mut().insert(
            packet_id,
            Slot {
                state,
                delivery,
                order,
            },
        );
    }

    pub(crate) fn state(&self, packet_id: u16) -> Option<OutState> {
        self.inflight.get()?.get(&packet_id).map(|s| s.state)
    }

    /// Moves a message to `Released` (PUBREL sent): the message itself is no longer needed.
    pub(crate) fn release(&mut self, packet_id: u16) {
        if let Some(slot) = self.inflight.get_mut().and_then(|m| m.get_mut(&packet_id)) {
            slot.state = OutState::Released;
            slot.delivery = None;
        }
    }

    pub(crate) fn complete(&mut self, packet_id: u16) -> Option<OutState> {
        self.inflight.remove(&packet_id).map(|s| s.state)
    }

    /// Takes every unacknowledged message out, oldest first.
    pub(crate) fn export(&mut self) -> Vec<InflightEntry> {
        let mut slots: Vec<(u16, Slot)> = self.inflight.take().into_iter().collect();
        slots.sort_by_key(|(_, s)| s.order);
        slots
            .into_iter()
            .map(|(packet_id, s)| InflightEntry {
                packet_id,
                state: s.state,
                delivery: s.delivery,
            })
            .collect()
    }

    /// Restores messages that were in flight when the session was last connected.
    pub(crate) fn import(&mut self, entries: &[InflightEntry]) {
        for e in entries {
            self.insert(e.packet_id, e.state, e.delivery.clone());
        }
    }
}

/// A message queued for a persistent session, with its broker-wide sequence number.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) seq: u64,
    pub(crate) delivery: Delivery,
}

/// A will waiting for its delay (MQTT 5.0 3.1.3.2.2) while the session is offline.
#[derive(Debug)]
pub(crate) struct PendingWill {
    pub(crate) will: LastWill,
    pub(crate) identity: Identity,
    pub(crate) due: Instant,
}

/// Offline-queue limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) max: usize,
    pub(crate) overflow: QueueOverflow,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max: 1000,
            overflow: QueueOverflow::DropOldest,
        }
    }
}

/// What [`Parked::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    Queued,
    /// Queued after dropping the oldest message.
    QueuedDroppedOldest,
    /// Not queued (queue full, drop newest).
    Dropped,
}

/// The part of a persistent session that outlives connections.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    /// The connection currently attached, if any.
    pub(crate) online: Option<u64>,
    /// Session expiry interval in seconds (`u32::MAX` = never).
    pub(crate) expiry_secs: u32,
    /// When the client went offline (for expiry).
    pub(crate) offline_since: Option<Instant>,
    /// Wall-clock form of `offline_since`, for the store (Unix ms).
    pub(crate) offline_since_ms: Option<u64>,
    pub(crate) subscriptions: HashMap<String, SubEntry>,
    pub(crate) inflight: Vec<InflightEntry>,
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) inbound_qos2: HashSet<u16>,
    pub(crate) will: Option<PendingWill>,
    /// The session was discarded or expired: queue nothing more.
    pub(crate) ended: bool,
}

impl Parked {
    /// Queues a message for the offline client, applying the overflow policy.
    pub(crate) fn push(
        &mut self,
        delivery: Delivery,
        limits: QueueLimits,
        next_seq: &AtomicU64,
    ) -> (PushOutcome, Option<Queued>) {
        let mut outcome = PushOutcome::Queued;
        if self.queue.len() >= limits.max.max(1) {
            match limits.overflow {
                QueueOverflow::DropNewest => return (PushOutcome::Dropped, None),
                QueueOverflow::DropOldest => {
                    self.queue.pop_front();
                    outcome = PushOutcome::QueuedDroppedOldest;
                }
            }
        }
        let seq = next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queued = Queued { seq, delivery };
        self.queue.push_back(queued.clone());
        (outcome, Some(queued))
    }
}

/// A persistent session.
#[derive(Debug)]
pub(crate) struct Persistent {
    pub(crate) tenant: String,
    pub(crate) client_id: String,
    /// Its identity in the router (stable across connections).
    pub(crate) sub_id: SubscriberId,
    pub(crate) state: Mutex<Parked>,
}

/// The MQTT session of one client.
#[derive(Debug)]
pub(crate) struct Session {
    /// Granted subscriptions (mirrors the router).
    pub(crate) subscriptions: Lazy<BTreeMap<String, SubEntry>>,
    /// Published if the connection ends without a normal DISCONNECT. Boxed: a will with its
    /// properties is ~400 bytes, held for the connection's life, and most clients have none.
    pub(crate) will: Option<Box<LastWill>>,
    pub(crate) outgoing: Outgoing,
    /// Inbound QoS 2 packet ids that were PUBRECed and await PUBREL (exactly-once dedup).
    pub(crate) inbound_qos2: Lazy<BTreeSet<u16>>,
}

impl Session {
    pub(crate) fn new(window: u16, will: Option<LastWill>) -> Session {
        Session {
            subscriptions: Lazy::default(),
            will: will.map(Box::new),
            outgoing: Outgoing::new(window),
            inbound_qos2: Lazy::default(),
        }
    }
}

struct Entry {
    conn_id: u64,
    /// The connection's inbox, for close requests.
    control: Postbox,
}

type SessionKey = (String, String);

/// Live connections by tenant and client id, and the persistent sessions.
#[derive(Default)]
pub(crate) struct SessionRegistry {
    /// Keyed by the connection's own client id (shared with it, not copied).
    clients: Mutex<HashMap<String, HashMap<Arc<str>, Entry>>>,
    persistent: Mutex<HashMap<SessionKey, Arc<Persistent>>>,
}

impl SessionRegistry {
    pub(crate) fn persistent(&self, tenant: &str, client_id: &str) -> Option<Arc<Persistent>> {
        self.persistent
            .lock()
            .get(&(tenant.to_owned(), client_id.to_owned()))
            .cloned()
    }

    pub(crate) fn insert_persistent(&self, p: Arc<Persistent>) {
        self.persistent
            .lock()
            .insert((p.tenant.clone(), p.client_id.clone()), p);
    }

    /// Forgets a persistent session (if it is still this one); returns whether it was.
    pub(crate) fn remove_persistent(&self, p: &Arc<Persistent>) -> bool {
        let mut map = self.persistent.lock();
        let key = (p.tenant.clone(), p.client_id.clone());
        if map.get(&key).is_some_and(|cur| Arc::ptr_eq(cur, p)) {
            map.remove(&key);
            true
        } else {
            false
        }
    }

    pub(crate) fn all_persistent(&self) -> Vec<Arc<Persistent>> {
        self.persistent.lock().values().cloned().collect()
    }

    /// Registers a connection; an older connection with the same client id is told to close
    /// with SessionTakenOver. Returns whether a takeover happened.
    pub(crate) fn register(
        &self,
        tenant: &str,
        client_id: &Arc<str>,
        conn_id: u64,
        control: Postbox,
    ) -> bool {
        let old = {
            let mut clients = self.clients.lock();
            clients
                .entry(tenant.to_owned())
                .or_default()
                .insert(Arc::clone(client_id), Entry { conn_id, control })
        };
        let client_id = &**client_id;
        match old {
            Some(old) => {
                if !old.control.kick(ReasonCode::SessionTakenOver) {
                    tracing::debug!(tenant, client_id, "previous connection already closing");
                }
                true
            }
            None => false,
        }
    }

    /// Removes the registration if it still belongs to `conn_id` (not to a newer connection
    /// that took the client id over).
    pub(crate) fn unregister(&self, tenant: &str, client_id: &str, conn_id: u64) {
        let mut clients = self.clients.lock();
        if let Some(map) = clients.get_mut(tenant) {
            if map.get(client_id).is_some_and(|e| e.conn_id == conn_id) {
                map.remove(client_id);
            }
            if map.is_empty() {
                clients.remove(tenant);
            }
        }
    }

    /// Tells the connection of `client_id` in `tenant` to close with `code`. Returns whether
    /// such a connection was registered.
    pub(crate) fn kick(&self, tenant: &str, client_id: &str, code: ReasonCode) -> bool {
        let clients = self.clients.lock();
        let Some(entry) = clients.get(tenant).and_then(|m| m.get(client_id)) else {
            return false;
        };
        if !entry.control.kick(code) {
            tracing::debug!(tenant, client_id, "connection already closing");
        }
        true
    }

    /// Asks every connection whose keep-alive deadline passed by `now_ms` to close (MQTT-3.1.2-24:
    /// nothing received for one and a half keep-alive periods). Returns how many.
    pub(crate) fn expire_keep_alive(&self, now_ms: u64) -> usize {
        let clients = self.clients.lock();
        let mut expired = 0;
        for entry in clients.values().flat_map(HashMap::values) {
            if entry.control.keep_alive_expired(now_ms)
                && entry.control.kick(ReasonCode::KeepAliveTimeout)
            {
                expired += 1;
            }
        }
        expired
    }

    /// Asks every connection that came through `listener` to close with `code` (shutdown).
    /// Returns how many were asked.
    pub(crate) fn kick_listener(&self, listener: u64, code: ReasonCode) -> usize {
        let clients = self.clients.lock();
        clients
            .values()
            .flat_map(HashMap::values)
            .filter(|entry| entry.control.listener() == listener && entry.control.kick(code))
            .count()
    }

    /// Clients past CONNACK, over all tenants.
    pub(crate) fn connected_count(&self) -> usize {
        self.clients.lock().values().map(HashMap::len).sum()
    }

    pub(crate) fn is_connected(&self, tenant: &str, client_id: &str) -> bool {
        self.clients
            .lock()
            .get(tenant)
            .is_some_and(|m| m.contains_key(client_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(qos: QoS) -> Delivery {
        Delivery {
            msg: std::sync::Arc::new(crate::router::RoutedMessage::new(
                "t".into(),
                bytes::Bytes::new(),
                qos,
                false,
                &wulian_mqtt::Properties::default(),
                None,
            )),
            qos,
            retain: false,
            sub_ids: Vec::new(),
        }
    }

    #[test]
    fn export_keeps_send_order_and_release_drops_message() {
        let mut o = Outgoing::new(10);
        for id in [9, 3, 5] {
            o.commit(id, delivery(QoS::ExactlyOnce));
        }
        o.release(3);
        let out = o.export();
        let ids: Vec<u16> = out.iter().map(|e| e.packet_id).collect();
        assert_eq!(ids, vec![9, 3, 5]);
        assert_eq!(out[1].state, OutState::Released);
        assert!(out[1].delivery.is_none());
        assert!(o.has_room());
    }

    #[test]
    fn parked_queue_overflow_policies() {
        let seq = AtomicU64::new(1);
        let mut p = Parked::default();
        let oldest = QueueLimits {
            max: 2,
            overflow: QueueOverflow::DropOldest,
        };
        for _ in 0..2 {
            assert_eq!(
                p.push(delivery(QoS::AtLeastOnce), oldest, &seq).0,
                PushOutcome::Queued
            );
        }
        let (o, q) = p.push(delivery(QoS::AtLeastOnce), oldest, &seq);
        assert_eq!(o, PushOutcome::QueuedDroppedOldest);
        assert_eq!(q.unwrap().seq, 3);
        assert_eq!(p.queue.front().unwrap().seq, 2);
        let newest = QueueLimits {
            max: 2,
            overflow: QueueOverflow::DropNewest,
        };
        assert_eq!(
            p.push(delivery(QoS::AtLeastOnce), newest, &seq).0,
            PushOutcome::Dropped
        );
        assert_eq!(p.queue.back().unwrap().seq, 3);
    }

    #[test]
    fn packet_ids_skip_inflight_and_zero() {
        let mut o = Outgoing::new(2);
        let a = o.next_packet_id();
        o.commit(a, delivery(QoS::AtLeastOnce));
        let b = o.next_packet_id();
        assert_ne!(a, b);
        o.commit(b, delivery(QoS::ExactlyOnce));
        assert!(!o.has_room());
        assert_eq!(o.state(b), Some(OutState::Qos2Sent));
        o.complete(a);
        assert!(o.has_room());
        o.next_id = u16::MAX;
        assert_eq!(o.next_packet_id(), u16::MAX);
        let c = o.next_packet_id();
        assert_ne!(c, 0);
        assert_ne!(c, b);
    }

    #[test]
    fn registry_takeover_keeps_newest() {
        let reg = SessionRegistry::default();
        let (tx1, rx1) = crate::mailbox::mailbox(1);
        let (tx2, rx2) = crate::mailbox::mailbox(1);
        assert!(!reg.register("t", &"c".into(), 1, tx1));
        assert!(reg.register("t", &"c".into(), 2, tx2));
        assert_eq!(rx1.pending_kick(), Some(ReasonCode::SessionTakenOver));
        assert_eq!(rx2.pending_kick(), None);
        reg.unregister("t", "c", 1);
        assert!(reg.is_connected("t", "c"));
        reg.unregister("t", "c", 2);
        assert!(!reg.is_connected("t", "c"));
    }
}
