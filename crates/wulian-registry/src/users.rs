//! Users: the people who operate a tenant through the web console, beside the API keys of
//! machines. A user belongs to one tenant, has a [`Role`] and a password.
//!
//! Passwords are chosen by people, so unlike API keys (see `secret.rs`) they get a slow hash:
//! Argon2id with the `argon2` crate's default parameters (19 MiB, 2 passes, 1 lane), stored as a
//! PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) that carries its own parameters,
//! so a later change of defaults still verifies old hashes. There is no default password: an
//! admin creates each user with a password of their choice, or one generated here and shown
//! once. Hashing runs before the database lock is taken, never under it.
//!
//! A login of a user who does not exist costs the same hash (against a dummy), so response
//! times do not tell which user names exist.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::api_keys::Scope;
use crate::error::{Error, Result};
use crate::{Registry, now_ms, secret, sessions, tenants};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_LEN: usize = 10;
/// Longest password accepted, in characters (bounds the hashing work per attempt).
pub const MAX_PASSWORD_LEN: usize = 256;
/// Longest user name, in characters.
pub const MAX_USERNAME_LEN: usize = 64;
/// Users per tenant.
pub const MAX_USERS: i64 = 1000;

/// What a user may do within their tenant. Each role passes the checks of one API key
/// [`Scope`] ([`Role::scope`]); handlers that must tell people apart ask for the role itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in the tenant, including its users and API keys ([`Scope::Admin`]).
    Admin,
    /// Runs the fleet: changes devices, sends commands ([`Scope::ReadWrite`]).
    Operator,
    /// Reads only ([`Scope::ReadOnly`]).
    Viewer,
    /// A city's regulator: reads only ([`Scope::ReadOnly`]) — and solutions may narrow what
    /// further (the bike share will show a regulator only what the city may see).
    CityRegulator,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Admin,
        Role::Operator,
        Role::Viewer,
        Role::CityRegulator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::CityRegulator => "city_regulator",
        }
    }

    /// The API key scope whose checks this role passes.
    pub fn scope(self) -> Scope {
        match self {
            Role::Admin => Scope::Admin,
            Role::Operator => Scope::ReadWrite,
            Role::Viewer | Role::CityRegulator => Scope::ReadOnly,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid("role", "must be admin, operator, viewer or city_regulator")
            })
    }
}

/// A user as it may be shown: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub tenant: String,
    /// Lowercase; unique within the tenant.
    pub username: String,
    pub role: Role,
    /// A disabled user cannot log in and their sessions are gone.
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub password_changed_at: i64,
    pub last_login_at: Option<i64>,
}

/// A user just created, with the generated password if the admin chose none — the only time
/// that password exists outside the user's head.
#[derive(Clone)]
pub struct NewUser {
    pub user: User,
    pub generated_password: Option<String>,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("user", &self.user)
            .field(
                "generated_password",
                &self.generated_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A change to a user: the fields that are `Some` change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub role: Option<Role>,
    /// `Some(true)` disables the user and ends their sessions.
    pub disabled: Option<bool>,
}

/// How a login attempt ended. Callers answer every refusal the same way; the kinds exist for
/// the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginCheck {
    Valid(User),
    /// No such tenant or user (a dummy hash was verified all the same).
    UnknownUser,
    WrongPassword,
    /// The password was right but the user is disabled.
    Disabled,
}

/// How a change of one's own password ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordChange {
    Changed,
    /// The old password was wrong; nothing changed.
    WrongPassword,
}

const USER_COLUMNS: &str =
    "tenant, username, role, disabled, created_at, updated_at, password_changed_at, last_login_at";

impl Registry {
    /// A new user of `tenant` (which must exist). With `password: None` a password is
    /// generated and returned in [`NewUser::generated_password`].
    pub fn create_user(
        &self,
        tenant: &str,
        username: &str,
        role: Role,
        password: Option<&str>,
    ) -> Result<NewUser> {
        validate_username(username)?;
        let (password, generated) = chosen_or_generated(username, password)?;
        let hash = hash_password(&password)?;
        let now = now_ms();
        let user = User {
            tenant: tenant.to_string(),
            username: username.to_string(),
            role,
            disabled: false,
            created_at: now,
            updated_at: now,
            password_changed_at: now,
            last_login_at: None,
        };
        self.write(|tx| {
            tenants::require_tenant(tx, tenant)?;
            let count: i64 = tx.query_row(
                "SELECT count(*) FROM users WHERE tenant = ?1",
                [tenant],
                |r| r.get(0),
            )?;
            if count >= MAX_USERS {
                return Err(Error::Conflict(format!(
                    "tenant {tenant:?} has the most users allowed ({MAX_USERS})"
                )));
            }
            let inserted = tx.execute(
                "INSERT INTO users (tenant, username, role, password_hash, disabled, created_at,
                                    updated_at, password_changed_at)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?5) ON CONFLICT DO NOTHING",
                params![tenant, username, role, hash, now],
            )?;
            if inserted == 0 {
                return Err(Error::already_exists("user", username));
            }
            Ok(())
        })?;
        Ok(NewUser {
            user,
            generated_password: generated,
        })
    }

    pub fn get_user(&self, tenant: &str, username: &str) -> Result<User> {
        let conn = self.conn();
        load_user(&conn, tenant, username)?
            .map(|(user, _)| user)
            .ok_or_else(|| Error::not_found("user", username))
    }

    /// The tenant's users by name. `NotFound` for an unknown tenant.
    pub fn list_users(&self, tenant: &str) -> Result<Vec<User>> {
        let conn = self.conn();
        tenants::require_tenant(&conn, tenant)?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant = ?1 ORDER BY username"
        ))?;
        let rows = stmt.query_map([tenant], user_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Changes a user's role or disables/enables them. Disabling ends their sessions; a role
    /// change applies to their sessions at their next request.
    pub fn update_user(&self, tenant: &str, username: &str, patch: &UserPatch) -> Result<User> {
        let now = now_ms();
        self.write(|tx| {
            if load_user(tx, tenant, username)?.is_none() {
                return Err(Error::not_found("user", username));
            }
            if let Some(role) = patch.role {
                tx.execute(
                    "UPDATE users SET role = ?1, updated_at = ?2 WHERE tenant = ?3 AND username = ?4",
                    params![role, now, tenant, username],
                )?;
            }
            if let Some(disabled) = patch.disabled {
                tx.execute(
                    "UPDATE users SET disabled = ?1, updated_at = ?2
                     WHERE tenant = ?3 AND username = ?4",
                    params![disabled, now, tenant, username],
                )?;
                if disabled {
                    sessions::delete_user_sessions(tx, tenant, username, None)?;
                }
            }
            load_user(tx, tenant, username)?
                .map(|(user, _)| user)
                .ok_or_else(|| Error::not_found("user", username))
        })
    }

    /// Deletes a user with their sessions.
    pub fn delete_user(&self, tenant: &str, username: &str) -> Result<()> {
        self.write(|tx| {
            let deleted = tx.execute(
                "DELETE FROM users WHERE tenant = ?1 AND username = ?2",
                params![tenant, username],
            )?;
            if deleted == 0 {
                return Err(Error::not_found("user", username));
            }
            Ok(())
        })
    }

    /// An admin sets a user's password (`None`: generate one, returned). Ends all the user's
    /// sessions.
    pub fn reset_password(
        &self,
        tenant: &str,
        username: &str,
        password: Option<&str>,
    ) -> Result<Option<String>> {
        let (password, generated) = chosen_or_generated(username, password)?;
        let hash = hash_password(&password)?;
        let now = now_ms();
        self.write(|tx| {
            let updated = tx.execute(
                "UPDATE users SET password_hash = ?1, password_changed_at = ?2, updated_at = ?2
                 WHERE tenant = ?3 AND username = ?4",
                params![hash, now, tenant, username],
            )?;
            if updated == 0 {
                return Err(Error::not_found("user", username));
            }
            sessions::delete_user_sessions(tx, tenant, username, None)?;
            Ok(())
        })?;
        Ok(generated)
    }

    /// A user changes their own password, proving the old one. Ends their other sessions;
    /// `current_session` (a session id) stays.
    pub fn change_password(
        &self,
        tenant: &str,
        username: &str,
        old_password: &str,
        new_password: &str,
        current_session: &str,
    ) -> Result<PasswordChange> {
        check_password(username, new_password)?;
        let stored = {
            let conn = self.conn();
            load_user(&conn, tenant, username)?
        };
        let Some((user, old_hash)) = stored else {
            return Err(Error::not_found("user", username));
        };
        if user.disabled || !verify_password(&old_hash, old_password) {
            return Ok(PasswordChange::WrongPassword);
        }
        if new_password == old_password {
            return Err(Error::invalid(
                "password",
                "must differ from the current password",
            ));
        }
        let hash = hash_password(new_password)?;
        let now = now_ms();
        self.write(|tx| {
            // Only over the hash that was verified: a concurrent change wins, this one fails.
            let updated = tx.execute(
                "UPDATE users SET password_hash = ?1, password_changed_at = ?2, updated_at = ?2
                 WHERE tenant = ?3 AND username = ?4 AND password_hash = ?5",
                params![hash, now, tenant, username, old_hash],
            )?;
            if updated == 0 {
                return Err(Error::Conflict(
                    "the password was changed meanwhile; try again".to_string(),
                ));
            }
            sessions::delete_user_sessions(tx, tenant, username, Some(current_session))?;
            Ok(())
        })?;
        Ok(PasswordChange::Changed)
    }

    /// Checks a login. Takes about one hash's time whether or not the user exists. A valid
    /// login records `last_login_at`.
    pub fn verify_login(&self, tenant: &str, username: &str, password: &str) -> Result<LoginCheck> {
        let stored = if is_plausible_username(username) {
            let conn = self.conn();
            load_user(&conn, tenant, username)?
        } else {
            None
        };
        // Overlong passwords are refused unhashed, for known and unknown users alike.
        let hashable = password.chars().count() <= MAX_PASSWORD_LEN;
        let Some((user, hash)) = stored else {
            if hashable && let Some(dummy) = dummy_hash() {
                let _ = verify_password(dummy, password);
            }
            return Ok(LoginCheck::UnknownUser);
        };
        if !hashable || !verify_password(&hash, password) {
            return Ok(LoginCheck::WrongPassword);
        }
        if user.disabled {
            return Ok(LoginCheck::Disabled);
        }
        let now = now_ms();
        // Best effort: a busy database must not turn a valid login into a failed one.
        let recorded = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE users SET last_login_at = ?1 WHERE tenant = ?2 AND username = ?3",
                params![now, tenant, username],
            )?)
        });
        let mut user = user;
        match recorded {
            Ok(_) => user.last_login_at = Some(now),
            Err(error) => {
                tracing::warn!(tenant = %tenant, error = %error, "Could not record a login.");
            }
        }
        Ok(LoginCheck::Valid(user))
    }
}

/// User names: 1 to 64 of `a-z 0-9 . _ @ -`, starting with a letter or digit (an email address
/// in lowercase fits).
pub fn validate_username(username: &str) -> Result<()> {
    let bytes = username.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !first_ok || bytes.len() > MAX_USERNAME_LEN || !bytes.iter().all(|b| is_username_byte(*b)) {
        return Err(Error::invalid(
            "username",
            format!(
                "must be 1 to {MAX_USERNAME_LEN} of a-z 0-9 . _ @ -, starting with a letter or digit"
            ),
        ));
    }
    Ok(())
}

fn is_username_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'@' | b'-')
}

fn is_plausible_username(username: &str) -> bool {
    !username.is_empty()
        && username.len() <= MAX_USERNAME_LEN
        && username.bytes().all(is_username_byte)
}

/// The password rules: 10 to 256 characters, no control characters, not the user name, not one
/// of the most common passwords, not a single character repeated. `Invalid` on field
/// `password` says which rule.
pub fn check_password(username: &str, password: &str) -> Result<()> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(Error::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if len > MAX_PASSWORD_LEN {
        return Err(Error::invalid(
            "password",
            format!("must be at most {MAX_PASSWORD_LEN} characters"),
        ));
    }
    if password.chars().any(char::is_control) {
        return Err(Error::invalid(
            "password",
            "must not contain control characters",
        ));
    }
    let lower = password.to_lowercase();
    if lower == username.to_lowercase() {
        return Err(Error::invalid("password", "must not be the user name"));
    }
    if COMMON_PASSWORDS.contains(&lower.as_str()) {
        return Err(Error::invalid(
            "password",
            "is one of the most common passwords; choose another",
        ));
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err(Error::invalid(
            "password",
            "must not be one character repeated",
        ));
    }
    Ok(())
}

/// Common passwords of at least [`MIN_PASSWORD_LEN`] characters (shorter ones fail the length
/// rule anyway), lowercase; compared case-insensitively. From public breach-corpus top lists.
const COMMON_PASSWORDS: &[&str] = &[
    "0123456789",
    "1029384756",
    "1111111111",
    "1122334455",
    "1234512345",
    "1234554321",
    "1234567890",
    "12345678910",
    "123456789a",
    "1234567890a",
    "123456789q",
    "1234567890q",
    "123456789abc",
    "1234qwerasdf",
    "1357924680",
    "1q2w3e4r5t",
    "1q2w3e4r5t6y",
    "1qaz2wsx3edc",
    "9876543210",
    "a123456789",
    "aa12345678",
    "abc1234567",
    "abcd123456",
    "abcdefghij",
    "adminadmin",
    "admin12345",
    "admin123456",
    "administrator",
    "asdfghjkl1",
    "asdfghjkl;",
    "baseball123",
    "changeme123",
    "dragon1234",
    "football123",
    "iloveyou12",
    "iloveyou123",
    "letmein123",
    "monkey1234",
    "p@ssw0rd123",
    "passw0rd123",
    "password01",
    "password12",
    "password123",
    "password1234",
    "password!!",
    "password1!",
    "princess123",
    "q1w2e3r4t5",
    "q1w2e3r4t5y6",
    "qazwsx1234",
    "qazwsxedc123",
    "qazwsxedcrfv",
    "qwerty1234",
    "qwerty12345",
    "qwerty123456",
    "qwertyuiop",
    "qwertyuiop123",
    "starwars123",
    "sunshine123",
    "superman123",
    "trustno1234",
    "welcome123",
    "welcome1234",
    "wulian1234",
    "wulian12345",
    "zaq12wsxcde",
    "zxcvbnm123",
    "zxcvbnm1234",
];

/// The admin's password after the rules, or a generated one (then also returned as such).
fn chosen_or_generated(username: &str, password: Option<&str>) -> Result<(String, Option<String>)> {
    match password {
        Some(password) => {
            check_password(username, password)?;
            Ok((password.to_string(), None))
        }
        None => {
            let password = generate_password()?;
            Ok((password.clone(), Some(password)))
        }
    }
}

/// Alphabet of generated passwords: 32 symbols without look-alikes (0/o, 1/l/i).
const PASSWORD_ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz23456789_";

/// A generated password: four groups of five symbols (100 bits), e.g. `k3v9q-xw2rt-…`.
pub(crate) fn generate_password() -> Result<String> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes)?;
    let mut out = String::with_capacity(23);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            out.push('-');
        }
        // 256 is a multiple of 32, so the low five bits are uniform.
        out.push(char::from(PASSWORD_ALPHABET[usize::from(b & 31)]));
    }
    Ok(out)
}

/// Argon2id (default parameters) over `password` with a fresh 16-byte salt, as a PHC string.
pub(crate) fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::PasswordHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| Error::PasswordHash(e.to_string()))
}

/// Whether `password` matches the PHC string `stored` (with the parameters it names). A
/// malformed stored hash never matches, and is logged.
pub(crate) fn verify_password(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(error) => {
            tracing::error!(error = %error, "A stored password hash is malformed.");
            false
        }
    }
}

/// A hash of a random password, made once, to verify unknown users against.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| secret::random_hex(16).and_then(|p| hash_password(&p)).ok())
        .as_deref()
}

/// The user and their password hash.
fn load_user(conn: &Connection, tenant: &str, username: &str) -> Result<Option<(User, String)>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE tenant = ?1 AND username = ?2"
        ))?
        .query_row([tenant, username], |row| {
            Ok((user_from_row(row)?, row.get(8)?))
        })
        .optional()?)
}

/// Reads a row of `USER_COLUMNS`.
fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        tenant: row.get(0)?,
        username: row.get(1)?,
        role: row.get(2)?,
        disabled: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        password_changed_at: row.get(6)?,
        last_login_at: row.get(7)?,
    })
}

impl FromSql for Role {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Role> {
        value
            .as_str()?
            .parse()
            .map_err(|e: Error| FromSqlError::Other(Box::new(e)))
    }
}

impl ToSql for Role {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

#[cfg(test)]
mod tests;
