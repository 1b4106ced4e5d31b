use std::collections::BTreeMap;

use serde_json::json;
use wulian_registry::test_support::{
    new_device, new_device_with, new_tenant, registry_with_tenant,
};
use wulian_registry::{DEVICE_TOKEN_PREFIX, DevicePatch, DeviceQuery, Error, NewDevice, Registry};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[test]
fn create_get_update_delete() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let (device, token) = registry
        .create_device(
            "acme",
            &NewDevice {
                id: "sensor-1".into(),
                name: Some("Kitchen sensor".into()),
                profile: Some("thermo".into()),
                labels: labels(&[("env", "prod"), ("zone", "a")]),
                attributes: Some(json!({"fw": "1.2", "pins": [1, 2]})),
                disabled: false,
            },
        )
        .unwrap();
    assert!(token.starts_with(DEVICE_TOKEN_PREFIX));
    assert_eq!(token.len(), DEVICE_TOKEN_PREFIX.len() + 64);
    assert_eq!(device.tenant, "acme");
    assert_eq!(device.created_at, device.updated_at);
    assert_eq!(device.token_rotated_at, device.created_at);

    let loaded = registry.get_device("acme", "sensor-1").unwrap();
    assert_eq!(loaded, device);

    let updated = registry
        .update_device(
            "acme",
            "sensor-1",
            &DevicePatch {
                name: Some("Hall sensor".into()),
                labels: Some(labels(&[("env", "dev")])),
                attributes: Some(json!({"fw": "1.3"})),
                ..DevicePatch::default()
            },
        )
        .unwrap();
    assert_eq!(updated.name, "Hall sensor");
    assert_eq!(updated.profile, "thermo", "untouched fields stay");
    assert_eq!(
        updated.labels,
        labels(&[("env", "dev")]),
        "labels replaced whole"
    );
    assert_eq!(updated.attributes, json!({"fw": "1.3"}));
    assert!(!updated.disabled);
    assert!(updated.updated_at >= device.updated_at);
    assert_eq!(registry.get_device("acme", "sensor-1").unwrap(), updated);

    // An empty label map clears labels; other fields unchanged.
    let cleared = registry
        .update_device(
            "acme",
            "sensor-1",
            &DevicePatch {
                labels: Some(BTreeMap::new()),
                profile: Some("thermo-v2".into()),
                ..DevicePatch::default()
            },
        )
        .unwrap();
    assert!(cleared.labels.is_empty());
    assert_eq!(cleared.profile, "thermo-v2");
    assert_eq!(cleared.attributes, json!({"fw": "1.3"}));

    registry.delete_device("acme", "sensor-1").unwrap();
    assert!(matches!(
        registry.get_device("acme", "sensor-1"),
        Err(Error::NotFound { kind: "device", .. })
    ));
    assert!(matches!(
        registry.delete_device("acme", "sensor-1"),
        Err(Error::NotFound { kind: "device", .. })
    ));
    assert!(
        registry
            .authenticate_device("sensor-1", &token)
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        registry.update_device("acme", "sensor-1", &DevicePatch::default()),
        Err(Error::NotFound { kind: "device", .. })
    ));
}

#[test]
fn defaults_for_new_devices() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let (device, _) = registry
        .create_device("acme", &new_device("d:1.a_b-c"))
        .unwrap();
    assert_eq!(device.name, "d:1.a_b-c");
    assert_eq!(device.profile, "default");
    assert!(device.labels.is_empty());
    assert_eq!(device.attributes, json!({}));
    assert!(!device.disabled);
    // An explicitly empty name is allowed.
    let (device, _) = registry
        .create_device(
            "acme",
            &NewDevice {
                id: "nameless".into(),
                name: Some(String::new()),
                ..NewDevice::default()
            },
        )
        .unwrap();
    assert_eq!(device.name, "");
    assert!(matches!(
        registry.create_device("nope", &new_device("x")),
        Err(Error::NotFound { kind: "tenant", .. })
    ));
}

fn invalid_field(result: Result<impl std::fmt::Debug, Error>) -> &'static str {
    match result {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn create_validates_each_field() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let base = new_device("ok");
    let cases: Vec<(NewDevice, &str)> = vec![
        (new_device(""), "id"),
        (new_device(&"x".repeat(129)), "id"),
        (new_device("a/b"), "id"),
        (new_device("a b"), "id"),
        (new_device("a+"), "id"),
        (new_device("me"), "id"),
        (new_device("dévice"), "id"),
        (
            NewDevice {
                name: Some("n".repeat(201)),
                ..base.clone()
            },
            "name",
        ),
        (
            NewDevice {
                name: Some("line\nbreak".into()),
                ..base.clone()
            },
            "name",
        ),
        (
            NewDevice {
                profile: Some(String::new()),
                ..base.clone()
            },
            "profile",
        ),
        (
            NewDevice {
                profile: Some("a/b".into()),
                ..base.clone()
            },
            "profile",
        ),
        (
            NewDevice {
                labels: (0..65)
                    .map(|i| (format!("k{i}"), "v".to_string()))
                    .collect(),
                ..base.clone()
            },
            "labels",
        ),
        (
            NewDevice {
                labels: labels(&[("bad key", "v")]),
                ..base.clone()
            },
            "labels",
        ),
        (
            NewDevice {
                labels: labels(&[("", "v")]),
                ..base.clone()
            },
            "labels",
        ),
        (
            NewDevice {
                labels: labels(&[(&"k".repeat(64), "v")]),
                ..base.clone()
            },
            "labels",
        ),
        (
            NewDevice {
                labels: labels(&[("k", &"v".repeat(257))]),
                ..base.clone()
            },
            "labels",
        ),
        (
            NewDevice {
                attributes: Some(json!([1, 2])),
                ..base.clone()
            },
            "attributes",
        ),
        (
            NewDevice {
                attributes: Some(json!("text")),
                ..base.clone()
            },
            "attributes",
        ),
        (
            NewDevice {
                attributes: Some(json!({"blob": "x".repeat(16 * 1024)})),
                ..base.clone()
            },
            "attributes",
        ),
    ];
    for (new, field) in cases {
        assert_eq!(
            invalid_field(registry.create_device("acme", &new)),
            field,
            "{:.60}",
            format!("{new:?}")
        );
    }
    // Boundaries that are allowed.
    registry
        .create_device(
            "acme",
            &NewDevice {
                id: "x".repeat(128),
                name: Some("名".repeat(200)),
                labels: (0..64)
                    .map(|i| (format!("{i:0>63}"), "値".repeat(256)))
                    .collect(),
                attributes: Some(json!({"blob": "x".repeat(16 * 1024 - 20)})),
                ..NewDevice::default()
            },
        )
        .unwrap();
    assert!(
        registry
            .list_devices("acme", &DeviceQuery::default())
            .unwrap()
            .total
            == 1,
        "nothing invalid was stored"
    );
}

#[test]
fn update_validates_each_field() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    registry.create_device("acme", &new_device("d1")).unwrap();
    let cases: Vec<(DevicePatch, &str)> = vec![
        (
            DevicePatch {
                name: Some("n".repeat(201)),
                ..DevicePatch::default()
            },
            "name",
        ),
        (
            DevicePatch {
                profile: Some("x y".into()),
                ..DevicePatch::default()
            },
            "profile",
        ),
        (
            DevicePatch {
                labels: Some(labels(&[("k/", "v")])),
                ..DevicePatch::default()
            },
            "labels",
        ),
        (
            DevicePatch {
                attributes: Some(json!(null)),
                ..DevicePatch::default()
            },
            "attributes",
        ),
    ];
    for (patch, field) in cases {
        assert_eq!(
            invalid_field(registry.update_device("acme", "d1", &patch)),
            field
        );
    }
    let device = registry.get_device("acme", "d1").unwrap();
    assert_eq!(device.name, "d1");
    assert_eq!(device.profile, "default");
}

#[test]
fn device_ids_are_unique_across_tenants() {
    let (registry, _) = registry_with_tenant("a").unwrap();
    registry.create_tenant(&new_tenant("b")).unwrap();
    registry.create_device("a", &new_device("shared")).unwrap();

    let same_tenant = registry
        .create_device("a", &new_device("shared"))
        .unwrap_err();
    let other_tenant = registry
        .create_device("b", &new_device("shared"))
        .unwrap_err();
    assert!(matches!(
        other_tenant,
        Error::AlreadyExists { kind: "device", .. }
    ));
    assert_eq!(
        same_tenant.to_string(),
        other_tenant.to_string(),
        "the message does not reveal which tenant owns the id"
    );
    assert!(matches!(
        registry.get_device("b", "shared"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn pagination_and_filters_over_250_devices() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(&dir.path().join("r.db")).unwrap();
    registry.create_tenant(&new_tenant("a")).unwrap();
    registry.create_tenant(&new_tenant("b")).unwrap();
    for i in 0..250u32 {
        let profile = if i % 2 == 0 { "sensor" } else { "gateway" };
        let env = if i % 5 == 0 { "prod" } else { "dev" };
        let zone = format!("z{}", i % 3);
        let mut new = new_device_with(
            &format!("dev-{i:03}"),
            profile,
            &[("env", env), ("zone", &zone)],
        );
        new.name = Some(if i % 10 == 0 {
            format!("Kitchen {i}")
        } else {
            format!("Device {i}")
        });
        registry.create_device("a", &new).unwrap();
    }
    // Another tenant's look-alikes must never show up.
    for i in 0..20 {
        registry
            .create_device(
                "b",
                &new_device_with(&format!("b-dev-{i:03}"), "sensor", &[("env", "prod")]),
            )
            .unwrap();
    }

    let walk = |q: DeviceQuery| -> (Vec<String>, Vec<u64>, usize) {
        let mut q = q;
        let mut ids = Vec::new();
        let mut totals = Vec::new();
        let mut pages = 0;
        loop {
            let page = registry.list_devices("a", &q).unwrap();
            pages += 1;
            assert!(page.devices.len() <= q.limit as usize);
            totals.push(page.total);
            ids.extend(page.devices.iter().map(|d| {
                assert_eq!(d.tenant, "a");
                d.id.clone()
            }));
            match page.next_cursor {
                Some(cursor) => q.cursor = Some(cursor),
                None => break,
            }
            assert!(pages < 100, "pagination must terminate");
        }
        (ids, totals, pages)
    };

    // Everything, 100 per page: 100 + 100 + 50.
    let (ids, totals, pages) = walk(DeviceQuery::default());
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 250);
    assert!(totals.iter().all(|t| *t == 250));
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "ascending by id, no duplicates");
    assert_eq!(ids[0], "dev-000");

    // Exactly one full page: no next cursor.
    let page = registry
        .list_devices(
            "a",
            &DeviceQuery {
                limit: 1000,
                ..DeviceQuery::default()
            },
        )
        .unwrap();
    assert_eq!(page.devices.len(), 250);
    assert_eq!(page.next_cursor, None);
    let page = registry
        .list_devices(
            "a",
            &DeviceQuery {
                limit: 50,
                cursor: Some("dev-199".into()),
                ..DeviceQuery::default()
            },
        )
        .unwrap();
    assert_eq!(page.devices.len(), 50);
    assert_eq!(
        page.next_cursor, None,
        "the page ends exactly at the last device"
    );
    assert_eq!(page.total, 250, "total ignores the cursor");

    // Profile filter.
    let (ids, totals, pages) = walk(DeviceQuery {
        limit: 40,
        profile: Some("sensor".into()),
        ..DeviceQuery::default()
    });
    assert_eq!(ids.len(), 125);
    assert_eq!(pages, 4);
    assert!(totals.iter().all(|t| *t == 125));
    assert!(
        ids.iter()
            .all(|id| id[4..].parse::<u32>().unwrap() % 2 == 0)
    );

    // One label; two labels (all must match).
    let (ids, totals, _) = walk(DeviceQuery {
        limit: 7,
        label: vec![("env".into(), "prod".into())],
        ..DeviceQuery::default()
    });
    assert_eq!(ids.len(), 50);
    assert_eq!(totals[0], 50);
    let (ids, totals, _) = walk(DeviceQuery {
        limit: 5,
        label: vec![("env".into(), "prod".into()), ("zone".into(), "z0".into())],
        ..DeviceQuery::default()
    });
    assert_eq!(ids.len(), 17, "i % 15 == 0 for i in 0..250");
    assert_eq!(totals[0], 17);
    assert!(
        ids.iter()
            .all(|id| id[4..].parse::<u32>().unwrap() % 15 == 0)
    );

    // Search: name, case-insensitive; id substring.
    let (ids, totals, _) = walk(DeviceQuery {
        limit: 10,
        search: Some("KITCHEN".into()),
        ..DeviceQuery::default()
    });
    assert_eq!(ids.len(), 25);
    assert_eq!(totals[0], 25);
    let (ids, _, _) = walk(DeviceQuery {
        search: Some("DEV-01".into()),
        ..DeviceQuery::default()
    });
    assert_eq!(ids.len(), 10);

    // Everything at once: sensor + prod + "kitchen" -> i % 10 == 0 -> 25.
    let (ids, totals, _) = walk(DeviceQuery {
        limit: 3,
        profile: Some("sensor".into()),
        label: vec![("env".into(), "prod".into())],
        search: Some("kitchen".into()),
        ..DeviceQuery::default()
    });
    assert_eq!(ids.len(), 25);
    assert_eq!(totals[0], 25);

    // Nothing matches.
    let page = registry
        .list_devices(
            "a",
            &DeviceQuery {
                label: vec![("env".into(), "nope".into())],
                ..DeviceQuery::default()
            },
        )
        .unwrap();
    assert!(page.devices.is_empty());
    assert_eq!(page.total, 0);
    assert_eq!(page.next_cursor, None);

    // Wildcard-looking search text is literal.
    let page = registry
        .list_devices(
            "a",
            &DeviceQuery {
                search: Some("%".into()),
                ..DeviceQuery::default()
            },
        )
        .unwrap();
    assert_eq!(page.total, 0);

    // Bad limits and too many label filters.
    for limit in [0, 1001] {
        assert_eq!(
            invalid_field(registry.list_devices(
                "a",
                &DeviceQuery {
                    limit,
                    ..DeviceQuery::default()
                }
            )),
            "limit"
        );
    }
    let many = (0..17)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    assert_eq!(
        invalid_field(registry.list_devices(
            "a",
            &DeviceQuery {
                label: many,
                ..DeviceQuery::default()
            }
        )),
        "label"
    );

    assert_eq!(registry.all_device_ids("a").unwrap().len(), 250);
    assert_eq!(registry.all_device_ids("b").unwrap().len(), 20);
}

#[test]
fn token_authentication_and_rotation() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let (_, token) = registry.create_device("acme", &new_device("d1")).unwrap();
    let identity = registry.authenticate_device("d1", &token).unwrap().unwrap();
    assert_eq!(identity.tenant, "acme");
    assert_eq!(identity.device_id, "d1");

    let wrong = format!("{}0", &token[..token.len() - 1]);
    for (id, secret) in [
        ("d1", ""),
        ("d1", "wld_"),
        ("d1", wrong.as_str()),
        ("d2", token.as_str()),
        ("", token.as_str()),
        ("D1", token.as_str()),
        ("d1", &token[4..]),
    ] {
        if secret == token && id == "d1" {
            continue;
        }
        assert!(
            registry.authenticate_device(id, secret).unwrap().is_none(),
            "{id} {secret:.10}"
        );
    }
    assert!(
        registry
            .authenticate_device("d1", &"x".repeat(100_000))
            .unwrap()
            .is_none()
    );
    assert!(
        registry
            .authenticate_device(&"d".repeat(10_000), &token)
            .unwrap()
            .is_none()
    );

    let before = registry.get_device("acme", "d1").unwrap();
    let rotated = registry.rotate_device_token("acme", "d1").unwrap();
    assert_ne!(rotated, token);
    assert!(rotated.starts_with(DEVICE_TOKEN_PREFIX));
    assert!(
        registry
            .authenticate_device("d1", &token)
            .unwrap()
            .is_none(),
        "old token dead"
    );
    assert_eq!(
        registry
            .authenticate_device("d1", &rotated)
            .unwrap()
            .unwrap()
            .tenant,
        "acme"
    );
    let after = registry.get_device("acme", "d1").unwrap();
    assert!(after.token_rotated_at >= before.token_rotated_at);
    assert!(matches!(
        registry.rotate_device_token("acme", "nope"),
        Err(Error::NotFound { kind: "device", .. })
    ));
}

#[test]
fn rotation_with_grace_keeps_the_old_token_until_it_expires() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let (_, first) = registry.create_device("acme", &new_device("d1")).unwrap();
    let second = registry
        .rotate_device_token_with_grace("acme", "d1", 60_000)
        .unwrap();
    let works = |t: &str| registry.authenticate_device("d1", t).unwrap().is_some();
    assert!(works(&first), "old token valid during the grace period");
    assert!(works(&second));
    // A second rotation gives grace to the token it replaces only.
    let third = registry
        .rotate_device_token_with_grace("acme", "d1", 60_000)
        .unwrap();
    assert!(!works(&first));
    assert!(works(&second) && works(&third));
    // An immediate rotation ends every grace.
    let fourth = registry.rotate_device_token("acme", "d1").unwrap();
    assert!(!works(&second) && !works(&third) && works(&fourth));
    // A grace that has run out.
    let fifth = registry
        .rotate_device_token_with_grace("acme", "d1", 1)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(!works(&fourth) && works(&fifth));
    assert!(
        registry
            .rotate_device_token_with_grace("acme", "d1", -1)
            .is_err()
    );
}

#[test]
fn disabled_devices_cannot_authenticate() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let (_, token) = registry.create_device("acme", &new_device("d1")).unwrap();
    registry
        .update_device(
            "acme",
            "d1",
            &DevicePatch {
                disabled: Some(true),
                ..DevicePatch::default()
            },
        )
        .unwrap();
    assert!(registry.get_device("acme", "d1").unwrap().disabled);
    assert!(
        registry
            .authenticate_device("d1", &token)
            .unwrap()
            .is_none()
    );
    registry
        .update_device(
            "acme",
            "d1",
            &DevicePatch {
                disabled: Some(false),
                ..DevicePatch::default()
            },
        )
        .unwrap();
    assert!(
        registry
            .authenticate_device("d1", &token)
            .unwrap()
            .is_some()
    );

    let (device, token) = registry
        .create_device(
            "acme",
            &NewDevice {
                id: "d2".into(),
                disabled: true,
                ..NewDevice::default()
            },
        )
        .unwrap();
    assert!(device.disabled);
    assert!(
        registry
            .authenticate_device("d2", &token)
            .unwrap()
            .is_none()
    );
}

#[test]
fn device_serializes_for_the_api() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let (device, _) = registry
        .create_device("acme", &new_device_with("d1", "p", &[("env", "prod")]))
        .unwrap();
    let value = serde_json::to_value(&device).unwrap();
    assert_eq!(value["labels"], json!({"env": "prod"}));
    assert_eq!(value["attributes"], json!({}));
    let back: wulian_registry::Device = serde_json::from_value(value).unwrap();
    assert_eq!(back, device);
}
