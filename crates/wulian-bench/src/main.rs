//! `wulian-bench`: an MQTT load generator that behaves like a fleet of devices.
//!
//! It exists so that "faster than Mosquitto" is a measurement, not a claim: the same binary,
//! with the same scenarios and the same settings, is pointed at wulian and at Mosquitto by
//! `bench/mqtt.sh`, and each run prints one JSON object (throughput, latency percentiles,
//! broker CPU and memory) that the script turns into the table in `docs/benchmarks.md`.
//! Every scenario is bounded in clients, messages and time, and stops by itself.

mod bikeshare;
mod cli;
mod connections;
mod creds;
mod messaging;
mod proc_stats;
mod raw;
mod report;
mod tls;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Provision(args) = &cli.command {
        let summary = creds::provision(args)?;
        println!("{summary}");
        return Ok(());
    }
    if let Command::DeviceCerts(args) = &cli.command {
        let credentials = creds::load(cli.common.credentials_file.as_deref())?;
        let ids = (0..args.count)
            .map(|i| creds::nth(&credentials, i).map(|c| c.id))
            .collect::<anyhow::Result<Vec<_>>>()?;
        println!("{}", tls::make_certs(args, &ids)?);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.common.threads)
        .enable_all()
        .build()
        .context("Start the tokio runtime")?;
    let report = runtime.block_on(run(cli))?;
    println!("{report}");
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    let credentials = creds::load(cli.common.credentials_file.as_deref())?;
    match cli.command {
        Command::FanIn(args) => messaging::fan_in(&cli.common, &credentials, &args).await,
        Command::FanOut(args) => messaging::fan_out(&cli.common, &credentials, &args).await,
        Command::Qos2(args) => messaging::qos2(&cli.common, &credentials, &args).await,
        Command::Connections(args) => connections::run(&cli.common, &credentials, &args).await,
        Command::Bikeshare(args) => bikeshare::run(&cli.common, &args).await,
        Command::Provision(_) | Command::DeviceCerts(_) => {
            unreachable!("handled before the runtime starts")
        }
    }
}
