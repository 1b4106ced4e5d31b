//! Subscription tree and fan-out, one tree per tenant.
//!
//! Tenants are isolated by construction: every operation names the tenant and only that
//! tenant's tree is consulted, so identical topics in two tenants never meet. Fan-out never
//! blocks the publisher: each subscriber has a bounded queue and a message that does not fit
//! is dropped for that subscriber and counted. A persistent session whose client is offline
//! stays in the tree; its messages go to the session's bounded offline queue instead
//! (and are reported back so the caller can make them durable).
//!
//! The tree is a trie over topic levels whose `+` and `#` children hold wildcard
//! subscriptions; matching is iterative so deep topics cannot exhaust the stack, and filters
//! are limited to [`MAX_FILTER_LEVELS`] levels so recursive removal stays shallow.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use wulian_mqtt::{Properties, QoS, SubscriptionOptions, topic};

use crate::lane::Wakes;
use crate::mailbox::{Mailbox, Postbox};
use crate::session::{Persistent, PushOutcome, QueueLimits, Queued};

/// Identifies one connection (unique for the broker's lifetime).
pub(crate) type SubscriberId = u64;

/// Deepest topic filter accepted in a subscription.
pub(crate) const MAX_FILTER_LEVELS: usize = 64;

/// A message being routed: shared by all the subscribers it is queued to.
#[derive(Debug)]
pub(crate) struct RoutedMessage {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// Only the properties that are forwarded to subscribers.
    pub(crate) properties: Properties,
    /// When the broker received it (for message expiry).
    pub(crate) received_at: Instant,
    /// The publishing connection (for no-local), none for server-originated messages.
    pub(crate) origin: Option<SubscriberId>,
}

impl RoutedMessage {
    pub(crate) fn new(
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: &Properties,
        origin: Option<SubscriberId>,
    ) -> RoutedMessage {
        RoutedMessage {
            topic,
            payload,
            qos,
            retain,
            properties: forwardable(properties),
            received_at: Instant::now(),
            origin,
        }
    }
}

impl RoutedMessage {
    /// A copy for the retained store / durable write (payload and properties are shared).
    pub(crate) fn retained_copy(&self) -> RoutedMessage {
        RoutedMessage {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: true,
            properties: self.properties.clone(),
            received_at: self.received_at,
            origin: None,
        }
    }
}

/// The properties of a PUBLISH that travel from publisher to subscriber (MQTT 5.0 3.3.2.3);
/// topic alias and subscription identifiers are per-connection and dropped.
pub(crate) fn forwardable(p: &Properties) -> Properties {
    Properties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        ..Properties::default()
    }
}

/// One message queued to one subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) msg: Arc<RoutedMessage>,
    /// min(publish QoS, granted QoS), highest over the subscriber's matching subscriptions.
    pub(crate) qos: QoS,
    /// Retain flag to deliver with (retain-as-published).
    pub(crate) retain: bool,
    /// Subscription identifiers of the matching subscriptions (MQTT 5.0 3.3.4).
    pub(crate) sub_ids: Vec<u32>,
}

/// What happened to a routed message.
#[derive(Debug, Default)]
pub(crate) struct RouteOutcome {
    /// Sessions it was queued to (online or offline).
    pub(crate) queued: usize,
    /// Online subscribers whose queue was full.
    pub(crate) dropped: usize,
    /// Messages lost to an offline queue's overflow policy.
    pub(crate) overflow: usize,
    /// Messages queued for offline persistent sessions (to be made durable).
    pub(crate) parked: Vec<(Arc<Persistent>, Queued)>,
}

/// One subscription of one subscriber at a node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubEntry {
    pub(crate) options: SubscriptionOptions,
    /// MQTT 5.0 subscription identifier.
    pub(crate) id: Option<u32>,
}

/// The members of one shared subscription group (`$share/{group}/{filter}`) at a node;
/// each message goes to one online member, round robin (MQTT 5.0 4.8.2).
#[derive(Default)]
struct ShareGroup {
    members: Vec<(SubscriberId, SubEntry)>,
    next: AtomicUsize,
}

#[derive(Default)]
struct Node {
    children: HashMap<String, Node>,
    subs: HashMap<SubscriberId, SubEntry>,
    shared: HashMap<String, ShareGroup>,
}

/// A filter split into its share group (if shared) and the topic filter proper.
fn split_filter(filter: &str) -> (Option<&str>, &str) {
    match topic::shared_subscription(filter) {
        Some((group, inner)) => (Some(group), inner),
        None => (None, filter),
    }
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty() && self.shared.is_empty()
    }

    fn remove_here(&mut self, group: Option<&str>, id: SubscriberId) -> bool {
        match group {
            None => self.subs.remove(&id).is_some(),
            Some(g) => {
                let Some(share) = self.shared.get_mut(g) else {
                    return false;
                };
                let before = share.members.len();
                share.members.retain(|(m, _)| *m != id);
                let removed = share.members.len() != before;
                if share.members.is_empty() {
                    self.shared.remove(g);
                }
                removed
            }
        }
    }

    /// Removes `id` (from share `group`, if given) at `levels`, pruning emptied nodes. Depth
    /// is bounded by [`MAX_FILTER_LEVELS`].
    fn remove(&mut self, levels: &[&str], group: Option<&str>, id: SubscriberId) -> bool {
        match levels.split_first() {
            None => self.remove_here(group, id),
            Some((first, rest)) => {
                let Some(child) = self.children.get_mut(*first) else {
                    return false;
                };
                let removed = child.remove(rest, group, id);
                if child.is_empty() {
                    self.children.remove(*first);
                }
                removed
            }
        }
    }
}

struct Subscriber {
    /// The connection's queue; None while a persistent session is offline.
    tx: Option<Postbox>,
    /// The persistent session behind this subscriber, if any.
    parked: Option<Arc<Persistent>>,
    filters: Vec<String>,
}

/// Matches of one subscriber: (QoS, retain, subscription identifiers).
type Match = (QoS, bool, Vec<u32>);

#[derive(Default)]
struct TenantRoutes {
    root: Node,
    subscribers: HashMap<SubscriberId, Subscriber>,
}

impl TenantRoutes {
    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.root.is_empty()
    }

    /// Matching subscribers of `topic`, merged per subscriber: (QoS, retain) to deliver.
    fn matches(&self, msg: &RoutedMessage) -> HashMap<SubscriberId, Match> {
        let levels: Vec<&str> = msg.topic.split('/').collect();
        let dollar = msg.topic.starts_with('$');
        let mut out: HashMap<SubscriberId, Match> = HashMap::new();
        let mut groups: Vec<&ShareGroup> = Vec::new();
        let mut add = |subs: &HashMap<SubscriberId, SubEntry>| {
            for (id, entry) in subs {
                let opts = entry.options;
                if opts.no_local && msg.origin == Some(*id) {
                    continue;
                }
                let qos = msg.qos.min(opts.qos);
                let retain = msg.retain && opts.retain_as_published;
                let m = out
                    .entry(*id)
                    .or_insert((QoS::AtMostOnce, false, Vec::new()));
                m.0 = m.0.max(qos);
                m.1 |= retain;
                if let Some(sid) = entry.id {
                    m.2.push(sid);
                }
            }
        };
        // (node, index of the next level to match)
        let mut stack: Vec<(&Node, usize)> = vec![(&self.root, 0)];
        while let Some((node, depth)) = stack.pop() {
            // Wildcards at the first level never match `$` topics (MQTT 4.7.2).
            let wild = !(dollar && depth == 0);
            if wild && let Some(hash) = node.children.get("#") {
                add(&hash.subs);
                groups.extend(hash.shared.values());
            }
            let Some(level) = levels.get(depth) else {
                add(&node.subs);
                groups.extend(node.shared.values());
                continue;
            };
            if wild && let Some(plus) = node.children.get("+") {
                stack.push((plus, depth + 1));
            }
            if let Some(child) = node.children.get(*level) {
                stack.push((child, depth + 1));
            }
        }
        // One online member per share group; offline persistent members get no share.
        for group in groups {
            let online: Vec<&(SubscriberId, SubEntry)> = group
                .members
                .iter()
                .filter(|(id, _)| {
                    self.subscribers
                        .get(id)
                        .and_then(|s| s.tx.as_ref())
                        .is_some_and(|tx| !tx.is_closed())
                })
                .collect();
            if online.is_empty() {
                continue;
            }
            let pick = group.next.fetch_add(1, Ordering::Relaxed) % online.len();
            let Some((id, entry)) = online.get(pick).copied() else {
                continue;
            };
            let m = out
                .entry(*id)
                .or_insert((QoS::AtMostOnce, false, Vec::new()));
            m.0 = m.0.max(msg.qos.min(entry.options.qos));
            m.1 |= msg.retain && entry.options.retain_as_published;
            if let Some(sid) = entry.id {
                m.2.push(sid);
            }
        }
        out
    }
}

/// All subscriptions of all tenants.
#[derive(Default)]
pub(crate) struct Router {
    tenants: RwLock<HashMap<String, TenantRoutes>>,
    limits: QueueLimits,
    /// Sequence numbers of messages queued for offline sessions.
    pub(crate) next_seq: AtomicU64,
}

impl Router {
    pub(crate) fn new(limits: QueueLimits, first_seq: u64) -> Router {
        Router {
            tenants: RwLock::default(),
            limits,
            next_seq: AtomicU64::new(first_seq.max(1)),
        }
    }

    pub(crate) fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// Makes a connection reachable for routing (before it subscribes to anything).
    pub(crate) fn register(&self, tenant: &str, id: SubscriberId, tx: Postbox) {
        self.tenants
            .write()
            .entry(tenant.to_owned())
            .or_default()
            .subscribers
            .insert(
                id,
                Subscriber {
                    tx: Some(tx),
                    parked: None,
                    filters: Vec::new(),
                },
            );
    }

    /// Connects a persistent session's subscriber (existing subscriptions are kept) to a
    /// connection's queue, or with `tx = None` registers it offline (restored at startup).
    pub(crate) fn attach(
        &self,
        tenant: &str,
        id: SubscriberId,
        tx: Option<Postbox>,
        session: &Arc<Persistent>,
    ) {
        let mut tenants = self.tenants.write();
        let sub = tenants
            .entry(tenant.to_owned())
            .or_default()
            .subscribers
            .entry(id)
            .or_insert_with(|| Subscriber {
                tx: None,
                parked: Some(Arc::clone(session)),
                filters: Vec::new(),
            });
        sub.tx = tx;
        sub.parked = Some(Arc::clone(session));
    }

    /// Takes a persistent session offline: further messages go to its offline queue, and
    /// whatever is still in the connection's queue `rx` is moved there first (in order).
    /// Returns how many messages the overflow policy dropped.
    pub(crate) fn park(&self, tenant: &str, id: SubscriberId, rx: &mut Mailbox) -> usize {
        let mut tenants = self.tenants.write();
        let Some(sub) = tenants
            .get_mut(tenant)
            .and_then(|r| r.subscribers.get_mut(&id))
        else {
            return 0;
        };
        sub.tx = None;
        let Some(parked) = &sub.parked else {
            return 0;
        };
        let mut state = parked.state.lock();
        let mut overflow = 0;
        while let Some(d) = rx.try_recv() {
            if state.push(d, self.limits, &self.next_seq).0 != PushOutcome::Queued {
                overflow += 1;
            }
        }
        overflow
    }

    /// Forgets a connection and all of its subscriptions.
    pub(crate) fn unregister(&self, tenant: &str, id: SubscriberId) {
        let mut tenants = self.tenants.write();
        let Some(routes) = tenants.get_mut(tenant) else {
            return;
        };
        if let Some(sub) = routes.subscribers.remove(&id) {
            for filter in &sub.filters {
                let (group, inner) = split_filter(filter);
                let levels: Vec<&str> = inner.split('/').collect();
                routes.root.remove(&levels, group, id);
            }
        }
        if routes.is_empty() {
            tenants.remove(tenant);
        }
    }

    /// Adds or replaces a subscription of a registered connection. `filter` must be a valid
    /// filter of at most [`MAX_FILTER_LEVELS`] levels. Returns false if `id` is unknown.
    pub(crate) fn subscribe(
        &self,
        tenant: &str,
        id: SubscriberId,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> bool {
        let mut tenants = self.tenants.write();
        let Some(routes) = tenants.get_mut(tenant) else {
            return false;
        };
        let Some(sub) = routes.subscribers.get_mut(&id) else {
            return false;
        };
        if !sub.filters.iter().any(|f| f == filter) {
            sub.filters.push(filter.to_owned());
        }
        let (group, inner) = split_filter(filter);
        let mut node = &mut routes.root;
        for level in inner.split('/') {
            node = node.children.entry(level.to_owned()).or_default();
        }
        let entry = SubEntry {
            options,
            id: sub_id,
        };
        match group {
            None => {
                node.subs.insert(id, entry);
            }
            Some(g) => {
                let share = node.shared.entry(g.to_owned()).or_default();
                match share.members.iter_mut().find(|(m, _)| *m == id) {
                    Some(member) => member.1 = entry,
                    None => share.members.push((id, entry)),
                }
            }
        }
        true
    }

    /// Number of subscriptions over all namespaces.
    pub(crate) fn subscription_count(&self) -> usize {
        self.tenants
            .read()
            .values()
            .flat_map(|r| r.subscribers.values())
            .map(|s| s.filters.len())
            .sum()
    }

    /// Removes one subscription; returns whether it existed.
    pub(crate) fn unsubscribe(&self, tenant: &str, id: SubscriberId, filter: &str) -> bool {
        let mut tenants = self.tenants.write();
        let Some(routes) = tenants.get_mut(tenant) else {
            return false;
        };
        let Some(sub) = routes.subscribers.get_mut(&id) else {
            return false;
        };
        let Some(pos) = sub.filters.iter().position(|f| f == filter) else {
            return false;
        };
        sub.filters.swap_remove(pos);
        let (group, inner) = split_filter(filter);
        let levels: Vec<&str> = inner.split('/').collect();
        routes.root.remove(&levels, group, id)
    }

    /// Queues `msg` to every matching subscriber of `tenant`, once per subscriber, without
    /// waiting: a full queue drops the message for that subscriber. The subscribers' wake-ups
    /// that can wait until the routing is done are left in `wakes`.
    pub(crate) fn route(
        &self,
        tenant: &str,
        msg: Arc<RoutedMessage>,
        wakes: &mut Wakes,
    ) -> RouteOutcome {
        let tenants = self.tenants.read();
        let mut outcome = RouteOutcome::default();
        let Some(routes) = tenants.get(tenant) else {
            return outcome;
        };
        for (id, (qos, retain, sub_ids)) in routes.matches(&msg) {
            let Some(sub) = routes.subscribers.get(&id) else {
                continue;
            };
            let delivery = Delivery {
                msg: Arc::clone(&msg),
                qos,
                retain,
                sub_ids,
            };
            let delivery = match &sub.tx {
                Some(tx) => match tx.try_send_waking(delivery, wakes) {
                    Ok(()) => {
                        outcome.queued += 1;
                        continue;
                    }
                    Err(TrySendError::Full(_)) => {
                        outcome.dropped += 1;
                        tracing::debug!(tenant, subscriber = id, topic = %msg.topic, "subscriber queue full, message dropped");
                        continue;
                    }
                    // The connection is closing: a persistent session keeps the message.
                    Err(TrySendError::Closed(d)) => d,
                },
                None => delivery,
            };
            let Some(parked) = &sub.parked else {
                continue;
            };
            let mut state = parked.state.lock();
            if state.ended {
                continue;
            }
            let (pushed, queued) = state.push(delivery, self.limits, &self.next_seq);
            drop(state);
            if pushed != PushOutcome::Queued {
                outcome.overflow += 1;
            }
            if let Some(q) = queued {
                outcome.queued += 1;
                outcome.parked.push((Arc::clone(parked), q));
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::mailbox;

    fn route(r: &Router, tenant: &str, msg: Arc<RoutedMessage>) -> RouteOutcome {
        r.route(tenant, msg, &mut Wakes::default())
    }

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    fn msg(topic: &str, qos: QoS, origin: Option<SubscriberId>) -> Arc<RoutedMessage> {
        Arc::new(RoutedMessage::new(
            topic.into(),
            Bytes::from_static(b"x"),
            qos,
            false,
            &Properties::default(),
            origin,
        ))
    }

    #[test]
    fn wildcards_dedup_and_qos() {
        let r = Router::default();
        let (tx, mut rx) = mailbox(10);
        r.register("t1", 1, tx);
        assert!(r.subscribe("t1", 1, "a/+/c", opts(QoS::AtMostOnce), None));
        assert!(r.subscribe("t1", 1, "a/#", opts(QoS::AtLeastOnce), None));
        assert!(r.subscribe("t1", 1, "a/b/c", opts(QoS::ExactlyOnce), None));
        let out = route(&r, "t1", msg("a/b/c", QoS::ExactlyOnce, None));
        assert_eq!(out.queued, 1);
        assert_eq!(rx.try_recv().unwrap().qos, QoS::ExactlyOnce);
        let out = route(&r, "t1", msg("a/x/c", QoS::ExactlyOnce, None));
        assert_eq!(out.queued, 1);
        assert_eq!(rx.try_recv().unwrap().qos, QoS::AtLeastOnce);
        // `a/#` matches the parent `a`.
        assert_eq!(route(&r, "t1", msg("a", QoS::AtMostOnce, None)).queued, 1);
        assert_eq!(route(&r, "t1", msg("b", QoS::AtMostOnce, None)).queued, 0);
        // Other tenant: nothing.
        assert_eq!(
            route(&r, "t2", msg("a/b/c", QoS::AtMostOnce, None)).queued,
            0
        );
    }

    #[test]
    fn dollar_topics_and_no_local() {
        let r = Router::default();
        let (tx, _rx) = mailbox(10);
        r.register("t", 1, tx);
        r.subscribe("t", 1, "#", opts(QoS::AtMostOnce), None);
        assert_eq!(
            route(&r, "t", msg("$SYS/x", QoS::AtMostOnce, None)).queued,
            0
        );
        r.subscribe(
            "t",
            1,
            "x",
            SubscriptionOptions {
                no_local: true,
                ..opts(QoS::AtMostOnce)
            },
            None,
        );
        // `#` still matches (without no-local), `x` does not for the publisher itself.
        assert_eq!(route(&r, "t", msg("x", QoS::AtMostOnce, Some(1))).queued, 1);
        r.unsubscribe("t", 1, "#");
        assert_eq!(route(&r, "t", msg("x", QoS::AtMostOnce, Some(1))).queued, 0);
        assert_eq!(route(&r, "t", msg("x", QoS::AtMostOnce, Some(2))).queued, 1);
    }

    #[test]
    fn full_queue_drops_and_unregister_prunes() {
        let r = Router::default();
        let (tx, _rx) = mailbox(1);
        r.register("t", 1, tx);
        r.subscribe("t", 1, "a/b", opts(QoS::AtMostOnce), None);
        assert_eq!(route(&r, "t", msg("a/b", QoS::AtMostOnce, None)).queued, 1);
        assert_eq!(route(&r, "t", msg("a/b", QoS::AtMostOnce, None)).dropped, 1);
        r.unregister("t", 1);
        assert!(r.tenants.read().is_empty());
    }

    #[test]
    fn shared_subscriptions_round_robin_online_members() {
        let r = Router::default();
        let (tx1, mut rx1) = mailbox(10);
        let (tx2, mut rx2) = mailbox(10);
        let (tx3, _rx3) = mailbox(10);
        r.register("t", 1, tx1);
        r.register("t", 2, tx2);
        r.register("t", 3, tx3);
        for id in [1, 2] {
            r.subscribe("t", id, "$share/g/a/+", opts(QoS::AtLeastOnce), None);
        }
        r.subscribe("t", 3, "$share/h/a/#", opts(QoS::AtMostOnce), None);
        for _ in 0..4 {
            // One per group: g and h.
            assert_eq!(route(&r, "t", msg("a/b", QoS::AtLeastOnce, None)).queued, 2);
        }
        let (mut n1, mut n2) = (0, 0);
        while rx1.try_recv().is_some() {
            n1 += 1;
        }
        while rx2.try_recv().is_some() {
            n2 += 1;
        }
        assert_eq!((n1, n2), (2, 2));
        // A closed (offline) member gets no share.
        drop(rx2);
        for _ in 0..2 {
            route(&r, "t", msg("a/b", QoS::AtLeastOnce, None));
        }
        assert_eq!(std::iter::from_fn(|| rx1.try_recv()).count(), 2);
        assert!(r.unsubscribe("t", 1, "$share/g/a/+"));
        r.unregister("t", 2);
        r.unregister("t", 3);
        r.unregister("t", 1);
        assert!(r.tenants.read().is_empty());
    }

    #[test]
    fn deep_topics_do_not_recurse() {
        let r = Router::default();
        let (tx, _rx) = mailbox(1);
        r.register("t", 1, tx);
        r.subscribe("t", 1, "+/+/#", opts(QoS::AtMostOnce), None);
        let topic = "a/".repeat(30_000);
        assert_eq!(route(&r, "t", msg(&topic, QoS::AtMostOnce, None)).queued, 1);
    }
}
