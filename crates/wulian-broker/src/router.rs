//! Subscription tree and fan-out, one tree per tenant.
//!
//! Tenants are isolated by construction: every operation names the tenant and only that
//! tenant's tree is consulted, so identical topics in two tenants never meet. Fan-out never
//! blocks the publisher: each subscriber has a bounded queue and a message that does not fit
//! is dropped for that subscriber and counted.
//!
//! The tree is a trie over topic levels whose `+` and `#` children hold wildcard
//! subscriptions; matching is iterative so deep topics cannot exhaust the stack, and filters
//! are limited to [`MAX_FILTER_LEVELS`] levels so recursive removal stays shallow.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use wulian_mqtt::{Properties, QoS, SubscriptionOptions};

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
}

/// What happened to a routed message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteOutcome {
    pub(crate) queued: usize,
    pub(crate) dropped: usize,
}

#[derive(Default)]
struct Node {
    children: HashMap<String, Node>,
    subs: HashMap<SubscriberId, SubscriptionOptions>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty()
    }

    /// Removes `id` from the node at `levels`, pruning emptied nodes. Depth is bounded by
    /// [`MAX_FILTER_LEVELS`].
    fn remove(&mut self, levels: &[&str], id: SubscriberId) -> bool {
        match levels.split_first() {
            None => self.subs.remove(&id).is_some(),
            Some((first, rest)) => {
                let Some(child) = self.children.get_mut(*first) else {
                    return false;
                };
                let removed = child.remove(rest, id);
                if child.is_empty() {
                    self.children.remove(*first);
                }
                removed
            }
        }
    }
}

struct Subscriber {
    tx: mpsc::Sender<Delivery>,
    filters: Vec<String>,
}

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
    fn matches(&self, msg: &RoutedMessage) -> HashMap<SubscriberId, (QoS, bool)> {
        let levels: Vec<&str> = msg.topic.split('/').collect();
        let dollar = msg.topic.starts_with('$');
        let mut out: HashMap<SubscriberId, (QoS, bool)> = HashMap::new();
        let mut add = |subs: &HashMap<SubscriberId, SubscriptionOptions>| {
            for (id, opts) in subs {
                if opts.no_local && msg.origin == Some(*id) {
                    continue;
                }
                let qos = msg.qos.min(opts.qos);
                let retain = msg.retain && opts.retain_as_published;
                out.entry(*id)
                    .and_modify(|(q, r)| {
                        *q = (*q).max(qos);
                        *r |= retain;
                    })
                    .or_insert((qos, retain));
            }
        };
        // (node, index of the next level to match)
        let mut stack: Vec<(&Node, usize)> = vec![(&self.root, 0)];
        while let Some((node, depth)) = stack.pop() {
            // Wildcards at the first level never match `$` topics (MQTT 4.7.2).
            let wild = !(dollar && depth == 0);
            if wild && let Some(hash) = node.children.get("#") {
                add(&hash.subs);
            }
            let Some(level) = levels.get(depth) else {
                add(&node.subs);
                continue;
            };
            if wild && let Some(plus) = node.children.get("+") {
                stack.push((plus, depth + 1));
            }
            if let Some(child) = node.children.get(*level) {
                stack.push((child, depth + 1));
            }
        }
        out
    }
}

/// All subscriptions of all tenants.
#[derive(Default)]
pub(crate) struct Router {
    tenants: RwLock<HashMap<String, TenantRoutes>>,
}

impl Router {
    /// Makes a connection reachable for routing (before it subscribes to anything).
    pub(crate) fn register(&self, tenant: &str, id: SubscriberId, tx: mpsc::Sender<Delivery>) {
        self.tenants
            .write()
            .entry(tenant.to_owned())
            .or_default()
            .subscribers
            .insert(
                id,
                Subscriber {
                    tx,
                    filters: Vec::new(),
                },
            );
    }

    /// Forgets a connection and all of its subscriptions.
    pub(crate) fn unregister(&self, tenant: &str, id: SubscriberId) {
        let mut tenants = self.tenants.write();
        let Some(routes) = tenants.get_mut(tenant) else {
            return;
        };
        if let Some(sub) = routes.subscribers.remove(&id) {
            for filter in &sub.filters {
                let levels: Vec<&str> = filter.split('/').collect();
                routes.root.remove(&levels, id);
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
        let mut node = &mut routes.root;
        for level in filter.split('/') {
            node = node.children.entry(level.to_owned()).or_default();
        }
        node.subs.insert(id, options);
        true
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
        let levels: Vec<&str> = filter.split('/').collect();
        routes.root.remove(&levels, id)
    }

    /// Queues `msg` to every matching subscriber of `tenant`, once per subscriber, without
    /// waiting: a full queue drops the message for that subscriber.
    pub(crate) fn route(&self, tenant: &str, msg: Arc<RoutedMessage>) -> RouteOutcome {
        let tenants = self.tenants.read();
        let mut outcome = RouteOutcome::default();
        let Some(routes) = tenants.get(tenant) else {
            return outcome;
        };
        for (id, (qos, retain)) in routes.matches(&msg) {
            let Some(sub) = routes.subscribers.get(&id) else {
                continue;
            };
            let delivery = Delivery {
                msg: Arc::clone(&msg),
                qos,
                retain,
            };
            match sub.tx.try_send(delivery) {
                Ok(()) => outcome.queued += 1,
                Err(TrySendError::Full(_)) => {
                    outcome.dropped += 1;
                    tracing::debug!(tenant, subscriber = id, topic = %msg.topic, "subscriber queue full, message dropped");
                }
                // The connection is closing; it unregisters itself.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (tx, mut rx) = mpsc::channel(10);
        r.register("t1", 1, tx);
        assert!(r.subscribe("t1", 1, "a/+/c", opts(QoS::AtMostOnce)));
        assert!(r.subscribe("t1", 1, "a/#", opts(QoS::AtLeastOnce)));
        assert!(r.subscribe("t1", 1, "a/b/c", opts(QoS::ExactlyOnce)));
        let out = r.route("t1", msg("a/b/c", QoS::ExactlyOnce, None));
        assert_eq!(out.queued, 1);
        assert_eq!(rx.try_recv().unwrap().qos, QoS::ExactlyOnce);
        let out = r.route("t1", msg("a/x/c", QoS::ExactlyOnce, None));
        assert_eq!(out.queued, 1);
        assert_eq!(rx.try_recv().unwrap().qos, QoS::AtLeastOnce);
        // `a/#` matches the parent `a`.
        assert_eq!(r.route("t1", msg("a", QoS::AtMostOnce, None)).queued, 1);
        assert_eq!(r.route("t1", msg("b", QoS::AtMostOnce, None)).queued, 0);
        // Other tenant: nothing.
        assert_eq!(r.route("t2", msg("a/b/c", QoS::AtMostOnce, None)).queued, 0);
    }

    #[test]
    fn dollar_topics_and_no_local() {
        let r = Router::default();
        let (tx, _rx) = mpsc::channel(10);
        r.register("t", 1, tx);
        r.subscribe("t", 1, "#", opts(QoS::AtMostOnce));
        assert_eq!(r.route("t", msg("$SYS/x", QoS::AtMostOnce, None)).queued, 0);
        r.subscribe(
            "t",
            1,
            "x",
            SubscriptionOptions {
                no_local: true,
                ..opts(QoS::AtMostOnce)
            },
        );
        // `#` still matches (without no-local), `x` does not for the publisher itself.
        assert_eq!(r.route("t", msg("x", QoS::AtMostOnce, Some(1))).queued, 1);
        r.unsubscribe("t", 1, "#");
        assert_eq!(r.route("t", msg("x", QoS::AtMostOnce, Some(1))).queued, 0);
        assert_eq!(r.route("t", msg("x", QoS::AtMostOnce, Some(2))).queued, 1);
    }

    #[test]
    fn full_queue_drops_and_unregister_prunes() {
        let r = Router::default();
        let (tx, _rx) = mpsc::channel(1);
        r.register("t", 1, tx);
        r.subscribe("t", 1, "a/b", opts(QoS::AtMostOnce));
        assert_eq!(r.route("t", msg("a/b", QoS::AtMostOnce, None)).queued, 1);
        assert_eq!(r.route("t", msg("a/b", QoS::AtMostOnce, None)).dropped, 1);
        r.unregister("t", 1);
        assert!(r.tenants.read().is_empty());
    }

    #[test]
    fn deep_topics_do_not_recurse() {
        let r = Router::default();
        let (tx, _rx) = mpsc::channel(1);
        r.register("t", 1, tx);
        r.subscribe("t", 1, "+/+/#", opts(QoS::AtMostOnce));
        let topic = "a/".repeat(30_000);
        assert_eq!(r.route("t", msg(&topic, QoS::AtMostOnce, None)).queued, 1);
    }
}
