//! A rough scale check (ignored by default: it takes seconds): 100k devices in one tenant,
//! listing with filters must stay fast. Run with `cargo test -p wulian-registry -- --ignored`.

use std::time::{Duration, Instant};

use wulian_registry::test_support::{new_device_with, new_tenant};
use wulian_registry::{DeviceQuery, Registry};

#[test]
#[ignore = "slow: creates 100k devices"]
fn listing_100k_devices_stays_fast() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(&dir.path().join("r.db")).unwrap();
    registry.create_tenant(&new_tenant("big")).unwrap();
    registry.create_tenant(&new_tenant("other")).unwrap();
    let started = Instant::now();
    for i in 0..100_000u32 {
        let zone = format!("z{}", i % 100);
        let env = if i % 10 == 0 { "prod" } else { "dev" };
        let new = new_device_with(
            &format!("dev-{i:06}"),
            "p",
            &[("env", env), ("zone", &zone)],
        );
        let tenant = if i % 4 == 0 { "other" } else { "big" };
        registry.create_device(tenant, &new).unwrap();
    }
    eprintln!("created 100k devices in {:?}", started.elapsed());

    let queries = [
        DeviceQuery::default(),
        DeviceQuery {
            cursor: Some("dev-090000".into()),
            ..DeviceQuery::default()
        },
        DeviceQuery {
            label: vec![("zone".into(), "z7".into())],
            ..DeviceQuery::default()
        },
        DeviceQuery {
            label: vec![("zone".into(), "z7".into()), ("env".into(), "dev".into())],
            ..DeviceQuery::default()
        },
        DeviceQuery {
            search: Some("dev-0999".into()),
            ..DeviceQuery::default()
        },
        DeviceQuery {
            profile: Some("p".into()),
            limit: 1000,
            ..DeviceQuery::default()
        },
    ];
    for q in queries {
        let started = Instant::now();
        let page = registry.list_devices("big", &q).unwrap();
        let took = started.elapsed();
        eprintln!(
            "{q:?}: {} of {} in {took:?}",
            page.devices.len(),
            page.total
        );
        assert!(took < Duration::from_millis(500), "{q:?} took {took:?}");
    }
    let started = Instant::now();
    for i in (1..100_000u32).step_by(997) {
        let _ = registry
            .authenticate_device(&format!("dev-{i:06}"), "wld_x")
            .unwrap();
    }
    eprintln!("~100 device authentications in {:?}", started.elapsed());
}

/// Many threads sending commands at once (insert, then the final status): the shape of a busy
/// bike share's unlocks. Group commit lets their fsyncs be shared. Prints the rate.
#[test]
#[ignore = "slow: thousands of durable writes"]
fn concurrent_command_writes_share_syncs() {
    use wulian_registry::CommandStatus;
    use wulian_registry::test_support::{new_command, new_device};
    // On the project's disk: a tmpfs would make fsync free and the test meaningless.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let registry = std::sync::Arc::new(Registry::open(&dir.path().join("r.db")).unwrap());
    registry.create_tenant(&new_tenant("acme")).unwrap();
    for d in 0..32 {
        registry
            .create_device("acme", &new_device(&format!("d{d}")))
            .unwrap();
    }
    let (threads, per_thread) = (32, 100);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let registry = std::sync::Arc::clone(&registry);
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    let cmd = new_command("acme", &format!("d{t}"), "unlock");
                    registry.insert_command(&cmd).unwrap();
                    registry
                        .update_command("acme", &cmd.id, CommandStatus::Succeeded, None, 1)
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let writes = threads * per_thread * 2;
    let elapsed = started.elapsed();
    eprintln!(
        "{writes} durable writes from {threads} threads in {elapsed:?}: {:.0} writes/s",
        writes as f64 / elapsed.as_secs_f64()
    );
    let listed = registry.list_commands("acme", "d0", 500, None).unwrap();
    assert_eq!(listed.len(), per_thread);
}
