//! The smart-lock contract (docs/bike-lock-contract.md) as code: the profile every bike's
//! device gets, the report intervals the platform sets through the twin, and the parsing of
//! the lock's events.

use serde::Deserialize;
use serde_json::{Value, json};

/// The device profile of bike locks in a bike-share tenant.
pub const PROFILE_ID: &str = "smart-lock";
/// Report interval while parked, seconds (twin desired `report_interval_s`).
pub const PARKED_INTERVAL_S: u32 = 300;
/// Report interval while a trip runs: fine enough for a route, coarse enough for the battery.
pub const RIDING_INTERVAL_S: u32 = 10;

/// The `smart-lock` profile as the registry's profile JSON (a `NewProfile`): the contract's
/// state reports, events (with their fields) and commands. Validation `flag`: a firmware bug
/// is visible in the device status without losing positions.
pub fn profile_json() -> Value {
    let at = || {
        vec![
            json!({"name": "ts", "type": "integer", "unit": "ms", "required": true}),
            json!({"name": "lat", "type": "double", "unit": "°", "min": -90, "max": 90, "precision": 6, "required": true}),
            json!({"name": "lon", "type": "double", "unit": "°", "min": -180, "max": 180, "precision": 6, "required": true}),
        ]
    };
    let event = |name: &str, extra: &[Value]| {
        let mut fields = at();
        fields.extend_from_slice(extra);
        json!({"name": name, "fields": fields})
    };
    let required = |field: &Value| {
        let mut field = field.clone();
        field["required"] = json!(true);
        field
    };
    let trip_id = json!({"name": "trip_id", "type": "string", "min": 1, "max": 128});
    let token = json!({"name": "token", "type": "string", "min": 1, "max": 2048});
    json!({
        "id": PROFILE_ID,
        "name": "Smart bike lock",
        "description": "docs/bike-lock-contract.md",
        "validation": "flag",
        "settings": {"report_interval_s": PARKED_INTERVAL_S},
        "model": {
            "properties": [
                {"name": "lat", "type": "double", "unit": "°", "min": -90, "max": 90, "precision": 6},
                {"name": "lon", "type": "double", "unit": "°", "min": -180, "max": 180, "precision": 6},
                {"name": "battery", "type": "integer", "unit": "%", "min": 0, "max": 100},
                {"name": "locked", "type": "boolean"},
                {"name": "speed", "type": "double", "unit": "km/h", "min": 0, "max": 60, "precision": 1},
                {"name": "fix", "type": "integer", "min": 0, "max": 3,
                 "description": "0 none, 1 dead reckoning / last known, 2 2-D, 3 3-D"},
                {"name": "sats", "type": "integer", "min": 0, "max": 64},
                {"name": "rssi", "type": "integer", "unit": "dBm", "min": -140, "max": 0}
            ],
            "events": [
                event("unlocked", &[required(&trip_id), required(&token)]),
                event("locked", std::slice::from_ref(&trip_id)),
                event("illegal_movement", &[json!({"name": "distance_m", "type": "double", "unit": "m", "min": 0, "required": true})]),
                event("fall", &[]),
                event("low_battery", &[json!({"name": "battery", "type": "integer", "unit": "%", "min": 0, "max": 100, "required": true})]),
                event("tamper", &[json!({"name": "detail", "type": "string", "max": 256, "required": true})])
            ],
            "commands": [
                {"name": "unlock", "params": [
                    required(&trip_id),
                    required(&token),
                    {"name": "expires_at", "type": "integer", "unit": "ms", "required": true}
                ]},
                {"name": "lock", "params": []},
                {"name": "ring", "params": [{"name": "seconds", "type": "integer", "min": 1, "max": 30}]}
            ],
            "allow_undeclared": false
        }
    })
}

/// An event a lock published, as far as the bike share reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LockEvent {
    #[serde(default)]
    pub ts: Option<i64>,
    #[serde(default)]
    pub lat: Option<f64>,
    #[serde(default)]
    pub lon: Option<f64>,
    #[serde(default)]
    pub trip_id: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub battery: Option<f64>,
}

impl LockEvent {
    /// Parses an event payload; `None` for anything that is not a JSON object (the lock's bug,
    /// logged by the caller; an event never fails the device's publish).
    pub fn parse(payload: &[u8]) -> Option<LockEvent> {
        serde_json::from_slice(payload).ok()
    }

    /// The position the event carries, if it is a plausible one.
    pub fn position(&self) -> Option<(f64, f64)> {
        match (self.lat, self.lon) {
            (Some(lat), Some(lon)) if valid_position(lat, lon) => Some((lat, lon)),
            _ => None,
        }
    }
}

/// Events that need an operator's attention (they open a work order).
pub fn needs_attention(event: &str) -> Option<&'static str> {
    match event {
        "illegal_movement" | "tamper" => Some("inspect"),
        "fall" => Some("inspect"),
        "low_battery" => Some("battery"),
        _ => None,
    }
}

pub fn valid_position(lat: f64, lon: f64) -> bool {
    lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)
        // (0, 0) is what a lock without a fix sends by mistake: never a real bike position.
        && !(lat == 0.0 && lon == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_leniently_and_positions_are_checked() {
        let e =
            LockEvent::parse(br#"{"ts":1,"lat":30.1,"lon":120.2,"trip_id":"t-1","token":"u1.x"}"#)
                .unwrap();
        assert_eq!(e.position(), Some((30.1, 120.2)));
        assert_eq!(e.token.as_deref(), Some("u1.x"));
        assert!(LockEvent::parse(b"not json").is_none());
        let e = LockEvent::parse(br#"{"lat":0,"lon":0}"#).unwrap();
        assert_eq!(e.position(), None);
        let e = LockEvent::parse(br#"{"lat":91,"lon":10}"#).unwrap();
        assert_eq!(e.position(), None);
    }

    #[test]
    fn the_profile_is_a_valid_registry_profile() {
        let p: wulian_registry::NewProfile = serde_json::from_value(profile_json()).unwrap();
        assert_eq!(p.id, PROFILE_ID);
        assert!(p.model.commands.iter().any(|c| c.name == "unlock"));
    }
}
