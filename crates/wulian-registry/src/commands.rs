//! The command record: what was asked of a device, and what became of it. The ingest layer
//! drives the life cycle (pending → sent → succeeded / failed / timed_out, or undelivered); the
//! registry stores each step so status stays queryable after the waiter is gone, and refuses to
//! overwrite a final status.
//!
//! Commands are keyed by `(tenant, device_id)` with a foreign key to the device, so a command
//! can only exist for a device of its own tenant and disappears with the device.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::{Registry, validate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Stored, not yet published.
    Pending,
    /// Published; awaiting the device's answer.
    Sent,
    Succeeded,
    Failed,
    /// No answer within the timeout (or the platform restarted while waiting).
    TimedOut,
    /// The device was not subscribed to receive it.
    Undelivered,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Sent => "sent",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::TimedOut => "timed_out",
            CommandStatus::Undelivered => "undelivered",
        }
    }

    /// Whether the command's life is over (no further status change will be stored).
    pub fn is_final(self) -> bool {
        !matches!(self, CommandStatus::Pending | CommandStatus::Sent)
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CommandStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<CommandStatus> {
        Ok(match s {
            "pending" => CommandStatus::Pending,
            "sent" => CommandStatus::Sent,
            "succeeded" => CommandStatus::Succeeded,
            "failed" => CommandStatus::Failed,
            "timed_out" => CommandStatus::TimedOut,
            "undelivered" => CommandStatus::Undelivered,
            _ => {
                return Err(Error::invalid(
                    "status",
                    "must be pending, sent, succeeded, failed, timed_out or undelivered",
                ));
            }
        })
    }
}

impl FromSql for CommandStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<CommandStatus> {
        value
            .as_str()?
            .parse()
            .map_err(|e: Error| FromSqlError::Other(Box::new(e)))
    }
}

impl ToSql for CommandStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// `c-` + 16 hex; see [`crate::new_command_id`].
    pub id: String,
    pub tenant: String,
    pub device_id: String,
    pub name: String,
    pub params: Value,
    pub status: CommandStatus,
    /// The device's answer, once it answered.
    pub response: Option<Value>,
    pub timeout_ms: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COMMAND_COLUMNS: &str =
    "id, tenant, device_id, name, params, status, response, timeout_ms, created_at, updated_at";

struct CommandRow {
    id: String,
    tenant: String,
    device_id: String,
    name: String,
    params: String,
    status: CommandStatus,
    response: Option<String>,
    timeout_ms: i64,
    created_at: i64,
    updated_at: i64,
}

impl CommandRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<CommandRow> {
        Ok(CommandRow {
            id: row.get(0)?,
            tenant: row.get(1)?,
            device_id: row.get(2)?,
            name: row.get(3)?,
            params: row.get(4)?,
            status: row.get(5)?,
            response: row.get(6)?,
            timeout_ms: row.get(7)?,
            created_at: row.get(8)?,
            updated_at: row.get(9)?,
        })
    }

    fn into_command(self) -> Result<Command> {
        Ok(Command {
            id: self.id,
            tenant: self.tenant,
            device_id: self.device_id,
            name: self.name,
            params: serde_json::from_str(&self.params)?,
            status: self.status,
            response: self
                .response
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            timeout_ms: u64::try_from(self.timeout_ms).unwrap_or(0),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl Registry {
    /// Stores a new command. `NotFound` (device) unless the device exists in `cmd.tenant`;
    /// `AlreadyExists` for a reused id.
    pub fn insert_command(&self, cmd: &Command) -> Result<()> {
        if cmd.id.is_empty() || cmd.id.len() > 128 {
            return Err(Error::invalid("id", "must be 1 to 128 characters"));
        }
        validate::command_name(&cmd.name)?;
        let params_json = serde_json::to_string(&cmd.params)?;
        if params_json.len() > validate::MAX_COMMAND_PARAMS_BYTES {
            return Err(Error::invalid(
                "params",
                format!(
                    "must be at most {} bytes serialized",
                    validate::MAX_COMMAND_PARAMS_BYTES
                ),
            ));
        }
        let response_json = cmd
            .response
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let timeout_ms = i64::try_from(cmd.timeout_ms)
            .map_err(|_| Error::invalid("timeout_ms", "is too large"))?;
        self.write(|tx| {
            let device: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM devices WHERE tenant = ?1 AND id = ?2")?
                .query_row([&cmd.tenant, &cmd.device_id], |r| r.get(0))
                .optional()?;
            if device.is_none() {
                return Err(Error::not_found("device", &cmd.device_id));
            }
            let inserted = tx
                .prepare_cached(&format!(
                    "INSERT INTO commands ({COMMAND_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING"
                ))?
                .execute(params![
                    cmd.id,
                    cmd.tenant,
                    cmd.device_id,
                    cmd.name,
                    params_json,
                    cmd.status,
                    response_json,
                    timeout_ms,
                    cmd.created_at,
                    cmd.updated_at
                ])?;
            if inserted == 0 {
                return Err(Error::already_exists("command", &cmd.id));
            }
            Ok(())
        })
    }

    /// Moves a command of `tenant` to `status`, storing `response` when given (`None` keeps
    /// any earlier one). A command whose status is already final is not changed: `Conflict`.
    pub fn update_command(
        &self,
        tenant: &str,
        id: &str,
        status: CommandStatus,
        response: Option<&Value>,
        updated_at: i64,
    ) -> Result<Command> {
        let response_json = response.map(serde_json::to_string).transpose()?;
        self.write(|tx| {
            let current: CommandStatus = tx
                .prepare_cached("SELECT status FROM commands WHERE tenant = ?1 AND id = ?2")?
                .query_row([tenant, id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::not_found("command", id))?;
            if current.is_final() {
                return Err(Error::Conflict(format!(
                    "command {id:?} already finished as {current}"
                )));
            }
            tx.prepare_cached(
                "UPDATE commands SET status = ?1, response = coalesce(?2, response), updated_at = ?3
                 WHERE tenant = ?4 AND id = ?5",
            )?
            .execute(params![status, response_json, updated_at, tenant, id])?;
            load_command(tx, "tenant = ?1 AND id = ?2", &[tenant, id], id)
        })
    }

    /// A command of `tenant`'s device `device_id`.
    pub fn get_command(&self, tenant: &str, device_id: &str, id: &str) -> Result<Command> {
        let conn = self.conn();
        load_command(
            &conn,
            "tenant = ?1 AND device_id = ?2 AND id = ?3",
            &[tenant, device_id, id],
            id,
        )
    }

    /// Commands of a device, newest first; `before` (ms) pages back past a `created_at`.
    /// An unknown device (or one of another tenant) yields an empty list.
    pub fn list_commands(
        &self,
        tenant: &str,
        device_id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<Command>> {
        validate::limit(limit)?;
        let rows = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COMMAND_COLUMNS} FROM commands
                 WHERE tenant = ?1 AND device_id = ?2 AND created_at < ?3
                 ORDER BY created_at DESC, id DESC LIMIT ?4"
            ))?;
            stmt.query_map(
                params![tenant, device_id, before.unwrap_or(i64::MAX), limit],
                CommandRow::read,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        rows.into_iter().map(CommandRow::into_command).collect()
    }

    /// At startup: commands a previous run left `pending` or `sent` can no longer be answered
    /// (their waiters died with that process); they become `timed_out`. Returns how many.
    pub fn expire_stale_commands(&self, now_ms: i64) -> Result<u64> {
        let changed = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE commands SET status = 'timed_out', updated_at = ?1
                 WHERE status IN ('pending', 'sent')",
                [now_ms],
            )?)
        })?;
        if changed > 0 {
            tracing::info!(
                count = changed,
                "Expired commands left open by a previous run."
            );
        }
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    /// Retention: deletes finished commands created before `before_ms`. Returns how many.
    pub fn prune_commands(&self, before_ms: i64) -> Result<u64> {
        let deleted = self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM commands
                 WHERE created_at < ?1 AND status NOT IN ('pending', 'sent')",
                [before_ms],
            )?)
        })?;
        Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
    }
}

fn load_command(conn: &Connection, filter: &str, args: &[&str], id: &str) -> Result<Command> {
    conn.prepare_cached(&format!(
        "SELECT {COMMAND_COLUMNS} FROM commands WHERE {filter}"
    ))?
    .query_row(rusqlite::params_from_iter(args), CommandRow::read)
    .optional()?
    .ok_or_else(|| Error::not_found("command", id))?
    .into_command()
}
