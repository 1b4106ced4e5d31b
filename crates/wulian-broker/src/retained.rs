//! Retained messages, one map per tenant (MQTT 3.3.1.3).
//!
//! The last retained message of each topic is kept (a retained PUBLISH with an empty payload
//! deletes it) and sent to new subscriptions whose filter matches. Lookups scan the tenant's
//! retained topics with the codec's matcher, which keeps `$` topics away from leading
//! wildcards; tenants hold few retained topics compared with live traffic, and a subscribe is
//! rare compared with a publish. Durability is the caller's job (see `persist`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use wulian_mqtt::topic;

use crate::OutboundMessage;
use crate::router::RoutedMessage;

/// Retained messages answered by another part of the platform instead of held here: state it
/// keeps anyway (a device's presence), so a fleet's worth of it is neither duplicated in the
/// broker's memory nor written to its store on every change.
///
/// The source owns the topics it [`claims`](RetainedSource::claims): retained PUBLISHes to them
/// are routed to live subscribers as usual but not stored, and a new subscription gets the
/// source's messages for them.
pub trait RetainedSource: Send + Sync {
    /// Whether `topic` (a valid topic name) is answered by this source.
    fn claims(&self, topic: &str) -> bool;
    /// The tenant's messages on claimed topics that `filter` (a valid, non-shared filter)
    /// matches, sorted by topic.
    fn matching(&self, tenant: &str, filter: &str) -> Vec<OutboundMessage>;
}

/// What a retained PUBLISH did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetainChange {
    Stored {
        replaced: bool,
    },
    Deleted,
    /// Empty payload for a topic without a retained message.
    Nothing,
}

#[derive(Default)]
pub(crate) struct Retained {
    tenants: RwLock<HashMap<String, HashMap<String, Arc<RoutedMessage>>>>,
}

impl Retained {
    /// Stores `msg` as the retained message of its topic, or deletes it for an empty payload.
    pub(crate) fn set(&self, tenant: &str, msg: Arc<RoutedMessage>) -> RetainChange {
        let mut tenants = self.tenants.write();
        if msg.payload.is_empty() {
            let Some(map) = tenants.get_mut(tenant) else {
                return RetainChange::Nothing;
            };
            let removed = map.remove(&msg.topic).is_some();
            if map.is_empty() {
                tenants.remove(tenant);
            }
            return if removed {
                RetainChange::Deleted
            } else {
                RetainChange::Nothing
            };
        }
        let replaced = tenants
            .entry(tenant.to_owned())
            .or_default()
            .insert(msg.topic.clone(), msg)
            .is_some();
        RetainChange::Stored { replaced }
    }

    /// The unexpired retained messages whose topic matches `filter` (a valid, non-shared
    /// filter). Expired ones are dropped on the way.
    pub(crate) fn matching(&self, tenant: &str, filter: &str) -> Vec<Arc<RoutedMessage>> {
        let mut expired = Vec::new();
        let mut out = Vec::new();
        {
            let tenants = self.tenants.read();
            let Some(map) = tenants.get(tenant) else {
                return out;
            };
            for (t, msg) in map {
                if !topic::matches(filter, t) {
                    continue;
                }
                if is_expired(msg) {
                    expired.push(t.clone());
                } else {
                    out.push(Arc::clone(msg));
                }
            }
        }
        if !expired.is_empty() {
            let mut tenants = self.tenants.write();
            if let Some(map) = tenants.get_mut(tenant) {
                for t in expired {
                    if map.get(&t).is_some_and(|m| is_expired(m)) {
                        map.remove(&t);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    /// Removes the stored messages whose topic `claimed` says another source answers for, and
    /// returns their (tenant, topic) (not in the `$SYS` namespace).
    pub(crate) fn remove_claimed(&self, claimed: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        let mut removed = Vec::new();
        let mut tenants = self.tenants.write();
        for (tenant, map) in tenants.iter_mut().filter(|(ns, _)| !ns.starts_with('$')) {
            map.retain(|topic, _| {
                let claim = claimed(topic);
                if claim {
                    removed.push((tenant.clone(), topic.clone()));
                }
                !claim
            });
        }
        tenants.retain(|_, map| !map.is_empty());
        removed
    }

    /// Number of retained messages over all tenants (not counting the broker's own `$SYS`
    /// namespace).
    pub(crate) fn len(&self) -> usize {
        self.tenants
            .read()
            .iter()
            .filter(|(ns, _)| !ns.starts_with('$'))
            .map(|(_, m)| m.len())
            .sum()
    }
}

fn is_expired(msg: &RoutedMessage) -> bool {
    msg.properties
        .message_expiry_interval
        .is_some_and(|s| msg.received_at.elapsed().as_secs() >= u64::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use wulian_mqtt::{Properties, QoS};

    fn msg(topic: &str, payload: &'static [u8]) -> Arc<RoutedMessage> {
        Arc::new(RoutedMessage::new(
            topic.into(),
            Bytes::from_static(payload),
            QoS::AtLeastOnce,
            true,
            &Properties::default(),
            None,
        ))
    }

    #[test]
    fn set_replace_delete_and_match() {
        let r = Retained::default();
        assert_eq!(
            r.set("t", msg("a/b", b"1")),
            RetainChange::Stored { replaced: false }
        );
        assert_eq!(
            r.set("t", msg("a/b", b"2")),
            RetainChange::Stored { replaced: true }
        );
        r.set("t", msg("$x/y", b"3"));
        assert_eq!(r.matching("t", "a/+").len(), 1);
        assert_eq!(r.matching("t", "a/+")[0].payload.as_ref(), b"2");
        // MQTT-4.7.2-1: leading wildcards do not match `$` topics.
        assert_eq!(r.matching("t", "#").len(), 1);
        assert_eq!(r.matching("t", "$x/#").len(), 1);
        assert!(r.matching("other", "#").is_empty());
        assert_eq!(r.set("t", msg("a/b", b"")), RetainChange::Deleted);
        assert_eq!(r.set("t", msg("a/b", b"")), RetainChange::Nothing);
        assert_eq!(r.len(), 1);
    }
}
