//! The rule engine's view of the registry's zones: every tenant's polygons parsed once and held
//! in memory (`in_zone` runs on the ingest path and must not touch the database), reloaded
//! whenever a zone changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use wulian_common::blocking::run_blocking;
use wulian_registry::Registry;
use wulian_rules::geo::Polygon;
use wulian_rules::{StaticZones, ZoneResolver};

pub struct ZoneCache {
    registry: Arc<Registry>,
    zones: RwLock<StaticZones>,
    /// Bumped by every reload: others that keep zones in memory (the bike share's fences)
    /// compare it to know, without a query, that zones changed.
    generation: AtomicU64,
}

impl ZoneCache {
    /// An empty cache (call [`ZoneCache::reload`] to fill it).
    pub fn empty(registry: Arc<Registry>) -> Arc<ZoneCache> {
        Arc::new(ZoneCache {
            registry,
            zones: RwLock::new(StaticZones::new()),
            generation: AtomicU64::new(0),
        })
    }

    /// A cache loaded with the registry's zones.
    pub async fn load(registry: Arc<Registry>) -> wulian_registry::Result<Arc<ZoneCache>> {
        let cache = ZoneCache::empty(registry);
        cache.reload().await?;
        Ok(cache)
    }

    /// Reads every zone again (after a change); returns how many are loaded.
    pub async fn reload(&self) -> wulian_registry::Result<usize> {
        let zones = run_blocking(&self.registry, |r| r.all_zones()).await?;
        let mut fresh = StaticZones::new();
        let mut loaded = 0;
        for zone in zones {
            match Polygon::from_json(&zone.polygon) {
                Ok(polygon) => {
                    fresh.insert(&zone.tenant, &zone.name, polygon);
                    loaded += 1;
                }
                // Saved zones were validated; a bad one (an older build's) is skipped, and
                // rules naming it report "unknown zone".
                Err(error) => {
                    tracing::warn!(tenant = %zone.tenant, zone = %zone.name, error, "Zone polygon does not parse; not loaded.");
                }
            }
        }
        *self.zones.write() = fresh;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(loaded)
    }
}

impl ZoneCache {
    /// How many times the zones were reloaded (after any change through the API).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl ZoneResolver for ZoneCache {
    fn contains(&self, tenant: &str, zone: &str, lat: f64, lon: f64) -> Option<bool> {
        self.zones.read().contains(tenant, zone, lat, lon)
    }
}
