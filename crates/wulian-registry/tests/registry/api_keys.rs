use wulian_registry::test_support::{new_device, registry_with_tenant};
use wulian_registry::{API_KEY_PREFIX, Error, MqttPolicy, Registry, Scope, TopicRules};

use crate::{all_stored_text, contains_bytes, file_registry, raw_file_bytes};

#[test]
fn create_and_authenticate() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let created = registry
        .create_api_key("acme", "ci", Scope::ReadWrite)
        .unwrap();
    assert!(created.secret.starts_with(API_KEY_PREFIX));
    assert_eq!(created.secret.len(), API_KEY_PREFIX.len() + 64);
    assert!(created.key.id.starts_with("k-"));
    assert!(!created.key.installation_admin);
    assert!(!created.key.revoked);
    assert_eq!(created.key.last_used_at, None);

    let key = registry
        .authenticate_api_key(&created.secret)
        .unwrap()
        .expect("valid key");
    assert_eq!(key.id, created.key.id);
    assert_eq!(key.tenant, "acme");
    assert_eq!(key.scope, Scope::ReadWrite);
    let first_use = key.last_used_at.expect("last_used_at set");

    // Within a minute the timestamp is not rewritten (authentication stays cheap).
    let again = registry
        .authenticate_api_key(&created.secret)
        .unwrap()
        .unwrap();
    assert_eq!(again.last_used_at, Some(first_use));
    let listed = registry.list_api_keys("acme").unwrap();
    assert_eq!(listed[0].last_used_at, Some(first_use));
}

#[test]
fn unknown_malformed_and_revoked_keys_do_not_authenticate() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let created = registry.create_api_key("acme", "ci", Scope::Admin).unwrap();
    let mut tampered = created.secret.clone();
    tampered.pop();
    tampered.push(if created.secret.ends_with('0') {
        '1'
    } else {
        '0'
    });
    for secret in [
        "",
        "wlk_",
        "not-a-key",
        tampered.as_str(),
        &created.secret[API_KEY_PREFIX.len()..],
        &format!("{}x", created.secret),
        &"wlk_a".repeat(10_000),
    ] {
        assert!(
            registry.authenticate_api_key(secret).unwrap().is_none(),
            "{:.40}",
            secret
        );
    }

    registry.revoke_api_key("acme", &created.key.id).unwrap();
    assert!(
        registry
            .authenticate_api_key(&created.secret)
            .unwrap()
            .is_none()
    );
    // Revoking again is harmless; the key stays listed as revoked.
    registry.revoke_api_key("acme", &created.key.id).unwrap();
    let listed = registry.list_api_keys("acme").unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked);
}

#[test]
fn keys_are_tenant_scoped() {
    let (registry, _) = registry_with_tenant("a").unwrap();
    registry
        .create_tenant(&wulian_registry::test_support::new_tenant("b"))
        .unwrap();
    let a_key = registry.create_api_key("a", "a", Scope::Admin).unwrap();
    registry.create_api_key("b", "b", Scope::ReadOnly).unwrap();

    assert_eq!(registry.list_api_keys("a").unwrap().len(), 1);
    assert_eq!(registry.list_api_keys("b").unwrap()[0].name, "b");
    assert!(matches!(
        registry.revoke_api_key("b", &a_key.key.id),
        Err(Error::NotFound {
            kind: "api key",
            ..
        })
    ));
    assert!(
        registry
            .authenticate_api_key(&a_key.secret)
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        registry.list_api_keys("nope"),
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    assert!(matches!(
        registry.create_api_key("nope", "x", Scope::Admin),
        Err(Error::NotFound { kind: "tenant", .. })
    ));
}

#[test]
fn key_name_is_validated() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    for name in ["", "\t", &"n".repeat(201)] {
        assert!(matches!(
            registry.create_api_key("acme", name, Scope::Admin),
            Err(Error::Invalid { field: "name", .. })
        ));
    }
}

#[test]
fn last_installation_admin_key_cannot_be_revoked() {
    let registry = Registry::open_in_memory().unwrap();
    let (_, admin) = registry.bootstrap().unwrap().unwrap();
    assert!(matches!(
        registry.revoke_api_key("default", &admin.key.id),
        Err(Error::Conflict(_))
    ));
    assert!(
        registry
            .authenticate_api_key(&admin.secret)
            .unwrap()
            .is_some()
    );
    // Ordinary admin keys of the same tenant can be revoked.
    let other = registry
        .create_api_key("default", "ops", Scope::Admin)
        .unwrap();
    registry.revoke_api_key("default", &other.key.id).unwrap();
}

#[test]
fn no_secret_is_stored_in_plain_text() {
    let (_dir, path, registry) = file_registry();
    let (_, admin) = registry.bootstrap().unwrap().unwrap();
    let key = registry
        .create_api_key("default", "ci", Scope::ReadOnly)
        .unwrap();
    let (_, token) = registry
        .create_device("default", &new_device("dev-1"))
        .unwrap();
    let rotated = registry.rotate_device_token("default", "dev-1").unwrap();

    let stored = all_stored_text(&path);
    let raw = raw_file_bytes(&path);
    for secret in [&admin.secret, &key.secret, &token, &rotated] {
        // Neither the whole secret nor its random part appears, in rows or raw pages.
        let random_part = &secret[4..];
        assert!(!stored.contains(random_part), "secret found in a table");
        assert!(
            !contains_bytes(&raw, random_part.as_bytes()),
            "secret in file"
        );
    }
    // What is stored is a SHA-256 hex digest, not the secret.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let hash: String = conn
        .query_row(
            "SELECT secret_hash FROM api_keys WHERE id = ?1",
            [&key.key.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hash.len(), 64);
    assert_ne!(hash, key.secret);
    assert_ne!(hash, key.secret[4..]);

    // Listing never carries secrets or hashes.
    let listed = serde_json::to_string(&registry.list_api_keys("default").unwrap()).unwrap();
    assert!(!listed.contains(&key.secret[4..]));
    assert!(!listed.contains(&hash));
    let device = serde_json::to_string(&registry.get_device("default", "dev-1").unwrap()).unwrap();
    assert!(!device.contains(&rotated[4..]));
    assert!(!device.contains("hash"));
}

#[test]
fn scope_strings_and_permissions() {
    for (scope, text) in [
        (Scope::Admin, "admin"),
        (Scope::ReadWrite, "read_write"),
        (Scope::ReadOnly, "read_only"),
    ] {
        assert_eq!(scope.to_string(), text);
        assert_eq!(text.parse::<Scope>().unwrap(), scope);
        assert_eq!(
            serde_json::to_string(&scope).unwrap(),
            format!("\"{text}\"")
        );
        assert_eq!(
            serde_json::from_str::<Scope>(&format!("\"{text}\"")).unwrap(),
            scope
        );
    }
    assert!(matches!(
        "root".parse::<Scope>(),
        Err(Error::Invalid { field: "scope", .. })
    ));
    assert!(Scope::Admin.can_admin() && Scope::Admin.can_write());
    assert!(!Scope::ReadWrite.can_admin() && Scope::ReadWrite.can_write());
    assert!(!Scope::ReadOnly.can_admin() && !Scope::ReadOnly.can_write());
}

#[test]
fn keys_carry_mqtt_policies() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let policy = MqttPolicy {
        publish: TopicRules {
            allow: vec!["apps/${key_id}/#".into()],
            deny: vec!["apps/${key_id}/private".into()],
        },
        subscribe: TopicRules {
            allow: vec!["devices/+/telemetry".into()],
            deny: vec![],
        },
    };
    let created = registry
        .create_api_key_with_policy("acme", "dashboard", Scope::ReadOnly, Some(policy.clone()))
        .unwrap();
    let found = registry
        .authenticate_api_key(&created.secret)
        .unwrap()
        .unwrap();
    assert_eq!(found.mqtt_policy.as_ref(), Some(&policy));
    assert_eq!(found.effective_mqtt_policy(), policy);

    // Without a policy: the scope's default.
    let plain = registry
        .create_api_key("acme", "plain", Scope::ReadWrite)
        .unwrap();
    assert_eq!(plain.key.mqtt_policy, None);
    assert_eq!(
        plain.key.effective_mqtt_policy(),
        MqttPolicy::default_for(Scope::ReadWrite)
    );

    // Invalid filters and unknown variables are refused.
    let bad = MqttPolicy {
        publish: TopicRules {
            allow: vec!["a/${device_id}".into()],
            deny: vec![],
        },
        ..MqttPolicy::default()
    };
    assert!(matches!(
        registry.create_api_key_with_policy("acme", "bad", Scope::ReadOnly, Some(bad)),
        Err(Error::Invalid { .. })
    ));
}
