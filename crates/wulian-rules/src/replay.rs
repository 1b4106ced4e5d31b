//! Turning stored telemetry back into messages, for replaying a rule over history.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::rule::Message;

/// Groups stored readings `(timestamp_ms, key, value)` of one device into one message per
/// timestamp, oldest first, as the device would have sent them (`{"temp": 21.5, "door":
/// "open"}` on `devices/{id}/telemetry`). Feed the result to [`crate::Rule::dry_run`]. At
/// most `max_messages` messages are built (the oldest ones), so the caller's bound on a
/// replay holds whatever the range holds.
pub fn messages_from_readings(
    tenant: &str,
    device_id: &str,
    readings: impl IntoIterator<Item = (i64, String, Value)>,
    max_messages: usize,
) -> Vec<Message> {
    let mut by_ts: BTreeMap<i64, Map<String, Value>> = BTreeMap::new();
    for (ts, key, value) in readings {
        if by_ts.len() >= max_messages && !by_ts.contains_key(&ts) {
            // Keep the oldest `max_messages` timestamps: drop the newest when an older one comes.
            match by_ts.last_key_value() {
                Some((&newest, _)) if ts < newest => {
                    by_ts.remove(&newest);
                }
                _ => continue,
            }
        }
        by_ts.entry(ts).or_default().insert(key, value);
    }
    let topic = wulian_common::topics::telemetry_topic(device_id);
    by_ts
        .into_iter()
        .map(|(ts, values)| Message {
            tenant: tenant.to_string(),
            device_id: device_id.to_string(),
            topic: topic.clone(),
            timestamp_ms: ts,
            payload: Value::Object(values),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn groups_by_timestamp_oldest_first_and_bounds() {
        let readings = vec![
            (20, "temp".to_string(), json!(2.0)),
            (10, "temp".to_string(), json!(1.0)),
            (10, "door".to_string(), json!("open")),
            (30, "temp".to_string(), json!(3.0)),
        ];
        let msgs = messages_from_readings("t1", "d1", readings.clone(), 10);
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].timestamp_ms, 10);
        assert_eq!(msgs[0].payload, json!({"temp": 1.0, "door": "open"}));
        assert_eq!(msgs[0].topic, "devices/d1/telemetry");
        assert_eq!(msgs[2].payload, json!({"temp": 3.0}));

        let bounded = messages_from_readings("t1", "d1", readings, 2);
        let ts: Vec<i64> = bounded.iter().map(|m| m.timestamp_ms).collect();
        assert_eq!(ts, [10, 20], "the oldest are kept");
        assert!(messages_from_readings("t1", "d1", Vec::new(), 5).is_empty());
    }
}
