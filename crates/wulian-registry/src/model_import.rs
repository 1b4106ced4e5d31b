//! Thing models from other platforms: an Azure DTDL v2/v3 interface, or an Alibaba-style TSL
//! document (properties / events / services). What maps cleanly becomes a [`ThingModel`]; what
//! does not (nested objects, maps, arrays, components) is skipped with a warning naming it, so
//! an import never silently drops a field.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::thing_model::{CommandSpec, DataType, EventSpec, FieldSpec, ThingModel};

/// A converted model and what could not be converted.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub model: ThingModel,
    pub warnings: Vec<String>,
}

/// DTDL semantic units to the symbols our models carry.
const DTDL_UNITS: &[(&str, &str)] = &[
    ("degreeCelsius", "°C"),
    ("degreeFahrenheit", "°F"),
    ("kelvin", "K"),
    ("percent", "%"),
    ("volt", "V"),
    ("millivolt", "mV"),
    ("ampere", "A"),
    ("milliampere", "mA"),
    ("watt", "W"),
    ("kilowatt", "kW"),
    ("kilowattHour", "kWh"),
    ("pascal", "Pa"),
    ("kilopascal", "kPa"),
    ("hectopascal", "hPa"),
    ("bar", "bar"),
    ("metre", "m"),
    ("kilometre", "km"),
    ("metrePerSecond", "m/s"),
    ("kilometrePerHour", "km/h"),
    ("second", "s"),
    ("millisecond", "ms"),
    ("minute", "min"),
    ("hour", "h"),
    ("hertz", "Hz"),
    ("decibel", "dB"),
    ("lux", "lx"),
    ("gram", "g"),
    ("kilogram", "kg"),
    ("litre", "L"),
    ("microgramPerCubicMetre", "µg/m³"),
    ("partsPerMillion", "ppm"),
    ("degreeOfArc", "°"),
];

/// Converts an Azure DTDL v2/v3 interface.
pub fn from_dtdl(doc: &Value) -> Result<Imported> {
    let object = doc
        .as_object()
        .ok_or_else(|| Error::invalid("document", "a DTDL interface is a JSON object"))?;
    let types = type_list(object.get("@type"));
    if !types.iter().any(|t| t == "Interface") {
        return Err(Error::invalid(
            "document",
            "not a DTDL interface (@type must be \"Interface\")",
        ));
    }
    let mut model = ThingModel::default();
    let mut warnings = Vec::new();
    let contents = object
        .get("contents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for item in &contents {
        let Some(item) = item.as_object() else {
            warnings.push("a contents entry is not an object; skipped".into());
            continue;
        };
        let name = item.get("name").and_then(Value::as_str).unwrap_or("");
        let kinds = type_list(item.get("@type"));
        let unit = item.get("unit").and_then(Value::as_str).map(|u| {
            DTDL_UNITS
                .iter()
                .find(|(d, _)| *d == u)
                .map_or(u, |(_, s)| s)
                .to_string()
        });
        let description = text(item.get("description")).or_else(|| text(item.get("displayName")));
        if kinds.iter().any(|k| k == "Telemetry" || k == "Property") {
            match dtdl_field(name, item.get("schema"), unit, description, &mut warnings) {
                Some(field) if field.data_type != DataType::Json => model.properties.push(field),
                Some(_) => warnings.push(format!(
                    "{name}: object, map and array schemas are not supported for telemetry; skipped"
                )),
                None => {}
            }
        } else if kinds.iter().any(|k| k == "Command") {
            let mut params = Vec::new();
            if let Some(request) = item.get("request").and_then(Value::as_object) {
                let pname = request
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("request");
                match request.get("schema") {
                    Some(Value::Object(schema)) if schema_type(schema) == Some("Object") => {
                        for f in schema
                            .get("fields")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            let fname = f.get("name").and_then(Value::as_str).unwrap_or("");
                            if let Some(field) =
                                dtdl_field(fname, f.get("schema"), None, None, &mut warnings)
                            {
                                params.push(field);
                            }
                        }
                    }
                    schema => {
                        if let Some(mut field) =
                            dtdl_field(pname, schema, None, None, &mut warnings)
                        {
                            field.required = true;
                            params.push(field);
                        }
                    }
                }
            }
            model.commands.push(CommandSpec {
                name: name.to_string(),
                description,
                params,
                allow_undeclared_params: false,
            });
        } else if kinds
            .iter()
            .any(|k| k == "Component" || k == "Relationship")
        {
            warnings.push(format!(
                "{name}: {} entries are not supported; skipped",
                kinds.join("/")
            ));
        } else {
            warnings.push(format!("{name}: unknown @type {kinds:?}; skipped"));
        }
    }
    model.validate()?;
    Ok(Imported { model, warnings })
}

fn dtdl_field(
    name: &str,
    schema: Option<&Value>,
    unit: Option<String>,
    description: Option<String>,
    warnings: &mut Vec<String>,
) -> Option<FieldSpec> {
    let (data_type, allowed) = match schema {
        Some(Value::String(s)) => match s.as_str() {
            "double" | "float" => (DataType::Double, None),
            "integer" | "long" => (DataType::Integer, None),
            "boolean" => (DataType::Boolean, None),
            "string" | "date" | "dateTime" | "time" | "duration" => (DataType::String, None),
            other => {
                warnings.push(format!(
                    "{name}: schema {other:?} is not supported; skipped"
                ));
                return None;
            }
        },
        Some(Value::Object(schema)) => match schema_type(schema) {
            Some("Enum") => {
                let values: Vec<String> = schema
                    .get("enumValues")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| match v.get("enumValue") {
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(other) => Some(other.to_string()),
                        None => None,
                    })
                    .collect();
                (DataType::String, (!values.is_empty()).then_some(values))
            }
            // Objects, maps and arrays: JSON (callers decide whether that is acceptable).
            Some(_) => (DataType::Json, None),
            None => {
                warnings.push(format!("{name}: schema without @type; skipped"));
                return None;
            }
        },
        _ => {
            warnings.push(format!("{name}: no schema; skipped"));
            return None;
        }
    };
    Some(FieldSpec {
        name: name.to_string(),
        data_type,
        unit,
        min: None,
        max: None,
        precision: None,
        allowed,
        required: false,
        description,
    })
}

/// Converts an Alibaba-style TSL document (`properties`, `events`, `services`, each with an
/// `identifier` and a `dataType`).
pub fn from_tsl(doc: &Value) -> Result<Imported> {
    let object = doc
        .as_object()
        .ok_or_else(|| Error::invalid("document", "a TSL document is a JSON object"))?;
    if !["properties", "events", "services"]
        .iter()
        .any(|k| object.contains_key(*k))
    {
        return Err(Error::invalid(
            "document",
            "not a TSL document (expected properties, events or services)",
        ));
    }
    let mut model = ThingModel::default();
    let mut warnings = Vec::new();
    for p in object
        .get("properties")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match tsl_field(p, &mut warnings) {
            Some(f) if f.data_type != DataType::Json => model.properties.push(f),
            Some(f) => warnings.push(format!(
                "{}: struct/array properties are not supported; skipped",
                f.name
            )),
            None => {}
        }
    }
    for e in object
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = e.get("identifier").and_then(Value::as_str).unwrap_or("");
        // Alibaba models property reports as an event named "post"; it is not a device event.
        if name == "post" {
            continue;
        }
        let fields = e
            .get("outputData")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| tsl_field(f, &mut warnings))
            .collect();
        model.events.push(EventSpec {
            name: name.to_string(),
            description: text(e.get("desc")).or_else(|| text(e.get("name"))),
            fields,
        });
    }
    for s in object
        .get("services")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s.get("identifier").and_then(Value::as_str).unwrap_or("");
        // Property get/set services are implicit in Alibaba's model; twins cover them here.
        if name == "set" || name == "get" {
            continue;
        }
        let params = s
            .get("inputData")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| tsl_field(f, &mut warnings))
            .map(|mut f| {
                f.required = true;
                f
            })
            .collect();
        model.commands.push(CommandSpec {
            name: name.to_string(),
            description: text(s.get("desc")).or_else(|| text(s.get("name"))),
            params,
            allow_undeclared_params: false,
        });
    }
    model.validate()?;
    Ok(Imported { model, warnings })
}

fn tsl_field(item: &Value, warnings: &mut Vec<String>) -> Option<FieldSpec> {
    let name = item
        .get("identifier")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let data = item.get("dataType").and_then(Value::as_object);
    let kind = data
        .and_then(|d| d.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let specs = data.and_then(|d| d.get("specs"));
    let number = |key: &str| -> Option<f64> {
        match specs?.get(key)? {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    };
    let (data_type, allowed) = match kind {
        "float" | "double" => (DataType::Double, None),
        "int" => (DataType::Integer, None),
        "bool" => (DataType::Boolean, None),
        "text" | "date" => (DataType::String, None),
        // TSL enums map integer codes to labels; devices send the code.
        "enum" => (DataType::Integer, None),
        "struct" | "array" => (DataType::Json, None),
        other => {
            warnings.push(format!(
                "{name}: dataType {other:?} is not supported; skipped"
            ));
            return None;
        }
    };
    let (min, max) = match data_type {
        DataType::Double | DataType::Integer if kind != "enum" => (number("min"), number("max")),
        DataType::String => (None, number("length")),
        _ => (None, None),
    };
    let unit = specs
        .and_then(|s| s.get("unit"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty() && u.chars().count() <= 32)
        .map(str::to_string);
    Some(FieldSpec {
        name,
        data_type,
        unit,
        min,
        max,
        precision: None,
        allowed,
        required: false,
        description: text(item.get("name")),
    })
}

fn type_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn schema_type(schema: &Map<String, Value>) -> Option<&str> {
    schema.get("@type").and_then(Value::as_str)
}

/// A plain string, or the `en` entry of a DTDL localized string.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map
            .get("en")
            .or_else(|| map.values().next())
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dtdl_thermostat_becomes_a_model() {
        // Shaped like Azure's public "Thermostat" sample interface (DTDL v2).
        let doc = json!({
            "@context": "dtmi:dtdl:context;2",
            "@id": "dtmi:com:example:Thermostat;1",
            "@type": "Interface",
            "displayName": "Thermostat",
            "contents": [
                {"@type": ["Telemetry", "Temperature"], "name": "temperature", "schema": "double", "unit": "degreeCelsius"},
                {"@type": ["Property", "Temperature"], "name": "targetTemperature", "schema": "double", "writable": true},
                {"@type": "Property", "name": "mode", "schema": {"@type": "Enum", "valueSchema": "string",
                    "enumValues": [{"name": "eco", "enumValue": "eco"}, {"name": "boost", "enumValue": "boost"}]}},
                {"@type": "Property", "name": "location", "schema": {"@type": "Object", "fields": []}},
                {"@type": "Command", "name": "getMaxMinReport",
                    "request": {"name": "since", "schema": "dateTime"}},
                {"@type": "Component", "name": "deviceInfo", "schema": "dtmi:azure:DeviceManagement:DeviceInformation;1"}
            ]
        });
        let imported = from_dtdl(&doc).unwrap();
        let m = &imported.model;
        assert_eq!(m.properties.len(), 3);
        assert_eq!(
            m.property("temperature").unwrap().unit.as_deref(),
            Some("°C")
        );
        assert_eq!(
            m.property("mode").unwrap().allowed.as_deref(),
            Some(&["eco".to_string(), "boost".to_string()][..])
        );
        assert_eq!(
            m.command("getMaxMinReport").unwrap().params[0].name,
            "since"
        );
        assert_eq!(imported.warnings.len(), 2, "{:?}", imported.warnings);
        assert!(from_dtdl(&json!({"@type": "Telemetry"})).is_err());
    }

    #[test]
    fn an_alibaba_tsl_becomes_a_model() {
        let doc = json!({
            "properties": [
                {"identifier": "PM25", "name": "PM2.5", "dataType": {"type": "float", "specs": {"min": "0", "max": "1000", "unit": "μg/m³"}}},
                {"identifier": "PowerSwitch", "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}},
                {"identifier": "Pos", "dataType": {"type": "struct", "specs": []}}
            ],
            "events": [
                {"identifier": "post", "outputData": []},
                {"identifier": "Error", "outputData": [{"identifier": "code", "dataType": {"type": "int", "specs": {"min": "0", "max": "255"}}}]}
            ],
            "services": [
                {"identifier": "set", "inputData": []},
                {"identifier": "Reboot", "inputData": [{"identifier": "delay", "dataType": {"type": "int", "specs": {"min": "0", "max": "60"}}}]}
            ]
        });
        let imported = from_tsl(&doc).unwrap();
        let m = &imported.model;
        let pm = m.property("PM25").unwrap();
        assert_eq!(
            (pm.min, pm.max, pm.unit.as_deref()),
            (Some(0.0), Some(1000.0), Some("μg/m³"))
        );
        assert_eq!(m.properties.len(), 2);
        assert_eq!(m.events.len(), 1);
        assert_eq!(m.commands[0].params[0].max, Some(60.0));
        assert!(imported.warnings[0].contains("Pos"));
        assert!(from_tsl(&json!({"foo": 1})).is_err());
    }
}
