//! The public device topic contract (docs/device-contract.md):
//!
//! - `devices/{id}/telemetry`                      device → platform
//! - `devices/{id}/events/{name}`                  device → platform
//! - `devices/{id}/commands/{name}`                platform → device
//! - `devices/{id}/commands/{name}/response`       device → platform (MQTT 3.1.1 replies; MQTT 5
//!   devices reply on the response topic they were given, which is this same topic)
//! - `devices/{id}/twin/reported`                  device → platform (JSON merge patch)
//! - `devices/{id}/twin/get`                       device → platform (asks for the whole twin)
//! - `devices/{id}/twin`                           platform → device (the whole twin)
//! - `devices/{id}/twin/delta`                     platform → device (retained: what to do)
//! - `devices/{id}/twin/updated`                   platform → applications (change notification)
//! - `devices/{id}/ota`                            platform → device (retained: the update job)
//! - `devices/{id}/ota/progress`                   device → platform (update progress)
//!
//! Parsing lives here so the broker wiring, the ingest pipeline and the command service agree.

/// What a topic under `devices/{id}/` means to the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceTopic<'a> {
    Telemetry,
    Event {
        name: &'a str,
    },
    Command {
        name: &'a str,
    },
    CommandResponse {
        name: &'a str,
    },
    /// A merge patch of the device's reported twin document.
    TwinReported,
    /// The device asks for its whole twin (answered on `devices/{id}/twin`).
    TwinGet,
    /// The device reports the progress of a firmware update.
    OtaProgress,
    /// Any other topic under the device's own namespace: routed, not interpreted.
    Other,
}

/// Splits `devices/{id}/rest` into the device id and the meaning of `rest`.
/// Returns `None` for topics outside `devices/`.
pub fn parse_device_topic(topic: &str) -> Option<(&str, DeviceTopic<'_>)> {
    let rest = topic.strip_prefix("devices/")?;
    let (device_id, rest) = rest.split_once('/')?;
    if device_id.is_empty() {
        return None;
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let kind = match parts.as_slice() {
        ["telemetry"] => DeviceTopic::Telemetry,
        ["events", name] if !name.is_empty() => DeviceTopic::Event { name },
        ["commands", name] if !name.is_empty() => DeviceTopic::Command { name },
        ["commands", name, "response"] if !name.is_empty() => DeviceTopic::CommandResponse { name },
        ["twin", "reported"] => DeviceTopic::TwinReported,
        ["twin", "get"] => DeviceTopic::TwinGet,
        ["ota", "progress"] => DeviceTopic::OtaProgress,
        _ => DeviceTopic::Other,
    };
    Some((device_id, kind))
}

pub fn telemetry_topic(device_id: &str) -> String {
    format!("devices/{device_id}/telemetry")
}

pub fn command_topic(device_id: &str, name: &str) -> String {
    format!("devices/{device_id}/commands/{name}")
}

pub fn command_response_topic(device_id: &str, name: &str) -> String {
    format!("devices/{device_id}/commands/{name}/response")
}

pub fn twin_topic(device_id: &str) -> String {
    format!("devices/{device_id}/twin")
}

pub fn twin_delta_topic(device_id: &str) -> String {
    format!("devices/{device_id}/twin/delta")
}

pub fn twin_updated_topic(device_id: &str) -> String {
    format!("devices/{device_id}/twin/updated")
}

/// The namespace a device may publish and subscribe in, as an MQTT filter.
pub fn device_namespace_filter(device_id: &str) -> String {
    format!("devices/{device_id}/#")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_topics() {
        assert_eq!(
            parse_device_topic("devices/d1/telemetry"),
            Some(("d1", DeviceTopic::Telemetry))
        );
        assert_eq!(
            parse_device_topic("devices/d1/twin/reported"),
            Some(("d1", DeviceTopic::TwinReported))
        );
        assert_eq!(
            parse_device_topic("devices/d1/twin/get"),
            Some(("d1", DeviceTopic::TwinGet))
        );
        assert_eq!(
            parse_device_topic("devices/d1/twin/delta"),
            Some(("d1", DeviceTopic::Other))
        );
        assert_eq!(
            parse_device_topic("devices/d1/events/fall"),
            Some(("d1", DeviceTopic::Event { name: "fall" }))
        );
        assert_eq!(
            parse_device_topic("devices/d1/commands/reboot"),
            Some(("d1", DeviceTopic::Command { name: "reboot" }))
        );
        assert_eq!(
            parse_device_topic("devices/d1/commands/reboot/response"),
            Some(("d1", DeviceTopic::CommandResponse { name: "reboot" }))
        );
        assert_eq!(
            parse_device_topic("devices/d1/ota/progress"),
            Some(("d1", DeviceTopic::OtaProgress))
        );
        assert_eq!(
            parse_device_topic("devices/d1/ota"),
            Some(("d1", DeviceTopic::Other))
        );
        assert_eq!(parse_device_topic("devices//telemetry"), None);
        assert_eq!(parse_device_topic("other/d1/telemetry"), None);
        assert_eq!(parse_device_topic("devices/d1"), None);
    }

    #[test]
    fn builders_round_trip() {
        let t = command_response_topic("d1", "open");
        assert_eq!(
            parse_device_topic(&t),
            Some(("d1", DeviceTopic::CommandResponse { name: "open" }))
        );
        assert_eq!(telemetry_topic("x"), "devices/x/telemetry");
        assert_eq!(command_topic("x", "y"), "devices/x/commands/y");
        assert_eq!(device_namespace_filter("x"), "devices/x/#");
    }
}
