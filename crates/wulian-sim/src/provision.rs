//! The simulated fleet's profiles and devices, created through the registry like any others.

use serde_json::json;
use wulian_registry::{DevicePatch, NewDevice, NewProfile, Registry};

use crate::config::CityConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimKind {
    Bike,
    AirSensor,
}

/// A provisioned simulated device with its fresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDevice {
    pub id: String,
    pub token: String,
    pub kind: SimKind,
}

/// The bikes' profile: the smart-lock contract's (docs/bike-lock-contract.md). A tenant that
/// already has one keeps it.
pub const BIKE_PROFILE: &str = wulian_bikeshare::lock::PROFILE_ID;
pub const SENSOR_PROFILE: &str = "sim-air-sensor";
/// The bikes' profile before they spoke the smart-lock contract; provisioning moves them off it.
const LEGACY_BIKE_PROFILE: &str = "sim-bike-lock";

/// The smart-lock profile, as the bike share defines it (docs/bike-lock-contract.md).
pub fn bike_profile() -> serde_json::Result<NewProfile> {
    serde_json::from_value(wulian_bikeshare::lock::profile_json())
}

fn sensor_profile() -> serde_json::Result<NewProfile> {
    let pollutant = |name: &str, unit: &str, max: f64| json!({"name": name, "type": "double", "unit": unit, "min": 0, "max": max, "precision": 1});
    serde_json::from_value(json!({
        "id": SENSOR_PROFILE,
        "name": "Air-quality station (simulated)",
        "validation": "reject",
        "settings": {"report_interval_s": 30},
        "model": {
            "properties": [
                pollutant("pm25", "µg/m³", 1000.0),
                pollutant("pm10", "µg/m³", 1000.0),
                pollutant("no2", "µg/m³", 2000.0),
                pollutant("so2", "µg/m³", 2000.0),
                pollutant("o3", "µg/m³", 1000.0),
                {"name": "co", "type": "double", "unit": "mg/m³", "min": 0, "max": 100, "precision": 2},
                {"name": "temp", "type": "double", "unit": "°C", "min": -40, "max": 60, "precision": 1},
                {"name": "humidity", "type": "double", "unit": "%", "min": 0, "max": 100, "precision": 0}
            ],
            "allow_undeclared": false
        }
    }))
}

/// Creates what is missing (profiles, devices) and gives every simulated device a new token.
pub fn provision(
    registry: &Registry,
    config: &CityConfig,
) -> wulian_registry::Result<Vec<SimDevice>> {
    for profile in [bike_profile()?, sensor_profile()?] {
        match registry.get_profile(&config.tenant, &profile.id) {
            Ok(_) => {}
            Err(wulian_registry::Error::NotFound { .. }) => {
                registry.create_profile(&config.tenant, &profile)?;
            }
            Err(other) => return Err(other),
        }
    }
    let wanted = (0..config.bikes)
        .map(|i| (format!("bike-{:04}", i + 1), SimKind::Bike, BIKE_PROFILE))
        .chain((0..config.air_sensors).map(|i| {
            (
                format!("aq-{:03}", i + 1),
                SimKind::AirSensor,
                SENSOR_PROFILE,
            )
        }));
    let mut devices = Vec::new();
    for (id, kind, profile) in wanted {
        let token = match registry.get_device(&config.tenant, &id) {
            Ok(existing) => {
                if existing.profile == LEGACY_BIKE_PROFILE {
                    let patch = DevicePatch {
                        profile: Some(BIKE_PROFILE.to_string()),
                        ..DevicePatch::default()
                    };
                    registry.update_device(&config.tenant, &id, &patch)?;
                }
                registry.rotate_device_token(&config.tenant, &id)?
            }
            Err(wulian_registry::Error::NotFound { .. }) => {
                let labels = [("simulated".to_string(), "true".to_string())].into();
                let new = NewDevice {
                    id: id.clone(),
                    name: Some(match kind {
                        SimKind::Bike => format!("Bike {}", &id[5..]),
                        SimKind::AirSensor => format!("Air station {}", &id[3..]),
                    }),
                    profile: Some(profile.to_string()),
                    labels,
                    ..NewDevice::default()
                };
                registry.create_device(&config.tenant, &new)?.1
            }
            Err(other) => return Err(other),
        };
        devices.push(SimDevice { id, token, kind });
    }
    // The old bike profile goes once no device uses it (a tenant's own devices may still).
    match registry.delete_profile(&config.tenant, LEGACY_BIKE_PROFILE) {
        Ok(())
        | Err(wulian_registry::Error::NotFound { .. } | wulian_registry::Error::Conflict(_)) => {}
        Err(other) => return Err(other),
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_valid_and_provisioning_is_repeatable() {
        let (bike, sensor) = (bike_profile().unwrap(), sensor_profile().unwrap());
        bike.model.validate().unwrap();
        sensor.model.validate().unwrap();
        assert_eq!(
            (bike.model.properties.len(), sensor.model.properties.len()),
            (8, 8)
        );
        assert_eq!(bike.model.events.len(), 6);
        assert_eq!(bike.id, "smart-lock");
        let (reg, tenant) = wulian_registry::test_support::registry_with_tenant("city").unwrap();
        let config = CityConfig {
            tenant: tenant.id,
            bikes: 3,
            air_sensors: 2,
            ..CityConfig::default()
        };
        // A device of the simulator's old bike profile moves to the smart-lock profile.
        let legacy = NewProfile {
            id: LEGACY_BIKE_PROFILE.into(),
            ..NewProfile::default()
        };
        reg.create_profile(&config.tenant, &legacy).unwrap();
        let old_bike = NewDevice {
            id: "bike-0003".into(),
            profile: Some(LEGACY_BIKE_PROFILE.into()),
            ..NewDevice::default()
        };
        reg.create_device(&config.tenant, &old_bike).unwrap();
        let first = provision(&reg, &config).unwrap();
        assert_eq!(
            reg.get_device(&config.tenant, "bike-0003").unwrap().profile,
            BIKE_PROFILE
        );
        assert!(matches!(
            reg.get_profile(&config.tenant, LEGACY_BIKE_PROFILE),
            Err(wulian_registry::Error::NotFound { .. })
        ));
        assert_eq!(first.len(), 5);
        assert_eq!(first[0].id, "bike-0001");
        assert_eq!(first[4].id, "aq-002");
        // A second start keeps the devices and issues new tokens; the old ones stop working.
        let second = provision(&reg, &config).unwrap();
        assert_ne!(first[0].token, second[0].token);
        assert!(
            reg.authenticate_device("bike-0001", &first[0].token)
                .unwrap()
                .is_none()
        );
        assert!(
            reg.authenticate_device("bike-0001", &second[0].token)
                .unwrap()
                .is_some()
        );
    }
}
