"""A smart bike lock following docs/bike-lock-contract.md, with Eclipse Paho (MQTT 3.1.1).

Usage: lock.py HOST PORT DEVICE_ID TOKEN LAT LON

Driven over stdin, one command per line, so a test plays the rider:

    mode ok|jam|silent|wrong-token   how the next unlock goes
    report LAT LON                   a state report at a position (shackle as it is)
    close LAT LON                    the rider closes the shackle at a position
    event NAME                       an event (tamper, fall, …) at the current position
    quit

Prints one line per thing that happened, for the test to wait on:
`ready`, `unlocked TRIP_ID`, `refused REASON`, `interval SECONDS` (on switching between the
parked and riding intervals), `intervals PARKED RIDING` (set through the twin), `closed`.
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt

host, port, device_id, token, lat, lon = sys.argv[1:7]
base = f"devices/{device_id}"
state = {"lat": float(lat), "lon": float(lon), "locked": True, "trip": None, "mode": "ok",
         "intervals": {"parked_s": 300, "riding_s": 10}}
guard = threading.Lock()
ready = threading.Event()


def say(line):
    print(line, flush=True)


def now_ms():
    return int(time.time() * 1000)


def report(c):
    with guard:
        body = {"ts": now_ms(), "lat": state["lat"], "lon": state["lon"], "battery": 87,
                "locked": state["locked"], "speed": 0.0 if state["locked"] else 14.5,
                "fix": 3, "sats": 9}
    c.publish(f"{base}/telemetry", json.dumps(body), qos=1)


def event(c, name, extra):
    with guard:
        body = {"ts": now_ms(), "lat": state["lat"], "lon": state["lon"]}
    body.update(extra)
    c.publish(f"{base}/events/{name}", json.dumps(body), qos=1)


def answer(c, name, cmd_id, ok, payload):
    body = {"id": cmd_id, "status": "ok", "result": payload} if ok else \
        {"id": cmd_id, "status": "failed", "error": payload}
    c.publish(f"{base}/commands/{name}/response", json.dumps(body), qos=1)


def on_connect(c, userdata, flags, rc, props=None):
    c.subscribe([(f"{base}/commands/+", 1), (f"{base}/twin/delta", 1)])


def on_subscribe(c, userdata, mid, rcs, props=None):
    report(c)
    ready.set()


def on_message(c, userdata, msg):
    body = json.loads(msg.payload) if msg.payload else {}
    if msg.topic == f"{base}/twin/delta":
        intervals = (body.get("delta") or {}).get("report_intervals")
        if intervals is not None:
            with guard:
                state["intervals"] = intervals
            c.publish(f"{base}/twin/reported", json.dumps({"report_intervals": intervals}), qos=1)
            say(f"intervals {intervals['parked_s']} {intervals['riding_s']}")
        return
    name = msg.topic.rsplit("/", 1)[-1]
    params = body.get("params") or {}
    if name != "unlock":
        answer(c, name, body.get("id"), True, {})
        return
    with guard:
        mode = state["mode"]
        expired = params.get("expires_at", 0) < now_ms()
        already = not state["locked"]
    if mode == "silent":
        say("refused silent")
        return
    if expired or already:
        reason = "expired" if expired else "already_unlocked"
        answer(c, name, body.get("id"), False, reason)
        say(f"refused {reason}")
        return
    time.sleep(0.2)  # the motor
    if mode == "jam":
        answer(c, name, body.get("id"), False, "jammed")
        say("refused jammed")
        return
    token_echo = params.get("token") if mode != "wrong-token" else "u1.forged"
    with guard:
        state["locked"] = False
        state["trip"] = params.get("trip_id")
    answer(c, name, body.get("id"), True,
           {"unlocked": True, "trip_id": params.get("trip_id"), "token": token_echo})
    if mode != "wrong-token":
        event(c, "unlocked", {"trip_id": params.get("trip_id"), "token": token_echo})
    report(c)
    say(f"unlocked {params.get('trip_id')}")
    say(f"interval {state['intervals']['riding_s']}")


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
client.username_pw_set(device_id, token)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(host, int(port), keepalive=30)
client.loop_start()
if not ready.wait(20):
    say("error not connected")
    sys.exit(1)
say("ready")
for line in sys.stdin:
    parts = line.split()
    if not parts:
        continue
    if parts[0] == "quit":
        break
    if parts[0] == "event":
        event(client, parts[1], {"detail": "test"} if parts[1] == "tamper" else {})
    elif parts[0] == "mode":
        with guard:
            state["mode"] = parts[1]
    elif parts[0] in ("report", "close"):
        with guard:
            state["lat"], state["lon"] = float(parts[1]), float(parts[2])
            trip = state["trip"]
            if parts[0] == "close":
                state["locked"] = True
                state["trip"] = None
        if parts[0] == "close":
            event(client, "locked", {"trip_id": trip} if trip else {})
            report(client)
            say("closed")
            say(f"interval {state['intervals']['parked_s']}")
        else:
            report(client)
client.loop_stop()
client.disconnect()
