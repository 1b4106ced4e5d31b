//! City credentials: bearer tokens that open a tenant's MDS endpoints and nothing else. They
//! are separate from API keys on purpose: a regulator reads the MDS feeds, never devices,
//! riders or the console.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS city_tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
";

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = CityCredential)]
pub struct CityToken {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a credential; the token is returned once and stored hashed.
pub fn create(
    conn: &Connection,
    tenant: &str,
    name: &str,
    now: i64,
) -> Result<(CityToken, String)> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(Error::invalid("invalid_name", "name: 1 to 100 characters"));
    }
    let id = crate::ids::new_id("city")?;
    let token = format!("wlc_{}", crate::ids::random_hex(24)?);
    conn.execute(
        "INSERT INTO city_tokens (id, tenant, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, tenant, name, hash(&token), now],
    )?;
    Ok((
        CityToken {
            id,
            name: name.to_string(),
            created_at: now,
            revoked_at: None,
        },
        token,
    ))
}

/// The tenant a live token opens.
pub fn authenticate(conn: &Connection, token: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT tenant FROM city_tokens WHERE token_hash = ?1 AND revoked_at IS NULL",
            params![hash(token)],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn list(conn: &Connection, tenant: &str) -> Result<Vec<CityToken>> {
    let mut stmt = conn.prepare(
        "SELECT id, name, created_at, revoked_at FROM city_tokens WHERE tenant = ?1 ORDER BY created_at",
    )?;
    let rows = stmt
        .query_map(params![tenant], |r| {
            Ok(CityToken {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
                revoked_at: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn revoke(conn: &Connection, tenant: &str, id: &str, now: i64) -> Result<()> {
    let n = conn.execute(
        "UPDATE city_tokens SET revoked_at = ?3 WHERE tenant = ?1 AND id = ?2 AND revoked_at IS NULL",
        params![tenant, id, now],
    )?;
    if n == 0 {
        return Err(Error::not_found(
            "city_token_not_found",
            format!("no live city credential {id}"),
        ));
    }
    Ok(())
}
