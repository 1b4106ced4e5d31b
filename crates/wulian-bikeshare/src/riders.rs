//! Rider accounts: the people who rent bikes, kept apart from the platform's operator users.
//!
//! Regulation shapes this module:
//! - **Real-name registration.** Shared-bicycle rules in China require riders to register under
//!   their real identity. We validate the 18-character resident identity number (GB 11643: region,
//!   birth date, sequence, ISO 7064 MOD 11-2 check character) and derive the birth date from it.
//!   Riders under [`MIN_AGE`] are refused: the Road Traffic Safety Law lets children ride
//!   bicycles on roads only from 12. Checking the number against the Ministry of Public Security
//!   is an external service and not done here.
//! - **Data minimisation (PIPL).** The identity number itself is never stored: only a peppered
//!   SHA-256 (to refuse a second account for the same person) and its last four characters (to
//!   let support confirm an identity). The pepper is a per-installation secret: identity numbers
//!   have too little entropy (~10^11 plausible values) for an unpeppered hash to protect them.
//! - **Consent.** Location processing needs the rider's consent, recorded with its time.
//! - **Export and erasure.** [`export`] returns everything these tables hold about a rider;
//!   [`erase`] de-identifies the row but keeps the id, so the ledger, which must keep its
//!   records, still balances and still refers to a (now anonymous) rider.
//!
//! Bearer tokens are 256-bit random values shown once; only their SHA-256 is stored.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Result of rider operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Youngest age at which a rider may register.
pub const MIN_AGE: u32 = 12;

/// Oldest plausible age; a birth date further back is a typing error or a forged number.
pub const MAX_AGE: u32 = 120;

/// Shortest accepted pepper, in bytes.
pub const MIN_PEPPER_LEN: usize = 16;

/// Prefix of rider bearer tokens, so a leaked token is recognisable in logs and by scanners.
pub const TOKEN_PREFIX: &str = "wbr_";

const MS_PER_DAY: i64 = 86_400_000;
/// China Standard Time (UTC+8, no daylight saving): ages are counted on Beijing calendar days.
const CHINA_OFFSET_MS: i64 = 8 * 3_600_000;

/// The riders table. Personal columns are nullable because erasure clears them; the CHECK keeps
/// an erased row from holding personal data.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS riders (
    id TEXT PRIMARY KEY,
    phone TEXT UNIQUE,
    display_name TEXT,
    real_name TEXT,
    id_number_hash TEXT UNIQUE,
    id_number_last4 TEXT,
    birth_date TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    location_consent INTEGER NOT NULL DEFAULT 0 CHECK (location_consent IN (0, 1)),
    consent_at INTEGER,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'erased')),
    token_hash TEXT UNIQUE,
    erased_at INTEGER,
    CHECK (status <> 'erased' OR (phone IS NULL AND display_name IS NULL AND real_name IS NULL
        AND id_number_hash IS NULL AND id_number_last4 IS NULL AND birth_date IS NULL
        AND token_hash IS NULL AND location_consent = 0))
) STRICT;
";

/// Why a rider operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a mainland China mobile number.
    #[error("invalid phone number: expected a mainland China mobile number such as +8613800138000")]
    InvalidPhone,
    /// A name is empty, too long or contains characters a name cannot.
    #[error("invalid {field}: {reason}")]
    InvalidName {
        /// `name` or `real_name`.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// Not a valid 18-character resident identity number.
    #[error("invalid resident identity number: {0}")]
    InvalidIdNumber(&'static str),
    /// The birth date is in the future or more than [`MAX_AGE`] years ago.
    #[error("implausible birth date {0}")]
    ImplausibleBirthDate(String),
    /// The rider is younger than [`MIN_AGE`].
    #[error("riders must be at least {min_age} years old (age {age})")]
    UnderAge {
        /// The minimum.
        min_age: u32,
        /// The rider's age.
        age: u32,
    },
    /// Another account uses this phone number.
    #[error("this phone number is already registered")]
    PhoneTaken,
    /// Another account is registered to this identity.
    #[error("an account is already registered with this identity number")]
    IdNumberTaken,
    /// No such rider.
    #[error("rider {0} not found")]
    NotFound(String),
    /// The rider's account was erased.
    #[error("rider {0} has been erased")]
    Erased(String),
    /// A status change that is not allowed.
    #[error("invalid status change: {0}")]
    InvalidStatus(&'static str),
    /// The installation's pepper is missing or too short (a configuration error).
    #[error("the identity-number pepper must be at least {MIN_PEPPER_LEN} bytes")]
    WeakPepper,
    /// The operating system's random source failed.
    #[error("random source unavailable: {0}")]
    Random(String),
    /// A stored row could not be decoded.
    #[error("rider data is corrupt: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("rider storage: {0}")]
    Storage(#[from] rusqlite::Error),
}

impl Error {
    /// Stable machine-readable code for the API's problem+json `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidPhone => "invalid_phone",
            Error::InvalidName { .. } => "invalid_name",
            Error::InvalidIdNumber(_) => "invalid_id_number",
            Error::ImplausibleBirthDate(_) => "implausible_birth_date",
            Error::UnderAge { .. } => "under_age",
            Error::PhoneTaken => "phone_taken",
            Error::IdNumberTaken => "id_number_registered",
            Error::NotFound(_) => "rider_not_found",
            Error::Erased(_) => "rider_erased",
            Error::InvalidStatus(_) => "invalid_status",
            Error::WeakPepper => "weak_pepper",
            Error::Random(_) => "random_unavailable",
            Error::Corrupt(_) => "rider_data_corrupt",
            Error::Storage(_) => "storage_error",
        }
    }

    /// The HTTP status the API should answer with.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidPhone
            | Error::InvalidName { .. }
            | Error::InvalidIdNumber(_)
            | Error::ImplausibleBirthDate(_)
            | Error::UnderAge { .. }
            | Error::InvalidStatus(_) => 422,
            Error::PhoneTaken | Error::IdNumberTaken => 409,
            Error::NotFound(_) => 404,
            Error::Erased(_) => 410,
            Error::WeakPepper | Error::Random(_) | Error::Corrupt(_) | Error::Storage(_) => 500,
        }
    }
}

/// A rider account's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiderStatus {
    /// May ride (subject to the balance).
    Active,
    /// Blocked by an operator; can still sign in, see the statement and top up.
    Suspended,
    /// De-identified at the rider's request; cannot sign in.
    Erased,
}

impl RiderStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiderStatus::Active => "active",
            RiderStatus::Suspended => "suspended",
            RiderStatus::Erased => "erased",
        }
    }

    fn parse(s: &str) -> Result<RiderStatus> {
        Ok(match s {
            "active" => RiderStatus::Active,
            "suspended" => RiderStatus::Suspended,
            "erased" => RiderStatus::Erased,
            other => return Err(Error::Corrupt(format!("unknown rider status {other:?}"))),
        })
    }
}

/// A rider as stored, without the secrets (identity-number hash, token hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rider {
    /// `r-` and 24 hex digits.
    pub id: String,
    /// E.164 (`+861…`); `None` once erased.
    pub phone: Option<String>,
    /// Name shown in the app.
    pub display_name: Option<String>,
    /// Legal name from real-name registration.
    pub real_name: Option<String>,
    /// Last four characters of the identity number, for support to confirm an identity.
    pub id_number_last4: Option<String>,
    /// `YYYY-MM-DD`, derived from the identity number.
    pub birth_date: Option<String>,
    /// Registration time (ms since the epoch).
    pub created_at: i64,
    /// Last change to the row.
    pub updated_at: i64,
    /// The rider allows location processing (trip routes).
    pub location_consent: bool,
    /// When the current consent decision was made.
    pub consent_at: Option<i64>,
    /// Account state.
    pub status: RiderStatus,
    /// When the account was erased.
    pub erased_at: Option<i64>,
}

impl Rider {
    /// Whether the account itself allows renting (the balance is the ledger's question).
    pub fn can_ride(&self) -> bool {
        self.status == RiderStatus::Active
    }

    /// The phone with its middle digits hidden (`+86 138****8000`), for operator screens and
    /// receipts that do not need the full number.
    pub fn masked_phone(&self) -> Option<String> {
        let national = self.phone.as_deref()?.strip_prefix("+86")?;
        let (head, rest) = national.split_at_checked(3)?;
        let tail = rest.get(4..)?;
        Some(format!("+86 {head}****{tail}"))
    }
}

/// What a rider gives at sign-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RiderSignUp)]
pub struct SignUp {
    /// Mobile number, `+8613800138000` or `13800138000` (spaces and dashes ignored).
    pub phone: String,
    /// Display name.
    pub name: String,
    /// Legal name.
    pub real_name: String,
    /// 18-character resident identity number.
    pub id_number: String,
    /// Consent to location processing.
    pub location_consent: bool,
}

/// A validated resident identity number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidentId {
    /// The number, with a lowercase `x` normalised to `X`.
    pub number: String,
    /// The birth date it encodes.
    pub birth_date: CivilDate,
}

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CivilDate {
    /// Year.
    pub year: i32,
    /// Month 1–12.
    pub month: u32,
    /// Day 1–31.
    pub day: u32,
}

impl CivilDate {
    /// The date if it exists in the proleptic Gregorian calendar.
    pub fn new(year: i32, month: u32, day: u32) -> Option<CivilDate> {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (1..=days)
            .contains(&day)
            .then_some(CivilDate { year, month, day })
    }

    /// The date in China (UTC+8) at `now_ms`.
    pub fn china_today(now_ms: i64) -> CivilDate {
        let days = now_ms
            .saturating_add(CHINA_OFFSET_MS)
            .div_euclid(MS_PER_DAY);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        CivilDate {
            year: i32::try_from(year).unwrap_or(if year < 0 { i32::MIN } else { i32::MAX }),
            month,
            day,
        }
    }

    /// Completed years from `self` to `on` (negative if `on` is earlier). Someone born on
    /// 29 February becomes a year older on 1 March in common years.
    pub fn years_until(self, on: CivilDate) -> i64 {
        let mut years = i64::from(on.year) - i64::from(self.year);
        if (on.month, on.day) < (self.month, self.day) {
            years -= 1;
        }
        years
    }
}

impl std::fmt::Display for CivilDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Province-level codes that open a resident identity number (GB/T 2260), including 71/81/82
/// (Taiwan, Hong Kong, Macao) and 83 (residence permits of Taiwan residents).
const PROVINCES: [u8; 35] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83,
];

/// The ISO 7064 MOD 11-2 check character of the first 17 digits.
pub fn id_check_char(first17: &[u8; 17]) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHARS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d.saturating_sub(b'0')) * w)
        .sum();
    CHARS[(sum % 11) as usize]
}

/// Validates an 18-character resident identity number: 6-digit region (known province), a real
/// birth date `YYYYMMDD` from 1900 on, a 3-digit sequence and the MOD 11-2 check character.
/// Age rules are separate ([`check_age`]) because they depend on `now`.
pub fn parse_id_number(input: &str) -> Result<ResidentId> {
    let number = input.trim().to_ascii_uppercase();
    let bytes = number.as_bytes();
    if bytes.len() != 18 {
        return Err(Error::InvalidIdNumber("must be 18 characters"));
    }
    let mut first17 = [0u8; 17];
    first17.copy_from_slice(&bytes[..17]);
    if !first17.iter().all(u8::is_ascii_digit) {
        return Err(Error::InvalidIdNumber(
            "the first 17 characters must be digits",
        ));
    }
    let last = bytes[17];
    if !(last.is_ascii_digit() || last == b'X') {
        return Err(Error::InvalidIdNumber(
            "the last character must be a digit or X",
        ));
    }
    let digits = |range: std::ops::Range<usize>| -> u32 {
        first17[range]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let province = digits(0..2);
    if !PROVINCES.iter().any(|p| u32::from(*p) == province) {
        return Err(Error::InvalidIdNumber("unknown region code"));
    }
    let year = digits(6..10);
    let birth_date = CivilDate::new(year as i32, digits(10..12), digits(12..14))
        .filter(|_| year >= 1900)
        .ok_or(Error::InvalidIdNumber("the birth date is not a real date"))?;
    if char::from(last) != id_check_char(&first17) {
        return Err(Error::InvalidIdNumber(
            "the check character does not match (a digit was probably mistyped)",
        ));
    }
    Ok(ResidentId { number, birth_date })
}

/// Refuses a birth date in the future or more than [`MAX_AGE`] years back
/// (`implausible_birth_date`) and riders younger than [`MIN_AGE`] on `now` in China
/// (`under_age`). Returns the age.
pub fn check_age(birth_date: CivilDate, now_ms: i64) -> Result<u32> {
    let today = CivilDate::china_today(now_ms);
    if birth_date > today {
        return Err(Error::ImplausibleBirthDate(birth_date.to_string()));
    }
    let age = birth_date.years_until(today);
    if age > i64::from(MAX_AGE) {
        return Err(Error::ImplausibleBirthDate(birth_date.to_string()));
    }
    let age = u32::try_from(age).unwrap_or(0);
    if age < MIN_AGE {
        return Err(Error::UnderAge {
            min_age: MIN_AGE,
            age,
        });
    }
    Ok(age)
}

/// Normalises a mainland China mobile number to E.164 (`+861[3-9]xxxxxxxxx`). Accepts the
/// number with `+86`, `0086` or no prefix; spaces and dashes are ignored.
pub fn normalize_phone(input: &str) -> Result<String> {
    let compact: String = input.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let national = compact
        .strip_prefix("+86")
        .or_else(|| compact.strip_prefix("0086"))
        .unwrap_or(&compact);
    let b = national.as_bytes();
    let ok = b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit);
    if !ok {
        return Err(Error::InvalidPhone);
    }
    Ok(format!("+86{national}"))
}

fn check_display_name(name: &str) -> Result<String> {
    let name = name.trim();
    let invalid = |reason| Error::InvalidName {
        field: "name",
        reason,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.chars().count() > 32 {
        return Err(invalid("must be at most 32 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters"));
    }
    Ok(name.to_owned())
}

fn check_real_name(name: &str) -> Result<String> {
    let name = name.trim();
    let invalid = |reason| Error::InvalidName {
        field: "real_name",
        reason,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.chars().count() > 50 {
        return Err(invalid("must be at most 50 characters"));
    }
    // Letters of any script, plus the separators of minority and foreign names (阿依古丽·买买提).
    if !name
        .chars()
        .all(|c| c.is_alphabetic() || matches!(c, '·' | '•' | ' ' | '-' | '\'' | '.'))
    {
        return Err(invalid("may only contain letters, spaces and · - ' ."));
    }
    Ok(name.to_owned())
}

/// Peppered SHA-256 of a normalised identity number, hex. The length prefix keeps the pepper
/// and the number apart; equality is all we ever compare.
fn id_number_hash(pepper: &[u8], number: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"wulian-rider-id-v1\0");
    h.update((pepper.len() as u64).to_le_bytes());
    h.update(pepper);
    h.update(number.as_bytes());
    hex::encode(h.finalize())
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

fn new_token() -> Result<String> {
    Ok(format!("{TOKEN_PREFIX}{}", random_hex(32)?))
}

const COLUMNS: &str = "id, phone, display_name, real_name, id_number_last4, birth_date, \
     created_at, updated_at, location_consent, consent_at, status, erased_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Rider, String)> {
    Ok((
        Rider {
            id: r.get(0)?,
            phone: r.get(1)?,
            display_name: r.get(2)?,
            real_name: r.get(3)?,
            id_number_last4: r.get(4)?,
            birth_date: r.get(5)?,
            created_at: r.get(6)?,
            updated_at: r.get(7)?,
            location_consent: r.get::<_, i64>(8)? != 0,
            consent_at: r.get(9)?,
            // Decoded after the row closure, which can only return rusqlite errors.
            status: RiderStatus::Active,
            erased_at: r.get(11)?,
        },
        r.get(10)?,
    ))
}

fn finish(row: (Rider, String)) -> Result<Rider> {
    let (mut rider, status) = row;
    rider.status = RiderStatus::parse(&status)?;
    Ok(rider)
}

fn query_one(conn: &Connection, filter: &str, value: &str) -> Result<Option<Rider>> {
    let row = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM riders WHERE {filter} = ?1"),
            [value],
            from_row,
        )
        .optional()?;
    row.map(finish).transpose()
}

/// The rider with this id, or `None`.
pub fn get(conn: &Connection, id: &str) -> Result<Option<Rider>> {
    query_one(conn, "id", id)
}

/// The rider registered with this phone number (normalised first), or `None`; for sign-in by
/// SMS code.
pub fn get_by_phone(conn: &Connection, phone: &str) -> Result<Option<Rider>> {
    query_one(conn, "phone", &normalize_phone(phone)?)
}

fn require(conn: &Connection, id: &str) -> Result<Rider> {
    let rider = get(conn, id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
    if rider.status == RiderStatus::Erased {
        return Err(Error::Erased(id.to_owned()));
    }
    Ok(rider)
}

/// Maps a uniqueness violation to the precise error.
fn unique_violation(e: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(f, Some(msg)) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        if msg.contains("riders.phone") {
            return Error::PhoneTaken;
        }
        if msg.contains("riders.id_number_hash") {
            return Error::IdNumberTaken;
        }
    }
    Error::Storage(e)
}

/// Registers a rider under their real name and returns the account with its bearer token. The
/// token is shown once and only its hash is stored. `pepper` is the installation's secret for
/// identity-number hashes (at least [`MIN_PEPPER_LEN`] bytes). One account per phone number
/// (`phone_taken`) and per identity (`id_number_registered`).
pub fn sign_up(
    conn: &Connection,
    form: &SignUp,
    pepper: &[u8],
    now: i64,
) -> Result<(Rider, String)> {
    if pepper.len() < MIN_PEPPER_LEN {
        return Err(Error::WeakPepper);
    }
    let phone = normalize_phone(&form.phone)?;
    let display_name = check_display_name(&form.name)?;
    let real_name = check_real_name(&form.real_name)?;
    let id = parse_id_number(&form.id_number)?;
    check_age(id.birth_date, now)?;
    let hash = id_number_hash(pepper, &id.number);
    let last4 = id.number.get(14..).unwrap_or_default().to_owned();
    let rider_id = format!("r-{}", random_hex(12)?);
    let token = new_token()?;
    conn.execute(
        "INSERT INTO riders (id, phone, display_name, real_name, id_number_hash, id_number_last4,
             birth_date, created_at, updated_at, location_consent, consent_at, status, token_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?8, 'active', ?10)",
        params![
            rider_id,
            phone,
            display_name,
            real_name,
            hash,
            last4,
            id.birth_date.to_string(),
            now,
            form.location_consent,
            token_hash(&token),
        ],
    )
    .map_err(unique_violation)?;
    let rider = get(conn, &rider_id)?.ok_or_else(|| Error::NotFound(rider_id.clone()))?;
    Ok((rider, token))
}

/// The rider a bearer token belongs to, or `None` for an unknown, malformed or revoked token.
/// Suspended riders are returned (they may still see their statement and top up; check
/// [`Rider::can_ride`]); erased ones have no token.
///
/// The lookup is by the token's SHA-256, not by comparing secrets, so no constant-time compare
/// is needed: timing can at most reveal a prefix of a hash, which does not help to find a
/// 256-bit token whose hash has that prefix.
pub fn authenticate(conn: &Connection, token: &str) -> Result<Option<Rider>> {
    let well_formed = token
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Ok(None);
    }
    let rider = query_one(conn, "token_hash", &token_hash(token))?;
    Ok(rider.filter(|r| r.status != RiderStatus::Erased))
}

/// Issues a new token for the rider, invalidating the previous one (a lost phone, a sign-in
/// on a new device). Shown once.
pub fn rotate_token(conn: &Connection, id: &str, now: i64) -> Result<String> {
    require(conn, id)?;
    let token = new_token()?;
    conn.execute(
        "UPDATE riders SET token_hash = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, token_hash(&token), now],
    )?;
    Ok(token)
}

/// Removes the rider's token (sign-out everywhere).
pub fn revoke_token(conn: &Connection, id: &str, now: i64) -> Result<()> {
    require(conn, id)?;
    conn.execute(
        "UPDATE riders SET token_hash = NULL, updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

/// Records the rider's decision on location processing. `consent_at` keeps the time of the
/// decision in force, so repeating the same answer changes nothing.
pub fn set_location_consent(conn: &Connection, id: &str, consent: bool, now: i64) -> Result<Rider> {
    let rider = require(conn, id)?;
    if rider.location_consent == consent && rider.consent_at.is_some() {
        return Ok(rider);
    }
    conn.execute(
        "UPDATE riders SET location_consent = ?2, consent_at = ?3, updated_at = ?3 WHERE id = ?1",
        params![id, consent, now],
    )?;
    require(conn, id)
}

/// Suspends or reactivates a rider (an operator decision). Erasure is only through [`erase`].
pub fn set_status(conn: &Connection, id: &str, status: RiderStatus, now: i64) -> Result<Rider> {
    if status == RiderStatus::Erased {
        return Err(Error::InvalidStatus("use erasure to erase an account"));
    }
    require(conn, id)?;
    conn.execute(
        "UPDATE riders SET status = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, status.as_str(), now],
    )?;
    require(conn, id)
}

/// Riders ordered by id, `limit` (at most 1000) after the id `after` (keyset pagination: pass
/// the last id of the previous page).
pub fn list(conn: &Connection, limit: u32, after: Option<&str>) -> Result<Vec<Rider>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM riders WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let rows = stmt
        .query_map(params![after, limit.min(1000)], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(finish).collect()
}

/// Everything the riders table holds about a rider (PIPL right of access), for the integrator
/// to combine with trips and ledger rows. The token hash is reported as present or not: it is a
/// credential verifier, not information about the person.
pub fn export(conn: &Connection, id: &str) -> Result<Value> {
    let rider = get(conn, id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
    let (id_hash, has_token): (Option<String>, bool) = conn.query_row(
        "SELECT id_number_hash, token_hash IS NOT NULL FROM riders WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(json!({
        "id": rider.id,
        "phone": rider.phone,
        "display_name": rider.display_name,
        "real_name": rider.real_name,
        "id_number_hash": id_hash,
        "id_number_hash_note": "peppered SHA-256 of the identity number; the number itself is not stored",
        "id_number_last4": rider.id_number_last4,
        "birth_date": rider.birth_date,
        "created_at": rider.created_at,
        "updated_at": rider.updated_at,
        "location_consent": rider.location_consent,
        "consent_at": rider.consent_at,
        "status": rider.status,
        "erased_at": rider.erased_at,
        "has_active_token": has_token,
    }))
}

/// De-identifies the rider (PIPL right to deletion): phone, names, identity data, consent and
/// token are cleared and the status becomes `erased`; the id stays so the ledger's journals
/// keep balancing against a now anonymous account. Erasing twice is a no-op.
///
/// The caller must first make sure nothing is owed either way (zero balance, no running trip):
/// that needs the ledger and trips, which this module does not know.
pub fn erase(conn: &Connection, id: &str, now: i64) -> Result<Rider> {
    let rider = get(conn, id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
    if rider.status == RiderStatus::Erased {
        return Ok(rider);
    }
    conn.execute(
        "UPDATE riders SET phone = NULL, display_name = NULL, real_name = NULL,
             id_number_hash = NULL, id_number_last4 = NULL, birth_date = NULL,
             location_consent = 0, consent_at = NULL, token_hash = NULL,
             status = 'erased', erased_at = ?2, updated_at = ?2
         WHERE id = ?1",
        params![id, now],
    )?;
    get(conn, id)?.ok_or_else(|| Error::NotFound(id.to_owned()))
}

#[cfg(test)]
mod tests;
