//! Simulated riders: people who use the bike share's rider REST API over HTTP exactly as the
//! rider app does (crates/wulian-bikeshare/src/api/rider.rs) — sign up under a real name, top
//! up the wallet, look for bikes nearby, rent one, wait while the simulated lock carries them
//! and parks, and now and then reopen a lock parked outside a fence to move the bike. With
//! [`crate::run`]'s locks they make a living bike share for demos and end-to-end checks.
//!
//! **Demand.** Trips start as a Poisson process whose rate follows a working day's curve
//! ([`demand`]: peaks around 08:00 and 18:00 local time, a midday plateau, quiet nights),
//! scaled to [`RiderConfig::peak_trips_per_hour`]. Simulated time runs
//! [`RiderConfig::time_scale`] times faster than the wall clock from the start (or from
//! [`RiderConfig::start_at_ms`]); give it the locks' [`crate::CityConfig::time_scale`] so rides
//! and the day keep the same pace. A wish to ride goes to a random rider without a trip; when
//! every rider is busy it is counted (`no_idle_rider`) and dropped.
//!
//! **A trip.** The rider signs up on their first trip (and tops up), appears near a parking
//! spot or anywhere in the city, asks for bikes within 500 m, takes the nearest (mostly) and
//! rents it with a fresh `Idempotency-Key` — retried once with the same key when the network
//! fails, which must return the same trip. A bike that is taken, offline or flat (409) makes
//! the rider try the next one once; other refusals end the wish. While the trip is live the
//! rider polls it; a trip held outside a parking fence (`ending` with a grace deadline) is
//! resumed with [`RiderConfig::resume_prob`]. The rider rents again only after the trip is
//! `settled` or `failed`. Before renting, a rider whose balance may be low asks `GET /me` and
//! tops up below [`RiderConfig::low_balance`].
//!
//! **Identities.** Each rider has a realistic identity — a mainland mobile number, a Chinese
//! name, an 18-character resident identity number with a valid ISO 7064 MOD 11-2 check
//! character and a birth date making them 16–69 — derived from the seed, the rider's index and
//! a run nonce. Nothing is persisted: the nonce defaults to the start time, so a restart against
//! the same data directory signs up new riders rather than trying to sign in as the old ones
//! (the rider API has no password sign-in). Phone numbers are unique within a run by
//! construction and identity numbers by check; a sign-up refused as `phone_taken` or
//! `id_number_registered` derives the rider's next identity and tries again.
//!
//! **Concurrency.** The HTTP client is blocking (`ureq`, plain HTTP only) and runs on a pool
//! of [`RiderConfig::max_in_flight`] threads of its own, so at most that many requests are in
//! flight. Each rider on a trip is a small task that mostly sleeps. On shutdown [`run`]
//! returns at once; requests already sent finish in the background within
//! [`RiderConfig::http_timeout`] on the detached workers, which hold up neither the runtime's
//! shutdown nor the process's exit.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wulian_bikeshare::riders::{CivilDate, id_check_char};
use wulian_common::time::now_ms;

use crate::config::MAX_TIME_SCALE;
use crate::rng::Rng;

/// Trips per bike per day in a busy Chinese city (operators report 3–5), for
/// [`RiderConfig::for_fleet`].
pub const TRIPS_PER_BIKE_PER_DAY: f64 = 4.0;

/// Wishes to ride per real second at most, whatever the settings: beyond it the dispatcher
/// would only spin.
const MAX_ARRIVALS_PER_S: f64 = 500.0;
/// Identities a sign-up goes through before the rider gives up (each refused as taken).
const SIGN_UP_TRIES: u32 = 5;
/// Failed looks at a live trip in a row before the rider stops watching it (a later rental
/// finds it again as `trip_in_progress`).
const MAX_POLL_FAILURES: u32 = 20;
/// Riders who appear near a parking spot stand within this many metres of it.
const NEAR_SPOT_M: f64 = 150.0;
/// Bikes asked for in one search.
const NEARBY_LIMIT: usize = 10;
/// Metres per degree of latitude (as the locks use).
const M_PER_DEG: f64 = 111_320.0;
/// Unlock latencies are counted in buckets of this many milliseconds, up to
/// `LATENCY_BUCKETS - 1` of them; slower ones share the last.
const LATENCY_BUCKET_MS: u64 = 10;
const LATENCY_BUCKETS: usize = 1_501;

/// How the simulated riders behave. [`RiderConfig::default`] is [`RiderConfig::for_fleet`] of
/// 2,000 bikes; [`RiderConfig::problems`] names settings out of range.
#[derive(Debug, Clone, PartialEq)]
pub struct RiderConfig {
    /// People using the app. Each has at most one trip at a time, so this bounds the trips
    /// running at once.
    pub riders: usize,
    /// Trips wished for per simulated hour across the city at the busiest moment of the day;
    /// [`demand`] scales it through the day.
    pub peak_trips_per_hour: f64,
    /// Simulated seconds per real second: use the locks' `CityConfig::time_scale`.
    /// 0 < `time_scale` ≤ [`MAX_TIME_SCALE`].
    pub time_scale: f64,
    /// Local time is UTC plus this (China: 480).
    pub utc_offset_minutes: i32,
    /// Seeds the riders' identities and choices.
    pub seed: u64,
    /// One top-up, in fen (the wallet holds at most `wulian_bikeshare::ledger::BALANCE_CAP`).
    pub top_up: i64,
    /// A rider tops up before renting when the balance is below this (fen).
    pub low_balance: i64,
    /// Riders who do not start near a parking spot appear within this many metres of the
    /// city's centre.
    pub city_radius_m: f64,
    /// The share of riders who appear near a parking spot (within 150 m) rather than
    /// anywhere in the city.
    pub near_spot_prob: f64,
    /// How far the app looks for bikes (metres).
    pub nearby_radius_m: f64,
    /// The share of riders who take the nearest bike; the others take the second or third.
    pub nearest_prob: f64,
    /// The chance that a rider whose trip is held outside a parking fence reopens the lock to
    /// move the bike (`POST /trips/{id}/resume`).
    pub resume_prob: f64,
    /// The share of riders who consent to location processing at sign-up.
    pub location_consent_prob: f64,
    /// Requests in flight at once: the number of HTTP worker threads (at most one per rider).
    pub max_in_flight: usize,
    /// Real time between two looks at a live trip.
    pub poll_interval: Duration,
    /// Longest wait for one request; above the bike share's unlock timeout (10 s by
    /// default), since renting waits for the lock.
    pub http_timeout: Duration,
    /// How often the counters are logged.
    pub log_interval: Duration,
    /// Mixed into every identity; `None`: the start time in milliseconds, so that each run
    /// signs up new people. Fix it for reproducible identities.
    pub identity_nonce: Option<u64>,
    /// The simulated day starts at this wall-clock time (ms since the epoch), e.g. a morning
    /// to begin with the rush; `None`: now.
    pub start_at_ms: Option<i64>,
}

impl Default for RiderConfig {
    fn default() -> RiderConfig {
        RiderConfig::for_fleet(2_000)
    }
}

impl RiderConfig {
    /// Settings for a fleet of `bikes`: half as many riders, and a peak that makes every bike
    /// do [`TRIPS_PER_BIKE_PER_DAY`] trips a day.
    pub fn for_fleet(bikes: usize) -> RiderConfig {
        RiderConfig {
            riders: (bikes / 2).max(1),
            peak_trips_per_hour: TRIPS_PER_BIKE_PER_DAY * bikes as f64 / demand_hours_per_day(),
            time_scale: 1.0,
            utc_offset_minutes: 480,
            seed: 2026,
            top_up: 5_000,
            low_balance: 500,
            city_radius_m: 4_000.0,
            near_spot_prob: 0.6,
            nearby_radius_m: 500.0,
            nearest_prob: 0.8,
            resume_prob: 0.3,
            location_consent_prob: 0.95,
            max_in_flight: 64,
            poll_interval: Duration::from_secs(3),
            http_timeout: Duration::from_secs(30),
            log_interval: Duration::from_secs(60),
            identity_nonce: None,
            start_at_ms: None,
        }
    }

    /// Every problem with the settings, as `field: reason`; empty when they are usable.
    /// [`run`] runs with whatever it is given, clamping values out of range.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.time_scale > 0.0 && self.time_scale <= MAX_TIME_SCALE) {
            problems.push(format!(
                "time_scale: must be above 0 and at most {MAX_TIME_SCALE}"
            ));
        }
        if !(self.peak_trips_per_hour.is_finite() && self.peak_trips_per_hour >= 0.0) {
            problems.push("peak_trips_per_hour: must be 0 or more".into());
        }
        if !(-14 * 60..=14 * 60).contains(&self.utc_offset_minutes) {
            problems.push("utc_offset_minutes: must be between -840 and 840".into());
        }
        if self.top_up <= 0 {
            problems.push("top_up: must be above 0".into());
        }
        for (field, metres) in [
            ("city_radius_m", self.city_radius_m),
            ("nearby_radius_m", self.nearby_radius_m),
        ] {
            if !(metres.is_finite() && metres > 0.0) {
                problems.push(format!("{field}: must be above 0"));
            }
        }
        for (field, p) in [
            ("near_spot_prob", self.near_spot_prob),
            ("nearest_prob", self.nearest_prob),
            ("resume_prob", self.resume_prob),
            ("location_consent_prob", self.location_consent_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                problems.push(format!("{field}: must be between 0 and 1"));
            }
        }
        if self.max_in_flight == 0 {
            problems.push("max_in_flight: must be at least 1".into());
        }
        for (field, d) in [
            ("poll_interval", self.poll_interval),
            ("http_timeout", self.http_timeout),
            ("log_interval", self.log_interval),
        ] {
            if d.is_zero() {
                problems.push(format!("{field}: must be above 0"));
            }
        }
        problems
    }

    fn effective_time_scale(&self) -> f64 {
        if self.time_scale.is_nan() {
            1.0
        } else {
            self.time_scale.clamp(0.001, MAX_TIME_SCALE)
        }
    }
}

/// How many of the day's trips start at local hour `local_hour` (0–24, fractions allowed),
/// relative to the busiest moment (1.0, the morning rush around 08:00): a second peak around
/// 18:00, a midday plateau near 0.4, an evening tail, about 3 % at night.
pub fn demand(local_hour: f64) -> f64 {
    if !local_hour.is_finite() {
        return 0.0;
    }
    (raw_demand(local_hour.rem_euclid(24.0)) / *DEMAND_PEAK).min(1.0)
}

/// The day's trips in hours at peak demand (the integral of [`demand`] over a day, about
/// 8.9): trips per day = `peak_trips_per_hour` × this.
pub fn demand_hours_per_day() -> f64 {
    *DEMAND_HOURS
}

/// The curve before it is scaled to a peak of 1: a floor and Gaussian bumps on the clock.
fn raw_demand(hour: f64) -> f64 {
    let bump = |centre: f64, width: f64| {
        let d = (hour - centre + 12.0).rem_euclid(24.0) - 12.0;
        (-0.5 * (d / width).powi(2)).exp()
    };
    0.03 + 0.95 * bump(8.0, 1.0)
        + 0.9 * bump(18.0, 1.3)
        + 0.35 * bump(13.0, 3.5)
        + 0.15 * bump(21.0, 2.0)
}

static DEMAND_PEAK: LazyLock<f64> = LazyLock::new(|| {
    (0..24 * 60)
        .map(|m| raw_demand(m as f64 / 60.0))
        .fold(f64::MIN_POSITIVE, f64::max)
});

static DEMAND_HOURS: LazyLock<f64> =
    LazyLock::new(|| (0..24 * 60).map(|m| demand(m as f64 / 60.0)).sum::<f64>() / 60.0);

// ---- counters ----------------------------------------------------------------------------

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug, Default)]
        struct Counts {
            $($name: AtomicU64,)*
        }

        /// The riders' counters at one moment (see [`RiderStats`]).
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct RiderCounts {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counts {
            fn load(&self) -> RiderCounts {
                RiderCounts { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl RiderCounts {
            /// Every counter by name, for logs and JSON.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters! {
    /// Riders on a trip (or about to start one) right now.
    busy_riders,
    /// Wishes to ride the demand curve produced.
    demand,
    /// Wishes dropped because every rider was busy.
    no_idle_rider,
    /// Accounts created.
    signups,
    /// Sign-ups refused as `phone_taken` or `id_number_registered` (the rider tried again
    /// with the next identity).
    signup_conflicts,
    /// Sign-ups refused otherwise (e.g. the bike share is not enabled for the tenant).
    signup_errors,
    /// Wallet top-ups made.
    top_ups,
    /// Top-ups refused (e.g. no payment provider configured).
    top_up_errors,
    /// Searches that found no bike within the radius.
    no_bike_nearby,
    /// Rentals where the lock opened (the trip reached `riding`).
    rentals_ok,
    /// Rentals where the lock did not open (the trip `failed`; nothing is charged).
    rentals_failed,
    /// Rentals refused with 409 (bike taken, offline, flat, a trip already running, …);
    /// by code in [`RiderStatsSnapshot::conflicts_by_code`].
    rental_conflicts,
    /// Rentals refused because the balance is negative (403 `balance_negative`).
    balance_blocked,
    /// Rentals retried with the same idempotency key after a network error.
    rental_retries,
    /// Rentals answered with anything else.
    rental_errors,
    /// Trips held outside a parking fence that the rider reopened.
    resumes,
    /// Reopenings refused (the lock did not open, the grace period was over).
    resume_failures,
    /// Trips settled (paid).
    settled,
    /// Of those, trips that ended outside a parking fence.
    settled_out_of_fence,
    /// Trips that failed after they had started.
    trips_failed,
    /// Requests sent.
    requests,
    /// Requests that got no HTTP answer (connection refused, timeout, …).
    network_errors,
    /// Answers no step expected (5xx, unknown codes); the rider gave up that step.
    unexpected_answers,
}

#[derive(Debug)]
struct Inner {
    counts: Counts,
    /// Unlock latencies: the time from the rental request to the lock's confirmation.
    unlock_ms: Vec<AtomicU64>,
    conflicts: Mutex<BTreeMap<String, u64>>,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            counts: Counts::default(),
            unlock_ms: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            conflicts: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The simulated riders' counters, shared with the running simulation: clone it and read
/// [`RiderStats::snapshot`] whenever you like (e.g. for a status page). Logged with `tracing`
/// every [`RiderConfig::log_interval`].
#[derive(Debug, Clone, Default)]
pub struct RiderStats(Arc<Inner>);

/// The counters, the unlock latency's median and 99th percentile (10 ms resolution; `None`
/// before the first unlock) and the rental conflicts by problem code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RiderStatsSnapshot {
    pub counts: RiderCounts,
    pub unlocks_measured: u64,
    pub unlock_p50_ms: Option<u64>,
    pub unlock_p99_ms: Option<u64>,
    pub conflicts_by_code: BTreeMap<String, u64>,
}

impl RiderStatsSnapshot {
    /// The snapshot as one flat JSON object (counters by name, then the latencies and the
    /// conflicts).
    pub fn to_json(&self) -> Value {
        let mut out: serde_json::Map<String, Value> = self
            .counts
            .fields()
            .into_iter()
            .map(|(name, n)| (name.to_string(), json!(n)))
            .collect();
        out.insert("unlocks_measured".into(), json!(self.unlocks_measured));
        out.insert("unlock_p50_ms".into(), json!(self.unlock_p50_ms));
        out.insert("unlock_p99_ms".into(), json!(self.unlock_p99_ms));
        out.insert("conflicts_by_code".into(), json!(self.conflicts_by_code));
        Value::Object(out)
    }
}

/// Distinct conflict codes kept; more are counted as `other` (codes come from the server).
const MAX_CONFLICT_CODES: usize = 32;

impl RiderStats {
    /// The counters now.
    pub fn snapshot(&self) -> RiderStatsSnapshot {
        let buckets: Vec<u64> = self
            .0
            .unlock_ms
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let measured: u64 = buckets.iter().sum();
        let quantile = |q: f64| {
            if measured == 0 {
                return None;
            }
            let rank = ((q * measured as f64).ceil() as u64).clamp(1, measured);
            let mut seen = 0;
            buckets
                .iter()
                .position(|&n| {
                    seen += n;
                    seen >= rank
                })
                .map(|i| (i as u64 + 1) * LATENCY_BUCKET_MS)
        };
        RiderStatsSnapshot {
            counts: self.0.counts.load(),
            unlocks_measured: measured,
            unlock_p50_ms: quantile(0.5),
            unlock_p99_ms: quantile(0.99),
            conflicts_by_code: self
                .0
                .conflicts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        }
    }

    fn counts(&self) -> &Counts {
        &self.0.counts
    }

    fn unlocked_after(&self, elapsed: Duration) {
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let bucket = usize::try_from(ms / LATENCY_BUCKET_MS)
            .unwrap_or(usize::MAX)
            .min(LATENCY_BUCKETS - 1);
        self.0.unlock_ms[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn conflict(&self, code: &str) {
        inc(&self.counts().rental_conflicts);
        let mut map = self
            .0
            .conflicts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = if map.contains_key(code) || map.len() < MAX_CONFLICT_CODES {
            code
        } else {
            "other"
        };
        *map.entry(key.to_string()).or_default() += 1;
    }

    fn log(&self) {
        let s = self.snapshot();
        let c = &s.counts;
        tracing::info!(
            busy = c.busy_riders,
            demand = c.demand,
            no_idle_rider = c.no_idle_rider,
            signups = c.signups,
            top_ups = c.top_ups,
            no_bike_nearby = c.no_bike_nearby,
            rentals_ok = c.rentals_ok,
            rentals_failed = c.rentals_failed,
            conflicts = c.rental_conflicts,
            settled = c.settled,
            out_of_fence = c.settled_out_of_fence,
            resumes = c.resumes,
            network_errors = c.network_errors,
            unexpected = c.unexpected_answers,
            unlock_p50_ms = s.unlock_p50_ms,
            unlock_p99_ms = s.unlock_p99_ms,
            "Simulated riders."
        );
    }
}

fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

// ---- identities --------------------------------------------------------------------------

/// Who a simulated rider is, as the sign-up form takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    /// E.164, `+861…`.
    phone: String,
    /// The display name.
    name: String,
    real_name: String,
    id_number: String,
    location_consent: bool,
}

impl Identity {
    fn sign_up_body(&self) -> Value {
        json!({
            "phone": self.phone,
            "name": self.name,
            "real_name": self.real_name,
            "id_number": self.id_number,
            "location_consent": self.location_consent,
        })
    }
}

/// Mainland mobile prefixes (China Mobile, Unicom, Telecom).
const PHONE_PREFIXES: [u16; 36] = [
    130, 131, 132, 133, 135, 136, 137, 138, 139, 147, 150, 151, 152, 153, 155, 156, 157, 158, 159,
    166, 173, 175, 176, 177, 178, 180, 181, 182, 183, 185, 186, 187, 188, 189, 198, 199,
];
/// Subscriber numbers: the eight digits after the prefix.
const SUBSCRIBERS: u64 = 100_000_000;

/// Regions (GB/T 2260 county codes) of identity numbers: Hangzhou and the rest of Zhejiang
/// for the locals, big cities elsewhere for the people who moved here.
const LOCAL_REGIONS: [&str; 14] = [
    "330102", "330105", "330106", "330108", "330109", "330110", "330113", "330114", "330122",
    "330203", "330302", "330402", "330602", "330702",
];
const OTHER_REGIONS: [&str; 20] = [
    "110105", "310115", "320106", "340104", "360102", "410105", "420106", "430104", "440106",
    "500103", "510107", "610113", "350102", "370102", "130102", "210102", "230102", "450102",
    "520102", "530102",
];

const SURNAMES: [&str; 60] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "高", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾",
    "肖", "田", "董", "潘", "袁", "蔡", "蒋", "余", "于", "杜", "叶", "程", "魏", "苏", "吕", "丁",
    "沈", "姚", "卢", "钟", "姜", "崔", "谭", "陆", "范", "汪", "金", "欧阳",
];
const MALE_GIVEN: [&str; 40] = [
    "伟", "强", "磊", "军", "勇", "杰", "涛", "斌", "超", "明", "刚", "平", "辉", "鹏", "华", "飞",
    "鑫", "波", "宇", "浩", "凯", "健", "俊", "帆", "旭", "宁", "龙", "林", "阳", "晨", "博", "文",
    "轩", "睿", "然", "远", "泽", "航", "嘉", "峰",
];
const FEMALE_GIVEN: [&str; 40] = [
    "芳", "娜", "敏", "静", "丽", "艳", "娟", "霞", "燕", "玲", "婷", "雪", "琳", "晶", "颖", "倩",
    "欣", "怡", "佳", "悦", "萱", "涵", "雨", "梦", "诗", "思", "可", "琪", "璐", "瑶", "茜", "蕾",
    "薇", "月", "彤", "馨", "妍", "婉", "菲", "露",
];
/// Full names written with the separator dot, as Uyghur and other minority names are
/// (male, name).
const DOTTED_NAMES: [(bool, &str); 6] = [
    (false, "阿依古丽·买买提"),
    (true, "艾力·买买提"),
    (false, "古丽娜尔·吐尔逊"),
    (true, "阿不都·热合曼"),
    (false, "热依拉·艾买提"),
    (true, "买买提·艾力"),
];
const NICKNAMES: [&str; 20] = [
    "Leo", "Amy", "Kevin", "Coco", "Jack", "Lily", "Tony", "Vivian", "Eric", "Cindy", "David",
    "Grace", "Sunny", "Momo", "Jerry", "Lucy", "Tina", "Alex", "Echo", "Ray",
];

/// splitmix64's finaliser: a well-mixed 64-bit value from any input.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One seed from several parts.
fn key(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED_F00D, |h, &p| mix(h ^ p))
}

/// Salts that keep the random streams of one rider apart.
const PHONE_STREAM: u64 = 1;
const PERSON_STREAM: u64 = 2;
const DISPATCH_STREAM: u64 = 3;
const TRIP_STREAM: u64 = 4;

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        return None;
    }
    items.get((rng.next_u64() % items.len() as u64) as usize)
}

/// A mobile number. For one (seed, nonce, attempt) the subscriber digits are an affine
/// permutation of the rider's index, so riders below 10^8 never share a number.
fn phone(seed: u64, nonce: u64, index: u64, attempt: u32) -> String {
    let stream = key(&[seed, nonce, u64::from(attempt), PHONE_STREAM]);
    // Odd and not a multiple of 5: coprime with 10^8, so the map is a bijection.
    let mut a = (mix(stream) % SUBSCRIBERS) | 1;
    if a.is_multiple_of(5) {
        a += 2;
    }
    let b = mix(stream ^ 0xB) % SUBSCRIBERS;
    let subscriber = (a * (index % SUBSCRIBERS) + b) % SUBSCRIBERS;
    let mut rng = Rng::new(key(&[stream, index]));
    let prefix = pick(&mut rng, &PHONE_PREFIXES).copied().unwrap_or(138);
    format!("+86{prefix}{subscriber:08}")
}

/// The rider's identity for `attempt` (0 first, the next after a sign-up refused it), with an
/// age of 16–69 on `today_ms`.
fn identity(
    seed: u64,
    nonce: u64,
    index: u64,
    attempt: u32,
    consent_prob: f64,
    today_ms: i64,
) -> Identity {
    let mut rng = Rng::new(key(&[
        seed,
        nonce,
        index,
        u64::from(attempt),
        PERSON_STREAM,
    ]));
    let male = rng.chance(0.5);
    // Younger adults ride most: the median rider is about 31.
    let age_years = 16.02 + 53.9 * rng.unit().powf(1.8);
    let age_ms = (age_years * 365.2425 * 86_400_000.0) as i64;
    let birth = CivilDate::china_today(today_ms.saturating_sub(age_ms));
    let region = if rng.chance(0.6) {
        pick(&mut rng, &LOCAL_REGIONS)
    } else {
        pick(&mut rng, &OTHER_REGIONS)
    }
    .copied()
    .unwrap_or("330106");
    // The sequence's last digit is odd for men and even for women.
    let sequence = 2 * rng.between((0, 499)) + u64::from(male);
    let first17 = format!(
        "{region}{:04}{:02}{:02}{sequence:03}",
        birth.year, birth.month, birth.day
    );
    let id_number = match <[u8; 17]>::try_from(first17.as_bytes()) {
        Ok(digits) => format!("{first17}{}", id_check_char(&digits)),
        // Unreachable: six, eight and three digits.
        Err(_) => first17,
    };
    let (real_name, given) = if rng.chance(0.01) {
        let matching: Vec<&str> = DOTTED_NAMES
            .iter()
            .filter(|(m, _)| *m == male)
            .map(|(_, name)| *name)
            .collect();
        let name = pick(&mut rng, &matching)
            .copied()
            .unwrap_or("阿依古丽·买买提");
        (
            name.to_string(),
            name.split('·').next().unwrap_or(name).to_string(),
        )
    } else {
        let surname = pick(&mut rng, &SURNAMES).copied().unwrap_or("王");
        let pool: &[&str] = if male { &MALE_GIVEN } else { &FEMALE_GIVEN };
        let mut given = pick(&mut rng, pool).copied().unwrap_or("明").to_string();
        if rng.chance(0.7) {
            given.push_str(pick(&mut rng, pool).copied().unwrap_or("华"));
        }
        (format!("{surname}{given}"), given)
    };
    let last_char = given.chars().last().map(String::from).unwrap_or_default();
    let name = match rng.unit() {
        u if u < 0.3 => given,
        u if u < 0.45 => format!("小{last_char}"),
        u if u < 0.6 => format!("阿{last_char}"),
        u if u < 0.8 => pick(&mut rng, &NICKNAMES)
            .copied()
            .unwrap_or("Leo")
            .to_string(),
        _ => format!("用户{:04}", rng.between((0, 9_999))),
    };
    Identity {
        phone: phone(seed, nonce, index, attempt),
        name,
        real_name,
        id_number,
        location_consent: rng.chance(consent_prob),
    }
}

/// The first identities of `riders` riders, with no phone number or identity number twice
/// (a rider whose identity repeats another's moves on to its next attempt).
fn identities(
    seed: u64,
    nonce: u64,
    riders: usize,
    consent_prob: f64,
    today_ms: i64,
) -> Vec<(Identity, u32)> {
    let (mut phones, mut ids) = (HashSet::new(), HashSet::new());
    (0..riders as u64)
        .map(|index| {
            let mut attempt = 0;
            loop {
                let who = identity(seed, nonce, index, attempt, consent_prob, today_ms);
                if (!phones.contains(&who.phone) && !ids.contains(&who.id_number)) || attempt >= 64
                {
                    phones.insert(who.phone.clone());
                    ids.insert(who.id_number.clone());
                    return (who, attempt);
                }
                attempt += 1;
            }
        })
        .collect()
}

// ---- HTTP --------------------------------------------------------------------------------

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// No HTTP answer: connection refused or reset, timeout, a body that could not be read.
    #[error("{0}")]
    Network(String),
    /// The simulation is stopping.
    #[error("shutting down")]
    Shutdown,
}

/// One request as the app would send it.
#[derive(Debug, Clone)]
struct Call {
    post: bool,
    path: String,
    query: Vec<(&'static str, String)>,
    token: Option<String>,
    body: Option<Value>,
    idempotency_key: Option<String>,
}

impl Call {
    fn get(path: impl Into<String>) -> Call {
        Call {
            post: false,
            path: path.into(),
            query: Vec::new(),
            token: None,
            body: None,
            idempotency_key: None,
        }
    }

    fn post(path: impl Into<String>, body: Option<Value>) -> Call {
        Call {
            post: true,
            body,
            ..Call::get(path)
        }
    }

    fn token(mut self, token: &str) -> Call {
        self.token = Some(token.to_string());
        self
    }

    fn query(mut self, name: &'static str, value: impl ToString) -> Call {
        self.query.push((name, value.to_string()));
        self
    }

    fn idempotency_key(mut self, key: String) -> Call {
        self.idempotency_key = Some(key);
        self
    }
}

/// An HTTP answer: the status and the JSON body (a problem document for errors).
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    /// The problem's stable code (`phone_taken`, `bike_unavailable`, …); empty if none.
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// A request for the HTTP workers, and where its answer goes.
struct Job {
    url: String,
    call: Call,
    answer: oneshot::Sender<Result<Reply, CallError>>,
}

/// The HTTP client: blocking `ureq` calls on a pool of worker threads of its own. The
/// workers are detached: neither [`run`] nor the runtime's shutdown waits for a request in
/// flight, which ends within [`RiderConfig::http_timeout`] and frees its worker then. They
/// stop when the client is dropped.
struct Client {
    jobs: mpsc::Sender<Job>,
    base: String,
    shutdown: CancellationToken,
    stats: RiderStats,
}

/// A worker's stack: a request needs little (the default 2 MiB times 64 is mostly waste).
const WORKER_STACK_BYTES: usize = 512 * 1024;

impl Client {
    /// A client with `workers` threads: at most that many requests are in flight.
    fn new(
        base_url: &str,
        config: &RiderConfig,
        workers: usize,
        stats: RiderStats,
        shutdown: CancellationToken,
    ) -> Client {
        let workers = workers.max(1);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.http_timeout.max(Duration::from_millis(1))))
            // The platform is reached directly, never through a proxy from the environment.
            .proxy(None)
            .max_idle_connections(workers)
            .max_idle_connections_per_host(workers)
            .user_agent("wulian-sim-rider/1")
            .build()
            .into();
        let (jobs, queue) = mpsc::channel::<Job>(workers);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..workers {
            let (agent, queue) = (agent.clone(), Arc::clone(&queue));
            let spawned = std::thread::Builder::new()
                .name(format!("sim-rider-http-{i}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn(move || work(&agent, &queue));
            if let Err(error) = spawned {
                // Fewer workers, fewer requests in flight; with none, every request fails.
                tracing::warn!(error = %error, workers = i, "Could not start every simulated rider HTTP worker.");
                break;
            }
        }
        Client {
            jobs,
            base: base_url.trim_end_matches('/').to_string(),
            shutdown,
            stats,
        }
    }

    /// Hands the request to a worker and waits for the answer; returns at once on shutdown.
    async fn send(&self, call: Call) -> Result<Reply, CallError> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            url: format!("{}{}", self.base, call.path),
            call,
            answer,
        };
        let result = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return Err(CallError::Shutdown),
            queued = self.jobs.send(job) => match queued {
                Ok(()) => {
                    inc(&self.stats.counts().requests);
                    tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => return Err(CallError::Shutdown),
                        answer = answered => answer.unwrap_or_else(|_| {
                            Err(CallError::Network("the HTTP worker stopped".into()))
                        }),
                    }
                }
                Err(_) => Err(CallError::Network("no HTTP worker is running".into())),
            },
        };
        if matches!(result, Err(CallError::Network(_))) {
            inc(&self.stats.counts().network_errors);
        }
        result
    }
}

/// One HTTP worker: sends requests until the client is gone.
fn work(agent: &ureq::Agent, queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // One idle worker waits on the queue, the others on the lock.
        let job = queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .blocking_recv();
        let Some(job) = job else {
            return;
        };
        // The rider stopped waiting (shutdown): the request is no longer wanted.
        if job.answer.is_closed() {
            continue;
        }
        let result = execute(agent, &job.url, &job.call);
        // The rider may have stopped waiting meanwhile; the answer is then dropped.
        job.answer.send(result).ok();
    }
}

fn execute(agent: &ureq::Agent, url: &str, call: &Call) -> Result<Reply, CallError> {
    let auth = call.token.as_ref().map(|t| format!("Bearer {t}"));
    let result = if call.post {
        let mut request = agent.post(url);
        if let Some(auth) = &auth {
            request = request.header("Authorization", auth);
        }
        if let Some(key) = &call.idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        match &call.body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        }
    } else {
        let mut request = agent.get(url);
        if let Some(auth) = &auth {
            request = request.header("Authorization", auth);
        }
        for (name, value) in &call.query {
            request = request.query(*name, value);
        }
        request.call()
    };
    let mut response = result.map_err(|e| CallError::Network(e.to_string()))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| CallError::Network(e.to_string()))?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok(Reply { status, body })
}

// ---- the simulation ----------------------------------------------------------------------

/// Starts the riders on the current tokio runtime and returns their live counters and the
/// task, which ends (with the final counters) soon after `shutdown`. See [`run`].
pub fn spawn(
    base_url: String,
    tenant: String,
    city_center: (f64, f64),
    spots: Arc<[(f64, f64)]>,
    config: RiderConfig,
    shutdown: CancellationToken,
) -> (RiderStats, JoinHandle<RiderStats>) {
    let stats = RiderStats::default();
    let task = tokio::spawn(run_with_stats(
        base_url,
        tenant,
        city_center,
        spots,
        config,
        stats.clone(),
        shutdown,
    ));
    (stats, task)
}

/// Runs the simulated riders of `tenant` against the platform at `base_url` (e.g.
/// `http://127.0.0.1:8080`, plain HTTP) until `shutdown`, then returns at once with the final
/// counters. `spots` are the parking zones' centres (`CityMap::parking_spots`), where most
/// riders look for bikes; `city_center` is where the others do, within
/// [`RiderConfig::city_radius_m`]. Use [`spawn`] to read the counters while it runs.
pub async fn run(
    base_url: String,
    tenant: String,
    city_center: (f64, f64),
    spots: Arc<[(f64, f64)]>,
    config: RiderConfig,
    shutdown: CancellationToken,
) -> RiderStats {
    run_with_stats(
        base_url,
        tenant,
        city_center,
        spots,
        config,
        RiderStats::default(),
        shutdown,
    )
    .await
}

/// What every rider's task shares.
struct Ctx {
    client: Client,
    tenant: String,
    config: RiderConfig,
    center: (f64, f64),
    spots: Arc<[(f64, f64)]>,
    stats: RiderStats,
    nonce: u64,
    shutdown: CancellationToken,
    /// A refused sign-up or top-up is logged as a warning once (it will be the same for
    /// everyone: a bike share not enabled, no payment provider); the counters tell the rest.
    warned_sign_up: AtomicBool,
    warned_top_up: AtomicBool,
}

/// A rider between trips: who they are and what the app remembers.
#[derive(Debug)]
struct Rider {
    index: u64,
    identity: Identity,
    attempt: u32,
    token: Option<String>,
    /// The balance (fen) as last seen, less the fares paid since; `None`: ask.
    balance: Option<i64>,
    /// Requests with an idempotency key so far, to make each key unique.
    keys: u64,
}

impl Rider {
    fn next_key(&mut self, nonce: u64) -> String {
        self.keys += 1;
        format!("sim-{nonce:x}-{}-{}", self.index, self.keys)
    }
}

async fn run_with_stats(
    base_url: String,
    tenant: String,
    city_center: (f64, f64),
    spots: Arc<[(f64, f64)]>,
    config: RiderConfig,
    stats: RiderStats,
    shutdown: CancellationToken,
) -> RiderStats {
    let start_ms = config.start_at_ms.unwrap_or_else(now_ms);
    let nonce = config
        .identity_nonce
        .unwrap_or_else(|| u64::try_from(now_ms()).unwrap_or_default());
    let scale = config.effective_time_scale();
    let offset_ms = i64::from(config.utc_offset_minutes) * 60_000;
    let idle_riders = identities(
        config.seed,
        nonce,
        config.riders,
        config.location_consent_prob,
        start_ms,
    );
    let mut idle: Vec<Rider> = idle_riders
        .into_iter()
        .enumerate()
        .map(|(index, (identity, attempt))| Rider {
            index: index as u64,
            identity,
            attempt,
            token: None,
            balance: None,
            keys: 0,
        })
        .collect();
    // Wishes to ride per real second at the peak, thinned by the demand curve.
    let peak_rate = (finite_or(config.peak_trips_per_hour, 0.0).max(0.0) * scale / 3600.0)
        .min(MAX_ARRIVALS_PER_S);
    let log_interval = config.log_interval.max(Duration::from_millis(100));
    let ctx = Arc::new(Ctx {
        // Each rider has one request in flight at most: more workers would idle.
        client: Client::new(
            &base_url,
            &config,
            config.max_in_flight.clamp(1, config.riders.max(1)),
            stats.clone(),
            shutdown.clone(),
        ),
        tenant,
        center: city_center,
        spots,
        stats: stats.clone(),
        nonce,
        shutdown: shutdown.clone(),
        warned_sign_up: AtomicBool::new(false),
        warned_top_up: AtomicBool::new(false),
        config,
    });
    tracing::info!(
        riders = idle.len(),
        peak_trips_per_hour = ctx.config.peak_trips_per_hour,
        time_scale = scale,
        base_url = %base_url,
        "Simulated riders starting."
    );
    let mut rng = Rng::new(key(&[ctx.config.seed, nonce, DISPATCH_STREAM]));
    let started = Instant::now();
    let local_hour = |now: Instant| {
        let sim_ms = start_ms as f64
            + now.duration_since(started).as_secs_f64() * 1000.0 * scale
            + offset_ms as f64;
        (sim_ms / 3_600_000.0).rem_euclid(24.0)
    };
    let wait =
        |rng: &mut Rng| Duration::from_secs_f64(rng.wait(peak_rate).unwrap_or(3600.0).min(3600.0));
    let mut next_wish = started + wait(&mut rng);
    let mut log = tokio::time::interval_at(started + log_interval, log_interval);
    let mut tasks: JoinSet<Rider> = JoinSet::new();
    let mut journeys = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => match done {
                Ok(rider) => idle.push(rider),
                Err(error) => tracing::warn!(error = %error, "Simulated rider task failed."),
            },
            _ = log.tick() => stats.log(),
            _ = tokio::time::sleep_until(next_wish), if peak_rate > 0.0 => {
                let now = Instant::now();
                next_wish = next_wish.max(now) + wait(&mut rng);
                if !rng.chance(demand(local_hour(now))) {
                    continue;
                }
                inc(&stats.counts().demand);
                if idle.is_empty() {
                    inc(&stats.counts().no_idle_rider);
                    continue;
                }
                let i = (rng.next_u64() % idle.len() as u64) as usize;
                let rider = idle.swap_remove(i);
                journeys += 1;
                let trip_rng = Rng::new(key(&[ctx.config.seed, nonce, journeys, TRIP_STREAM]));
                tasks.spawn(journey(Arc::clone(&ctx), rider, trip_rng));
            }
        }
        stats
            .counts()
            .busy_riders
            .store(tasks.len() as u64, Ordering::Relaxed);
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    stats.counts().busy_riders.store(0, Ordering::Relaxed);
    stats.log();
    stats
}

fn finite_or(x: f64, fallback: f64) -> f64 {
    if x.is_finite() { x } else { fallback }
}

/// One wish to ride, start to end; gives the rider back.
async fn journey(ctx: Arc<Ctx>, mut rider: Rider, mut rng: Rng) -> Rider {
    if let Err(CallError::Network(error)) = take_a_trip(&ctx, &mut rider, &mut rng).await {
        tracing::debug!(
            rider = rider.index,
            error = %error,
            "Simulated rider could not reach the platform."
        );
    }
    rider
}

impl Ctx {
    /// Where a rider wanting a bike stands.
    fn appear(&self, rng: &mut Rng) -> (f64, f64) {
        let near_spot = if rng.chance(self.config.near_spot_prob) {
            pick(rng, &self.spots).copied()
        } else {
            None
        };
        let (around, radius) = match near_spot {
            Some(spot) => (spot, NEAR_SPOT_M),
            None => (
                self.center,
                finite_or(self.config.city_radius_m, 4_000.0).max(1.0),
            ),
        };
        let (r, a) = (
            radius * rng.unit().sqrt(),
            rng.range(0.0, std::f64::consts::TAU),
        );
        let lat = around.0 + r * a.cos() / M_PER_DEG;
        let lon = around.1 + r * a.sin() / (M_PER_DEG * around.0.to_radians().cos().max(0.01));
        (lat, lon)
    }

    /// Sleeps, unless the simulation stops first.
    async fn pause(&self, d: Duration) -> Result<(), CallError> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(CallError::Shutdown),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    fn unexpected(&self, step: &str, reply: &Reply) {
        inc(&self.stats.counts().unexpected_answers);
        tracing::debug!(
            step,
            status = reply.status,
            code = reply.code(),
            "Simulated rider got an unexpected answer."
        );
    }

    fn warn_once(&self, flag: &AtomicBool, message: &str, reply: &Reply) {
        if !flag.swap(true, Ordering::Relaxed) {
            tracing::warn!(status = reply.status, code = reply.code(), "{message}");
        }
    }
}

async fn take_a_trip(ctx: &Ctx, rider: &mut Rider, rng: &mut Rng) -> Result<(), CallError> {
    let Some(token) = signed_in(ctx, rider).await? else {
        return Ok(());
    };
    if !funded(ctx, rider, &token).await? {
        return Ok(());
    }
    let (lat, lon) = ctx.appear(rng);
    let call = Call::get("/api/v1/rider/bikes/nearby")
        .token(&token)
        .query("lat", format!("{lat:.6}"))
        .query("lon", format!("{lon:.6}"))
        .query("radius_m", ctx.config.nearby_radius_m)
        .query("limit", NEARBY_LIMIT);
    let reply = ctx.client.send(call).await?;
    match reply.status {
        200 => {}
        401 => {
            rider.token = None;
            return Ok(());
        }
        _ => {
            ctx.unexpected("nearby", &reply);
            return Ok(());
        }
    }
    // Nearest first, as the server sorts them.
    let bikes: Vec<&str> = reply.body["bikes"]
        .as_array()
        .map(|list| list.iter().filter_map(|b| b["id"].as_str()).collect())
        .unwrap_or_default();
    if bikes.is_empty() {
        inc(&ctx.stats.counts().no_bike_nearby);
        return Ok(());
    }
    let first = if bikes.len() == 1 || rng.chance(ctx.config.nearest_prob) {
        0
    } else {
        1 + (rng.next_u64() % (bikes.len() as u64 - 1).min(2)) as usize
    };
    // A bike found taken, offline or flat: the rider tries the nearest other one, once.
    let second = usize::from(first == 0);
    for i in [first, second] {
        let Some(bike) = bikes.get(i) else {
            break;
        };
        match rent(ctx, rider, &token, bike).await? {
            Rented::Trip { id, pending } => {
                return ride(ctx, rider, &token, rng, &id, pending).await;
            }
            Rented::TryAnother => continue,
            Rented::Done => break,
        }
    }
    Ok(())
}

/// The rider's token, signing up first if there is none.
async fn signed_in(ctx: &Ctx, rider: &mut Rider) -> Result<Option<String>, CallError> {
    if let Some(token) = &rider.token {
        return Ok(Some(token.clone()));
    }
    let path = format!("/api/v1/rider/{}/sign-up", ctx.tenant);
    for _ in 0..SIGN_UP_TRIES {
        let call = Call::post(path.clone(), Some(rider.identity.sign_up_body()));
        let reply = ctx.client.send(call).await?;
        match (reply.status, reply.code()) {
            (200 | 201, _) => {
                let Some(token) = reply.body["token"].as_str() else {
                    ctx.unexpected("sign-up", &reply);
                    return Ok(None);
                };
                inc(&ctx.stats.counts().signups);
                rider.token = Some(token.to_string());
                rider.balance = None;
                return Ok(rider.token.clone());
            }
            (409, "phone_taken" | "id_number_registered") => {
                inc(&ctx.stats.counts().signup_conflicts);
                rider.attempt += 1;
                rider.identity = identity(
                    ctx.config.seed,
                    ctx.nonce,
                    rider.index,
                    rider.attempt,
                    ctx.config.location_consent_prob,
                    now_ms(),
                );
            }
            _ => {
                inc(&ctx.stats.counts().signup_errors);
                ctx.warn_once(
                    &ctx.warned_sign_up,
                    "Simulated riders cannot sign up.",
                    &reply,
                );
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// Whether the rider may rent: checks the balance when it may be low and tops up below
/// [`RiderConfig::low_balance`].
async fn funded(ctx: &Ctx, rider: &mut Rider, token: &str) -> Result<bool, CallError> {
    let low = ctx.config.low_balance;
    if rider.balance.is_some_and(|b| b >= low) {
        return Ok(true);
    }
    let reply = ctx
        .client
        .send(Call::get("/api/v1/rider/me").token(token))
        .await?;
    let balance = match (reply.status, reply.body["balance"].as_i64()) {
        (200, Some(balance)) => balance,
        (401, _) => {
            rider.token = None;
            return Ok(false);
        }
        _ => {
            ctx.unexpected("me", &reply);
            return Ok(false);
        }
    };
    rider.balance = Some(balance);
    if balance >= low {
        return Ok(true);
    }
    let amount = ctx
        .config
        .top_up
        .min(wulian_bikeshare::ledger::BALANCE_CAP.saturating_sub(balance));
    if amount <= 0 {
        return Ok(balance >= 0);
    }
    let body = json!({"amount": amount, "idempotency_key": rider.next_key(ctx.nonce)});
    let call = Call::post("/api/v1/rider/wallet/top-ups", Some(body)).token(token);
    // The key makes a retry safe: the ledger books a top-up once.
    let reply = match ctx.client.send(call.clone()).await {
        Err(CallError::Network(_)) => ctx.client.send(call).await?,
        other => other?,
    };
    if reply.status == 200 {
        inc(&ctx.stats.counts().top_ups);
        rider.balance = Some(reply.body["balance"].as_i64().unwrap_or(balance + amount));
    } else {
        inc(&ctx.stats.counts().top_up_errors);
        ctx.warn_once(
            &ctx.warned_top_up,
            "Simulated riders cannot top up.",
            &reply,
        );
    }
    Ok(rider.balance.is_some_and(|b| b >= 0))
}

/// How a rental went.
enum Rented {
    /// A trip exists; `pending` holds when it was asked for while the lock has not confirmed.
    Trip {
        id: String,
        pending: Option<std::time::Instant>,
    },
    /// The bike could not be had; another might.
    TryAnother,
    /// Nothing more to do for this wish.
    Done,
}

/// Rents `bike`; retried once with the same idempotency key when the network fails.
async fn rent(ctx: &Ctx, rider: &mut Rider, token: &str, bike: &str) -> Result<Rented, CallError> {
    let call = Call::post("/api/v1/rider/trips", Some(json!({"bike": bike})))
        .token(token)
        .idempotency_key(rider.next_key(ctx.nonce));
    let asked = std::time::Instant::now();
    let reply = match ctx.client.send(call.clone()).await {
        Err(CallError::Network(_)) => {
            inc(&ctx.stats.counts().rental_retries);
            ctx.client.send(call).await?
        }
        other => other?,
    };
    let stats = ctx.stats.counts();
    match reply.status {
        200 | 201 => {
            let trip = &reply.body["trip"];
            let Some(id) = trip["id"].as_str() else {
                ctx.unexpected("rent", &reply);
                return Ok(Rented::Done);
            };
            let id = id.to_string();
            match trip["state"].as_str() {
                Some("failed") => {
                    inc(&stats.rentals_failed);
                    Ok(Rented::Done)
                }
                Some("requested" | "unlocking") => Ok(Rented::Trip {
                    id,
                    pending: Some(asked),
                }),
                _ => {
                    inc(&stats.rentals_ok);
                    ctx.stats.unlocked_after(asked.elapsed());
                    Ok(Rented::Trip { id, pending: None })
                }
            }
        }
        409 => {
            let code = reply.code().to_string();
            ctx.stats.conflict(&code);
            match code.as_str() {
                "trip_in_progress" => live_trip(ctx, rider, token).await,
                "bike_unavailable"
                | "bike_offline"
                | "bike_battery_low"
                | "bike_faulty"
                | "outside_service_area" => Ok(Rented::TryAnother),
                _ => Ok(Rented::Done),
            }
        }
        403 if reply.code() == "balance_negative" => {
            inc(&stats.balance_blocked);
            rider.balance = None;
            Ok(Rented::Done)
        }
        401 => {
            rider.token = None;
            Ok(Rented::Done)
        }
        404 if reply.code() == "bike_not_found" => Ok(Rented::TryAnother),
        _ => {
            inc(&stats.rental_errors);
            ctx.unexpected("rent", &reply);
            Ok(Rented::Done)
        }
    }
}

/// The rider's trip that is still running (after `trip_in_progress`: one this rider stopped
/// watching), to watch it to its end.
async fn live_trip(ctx: &Ctx, rider: &mut Rider, token: &str) -> Result<Rented, CallError> {
    let reply = ctx
        .client
        .send(Call::get("/api/v1/rider/trips").token(token))
        .await?;
    if reply.status == 401 {
        rider.token = None;
    }
    let live = reply.body["trips"].as_array().and_then(|trips| {
        trips.iter().find(|t| {
            matches!(
                t["state"].as_str(),
                Some("requested" | "unlocking" | "riding" | "ending")
            )
        })
    });
    Ok(match live.and_then(|t| t["id"].as_str()) {
        Some(id) => Rented::Trip {
            id: id.to_string(),
            pending: None,
        },
        None => Rented::Done,
    })
}

/// Watches a live trip until it is settled or failed; reopens a lock held outside a fence
/// with [`RiderConfig::resume_prob`] (once per trip).
async fn ride(
    ctx: &Ctx,
    rider: &mut Rider,
    token: &str,
    rng: &mut Rng,
    trip_id: &str,
    mut pending: Option<std::time::Instant>,
) -> Result<(), CallError> {
    let stats = ctx.stats.counts();
    let path = format!("/api/v1/rider/trips/{trip_id}");
    let (mut decided_resume, mut failures) = (false, 0);
    loop {
        ctx.pause(ctx.config.poll_interval).await?;
        let reply = match ctx.client.send(Call::get(path.clone()).token(token)).await {
            Ok(reply) => reply,
            Err(CallError::Network(_)) => {
                failures += 1;
                if failures >= MAX_POLL_FAILURES {
                    return Ok(());
                }
                continue;
            }
            Err(shutdown) => return Err(shutdown),
        };
        match reply.status {
            200 => failures = 0,
            401 => {
                rider.token = None;
                return Ok(());
            }
            404 => return Ok(()),
            _ => {
                ctx.unexpected("trip", &reply);
                failures += 1;
                if failures >= MAX_POLL_FAILURES {
                    return Ok(());
                }
                continue;
            }
        }
        let trip = &reply.body["trip"];
        let state = trip["state"].as_str().unwrap_or_default();
        if matches!(state, "riding" | "ending" | "settled")
            && let Some(asked) = pending.take()
        {
            inc(&stats.rentals_ok);
            ctx.stats.unlocked_after(asked.elapsed());
        }
        match state {
            "settled" => {
                inc(&stats.settled);
                if trip["out_of_fence"].as_bool() == Some(true) {
                    inc(&stats.settled_out_of_fence);
                }
                if let (Some(total), Some(balance)) = (trip["total"].as_i64(), rider.balance) {
                    rider.balance = Some(balance - total);
                }
                return Ok(());
            }
            "failed" => {
                if pending.take().is_some() {
                    inc(&stats.rentals_failed);
                } else {
                    inc(&stats.trips_failed);
                }
                return Ok(());
            }
            // Parked outside a fence, in the grace period.
            "ending" if !decided_resume && trip["grace_until"].is_i64() => {
                decided_resume = true;
                if rng.chance(ctx.config.resume_prob) {
                    let call = Call::post(format!("{path}/resume"), None).token(token);
                    let reply = ctx.client.send(call).await?;
                    if reply.status == 200 {
                        inc(&stats.resumes);
                    } else {
                        inc(&stats.resume_failures);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
