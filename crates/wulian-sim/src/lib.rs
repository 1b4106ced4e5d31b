//! A simulated city: bike locks that ride around and answer unlock/lock commands, and
//! air-quality stations that report pollutants — each one a separate MQTT client that speaks
//! the public device contract (docs/device-contract.md) with its own id and token, exactly as
//! real firmware would. `wulian serve --simulate-city` runs it against the server's own MQTT
//! listener so a fresh installation has a living fleet to look at.
//!
//! - [`provision`] creates the profiles (with thing models) and devices in a tenant and issues
//!   fresh tokens (simulated devices get new credentials at every start).
//! - [`run`] connects every device and keeps it going until shutdown.

mod bike;
mod device;
mod provision;
mod rng;
mod sensor;

pub use provision::{CityConfig, SimDevice, SimKind, provision};

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
