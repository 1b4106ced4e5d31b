//! Per-client MQTT session state and the registry of connected clients.
//!
//! Sessions are clean in this issue: a [`Session`] lives exactly as long as its connection and
//! holds what the MQTT state machine needs (subscriptions, the will, packet identifiers of
//! in-flight QoS 1/2 messages in both directions). Keeping it a separate struct means
//! persistent sessions (a later issue) become "keep the Session and its queue around after
//! disconnect" instead of a rewrite of the connection task.
//!
//! The [`SessionRegistry`] maps (tenant, client id) to the live connection so that a second
//! CONNECT with the same client id takes the session over, and so the broker can answer
//! "is this client connected?".

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use wulian_mqtt::{LastWill, QoS, ReasonCode, SubscriptionOptions};

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

/// Packet identifiers of outgoing QoS 1/2 messages that are not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Outgoing {
    next_id: u16,
    inflight: HashMap<u16, OutState>,
    /// How many may be unacknowledged at once (client Receive Maximum ∧ our max_inflight).
    window: u16,
}

impl Outgoing {
    pub(crate) fn new(window: u16) -> Outgoing {
        Outgoing {
            next_id: 1,
            inflight: HashMap::new(),
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
            if !self.inflight.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn commit(&mut self, packet_id: u16, qos: QoS) {
        let state = match qos {
            QoS::ExactlyOnce => OutState::Qos2Sent,
            _ => OutState::Qos1Sent,
        };
        self.inflight.insert(packet_id, state);
    }

    pub(crate) fn state(&self, packet_id: u16) -> Option<OutState> {
        self.inflight.get(&packet_id).copied()
    }

    pub(crate) fn set(&mut self, packet_id: u16, state: OutState) {
        self.inflight.insert(packet_id, state);
    }

    pub(crate) fn complete(&mut self, packet_id: u16) -> Option<OutState> {
        self.inflight.remove(&packet_id)
    }
}

/// The MQTT session of one client.
#[derive(Debug)]
pub(crate) struct Session {
    /// Granted subscriptions (mirrors the router; kept so sessions can be persisted later).
    pub(crate) subscriptions: HashMap<String, SubscriptionOptions>,
    /// Published if the connection ends without a normal DISCONNECT.
    pub(crate) will: Option<LastWill>,
    pub(crate) outgoing: Outgoing,
    /// Inbound QoS 2 packet ids that were PUBRECed and await PUBREL (exactly-once dedup).
    pub(crate) inbound_qos2: HashSet<u16>,
}

impl Session {
    pub(crate) fn new(window: u16, will: Option<LastWill>) -> Session {
        Session {
            subscriptions: HashMap::new(),
            will,
            outgoing: Outgoing::new(window),
            inbound_qos2: HashSet::new(),
        }
    }
}

/// Out-of-band instruction to a connection task.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Control {
    /// Close the connection, telling a 5.0 client why.
    Kick(ReasonCode),
}

struct Entry {
    conn_id: u64,
    control: mpsc::Sender<Control>,
}

/// Live connections by tenant and client id.
#[derive(Default)]
pub(crate) struct SessionRegistry {
    clients: Mutex<HashMap<String, HashMap<String, Entry>>>,
}

impl SessionRegistry {
    /// Registers a connection; an older connection with the same client id is told to close
    /// with SessionTakenOver. Returns whether a takeover happened.
    pub(crate) fn register(
        &self,
        tenant: &str,
        client_id: &str,
        conn_id: u64,
        control: mpsc::Sender<Control>,
    ) -> bool {
        let old = {
            let mut clients = self.clients.lock();
            clients
                .entry(tenant.to_owned())
                .or_default()
                .insert(client_id.to_owned(), Entry { conn_id, control })
        };
        match old {
            Some(old) => {
                // A full or closed channel means the old connection is already closing.
                if let Err(e) = old
                    .control
                    .try_send(Control::Kick(ReasonCode::SessionTakenOver))
                {
                    tracing::debug!(tenant, client_id, error = %e, "previous connection already closing");
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
        // A full or closed channel means the connection is already closing.
        if let Err(e) = entry.control.try_send(Control::Kick(code)) {
            tracing::debug!(tenant, client_id, error = %e, "connection already closing");
        }
        true
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

    #[test]
    fn packet_ids_skip_inflight_and_zero() {
        let mut o = Outgoing::new(2);
        let a = o.next_packet_id();
        o.commit(a, QoS::AtLeastOnce);
        let b = o.next_packet_id();
        assert_ne!(a, b);
        o.commit(b, QoS::ExactlyOnce);
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
        let (tx1, mut rx1) = mpsc::channel(1);
        let (tx2, _rx2) = mpsc::channel(1);
        assert!(!reg.register("t", "c", 1, tx1));
        assert!(reg.register("t", "c", 2, tx2));
        assert!(matches!(
            rx1.try_recv(),
            Ok(Control::Kick(ReasonCode::SessionTakenOver))
        ));
        reg.unregister("t", "c", 1);
        assert!(reg.is_connected("t", "c"));
        reg.unregister("t", "c", 2);
        assert!(!reg.is_connected("t", "c"));
    }
}
