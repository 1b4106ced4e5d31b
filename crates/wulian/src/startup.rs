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
use wulian_bikeshare::BikeShare;
use wulian_broker::{
    Broker, BrokerConfig, ClientAuth, ClientCertAuthorities, QueueOverflow, TlsConfig, Transport,
};
use wulian_common::time::now_ms;
use wulian_ingest::{
    AlarmService, CommandService, DeviceAuthenticator, Lifecycle, ModelCache, OtaService, Pipeline,
    PresenceTracker, RuleExecutor, RuleHost, TwinService, WebhookConfig, WebhookSender, ZoneCache,
};
use wulian_registry::Registry;
use wulian_tsdb::{Durability, Tsdb};

use crate::config::{ClientAuthMode, Config, DurabilityMode, ListenerKind, LogConfig, LogFormat};

/// How long connections and requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often TLS listeners look for CA certificate changes.
const CA_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

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

/// Every MQTT connection is an open file, and many systems start a process with a soft limit
/// of 1,024 below a much higher hard limit: raise the soft limit to the hard one, as a server
/// that holds many sockets should (the broker's own bound is `mqtt.max_connections`).
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        // An unlimited hard limit still stops at the kernel's `nr_open` (2^20 by default).
        let target = limit.maximum.unwrap_or(1 << 20);
        if limit.current.is_none_or(|current| current >= target) {
            return;
        }
        let raised = Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = ?limit.current, to = ?limit.maximum, "open-file limit raised")
            }
            Err(e) => {
                tracing::warn!(error = %e, soft = ?limit.current, "could not raise the open-file limit")
            }
        }
    }
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
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
    tsdb_config.retention = config.retention();
    (
        tsdb_config.rollup_1m_retention,
        tsdb_config.rollup_1h_retention,
    ) = config.rollup_retentions();
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
    pipeline.set_qos0_batch_window(Duration::from_millis(config.storage.qos0_batch_ms));
    let broker = Broker::open(
        BrokerConfig {
            max_connections: config.mqtt.max_connections,
            connect_timeout: Duration::from_secs(config.mqtt.connect_timeout_secs),
            max_packet_size: config.mqtt.max_packet_bytes,
            max_inflight: config.mqtt.max_inflight,
            outgoing_queue: config.mqtt.outgoing_queue,
            data_dir: Some(data_dir.join("broker")),
            max_session_expiry_secs: config.mqtt.max_session_expiry_secs,
            max_queued_messages: config.mqtt.max_queued_messages,
            topic_alias_maximum: config.mqtt.topic_alias_maximum,
            max_publish_rate: config.mqtt.max_publish_rate,
            max_publish_bytes_rate: config.mqtt.max_publish_bytes_rate,
            sys_interval: Duration::from_secs(config.mqtt.sys_interval_secs),
            application_lane: config.mqtt.application_lane,
            application_lane_threads: config.mqtt.application_lane_threads,
            queue_overflow: match config.mqtt.queue_overflow {
                crate::config::QueueOverflowPolicy::DropOldest => QueueOverflow::DropOldest,
                crate::config::QueueOverflowPolicy::DropNewest => QueueOverflow::DropNewest,
            },
            ..BrokerConfig::default()
        },
        DeviceAuthenticator::new(Arc::clone(&registry)),
        pipeline.clone(),
    )
    .context("Open the broker's session store")?;
    let commands = CommandService::new(Arc::clone(&registry), broker.clone());
    pipeline.attach_commands(Arc::clone(&commands));
    // Made early: background services started from here on stop with it.
    let shutdown = CancellationToken::new();
    let webhooks = WebhookSender::start(
        Arc::clone(&registry),
        WebhookConfig {
            allow_private_networks: config.webhooks.allow_private_networks,
            max_attempts: config.webhooks.max_attempts,
            timeout: Duration::from_secs(config.webhooks.timeout_secs),
            queue: config.webhooks.queue,
            ..WebhookConfig::default()
        },
        shutdown.clone(),
    );
    let alarms = AlarmService::new(Arc::clone(&registry), broker.clone(), Arc::clone(&webhooks));
    let models = ModelCache::new(Arc::clone(&registry));
    let presence = PresenceTracker::load(
        Arc::clone(&registry),
        broker.clone(),
        Arc::clone(&models),
        Arc::clone(&alarms),
    )
    .context("Load device presence")?;
    let ota = OtaService::new(
        Arc::clone(&registry),
        broker.clone(),
        data_dir.join("firmware"),
        config.http.max_firmware_bytes,
    );
    let zones = ZoneCache::load(Arc::clone(&registry))
        .await
        .context("Load zones")?;
    let (rules, rule_actions) = RuleHost::new(
        Arc::clone(&registry),
        config.rules,
        Arc::clone(&zones) as Arc<dyn wulian_rules::ZoneResolver>,
    );
    let loaded = rules.load().await.context("Load rules")?;
    tracing::info!(rules = loaded, "Rules loaded.");
    tokio::spawn(rule_actions.run(RuleExecutor {
        alarms: Arc::clone(&alarms),
        broker: broker.clone(),
        commands: Arc::clone(&commands),
        tsdb: tsdb.clone(),
        webhooks: Arc::clone(&webhooks),
        latency: Arc::clone(&rules.latency),
    }));
    let twins = TwinService::new(Arc::clone(&registry), broker.clone());
    pipeline.attach_lifecycle(Lifecycle {
        models,
        twins: Arc::clone(&twins),
        presence: Arc::clone(&presence),
        ota: Arc::clone(&ota),
        alarms,
        webhooks,
        rules,
        zones: Arc::clone(&zones),
    });

    // The bike share: a solution on the platform's services, watching its locks' messages.
    let bikeshare = BikeShare::open(
        &data_dir.join("bikeshare"),
        wulian_bikeshare::Platform {
            registry: Arc::clone(&registry),
            tsdb: tsdb.clone(),
            commands: Arc::clone(&commands),
            twins,
            zones,
        },
    )
    .await
    .context("Open the bike share")?;
    pipeline.attach_observer(Arc::clone(&bikeshare) as Arc<dyn wulian_ingest::DeviceObserver>);

    let client_cas = ClientCertAuthorities::new();
    let mqtt_listeners = bind_mqtt_listeners(&config, &client_cas).await?;
    let uses_client_certs = config
        .mqtt
        .listeners
        .iter()
        .any(|l| l.client_auth != ClientAuthMode::None);
    let http_listener = TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("Bind HTTP listener on {}", config.http.addr))?;
    let http_addr = http_listener
        .local_addr()
        .context("HTTP listener address")?;
    let coap = bind_coap(&config, &registry, &pipeline, &commands).await?;
    // Scripts and tests read these lines to find ports chosen with port 0.
    println!("HTTP API listening on http://{http_addr}");
    for bound in &mqtt_listeners {
        println!("{}", bound.banner);
    }
    if let Some((_, _, addr)) = &coap {
        println!("CoAP listening on {addr}");
    }
    if mqtt_listeners.iter().any(|b| b.config.allow_anonymous) {
        eprintln!(
            "WARNING: anonymous MQTT access is on: clients without credentials may publish and \
             subscribe in the default tenant. Use this for development only."
        );
        tracing::warn!("Anonymous MQTT access is enabled (development only).");
    }
    tracing::info!(%http_addr, mqtt_listeners = mqtt_listeners.len(), data_dir = %data_dir.display(), "wulian is serving.");

    let state_registry = Arc::clone(&registry);
    let deferred_writes = Arc::clone(&pipeline);
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
    // The maps' tile server (`[map]`), for the basemap routes to hand to the front ends.
    let bikeshare_routes = wulian_bikeshare::api::router(state.clone(), Arc::clone(&bikeshare))
        .layer(axum::Extension(config.map.tiles()));
    let extra = bikeshare_routes.merge(crate::console::router(&config.map.origins()));
    let router = wulian_api::routes::session::with_sessions(
        wulian_api::router_with(state, &limits, extra),
        config.sessions.api(),
    );
    let bikeshare_task = bikeshare.start(shutdown.clone());

    let presence_task = tokio::spawn(Arc::clone(&presence).run(shutdown.clone()));
    tokio::spawn(Arc::clone(&ota).run(shutdown.clone()));
    // Always: tenants and profiles may set a retention even when the installation keeps all.
    tokio::spawn(crate::retention::run(
        tsdb.clone(),
        Arc::clone(&state_registry),
        config.retention(),
        shutdown.clone(),
    ));
    if uses_client_certs {
        tokio::spawn(reload_client_cas(
            Arc::clone(&state_registry),
            client_cas,
            shutdown.clone(),
        ));
    }
    let main_mqtt_addr = mqtt_listeners
        .first()
        .map(|b| b.listener.local_addr())
        .transpose()
        .context("MQTT listener address")?;
    let mqtt_tasks: Vec<_> = mqtt_listeners
        .into_iter()
        .map(|bound| {
            let (broker, shutdown) = (broker.clone(), shutdown.clone());
            tokio::spawn(async move {
                broker
                    .serve_listener(bound.listener, bound.config, shutdown)
                    .await
            })
        })
        .collect();
    let http_task = tokio::spawn(wulian_api::serve(http_listener, router, shutdown.clone()));
    let coap_task = coap.map(|(server, socket, _)| {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { server.serve(socket, shutdown).await })
    });

    let sim_tasks = match main_mqtt_addr.filter(|_| config.simulation.enabled) {
        Some(addr) => {
            let places = SimulationPlaces {
                mqtt: addr,
                http: http_addr,
            };
            start_simulation(
                &config,
                &state_registry,
                &bikeshare,
                places,
                shutdown.clone(),
            )
            .await?
        }
        None => Vec::new(),
    };

    wait_for_signal().await?;
    tracing::info!("Shutting down: closing listeners and connections.");
    shutdown.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        for task in mqtt_tasks {
            log_task_end("MQTT", task.await);
        }
        log_task_end("HTTP", http_task.await);
        if let Some(task) = coap_task {
            log_task_end("CoAP", task.await);
        }
        for task in sim_tasks {
            if let Err(error) = task.await {
                tracing::warn!(error = %error, "Simulation task failed.");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("Connections did not finish within the grace period; closing anyway.");
    }
    if let Err(error) = bikeshare_task.await {
        tracing::warn!(error = %error, "Bike share task failed.");
    }
    if let Err(error) = presence_task.await {
        tracing::warn!(error = %error, "Presence task failed.");
    }
    // QoS 0 telemetry still waiting for its batch, then the store: everything acknowledged
    // so far is flushed and fsynced.
    deferred_writes.flush_deferred().await;
    tsdb.close().await.context("Flush the telemetry store")?;
    tracing::info!("Stopped cleanly.");
    Ok(())
}

/// Where the simulated devices and riders reach the server.
struct SimulationPlaces {
    mqtt: std::net::SocketAddr,
    http: std::net::SocketAddr,
}

/// Provisions the simulated city and starts it: its fences as zones and the bike share (when
/// `simulation.bike_share`), the devices against the main MQTT listener, and the simulated
/// riders against the HTTP API.
async fn start_simulation(
    config: &Config,
    registry: &Arc<Registry>,
    bikeshare: &Arc<BikeShare>,
    places: SimulationPlaces,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let sim = &config.simulation;
    let center = (sim.center_lat, sim.center_lon);
    // A little beyond the 4 km disc the scattered bikes start in, so they stand inside the
    // service area; a parking zone for every five bikes, within the registry's zone limit.
    let zones = (sim.bikes / 5).clamp(10, 9_000);
    let map = wulian_sim::CityMap::generate(center, 4_500.0, zones, 2026);
    let mut city = wulian_sim::CityConfig {
        bikes: sim.bikes,
        air_sensors: sim.air_sensors,
        center,
        time_scale: sim.time_scale,
        ..wulian_sim::CityConfig::default()
    };
    if sim.bike_share {
        city.parking_spots = map.parking_spots().into();
        prepare_bike_share(registry, bikeshare, &city.tenant, &map).await?;
    }
    let devices = {
        let city = city.clone();
        wulian_common::blocking::run_blocking(registry, move |r| wulian_sim::provision(r, &city))
            .await
            .context("Provision the simulated city")?
    };
    if sim.bike_share {
        // The new bikes are in the registry now; the bike share takes them on before they speak.
        bikeshare
            .load_tenant(&city.tenant)
            .await
            .context("Load the simulated bike share")?;
    }
    // The devices are clients of this server: over loopback even when it listens on all addresses.
    let loopback = |addr: std::net::SocketAddr| {
        if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        }
    };
    println!(
        "Simulated city: {} bike locks and {} air-quality stations in tenant {:?}",
        city.bikes, city.air_sensors, city.tenant
    );
    let target = wulian_sim::Target {
        host: loopback(places.mqtt),
        port: places.mqtt.port(),
    };
    let mut tasks = Vec::new();
    let spots = city.parking_spots.clone();
    let (tenant, time_scale) = (city.tenant.clone(), city.time_scale);
    tasks.push(tokio::spawn(wulian_sim::run(
        target,
        devices,
        city,
        shutdown.clone(),
    )));
    if sim.bike_share {
        let base = format!("http://{}:{}", loopback(places.http), places.http.port());
        println!("gbfs: {base}/gbfs/v3/{tenant}/gbfs.json");
        println!("console: {base}/console/");
        println!("rider app: {base}/rider/");
        let mut riders = wulian_sim::riders::RiderConfig::for_fleet(sim.bikes);
        riders.time_scale = time_scale;
        if sim.riders > 0 {
            riders.riders = sim.riders;
        }
        let (_, task) = wulian_sim::riders::spawn(base, tenant, center, spots, riders, shutdown);
        tasks.push(tokio::spawn(async move {
            match task.await {
                Ok(stats) => {
                    tracing::info!(stats = %stats.snapshot().to_json(), "Simulated riders stopped.")
                }
                Err(error) => tracing::warn!(%error, "Simulated riders failed."),
            }
        }));
    }
    Ok(tasks)
}

/// Draws the simulated city's fences as zones and turns the bike share on in the simulated
/// tenant (a system already set up keeps its settings).
async fn prepare_bike_share(
    registry: &Arc<Registry>,
    bikeshare: &Arc<BikeShare>,
    tenant: &str,
    map: &wulian_sim::CityMap,
) -> anyhow::Result<()> {
    let zones = map.zones().to_vec();
    let t = tenant.to_string();
    wulian_common::blocking::run_blocking(registry, move |r| {
        zones.iter().try_for_each(|z| {
            r.put_zone(&t, &z.name, &z.kind, &z.polygon, &z.properties)
                .map(|_| ())
        })
    })
    .await
    .context("Draw the simulated city's fences")?;
    bikeshare
        .zones_written()
        .await
        .context("Load the simulated city's fences")?;
    if !bikeshare.is_enabled(tenant) {
        let settings = wulian_bikeshare::system::Settings {
            name: "wulian demo city bikes".into(),
            operator: "wulian demo".into(),
            payments_sandbox: true,
            // The simulated riders all sign up from loopback.
            signups_per_address_per_hour: 0,
            ..wulian_bikeshare::system::Settings::default()
        };
        bikeshare
            .enable(tenant, settings)
            .await
            .context("Enable the bike share in the simulated city")?;
    }
    bikeshare
        .set_basemap(tenant, map.basemap_geojson())
        .await
        .context("Store the simulated city's basemap")?;
    Ok(())
}

/// A bound MQTT listener, its broker configuration and the line announcing it.
struct BoundListener {
    listener: TcpListener,
    config: wulian_broker::ListenerConfig,
    banner: String,
}

/// Binds the main plain listener (`mqtt.addr`) and every `[[mqtt.listeners]]` entry, loading
/// their TLS certificates; any failure stops startup before anything is served.
async fn bind_mqtt_listeners(
    config: &Config,
    client_cas: &Arc<ClientCertAuthorities>,
) -> anyhow::Result<Vec<BoundListener>> {
    let mut bound = Vec::with_capacity(1 + config.mqtt.listeners.len());
    let main = TcpListener::bind(config.mqtt.addr)
        .await
        .with_context(|| format!("Bind MQTT listener on {}", config.mqtt.addr))?;
    let addr = main.local_addr().context("MQTT listener address")?;
    let mut main_config = wulian_broker::ListenerConfig::tcp();
    main_config.allow_anonymous = config.mqtt.allow_anonymous;
    bound.push(BoundListener {
        listener: main,
        config: main_config,
        banner: format!("MQTT listening on {addr}"),
    });
    for entry in &config.mqtt.listeners {
        let tls = || -> anyhow::Result<TlsConfig> {
            let (Some(cert), Some(key)) = (&entry.cert, &entry.key) else {
                anyhow::bail!(
                    "{} listener on {} needs cert and key",
                    entry.kind.as_str(),
                    entry.addr
                );
            };
            let client_auth = match entry.client_auth {
                ClientAuthMode::None => ClientAuth::None,
                ClientAuthMode::Optional => ClientAuth::Optional(Arc::clone(client_cas)),
                ClientAuthMode::Required => ClientAuth::Required(Arc::clone(client_cas)),
            };
            TlsConfig::from_pem_files(cert, key, client_auth)
                .with_context(|| format!("Load TLS certificate for MQTT listener {}", entry.addr))
        };
        let transport = match entry.kind {
            ListenerKind::Tcp => Transport::Tcp,
            ListenerKind::Tls => Transport::Tls(tls()?),
            ListenerKind::Ws => Transport::Ws {
                path: entry.ws_path().to_string(),
            },
            ListenerKind::Wss => Transport::Wss {
                tls: tls()?,
                path: entry.ws_path().to_string(),
            },
        };
        let listener = TcpListener::bind(entry.addr).await.with_context(|| {
            format!(
                "Bind MQTT {} listener on {}",
                entry.kind.as_str(),
                entry.addr
            )
        })?;
        let addr = listener.local_addr().context("MQTT listener address")?;
        let mut listener_config = wulian_broker::ListenerConfig::new(transport);
        listener_config.max_connections = entry.max_connections;
        listener_config.connect_rate = entry.connect_rate;
        listener_config.allow_anonymous = entry.allow_anonymous;
        // Ignored when `mqtt.application_lane` is off (the broker then has no lane).
        listener_config.application_lane = entry.application_lane;
        let path = if entry.kind.is_websocket() {
            entry.ws_path()
        } else {
            ""
        };
        bound.push(BoundListener {
            listener,
            config: listener_config,
            banner: format!("MQTT {} listening on {addr}{path}", entry.kind.as_str()),
        });
    }
    Ok(bound)
}

/// The CoAP endpoint and its bound socket, when `[coap]` is enabled.
async fn bind_coap(
    config: &Config,
    registry: &Arc<Registry>,
    pipeline: &Arc<Pipeline>,
    commands: &Arc<CommandService>,
) -> anyhow::Result<
    Option<(
        wulian_coap::CoapServer,
        tokio::net::UdpSocket,
        std::net::SocketAddr,
    )>,
> {
    if !config.coap.enabled {
        return Ok(None);
    }
    let socket = tokio::net::UdpSocket::bind(config.coap.addr)
        .await
        .with_context(|| format!("Bind CoAP socket on {}", config.coap.addr))?;
    let addr = socket.local_addr().context("CoAP socket address")?;
    let server = wulian_coap::CoapServer::new(
        Arc::clone(registry),
        Arc::clone(pipeline),
        Arc::clone(commands),
        config.coap.limits(),
    );
    Ok(Some((server, socket, addr)))
}

/// Keeps the TLS listeners' client CA set equal to the registry's CA certificates: loads it
/// now, then again within a second of every change made through the API.
async fn reload_client_cas(
    registry: Arc<Registry>,
    cas: Arc<ClientCertAuthorities>,
    shutdown: CancellationToken,
) {
    let mut loaded = None;
    loop {
        let generation = registry.ca_generation();
        if loaded != Some(generation) {
            let all =
                wulian_common::blocking::run_blocking(&registry, |r| r.all_ca_certificates()).await;
            match all {
                Ok(all) => {
                    let count = cas.replace(&all);
                    tracing::info!(count, "Client CA certificates loaded.");
                    loaded = Some(generation);
                }
                Err(error) => {
                    tracing::error!(error = %error, "Loading client CA certificates failed.")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CA_RELOAD_INTERVAL) => {}
        }
    }
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
