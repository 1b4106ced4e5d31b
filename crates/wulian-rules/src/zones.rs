//! Named zones for `in_zone(lat, lon, 'name')`. The host owns zones (they live in its
//! registry); the crate only asks whether a point is inside one.

use std::collections::HashMap;

use crate::geo::Polygon;

/// Answers `in_zone`. Implementations must be fast and must not block: they are called on
/// the ingest path, once per evaluation that reaches `in_zone`.
pub trait ZoneResolver: Send + Sync {
    /// `Some(inside)` for a zone the tenant has, `None` for an unknown zone (an evaluation
    /// error naming the zone).
    fn contains(&self, tenant: &str, zone: &str, lat: f64, lon: f64) -> Option<bool>;
}

/// A resolver with no zones: every `in_zone` is an "unknown zone" error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoZones;

impl ZoneResolver for NoZones {
    fn contains(&self, _tenant: &str, _zone: &str, _lat: f64, _lon: f64) -> Option<bool> {
        None
    }
}

/// Zones held in memory, per tenant and name. Hosts can load their zones into one of these
/// and swap it (behind an `ArcSwap`-like handle or a lock) when zones change.
#[derive(Debug, Clone, Default)]
pub struct StaticZones {
    zones: HashMap<String, HashMap<String, Polygon>>,
}

impl StaticZones {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a zone.
    pub fn insert(&mut self, tenant: &str, name: &str, polygon: Polygon) {
        self.zones
            .entry(tenant.to_string())
            .or_default()
            .insert(name.to_string(), polygon);
    }
}

impl ZoneResolver for StaticZones {
    fn contains(&self, tenant: &str, zone: &str, lat: f64, lon: f64) -> Option<bool> {
        self.zones
            .get(tenant)?
            .get(zone)
            .map(|p| p.contains(lat, lon))
    }
}
