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

results, doc = sys.argv[1], sys.argv[2]
machine = {}
for line in open(os.path.join(results, "machine.txt")):
    k, _, v = line.rstrip("\n").partition("=")
    machine[k] = v

engines = []
for name, label in [("wulian", "wulian-tsdb"), ("influxdb", "InfluxDB"), ("sqlite", "SQLite")]:
    path = os.path.join(results, name + ".json")
    if os.path.exists(path):
        engines.append((name, label, json.load(open(path))))
w = engines[0][2]
peers = engines[1:]


def num(v, digits=0):
    if v >= 100 or digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ms(v):
    if v < 0.1:
        return f"{v * 1000:.0f} µs"
    if v < 10:
        return f"{v:.2f} ms"
    return f"{v:.1f} ms"


def mib(b):
    return f"{b / 1048576:.1f} MiB"


def ratio(a, b):
    if not b:
        return "–"
    r = a / b
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.2g}×"


head = "| metric | wulian-tsdb | " + " | ".join(p[1] for p in peers) + " | " + \
    " | ".join(f"wulian ÷ {p[1]}" for p in peers) + " |"
sep = "| --- | ---: |" + " ---: |" * (2 * len(peers))
rows = []


def row(metric, key, fmt, better):
    vals = [key(e[2]) for e in engines]
    cells = [fmt(v) for v in vals]
    ratios = [ratio(vals[0], v) for v in vals[1:]]
    rows.append(f"| {metric} ({better}) | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


row("ingest, values/s", lambda r: r["values_per_sec"], num, "higher is better")
row("bytes per value on disk", lambda r: r["bytes_per_value"], lambda v: f"{v:.2f}", "lower is better")
row("peak RSS", lambda r: r["peak_rss_bytes"], mib, "lower is better")
for q, label in [("raw_1d", "query: one truck, 7 fields, 1 day raw"),
                 ("hourly_avg_span", "query: one truck, velocity, hourly avg over the span"),
                 ("latest_all", "query: latest of every field of every truck")]:
    row(label + ", p50", lambda r, q=q: r["queries"][q]["p50_ms"], ms, "lower is better")
    row(label + ", p99", lambda r, q=q: r["queries"][q]["p99_ms"], ms, "lower is better")

out = []
out.append("")
out.append(
    f"Run of {machine.get('date')}. Machine: {machine.get('cpu')}, {machine.get('cores')} cores, "
    f"{machine.get('mem')}, Linux {machine.get('kernel')}, {machine.get('os')}, data on "
    f"{machine.get('fs')}. {machine.get('influxdb')}; SQLite {engines[-1][2].get('settings', '').split(' ')[1] if engines[-1][0] == 'sqlite' else '–'} "
    f"(bundled with rusqlite); wulian {machine.get('commit')}, {machine.get('rustc')}.")
out.append("")
out.append(f"Command: `{machine.get('command')}`")
out.append("")
out.append(
    f"Data: {w['trucks']} trucks × {w['hours']:g} h, seed {w['seed']}: {w['values']:,} values in "
    f"{w['rows']:,} rows, {w['batches']:,} one-minute batches of which {w['batches_missing']:,} missing "
    f"and {w['batches_late']:,} late; {w['requests']:,} write requests of ~{w['rows_per_request']} rows, "
    f"{w['writers']} concurrent writers (SQLite: 1). Every engine got the same requests in the same order.")
out.append("")
out.append(head)
out.append(sep)
out.extend(rows)
out.append("")
out.append("Cross-checks (values each engine returned / stored; they must agree):")
out.append("")
out.append("| | " + " | ".join(e[1] for e in engines) + " |")
out.append("| --- |" + " ---: |" * len(engines))
out.append("| values stored | " + " | ".join(f"{e[2]['points_stored']:,}" for e in engines) + " |")
for q in ["raw_1d", "hourly_avg_span", "latest_all"]:
    out.append(f"| {q} result (values or buckets) | " + " | ".join(f"{e[2]['queries'][q]['result']:,}" for e in engines) + " |")
out.append("")
load = []
for name, label, _ in engines:
    load.append(f"{label}: {machine.get(name + '.load_before')} → {machine.get(name + '.load_after')}")
out.append("Machine load (1/5/15-min load average before → after each engine's step; other "
           "engineers were compiling on the same 2 cores): " + "; ".join(load) + ".")
out.append("")
details = [f"wulian-tsdb: {w['ingest_secs']:.1f} s of ingest in {w['commit_groups']:,} group commits "
           f"for {w['commit_requests']:,} requests, {w['flushes_during_ingest']} background flushes during "
           f"ingest; checkpoint()+compact() afterwards took {w['flush_compact_secs']:.2f} s and left "
           f"{w['block_files']} block file" + ("" if w['block_files'] == 1 else "s")]
for name, label, r in peers:
    extra = f"{label}: {r['ingest_secs']:.1f} s of ingest"
    if name == "influxdb":
        extra += (f" ({r['line_protocol_bytes'] / 1048576:.0f} MiB of line protocol); waited "
                  f"{r['settle_secs']:.0f} s for compaction to settle"
                  + ("" if r["settled"] else " (did not settle within the limit: size measured then)"))
    details.append(extra)
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
