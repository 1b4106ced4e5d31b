//! Topic filters of the FROM clause: validation, matching, and an index that finds the rules
//! whose filter matches a topic by walking the topic's levels once instead of trying every
//! rule's filter.

use std::collections::HashMap;

/// Checks an MQTT topic filter (MQTT 5 section 4.7): non-empty, `#` only alone as the last
/// level, `+` only alone in its level. Shared subscriptions make no sense for a rule.
pub fn validate_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("empty");
    }
    if filter.len() > 65_535 {
        return Err("longer than 65535 bytes");
    }
    if filter.contains('\0') {
        return Err("contains U+0000");
    }
    if filter.starts_with("$share/") {
        return Err("a shared subscription is not a rule source");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err("'#' must be alone in the last level");
        }
        if level.contains('+') && level != "+" {
            return Err("'+' must be alone in its level");
        }
    }
    Ok(())
}

/// Whether `topic` matches `filter`: the broker's own matching (`#` also matches the parent
/// level; a wildcard in the first level does not match a topic starting with `$`).
pub use wulian_mqtt::topic::matches;

/// A trie of topic filters; each filter carries the indices of the rules that use it.
#[derive(Debug, Default)]
pub(crate) struct TopicIndex {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    exact: HashMap<String, Node>,
    plus: Option<Box<Node>>,
    /// Rules whose filter ends here with `#`.
    hash: Vec<usize>,
    /// Rules whose filter ends exactly here.
    here: Vec<usize>,
}

impl TopicIndex {
    pub(crate) fn insert(&mut self, filter: &str, rule: usize) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            match level {
                "#" => {
                    node.hash.push(rule);
                    return;
                }
                "+" => node = node.plus.get_or_insert_with(Box::default),
                _ => node = node.exact.entry(level.to_string()).or_default(),
            }
        }
        node.here.push(rule);
    }

    /// Appends the rules whose filter matches `topic` to `out`, in no particular order.
    pub(crate) fn matching(&self, topic: &str, out: &mut Vec<usize>) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        walk(&self.root, &levels, 0, dollar, out);
    }
}

fn walk(node: &Node, levels: &[&str], depth: usize, dollar: bool, out: &mut Vec<usize>) {
    // Wildcards at the first level never match `$` topics.
    let wildcards = !(dollar && depth == 0);
    if wildcards {
        out.extend_from_slice(&node.hash);
    }
    let Some((level, rest)) = levels.split_first() else {
        out.extend_from_slice(&node.here);
        return;
    };
    if let Some(child) = node.exact.get(*level) {
        walk(child, rest, depth + 1, dollar, out);
    }
    if wildcards && let Some(child) = &node.plus {
        walk(child, rest, depth + 1, dollar, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_filters() {
        assert!(validate_filter("devices/+/telemetry").is_ok());
        assert!(validate_filter("#").is_ok());
        assert!(validate_filter("a/#").is_ok());
        assert!(validate_filter("").is_err());
        assert!(validate_filter("a/#/b").is_err());
        assert!(validate_filter("a/b#").is_err());
        assert!(validate_filter("a/+b").is_err());
        assert!(validate_filter("$share/g/a").is_err());
    }

    #[test]
    fn index_agrees_with_matches() {
        let filters = [
            "devices/+/telemetry",
            "devices/d1/telemetry",
            "devices/#",
            "#",
            "+/+/+",
            "devices/+/events/+",
            "$SYS/#",
            "devices/d1",
            "a/b/#",
        ];
        let mut index = TopicIndex::default();
        for (i, f) in filters.iter().enumerate() {
            index.insert(f, i);
        }
        for topic in [
            "devices/d1/telemetry",
            "devices/d2/telemetry",
            "devices/d1",
            "devices/d1/events/fall",
            "$SYS/broker/uptime",
            "a/b",
            "a/b/c/d",
            "other",
            "devices",
        ] {
            let mut got = Vec::new();
            index.matching(topic, &mut got);
            got.sort_unstable();
            let want: Vec<usize> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| matches(f, topic))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(got, want, "topic {topic}");
        }
    }
}
