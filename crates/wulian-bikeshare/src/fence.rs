//! Electronic fences: the registry's zones whose kind is a bike-share fence (service areas,
//! parking zones, no-parking and no-riding zones), indexed so that "where is this bike" stays a
//! few microseconds against a city's 10,000+ zones.
//!
//! The index is an R-tree ([`rstar`]) over each polygon's bounding box in longitude/latitude
//! degrees; a lookup tests only the few polygons whose box holds the point. Polygons are
//! [`wulian_rules::geo::Polygon`]s, so a fence answers exactly like the rules engine's `in_zone`,
//! with the same limits: planar in degrees, wrong across the antimeridian or around a pole, and a
//! point exactly on an edge may fall either way (two zones sharing an edge never both claim it).
//!
//! One index serves one tenant: build it from that tenant's zones and rebuild it when they
//! change (building 10,000 fences takes milliseconds).

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;

use rstar::RTree;
use rstar::primitives::{GeomWithData, Rectangle};
use serde::Serialize;
use serde_json::Value;
use wulian_rules::geo::{Polygon, distance_m};

/// Why a zone could not become a fence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// The zone's polygon is not a valid GeoJSON Polygon (or its coordinates).
    #[error("zone {name:?}: invalid polygon: {reason}")]
    Polygon { name: String, reason: String },
    /// The zone's properties are neither a JSON object nor null.
    #[error("zone {name:?}: properties must be a JSON object")]
    Properties { name: String },
}

/// Result of this module.
pub type Result<T, E = FenceError> = std::result::Result<T, E>;

/// What a fence means for a bike. The registry's `kind` is free-form; these four are the ones the
/// bike share acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceKind {
    /// Where the service operates; trips may only end inside one (when any exists).
    ServiceArea,
    /// A parking zone (the rider app's "blue zone"): trips end here.
    Parking,
    /// No parking, even inside a parking zone.
    NoParking,
    /// No riding: the lock throttles or the rider walks.
    NoRiding,
}

impl FenceKind {
    /// All kinds, in declaration order.
    pub const ALL: [FenceKind; 4] = [
        FenceKind::ServiceArea,
        FenceKind::Parking,
        FenceKind::NoParking,
        FenceKind::NoRiding,
    ];

    /// Parses a registry zone kind; `None` for kinds that are not fences (the registry holds
    /// zones for other solutions too), which the index ignores.
    pub fn parse(kind: &str) -> Option<FenceKind> {
        match kind {
            "service_area" => Some(FenceKind::ServiceArea),
            "parking" => Some(FenceKind::Parking),
            "no_parking" => Some(FenceKind::NoParking),
            "no_riding" => Some(FenceKind::NoRiding),
            _ => None,
        }
    }

    /// The registry spelling, the inverse of [`FenceKind::parse`].
    pub fn as_str(self) -> &'static str {
        match self {
            FenceKind::ServiceArea => "service_area",
            FenceKind::Parking => "parking",
            FenceKind::NoParking => "no_parking",
            FenceKind::NoRiding => "no_riding",
        }
    }
}

impl fmt::Display for FenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fence: a registry zone with a fence kind and a parsed polygon.
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    /// The zone's name, unique per tenant in the registry.
    pub name: String,
    pub kind: FenceKind,
    pub polygon: Polygon,
    /// The zone's properties (capacity, opening hours, …), always a JSON object.
    pub properties: Value,
}

impl Fence {
    /// A fence from a zone's name, kind, GeoJSON polygon and properties (an object; null stands
    /// for `{}`). Fails with the zone's name and the reason when the polygon does not parse.
    pub fn new(
        name: impl Into<String>,
        kind: FenceKind,
        polygon: &Value,
        properties: Value,
    ) -> Result<Fence> {
        let name = name.into();
        let polygon = match Polygon::from_json(polygon) {
            Ok(polygon) => polygon,
            Err(reason) => return Err(FenceError::Polygon { name, reason }),
        };
        let properties = match properties {
            Value::Null => Value::Object(serde_json::Map::new()),
            Value::Object(_) => properties,
            _ => return Err(FenceError::Properties { name }),
        };
        Ok(Fence {
            name,
            kind,
            polygon,
            properties,
        })
    }

    /// A fence from the registry's zone fields as stored; `Ok(None)` when the kind is not a
    /// fence kind, so a tenant's zones can be filtered in one pass.
    pub fn from_zone(
        name: &str,
        kind: &str,
        polygon: &Value,
        properties: &Value,
    ) -> Result<Option<Fence>> {
        match FenceKind::parse(kind) {
            Some(kind) => Fence::new(name, kind, polygon, properties.clone()).map(Some),
            None => Ok(None),
        }
    }
}

/// Where a point is with respect to the fences: the facts, and [`Placement::parkable`] for the
/// decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Placement<'a> {
    /// Inside a service area; true everywhere when the tenant has no service-area fence (a
    /// city without a drawn service area is served everywhere), false for an invalid position.
    pub in_service_area: bool,
    /// The parking zone holding the point; with overlapping parking zones, the first in the
    /// index's fence order.
    pub parking: Option<&'a str>,
    /// Inside a no-parking zone.
    pub no_parking: bool,
    /// Inside a no-riding zone.
    pub no_riding: bool,
}

impl Placement<'_> {
    /// Where an invalid position (NaN, latitude beyond ±90°, longitude beyond ±180°) is: nowhere.
    pub const OUTSIDE: Placement<'static> = Placement {
        in_service_area: false,
        parking: None,
        no_parking: false,
        no_riding: false,
    };

    /// Whether a trip may end here: inside the service area and a parking zone, and in no
    /// no-parking zone (it wins over an overlapping parking zone, which is how cities carve a
    /// fire-hydrant or a bus stop out of a blue zone) nor no-riding zone (the next rider could
    /// not ride away).
    pub fn parkable(&self) -> bool {
        self.in_service_area && self.parking.is_some() && !self.no_parking && !self.no_riding
    }
}

/// The nearest parking zone to a point, for "the nearest blue zone is 120 m north".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NearestParking<'a> {
    pub name: &'a str,
    /// Great-circle distance to the zone's nearest edge, metres; 0 inside the zone.
    pub distance_m: f64,
    /// The nearest point of the zone (the query point itself when inside).
    pub lat: f64,
    pub lon: f64,
    /// Initial bearing from the query point to that point, degrees clockwise from north in
    /// `[0, 360)`; 0 inside the zone.
    pub bearing_deg: f64,
}

/// Farthest [`FenceIndex::nearest_parking`] looks, metres: a rider does not walk 100 km, and the
/// bound keeps the search's small-angle reasoning exact.
pub const MAX_NEAREST_DISTANCE_M: f64 = 100_000.0;

/// Same radius as `wulian_rules::geo`, for turning metres into angles.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

type Entry = GeomWithData<Rectangle<[f64; 2]>, usize>;

/// A tenant's fences with an R-tree over their bounding boxes.
///
/// One tree per kind: the few city-sized service areas do not widen the parking tree's nodes,
/// each kind is answered on its own (stopping at the first containing zone where one is
/// enough), and nearest-parking search walks parking zones only. Measured on the synthetic city
/// of `examples/fence_bench.rs`, this is as fast as a single tree at 10,000 zones and ~10%
/// faster at 1,000.
#[derive(Clone)]
pub struct FenceIndex {
    fences: Vec<Fence>,
    /// Indexed by `FenceKind as usize`.
    trees: [RTree<Entry>; 4],
    by_name: HashMap<String, usize>,
}

impl fmt::Debug for FenceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FenceIndex")
            .field("fences", &self.fences.len())
            .field(
                "per_kind",
                &FenceKind::ALL.map(|k| (k.as_str(), self.tree(k).size())),
            )
            .finish()
    }
}

impl Default for FenceIndex {
    fn default() -> Self {
        FenceIndex::new(Vec::new())
    }
}

impl FenceIndex {
    /// Indexes the fences (bulk-loaded R-tree, O(n log n)). Their order is kept: it decides
    /// which of two overlapping parking zones a point reports. With two fences of one name,
    /// [`FenceIndex::get`] returns the first.
    pub fn new(fences: Vec<Fence>) -> FenceIndex {
        let trees = FenceKind::ALL.map(|kind| {
            let entries = fences
                .iter()
                .enumerate()
                .filter(|(_, f)| f.kind == kind)
                .map(|(i, fence)| {
                    let (x0, y0, x1, y1) = fence.polygon.bbox();
                    GeomWithData::new(Rectangle::from_corners([x0, y0], [x1, y1]), i)
                })
                .collect();
            RTree::bulk_load(entries)
        });
        let mut by_name = HashMap::with_capacity(fences.len());
        for (i, fence) in fences.iter().enumerate() {
            by_name.entry(fence.name.clone()).or_insert(i);
        }
        FenceIndex {
            fences,
            trees,
            by_name,
        }
    }

    fn tree(&self, kind: FenceKind) -> &RTree<Entry> {
        &self.trees[kind as usize]
    }

    /// Whether a fence of `kind` contains the point.
    fn any_contains(&self, kind: FenceKind, lat: f64, lon: f64) -> bool {
        // Internal iteration: no iterator state to set up, and it stops at the first hit.
        let found = self.tree(kind).locate_all_at_point_int([lon, lat], |e| {
            if self.fences[e.data].polygon.contains(lat, lon) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        found.is_break()
    }

    /// The fences, in the order given to [`FenceIndex::new`].
    pub fn fences(&self) -> &[Fence] {
        &self.fences
    }

    pub fn len(&self) -> usize {
        self.fences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }

    /// The fence named `name`.
    pub fn get(&self, name: &str) -> Option<&Fence> {
        self.by_name.get(name).map(|&i| &self.fences[i])
    }

    /// Where the point is. An invalid position (NaN, out of range) is [`Placement::OUTSIDE`]
    /// rather than an error, so a bike with a broken GPS fix is simply not parkable.
    pub fn locate(&self, lat: f64, lon: f64) -> Placement<'_> {
        if !valid_position(lat, lon) {
            return Placement::OUTSIDE;
        }
        let service_areas = self.tree(FenceKind::ServiceArea);
        let in_service_area =
            service_areas.size() == 0 || self.any_contains(FenceKind::ServiceArea, lat, lon);
        // With overlapping parking zones, the first in fence order.
        let mut parking: Option<usize> = None;
        for entry in self
            .tree(FenceKind::Parking)
            .locate_all_at_point([lon, lat])
        {
            let i = entry.data;
            if parking.is_none_or(|p| i < p) && self.fences[i].polygon.contains(lat, lon) {
                parking = Some(i);
            }
        }
        Placement {
            in_service_area,
            parking: parking.map(|i| self.fences[i].name.as_str()),
            no_parking: self.any_contains(FenceKind::NoParking, lat, lon),
            no_riding: self.any_contains(FenceKind::NoRiding, lat, lon),
        }
    }

    /// The nearest parking zone within `max_distance_m` (capped at
    /// [`MAX_NEAREST_DISTANCE_M`]) and the distance to it in metres: 0 inside, else to its
    /// nearest edge. Ties go to the first zone in fence order. `None` for an invalid position
    /// or a negative or NaN distance.
    pub fn nearest_parking(&self, lat: f64, lon: f64, max_distance_m: f64) -> Option<(&str, f64)> {
        self.nearest_parking_detail(lat, lon, max_distance_m)
            .map(|n| (n.name, n.distance_m))
    }

    /// [`FenceIndex::nearest_parking`] with the nearest point and the bearing to it.
    ///
    /// Nearest-neighbour search on the R-tree, in order of degree distance to the bounding
    /// boxes; it stops once a lower bound in metres for every remaining box (a degree of
    /// longitude shrinks with latitude, so the bound uses the cosine of the highest latitude
    /// within reach) exceeds the best distance found.
    pub fn nearest_parking_detail(
        &self,
        lat: f64,
        lon: f64,
        max_distance_m: f64,
    ) -> Option<NearestParking<'_>> {
        if !valid_position(lat, lon) || max_distance_m.is_nan() || max_distance_m < 0.0 {
            return None;
        }
        let max_distance_m = max_distance_m.min(MAX_NEAREST_DISTANCE_M);
        let bound = MetreBound::at(lat);
        // (distance, fence index, nearest point)
        let mut best: Option<(f64, usize, (f64, f64))> = None;
        let parking = self.tree(FenceKind::Parking);
        for (entry, d2) in parking.nearest_neighbor_iter_with_distance_2([lon, lat]) {
            let limit = best.map_or(max_distance_m, |b| b.0);
            if bound.beyond_degree_distance(d2.sqrt()) > limit {
                break;
            }
            // This box alone may be too far even when later ones are not: skip the polygon.
            let (lower, upper) = (entry.geom().lower(), entry.geom().upper());
            let gx = (lower[0] - lon).max(lon - upper[0]).max(0.0);
            let gy = (lower[1] - lat).max(lat - upper[1]).max(0.0);
            if bound.box_with_gaps(gx, gy) > limit {
                continue;
            }
            let i = entry.data;
            let (d, point) = distance_to_polygon_m(&self.fences[i].polygon, lat, lon);
            let better = match best {
                None => d <= max_distance_m,
                Some((bd, bi, _)) => d < bd || (d == bd && i < bi),
            };
            if better {
                best = Some((d, i, point));
            }
        }
        best.map(|(d, i, (plat, plon))| NearestParking {
            name: &self.fences[i].name,
            distance_m: d,
            lat: plat,
            lon: plon,
            bearing_deg: if d > 0.0 {
                bearing_deg(lat, lon, plat, plon)
            } else {
                0.0
            },
        })
    }
}

/// Whether (lat, lon) is a position on Earth in degrees; NaN fails both tests.
fn valid_position(lat: f64, lon: f64) -> bool {
    (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)
}

/// Lower bounds in metres on the great-circle distance from a query point at latitude `lat`
/// to the points of a box in degree space, valid against any limit up to
/// [`MAX_NEAREST_DISTANCE_M`] (θ as an angle).
///
/// Take a box point whose longitude and latitude differ from the query's by at least `gx` and
/// `gy` (the box's gaps). If its latitude differs by more than θ, it is farther than θ. If not,
/// its latitude is at most `|lat| + θ`, so by the haversine formula its angular distance is at
/// least `gy` and at least `k·gx` with `k = √(cos lat · cos(|lat| + θ))` (0.98 of it, absorbing
/// `sin x ≥ 0.99·x` for the small angles involved). Those are [`MetreBound::box_with_gaps`].
/// A box at Euclidean degree distance `d` has `gx² + gy² = d²`, so `max(gy, k·gx) ≥ k·d/√(1+k²)`:
/// [`MetreBound::beyond_degree_distance`], which holds for every box the nearest-neighbour
/// iterator yields after it. Both are scaled down a hair so rounding never prunes a box at
/// exactly the best distance, and claim nothing past 0.5 rad (≈28°), where small angles end and
/// longitudes may wrap.
struct MetreBound {
    k: f64,
}

impl MetreBound {
    const SLACK: f64 = 1.0 - 1e-9;

    fn at(lat: f64) -> MetreBound {
        let theta = MAX_NEAREST_DISTANCE_M / EARTH_RADIUS_M;
        let lat = lat.abs().to_radians();
        let reach = (lat + theta).min(std::f64::consts::FRAC_PI_2);
        MetreBound {
            k: 0.98 * (lat.cos() * reach.cos()).max(0.0).sqrt(),
        }
    }

    /// For a box `gx`, `gy` degrees away in longitude and latitude.
    fn box_with_gaps(&self, gx_deg: f64, gy_deg: f64) -> f64 {
        let (gx, gy) = (gx_deg.to_radians(), gy_deg.to_radians());
        if gx > 0.5 || gy > 0.5 {
            return 0.0;
        }
        gy.max(self.k * gx) * EARTH_RADIUS_M * Self::SLACK
    }

    /// For every box at least `d_deg` away in degree space.
    fn beyond_degree_distance(&self, d_deg: f64) -> f64 {
        let d = d_deg.to_radians();
        if d > 0.5 {
            return 0.0;
        }
        let k = self.k;
        k * d / (1.0 + k * k).sqrt() * EARTH_RADIUS_M * Self::SLACK
    }
}

/// Distance in metres from the point to the polygon (0 inside) and the nearest point
/// (lat, lon). Edges are straight in degree space, as in `Polygon::contains`; the nearest point
/// on each is found in a local equirectangular projection around the query point and measured
/// with the haversine distance.
fn distance_to_polygon_m(polygon: &Polygon, lat: f64, lon: f64) -> (f64, (f64, f64)) {
    if polygon.contains(lat, lon) {
        return (0.0, (lat, lon));
    }
    let scale = lat.to_radians().cos();
    let project = |(vlon, vlat): (f64, f64)| ((vlon - lon) * scale, vlat - lat);
    let mut best = (f64::INFINITY, (lat, lon));
    for ring in polygon.rings() {
        let Some(&last) = ring.last() else {
            continue;
        };
        let mut prev = last;
        for &next in ring {
            let (ax, ay) = project(prev);
            let (bx, by) = project(next);
            let (dx, dy) = (bx - ax, by - ay);
            let len2 = dx * dx + dy * dy;
            let t = if len2 > 0.0 {
                (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (px, py) = (ax + t * dx, ay + t * dy);
            let d2 = px * px + py * py;
            if d2 < best.0 {
                let point = (
                    prev.1 + t * (next.1 - prev.1),
                    prev.0 + t * (next.0 - prev.0),
                );
                best = (d2, point);
            }
            prev = next;
        }
    }
    let (plat, plon) = best.1;
    (distance_m(lat, lon, plat, plon), best.1)
}

/// Initial great-circle bearing from the first point to the second, degrees in `[0, 360)`.
fn bearing_deg(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dl = (lon2 - lon1).to_radians();
    let y = dl.sin() * p2.cos();
    let x = p1.cos() * p2.sin() - p1.sin() * p2.cos() * dl.cos();
    let b = y.atan2(x).to_degrees().rem_euclid(360.0);
    if b >= 360.0 { 0.0 } else { b }
}

#[cfg(test)]
mod tests;
