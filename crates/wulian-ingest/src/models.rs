//! Each device's profile, cached for the ingest path: thing-model checks and the per-profile
//! message rate limit without a database read per message.
//!
//! The cache is keyed by (tenant, device) and stamped with the registry's profile generation;
//! any profile change or device profile assignment bumps the generation and the next message of
//! each device reloads. A reload reads SQLite on a blocking thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use wulian_common::blocking::run_blocking;
use wulian_registry::thing_model::{ReadingValue, Violation};
use wulian_registry::{Profile, Registry, ValidationMode};
use wulian_tsdb::Value;

use crate::telemetry::Reading;

/// Devices whose profile is cached; past this the cache is cleared (and refills on demand).
const MAX_CACHED_DEVICES: usize = 200_000;
/// Devices whose latest violations are kept for the API.
const MAX_FLAGGED_DEVICES: usize = 100_000;
/// Violations kept per device (the latest message's, truncated).
const MAX_VIOLATIONS_KEPT: usize = 32;

/// The cache's map, with its size.
#[derive(Default)]
struct Cached {
    by_tenant: HashMap<String, HashMap<String, Arc<Entry>>>,
    len: usize,
}

impl Cached {
    fn get(&self, tenant: &str, device: &str) -> Option<&Arc<Entry>> {
        self.by_tenant.get(tenant)?.get(device)
    }

    fn insert(&mut self, tenant: &str, device: &str, entry: Arc<Entry>) {
        let devices = self.by_tenant.entry(tenant.to_string()).or_default();
        if devices.insert(device.to_string(), entry).is_none() {
            self.len += 1;
        }
    }
}

/// Profiles by (tenant, id), all read under one profile generation.
#[derive(Default)]
struct SharedProfiles {
    generation: u64,
    by_id: HashMap<(String, String), Arc<Profile>>,
}

/// A device's cached profile with its rate-limit bucket.
struct Entry {
    generation: u64,
    profile: Option<Arc<Profile>>,
    bucket: Mutex<Bucket>,
}

/// Token bucket: `capacity` messages per minute, refilled continuously.
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The latest model violations of a device (validation mode `flag`).
#[derive(Debug, Clone, Serialize)]
pub struct FlaggedViolations {
    /// When the offending message arrived, ms since the epoch.
    pub at: i64,
    pub violations: Vec<Violation>,
}

/// What the model check decided for one message.
pub enum ModelVerdict {
    Accept,
    /// Accept, but the message broke the model (mode `flag`).
    Flagged(Vec<Violation>),
    /// Refuse with these violations (mode `reject`).
    Reject(Vec<Violation>),
    /// Over the profile's `max_messages_per_minute`.
    RateLimited {
        per_minute: u32,
    },
}

pub struct ModelCache {
    registry: Arc<Registry>,
    /// tenant → device → entry: looked up by `&str` on every message, no allocation.
    entries: RwLock<Cached>,
    /// One copy of each profile for all its devices (a fleet of 100,000 locks shares one
    /// parsed thing model), valid for one profile generation.
    profiles: Mutex<SharedProfiles>,
    /// Per tenant: (profile generation, whether any profile sets an inactivity timeout).
    timeouts: Mutex<HashMap<String, (u64, bool)>>,
    flagged: Mutex<HashMap<(String, String), FlaggedViolations>>,
    pub violations_total: AtomicU64,
    pub rate_limited_total: AtomicU64,
}

impl ModelCache {
    pub fn new(registry: Arc<Registry>) -> Arc<ModelCache> {
        Arc::new(ModelCache {
            registry,
            entries: RwLock::new(Cached::default()),
            profiles: Mutex::new(SharedProfiles::default()),
            timeouts: Mutex::new(HashMap::new()),
            flagged: Mutex::new(HashMap::new()),
            violations_total: AtomicU64::new(0),
            rate_limited_total: AtomicU64::new(0),
        })
    }

    /// The device's profile (cached), `None` when its profile has no record.
    pub async fn profile(&self, tenant: &str, device: &str) -> Option<Arc<Profile>> {
        self.entry(tenant, device).await.profile.clone()
    }

    async fn entry(&self, tenant: &str, device: &str) -> Arc<Entry> {
        let generation = self.registry.profile_generation();
        if let Some(entry) = self.entries.read().get(tenant, device)
            && entry.generation == generation
        {
            return entry.clone();
        }
        let (t, d) = (tenant.to_string(), device.to_string());
        let (profile, cacheable) =
            match run_blocking(&self.registry, move |r| r.device_profile(&t, &d)).await {
                Ok(profile) => (profile.map(|p| self.shared(generation, p)), true),
                Err(error) => {
                    // An unknown device (deleted a moment ago) or a database hiccup: check
                    // nothing rather than refuse telemetry for a reason the device cannot act
                    // on — and do not cache it, so a device created under this id later is
                    // looked up afresh.
                    tracing::debug!(tenant, device, error = %error, "No profile for device.");
                    (None, false)
                }
            };
        let capacity = profile
            .as_ref()
            .and_then(|p| p.settings.max_messages_per_minute)
            .map_or(0.0, f64::from);
        let entry = Arc::new(Entry {
            generation,
            profile,
            bucket: Mutex::new(Bucket {
                tokens: capacity,
                last: Instant::now(),
            }),
        });
        if !cacheable {
            return entry;
        }
        let mut entries = self.entries.write();
        if entries.len >= MAX_CACHED_DEVICES {
            *entries = Cached::default();
        }
        // Keep the rate-limit state of a device across a reload for the same limit.
        if let Some(old) = entries.get(tenant, device) {
            let old_bucket = old.bucket.lock();
            let mut new_bucket = entry.bucket.lock();
            new_bucket.tokens = old_bucket.tokens.min(capacity);
            new_bucket.last = old_bucket.last;
        }
        entries.insert(tenant, device, entry.clone());
        entry
    }

    /// Whether any of the tenant's profiles sets an inactivity timeout (else none of its
    /// devices can become inactive, and the periodic check skips them all). Read once per
    /// profile generation; `true` when the registry cannot say.
    pub async fn tenant_has_inactivity_timeouts(&self, tenant: &str) -> bool {
        let generation = self.registry.profile_generation();
        if let Some(&(g, has)) = self.timeouts.lock().get(tenant)
            && g == generation
        {
            return has;
        }
        let t = tenant.to_string();
        let has = match run_blocking(&self.registry, move |r| r.list_profiles(&t)).await {
            Ok(profiles) => profiles
                .iter()
                .any(|p| p.settings.effective_inactivity_timeout_s().is_some()),
            Err(error) => {
                tracing::debug!(tenant, error = %error, "Listing profiles failed.");
                return true;
            }
        };
        self.timeouts
            .lock()
            .insert(tenant.to_string(), (generation, has));
        has
    }

    /// The copy of `profile` its devices share, for profile `generation`.
    fn shared(&self, generation: u64, profile: Profile) -> Arc<Profile> {
        let mut shared = self.profiles.lock();
        if shared.generation != generation {
            *shared = SharedProfiles {
                generation,
                ..SharedProfiles::default()
            };
        }
        let key = (profile.tenant.clone(), profile.id.clone());
        Arc::clone(shared.by_id.entry(key).or_insert_with(|| Arc::new(profile)))
    }

    /// Checks one message's readings against the device's profile.
    pub async fn check(&self, tenant: &str, device: &str, readings: &[Reading]) -> ModelVerdict {
        let entry = self.entry(tenant, device).await;
        let Some(profile) = &entry.profile else {
            return ModelVerdict::Accept;
        };
        if let Some(per_minute) = profile.settings.max_messages_per_minute
            && !entry.bucket.lock().take(f64::from(per_minute))
        {
            self.rate_limited_total.fetch_add(1, Ordering::Relaxed);
            return ModelVerdict::RateLimited { per_minute };
        }
        if profile.validation == ValidationMode::Off || profile.model.is_permissive() {
            return ModelVerdict::Accept;
        }
        let mut violations = Vec::new();
        for reading in readings {
            let value = match &reading.value {
                Value::F64(v) => ReadingValue::Double(*v),
                Value::I64(v) => ReadingValue::Integer(*v),
                Value::Bool(v) => ReadingValue::Boolean(*v),
                Value::Str(v) => ReadingValue::String(v),
            };
            profile
                .model
                .check_reading(&reading.key, value, &mut violations);
        }
        if violations.is_empty() {
            return ModelVerdict::Accept;
        }
        // By key, so answers do not depend on the payload's member order.
        violations.sort_by(|a, b| a.key.cmp(&b.key));
        self.violations_total
            .fetch_add(violations.len() as u64, Ordering::Relaxed);
        match profile.validation {
            ValidationMode::Reject => ModelVerdict::Reject(violations),
            _ => ModelVerdict::Flagged(violations),
        }
    }

    /// Remembers a device's latest violations (mode `flag`).
    pub fn record_flagged(
        &self,
        tenant: &str,
        device: &str,
        at: i64,
        mut violations: Vec<Violation>,
    ) {
        violations.truncate(MAX_VIOLATIONS_KEPT);
        let mut flagged = self.flagged.lock();
        if flagged.len() >= MAX_FLAGGED_DEVICES {
            flagged.clear();
        }
        flagged.insert(
            (tenant.to_string(), device.to_string()),
            FlaggedViolations { at, violations },
        );
    }

    /// A device's latest flagged violations, if any since the start.
    pub fn flagged(&self, tenant: &str, device: &str) -> Option<FlaggedViolations> {
        self.flagged
            .lock()
            .get(&(tenant.to_string(), device.to_string()))
            .cloned()
    }
}

impl Bucket {
    /// Takes one token from a bucket of `per_minute` capacity; false when empty.
    fn take(&mut self, per_minute: f64) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * per_minute / 60.0).min(per_minute);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wulian_registry::NewProfile;
    use wulian_registry::test_support::{new_device_with, registry_with_tenant};

    fn reading(key: &str, value: Value) -> Reading {
        Reading {
            ts: 1,
            key: key.into(),
            value,
        }
    }

    fn setup(validation: &str, per_minute: Option<u32>) -> (Arc<ModelCache>, Arc<Registry>) {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let mut profile: NewProfile = serde_json::from_value(json!({
            "id": "sensor",
            "model": {"properties": [{"name": "temp", "type": "double", "min": -40, "max": 85}]},
            "validation": validation,
        }))
        .unwrap();
        profile.settings.max_messages_per_minute = per_minute;
        reg.create_profile(&tenant.id, &profile).unwrap();
        reg.create_device(&tenant.id, &new_device_with("d1", "sensor", &[]))
            .unwrap();
        let reg = Arc::new(reg);
        (ModelCache::new(reg.clone()), reg)
    }

    #[tokio::test]
    async fn reject_flag_and_off_modes() {
        let (cache, reg) = setup("reject", None);
        let hot = [reading("temp", Value::F64(99.0))];
        assert!(matches!(
            cache.check("acme", "d1", &hot).await,
            ModelVerdict::Reject(v) if v[0].code == "above_max"
        ));
        assert!(matches!(
            cache
                .check("acme", "d1", &[reading("temp", Value::F64(20.0))])
                .await,
            ModelVerdict::Accept
        ));
        // A profile change is seen by the next message.
        let mut flag: NewProfile = serde_json::from_value(json!({
            "id": "sensor",
            "model": {"properties": [{"name": "temp", "type": "double", "max": 85}]},
            "validation": "flag",
        }))
        .unwrap();
        reg.replace_profile("acme", "sensor", &flag, None).unwrap();
        assert!(matches!(
            cache.check("acme", "d1", &hot).await,
            ModelVerdict::Flagged(_)
        ));
        flag.validation = ValidationMode::Off;
        reg.replace_profile("acme", "sensor", &flag, None).unwrap();
        assert!(matches!(
            cache.check("acme", "d1", &hot).await,
            ModelVerdict::Accept
        ));
        // A device without a profile record is not checked.
        assert!(matches!(
            cache.check("acme", "nobody", &hot).await,
            ModelVerdict::Accept
        ));
    }

    #[tokio::test]
    async fn devices_of_one_profile_share_one_copy_until_it_changes() {
        let (cache, reg) = setup("reject", None);
        reg.create_device("acme", &new_device_with("d2", "sensor", &[]))
            .unwrap();
        let one = cache.profile("acme", "d1").await.unwrap();
        let two = cache.profile("acme", "d2").await.unwrap();
        assert!(Arc::ptr_eq(&one, &two));
        let mut changed: NewProfile = serde_json::from_value(json!({
            "id": "sensor",
            "model": {"properties": [{"name": "temp", "type": "double", "max": 50}]},
            "validation": "flag",
        }))
        .unwrap();
        changed.settings.max_messages_per_minute = None;
        reg.replace_profile("acme", "sensor", &changed, None)
            .unwrap();
        let after = cache.profile("acme", "d2").await.unwrap();
        assert!(!Arc::ptr_eq(&one, &after));
        assert_eq!(after.validation, ValidationMode::Flag);
        assert!(Arc::ptr_eq(
            &after,
            &cache.profile("acme", "d1").await.unwrap()
        ));
    }

    #[tokio::test]
    async fn the_profile_rate_limit_refuses_the_excess() {
        let (cache, _reg) = setup("off", Some(3));
        let ok = [reading("temp", Value::F64(1.0))];
        for _ in 0..3 {
            assert!(matches!(
                cache.check("acme", "d1", &ok).await,
                ModelVerdict::Accept
            ));
        }
        assert!(matches!(
            cache.check("acme", "d1", &ok).await,
            ModelVerdict::RateLimited { per_minute: 3 }
        ));
    }
}
