//! H3 cells for the bike share: where bikes are and where trips start, per hexagon and hour, and
//! which bikes to move where.
//!
//! Cells come from [`h3o`] (pure Rust H3) and travel through APIs as their canonical 15-digit
//! lowercase hex string (`"8931aa42a5bffff"`), the form every H3 tool prints and parses.
//! Functions here return an error for an invalid position or cell id rather than panicking.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::str::FromStr;

use h3o::{CellIndex, LatLng, Resolution};
use serde::Serialize;
use wulian_rules::geo::distance_m;

/// The bike share's H3 resolution: 9, hexagons of about 0.1 km² (edges of ~175 m). A rider
/// walks across one in about four minutes, which is the scale at which "is there a bike near
/// me" is decided; resolution 8 (0.7 km²) hides empty streets inside busy cells, and resolution
/// 10 (0.015 km²) leaves most cells with zero or one bike, too few to tell demand from noise.
pub const DEFAULT_RESOLUTION: u8 = 9;

/// One hour in milliseconds: the bucket of [`SupplyDemand`].
pub const HOUR_MS: i64 = 3_600_000;

const DAY_MS: i64 = 24 * HOUR_MS;

/// Bikes a donor cell keeps beyond its expected demand before [`suggest_rebalancing`] takes any,
/// so a cell is never emptied down to the last bike a forecast asked for.
pub const SURPLUS_BUFFER: u32 = 1;

/// Why a position or a cell id was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CellError {
    /// Latitude outside ±90°, longitude outside ±180°, or not a finite number.
    #[error("position ({lat}, {lon}) is not a latitude and longitude in degrees")]
    InvalidPosition { lat: f64, lon: f64 },
    /// H3 resolutions are 0 to 15.
    #[error("H3 resolution must be 0 to 15, found {0}")]
    InvalidResolution(u8),
    /// Not a valid H3 cell index in hex (the id is cut to 32 characters).
    #[error("not an H3 cell id: {0:?}")]
    InvalidCell(String),
}

/// Result of this module.
pub type Result<T, E = CellError> = std::result::Result<T, E>;

/// The cell holding (lat, lon) at `resolution` (0–15; [`DEFAULT_RESOLUTION`] for the bike
/// share), as its canonical hex id.
pub fn cell(lat: f64, lon: f64, resolution: u8) -> Result<String> {
    let resolution =
        Resolution::try_from(resolution).map_err(|_| CellError::InvalidResolution(resolution))?;
    if !((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
        return Err(CellError::InvalidPosition { lat, lon });
    }
    let ll = LatLng::new(lat, lon).map_err(|_| CellError::InvalidPosition { lat, lon })?;
    Ok(ll.to_cell(resolution).to_string())
}

/// The centre of a cell, (lat, lon) in degrees, for map markers and distances. Accepts the id
/// in either case.
pub fn cell_center(cell: &str) -> Result<(f64, f64)> {
    let ll = LatLng::from(parse_cell(cell)?);
    Ok((ll.lat(), ll.lng()))
}

/// The cell's outline, (lat, lon) vertices in order (six for a hexagon, five for the twelve
/// pentagons per resolution, a few more where an edge crosses an icosahedron face), not closed.
pub fn cell_boundary(cell: &str) -> Result<Vec<(f64, f64)>> {
    let boundary = parse_cell(cell)?.boundary();
    Ok(boundary.iter().map(|ll| (ll.lat(), ll.lng())).collect())
}

/// The cell's resolution.
pub fn cell_resolution(cell: &str) -> Result<u8> {
    Ok(u8::from(parse_cell(cell)?.resolution()))
}

/// The canonical (lowercase) id of a cell id given in either case.
pub fn canonical_cell(cell: &str) -> Result<String> {
    Ok(parse_cell(cell)?.to_string())
}

fn parse_cell(cell: &str) -> Result<CellIndex> {
    // `from_str_radix` also takes a leading `+`, which is not a cell id.
    let plain_hex =
        !cell.is_empty() && cell.len() <= 16 && cell.bytes().all(|b| b.is_ascii_hexdigit());
    plain_hex
        .then(|| CellIndex::from_str(cell).ok())
        .flatten()
        .ok_or_else(|| CellError::InvalidCell(cell.chars().take(32).collect()))
}

/// The start of the hour holding `ms` (floor, also before 1970).
pub fn hour_start(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS).saturating_mul(HOUR_MS)
}

/// One row of [`SupplyDemand`].
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SupplyDemandRow {
    pub cell: String,
    pub hour_start_ms: i64,
    /// Mean available bikes over the supply samples of this cell and hour (0 with no samples).
    pub supply: f64,
    /// How many supply samples the mean is of.
    pub supply_samples: u32,
    /// Trip starts in this cell and hour.
    pub demand: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    supply_sum: u64,
    supply_samples: u32,
    demand: u64,
}

/// Supply (available bikes) and demand (trip starts) per cell and hour: a plain in-memory
/// aggregate that the caller feeds from fleet snapshots and trips, and trims with
/// [`SupplyDemand::prune_before`] (it grows by one entry per active cell and hour).
///
/// Supply is a mean, not a sum: fleet snapshots come every few minutes, and adding them up
/// would make supply depend on the snapshot rate. Report every tracked cell in each snapshot,
/// zero included, so a cell that empties mid-hour averages down. Demand is a sum.
#[derive(Debug, Clone, Default)]
pub struct SupplyDemand {
    /// hour start → cell → counts; ordered, so rows come out sorted without a sort.
    hours: BTreeMap<i64, BTreeMap<String, Slot>>,
}

impl SupplyDemand {
    pub fn new() -> SupplyDemand {
        SupplyDemand::default()
    }

    /// Records one supply sample: `available_bikes` in `cell` during the hour holding
    /// `hour_start_ms` (any instant of the hour works; it is floored).
    pub fn add_supply(&mut self, cell: &str, hour_start_ms: i64, available_bikes: u32) {
        self.update(cell, hour_start_ms, |slot| {
            slot.supply_sum = slot.supply_sum.saturating_add(u64::from(available_bikes));
            slot.supply_samples = slot.supply_samples.saturating_add(1);
        });
    }

    /// Adds `trip_starts` trips started in `cell` during the hour holding `hour_start_ms`.
    pub fn add_demand(&mut self, cell: &str, hour_start_ms: i64, trip_starts: u32) {
        self.update(cell, hour_start_ms, |slot| {
            slot.demand = slot.demand.saturating_add(u64::from(trip_starts));
        });
    }

    fn update(&mut self, cell: &str, ms: i64, f: impl FnOnce(&mut Slot)) {
        let cells = self.hours.entry(hour_start(ms)).or_default();
        // Look up by &str first: no allocation for a cell already present.
        match cells.get_mut(cell) {
            Some(slot) => f(slot),
            None => {
                let mut slot = Slot::default();
                f(&mut slot);
                cells.insert(cell.to_owned(), slot);
            }
        }
    }

    /// Every row, sorted by hour and then cell.
    pub fn rows(&self) -> Vec<SupplyDemandRow> {
        self.rows_between(i64::MIN, i64::MAX)
    }

    /// The rows of the hours starting in `[from_ms, to_ms)`, sorted by hour and then cell.
    pub fn rows_between(&self, from_ms: i64, to_ms: i64) -> Vec<SupplyDemandRow> {
        if from_ms >= to_ms {
            return Vec::new();
        }
        let mut rows = Vec::new();
        for (&hour, cells) in self.hours.range(from_ms..to_ms) {
            for (cell, slot) in cells {
                rows.push(SupplyDemandRow {
                    cell: cell.clone(),
                    hour_start_ms: hour,
                    supply: if slot.supply_samples == 0 {
                        0.0
                    } else {
                        slot.supply_sum as f64 / f64::from(slot.supply_samples)
                    },
                    supply_samples: slot.supply_samples,
                    demand: slot.demand,
                });
            }
        }
        rows
    }

    /// Expected trip starts per cell at `hour_of_day` (0–23, local time `utc_offset_minutes`
    /// from UTC): the mean over the days the aggregate holds that hour, a day without trips in a
    /// cell counting as zero. The input for [`suggest_rebalancing`]. Empty for an hour past 23.
    pub fn expected_demand(
        &self,
        hour_of_day: u8,
        utc_offset_minutes: i32,
    ) -> HashMap<String, f64> {
        let offset = i64::from(utc_offset_minutes) * 60_000;
        let mut days = BTreeSet::new();
        let mut totals: HashMap<String, u64> = HashMap::new();
        if hour_of_day > 23 {
            return HashMap::new();
        }
        for (&hour, cells) in &self.hours {
            let local = hour.saturating_add(offset);
            if local.div_euclid(HOUR_MS).rem_euclid(24) != i64::from(hour_of_day) {
                continue;
            }
            days.insert(local.div_euclid(DAY_MS));
            for (cell, slot) in cells.iter().filter(|(_, s)| s.demand > 0) {
                let total = totals.entry(cell.clone()).or_default();
                *total = total.saturating_add(slot.demand);
            }
        }
        let days = days.len().max(1) as f64;
        totals
            .into_iter()
            .map(|(cell, n)| (cell, n as f64 / days))
            .collect()
    }

    /// Drops the hours starting before `ms`, to bound memory.
    pub fn prune_before(&mut self, ms: i64) {
        self.hours = self.hours.split_off(&ms);
    }

    /// Number of (cell, hour) rows.
    pub fn len(&self) -> usize {
        self.hours.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.hours.is_empty()
    }
}

/// A rebalancing move: take `bikes` from one cell to another, `distance_m` apart (great-circle
/// distance between the cells' centres).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = RebalancingMove)]
pub struct Move {
    pub from_cell: String,
    pub to_cell: String,
    pub bikes: u32,
    pub distance_m: f64,
}

/// How many nearest receivers each donor keeps as candidates before looking again; bounds
/// memory at donors × this instead of donors × receivers.
const CANDIDATES: usize = 32;

/// Suggests at most `max_moves` moves from cells with a surplus to cells with a deficit, the
/// nearest pairs first, so a van's kilometres go where they fix the most shortfall per metre.
///
/// A cell needs its expected demand rounded to whole bikes. Its surplus is what it has beyond
/// that need plus [`SURPLUS_BUFFER`]; its deficit is the need it cannot cover. Greedily, the
/// closest (donor, receiver) pair still open moves `min(surplus left, deficit left)` bikes, so
/// no donor gives more than its surplus, no receiver gets more than its deficit, and no bike
/// moves twice (a cell is a donor or a receiver, never both). Ties in distance go by donor id,
/// then receiver id, so the answer is deterministic.
///
/// Cell ids are taken in either case and reported canonically; ids that name the same cell are
/// merged; ids that are not H3 cells are ignored, as are expected demands that are negative or
/// not finite. Cells of different resolutions may be mixed (distances are between centres).
///
/// Cost: one distance per (donor, receiver) pair up front, about 0.1 s for 1,000 × 1,000 cells
/// on one core, and memory for 32 candidates per donor rather than for every pair.
pub fn suggest_rebalancing(
    supply: &HashMap<String, u32>,
    expected_demand: &HashMap<String, f64>,
    max_moves: usize,
) -> Vec<Move> {
    // Canonical cell → (bikes, need).
    let mut cells: BTreeMap<CellIndex, (u32, u32)> = BTreeMap::new();
    for (id, &bikes) in supply {
        if let Ok(c) = parse_cell(id) {
            let entry = cells.entry(c).or_default();
            entry.0 = entry.0.saturating_add(bikes);
        }
    }
    for (id, &expected) in expected_demand {
        if let Ok(c) = parse_cell(id) {
            let need = if expected.is_finite() && expected > 0.0 {
                expected.round().min(f64::from(u32::MAX)) as u32
            } else {
                0
            };
            let entry = cells.entry(c).or_default();
            entry.1 = entry.1.saturating_add(need);
        }
    }
    // Sort by canonical id (the hex string), which the tie-break promises.
    let mut cells: Vec<(String, CellIndex, u32, u32)> = cells
        .into_iter()
        .map(|(c, (bikes, need))| (c.to_string(), c, bikes, need))
        .collect();
    cells.sort_by(|a, b| a.0.cmp(&b.0));

    let mut donors = Vec::new();
    let mut receivers = Vec::new();
    for (id, c, bikes, need) in cells {
        let ll = LatLng::from(c);
        let center = (ll.lat(), ll.lng());
        let surplus = bikes.saturating_sub(need.saturating_add(SURPLUS_BUFFER));
        let deficit = need.saturating_sub(bikes);
        if surplus > 0 {
            donors.push(Donor {
                id,
                center,
                left: surplus,
                candidates: Vec::new(),
                next: 0,
            });
        } else if deficit > 0 {
            receivers.push(Receiver {
                id,
                center,
                left: deficit,
            });
        }
    }
    let mut moves = Vec::new();
    if max_moves == 0 || donors.is_empty() || receivers.is_empty() {
        return moves;
    }

    // Each donor's nearest open receiver, in one heap; the smallest pair moves next.
    let mut heap = BinaryHeap::with_capacity(donors.len());
    for d in 0..donors.len() {
        push_nearest(d, &mut donors, &receivers, &mut heap);
    }
    while moves.len() < max_moves {
        let Some(Reverse(pair)) = heap.pop() else {
            break;
        };
        let (d, r) = (pair.donor, pair.receiver);
        if receivers[r].left > 0 {
            let bikes = donors[d].left.min(receivers[r].left);
            donors[d].left -= bikes;
            receivers[r].left -= bikes;
            moves.push(Move {
                from_cell: donors[d].id.clone(),
                to_cell: receivers[r].id.clone(),
                bikes,
                distance_m: pair.distance_m,
            });
        }
        // The receiver is full now (or was already: a stale pair); the donor looks further.
        if donors[d].left > 0 {
            donors[d].next += 1;
            push_nearest(d, &mut donors, &receivers, &mut heap);
        }
    }
    moves
}

struct Donor {
    id: String,
    center: (f64, f64),
    left: u32,
    /// The nearest receivers found at the last look, ascending by (distance, index).
    candidates: Vec<(f64, usize)>,
    next: usize,
}

struct Receiver {
    id: String,
    center: (f64, f64),
    left: u32,
}

/// A (donor, receiver) pair ordered by distance, then donor id, then receiver id (the vectors
/// are sorted by id, so indices order like ids).
#[derive(Debug, Clone, Copy)]
struct Pair {
    distance_m: f64,
    donor: usize,
    receiver: usize,
}

impl Pair {
    fn key(&self) -> (f64, usize, usize) {
        (self.distance_m, self.donor, self.receiver)
    }
}

impl Ord for Pair {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.key(), other.key());
        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}

/// Pushes donor `d`'s nearest receiver that still has a deficit, looking again among all open
/// receivers when its candidate list is used up. Receivers only ever fill, so the candidates
/// found later are never nearer than those already passed: the donor's pairs come in order.
fn push_nearest(
    d: usize,
    donors: &mut [Donor],
    receivers: &[Receiver],
    heap: &mut BinaryHeap<Reverse<Pair>>,
) {
    let donor = &mut donors[d];
    loop {
        if donor.next >= donor.candidates.len() {
            let (lat, lon) = donor.center;
            let mut open: Vec<(f64, usize)> = receivers
                .iter()
                .enumerate()
                .filter(|(_, r)| r.left > 0)
                .map(|(i, r)| (distance_m(lat, lon, r.center.0, r.center.1), i))
                .collect();
            let by_key =
                |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            if open.len() > CANDIDATES {
                open.select_nth_unstable_by(CANDIDATES - 1, by_key);
                open.truncate(CANDIDATES);
            }
            open.sort_unstable_by(by_key);
            donor.candidates = open;
            donor.next = 0;
            if donor.candidates.is_empty() {
                return;
            }
        }
        let (distance_m, receiver) = donor.candidates[donor.next];
        if receivers[receiver].left > 0 {
            heap.push(Reverse(Pair {
                distance_m,
                donor: d,
                receiver,
            }));
            return;
        }
        donor.next += 1;
    }
}

#[cfg(test)]
mod tests;
