//! Console sessions of logged-in users, and the throttle on failed logins.
//!
//! A session is a random token (`wls_` + 32 random bytes, hex) that travels as a cookie; only
//! its SHA-256 is stored, as for API keys (256 bits need no slow hash). Each session also has a
//! CSRF token (synchronizer pattern): stored in clear (it is worthless without the cookie) and
//! compared by the API on every state-changing request the cookie authenticates.
//!
//! A session ends at the first of: its absolute lifetime (`expires_at`, fixed at login), an
//! idle timeout (no request for `idle_timeout_ms`; `last_seen_at` is written at most once a
//! minute, so authentication stays a read), logout, the user being disabled, deleted or given a
//! new password. Role changes need no revocation: the role is read with the session on every
//! request. Expired rows are purged at every login; a user keeps at most
//! [`MAX_SESSIONS_PER_USER`], the oldest going first.
//!
//! Failed logins are rows of `login_failures`, keyed per (tenant, user) and per client
//! address, so the throttle survives restarts; rows older than the window are purged when a
//! failure is recorded.

use std::fmt;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::users::Role;
use crate::{Registry, now_ms, secret};

/// Every session token starts with this.
pub const SESSION_TOKEN_PREFIX: &str = "wls_";
/// Sessions a user may hold at once; a new login beyond it ends their oldest.
pub const MAX_SESSIONS_PER_USER: i64 = 16;
/// `last_seen_at` is written at most this often per session.
const LAST_SEEN_GRANULARITY_MS: i64 = 60_000;

/// A live session, with its user's current role. Not `Serialize`: it holds the CSRF token, and
/// what is shown of it is the API's choice.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// `s-` + 16 hex characters; names the session without being its secret.
    pub id: String,
    pub tenant: String,
    pub username: String,
    pub role: Role,
    /// Must come back in `X-CSRF-Token` on state-changing requests.
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub idle_timeout_ms: i64,
    /// The absolute end, whatever the activity.
    pub expires_at: i64,
}

impl Session {
    /// When the session ends if no request comes before.
    pub fn idle_expires_at(&self) -> i64 {
        self.last_seen_at
            .saturating_add(self.idle_timeout_ms)
            .min(self.expires_at)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("csrf_token", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A session just created, with its token — the cookie's value, never stored.
#[derive(Clone)]
pub struct NewSession {
    pub session: Session,
    pub token: String,
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession")
            .field("session", &self.session)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// Ends a session after this long without a request.
    pub idle: Duration,
    /// Ends a session this long after login, however active.
    pub lifetime: Duration,
}

/// How many failed logins are tolerated within `window`: per (tenant, user name) and per
/// client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    pub max_failures_per_user: u32,
    pub max_failures_per_client: u32,
    pub window: Duration,
}

impl Registry {
    /// Logs `username` in: a new session for an enabled user (`NotFound` otherwise). Purges
    /// expired sessions of everyone, and the user's oldest beyond [`MAX_SESSIONS_PER_USER`].
    pub fn create_session(
        &self,
        tenant: &str,
        username: &str,
        timeouts: &SessionTimeouts,
    ) -> Result<NewSession> {
        self.create_session_at(tenant, username, timeouts, now_ms())
    }

    pub(crate) fn create_session_at(
        &self,
        tenant: &str,
        username: &str,
        timeouts: &SessionTimeouts,
        now: i64,
    ) -> Result<NewSession> {
        let token = secret::new_secret(SESSION_TOKEN_PREFIX)?;
        let token_hash = secret::hash(&token);
        let csrf_token = secret::random_hex(32)?;
        let id = format!("s-{}", secret::random_hex(8)?);
        let idle_timeout_ms = millis(timeouts.idle).max(1);
        let expires_at = now.saturating_add(millis(timeouts.lifetime).max(1));
        self.write(|tx| {
            let role: Option<Role> = tx
                .query_row(
                    "SELECT role FROM users WHERE tenant = ?1 AND username = ?2 AND disabled = 0",
                    [tenant, username],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(role) = role else {
                return Err(Error::not_found("user", username));
            };
            tx.execute(
                "DELETE FROM sessions WHERE expires_at <= ?1 OR last_seen_at + idle_timeout_ms <= ?1",
                [now],
            )?;
            tx.execute(
                "INSERT INTO sessions (id, token_hash, tenant, username, csrf_token, created_at,
                                       last_seen_at, idle_timeout_ms, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)",
                params![
                    id,
                    token_hash,
                    tenant,
                    username,
                    csrf_token,
                    now,
                    idle_timeout_ms,
                    expires_at
                ],
            )?;
            tx.execute(
                "DELETE FROM sessions WHERE tenant = ?1 AND username = ?2 AND id NOT IN (
                     SELECT id FROM sessions WHERE tenant = ?1 AND username = ?2
                     ORDER BY created_at DESC, id DESC LIMIT ?3)",
                params![tenant, username, MAX_SESSIONS_PER_USER],
            )?;
            Ok(Session {
                id,
                tenant: tenant.to_string(),
                username: username.to_string(),
                role,
                csrf_token,
                created_at: now,
                last_seen_at: now,
                idle_timeout_ms,
                expires_at,
            })
        })
        .map(|session| NewSession { session, token })
    }

    /// The live session whose token this is, or `None` (unknown, expired, malformed, user
    /// disabled). Refreshes the idle timer.
    pub fn authenticate_session(&self, token: &str) -> Result<Option<Session>> {
        self.authenticate_session_at(token, now_ms())
    }

    pub(crate) fn authenticate_session_at(&self, token: &str, now: i64) -> Result<Option<Session>> {
        if !token.starts_with(SESSION_TOKEN_PREFIX)
            || token.len() > secret::MAX_PRESENTED_SECRET_LEN
        {
            return Ok(None);
        }
        let token_hash = secret::hash(token);
        let conn = self.conn();
        let found = conn
            .prepare_cached(
                "SELECT s.id, s.tenant, s.username, u.role, s.csrf_token, s.created_at,
                        s.last_seen_at, s.idle_timeout_ms, s.expires_at
                 FROM sessions s JOIN users u ON u.tenant = s.tenant AND u.username = s.username
                 WHERE s.token_hash = ?1 AND u.disabled = 0",
            )?
            .query_row([&token_hash], session_from_row)
            .optional()?;
        let Some(mut session) = found else {
            return Ok(None);
        };
        if now >= session.idle_expires_at() {
            // Best effort: the purge at the next login removes it otherwise.
            let deleted = conn
                .prepare_cached("DELETE FROM sessions WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute([&session.id]));
            if let Err(error) = deleted {
                tracing::debug!(session_id = %session.id, error = %error, "Could not delete an expired session.");
            }
            return Ok(None);
        }
        if session.last_seen_at <= now.saturating_sub(LAST_SEEN_GRANULARITY_MS) {
            // Best effort: a busy database must not turn a live session into a failed request.
            let updated = conn
                .prepare_cached("UPDATE sessions SET last_seen_at = ?1 WHERE id = ?2")
                .and_then(|mut stmt| stmt.execute(params![now, session.id]));
            match updated {
                Ok(_) => session.last_seen_at = now,
                Err(error) => {
                    tracing::warn!(session_id = %session.id, error = %error, "Could not record session use.");
                }
            }
        }
        Ok(Some(session))
    }

    /// Logs out: ends the session with this token. `false` when there was none.
    pub fn delete_session(&self, token: &str) -> Result<bool> {
        let token_hash = secret::hash(token);
        self.write(|tx| {
            let deleted =
                tx.execute("DELETE FROM sessions WHERE token_hash = ?1", [&token_hash])?;
            Ok(deleted > 0)
        })
    }

    /// Ends every session of a user but `except` (a session id). Returns how many ended.
    pub fn delete_sessions_of_user(
        &self,
        tenant: &str,
        username: &str,
        except: Option<&str>,
    ) -> Result<usize> {
        self.write(|tx| delete_user_sessions(tx, tenant, username, except))
    }

    /// `Some(wait)` when a login for (tenant, username) from `client` must be refused now:
    /// either has had `max_failures_*` failures within the window. `wait` is how long until
    /// the oldest of them leaves the window (at least a second).
    pub fn login_throttled(
        &self,
        tenant: &str,
        username: &str,
        client: &str,
        throttle: &LoginThrottle,
    ) -> Result<Option<Duration>> {
        self.login_throttled_at(tenant, username, client, throttle, now_ms())
    }

    pub(crate) fn login_throttled_at(
        &self,
        tenant: &str,
        username: &str,
        client: &str,
        throttle: &LoginThrottle,
        now: i64,
    ) -> Result<Option<Duration>> {
        let window = millis(throttle.window);
        let since = now.saturating_sub(window);
        let conn = self.conn();
        let mut wait: Option<i64> = None;
        for (key, max) in [
            (user_key(tenant, username), throttle.max_failures_per_user),
            (client_key(client), throttle.max_failures_per_client),
        ] {
            // The max-th most recent failure in the window: while it is in, the limit is hit.
            let offset = i64::from(max.max(1)) - 1;
            let nth: Option<i64> = conn
                .prepare_cached(
                    "SELECT at FROM login_failures WHERE key = ?1 AND at > ?2
                     ORDER BY at DESC LIMIT 1 OFFSET ?3",
                )?
                .query_row(params![key, since, offset], |r| r.get(0))
                .optional()?;
            if let Some(at) = nth {
                let left = at.saturating_add(window).saturating_sub(now).max(1_000);
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        }
        Ok(wait.map(|ms| {
            // Whole seconds, rounded up (Retry-After has a one-second resolution).
            Duration::from_secs(u64::try_from(ms).unwrap_or(0).div_ceil(1000))
        }))
    }

    /// Counts a failed login against (tenant, username) and `client`.
    pub fn record_login_failure(
        &self,
        tenant: &str,
        username: &str,
        client: &str,
        throttle: &LoginThrottle,
    ) -> Result<()> {
        self.record_login_failure_at(tenant, username, client, throttle, now_ms())
    }

    pub(crate) fn record_login_failure_at(
        &self,
        tenant: &str,
        username: &str,
        client: &str,
        throttle: &LoginThrottle,
        now: i64,
    ) -> Result<()> {
        let since = now.saturating_sub(millis(throttle.window));
        self.write(|tx| {
            tx.execute("DELETE FROM login_failures WHERE at <= ?1", [since])?;
            let mut insert =
                tx.prepare_cached("INSERT INTO login_failures (key, at) VALUES (?1, ?2)")?;
            insert.execute(params![user_key(tenant, username), now])?;
            insert.execute(params![client_key(client), now])?;
            Ok(())
        })
    }

    /// Forgets the failures of (tenant, username) after a successful login. The client's stay:
    /// one account's valid password must not reset a client's budget for guessing others.
    pub fn clear_login_failures(&self, tenant: &str, username: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM login_failures WHERE key = ?1",
                [user_key(tenant, username)],
            )?;
            Ok(())
        })
    }
}

/// Ends every session of a user but `except`, inside the caller's transaction.
pub(crate) fn delete_user_sessions(
    conn: &Connection,
    tenant: &str,
    username: &str,
    except: Option<&str>,
) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM sessions WHERE tenant = ?1 AND username = ?2 AND id IS NOT ?3",
        params![tenant, username, except],
    )?)
}

fn user_key(tenant: &str, username: &str) -> String {
    format!("user:{tenant}/{username}")
}

fn client_key(client: &str) -> String {
    format!("client:{client}")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn session_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        tenant: row.get(1)?,
        username: row.get(2)?,
        role: row.get(3)?,
        csrf_token: row.get(4)?,
        created_at: row.get(5)?,
        last_seen_at: row.get(6)?,
        idle_timeout_ms: row.get(7)?,
        expires_at: row.get(8)?,
    })
}

#[cfg(test)]
mod tests;
