//! A TSBS-"iot"-shaped data set: trucks with 8 tags reporting a `readings` row (7 fields) and a
//! `diagnostics` row (3 fields) every 10 s, each field a clamped random walk truncated to a fixed
//! number of decimals, delivered in batches with TSBS's imperfections: missing batches, late
//! batches, out-of-order entries within a batch and NULL fields. Seeded and reproducible.

/// 2026-01-01T00:00:00Z.
pub const START_MS: i64 = 1_767_225_600_000;
pub const INTERVAL_MS: i64 = 10_000;
/// Readings per truck per batch: one minute of a truck's data.
pub const TICKS_PER_BATCH: i64 = 6;

pub const READINGS: [&str; 7] = [
    "latitude",
    "longitude",
    "elevation",
    "velocity",
    "heading",
    "grade",
    "fuel_consumption",
];
pub const DIAGNOSTICS: [&str; 3] = ["fuel_state", "current_load", "status"];

/// `(min, max, max step, decimals)` of each field's random walk; `status` is an integer.
const READING_WALKS: [(f64, f64, f64, i32); 7] = [
    (-90.0, 90.0, 0.002, 5),
    (-180.0, 180.0, 0.002, 5),
    (0.0, 5000.0, 5.0, 2),
    (0.0, 100.0, 2.0, 2),
    (0.0, 360.0, 3.0, 2),
    (0.0, 100.0, 1.0, 2),
    (0.0, 50.0, 0.5, 3),
];
const DIAGNOSTIC_WALKS: [(f64, f64, f64, i32); 3] = [
    (0.0, 1.0, 0.01, 4),
    (0.0, 5000.0, 20.0, 2),
    (0.0, 5.0, 1.0, 0),
];

const FLEETS: [&str; 5] = ["East", "West", "North", "South", "Central"];
const DRIVERS: [&str; 8] = [
    "Albert", "Andy", "Seth", "Trish", "Derek", "Rodney", "Shelly", "Hugo",
];
const MODELS: [&str; 3] = ["F-150", "G-2000", "H-2"];
const VERSIONS: [&str; 4] = ["v1.0", "v1.5", "v2.0", "v2.3"];
pub const LOAD_CAPACITY: [u32; 3] = [1500, 2000, 5000];
const FUEL_CAPACITY: [u32; 3] = [150, 200, 300];
const NOMINAL_FUEL: [u32; 4] = [5, 10, 15, 20];

/// Probability that a batch never arrives.
pub const P_MISSING: f64 = 0.01;
/// Probability that a batch arrives late (after 1–6 later batches of the same truck).
pub const P_LATE: f64 = 0.05;
/// Probability that an entry of a batch is moved out of order.
pub const P_OUT_OF_ORDER: f64 = 0.30;
/// Probability that a field of a row is NULL (absent).
pub const P_NULL: f64 = 0.10;

/// splitmix64 to seed, xorshift64* to draw.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[derive(Clone, Debug)]
pub struct Truck {
    pub name: String,
    /// The 8 tags, `name` first, in line-protocol order.
    pub tags: Vec<(&'static str, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Readings,
    Diagnostics,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Readings => "readings",
            Table::Diagnostics => "diagnostics",
        }
    }
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Table::Readings => &READINGS,
            Table::Diagnostics => &DIAGNOSTICS,
        }
    }
    /// Index of the field in the global key numbering (readings 0–6, diagnostics 7–9).
    pub fn key_id(self, field: usize) -> usize {
        match self {
            Table::Readings => field,
            Table::Diagnostics => READINGS.len() + field,
        }
    }
    /// Whether the field is an integer (`status`).
    pub fn is_int(self, field: usize) -> bool {
        self == Table::Diagnostics && field == 2
    }
}

/// One row of one table; `present` has bit i set when field i is not NULL.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub truck: u32,
    pub table: Table,
    pub ts: i64,
    pub present: u8,
    pub values: [f64; 7],
}

impl Row {
    pub fn fields(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        (0..self.table.fields().len())
            .filter(|i| self.present & (1 << i) != 0)
            .map(|i| (i, self.values[i]))
    }
    pub fn value_count(&self) -> u64 {
        u64::from(self.present.count_ones())
    }
}

/// The data set: trucks, and the rows grouped into write requests in delivery order.
pub struct Dataset {
    pub trucks: Vec<Truck>,
    pub requests: Vec<Vec<Row>>,
    pub values: u64,
    pub rows: u64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub batches_missing: u64,
    pub batches_late: u64,
    pub batches: u64,
}

fn truncate(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).trunc() / scale
}

struct Walk {
    value: f64,
    min: f64,
    max: f64,
    step: f64,
    decimals: i32,
}

impl Walk {
    fn new(rng: &mut Rng, (min, max, step, decimals): (f64, f64, f64, i32)) -> Walk {
        Walk {
            value: min + rng.unit() * (max - min),
            min,
            max,
            step,
            decimals,
        }
    }
    fn next(&mut self, rng: &mut Rng) -> f64 {
        self.value = (self.value + (rng.unit() * 2.0 - 1.0) * self.step).clamp(self.min, self.max);
        truncate(self.value, self.decimals)
    }
}

pub fn trucks(n: usize, rng: &mut Rng) -> Vec<Truck> {
    (0..n)
        .map(|i| {
            let name = format!("truck_{i}");
            let tags = vec![
                ("name", name.clone()),
                ("fleet", FLEETS[rng.below(FLEETS.len())].to_string()),
                ("driver", DRIVERS[rng.below(DRIVERS.len())].to_string()),
                ("model", MODELS[rng.below(MODELS.len())].to_string()),
                (
                    "device_version",
                    VERSIONS[rng.below(VERSIONS.len())].to_string(),
                ),
                (
                    "load_capacity",
                    LOAD_CAPACITY[rng.below(LOAD_CAPACITY.len())].to_string(),
                ),
                (
                    "fuel_capacity",
                    FUEL_CAPACITY[rng.below(FUEL_CAPACITY.len())].to_string(),
                ),
                (
                    "nominal_fuel_consumption",
                    NOMINAL_FUEL[rng.below(NOMINAL_FUEL.len())].to_string(),
                ),
            ];
            Truck { name, tags }
        })
        .collect()
}

/// Generates `hours` of data for `n_trucks`, grouped into requests of about
/// `rows_per_request` rows (whole batches; a batch is one truck's minute: 12 rows).
pub fn generate(n_trucks: usize, hours: f64, seed: u64, rows_per_request: usize) -> Dataset {
    let mut rng = Rng::new(seed);
    let trucks = trucks(n_trucks, &mut rng);
    let ticks = ((hours * 3600.0 * 1000.0) / INTERVAL_MS as f64).round() as i64;
    let windows = (ticks + TICKS_PER_BATCH - 1) / TICKS_PER_BATCH;
    let mut walks: Vec<(Vec<Walk>, Vec<Walk>)> = (0..n_trucks)
        .map(|_| {
            (
                READING_WALKS
                    .iter()
                    .map(|&s| Walk::new(&mut rng, s))
                    .collect(),
                DIAGNOSTIC_WALKS
                    .iter()
                    .map(|&s| Walk::new(&mut rng, s))
                    .collect(),
            )
        })
        .collect();
    let mut delivered: Vec<Vec<Row>> = Vec::new();
    // (window at which it is released, batch)
    let mut late: Vec<(i64, Vec<Row>)> = Vec::new();
    let (mut missing, mut n_late, mut batches) = (0, 0, 0);
    for w in 0..windows {
        for (t, (readings, diagnostics)) in walks.iter_mut().enumerate() {
            let mut batch = Vec::with_capacity(2 * TICKS_PER_BATCH as usize);
            for tick in w * TICKS_PER_BATCH..((w + 1) * TICKS_PER_BATCH).min(ticks) {
                let ts = START_MS + tick * INTERVAL_MS;
                for (table, walks) in [
                    (Table::Readings, &mut *readings),
                    (Table::Diagnostics, &mut *diagnostics),
                ] {
                    let mut row = Row {
                        truck: t as u32,
                        table,
                        ts,
                        present: 0,
                        values: [0.0; 7],
                    };
                    for (i, walk) in walks.iter_mut().enumerate() {
                        // The walk advances whether or not the value is reported.
                        row.values[i] = walk.next(&mut rng);
                        if !rng.chance(P_NULL) {
                            row.present |= 1 << i;
                        }
                    }
                    if row.present != 0 {
                        batch.push(row);
                    }
                }
            }
            batches += 1;
            if rng.chance(P_MISSING) {
                missing += 1;
                continue;
            }
            for i in 0..batch.len() {
                if rng.chance(P_OUT_OF_ORDER) {
                    let j = rng.below(batch.len());
                    batch.swap(i, j);
                }
            }
            if rng.chance(P_LATE) {
                n_late += 1;
                late.push((w + 1 + rng.below(6) as i64, batch));
            } else {
                delivered.push(batch);
            }
        }
        let (due, pending): (Vec<_>, Vec<_>) = late.drain(..).partition(|(at, _)| *at <= w);
        late = pending;
        delivered.extend(due.into_iter().map(|(_, b)| b));
    }
    delivered.extend(late.into_iter().map(|(_, b)| b));

    let mut requests = Vec::new();
    let mut current: Vec<Row> = Vec::with_capacity(rows_per_request + 16);
    let (mut values, mut rows) = (0, 0);
    for batch in delivered {
        for row in &batch {
            values += row.value_count();
        }
        rows += batch.len() as u64;
        current.extend(batch);
        if current.len() >= rows_per_request {
            requests.push(std::mem::replace(
                &mut current,
                Vec::with_capacity(rows_per_request + 16),
            ));
        }
    }
    if !current.is_empty() {
        requests.push(current);
    }
    Dataset {
        trucks,
        requests,
        values,
        rows,
        start_ms: START_MS,
        end_ms: START_MS + ticks * INTERVAL_MS,
        batches_missing: missing,
        batches_late: n_late,
        batches,
    }
}

/// InfluxDB line protocol of one row (ms precision).
pub fn line(truck: &Truck, row: &Row, out: &mut String) {
    use std::fmt::Write;
    out.push_str(row.table.name());
    for (k, v) in &truck.tags {
        out.push(',');
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    let names = row.table.fields();
    let mut first = true;
    for (i, v) in row.fields() {
        out.push(if first { ' ' } else { ',' });
        first = false;
        if row.table.is_int(i) {
            write!(out, "{}={}i", names[i], v as i64).expect("writing to a String");
        } else {
            write!(out, "{}={}", names[i], v).expect("writing to a String");
        }
    }
    writeln!(out, " {}", row.ts).expect("writing to a String");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_shaped_like_tsbs() {
        let a = generate(10, 2.0, 42, 500);
        let b = generate(10, 2.0, 42, 500);
        assert_eq!(a.values, b.values);
        assert_eq!(a.requests.len(), b.requests.len());
        assert_eq!(a.requests[3][7].ts, b.requests[3][7].ts);
        // 10 trucks × 720 ticks × 10 fields, minus ~1% missing batches and ~10% NULLs.
        let full = 10 * 720 * 10;
        let ratio = a.values as f64 / full as f64;
        assert!((0.85..0.92).contains(&ratio), "{ratio}");
        assert!(a.batches_late > 0 && a.batches_missing > 0);
        let mut s = String::new();
        line(&a.trucks[0], &a.requests[0][0], &mut s);
        assert!(s.starts_with("readings,name=truck_") || s.starts_with("diagnostics,name=truck_"));
        assert!(s.matches(',').count() >= 8);
    }
}
