//! The telemetry retention task: at start and then hourly, builds the time-series store's
//! per-device policy from the registry — each device's profile `retention_days`, else its
//! tenant's, else the installation's `storage.retention_days` — and applies it
//! (`Tsdb::enforce_retention_policy`), with the rollup retentions of the store's config.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wulian_common::blocking::run_blocking;
use wulian_common::time::now_ms;
use wulian_registry::{Registry, RetentionOverrides};
use wulian_tsdb::{RetentionPolicy, Tsdb};

/// How often the policy is read and applied (it drops whole days, so an hour is plenty).
const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Runs until shutdown. A failed round is logged and retried at the next tick.
pub async fn run(
    tsdb: Tsdb,
    registry: Arc<Registry>,
    default: Option<Duration>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let overrides = match run_blocking(&registry, |r| r.retention_overrides()).await {
            Ok(o) => o,
            Err(error) => {
                tracing::error!(error = %error, "Reading the telemetry retention settings failed.");
                continue;
            }
        };
        let policy = policy(&overrides, default);
        match tsdb.enforce_retention_policy(now_ms(), &policy).await {
            Ok(r) if r.files_deleted + r.partitions_rewritten + r.series_dropped > 0 => {
                tracing::info!(
                    files_deleted = r.files_deleted,
                    partitions_rewritten = r.partitions_rewritten,
                    files_rewritten = r.files_rewritten,
                    series_dropped = r.series_dropped,
                    partitions_failed = r.partitions_failed,
                    device_floors = r.device_floors,
                    tenants_with_retention = overrides.tenants.len(),
                    devices_with_profile_retention = overrides.devices.len(),
                    "Telemetry past retention dropped."
                );
            }
            Ok(r) => tracing::debug!(
                device_floors = r.device_floors,
                partitions_failed = r.partitions_failed,
                "Telemetry retention checked; nothing to drop."
            ),
            Err(error) => tracing::error!(error = %error, "Enforcing telemetry retention failed."),
        }
    }
}

/// The store's policy: `default` (the installation's) for every device, a tenant's own for its
/// devices, a profile's for the devices that have it.
pub fn policy(overrides: &RetentionOverrides, default: Option<Duration>) -> RetentionPolicy {
    let days = |d: u32| Some(Duration::from_secs(u64::from(d) * 86_400));
    RetentionPolicy {
        default,
        tenants: overrides
            .tenants
            .iter()
            .map(|(t, d)| (t.clone(), days(*d)))
            .collect::<HashMap<_, _>>(),
        devices: overrides
            .devices
            .iter()
            .map(|(t, dev, d)| ((t.clone(), dev.clone()), days(*d)))
            .collect::<HashMap<_, _>>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn profiles_then_tenants_then_the_installation() {
        let overrides = RetentionOverrides {
            tenants: vec![("a".into(), 7)],
            devices: vec![
                ("a".into(), "tracker".into(), 2),
                ("b".into(), "x".into(), 400),
            ],
        };
        let p = policy(&overrides, Some(30 * DAY));
        assert_eq!(p.retention_of("a", "tracker"), Some(2 * DAY));
        assert_eq!(p.retention_of("a", "other"), Some(7 * DAY));
        assert_eq!(p.retention_of("b", "other"), Some(30 * DAY));
        // The store-wide floor follows the longest retention, so nothing it keeps is lost.
        assert_eq!(p.longest(), Some(400 * DAY));
        // Without an installation retention, devices that set none keep everything.
        let p = policy(&overrides, None);
        assert_eq!(p.retention_of("b", "other"), None);
        assert_eq!(p.longest(), None);
        assert_eq!(p.retention_of("a", "tracker"), Some(2 * DAY));
    }
}
