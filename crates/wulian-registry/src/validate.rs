//! Input rules shared by the entity modules. Each check returns `Error::Invalid` naming the
//! field, so the HTTP layer can answer 422 with a message the caller can act on. Lengths are
//! counted in characters (not bytes) where a human writes the value.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};

pub const MAX_TENANT_ID_LEN: usize = 63;
pub const MAX_DEVICE_ID_LEN: usize = 128;
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY_LEN: usize = 63;
pub const MAX_LABEL_VALUE_LEN: usize = 256;
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
pub const MAX_COMMAND_NAME_LEN: usize = 64;
pub const MAX_COMMAND_PARAMS_BYTES: usize = 64 * 1024;
/// Longest telemetry retention a tenant or profile may set, in days (100 years: "forever").
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// Device id reserved as an alias for "the calling device" in device-facing routes.
pub const RESERVED_DEVICE_ID: &str = "me";

/// A telemetry retention in days: 1 to [`MAX_RETENTION_DAYS`], or none (`inherits` says from
/// what).
pub(crate) fn retention_days(field: &'static str, days: Option<u32>, inherits: &str) -> Result<()> {
    match days {
        Some(d) if !(1..=MAX_RETENTION_DAYS).contains(&d) => Err(Error::invalid(
            field,
            format!(
                "must be a whole number of days from 1 to {MAX_RETENTION_DAYS}, or null to \
                 inherit {inherits}; got {d}"
            ),
        )),
        _ => Ok(()),
    }
}

/// Tenant slug: `[a-z0-9][a-z0-9-]{0,62}`.
pub(crate) fn tenant_id(id: &str) -> Result<()> {
    let bytes = id.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(Error::invalid("id", "must not be empty"));
    };
    if bytes.len() > MAX_TENANT_ID_LEN {
        return Err(Error::invalid(
            "id",
            format!("must be at most {MAX_TENANT_ID_LEN} characters"),
        ));
    }
    let slug = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !slug(first) || !bytes.iter().all(|b| slug(b) || *b == b'-') {
        return Err(Error::invalid(
            "id",
            "must be lowercase letters, digits and '-', starting with a letter or digit",
        ));
    }
    Ok(())
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

/// Identifier rule for device ids and profiles: 1–128 of `A-Z a-z 0-9 _ . : -`.
pub(crate) fn identifier(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_DEVICE_ID_LEN {
        return Err(Error::invalid(
            field,
            format!("must be 1 to {MAX_DEVICE_ID_LEN} characters"),
        ));
    }
    if !value.bytes().all(is_id_byte) {
        return Err(Error::invalid(
            field,
            "may contain only A-Z a-z 0-9 _ . : -",
        ));
    }
    Ok(())
}

/// Device id: an identifier that is not the reserved alias `me`.
pub(crate) fn device_id(id: &str) -> Result<()> {
    identifier("id", id)?;
    if id == RESERVED_DEVICE_ID {
        return Err(Error::invalid("id", "\"me\" is reserved"));
    }
    Ok(())
}

/// Whether `id` could be a device id at all (cheap pre-check for authentication).
pub(crate) fn is_plausible_device_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_DEVICE_ID_LEN && id.bytes().all(is_id_byte)
}

/// A display name: `min..=MAX_NAME_LEN` characters, no control characters.
pub(crate) fn name(field: &'static str, value: &str, min: usize) -> Result<()> {
    let len = value.chars().count();
    if len < min || len > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!("must be {min} to {MAX_NAME_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    if min > 0 && value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be blank"));
    }
    Ok(())
}

/// At most 64 labels; keys `[A-Za-z0-9_.-]{1,63}`; values at most 256 characters.
pub(crate) fn labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !key_ok {
            return Err(Error::invalid(
                "labels",
                format!(
                    "key {key:?} must be 1 to {MAX_LABEL_KEY_LEN} characters of A-Z a-z 0-9 _ . -"
                ),
            ));
        }
        if value.chars().count() > MAX_LABEL_VALUE_LEN {
            return Err(Error::invalid(
                "labels",
                format!("value of {key:?} must be at most {MAX_LABEL_VALUE_LEN} characters"),
            ));
        }
    }
    Ok(())
}

/// Attributes must be a JSON object of at most 16 KiB serialized; returns the serialization.
pub(crate) fn attributes(value: &Value) -> Result<String> {
    if !value.is_object() {
        return Err(Error::invalid("attributes", "must be a JSON object"));
    }
    let text = serde_json::to_string(value)?;
    if text.len() > MAX_ATTRIBUTES_BYTES {
        return Err(Error::invalid(
            "attributes",
            format!("must be at most {MAX_ATTRIBUTES_BYTES} bytes serialized"),
        ));
    }
    Ok(text)
}

/// Command name: 1–64 of `A-Z a-z 0-9 _ . -` (it becomes an MQTT topic level).
pub(crate) fn command_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_COMMAND_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!("must be 1 to {MAX_COMMAND_NAME_LEN} characters of A-Z a-z 0-9 _ . -"),
        ))
    }
}

/// Page size: 1..=1000.
pub(crate) fn limit(limit: u32) -> Result<()> {
    if (1..=1000).contains(&limit) {
        Ok(())
    } else {
        Err(Error::invalid("limit", "must be between 1 and 1000"))
    }
}
