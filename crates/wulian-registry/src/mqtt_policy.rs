//! MQTT topic policies of API keys: which topics an application connecting over MQTT with the
//! key may publish to and subscribe to.
//!
//! Stored as JSON on the key (`api_keys.mqtt_policy`); a key without one gets the default of
//! its scope ([`MqttPolicy::default_for`]), so existing keys keep sensible rights. Filters may
//! use the variables `${tenant}` and `${key_id}`, replaced when the application connects, so
//! one policy text can be reused across keys. The broker enforces deny before allow.

use serde::{Deserialize, Serialize};

use crate::Scope;
use crate::error::{Error, Result};

/// At most this many filters per allow or deny list.
pub const MAX_POLICY_RULES: usize = 64;
/// Longest filter accepted in a policy.
const MAX_FILTER_LEN: usize = 512;
/// The variables a key's policy may use.
pub const KEY_POLICY_VARIABLES: &[&str] = &["tenant", "key_id"];

/// Allow and deny filters for one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRules {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// An API key's MQTT rights: `{"publish": {"allow": [...], "deny": [...]}, "subscribe": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttPolicy {
    #[serde(default)]
    pub publish: TopicRules,
    #[serde(default)]
    pub subscribe: TopicRules,
}

impl MqttPolicy {
    /// The policy of a key created without one: every scope may read telemetry, events, twin
    /// changes, presence and alarms; keys that may write may also send commands to devices and
    /// read their answers.
    pub fn default_for(scope: Scope) -> MqttPolicy {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        let mut policy = MqttPolicy {
            publish: TopicRules::default(),
            subscribe: TopicRules {
                allow: strings(&[
                    "devices/+/telemetry",
                    "devices/+/events/#",
                    "devices/+/twin/updated",
                    "devices/+/presence",
                    "alarms/#",
                ]),
                deny: Vec::new(),
            },
        };
        if scope.can_write() {
            policy.publish.allow = strings(&["devices/+/commands/#"]);
            policy
                .subscribe
                .allow
                .push("devices/+/commands/+/response".to_string());
        }
        policy
    }

    /// Checks every filter: a valid MQTT topic filter once variables are replaced, only known
    /// variables, bounded counts and lengths.
    pub fn validate(&self, variables: &[&str]) -> Result<()> {
        let lists = [
            ("mqtt_policy.publish.allow", &self.publish.allow),
            ("mqtt_policy.publish.deny", &self.publish.deny),
            ("mqtt_policy.subscribe.allow", &self.subscribe.allow),
            ("mqtt_policy.subscribe.deny", &self.subscribe.deny),
        ];
        for (field, list) in lists {
            if list.len() > MAX_POLICY_RULES {
                return Err(Error::invalid(
                    field,
                    format!("at most {MAX_POLICY_RULES} filters"),
                ));
            }
            for filter in list {
                check_filter(field, filter, variables)?;
            }
        }
        Ok(())
    }
}

fn check_filter(field: &'static str, filter: &str, variables: &[&str]) -> Result<()> {
    if filter.len() > MAX_FILTER_LEN {
        return Err(Error::invalid(
            field,
            format!("filters are at most {MAX_FILTER_LEN} bytes"),
        ));
    }
    let mut rest = filter;
    let mut substituted = String::with_capacity(filter.len());
    while let Some(start) = rest.find("${") {
        substituted.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            return Err(Error::invalid(
                field,
                format!("unclosed variable in {filter:?}"),
            ));
        };
        let name = &rest[start + 2..start + len];
        if !variables.contains(&name) {
            return Err(Error::invalid(
                field,
                format!(
                    "unknown variable ${{{name}}} in {filter:?}; known: {}",
                    variables.join(", ")
                ),
            ));
        }
        substituted.push('x');
        rest = &rest[start + len + 1..];
    }
    substituted.push_str(rest);
    if filter.starts_with("$share/") || !wulian_mqtt::topic::is_valid_topic_filter(&substituted) {
        return Err(Error::invalid(
            field,
            format!("{filter:?} is not a valid MQTT topic filter"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_by_scope() {
        let read = MqttPolicy::default_for(Scope::ReadOnly);
        assert!(read.publish.allow.is_empty());
        assert_eq!(read.subscribe.allow.len(), 5);
        let write = MqttPolicy::default_for(Scope::ReadWrite);
        assert_eq!(write.publish.allow, vec!["devices/+/commands/#"]);
        read.validate(KEY_POLICY_VARIABLES).unwrap();
        write.validate(KEY_POLICY_VARIABLES).unwrap();
    }

    #[test]
    fn validation() {
        let policy = |filter: &str| MqttPolicy {
            subscribe: TopicRules {
                allow: vec![filter.to_string()],
                deny: vec![],
            },
            ..MqttPolicy::default()
        };
        policy("apps/${key_id}/#")
            .validate(KEY_POLICY_VARIABLES)
            .unwrap();
        policy("t/${tenant}/+")
            .validate(KEY_POLICY_VARIABLES)
            .unwrap();
        assert!(policy("a/#/b").validate(KEY_POLICY_VARIABLES).is_err());
        assert!(
            policy("a/${device_id}")
                .validate(KEY_POLICY_VARIABLES)
                .is_err()
        );
        assert!(policy("a/${tenant").validate(KEY_POLICY_VARIABLES).is_err());
        assert!(policy("$share/g/a").validate(KEY_POLICY_VARIABLES).is_err());
        assert!(policy("").validate(KEY_POLICY_VARIABLES).is_err());
    }
}
