//! The simulated city's settings: its size and place, the pace of simulated time, and how
//! imperfect the bike locks are (docs/bike-lock-contract.md describes what a perfect one does).

/// The size and place of the city, and how its devices behave.
#[derive(Debug, Clone, PartialEq)]
pub struct CityConfig {
    pub tenant: String,
    pub bikes: usize,
    pub air_sensors: usize,
    /// The city's centre (latitude, longitude); devices spread about 4 km around it.
    pub center: (f64, f64),
    /// Simulated seconds per real second for the bike locks: report intervals, rides, outages
    /// and spontaneous events all run this much faster (1 = real time, 60 = a simulated hour
    /// per real minute). Timestamps, unlock expiries and the motor delay stay on the wall
    /// clock, because the platform measures them. 0 < `time_scale` ≤ [`MAX_TIME_SCALE`].
    pub time_scale: f64,
    /// A lock's report interval without a twin value, in simulated seconds: parked (the
    /// contract's 300) and unlocked (the contract's 10).
    pub parked_interval_s: u64,
    pub riding_interval_s: u64,
    /// Seconds between an air-quality station's reports (real time).
    pub sensor_interval_s: u64,
    /// How long a simulated rider rides when the unlock names no end point, in simulated
    /// seconds (min, max); shorter rides are more likely.
    pub ride_s: (u64, u64),
    /// How long the lock's motor takes to open or close the shackle, in real milliseconds
    /// (min, max).
    pub motor_ms: (u64, u64),
    /// What goes wrong, and how often.
    pub realism: LockRealism,
    /// Where the simulated riders know they may park (the centres of the city's parking
    /// fences). A ride ends near one of those within 2 km with `park_in_fence_prob`, else
    /// wherever the ride took the rider.
    pub parking_spots: std::sync::Arc<[(f64, f64)]>,
    pub park_in_fence_prob: f64,
    /// The share of bikes that start parked at one of `parking_spots` (within a few metres of
    /// its centre), as a fleet does after the night's rebalancing; the others start anywhere
    /// within 4 km of the centre. Without parking spots every bike starts anywhere.
    pub start_at_parking_prob: f64,
    /// Seeds every device's random generator: the same seed gives the same city.
    pub seed: u64,
}

/// The largest `time_scale`: beyond it riding locks would report every few milliseconds.
pub const MAX_TIME_SCALE: f64 = 1000.0;

impl Default for CityConfig {
    fn default() -> CityConfig {
        CityConfig {
            tenant: wulian_registry::DEFAULT_TENANT_ID.to_string(),
            bikes: 200,
            air_sensors: 20,
            // Hangzhou, around West Lake.
            center: (30.2590, 120.1490),
            time_scale: 1.0,
            parked_interval_s: 300,
            riding_interval_s: 10,
            sensor_interval_s: 30,
            ride_s: (240, 1800),
            motor_ms: (200, 800),
            realism: LockRealism::default(),
            parking_spots: std::sync::Arc::from(Vec::new()),
            park_in_fence_prob: 0.9,
            start_at_parking_prob: 0.8,
            seed: 2026,
        }
    }
}

impl CityConfig {
    /// Every problem with the settings, as `field: reason`; empty when they are usable.
    /// [`crate::run`] runs with whatever it is given, clamping values out of range.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.time_scale > 0.0 && self.time_scale <= MAX_TIME_SCALE) {
            problems.push(format!(
                "time_scale: must be above 0 and at most {MAX_TIME_SCALE}"
            ));
        }
        let (lat, lon) = self.center;
        if !((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
            problems.push("center: must be a latitude and a longitude in degrees".into());
        }
        for (field, value) in [
            ("parked_interval_s", self.parked_interval_s),
            ("riding_interval_s", self.riding_interval_s),
            ("sensor_interval_s", self.sensor_interval_s),
        ] {
            if !(1..=86_400).contains(&value) {
                problems.push(format!("{field}: must be between 1 and 86400"));
            }
        }
        for (field, (lo, hi)) in [
            ("ride_s", self.ride_s),
            ("motor_ms", self.motor_ms),
            ("realism.outage_s", self.realism.outage_s),
        ] {
            if lo > hi {
                problems.push(format!("{field}: the minimum is above the maximum"));
            }
        }
        let r = &self.realism;
        for (field, p) in [
            ("start_at_parking_prob", self.start_at_parking_prob),
            ("realism.duplicate_prob", r.duplicate_prob),
            ("realism.late_prob", r.late_prob),
            ("realism.jam_prob", r.jam_prob),
            ("realism.no_answer_prob", r.no_answer_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                problems.push(format!("{field}: must be between 0 and 1"));
            }
        }
        if r.jam_prob + r.no_answer_prob > 1.0 {
            problems.push("realism.jam_prob + realism.no_answer_prob: must be at most 1".into());
        }
        for (field, rate) in [
            ("realism.outages_per_hour", r.outages_per_hour),
            ("realism.falls_per_hour", r.falls_per_hour),
            ("realism.illegal_moves_per_hour", r.illegal_moves_per_hour),
            ("realism.tampers_per_hour", r.tampers_per_hour),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                problems.push(format!("{field}: must be 0 or more"));
            }
        }
        problems
    }

    /// The time scale actually used: `time_scale` clamped into (0, [`MAX_TIME_SCALE`]], 1 when
    /// it is not a number.
    pub(crate) fn effective_time_scale(&self) -> f64 {
        if self.time_scale.is_nan() {
            1.0
        } else {
            self.time_scale.clamp(0.001, MAX_TIME_SCALE)
        }
    }
}

/// The imperfections of real locks. Rates are per lock and per simulated hour; probabilities
/// per report or per unlock. [`LockRealism::none`] gives perfect locks.
#[derive(Debug, Clone, PartialEq)]
pub struct LockRealism {
    /// Times a lock loses its cellular link; it buffers its reports and events meanwhile and
    /// uploads them (reports as JSON arrays) when it is back.
    pub outages_per_hour: f64,
    /// How long an outage lasts, in simulated seconds (min, max).
    pub outage_s: (u64, u64),
    /// A periodic report is sent twice.
    pub duplicate_prob: f64,
    /// A periodic report is held back and sent after the next one (its `ts` in the past).
    pub late_prob: f64,
    /// An unlock that should succeed fails with `jammed`: the shackle did not open.
    pub jam_prob: f64,
    /// An unlock that should succeed is never answered (the platform times out); the shackle
    /// stays closed.
    pub no_answer_prob: f64,
    /// `fall` events (the bike falls over).
    pub falls_per_hour: f64,
    /// `illegal_movement` events: a parked, locked bike is carried 25–250 m.
    pub illegal_moves_per_hour: f64,
    /// `tamper` events on a locked bike.
    pub tampers_per_hour: f64,
}

impl Default for LockRealism {
    fn default() -> LockRealism {
        LockRealism {
            outages_per_hour: 0.1,
            outage_s: (30, 900),
            duplicate_prob: 0.01,
            late_prob: 0.01,
            jam_prob: 0.02,
            no_answer_prob: 0.01,
            falls_per_hour: 0.002,
            illegal_moves_per_hour: 0.0005,
            tampers_per_hour: 0.0002,
        }
    }
}

impl LockRealism {
    /// Perfect locks: always connected, every report once and on time, every unlock opens,
    /// nothing spontaneous happens.
    pub fn none() -> LockRealism {
        LockRealism {
            outages_per_hour: 0.0,
            outage_s: (0, 0),
            duplicate_prob: 0.0,
            late_prob: 0.0,
            jam_prob: 0.0,
            no_answer_prob: 0.0,
            falls_per_hour: 0.0,
            illegal_moves_per_hour: 0.0,
            tampers_per_hour: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_usable_and_problems_are_named() {
        assert!(CityConfig::default().problems().is_empty());
        let none = CityConfig {
            realism: LockRealism::none(),
            ..CityConfig::default()
        };
        assert!(none.problems().is_empty());
        let bad = CityConfig {
            time_scale: 0.0,
            riding_interval_s: 0,
            ride_s: (10, 5),
            realism: LockRealism {
                jam_prob: 0.8,
                no_answer_prob: 0.5,
                falls_per_hour: f64::NAN,
                ..LockRealism::default()
            },
            ..CityConfig::default()
        };
        let problems = bad.problems();
        for field in [
            "time_scale",
            "riding_interval_s",
            "ride_s",
            "realism.jam_prob + realism.no_answer_prob",
            "realism.falls_per_hour",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(&format!("{field}:"))),
                "{field} in {problems:?}"
            );
        }
        assert_eq!(bad.effective_time_scale(), 0.001);
        let nan = CityConfig {
            time_scale: f64::NAN,
            ..CityConfig::default()
        };
        assert_eq!(nan.effective_time_scale(), 1.0);
    }
}
