//! Telemetry retention settings: what the retention task needs to build the time-series
//! store's per-device policy. A device's raw telemetry is kept for its profile's
//! `retention_days`, else its tenant's, else the installation's `storage.retention_days`.

use crate::Registry;
use crate::error::Result;

/// The retentions set in the registry, in days: only what differs from "inherit", so that an
/// installation where few profiles set one reads a few rows, however many devices it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionOverrides {
    /// (tenant, days) of each tenant with a retention of its own.
    pub tenants: Vec<(String, u32)>,
    /// (tenant, device, days) of each device whose profile sets a retention.
    pub devices: Vec<(String, String, u32)>,
}

impl RetentionOverrides {
    /// The effective retention of a device in days (`default`: the installation's; `None`
    /// keeps forever), by the lookup order above. Linear: for tests and single lookups; the
    /// retention task builds maps.
    pub fn effective_days(&self, tenant: &str, device: &str, default: Option<u32>) -> Option<u32> {
        self.devices
            .iter()
            .find(|(t, d, _)| t == tenant && d == device)
            .map(|(_, _, days)| *days)
            .or_else(|| {
                self.tenants
                    .iter()
                    .find(|(t, _)| t == tenant)
                    .map(|(_, days)| *days)
            })
            .or(default)
    }
}

impl Registry {
    /// Every tenant's retention and every device's profile retention, in one read: one query
    /// over the tenants with a retention, and one join from the profiles with a retention to
    /// their devices (the `(tenant, profile, id)` device index), both in one transaction.
    pub fn retention_overrides(&self) -> Result<RetentionOverrides> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let tenants = tx
            .prepare_cached(
                "SELECT id, retention_days FROM tenants
                 WHERE retention_days IS NOT NULL ORDER BY id",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let devices = tx
            .prepare_cached(
                "SELECT d.tenant, d.id, p.retention_days
                 FROM profiles p JOIN devices d ON d.tenant = p.tenant AND d.profile = p.id
                 WHERE p.retention_days IS NOT NULL ORDER BY d.tenant, d.id",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        tx.finish()?;
        Ok(RetentionOverrides { tenants, devices })
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{new_device_with, new_tenant};
    use crate::{Error, NewProfile, ProfileSettings, Registry, TenantPatch};

    fn profile(id: &str, days: Option<u32>) -> NewProfile {
        NewProfile {
            id: id.into(),
            settings: ProfileSettings {
                retention_days: days,
                ..ProfileSettings::default()
            },
            ..NewProfile::default()
        }
    }

    #[test]
    fn overrides_follow_profiles_and_tenants() {
        let reg = Registry::open_in_memory().unwrap();
        for t in ["a", "b"] {
            reg.create_tenant(&new_tenant(t)).unwrap();
        }
        reg.create_profile("a", &profile("tracker", Some(2)))
            .unwrap();
        reg.create_profile("a", &profile("plain", None)).unwrap();
        reg.create_profile("b", &profile("tracker", Some(3)))
            .unwrap();
        for (t, d, p) in [
            ("a", "a-1", "tracker"),
            ("a", "a-2", "plain"),
            ("a", "a-3", "unknown"),
            ("b", "b-1", "tracker"),
            ("b", "b-2", "default"),
        ] {
            reg.create_device(t, &new_device_with(d, p, &[])).unwrap();
        }
        let patch = TenantPatch {
            retention_days: Some(Some(7)),
            ..TenantPatch::default()
        };
        assert_eq!(
            reg.update_tenant("a", &patch).unwrap().retention_days,
            Some(7)
        );
        let o = reg.retention_overrides().unwrap();
        assert_eq!(o.tenants, vec![("a".to_string(), 7)]);
        assert_eq!(
            o.devices,
            vec![
                ("a".to_string(), "a-1".to_string(), 2),
                ("b".to_string(), "b-1".to_string(), 3)
            ]
        );
        assert_eq!(o.effective_days("a", "a-1", Some(30)), Some(2));
        assert_eq!(o.effective_days("a", "a-2", Some(30)), Some(7));
        assert_eq!(o.effective_days("a", "a-3", None), Some(7));
        assert_eq!(o.effective_days("b", "b-2", Some(30)), Some(30));
        assert_eq!(o.effective_days("b", "b-2", None), None);

        // Clearing the tenant's, and a profile change, show at the next read.
        let clear = TenantPatch {
            retention_days: Some(None),
            ..TenantPatch::default()
        };
        assert_eq!(reg.update_tenant("a", &clear).unwrap().retention_days, None);
        let mut p = profile("plain", Some(90));
        p.name = Some("Plain".into());
        reg.replace_profile("a", "plain", &p, None).unwrap();
        let o = reg.retention_overrides().unwrap();
        assert!(o.tenants.is_empty());
        assert_eq!(o.effective_days("a", "a-2", None), Some(90));
        assert_eq!(
            reg.get_profile("a", "plain")
                .unwrap()
                .settings
                .retention_days,
            Some(90)
        );
    }

    #[test]
    fn out_of_range_retentions_are_refused_with_the_field() {
        let reg = Registry::open_in_memory().unwrap();
        reg.create_tenant(&new_tenant("a")).unwrap();
        for days in [0, 36_501] {
            match reg.create_profile("a", &profile("p", Some(days))) {
                Err(Error::Invalid { field, reason }) => {
                    assert_eq!(field, "settings.retention_days");
                    assert!(reason.contains("from 1 to 36500"), "{reason}");
                }
                other => panic!("{days}: {other:?}"),
            }
            let patch = TenantPatch {
                retention_days: Some(Some(days)),
                ..TenantPatch::default()
            };
            assert!(matches!(
                reg.update_tenant("a", &patch),
                Err(Error::Invalid {
                    field: "retention_days",
                    ..
                })
            ));
        }
        reg.create_profile("a", &profile("p", Some(36_500)))
            .unwrap();
        assert!(matches!(
            reg.update_tenant("nope", &TenantPatch::default()),
            Err(Error::NotFound { .. })
        ));
    }
}
