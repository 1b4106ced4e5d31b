//! Topic names, topic filters and matching (MQTT section 4.7), plus shared subscription
//! filters (`$share/{group}/{filter}`, 5.0 section 4.8.2). Pure string functions so the
//! broker's subscription tree and the codec agree on the rules.

/// Longest topic a UTF-8 string field can carry.
const MAX_LEN: usize = 65_535;

/// A topic name as used in PUBLISH: non-empty, no wildcards, no U+0000, at most 65535 bytes.
pub fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_LEN && !topic.contains(['+', '#', '\0'])
}

/// A topic filter as used in SUBSCRIBE: non-empty, `#` only alone as the last level, `+`
/// only alone in its level. `$share/{group}/{filter}` additionally needs a non-empty group
/// without wildcards and a valid filter after it.
pub fn is_valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_LEN || filter.contains('\0') {
        return false;
    }
    let filter = if filter.starts_with("$share/") {
        match shared_subscription(filter) {
            Some((_, inner)) => inner,
            None => return false,
        }
    } else {
        filter
    };
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether `topic` (a valid topic name) matches `filter` (a valid, non-shared topic filter).
/// `#` also matches the parent level ("a/#" matches "a"); a wildcard in the first level does
/// not match topics starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    matches_with(filter, topic, None)
}

/// [`matches()`] where, given `(placeholder, value)`, a filter level equal to `placeholder`
/// matches exactly the topic level `value` (taken literally, never as a wildcard): how an
/// access policy writes "the client's own id" once for every client.
pub fn matches_with(filter: &str, topic: &str, resolve: Option<(&str, &str)>) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some(fl), tl) if resolve.is_some_and(|(placeholder, _)| fl == placeholder) => {
                if tl != resolve.map(|(_, value)| value) {
                    return false;
                }
            }
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            _ => return false,
        }
    }
}

/// Splits a shared subscription filter into share group and topic filter:
/// `"$share/g/x/y"` gives `("g", "x/y")`. `None` for a non-shared filter or a malformed one
/// (empty group, wildcard in the group, or nothing after the group).
pub fn shared_subscription(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, inner) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return None;
    }
    Some((group, inner))
}

#[cfg(test)]
mod tests;
