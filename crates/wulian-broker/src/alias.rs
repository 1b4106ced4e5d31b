//! MQTT 5.0 topic aliases (3.3.2.3.4), both directions, for one connection.
//!
//! Inbound, the client may map up to our announced Topic Alias Maximum aliases to topics and
//! then send PUBLISH with an empty topic. Outbound, we assign aliases up to the client's
//! Topic Alias Maximum, first come first served (no eviction), so repeated topics cost two
//! bytes instead of the full name.

use std::collections::HashMap;

/// Why an inbound alias was refused (the connection is closed with this reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AliasError {
    /// 0 or above our maximum: Topic Alias invalid (MQTT-3.3.2-8, MQTT-3.3.2-9).
    OutOfRange(u16),
    /// Empty topic with an alias we never saw: Protocol Error.
    Unknown(u16),
    /// Empty topic without an alias.
    EmptyTopic,
}

/// The maps, allocated when the first alias is used: most clients never use one, and every
/// connection holds an `Aliases` for its whole life.
#[derive(Debug, Default)]
struct Maps {
    inbound: HashMap<u16, String>,
    outbound: HashMap<String, u16>,
}

#[derive(Debug, Default)]
pub(crate) struct Aliases {
    inbound_max: u16,
    outbound_max: u16,
    maps: Option<Box<Maps>>,
}

impl Aliases {
    pub(crate) fn new(inbound_max: u16, outbound_max: u16) -> Aliases {
        Aliases {
            inbound_max,
            outbound_max,
            maps: None,
        }
    }

    fn maps(&mut self) -> &mut Maps {
        self.maps.get_or_insert_with(Box::default)
    }

    /// The topic of an inbound PUBLISH, learning or applying its alias.
    pub(crate) fn resolve_inbound(
        &mut self,
        topic: String,
        alias: Option<u16>,
    ) -> Result<String, AliasError> {
        let Some(alias) = alias else {
            return if topic.is_empty() {
                Err(AliasError::EmptyTopic)
            } else {
                Ok(topic)
            };
        };
        if alias == 0 || alias > self.inbound_max {
            return Err(AliasError::OutOfRange(alias));
        }
        if topic.is_empty() {
            return self
                .maps
                .as_ref()
                .and_then(|m| m.inbound.get(&alias))
                .cloned()
                .ok_or(AliasError::Unknown(alias));
        }
        self.maps().inbound.insert(alias, topic.clone());
        Ok(topic)
    }

    /// The alias to send `topic` with: `(alias, already known by the client)`; None when the
    /// client takes no (more) aliases.
    pub(crate) fn outbound(&mut self, topic: &str) -> Option<(u16, bool)> {
        if self.outbound_max == 0 {
            return None;
        }
        let max = self.outbound_max;
        let outbound = &mut self.maps().outbound;
        if let Some(alias) = outbound.get(topic) {
            return Some((*alias, true));
        }
        let next = u16::try_from(outbound.len() + 1).ok()?;
        if next > max {
            return None;
        }
        outbound.insert(topic.to_owned(), next);
        Some((next, false))
    }

    /// Forgets an alias just assigned for a packet that was not sent after all.
    pub(crate) fn unassign(&mut self, topic: &str) {
        if let Some(m) = &mut self.maps {
            m.outbound.remove(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_aliases() {
        let mut a = Aliases::new(2, 0);
        assert_eq!(a.resolve_inbound("a/b".into(), Some(1)).unwrap(), "a/b");
        assert_eq!(a.resolve_inbound(String::new(), Some(1)).unwrap(), "a/b");
        assert_eq!(
            a.resolve_inbound(String::new(), Some(2)),
            Err(AliasError::Unknown(2))
        );
        assert_eq!(
            a.resolve_inbound("x".into(), Some(3)),
            Err(AliasError::OutOfRange(3))
        );
        assert_eq!(
            a.resolve_inbound("x".into(), Some(0)),
            Err(AliasError::OutOfRange(0))
        );
        assert_eq!(
            a.resolve_inbound(String::new(), None),
            Err(AliasError::EmptyTopic)
        );
    }

    #[test]
    fn outbound_aliases() {
        let mut a = Aliases::new(0, 1);
        assert_eq!(a.outbound("a"), Some((1, false)));
        assert_eq!(a.outbound("a"), Some((1, true)));
        assert_eq!(a.outbound("b"), None);
        a.unassign("a");
        assert_eq!(a.outbound("b"), Some((1, false)));
        assert_eq!(Aliases::new(0, 0).outbound("a"), None);
    }

    #[test]
    fn unused_aliases_allocate_nothing() {
        let mut a = Aliases::new(32, 32);
        assert_eq!(a.resolve_inbound("a/b".into(), None).unwrap(), "a/b");
        a.unassign("a/b");
        assert!(a.maps.is_none());
        assert_eq!(Aliases::new(0, 0).outbound("a"), None);
        assert_eq!(a.outbound("a"), Some((1, false)));
        assert!(a.maps.is_some());
    }
}
