#!/usr/bin/env python3
"""Summarises bench/rules.sh: the same fan-in against wulian without rules and with 100 rules.

Usage: rules_report.py RESULTS_DIR
Prints a Markdown block for docs/benchmarks.md ("Rule engine: 100 rules on the ingest path").
"""
import json
import pathlib
import re
import statistics
import sys

results = pathlib.Path(sys.argv[1])


def load(kind, name):
    runs = []
    for path in sorted(results.glob(f"{kind}-*.{name}.json")):
        try:
            r = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        published = r["published"]["completed"] if "completed" in r["published"] else 0
        rate = r["published"]["completed_per_sec"]
        cpu = (r.get("broker") or {}).get("cpu_secs")
        window = r.get("window_secs") or 1
        runs.append({"rate": rate, "cpu": cpu, "published": published, "window": window,
                     "p99_ms": (r["published"].get("latency") or {}).get("p99_ms")})
    return runs


def cpu_us_per_msg(runs):
    vals = [r["cpu"] / (r["rate"] * r["window"]) * 1e6 for r in runs if r["cpu"] and r["rate"]]
    return statistics.median(vals) if vals else float("nan")


def median(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")


rows = []
for kind, what in (("fixed", "at a fixed offered rate"), ("max", "at saturation")):
    plain, rules = load(kind, "plain"), load(kind, "rules")
    if not plain or not rules:
        continue
    pr, rr = median(plain, "rate"), median(rules, "rate")
    pc, rc = cpu_us_per_msg(plain), cpu_us_per_msg(rules)
    rows.append((f"acknowledged msgs/s {what}", f"{pr:,.0f}", f"{rr:,.0f}", f"{rr / pr:.2f}×"))
    rows.append((f"broker CPU µs per message {what}", f"{pc:.1f}", f"{rc:.1f}", f"{rc / pc:.2f}×"))
    rows.append((f"publish p99 ms {what}", f"{median(plain, 'p99_ms'):.1f}", f"{median(rules, 'p99_ms'):.1f}", ""))

print("| measure | no rules | 100 rules | ratio |")
print("| --- | ---: | ---: | ---: |")
for row in rows:
    print("| " + " | ".join(row) + " |")

metrics = (results / "rules.metrics.txt").read_text() if (results / "rules.metrics.txt").exists() else ""
buckets = []
for line in metrics.splitlines():
    m = re.match(r'wulian_rules_action_latency_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
    if m:
        buckets.append((m.group(1), int(m.group(2))))
counters = {}
for line in metrics.splitlines():
    m = re.match(r"(wulian_rules_\w+_total) (\d+)", line)
    if m:
        counters[m.group(1)] = int(m.group(2))
if buckets:
    total = buckets[-1][1]
    p99_bound = next((le for le, c in buckets if total and c >= 0.99 * total), "+Inf")
    p50_bound = next((le for le, c in buckets if total and c >= 0.5 * total), "+Inf")
    print()
    print(f"Rule-to-action latency ({total:,} actions): p50 ≤ {float(p50_bound) * 1000:g} ms, "
          f"p99 ≤ {float(p99_bound) * 1000 if p99_bound != '+Inf' else float('inf'):g} ms "
          "(histogram bucket bounds).")
if counters:
    print()
    print("Rule counters of the run: " + ", ".join(f"`{k}` {v:,}" for k, v in sorted(counters.items())) + ".")
