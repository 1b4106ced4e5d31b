//! The query set answered by two independent implementations — wulian's Rust API and SQL over
//! the ThingsBoard tables in SQLite — on the same small data set must agree, from the head and
//! again from block files. The HTTP peers are checked the same way by every benchmark run.

use wulian_tsdb::{Config, Durability, Tsdb};

use crate::generate::generate;
use crate::measure::Answer;
use crate::queries::{Engine, Plan, Query};
use crate::sql;
use crate::sqlite::{self, SqliteEngine};
use crate::wulian::{WulianEngine, ingest, runtime};

fn same(q: Query, a: Answer, b: Answer) {
    assert_eq!(a.count, b.count, "{}: counts differ", q.name());
    let tolerance = 1e-9 * a.checksum.abs().max(1.0);
    assert!(
        (a.checksum - b.checksum).abs() <= tolerance,
        "{}: checksums differ: {} vs {}",
        q.name(),
        a.checksum,
        b.checksum
    );
}

#[test]
fn wulian_and_sql_answer_every_query_alike() {
    let d = std::sync::Arc::new(generate(12, 5.0, 5, 200));
    let plan = Plan::new(&d).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let mut conn = sqlite::create(&dir.path().join("kv.db"), &plan).unwrap();
    sqlite::write(&mut conn, &sql::batches(&d)).unwrap();
    let mut reference = SqliteEngine { conn: &conn };
    let expected: Vec<Answer> = Query::ALL
        .iter()
        .map(|&q| reference.run(q, &plan).unwrap())
        .collect();
    // The data set makes the checks meaningful: values, trucks and groups are returned.
    for q in [
        Query::Raw1d,
        Query::LatestAll,
        Query::LastLoc,
        Query::LongDrivingSessions,
        Query::AvgLoad,
        Query::FleetHourlyVelocity,
    ] {
        let i = Query::ALL.iter().position(|&x| x == q).unwrap();
        assert!(expected[i].count > 0, "{} returned nothing", q.name());
    }

    let rt = runtime().unwrap();
    let mut config = Config::new(dir.path().join("tsdb"));
    config.durability = Durability::Sync;
    let db = Tsdb::open(config).unwrap();
    ingest(&rt, &db, &d, 2).unwrap();
    let mut engine = WulianEngine { db: &db };
    for (&q, &e) in Query::ALL.iter().zip(&expected) {
        same(q, engine.run(q, &plan).unwrap(), e);
    }
    rt.block_on(db.checkpoint()).unwrap();
    rt.block_on(db.compact()).unwrap();
    assert!(db.stats().block_files > 0);
    for (&q, &e) in Query::ALL.iter().zip(&expected) {
        same(q, engine.run(q, &plan).unwrap(), e);
    }
    rt.block_on(db.close()).unwrap();
}
