use wulian_registry::test_support::new_tenant;
use wulian_registry::{Error, Registry};

use crate::file_registry;

#[test]
fn reopen_keeps_data_and_applies_migrations_once() {
    let (_dir, path, registry) = file_registry();
    let version = registry.schema_version().unwrap();
    assert!(version >= 1);
    registry.create_tenant(&new_tenant("acme")).unwrap();
    drop(registry);

    for _ in 0..3 {
        let registry = Registry::open(&path).unwrap();
        assert_eq!(registry.schema_version().unwrap(), version);
        assert_eq!(registry.get_tenant("acme").unwrap().id, "acme");
    }

    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, version, "each migration recorded exactly once");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn database_from_a_newer_build_is_refused() {
    let (_dir, path, registry) = file_registry();
    drop(registry);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
        [],
    )
    .unwrap();
    drop(conn);
    match Registry::open(&path) {
        Err(Error::SchemaTooNew { found: 999, .. }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn in_memory_registries_are_independent() {
    let a = Registry::open_in_memory().unwrap();
    let b = Registry::open_in_memory().unwrap();
    a.create_tenant(&new_tenant("only-a")).unwrap();
    assert!(b.list_tenants().unwrap().is_empty());
    assert_eq!(a.list_tenants().unwrap().len(), 1);
}

#[test]
fn registry_is_shareable_across_threads() {
    let registry = std::sync::Arc::new(Registry::open_in_memory().unwrap());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let registry = std::sync::Arc::clone(&registry);
            std::thread::spawn(move || registry.create_tenant(&new_tenant(&format!("t{i}"))))
        })
        .collect();
    for handle in handles {
        handle.join().unwrap().unwrap();
    }
    assert_eq!(registry.list_tenants().unwrap().len(), 4);
}
