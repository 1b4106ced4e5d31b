//! The double-entry ledger of riders' money.
//!
//! Every movement of money is one journal transaction (`journal`) with at least two entries
//! (`entries`) whose signed amounts sum to zero, checked in code before anything is written and
//! re-checkable at any time with [`verify`] and [`trial_balance`]. Money is never created or
//! destroyed by a bug in one place: it can only move between accounts.
//!
//! # Accounts
//!
//! Accounts are strings. Entries are stored debit-positive (the bookkeeping convention), and
//! [`balance`] reports each account in its natural sign so callers never flip signs themselves:
//!
//! | account | what it is | natural side | [`balance`] |
//! |---|---|---|---|
//! | `rider:{id}` | the rider's prepaid balance: money we owe the rider (a liability) | credit | positive = prepaid, negative = the rider owes us |
//! | `revenue:fares`, `revenue:fees`, `revenue:passes` | earned income | credit | positive = earned |
//! | `clearing:{provider}` | money received through a payment provider (an asset) | debit | positive = received |
//!
//! So at all times `Σ clearing = Σ riders + Σ revenue` and the raw sum of every entry is 0.
//!
//! # Operations and postings (debit +, credit −)
//!
//! | operation | kind | entries |
//! |---|---|---|
//! | [`top_up`] | `top_up` | `clearing:{p}` +a, `rider:{r}` −a |
//! | [`charge_trip`] | `charge` | `rider:{r}` +(fare+fee), `revenue:fares` −fare, `revenue:fees` −fee |
//! | [`buy_pass`] | `pass_purchase` | `rider:{r}` +price, `revenue:passes` −price |
//! | [`refund`] | `refund` | `revenue:*` +a (fees first, then fares, then passes), `rider:{r}` −a |
//! | [`adjust`] | `adjustment` | `revenue:*` +a, `rider:{r}` −a (a may be negative) |
//! | [`payout`] | `payout` | `rider:{r}` +a, `clearing:{p}` −a |
//!
//! # Regulation
//!
//! Chinese rules for shared bicycles forbid deposits and limit the prepaid balance. There is no
//! deposit anywhere in this ledger, a top-up that would take the balance above
//! [`BALANCE_CAP`] (¥100) is refused, and [`payout`] returns unused balance on request. A trip
//! charge *may* take the balance below zero: the ride already happened and refusing to book it
//! would lose the record; [`can_start_trip`] then keeps the rider off bikes until they top up.
//!
//! # Idempotency and atomicity
//!
//! Every operation takes an idempotency key (unique across the ledger). Repeating an operation
//! with the same key and the same parameters returns the original journal without posting
//! again; the same key with different parameters is refused (`idempotency_conflict`), because
//! it means two different intents share a key. `now` is not a parameter in that comparison:
//! retries happen later.
//!
//! Each operation runs inside its own SQLite savepoint, so it is atomic on its own and nests
//! inside a caller's transaction (pass a [`rusqlite::Transaction`], which derefs to a
//! `Connection`, to make it atomic with the trip's own update). Outside a transaction the
//! savepoint is a deferred transaction; under concurrent writers use `BEGIN IMMEDIATE` so a
//! balance read and the posting cannot be interleaved (SQLite would report `SQLITE_BUSY` rather
//! than lose an update, but an immediate transaction avoids the retry).
//!
//! The ledger is single-currency ([`CURRENCY`]) and has no tenant dimension: revenue and
//! clearing accounts are installation-wide. If several operators share one database and must
//! be reported apart, split those accounts per tenant (or attribute journals through the
//! caller's rider-to-tenant mapping).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::pricing::{Fare, PassProduct, format_amount};

/// Result of ledger operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The ledger's currency; amounts are in its minor unit (fen).
pub const CURRENCY: &str = "CNY";

/// Most a rider's prepaid balance may hold after a top-up, in fen (¥100).
pub const BALANCE_CAP: i64 = 10_000;

/// Largest amount of a single operation, in fen (¥1,000,000): far above any legitimate posting,
/// low enough that no sum of postings can overflow.
pub const MAX_AMOUNT: i64 = 100_000_000;

/// Fare revenue account.
pub const REVENUE_FARES: &str = "revenue:fares";
/// Fee revenue account (dispatch fees).
pub const REVENUE_FEES: &str = "revenue:fees";
/// Pass revenue account.
pub const REVENUE_PASSES: &str = "revenue:passes";

/// Tables of the ledger: journals, their entries, and the passes riders bought.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN
        ('top_up', 'charge', 'refund', 'pass_purchase', 'adjustment', 'payout')),
    rider TEXT NOT NULL,
    -- top_up/payout: '{provider}:{provider_ref}'; charge: trip id; pass_purchase: pass id;
    -- refund: the refunded journal's reference; adjustment: the caller's reference.
    reference TEXT NOT NULL,
    refund_of INTEGER REFERENCES journal(id),
    idempotency_key TEXT NOT NULL UNIQUE,
    -- Canonical JSON of the operation's parameters, compared when a key is reused.
    fingerprint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    memo TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS journal_rider ON journal(rider, id);
CREATE INDEX IF NOT EXISTS journal_refund_of ON journal(refund_of) WHERE refund_of IS NOT NULL;
-- A trip is charged once; a provider transaction is credited or paid out once.
CREATE UNIQUE INDEX IF NOT EXISTS journal_unique_reference ON journal(kind, reference)
    WHERE kind IN ('top_up', 'charge', 'payout');
CREATE TABLE IF NOT EXISTS entries (
    journal_id INTEGER NOT NULL REFERENCES journal(id),
    account TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (journal_id, account)
) STRICT;
CREATE INDEX IF NOT EXISTS entries_account ON entries(account);
CREATE TABLE IF NOT EXISTS rider_passes (
    journal_id INTEGER PRIMARY KEY REFERENCES journal(id),
    rider TEXT NOT NULL,
    pass_id TEXT NOT NULL,
    -- The product as bought (JSON): later catalogue changes do not alter a sold pass.
    product TEXT NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    cancelled_at INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS rider_passes_rider ON rider_passes(rider, valid_until);
";

/// Why a ledger operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An amount is zero, negative or absurdly large.
    #[error("invalid amount {amount}: {reason}")]
    InvalidAmount {
        /// The amount given, in fen.
        amount: i64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Some other argument is malformed.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The argument.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The top-up would take the balance above the regulatory cap.
    #[error(
        "a top-up of {} would take the balance above the {} limit; at most {} can be added now",
        format_amount(*requested, CURRENCY),
        format_amount(BALANCE_CAP, CURRENCY),
        format_amount(*max_top_up, CURRENCY)
    )]
    BalanceCapExceeded {
        /// Balance before the top-up.
        balance: i64,
        /// The top-up asked for.
        requested: i64,
        /// The largest top-up allowed now.
        max_top_up: i64,
    },
    /// The balance does not cover a purchase or a payout.
    #[error(
        "the balance of {} does not cover {}",
        format_amount(*balance, CURRENCY),
        format_amount(*needed, CURRENCY)
    )]
    InsufficientBalance {
        /// Current balance.
        balance: i64,
        /// What the operation needs.
        needed: i64,
    },
    /// A trip charge of zero: nothing is posted for a free ride.
    #[error("the trip's charge is zero; nothing to post")]
    NothingToCharge,
    /// The trip already has a charge (under another idempotency key).
    #[error("trip {trip} is already charged (journal {journal_id}); use a refund or an adjustment")]
    TripAlreadyCharged {
        /// The trip.
        trip: String,
        /// The existing charge.
        journal_id: i64,
    },
    /// The provider transaction is already booked (under another idempotency key).
    #[error("provider transaction {reference} is already booked (journal {journal_id})")]
    DuplicateProviderRef {
        /// `{provider}:{provider_ref}`.
        reference: String,
        /// The existing journal.
        journal_id: i64,
    },
    /// The idempotency key was used before for a different operation or parameters.
    #[error("idempotency key {key:?} was already used with different parameters")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },
    /// No charge exists for the trip.
    #[error("trip {0} has no charge to refund")]
    ChargeNotFound(String),
    /// No journal with this id.
    #[error("journal {0} not found")]
    JournalNotFound(i64),
    /// Only charges and pass purchases can be refunded.
    #[error("journal {journal_id} is a {kind} and cannot be refunded")]
    NotRefundable {
        /// The journal.
        journal_id: i64,
        /// Its kind.
        kind: &'static str,
    },
    /// The refunded journal belongs to another rider.
    #[error("journal {journal_id} does not belong to rider {rider}")]
    RiderMismatch {
        /// The journal.
        journal_id: i64,
        /// The rider given.
        rider: String,
    },
    /// The refund exceeds what is left to refund of the original.
    #[error(
        "a refund of {} exceeds the {} still refundable for journal {journal_id}",
        format_amount(*requested, CURRENCY),
        format_amount(*refundable, CURRENCY)
    )]
    RefundExceedsCharge {
        /// The refunded journal.
        journal_id: i64,
        /// The refund asked for.
        requested: i64,
        /// What is left to refund.
        refundable: i64,
    },
    /// A journal's entries do not sum to zero (found by [`verify`]) or fewer than two.
    #[error("journal {journal_id} is unbalanced: {entries} entries summing to {sum}")]
    Unbalanced {
        /// The journal.
        journal_id: i64,
        /// Sum of its entries.
        sum: i64,
        /// Number of its entries.
        entries: i64,
    },
    /// The payment provider refused or failed.
    #[error("payment provider {provider}: {reason}")]
    Provider {
        /// The provider's name.
        provider: String,
        /// Its explanation.
        reason: String,
    },
    /// A stored row could not be decoded.
    #[error("ledger data is corrupt: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("ledger storage: {0}")]
    Storage(#[from] rusqlite::Error),
}

impl Error {
    /// Stable machine-readable code for the API's problem+json `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidAmount { .. } => "invalid_amount",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::BalanceCapExceeded { .. } => "balance_cap_exceeded",
            Error::InsufficientBalance { .. } => "insufficient_balance",
            Error::NothingToCharge => "zero_amount",
            Error::TripAlreadyCharged { .. } => "trip_already_charged",
            Error::DuplicateProviderRef { .. } => "duplicate_provider_reference",
            Error::IdempotencyConflict { .. } => "idempotency_conflict",
            Error::ChargeNotFound(_) => "charge_not_found",
            Error::JournalNotFound(_) => "journal_not_found",
            Error::NotRefundable { .. } => "not_refundable",
            Error::RiderMismatch { .. } => "rider_mismatch",
            Error::RefundExceedsCharge { .. } => "refund_exceeds_charge",
            Error::Unbalanced { .. } => "ledger_unbalanced",
            Error::Provider { .. } => "payment_provider_error",
            Error::Corrupt(_) => "ledger_corrupt",
            Error::Storage(_) => "storage_error",
        }
    }

    /// The HTTP status the API should answer with.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidAmount { .. }
            | Error::InvalidArgument { .. }
            | Error::NothingToCharge
            | Error::BalanceCapExceeded { .. }
            | Error::InsufficientBalance { .. }
            | Error::NotRefundable { .. }
            | Error::RefundExceedsCharge { .. } => 422,
            Error::TripAlreadyCharged { .. }
            | Error::DuplicateProviderRef { .. }
            | Error::IdempotencyConflict { .. } => 409,
            Error::ChargeNotFound(_) | Error::JournalNotFound(_) | Error::RiderMismatch { .. } => {
                404
            }
            Error::Provider { .. } => 502,
            Error::Unbalanced { .. } | Error::Corrupt(_) | Error::Storage(_) => 500,
        }
    }
}

/// The kind of a journal transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JournalKind {
    /// Money in from a payment provider.
    TopUp,
    /// A trip's fare and fees.
    Charge,
    /// Money given back to the rider's balance.
    Refund,
    /// A ride pass bought from the balance.
    PassPurchase,
    /// An operator's correction.
    Adjustment,
    /// Unused balance returned to the rider through a payment provider.
    Payout,
}

impl JournalKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalKind::TopUp => "top_up",
            JournalKind::Charge => "charge",
            JournalKind::Refund => "refund",
            JournalKind::PassPurchase => "pass_purchase",
            JournalKind::Adjustment => "adjustment",
            JournalKind::Payout => "payout",
        }
    }

    fn parse(s: &str) -> Result<JournalKind> {
        Ok(match s {
            "top_up" => JournalKind::TopUp,
            "charge" => JournalKind::Charge,
            "refund" => JournalKind::Refund,
            "pass_purchase" => JournalKind::PassPurchase,
            "adjustment" => JournalKind::Adjustment,
            "payout" => JournalKind::Payout,
            other => return Err(Error::Corrupt(format!("unknown journal kind {other:?}"))),
        })
    }
}

/// One entry of a journal: debit-positive signed amount on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = LedgerEntry)]
pub struct Entry {
    /// The account.
    pub account: String,
    /// Debit positive, credit negative, in fen.
    pub amount: i64,
}

/// A journal transaction with its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Journal {
    /// Ledger-wide sequence number.
    pub id: i64,
    /// What it records.
    pub kind: JournalKind,
    /// The rider whose balance it concerns.
    pub rider: String,
    /// Trip id, pass id or `{provider}:{provider_ref}` (see [`SCHEMA`]).
    pub reference: String,
    /// For refunds, the refunded journal.
    pub refund_of: Option<i64>,
    /// The key that makes the operation idempotent.
    pub idempotency_key: String,
    /// When it was posted (ms since the epoch).
    pub created_at: i64,
    /// Human-readable explanation.
    pub memo: String,
    /// At least two entries summing to zero.
    pub entries: Vec<Entry>,
}

impl Journal {
    /// The journal's effect on the rider's balance (positive = the balance grew).
    pub fn rider_amount(&self) -> i64 {
        let account = rider_account(&self.rider);
        -self
            .entries
            .iter()
            .filter(|e| e.account == account)
            .map(|e| e.amount)
            .sum::<i64>()
    }
}

/// One line of a rider's statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JournalEntryView {
    /// The journal.
    pub journal_id: i64,
    /// Its kind.
    pub kind: JournalKind,
    /// When it was posted.
    pub created_at: i64,
    /// Trip id, pass id or provider reference.
    pub reference: String,
    /// Explanation.
    pub memo: String,
    /// Effect on the balance (positive = money in), in fen.
    pub amount: i64,
    /// Balance after this line, in fen.
    pub balance_after: i64,
}

/// A revenue account, the counterpart of refunds and adjustments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revenue {
    /// `revenue:fares`.
    Fares,
    /// `revenue:fees`.
    Fees,
    /// `revenue:passes`.
    Passes,
}

impl Revenue {
    /// The account name.
    pub fn account(self) -> &'static str {
        match self {
            Revenue::Fares => REVENUE_FARES,
            Revenue::Fees => REVENUE_FEES,
            Revenue::Passes => REVENUE_PASSES,
        }
    }
}

/// What a trip costs, split by revenue account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripCharge {
    /// Ride charge (unlock, time, less discounts), booked to `revenue:fares`.
    pub fare: i64,
    /// Fees (dispatch), booked to `revenue:fees`.
    pub fee: i64,
}

impl From<&Fare> for TripCharge {
    fn from(fare: &Fare) -> TripCharge {
        TripCharge {
            fare: fare.ride_charge(),
            fee: fare.fees(),
        }
    }
}

/// What a refund gives money back for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundOf {
    /// The charge of this trip.
    Trip(String),
    /// This charge or pass purchase journal.
    Journal(i64),
}

/// A pass a rider bought.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PassHolding {
    /// The purchase journal.
    pub journal_id: i64,
    /// The rider.
    pub rider: String,
    /// The product as bought.
    pub product: PassProduct,
    /// Start of validity (ms since the epoch, inclusive).
    pub valid_from: i64,
    /// End of validity (exclusive).
    pub valid_until: i64,
    /// Set when the purchase was fully refunded.
    pub cancelled_at: Option<i64>,
}

/// A payment provider's reference for a capture or refund (its transaction id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProviderRef(pub String);

/// The seam between the ledger and whatever moves real money.
///
/// The ledger never calls a provider itself: a provider moves money, then the ledger records
/// that it moved. [`top_up_with`] and [`payout_with`] do both for synchronous providers.
///
/// An external adapter (Alipay, WeChat Pay) is asynchronous: the app creates a payment order
/// with the provider (amount checked against [`max_top_up`] first), the rider pays in the
/// provider's app, and the provider later sends a signed notification to a webhook. The adapter
/// verifies the signature and amount, then calls [`top_up`] with `provider = name()` and the
/// provider's transaction id as both `provider_ref` and idempotency key, so a notification
/// delivered twice books once. If that top-up is refused (the balance cap was reached by another
/// top-up in the meantime), the adapter refunds the payment through the provider. Its `capture`
/// is then only used for providers that can charge synchronously (e.g. a withholding
/// agreement), and its `refund` backs [`payout_with`] and those compensations.
pub trait PaymentProvider: Send + Sync {
    /// Short stable name, used in the `clearing:{name}` account (`[a-z0-9_-]`, at most 32).
    fn name(&self) -> &str;
    /// Takes `amount` fen from the rider; the same `idem_key` must not take it twice.
    fn capture(&self, rider: &str, amount: i64, idem_key: &str) -> Result<ProviderRef>;
    /// Gives `amount` fen back against a previous capture (or to the rider's account).
    fn refund(
        &self,
        provider_ref: &ProviderRef,
        amount: i64,
        idem_key: &str,
    ) -> Result<ProviderRef>;
}

/// Cash or bank transfer handled by an operator at a service desk: the money changed hands
/// physically, so capture and refund only produce a reference for the books, derived from the
/// idempotency key (and amount) so a retried request gets the same reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorDesk {
    name: String,
}

impl OperatorDesk {
    /// A desk named `desk` (account `clearing:desk`).
    pub fn new() -> OperatorDesk {
        OperatorDesk {
            name: "desk".into(),
        }
    }

    /// A desk with another name, e.g. one per service point.
    pub fn named(name: &str) -> Result<OperatorDesk> {
        check_provider(name)?;
        Ok(OperatorDesk {
            name: name.to_owned(),
        })
    }

    fn reference(&self, parts: &[&str]) -> ProviderRef {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let digest = hex::encode(hasher.finalize());
        ProviderRef(format!("{}-{}", self.name, &digest[..24]))
    }
}

impl Default for OperatorDesk {
    fn default() -> OperatorDesk {
        OperatorDesk::new()
    }
}

impl PaymentProvider for OperatorDesk {
    fn name(&self) -> &str {
        &self.name
    }

    fn capture(&self, rider: &str, amount: i64, idem_key: &str) -> Result<ProviderRef> {
        check_rider(rider)?;
        check_amount(amount)?;
        check_key(idem_key)?;
        Ok(self.reference(&["capture", rider, &amount.to_string(), idem_key]))
    }

    fn refund(
        &self,
        provider_ref: &ProviderRef,
        amount: i64,
        idem_key: &str,
    ) -> Result<ProviderRef> {
        check_text("provider_ref", &provider_ref.0, 128)?;
        check_amount(amount)?;
        check_key(idem_key)?;
        Ok(self.reference(&["refund", &provider_ref.0, &amount.to_string(), idem_key]))
    }
}

/// The account of a rider's prepaid balance.
pub fn rider_account(rider: &str) -> String {
    format!("rider:{rider}")
}

/// The clearing account of a payment provider.
pub fn clearing_account(provider: &str) -> String {
    format!("clearing:{provider}")
}

/// Whether a rider with this balance may start a trip: not while they owe money. A zero balance
/// may ride (there is no deposit); the trip's charge may then take it below zero.
pub fn can_start_trip(balance: i64) -> bool {
    balance >= 0
}

fn check_amount(amount: i64) -> Result<()> {
    if amount <= 0 {
        return Err(Error::InvalidAmount {
            amount,
            reason: "must be positive",
        });
    }
    if amount > MAX_AMOUNT {
        return Err(Error::InvalidAmount {
            amount,
            reason: "exceeds the largest single amount (1,000,000.00 CNY)",
        });
    }
    Ok(())
}

fn check_ident(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max {
        return Err(Error::InvalidArgument {
            field,
            reason: "must be 1 to 64 characters",
        });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Error::InvalidArgument {
            field,
            reason: "may only contain ASCII letters, digits, '-', '_' and '.'",
        });
    }
    Ok(())
}

fn check_rider(rider: &str) -> Result<()> {
    check_ident("rider", rider, 64)
}

fn check_provider(provider: &str) -> Result<()> {
    if provider.is_empty()
        || provider.len() > 32
        || !provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
    {
        return Err(Error::InvalidArgument {
            field: "provider",
            reason: "must be 1 to 32 characters of a-z, 0-9, '-' and '_'",
        });
    }
    Ok(())
}

fn check_text(field: &'static str, value: &str, max_chars: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::InvalidArgument {
            field,
            reason: "must not be empty",
        });
    }
    if value.chars().count() > max_chars {
        return Err(Error::InvalidArgument {
            field,
            reason: "is too long",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument {
            field,
            reason: "must not contain control characters",
        });
    }
    Ok(())
}

fn check_key(key: &str) -> Result<()> {
    check_text("idempotency_key", key, 200)
}

/// A savepoint on a shared connection, rolled back unless committed. Nests inside a caller's
/// transaction; outside one it is a transaction of its own.
struct Savepoint<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> Savepoint<'c> {
    fn begin(conn: &'c Connection) -> Result<Savepoint<'c>> {
        conn.execute_batch("SAVEPOINT wulian_ledger")?;
        Ok(Savepoint { conn, open: true })
    }

    fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn.execute_batch("RELEASE wulian_ledger")?;
        Ok(())
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if self.open
            && let Err(e) = self
                .conn
                .execute_batch("ROLLBACK TO wulian_ledger; RELEASE wulian_ledger")
        {
            tracing::error!(error = %e, "Ledger savepoint rollback failed.");
        }
    }
}

/// A journal about to be written.
struct Posting<'a> {
    kind: JournalKind,
    rider: &'a str,
    reference: String,
    refund_of: Option<i64>,
    memo: String,
    entries: Vec<(String, i64)>,
}

/// Returns the journal already posted under `key`, if its fingerprint matches.
fn replay(conn: &Connection, key: &str, fingerprint: &str) -> Result<Option<Journal>> {
    let found: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, fingerprint FROM journal WHERE idempotency_key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match found {
        None => Ok(None),
        Some((id, stored)) if stored == fingerprint => load_journal(conn, id),
        Some(_) => Err(Error::IdempotencyConflict {
            key: key.to_owned(),
        }),
    }
}

/// Checks the double-entry rules, then writes the journal and its entries.
fn post(
    conn: &Connection,
    p: Posting<'_>,
    key: &str,
    fingerprint: &str,
    now: i64,
) -> Result<Journal> {
    let entries: Vec<(String, i64)> = p.entries.into_iter().filter(|(_, a)| *a != 0).collect();
    let sum: i128 = entries.iter().map(|(_, a)| i128::from(*a)).sum();
    let mut accounts: Vec<&str> = entries.iter().map(|(a, _)| a.as_str()).collect();
    accounts.sort_unstable();
    accounts.dedup();
    if entries.len() < 2 || sum != 0 || accounts.len() != entries.len() {
        return Err(Error::Unbalanced {
            journal_id: 0,
            sum: i64::try_from(sum).unwrap_or(i64::MAX),
            entries: entries.len() as i64,
        });
    }
    conn.execute(
        "INSERT INTO journal
             (kind, rider, reference, refund_of, idempotency_key, fingerprint, created_at, memo)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            p.kind.as_str(),
            p.rider,
            p.reference,
            p.refund_of,
            key,
            fingerprint,
            now,
            p.memo
        ],
    )?;
    let id = conn.last_insert_rowid();
    let mut insert = conn
        .prepare_cached("INSERT INTO entries (journal_id, account, amount) VALUES (?1, ?2, ?3)")?;
    for (account, amount) in &entries {
        insert.execute(params![id, account, amount])?;
    }
    Ok(Journal {
        id,
        kind: p.kind,
        rider: p.rider.to_owned(),
        reference: p.reference,
        refund_of: p.refund_of,
        idempotency_key: key.to_owned(),
        created_at: now,
        memo: p.memo,
        entries: entries
            .into_iter()
            .map(|(account, amount)| Entry { account, amount })
            .collect(),
    })
}

/// One journal with its entries, or `None`.
pub fn journal(conn: &Connection, id: i64) -> Result<Option<Journal>> {
    load_journal(conn, id)
}

fn load_journal(conn: &Connection, id: i64) -> Result<Option<Journal>> {
    let row = conn
        .query_row(
            "SELECT kind, rider, reference, refund_of, idempotency_key, created_at, memo
             FROM journal WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((kind, rider, reference, refund_of, idempotency_key, created_at, memo)) = row else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT account, amount FROM entries WHERE journal_id = ?1 ORDER BY rowid",
    )?;
    let entries = stmt
        .query_map([id], |r| {
            Ok(Entry {
                account: r.get(0)?,
                amount: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(Journal {
        id,
        kind: JournalKind::parse(&kind)?,
        rider,
        reference,
        refund_of,
        idempotency_key,
        created_at,
        memo,
        entries,
    }))
}

/// Balance of an account in its natural sign (see the module documentation): prepaid balance
/// for `rider:`, earned income for `revenue:`, money received for `clearing:`.
pub fn balance(conn: &Connection, account: &str) -> Result<i64> {
    let raw: i64 = conn.query_row(
        "SELECT COALESCE(SUM(amount), 0) FROM entries WHERE account = ?1",
        [account],
        |r| r.get(0),
    )?;
    Ok(if account.starts_with("clearing:") {
        raw
    } else {
        -raw
    })
}

/// A rider's prepaid balance in fen (negative when they owe money).
pub fn rider_balance(conn: &Connection, rider: &str) -> Result<i64> {
    balance(conn, &rider_account(rider))
}

/// The largest top-up the rider may make now without exceeding [`BALANCE_CAP`]; show it in the
/// app before sending the rider to a payment provider.
pub fn max_top_up(conn: &Connection, rider: &str) -> Result<i64> {
    Ok(BALANCE_CAP
        .saturating_sub(rider_balance(conn, rider)?)
        .max(0))
}

fn check_cap(balance: i64, amount: i64) -> Result<()> {
    let max_top_up = BALANCE_CAP.saturating_sub(balance).max(0);
    if amount > max_top_up {
        return Err(Error::BalanceCapExceeded {
            balance,
            requested: amount,
            max_top_up,
        });
    }
    Ok(())
}

/// Maps a violation of `journal_unique_reference` to the precise error.
fn existing_reference(
    conn: &Connection,
    kind: JournalKind,
    reference: &str,
) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM journal WHERE kind = ?1 AND reference = ?2",
            params![kind.as_str(), reference],
            |r| r.get(0),
        )
        .optional()?)
}

/// Credits the rider's balance with `amount` fen received through `provider` (its transaction
/// `provider_ref`). Refused with `balance_cap_exceeded` if the balance would exceed
/// [`BALANCE_CAP`]; a provider transaction is booked once (`duplicate_provider_reference`).
pub fn top_up(
    conn: &Connection,
    rider: &str,
    amount: i64,
    provider: &str,
    provider_ref: &str,
    idem_key: &str,
    now: i64,
) -> Result<Journal> {
    check_rider(rider)?;
    check_amount(amount)?;
    check_provider(provider)?;
    check_text("provider_ref", provider_ref, 128)?;
    check_key(idem_key)?;
    let fingerprint = json!(["top_up", rider, amount, provider, provider_ref]).to_string();
    let sp = Savepoint::begin(conn)?;
    if let Some(j) = replay(conn, idem_key, &fingerprint)? {
        return Ok(j);
    }
    let reference = format!("{provider}:{provider_ref}");
    if let Some(journal_id) = existing_reference(conn, JournalKind::TopUp, &reference)? {
        return Err(Error::DuplicateProviderRef {
            reference,
            journal_id,
        });
    }
    check_cap(rider_balance(conn, rider)?, amount)?;
    let j = post(
        conn,
        Posting {
            kind: JournalKind::TopUp,
            rider,
            memo: format!("Top-up via {provider} ({provider_ref})"),
            reference,
            refund_of: None,
            entries: vec![
                (clearing_account(provider), amount),
                (rider_account(rider), -amount),
            ],
        },
        idem_key,
        &fingerprint,
        now,
    )?;
    sp.commit()?;
    Ok(j)
}

/// Captures `amount` through a synchronous `provider` and books it with [`top_up`]. The cap is
/// checked *before* capturing, so money is not taken only to be refused; the idempotency key is
/// passed to the provider too, so a retry neither captures nor books twice.
pub fn top_up_with(
    conn: &Connection,
    provider: &dyn PaymentProvider,
    rider: &str,
    amount: i64,
    idem_key: &str,
    now: i64,
) -> Result<Journal> {
    check_rider(rider)?;
    check_amount(amount)?;
    check_key(idem_key)?;
    let already: Option<i64> = conn
        .query_row(
            "SELECT id FROM journal WHERE idempotency_key = ?1",
            [idem_key],
            |r| r.get(0),
        )
        .optional()?;
    if already.is_none() {
        check_cap(rider_balance(conn, rider)?, amount)?;
    }
    let reference = provider.capture(rider, amount, idem_key)?;
    top_up(
        conn,
        rider,
        amount,
        provider.name(),
        &reference.0,
        idem_key,
        now,
    )
}

/// Charges a finished trip: the fare to `revenue:fares`, fees to `revenue:fees`. The balance may
/// go below zero (see the module documentation). A trip is charged once
/// (`trip_already_charged`); a free ride is not posted (`zero_amount`).
pub fn charge_trip(
    conn: &Connection,
    rider: &str,
    trip_id: &str,
    charge: TripCharge,
    idem_key: &str,
    now: i64,
) -> Result<Journal> {
    check_rider(rider)?;
    check_ident("trip_id", trip_id, 64)?;
    check_key(idem_key)?;
    for part in [charge.fare, charge.fee] {
        if !(0..=MAX_AMOUNT).contains(&part) {
            return Err(Error::InvalidAmount {
                amount: part,
                reason: "fare and fee must be between 0 and 1,000,000.00 CNY",
            });
        }
    }
    let total = charge.fare + charge.fee;
    if total == 0 {
        return Err(Error::NothingToCharge);
    }
    let fingerprint = json!(["charge", rider, trip_id, charge.fare, charge.fee]).to_string();
    let sp = Savepoint::begin(conn)?;
    if let Some(j) = replay(conn, idem_key, &fingerprint)? {
        return Ok(j);
    }
    if let Some(journal_id) = existing_reference(conn, JournalKind::Charge, trip_id)? {
        return Err(Error::TripAlreadyCharged {
            trip: trip_id.to_owned(),
            journal_id,
        });
    }
    let memo = if charge.fee > 0 {
        format!(
            "Trip {trip_id}: fare {}, fees {}",
            format_amount(charge.fare, CURRENCY),
            format_amount(charge.fee, CURRENCY)
        )
    } else {
        format!(
            "Trip {trip_id}: fare {}",
            format_amount(charge.fare, CURRENCY)
        )
    };
    let j = post(
        conn,
        Posting {
            kind: JournalKind::Charge,
            rider,
            reference: trip_id.to_owned(),
            refund_of: None,
            memo,
            entries: vec![
                (rider_account(rider), total),
                (REVENUE_FARES.to_owned(), -charge.fare),
                (REVENUE_FEES.to_owned(), -charge.fee),
            ],
        },
        idem_key,
        &fingerprint,
        now,
    )?;
    sp.commit()?;
    Ok(j)
}

/// Buys `pass` from the rider's balance (`insufficient_balance` if it does not cover the
/// price: a pass is not a ride and may not create debt). The pass is valid from `now`, or, if
/// the rider already holds passes, from the end of the last one, so buying early extends.
pub fn buy_pass(
    conn: &Connection,
    rider: &str,
    pass: &PassProduct,
    idem_key: &str,
    now: i64,
) -> Result<(Journal, PassHolding)> {
    check_rider(rider)?;
    check_key(idem_key)?;
    pass.validate().map_err(|_| Error::InvalidArgument {
        field: "pass",
        reason: "is not a valid pass product",
    })?;
    let product = serde_json::to_string(pass).map_err(|e| Error::Corrupt(e.to_string()))?;
    let fingerprint = json!(["pass_purchase", rider, pass]).to_string();
    let sp = Savepoint::begin(conn)?;
    if let Some(j) = replay(conn, idem_key, &fingerprint)? {
        let holding = load_holding(conn, j.id)?
            .ok_or_else(|| Error::Corrupt(format!("pass purchase {} has no pass", j.id)))?;
        return Ok((j, holding));
    }
    let balance = rider_balance(conn, rider)?;
    if balance < pass.price {
        return Err(Error::InsufficientBalance {
            balance,
            needed: pass.price,
        });
    }
    let last_end: Option<i64> = conn.query_row(
        "SELECT MAX(valid_until) FROM rider_passes WHERE rider = ?1 AND cancelled_at IS NULL",
        [rider],
        |r| r.get(0),
    )?;
    let valid_from = last_end.map_or(now, |end| end.max(now));
    let valid_until = valid_from.saturating_add(pass.duration_ms());
    let j = post(
        conn,
        Posting {
            kind: JournalKind::PassPurchase,
            rider,
            reference: pass.id.clone(),
            refund_of: None,
            memo: format!("Pass {} ({} days)", pass.name, pass.duration_days),
            entries: vec![
                (rider_account(rider), pass.price),
                (REVENUE_PASSES.to_owned(), -pass.price),
            ],
        },
        idem_key,
        &fingerprint,
        now,
    )?;
    conn.execute(
        "INSERT INTO rider_passes (journal_id, rider, pass_id, product, valid_from, valid_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![j.id, rider, pass.id, product, valid_from, valid_until],
    )?;
    sp.commit()?;
    let holding = PassHolding {
        journal_id: j.id,
        rider: rider.to_owned(),
        product: pass.clone(),
        valid_from,
        valid_until,
        cancelled_at: None,
    };
    Ok((j, holding))
}

fn holding_from_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(i64, String, String, i64, i64, Option<i64>)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode_holding(row: (i64, String, String, i64, i64, Option<i64>)) -> Result<PassHolding> {
    let (journal_id, rider, product, valid_from, valid_until, cancelled_at) = row;
    let product = serde_json::from_str(&product)
        .map_err(|e| Error::Corrupt(format!("pass of journal {journal_id}: {e}")))?;
    Ok(PassHolding {
        journal_id,
        rider,
        product,
        valid_from,
        valid_until,
        cancelled_at,
    })
}

const HOLDING_COLUMNS: &str = "journal_id, rider, product, valid_from, valid_until, cancelled_at";

fn load_holding(conn: &Connection, journal_id: i64) -> Result<Option<PassHolding>> {
    let row = conn
        .query_row(
            &format!("SELECT {HOLDING_COLUMNS} FROM rider_passes WHERE journal_id = ?1"),
            [journal_id],
            holding_from_row,
        )
        .optional()?;
    row.map(decode_holding).transpose()
}

/// The pass valid at `at` (ms since the epoch), if any: pass its product to
/// [`crate::pricing::FareInput::active_pass`] for a ride started at `at`.
pub fn active_pass(conn: &Connection, rider: &str, at: i64) -> Result<Option<PassHolding>> {
    let row = conn
        .query_row(
            &format!(
                "SELECT {HOLDING_COLUMNS} FROM rider_passes
                 WHERE rider = ?1 AND cancelled_at IS NULL AND valid_from <= ?2 AND ?2 < valid_until
                 ORDER BY valid_from LIMIT 1"
            ),
            params![rider, at],
            holding_from_row,
        )
        .optional()?;
    row.map(decode_holding).transpose()
}

/// Every pass the rider bought, oldest first (for the app and the PIPL export).
pub fn passes(conn: &Connection, rider: &str) -> Result<Vec<PassHolding>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {HOLDING_COLUMNS} FROM rider_passes WHERE rider = ?1 ORDER BY journal_id"
    ))?;
    let rows = stmt
        .query_map([rider], holding_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(decode_holding).collect()
}

/// Gives `amount` fen back to the rider's balance for a trip charge or a pass purchase, with a
/// reason shown on the statement. All refunds of one original together never exceed what it
/// charged (`refund_exceeds_charge`). The amount is taken back from fee revenue first, then
/// fares, then passes: a disputed trip is most often about its dispatch fee. A pass purchase
/// refunded in full cancels the pass.
///
/// A refund may take the balance above [`BALANCE_CAP`]: it returns the rider's own money, and
/// refusing it would be worse; the rider can have it paid out with [`payout`].
pub fn refund(
    conn: &Connection,
    rider: &str,
    amount: i64,
    reason: &str,
    of: &RefundOf,
    idem_key: &str,
    now: i64,
) -> Result<Journal> {
    check_rider(rider)?;
    check_amount(amount)?;
    check_text("reason", reason, 500)?;
    check_key(idem_key)?;
    if let RefundOf::Trip(trip) = of {
        check_ident("trip_id", trip, 64)?;
    }
    let fingerprint = json!(["refund", rider, amount, reason, of]).to_string();
    let sp = Savepoint::begin(conn)?;
    if let Some(j) = replay(conn, idem_key, &fingerprint)? {
        return Ok(j);
    }
    let original = match of {
        RefundOf::Trip(trip) => {
            let id = existing_reference(conn, JournalKind::Charge, trip)?
                .ok_or_else(|| Error::ChargeNotFound(trip.clone()))?;
            load_journal(conn, id)?.ok_or(Error::JournalNotFound(id))?
        }
        RefundOf::Journal(id) => load_journal(conn, *id)?.ok_or(Error::JournalNotFound(*id))?,
    };
    if !matches!(
        original.kind,
        JournalKind::Charge | JournalKind::PassPurchase
    ) {
        return Err(Error::NotRefundable {
            journal_id: original.id,
            kind: original.kind.as_str(),
        });
    }
    if original.rider != rider {
        return Err(Error::RiderMismatch {
            journal_id: original.id,
            rider: rider.to_owned(),
        });
    }
    // What is left to refund, per revenue account, in allocation order.
    let mut left = Vec::with_capacity(3);
    for account in [REVENUE_FEES, REVENUE_FARES, REVENUE_PASSES] {
        let charged: i64 = original
            .entries
            .iter()
            .filter(|e| e.account == account)
            .map(|e| -e.amount)
            .sum();
        let refunded: i64 = conn.query_row(
            "SELECT COALESCE(SUM(e.amount), 0) FROM entries e JOIN journal j ON j.id = e.journal_id
             WHERE j.refund_of = ?1 AND e.account = ?2",
            params![original.id, account],
            |r| r.get(0),
        )?;
        left.push((account, (charged - refunded).max(0)));
    }
    let refundable: i64 = left.iter().map(|(_, a)| a).sum();
    if amount > refundable {
        return Err(Error::RefundExceedsCharge {
            journal_id: original.id,
            requested: amount,
            refundable,
        });
    }
    let mut entries = vec![(rider_account(rider), -amount)];
    let mut rest = amount;
    for (account, available) in left {
        let take = rest.min(available);
        if take > 0 {
            entries.push((account.to_owned(), take));
            rest -= take;
        }
    }
    let j = post(
        conn,
        Posting {
            kind: JournalKind::Refund,
            rider,
            reference: original.reference.clone(),
            refund_of: Some(original.id),
            memo: format!("Refund for {}: {reason}", original.reference),
            entries,
        },
        idem_key,
        &fingerprint,
        now,
    )?;
    if original.kind == JournalKind::PassPurchase && amount == refundable {
        conn.execute(
            "UPDATE rider_passes SET cancelled_at = ?2 WHERE journal_id = ?1",
            params![original.id, now],
        )?;
    }
    sp.commit()?;
    Ok(j)
}

/// An operator's correction (see [`adjust`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    /// The rider.
    pub rider: String,
    /// Fen credited to the rider's balance; negative debits it.
    pub amount: i64,
    /// The revenue account on the other side.
    pub revenue: Revenue,
    /// Ticket, trip or other reference.
    pub reference: String,
    /// Why, shown on the rider's statement.
    pub memo: String,
}

/// Posts an operator's correction against a revenue account. A credit obeys the balance cap
/// like a top-up; a debit may take the balance below zero like a charge.
pub fn adjust(conn: &Connection, adj: &Adjustment, idem_key: &str, now: i64) -> Result<Journal> {
    let rider = adj.rider.as_str();
    let amount = adj.amount;
    check_rider(rider)?;
    check_amount(amount.saturating_abs())?;
    check_text("reference", &adj.reference, 128)?;
    check_text("memo", &adj.memo, 500)?;
    check_key(idem_key)?;
    let fingerprint = json!(["adjustment", adj]).to_string();
    let sp = Savepoint::begin(conn)?;
    if let Some(j) = replay(conn, idem_key, &fingerprint)? {
        return Ok(j);
    }
    if amount > 0 {
        check_cap(rider_balance(conn, rider)?, amount)?;
    }
    let j = post(
        conn,
        Posting {
            kind: JournalKind::Adjustment,
            rider,
            reference: adj.reference.clone(),
            refund_of: None,
            memo: adj.memo.clone(),
            entries: vec![
                (adj.revenue.account().to_owned(), amount),
                (rider_account(rider), -amount),
            ],
        },
        idem_key,
        &fingerprint,
        now,
    )?;
    sp.commit()?;
    Ok(j)
}

/// Returns `amount` fen of unused balance to the rider through `provider` (its transaction
/// `provider_ref`); never more than the balance (`insufficient_balance`). Riders may withdraw
/// their prepaid balance at any time; erasing an account needs a zero balance first.
pub fn payout(
    conn: &Connection,
    rider: &str,
    amount: i64,
    provider: &str,
    provider_ref: &str,
    idem_key: &str,
    now: i64,
) -> Result<Journal> {
    check_rider(rider)?;
    check_amount(amount)?;
    check_provider(provider)?;
    check_text("provider_ref", provider_ref, 128)?;
    check_key(idem_key)?;
    let fingerprint = json!(["payout", rider, amount, provider, provider_ref]).to_string();
    let sp = Savepoint::begin(conn)?;
    if let Some(j) = replay(conn, idem_key, &fingerprint)? {
        return Ok(j);
    }
    let reference = format!("{provider}:{provider_ref}");
    if let Some(journal_id) = existing_reference(conn, JournalKind::Payout, &reference)? {
        return Err(Error::DuplicateProviderRef {
            reference,
            journal_id,
        });
    }
    let balance = rider_balance(conn, rider)?;
    if amount > balance {
        return Err(Error::InsufficientBalance {
            balance,
            needed: amount,
        });
    }
    let j = post(
        conn,
        Posting {
            kind: JournalKind::Payout,
            rider,
            memo: format!("Payout via {provider} ({provider_ref})"),
            reference,
            refund_of: None,
            entries: vec![
                (rider_account(rider), amount),
                (clearing_account(provider), -amount),
            ],
        },
        idem_key,
        &fingerprint,
        now,
    )?;
    sp.commit()?;
    Ok(j)
}

/// Pays out through a synchronous `provider` (refund against `provider_ref`, the rider's
/// original payment, or a desk reference) and books it with [`payout`]. The balance is checked
/// before the provider moves money.
pub fn payout_with(
    conn: &Connection,
    provider: &dyn PaymentProvider,
    rider: &str,
    amount: i64,
    provider_ref: &ProviderRef,
    idem_key: &str,
    now: i64,
) -> Result<Journal> {
    check_rider(rider)?;
    check_amount(amount)?;
    check_key(idem_key)?;
    let already: Option<i64> = conn
        .query_row(
            "SELECT id FROM journal WHERE idempotency_key = ?1",
            [idem_key],
            |r| r.get(0),
        )
        .optional()?;
    if already.is_none() {
        let balance = rider_balance(conn, rider)?;
        if amount > balance {
            return Err(Error::InsufficientBalance {
                balance,
                needed: amount,
            });
        }
    }
    let reference = provider.refund(provider_ref, amount, idem_key)?;
    payout(
        conn,
        rider,
        amount,
        provider.name(),
        &reference.0,
        idem_key,
        now,
    )
}

/// The rider's statement, oldest first, with the running balance.
pub fn rider_statement(conn: &Connection, rider: &str) -> Result<Vec<JournalEntryView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT j.id, j.kind, j.created_at, j.reference, j.memo, -e.amount
         FROM journal j JOIN entries e ON e.journal_id = j.id AND e.account = ?2
         WHERE j.rider = ?1 ORDER BY j.id",
    )?;
    let rows = stmt
        .query_map(params![rider, rider_account(rider)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut running = 0i64;
    rows.into_iter()
        .map(|(journal_id, kind, created_at, reference, memo, amount)| {
            running = running.saturating_add(amount);
            Ok(JournalEntryView {
                journal_id,
                kind: JournalKind::parse(&kind)?,
                created_at,
                reference,
                memo,
                amount,
                balance_after: running,
            })
        })
        .collect()
}

/// Sum of every entry in the ledger; 0 unless the ledger is broken.
pub fn trial_balance(conn: &Connection) -> Result<i64> {
    Ok(
        conn.query_row("SELECT COALESCE(SUM(amount), 0) FROM entries", [], |r| {
            r.get(0)
        })?,
    )
}

/// Checks every journal: at least two entries, summing to zero, and no entry without a
/// journal. The first violation is returned as `ledger_unbalanced`; run it from a health check
/// or after a restore.
pub fn verify(conn: &Connection) -> Result<()> {
    let bad: Option<(i64, i64, i64)> = conn
        .query_row(
            "SELECT j.id, COALESCE(SUM(e.amount), 0), COUNT(e.amount)
             FROM journal j LEFT JOIN entries e ON e.journal_id = j.id
             GROUP BY j.id
             HAVING COALESCE(SUM(e.amount), 0) <> 0 OR COUNT(e.amount) < 2
             ORDER BY j.id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((journal_id, sum, entries)) = bad {
        return Err(Error::Unbalanced {
            journal_id,
            sum,
            entries,
        });
    }
    let orphan: Option<(i64, i64, i64)> = conn
        .query_row(
            "SELECT e.journal_id, SUM(e.amount), COUNT(*) FROM entries e
             WHERE NOT EXISTS (SELECT 1 FROM journal j WHERE j.id = e.journal_id)
             GROUP BY e.journal_id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((journal_id, sum, entries)) = orphan {
        return Err(Error::Unbalanced {
            journal_id,
            sum,
            entries,
        });
    }
    let total = trial_balance(conn)?;
    if total != 0 {
        return Err(Error::Unbalanced {
            journal_id: 0,
            sum: total,
            entries: 0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
