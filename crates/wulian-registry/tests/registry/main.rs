//! Integration tests for the registry, against real SQLite (files in temp dirs, and in memory).
//! One test binary with modules, so the crate and SQLite are linked once.

mod api_keys;
mod certificates;
mod commands;
mod devices;
mod isolation;
mod migrations;
mod scale;
mod tenants;

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use wulian_registry::Registry;

/// A registry in a fresh file; keep the `TempDir` alive as long as the registry.
pub fn file_registry() -> (TempDir, PathBuf, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let registry = Registry::open(&path).unwrap();
    (dir, path, registry)
}

/// Every text and blob value in every table of the database at `path`, opened independently
/// of the registry (as an attacker with a copy of the file would).
pub fn all_stored_text(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = String::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        out.push_str(&String::from_utf8_lossy(t));
                        out.push('\n');
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// The raw bytes of the database file and its WAL, as they sit on disk.
pub fn raw_file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if let Ok(more) = std::fs::read(wal) {
        bytes.extend(more);
    }
    bytes
}

pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Row count of `table` where `tenant_col = tenant`, read directly.
pub fn count_rows(path: &Path, table: &str, tenant_col: &str, tenant: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        &format!("SELECT count(*) FROM {table} WHERE {tenant_col} = ?1"),
        [tenant],
        |r| r.get(0),
    )
    .unwrap()
}
