use super::*;

const MIN: i64 = 60_000;

fn standard() -> PricingPlan {
    default_plans().0.remove(0)
}

fn monthly() -> PassProduct {
    default_plans().1.remove(0)
}

fn ride(duration_ms: i64) -> FareInput<'static> {
    FareInput {
        duration_ms,
        out_of_fence: false,
        already_charged_today: 0,
        active_pass: None,
    }
}

fn kinds(f: &Fare) -> Vec<&'static str> {
    f.lines.iter().map(|l| l.kind.as_str()).collect()
}

fn assert_consistent(f: &Fare) {
    let sum: i64 = f.lines.iter().map(|l| l.amount).sum();
    assert_eq!(sum, f.total, "{f:?}");
    assert_eq!(f.ride_charge() + f.fees(), f.total);
    assert!(f.total >= 0);
}

#[test]
fn default_plans_are_valid() {
    let (plans, passes) = default_plans();
    for p in &plans {
        p.validate().unwrap();
    }
    for p in &passes {
        p.validate().unwrap();
    }
}

#[test]
fn period_boundaries_are_exclusive() {
    let plan = standard();
    for (ms, expected) in [
        (0, 0),
        (1, 150),
        (15 * MIN - 1, 150),
        (15 * MIN, 150),
        (15 * MIN + 1, 300),
        (30 * MIN, 300),
        (30 * MIN + 1, 450),
    ] {
        let f = fare(&plan, &ride(ms));
        assert_eq!(f.total, expected, "duration {ms} ms");
        assert_eq!(kinds(&f), ["time"]);
        assert_consistent(&f);
    }
}

#[test]
fn free_minutes_then_started_periods() {
    let plan = PricingPlan {
        free_minutes: 5,
        unlock_fee: 100,
        ..standard()
    };
    for (ms, time) in [
        (0, 0),
        (5 * MIN, 0),
        (5 * MIN + 1, 150),
        (20 * MIN, 150),
        (20 * MIN + 1, 300),
    ] {
        let f = fare(&plan, &ride(ms));
        assert_eq!(f.total, 100 + time, "duration {ms} ms");
        assert_eq!(kinds(&f), ["unlock", "time"]);
        assert_consistent(&f);
    }
}

#[test]
fn daily_cap_crossed_mid_ride() {
    let plan = standard();
    // 45 min = 3 periods = 450, but only 100 left of the 2000 cap.
    let f = fare(
        &plan,
        &FareInput {
            already_charged_today: 1900,
            ..ride(45 * MIN)
        },
    );
    assert_eq!(kinds(&f), ["time", "cap_discount"]);
    assert_eq!(f.lines[1].amount, -350);
    assert_eq!(f.total, 100);
    assert_consistent(&f);

    // Cap already reached (or exceeded by a plan change): the ride is free, never negative.
    for already in [2000, 2500] {
        let f = fare(
            &plan,
            &FareInput {
                already_charged_today: already,
                ..ride(45 * MIN)
            },
        );
        assert_eq!(f.total, 0);
        assert_consistent(&f);
    }

    // A single long ride is capped too.
    let f = fare(&plan, &ride(24 * 60 * MIN));
    assert_eq!(f.total, 2000);
    assert_consistent(&f);

    // Exactly reaching the cap applies no discount.
    let f = fare(
        &plan,
        &FareInput {
            already_charged_today: 1550,
            ..ride(45 * MIN)
        },
    );
    assert_eq!(kinds(&f), ["time"]);
    assert_eq!(f.total, 450);
}

#[test]
fn dispatch_fee_is_outside_the_cap() {
    let plan = standard();
    let f = fare(
        &plan,
        &FareInput {
            out_of_fence: true,
            already_charged_today: 2000,
            ..ride(10 * MIN)
        },
    );
    assert_eq!(kinds(&f), ["time", "cap_discount", "dispatch_fee"]);
    assert_eq!(f.total, 500);
    assert_eq!(f.ride_charge(), 0);
    assert_eq!(f.fees(), 500);
    assert_consistent(&f);

    let f = fare(
        &plan,
        &FareInput {
            out_of_fence: true,
            ..ride(10 * MIN)
        },
    );
    assert_eq!(f.total, 650);
    assert_eq!(f.ride_charge(), 150);
}

#[test]
fn pass_waives_unlock_and_first_minutes() {
    let plan = PricingPlan {
        unlock_fee: 100,
        ..standard()
    };
    let pass = monthly();
    let with_pass = |ms| FareInput {
        active_pass: Some(&pass),
        ..ride(ms)
    };
    let f = fare(&plan, &with_pass(120 * MIN));
    assert_eq!(kinds(&f), ["unlock", "time", "pass_discount"]);
    assert_eq!(f.lines[2].amount, -(100 + 8 * 150));
    assert_eq!(f.total, 0);
    assert_consistent(&f);

    // One millisecond past the pass's free time starts a new period on the shifted grid.
    let f = fare(&plan, &with_pass(120 * MIN + 1));
    assert_eq!(f.total, 150);
    assert_consistent(&f);
    let f = fare(&plan, &with_pass(135 * MIN + 1));
    assert_eq!(f.total, 300);

    // The pass's free minutes and the plan's do not add up: the larger applies.
    let generous = PricingPlan {
        free_minutes: 150,
        ..plan.clone()
    };
    let f = fare(&generous, &with_pass(150 * MIN));
    assert_eq!(f.total, 0);
    let f = fare(&generous, &with_pass(150 * MIN + 1));
    assert_eq!(f.total, 150);

    // A pass without free minutes still waives the unlock fee.
    let unlock_only = PassProduct {
        free_minutes_per_ride: 0,
        ..pass.clone()
    };
    let f = fare(
        &plan,
        &FareInput {
            active_pass: Some(&unlock_only),
            ..ride(10 * MIN)
        },
    );
    assert_eq!(f.total, 150);

    // Pass then cap then dispatch.
    let f = fare(
        &plan,
        &FareInput {
            already_charged_today: 1950,
            out_of_fence: true,
            ..with_pass(180 * MIN)
        },
    );
    assert_eq!(
        kinds(&f),
        [
            "unlock",
            "time",
            "pass_discount",
            "cap_discount",
            "dispatch_fee"
        ]
    );
    assert_eq!(f.ride_charge(), 50);
    assert_eq!(f.total, 550);
    assert_consistent(&f);
}

#[test]
fn hostile_inputs_never_panic() {
    let plan = standard();
    let broken = PricingPlan {
        period_minutes: 0,
        period_price: MAX_PRICE,
        daily_cap: None,
        unlock_fee: -5,
        dispatch_fee: -5,
        ..standard()
    };
    for p in [&plan, &broken] {
        for ms in [i64::MIN, -1, 0, i64::MAX] {
            for already in [i64::MIN, -1, 0, i64::MAX] {
                let f = fare(
                    p,
                    &FareInput {
                        duration_ms: ms,
                        out_of_fence: true,
                        already_charged_today: already,
                        active_pass: Some(&monthly()),
                    },
                );
                assert!(f.total >= 0);
            }
        }
    }
    assert_eq!(fare(&plan, &ride(-10)).total, 0);
    assert!(fare(&broken, &ride(i64::MAX)).total > 0);
}

#[test]
fn fare_is_consistent_everywhere() {
    let plan = PricingPlan {
        unlock_fee: 100,
        free_minutes: 3,
        ..standard()
    };
    let pass = monthly();
    for ms in (0..400 * MIN).step_by(7 * MIN as usize + 13) {
        for already in [0, 700, 1999, 2000] {
            for out in [false, true] {
                for p in [None, Some(&pass)] {
                    let f = fare(
                        &plan,
                        &FareInput {
                            duration_ms: ms,
                            out_of_fence: out,
                            already_charged_today: already,
                            active_pass: p,
                        },
                    );
                    assert_consistent(&f);
                    assert!(f.ride_charge() <= 2000 - already);
                }
            }
        }
    }
}

#[test]
fn validation_refuses_nonsense() {
    let check = |p: PricingPlan, code: &str, field: &str| {
        let e = p.validate().unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        if let Error::InvalidPlan { field: f, .. } = &e {
            assert_eq!(*f, field);
        }
    };
    let p = standard;
    check(
        PricingPlan {
            id: "".into(),
            ..p()
        },
        "invalid_pricing_plan",
        "id",
    );
    check(
        PricingPlan {
            id: "a b".into(),
            ..p()
        },
        "invalid_pricing_plan",
        "id",
    );
    check(
        PricingPlan {
            name: " ".into(),
            ..p()
        },
        "invalid_pricing_plan",
        "name",
    );
    check(
        PricingPlan {
            description: "a\u{7}".into(),
            ..p()
        },
        "invalid_pricing_plan",
        "description",
    );
    check(
        PricingPlan {
            currency: "XXX".into(),
            ..p()
        },
        "unsupported_currency",
        "",
    );
    check(
        PricingPlan {
            unlock_fee: -1,
            ..p()
        },
        "invalid_pricing_plan",
        "unlock_fee",
    );
    check(
        PricingPlan {
            period_price: MAX_PRICE + 1,
            ..p()
        },
        "invalid_pricing_plan",
        "period_price",
    );
    check(
        PricingPlan {
            dispatch_fee: -1,
            ..p()
        },
        "invalid_pricing_plan",
        "dispatch_fee",
    );
    check(
        PricingPlan {
            period_minutes: 0,
            ..p()
        },
        "invalid_pricing_plan",
        "period_minutes",
    );
    check(
        PricingPlan {
            period_minutes: MAX_MINUTES + 1,
            ..p()
        },
        "invalid_pricing_plan",
        "period_minutes",
    );
    check(
        PricingPlan {
            free_minutes: MAX_MINUTES + 1,
            ..p()
        },
        "invalid_pricing_plan",
        "free_minutes",
    );
    check(
        PricingPlan {
            daily_cap: Some(0),
            ..p()
        },
        "invalid_pricing_plan",
        "daily_cap",
    );
    check(
        PricingPlan {
            daily_cap: Some(MAX_PRICE + 1),
            ..p()
        },
        "invalid_pricing_plan",
        "daily_cap",
    );
    assert!(
        PricingPlan {
            daily_cap: None,
            ..p()
        }
        .validate()
        .is_ok()
    );

    let pass = monthly;
    for bad in [
        PassProduct { price: 0, ..pass() },
        PassProduct {
            price: -1,
            ..pass()
        },
        PassProduct {
            duration_days: 0,
            ..pass()
        },
        PassProduct {
            duration_days: MAX_PASS_DAYS + 1,
            ..pass()
        },
        PassProduct {
            free_minutes_per_ride: MAX_MINUTES + 1,
            ..pass()
        },
        PassProduct {
            id: "x/y".into(),
            ..pass()
        },
    ] {
        assert_eq!(bad.validate().unwrap_err().code(), "invalid_pass_product");
    }
    assert_eq!(pass().duration_ms(), 30 * 24 * 60 * MIN);
}

#[test]
fn serde_round_trip_and_strictness() {
    let plan = standard();
    let text = serde_json::to_string(&plan).unwrap();
    assert_eq!(serde_json::from_str::<PricingPlan>(&text).unwrap(), plan);
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["surprise"] = json!(1);
    assert!(serde_json::from_value::<PricingPlan>(v).is_err());
    let minimal = json!({"id": "p", "name": "P", "currency": "CNY", "unlock_fee": 0,
        "period_minutes": 30, "period_price": 100, "description": "d"});
    let p: PricingPlan = serde_json::from_value(minimal).unwrap();
    assert_eq!((p.free_minutes, p.daily_cap, p.dispatch_fee), (0, None, 0));
    let f = fare(&plan, &ride(MIN));
    let fv = serde_json::to_value(&f).unwrap();
    assert_eq!(fv["lines"][0]["kind"], "time");
}

#[test]
fn money_formatting_and_local_day() {
    assert_eq!(format_amount(150, "CNY"), "1.50 CNY");
    assert_eq!(format_amount(-5, "CNY"), "-0.05 CNY");
    assert_eq!(format_amount(i64::MIN, "CNY"), "-92233720368547758.08 CNY");
    assert_eq!(format_amount(300, "JPY"), "300 JPY");
    assert_eq!(major_units(150, "CNY"), json!(1.5));
    assert_eq!(major_units(10, "CNY"), json!(0.1));
    assert_eq!(major_units(300, "JPY"), json!(300));
    // 2026-01-01T15:59:59.999Z is 23:59:59.999 in Beijing; a millisecond later is the next day.
    let t = 1_767_283_199_999;
    assert_eq!(local_day(t, 480) + 1, local_day(t + 1, 480));
    assert_eq!(local_day(t, 0), local_day(t + 1, 0));
    assert_eq!(local_day(-1, 0), -1);
    assert_eq!(local_day(i64::MAX, 480), i64::MAX / 86_400_000);
}

#[test]
fn gbfs_entry_shape() {
    let plan = PricingPlan {
        free_minutes: 5,
        unlock_fee: 100,
        ..standard()
    };
    let v = to_gbfs(&plan, "zh-CN").unwrap();
    assert_eq!(v["plan_id"], "standard");
    assert_eq!(
        v["name"],
        json!([{"text": "标准计费", "language": "zh-CN"}])
    );
    assert_eq!(v["currency"], "CNY");
    assert_eq!(v["price"], json!(1.0));
    assert_eq!(v["is_taxable"], false);
    assert_eq!(v["surge_pricing"], false);
    assert_eq!(
        v["per_min_pricing"],
        json!([{"start": 5, "rate": 1.5, "interval": 15}])
    );
    let free = PricingPlan {
        period_price: 0,
        ..standard()
    };
    assert!(
        to_gbfs(&free, "en")
            .unwrap()
            .get("per_min_pricing")
            .is_none()
    );
    for bad in ["", "zh-Hans", "ZH", "zh_CN", "zhxx", "zh-cn", "en-USA"] {
        assert_eq!(
            to_gbfs(&plan, bad).unwrap_err().code(),
            "invalid_language",
            "{bad}"
        );
    }
    let broken = PricingPlan {
        period_minutes: 0,
        ..standard()
    };
    assert_eq!(
        to_gbfs(&broken, "en").unwrap_err().code(),
        "invalid_pricing_plan"
    );
}

/// Validates a whole `system_pricing_plans.json` built from the defaults against the
/// official GBFS 3.0 JSON schema with python's `jsonschema`. Skipped (with a note) when the
/// schema or `jsonschema` is not available; the schema directory can be set with
/// `GBFS_SCHEMA_DIR`.
#[test]
fn gbfs_output_matches_official_schema() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let dir = std::env::var("GBFS_SCHEMA_DIR")
        .unwrap_or_else(|_| "/work/shared/data/gbfs/v3.0".to_owned());
    let schema = std::path::Path::new(&dir).join("system_pricing_plans.json");
    if !schema.exists() {
        eprintln!("skipped: no GBFS schema at {}", schema.display());
        return;
    }
    let probe = Command::new("python3")
        .args(["-c", "import jsonschema"])
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!("skipped: python3 with jsonschema not available");
        return;
    }
    let mut plans: Vec<Value> = default_plans()
        .0
        .iter()
        .map(|p| to_gbfs(p, "zh-CN").unwrap())
        .collect();
    plans.push(
        to_gbfs(
            &PricingPlan {
                id: "with-unlock".into(),
                unlock_fee: 100,
                free_minutes: 10,
                ..standard()
            },
            "en",
        )
        .unwrap(),
    );
    let feed = json!({
        "last_updated": "2026-01-01T00:00:00+08:00",
        "ttl": 60,
        "version": "3.0",
        "data": {"plans": plans},
    });
    let script = "import json, sys, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  doc = json.load(sys.stdin)\n\
                  jsonschema.validate(doc, schema, format_checker=jsonschema.FormatChecker())\n";
    let mut child = Command::new("python3")
        .args(["-c", script, &schema.to_string_lossy()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(feed.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "schema validation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
