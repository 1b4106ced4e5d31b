//! The platform wired in process for API tests, on real stores in a temporary directory.
//! Each test binary uses the parts it needs.
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use wulian_api::{AppState, HttpLimits};
use wulian_broker::{Broker, BrokerConfig};
use wulian_ingest::{CommandService, DeviceAuthenticator, Pipeline};
use wulian_registry::Registry;
use wulian_tsdb::Tsdb;

/// A bootstrapped installation behind the API router (64 KiB body limit, so the limit is
/// cheap to exceed in tests).
pub struct Platform {
    pub router: Router,
    /// The installation admin key's secret.
    pub admin: String,
    pub registry: Arc<Registry>,
    pub tsdb: Tsdb,
    pub dir: tempfile::TempDir,
}

pub fn platform() -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::open(&dir.path().join("registry.sqlite")).unwrap());
    let (_, admin) = registry
        .bootstrap()
        .unwrap()
        .expect("first start bootstraps");
    let tsdb = Tsdb::open(wulian_tsdb::Config::new(dir.path().join("tsdb"))).unwrap();
    let pipeline = Pipeline::new(tsdb.clone());
    let broker = Broker::new(
        BrokerConfig::default(),
        DeviceAuthenticator::new(Arc::clone(&registry)),
        pipeline.clone(),
    );
    let commands = CommandService::new(Arc::clone(&registry), broker.clone());
    pipeline.attach_commands(Arc::clone(&commands));
    let state = AppState {
        registry: Arc::clone(&registry),
        tsdb: tsdb.clone(),
        pipeline,
        commands,
        broker,
    };
    let limits = HttpLimits {
        max_body_bytes: 64 * 1024,
        ..HttpLimits::default()
    };
    Platform {
        router: wulian_api::router(state, &limits),
        admin: admin.secret,
        registry,
        tsdb,
        dir,
    }
}
