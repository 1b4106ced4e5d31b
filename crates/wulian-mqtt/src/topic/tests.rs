//! Table tests for topic validation and matching.

use super::*;

#[test]
fn topic_names() {
    for ok in [
        "a",
        "a/b",
        "/",
        "/a",
        "a/",
        "$SYS/x",
        "sport/tennis/player1",
        " ",
    ] {
        assert!(is_valid_topic_name(ok), "{ok:?} should be valid");
    }
    for bad in ["", "a/+", "#", "a/#", "+", "a\0b", "a+b"] {
        assert!(!is_valid_topic_name(bad), "{bad:?} should be invalid");
    }
    assert!(is_valid_topic_name(&"x".repeat(65_535)));
    assert!(!is_valid_topic_name(&"x".repeat(65_536)));
}

#[test]
fn topic_filters() {
    for ok in [
        "#",
        "+",
        "a/#",
        "a/+",
        "+/+",
        "+/a/#",
        "/",
        "/+",
        "a//b",
        "$SYS/#",
        "$share/g/a/#",
        "$share/g/#",
        "$sharex/#",
    ] {
        assert!(is_valid_topic_filter(ok), "{ok:?} should be valid");
    }
    for bad in [
        "",
        "a#",
        "a/#/b",
        "#/a",
        "a/b#",
        "a+",
        "a/+b",
        "++",
        "##",
        "a\0",
        "$share/",
        "$share/g",
        "$share/g/",
        "$share//a",
        "$share/g+/a",
        "$share/g/a/#/b",
    ] {
        assert!(!is_valid_topic_filter(bad), "{bad:?} should be invalid");
    }
}

#[test]
fn matching() {
    let table: &[(&str, &str, bool)] = &[
        ("a/b", "a/b", true),
        ("a/b", "a/c", false),
        ("a/b", "a/b/c", false),
        ("a/b/c", "a/b", false),
        ("#", "a", true),
        ("#", "a/b/c", true),
        ("#", "/", true),
        ("sport/#", "sport", true),
        ("sport/#", "sport/", true),
        ("sport/#", "sport/tennis/player1", true),
        ("sport/#", "sports", false),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+", "a", true),
        ("+", "a/b", false),
        ("+", "/a", false),
        ("+/+", "/x", true),
        ("/+", "/x", true),
        ("+/#", "a", true),
        ("+/b/+", "a/b/c", true),
        ("+/b/+", "a/c/c", false),
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/x", false),
        ("+", "$SYS", false),
        ("$SYS/#", "$SYS/x", true),
        ("$SYS/+", "$SYS/x", true),
        ("a/+/#", "a/$x/y", true),
        ("A", "a", false),
    ];
    for &(filter, topic, expected) in table {
        assert_eq!(matches(filter, topic), expected, "{filter:?} vs {topic:?}");
    }
}

#[test]
fn shared_subscriptions() {
    assert_eq!(shared_subscription("$share/g/x/y"), Some(("g", "x/y")));
    assert_eq!(shared_subscription("$share/group/#"), Some(("group", "#")));
    assert_eq!(shared_subscription("x/y"), None);
    assert_eq!(shared_subscription("$share/g"), None);
    assert_eq!(shared_subscription("$share//x"), None);
    assert_eq!(shared_subscription("$share/g/"), None);
    assert_eq!(shared_subscription("$share/+/x"), None);
    assert_eq!(shared_subscription("$SHARE/g/x"), None);
}

#[test]
fn a_placeholder_level_matches_only_its_value() {
    let own = Some(("${id}", "d1"));
    assert!(matches_with("devices/${id}/#", "devices/d1/telemetry", own));
    assert!(matches_with("devices/${id}/#", "devices/d1", own));
    assert!(!matches_with(
        "devices/${id}/#",
        "devices/d2/telemetry",
        own
    ));
    assert!(!matches_with("devices/${id}", "devices", own));
    // The value is taken literally, never as a wildcard.
    assert!(!matches_with(
        "devices/${id}/x",
        "devices/d1/x",
        Some(("${id}", "+"))
    ));
    // Without a placeholder the level is plain text, as in `matches`.
    assert!(matches_with("devices/${id}/x", "devices/${id}/x", None));
    assert!(!matches_with("+/${id}", "$SYS/d1", own));
}
