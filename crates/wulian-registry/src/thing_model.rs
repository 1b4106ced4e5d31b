//! A profile's thing model: what its devices report (typed telemetry properties with unit, range
//! and precision), what events they raise and what commands they accept, with parameter schemas.
//!
//! The model is pure data with two checks: [`ThingModel::validate`] when a model is saved (a
//! broken model is refused with the path of the first problem), and the `check_*` functions on
//! the hot paths (ingest, command send), which return every violation rather than the first so a
//! device developer sees all that is wrong with a payload at once.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Bounds that keep a model (and checking against it) cheap.
pub const MAX_MODEL_FIELDS: usize = 1024;
pub const MAX_MODEL_BYTES: usize = 256 * 1024;
const MAX_FIELD_NAME_LEN: usize = 128;
const MAX_ENUM_VALUES: usize = 256;
const MAX_PRECISION: u8 = 12;

/// The type of a property or parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// A floating-point number (an integer value is accepted as well).
    Double,
    /// A whole number in the i64 range.
    Integer,
    Boolean,
    String,
    /// Any JSON value (command parameters and event fields only; not stored as telemetry).
    Json,
}

impl DataType {
    fn as_str(self) -> &'static str {
        match self {
            DataType::Double => "double",
            DataType::Integer => "integer",
            DataType::Boolean => "boolean",
            DataType::String => "string",
            DataType::Json => "json",
        }
    }
}

/// One typed field: a telemetry property, an event field or a command parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The telemetry key or parameter name.
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: DataType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Inclusive bounds for numbers; for strings, bounds on the length in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Decimal digits that are meaningful (a display and rounding hint for charts and exports;
    /// values are stored as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u8>,
    /// Allowed values of a string field.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    /// Command parameters and event fields only: must be present.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub params: Vec<FieldSpec>,
    /// Parameters not declared in `params` are refused unless this is true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_undeclared_params: bool,
}

fn yes() -> bool {
    true
}

/// A profile's thing model. The empty model declares nothing and allows everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThingModel {
    /// Telemetry properties.
    #[serde(default)]
    pub properties: Vec<FieldSpec>,
    #[serde(default)]
    pub events: Vec<EventSpec>,
    #[serde(default)]
    pub commands: Vec<CommandSpec>,
    /// Whether telemetry keys that `properties` does not declare are accepted. When false, an
    /// undeclared key is a violation.
    #[serde(default = "yes")]
    pub allow_undeclared: bool,
}

impl Default for ThingModel {
    fn default() -> ThingModel {
        ThingModel {
            properties: Vec::new(),
            events: Vec::new(),
            commands: Vec::new(),
            allow_undeclared: true,
        }
    }
}

/// One way a payload breaks the model. `code` is stable and machine-readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// The telemetry key or parameter name.
    pub key: String,
    /// `undeclared`, `wrong_type`, `below_min`, `above_max`, `not_in_enum`, `too_short`,
    /// `too_long`, `missing` or `unknown_command`.
    pub code: String,
    pub detail: String,
}

impl Violation {
    fn new(key: &str, code: &str, detail: String) -> Violation {
        Violation {
            key: key.to_string(),
            code: code.to_string(),
            detail,
        }
    }
}

/// A telemetry value as the ingest pipeline parsed it (the registry does not depend on the
/// telemetry store's types).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadingValue<'a> {
    Double(f64),
    Integer(i64),
    Boolean(bool),
    String(&'a str),
}

impl ThingModel {
    /// Checks the model itself; the error names the offending path, e.g.
    /// `properties[2].max: must not be below min`.
    pub fn validate(&self) -> Result<()> {
        let fields = self.properties.len()
            + self
                .events
                .iter()
                .map(|e| 1 + e.fields.len())
                .sum::<usize>()
            + self
                .commands
                .iter()
                .map(|c| 1 + c.params.len())
                .sum::<usize>();
        if fields > MAX_MODEL_FIELDS {
            return Err(Error::invalid(
                "model",
                format!("declares {fields} fields; at most {MAX_MODEL_FIELDS}"),
            ));
        }
        let size = serde_json::to_vec(self)?.len();
        if size > MAX_MODEL_BYTES {
            return Err(Error::invalid(
                "model",
                format!("is {size} bytes as JSON; at most {MAX_MODEL_BYTES}"),
            ));
        }
        validate_fields("properties", &self.properties, false)?;
        for spec in &self.properties {
            if spec.data_type == DataType::Json {
                return Err(Error::invalid(
                    "model",
                    format!(
                        "properties.{}: telemetry is double, integer, boolean or string, not json",
                        spec.name
                    ),
                ));
            }
        }
        let mut names = HashSet::new();
        for (i, event) in self.events.iter().enumerate() {
            check_name(&format!("events[{i}].name"), &event.name)?;
            if !names.insert(event.name.as_str()) {
                return Err(model_error(
                    format!("events[{i}].name"),
                    format!("{:?} is declared twice", event.name),
                ));
            }
            validate_fields(&format!("events[{i}].fields"), &event.fields, true)?;
        }
        names.clear();
        for (i, command) in self.commands.iter().enumerate() {
            check_name(&format!("commands[{i}].name"), &command.name)?;
            if !names.insert(command.name.as_str()) {
                return Err(model_error(
                    format!("commands[{i}].name"),
                    format!("{:?} is declared twice", command.name),
                ));
            }
            validate_fields(&format!("commands[{i}].params"), &command.params, true)?;
        }
        Ok(())
    }

    pub fn property(&self, key: &str) -> Option<&FieldSpec> {
        self.properties.iter().find(|p| p.name == key)
    }

    pub fn command(&self, name: &str) -> Option<&CommandSpec> {
        self.commands.iter().find(|c| c.name == name)
    }

    /// True when the model constrains nothing (checking can be skipped).
    pub fn is_permissive(&self) -> bool {
        self.properties.is_empty() && self.allow_undeclared
    }

    /// Every violation of one telemetry reading.
    pub fn check_reading(&self, key: &str, value: ReadingValue<'_>, out: &mut Vec<Violation>) {
        match self.property(key) {
            Some(spec) => check_reading_value(spec, value, out),
            None if !self.allow_undeclared => out.push(Violation::new(
                key,
                "undeclared",
                format!("{key:?} is not a property of this device's thing model"),
            )),
            None => {}
        }
    }

    /// Every violation of a command's parameters (a JSON object, or null for none). Commands the
    /// model does not declare are violations when the model declares any command.
    pub fn check_command(&self, name: &str, params: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        if self.commands.is_empty() {
            return out;
        }
        let Some(spec) = self.command(name) else {
            out.push(Violation::new(
                name,
                "unknown_command",
                format!("{name:?} is not a command of this device's thing model"),
            ));
            return out;
        };
        let empty = serde_json::Map::new();
        let object = match params {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => {
                out.push(Violation::new(
                    "params",
                    "wrong_type",
                    format!("params must be a JSON object, not {}", json_kind(other)),
                ));
                return out;
            }
        };
        check_object(&spec.params, spec.allow_undeclared_params, object, &mut out);
        out
    }
}

fn check_object(
    fields: &[FieldSpec],
    allow_undeclared: bool,
    object: &serde_json::Map<String, Value>,
    out: &mut Vec<Violation>,
) {
    for spec in fields {
        match object.get(&spec.name) {
            None | Some(Value::Null) if spec.required => out.push(Violation::new(
                &spec.name,
                "missing",
                format!("{:?} is required", spec.name),
            )),
            None | Some(Value::Null) => {}
            Some(value) => check_json_value(spec, value, out),
        }
    }
    if !allow_undeclared {
        for key in object.keys() {
            if !fields.iter().any(|f| &f.name == key) {
                out.push(Violation::new(
                    key,
                    "undeclared",
                    format!("{key:?} is not a declared parameter"),
                ));
            }
        }
    }
}

fn check_json_value(spec: &FieldSpec, value: &Value, out: &mut Vec<Violation>) {
    let reading = match (spec.data_type, value) {
        (DataType::Json, _) => return,
        (_, Value::Bool(b)) => ReadingValue::Boolean(*b),
        (_, Value::String(s)) => ReadingValue::String(s),
        (_, Value::Number(n)) => match n.as_i64() {
            Some(i) => ReadingValue::Integer(i),
            None => ReadingValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        (_, other) => {
            out.push(wrong_type(spec, json_kind(other)));
            return;
        }
    };
    check_reading_value(spec, reading, out);
}

fn check_reading_value(spec: &FieldSpec, value: ReadingValue<'_>, out: &mut Vec<Violation>) {
    let number = match (spec.data_type, value) {
        (DataType::Json, _) => return,
        (DataType::Double, ReadingValue::Double(v)) => v,
        (DataType::Double | DataType::Integer, ReadingValue::Integer(v)) => v as f64,
        (DataType::Boolean, ReadingValue::Boolean(_)) => return,
        (DataType::String, ReadingValue::String(s)) => {
            check_string(spec, s, out);
            return;
        }
        (_, other) => {
            out.push(wrong_type(spec, reading_kind(other)));
            return;
        }
    };
    let unit = spec
        .unit
        .as_deref()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    if let Some(min) = spec.min
        && number < min
    {
        out.push(Violation::new(
            &spec.name,
            "below_min",
            format!("{number}{unit} is below the minimum {min}{unit}"),
        ));
    }
    if let Some(max) = spec.max
        && number > max
    {
        out.push(Violation::new(
            &spec.name,
            "above_max",
            format!("{number}{unit} is above the maximum {max}{unit}"),
        ));
    }
}

fn check_string(spec: &FieldSpec, s: &str, out: &mut Vec<Violation>) {
    if let Some(allowed) = &spec.allowed
        && !allowed.iter().any(|a| a == s)
    {
        out.push(Violation::new(
            &spec.name,
            "not_in_enum",
            format!("{s:?} is not one of {allowed:?}"),
        ));
    }
    let chars = s.chars().count() as f64;
    if let Some(min) = spec.min
        && chars < min
    {
        out.push(Violation::new(
            &spec.name,
            "too_short",
            format!("{chars} characters; at least {min}"),
        ));
    }
    if let Some(max) = spec.max
        && chars > max
    {
        out.push(Violation::new(
            &spec.name,
            "too_long",
            format!("{chars} characters; at most {max}"),
        ));
    }
}

fn wrong_type(spec: &FieldSpec, found: &str) -> Violation {
    Violation::new(
        &spec.name,
        "wrong_type",
        format!("expected {}, found {found}", spec.data_type.as_str()),
    )
}

fn reading_kind(value: ReadingValue<'_>) -> &'static str {
    match value {
        ReadingValue::Double(_) => "a fractional number",
        ReadingValue::Integer(_) => "an integer",
        ReadingValue::Boolean(_) => "a boolean",
        ReadingValue::String(_) => "a string",
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn model_error(path: String, reason: String) -> Error {
    Error::invalid("model", format!("{path}: {reason}"))
}

fn check_name(path: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_FIELD_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(model_error(
            path.to_string(),
            format!(
                "{name:?} is not a valid name (1 to {MAX_FIELD_NAME_LEN} of A-Z a-z 0-9 _ . : -)"
            ),
        ))
    }
}

fn validate_fields(path: &str, fields: &[FieldSpec], may_require: bool) -> Result<()> {
    let mut names = HashSet::new();
    for (i, spec) in fields.iter().enumerate() {
        let at = format!("{path}[{i}]");
        check_name(&format!("{at}.name"), &spec.name)?;
        if !names.insert(spec.name.as_str()) {
            return Err(model_error(
                format!("{at}.name"),
                format!("{:?} is declared twice", spec.name),
            ));
        }
        for (bound, value) in [("min", spec.min), ("max", spec.max)] {
            if value.is_some_and(|v| !v.is_finite()) {
                return Err(model_error(
                    format!("{at}.{bound}"),
                    "must be a finite number".into(),
                ));
            }
        }
        if let (Some(min), Some(max)) = (spec.min, spec.max)
            && max < min
        {
            return Err(model_error(
                format!("{at}.max"),
                format!("{max} is below min {min}"),
            ));
        }
        if matches!(spec.data_type, DataType::Boolean | DataType::Json)
            && (spec.min.is_some() || spec.max.is_some())
        {
            return Err(model_error(
                at.clone(),
                format!("min/max do not apply to {}", spec.data_type.as_str()),
            ));
        }
        if spec.precision.is_some_and(|p| p > MAX_PRECISION) {
            return Err(model_error(
                format!("{at}.precision"),
                format!("at most {MAX_PRECISION} digits"),
            ));
        }
        if let Some(allowed) = &spec.allowed {
            if spec.data_type != DataType::String {
                return Err(model_error(
                    format!("{at}.enum"),
                    "only string fields take an enum".into(),
                ));
            }
            if allowed.is_empty() || allowed.len() > MAX_ENUM_VALUES {
                return Err(model_error(
                    format!("{at}.enum"),
                    format!("1 to {MAX_ENUM_VALUES} values"),
                ));
            }
        }
        if spec.required && !may_require {
            return Err(model_error(
                format!("{at}.required"),
                "telemetry properties cannot be required (devices report what changed)".into(),
            ));
        }
        if let Some(unit) = &spec.unit
            && (unit.is_empty() || unit.chars().count() > 32)
        {
            return Err(model_error(
                format!("{at}.unit"),
                "1 to 32 characters".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> ThingModel {
        serde_json::from_value(json!({
            "properties": [
                {"name": "temp", "type": "double", "unit": "°C", "min": -40, "max": 85, "precision": 1},
                {"name": "count", "type": "integer", "min": 0},
                {"name": "door", "type": "string", "enum": ["open", "closed"]},
                {"name": "moving", "type": "boolean"}
            ],
            "commands": [
                {"name": "unlock", "params": [
                    {"name": "duration_s", "type": "integer", "min": 1, "max": 60, "required": true},
                    {"name": "reason", "type": "string", "max": 20}
                ]}
            ],
            "allow_undeclared": false
        }))
        .unwrap()
    }

    fn check(model: &ThingModel, key: &str, value: ReadingValue<'_>) -> Vec<String> {
        let mut out = Vec::new();
        model.check_reading(key, value, &mut out);
        out.into_iter().map(|v| v.code).collect()
    }

    #[test]
    fn readings_within_the_model_pass() {
        let m = model();
        m.validate().unwrap();
        assert!(check(&m, "temp", ReadingValue::Double(21.5)).is_empty());
        assert!(check(&m, "temp", ReadingValue::Integer(21)).is_empty());
        assert!(check(&m, "count", ReadingValue::Integer(3)).is_empty());
        assert!(check(&m, "door", ReadingValue::String("open")).is_empty());
        assert!(check(&m, "moving", ReadingValue::Boolean(true)).is_empty());
    }

    #[test]
    fn each_kind_of_violation_is_named() {
        let m = model();
        assert_eq!(check(&m, "temp", ReadingValue::Double(90.0)), ["above_max"]);
        assert_eq!(
            check(&m, "temp", ReadingValue::Double(-41.0)),
            ["below_min"]
        );
        assert_eq!(
            check(&m, "temp", ReadingValue::String("hot")),
            ["wrong_type"]
        );
        assert_eq!(
            check(&m, "count", ReadingValue::Double(1.5)),
            ["wrong_type"]
        );
        assert_eq!(
            check(&m, "door", ReadingValue::String("ajar")),
            ["not_in_enum"]
        );
        assert_eq!(check(&m, "rpm", ReadingValue::Integer(1)), ["undeclared"]);
        let mut open = m.clone();
        open.allow_undeclared = true;
        assert!(check(&open, "rpm", ReadingValue::Integer(1)).is_empty());
    }

    #[test]
    fn the_detail_carries_the_unit() {
        let mut out = Vec::new();
        model().check_reading("temp", ReadingValue::Double(90.0), &mut out);
        assert_eq!(out[0].detail, "90 °C is above the maximum 85 °C");
    }

    #[test]
    fn command_parameters_are_checked() {
        let m = model();
        assert!(
            m.check_command("unlock", &json!({"duration_s": 5}))
                .is_empty()
        );
        let codes = |v: Vec<Violation>| v.into_iter().map(|v| v.code).collect::<Vec<_>>();
        assert_eq!(codes(m.check_command("unlock", &json!({}))), ["missing"]);
        assert_eq!(
            codes(m.check_command("unlock", &json!({"duration_s": 90, "x": 1}))),
            ["above_max", "undeclared"]
        );
        assert_eq!(
            codes(m.check_command(
                "unlock",
                &json!({"duration_s": 5, "reason": "a".repeat(21)})
            )),
            ["too_long"]
        );
        assert_eq!(
            codes(m.check_command("reboot", &json!({}))),
            ["unknown_command"]
        );
        assert_eq!(
            codes(m.check_command("unlock", &json!([1]))),
            ["wrong_type"]
        );
        assert!(
            ThingModel::default()
                .check_command("anything", &json!({"a": 1}))
                .is_empty()
        );
    }

    #[test]
    fn broken_models_are_refused_with_their_path() {
        let bad = |v: serde_json::Value| {
            let m: ThingModel = serde_json::from_value(v).unwrap();
            m.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(json!({"properties": [{"name": "t", "type": "double", "min": 5, "max": 1}]})),
            "model: properties[0].max: 1 is below min 5"
        );
        assert!(
            bad(json!({"properties": [{"name": "t", "type": "double"}, {"name": "t", "type": "integer"}]}))
                .contains("declared twice")
        );
        assert!(
            bad(json!({"properties": [{"name": "a b", "type": "double"}]}))
                .contains("properties[0].name")
        );
        assert!(bad(json!({"properties": [{"name": "j", "type": "json"}]})).contains("not json"));
        assert!(
            bad(json!({"properties": [{"name": "b", "type": "boolean", "min": 0}]}))
                .contains("min/max")
        );
        assert!(
            bad(json!({"properties": [{"name": "t", "type": "double", "enum": ["a"]}]}))
                .contains("enum")
        );
        assert!(
            bad(json!({"properties": [{"name": "t", "type": "double", "required": true}]}))
                .contains("required")
        );
        assert!(
            serde_json::from_value::<ThingModel>(
                json!({"properties": [{"name": "t", "type": "float"}]})
            )
            .is_err()
        );
    }
}
