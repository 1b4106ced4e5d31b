//! Work orders for the field team: rebalance, repair, battery swap, inspection. A bike with an
//! open repair, inspection or battery order is not offered to riders; the vehicle state the
//! city sees follows MDS (`non_operational` while in the workshop, `available` after).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest assignee (a crew or a person's name), in characters.
pub const MAX_ASSIGNEE_CHARS: usize = 100;

/// Adds the columns later versions brought to a database made by an earlier one
/// (`CREATE TABLE IF NOT EXISTS` leaves an existing table as it is).
pub fn migrate(conn: &Connection) -> Result<()> {
    let has_assignee: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('work_orders') WHERE name = 'assignee'",
        [],
        |r| r.get(0),
    )?;
    if !has_assignee {
        conn.execute_batch("ALTER TABLE work_orders ADD COLUMN assignee TEXT")?;
    }
    Ok(())
}

/// An assignee as stored: trimmed, `None` when empty (unassigned); at most
/// [`MAX_ASSIGNEE_CHARS`] characters and no control characters.
pub fn check_assignee(assignee: Option<&str>) -> Result<Option<String>> {
    let Some(a) = assignee.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    if a.chars().count() > MAX_ASSIGNEE_CHARS || a.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_assignee",
            format!(
                "assignee: at most {MAX_ASSIGNEE_CHARS} characters, no control characters \
                 (empty or null: unassigned)"
            ),
        ));
    }
    Ok(Some(a.to_string()))
}

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
    note TEXT,
    assignee TEXT
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
    /// Who works on it: a crew or a person, free text; `null` while unassigned.
    pub assignee: Option<String>,
}

const COLUMNS: &str = "id, bike, kind, state, reason, target_cell, created_by, created_at, \
     updated_at, note, assignee";

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
        assignee: r.get(10)?,
    })
}

pub struct NewOrder<'a> {
    pub bike: &'a str,
    pub kind: Kind,
    pub reason: &'a str,
    pub target_cell: Option<&'a str>,
    pub created_by: &'a str,
    /// Already checked with [`check_assignee`].
    pub assignee: Option<&'a str>,
}

/// Opens an order, or returns the open one of the same kind for the bike (`false`: not new;
/// it keeps its assignee).
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
             created_at, updated_at, assignee)
         VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, ?8, ?8, ?9)",
        params![
            id,
            tenant,
            new.bike,
            new.kind.as_str(),
            new.reason,
            new.target_cell,
            new.created_by,
            now,
            new.assignee
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

/// Which orders [`list`] returns; `None` matches any.
#[derive(Debug, Default, Clone, Copy)]
pub struct Filter<'a> {
    pub state: Option<&'a str>,
    pub bike: Option<&'a str>,
    /// An exact assignee; `Some("")` matches the unassigned orders.
    pub assignee: Option<&'a str>,
}

pub fn list(
    conn: &Connection,
    tenant: &str,
    filter: &Filter<'_>,
    limit: u32,
) -> Result<Vec<WorkOrder>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM work_orders WHERE tenant = ?1 AND (?2 IS NULL OR state = ?2)
           AND (?3 IS NULL OR bike = ?3)
           AND (?4 IS NULL OR (?4 = '' AND assignee IS NULL) OR assignee = ?4)
         ORDER BY created_at DESC LIMIT ?5"
    ))?;
    let assignee = filter.assignee.map(str::trim);
    let rows = stmt
        .query_map(
            params![
                tenant,
                filter.state,
                filter.bike,
                assignee,
                limit.clamp(1, 1000)
            ],
            read,
        )?
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

/// What a PATCH changes; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct Change {
    pub state: Option<State>,
    pub note: Option<String>,
    /// `Some(None)` unassigns; already checked with [`check_assignee`].
    pub assignee: Option<Option<String>>,
}

/// Applies `change`; refuses transitions the lifecycle does not allow, and reassigning an order
/// that is done or cancelled.
pub fn update(
    conn: &Connection,
    tenant: &str,
    id: &str,
    change: &Change,
    now: i64,
) -> Result<WorkOrder> {
    let order = get(conn, tenant, id)?
        .ok_or_else(|| Error::not_found("work_order_not_found", format!("no work order {id}")))?;
    if let Some(next) = change.state
        && !order.state.can_become(next)
    {
        return Err(Error::conflict(
            "invalid_transition",
            format!(
                "a {} work order cannot become {}",
                order.state.as_str(),
                next.as_str()
            ),
        ));
    }
    let closed = matches!(order.state, State::Done | State::Cancelled);
    if change.state.is_none() && closed && change.assignee.is_some() {
        return Err(Error::conflict(
            "order_closed",
            format!("a {} work order keeps its assignee", order.state.as_str()),
        ));
    }
    let state = change.state.unwrap_or(order.state);
    let assignee = match &change.assignee {
        Some(a) => a.clone(),
        None => order.assignee.clone(),
    };
    conn.execute(
        "UPDATE work_orders SET state = ?3, updated_at = ?4, note = COALESCE(?5, note),
                assignee = ?6
         WHERE tenant = ?1 AND id = ?2",
        params![tenant, id, state.as_str(), now, change.note, assignee],
    )?;
    get(conn, tenant, id)?.ok_or_else(|| Error::Internal("work order vanished".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        migrate(&conn).unwrap();
        conn
    }

    fn order(conn: &Connection, id: &str, bike: &str, assignee: Option<&str>) -> WorkOrder {
        let new = NewOrder {
            bike,
            kind: Kind::Repair,
            reason: "flat tyre",
            target_cell: None,
            created_by: "key:k1",
            assignee,
        };
        open(conn, "t1", id, &new, 1_000).unwrap().0
    }

    fn assigned(assignee: Option<&str>) -> Change {
        Change {
            assignee: Some(assignee.map(str::to_string)),
            ..Change::default()
        }
    }

    #[test]
    fn assignee_is_set_on_create_changed_by_update_and_filtered() {
        let conn = db();
        assert_eq!(
            order(&conn, "wo-1", "b1", Some("north crew"))
                .assignee
                .as_deref(),
            Some("north crew")
        );
        assert_eq!(order(&conn, "wo-2", "b2", None).assignee, None);
        // The open order of that kind comes back with its own assignee.
        let again = order(&conn, "wo-3", "b1", Some("south crew"));
        assert_eq!(
            (again.id.as_str(), again.assignee.as_deref()),
            ("wo-1", Some("north crew"))
        );

        let moved = update(&conn, "t1", "wo-2", &assigned(Some("Li Wei")), 2_000).unwrap();
        assert_eq!(
            (moved.assignee.as_deref(), moved.state),
            (Some("Li Wei"), State::Open)
        );
        // A state change leaves the assignee as it is.
        let started = Change {
            state: Some(State::InProgress),
            ..Change::default()
        };
        let started = update(&conn, "t1", "wo-2", &started, 3_000).unwrap();
        assert_eq!(
            (started.assignee.as_deref(), started.state),
            (Some("Li Wei"), State::InProgress)
        );

        let filter = |assignee| Filter {
            assignee,
            ..Filter::default()
        };
        let ids = |f: Filter<'_>| -> Vec<String> {
            list(&conn, "t1", &f, 100)
                .unwrap()
                .into_iter()
                .map(|o| o.id)
                .collect()
        };
        assert_eq!(ids(filter(Some("Li Wei"))), ["wo-2"]);
        assert_eq!(ids(filter(Some("north crew"))), ["wo-1"]);
        assert!(ids(filter(Some("north"))).is_empty(), "an exact match");
        let unassign = update(&conn, "t1", "wo-1", &assigned(None), 4_000).unwrap();
        assert_eq!(unassign.assignee, None);
        assert_eq!(ids(filter(Some(""))), ["wo-1"], "empty: the unassigned");
        assert!(
            list(&conn, "t2", &filter(Some("Li Wei")), 100)
                .unwrap()
                .is_empty()
        );

        // A finished order keeps its assignee.
        let done = Change {
            state: Some(State::Done),
            ..Change::default()
        };
        update(&conn, "t1", "wo-2", &done, 5_000).unwrap();
        let err = update(&conn, "t1", "wo-2", &assigned(Some("x")), 6_000).unwrap_err();
        assert_eq!(err.code(), "order_closed");
    }

    #[test]
    fn assignees_are_trimmed_and_length_limited() {
        assert_eq!(
            check_assignee(Some("  crew 7 ")).unwrap().as_deref(),
            Some("crew 7")
        );
        assert_eq!(check_assignee(Some("   ")).unwrap(), None);
        assert_eq!(check_assignee(None).unwrap(), None);
        let longest = "维".repeat(MAX_ASSIGNEE_CHARS);
        assert_eq!(
            check_assignee(Some(&longest)).unwrap(),
            Some(longest.clone())
        );
        let long = format!("{longest}x");
        assert_eq!(
            check_assignee(Some(&long)).unwrap_err().code(),
            "invalid_assignee"
        );
        assert_eq!(
            check_assignee(Some("a\nb")).unwrap_err().code(),
            "invalid_assignee"
        );
    }

    #[test]
    fn a_database_of_an_earlier_version_gains_the_assignee_column() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&SCHEMA.replace(",\n    assignee TEXT", ""))
            .unwrap();
        conn.execute(
            "INSERT INTO work_orders (id, tenant, bike, kind, state, reason, created_by,
                 created_at, updated_at) VALUES ('wo-old', 't1', 'b1', 'repair', 'open', 'r', 's', 1, 1)",
            [],
        )
        .unwrap();
        assert!(
            get(&conn, "t1", "wo-old").is_err(),
            "the old table lacks the column"
        );
        migrate(&conn).unwrap();
        migrate(&conn).unwrap();
        assert_eq!(get(&conn, "t1", "wo-old").unwrap().unwrap().assignee, None);
    }
}
