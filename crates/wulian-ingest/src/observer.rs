//! A seam for solutions built on the platform (the bike share): they learn about device
//! messages as they arrive, after the pipeline has handled them, without a broker round trip.
//!
//! Observers run on the ingest path, so they must only look and enqueue: no I/O, no locks
//! held for long, no waiting. Anything slow goes to the observer's own task.

use wulian_tsdb::WriteEntry;

pub trait DeviceObserver: Send + Sync {
    /// Whether the observer cares about this device's telemetry; the pipeline copies the
    /// stored entries only for devices it watches. Cheap: it runs for every write.
    fn watches(&self, tenant: &str, device: &str) -> bool;

    /// Telemetry of one device that is now durable (one call per stored write of a device).
    fn telemetry_stored(&self, tenant: &str, device: &str, entries: &[WriteEntry]);

    /// An event a device published on `devices/{id}/events/{name}` (not stored by the
    /// platform; the payload is as the device sent it).
    fn event(&self, tenant: &str, device: &str, name: &str, payload: &[u8]);
}
