//! Device profiles: a tenant's device types, each with a thing model, a validation policy and
//! per-profile settings (report interval, inactivity timeout, rate limit, telemetry retention).
//!
//! The settings are stored as JSON, except `retention_days`, which has a column of its own so
//! that the retention task reads every device's retention in one join
//! ([`Registry::retention_overrides`]).
//!
//! A device names its profile by id (`devices.profile`); a name without a profile record means
//! "no model" (the built-in `default` profile needs no record), so devices can be created before
//! their profile is defined. Deleting a profile that devices still use is refused.
//!
//! Every change bumps [`Registry::profile_generation`], which lets the ingest pipeline cache each
//! device's model and notice when to reload, without a database read per message.

use std::sync::atomic::Ordering;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::thing_model::ThingModel;
use crate::{Registry, now_ms, tenants, validate};

/// Profiles per tenant.
pub const MAX_PROFILES: i64 = 1000;

/// What ingest does with telemetry that breaks the thing model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationMode {
    /// Refuse the whole message with every violation (MQTT `0x99`, HTTP 422).
    Reject,
    /// Store it, count it and keep the device's latest violations for the API.
    #[default]
    Flag,
    /// Do not check.
    Off,
}

impl ValidationMode {
    fn as_str(self) -> &'static str {
        match self {
            ValidationMode::Reject => "reject",
            ValidationMode::Flag => "flag",
            ValidationMode::Off => "off",
        }
    }

    fn parse(s: &str) -> ValidationMode {
        match s {
            "reject" => ValidationMode::Reject,
            "off" => ValidationMode::Off,
            _ => ValidationMode::Flag,
        }
    }
}

/// Per-profile settings; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSettings {
    /// How often devices are expected to report (seconds); informs consoles, and the
    /// inactivity timeout defaults to three intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_interval_s: Option<u32>,
    /// A device heard from neither over MQTT nor HTTP for this long is inactive (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactivity_timeout_s: Option<u32>,
    /// Telemetry messages a device may send per minute; more are refused (MQTT `0x96`, HTTP 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages_per_minute: Option<u32>,
    /// Days the raw telemetry of the profile's devices is kept (1 to 36500); none inherits the
    /// tenant's retention, then the installation's. Dropped a whole day at a time; hourly and
    /// minute summaries stay for their own retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

impl ProfileSettings {
    /// The inactivity timeout in effect, in seconds, if any.
    pub fn effective_inactivity_timeout_s(&self) -> Option<u32> {
        self.inactivity_timeout_s
            .or_else(|| self.report_interval_s.map(|i| i.saturating_mul(3)))
    }

    fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("settings.report_interval_s", self.report_interval_s),
            ("settings.inactivity_timeout_s", self.inactivity_timeout_s),
            (
                "settings.max_messages_per_minute",
                self.max_messages_per_minute,
            ),
        ] {
            if value == Some(0) {
                return Err(Error::invalid(
                    field,
                    "must be at least 1 (omit it for none)",
                ));
            }
        }
        validate::retention_days(
            "settings.retention_days",
            self.retention_days,
            "the tenant's retention (or the installation's)",
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub description: String,
    pub model: ThingModel,
    pub validation: ValidationMode,
    pub settings: ProfileSettings,
    /// Starts at 1; every update adds one (optimistic concurrency: `If-Match`).
    pub version: i64,
    /// Whether claim provisioning is on (a provisioning secret is set).
    pub provisioning_enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A profile as created or replaced; the id comes from the path on replace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProfile {
    pub id: String,
    /// The id when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub model: ThingModel,
    #[serde(default)]
    pub validation: ValidationMode,
    #[serde(default)]
    pub settings: ProfileSettings,
}

const PROFILE_COLUMNS: &str = "id, tenant, name, description, model, validation, settings, version, \
     created_at, updated_at, provisioning_secret_hash IS NOT NULL, retention_days";

fn read_profile(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Profile, String, String)> {
    let validation: String = row.get(5)?;
    let settings = ProfileSettings {
        retention_days: row.get(11)?,
        ..ProfileSettings::default()
    };
    Ok((
        Profile {
            id: row.get(0)?,
            tenant: row.get(1)?,
            name: row.get(2)?,
            description: row.get(3)?,
            model: ThingModel::default(),
            validation: ValidationMode::parse(&validation),
            settings,
            version: row.get(7)?,
            created_at: row.get(8)?,
            updated_at: row.get(9)?,
            provisioning_enabled: row.get(10)?,
        },
        row.get(4)?,
        row.get(6)?,
    ))
}

fn finish(parts: (Profile, String, String)) -> Result<Profile> {
    let (mut profile, model, settings) = parts;
    profile.model = serde_json::from_str(&model)?;
    let retention_days = profile.settings.retention_days;
    profile.settings = serde_json::from_str(&settings)?;
    // The column is the record of it (the JSON never holds it).
    profile.settings.retention_days = retention_days;
    Ok(profile)
}

/// The checked fields of a new profile: name, description, model JSON, settings JSON (without
/// the retention, which has its column) and the retention.
type ProfileFields = (String, String, String, String, Option<u32>);

fn validate_new(new: &NewProfile) -> Result<ProfileFields> {
    validate::identifier("id", &new.id)?;
    let name = new.name.clone().unwrap_or_else(|| new.id.clone());
    validate::name("name", &name, 1)?;
    let description = new.description.clone().unwrap_or_default();
    if description.chars().count() > 2000 {
        return Err(Error::invalid("description", "at most 2000 characters"));
    }
    new.model.validate()?;
    new.settings.validate()?;
    let settings = ProfileSettings {
        retention_days: None,
        ..new.settings.clone()
    };
    Ok((
        name,
        description,
        serde_json::to_string(&new.model)?,
        serde_json::to_string(&settings)?,
        new.settings.retention_days,
    ))
}

impl Registry {
    /// Bumped on every change to a profile or to which profile a device has.
    pub fn profile_generation(&self) -> u64 {
        self.profile_generation.load(Ordering::SeqCst)
    }

    pub(crate) fn bump_profile_generation(&self) {
        self.profile_generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn create_profile(&self, tenant: &str, new: &NewProfile) -> Result<Profile> {
        let (name, description, model, settings, retention_days) = validate_new(new)?;
        let now = now_ms();
        let profile = self.write(|tx| {
            tenants::require_tenant(tx, tenant)?;
            let count: i64 = tx.query_row(
                "SELECT count(*) FROM profiles WHERE tenant = ?1",
                [tenant],
                |r| r.get(0),
            )?;
            if count >= MAX_PROFILES {
                return Err(Error::Conflict(format!(
                    "a tenant has at most {MAX_PROFILES} profiles"
                )));
            }
            let inserted = tx.execute(
                "INSERT INTO profiles (tenant, id, name, description, model, validation, settings,
                                       retention_days, version, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9)
                 ON CONFLICT (tenant, id) DO NOTHING",
                params![
                    tenant,
                    new.id,
                    name,
                    description,
                    model,
                    new.validation.as_str(),
                    settings,
                    retention_days,
                    now
                ],
            )?;
            if inserted == 0 {
                return Err(Error::already_exists("profile", &new.id));
            }
            load_profile(tx, tenant, &new.id)
        })?;
        self.bump_profile_generation();
        Ok(profile)
    }

    pub fn get_profile(&self, tenant: &str, id: &str) -> Result<Profile> {
        let conn = self.conn();
        load_profile(&conn, tenant, id)
    }

    /// The tenant's profiles by id.
    pub fn list_profiles(&self, tenant: &str) -> Result<Vec<Profile>> {
        let rows = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PROFILE_COLUMNS} FROM profiles WHERE tenant = ?1 ORDER BY id"
            ))?;
            stmt.query_map([tenant], read_profile)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        rows.into_iter().map(finish).collect()
    }

    /// Replaces the profile `id` (everything but its id and creation time). With
    /// `expected_version`, refuses with `Conflict` when the stored version differs.
    pub fn replace_profile(
        &self,
        tenant: &str,
        id: &str,
        new: &NewProfile,
        expected_version: Option<i64>,
    ) -> Result<Profile> {
        if new.id != id {
            return Err(Error::invalid(
                "id",
                "must equal the profile id of the path",
            ));
        }
        let (name, description, model, settings, retention_days) = validate_new(new)?;
        let now = now_ms();
        let profile = self.write(|tx| {
            let version: i64 = tx
                .query_row(
                    "SELECT version FROM profiles WHERE tenant = ?1 AND id = ?2",
                    [tenant, id],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| Error::not_found("profile", id))?;
            if let Some(expected) = expected_version
                && expected != version
            {
                return Err(Error::VersionMismatch {
                    expected,
                    current: version,
                });
            }
            tx.execute(
                "UPDATE profiles SET name = ?1, description = ?2, model = ?3, validation = ?4,
                        settings = ?5, retention_days = ?6, version = version + 1, updated_at = ?7
                 WHERE tenant = ?8 AND id = ?9",
                params![
                    name,
                    description,
                    model,
                    new.validation.as_str(),
                    settings,
                    retention_days,
                    now,
                    tenant,
                    id
                ],
            )?;
            load_profile(tx, tenant, id)
        })?;
        self.bump_profile_generation();
        Ok(profile)
    }

    /// Deletes a profile no device uses.
    pub fn delete_profile(&self, tenant: &str, id: &str) -> Result<()> {
        self.write(|tx| {
            let users: i64 = tx.query_row(
                "SELECT count(*) FROM devices WHERE tenant = ?1 AND profile = ?2",
                [tenant, id],
                |r| r.get(0),
            )?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM profiles WHERE tenant = ?1 AND id = ?2",
                    [tenant, id],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .is_some();
            if !exists {
                return Err(Error::not_found("profile", id));
            }
            if users > 0 {
                return Err(Error::Conflict(format!(
                    "profile {id:?} is used by {users} device(s); move them to another profile first"
                )));
            }
            tx.execute(
                "DELETE FROM profiles WHERE tenant = ?1 AND id = ?2",
                [tenant, id],
            )?;
            Ok(())
        })?;
        self.bump_profile_generation();
        Ok(())
    }

    /// The profile record of a device, or `None` when its profile has no record (no model).
    /// `NotFound` when the device does not exist in `tenant`.
    pub fn device_profile(&self, tenant: &str, device_id: &str) -> Result<Option<Profile>> {
        let row = {
            let conn = self.conn();
            let profile: String = conn
                .prepare_cached("SELECT profile FROM devices WHERE tenant = ?1 AND id = ?2")?
                .query_row([tenant, device_id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::not_found("device", device_id))?;
            conn.prepare_cached(&format!(
                "SELECT {PROFILE_COLUMNS} FROM profiles WHERE tenant = ?1 AND id = ?2"
            ))?
            .query_row([tenant, &profile], read_profile)
            .optional()?
        };
        row.map(finish).transpose()
    }
}

fn load_profile(conn: &Connection, tenant: &str, id: &str) -> Result<Profile> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE tenant = ?1 AND id = ?2"
        ))?
        .query_row([tenant, id], read_profile)
        .optional()?
        .ok_or_else(|| Error::not_found("profile", id))?;
    finish(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewDevice;
    use crate::test_support::registry_with_tenant;
    use serde_json::json;

    fn new_profile(id: &str) -> NewProfile {
        NewProfile {
            id: id.into(),
            model: serde_json::from_value(json!({
                "properties": [{"name": "temp", "type": "double", "unit": "°C"}]
            }))
            .unwrap(),
            validation: ValidationMode::Reject,
            settings: ProfileSettings {
                report_interval_s: Some(60),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn profiles_round_trip_and_version() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let tenant = tenant.id;
        let created = reg.create_profile(&tenant, &new_profile("sensor")).unwrap();
        assert_eq!(created.version, 1);
        assert_eq!(created.name, "sensor");
        assert_eq!(created.model.properties[0].unit.as_deref(), Some("°C"));
        assert_eq!(created.settings.effective_inactivity_timeout_s(), Some(180));
        assert!(matches!(
            reg.create_profile(&tenant, &new_profile("sensor")),
            Err(Error::AlreadyExists { .. })
        ));
        let generation = reg.profile_generation();
        let mut changed = new_profile("sensor");
        changed.validation = ValidationMode::Off;
        let replaced = reg
            .replace_profile(&tenant, "sensor", &changed, Some(1))
            .unwrap();
        assert_eq!(replaced.version, 2);
        assert_eq!(replaced.validation, ValidationMode::Off);
        assert!(reg.profile_generation() > generation);
        assert!(matches!(
            reg.replace_profile(&tenant, "sensor", &changed, Some(1)),
            Err(Error::VersionMismatch {
                expected: 1,
                current: 2
            })
        ));
        assert_eq!(reg.list_profiles(&tenant).unwrap().len(), 1);
    }

    #[test]
    fn a_profile_in_use_cannot_be_deleted_and_tenants_are_isolated() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let tenant = tenant.id;
        reg.create_profile(&tenant, &new_profile("lock")).unwrap();
        reg.create_device(
            &tenant,
            &NewDevice {
                id: "lock-1".into(),
                profile: Some("lock".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(reg.device_profile(&tenant, "lock-1").unwrap().is_some());
        assert!(matches!(
            reg.delete_profile(&tenant, "lock"),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            reg.get_profile("other", "lock"),
            Err(Error::NotFound { .. })
        ));
        reg.delete_device(&tenant, "lock-1").unwrap();
        reg.delete_profile(&tenant, "lock").unwrap();
        assert!(matches!(
            reg.delete_profile(&tenant, "lock"),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn invalid_models_and_settings_are_refused() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let tenant = tenant.id;
        let mut bad = new_profile("x");
        bad.model = serde_json::from_value(
            json!({"properties": [{"name": "t", "type": "double", "min": 2, "max": 1}]}),
        )
        .unwrap();
        assert!(matches!(
            reg.create_profile(&tenant, &bad),
            Err(Error::Invalid { field: "model", .. })
        ));
        let mut bad = new_profile("x");
        bad.settings.max_messages_per_minute = Some(0);
        assert!(reg.create_profile(&tenant, &bad).is_err());
    }
}
