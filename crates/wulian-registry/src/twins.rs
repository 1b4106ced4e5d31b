//! Device twins: a `desired` document that applications write and a `reported` document that
//! the device writes, each a JSON object of at most [`MAX_TWIN_SECTION_BYTES`], changed by JSON
//! merge patches (RFC 7386), with a version for optimistic concurrency. The `delta` is what is
//! desired but not (yet) reported — what the device still has to do.
//!
//! One row per device that has ever had a twin change; a device without a row has an empty twin
//! at version 0. Rows go with their device (foreign key, cascade).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::{Registry, now_ms};

/// The largest `desired` or `reported` document, as compact JSON.
pub const MAX_TWIN_SECTION_BYTES: usize = 64 * 1024;
/// Objects nested deeper than this are refused (keeps merging and diffing cheap and bounded).
pub const MAX_TWIN_DEPTH: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwinSection {
    Desired,
    Reported,
}

impl TwinSection {
    pub fn as_str(self) -> &'static str {
        match self {
            TwinSection::Desired => "desired",
            TwinSection::Reported => "reported",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    pub device_id: String,
    pub desired: Value,
    pub reported: Value,
    /// Desired values the reported document does not (yet) match, nested like `desired`.
    pub delta: Value,
    /// Bumped by every change to either document; 0 for a device whose twin was never written.
    pub version: i64,
    pub desired_version: i64,
    pub reported_version: i64,
    pub desired_updated_at: Option<i64>,
    pub reported_updated_at: Option<i64>,
}

/// The outcome of a patch: the twin as stored, and whether the patch changed anything (an
/// idempotent patch keeps the version and sends no notification).
#[derive(Debug, Clone, PartialEq)]
pub struct TwinUpdate {
    pub twin: Twin,
    pub changed: bool,
    /// Whether the delta differs from before the patch (the device has new work, or less).
    pub delta_changed: bool,
}

impl Registry {
    /// The device's twin (empty at version 0 if never written); `NotFound` for an unknown device.
    pub fn get_twin(&self, tenant: &str, device_id: &str) -> Result<Twin> {
        let conn = self.conn();
        load_twin(&conn, tenant, device_id)
    }

    /// Applies a JSON merge patch to one section. `patch` must be an object; `null` members
    /// delete. With `expected_version`, refuses with `VersionMismatch` when the twin's version
    /// differs.
    pub fn patch_twin(
        &self,
        tenant: &str,
        device_id: &str,
        section: TwinSection,
        patch: &Value,
        expected_version: Option<i64>,
    ) -> Result<TwinUpdate> {
        if !patch.is_object() {
            return Err(Error::invalid(
                "twin",
                "a twin patch must be a JSON object (RFC 7386 merge patch)",
            ));
        }
        if depth(patch) > MAX_TWIN_DEPTH {
            return Err(Error::invalid(
                "twin",
                format!("objects nest at most {MAX_TWIN_DEPTH} levels"),
            ));
        }
        let now = now_ms();
        self.write(|tx| {
            let current = load_twin(tx, tenant, device_id)?;
            if let Some(expected) = expected_version
                && expected != current.version
            {
                return Err(Error::VersionMismatch {
                    expected,
                    current: current.version,
                });
            }
            let mut doc = match section {
                TwinSection::Desired => current.desired.clone(),
                TwinSection::Reported => current.reported.clone(),
            };
            merge_patch(&mut doc, patch);
            let unchanged = match section {
                TwinSection::Desired => doc == current.desired,
                TwinSection::Reported => doc == current.reported,
            };
            if unchanged {
                return Ok(TwinUpdate {
                    twin: current,
                    changed: false,
                    delta_changed: false,
                });
            }
            let json = serde_json::to_string(&doc)?;
            if json.len() > MAX_TWIN_SECTION_BYTES {
                return Err(Error::TooLarge {
                    what: "twin",
                    size: json.len(),
                    limit: MAX_TWIN_SECTION_BYTES,
                });
            }
            let (desired, reported) = match section {
                TwinSection::Desired => (json, serde_json::to_string(&current.reported)?),
                TwinSection::Reported => (serde_json::to_string(&current.desired)?, json),
            };
            let (dv, rv, dat, rat) = match section {
                TwinSection::Desired => (
                    current.desired_version + 1,
                    current.reported_version,
                    Some(now),
                    current.reported_updated_at,
                ),
                TwinSection::Reported => (
                    current.desired_version,
                    current.reported_version + 1,
                    current.desired_updated_at,
                    Some(now),
                ),
            };
            tx.execute(
                "INSERT INTO device_twins (tenant, device_id, desired, reported, version,
                        desired_version, reported_version, desired_updated_at, reported_updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (tenant, device_id) DO UPDATE SET desired = ?3, reported = ?4,
                        version = ?5, desired_version = ?6, reported_version = ?7,
                        desired_updated_at = ?8, reported_updated_at = ?9",
                params![
                    tenant,
                    device_id,
                    desired,
                    reported,
                    current.version + 1,
                    dv,
                    rv,
                    dat,
                    rat
                ],
            )?;
            let twin = load_twin(tx, tenant, device_id)?;
            Ok(TwinUpdate {
                delta_changed: twin.delta != current.delta,
                twin,
                changed: true,
            })
        })
    }
}

fn load_twin(conn: &Connection, tenant: &str, device_id: &str) -> Result<Twin> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM devices WHERE tenant = ?1 AND id = ?2")?
        .query_row([tenant, device_id], |r| r.get::<_, i64>(0))
        .optional()?
        .is_some();
    if !exists {
        return Err(Error::not_found("device", device_id));
    }
    type Row = (String, String, i64, i64, i64, Option<i64>, Option<i64>);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT desired, reported, version, desired_version, reported_version,
                    desired_updated_at, reported_updated_at
             FROM device_twins WHERE tenant = ?1 AND device_id = ?2",
        )?
        .query_row([tenant, device_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .optional()?;
    let Some((desired, reported, version, dv, rv, dat, rat)) = row else {
        return Ok(Twin {
            device_id: device_id.to_string(),
            desired: Value::Object(Map::new()),
            reported: Value::Object(Map::new()),
            delta: Value::Object(Map::new()),
            version: 0,
            desired_version: 0,
            reported_version: 0,
            desired_updated_at: None,
            reported_updated_at: None,
        });
    };
    let desired: Value = serde_json::from_str(&desired)?;
    let reported: Value = serde_json::from_str(&reported)?;
    let delta = delta(&desired, &reported);
    Ok(Twin {
        device_id: device_id.to_string(),
        desired,
        reported,
        delta,
        version,
        desired_version: dv,
        reported_version: rv,
        desired_updated_at: dat,
        reported_updated_at: rat,
    })
}

/// RFC 7386 JSON merge patch, applied in place.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// What `desired` asks for that `reported` does not show: members whose values differ, recursing
/// into objects present on both sides. Always an object.
pub fn delta(desired: &Value, reported: &Value) -> Value {
    let mut out = Map::new();
    if let Value::Object(desired) = desired {
        for (key, want) in desired {
            match (want, reported.get(key)) {
                (Value::Object(_), Some(have @ Value::Object(_))) => {
                    let nested = delta(want, have);
                    if nested.as_object().is_some_and(|m| !m.is_empty()) {
                        out.insert(key.clone(), nested);
                    }
                }
                (want, Some(have)) if want == have => {}
                (want, _) => {
                    out.insert(key.clone(), want.clone());
                }
            }
        }
    }
    Value::Object(out)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{new_device, registry_with_tenant};
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386_examples() {
        // RFC 7386 §3 example.
        let mut doc = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
                             "tags": ["example", "sample"], "content": "This will be unchanged"});
        merge_patch(
            &mut doc,
            &json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890",
                    "author": {"familyName": null}, "tags": ["example"]}),
        );
        assert_eq!(
            doc,
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
                   "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
        );
        let mut doc = json!({"a": "b"});
        merge_patch(&mut doc, &json!({"a": {"bb": {"ccc": null}}}));
        assert_eq!(doc, json!({"a": {"bb": {}}}));
    }

    #[test]
    fn delta_is_what_remains_to_be_done() {
        assert_eq!(
            delta(
                &json!({"led": "on", "cfg": {"rate": 10, "mode": "eco"}, "fw": "1.2"}),
                &json!({"led": "on", "cfg": {"rate": 5, "mode": "eco"}, "extra": 1})
            ),
            json!({"cfg": {"rate": 10}, "fw": "1.2"})
        );
        assert_eq!(delta(&json!({}), &json!({"a": 1})), json!({}));
    }

    #[test]
    fn versions_concurrency_and_limits() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let t = tenant.id;
        reg.create_device(&t, &new_device("d1")).unwrap();
        let empty = reg.get_twin(&t, "d1").unwrap();
        assert_eq!(empty.version, 0);
        let up = reg
            .patch_twin(
                &t,
                "d1",
                TwinSection::Desired,
                &json!({"led": "on"}),
                Some(0),
            )
            .unwrap();
        assert!(up.changed && up.delta_changed);
        assert_eq!((up.twin.version, up.twin.desired_version), (1, 1));
        assert_eq!(up.twin.delta, json!({"led": "on"}));
        // Same patch again: nothing changes.
        let again = reg
            .patch_twin(&t, "d1", TwinSection::Desired, &json!({"led": "on"}), None)
            .unwrap();
        assert!(!again.changed);
        assert_eq!(again.twin.version, 1);
        assert!(matches!(
            reg.patch_twin(
                &t,
                "d1",
                TwinSection::Reported,
                &json!({"led": "on"}),
                Some(0)
            ),
            Err(Error::VersionMismatch {
                expected: 0,
                current: 1
            })
        ));
        let reported = reg
            .patch_twin(
                &t,
                "d1",
                TwinSection::Reported,
                &json!({"led": "on"}),
                Some(1),
            )
            .unwrap();
        assert_eq!(reported.twin.delta, json!({}));
        assert_eq!(reported.twin.reported_version, 1);
        // 40 KB fits, 70 KB does not.
        let big = "x".repeat(40 * 1024);
        reg.patch_twin(&t, "d1", TwinSection::Reported, &json!({"blob": big}), None)
            .unwrap();
        let huge = "x".repeat(70 * 1024);
        assert!(matches!(
            reg.patch_twin(
                &t,
                "d1",
                TwinSection::Reported,
                &json!({"blob": huge}),
                None
            ),
            Err(Error::TooLarge { .. })
        ));
        assert!(
            reg.patch_twin(&t, "d1", TwinSection::Desired, &json!([1]), None)
                .is_err()
        );
        assert!(matches!(
            reg.get_twin("other", "d1"),
            Err(Error::NotFound { .. })
        ));
        // The twin goes with the device.
        reg.delete_device(&t, "d1").unwrap();
        reg.create_device(&t, &new_device("d1")).unwrap();
        assert_eq!(reg.get_twin(&t, "d1").unwrap().version, 0);
    }
}
