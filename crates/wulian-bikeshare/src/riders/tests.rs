use super::*;

/// 2026-01-01T00:00:00+08:00.
const NOW: i64 = 1_767_196_800_000;
const PEPPER: &[u8] = b"installation-pepper-0123456789";

fn db() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn
}

/// A valid identity number for a region, birth date `YYYYMMDD` and sequence, with the check
/// character computed independently of `id_check_char`.
fn make_id(region: &str, birth: &str, seq: &str) -> String {
    let first17 = format!("{region}{birth}{seq}");
    assert_eq!(first17.len(), 17);
    let weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .chars()
        .zip(weights)
        .map(|(c, w)| c.to_digit(10).unwrap() * w)
        .sum();
    // ISO 7064 MOD 11-2 with the weights 2^(17-i) mod 11: (sum + c) ≡ 1 (mod 11).
    let check = (0..11).find(|c| (sum + c) % 11 == 1).unwrap();
    let ch = if check == 10 {
        'X'
    } else {
        char::from_digit(check, 10).unwrap()
    };
    format!("{first17}{ch}")
}

fn form(phone: &str, id_number: &str) -> SignUp {
    SignUp {
        phone: phone.into(),
        name: "小王".into(),
        real_name: "王小明".into(),
        id_number: id_number.into(),
        location_consent: true,
    }
}

fn adult() -> String {
    make_id("110105", "19900307", "123")
}

#[test]
fn schema_is_idempotent() {
    let conn = db();
    conn.execute_batch(SCHEMA).unwrap();
}

#[test]
fn phone_numbers_normalise_to_e164() {
    for ok in [
        "+8613800138000",
        "13800138000",
        "0086 138-0013-8000",
        "+86 199 1234 5678",
    ] {
        let n = normalize_phone(ok).unwrap();
        assert!(n.starts_with("+861") && n.len() == 14, "{ok} -> {n}");
    }
    for bad in [
        "",
        "+86",
        "1380013800",
        "138001380001",
        "+8612800138000",
        "+8603800138000",
        "+8513800138000",
        "+86138001380a0",
        "138 0013 800０",
        "+1 415 555 0100",
    ] {
        assert_eq!(
            normalize_phone(bad).unwrap_err().code(),
            "invalid_phone",
            "{bad}"
        );
    }
}

#[test]
fn identity_numbers_are_checked() {
    // The sample number of the national standard GB 11643-1999.
    let sample = parse_id_number("11010519491231002X").unwrap();
    assert_eq!(sample.birth_date.to_string(), "1949-12-31");
    // A lowercase x is accepted and normalised.
    assert_eq!(
        parse_id_number(" 11010519491231002x ").unwrap().number,
        "11010519491231002X"
    );
    assert_eq!(id_check_char(b"11010519491231002"), 'X');

    for (region, birth, seq) in [
        ("440305", "20000229", "001"),
        ("650102", "19000101", "999"),
        ("820000", "19851231", "456"),
        ("310115", "20131231", "010"),
    ] {
        let n = make_id(region, birth, seq);
        let id = parse_id_number(&n).unwrap();
        assert_eq!(id.number, n);
        assert_eq!(id.birth_date.to_string().replace('-', ""), birth);
    }

    let valid = adult();
    let mut wrong_check = valid.clone();
    let last = wrong_check.pop().unwrap();
    wrong_check.push(if last == '0' { '1' } else { '0' });
    let mut swapped: Vec<char> = valid.chars().collect();
    swapped.swap(14, 15);
    let swapped: String = swapped.into_iter().collect();
    for bad in [
        "".to_owned(),
        valid[..17].to_owned(),
        format!("{valid}1"),
        wrong_check,
        swapped,
        valid.replace('X', "Y").replacen('1', "A", 1),
        format!("{}Y", &valid[..17]),
        make_id("990105", "19900307", "123"), // no such province
        make_id("110105", "19900230", "123"), // 30 February
        make_id("110105", "19000229", "123"), // 1900 was not a leap year
        make_id("110105", "19901301", "123"),
        make_id("110105", "19900100", "123"),
        make_id("110105", "18991231", "123"),
    ] {
        assert_eq!(
            parse_id_number(&bad).unwrap_err().code(),
            "invalid_id_number",
            "{bad}"
        );
    }
    // Non-ASCII input of the right byte length does not panic.
    assert!(parse_id_number("一二三四五六").is_err());
}

#[test]
fn age_is_counted_on_beijing_calendar_days() {
    let birth = CivilDate::new(2014, 1, 1).unwrap();
    // 2026-01-01 00:00 in Beijing is still 31 December in UTC: the rider is 12 already.
    assert_eq!(check_age(birth, NOW).unwrap(), 12);
    let e = check_age(birth, NOW - 1).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnderAge {
                min_age: 12,
                age: 11
            }
        ),
        "{e}"
    );
    assert_eq!(e.code(), "under_age");

    let leap = CivilDate::new(2012, 2, 29).unwrap();
    assert_eq!(leap.years_until(CivilDate::new(2024, 2, 28).unwrap()), 11);
    assert_eq!(leap.years_until(CivilDate::new(2024, 2, 29).unwrap()), 12);
    assert_eq!(leap.years_until(CivilDate::new(2025, 2, 28).unwrap()), 12);
    assert_eq!(leap.years_until(CivilDate::new(2023, 3, 1).unwrap()), 11);

    let tomorrow = CivilDate::new(2026, 1, 2).unwrap();
    assert_eq!(
        check_age(tomorrow, NOW).unwrap_err().code(),
        "implausible_birth_date"
    );
    let ancient = CivilDate::new(1905, 1, 1).unwrap();
    assert_eq!(
        check_age(ancient, NOW).unwrap_err().code(),
        "implausible_birth_date"
    );
    assert_eq!(
        check_age(CivilDate::new(1905, 1, 2).unwrap(), NOW).unwrap(),
        120
    );

    assert_eq!(
        CivilDate::china_today(0),
        CivilDate::new(1970, 1, 1).unwrap()
    );
    assert_eq!(
        CivilDate::china_today(NOW),
        CivilDate::new(2026, 1, 1).unwrap()
    );
    assert_eq!(
        CivilDate::china_today(NOW - 1),
        CivilDate::new(2025, 12, 31).unwrap()
    );
    assert_eq!(
        CivilDate::china_today(951_753_600_000), // 2000-02-29T00:00+08:00
        CivilDate::new(2000, 2, 29).unwrap()
    );
    assert_eq!(
        CivilDate::china_today(951_753_600_000 - 1),
        CivilDate::new(2000, 2, 28).unwrap()
    );
    // Extreme clocks do not panic.
    CivilDate::china_today(i64::MIN);
    CivilDate::china_today(i64::MAX);
    assert!(CivilDate::new(2023, 2, 29).is_none());
    assert!(CivilDate::new(2024, 0, 1).is_none());
}

#[test]
fn sign_up_and_authenticate() {
    let conn = db();
    let (rider, token) = sign_up(&conn, &form("138 0013 8000", &adult()), PEPPER, NOW).unwrap();
    assert!(rider.id.starts_with("r-") && rider.id.len() == 26);
    assert_eq!(rider.phone.as_deref(), Some("+8613800138000"));
    assert_eq!(rider.masked_phone().as_deref(), Some("+86 138****8000"));
    assert_eq!(rider.birth_date.as_deref(), Some("1990-03-07"));
    assert_eq!(rider.id_number_last4.as_deref(), Some(&adult()[14..]));
    assert_eq!(
        (rider.location_consent, rider.consent_at),
        (true, Some(NOW))
    );
    assert_eq!(rider.status, RiderStatus::Active);
    assert!(rider.can_ride());
    assert!(token.starts_with(TOKEN_PREFIX) && token.len() == 68);

    assert_eq!(authenticate(&conn, &token).unwrap(), Some(rider.clone()));
    assert_eq!(get(&conn, &rider.id).unwrap(), Some(rider.clone()));
    assert_eq!(
        get_by_phone(&conn, "13800138000").unwrap(),
        Some(rider.clone())
    );
    assert_eq!(get(&conn, "r-nobody").unwrap(), None);
    for bad in [
        "",
        "wbr_",
        "Bearer x",
        &token[..67],
        &format!("{token}0"),
        &token.replace("wbr_", "xyz_"),
    ] {
        assert_eq!(authenticate(&conn, bad).unwrap(), None, "{bad}");
    }

    // Neither the token nor the identity number is stored in the clear.
    let (hash, tok): (String, String) = conn
        .query_row("SELECT id_number_hash, token_hash FROM riders", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let dump: String = conn
        .query_row(
            "SELECT group_concat(quote(riders.*), '') FROM riders",
            [],
            |r| r.get(0),
        )
        .unwrap_or_default();
    assert!(!dump.contains(&adult()) && !dump.contains(&token[4..]));
    assert_eq!(hash, id_number_hash(PEPPER, &adult()));
    assert_ne!(hash, id_number_hash(b"another-pepper-0123456789", &adult()));
    assert_eq!(tok, token_hash(&token));
}

#[test]
fn sign_up_refusals() {
    let conn = db();
    sign_up(&conn, &form("13800138000", &adult()), PEPPER, NOW).unwrap();
    let other_id = make_id("310115", "19851231", "456");
    let cases = [
        (form("+86 138 0013 8000", &other_id), "phone_taken"),
        (form("13900139000", &adult()), "id_number_registered"),
        (
            form("13900139000", &adult().to_lowercase()),
            "id_number_registered",
        ),
        (form("12345", &other_id), "invalid_phone"),
        (
            form("13900139000", "110105199003071234"),
            "invalid_id_number",
        ),
        (
            form("13900139000", &make_id("110105", "20140102", "001")),
            "under_age",
        ),
        (
            form("13900139000", &make_id("110105", "20260102", "001")),
            "implausible_birth_date",
        ),
        (
            SignUp {
                name: " ".into(),
                ..form("13900139000", &other_id)
            },
            "invalid_name",
        ),
        (
            SignUp {
                name: "a\u{0}".into(),
                ..form("13900139000", &other_id)
            },
            "invalid_name",
        ),
        (
            SignUp {
                name: "x".repeat(33),
                ..form("13900139000", &other_id)
            },
            "invalid_name",
        ),
        (
            SignUp {
                real_name: "王1".into(),
                ..form("13900139000", &other_id)
            },
            "invalid_name",
        ),
        (
            SignUp {
                real_name: "".into(),
                ..form("13900139000", &other_id)
            },
            "invalid_name",
        ),
    ];
    for (f, code) in cases {
        let e = sign_up(&conn, &f, PEPPER, NOW).unwrap_err();
        assert_eq!(e.code(), code, "{f:?}: {e}");
    }
    assert_eq!(
        sign_up(&conn, &form("13900139000", &other_id), b"short", NOW)
            .unwrap_err()
            .code(),
        "weak_pepper"
    );
    let minority = SignUp {
        real_name: "阿依古丽·买买提".into(),
        location_consent: false,
        ..form("13900139000", &other_id)
    };
    let (r, _) = sign_up(&conn, &minority, PEPPER, NOW).unwrap();
    assert_eq!((r.location_consent, r.consent_at), (false, Some(NOW)));
    assert_eq!(list(&conn, 10, None).unwrap().len(), 2);
}

#[test]
fn tokens_rotate_and_revoke() {
    let conn = db();
    let (rider, t1) = sign_up(&conn, &form("13800138000", &adult()), PEPPER, NOW).unwrap();
    let t2 = rotate_token(&conn, &rider.id, NOW + 1).unwrap();
    assert_ne!(t1, t2);
    assert_eq!(authenticate(&conn, &t1).unwrap(), None);
    assert_eq!(authenticate(&conn, &t2).unwrap().unwrap().id, rider.id);
    revoke_token(&conn, &rider.id, NOW + 2).unwrap();
    assert_eq!(authenticate(&conn, &t2).unwrap(), None);
    assert_eq!(
        rotate_token(&conn, "r-x", NOW).unwrap_err().code(),
        "rider_not_found"
    );
}

#[test]
fn consent_and_status() {
    let conn = db();
    let (rider, token) = sign_up(&conn, &form("13800138000", &adult()), PEPPER, NOW).unwrap();
    let same = set_location_consent(&conn, &rider.id, true, NOW + 5).unwrap();
    assert_eq!(
        same.consent_at,
        Some(NOW),
        "repeating a decision keeps its time"
    );
    let withdrawn = set_location_consent(&conn, &rider.id, false, NOW + 6).unwrap();
    assert_eq!(
        (withdrawn.location_consent, withdrawn.consent_at),
        (false, Some(NOW + 6))
    );

    let suspended = set_status(&conn, &rider.id, RiderStatus::Suspended, NOW + 7).unwrap();
    assert!(!suspended.can_ride());
    assert_eq!(
        authenticate(&conn, &token).unwrap().unwrap().status,
        RiderStatus::Suspended
    );
    assert!(
        set_status(&conn, &rider.id, RiderStatus::Active, NOW + 8)
            .unwrap()
            .can_ride()
    );
    assert_eq!(
        set_status(&conn, &rider.id, RiderStatus::Erased, NOW)
            .unwrap_err()
            .code(),
        "invalid_status"
    );
}

#[test]
fn list_pages_by_id() {
    let conn = db();
    let mut ids = Vec::new();
    for i in 0..7 {
        let phone = format!("1380013800{i}");
        let id = make_id("110105", "19900307", &format!("{:03}", 100 + i));
        ids.push(
            sign_up(&conn, &form(&phone, &id), PEPPER, NOW)
                .unwrap()
                .0
                .id,
        );
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = list(&conn, 3, after.as_deref()).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.id.clone());
        seen.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(seen, ids);
    assert!(list(&conn, 0, None).unwrap().is_empty());
    assert_eq!(list(&conn, u32::MAX, None).unwrap().len(), 7);
}

#[test]
fn export_and_erase() {
    let conn = db();
    let (rider, token) = sign_up(&conn, &form("13800138000", &adult()), PEPPER, NOW).unwrap();
    let v = export(&conn, &rider.id).unwrap();
    assert_eq!(v["phone"], "+8613800138000");
    assert_eq!(v["real_name"], "王小明");
    assert_eq!(v["birth_date"], "1990-03-07");
    assert_eq!(v["id_number_hash"], id_number_hash(PEPPER, &adult()));
    assert_eq!(v["has_active_token"], true);
    assert_eq!(v["status"], "active");
    assert!(!v.to_string().contains(&token[4..]));
    assert_eq!(export(&conn, "r-x").unwrap_err().code(), "rider_not_found");

    let erased = erase(&conn, &rider.id, NOW + 9).unwrap();
    assert_eq!(erased.status, RiderStatus::Erased);
    assert_eq!(erased.erased_at, Some(NOW + 9));
    assert_eq!(
        (
            &erased.phone,
            &erased.display_name,
            &erased.real_name,
            &erased.birth_date
        ),
        (&None, &None, &None, &None)
    );
    assert_eq!(erased.id_number_last4, None);
    assert!(!erased.location_consent);
    assert_eq!(
        erase(&conn, &rider.id, NOW + 10).unwrap(),
        erased,
        "erasing twice is a no-op"
    );
    assert_eq!(authenticate(&conn, &token).unwrap(), None);
    let v = export(&conn, &rider.id).unwrap();
    assert_eq!(
        (v["id_number_hash"].clone(), v["has_active_token"].clone()),
        (Value::Null, json!(false))
    );
    for e in [
        rotate_token(&conn, &rider.id, NOW).unwrap_err(),
        set_location_consent(&conn, &rider.id, true, NOW).unwrap_err(),
        set_status(&conn, &rider.id, RiderStatus::Active, NOW).unwrap_err(),
    ] {
        assert_eq!(e.code(), "rider_erased");
    }
    // The person may register again with the same phone and identity.
    let (again, _) = sign_up(&conn, &form("13800138000", &adult()), PEPPER, NOW + 11).unwrap();
    assert_ne!(again.id, rider.id);
    // The table refuses an erased row that still holds personal data.
    let e = conn
        .execute(
            "UPDATE riders SET phone = '+8613700137000' WHERE id = ?1",
            [&rider.id],
        )
        .unwrap_err();
    assert!(e.to_string().contains("CHECK"), "{e}");
}
