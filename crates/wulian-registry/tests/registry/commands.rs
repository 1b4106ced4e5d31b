use serde_json::json;
use wulian_registry::test_support::{new_command, new_device, registry_with_tenant};
use wulian_registry::{Command, CommandStatus, Error, new_command_id};

fn command_at(device: &str, name: &str, created_at: i64) -> Command {
    let mut cmd = new_command("acme", device, name);
    cmd.created_at = created_at;
    cmd.updated_at = created_at;
    cmd
}

#[test]
fn insert_get_update() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    registry.create_device("acme", &new_device("d1")).unwrap();
    let mut cmd = new_command("acme", "d1", "reboot");
    cmd.params = json!({"delay": 5});
    registry.insert_command(&cmd).unwrap();
    assert_eq!(registry.get_command("acme", "d1", &cmd.id).unwrap(), cmd);

    let sent = registry
        .update_command(
            "acme",
            &cmd.id,
            CommandStatus::Sent,
            None,
            cmd.created_at + 1,
        )
        .unwrap();
    assert_eq!(sent.status, CommandStatus::Sent);
    assert_eq!(sent.updated_at, cmd.created_at + 1);
    assert_eq!(sent.response, None);

    let answer = json!({"ok": true, "uptime": 3});
    let done = registry
        .update_command(
            "acme",
            &cmd.id,
            CommandStatus::Succeeded,
            Some(&answer),
            cmd.created_at + 2,
        )
        .unwrap();
    assert_eq!(done.status, CommandStatus::Succeeded);
    assert_eq!(done.response, Some(answer.clone()));
    assert_eq!(done.params, json!({"delay": 5}));
    assert_eq!(registry.get_command("acme", "d1", &cmd.id).unwrap(), done);

    // A final status is never overwritten.
    assert!(matches!(
        registry.update_command(
            "acme",
            &cmd.id,
            CommandStatus::TimedOut,
            None,
            cmd.created_at + 3
        ),
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        registry.get_command("acme", "d1", &cmd.id).unwrap().status,
        CommandStatus::Succeeded
    );

    assert!(matches!(
        registry.update_command("acme", "c-missing", CommandStatus::Sent, None, 0),
        Err(Error::NotFound {
            kind: "command",
            ..
        })
    ));
    assert!(matches!(
        registry.get_command("acme", "d1", "c-missing"),
        Err(Error::NotFound {
            kind: "command",
            ..
        })
    ));
    assert!(matches!(
        registry.get_command("acme", "other-device", &cmd.id),
        Err(Error::NotFound {
            kind: "command",
            ..
        })
    ));
}

#[test]
fn insert_rejects_bad_input() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    registry.create_device("acme", &new_device("d1")).unwrap();
    let cmd = new_command("acme", "d1", "reboot");
    registry.insert_command(&cmd).unwrap();
    assert!(matches!(
        registry.insert_command(&cmd),
        Err(Error::AlreadyExists {
            kind: "command",
            ..
        })
    ));
    assert!(matches!(
        registry.insert_command(&new_command("acme", "ghost", "reboot")),
        Err(Error::NotFound { kind: "device", .. })
    ));
    for name in ["", "a/b", "+", &"x".repeat(65)] {
        assert!(matches!(
            registry.insert_command(&new_command("acme", "d1", name)),
            Err(Error::Invalid { field: "name", .. })
        ));
    }
    let mut big = new_command("acme", "d1", "upload");
    big.params = json!({"blob": "x".repeat(64 * 1024)});
    assert!(matches!(
        registry.insert_command(&big),
        Err(Error::Invalid {
            field: "params",
            ..
        })
    ));
    let mut forever = new_command("acme", "d1", "wait");
    forever.timeout_ms = u64::MAX;
    assert!(matches!(
        registry.insert_command(&forever),
        Err(Error::Invalid {
            field: "timeout_ms",
            ..
        })
    ));
}

#[test]
fn list_is_newest_first_with_paging() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    registry.create_device("acme", &new_device("d1")).unwrap();
    registry.create_device("acme", &new_device("d2")).unwrap();
    for i in 0..10 {
        registry
            .insert_command(&command_at("d1", "ping", 1_000 + i))
            .unwrap();
    }
    registry
        .insert_command(&command_at("d2", "ping", 5_000))
        .unwrap();

    let all = registry.list_commands("acme", "d1", 100, None).unwrap();
    assert_eq!(all.len(), 10);
    let times: Vec<i64> = all.iter().map(|c| c.created_at).collect();
    assert_eq!(times, (1_000..1_010).rev().collect::<Vec<_>>());
    assert!(all.iter().all(|c| c.device_id == "d1"));

    let first = registry.list_commands("acme", "d1", 4, None).unwrap();
    assert_eq!(first.len(), 4);
    let next = registry
        .list_commands("acme", "d1", 4, Some(first[3].created_at))
        .unwrap();
    assert_eq!(next[0].created_at, 1_005);
    assert!(
        registry
            .list_commands("acme", "d1", 4, Some(1_000))
            .unwrap()
            .is_empty()
    );
    assert!(
        registry
            .list_commands("acme", "ghost", 4, None)
            .unwrap()
            .is_empty()
    );
    for limit in [0, 1001] {
        assert!(matches!(
            registry.list_commands("acme", "d1", limit, None),
            Err(Error::Invalid { field: "limit", .. })
        ));
    }
}

#[test]
fn stale_commands_expire_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let ids = {
        let registry = wulian_registry::Registry::open(&path).unwrap();
        registry
            .create_tenant(&wulian_registry::test_support::new_tenant("acme"))
            .unwrap();
        registry.create_device("acme", &new_device("d1")).unwrap();
        let pending = new_command("acme", "d1", "a");
        let sent = new_command("acme", "d1", "b");
        let done = new_command("acme", "d1", "c");
        for cmd in [&pending, &sent, &done] {
            registry.insert_command(cmd).unwrap();
        }
        registry
            .update_command("acme", &sent.id, CommandStatus::Sent, None, 1)
            .unwrap();
        registry
            .update_command(
                "acme",
                &done.id,
                CommandStatus::Failed,
                Some(&json!({"error": "x"})),
                1,
            )
            .unwrap();
        [pending.id, sent.id, done.id]
    };
    // "Restart".
    let registry = wulian_registry::Registry::open(&path).unwrap();
    assert_eq!(registry.expire_stale_commands(42).unwrap(), 2);
    let status = |id: &str| registry.get_command("acme", "d1", id).unwrap();
    assert_eq!(status(&ids[0]).status, CommandStatus::TimedOut);
    assert_eq!(status(&ids[0]).updated_at, 42);
    assert_eq!(status(&ids[1]).status, CommandStatus::TimedOut);
    assert_eq!(status(&ids[2]).status, CommandStatus::Failed);
    assert_eq!(status(&ids[2]).response, Some(json!({"error": "x"})));
    assert_eq!(registry.expire_stale_commands(43).unwrap(), 0);
}

#[test]
fn commands_go_with_their_device_and_can_be_pruned() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    registry.create_device("acme", &new_device("d1")).unwrap();
    let old = command_at("d1", "old", 10);
    let open = command_at("d1", "open", 10);
    let new = command_at("d1", "new", 10_000);
    for cmd in [&old, &open, &new] {
        registry.insert_command(cmd).unwrap();
    }
    registry
        .update_command("acme", &old.id, CommandStatus::Undelivered, None, 11)
        .unwrap();
    assert_eq!(
        registry.prune_commands(100).unwrap(),
        1,
        "only finished, old commands"
    );
    assert_eq!(
        registry
            .list_commands("acme", "d1", 10, None)
            .unwrap()
            .len(),
        2
    );

    registry.delete_device("acme", "d1").unwrap();
    registry.create_device("acme", &new_device("d1")).unwrap();
    assert!(
        registry
            .list_commands("acme", "d1", 10, None)
            .unwrap()
            .is_empty(),
        "a re-created device does not inherit commands"
    );
}

#[test]
fn status_strings() {
    use CommandStatus::*;
    for (status, text, fin) in [
        (Pending, "pending", false),
        (Sent, "sent", false),
        (Succeeded, "succeeded", true),
        (Failed, "failed", true),
        (TimedOut, "timed_out", true),
        (Undelivered, "undelivered", true),
    ] {
        assert_eq!(status.to_string(), text);
        assert_eq!(text.parse::<CommandStatus>().unwrap(), status);
        assert_eq!(serde_json::to_value(status).unwrap(), json!(text));
        assert_eq!(status.is_final(), fin);
    }
    assert!("done".parse::<CommandStatus>().is_err());
}

#[test]
fn command_ids_look_right() {
    let a = new_command_id();
    let b = new_command_id();
    assert_ne!(a, b);
    let hex = a.strip_prefix("c-").unwrap();
    assert_eq!(hex.len(), 16);
    assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
}
