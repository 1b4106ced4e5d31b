//! The platform wired in process for API tests, on real stores in a temporary directory.
//! Each test binary uses the parts it needs.
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use wulian_api::{AppState, HttpLimits};
use wulian_broker::{Broker, BrokerConfig};
use wulian_ingest::{
    AlarmService, CommandService, DeviceAuthenticator, Lifecycle, ModelCache, OtaService, Pipeline,
    PresenceTracker, RuleExecutor, RuleHost, TwinService, WebhookConfig, WebhookSender, ZoneCache,
};
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
    /// The OTA engine, to step it by hand (no background task runs in-process).
    pub ota: Arc<OtaService>,
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
    // Tests post webhooks to receivers on loopback.
    let webhooks = WebhookSender::start(
        Arc::clone(&registry),
        WebhookConfig {
            allow_private_networks: true,
            max_attempts: 2,
            first_backoff: std::time::Duration::from_millis(50),
            ..WebhookConfig::default()
        },
        tokio_util::sync::CancellationToken::new(),
    );
    let alarms = AlarmService::new(Arc::clone(&registry), broker.clone(), Arc::clone(&webhooks));
    let models = ModelCache::new(Arc::clone(&registry));
    let ota = OtaService::new(
        Arc::clone(&registry),
        broker.clone(),
        dir.path().join("firmware"),
        1024 * 1024,
    );
    let zones = ZoneCache::empty(Arc::clone(&registry));
    let (rules, rule_actions) = RuleHost::new(
        Arc::clone(&registry),
        wulian_rules::EngineConfig::default(),
        Arc::clone(&zones) as Arc<dyn wulian_rules::ZoneResolver>,
    );
    tokio::spawn(rule_actions.run(RuleExecutor {
        alarms: Arc::clone(&alarms),
        broker: broker.clone(),
        commands: Arc::clone(&commands),
        tsdb: tsdb.clone(),
        webhooks: Arc::clone(&webhooks),
        latency: Arc::clone(&rules.latency),
    }));
    pipeline.attach_lifecycle(Lifecycle {
        twins: TwinService::new(Arc::clone(&registry), broker.clone()),
        presence: PresenceTracker::load(
            Arc::clone(&registry),
            broker.clone(),
            Arc::clone(&models),
            Arc::clone(&alarms),
        )
        .unwrap(),
        alarms,
        webhooks,
        ota: Arc::clone(&ota),
        models,
        rules,
        zones,
    });
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
        ota,
        dir,
    }
}
