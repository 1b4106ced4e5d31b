//! Geographic helpers: great-circle distance and point-in-polygon.
//!
//! Polygons are tested in the plane of longitude/latitude degrees (ray casting), which is
//! exact enough for zones of a few kilometres to a few hundred and wrong for polygons that
//! cross the antimeridian or contain a pole; docs/rules.md says so.

use serde_json::Value;

/// Mean Earth radius (IUGG), metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Haversine distance in metres between two points given in degrees.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// A polygon: an outer ring and optional holes, each a list of (lon, lat) vertices.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    rings: Vec<Vec<(f64, f64)>>,
}

/// Bound on vertices, so a polygon in a payload cannot make evaluation slow.
const MAX_VERTICES: usize = 10_000;

impl Polygon {
    /// Parses a GeoJSON Polygon object (`{"type":"Polygon","coordinates":[[[lon,lat],…]]}`),
    /// its bare `coordinates` (`[[[lon,lat],…], …hole rings]`) or a single ring
    /// (`[[lon,lat],…]`). Rings need at least three distinct vertices; closing the ring is
    /// optional.
    pub fn from_json(value: &Value) -> Result<Polygon, String> {
        let coordinates = match value {
            Value::Object(obj) => {
                match obj.get("type").and_then(Value::as_str) {
                    Some("Polygon") => {}
                    Some(other) => {
                        return Err(format!("GeoJSON type must be \"Polygon\", found {other:?}"));
                    }
                    None => return Err("GeoJSON object needs \"type\": \"Polygon\"".into()),
                }
                obj.get("coordinates")
                    .ok_or("GeoJSON Polygon needs \"coordinates\"")?
            }
            Value::Array(_) => value,
            _ => {
                return Err("a polygon must be a GeoJSON Polygon or an array of [lon, lat]".into());
            }
        };
        let Value::Array(items) = coordinates else {
            return Err("\"coordinates\" must be an array".into());
        };
        // A single ring has numbers at depth 2; a list of rings at depth 3.
        let is_single_ring = matches!(
            items.first(),
            Some(Value::Array(pair)) if pair.first().is_some_and(Value::is_number)
        );
        let ring_values: Vec<&Value> = if is_single_ring {
            vec![coordinates]
        } else {
            items.iter().collect()
        };
        if ring_values.is_empty() {
            return Err("a polygon needs at least one ring".into());
        }
        let mut rings = Vec::with_capacity(ring_values.len());
        let mut total = 0;
        for (r, ring) in ring_values.into_iter().enumerate() {
            let Value::Array(points) = ring else {
                return Err(format!("ring {r} must be an array of [lon, lat]"));
            };
            total += points.len();
            if total > MAX_VERTICES {
                return Err(format!(
                    "a polygon may have at most {MAX_VERTICES} vertices"
                ));
            }
            let mut vertices = Vec::with_capacity(points.len());
            for (i, p) in points.iter().enumerate() {
                let pair = p.as_array().filter(|a| a.len() >= 2);
                let lon = pair.and_then(|a| a[0].as_f64());
                let lat = pair.and_then(|a| a[1].as_f64());
                match (lon, lat) {
                    (Some(lon), Some(lat))
                        if (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat) =>
                    {
                        vertices.push((lon, lat));
                    }
                    _ => {
                        return Err(format!(
                            "ring {r}, vertex {i}: expected [lon, lat] in degrees, found {p}"
                        ));
                    }
                }
            }
            if vertices.len() > 1 && vertices.first() == vertices.last() {
                vertices.pop();
            }
            if vertices.len() < 3 {
                return Err(format!("ring {r} needs at least 3 distinct vertices"));
            }
            rings.push(vertices);
        }
        Ok(Polygon { rings })
    }

    /// Parses the polygon from its JSON text.
    pub fn from_text(text: &str) -> Result<Polygon, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("polygon is not valid JSON: {e}"))?;
        Polygon::from_json(&value)
    }

    /// The rings as (lon, lat) vertices, the outer ring first and then the holes; a ring is not
    /// closed (its first vertex is not repeated). For callers that measure distances to the
    /// edges or build spatial indexes.
    pub fn rings(&self) -> &[Vec<(f64, f64)>] {
        &self.rings
    }

    /// The bounding box of the outer ring, `(min_lon, min_lat, max_lon, max_lat)` in degrees:
    /// every point the polygon contains lies inside it, so a spatial index can file the polygon
    /// under it.
    pub fn bbox(&self) -> (f64, f64, f64, f64) {
        let outer = self.rings.first().map(Vec::as_slice).unwrap_or_default();
        outer.iter().fold(
            (
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
            ),
            |(x0, y0, x1, y1), &(lon, lat)| (x0.min(lon), y0.min(lat), x1.max(lon), y1.max(lat)),
        )
    }

    /// Whether the point lies inside the outer ring and outside every hole. Points exactly on
    /// an edge may fall either way.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        let mut rings = self.rings.iter();
        let Some(outer) = rings.next() else {
            return false;
        };
        ring_contains(outer, lon, lat) && !rings.any(|hole| ring_contains(hole, lon, lat))
    }
}

fn ring_contains(ring: &[(f64, f64)], x: f64, y: f64) -> bool {
    let mut inside = false;
    let mut j = ring.len() - 1;
    for i in 0..ring.len() {
        let (xi, yi) = ring[i];
        let (xj, yj) = ring[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_matches_known_values() {
        // Paris (Notre-Dame) to London (St Paul's): about 343.5 km.
        let d = distance_m(48.8530, 2.3499, 51.5138, -0.0984);
        assert!((d - 343_500.0).abs() < 1_500.0, "{d}");
        assert_eq!(distance_m(10.0, 20.0, 10.0, 20.0), 0.0);
        // A quarter of the meridian.
        let q = distance_m(0.0, 0.0, 90.0, 0.0);
        assert!((q - 10_007_543.0).abs() < 100.0, "{q}");
    }

    #[test]
    fn polygon_forms_and_holes() {
        let square = Polygon::from_text("[[0,0],[10,0],[10,10],[0,10],[0,0]]").unwrap();
        assert!(square.contains(5.0, 5.0));
        assert!(!square.contains(15.0, 5.0));
        let geojson = Polygon::from_text(
            r#"{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10]],[[4,4],[6,4],[6,6],[4,6]]]}"#,
        )
        .unwrap();
        assert!(geojson.contains(2.0, 2.0));
        assert!(!geojson.contains(5.0, 5.0), "inside the hole");
        // lat/lon order: the point (lat 1, lon 8) is inside a thin horizontal band.
        let band = Polygon::from_text("[[0,0],[10,0],[10,2],[0,2]]").unwrap();
        assert!(band.contains(1.0, 8.0));
        assert!(!band.contains(8.0, 1.0));
    }

    #[test]
    fn polygon_rings_and_bbox() {
        let p = Polygon::from_text(
            r#"{"type":"Polygon","coordinates":[[[1,2],[5,2],[5,9],[1,9],[1,2]],[[2,3],[3,3],[3,4]]]}"#,
        )
        .unwrap();
        assert_eq!(p.rings().len(), 2);
        assert_eq!(p.rings()[0].len(), 4, "the closing vertex is dropped");
        assert_eq!(p.bbox(), (1.0, 2.0, 5.0, 9.0));
    }

    #[test]
    fn polygon_errors_are_precise() {
        assert!(
            Polygon::from_text("[[0,0],[1,1]]")
                .unwrap_err()
                .contains("3 distinct")
        );
        assert!(
            Polygon::from_text("[[0,0],[1,1],[200,0]]")
                .unwrap_err()
                .contains("vertex 2")
        );
        assert!(
            Polygon::from_text(r#"{"type":"Point"}"#)
                .unwrap_err()
                .contains("Polygon")
        );
        assert!(
            Polygon::from_text("nope")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(Polygon::from_json(&Value::from(3)).is_err());
    }
}
