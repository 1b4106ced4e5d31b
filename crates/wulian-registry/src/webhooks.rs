//! Webhook bookkeeping: deliveries that failed every retry (the dead-letter list, which
//! operators inspect and replay) and the URLs that receive a tenant's alarm notifications.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{Registry, now_ms, secret, validate};

/// Dead letters kept per tenant; the oldest go first.
pub const MAX_DEAD_LETTERS: i64 = 10_000;
/// Alarm webhooks per tenant.
pub const MAX_ALARM_WEBHOOKS: i64 = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    /// What sent it: `rule:<id>`, `alarms`.
    pub source: String,
    pub url: String,
    pub method: String,
    /// Header name/value pairs.
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    pub body: Vec<u8>,
    /// The body as text (lossy), for reading.
    pub body_text: String,
    pub attempts: u32,
    pub last_error: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmWebhook {
    pub id: String,
    pub url: String,
    pub created_at: i64,
}

/// A URL a webhook may call: http or https, at most 2,048 characters.
pub fn check_webhook_url(url: &str) -> Result<()> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && !url.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "url",
            "an http:// or https:// URL of at most 2048 characters",
        ))
    }
}

impl Registry {
    #[allow(clippy::too_many_arguments)]
    pub fn add_dead_letter(
        &self,
        tenant: &str,
        source: &str,
        url: &str,
        method: &str,
        headers: &[(String, String)],
        body: &[u8],
        attempts: u32,
        last_error: &str,
    ) -> Result<String> {
        let id = format!("dl-{}", secret::random_hex(8)?);
        let now = now_ms();
        let headers = serde_json::to_string(headers)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO webhook_dead_letters (id, tenant, source, url, method, headers, body,
                        attempts, last_error, created_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
                 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?2)",
                params![
                    id, tenant, source, url, method, headers, body, attempts, last_error, now
                ],
            )?;
            // Bounded: drop the oldest beyond the cap.
            tx.execute(
                "DELETE FROM webhook_dead_letters WHERE tenant = ?1 AND id NOT IN (
                     SELECT id FROM webhook_dead_letters WHERE tenant = ?1
                     ORDER BY created_at DESC LIMIT ?2)",
                params![tenant, MAX_DEAD_LETTERS],
            )?;
            Ok(())
        })?;
        Ok(id)
    }

    pub fn list_dead_letters(&self, tenant: &str, limit: u32) -> Result<Vec<DeadLetter>> {
        validate::limit(limit)?;
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, source, url, method, headers, body, attempts, last_error, created_at
             FROM webhook_dead_letters WHERE tenant = ?1 ORDER BY created_at DESC, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![tenant, limit], read_dead_letter)?;
        let rows: Vec<(DeadLetter, String)> = rows.collect::<rusqlite::Result<_>>()?;
        rows.into_iter().map(finish_dead_letter).collect()
    }

    /// Removes and returns a dead letter (to replay it, or to drop it).
    pub fn take_dead_letter(&self, tenant: &str, id: &str) -> Result<DeadLetter> {
        self.write(|tx| {
            let row = tx
                .query_row(
                    "SELECT id, source, url, method, headers, body, attempts, last_error, created_at
                     FROM webhook_dead_letters WHERE tenant = ?1 AND id = ?2",
                    [tenant, id],
                    read_dead_letter,
                )
                .optional()?
                .ok_or_else(|| Error::not_found("dead letter", id))?;
            tx.execute(
                "DELETE FROM webhook_dead_letters WHERE tenant = ?1 AND id = ?2",
                [tenant, id],
            )?;
            finish_dead_letter(row)
        })
    }

    pub fn add_alarm_webhook(&self, tenant: &str, url: &str) -> Result<AlarmWebhook> {
        check_webhook_url(url)?;
        let id = format!("wh-{}", secret::random_hex(6)?);
        let now = now_ms();
        self.write(|tx| {
            crate::tenants::require_tenant(tx, tenant)?;
            let count: i64 = tx.query_row(
                "SELECT count(*) FROM alarm_webhooks WHERE tenant = ?1",
                [tenant],
                |r| r.get(0),
            )?;
            if count >= MAX_ALARM_WEBHOOKS {
                return Err(Error::Conflict(format!(
                    "a tenant has at most {MAX_ALARM_WEBHOOKS} alarm webhooks"
                )));
            }
            tx.execute(
                "INSERT INTO alarm_webhooks (tenant, id, url, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![tenant, id, url, now],
            )?;
            Ok(())
        })?;
        Ok(AlarmWebhook {
            id,
            url: url.to_string(),
            created_at: now,
        })
    }

    pub fn list_alarm_webhooks(&self, tenant: &str) -> Result<Vec<AlarmWebhook>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, url, created_at FROM alarm_webhooks WHERE tenant = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok(AlarmWebhook {
                id: r.get(0)?,
                url: r.get(1)?,
                created_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn delete_alarm_webhook(&self, tenant: &str, id: &str) -> Result<()> {
        let deleted = self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM alarm_webhooks WHERE tenant = ?1 AND id = ?2",
                [tenant, id],
            )?)
        })?;
        if deleted == 0 {
            return Err(Error::not_found("webhook", id));
        }
        Ok(())
    }
}

fn read_dead_letter(r: &rusqlite::Row<'_>) -> rusqlite::Result<(DeadLetter, String)> {
    let body: Vec<u8> = r.get(5)?;
    Ok((
        DeadLetter {
            id: r.get(0)?,
            source: r.get(1)?,
            url: r.get(2)?,
            method: r.get(3)?,
            headers: Vec::new(),
            body_text: String::from_utf8_lossy(&body).into_owned(),
            body,
            attempts: r.get(6)?,
            last_error: r.get(7)?,
            created_at: r.get(8)?,
        },
        r.get(4)?,
    ))
}

fn finish_dead_letter((mut letter, headers): (DeadLetter, String)) -> Result<DeadLetter> {
    letter.headers = serde_json::from_str(&headers)?;
    Ok(letter)
}

#[cfg(test)]
mod tests {
    use crate::test_support::registry_with_tenant;

    #[test]
    fn dead_letters_and_alarm_webhooks() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let t = tenant.id;
        let headers = vec![("x-token".to_string(), "abc".to_string())];
        let id = reg
            .add_dead_letter(
                &t,
                "rule:r1",
                "http://x/",
                "POST",
                &headers,
                b"{}",
                5,
                "timed out",
            )
            .unwrap();
        let list = reg.list_dead_letters(&t, 10).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].headers.clone(), list[0].body_text.as_str()),
            (headers, "{}")
        );
        let taken = reg.take_dead_letter(&t, &id).unwrap();
        assert_eq!(taken.body, b"{}");
        assert!(reg.take_dead_letter(&t, &id).is_err());
        assert!(reg.add_alarm_webhook(&t, "ftp://x").is_err());
        let hook = reg
            .add_alarm_webhook(&t, "https://example.invalid/hook")
            .unwrap();
        assert_eq!(reg.list_alarm_webhooks(&t).unwrap(), vec![hook.clone()]);
        reg.delete_alarm_webhook(&t, &hook.id).unwrap();
        assert!(reg.list_alarm_webhooks(&t).unwrap().is_empty());
    }
}
