//! `wulian serve`: flags and environment on top of the configuration file, then startup.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::{Config, DurabilityMode};
use crate::startup;

/// The flags `serve` and `demo` share: where the data and the listeners are, durability, logs.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// A TOML configuration file (see `wulian config default`).
    #[arg(long, env = "WULIAN_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the registry and the telemetry store [default: ./wulian-data].
    #[arg(long, env = "WULIAN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// REST API address; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(long, env = "WULIAN_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// MQTT address; port 0 picks a free port [default: 127.0.0.1:1883].
    #[arg(long, env = "WULIAN_MQTT_ADDR")]
    mqtt_addr: Option<SocketAddr>,
    /// Telemetry durability: sync (fsync before acknowledging) or async [default: sync].
    #[arg(long, env = "WULIAN_DURABILITY", value_parser = ["sync", "async"])]
    durability: Option<String>,
    /// Log filter, e.g. "debug" or "wulian_broker=debug,info" [default: info].
    #[arg(long, env = "WULIAN_LOG")]
    log_filter: Option<String>,
    /// More logging (-v debug, -vv trace); overrides the filter.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl CommonArgs {
    /// The configuration file (or the defaults) with these flags on top.
    pub fn config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(dir) = self.data_dir {
            config.storage.data_dir = dir;
        }
        if let Some(addr) = self.http_addr {
            config.http.addr = addr;
        }
        if let Some(addr) = self.mqtt_addr {
            config.mqtt.addr = addr;
        }
        if let Some(mode) = self.durability {
            config.storage.durability = if mode == "async" {
                DurabilityMode::Async
            } else {
                DurabilityMode::Sync
            };
        }
        if let Some(filter) = self.log_filter {
            config.log.filter = filter;
        }
        match self.verbose {
            0 => {}
            1 => config.log.filter = "debug".to_string(),
            _ => config.log.filter = "trace".to_string(),
        }
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Let MQTT clients connect without credentials on the main listener (anonymous, default
    /// tenant, every topic but $SYS). Development only.
    #[arg(long, env = "WULIAN_MQTT_ALLOW_ANONYMOUS")]
    mqtt_allow_anonymous: bool,
    /// Run a simulated city in the default tenant: bike locks and air-quality stations that
    /// connect over MQTT like real devices, and the bike share with simulated riders (see the
    /// `simulation` section of the configuration).
    #[arg(long, env = "WULIAN_SIMULATE_CITY")]
    simulate_city: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = args.common.config()?;
    if args.mqtt_allow_anonymous {
        config.mqtt.allow_anonymous = true;
    }
    if args.simulate_city {
        config.simulation.enabled = true;
    }
    run_config(config)
}

/// Threads of the runtime's blocking pool (SQLite calls, file I/O, webhook deliveries).
const BLOCKING_THREADS: usize = 64;

/// Checks the configuration, starts logging and the runtime, and serves until a signal.
pub fn run_config(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    startup::init_logging(&config.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The blocking pool runs short SQLite calls whose fsyncs are shared (group commit), so
        // a few dozen threads keep up; tokio's default of 512 let a connect storm start a thread
        // per queued write, and each thread's stack and malloc arena stayed in the RSS.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("Start the async runtime")?;
    runtime.block_on(startup::serve(config))
}
