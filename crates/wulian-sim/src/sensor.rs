//! An air-quality station: pollutant concentrations that follow the time of day (rush-hour NO2
//! and particulates, afternoon ozone) with slow random drift per station.

use serde_json::{Value, json};

use crate::rng::Rng;

pub struct Sensor {
    /// Per-station level, so stations differ (a roadside one versus a park).
    level: f64,
    drift: f64,
    temp_offset: f64,
}

impl Sensor {
    pub fn new(rng: &mut Rng) -> Sensor {
        Sensor {
            level: rng.range(0.6, 1.6),
            drift: 0.0,
            temp_offset: rng.range(-1.5, 1.5),
        }
    }

    /// The reading at `now_ms` (UTC; the city is 8 hours ahead).
    pub fn step(&mut self, now_ms: i64, rng: &mut Rng) -> Value {
        let hour = ((now_ms / 1000 + 8 * 3600) % 86_400) as f64 / 3600.0;
        let rush = bump(hour, 8.0, 1.5) + bump(hour, 18.0, 2.0);
        let afternoon = bump(hour, 15.0, 3.0);
        self.drift = (self.drift + rng.range(-0.05, 0.05)).clamp(-0.5, 0.8);
        let k = (self.level + self.drift).max(0.2);
        let noise = |rng: &mut Rng| rng.range(0.9, 1.1);
        let pm25 = (28.0 + 30.0 * rush) * k * noise(rng);
        json!({
            "pm25": round1(pm25),
            "pm10": round1(pm25 * rng.range(1.4, 1.9)),
            "no2": round1((22.0 + 40.0 * rush) * k * noise(rng)),
            "so2": round1(6.0 * k * noise(rng)),
            "o3": round1((35.0 + 90.0 * afternoon) * noise(rng)),
            "co": (((0.5 + 0.6 * rush * k) * noise(rng)).max(0.0) * 100.0).round() / 100.0,
            "temp": round1(14.0 + 7.0 * bump(hour, 14.0, 5.0) + self.temp_offset),
            "humidity": (75.0 - 20.0 * bump(hour, 14.0, 5.0) + rng.range(-3.0, 3.0)).round(),
        })
    }
}

/// A bell curve of height 1 centred at `at` hours, `width` hours wide (wrapping at midnight).
fn bump(hour: f64, at: f64, width: f64) -> f64 {
    let d = ((hour - at + 12.0).rem_euclid(24.0)) - 12.0;
    (-(d * d) / (2.0 * width * width)).exp()
}

fn round1(x: f64) -> f64 {
    (x.max(0.0) * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_plausible_and_follow_the_day() {
        let mut rng = Rng::new(3);
        let mut s = Sensor::new(&mut rng);
        let day = 1_767_225_600_000i64; // a midnight, UTC
        let night = s.step(day + 19 * 3_600_000, &mut rng); // 03:00 local
        let rush = s.step(day, &mut rng); // 08:00 local
        for key in ["pm25", "pm10", "no2", "so2", "o3", "co", "temp", "humidity"] {
            assert!(
                night[key].as_f64().is_some_and(|v| v >= 0.0),
                "{key}: {night}"
            );
        }
        assert!(
            rush["no2"].as_f64() > night["no2"].as_f64(),
            "{night} {rush}"
        );
    }
}
