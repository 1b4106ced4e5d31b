//! Stored rules: the rule language text and its actions (JSON), per tenant, with an enabled flag
//! and a version. The registry stores them as given; callers validate and compile them with
//! `wulian-rules` before saving, so a stored rule always compiled when it was saved.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::{Registry, now_ms, tenants, validate};

/// Rules per tenant.
pub const MAX_RULES: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRule {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub description: String,
    pub sql: String,
    /// The actions, as JSON (an array).
    pub actions: Value,
    pub enabled: bool,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A rule as created or replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRule {
    pub id: String,
    pub name: String,
    pub description: String,
    pub sql: String,
    pub actions: Value,
    pub enabled: bool,
}

const RULE_COLUMNS: &str =
    "id, tenant, name, description, sql, actions, enabled, version, created_at, updated_at";

fn read_rule(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredRule, String)> {
    Ok((
        StoredRule {
            id: r.get(0)?,
            tenant: r.get(1)?,
            name: r.get(2)?,
            description: r.get(3)?,
            sql: r.get(4)?,
            actions: Value::Null,
            enabled: r.get(6)?,
            version: r.get(7)?,
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
        },
        r.get(5)?,
    ))
}

fn finish((mut rule, actions): (StoredRule, String)) -> Result<StoredRule> {
    rule.actions = serde_json::from_str(&actions)?;
    Ok(rule)
}

fn check(new: &NewRule) -> Result<String> {
    validate::identifier("id", &new.id)?;
    validate::name("name", &new.name, 1)?;
    if new.description.chars().count() > 2000 {
        return Err(Error::invalid("description", "at most 2000 characters"));
    }
    if !new.actions.is_array() {
        return Err(Error::invalid("actions", "must be an array"));
    }
    Ok(serde_json::to_string(&new.actions)?)
}

impl Registry {
    pub fn create_rule(&self, tenant: &str, new: &NewRule) -> Result<StoredRule> {
        let actions = check(new)?;
        let now = now_ms();
        self.write(|tx| {
            tenants::require_tenant(tx, tenant)?;
            let count: i64 = tx.query_row(
                "SELECT count(*) FROM rules WHERE tenant = ?1",
                [tenant],
                |r| r.get(0),
            )?;
            if count >= MAX_RULES {
                return Err(Error::Conflict(format!(
                    "a tenant has at most {MAX_RULES} rules"
                )));
            }
            let inserted = tx.execute(
                "INSERT INTO rules (tenant, id, name, description, sql, actions, enabled, version,
                                    created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8) ON CONFLICT DO NOTHING",
                params![
                    tenant,
                    new.id,
                    new.name,
                    new.description,
                    new.sql,
                    actions,
                    new.enabled,
                    now
                ],
            )?;
            if inserted == 0 {
                return Err(Error::already_exists("rule", &new.id));
            }
            load_rule(tx, tenant, &new.id)
        })
    }

    /// Replaces a rule; with `expected_version`, only if it is still that version.
    pub fn replace_rule(
        &self,
        tenant: &str,
        id: &str,
        new: &NewRule,
        expected_version: Option<i64>,
    ) -> Result<StoredRule> {
        if new.id != id {
            return Err(Error::invalid("id", "must equal the rule id of the path"));
        }
        let actions = check(new)?;
        let now = now_ms();
        self.write(|tx| {
            let version = current_version(tx, tenant, id)?;
            if let Some(expected) = expected_version
                && expected != version
            {
                return Err(Error::VersionMismatch {
                    expected,
                    current: version,
                });
            }
            tx.execute(
                "UPDATE rules SET name = ?1, description = ?2, sql = ?3, actions = ?4, enabled = ?5,
                        version = version + 1, updated_at = ?6 WHERE tenant = ?7 AND id = ?8",
                params![new.name, new.description, new.sql, actions, new.enabled, now, tenant, id],
            )?;
            load_rule(tx, tenant, id)
        })
    }

    pub fn set_rule_enabled(&self, tenant: &str, id: &str, enabled: bool) -> Result<StoredRule> {
        let now = now_ms();
        self.write(|tx| {
            current_version(tx, tenant, id)?;
            tx.execute(
                "UPDATE rules SET enabled = ?1, version = version + 1, updated_at = ?2
                 WHERE tenant = ?3 AND id = ?4",
                params![enabled, now, tenant, id],
            )?;
            load_rule(tx, tenant, id)
        })
    }

    pub fn delete_rule(&self, tenant: &str, id: &str) -> Result<()> {
        let deleted = self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM rules WHERE tenant = ?1 AND id = ?2",
                [tenant, id],
            )?)
        })?;
        if deleted == 0 {
            return Err(Error::not_found("rule", id));
        }
        Ok(())
    }

    pub fn get_rule(&self, tenant: &str, id: &str) -> Result<StoredRule> {
        let conn = self.conn();
        load_rule(&conn, tenant, id)
    }

    pub fn list_rules(&self, tenant: &str) -> Result<Vec<StoredRule>> {
        let rows = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RULE_COLUMNS} FROM rules WHERE tenant = ?1 ORDER BY id"
            ))?;
            stmt.query_map([tenant], read_rule)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        rows.into_iter().map(finish).collect()
    }

    /// Every enabled rule of every tenant (loaded into the engine at start).
    pub fn enabled_rules(&self) -> Result<Vec<StoredRule>> {
        let rows = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RULE_COLUMNS} FROM rules WHERE enabled = 1 ORDER BY tenant, id"
            ))?;
            stmt.query_map([], read_rule)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        rows.into_iter().map(finish).collect()
    }
}

fn current_version(conn: &Connection, tenant: &str, id: &str) -> Result<i64> {
    conn.query_row(
        "SELECT version FROM rules WHERE tenant = ?1 AND id = ?2",
        [tenant, id],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| Error::not_found("rule", id))
}

fn load_rule(conn: &Connection, tenant: &str, id: &str) -> Result<StoredRule> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {RULE_COLUMNS} FROM rules WHERE tenant = ?1 AND id = ?2"
        ))?
        .query_row([tenant, id], read_rule)
        .optional()?
        .ok_or_else(|| Error::not_found("rule", id))?;
    finish(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::registry_with_tenant;
    use serde_json::json;

    #[test]
    fn rules_round_trip() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let t = tenant.id;
        let new = NewRule {
            id: "hot".into(),
            name: "Hot".into(),
            description: String::new(),
            sql: "SELECT temp FROM 'devices/+/telemetry' WHERE temp > 50".into(),
            actions: json!([{"alarm": {"type": "hot", "severity": "major"}}]),
            enabled: true,
        };
        let r = reg.create_rule(&t, &new).unwrap();
        assert_eq!((r.version, r.enabled), (1, true));
        assert!(matches!(
            reg.create_rule(&t, &new),
            Err(Error::AlreadyExists { .. })
        ));
        let off = reg.set_rule_enabled(&t, "hot", false).unwrap();
        assert_eq!((off.version, off.enabled), (2, false));
        assert!(reg.enabled_rules().unwrap().is_empty());
        assert!(matches!(
            reg.replace_rule(&t, "hot", &new, Some(1)),
            Err(Error::VersionMismatch { .. })
        ));
        let on = reg.replace_rule(&t, "hot", &new, Some(2)).unwrap();
        assert_eq!(on.version, 3);
        assert_eq!(reg.enabled_rules().unwrap().len(), 1);
        assert_eq!(reg.list_rules(&t).unwrap().len(), 1);
        assert!(reg.get_rule("other", "hot").is_err());
        reg.delete_rule(&t, "hot").unwrap();
        assert!(reg.delete_rule(&t, "hot").is_err());
    }
}
