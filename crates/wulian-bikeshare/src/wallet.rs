//! Where riders, money and trips meet: who may ride, what a trip costs (daily cap, passes),
//! the charge in the ledger, and top-ups through a payment provider.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::ledger::{self, TripCharge};
use crate::pricing::{self, Fare, FareInput, PassProduct, PricingPlan};

/// Riders belong to one tenant (the operator they signed up with); the riders table itself is
/// tenant-agnostic, this mapping keeps tenants apart.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rider_tenants (
    rider TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS rider_tenants_tenant ON rider_tenants(tenant, rider);
";

/// China Standard Time, the one time zone of the country (no daylight saving); used for the
/// "local day" of daily caps when a system's time zone is Asia/Shanghai.
pub fn utc_offset_minutes(timezone: &str) -> i32 {
    match timezone {
        "Asia/Shanghai" | "Asia/Chongqing" | "Asia/Harbin" | "Asia/Urumqi" | "Asia/Hong_Kong"
        | "Asia/Macau" | "Asia/Taipei" | "Asia/Singapore" => 480,
        "Asia/Tokyo" | "Asia/Seoul" => 540,
        _ => 0,
    }
}

pub fn bind_rider(conn: &Connection, tenant: &str, rider: &str, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO rider_tenants (rider, tenant, created_at) VALUES (?1, ?2, ?3)",
        params![rider, tenant, now],
    )?;
    Ok(())
}

/// Whether `rider` belongs to `tenant`; a rider of another tenant is "not found".
pub fn check_tenant(conn: &Connection, tenant: &str, rider: &str) -> Result<()> {
    let found: Option<String> = conn
        .query_row(
            "SELECT tenant FROM rider_tenants WHERE rider = ?1",
            params![rider],
            |r| r.get(0),
        )
        .optional()?;
    if found.as_deref() == Some(tenant) {
        Ok(())
    } else {
        Err(Error::not_found(
            "rider_not_found",
            format!("no rider {rider}"),
        ))
    }
}

pub fn tenant_riders(
    conn: &Connection,
    tenant: &str,
    limit: u32,
    after: Option<&str>,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT rider FROM rider_tenants WHERE tenant = ?1 AND (?2 IS NULL OR rider > ?2)
         ORDER BY rider LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![tenant, after, limit.clamp(1, 1000)], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(rows)
}

/// Refuses a rider who may not start a trip: unknown, suspended or erased, or owing money.
pub fn check_can_ride(conn: &Connection, tenant: &str, rider: &str) -> Result<()> {
    check_tenant(conn, tenant, rider)?;
    let r = crate::riders::get(conn, rider)?
        .ok_or_else(|| Error::not_found("rider_not_found", format!("no rider {rider}")))?;
    if r.status != crate::riders::RiderStatus::Active {
        return Err(Error::forbidden(
            "rider_not_active",
            "this account cannot rent bikes",
        ));
    }
    let balance = ledger::rider_balance(conn, rider)?;
    if !ledger::can_start_trip(balance) {
        return Err(Error::forbidden(
            "balance_negative",
            format!(
                "the balance is {}; top up before the next ride",
                pricing::format_amount(balance, ledger::CURRENCY)
            ),
        ));
    }
    Ok(())
}

pub fn location_consent(conn: &Connection, rider: &str) -> Result<bool> {
    Ok(crate::riders::get(conn, rider)?.is_some_and(|r| r.location_consent))
}

/// Prices a finished trip: the rider's other ride charges of the same local day count towards
/// the daily cap; a pass valid at the unlock applies.
#[allow(clippy::too_many_arguments)]
pub fn price_trip(
    conn: &Connection,
    rider: &str,
    plan: &PricingPlan,
    passes: &[PassProduct],
    unlocked_at: i64,
    duration_ms: i64,
    out_of_fence: bool,
    utc_offset: i32,
) -> Result<Fare> {
    let day = pricing::local_day(unlocked_at, utc_offset);
    let day_start = day * 86_400_000 - i64::from(utc_offset) * 60_000;
    let already: i64 = conn.query_row(
        "SELECT COALESCE(SUM(ride_charge), 0) FROM trips WHERE rider = ?1 AND state = 'settled'
           AND unlocked_at >= ?2 AND unlocked_at < ?3",
        params![rider, day_start, day_start + 86_400_000],
        |r| r.get(0),
    )?;
    let holding = ledger::active_pass(conn, rider, unlocked_at)?;
    // The pass as bought (its terms), falling back to the current product of the same id.
    let pass = holding.map(|h| h.product).or(None);
    let _ = passes;
    Ok(pricing::fare(
        plan,
        &FareInput {
            duration_ms,
            out_of_fence,
            already_charged_today: already,
            active_pass: pass.as_ref(),
        },
    ))
}

/// Books a trip's fare; a free ride posts nothing (`None`).
pub fn charge(
    conn: &Connection,
    rider: &str,
    trip_id: &str,
    fare: &Fare,
    now: i64,
) -> Result<Option<i64>> {
    if fare.total == 0 {
        return Ok(None);
    }
    let journal = ledger::charge_trip(
        conn,
        rider,
        trip_id,
        TripCharge::from(fare),
        &format!("trip:{trip_id}"),
        now,
    )?;
    Ok(Some(journal.id))
}

/// The payment provider for demos and test systems: it approves every capture and refund and
/// moves no money. A system uses it only when its settings say `payments_sandbox: true`
/// (`wulian demo` does); the ledger books its top-ups to `clearing:sandbox`, so they are
/// never confused with real money.
#[derive(Debug, Default)]
pub struct SandboxProvider;

impl ledger::PaymentProvider for SandboxProvider {
    fn name(&self) -> &str {
        "sandbox"
    }

    fn capture(
        &self,
        rider: &str,
        amount: i64,
        idem_key: &str,
    ) -> ledger::Result<ledger::ProviderRef> {
        Ok(ledger::ProviderRef(format!(
            "sbx-{}",
            short_hash(&[rider, &amount.to_string(), idem_key])
        )))
    }

    fn refund(
        &self,
        provider_ref: &ledger::ProviderRef,
        amount: i64,
        idem_key: &str,
    ) -> ledger::Result<ledger::ProviderRef> {
        Ok(ledger::ProviderRef(format!(
            "sbx-r-{}",
            short_hash(&[&provider_ref.0, &amount.to_string(), idem_key])
        )))
    }
}

fn short_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..12])
}
