//! VictoriaMetrics (single node) over HTTP: InfluxDB line protocol writes to `/write`,
//! MetricsQL queries to `/api/v1/query` and `/api/v1/query_range`.
//!
//! A line-protocol field becomes the series `<measurement>_<field>` with the line's tags as
//! labels. MetricsQL windows `[d]` evaluated at `t` cover `(t - d, t]`; the queries are
//! evaluated at `to - 1 ms` (or shifted with `offset 1ms`) so that, with integer milliseconds,
//! each window is exactly the `[from, to)` the other engines use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value as Json, json};

use crate::generate::READINGS;
use crate::lineproto;
use crate::measure::{Answer, dir_bytes, proc_status, tree_cpu_secs};
use crate::queries::{
    DRIVING, Engine, HIGH_LOAD, HOUR_MS, LONG_SESSION_BUCKETS, LOW_FUEL, Plan, Query, Repeat,
    STATIONARY, run_all,
};
use crate::{Scale, common, dataset};

pub struct Target<'a> {
    pub url: &'a str,
    pub pid: u32,
    pub data_dir: &'a PathBuf,
    pub settle_secs: u64,
}

/// `ms` as the seconds VictoriaMetrics' `time`, `start` and `end` parameters take.
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn get(agent: &ureq::Agent, url: &str, params: &[(&str, String)]) -> Result<Json> {
    let mut req = agent.get(url);
    for (k, v) in params {
        req = req.query(*k, v);
    }
    let mut resp = req.call().with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    if status != 200 {
        bail!("VictoriaMetrics answered {status} to {url} {params:?}: {text}");
    }
    let body: Json = serde_json::from_str(&text)?;
    if body["status"] != "success" {
        bail!("VictoriaMetrics query {params:?} failed: {text}");
    }
    Ok(body)
}

fn internal(agent: &ureq::Agent, url: &str, path: &str) -> Result<()> {
    let mut resp = agent
        .get(format!("{url}{path}"))
        .call()
        .with_context(|| format!("GET {path}"))?;
    if resp.status().as_u16() != 200 {
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        bail!(
            "VictoriaMetrics answered {} to {path}: {text}",
            resp.status()
        );
    }
    Ok(())
}

/// One series of an answer: its labels and its (non-NaN) values.
struct Series<'a> {
    labels: &'a Json,
    values: Vec<f64>,
}

fn parse_value(v: &Json) -> Option<f64> {
    v.as_array()
        .and_then(|p| p.get(1))
        .and_then(Json::as_str)
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| !v.is_nan())
}

fn series(body: &Json) -> Vec<Series<'_>> {
    body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Series {
            labels: &s["metric"],
            values: match s.get("values") {
                Some(vs) => vs
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(parse_value)
                    .collect(),
                None => parse_value(&s["value"]).into_iter().collect(),
            },
        })
        .collect()
}

impl Series<'_> {
    fn label(&self, k: &str) -> Result<&str> {
        self.labels[k]
            .as_str()
            .with_context(|| format!("VictoriaMetrics series without label {k}"))
    }
}

pub fn bench(scale: &Scale, t: &Target) -> Result<Json> {
    let d = dataset(scale);
    let plan = Plan::new(&d)?;
    let agent = lineproto::agent();
    let bodies = lineproto::bodies(&d);
    let cpu_before = tree_cpu_secs(t.pid)?;
    let ingest = lineproto::post_all(
        &agent,
        &format!("{}/write?precision=ms", t.url),
        bodies,
        scale.writers,
    )?;
    let cpu = tree_cpu_secs(t.pid)? - cpu_before;
    // Makes what is buffered in memory searchable and writes it out, then merges every
    // partition into as few parts as it can.
    internal(&agent, t.url, "/internal/force_flush")?;
    internal(&agent, t.url, "/internal/force_merge")?;
    let (settle, settled) = lineproto::settle(
        std::slice::from_ref(t.data_dir),
        Duration::from_secs(t.settle_secs),
    );
    let bytes = dir_bytes(t.data_dir);

    let mut engine = VmEngine {
        agent: agent.clone(),
        url: t.url.to_string(),
    };
    let queries = run_all(
        &mut engine,
        &plan,
        Repeat {
            runs: scale.query_runs,
            budget: scale.budget(),
        },
    )?;
    let count = get(
        &agent,
        &format!("{}/api/v1/query", t.url),
        &[
            (
                "query",
                format!(
                    "sum(count_over_time({{__name__=~\"(readings|diagnostics)_.*\"}}[{}ms]))",
                    plan.span.1 - plan.span.0
                ),
            ),
            ("time", secs(plan.span.1 - 1)),
        ],
    )?;
    let stored: f64 = series(&count).iter().flat_map(|s| s.values.iter()).sum();
    let peak = proc_status(&t.pid.to_string(), "VmHWM")?;

    let mut out = common(scale, &d);
    let o = out.as_object_mut().context("report is an object")?;
    o.insert("engine".into(), json!("VictoriaMetrics"));
    o.insert("ingest_secs".into(), json!(ingest.as_secs_f64()));
    o.insert(
        "values_per_sec".into(),
        json!(d.values as f64 / ingest.as_secs_f64()),
    );
    o.insert("cpu_secs".into(), json!(cpu));
    o.insert("values_per_cpu_sec".into(), json!(d.values as f64 / cpu));
    o.insert(
        "cpu_note".into(),
        json!("utime+stime of victoria-metrics during ingest"),
    );
    o.insert("settle_secs".into(), json!(settle.as_secs_f64()));
    o.insert("settled".into(), json!(settled));
    o.insert("bytes_on_disk".into(), json!(bytes));
    o.insert(
        "bytes_per_value".into(),
        json!(bytes as f64 / d.values as f64),
    );
    o.insert("points_stored".into(), json!(stored as u64));
    o.insert("peak_rss_bytes".into(), json!(peak));
    o.insert("rss_note".into(), json!("VmHWM of victoria-metrics"));
    crate::merge(o, queries)?;
    Ok(out)
}

struct VmEngine {
    agent: ureq::Agent,
    url: String,
}

/// How a query is sent: an instant query at a time, or a range query.
enum Call {
    Instant {
        query: String,
        time: i64,
    },
    Range {
        query: String,
        start: i64,
        end: i64,
        step_ms: i64,
    },
}

/// First and last evaluation times of epoch-aligned buckets of `step` over `[from, to)`,
/// each evaluated at its end minus 1 ms.
fn bucket_ends(from: i64, to: i64, step: i64) -> (i64, i64) {
    let first = from - from.rem_euclid(step) + step;
    let last = to - to.rem_euclid(step) + if to.rem_euclid(step) == 0 { 0 } else { step };
    (first - 1, last - 1)
}

impl VmEngine {
    fn call(&self, q: Query, plan: &Plan) -> Call {
        let fleet = &plan.fleet;
        let truck0 = &plan.trucks[0].name;
        let span = plan.span.1 - plan.span.0;
        let latest = |sel: &str| format!("last_over_time({sel}[{span}ms])");
        let at_end = plan.span.1 - 1;
        match q {
            Query::Raw1d => Call::Instant {
                // A range selector in an instant query returns the raw samples.
                query: format!(
                    "{{__name__=~\"readings_({})\",name=\"{truck0}\"}}[{}ms]",
                    READINGS.join("|"),
                    plan.day.1 - plan.day.0
                ),
                time: plan.day.1 - 1,
            },
            Query::HourlyAvgSpan => {
                let (start, end) = bucket_ends(plan.span.0, plan.span.1, HOUR_MS);
                Call::Range {
                    query: format!("avg_over_time(readings_velocity{{name=\"{truck0}\"}}[1h])"),
                    start,
                    end,
                    step_ms: HOUR_MS,
                }
            }
            Query::LatestAll => Call::Instant {
                query: latest("{__name__=~\"(readings|diagnostics)_.*\"}"),
                time: at_end,
            },
            Query::LastLoc => Call::Instant {
                query: latest(&format!(
                    "{{__name__=~\"readings_(latitude|longitude)\",fleet=\"{fleet}\"}}"
                )),
                time: at_end,
            },
            Query::LowFuel => Call::Instant {
                query: format!(
                    "{} <= {LOW_FUEL}",
                    latest(&format!("diagnostics_fuel_state{{fleet=\"{fleet}\"}}"))
                ),
                time: at_end,
            },
            Query::HighLoad => Call::Instant {
                query: Plan::load_capacities()
                    .iter()
                    .map(|cap| {
                        format!(
                            "({} >= {})",
                            latest(&format!(
                                "diagnostics_current_load{{fleet=\"{fleet}\",load_capacity=\"{cap}\"}}"
                            )),
                            HIGH_LOAD * f64::from(*cap)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" or "),
                time: at_end,
            },
            Query::StationaryTrucks => Call::Instant {
                query: format!(
                    "avg_over_time(readings_velocity{{fleet=\"{fleet}\"}}[{}ms]) < {STATIONARY}",
                    plan.last_10m.1 - plan.last_10m.0
                ),
                time: plan.last_10m.1 - 1,
            },
            Query::LongDrivingSessions => Call::Instant {
                // The subquery evaluates at multiples of 10m in (t - 4h, t]; `offset 1ms`
                // makes each evaluation at e cover [e - 10m, e).
                query: format!(
                    "count_over_time((avg_over_time(readings_velocity{{fleet=\"{fleet}\"}}[10m] offset 1ms) > {DRIVING})[{}ms:10m]) > {LONG_SESSION_BUCKETS}",
                    plan.last_4h.1 - plan.last_4h.0
                ),
                time: plan.last_4h.1,
            },
            Query::AvgLoad => Call::Instant {
                query: format!(
                    "sum by (fleet, model, load_capacity) (sum_over_time(diagnostics_current_load[{span}ms])) / sum by (fleet, model, load_capacity) (count_over_time(diagnostics_current_load[{span}ms]))"
                ),
                time: at_end,
            },
            Query::FleetHourlyVelocity => {
                let (start, end) = bucket_ends(plan.day.0, plan.day.1, HOUR_MS);
                Call::Range {
                    query: "sum(sum_over_time(readings_velocity[1h])) / sum(count_over_time(readings_velocity[1h]))".to_string(),
                    start,
                    end,
                    step_ms: HOUR_MS,
                }
            }
        }
    }
}

impl Engine for VmEngine {
    fn run(&mut self, q: Query, plan: &Plan) -> Result<Answer> {
        let body = match self.call(q, plan) {
            Call::Instant { query, time } => get(
                &self.agent,
                &format!("{}/api/v1/query", self.url),
                &[("query", query), ("time", secs(time))],
            )?,
            Call::Range {
                query,
                start,
                end,
                step_ms,
            } => get(
                &self.agent,
                &format!("{}/api/v1/query_range", self.url),
                &[
                    ("query", query),
                    ("start", secs(start)),
                    ("end", secs(end)),
                    ("step", format!("{step_ms}ms")),
                    // No response cache, and no alignment of start/end to the step.
                    ("nocache", "1".to_string()),
                ],
            )?,
        };
        let mut a = Answer::default();
        for s in series(&body) {
            match q {
                Query::LongDrivingSessions => a.add(Plan::truck_index(s.label("name")?)?),
                Query::AvgLoad => {
                    let cap: f64 = s.label("load_capacity")?.parse()?;
                    for v in &s.values {
                        a.add(v / cap);
                    }
                }
                _ => {
                    for v in &s.values {
                        a.add(*v);
                    }
                }
            }
        }
        Ok(a)
    }

    fn text(&self, q: Query, plan: &Plan) -> Option<String> {
        Some(match self.call(q, plan) {
            Call::Instant { query, time } => format!("{query} @ time={}", secs(time)),
            Call::Range {
                query,
                start,
                end,
                step_ms,
            } => format!(
                "{query} @ start={} end={} step={step_ms}ms",
                secs(start),
                secs(end)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_map_to_half_open_ranges() {
        assert_eq!(secs(1_767_225_600_123), "1767225600.123");
        assert_eq!(secs(999), "0.999");
        // [0, 2h): buckets ending at 1h and 2h, evaluated 1 ms before.
        assert_eq!(
            bucket_ends(0, 2 * HOUR_MS, HOUR_MS),
            (HOUR_MS - 1, 2 * HOUR_MS - 1)
        );
        // A partial last hour still gets its bucket.
        assert_eq!(
            bucket_ends(0, HOUR_MS + 5, HOUR_MS),
            (HOUR_MS - 1, 2 * HOUR_MS - 1)
        );
    }
}
