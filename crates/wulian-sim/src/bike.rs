//! A smart bike lock as docs/bike-lock-contract.md describes it, as a state machine without I/O:
//! the device loop feeds it the wall clock, incoming messages and the state of the link, and
//! publishes what it returns. Keeping it pure makes every rule of the contract testable without
//! a broker.
//!
//! The lock is parked (shackle closed) until an `unlock` command opens it; then a simulated
//! rider rides — towards the command's `end_near` point if it names one (a simulator-only
//! extension), else wherever the ride goes — and closes the shackle by hand. A parked bike moves
//! only when someone carries it (`illegal_movement`).
//!
//! Two clocks: timestamps, unlock expiries and the motor delay are wall-clock milliseconds;
//! everything the city does on its own (intervals, rides, outages, spontaneous events) is in
//! simulated seconds, which [`CityConfig::time_scale`] compresses.

use std::collections::VecDeque;

use serde_json::{Value, json};

use crate::config::{CityConfig, LockRealism};
use crate::rng::Rng;

/// The firmware version the locks report in their twin.
pub const FIRMWARE: &str = "2.0.0";

/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_320.0;
/// Bikes start within this distance of the centre, and rides without an end point turn back
/// towards it beyond it (metres).
const CITY_RADIUS_M: f64 = 4_000.0;
/// The contract's `low_battery` threshold (percent); the warning re-arms above the second.
const LOW_BATTERY_PCT: i64 = 20;
const LOW_BATTERY_REARM_PCT: i64 = 25;
/// Below this charge the motor cannot open the shackle: `battery_low` (percent).
const MOTOR_MIN_PCT: i64 = 5;
/// Battery drain, percent per simulated hour.
const PARKED_DRAIN_PER_H: f64 = 0.07;
const RIDING_DRAIN_PER_H: f64 = 3.0;
/// A ride advances in steps of this many simulated seconds.
const RIDE_STEP_S: f64 = 5.0;
/// A ride towards `end_near` ends within this many metres of it (plus GNSS noise).
const PARK_SCATTER_M: f64 = 4.0;
/// A bike that starts at a parking spot stands within this many metres of its centre (a
/// parking zone is 6–8 m deep).
const START_SCATTER_M: f64 = 2.5;
/// A bike carried off is moved this far (metres); the contract's threshold is 20 m.
const ILLEGAL_MOVE_M: (f64, f64) = (25.0, 250.0);
/// Reports kept while offline (the oldest go first), and events.
const MAX_BUFFERED_REPORTS: usize = 720;
const MAX_BUFFERED_EVENTS: usize = 64;
/// Buffered reports go up in arrays of at most this many (each message well under 10 KiB).
pub const UPLOAD_CHUNK: usize = 40;
/// Command ids remembered to ignore redeliveries.
const RECENT_COMMANDS: usize = 8;
/// The longest report interval a twin may set (simulated seconds).
const MAX_INTERVAL_S: u64 = 86_400;

/// One message to publish, on `devices/{id}/{topic}`, QoS 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub topic: String,
    pub payload: Value,
}

impl Publish {
    fn new(topic: impl Into<String>, payload: Value) -> Publish {
        Publish {
            topic: topic.into(),
            payload,
        }
    }
}

/// A trip in progress: the shackle is open.
struct Ride {
    trip_id: String,
    /// Where the rider means to park (`end_near`).
    target: Option<(f64, f64)>,
    /// When the rider closes the shackle (no target), or gives up looking for the target.
    ends_ms: i64,
}

/// A motor movement under way, answered when it is done.
struct Motor {
    due_ms: i64,
    command_id: Value,
    job: Job,
}

enum Job {
    Unlock {
        trip_id: String,
        token: String,
        end_near: Option<(f64, f64)>,
        opens: bool,
    },
    Lock,
}

/// The last GNSS reading.
struct Gnss {
    pos: (f64, f64),
    fix: u8,
    sats: u8,
}

pub struct Lock {
    // Settings, from the city's configuration.
    scale: f64,
    parked_interval_s: u64,
    riding_interval_s: u64,
    ride_s: (u64, u64),
    motor_ms: (u64, u64),
    realism: LockRealism,
    parking_spots: std::sync::Arc<[(f64, f64)]>,
    park_in_fence_prob: f64,
    center: (f64, f64),
    // The bike.
    pos: (f64, f64),
    gnss: Gnss,
    battery: f64,
    locked: bool,
    heading: f64,
    speed_kmh: f64,
    rssi: i64,
    low_battery_armed: bool,
    ride: Option<Ride>,
    motor: Option<Motor>,
    // Time: the wall clock of the last physics step and the next due things.
    now_ms: i64,
    interval_s: u64,
    last_report_ms: i64,
    next_report_ms: i64,
    next_fall_ms: i64,
    next_illegal_ms: i64,
    next_tamper_ms: i64,
    next_outage_ms: i64,
    outage_until_ms: Option<i64>,
    // The link.
    link_up: bool,
    reports: VecDeque<Value>,
    events: VecDeque<Publish>,
    late: Option<Value>,
    recent_commands: VecDeque<Value>,
}

impl Lock {
    /// A parked lock somewhere in the city, at wall-clock time `now_ms`, not yet connected.
    pub fn new(config: &CityConfig, rng: &mut Rng, now_ms: i64) -> Lock {
        let (around, radius) = match start_spot(config, rng) {
            Some(spot) => (spot, START_SCATTER_M),
            None => (config.center, CITY_RADIUS_M),
        };
        let (r, a) = (
            radius * rng.unit().sqrt(),
            rng.range(0.0, std::f64::consts::TAU),
        );
        let pos = offset(around, r * a.cos(), r * a.sin());
        // Most locks are well charged; a few are running down, a very few nearly empty.
        let battery = match rng.unit() {
            u if u < 0.88 => rng.range(40.0, 100.0),
            u if u < 0.97 => rng.range(20.0, 40.0),
            _ => rng.range(2.0, 20.0),
        };
        let parked_interval_s = config.parked_interval_s.clamp(1, MAX_INTERVAL_S);
        let mut lock = Lock {
            scale: config.effective_time_scale(),
            parked_interval_s,
            riding_interval_s: config.riding_interval_s.clamp(1, MAX_INTERVAL_S),
            ride_s: config.ride_s,
            motor_ms: config.motor_ms,
            realism: config.realism.clone(),
            parking_spots: config.parking_spots.clone(),
            park_in_fence_prob: config.park_in_fence_prob,
            center: config.center,
            pos,
            gnss: Gnss {
                pos,
                fix: 3,
                sats: 9,
            },
            battery,
            locked: true,
            heading: rng.range(0.0, std::f64::consts::TAU),
            speed_kmh: 0.0,
            rssi: -70 - (rng.unit() * 30.0) as i64,
            // A lock that is already low warned before the simulation began.
            low_battery_armed: battery >= LOW_BATTERY_PCT as f64,
            ride: None,
            motor: None,
            now_ms,
            interval_s: parked_interval_s,
            last_report_ms: now_ms,
            next_report_ms: i64::MAX,
            next_fall_ms: i64::MAX,
            next_illegal_ms: i64::MAX,
            next_tamper_ms: i64::MAX,
            next_outage_ms: i64::MAX,
            outage_until_ms: None,
            link_up: false,
            reports: VecDeque::new(),
            events: VecDeque::new(),
            late: None,
            recent_commands: VecDeque::new(),
        };
        lock.next_report_ms = now_ms.saturating_add(lock.wall_ms(parked_interval_s as f64));
        lock.next_fall_ms = lock.after(now_ms, lock.realism.falls_per_hour, rng);
        lock.next_illegal_ms = lock.after(now_ms, lock.realism.illegal_moves_per_hour, rng);
        lock.next_tamper_ms = lock.after(now_ms, lock.realism.tampers_per_hour, rng);
        lock.next_outage_ms = lock.after(now_ms, lock.realism.outages_per_hour, rng);
        lock
    }

    /// When the lock next does something on its own (wall-clock ms); call [`Lock::tick`] then.
    pub fn next_due_ms(&self) -> i64 {
        let mut due = self
            .next_report_ms
            .min(self.next_fall_ms)
            .min(self.next_illegal_ms)
            .min(self.next_tamper_ms)
            .min(self.outage_until_ms.unwrap_or(self.next_outage_ms));
        if let Some(motor) = &self.motor {
            due = due.min(motor.due_ms);
        }
        if self.ride.is_some() {
            due = due.min(self.now_ms.saturating_add(self.wall_ms(RIDE_STEP_S).max(1)));
        }
        due
    }

    /// Whether the lock's modem is off (a connectivity outage): the device loop drops the
    /// connection and reconnects when this turns false.
    pub fn radio_off(&self) -> bool {
        self.outage_until_ms.is_some()
    }

    /// The connection is up (CONNACK): announce the firmware, upload what was buffered (reports
    /// as arrays, oldest first, then events) and send a fresh report.
    pub fn link_up(&mut self, now_ms: i64, rng: &mut Rng) -> Vec<Publish> {
        let mut out = Vec::new();
        self.advance(now_ms, rng, &mut out);
        let now_ms = self.now_ms;
        self.link_up = true;
        out.push(Publish::new("twin/reported", json!({"firmware": FIRMWARE})));
        let buffered: Vec<Value> = self.reports.drain(..).collect();
        for chunk in buffered.chunks(UPLOAD_CHUNK) {
            out.push(Publish::new("telemetry", Value::Array(chunk.to_vec())));
        }
        out.extend(self.events.drain(..));
        self.take_fix(rng, true);
        self.state_report(now_ms, rng, &mut out);
        out
    }

    /// The connection is gone: from now on reports and events are buffered.
    pub fn link_down(&mut self) {
        self.link_up = false;
        if let Some(late) = self.late.take() {
            self.buffer_report(late);
        }
    }

    /// Does what is due at `now_ms`: ride on, finish a motor movement, raise spontaneous events,
    /// start or end an outage, report.
    pub fn tick(&mut self, now_ms: i64, rng: &mut Rng) -> Vec<Publish> {
        let mut out = Vec::new();
        self.advance(now_ms, rng, &mut out);
        // A clock that stepped back does not take the simulation back.
        let now_ms = self.now_ms;
        match self.outage_until_ms {
            Some(until) if now_ms >= until => {
                self.outage_until_ms = None;
                self.next_outage_ms = self.after(now_ms, self.realism.outages_per_hour, rng);
            }
            None if now_ms >= self.next_outage_ms => {
                let length_s = rng.between(self.realism.outage_s) as f64;
                self.outage_until_ms = Some(now_ms.saturating_add(self.wall_ms(length_s).max(1)));
                self.link_down();
            }
            _ => {}
        }
        if self.motor.as_ref().is_some_and(|m| now_ms >= m.due_ms) {
            self.finish_motor(now_ms, rng, &mut out);
        }
        self.spontaneous(now_ms, rng, &mut out);
        if now_ms >= self.next_report_ms {
            self.take_fix(rng, false);
            let report = self.report(now_ms, rng);
            self.schedule_report(now_ms);
            self.send_periodic(report, rng, &mut out);
        }
        out
    }

    /// A message on `devices/{id}/{topic}`: the twin delta or a command.
    pub fn on_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        rng: &mut Rng,
    ) -> Vec<Publish> {
        let mut out = Vec::new();
        self.advance(now_ms, rng, &mut out);
        let body: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        if topic == "twin/delta" {
            self.apply_delta(&body, &mut out);
        } else if let Some(name) = topic.strip_prefix("commands/")
            && !name.contains('/')
        {
            self.command(name, &body, rng, &mut out);
        }
        out
    }

    fn apply_delta(&mut self, body: &Value, out: &mut Vec<Publish>) {
        // The per-state intervals the platform sets once; they replace the defaults.
        let intervals = &body["delta"]["report_intervals"];
        let valid = |v: &Value| v.as_u64().filter(|n| (1..=MAX_INTERVAL_S).contains(n));
        if let (Some(parked), Some(riding)) =
            (valid(&intervals["parked_s"]), valid(&intervals["riding_s"]))
        {
            self.parked_interval_s = parked;
            self.riding_interval_s = riding;
            let n = if self.locked { parked } else { riding };
            self.interval_s = n;
            self.next_report_ms = self
                .last_report_ms
                .saturating_add(self.wall_ms(n as f64))
                .max(self.now_ms);
            self.send(
                Publish::new(
                    "twin/reported",
                    json!({"report_intervals": {"parked_s": parked, "riding_s": riding}}),
                ),
                out,
            );
        }
        let Some(n) = body["delta"]["report_interval_s"]
            .as_u64()
            .filter(|n| (1..=MAX_INTERVAL_S).contains(n))
        else {
            return;
        };
        self.interval_s = n;
        self.next_report_ms = self
            .last_report_ms
            .saturating_add(self.wall_ms(n as f64))
            .max(self.now_ms);
        self.send(
            Publish::new("twin/reported", json!({"report_interval_s": n})),
            out,
        );
    }

    fn command(&mut self, name: &str, body: &Value, rng: &mut Rng, out: &mut Vec<Publish>) {
        let id = body["id"].clone();
        // QoS 1 may deliver a command twice; the first delivery is the one that counts.
        if !id.is_null() {
            if self.recent_commands.contains(&id) {
                return;
            }
            if self.recent_commands.len() == RECENT_COMMANDS {
                self.recent_commands.pop_front();
            }
            self.recent_commands.push_back(id.clone());
        }
        let params = &body["params"];
        let answer = match name {
            "unlock" => match self.unlock(params, rng) {
                Ok(Some(job)) => {
                    self.start_motor(id, job, rng);
                    return;
                }
                // The lock hangs: no answer, the platform times out.
                Ok(None) => return,
                Err(error) => Err(error),
            },
            "lock" if self.motor.is_some() => Err("busy"),
            "lock" if self.locked => Ok(json!({"locked": true})),
            "lock" => {
                self.start_motor(id, Job::Lock, rng);
                return;
            }
            "ring" => {
                let seconds = params["seconds"].as_u64().unwrap_or(3).clamp(1, 30);
                Ok(json!({"rang_s": seconds}))
            }
            _ => Err("unknown_command"),
        };
        self.answer(name, id, answer, out);
    }

    /// Checks an unlock in the contract's order; `Ok(None)` when the lock will never answer.
    fn unlock(&self, params: &Value, rng: &mut Rng) -> Result<Option<Job>, &'static str> {
        let (Some(trip_id), Some(token), Some(expires_at)) = (
            params["trip_id"].as_str(),
            params["token"].as_str(),
            params["expires_at"].as_i64(),
        ) else {
            return Err("invalid_params");
        };
        if expires_at < self.now_ms {
            return Err("expired");
        }
        if !self.locked || self.motor.is_some() {
            return Err("already_unlocked");
        }
        if self.battery_pct() < MOTOR_MIN_PCT {
            return Err("battery_low");
        }
        let roll = rng.unit();
        if roll < self.realism.no_answer_prob {
            return Ok(None);
        }
        Ok(Some(Job::Unlock {
            trip_id: trip_id.to_string(),
            token: token.to_string(),
            end_near: self.pick_parking(rng),
            opens: roll >= self.realism.no_answer_prob + self.realism.jam_prob,
        }))
    }

    fn start_motor(&mut self, command_id: Value, job: Job, rng: &mut Rng) {
        let delay = i64::try_from(rng.between(self.motor_ms)).unwrap_or(i64::MAX);
        self.motor = Some(Motor {
            due_ms: self.now_ms.saturating_add(delay),
            command_id,
            job,
        });
    }

    fn finish_motor(&mut self, now_ms: i64, rng: &mut Rng, out: &mut Vec<Publish>) {
        let Some(motor) = self.motor.take() else {
            return;
        };
        match motor.job {
            Job::Unlock { opens: false, .. } => {
                self.answer("unlock", motor.command_id, Err("jammed"), out);
            }
            Job::Unlock {
                trip_id,
                token,
                end_near,
                opens: true,
            } => {
                self.locked = false;
                self.speed_kmh = rng.range(10.0, 18.0);
                let ends_ms = match end_near {
                    Some(target) => {
                        // Long enough to get there at the slowest pace by a winding way.
                        let slowest_mps = 8.0 / 3.6;
                        let give_up_s = 2.0 * distance_m(self.pos, target) / slowest_mps + 600.0;
                        now_ms.saturating_add(self.wall_ms(give_up_s))
                    }
                    None => {
                        let (lo, hi) = (
                            self.ride_s.0 as f64,
                            self.ride_s.1.max(self.ride_s.0) as f64,
                        );
                        // Shorter rides are more common than long ones.
                        let length_s = lo + (hi - lo) * rng.unit().powi(2);
                        now_ms.saturating_add(self.wall_ms(length_s))
                    }
                };
                self.ride = Some(Ride {
                    trip_id: trip_id.clone(),
                    target: end_near,
                    ends_ms,
                });
                let result = json!({"unlocked": true, "trip_id": trip_id, "token": token});
                self.answer("unlock", motor.command_id, Ok(result), out);
                let mut event = self.event_body(now_ms);
                event["trip_id"] = json!(trip_id);
                event["token"] = json!(token);
                self.send_event("unlocked", event, out);
                self.interval_s = self.riding_interval_s;
                self.take_fix(rng, true);
                self.state_report(now_ms, rng, out);
            }
            Job::Lock => {
                self.answer("lock", motor.command_id, Ok(json!({"locked": true})), out);
                self.close(now_ms, rng, out);
            }
        }
    }

    /// The shackle closes (the rider, or a remote `lock`): the `locked` event, a state report,
    /// the parked interval.
    fn close(&mut self, now_ms: i64, rng: &mut Rng, out: &mut Vec<Publish>) {
        self.locked = true;
        self.speed_kmh = 0.0;
        let trip_id = self.ride.take().map(|ride| ride.trip_id);
        self.take_fix(rng, true);
        let mut event = self.event_body(now_ms);
        if let Some(trip_id) = trip_id {
            event["trip_id"] = json!(trip_id);
        }
        self.send_event("locked", event, out);
        self.interval_s = self.parked_interval_s;
        self.state_report(now_ms, rng, out);
    }

    /// Moves the simulation on to `now_ms`: the ride (in steps) and the battery.
    fn advance(&mut self, now_ms: i64, rng: &mut Rng, out: &mut Vec<Publish>) {
        while now_ms > self.now_ms {
            let Some(ride) = &self.ride else {
                let dt_s = self.sim_s(now_ms - self.now_ms);
                self.now_ms = now_ms;
                self.drain(dt_s * PARKED_DRAIN_PER_H / 3600.0, out);
                return;
            };
            let (target, ends_ms) = (ride.target, ride.ends_ms);
            let step_end = now_ms.min(self.now_ms.saturating_add(self.wall_ms(RIDE_STEP_S).max(1)));
            let dt_s = self.sim_s(step_end - self.now_ms);
            self.now_ms = step_end;
            let arrived = self.ride_step(target, dt_s, rng);
            self.drain(dt_s * RIDING_DRAIN_PER_H / 3600.0, out);
            if arrived || step_end >= ends_ms {
                self.close(step_end, rng, out);
            }
        }
    }

    /// One step of the rider; true when the bike has reached its target.
    fn ride_step(&mut self, target: Option<(f64, f64)>, dt_s: f64, rng: &mut Rng) -> bool {
        self.speed_kmh = (self.speed_kmh + rng.range(-2.0, 2.0)).clamp(8.0, 22.0);
        let step_m = self.speed_kmh / 3.6 * dt_s;
        match target {
            Some(target) => {
                let (north, east) = vector(self.pos, target);
                if north.hypot(east) <= step_m.max(PARK_SCATTER_M) {
                    let (r, a) = (
                        PARK_SCATTER_M * rng.unit().sqrt(),
                        rng.range(0.0, std::f64::consts::TAU),
                    );
                    self.pos = offset(target, r * a.cos(), r * a.sin());
                    return true;
                }
                self.heading = east.atan2(north) + rng.range(-0.35, 0.35);
            }
            None => {
                self.heading += rng.range(-0.4, 0.4);
                let (north, east) = vector(self.pos, self.center);
                if north.hypot(east) > CITY_RADIUS_M {
                    self.heading = east.atan2(north);
                }
            }
        }
        self.pos = offset(
            self.pos,
            step_m * self.heading.cos(),
            step_m * self.heading.sin(),
        );
        false
    }

    fn drain(&mut self, percent: f64, out: &mut Vec<Publish>) {
        self.battery = (self.battery - percent).max(0.0);
        let pct = self.battery_pct();
        if self.low_battery_armed && pct < LOW_BATTERY_PCT {
            self.low_battery_armed = false;
            let mut event = self.event_body(self.now_ms);
            event["battery"] = json!(pct);
            self.send_event("low_battery", event, out);
        } else if pct >= LOW_BATTERY_REARM_PCT {
            self.low_battery_armed = true;
        }
    }

    /// Falls, bikes carried off, tampering: whatever of them is due.
    fn spontaneous(&mut self, now_ms: i64, rng: &mut Rng, out: &mut Vec<Publish>) {
        let parked = self.locked && self.motor.is_none();
        if now_ms >= self.next_fall_ms {
            self.next_fall_ms = self.after(now_ms, self.realism.falls_per_hour, rng);
            let event = self.event_body(now_ms);
            self.send_event("fall", event, out);
        }
        if now_ms >= self.next_illegal_ms {
            self.next_illegal_ms = self.after(now_ms, self.realism.illegal_moves_per_hour, rng);
            if parked {
                let (d, a) = (
                    rng.range(ILLEGAL_MOVE_M.0, ILLEGAL_MOVE_M.1),
                    rng.range(0.0, std::f64::consts::TAU),
                );
                self.pos = offset(self.pos, d * a.cos(), d * a.sin());
                self.take_fix(rng, true);
                let mut event = self.event_body(now_ms);
                event["distance_m"] = json!(round(d, 1));
                self.send_event("illegal_movement", event, out);
            }
        }
        if now_ms >= self.next_tamper_ms {
            self.next_tamper_ms = self.after(now_ms, self.realism.tampers_per_hour, rng);
            if parked {
                let detail = if rng.chance(0.5) {
                    "shackle_forced"
                } else {
                    "housing_opened"
                };
                let mut event = self.event_body(now_ms);
                event["detail"] = json!(detail);
                self.send_event("tamper", event, out);
            }
        }
    }

    /// A report on a change of state (or on connecting): never late, never doubled; the next
    /// periodic one follows an interval later.
    fn state_report(&mut self, now_ms: i64, rng: &mut Rng, out: &mut Vec<Publish>) {
        let report = self.report(now_ms, rng);
        self.schedule_report(now_ms);
        if self.link_up {
            out.push(Publish::new("telemetry", report));
        } else {
            self.buffer_report(report);
        }
    }

    fn schedule_report(&mut self, now_ms: i64) {
        self.last_report_ms = now_ms;
        self.next_report_ms = now_ms.saturating_add(self.wall_ms(self.interval_s as f64).max(1));
    }

    /// A periodic report, with the link's imperfections: sometimes held back and sent after
    /// the next one, sometimes sent twice.
    fn send_periodic(&mut self, report: Value, rng: &mut Rng, out: &mut Vec<Publish>) {
        if !self.link_up {
            self.buffer_report(report);
            return;
        }
        if self.late.is_none() && rng.chance(self.realism.late_prob) {
            self.late = Some(report);
            return;
        }
        if rng.chance(self.realism.duplicate_prob) {
            out.push(Publish::new("telemetry", report.clone()));
        }
        out.push(Publish::new("telemetry", report));
        if let Some(late) = self.late.take() {
            out.push(Publish::new("telemetry", late));
        }
    }

    fn buffer_report(&mut self, report: Value) {
        if self.reports.len() == MAX_BUFFERED_REPORTS {
            self.reports.pop_front();
        }
        self.reports.push_back(report);
    }

    fn send_event(&mut self, name: &str, body: Value, out: &mut Vec<Publish>) {
        let event = Publish::new(format!("events/{name}"), body);
        if self.link_up {
            out.push(event);
        } else {
            if self.events.len() == MAX_BUFFERED_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(event);
        }
    }

    /// Publishes if connected, else drops (answers and twin patches are not buffered: the
    /// platform times the command out, and the retained delta comes again on reconnect).
    fn send(&self, publish: Publish, out: &mut Vec<Publish>) {
        if self.link_up {
            out.push(publish);
        }
    }

    fn answer(
        &self,
        command: &str,
        id: Value,
        answer: Result<Value, &'static str>,
        out: &mut Vec<Publish>,
    ) {
        let body = match answer {
            Ok(result) => json!({"id": id, "status": "ok", "result": result}),
            Err(error) => json!({"id": id, "status": "failed", "error": error}),
        };
        self.send(
            Publish::new(format!("commands/{command}/response"), body),
            out,
        );
    }

    /// Reads the sensors (the position is that of the last [`Lock::take_fix`]).
    fn report(&mut self, now_ms: i64, rng: &mut Rng) -> Value {
        self.rssi = (self.rssi + rng.range(-2.0, 2.0) as i64).clamp(-115, -55);
        json!({
            "ts": now_ms,
            "lat": round(self.gnss.pos.0, 6),
            "lon": round(self.gnss.pos.1, 6),
            "battery": self.battery_pct(),
            "locked": self.locked,
            "speed": if self.gnss.fix >= 2 { round(self.speed_kmh, 1) } else { 0.0 },
            "fix": self.gnss.fix,
            "sats": self.gnss.sats,
            "rssi": self.rssi,
        })
    }

    /// A GNSS reading: mostly a 3-D fix a few metres off, sometimes worse; without a fix the
    /// last position stands. `fresh` waits for a 3-D fix, as the lock does on a change of state.
    fn take_fix(&mut self, rng: &mut Rng, fresh: bool) {
        let quality = if fresh { 0.0 } else { rng.unit() };
        let (fix, sats, noise_m) = match quality {
            q if q < 0.85 => (3, rng.between((6, 14)), 3.0),
            q if q < 0.95 => (2, rng.between((4, 5)), 8.0),
            q if q < 0.99 => (1, rng.between((0, 3)), 0.0),
            _ => (0, 0, 0.0),
        };
        self.gnss.fix = fix;
        self.gnss.sats = sats as u8;
        if fix >= 2 {
            let (r, a) = (
                noise_m * rng.unit().sqrt(),
                rng.range(0.0, std::f64::consts::TAU),
            );
            self.gnss.pos = offset(self.pos, r * a.cos(), r * a.sin());
        }
    }

    fn event_body(&self, now_ms: i64) -> Value {
        json!({"ts": now_ms, "lat": round(self.gnss.pos.0, 6), "lon": round(self.gnss.pos.1, 6)})
    }

    fn battery_pct(&self) -> i64 {
        (self.battery.floor() as i64).clamp(0, 100)
    }

    /// Simulated seconds as wall-clock milliseconds.
    fn wall_ms(&self, sim_s: f64) -> i64 {
        (sim_s * 1000.0 / self.scale).round() as i64
    }

    /// Wall-clock milliseconds as simulated seconds.
    fn sim_s(&self, wall_ms: i64) -> f64 {
        wall_ms as f64 * self.scale / 1000.0
    }

    /// When the next event of a process with `per_hour` (simulated) happens after `now_ms`.
    fn after(&self, now_ms: i64, per_hour: f64, rng: &mut Rng) -> i64 {
        rng.wait(per_hour / 3600.0)
            .map_or(i64::MAX, |s| now_ms.saturating_add(self.wall_ms(s).max(1)))
    }
}

impl Lock {
    /// Where the rider of the next ride means to park: most riders head for a parking fence
    /// within 2 km (the rider app shows them), some leave the bike wherever they end up.
    fn pick_parking(&self, rng: &mut Rng) -> Option<(f64, f64)> {
        if self.parking_spots.is_empty() || !rng.chance(self.park_in_fence_prob) {
            return None;
        }
        let near: Vec<(f64, f64)> = self
            .parking_spots
            .iter()
            .copied()
            .filter(|&spot| distance_m(self.pos, spot) < 2_000.0)
            .collect();
        if near.is_empty() {
            return None;
        }
        let i = ((rng.unit() * near.len() as f64) as usize).min(near.len() - 1);
        Some(near[i])
    }
}

/// Where a new lock starts: at a parking spot with `start_at_parking_prob`, else `None`
/// (anywhere). Draws nothing when the city has no parking spots.
fn start_spot(config: &CityConfig, rng: &mut Rng) -> Option<(f64, f64)> {
    let spots = &config.parking_spots;
    if spots.is_empty() || !rng.chance(config.start_at_parking_prob) {
        return None;
    }
    let i = ((rng.unit() * spots.len() as f64) as usize).min(spots.len() - 1);
    Some(spots[i])
}

/// Metres north and east from `from` to `to` (flat-earth, fine within a city).
fn vector(from: (f64, f64), to: (f64, f64)) -> (f64, f64) {
    let north = (to.0 - from.0) * M_PER_DEG;
    let east = (to.1 - from.1) * M_PER_DEG * from.0.to_radians().cos();
    (north, east)
}

fn distance_m(from: (f64, f64), to: (f64, f64)) -> f64 {
    let (north, east) = vector(from, to);
    north.hypot(east)
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
mod tests;
