//! A synthetic city map around a centre, reproducible from a seed: districts, a street grid, a
//! lake and a river for the console to draw (it has no internet tiles), and the bike share's
//! fences (a service area, parking zones along the streets, no-parking plazas and no-riding
//! streets) for the demo to create as registry zones.
//!
//! Everything is laid out in a flat frame of metres east and north of the centre and converted
//! to degrees at the end, with one scale for the whole city: within a few kilometres the error
//! is far below a metre, and a fence tested in degrees (as `wulian_rules::geo` does) answers
//! exactly as it does in metres.
//!
//! What a generated city of radius R holds:
//! - a service area, an irregular near-circle between 0.90 R and 1.00 R from the centre;
//! - 5–7 districts (Voronoi cells of the service area) with Chinese and English names;
//! - a street grid, rotated and gently warped, one street every 150–300 m, every fourth an
//!   arterial, plus a ring road at 0.6 R; streets stop at the lake, local ones at the river;
//! - a lake of about 0.25 R across and a river 40–250 m wide crossing the city;
//! - the requested number of parking zones: 16–24 m × 6–8 m rectangles beside the streets,
//!   denser downtown, never in water, in another fence or overlapping each other;
//! - 3–6 no-parking zones of 80–150 m a side (station forecourts, plazas);
//! - 1–2 no-riding zones: a lakeside promenade and sometimes a pedestrian street.

use std::collections::HashMap;
use std::f64::consts::{PI, TAU};

use serde_json::{Value, json};

use crate::rng::Rng;

/// Metres per degree of latitude (as the locks use).
const M_PER_DEG: f64 = 111_320.0;
/// The radius used when the one given is not a number.
const DEFAULT_RADIUS_M: f64 = 4_000.0;
/// Radii outside this range are clamped: smaller cities have no room for a street grid, and
/// larger ones would leave the flat-frame approximation behind.
const MIN_RADIUS_M: f64 = 500.0;
const MAX_RADIUS_M: f64 = 20_000.0;
/// Centres are clamped into this latitude and longitude band, so that every coordinate of the
/// city is a valid one (no pole, no antimeridian).
const MAX_ABS_LAT: f64 = 75.0;
const MAX_ABS_LON: f64 = 178.0;
/// Parking zones: length along the street and depth, metres.
const PARKING_LENGTH_M: (f64, f64) = (16.0, 24.0);
const PARKING_DEPTH_M: (f64, f64) = (6.0, 8.0);
/// Centres of two parking zones are at least this far apart, which keeps them from
/// overlapping (their half-diagonals are at most 12.65 m).
const PARKING_SPACING_M: f64 = 30.0;
/// Room a parking zone keeps from the service area's edge, water and other fences (metres).
const PARKING_CLEARANCE_M: f64 = 3.0;
/// Parking placements refused in a row after which the city counts as full.
const MAX_REFUSED_IN_A_ROW: usize = 5_000;
/// Metres of bike row per parked bike: a zone's capacity is its length over this.
const M_PER_PARKED_BIKE: f64 = 1.5;

/// A point in the city's frame: metres east and north of the centre.
type Pt = (f64, f64);

/// A bike-share fence, ready to become a registry zone (`PUT /zones/{name}` or
/// `Registry::put_zone`).
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneSpec {
    /// ASCII and free of quotes and slashes, as registry zone names must be: `service-area`,
    /// `parking-0001`, `no-parking-west-station`, `no-riding-lakeside-promenade`.
    pub name: String,
    /// The fence kind the bike share acts on: `service_area`, `parking`, `no_parking` or
    /// `no_riding`.
    pub kind: String,
    /// A GeoJSON Polygon: one closed, counter-clockwise ring of `[lon, lat]`.
    pub polygon: Value,
    /// A JSON object: `capacity`, `district` and `street` for parking zones, a `label` (Chinese
    /// and English) and a `reason` for the others.
    pub properties: Value,
}

/// A synthetic city: its basemap and its bike-share fences. See the module documentation for
/// what it holds; [`CityMap::generate`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct CityMap {
    center: (f64, f64),
    radius_m: f64,
    districts: Vec<District>,
    streets: Vec<Street>,
    water: Vec<Water>,
    zones: Vec<ZoneSpec>,
    spots: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
struct District {
    name: Name,
    ring: Vec<Pt>,
}

#[derive(Debug, Clone, PartialEq)]
struct Street {
    class: StreetClass,
    name: Name,
    line: Vec<Pt>,
}

#[derive(Debug, Clone, PartialEq)]
struct Water {
    kind: &'static str,
    name: Name,
    ring: Vec<Pt>,
}

/// A place name in Chinese and in English.
#[derive(Debug, Clone, PartialEq)]
struct Name {
    zh: String,
    en: String,
}

impl Name {
    fn new(zh: impl Into<String>, en: impl Into<String>) -> Name {
        Name {
            zh: zh.into(),
            en: en.into(),
        }
    }

    fn full(&self) -> String {
        format!("{} {}", self.zh, self.en)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreetClass {
    Arterial,
    Ring,
    Local,
}

impl StreetClass {
    fn as_str(self) -> &'static str {
        match self {
            StreetClass::Arterial => "arterial",
            StreetClass::Ring => "ring",
            StreetClass::Local => "local",
        }
    }

    /// Half the carriageway's width, metres: parking zones start beyond it.
    fn half_width_m(self) -> f64 {
        match self {
            StreetClass::Arterial => 12.0,
            StreetClass::Ring => 14.0,
            StreetClass::Local => 6.0,
        }
    }
}

const DISTRICTS: [(&str, &str); 8] = [
    ("上城区", "Shangcheng"),
    ("西湖区", "Xihu"),
    ("拱墅区", "Gongshu"),
    ("滨江区", "Binjiang"),
    ("萧山区", "Xiaoshan"),
    ("余杭区", "Yuhang"),
    ("临平区", "Linping"),
    ("钱塘区", "Qiantang"),
];
/// Index in [`DISTRICTS`] of the centre's district and of the lake's.
const CENTRAL_DISTRICT: usize = 0;
const LAKE_DISTRICT: usize = 1;

const RIVERS: [(&str, &str); 3] = [
    ("运河", "Grand Canal"),
    ("钱塘江", "Qiantang River"),
    ("浦阳江", "Puyang River"),
];

const ARTERIAL_NAMES: [(&str, &str); 16] = [
    ("中山", "Zhongshan"),
    ("解放", "Jiefang"),
    ("庆春", "Qingchun"),
    ("凤起", "Fengqi"),
    ("天目山", "Tianmushan"),
    ("莫干山", "Moganshan"),
    ("建国", "Jianguo"),
    ("秋涛", "Qiutao"),
    ("钱江", "Qianjiang"),
    ("江南", "Jiangnan"),
    ("古墩", "Gudun"),
    ("学院", "Xueyuan"),
    ("文一", "Wenyi"),
    ("德胜", "Desheng"),
    ("艮山", "Genshan"),
    ("湖墅", "Hushu"),
];

const LOCAL_NAMES: [(&str, &str); 40] = [
    ("文三", "Wensan"),
    ("教工", "Jiaogong"),
    ("保俶", "Baochu"),
    ("曙光", "Shuguang"),
    ("杭大", "Hangda"),
    ("黄龙", "Huanglong"),
    ("龙游", "Longyou"),
    ("武林", "Wulin"),
    ("长庆", "Changqing"),
    ("岳王", "Yuewang"),
    ("邮电", "Youdian"),
    ("湖滨", "Hubin"),
    ("东坡", "Dongpo"),
    ("平海", "Pinghai"),
    ("学士", "Xueshi"),
    ("惠兴", "Huixing"),
    ("开元", "Kaiyuan"),
    ("清泰", "Qingtai"),
    ("河坊", "Hefang"),
    ("南山", "Nanshan"),
    ("北山", "Beishan"),
    ("朝晖", "Zhaohui"),
    ("潮王", "Chaowang"),
    ("石桥", "Shiqiao"),
    ("秋石", "Qiushi"),
    ("体育场", "Tiyuchang"),
    ("环西", "Huanxi"),
    ("孝女", "Xiaonü"),
    ("马市", "Mashi"),
    ("华光", "Huaguang"),
    ("耶稣堂", "Yesutang"),
    ("青年", "Qingnian"),
    ("光复", "Guangfu"),
    ("劳动", "Laodong"),
    ("定安", "Ding'an"),
    ("吴山", "Wushan"),
    ("城头", "Chengtou"),
    ("仓河", "Canghe"),
    ("丰乐", "Fengle"),
    ("白傅", "Baifu"),
];

/// A no-parking zone to place: where it is wanted and what it is.
struct NoParkingSite {
    name: &'static str,
    zh: &'static str,
    en: &'static str,
    reason: &'static str,
    /// The direction from the centre (radians from east); `None`: any.
    direction: Option<f64>,
    /// The distance from the centre, as fractions of the radius (nearest, farthest).
    distance: (f64, f64),
}

/// The no-parking zones, in the order they are placed (a city has the first 3–6).
const NO_PARKING: [NoParkingSite; 6] = [
    NoParkingSite {
        name: "no-parking-west-station",
        zh: "城西站",
        en: "West Station",
        reason: "station_forecourt",
        direction: Some(PI),
        distance: (0.55, 0.75),
    },
    NoParkingSite {
        name: "no-parking-east-station",
        zh: "城东站",
        en: "East Station",
        reason: "station_forecourt",
        direction: Some(0.0),
        distance: (0.55, 0.75),
    },
    NoParkingSite {
        name: "no-parking-civic-centre-plaza",
        zh: "市民中心广场",
        en: "Civic Centre Plaza",
        reason: "plaza",
        direction: None,
        distance: (0.0, 0.15),
    },
    NoParkingSite {
        name: "no-parking-wulin-square",
        zh: "武林广场",
        en: "Wulin Square",
        reason: "plaza",
        direction: None,
        distance: (0.15, 0.35),
    },
    NoParkingSite {
        name: "no-parking-first-hospital",
        zh: "第一人民医院",
        en: "First People's Hospital",
        reason: "hospital_entrance",
        direction: None,
        distance: (0.3, 0.6),
    },
    NoParkingSite {
        name: "no-parking-longxiangqiao-metro",
        zh: "龙翔桥地铁站",
        en: "Longxiangqiao Metro",
        reason: "metro_exit",
        direction: None,
        distance: (0.1, 0.5),
    },
];

impl CityMap {
    /// A city of about `radius_m` around `center` (latitude, longitude) with `parking_zones`
    /// parking zones; the same arguments give the same city. The centre is clamped to
    /// |lat| ≤ 75°, |lon| ≤ 178° and the radius to 500 m–20 km (4 km when not a number). A city
    /// too small for the parking zones asked for holds as many as fit.
    pub fn generate(center: (f64, f64), radius_m: f64, parking_zones: usize, seed: u64) -> CityMap {
        let center = (
            finite_or(center.0, 0.0).clamp(-MAX_ABS_LAT, MAX_ABS_LAT),
            finite_or(center.1, 0.0).clamp(-MAX_ABS_LON, MAX_ABS_LON),
        );
        let r = finite_or(radius_m, DEFAULT_RADIUS_M).clamp(MIN_RADIUS_M, MAX_RADIUS_M);
        let mut rng = Rng::new(seed ^ 0x6369_7479_6d61_7021);
        let mut builder = Builder::new(r, &mut rng);
        builder.streets(&mut rng);
        builder.no_riding(&mut rng);
        builder.no_parking(&mut rng);
        let districts = builder.districts(&mut rng);
        let parking = builder.parking(parking_zones, &districts, &mut rng);
        builder.finish(center, districts, parking)
    }

    /// The city's centre (latitude, longitude), after clamping.
    pub fn center(&self) -> (f64, f64) {
        self.center
    }

    /// The city's radius in metres, after clamping; the service area lies between 0.90 and 1.00
    /// of it.
    pub fn radius_m(&self) -> f64 {
        self.radius_m
    }

    /// The fences: the service area first, then the parking, no-parking and no-riding zones.
    pub fn zones(&self) -> &[ZoneSpec] {
        &self.zones
    }

    /// The centres of the parking zones (latitude, longitude), in zone order: where simulated
    /// bikes start and riders park ([`crate::CityConfig::parking_spots`]).
    pub fn parking_spots(&self) -> Vec<(f64, f64)> {
        self.spots.clone()
    }

    /// The basemap as a GeoJSON FeatureCollection for the console to draw: districts
    /// (Polygons), water (Polygons) and streets (LineStrings), in that drawing order. Every
    /// feature has a `layer` property (`district`, `water`, `street`) and a `name` (Chinese and
    /// English, also apart as `name_zh` and `name_en`); streets have a `class` (`arterial`,
    /// `ring`, `local`), water a `kind` (`lake`, `river`).
    pub fn basemap_geojson(&self) -> Value {
        let mut features = Vec::new();
        for d in &self.districts {
            features.push(feature(
                polygon_json(self.center, &d.ring),
                json!({
                    "layer": "district",
                    "name": d.name.full(),
                    "name_zh": d.name.zh,
                    "name_en": d.name.en,
                }),
            ));
        }
        for w in &self.water {
            features.push(feature(
                polygon_json(self.center, &w.ring),
                json!({
                    "layer": "water",
                    "kind": w.kind,
                    "name": w.name.full(),
                    "name_zh": w.name.zh,
                    "name_en": w.name.en,
                }),
            ));
        }
        for s in &self.streets {
            let coordinates: Vec<Value> = s.line.iter().map(|&p| lon_lat(self.center, p)).collect();
            features.push(feature(
                json!({"type": "LineString", "coordinates": coordinates}),
                json!({
                    "layer": "street",
                    "class": s.class.as_str(),
                    "name": s.name.full(),
                    "name_zh": s.name.zh,
                    "name_en": s.name.en,
                }),
            ));
        }
        json!({"type": "FeatureCollection", "features": features})
    }
}

fn feature(geometry: Value, properties: Value) -> Value {
    json!({"type": "Feature", "geometry": geometry, "properties": properties})
}

fn finite_or(x: f64, fallback: f64) -> f64 {
    if x.is_finite() { x } else { fallback }
}

/// A radial wobble `1 + Σ a·sin(kθ + φ)`: smooth, irregular outlines around a centre.
#[derive(Debug, Clone)]
struct Wobble(Vec<(f64, f64, f64)>);

impl Wobble {
    fn new(rng: &mut Rng, terms: &[(f64, f64)]) -> Wobble {
        Wobble(
            terms
                .iter()
                .map(|&(a, k)| (a, k, rng.range(0.0, TAU)))
                .collect(),
        )
    }

    fn at(&self, theta: f64) -> f64 {
        1.0 + self
            .0
            .iter()
            .map(|&(a, k, phase)| a * (k * theta + phase).sin())
            .sum::<f64>()
    }

    /// A closed outline of `n` vertices around `c` with radius `radius · self.at(θ)`.
    fn ring(&self, c: Pt, radius: f64, n: usize) -> Vec<Pt> {
        (0..n)
            .map(|i| {
                let theta = TAU * i as f64 / n as f64;
                let rr = radius * self.at(theta);
                (c.0 + rr * theta.cos(), c.1 + rr * theta.sin())
            })
            .collect()
    }
}

/// A polygon that zones must keep out of, with its bounding box for a quick rejection.
struct Obstacle {
    ring: Vec<Pt>,
    bbox: (f64, f64, f64, f64),
}

impl Obstacle {
    fn new(ring: Vec<Pt>) -> Obstacle {
        let bbox = ring.iter().fold(
            (
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
            ),
            |(x0, y0, x1, y1), &(x, y)| (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
        );
        Obstacle { ring, bbox }
    }

    /// Whether the disc of `radius` around `p` stays clear of the polygon.
    fn clear_of(&self, p: Pt, radius: f64) -> bool {
        let (x0, y0, x1, y1) = self.bbox;
        if p.0 < x0 - radius || p.0 > x1 + radius || p.1 < y0 - radius || p.1 > y1 + radius {
            return true;
        }
        !ring_contains(&self.ring, p) && distance_to_ring(&self.ring, p) >= radius
    }

    fn contains(&self, p: Pt) -> bool {
        let (x0, y0, x1, y1) = self.bbox;
        p.0 >= x0 && p.0 <= x1 && p.1 >= y0 && p.1 <= y1 && ring_contains(&self.ring, p)
    }
}

/// A fence under construction, in the city's frame.
struct Fence {
    name: String,
    kind: &'static str,
    ring: Vec<Pt>,
    properties: Value,
}

/// A parking zone before it becomes a [`ZoneSpec`].
struct Parking {
    center: Pt,
    ring: Vec<Pt>,
    properties: Value,
}

struct Builder {
    r: f64,
    outline: Wobble,
    boundary: Vec<Pt>,
    /// Direction of the street grid (radians from east).
    grid_angle: f64,
    lake: Water,
    lake_center: Pt,
    lake_wobble: Wobble,
    lake_radius: f64,
    river: Water,
    /// The river as the chain of quadrilaterals it is built from: a segment or a zone meets
    /// only the few nearby, where the whole outline would be tested edge by edge.
    river_quads: Vec<Vec<Pt>>,
    streets: Vec<Street>,
    /// The no-parking and no-riding fences, in the order they were placed.
    fences: Vec<Fence>,
}

/// Vertices of the service area and the lake's outline.
const BOUNDARY_VERTICES: usize = 96;
const LAKE_VERTICES: usize = 48;

impl Builder {
    /// The outline of the city and its water.
    fn new(r: f64, rng: &mut Rng) -> Builder {
        let outline = Wobble::new(rng, &[(0.03, 2.0), (0.015, 3.0), (0.005, 5.0)]);
        let boundary = outline.ring((0.0, 0.0), 0.95 * r, BOUNDARY_VERTICES);
        // The river crosses the city on one side of the centre, the lake lies on the other:
        // they never meet (the lake reaches at most 0.19 R from its centre).
        let along = rng.range(0.0, PI);
        let (d, n) = ((along.cos(), along.sin()), (-along.sin(), along.cos()));
        let side = if rng.chance(0.5) { 1.0 } else { -1.0 };
        let lake_radius = r * rng.range(0.11, 0.15);
        let lake_wobble = Wobble::new(rng, &[(0.12, 2.0), (0.08, 3.0), (0.04, 5.0)]);
        let (off_n, off_d) = (-side * r * rng.range(0.3, 0.42), r * rng.range(-0.15, 0.15));
        let lake_center = (n.0 * off_n + d.0 * off_d, n.1 * off_n + d.1 * off_d);
        let lake = Water {
            kind: "lake",
            name: Name::new("西湖", "West Lake"),
            ring: lake_wobble.ring(lake_center, lake_radius, LAKE_VERTICES),
        };
        let (river, river_quads) = river(r, d, n, side, rng);
        Builder {
            r,
            outline,
            boundary,
            grid_angle: rng.range(-0.35, 0.35),
            lake,
            lake_center,
            lake_wobble,
            lake_radius,
            river,
            river_quads,
            streets: Vec::new(),
            fences: Vec::new(),
        }
    }

    /// The lake and the river, as obstacles.
    fn water(&self) -> Vec<Obstacle> {
        let mut water = vec![Obstacle::new(self.lake.ring.clone())];
        water.extend(self.river_quads.iter().map(|q| Obstacle::new(q.clone())));
        water
    }

    /// The street grid and the ring road.
    fn streets(&mut self, rng: &mut Rng) {
        let r = self.r;
        let spacing = (r / 16.0).clamp(150.0, 300.0);
        let k = (1.1 * r / spacing).ceil() as i64;
        let size = (2 * k + 1) as usize;
        // A gentle, coherent warp and a little noise per crossing, then the grid's rotation.
        let (wa, wl, wp) = (
            rng.range(0.1, 0.16) * spacing,
            rng.range(2.5, 4.0) * spacing,
            rng.range(0.0, TAU),
        );
        let (va, vl, vp) = (
            rng.range(0.1, 0.16) * spacing,
            rng.range(2.5, 4.0) * spacing,
            rng.range(0.0, TAU),
        );
        let (cos_a, sin_a) = (self.grid_angle.cos(), self.grid_angle.sin());
        let mut nodes = Vec::with_capacity(size * size);
        for i in -k..=k {
            for j in -k..=k {
                let (u0, v0) = (i as f64 * spacing, j as f64 * spacing);
                let jitter = 0.025 * spacing;
                let u = u0 + wa * (v0 / wl + wp).sin() + rng.range(-jitter, jitter);
                let v = v0 + va * (u0 / vl + vp).sin() + rng.range(-jitter, jitter);
                nodes.push((u * cos_a - v * sin_a, u * sin_a + v * cos_a));
            }
        }
        let node = |i: i64, j: i64| nodes[((i + k) as usize) * size + (j + k) as usize];
        let (ai, aj) = (rng.between((0, 3)) as i64, rng.between((0, 3)) as i64);
        let (mut arterials, mut locals) = (0usize, 0usize);
        for (direction, first_arterial) in [(0, ai), (1, aj)] {
            for line in -k..=k {
                let points: Vec<Pt> = (-k..=k)
                    .map(|t| {
                        if direction == 0 {
                            node(line, t)
                        } else {
                            node(t, line)
                        }
                    })
                    .collect();
                let class = if (line - first_arterial).rem_euclid(4) == 0 {
                    StreetClass::Arterial
                } else {
                    StreetClass::Local
                };
                let name = match class {
                    StreetClass::Arterial => {
                        arterials += 1;
                        street_name(
                            &ARTERIAL_NAMES,
                            arterials - 1,
                            ["路", "大道"],
                            ["Rd", "Ave"],
                            direction,
                        )
                    }
                    _ => {
                        locals += 1;
                        street_name(
                            &LOCAL_NAMES,
                            locals - 1,
                            ["路", "街"],
                            ["Rd", "St"],
                            direction,
                        )
                    }
                };
                self.add_street(class, name, &points);
            }
        }
        let ring = self.outline.ring((0.0, 0.0), 0.6 * r, 120);
        let mut closed = ring.clone();
        closed.extend(ring.first().copied());
        self.add_street(StreetClass::Ring, Name::new("环城路", "Ring Rd"), &closed);
    }

    /// Adds the street's runs that lie on the map (the service area and a tenth of R beyond)
    /// and out of the water: bridges carry arterials and the ring road over the river, local
    /// streets end at its banks. Each segment is cut exactly where it crosses an edge.
    fn add_street(&mut self, class: StreetClass, name: Name, points: &[Pt]) {
        let edge = Obstacle::new(self.outline.ring(
            (0.0, 0.0),
            1.05 * self.r,
            2 * BOUNDARY_VERTICES,
        ));
        // Inside this disc a point is on the map whatever the outline does.
        let surely_on_map = 0.99 * self.r;
        let mut blockers = vec![Obstacle::new(self.lake.ring.clone())];
        if class == StreetClass::Local {
            blockers.extend(self.river_quads.iter().map(|q| Obstacle::new(q.clone())));
        }
        let mut runs: Vec<Vec<Pt>> = Vec::new();
        let mut run: Vec<Pt> = Vec::new();
        for pair in points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let near_edge = a.0.hypot(a.1).max(b.0.hypot(b.1)) >= surely_on_map;
            let mut cuts = vec![0.0, 1.0];
            if near_edge {
                crossings(&edge, a, b, &mut cuts);
            }
            for o in &blockers {
                crossings(o, a, b, &mut cuts);
            }
            cuts.sort_by(f64::total_cmp);
            // The clear stretches of the segment, merged where nothing changes.
            let mut stretches: Vec<(f64, f64)> = Vec::new();
            for w in cuts.windows(2) {
                let (t0, t1) = (w[0], w[1]);
                if t1 - t0 < 1e-9 {
                    continue;
                }
                let mid = lerp(a, b, 0.5 * (t0 + t1));
                let clear =
                    (!near_edge || edge.contains(mid)) && !blockers.iter().any(|o| o.contains(mid));
                match stretches.last_mut() {
                    Some(last) if clear && (last.1 - t0).abs() < 1e-9 => last.1 = t1,
                    _ if clear => stretches.push((t0, t1)),
                    _ => {}
                }
            }
            // A street stops a few metres short of a bank or the map's edge.
            let gap = 3.0 / dist(a, b).max(3.0);
            let reaches_b = stretches.last().is_some_and(|&(_, t1)| t1 >= 1.0);
            for (t0, t1) in stretches {
                let (t0, t1) = (
                    if t0 > 0.0 { t0 + gap } else { t0 },
                    if t1 < 1.0 { t1 - gap } else { t1 },
                );
                if t1 <= t0 {
                    continue;
                }
                if t0 > 0.0 && !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
                if run.is_empty() {
                    run.push(lerp(a, b, t0));
                }
                run.push(lerp(a, b, t1));
                if t1 < 1.0 {
                    runs.push(std::mem::take(&mut run));
                }
            }
            if !reaches_b && !run.is_empty() {
                runs.push(std::mem::take(&mut run));
            }
        }
        runs.push(run);
        for line in runs {
            let length: f64 = line.windows(2).map(|w| dist(w[0], w[1])).sum();
            // Stubs shorter than a block's corner are not worth drawing.
            if line.len() >= 2 && length >= 40.0 {
                self.streets.push(Street {
                    class,
                    name: name.clone(),
                    line,
                });
            }
        }
    }

    /// The lakeside promenade and, half the time, a pedestrian street downtown.
    fn no_riding(&mut self, rng: &mut Rng) {
        // A 30 m band along a third of the shore, its vertices on the rays of the lake's.
        let start = rng.between((0, LAKE_VERTICES as u64 - 1)) as usize;
        let span = rng.between((12, 18)) as usize;
        let (mut inner, mut outer) = (Vec::new(), Vec::new());
        for step in 0..=span {
            let i = (start + step) % LAKE_VERTICES;
            let theta = TAU * i as f64 / LAKE_VERTICES as f64;
            let shore = self.lake_radius * self.lake_wobble.at(theta);
            let (c, s) = (theta.cos(), theta.sin());
            for (list, extra) in [(&mut inner, 5.0), (&mut outer, 35.0)] {
                list.push((
                    self.lake_center.0 + (shore + extra) * c,
                    self.lake_center.1 + (shore + extra) * s,
                ));
            }
        }
        outer.reverse();
        inner.extend(outer);
        self.fences.push(Fence {
            name: "no-riding-lakeside-promenade".into(),
            kind: "no_riding",
            ring: inner,
            properties: json!({"label": "湖滨步行道 Lakeside promenade", "reason": "promenade"}),
        });
        if !rng.chance(0.5) {
            return;
        }
        let water = self.water();
        let promenade = Obstacle::new(self.fences[0].ring.clone());
        let boundary = Obstacle::new(self.boundary.clone());
        let candidates: Vec<(usize, usize)> = self
            .streets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.class == StreetClass::Local)
            .flat_map(|(si, s)| (0..s.line.len().saturating_sub(2)).map(move |vi| (si, vi)))
            .filter(|&(si, vi)| {
                let mid = self.streets[si].line[vi + 1];
                mid.0.hypot(mid.1) < 0.35 * self.r
            })
            .collect();
        for _ in 0..200 {
            let Some(&(si, vi)) = pick(rng, &candidates) else {
                return;
            };
            let street = &self.streets[si];
            let path = [street.line[vi], street.line[vi + 1], street.line[vi + 2]];
            let ring = buffer(&path, 12.0);
            let clear = ring.iter().all(|&p| {
                boundary.contains(p)
                    && distance_to_ring(&self.boundary, p) >= 10.0
                    && water
                        .iter()
                        .chain([&promenade])
                        .all(|o| o.clear_of(p, 10.0))
            });
            if clear {
                let label = format!(
                    "{}步行街 {} pedestrian street",
                    street.name.zh, street.name.en
                );
                let name = street.name.full();
                self.fences.push(Fence {
                    name: "no-riding-pedestrian-street".into(),
                    kind: "no_riding",
                    ring,
                    properties: json!({
                        "label": label,
                        "reason": "pedestrian_street",
                        "street": name,
                    }),
                });
                return;
            }
        }
    }

    /// 3–6 station forecourts and plazas, rectangles along the street grid.
    fn no_parking(&mut self, rng: &mut Rng) {
        let count = rng.between((3, 6)) as usize;
        let boundary = Obstacle::new(self.boundary.clone());
        let water = self.water();
        for site in NO_PARKING.iter().take(count) {
            let (near, far) = site.distance;
            for attempt in 0..400 {
                let theta = match site.direction {
                    Some(d) => d + rng.range(-0.35, 0.35),
                    None => rng.range(0.0, TAU),
                };
                // Widen the search when the wanted place is taken (by water, mostly).
                let widen = attempt as f64 / 400.0;
                let dist_r =
                    self.r * rng.range(near * (1.0 - widen), far + (0.85 - far).max(0.0) * widen);
                let c = (dist_r * theta.cos(), dist_r * theta.sin());
                let (w, h) = (rng.range(80.0, 150.0), rng.range(80.0, 150.0));
                let reach = 0.5 * w.hypot(h);
                let inside =
                    boundary.contains(c) && distance_to_ring(&self.boundary, c) >= reach + 30.0;
                let dry = water.iter().all(|o| o.clear_of(c, reach + 10.0));
                let apart = self.fences.iter().all(|f| {
                    let other = Obstacle::new(f.ring.clone());
                    other.clear_of(c, reach + 20.0)
                });
                if inside && dry && apart {
                    let ring = rectangle(c, self.grid_angle, w, h);
                    self.fences.push(Fence {
                        name: site.name.into(),
                        kind: "no_parking",
                        ring,
                        properties: json!({
                            "label": format!("{} {}", site.zh, site.en),
                            "reason": site.reason,
                        }),
                    });
                    break;
                }
            }
        }
    }

    /// Voronoi cells of the service area around a central site and 4–6 outer ones.
    fn districts(&self, rng: &mut Rng) -> Vec<District> {
        let r = self.r;
        let mut sites = vec![(rng.range(-0.1, 0.1) * r, rng.range(-0.1, 0.1) * r)];
        let outer = rng.between((4, 6)) as usize;
        let a0 = rng.range(0.0, TAU);
        for i in 0..outer {
            let a = a0 + TAU * i as f64 / outer as f64 + rng.range(-0.25, 0.25);
            let d = rng.range(0.5, 0.68) * r;
            sites.push((d * a.cos(), d * a.sin()));
        }
        let cells: Vec<Vec<Pt>> = sites
            .iter()
            .enumerate()
            .map(|(i, &si)| {
                sites
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .fold(self.boundary.clone(), |cell, (_, &sj)| {
                        clip_closer(&cell, si, sj)
                    })
            })
            .collect();
        // West Lake is in Xihu; the centre is Shangcheng unless the lake is there; the rest
        // take the other names in a shuffled order.
        let lake_cell = cells
            .iter()
            .position(|c| ring_contains(c, self.lake_center));
        let mut spare: Vec<usize> = (0..DISTRICTS.len())
            .filter(|&n| n != CENTRAL_DISTRICT && n != LAKE_DISTRICT)
            .collect();
        shuffle(rng, &mut spare);
        match lake_cell {
            Some(0) => spare.insert(0, CENTRAL_DISTRICT),
            None => spare.insert(0, LAKE_DISTRICT),
            Some(_) => {}
        }
        let mut spare = spare.into_iter();
        cells
            .into_iter()
            .enumerate()
            .map(|(i, ring)| {
                let n = if Some(i) == lake_cell {
                    LAKE_DISTRICT
                } else if i == 0 {
                    CENTRAL_DISTRICT
                } else {
                    spare.next().unwrap_or(i % DISTRICTS.len())
                };
                (n, ring)
            })
            .filter(|(_, ring)| ring.len() >= 3)
            .map(|(n, ring)| {
                let (zh, en) = DISTRICTS[n % DISTRICTS.len()];
                District {
                    name: Name::new(zh, en),
                    ring,
                }
            })
            .collect()
    }

    /// Up to `count` parking zones beside the streets, denser downtown.
    fn parking(&self, count: usize, districts: &[District], rng: &mut Rng) -> Vec<Parking> {
        struct Segment {
            a: Pt,
            b: Pt,
            street: usize,
        }
        let segments: Vec<Segment> = self
            .streets
            .iter()
            .enumerate()
            .flat_map(|(street, s)| {
                s.line.windows(2).map(move |w| Segment {
                    a: w[0],
                    b: w[1],
                    street,
                })
            })
            .filter(|s| dist(s.a, s.b) >= 60.0)
            .collect();
        let mut cumulative = Vec::with_capacity(segments.len());
        let mut total = 0.0;
        for s in &segments {
            total += dist(s.a, s.b);
            cumulative.push(total);
        }
        let boundary = Obstacle::new(self.boundary.clone());
        let mut obstacles = self.water();
        obstacles.extend(self.fences.iter().map(|f| Obstacle::new(f.ring.clone())));
        let mut grid: HashMap<(i64, i64), Vec<Pt>> = HashMap::new();
        let cell = |p: Pt| {
            (
                (p.0 / PARKING_SPACING_M).floor() as i64,
                (p.1 / PARKING_SPACING_M).floor() as i64,
            )
        };
        let mut out = Vec::with_capacity(count);
        let max_attempts = count.saturating_mul(100).saturating_add(1_000);
        // Placements refused in a row: past this many the city is full.
        let mut refused = 0;
        for _ in 0..max_attempts {
            if out.len() >= count || total <= 0.0 || refused >= MAX_REFUSED_IN_A_ROW {
                break;
            }
            refused += 1;
            let target = rng.range(0.0, total);
            let i = cumulative
                .partition_point(|&c| c < target)
                .min(segments.len() - 1);
            let seg = &segments[i];
            let class = self.streets[seg.street].class;
            let along = lerp(seg.a, seg.b, rng.range(0.15, 0.85));
            // Downtown streets are lined with parking; the outskirts much less.
            let centrality = along.0.hypot(along.1) / self.r;
            if !rng.chance(1.0 - 0.85 * centrality.powi(2)) {
                continue;
            }
            let (len, depth) = (
                rng.range(PARKING_LENGTH_M.0, PARKING_LENGTH_M.1),
                rng.range(PARKING_DEPTH_M.0, PARKING_DEPTH_M.1),
            );
            let heading = (seg.b.1 - seg.a.1).atan2(seg.b.0 - seg.a.0);
            let side = if rng.chance(0.5) { 1.0 } else { -1.0 };
            let off = side * (class.half_width_m() + 1.5 + depth / 2.0);
            let c = (along.0 - off * heading.sin(), along.1 + off * heading.cos());
            let reach = 0.5 * len.hypot(depth);
            let inside = boundary.contains(c)
                && distance_to_ring(&self.boundary, c) >= reach + PARKING_CLEARANCE_M + 10.0;
            if !inside
                || !obstacles
                    .iter()
                    .all(|o| o.clear_of(c, reach + PARKING_CLEARANCE_M))
            {
                continue;
            }
            let (cx, cy) = cell(c);
            let crowded = (cx - 1..=cx + 1)
                .flat_map(|x| (cy - 1..=cy + 1).map(move |y| (x, y)))
                .filter_map(|key| grid.get(&key))
                .flatten()
                .any(|&other| dist(other, c) < PARKING_SPACING_M);
            if crowded {
                continue;
            }
            grid.entry((cx, cy)).or_default().push(c);
            refused = 0;
            let district = districts
                .iter()
                .find(|d| ring_contains(&d.ring, c))
                .or(districts.first())
                .map(|d| d.name.full());
            let capacity = (len / M_PER_PARKED_BIKE).round() as u64;
            out.push(Parking {
                center: c,
                ring: rectangle(c, heading, len, depth),
                properties: json!({
                    "capacity": capacity,
                    "district": district,
                    "street": self.streets[seg.street].name.full(),
                }),
            });
        }
        out
    }

    fn finish(
        self,
        center: (f64, f64),
        districts: Vec<District>,
        parking: Vec<Parking>,
    ) -> CityMap {
        let mut zones = vec![ZoneSpec {
            name: "service-area".into(),
            kind: "service_area".into(),
            polygon: polygon_json(center, &self.boundary),
            properties: json!({"label": "运营区 Service area", "reason": "service_area"}),
        }];
        let width = parking.len().to_string().len().max(4);
        let mut spots = Vec::with_capacity(parking.len());
        for (i, p) in parking.into_iter().enumerate() {
            let (lat, lon) = to_lat_lon(center, p.center);
            spots.push((round6(lat), round6(lon)));
            zones.push(ZoneSpec {
                name: format!("parking-{:0width$}", i + 1),
                kind: "parking".into(),
                polygon: polygon_json(center, &p.ring),
                properties: p.properties,
            });
        }
        let mut fences = self.fences;
        // No-parking zones before no-riding ones, each in the order they were placed.
        fences.sort_by_key(|f| f.kind != "no_parking");
        for f in fences {
            zones.push(ZoneSpec {
                name: f.name,
                kind: f.kind.into(),
                polygon: polygon_json(center, &f.ring),
                properties: f.properties,
            });
        }
        CityMap {
            center,
            radius_m: self.r,
            districts,
            streets: self.streets,
            water: vec![self.lake, self.river],
            zones,
            spots,
        }
    }
}

/// A river band across the city: a meandering centre line on the `side` of the centre, from
/// beyond the map's edge to beyond the other; and the same band as a chain of quadrilaterals.
fn river(r: f64, d: Pt, n: Pt, side: f64, rng: &mut Rng) -> (Water, Vec<Vec<Pt>>) {
    let offset = side * r * rng.range(0.25, 0.4);
    let (amp, wavelength, phase) = (0.05 * r, r * rng.range(1.6, 2.4), rng.range(0.0, TAU));
    let width = (0.03 * r).clamp(40.0, 250.0);
    let width_phase = rng.range(0.0, TAU);
    let step = (r / 40.0).clamp(25.0, 150.0);
    let steps = (2.5 * r / step).ceil() as i64;
    let centre = |t: f64| {
        let o = offset + amp * (TAU * t / wavelength + phase).sin();
        (d.0 * t + n.0 * o, d.1 * t + n.1 * o)
    };
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for i in 0..=steps {
        let t = -1.25 * r + i as f64 * step;
        let (p, ahead, behind) = (centre(t), centre(t + 1.0), centre(t - 1.0));
        let (tx, ty) = (ahead.0 - behind.0, ahead.1 - behind.1);
        let norm = tx.hypot(ty).max(f64::EPSILON);
        let (nx, ny) = (-ty / norm, tx / norm);
        let half = 0.5 * width * (1.0 + 0.15 * (t / (0.3 * r) + width_phase).sin());
        left.push((p.0 + nx * half, p.1 + ny * half));
        right.push((p.0 - nx * half, p.1 - ny * half));
    }
    let quads = (1..left.len())
        .map(|i| vec![left[i - 1], left[i], right[i], right[i - 1]])
        .collect();
    right.reverse();
    left.extend(right);
    let (zh, en) = RIVERS[(rng.next_u64() % RIVERS.len() as u64) as usize];
    let water = Water {
        kind: "river",
        name: Name::new(zh, en),
        ring: left,
    };
    (water, quads)
}

/// The `index`-th name of a list of street names: `{prefix}{suffix}`, the suffix by the
/// street's direction; a second round through the list is numbered.
fn street_name(
    list: &[(&str, &str)],
    index: usize,
    zh_suffix: [&str; 2],
    en_suffix: [&str; 2],
    direction: usize,
) -> Name {
    let (zh, en) = list[index % list.len()];
    let round = index / list.len();
    let (zs, es) = (zh_suffix[direction % 2], en_suffix[direction % 2]);
    if round == 0 {
        Name::new(format!("{zh}{zs}"), format!("{en} {es}"))
    } else {
        Name::new(
            format!("{zh}{zs}{}", round + 1),
            format!("{en} {es} {}", round + 1),
        )
    }
}

/// A rectangle centred on `c`, `length` along `heading` and `depth` across, counter-clockwise.
fn rectangle(c: Pt, heading: f64, length: f64, depth: f64) -> Vec<Pt> {
    let (ux, uy) = (heading.cos(), heading.sin());
    let (vx, vy) = (-uy, ux);
    let (hl, hd) = (length / 2.0, depth / 2.0);
    [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
        .iter()
        .map(|&(a, b)| {
            (
                c.0 + a * hl * ux + b * hd * vx,
                c.1 + a * hl * uy + b * hd * vy,
            )
        })
        .collect()
}

/// The band of `half` metres either side of a gently bending polyline.
fn buffer(path: &[Pt], half: f64) -> Vec<Pt> {
    let normal = |a: Pt, b: Pt| {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = dx.hypot(dy).max(f64::EPSILON);
        (-dy / len, dx / len)
    };
    let mut offsets = Vec::with_capacity(path.len());
    for i in 0..path.len() {
        let before = (i > 0).then(|| normal(path[i - 1], path[i]));
        let after = (i + 1 < path.len()).then(|| normal(path[i], path[i + 1]));
        let n = match (before, after) {
            (Some(a), Some(b)) => {
                // The mitre: along the bisector, long enough to keep the band's width.
                let (mx, my) = (a.0 + b.0, a.1 + b.1);
                let len = mx.hypot(my).max(f64::EPSILON);
                let (mx, my) = (mx / len, my / len);
                let scale = 1.0 / (mx * a.0 + my * a.1).max(0.5);
                (mx * scale, my * scale)
            }
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => (0.0, 0.0),
        };
        offsets.push(n);
    }
    let mut ring: Vec<Pt> = path
        .iter()
        .zip(&offsets)
        .map(|(p, n)| (p.0 + half * n.0, p.1 + half * n.1))
        .collect();
    ring.extend(
        path.iter()
            .zip(&offsets)
            .rev()
            .map(|(p, n)| (p.0 - half * n.0, p.1 - half * n.1)),
    );
    ring
}

/// The part of `poly` closer to `keep` than to `other` (one Sutherland–Hodgman step).
fn clip_closer(poly: &[Pt], keep: Pt, other: Pt) -> Vec<Pt> {
    let m = ((keep.0 + other.0) / 2.0, (keep.1 + other.1) / 2.0);
    let n = (other.0 - keep.0, other.1 - keep.1);
    let side = |p: Pt| (p.0 - m.0) * n.0 + (p.1 - m.1) * n.1;
    let mut out = Vec::with_capacity(poly.len() + 2);
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
        let (sa, sb) = (side(a), side(b));
        if sa <= 0.0 {
            out.push(a);
        }
        if (sa <= 0.0) != (sb <= 0.0) {
            out.push(lerp(a, b, sa / (sa - sb)));
        }
    }
    out
}

/// Adds to `cuts` the parameters t in (0, 1) where the segment a→b crosses the obstacle's edges.
fn crossings(o: &Obstacle, a: Pt, b: Pt, cuts: &mut Vec<f64>) {
    let (x0, y0, x1, y1) = o.bbox;
    if a.0.max(b.0) < x0 || a.0.min(b.0) > x1 || a.1.max(b.1) < y0 || a.1.min(b.1) > y1 {
        return;
    }
    let cross = |u: Pt, v: Pt| u.0 * v.1 - u.1 * v.0;
    let ab = (b.0 - a.0, b.1 - a.1);
    for i in 0..o.ring.len() {
        let (c, d) = (o.ring[i], o.ring[(i + 1) % o.ring.len()]);
        let cd = (d.0 - c.0, d.1 - c.1);
        let denom = cross(ab, cd);
        if denom.abs() < 1e-12 {
            continue;
        }
        let ac = (c.0 - a.0, c.1 - a.1);
        let (t, u) = (cross(ac, cd) / denom, cross(ac, ab) / denom);
        if (0.0..=1.0).contains(&t) && (0.0..=1.0).contains(&u) {
            cuts.push(t);
        }
    }
}

fn ring_contains(ring: &[Pt], p: Pt) -> bool {
    let mut inside = false;
    let mut j = ring.len().wrapping_sub(1);
    for i in 0..ring.len() {
        let ((xi, yi), (xj, yj)) = (ring[i], ring[j]);
        if (yi > p.1) != (yj > p.1) && p.0 < (xj - xi) * (p.1 - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn distance_to_ring(ring: &[Pt], p: Pt) -> f64 {
    (0..ring.len())
        .map(|i| distance_to_segment(p, ring[i], ring[(i + 1) % ring.len()]))
        .fold(f64::INFINITY, f64::min)
}

fn distance_to_segment(p: Pt, a: Pt, b: Pt) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    dist(p, (a.0 + t * dx, a.1 + t * dy))
}

fn dist(a: Pt, b: Pt) -> f64 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

fn lerp(a: Pt, b: Pt, t: f64) -> Pt {
    (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        return None;
    }
    items.get((rng.next_u64() % items.len() as u64) as usize)
}

fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The point `p` of the city's frame as (latitude, longitude).
fn to_lat_lon(center: (f64, f64), p: Pt) -> (f64, f64) {
    let lat = center.0 + p.1 / M_PER_DEG;
    let lon = center.1 + p.0 / (M_PER_DEG * center.0.to_radians().cos());
    (lat, lon)
}

fn lon_lat(center: (f64, f64), p: Pt) -> Value {
    let (lat, lon) = to_lat_lon(center, p);
    json!([round6(lon), round6(lat)])
}

/// A GeoJSON Polygon of one ring: counter-clockwise (RFC 7946) and closed.
fn polygon_json(center: (f64, f64), ring: &[Pt]) -> Value {
    let area2: f64 = (0..ring.len())
        .map(|i| {
            let (a, b) = (ring[i], ring[(i + 1) % ring.len()]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum();
    let mut coordinates: Vec<Value> = ring.iter().map(|&p| lon_lat(center, p)).collect();
    if area2 < 0.0 {
        coordinates.reverse();
    }
    if let Some(first) = coordinates.first().cloned() {
        coordinates.push(first);
    }
    json!({"type": "Polygon", "coordinates": [coordinates]})
}

/// Six decimals of a degree: about 0.1 m, the precision of the locks' reports.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests;
