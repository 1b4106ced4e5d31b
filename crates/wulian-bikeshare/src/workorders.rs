//! Work orders for the field team: rebalance, repair, battery swap, inspection. A bike with an
//! open repair, inspection or battery order is not offered to riders; the vehicle state the
//! city sees follows MDS (`non_operational` while in the workshop, `available` after).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS work_orders (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    bike TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    target_cell TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    note TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS work_orders_open ON work_orders(tenant, state, bike);
-- One open order of a kind per bike: a lock that reports `fall` ten times opens one order.
CREATE UNIQUE INDEX IF NOT EXISTS work_orders_one_open ON work_orders(tenant, bike, kind)
    WHERE state IN ('open', 'in_progress');
";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = WorkOrderKind)]
pub enum Kind {
    Rebalance,
    Repair,
    Battery,
    Inspect,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Rebalance => "rebalance",
            Kind::Repair => "repair",
            Kind::Battery => "battery",
            Kind::Inspect => "inspect",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "rebalance" => Kind::Rebalance,
            "repair" => Kind::Repair,
            "battery" => Kind::Battery,
            "inspect" => Kind::Inspect,
            _ => return None,
        })
    }

    /// Whether the bike leaves service while the order is worked on.
    pub fn takes_bike_out(self) -> bool {
        !matches!(self, Kind::Rebalance)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = WorkOrderState)]
pub enum State {
    Open,
    InProgress,
    Done,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::InProgress => "in_progress",
            State::Done => "done",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "open" => State::Open,
            "in_progress" => State::InProgress,
            "done" => State::Done,
            "cancelled" => State::Cancelled,
            _ => return None,
        })
    }

    pub fn can_become(self, next: State) -> bool {
        matches!(
            (self, next),
            (
                State::Open,
                State::InProgress | State::Done | State::Cancelled
            ) | (State::InProgress, State::Done | State::Cancelled)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkOrder {
    pub id: String,
    pub bike: String,
    pub kind: Kind,
    pub state: State,
    pub reason: String,
    pub target_cell: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub note: Option<String>,
}

const COLUMNS: &str =
    "id, bike, kind, state, reason, target_cell, created_by, created_at, updated_at, note";

fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<WorkOrder> {
    let kind: String = r.get(2)?;
    let state: String = r.get(3)?;
    Ok(WorkOrder {
        id: r.get(0)?,
        bike: r.get(1)?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Inspect),
        state: State::parse(&state).unwrap_or(State::Cancelled),
        reason: r.get(4)?,
        target_cell: r.get(5)?,
        created_by: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        note: r.get(9)?,
    })
}

pub struct NewOrder<'a> {
    pub bike: &'a str,
    pub kind: Kind,
    pub reason: &'a str,
    pub target_cell: Option<&'a str>,
    pub created_by: &'a str,
}

/// Opens an order, or returns the open one of the same kind for the bike (`false`: not new).
pub fn open(
    conn: &Connection,
    tenant: &str,
    id: &str,
    new: &NewOrder<'_>,
    now: i64,
) -> Result<(WorkOrder, bool)> {
    if let Some(existing) = conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM work_orders WHERE tenant = ?1 AND bike = ?2 AND kind = ?3
                 AND state IN ('open', 'in_progress')"
            ),
            params![tenant, new.bike, new.kind.as_str()],
            read,
        )
        .optional()?
    {
        return Ok((existing, false));
    }
    conn.execute(
        "INSERT INTO work_orders (id, tenant, bike, kind, state, reason, target_cell, created_by,
             created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, ?8, ?8)",
        params![
            id,
            tenant,
            new.bike,
            new.kind.as_str(),
            new.reason,
            new.target_cell,
            new.created_by,
            now
        ],
    )?;
    let order =
        get(conn, tenant, id)?.ok_or_else(|| Error::Internal("work order vanished".into()))?;
    Ok((order, true))
}

pub fn get(conn: &Connection, tenant: &str, id: &str) -> Result<Option<WorkOrder>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM work_orders WHERE tenant = ?1 AND id = ?2"),
            params![tenant, id],
            read,
        )
        .optional()?)
}

pub fn list(
    conn: &Connection,
    tenant: &str,
    state: Option<&str>,
    bike: Option<&str>,
    limit: u32,
) -> Result<Vec<WorkOrder>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM work_orders WHERE tenant = ?1 AND (?2 IS NULL OR state = ?2)
           AND (?3 IS NULL OR bike = ?3) ORDER BY created_at DESC LIMIT ?4"
    ))?;
    let rows = stmt
        .query_map(params![tenant, state, bike, limit.clamp(1, 1000)], read)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Bikes with an open order that takes them out of service, with the order kind.
pub fn bikes_out_of_service(conn: &Connection, tenant: &str) -> Result<Vec<(String, Kind)>> {
    let mut stmt = conn.prepare(
        "SELECT bike, kind FROM work_orders WHERE tenant = ?1 AND state IN ('open', 'in_progress')
           AND kind != 'rebalance'",
    )?;
    let rows = stmt
        .query_map(params![tenant], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(b, k)| Some((b, Kind::parse(&k)?)))
        .collect())
}

/// The kind of an open order that keeps `bike` out of service, if any.
pub fn out_of_service_kind(conn: &Connection, tenant: &str, bike: &str) -> Result<Option<Kind>> {
    let kind: Option<String> = conn
        .query_row(
            "SELECT kind FROM work_orders WHERE tenant = ?1 AND bike = ?2
               AND state IN ('open', 'in_progress') AND kind != 'rebalance' LIMIT 1",
            params![tenant, bike],
            |r| r.get(0),
        )
        .optional()?;
    Ok(kind.as_deref().and_then(Kind::parse))
}

/// Moves an order to `next`; refuses transitions the lifecycle does not allow.
pub fn update(
    conn: &Connection,
    tenant: &str,
    id: &str,
    next: State,
    note: Option<&str>,
    now: i64,
) -> Result<WorkOrder> {
    let order = get(conn, tenant, id)?
        .ok_or_else(|| Error::not_found("work_order_not_found", format!("no work order {id}")))?;
    if !order.state.can_become(next) {
        return Err(Error::conflict(
            "invalid_transition",
            format!(
                "a {} work order cannot become {}",
                order.state.as_str(),
                next.as_str()
            ),
        ));
    }
    conn.execute(
        "UPDATE work_orders SET state = ?3, updated_at = ?4, note = COALESCE(?5, note)
         WHERE tenant = ?1 AND id = ?2",
        params![tenant, id, next.as_str(), now, note],
    )?;
    get(conn, tenant, id)?.ok_or_else(|| Error::Internal("work order vanished".into()))
}
