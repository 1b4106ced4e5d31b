use super::*;

const SF: (f64, f64) = (37.775_938_728_915_946, -122.417_950_630_187_99);

#[test]
fn cells_match_h3() {
    // The H3 reference example (h3-js README).
    assert_eq!(
        cell(37.361_559_3, -122.055_323_8, 7).unwrap(),
        "87283472bffffff"
    );
    let c = cell(SF.0, SF.1, DEFAULT_RESOLUTION).unwrap();
    assert_eq!(c.len(), 15);
    assert!(
        c.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(cell_resolution(&c).unwrap(), 9);
    // The centre is in the cell and near the point; the outline surrounds it.
    let (lat, lon) = cell_center(&c).unwrap();
    assert_eq!(cell(lat, lon, 9).unwrap(), c);
    assert!(distance_m(lat, lon, SF.0, SF.1) < 400.0);
    let outline = cell_boundary(&c).unwrap();
    assert_eq!(outline.len(), 6);
    for &(vlat, vlon) in &outline {
        let d = distance_m(lat, lon, vlat, vlon);
        assert!(
            (100.0..300.0).contains(&d),
            "resolution 9 vertex {d} m from centre"
        );
    }
    assert_eq!(canonical_cell(&c.to_uppercase()).unwrap(), c);
    assert_eq!(cell_center(&c.to_uppercase()).unwrap(), (lat, lon));
}

#[test]
fn bad_input_is_an_error() {
    for (lat, lon) in [
        (f64::NAN, 0.0),
        (0.0, f64::INFINITY),
        (90.5, 0.0),
        (0.0, -181.0),
    ] {
        assert!(matches!(
            cell(lat, lon, 9),
            Err(CellError::InvalidPosition { .. })
        ));
    }
    assert_eq!(cell(0.0, 0.0, 16), Err(CellError::InvalidResolution(16)));
    assert!(cell(90.0, 180.0, 15).is_ok());
    assert!(cell(-90.0, -180.0, 0).is_ok());
    for bad in [
        "",
        "+8928308280fffff",
        "nope",
        "8928308280fffffff0",
        "0",
        "ffffffffffffffff",
    ] {
        assert!(
            matches!(cell_center(bad), Err(CellError::InvalidCell(_))),
            "{bad}"
        );
        assert!(cell_boundary(bad).is_err());
    }
    let long = "x".repeat(1000);
    let CellError::InvalidCell(shown) = cell_center(&long).unwrap_err() else {
        panic!("wrong error");
    };
    assert_eq!(shown.len(), 32);
}

#[test]
fn supply_demand_rows() {
    let (a, b) = ("8928308280fffff", "8928308283bffff");
    let h = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS;
    let mut sd = SupplyDemand::new();
    assert!(sd.is_empty());
    sd.add_supply(b, h + 5 * 60_000, 4);
    sd.add_supply(b, h + 35 * 60_000, 0);
    sd.add_supply(a, h, 3);
    sd.add_demand(a, h + 59 * 60_000, 2);
    sd.add_demand(a, h + 10, 1);
    sd.add_demand(b, h + HOUR_MS, 7);
    let rows = sd.rows();
    assert_eq!(sd.len(), 3);
    let brief: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.cell.as_str(),
                r.hour_start_ms - h,
                r.supply,
                r.supply_samples,
                r.demand,
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            (a, 0, 3.0, 1, 3),
            (b, 0, 2.0, 2, 0),
            (b, HOUR_MS, 0.0, 0, 7)
        ]
    );
    assert_eq!(sd.rows_between(h + 1, i64::MAX).len(), 1);
    assert!(sd.rows_between(h, h).is_empty());
    sd.prune_before(h + HOUR_MS);
    assert_eq!(sd.len(), 1);
    assert_eq!(hour_start(-1), -HOUR_MS);
    assert_eq!(hour_start(i64::MIN), i64::MIN);
    let mut extreme = SupplyDemand::new();
    extreme.add_demand(a, i64::MIN, u32::MAX);
    extreme.add_demand(a, i64::MAX, u32::MAX);
    assert_eq!(extreme.rows().len(), 2);
}

#[test]
fn expected_demand_averages_days() {
    let (a, b) = ("8928308280fffff", "8928308283bffff");
    let day0 = 19_000 * DAY_MS;
    let mut sd = SupplyDemand::new();
    // 08:00 UTC on three days: a has 4, 0 and 2 trips; b only 3 on the last day.
    sd.add_demand(a, day0 + 8 * HOUR_MS, 4);
    sd.add_supply(a, DAY_MS + day0 + 8 * HOUR_MS, 5);
    sd.add_demand(a, 2 * DAY_MS + day0 + 8 * HOUR_MS, 2);
    sd.add_demand(b, 2 * DAY_MS + day0 + 8 * HOUR_MS, 3);
    sd.add_demand(a, day0 + 9 * HOUR_MS, 100);
    let e = sd.expected_demand(8, 0);
    assert_eq!(e.len(), 2);
    assert_eq!(e[a], 2.0);
    assert_eq!(e[b], 1.0);
    // 08:00 UTC is 16:00 at UTC+8.
    assert_eq!(sd.expected_demand(16, 480), e);
    assert!(sd.expected_demand(24, 0).is_empty());
    assert!(SupplyDemand::new().expected_demand(8, 0).is_empty());
}

/// `n` resolution-9 cells in a row eastwards, each about 400 m east of the previous
/// one's centre (farther than a cell's radius, so every step is a new cell).
fn row_of_cells(n: usize) -> Vec<String> {
    let mut out = vec![cell(SF.0, SF.1, 9).unwrap()];
    while out.len() < n {
        let (lat, lon) = cell_center(out.last().unwrap()).unwrap();
        out.push(cell(lat, lon + 0.0045, 9).unwrap());
    }
    out
}

fn check_bounds(supply: &HashMap<String, u32>, demand: &HashMap<String, f64>, moves: &[Move]) {
    let mut given: HashMap<&str, u32> = HashMap::new();
    let mut got: HashMap<&str, u32> = HashMap::new();
    for m in moves {
        assert!(m.bikes > 0);
        *given.entry(&m.from_cell).or_default() += m.bikes;
        *got.entry(&m.to_cell).or_default() += m.bikes;
    }
    for (cell, &n) in &given {
        assert!(!got.contains_key(cell), "{cell} both gives and receives");
        let need = demand.get(*cell).map_or(0, |d| d.round() as u32);
        let have = supply.get(*cell).copied().unwrap_or(0);
        assert!(
            n <= have - need - SURPLUS_BUFFER,
            "{cell} gave {n} of {have}"
        );
    }
    for (cell, &n) in &got {
        let need = demand.get(*cell).map_or(0, |d| d.round() as u32);
        let have = supply.get(*cell).copied().unwrap_or(0);
        assert!(have + n <= need, "{cell} got {n}, has {have}, needs {need}");
    }
}

#[test]
fn rebalancing_is_nearest_first_and_bounded() {
    let c = row_of_cells(8);
    let supply: HashMap<String, u32> = [(&c[0], 10), (&c[3], 2), (&c[7], 6)]
        .map(|(k, v)| (k.clone(), v))
        .into();
    let demand: HashMap<String, f64> = [
        (&c[0], 2.4),
        (&c[1], 3.0),
        (&c[2], 1.6),
        (&c[3], 1.2),
        (&c[4], 9.0),
    ]
    .map(|(k, v)| (k.clone(), v))
    .into();
    // Donors: c0 has 10 - 2 - 1 = 7 spare, c7 has 6 - 0 - 1 = 5; c3 keeps its 2 (need 1,
    // buffer 1). Receivers: c1 needs 3, c2 needs 2, c4 needs 9. Pairs by distance in steps:
    // c0-c1 1, c0-c2 2, c7-c4 3, c0-c4 4, c7-c2 5, c7-c1 6.
    let moves = suggest_rebalancing(&supply, &demand, 100);
    check_bounds(&supply, &demand, &moves);
    let brief: Vec<_> = moves
        .iter()
        .map(|m| (m.from_cell.as_str(), m.to_cell.as_str(), m.bikes))
        .collect();
    assert_eq!(
        brief,
        [
            (c[0].as_str(), c[1].as_str(), 3),
            (c[0].as_str(), c[2].as_str(), 2),
            (c[7].as_str(), c[4].as_str(), 5),
            (c[0].as_str(), c[4].as_str(), 2),
        ]
    );
    assert!(moves.windows(2).all(|w| w[0].distance_m <= w[1].distance_m));
    let total: u32 = moves.iter().map(|m| m.bikes).sum();
    assert_eq!(total, 12, "all 12 spare bikes placed; deficit was 14");
    assert_eq!(suggest_rebalancing(&supply, &demand, 2), moves[..2]);
    assert!(suggest_rebalancing(&supply, &demand, 0).is_empty());
}

#[test]
fn rebalancing_edge_inputs() {
    let empty = HashMap::new();
    assert!(suggest_rebalancing(&empty, &HashMap::new(), 10).is_empty());
    let c = row_of_cells(3);
    let supply: HashMap<String, u32> = [(c[0].to_uppercase(), 5), ("junk".into(), 50)].into();
    assert!(
        suggest_rebalancing(&supply, &HashMap::new(), 10).is_empty(),
        "no deficit"
    );
    let demand: HashMap<String, f64> = [
        (c[1].clone(), f64::NAN),
        (c[2].clone(), f64::INFINITY),
        ("junk2".into(), 5.0),
        (c[0].clone(), -3.0),
    ]
    .into();
    assert!(
        suggest_rebalancing(&supply, &demand, 10).is_empty(),
        "no sane deficit"
    );
    // Upper- and lowercase ids of one cell are merged; output ids are canonical.
    let demand: HashMap<String, f64> = [(c[1].to_uppercase(), 2.0)].into();
    let supply: HashMap<String, u32> = [(c[0].to_uppercase(), 3), (c[0].clone(), 3)].into();
    let moves = suggest_rebalancing(&supply, &demand, 10);
    assert_eq!(moves.len(), 1);
    assert_eq!(
        (moves[0].from_cell.as_str(), moves[0].to_cell.as_str()),
        (c[0].as_str(), c[1].as_str())
    );
    assert_eq!(moves[0].bikes, 2);
    let saturating: HashMap<String, u32> = [(c[0].clone(), u32::MAX)].into();
    let huge: HashMap<String, f64> = [(c[1].clone(), 1e300)].into();
    let moves = suggest_rebalancing(&saturating, &huge, 10);
    assert_eq!(moves[0].bikes, u32::MAX - 1);
}

/// The reference greedy: every pair sorted by (distance, donor, receiver).
fn all_pairs(
    supply: &HashMap<String, u32>,
    demand: &HashMap<String, f64>,
    max: usize,
) -> Vec<Move> {
    let mut ids: Vec<&String> = supply.keys().chain(demand.keys()).collect();
    ids.sort();
    ids.dedup();
    let mut donors = Vec::new();
    let mut receivers = Vec::new();
    for id in ids {
        let have = supply.get(id).copied().unwrap_or(0);
        let need = demand.get(id).map_or(0, |d| d.round() as u32);
        if have > need + SURPLUS_BUFFER {
            donors.push((id, have - need - SURPLUS_BUFFER));
        } else if need > have {
            receivers.push((id, need - have));
        }
    }
    let mut pairs = Vec::new();
    for (d, (did, _)) in donors.iter().enumerate() {
        for (r, (rid, _)) in receivers.iter().enumerate() {
            let (a, b) = (cell_center(did).unwrap(), cell_center(rid).unwrap());
            pairs.push((distance_m(a.0, a.1, b.0, b.1), d, r));
        }
    }
    pairs.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let mut moves = Vec::new();
    for (dist, d, r) in pairs {
        let bikes = donors[d].1.min(receivers[r].1);
        if bikes == 0 || moves.len() == max {
            continue;
        }
        donors[d].1 -= bikes;
        receivers[r].1 -= bikes;
        moves.push(Move {
            from_cell: donors[d].0.clone(),
            to_cell: receivers[r].0.clone(),
            bikes,
            distance_m: dist,
        });
    }
    moves
}

#[test]
fn rebalancing_matches_the_all_pairs_greedy() {
    // Hundreds of cells, so donors exhaust their candidate lists and look again.
    let mut seed = 0x0BAD_5EEDu64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..4 {
        let mut supply = HashMap::new();
        let mut demand = HashMap::new();
        for _ in 0..400 {
            let lat = SF.0 + (next() % 1000) as f64 * 0.0001;
            let lon = SF.1 + (next() % 1000) as f64 * 0.0001;
            let c = cell(lat, lon, 9).unwrap();
            if next() % 3 == 0 {
                supply.insert(c, (next() % 12) as u32);
            } else {
                demand.insert(c, (next() % 60) as f64 / 10.0);
            }
        }
        let max = if round == 0 { 25 } else { usize::MAX };
        let moves = suggest_rebalancing(&supply, &demand, max);
        check_bounds(&supply, &demand, &moves);
        assert_eq!(moves, all_pairs(&supply, &demand, max), "round {round}");
        if round > 0 {
            let spare: u32 = supply
                .iter()
                .map(|(c, &n)| n.saturating_sub(demand.get(c).map_or(0, |d| d.round() as u32) + 1))
                .sum();
            let short: u32 = demand
                .iter()
                .map(|(c, d)| {
                    (d.round() as u32).saturating_sub(supply.get(c).copied().unwrap_or(0))
                })
                .sum();
            let moved: u32 = moves.iter().map(|m| m.bikes).sum();
            assert_eq!(moved, spare.min(short), "round {round}: conservation");
        }
    }
}
