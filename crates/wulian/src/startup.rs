//! Wiring: open the stores, build the broker, the ingest pipeline and the API around them,
//! serve until a signal, then shut down in order (listeners stop, the WAL is flushed last).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use wulian_api::{AppState, HttpLimits};
use wulian_broker::{Broker, BrokerConfig};
use wulian_common::time::now_ms;
use wulian_ingest::{CommandService, DeviceAuthenticator, Pipeline};
use wulian_registry::Registry;
use wulian_tsdb::{Durability, Tsdb};

use crate::config::{Config, DurabilityMode, LogConfig, LogFormat};

/// How long connections and requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub fn init_logging(log: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&log.filter)
        .with_context(|| format!("Parse log filter {:?}", log.filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = &config.storage.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("Create data directory {}", data_dir.display()))?;

    let registry_path = data_dir.join("registry.sqlite");
    let registry = Arc::new(
        Registry::open(&registry_path)
            .with_context(|| format!("Open registry {}", registry_path.display()))?,
    );
    if let Some((tenant, key)) = registry.bootstrap().context("Bootstrap the installation")? {
        // Shown once: only the hash is stored.
        println!("admin API key: {}", key.secret);
        eprintln!(
            "First start: created tenant {:?} and the installation's admin API key above. \
             Store it now; it is not shown again.",
            tenant.id
        );
    }
    let expired = registry
        .expire_stale_commands(now_ms())
        .context("Expire commands of the previous run")?;
    if expired > 0 {
        tracing::info!(
            count = expired,
            "Commands left waiting by the previous run marked timed out."
        );
    }

    let mut tsdb_config = wulian_tsdb::Config::new(data_dir.join("tsdb"));
    tsdb_config.durability = match config.storage.durability {
        DurabilityMode::Sync => Durability::Sync,
        DurabilityMode::Async => Durability::Async {
            interval: config.fsync_interval(),
        },
    };
    let tsdb = tokio::task::spawn_blocking(move || Tsdb::open(tsdb_config))
        .await
        .context("Open the telemetry store")?
        .context("Open the telemetry store")?;
    let stats = tsdb.stats();
    tracing::info!(
        series = stats.series,
        points = stats.points,
        "Telemetry store open."
    );

    let pipeline = Pipeline::new(tsdb.clone());
    let broker = Broker::new(
        BrokerConfig {
            max_connections: config.mqtt.max_connections,
            connect_timeout: Duration::from_secs(config.mqtt.connect_timeout_secs),
            max_packet_size: config.mqtt.max_packet_bytes,
            max_inflight: config.mqtt.max_inflight,
            outgoing_queue: config.mqtt.outgoing_queue,
            ..BrokerConfig::default()
        },
        DeviceAuthenticator::new(Arc::clone(&registry)),
        pipeline.clone(),
    );
    let commands = CommandService::new(Arc::clone(&registry), broker.clone());
    pipeline.attach_commands(Arc::clone(&commands));

    let mqtt_listener = TcpListener::bind(config.mqtt.addr)
        .await
        .with_context(|| format!("Bind MQTT listener on {}", config.mqtt.addr))?;
    let http_listener = TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("Bind HTTP listener on {}", config.http.addr))?;
    let mqtt_addr = mqtt_listener
        .local_addr()
        .context("MQTT listener address")?;
    let http_addr = http_listener
        .local_addr()
        .context("HTTP listener address")?;
    // Scripts and tests read these two lines to find ports chosen with port 0.
    println!("HTTP API listening on http://{http_addr}");
    println!("MQTT listening on {mqtt_addr}");
    tracing::info!(%http_addr, %mqtt_addr, data_dir = %data_dir.display(), "wulian is serving.");

    let state = AppState {
        registry,
        tsdb: tsdb.clone(),
        pipeline,
        commands,
        broker: broker.clone(),
    };
    let limits = HttpLimits {
        max_body_bytes: config.http.max_body_bytes,
        request_timeout: Duration::from_secs(config.http.request_timeout_secs),
    };
    let router = wulian_api::router(state, &limits);

    let shutdown = CancellationToken::new();
    let mqtt_task = tokio::spawn({
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        async move { broker.serve(mqtt_listener, shutdown).await }
    });
    let http_task = tokio::spawn(wulian_api::serve(http_listener, router, shutdown.clone()));

    wait_for_signal().await?;
    tracing::info!("Shutting down: closing listeners and connections.");
    shutdown.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        log_task_end("MQTT", mqtt_task.await);
        log_task_end("HTTP", http_task.await);
    })
    .await;
    if drained.is_err() {
        tracing::warn!("Connections did not finish within the grace period; closing anyway.");
    }
    // Last: everything acknowledged so far is flushed and fsynced.
    tsdb.close().await.context("Flush the telemetry store")?;
    tracing::info!("Stopped cleanly.");
    Ok(())
}

fn log_task_end(name: &str, result: Result<std::io::Result<()>, tokio::task::JoinError>) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(error = %error, "{name} server failed."),
        Err(error) => tracing::error!(error = %error, "{name} server task failed."),
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("Install SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("Wait for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
