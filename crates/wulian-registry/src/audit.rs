//! The audit log: who did what to which record, and how it ended — for actions whose trace
//! matters after the fact (claim provisioning, credential changes). Rows are per tenant and go
//! with the tenant.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::{Registry, now_ms, validate};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    /// `api_key:<id>`, `device:<id>`, `provisioning:<remote address>` …
    pub actor: String,
    /// e.g. `device.claim`.
    pub action: String,
    /// What was acted on, e.g. `profile/serial`.
    pub target: String,
    /// `ok`, or the refusal's code.
    pub outcome: String,
    pub detail: String,
}

/// An entry to record (id and time are assigned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: &'a str,
    pub detail: &'a str,
}

impl Registry {
    pub fn record_audit(&self, tenant: &str, entry: &NewAuditEntry<'_>) -> Result<()> {
        let now = now_ms();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO audit_log (tenant, at, actor, action, target, outcome, detail)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?1)",
                params![
                    tenant,
                    now,
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.outcome,
                    entry.detail
                ],
            )?;
            Ok(())
        })
    }

    /// The tenant's audit entries, newest first; `before` (an entry id) pages back.
    pub fn list_audit(
        &self,
        tenant: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AuditEntry>> {
        validate::limit(limit)?;
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, action, target, outcome, detail FROM audit_log
             WHERE tenant = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![tenant, before.unwrap_or(i64::MAX), limit], |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                outcome: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Entries of `action` on `target` since `since` (ms): rate limits that survive restarts.
    pub fn count_audit_since(
        &self,
        tenant: &str,
        action: &str,
        target_prefix: &str,
        since: i64,
    ) -> Result<u64> {
        let conn = self.conn();
        let count: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM audit_log
                 WHERE tenant = ?1 AND action = ?2 AND target >= ?3 AND target < ?3 || x'ff'
                   AND at >= ?4",
            )?
            .query_row(params![tenant, action, target_prefix, since], |r| r.get(0))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
