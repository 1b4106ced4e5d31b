//! `wulian demo`: the platform with embedded storage and a simulated city running the bike
//! share — fences, locks speaking MQTT as real locks do, riders renting through the rider API.

use clap::Args;

use super::serve::{CommonArgs, run_config};

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Bikes in the simulated city.
    #[arg(long, default_value_t = 2_000)]
    bikes: usize,
    /// Air-quality stations.
    #[arg(long, default_value_t = 20)]
    air_sensors: usize,
    /// Simulated seconds per real second (rides, report intervals, the daily demand curve).
    #[arg(long, default_value_t = 20.0)]
    time_scale: f64,
    /// Simulated riders [default: half the bikes].
    #[arg(long)]
    riders: Option<usize>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut config = args.common.config()?;
    let sim = &mut config.simulation;
    sim.enabled = true;
    sim.bike_share = true;
    sim.bikes = args.bikes;
    sim.air_sensors = args.air_sensors;
    sim.time_scale = args.time_scale;
    sim.riders = args.riders.unwrap_or(0);
    run_config(config)
}
