//! The lock's state machine against docs/bike-lock-contract.md, without a broker: the tests
//! play the device loop (clock, link, messages) by hand.

use super::*;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn perfect() -> CityConfig {
    CityConfig {
        realism: LockRealism::none(),
        ..CityConfig::default()
    }
}

/// A lock with a healthy battery, connected at `T0`, and what it sent on connecting.
fn online(config: &CityConfig) -> (Lock, Rng, Vec<Publish>) {
    let mut rng = Rng::new(7);
    let mut lock = Lock::new(config, &mut rng, T0);
    lock.battery = 80.0;
    lock.low_battery_armed = true;
    let out = lock.link_up(T0, &mut rng);
    (lock, rng, out)
}

/// Ticks the lock whenever it is due, up to `until`; everything it published.
fn run_until(lock: &mut Lock, rng: &mut Rng, until: i64) -> Vec<Publish> {
    let mut out = Vec::new();
    loop {
        let due = lock.next_due_ms();
        if due > until {
            return out;
        }
        out.extend(lock.tick(due, rng));
    }
}

fn command(id: &str, name: &str, params: Value) -> Vec<u8> {
    json!({"id": id, "name": name, "params": params})
        .to_string()
        .into_bytes()
}

fn unlock(id: &str, trip: &str, expires_at: i64) -> Vec<u8> {
    command(
        id,
        "unlock",
        json!({"trip_id": trip, "token": format!("u1.{trip}"), "expires_at": expires_at}),
    )
}

fn on(topic: &str, out: &[Publish]) -> Vec<Value> {
    out.iter()
        .filter(|p| p.topic == topic)
        .map(|p| p.payload.clone())
        .collect()
}

/// Every report published, arrays unpacked.
fn reports(out: &[Publish]) -> Vec<Value> {
    on("telemetry", out)
        .into_iter()
        .flat_map(|p| match p {
            Value::Array(items) => items,
            one => vec![one],
        })
        .collect()
}

/// Unlocks with a perfect motor; returns when the shackle opened and what was published then.
fn open(lock: &mut Lock, rng: &mut Rng, trip: &str, params: Option<Value>) -> Vec<Publish> {
    let now = lock.now_ms;
    let payload = match params {
        Some(params) => command(&format!("c-{trip}"), "unlock", params),
        None => unlock(&format!("c-{trip}"), trip, now + 30_000),
    };
    assert!(
        lock.on_message("commands/unlock", &payload, now, rng)
            .is_empty()
    );
    let due = lock.next_due_ms();
    lock.tick(due, rng)
}

#[test]
fn unlock_answers_after_the_motor_echoing_the_token_and_rides() {
    let (mut lock, mut rng, hello) = online(&perfect());
    assert_eq!(hello[0].topic, "twin/reported");
    assert_eq!(hello[0].payload["firmware"], FIRMWARE);
    let first = reports(&hello);
    assert_eq!(first.len(), 1);
    for key in [
        "ts", "lat", "lon", "battery", "locked", "speed", "fix", "sats", "rssi",
    ] {
        assert!(!first[0][key].is_null(), "{key} in {}", first[0]);
    }
    assert_eq!(
        (first[0]["ts"].as_i64(), first[0]["locked"].as_bool()),
        (Some(T0), Some(true))
    );

    let expires = T0 + 30_000;
    let out = lock.on_message(
        "commands/unlock",
        &unlock("c-1", "t-1", expires),
        T0,
        &mut rng,
    );
    assert!(out.is_empty(), "the motor takes time: {out:?}");
    let due = lock.next_due_ms();
    assert!((T0 + 200..=T0 + 800).contains(&due), "{}", due - T0);
    assert!(lock.tick(due - 1, &mut rng).is_empty());
    let out = lock.tick(due, &mut rng);
    let topics: Vec<&str> = out.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["commands/unlock/response", "events/unlocked", "telemetry"]
    );
    assert_eq!(
        out[0].payload,
        json!({"id": "c-1", "status": "ok", "result": {"unlocked": true, "trip_id": "t-1", "token": "u1.t-1"}})
    );
    let event = &out[1].payload;
    assert_eq!(
        (event["trip_id"].as_str(), event["token"].as_str()),
        (Some("t-1"), Some("u1.t-1"))
    );
    assert_eq!(event["ts"], due);
    assert!(event["lat"].is_f64() && event["lon"].is_f64());
    assert_eq!(out[2].payload["locked"], false);

    // Open now: a second unlock is refused at once.
    let again = lock.on_message(
        "commands/unlock",
        &unlock("c-2", "t-2", expires),
        due,
        &mut rng,
    );
    assert_eq!(again[0].payload["status"], "failed");
    assert_eq!(again[0].payload["error"], "already_unlocked");

    // The bike moves and reports every 10 s (no twin value yet).
    let ride = reports(&run_until(&mut lock, &mut rng, due + 60_000));
    assert_eq!(ride.len(), 6, "{ride:?}");
    let ts: Vec<i64> = ride.iter().map(|r| r["ts"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[1] - w[0] == 10_000), "{ts:?}");
    assert!(ride.iter().all(|r| r["locked"] == false));
    assert_ne!(
        (&ride[0]["lat"], &ride[0]["lon"]),
        (&ride[5]["lat"], &ride[5]["lon"])
    );
}

#[test]
fn unlocks_are_refused_as_the_contract_says() {
    let (mut lock, mut rng, _) = online(&perfect());
    let mut refusal = |lock: &mut Lock, payload: Vec<u8>| {
        let out = lock.on_message("commands/unlock", &payload, T0, &mut rng);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].topic, "commands/unlock/response");
        assert_eq!(out[0].payload["status"], "failed");
        out[0].payload["error"].as_str().unwrap().to_string()
    };
    assert_eq!(refusal(&mut lock, unlock("c-1", "t-1", T0 - 1)), "expired");
    assert_eq!(
        refusal(
            &mut lock,
            command("c-2", "unlock", json!({"trip_id": "t-2"}))
        ),
        "invalid_params"
    );
    lock.battery = 4.5;
    assert_eq!(
        refusal(&mut lock, unlock("c-3", "t-3", T0 + 30_000)),
        "battery_low"
    );
    assert!(lock.locked && lock.motor.is_none());

    // A redelivered command (same id) is not carried out twice.
    assert!(
        lock.on_message(
            "commands/unlock",
            &unlock("c-1", "t-1", T0 - 1),
            T0,
            &mut rng
        )
        .is_empty()
    );

    let answer = |lock: &mut Lock, rng: &mut Rng, id: &str, name: &str, params: Value| {
        let out = lock.on_message(
            &format!("commands/{name}"),
            &command(id, name, params),
            T0,
            rng,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].topic, format!("commands/{name}/response"));
        out[0].payload.clone()
    };
    assert_eq!(
        answer(&mut lock, &mut rng, "c-4", "ring", json!({"seconds": 2})),
        json!({"id": "c-4", "status": "ok", "result": {"rang_s": 2}})
    );
    // Already closed: answered at once, no `locked` event.
    assert_eq!(
        answer(&mut lock, &mut rng, "c-5", "lock", json!({})),
        json!({"id": "c-5", "status": "ok", "result": {"locked": true}})
    );
    assert_eq!(
        answer(&mut lock, &mut rng, "c-6", "explode", json!({}))["error"],
        "unknown_command"
    );
}

#[test]
fn a_lock_may_jam_or_never_answer() {
    let jams = CityConfig {
        realism: LockRealism {
            jam_prob: 1.0,
            ..LockRealism::none()
        },
        ..perfect()
    };
    let (mut lock, mut rng, _) = online(&jams);
    let out = open(&mut lock, &mut rng, "t-1", None);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        out[0].payload,
        json!({"id": "c-t-1", "status": "failed", "error": "jammed"})
    );
    assert!(lock.locked && lock.ride.is_none());
    // Still closed: the next unlock drives the motor again rather than being refused.
    assert!(
        lock.on_message(
            "commands/unlock",
            &unlock("c-2", "t-2", T0 + 60_000),
            T0 + 1_000,
            &mut rng
        )
        .is_empty()
    );
    assert!(lock.motor.is_some());

    let silent = CityConfig {
        realism: LockRealism {
            no_answer_prob: 1.0,
            ..LockRealism::none()
        },
        ..perfect()
    };
    let (mut lock, mut rng, _) = online(&silent);
    let payload = unlock("c-1", "t-1", T0 + 30_000);
    assert!(
        lock.on_message("commands/unlock", &payload, T0, &mut rng)
            .is_empty()
    );
    let later = run_until(&mut lock, &mut rng, T0 + 20_000);
    assert!(later.iter().all(|p| p.topic == "telemetry"), "{later:?}");
    assert!(lock.locked && lock.motor.is_none());
}

#[test]
fn the_report_interval_follows_the_state_and_the_twin() {
    let (mut lock, mut rng, _) = online(&perfect());
    // Parked without a twin value: every 300 s.
    let parked = reports(&run_until(&mut lock, &mut rng, T0 + 900_000));
    let ts: Vec<i64> = parked.iter().map(|r| r["ts"].as_i64().unwrap()).collect();
    assert_eq!(ts, [T0 + 300_000, T0 + 600_000, T0 + 900_000]);

    // The twin sets 60 s: applied, confirmed, and the next report is due 60 s after the last.
    let now = T0 + 910_000;
    let delta = json!({"version": 3, "delta": {"report_interval_s": 60}}).to_string();
    let out = lock.on_message("twin/delta", delta.as_bytes(), now, &mut rng);
    assert_eq!(
        out,
        [Publish::new(
            "twin/reported",
            json!({"report_interval_s": 60})
        )]
    );
    assert_eq!(lock.next_due_ms(), T0 + 960_000);
    // Nothing to apply in these.
    for junk in [
        json!({"version": 4, "delta": {}}),
        json!({"version": 5, "delta": {"report_interval_s": 0}}),
        json!({"version": 6, "delta": {"report_interval_s": "10"}}),
    ] {
        let junk = junk.to_string();
        assert!(
            lock.on_message("twin/delta", junk.as_bytes(), now, &mut rng)
                .is_empty()
        );
    }

    // Unlocking switches to the riding default (10 s) at once; the twin then sets 5 s.
    lock.tick(T0 + 960_000, &mut rng);
    open(&mut lock, &mut rng, "t-1", None);
    let opened = lock.now_ms;
    let ten = reports(&run_until(&mut lock, &mut rng, opened + 30_000));
    assert_eq!(ten.len(), 3);
    let delta = json!({"version": 7, "delta": {"report_interval_s": 5}}).to_string();
    let out = lock.on_message("twin/delta", delta.as_bytes(), opened + 30_000, &mut rng);
    assert_eq!(out[0].payload, json!({"report_interval_s": 5}));
    let five = reports(&run_until(&mut lock, &mut rng, opened + 60_000));
    let ts: Vec<i64> = five.iter().map(|r| r["ts"].as_i64().unwrap()).collect();
    assert_eq!(ts.len(), 6, "{ts:?}");
    assert!(ts.windows(2).all(|w| w[1] - w[0] == 5_000), "{ts:?}");

    // The platform's per-state intervals replace the defaults for every later state change.
    let delta =
        json!({"version": 8, "delta": {"report_intervals": {"parked_s": 600, "riding_s": 15}}});
    let out = lock.on_message(
        "twin/delta",
        delta.to_string().as_bytes(),
        opened + 60_000,
        &mut rng,
    );
    assert_eq!(
        out[0].payload,
        json!({"report_intervals": {"parked_s": 600, "riding_s": 15}})
    );
    assert_eq!(
        (
            lock.parked_interval_s,
            lock.riding_interval_s,
            lock.interval_s
        ),
        (600, 15, 15)
    );

    // A compressed clock: ten simulated seconds per real one, so parked reports every 30 s.
    let fast = CityConfig {
        time_scale: 10.0,
        ..perfect()
    };
    let (mut lock, mut rng, _) = online(&fast);
    let ts: Vec<i64> = reports(&run_until(&mut lock, &mut rng, T0 + 90_000))
        .iter()
        .map(|r| r["ts"].as_i64().unwrap())
        .collect();
    assert_eq!(ts, [T0 + 30_000, T0 + 60_000, T0 + 90_000]);
}

#[test]
fn a_ride_ends_when_the_rider_closes_the_lock() {
    let (mut lock, mut rng, _) = online(&perfect());
    open(&mut lock, &mut rng, "t-1", None);
    let opened = lock.now_ms;
    let out = run_until(&mut lock, &mut rng, opened + 3_600_000);
    let locked = on("events/locked", &out);
    assert_eq!(locked.len(), 1, "one ride, and no ride after it");
    assert_eq!(locked[0]["trip_id"], "t-1");
    let closed_at = locked[0]["ts"].as_i64().unwrap();
    let length_s = (closed_at - opened) / 1000;
    assert!((240..=1805).contains(&length_s), "{length_s}");
    // The state report right after the event, locked and parked again.
    let at = out.iter().position(|p| p.topic == "events/locked").unwrap();
    assert_eq!(out[at + 1].topic, "telemetry");
    assert_eq!(out[at + 1].payload["locked"], true);
    assert_eq!(out[at + 1].payload["ts"], closed_at);
    assert_eq!(out[at + 1].payload["speed"], 0.0);
    // Parked: no more movement, the parked interval.
    let after: Vec<Value> = reports(&out[at + 1..]);
    assert!(
        after
            .iter()
            .all(|r| r["locked"] == true && r["speed"] == 0.0)
    );
    assert!(after.len() <= 3600 / 300 + 1);
}

#[test]
fn riders_park_at_a_known_spot_nearby() {
    let config = CityConfig {
        realism: LockRealism::none(),
        park_in_fence_prob: 1.0,
        ..CityConfig::default()
    };
    let mut rng = Rng::new(7);
    let probe = Lock::new(&config, &mut rng, T0);
    let target = offset(probe.pos, 900.0, -600.0);
    let far = offset(probe.pos, 9_000.0, 0.0);
    let config = CityConfig {
        parking_spots: std::sync::Arc::from(vec![target, far]),
        ..config
    };
    let (mut lock, mut rng, _) = online(&config);
    lock.pos = probe.pos;
    let out = open(&mut lock, &mut rng, "t-9", None);
    assert_eq!(out[0].payload["status"], "ok");
    let out = run_until(&mut lock, &mut rng, T0 + 3_600_000);
    assert_eq!(on("events/locked", &out).len(), 1);
    let last = reports(&out)
        .into_iter()
        .find(|r| r["locked"] == true)
        .unwrap();
    let parked = (last["lat"].as_f64().unwrap(), last["lon"].as_f64().unwrap());
    let off = distance_m(parked, target);
    assert!(off < 8.0, "{off} m from the only spot within 2 km");
}

#[test]
fn a_remote_lock_ends_the_trip() {
    let (mut lock, mut rng, _) = online(&perfect());
    open(&mut lock, &mut rng, "t-1", None);
    let now = lock.now_ms + 20_000;
    run_until(&mut lock, &mut rng, now);
    let out = lock.on_message(
        "commands/lock",
        &command("c-9", "lock", json!({})),
        now,
        &mut rng,
    );
    assert!(out.is_empty(), "the motor takes time");
    let out = lock.tick(lock.motor.as_ref().unwrap().due_ms, &mut rng);
    let topics: Vec<&str> = out.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["commands/lock/response", "events/locked", "telemetry"]
    );
    assert_eq!(out[0].payload["result"], json!({"locked": true}));
    assert_eq!(out[1].payload["trip_id"], "t-1");
    assert_eq!(out[2].payload["locked"], true);
    assert!(lock.ride.is_none());
}

#[test]
fn an_offline_lock_buffers_and_uploads_arrays_oldest_first() {
    let (mut lock, mut rng, _) = online(&perfect());
    lock.ride_s = (1200, 1200);
    open(&mut lock, &mut rng, "t-1", None);
    lock.link_down();
    // The whole ride and some parking happen offline: nothing goes out.
    let offline = run_until(&mut lock, &mut rng, T0 + 3_600_000);
    assert!(offline.is_empty(), "{offline:?}");
    let back = T0 + 3_600_500;
    let out = lock.link_up(back, &mut rng);
    assert_eq!(out[0].topic, "twin/reported");
    let arrays: Vec<&Vec<Value>> = out
        .iter()
        .filter_map(|p| p.payload.as_array().filter(|_| p.topic == "telemetry"))
        .collect();
    assert!(
        arrays.len() >= 2,
        "a ride of 10 s reports fills several arrays"
    );
    assert!(
        arrays
            .iter()
            .all(|a| !a.is_empty() && a.len() <= UPLOAD_CHUNK)
    );
    let buffered: Vec<&Value> = arrays.iter().flat_map(|a| a.iter()).collect();
    let ts: Vec<i64> = buffered.iter().map(|r| r["ts"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "oldest first: {ts:?}");
    assert!(ts[ts.len() - 1] < back, "buffered reports keep their time");
    assert_eq!(buffered[0]["locked"], false);
    assert_eq!(buffered[buffered.len() - 1]["locked"], true);
    // Then the buffered event, then a fresh report.
    let event_at = out.iter().position(|p| p.topic == "events/locked").unwrap();
    assert_eq!(out[event_at].payload["trip_id"], "t-1");
    let last = out.last().unwrap();
    assert_eq!(
        (last.topic.as_str(), last.payload["ts"].as_i64()),
        ("telemetry", Some(back))
    );
    // Answers are not buffered: a command cannot reach an offline lock anyway.
}

#[test]
fn outages_come_and_go() {
    let flaky = CityConfig {
        realism: LockRealism {
            outages_per_hour: 20.0,
            outage_s: (60, 60),
            ..LockRealism::none()
        },
        ..perfect()
    };
    let (mut lock, mut rng, _) = online(&flaky);
    let mut outages = 0;
    let mut uploaded = 0;
    let end = T0 + 4 * 3_600_000;
    while lock.next_due_ms() <= end {
        let due = lock.next_due_ms();
        let out = lock.tick(due, &mut rng);
        if lock.radio_off() {
            assert!(
                out.iter().all(|p| p.topic != "telemetry"),
                "offline: {out:?}"
            );
            if !lock.link_up {
                continue;
            }
        }
        if !lock.radio_off() && !lock.link_up {
            // The outage is over: the device loop reconnects.
            outages += 1;
            let hello = lock.link_up(due, &mut rng);
            uploaded += on("telemetry", &hello)
                .iter()
                .filter(|p| p.is_array())
                .count();
        }
    }
    assert!((20..=150).contains(&outages), "{outages}");
    assert!(uploaded > 0, "some outages span a report");
}

#[test]
fn reports_are_sometimes_doubled_or_late() {
    let doubled = CityConfig {
        realism: LockRealism {
            duplicate_prob: 1.0,
            ..LockRealism::none()
        },
        ..perfect()
    };
    let (mut lock, mut rng, _) = online(&doubled);
    let out = reports(&run_until(&mut lock, &mut rng, T0 + 600_000));
    assert_eq!(out.len(), 4);
    assert_eq!((&out[0], &out[2]), (&out[1], &out[3]));

    let late = CityConfig {
        realism: LockRealism {
            late_prob: 1.0,
            ..LockRealism::none()
        },
        ..perfect()
    };
    let (mut lock, mut rng, _) = online(&late);
    assert!(
        run_until(&mut lock, &mut rng, T0 + 300_000).is_empty(),
        "held back"
    );
    let out = reports(&run_until(&mut lock, &mut rng, T0 + 600_000));
    let ts: Vec<i64> = out.iter().map(|r| r["ts"].as_i64().unwrap()).collect();
    assert_eq!(
        ts,
        [T0 + 600_000, T0 + 300_000],
        "the late one after the next"
    );
}

#[test]
fn parked_bikes_fall_get_carried_off_and_tampered_with_but_never_ride() {
    let eventful = CityConfig {
        realism: LockRealism {
            falls_per_hour: 5.0,
            illegal_moves_per_hour: 5.0,
            tampers_per_hour: 5.0,
            ..LockRealism::none()
        },
        ..perfect()
    };
    let (mut lock, mut rng, _) = online(&eventful);
    let start = lock.pos;
    let out = run_until(&mut lock, &mut rng, T0 + 10 * 3_600_000);
    let (falls, moves, tampers) = (
        on("events/fall", &out),
        on("events/illegal_movement", &out),
        on("events/tamper", &out),
    );
    for events in [&falls, &moves, &tampers] {
        assert!((20..=90).contains(&events.len()), "{}", events.len());
        assert!(
            events
                .iter()
                .all(|e| e["ts"].is_i64() && e["lat"].is_f64() && e["lon"].is_f64())
        );
    }
    assert!(
        moves
            .iter()
            .all(|e| e["distance_m"].as_f64().unwrap() > 20.0)
    );
    assert!(
        tampers
            .iter()
            .all(|e| ["shackle_forced", "housing_opened"].contains(&e["detail"].as_str().unwrap()))
    );
    assert_ne!(lock.pos, start, "carried off");
    assert!(on("events/unlocked", &out).is_empty() && on("events/locked", &out).is_empty());
    assert!(
        reports(&out)
            .iter()
            .all(|r| r["locked"] == true && r["speed"] == 0.0)
    );
}

#[test]
fn low_battery_is_raised_once_when_the_charge_drops_below_20() {
    let (mut lock, mut rng, _) = online(&perfect());
    lock.battery = 20.05;
    let out = run_until(&mut lock, &mut rng, T0 + 10 * 3_600_000);
    let low = on("events/low_battery", &out);
    assert_eq!(low.len(), 1);
    assert_eq!(low[0]["battery"], 19);
    let reported = reports(&out);
    assert_eq!(reported.last().unwrap()["battery"], 19);
}

#[test]
fn the_same_seed_gives_the_same_lock() {
    let config = CityConfig::default();
    let run = || {
        let mut rng = Rng::new(42);
        let mut lock = Lock::new(&config, &mut rng, T0);
        let mut out = lock.link_up(T0, &mut rng);
        out.extend(lock.on_message(
            "commands/unlock",
            &unlock("c-1", "t-1", T0 + 30_000),
            T0,
            &mut rng,
        ));
        out.extend(run_until(&mut lock, &mut rng, T0 + 24 * 3_600_000));
        out
    };
    let first = run();
    assert!(first.len() > 100);
    assert_eq!(first, run());
}
