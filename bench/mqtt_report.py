#!/usr/bin/env python3
"""Turns the JSON reports of bench/mqtt.sh into the results block of docs/benchmarks.md.

Only the text between the two markers is replaced, so the prose around it (commands,
settings, interpretation) is kept as written.
"""
import json
import pathlib
import sys

START = "<!-- mqtt-bench:results:start -->"
END = "<!-- mqtt-bench:results:end -->"


def load(results, name, target):
    path = results / f"{name}.{target}.json"
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError):
        err = results / f"{name}.{target}.err"
        lines = err.read_text().strip().splitlines() if err.exists() else []
        # anyhow prints "Error: …" first (then a backtrace when RUST_BACKTRACE is set).
        first = next((l for l in lines if l.startswith("Error: ")), lines[-1] if lines else "no result")
        return None, first.removeprefix("Error: ")[:200]


def dig(doc, *path):
    for p in path:
        if doc is None:
            return None
        doc = doc.get(p) if isinstance(doc, dict) else None
    return doc


def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            s = f"{v:,.0f}"
        elif abs(v) >= 10:
            s = f"{v:.1f}"
        else:
            s = f"{v:.2f}"
    else:
        s = f"{v:,}"
    return s + unit


def ratio(w, m):
    if w is None or m in (None, 0):
        return "–"
    return f"{w / m:.2f}×"


def cpu_per_msg(doc, rate_path):
    cpu = dig(doc, "broker", "cpu_secs")
    rate = dig(doc, *rate_path)
    window = dig(doc, "window_secs")
    if not cpu or not rate or not window:
        return None
    return cpu * 1e6 / (rate * window)


def rows(results, notes):
    out = []
    specs = [
        ("fan-in", "fan-in, QoS 1, no subscriber", [
            ("acknowledged publishes/s", ("published", "completed_per_sec"), ""),
            ("publish→PUBACK p50", ("published", "latency", "p50_ms"), " ms"),
            ("publish→PUBACK p99", ("published", "latency", "p99_ms"), " ms"),
            ("broker CPU per message", "cpu:published", " µs"),
        ]),
        ("fan-in-max", "fan-in at saturation, QoS 1, no subscriber", [
            ("acknowledged publishes/s", ("published", "completed_per_sec"), ""),
            ("publish→PUBACK p50", ("published", "latency", "p50_ms"), " ms"),
            ("publish→PUBACK p99", ("published", "latency", "p99_ms"), " ms"),
            ("broker CPU per message", "cpu:published", " µs"),
        ]),
        ("fan-in-sub", "fan-in, QoS 1, one subscriber on devices/+/telemetry", [
            ("delivered to subscriber/s", ("delivered", "per_sec"), ""),
            ("acknowledged publishes/s", ("published", "completed_per_sec"), ""),
            ("delivery latency p50", ("delivered", "latency", "p50_ms"), " ms"),
            ("delivery latency p99", ("delivered", "latency", "p99_ms"), " ms"),
        ]),
        ("fan-out", "fan-out, QoS 1, one publisher", [
            ("delivered/s (all subscribers)", ("delivered", "per_sec"), ""),
            ("delivery latency p50", ("delivered", "latency", "p50_ms"), " ms"),
            ("delivery latency p99", ("delivered", "latency", "p99_ms"), " ms"),
            ("a message's first delivery (median over messages)", ("per_message", "first_ms"), " ms"),
            ("a message's last delivery (median over messages)", ("per_message", "last_ms"), " ms"),
            ("broker CPU per delivery", "cpu:delivered", " µs"),
        ]),
        ("qos2", "QoS 2 publishes (PUBLISH/PUBREC/PUBREL/PUBCOMP)", [
            ("completed publishes/s", ("published", "completed_per_sec"), ""),
            ("publish→PUBCOMP p50", ("published", "latency", "p50_ms"), " ms"),
            ("publish→PUBCOMP p99", ("published", "latency", "p99_ms"), " ms"),
            ("broker CPU per message", "cpu:published", " µs"),
        ]),
        ("fan-in-raw-sub-q1", "fan-in, QoS 1, one subscriber on devices/+/telemetry, raw client", [
            ("delivered to subscriber/s", ("delivered", "per_sec"), ""),
            ("acknowledged publishes/s", ("published", "completed_per_sec"), ""),
            ("delivery latency p50", ("delivered", "latency", "p50_ms"), " ms"),
            ("delivery latency p99", ("delivered", "latency", "p99_ms"), " ms"),
            ("publish→PUBACK p99", ("published", "latency", "p99_ms"), " ms"),
            ("broker CPU per message", "cpu:published", " µs"),
        ]),
        ("fan-in-raw-sub-q0", "fan-in, QoS 0, one subscriber on devices/+/telemetry, raw client", [
            ("delivered to subscriber/s", ("delivered", "per_sec"), ""),
            ("delivery latency p50", ("delivered", "latency", "p50_ms"), " ms"),
            ("delivery latency p99", ("delivered", "latency", "p99_ms"), " ms"),
            ("broker CPU per message", "cpu:published", " µs"),
        ]),
        ("fan-in-raw-max", "fan-in at saturation, QoS 1, no subscriber, raw client", [
            ("acknowledged publishes/s", ("published", "completed_per_sec"), ""),
            ("publish→PUBACK p50", ("published", "latency", "p50_ms"), " ms"),
            ("publish→PUBACK p99", ("published", "latency", "p99_ms"), " ms"),
            ("broker CPU per message", "cpu:published", " µs"),
        ]),
        ("qos2-raw", "QoS 2 at saturation, raw client", [
            ("completed publishes/s", ("published", "completed_per_sec"), ""),
            ("publish→PUBCOMP p50", ("published", "latency", "p50_ms"), " ms"),
            ("publish→PUBCOMP p99", ("published", "latency", "p99_ms"), " ms"),
            ("broker CPU per message", "cpu:published", " µs"),
        ]),
        ("connections", "idle authenticated connections", [
            ("connections held", ("connected",), ""),
            ("connects/s", ("connects_per_sec",), ""),
            ("connect p99 (TCP + CONNACK)", ("connect_latency", "p99_ms"), " ms"),
            ("broker RSS per connection", "rss", " KiB"),
        ]),
        ("connections-mtls", "idle connections over mutual TLS (ECDSA P-256 certificates, full handshakes)", [
            ("connections held", ("connected",), ""),
            ("connects/s", ("connects_per_sec",), ""),
            ("connect p99 (TCP + TLS + CONNACK)", ("connect_latency", "p99_ms"), " ms"),
            ("broker RSS per connection", "rss", " KiB"),
        ]),
    ]
    for name, title, metrics in specs:
        m, m_err = load(results, name, "mosquitto")
        w, w_err = load(results, name, "wulian")
        size = dig(m or w, "publishers"), dig(m or w, "subscribers"), dig(m or w, "target_rate")
        if name.startswith("connections"):
            detail = f"{dig(m or w, 'requested')} requested"
        elif name == "fan-out":
            detail = f"{dig(m, 'subscribers') or '?'} subscribers, {size[2]} msg/s offered"
        else:
            detail = f"{size[0]} clients, {size[2]} msg/s offered"
        for i, (label, path, unit) in enumerate(metrics):
            def value(doc):
                if doc is None:
                    return None
                if path == "rss":
                    v = doc.get("rss_bytes_per_connection")
                    return v / 1024 if v is not None else None
                if isinstance(path, str) and path.startswith("cpu:"):
                    which = path[4:]
                    rp = ("published", "completed_per_sec") if which == "published" else ("delivered", "per_sec")
                    return cpu_per_msg(doc, rp)
                return dig(doc, *path)
            mv, wv = value(m), value(w)
            mc, wc = fmt(mv, unit), fmt(wv, unit)
            for doc, err, who in ((m, m_err, "Mosquitto"), (w, w_err, "wulian")):
                if doc is None:
                    if i == 0:
                        notes.append(f"{who}, {title}: {err}")
                        cell = f"n/a ({len(notes)})"
                    else:
                        cell = "n/a"
                    if who == "Mosquitto":
                        mc = cell
                    else:
                        wc = cell
            head = f"**{title}** ({detail})" if i == 0 else ""
            out.append(f"| {head} | {label} | {mc} | {wc} | {ratio(wv, mv)} |")
    return out


def sweep(results, machine):
    """Delivered to the subscriber per second at each offered rate (raw client), and each
    broker's highest, per QoS."""
    rates = machine.get("raw_sweep", "").split()
    if not rates:
        return []
    out = ["", f"Delivered to the subscriber on `devices/+/telemetry` per second, raw client, "
                f"1000 publishers, {machine.get('sweep_duration', '?')} s per rate "
                f"(acknowledged publishes/s in parentheses; QoS 0 has no acknowledgements):", "",
           "| offered msg/s | QoS | Mosquitto | wulian | wulian ÷ Mosquitto |",
           "| ---: | ---: | ---: | ---: | ---: |"]
    best_rows = []
    for qos in ("1", "0"):
        best = {"mosquitto": None, "wulian": None}
        for rate in rates:
            cells = {}
            for target in best:
                doc, _ = load(results, f"fan-in-raw-sweep-q{qos}-{rate}", target)
                d = dig(doc, "delivered", "per_sec")
                a = dig(doc, "published", "completed_per_sec")
                cells[target] = d
                if d is not None and (best[target] is None or d > best[target][0]):
                    best[target] = (d, rate)
                text = fmt(d) if d is not None else "n/a"
                if qos == "1" and a is not None:
                    text += f" ({fmt(a)})"
                cells[target + "_text"] = text
            out.append(f"| {int(rate):,} | {qos} | {cells['mosquitto_text']} | {cells['wulian_text']} "
                       f"| {ratio(cells['wulian'], cells['mosquitto'])} |")
        m, w = best["mosquitto"], best["wulian"]
        best_rows.append(
            f"| **highest delivered to the subscriber/s, QoS {qos}, raw client** (sweep below) "
            f"| delivered/s (at offered msg/s) "
            f"| {fmt(m[0]) + f' (at {int(m[1]):,})' if m else 'n/a'} "
            f"| {fmt(w[0]) + f' (at {int(w[1]):,})' if w else 'n/a'} "
            f"| {ratio(w[0] if w else None, m[0] if m else None)} |")
    return best_rows, out


def main():
    results = pathlib.Path(sys.argv[1])
    target = pathlib.Path(sys.argv[2])
    machine = dict(
        line.split("=", 1) for line in (results / "machine.txt").read_text().splitlines() if "=" in line
    )
    block = [
        START,
        "",
        f"Run of {machine.get('date', '?')}, {machine.get('duration', '?')} s of load per message scenario. "
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {machine.get('memory', '?')}, "
        f"Linux {machine.get('kernel', '?')}, {machine.get('os', '?')}; {machine.get('mosquitto', '?')}; "
        f"wulian {machine.get('wulian', '?')}, {machine.get('rustc', '?')}. The load generator runs on the same two cores.",
        "",
        "| scenario | metric | Mosquitto | wulian | wulian ÷ Mosquitto |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    notes = []
    block += rows(results, notes)
    swept = sweep(results, machine)
    if swept:
        block += swept[0]
    if notes:
        block += ["", "Runs that could not be made:", ""]
        block += [f"{n}. {text}" for n, text in enumerate(notes, 1)]
    if swept:
        block += swept[1]
    server = results / "fan-in.wulian.server.json"
    if server.exists():
        block += ["", f"wulian's own counter `wulian_mqtt_publish_received_total` grew by "
                      f"{json.loads(server.read_text()).get('publish_received')} during the fan-in run."]
    block += ["", END]
    text = target.read_text()
    if START in text and END in text:
        before, rest = text.split(START, 1)
        _, after = rest.split(END, 1)
        text = before + "\n".join(block) + after
    else:
        text = text.rstrip("\n") + "\n\n## MQTT broker vs Mosquitto\n\n" + "\n".join(block) + "\n"
    target.write_text(text)


if __name__ == "__main__":
    main()
