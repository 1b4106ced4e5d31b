//! A smart bike lock: parked most of the time, ridden now and then (by simulated riders, or
//! after an `unlock` command), reporting position, battery and lock state.

use serde_json::{Value, json};

use crate::provision::CityConfig;
use crate::rng::Rng;

/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_320.0;
/// Bikes stay within this distance of the centre (metres).
const CITY_RADIUS_M: f64 = 4_000.0;

pub struct Bike {
    lat: f64,
    lon: f64,
    battery: f64,
    locked: bool,
    heading: f64,
    speed_kmh: f64,
    /// Reports left in the current ride.
    ride_left: u32,
    center: (f64, f64),
    rssi: i64,
}

impl Bike {
    pub fn new(config: &CityConfig, rng: &mut Rng) -> Bike {
        let (r, a) = (
            CITY_RADIUS_M * rng.unit().sqrt(),
            rng.range(0.0, std::f64::consts::TAU),
        );
        let (lat, lon) = offset(config.center, r * a.cos(), r * a.sin());
        Bike {
            lat,
            lon,
            battery: rng.range(40.0, 100.0),
            locked: true,
            heading: rng.range(0.0, std::f64::consts::TAU),
            speed_kmh: 0.0,
            ride_left: 0,
            center: config.center,
            rssi: -70 - (rng.unit() * 30.0) as i64,
        }
    }

    /// Advances one report interval and returns the telemetry to send.
    pub fn step(&mut self, interval_s: f64, rng: &mut Rng) -> Value {
        if self.locked && rng.chance(0.004) {
            // Someone rents it at the kerb.
            let reports = 30 + (rng.unit() * 60.0) as u32;
            self.start_ride(rng, reports);
        }
        if !self.locked {
            self.speed_kmh = (self.speed_kmh + rng.range(-2.0, 2.0)).clamp(8.0, 22.0);
            self.heading += rng.range(-0.4, 0.4);
            if self.distance_from_center() > CITY_RADIUS_M {
                // Turn back towards the centre.
                let (dn, de) = self.to_center();
                self.heading = de.atan2(dn);
            }
            let d = self.speed_kmh / 3.6 * interval_s;
            (self.lat, self.lon) = offset(
                (self.lat, self.lon),
                d * self.heading.cos(),
                d * self.heading.sin(),
            );
            self.battery = (self.battery - 0.02 * interval_s / 10.0).max(0.0);
            self.ride_left = self.ride_left.saturating_sub(1);
            if self.ride_left == 0 {
                self.locked = true;
            }
        } else {
            self.speed_kmh = 0.0;
            self.battery = (self.battery - 0.001).max(0.0);
        }
        self.rssi = (self.rssi + rng.range(-2.0, 2.0) as i64).clamp(-115, -55);
        json!({
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "battery": self.battery.round() as i64,
            "locked": self.locked,
            "speed": round(self.speed_kmh, 1),
            "rssi": self.rssi,
        })
    }

    fn start_ride(&mut self, rng: &mut Rng, reports: u32) {
        self.locked = false;
        self.ride_left = reports;
        self.speed_kmh = rng.range(10.0, 18.0);
    }

    /// Carries out a command; `Err` is the error the answer carries.
    pub fn command(&mut self, name: &str, params: &Value, rng: &mut Rng) -> Result<Value, String> {
        match name {
            "unlock" => {
                if !self.locked {
                    return Err("already unlocked".into());
                }
                if self.battery < 3.0 {
                    return Err("battery too low to unlock".into());
                }
                self.start_ride(rng, 60);
                Ok(json!({"locked": false, "ride_id": params.get("ride_id")}))
            }
            "lock" => {
                self.locked = true;
                self.ride_left = 0;
                Ok(json!({"locked": true}))
            }
            "ring" => {
                Ok(json!({"rang_s": params.get("seconds").and_then(Value::as_u64).unwrap_or(3)}))
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }

    fn to_center(&self) -> (f64, f64) {
        let dn = (self.center.0 - self.lat) * M_PER_DEG;
        let de = (self.center.1 - self.lon) * M_PER_DEG * self.lat.to_radians().cos();
        (dn, de)
    }

    fn distance_from_center(&self) -> f64 {
        let (dn, de) = self.to_center();
        (dn * dn + de * de).sqrt()
    }
}

/// A point `north` and `east` metres from `from`.
fn offset(from: (f64, f64), north: f64, east: f64) -> (f64, f64) {
    let lat = from.0 + north / M_PER_DEG;
    let lon = from.1 + east / (M_PER_DEG * from.0.to_radians().cos());
    (lat, lon)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bikes_ride_when_unlocked_and_stay_in_the_city() {
        let config = CityConfig::default();
        let mut rng = Rng::new(1);
        let mut bike = Bike::new(&config, &mut rng);
        let parked = bike.step(10.0, &mut rng);
        assert!(bike.command("lock", &json!({}), &mut rng).is_ok());
        assert!(
            bike.command("unlock", &json!({"ride_id": "r1"}), &mut rng)
                .is_ok()
        );
        assert!(bike.command("unlock", &json!({}), &mut rng).is_err());
        let mut last = parked;
        for _ in 0..500 {
            last = bike.step(10.0, &mut rng);
            assert!(bike.distance_from_center() < CITY_RADIUS_M + 500.0);
        }
        assert!(last["lat"].as_f64().is_some() && last["battery"].as_i64().is_some());
        assert!(bike.command("explode", &json!({}), &mut rng).is_err());
    }
}
