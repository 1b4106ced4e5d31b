use std::sync::Arc;

use wulian_registry::test_support::{new_command, new_device, new_device_with, new_tenant};
use wulian_registry::{DEFAULT_TENANT_ID, Error, NewTenant, Registry, Scope};

use crate::{count_rows, file_registry};

#[test]
fn bootstrap_creates_admin_once() {
    let (_dir, path, registry) = file_registry();
    let (tenant, key) = registry
        .bootstrap()
        .unwrap()
        .expect("first start bootstraps");
    assert_eq!(tenant.id, DEFAULT_TENANT_ID);
    assert_eq!(tenant.name, "Default");
    assert_eq!(key.key.tenant, "default");
    assert_eq!(key.key.scope, Scope::Admin);
    assert!(key.key.installation_admin);
    assert!(key.secret.starts_with(wulian_registry::API_KEY_PREFIX));
    assert!(
        !format!("{key:?}").contains(&key.secret),
        "Debug redacts the secret"
    );

    let authed = registry.authenticate_api_key(&key.secret).unwrap().unwrap();
    assert_eq!(authed.id, key.key.id);
    assert!(authed.installation_admin);

    assert!(registry.bootstrap().unwrap().is_none());
    drop(registry);
    let registry = Registry::open(&path).unwrap();
    assert!(
        registry.bootstrap().unwrap().is_none(),
        "not again after reopen"
    );
    assert_eq!(registry.list_tenants().unwrap().len(), 1);
    assert_eq!(registry.list_api_keys("default").unwrap().len(), 1);
}

#[test]
fn bootstrap_skips_when_tenants_exist() {
    let registry = Registry::open_in_memory().unwrap();
    registry.create_tenant(&new_tenant("acme")).unwrap();
    assert!(registry.bootstrap().unwrap().is_none());
    assert!(matches!(
        registry.get_tenant("default"),
        Err(Error::NotFound { kind: "tenant", .. })
    ));
}

#[test]
fn concurrent_bootstrap_creates_exactly_one_admin() {
    let (_dir, path, registry) = file_registry();
    drop(registry);
    // Two registries on one file stand in for two processes starting at once.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let registry = Arc::new(Registry::open(&path).unwrap());
            std::thread::spawn(move || registry.bootstrap().unwrap().is_some())
        })
        .collect();
    let created = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|c| *c)
        .count();
    assert_eq!(created, 1);
}

#[test]
fn create_get_list_tenants() {
    let registry = Registry::open_in_memory().unwrap();
    let acme = registry
        .create_tenant(&NewTenant {
            id: Some("acme-1".into()),
            name: "Acme".into(),
        })
        .unwrap();
    assert_eq!(acme.id, "acme-1");
    assert_eq!(registry.get_tenant("acme-1").unwrap(), acme);

    let generated = registry
        .create_tenant(&NewTenant {
            id: None,
            name: "Generated".into(),
        })
        .unwrap();
    let hex = generated.id.strip_prefix("t-").expect("t- prefix");
    assert_eq!(hex.len(), 8);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));

    let ids: Vec<_> = registry
        .list_tenants()
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"acme-1".to_string()));

    assert!(matches!(
        registry.create_tenant(&new_tenant("acme-1")),
        Err(Error::AlreadyExists { kind: "tenant", .. })
    ));
    assert!(matches!(
        registry.get_tenant("nope"),
        Err(Error::NotFound { kind: "tenant", .. })
    ));
}

#[test]
fn tenant_validation() {
    let registry = Registry::open_in_memory().unwrap();
    let bad_ids = ["", "Acme", "-acme", "acme_1", "a b", &"a".repeat(64), "ä"];
    for id in bad_ids {
        let err = registry
            .create_tenant(&NewTenant {
                id: Some(id.to_string()),
                name: "x".into(),
            })
            .unwrap_err();
        assert!(
            matches!(err, Error::Invalid { field: "id", .. }),
            "{id:?}: {err:?}"
        );
    }
    registry
        .create_tenant(&new_tenant(&"a".repeat(63)))
        .unwrap();
    registry.create_tenant(&new_tenant("0-a")).unwrap();

    for name in [
        String::new(),
        "   ".into(),
        "a".repeat(201),
        "bad\nname".into(),
    ] {
        let err = registry
            .create_tenant(&NewTenant {
                id: Some("fine".into()),
                name: name.clone(),
            })
            .unwrap_err();
        assert!(
            matches!(err, Error::Invalid { field: "name", .. }),
            "{name:?}: {err:?}"
        );
    }
    // 200 multi-byte characters are fine: limits count characters.
    registry
        .create_tenant(&NewTenant {
            id: Some("wide".into()),
            name: "物".repeat(200),
        })
        .unwrap();
}

#[test]
fn delete_tenant_cascades_to_everything() {
    let (_dir, path, registry) = file_registry();
    registry.bootstrap().unwrap().unwrap();
    registry.create_tenant(&new_tenant("gone")).unwrap();
    registry.create_tenant(&new_tenant("kept")).unwrap();
    let key = registry
        .create_api_key("gone", "app", Scope::ReadWrite)
        .unwrap();
    let (_, token) = registry
        .create_device("gone", &new_device_with("gone-1", "p", &[("env", "prod")]))
        .unwrap();
    registry
        .insert_command(&new_command("gone", "gone-1", "reboot"))
        .unwrap();
    registry
        .create_device("kept", &new_device_with("kept-1", "p", &[("env", "prod")]))
        .unwrap();
    registry
        .insert_command(&new_command("kept", "kept-1", "reboot"))
        .unwrap();

    registry.delete_tenant("gone").unwrap();

    assert!(matches!(
        registry.get_tenant("gone"),
        Err(Error::NotFound { .. })
    ));
    assert!(
        registry
            .authenticate_api_key(&key.secret)
            .unwrap()
            .is_none()
    );
    assert!(
        registry
            .authenticate_device("gone-1", &token)
            .unwrap()
            .is_none()
    );
    for (table, column) in [
        ("api_keys", "tenant"),
        ("devices", "tenant"),
        ("device_labels", "tenant"),
        ("commands", "tenant"),
    ] {
        assert_eq!(count_rows(&path, table, column, "gone"), 0, "{table}");
        assert_eq!(
            count_rows(&path, table, column, "kept"),
            i64::from(table != "api_keys"),
            "{table} of the other tenant untouched"
        );
    }
    // The global device id is free again.
    registry
        .create_device("kept", &new_device("gone-1"))
        .unwrap();
    assert!(matches!(
        registry.delete_tenant("gone"),
        Err(Error::NotFound { kind: "tenant", .. })
    ));
}

#[test]
fn installation_admin_tenant_cannot_be_deleted() {
    let registry = Registry::open_in_memory().unwrap();
    registry.bootstrap().unwrap().unwrap();
    assert!(matches!(
        registry.delete_tenant(DEFAULT_TENANT_ID),
        Err(Error::Conflict(_))
    ));
    assert!(registry.get_tenant(DEFAULT_TENANT_ID).is_ok());
}
