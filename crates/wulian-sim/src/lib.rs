//! A simulated city: bike locks that speak the smart-lock contract (docs/bike-lock-contract.md)
//! and air-quality stations that report pollutants — each one a separate MQTT client that speaks
//! the public device contract (docs/device-contract.md) with its own id and token, exactly as
//! real firmware would. `wulian serve --simulate-city` runs it against the server's own MQTT
//! listener so a fresh installation has a living fleet to look at.
//!
//! A lock stays parked until an `unlock` command opens it; a simulated rider then rides and
//! closes it (towards the command's simulator-only `end_near` point when it names one). Locks
//! are imperfect the way real ones are — outages with buffered uploads, duplicate and late
//! reports, jammed or silent unlocks, falls, tampering, bikes carried off — at the rates of
//! [`LockRealism`], reproducibly from [`CityConfig::seed`], on a clock that
//! [`CityConfig::time_scale`] can speed up.
//!
//! - [`provision`] creates the profiles (with thing models) and devices in a tenant and issues
//!   fresh tokens (simulated devices get new credentials at every start).
//! - [`run`] connects every device and keeps it going until shutdown.
//! - [`city`] generates a synthetic city map: the basemap the console draws and the bike
//!   share's fences (service area, parking, no-parking and no-riding zones).
//! - [`riders`] runs simulated riders against the rider REST API, as the rider app would.

mod bike;
pub mod city;
mod config;
mod device;
mod provision;
pub mod riders;
mod rng;
mod sensor;

pub use city::{CityMap, ZoneSpec};
pub use config::{CityConfig, LockRealism, MAX_TIME_SCALE};
pub use provision::{BIKE_PROFILE, SENSOR_PROFILE, SimDevice, SimKind, bike_profile, provision};
pub use riders::{RiderConfig, RiderStats};

use tokio_util::sync::CancellationToken;

/// Where the devices connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// Runs every device until `shutdown`; returns when all have stopped.
pub async fn run(
    target: Target,
    devices: Vec<SimDevice>,
    config: CityConfig,
    shutdown: CancellationToken,
) {
    let mut tasks = Vec::with_capacity(devices.len());
    for (index, dev) in devices.into_iter().enumerate() {
        let (target, shutdown) = (target.clone(), shutdown.clone());
        // Spread connects and reports over time, as a real fleet's would be.
        let start_delay = std::time::Duration::from_millis((index as u64 * 37) % 5_000);
        let seed = config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let cfg = config.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(start_delay) => {}
            }
            device::run(target, dev, cfg, seed, shutdown).await;
        }));
    }
    for task in tasks {
        if let Err(error) = task.await {
            tracing::warn!(error = %error, "Simulated device task failed.");
        }
    }
}
