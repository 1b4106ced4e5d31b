//! The action model: what a rule does when it matches, as JSON data the host stores with the
//! rule, and the resolved [`ActionInvocation`] the engine hands to the host's executor.
//!
//! ```json
//! [
//!   {"action": "alarm", "type": "overheat", "severity": "major", "clear_when_false": true},
//!   {"action": "republish", "topic": "alerts/${device_id}", "qos": 1},
//!   {"action": "command", "name": "fan", "params": {"speed": "${speed}"}},
//!   {"action": "write_telemetry", "keys": ["temp_avg_5m"]},
//!   {"action": "webhook", "url": "https://example.com/hook", "headers": {"X-Device": "${device_id}"}}
//! ]
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::template::{JsonTemplate, RenderCtx, Template};

/// Alarm severities, highest first (the ThingsBoard/X.733 scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Major,
    Minor,
    Warning,
    Indeterminate,
}

impl Severity {
    /// The lowercase name, as in JSON (`"major"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
            Severity::Indeterminate => "indeterminate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Post,
    Put,
}

impl HttpMethod {
    /// The method name (`"POST"`).
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
        }
    }
}

/// One action of a rule, as stored and sent over the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Raise an alarm of `type` on the device each time the rule matches (the host
    /// de-duplicates: one active alarm per device and type). With `clear_when_false`, the
    /// first message for which the condition is false after a match (or after a restart)
    /// emits a clear.
    Alarm {
        #[serde(rename = "type")]
        alarm_type: String,
        severity: Severity,
        #[serde(default)]
        clear_when_false: bool,
    },
    /// Publish to an MQTT topic of the same tenant. `payload` is a template; without it the
    /// selected output is published as JSON.
    Republish {
        topic: String,
        #[serde(default)]
        qos: u8,
        #[serde(default)]
        retain: bool,
        #[serde(default)]
        payload: Option<String>,
    },
    /// Send a command to a device (the message's device unless `device` says otherwise).
    /// `params` is JSON whose strings are templates; without it the selected output is sent.
    Command {
        name: String,
        #[serde(default)]
        device: Option<String>,
        #[serde(default)]
        params: Option<Value>,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Store selected fields as telemetry of the device at the message's timestamp (all the
    /// selected fields, or only `keys`). Null values are skipped.
    WriteTelemetry {
        #[serde(default)]
        keys: Option<Vec<String>>,
    },
    /// Call an HTTP endpoint. `url`, header values and `body` are templates; without `body`
    /// the selected output is sent as JSON.
    Webhook {
        url: String,
        #[serde(default)]
        method: HttpMethod,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: Option<String>,
    },
}

/// An action with its templates parsed.
#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    Alarm {
        alarm_type: String,
        severity: Severity,
        clear_when_false: bool,
    },
    Republish {
        topic: Template,
        qos: u8,
        retain: bool,
        payload: Option<Template>,
    },
    Command {
        name: Template,
        device: Option<Template>,
        params: Option<JsonTemplate>,
        timeout_ms: Option<u64>,
    },
    WriteTelemetry {
        keys: Option<Vec<String>>,
    },
    Webhook {
        url: Template,
        method: HttpMethod,
        headers: Vec<(String, Template)>,
        body: Option<Template>,
    },
}

const MAX_NAME_LEN: usize = 128;

impl Compiled {
    /// Checks an action when the rule is saved. `selected` is the output names of the
    /// SELECT list, or `None` when it has `*` (then any name may exist).
    pub(crate) fn compile(
        action: &Action,
        selected: Option<&[String]>,
    ) -> Result<Compiled, String> {
        let tpl = |what: &str, s: &str| Template::parse(s).map_err(|e| format!("{what}: {e}"));
        Ok(match action {
            Action::Alarm {
                alarm_type,
                severity,
                clear_when_false,
            } => {
                if alarm_type.trim().is_empty() || alarm_type.len() > MAX_NAME_LEN {
                    return Err(format!("alarm type must be 1 to {MAX_NAME_LEN} characters"));
                }
                Compiled::Alarm {
                    alarm_type: alarm_type.clone(),
                    severity: *severity,
                    clear_when_false: *clear_when_false,
                }
            }
            Action::Republish {
                topic,
                qos,
                retain,
                payload,
            } => {
                if *qos > 2 {
                    return Err(format!("qos must be 0, 1 or 2, found {qos}"));
                }
                let topic = tpl("topic", topic)?;
                if topic.literals().any(|t| t.contains(['+', '#', '\0'])) {
                    return Err("republish topic must not contain wildcards".into());
                }
                if topic.literal_prefix().starts_with('$') {
                    return Err("republish topic must not start with '$'".into());
                }
                Compiled::Republish {
                    topic,
                    qos: *qos,
                    retain: *retain,
                    payload: payload.as_deref().map(|p| tpl("payload", p)).transpose()?,
                }
            }
            Action::Command {
                name,
                device,
                params,
                timeout_ms,
            } => {
                let name_t = tpl("command name", name)?;
                if name.is_empty()
                    || name.len() > MAX_NAME_LEN
                    || name_t.literals().any(|t| t.contains(['/', '+', '#']))
                {
                    return Err(format!(
                        "command name must be 1 to {MAX_NAME_LEN} characters without '/', '+' or '#'"
                    ));
                }
                Compiled::Command {
                    name: name_t,
                    device: device.as_deref().map(|d| tpl("device", d)).transpose()?,
                    params: params.as_ref().map(JsonTemplate::parse).transpose()?,
                    timeout_ms: *timeout_ms,
                }
            }
            Action::WriteTelemetry { keys } => {
                if let (Some(keys), Some(selected)) = (keys, selected)
                    && let Some(k) = keys.iter().find(|k| !selected.contains(k))
                {
                    return Err(format!(
                        "write_telemetry key {k:?} is not selected (selected: {})",
                        selected.join(", ")
                    ));
                }
                Compiled::WriteTelemetry { keys: keys.clone() }
            }
            Action::Webhook {
                url,
                method,
                headers,
                body,
            } => {
                let url_t = tpl("url", url)?;
                let prefix = url_t.literal_prefix().to_ascii_lowercase();
                if !(prefix.starts_with("http://") || prefix.starts_with("https://")) {
                    return Err("webhook url must start with http:// or https://".into());
                }
                let mut hs = Vec::with_capacity(headers.len());
                for (k, v) in headers {
                    if k.is_empty()
                        || !k
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                    {
                        return Err(format!("invalid header name {k:?}"));
                    }
                    hs.push((k.clone(), tpl("header", v)?));
                }
                Compiled::Webhook {
                    url: url_t,
                    method: *method,
                    headers: hs,
                    body: body.as_deref().map(|b| tpl("body", b)).transpose()?,
                }
            }
        })
    }

    pub(crate) fn clears_when_false(&self) -> Option<&str> {
        match self {
            Compiled::Alarm {
                alarm_type,
                clear_when_false: true,
                ..
            } => Some(alarm_type),
            _ => None,
        }
    }

    /// The action for a message that matched.
    pub(crate) fn resolve(&self, ctx: &RenderCtx<'_>) -> Result<ResolvedAction, String> {
        let output_json = || Value::Object(ctx.output.clone());
        Ok(match self {
            Compiled::Alarm {
                alarm_type,
                severity,
                ..
            } => ResolvedAction::RaiseAlarm {
                alarm_type: alarm_type.clone(),
                severity: *severity,
                details: output_json(),
            },
            Compiled::Republish {
                topic,
                qos,
                retain,
                payload,
            } => {
                let topic = topic.render(ctx)?;
                if topic.is_empty()
                    || topic.len() > 65_535
                    || topic.contains(['+', '#', '\0'])
                    || topic.starts_with('$')
                {
                    return Err(format!(
                        "rendered topic {topic:?} is not a valid topic name"
                    ));
                }
                let payload = match payload {
                    Some(t) => t.render(ctx)?,
                    None => output_json().to_string(),
                };
                ResolvedAction::Republish {
                    topic,
                    payload,
                    qos: *qos,
                    retain: *retain,
                }
            }
            Compiled::Command {
                name,
                device,
                params,
                timeout_ms,
            } => {
                let name = name.render(ctx)?;
                if name.is_empty() || name.contains(['/', '+', '#']) {
                    return Err(format!("rendered command name {name:?} is not valid"));
                }
                let device_id = match device {
                    Some(t) => t.render(ctx)?,
                    None => ctx.msg.device_id.clone(),
                };
                if device_id.is_empty() || device_id.contains(['/', '+', '#']) {
                    return Err(format!("rendered device id {device_id:?} is not valid"));
                }
                ResolvedAction::Command {
                    device_id,
                    name,
                    params: match params {
                        Some(p) => p.render(ctx)?,
                        None => output_json(),
                    },
                    timeout_ms: *timeout_ms,
                }
            }
            Compiled::WriteTelemetry { keys } => {
                let mut values = Map::new();
                for (k, v) in ctx.output {
                    let wanted = keys.as_ref().is_none_or(|keys| keys.contains(k));
                    if wanted && !v.is_null() {
                        values.insert(k.clone(), v.clone());
                    }
                }
                if values.is_empty() {
                    return Err("write_telemetry: no non-null value to write".into());
                }
                ResolvedAction::WriteTelemetry {
                    device_id: ctx.msg.device_id.clone(),
                    timestamp_ms: ctx.msg.timestamp_ms,
                    values,
                }
            }
            Compiled::Webhook {
                url,
                method,
                headers,
                body,
            } => ResolvedAction::Webhook {
                url: url.render(ctx)?,
                method: *method,
                headers: headers
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(ctx)?)))
                    .collect::<Result<_, String>>()?,
                body: match body {
                    Some(t) => t.render(ctx)?,
                    None => output_json().to_string(),
                },
            },
        })
    }
}

/// A side effect for the host to carry out, fully rendered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ResolvedAction {
    RaiseAlarm {
        #[serde(rename = "type")]
        alarm_type: String,
        severity: Severity,
        /// The rule's selected output, for the alarm's details.
        details: Value,
    },
    ClearAlarm {
        #[serde(rename = "type")]
        alarm_type: String,
    },
    Republish {
        topic: String,
        payload: String,
        qos: u8,
        retain: bool,
    },
    Command {
        device_id: String,
        name: String,
        params: Value,
        timeout_ms: Option<u64>,
    },
    WriteTelemetry {
        device_id: String,
        timestamp_ms: i64,
        values: Map<String, Value>,
    },
    Webhook {
        url: String,
        method: HttpMethod,
        headers: Vec<(String, String)>,
        body: String,
    },
}

/// One action to execute, with where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct ActionInvocation {
    pub tenant: String,
    pub rule_id: String,
    /// Index of the action in the rule's action list.
    pub action_index: usize,
    /// The device whose message triggered the rule.
    pub device_id: String,
    /// The triggering message's timestamp (ms).
    pub timestamp_ms: i64,
    pub action: ResolvedAction,
    /// When the engine queued it, for rule-to-action latency.
    #[serde(skip)]
    pub enqueued_at: Instant,
}
