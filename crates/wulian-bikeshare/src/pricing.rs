//! Pricing plans, ride passes and fares.
//!
//! Money is always an `i64` in the currency's minor unit (fen for CNY): floats round, and a fare
//! that is off by one fen is a complaint to the city. The only place money becomes a float is
//! [`to_gbfs`], because GBFS publishes prices as JSON numbers in major units.
//!
//! A fare is an itemised list of [`FareLine`]s whose amounts add up to [`Fare::total`], so the
//! rider sees exactly why they paid what they paid, and the ledger can book the ride charge and
//! the dispatch fee to different revenue accounts ([`Fare::ride_charge`], [`Fare::fees`]).
//!
//! Fare rules, in the order they apply:
//! 1. **Unlock fee** once per ride.
//! 2. **Time**: after the plan's `free_minutes`, every *started* `period_minutes` costs
//!    `period_price`. Period boundaries are exclusive: a ride of exactly 15:00.000 is one
//!    15-minute period, 15:00.001 is two.
//! 3. **Pass**: a rider holding a valid [`PassProduct`] pays no unlock fee and the first
//!    `free_minutes_per_ride` minutes of every ride are free (the larger of the pass's and the
//!    plan's free minutes applies; they do not add up).
//! 4. **Daily cap**: what a rider pays for rides *started* on one local day never exceeds
//!    `daily_cap`; the part of this ride above what is left of the cap is discounted.
//! 5. **Dispatch fee** when the bike is left outside a parking fence. It is not a ride charge, so
//!    the daily cap never reduces it and it does not count towards the cap.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Result of pricing operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Milliseconds in a minute.
const MINUTE_MS: i64 = 60_000;

/// Upper bound of any single price in a plan or pass, in minor units (¥10,000 for CNY). A price
/// above it is a typo (fen entered as yuan × 100 twice), not a pricing decision.
pub const MAX_PRICE: i64 = 1_000_000;

/// Longest period or free allowance, in minutes (one day).
pub const MAX_MINUTES: u32 = 24 * 60;

/// Longest pass validity, in days.
pub const MAX_PASS_DAYS: u32 = 366;

/// Why a plan, a pass or a GBFS rendering request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A field of a pricing plan is out of range or malformed.
    #[error("invalid pricing plan: {field} {reason}")]
    InvalidPlan {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A field of a pass product is out of range or malformed.
    #[error("invalid pass product: {field} {reason}")]
    InvalidPass {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The currency is not one whose minor unit we know.
    #[error("unsupported currency {0:?}: use an ISO 4217 code such as \"CNY\"")]
    UnsupportedCurrency(String),
    /// The language tag does not match the GBFS pattern `^[a-z]{2,3}(-[A-Z]{2})?$`.
    #[error("invalid language tag {0:?}: GBFS expects a tag such as \"zh-CN\" or \"en\"")]
    InvalidLanguage(String),
}

impl Error {
    /// Stable machine-readable code for the API's problem+json `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidPlan { .. } => "invalid_pricing_plan",
            Error::InvalidPass { .. } => "invalid_pass_product",
            Error::UnsupportedCurrency(_) => "unsupported_currency",
            Error::InvalidLanguage(_) => "invalid_language",
        }
    }
}

/// Number of decimal places of a currency's minor unit (ISO 4217), for the currencies an
/// operator in the region plausibly uses. `None` for anything else, which validation refuses:
/// guessing the exponent would publish prices off by a factor of 100.
pub fn minor_unit_exponent(currency: &str) -> Option<u32> {
    match currency {
        "CNY" | "HKD" | "MOP" | "TWD" | "USD" | "EUR" | "GBP" | "SGD" | "MYR" | "THB" | "AUD"
        | "CAD" | "CHF" => Some(2),
        "JPY" | "KRW" | "VND" => Some(0),
        _ => None,
    }
}

/// Renders minor units as a decimal string with the currency code, e.g. `"1.50 CNY"`, for fare
/// line descriptions and error messages. Unknown currencies are rendered with two decimals.
pub fn format_amount(minor: i64, currency: &str) -> String {
    let exp = minor_unit_exponent(currency).unwrap_or(2);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if exp == 0 {
        return format!("{sign}{abs} {currency}");
    }
    let scale = 10u64.pow(exp);
    format!(
        "{sign}{}.{:0width$} {currency}",
        abs / scale,
        abs % scale,
        width = exp as usize
    )
}

/// Minor units as a JSON number in major units (GBFS prices). Exact for every amount below 2^53
/// minor units, which [`MAX_PRICE`] guarantees.
fn major_units(minor: i64, currency: &str) -> Value {
    let exp = minor_unit_exponent(currency).unwrap_or(2);
    if exp == 0 {
        return json!(minor);
    }
    // Division by a power of ten gives the shortest decimal representation back (1.5, 0.1).
    json!(minor as f64 / 10f64.powi(exp as i32))
}

/// The local calendar day (days since 1970-01-01) of a timestamp, for grouping a rider's rides
/// by "local day" when computing [`FareInput::already_charged_today`]. China has one time zone
/// and no daylight saving time, so a fixed offset (`480` minutes, UTC+8) is exact there.
pub fn local_day(ts_ms: i64, utc_offset_minutes: i32) -> i64 {
    ts_ms
        .saturating_add(i64::from(utc_offset_minutes) * MINUTE_MS)
        .div_euclid(24 * 60 * MINUTE_MS)
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("may only contain ASCII letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

fn check_text(text: &str, max_chars: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().count() > max_chars {
        return Err(format!("must be at most {max_chars} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn check_price(value: i64) -> Result<(), String> {
    if value < 0 {
        return Err("must not be negative".into());
    }
    if value > MAX_PRICE {
        return Err(format!("must be at most {MAX_PRICE} minor units"));
    }
    Ok(())
}

/// A pricing plan: what a ride costs. Serialized as-is in the admin API and configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PricingPlan {
    /// Stable identifier, also the GBFS `plan_id`.
    pub id: String,
    /// Name shown to riders.
    pub name: String,
    /// ISO 4217 currency code ("CNY").
    pub currency: String,
    /// Charged once per ride, in minor units.
    pub unlock_fee: i64,
    /// Length of a billing period in minutes.
    pub period_minutes: u32,
    /// Price of every *started* period, in minor units.
    pub period_price: i64,
    /// Grace minutes at the start of a ride that cost nothing (0 for none).
    #[serde(default)]
    pub free_minutes: u32,
    /// Most a rider pays for the rides started on one local day (dispatch fees excluded).
    #[serde(default)]
    pub daily_cap: Option<i64>,
    /// Fee for leaving the bike outside a parking fence (the operator must fetch it).
    #[serde(default)]
    pub dispatch_fee: i64,
    /// Rider-facing description of the plan.
    pub description: String,
}

impl PricingPlan {
    /// Checks every field, so that a plan in the database or the feed is never nonsense
    /// (negative prices, zero-length periods, a currency whose decimals we do not know).
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason| Error::InvalidPlan { field, reason };
        check_id(&self.id).map_err(|r| invalid("id", r))?;
        check_text(&self.name, 100).map_err(|r| invalid("name", r))?;
        check_text(&self.description, 1000).map_err(|r| invalid("description", r))?;
        if minor_unit_exponent(&self.currency).is_none() {
            return Err(Error::UnsupportedCurrency(self.currency.clone()));
        }
        check_price(self.unlock_fee).map_err(|r| invalid("unlock_fee", r))?;
        check_price(self.period_price).map_err(|r| invalid("period_price", r))?;
        check_price(self.dispatch_fee).map_err(|r| invalid("dispatch_fee", r))?;
        if self.period_minutes == 0 || self.period_minutes > MAX_MINUTES {
            return Err(invalid(
                "period_minutes",
                format!("must be between 1 and {MAX_MINUTES}"),
            ));
        }
        if self.free_minutes > MAX_MINUTES {
            return Err(invalid(
                "free_minutes",
                format!("must be at most {MAX_MINUTES}"),
            ));
        }
        if let Some(cap) = self.daily_cap {
            if cap <= 0 {
                return Err(invalid(
                    "daily_cap",
                    "must be positive (omit it for no cap)".into(),
                ));
            }
            if cap > MAX_PRICE {
                return Err(invalid(
                    "daily_cap",
                    format!("must be at most {MAX_PRICE} minor units"),
                ));
            }
        }
        Ok(())
    }

    /// Time charge for a ride of `duration_ms` when the first `free_minutes` are free.
    /// Robust against an unvalidated plan (a zero period counts as one minute).
    fn time_charge(&self, duration_ms: i64, free_minutes: u32) -> (i64, i64) {
        let free_ms = i64::from(free_minutes) * MINUTE_MS;
        if duration_ms <= free_ms {
            return (0, 0);
        }
        let billable = duration_ms - free_ms;
        let period_ms = i64::from(self.period_minutes.max(1)) * MINUTE_MS;
        // Ceiling division without overflow: billable > 0.
        let periods = (billable - 1) / period_ms + 1;
        (periods, periods.saturating_mul(self.period_price.max(0)))
    }
}

/// A ride pass product (e.g. a monthly card): bought from the rider's balance, it waives the
/// unlock fee and makes the first minutes of every ride free while it is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassProduct {
    /// Stable identifier.
    pub id: String,
    /// Name shown to riders.
    pub name: String,
    /// Price in minor units of the plan's currency.
    pub price: i64,
    /// Validity from purchase, in days.
    pub duration_days: u32,
    /// Free minutes at the start of every ride during validity.
    pub free_minutes_per_ride: u32,
}

impl PassProduct {
    /// Checks every field, for the same reason as [`PricingPlan::validate`].
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason| Error::InvalidPass { field, reason };
        check_id(&self.id).map_err(|r| invalid("id", r))?;
        check_text(&self.name, 100).map_err(|r| invalid("name", r))?;
        check_price(self.price).map_err(|r| invalid("price", r))?;
        if self.price == 0 {
            return Err(invalid("price", "must be positive".into()));
        }
        if self.duration_days == 0 || self.duration_days > MAX_PASS_DAYS {
            return Err(invalid(
                "duration_days",
                format!("must be between 1 and {MAX_PASS_DAYS}"),
            ));
        }
        if self.free_minutes_per_ride > MAX_MINUTES {
            return Err(invalid(
                "free_minutes_per_ride",
                format!("must be at most {MAX_MINUTES}"),
            ));
        }
        Ok(())
    }

    /// Validity in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        i64::from(self.duration_days) * 24 * 60 * MINUTE_MS
    }
}

/// What [`fare`] needs to know about a finished ride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FareInput<'a> {
    /// Ride duration in milliseconds (unlock confirmation to lock). Negative counts as zero.
    pub duration_ms: i64,
    /// The bike was left outside every parking fence.
    pub out_of_fence: bool,
    /// Sum of [`Fare::ride_charge`] of the rider's other rides started on the same local day
    /// (see [`local_day`]); only used for the daily cap.
    pub already_charged_today: i64,
    /// The pass valid when the ride started, if any. The caller checks validity.
    pub active_pass: Option<&'a PassProduct>,
}

/// Kind of a fare line; serialized in snake case ("unlock", "time", …), which apps use to
/// localize the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FareLineKind {
    /// The unlock fee.
    Unlock,
    /// Started periods after the free minutes.
    Time,
    /// Negative: unlock fee and time covered by a pass.
    PassDiscount,
    /// Negative: the part above the daily cap.
    CapDiscount,
    /// Out-of-fence parking fee.
    DispatchFee,
}

impl FareLineKind {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            FareLineKind::Unlock => "unlock",
            FareLineKind::Time => "time",
            FareLineKind::PassDiscount => "pass_discount",
            FareLineKind::CapDiscount => "cap_discount",
            FareLineKind::DispatchFee => "dispatch_fee",
        }
    }
}

/// One line of a fare; discounts are negative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FareLine {
    /// What the line is for.
    pub kind: FareLineKind,
    /// Signed amount in minor units.
    pub amount: i64,
    /// English explanation with the numbers; apps localize by `kind`.
    pub description: String,
}

/// An itemised fare. `total` is always the sum of the line amounts and never negative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fare {
    /// Currency of every amount.
    pub currency: String,
    /// The lines, in the order the rules applied.
    pub lines: Vec<FareLine>,
    /// What the rider pays.
    pub total: i64,
}

impl Fare {
    /// The ride charge: everything except the dispatch fee. This is what counts towards the
    /// daily cap and what the ledger books as fare revenue.
    pub fn ride_charge(&self) -> i64 {
        self.lines
            .iter()
            .filter(|l| l.kind != FareLineKind::DispatchFee)
            .map(|l| l.amount)
            .fold(0i64, i64::saturating_add)
    }

    /// Fees (the dispatch fee), booked as fee revenue.
    pub fn fees(&self) -> i64 {
        self.lines
            .iter()
            .filter(|l| l.kind == FareLineKind::DispatchFee)
            .map(|l| l.amount)
            .fold(0i64, i64::saturating_add)
    }
}

/// Prices a finished ride under `plan`. Never fails and never panics: invalid inputs are
/// clamped (negative duration → 0, negative amounts → 0) and arithmetic saturates, because a
/// ride that already happened must get a fare. Validate plans when they are stored.
pub fn fare(plan: &PricingPlan, input: &FareInput<'_>) -> Fare {
    let cur = plan.currency.as_str();
    let duration = input.duration_ms.max(0);
    let unlock_fee = plan.unlock_fee.max(0);
    let mut lines = Vec::with_capacity(5);

    if unlock_fee > 0 {
        lines.push(FareLine {
            kind: FareLineKind::Unlock,
            amount: unlock_fee,
            description: format!("Unlock fee {}", format_amount(unlock_fee, cur)),
        });
    }

    let (periods, gross_time) = plan.time_charge(duration, plan.free_minutes);
    let free_note = if plan.free_minutes > 0 {
        format!(" after {} free min", plan.free_minutes)
    } else {
        String::new()
    };
    lines.push(FareLine {
        kind: FareLineKind::Time,
        amount: gross_time,
        description: format!(
            "{periods} started period(s) of {} min{free_note} at {}",
            plan.period_minutes,
            format_amount(plan.period_price.max(0), cur)
        ),
    });

    let mut ride = unlock_fee.saturating_add(gross_time);

    if let Some(pass) = input.active_pass {
        let free = pass.free_minutes_per_ride.max(plan.free_minutes);
        let (_, with_pass) = plan.time_charge(duration, free);
        let discount = unlock_fee.saturating_add(gross_time - with_pass);
        if discount > 0 {
            lines.push(FareLine {
                kind: FareLineKind::PassDiscount,
                amount: -discount,
                description: format!("{}: unlock fee waived, first {} min free", pass.name, free),
            });
            ride -= discount;
        }
    }

    if let Some(cap) = plan.daily_cap {
        let remaining = cap
            .max(0)
            .saturating_sub(input.already_charged_today.max(0))
            .max(0);
        if ride > remaining {
            let discount = ride - remaining;
            lines.push(FareLine {
                kind: FareLineKind::CapDiscount,
                amount: -discount,
                description: format!(
                    "Daily cap {} reached ({} already charged today)",
                    format_amount(cap, cur),
                    format_amount(input.already_charged_today.max(0), cur)
                ),
            });
            ride = remaining;
        }
    }

    let mut total = ride;
    let dispatch_fee = plan.dispatch_fee.max(0);
    if input.out_of_fence && dispatch_fee > 0 {
        lines.push(FareLine {
            kind: FareLineKind::DispatchFee,
            amount: dispatch_fee,
            description: format!(
                "Parked outside a parking area: dispatch fee {}",
                format_amount(dispatch_fee, cur)
            ),
        });
        total = total.saturating_add(dispatch_fee);
    }

    Fare {
        currency: plan.currency.clone(),
        lines,
        total,
    }
}

/// Checks a language tag against the GBFS pattern `^[a-z]{2,3}(-[A-Z]{2})?$`.
fn gbfs_language_ok(lang: &str) -> bool {
    let (primary, region) = match lang.split_once('-') {
        Some((p, r)) => (p, Some(r)),
        None => (lang, None),
    };
    let primary_ok =
        (2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_lowercase());
    let region_ok =
        region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()));
    primary_ok && region_ok
}

/// Renders `plan` as one entry of GBFS 3.0 `system_pricing_plans.json` `data.plans[]`, with
/// `name` and `description` tagged with `language` (e.g. "zh-CN").
///
/// `price` is the unlock fee; the time price becomes one `per_min_pricing` segment starting
/// at the free minutes and charging `period_price` for each `period_minutes` interval, which is
/// how GBFS expresses a price per started period (minute resolution: GBFS cannot say that the
/// boundary itself is exclusive). A plan whose time is free has no segment. GBFS has no field
/// for a daily cap or a dispatch fee: say so in the plan's description, as the defaults do.
///
/// Refused with `invalid_language` for a tag GBFS does not accept (e.g. "zh-Hans"), and with
/// the validation errors of [`PricingPlan::validate`]: an invalid plan is never published.
pub fn to_gbfs(plan: &PricingPlan, language: &str) -> Result<Value> {
    plan.validate()?;
    if !gbfs_language_ok(language) {
        return Err(Error::InvalidLanguage(language.to_owned()));
    }
    let cur = plan.currency.as_str();
    let mut entry = json!({
        "plan_id": plan.id,
        "name": [{"text": plan.name, "language": language}],
        "currency": plan.currency,
        "price": major_units(plan.unlock_fee, cur),
        "is_taxable": false,
        "description": [{"text": plan.description, "language": language}],
        "surge_pricing": false,
    });
    if plan.period_price > 0 {
        entry["per_min_pricing"] = json!([{
            "start": plan.free_minutes,
            "rate": major_units(plan.period_price, cur),
            "interval": plan.period_minutes,
        }]);
    }
    Ok(entry)
}

/// Defaults for a Chinese city, in line with what the large operators charge and what city
/// regulators accept (no deposit, low transparent time price, a daily ceiling):
///
/// - plan `standard`: no unlock fee, ¥1.50 per started 15 minutes, ¥20 daily cap, ¥5 dispatch
///   fee for parking outside a fence;
/// - pass `monthly`: ¥20 for 30 days, the first 2 hours of every ride free;
/// - pass `weekly`: ¥7 for 7 days, the first 2 hours of every ride free.
pub fn default_plans() -> (Vec<PricingPlan>, Vec<PassProduct>) {
    let plans = vec![PricingPlan {
        id: "standard".into(),
        name: "标准计费".into(),
        currency: "CNY".into(),
        unlock_fee: 0,
        period_minutes: 15,
        period_price: 150,
        free_minutes: 0,
        daily_cap: Some(2000),
        dispatch_fee: 500,
        description: "每15分钟1.5元，不足15分钟按15分钟计；每日骑行费用封顶20元；\
                      停放在停车区外收取调度费5元。无押金。"
            .into(),
    }];
    let passes = vec![
        PassProduct {
            id: "monthly".into(),
            name: "月卡".into(),
            price: 2000,
            duration_days: 30,
            free_minutes_per_ride: 120,
        },
        PassProduct {
            id: "weekly".into(),
            name: "周卡".into(),
            price: 700,
            duration_days: 7,
            free_minutes_per_ride: 120,
        },
    ];
    (plans, passes)
}

#[cfg(test)]
mod tests;
