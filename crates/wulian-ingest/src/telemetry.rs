//! Parsing the telemetry payloads of the device contract into points.
//!
//! Accepted forms (docs/device-contract.md):
//! - `{"temp": 21.5, "door": "open"}` — values at the time the platform received them;
//! - `{"ts": 1700000000000, "values": {"temp": 21.5}}` — values at the device's timestamp (ms);
//! - `{"ts": 1700000000000, "temp": 21.5}` — the same, flat;
//! - an array of any of these (devices that buffered while offline upload many at once).
//!
//! Numbers become floats, booleans and strings are kept, `null` means "no reading" and is
//! skipped. Anything else is refused with an error that names the offending key, and the whole
//! message is refused: a half-stored message would be worse than a clear error.

use serde_json::{Map, Value as Json};
use wulian_tsdb::Value;

/// Bounds that keep one message from costing the platform more than a device deserves.
pub const MAX_KEY_LEN: usize = 128;
pub const MAX_STRING_VALUE_LEN: usize = 4096;
pub const MAX_VALUES_PER_MESSAGE: usize = 100_000;
/// 9999-12-31T23:59:59.999Z; later timestamps are certainly a unit mistake.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// One reading from a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub ts: i64,
    pub key: String,
    pub value: Value,
}

/// Why a payload was refused. `code()` is the stable machine-readable name used in HTTP
/// problem documents and MQTT reason strings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("payload must be a JSON object or an array of objects, found {found}")]
    NotAnObject { found: &'static str },
    #[error(
        "\"ts\" must be an integer number of milliseconds between 0 and {MAX_TS_MS}, found {found}"
    )]
    InvalidTimestamp { found: String },
    #[error("\"values\" must be a JSON object")]
    ValuesNotAnObject,
    #[error(
        "key {key:?} is not allowed: keys are 1 to {MAX_KEY_LEN} characters of A-Z a-z 0-9 _ . : -"
    )]
    InvalidKey { key: String },
    #[error("value of {key:?} is {found}; values must be numbers, booleans, strings or null")]
    UnsupportedValue { key: String, found: &'static str },
    #[error("string value of {key:?} is longer than {MAX_STRING_VALUE_LEN} bytes")]
    StringTooLong { key: String },
    #[error("message carries more than {MAX_VALUES_PER_MESSAGE} values")]
    TooManyValues,
}

impl PayloadError {
    pub fn code(&self) -> &'static str {
        match self {
            PayloadError::InvalidJson(_) => "invalid_json",
            PayloadError::NotAnObject { .. } | PayloadError::ValuesNotAnObject => "invalid_payload",
            PayloadError::InvalidTimestamp { .. } => "invalid_timestamp",
            PayloadError::InvalidKey { .. } => "invalid_key",
            PayloadError::UnsupportedValue { .. } => "unsupported_value",
            PayloadError::StringTooLong { .. } => "value_too_long",
            PayloadError::TooManyValues => "too_many_values",
        }
    }
}

/// Parses a telemetry payload. `now_ms` stamps readings that carry no timestamp.
pub fn parse(payload: &[u8], now_ms: i64) -> Result<Vec<Reading>, PayloadError> {
    let json: Json =
        serde_json::from_slice(payload).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
    let mut readings = Vec::new();
    match json {
        Json::Object(obj) => parse_object(obj, now_ms, &mut readings)?,
        Json::Array(items) => {
            for item in items {
                match item {
                    Json::Object(obj) => parse_object(obj, now_ms, &mut readings)?,
                    other => {
                        return Err(PayloadError::NotAnObject {
                            found: json_kind(&other),
                        });
                    }
                }
            }
        }
        other => {
            return Err(PayloadError::NotAnObject {
                found: json_kind(&other),
            });
        }
    }
    Ok(readings)
}

fn parse_object(
    mut obj: Map<String, Json>,
    now_ms: i64,
    out: &mut Vec<Reading>,
) -> Result<(), PayloadError> {
    let ts = match obj.remove("ts") {
        None | Some(Json::Null) => now_ms,
        Some(ts) => parse_ts(&ts)?,
    };
    let values = match obj.remove("values") {
        // The timestamped form; any other keys beside "ts" and "values" are readings too.
        Some(Json::Object(values)) => {
            for (key, value) in obj {
                push_reading(key, value, ts, out)?;
            }
            values
        }
        Some(_) => return Err(PayloadError::ValuesNotAnObject),
        None => obj,
    };
    for (key, value) in values {
        push_reading(key, value, ts, out)?;
    }
    Ok(())
}

fn push_reading(
    key: String,
    value: Json,
    ts: i64,
    out: &mut Vec<Reading>,
) -> Result<(), PayloadError> {
    if !is_valid_key(&key) {
        return Err(PayloadError::InvalidKey { key });
    }
    let value = match value {
        Json::Null => return Ok(()),
        Json::Bool(b) => Value::Bool(b),
        // serde_json without arbitrary precision always yields an f64 for a number; JSON has no
        // NaN or infinity, so the result is finite.
        Json::Number(n) => match n.as_f64() {
            Some(f) => Value::F64(f),
            None => {
                return Err(PayloadError::UnsupportedValue {
                    key,
                    found: "a number out of range",
                });
            }
        },
        Json::String(s) => {
            if s.len() > MAX_STRING_VALUE_LEN {
                return Err(PayloadError::StringTooLong { key });
            }
            Value::Str(s)
        }
        other => {
            return Err(PayloadError::UnsupportedValue {
                key,
                found: json_kind(&other),
            });
        }
    };
    if out.len() >= MAX_VALUES_PER_MESSAGE {
        return Err(PayloadError::TooManyValues);
    }
    out.push(Reading { ts, key, value });
    Ok(())
}

fn parse_ts(ts: &Json) -> Result<i64, PayloadError> {
    match ts.as_i64() {
        Some(ms) if (0..=MAX_TS_MS).contains(&ms) => Ok(ms),
        _ => Err(PayloadError::InvalidTimestamp {
            found: ts.to_string(),
        }),
    }
}

/// Keys travel in URLs (`?keys=a,b`) and CSV headers, so they are kept to a safe alphabet.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ts: i64, key: &str, value: Value) -> Reading {
        Reading {
            ts,
            key: key.to_string(),
            value,
        }
    }

    #[test]
    fn flat_object_uses_receive_time() {
        let got = parse(
            br#"{"temp": 21.5, "on": true, "mode": "eco", "gone": null}"#,
            7,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                r(7, "mode", Value::Str("eco".into())),
                r(7, "on", Value::Bool(true)),
                r(7, "temp", Value::F64(21.5)),
            ]
        );
    }

    #[test]
    fn timestamped_forms_and_arrays() {
        let got = parse(
            br#"[{"ts": 1000, "values": {"a": 1}}, {"ts": 2000, "a": 2}, {"b": 3}]"#,
            9,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                r(1000, "a", Value::F64(1.0)),
                r(2000, "a", Value::F64(2.0)),
                r(9, "b", Value::F64(3.0))
            ]
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(parse(b"{not json", 0).unwrap_err().code(), "invalid_json");
        assert_eq!(
            parse(b"42", 0).unwrap_err(),
            PayloadError::NotAnObject { found: "a number" }
        );
        assert_eq!(
            parse(b"[1]", 0).unwrap_err(),
            PayloadError::NotAnObject { found: "a number" }
        );
        assert_eq!(
            parse(br#"{"ts": 1.5, "a": 1}"#, 0).unwrap_err().code(),
            "invalid_timestamp"
        );
        assert_eq!(
            parse(br#"{"ts": -1, "a": 1}"#, 0).unwrap_err().code(),
            "invalid_timestamp"
        );
        assert_eq!(
            parse(br#"{"ts": "now", "a": 1}"#, 0).unwrap_err().code(),
            "invalid_timestamp"
        );
        assert_eq!(
            parse(br#"{"ts": 1, "values": 3}"#, 0).unwrap_err(),
            PayloadError::ValuesNotAnObject
        );
        assert_eq!(
            parse(br#"{"a/b": 1}"#, 0).unwrap_err(),
            PayloadError::InvalidKey { key: "a/b".into() }
        );
        assert_eq!(
            parse(br#"{"pos": {"lat": 1}}"#, 0).unwrap_err(),
            PayloadError::UnsupportedValue {
                key: "pos".into(),
                found: "an object"
            }
        );
        let long = format!(r#"{{"s": "{}"}}"#, "x".repeat(MAX_STRING_VALUE_LEN + 1));
        assert_eq!(
            parse(long.as_bytes(), 0).unwrap_err().code(),
            "value_too_long"
        );
    }

    #[test]
    fn empty_object_is_no_readings() {
        assert!(parse(b"{}", 0).unwrap().is_empty());
        assert!(parse(b"[]", 0).unwrap().is_empty());
    }
}
