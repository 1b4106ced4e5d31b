use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use wulian_bikeshare::riders::{check_age, normalize_phone, parse_id_number};

use super::*;

/// 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600_000;

#[test]
fn identity_numbers_are_valid_and_riders_are_16_to_69() {
    let mut ages = Vec::new();
    for index in 0..5_000 {
        let who = identity(7, 1, index, 0, 0.95, NOW);
        let parsed =
            parse_id_number(&who.id_number).unwrap_or_else(|e| panic!("{}: {e}", who.id_number));
        assert_eq!(parsed.number, who.id_number);
        let digits: [u8; 17] = who.id_number.as_bytes()[..17].try_into().unwrap();
        assert_eq!(who.id_number.chars().last(), Some(id_check_char(&digits)));
        let age = check_age(parsed.birth_date, NOW).unwrap();
        assert!((16..=69).contains(&age), "{age}");
        ages.push(age);
        assert_eq!(normalize_phone(&who.phone).unwrap(), who.phone);
        // What the server checks of names: not empty, short, letters (and the dot) only.
        assert!(!who.name.trim().is_empty() && who.name.chars().count() <= 32);
        assert!(
            who.real_name.chars().all(|c| c.is_alphabetic() || c == '·'),
            "{}",
            who.real_name
        );
    }
    ages.sort_unstable();
    let median = ages[ages.len() / 2];
    assert!((25..=40).contains(&median), "median age {median}");
    assert!(ages.iter().any(|&a| a < 20) && ages.iter().any(|&a| a > 60));
    // Some consent to location processing is withheld, most is given.
    let consenting = (0..1_000)
        .filter(|&i| identity(7, 1, i, 0, 0.95, NOW).location_consent)
        .count();
    assert!((900..1_000).contains(&consenting), "{consenting}");
}

#[test]
fn phone_numbers_never_repeat_within_a_run() {
    let phones: HashSet<String> = (0..50_000).map(|i| phone(3, 9, i, 0)).collect();
    assert_eq!(phones.len(), 50_000);
    for p in phones.iter().take(100) {
        assert!(p.starts_with("+861") && p.len() == 14, "{p}");
    }
    // Another attempt is another number.
    assert_ne!(phone(3, 9, 5, 0), phone(3, 9, 5, 1));
}

#[test]
fn identities_are_unique_and_reproducible() {
    let a = identities(11, 42, 3_000, 0.95, NOW);
    assert_eq!(a.len(), 3_000);
    let phones: HashSet<&str> = a.iter().map(|(w, _)| w.phone.as_str()).collect();
    let ids: HashSet<&str> = a.iter().map(|(w, _)| w.id_number.as_str()).collect();
    assert_eq!((phones.len(), ids.len()), (3_000, 3_000));
    assert_eq!(a, identities(11, 42, 3_000, 0.95, NOW));
    // Each rider's identity is the one `identity` derives for its attempt.
    for (index, (who, attempt)) in a.iter().enumerate().take(50) {
        assert_eq!(*who, identity(11, 42, index as u64, *attempt, 0.95, NOW));
    }
    // Another run (nonce) signs up other people.
    let b = identities(11, 43, 3_000, 0.95, NOW);
    assert!(
        a.iter()
            .zip(&b)
            .all(|(x, y)| x.0.phone != y.0.phone && x.0.id_number != y.0.id_number)
    );
}

#[test]
fn demand_peaks_in_the_rushes_and_sleeps_at_night() {
    let samples: Vec<(f64, f64)> = (0..24 * 60)
        .map(|m| (m as f64 / 60.0, demand(m as f64 / 60.0)))
        .collect();
    let (peak_hour, peak) = samples
        .iter()
        .copied()
        .fold((0.0, 0.0), |best, s| if s.1 > best.1 { s } else { best });
    assert!(
        (7.5..=8.5).contains(&peak_hour) && (peak - 1.0).abs() < 1e-9,
        "{peak_hour} {peak}"
    );
    let (evening_hour, evening) = samples
        .iter()
        .copied()
        .filter(|s| (12.0..24.0).contains(&s.0))
        .fold((0.0, 0.0), |best, s| if s.1 > best.1 { s } else { best });
    assert!(
        (17.5..=18.5).contains(&evening_hour) && evening > 0.85,
        "{evening_hour} {evening}"
    );
    assert!(demand(13.0) > 0.3 && demand(13.0) < 0.6, "{}", demand(13.0));
    for night in [1.0, 2.0, 3.0, 4.0] {
        assert!(demand(night) < 0.06, "{night}: {}", demand(night));
    }
    assert!(demand(3.5) < demand(6.5) && demand(6.5) < demand(7.5));
    assert!(samples.iter().all(|s| (0.0..=1.0).contains(&s.1)));
    assert_eq!(demand(8.0), demand(32.0));
    assert_eq!(demand(f64::NAN), 0.0);
    // The integral, and the default fleet's day.
    let hours = demand_hours_per_day();
    assert!((8.0..10.0).contains(&hours), "{hours}");
    let config = RiderConfig::for_fleet(2_000);
    let trips_per_bike = config.peak_trips_per_hour * hours / 2_000.0;
    assert!((trips_per_bike - TRIPS_PER_BIKE_PER_DAY).abs() < 1e-9);
    assert_eq!(config.riders, 1_000);
    assert_eq!(RiderConfig::default(), config);
}

#[test]
fn config_problems_are_named() {
    assert!(RiderConfig::default().problems().is_empty());
    let bad = RiderConfig {
        time_scale: 0.0,
        peak_trips_per_hour: f64::NAN,
        utc_offset_minutes: 2_000,
        top_up: 0,
        resume_prob: 1.5,
        max_in_flight: 0,
        poll_interval: Duration::ZERO,
        city_radius_m: -1.0,
        ..RiderConfig::default()
    };
    let problems = bad.problems();
    for field in [
        "time_scale",
        "peak_trips_per_hour",
        "utc_offset_minutes",
        "top_up",
        "resume_prob",
        "max_in_flight",
        "poll_interval",
        "city_radius_m",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(&format!("{field}:"))),
            "{field} in {problems:?}"
        );
    }
}

#[test]
fn latency_quantiles_come_from_the_buckets() {
    let stats = RiderStats::default();
    assert_eq!(stats.snapshot().unlock_p50_ms, None);
    for ms in 1..=100 {
        stats.unlocked_after(Duration::from_millis(ms * 10 - 5));
    }
    stats.unlocked_after(Duration::from_secs(3600));
    let s = stats.snapshot();
    assert_eq!(s.unlocks_measured, 101);
    assert_eq!(s.unlock_p50_ms, Some(510));
    assert_eq!(s.unlock_p99_ms, Some(1_000));
    for _ in 0..40 {
        stats.conflict("bike_unavailable");
    }
    for i in 0..40 {
        stats.conflict(&format!("code_{i}"));
    }
    let s = stats.snapshot();
    assert_eq!(s.counts.rental_conflicts, 80);
    assert_eq!(s.conflicts_by_code["bike_unavailable"], 40);
    assert!(s.conflicts_by_code.len() <= MAX_CONFLICT_CODES + 1);
    assert_eq!(s.to_json()["rental_conflicts"], 80);
}

// ---- against a mock of the rider API --------------------------------------------------------

/// A rider API that behaves like the bike share's, minus the bikes: sign-up (the first phone
/// number is taken), wallet, nearby, rent (the first bike is always taken, the first rental
/// request's connection drops before the answer), and trips that ride, wait outside a fence
/// and settle.
#[derive(Default)]
struct Mock {
    taken_phone: Option<String>,
    /// Token → balance.
    wallets: HashMap<String, i64>,
    /// Idempotency key → trip id, and how often each key came.
    keys: HashMap<String, (String, u32)>,
    /// Trip id → looks at it so far, resumed.
    trips: HashMap<String, (u32, bool)>,
    dropped_first_rental: bool,
    rent_delay: Option<Duration>,
    sign_ups: u32,
}

fn serve_mock(mock: Arc<Mutex<Mock>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mock = Arc::clone(&mock);
            std::thread::spawn(move || handle(stream, &mock));
        }
    });
    format!("http://{addr}")
}

fn handle(stream: TcpStream, mock: &Mutex<Mock>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let token = headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_string);
    let path = target.split('?').next().unwrap_or("").to_string();
    let delay = mock.lock().unwrap().rent_delay;
    if let (Some(delay), "/api/v1/rider/trips") = (delay, path.as_str()) {
        std::thread::sleep(delay);
    }
    let answer = route(
        mock,
        &method,
        &path,
        token,
        headers.get("idempotency-key"),
        &body,
    );
    let Some((status, json)) = answer else {
        return; // The connection drops without an answer.
    };
    let text = json.to_string();
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let mut stream = stream;
    // The client may have gone (shutdown); nothing to do about it.
    stream.write_all(response.as_bytes()).ok();
}

fn problem(status: u16, code: &str) -> Option<(u16, Value)> {
    Some((
        status,
        json!({"status": status, "code": code, "title": code}),
    ))
}

fn route(
    mock: &Mutex<Mock>,
    method: &str,
    path: &str,
    token: Option<String>,
    key: Option<&String>,
    body: &Value,
) -> Option<(u16, Value)> {
    let mut m = mock.lock().unwrap();
    if method == "POST" && path == "/api/v1/rider/city/sign-up" {
        let phone = body["phone"].as_str().unwrap_or_default().to_string();
        parse_id_number(body["id_number"].as_str().unwrap_or_default()).ok()?;
        if m.taken_phone.is_none() {
            m.taken_phone = Some(phone.clone());
            return problem(409, "phone_taken");
        }
        if m.taken_phone.as_ref() == Some(&phone) {
            return problem(409, "phone_taken");
        }
        m.sign_ups += 1;
        let token = format!("wbr_{}", m.sign_ups);
        m.wallets.insert(token.clone(), 0);
        return Some((
            201,
            json!({"rider": {"id": format!("r-{}", m.sign_ups)}, "token": token}),
        ));
    }
    let Some(token) = token.filter(|t| m.wallets.contains_key(t)) else {
        return problem(401, "invalid_credentials");
    };
    match (method, path) {
        ("GET", "/api/v1/rider/me") => {
            Some((200, json!({"rider": {}, "balance": m.wallets[&token]})))
        }
        ("POST", "/api/v1/rider/wallet/top-ups") => {
            let amount = body["amount"].as_i64().unwrap_or(0);
            let balance = m.wallets[&token] + amount;
            if balance > 10_000 {
                return problem(422, "balance_cap_exceeded");
            }
            m.wallets.insert(token, balance);
            Some((200, json!({"journal": {}, "balance": balance})))
        }
        ("GET", "/api/v1/rider/bikes/nearby") => Some((
            200,
            json!({"bikes": [
                {"id": "bike-taken", "lat": 30.25, "lon": 120.15, "battery": 90, "distance_m": 12.0},
                {"id": "bike-0002", "lat": 30.25, "lon": 120.15, "battery": 80, "distance_m": 40.0},
                {"id": "bike-0003", "lat": 30.25, "lon": 120.15, "battery": 70, "distance_m": 90.0},
            ]}),
        )),
        ("POST", "/api/v1/rider/trips") => {
            let key = key?.clone();
            if !m.dropped_first_rental {
                m.dropped_first_rental = true;
                m.keys.insert(key, ("t-first".into(), 1));
                m.trips.insert("t-first".into(), (0, false));
                return None;
            }
            if let Some((id, seen)) = m.keys.get_mut(&key) {
                *seen += 1;
                return Some((201, json!({"trip": {"id": id, "state": "riding"}})));
            }
            if body["bike"] == "bike-taken" {
                return problem(409, "bike_unavailable");
            }
            let id = format!("t-{}", m.trips.len() + 1);
            m.keys.insert(key, (id.clone(), 1));
            m.trips.insert(id.clone(), (0, false));
            Some((201, json!({"trip": {"id": id, "state": "riding"}})))
        }
        ("POST", p) if p.ends_with("/resume") => {
            let id = p
                .trim_start_matches("/api/v1/rider/trips/")
                .trim_end_matches("/resume");
            let trip = m.trips.get_mut(id)?;
            trip.1 = true;
            Some((200, json!({"trip": {"id": id, "state": "riding"}})))
        }
        ("GET", p) if p.starts_with("/api/v1/rider/trips/") => {
            let id = p.trim_start_matches("/api/v1/rider/trips/").to_string();
            let Some(trip) = m.trips.get_mut(&id) else {
                return problem(404, "trip_not_found");
            };
            trip.0 += 1;
            let state = match trip.0 {
                1 => json!({"id": id, "state": "riding"}),
                2 => json!({"id": id, "state": "ending", "grace_until": NOW}),
                _ => json!({"id": id, "state": "settled", "total": 150, "out_of_fence": false}),
            };
            if trip.0 >= 3 {
                let balance = m.wallets[&token] - 150;
                m.wallets.insert(token, balance);
            }
            Some((200, json!({"trip": state})))
        }
        _ => problem(404, "not_found"),
    }
}

fn fast(riders: usize) -> RiderConfig {
    RiderConfig {
        riders,
        // At 08:00 local time the rate is the peak: 20 wishes a second.
        peak_trips_per_hour: 72_000.0,
        start_at_ms: Some(NOW),
        utc_offset_minutes: 8 * 60,
        resume_prob: 1.0,
        nearest_prob: 1.0,
        poll_interval: Duration::from_millis(20),
        http_timeout: Duration::from_secs(5),
        log_interval: Duration::from_millis(300),
        identity_nonce: Some(5),
        ..RiderConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn riders_sign_up_top_up_rent_ride_and_settle() {
    let mock = Arc::new(Mutex::new(Mock::default()));
    let base = serve_mock(Arc::clone(&mock));
    let shutdown = CancellationToken::new();
    let spots: Arc<[(f64, f64)]> = Arc::from(vec![(30.25, 120.15)]);
    let (stats, task) = spawn(
        base,
        "city".into(),
        (30.25, 120.15),
        spots,
        fast(4),
        shutdown.clone(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stats.snapshot().counts.settled < 8 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let finished = tokio::time::timeout(Duration::from_secs(2), task).await;
    let s = finished.expect("run returns promptly").unwrap().snapshot();
    let c = &s.counts;
    assert!(c.settled >= 8, "{s:?}");
    // Only the first phone number was taken; which riders got to ride depends on timing.
    assert_eq!(c.signup_conflicts, 1, "{s:?}");
    assert!((1..=4).contains(&c.signups), "{s:?}");
    assert!(c.top_ups >= c.signups, "{s:?}");
    assert!(c.rentals_ok >= c.settled && c.rentals_failed == 0, "{s:?}");
    // Every rental but the first (whose connection dropped) met the taken bike first.
    assert!(c.rental_conflicts + 1 >= c.settled, "{s:?}");
    assert_eq!(
        s.conflicts_by_code["bike_unavailable"], c.rental_conflicts,
        "{s:?}"
    );
    assert_eq!(c.rental_retries, 1, "{s:?}");
    // Every trip waited outside a fence once, and the riders always move the bike.
    assert!(c.resumes >= c.settled, "{s:?}");
    assert_eq!(c.busy_riders, 0);
    assert!(s.unlock_p50_ms.is_some());
    assert_eq!(c.unexpected_answers, 0, "{s:?}");
    let m = mock.lock().unwrap();
    // The dropped rental was retried with its key and answered with its trip.
    assert_eq!(
        m.keys
            .values()
            .filter(|(id, _)| id == "t-first")
            .map(|(_, n)| *n)
            .sum::<u32>(),
        2
    );
    assert!(m.keys.values().all(|(id, n)| id == "t-first" || *n == 1));
    assert!(
        m.trips.values().filter(|t| t.0 >= 3).all(|t| t.1),
        "every held trip was resumed"
    );
    assert!(m.wallets.values().all(|&b| b > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_promptly_on_shutdown_even_mid_request() {
    let mock = Arc::new(Mutex::new(Mock {
        rent_delay: Some(Duration::from_secs(4)),
        ..Mock::default()
    }));
    let base = serve_mock(mock);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(run(
        base,
        "city".into(),
        (30.25, 120.15),
        Arc::from(Vec::new()),
        fast(3),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    shutdown.cancel();
    let started = std::time::Instant::now();
    let stats = tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("run returns promptly")
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(stats.snapshot().counts.signups >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_platform_is_counted_not_fatal() {
    // A port nobody listens on: connections are refused at once.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let shutdown = CancellationToken::new();
    let (stats, task) = spawn(
        format!("http://127.0.0.1:{port}"),
        "city".into(),
        (30.25, 120.15),
        Arc::from(Vec::new()),
        fast(2),
        shutdown.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
    let c = stats.snapshot().counts;
    assert!(c.network_errors >= 1 && c.signups == 0, "{c:?}");
}
