#!/usr/bin/env python3
"""Turns the JSON reports of bench/tsdb.sh into the results block of docs/benchmarks.md.

usage: tsdb_report.py RESULTS_DIR DOC
Replaces what is between <!-- tsdb-bench:results:start --> and <!-- tsdb-bench:results:end -->
(appended at the end of DOC if the markers are missing).
"""
import json
import os
import sys

START = "<!-- tsdb-bench:results:start -->"
END = "<!-- tsdb-bench:results:end -->"
ENGINES = [("wulian", "wulian-tsdb"), ("influxdb", "InfluxDB"),
           ("victoria", "VictoriaMetrics ¹"), ("postgres", "PostgreSQL"), ("sqlite", "SQLite")]
QUERIES = [
    ("raw_1d", "one truck, 7 fields, 1 day raw"),
    ("hourly_avg_span", "one truck, velocity, hourly avg over the span"),
    ("latest_all", "latest of every field of every truck"),
    ("last_loc", "TSBS last-loc (one fleet)"),
    ("low_fuel", "TSBS low-fuel (one fleet)"),
    ("high_load", "TSBS high-load (one fleet)"),
    ("stationary_trucks", "TSBS stationary-trucks (one fleet, 10 min)"),
    ("long_driving_sessions", "TSBS long-driving-sessions (one fleet, 4 h)"),
    ("avg_load", "TSBS avg-load (all trucks, whole span)"),
    ("fleet_hourly_velocity", "all trucks, hourly avg velocity, first day"),
]

results, doc = sys.argv[1], sys.argv[2]
machine = {}
for line in open(os.path.join(results, "machine.txt")):
    k, _, v = line.rstrip("\n").partition("=")
    machine[k] = v


def load(name):
    path = os.path.join(results, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None


engines = [(n, label, load(n)) for n, label in ENGINES if load(n) is not None]
if not engines or engines[0][0] != "wulian":
    sys.exit("tsdb_report.py: the wulian report is required")
devices = load("devices")
w = engines[0][2]
peers = engines[1:]


def num(v):
    return f"{v:,.0f}"


def ms(v):
    if v < 0.1:
        return f"{v * 1000:.0f} µs"
    if v < 10:
        return f"{v:.2f} ms"
    return f"{v:,.1f} ms"


def mib(b):
    return f"{b / 1048576:.1f} MiB"


def ratio(a, b):
    if not a or not b:
        return "–"
    r = a / b
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.2g}×"


head = "| metric | " + " | ".join(e[1] for e in engines) + " | " + \
    " | ".join(f"wulian ÷ {p[1].rstrip(' ¹')}" for p in peers) + " |"
sep = "| --- |" + " ---: |" * (len(engines) + len(peers))
rows = []


def row(metric, key, fmt, better):
    vals = []
    for e in engines:
        try:
            vals.append(key(e[2]))
        except (KeyError, TypeError):
            vals.append(None)
    cells = [fmt(v) if v is not None else "–" for v in vals]
    ratios = [ratio(vals[0], v) for v in vals[1:]]
    rows.append(f"| {metric} ({better}) | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


row("ingest, values/s", lambda r: r["values_per_sec"], num, "higher is better")
row("values per CPU-second during ingest ²", lambda r: r["values_per_cpu_sec"], num, "higher is better")
row("bytes per value on disk ⁴", lambda r: r.get("raw_bytes_per_value", r["bytes_per_value"]), lambda v: f"{v:.2f}", "lower is better")
row("peak memory ³", lambda r: r["peak_rss_bytes"], mib, "lower is better")
for q, label in QUERIES:
    row(f"{label}, p50", lambda r, q=q: r["queries"][q]["p50_ms"], ms, "lower is better")
    row(f"{label}, p99", lambda r, q=q: r["queries"][q]["p99_ms"], ms, "lower is better")

out = [""]
out.append(
    f"Run of {machine.get('date')}. Machine: {machine.get('cpu')}, {machine.get('cores')} cores, "
    f"{machine.get('mem')}, Linux {machine.get('kernel')}, {machine.get('os')}, data on "
    f"{machine.get('fs')}. {machine.get('influxdb')}; {machine.get('victoria')}; "
    f"{machine.get('postgres')}; SQLite {rusqlite if (rusqlite := next((e[2]['settings'].split(' ')[1] for e in engines if e[0] == 'sqlite'), None)) else '–'} "
    f"(bundled with rusqlite); wulian {machine.get('commit')}, {machine.get('rustc')}.")
out.append("")
out.append(f"Command: `{machine.get('command')}`")
out.append("")
p = w.get("plan", {})
out.append(
    f"Data: {w['trucks']} trucks × {w['hours']:g} h, seed {w['seed']}: {w['values']:,} values in "
    f"{w['rows']:,} rows, {w['batches']:,} one-minute batches of which {w['batches_missing']:,} missing "
    f"and {w['batches_late']:,} late; {w['requests']:,} write requests of ~{w['rows_per_request']} rows, "
    f"{w['writers']} concurrent writers (SQLite: 1). Every engine got the same requests in the same "
    f"order. Fleet queries: fleet `{p.get('fleet')}` ({p.get('fleet_trucks')} trucks).")
out.append("")
out.append(head)
out.append(sep)
out.extend(rows)
out.append("")
out.append("¹ VictoriaMetrics does not fsync per write: it acknowledges a write once the data is in "
           "its in-memory buffers, which reach the disk a second or a few later, so an unclean stop "
           "or a power loss can lose the last seconds of acknowledged writes. Every other engine "
           "here fsyncs before it acknowledges. Its ingest numbers are not at matched durability.")
out.append("")
out.append("² Server CPU time (user + system) during ingest: influxd, victoria-metrics, the "
           "postmaster and all its children; for the embedded engines (wulian, SQLite) the whole "
           "benchmark process, which includes the load generator building the write batches. "
           "Background merges after ingest are not counted for anyone.")
out.append("")
out.append("³ wulian and SQLite: `VmHWM` of the benchmark process minus its `VmRSS` before the store "
           "was opened; InfluxDB, VictoriaMetrics: `VmHWM` of the server; PostgreSQL: peak of the "
           "summed PSS of the postmaster and its children (shared buffers counted once), sampled "
           "every 200 ms.")
out.append("")
rollup_bpv = [r["rollup_bytes_per_value"] for n, _, r in engines if n == "wulian" and "rollup_bytes_per_value" in r]
out.append("⁴ wulian: the raw points after compaction (block files, WAL, manifest). Its 1-minute and "
           "1-hour rollups — summaries kept longer than raw data for long-range charts — take "
           + (f"another {rollup_bpv[0]:.2f} bytes per raw value" if rollup_bpv else "extra space")
           + " on this data set (a 1-minute summary of six 10 s readings keeps six numbers: count, "
           "sum, minimum, maximum, first and last; the sums of decimals are rarely decimals "
           "themselves and take most of it); peers keep no such summaries.")
out.append("")
out.append("Cross-checks: what each engine returned (values, buckets, groups or trucks / the sum of "
           "the returned numbers, trucks: of their indexes). They must agree; checksums may differ "
           "in the last digits (float sums in a different order).")
out.append("")
out.append("| | " + " | ".join(e[1] for e in engines) + " |")
out.append("| --- |" + " ---: |" * len(engines))
out.append("| values stored | " + " | ".join(f"{e[2]['points_stored']:,}" for e in engines) + " |")
for q, _ in QUERIES:
    cells = []
    for e in engines:
        r = e[2].get("queries", {}).get(q)
        cells.append(f"{r['result']:,} / {r['checksum']:,.3f}" if r else "–")
    out.append(f"| {q} | " + " | ".join(cells) + " |")
out.append("")
runs_cmd = machine.get("command", "").split("QUERY_RUNS=")
runs_default = int(runs_cmd[1].split()[0]) if len(runs_cmd) > 1 else None
short = []
for e in engines:
    fewer = [f"{q} {e[2]['queries'][q]['runs']}" for q, _ in QUERIES
             if e[2]["queries"][q]["runs"] != runs_default]
    if fewer:
        short.append(f"{e[1].rstrip(' ¹')}: " + ", ".join(fewer))
out.append("Query runs: each query ran once to warm up, then "
           f"{runs_default} times, except where the repetitions passed the time budget: "
           + ("; ".join(short) if short else "none") + ".")
out.append("")

# Goals of the issue, measured.
goals = []


def goal(name, value, met):
    goals.append(f"| {name} | {value} | {'met' if met else '**not met**'} |")


influx = load("influxdb")
vm = load("victoria")
pg = load("postgres")
goal("ingest ≥ 1,000,000 values/s with fsync group commit", f"{w['values_per_sec']:,.0f} values/s",
     w["values_per_sec"] >= 1e6)
if influx:
    r = w["values_per_sec"] / influx["values_per_sec"]
    goal("ingest ≥ 3× InfluxDB 1.x", f"{r:.2f}×", r >= 3)
if vm:
    r = w["values_per_sec"] / vm["values_per_sec"]
    goal("ingest above VictoriaMetrics (which does not fsync)", f"{r:.2f}×", r > 1)
raw_bpv = w.get("raw_bytes_per_value", w["bytes_per_value"])
goal("≤ 1.5 bytes per value after compaction", f"{raw_bpv:.2f} (raw points; rollups add {w.get('rollup_bytes_per_value', 0):.2f})", raw_bpv <= 1.5)
if devices:
    t = devices["latest_all"]["p50_ms"]
    goal(f"latest values of {devices['devices']:,} devices < 50 ms",
         f"p50 {ms(t)}, p99 {ms(devices['latest_all']['p99_ms'])} ({devices['series']:,} series)", t < 50)
    b = devices["idle_bytes_per_series"]
    goal("memory < 200 bytes per idle series", f"{b:,.0f} bytes", b < 200)
month = load("wulian30d")
if month:
    t = month["queries"]["hourly_avg_span"]["p50_ms"]
    goal(f"30-day hourly < 10 ms for one device ({month['hours'] / 24:g} days, {month['trucks']} trucks)",
         f"p50 {ms(t)}, p99 {ms(month['queries']['hourly_avg_span']['p99_ms'])}", t < 10)
t = w["queries"]["hourly_avg_span"]["p50_ms"]
goal(f"hourly over the main run's {w['hours'] / 24:g} day(s) < 10 ms for one device", f"p50 {ms(t)}", t < 10)
if pg:
    for q in ["fleet_hourly_velocity", "avg_load"]:
        r = pg["queries"][q]["p50_ms"] / w["queries"][q]["p50_ms"]
        goal(f"fleet-wide scan ≥ 5× faster than PostgreSQL ({q})", f"{r:.1f}× faster", r >= 5)
for r in [w] + ([month] if month else []):
    goal(f"WAL replay ≥ 1,000,000 values/s ({r['trucks']} trucks × {r['hours']:g} h)",
         f"{r['replay_values_per_sec']:,.0f} values/s ({r['replayed_points']:,} values in {r['replay_secs']:.2f} s)",
         r["replay_values_per_sec"] >= 1e6)
out.append("Goals (from the issue), this run:")
out.append("")
out.append("| goal | measured | |")
out.append("| --- | --- | --- |")
out.extend(goals)
out.append("")

load_lines = []
for name, label, _ in engines + ([("devices", "many devices", None)] if devices else []) \
        + ([("wulian30d", "wulian 30 days", None)] if month else []):
    load_lines.append(f"{label.rstrip(' ¹')}: {machine.get(name + '.load_before')} → {machine.get(name + '.load_after')}")
out.append("Machine load (1/5/15-min load average before → after each step; other engineers were "
           "compiling on the same 2 cores): " + "; ".join(load_lines) + ".")
out.append("")
details = [f"wulian-tsdb: {w['ingest_secs']:.1f} s of ingest in {w['commit_groups']:,} group commits "
           f"for {w['commit_requests']:,} requests, {w['flushes_during_ingest']} background flushes during "
           f"ingest; reopening without a flush replayed {w['replayed_points']:,} values in "
           f"{w['replay_secs']:.2f} s; checkpoint()+compact() took {w['flush_compact_secs']:.2f} s and left "
           f"{w['block_files']} block file" + ("" if w['block_files'] == 1 else "s")]
for name, label, r in peers:
    extra = f"{label.rstrip(' ¹')}: {r['ingest_secs']:.1f} s of ingest, {r['cpu_secs']:.1f} CPU-s"
    if "settle_secs" in r:
        extra += (f", waited {r['settle_secs']:.0f} s for its merges to settle"
                  + ("" if r["settled"] else " (did not settle within the limit: size measured then)"))
    if "vacuum_secs" in r:
        extra += f", VACUUM ANALYZE + CHECKPOINT {r['vacuum_secs']:.1f} s"
    details.append(extra)
if devices:
    details.append(f"many devices: {devices['series']:,} series written in {devices['write_secs']:.1f} s, "
                   f"reopened in {devices['reopen_secs']:.2f} s, {devices['bytes_on_disk'] / devices['series']:.0f} "
                   f"bytes on disk per series")
if month:
    details.append(f"wulian 30 days ({month['trucks']} trucks × {month['hours']:g} h, "
                   f"{month['values']:,} values): {month['values_per_sec']:,.0f} values/s, "
                   f"{month['bytes_per_value']:.2f} bytes per value, {month['block_files']} block files, "
                   f"peak memory {mib(month['peak_rss_bytes'])}")
out.append("; ".join(details) + ".")
out.append("")
with open(doc) as f:
    text = f.read()
block = START + "\n" + "\n".join(out) + "\n" + END
if START in text and END in text:
    before = text[: text.index(START)]
    after = text[text.index(END) + len(END):]
    text = before + block + after
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
with open(doc, "w") as f:
    f.write(text)
