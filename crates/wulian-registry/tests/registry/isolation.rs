//! Tenant B must not see or touch anything of tenant A's, whatever it names.

use serde_json::json;
use wulian_registry::test_support::{new_command, new_device_with, new_tenant};
use wulian_registry::{CommandStatus, DevicePatch, DeviceQuery, Error, Registry};

fn is_not_found<T: std::fmt::Debug>(result: Result<T, Error>) -> bool {
    matches!(result, Err(Error::NotFound { .. }))
}

#[test]
fn tenant_b_cannot_reach_tenant_a() {
    let registry = Registry::open_in_memory().unwrap();
    registry.create_tenant(&new_tenant("a")).unwrap();
    registry.create_tenant(&new_tenant("b")).unwrap();
    let (device, token) = registry
        .create_device("a", &new_device_with("a-dev", "p", &[("env", "prod")]))
        .unwrap();
    let cmd = new_command("a", "a-dev", "reboot");
    registry.insert_command(&cmd).unwrap();

    assert!(is_not_found(registry.get_device("b", "a-dev")));
    assert!(is_not_found(registry.update_device(
        "b",
        "a-dev",
        &DevicePatch {
            name: Some("pwned".into()),
            disabled: Some(true),
            ..DevicePatch::default()
        }
    )));
    assert!(is_not_found(registry.delete_device("b", "a-dev")));
    assert!(is_not_found(registry.rotate_device_token("b", "a-dev")));

    let page = registry
        .list_devices(
            "b",
            &DeviceQuery {
                label: vec![("env".into(), "prod".into())],
                ..DeviceQuery::default()
            },
        )
        .unwrap();
    assert!(page.devices.is_empty());
    assert_eq!(page.total, 0);
    let page = registry
        .list_devices(
            "b",
            &DeviceQuery {
                search: Some("a-dev".into()),
                ..DeviceQuery::default()
            },
        )
        .unwrap();
    assert_eq!(page.total, 0);
    // A cursor naming A's device does not open a window into A.
    let page = registry
        .list_devices(
            "b",
            &DeviceQuery {
                cursor: Some("a-de".into()),
                ..DeviceQuery::default()
            },
        )
        .unwrap();
    assert!(page.devices.is_empty());
    assert!(registry.all_device_ids("b").unwrap().is_empty());

    // Commands.
    assert!(is_not_found(registry.get_command("b", "a-dev", &cmd.id)));
    assert!(
        registry
            .list_commands("b", "a-dev", 100, None)
            .unwrap()
            .is_empty()
    );
    assert!(is_not_found(registry.update_command(
        "b",
        &cmd.id,
        CommandStatus::Succeeded,
        Some(&json!({"forged": true})),
        1
    )));
    assert!(is_not_found(
        registry.insert_command(&new_command("b", "a-dev", "reboot"))
    ));

    // A is untouched.
    assert_eq!(registry.get_device("a", "a-dev").unwrap(), device);
    assert!(
        registry
            .authenticate_device("a-dev", &token)
            .unwrap()
            .is_some()
    );
    let stored = registry.get_command("a", "a-dev", &cmd.id).unwrap();
    assert_eq!(stored.status, CommandStatus::Pending);
    assert_eq!(stored.response, None);
    assert_eq!(
        registry
            .list_commands("a", "a-dev", 100, None)
            .unwrap()
            .len(),
        1
    );
}
