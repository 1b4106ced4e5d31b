"""A device that keeps its twin in step over MQTT 5, with Eclipse Paho.

Usage: twin_device.py HOST PORT DEVICE_ID TOKEN

Subscribes to its retained twin delta and presence, applies the delta by reporting it, asks for
the whole twin, and sends telemetry that its profile's thing model accepts and refuses. Prints
one JSON object with what it saw: the delta it found on subscribing, the PUBACK reason codes,
the twin it got back, its own presence message.
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, device_id, token = sys.argv[1:5]
base = f"devices/{device_id}"
seen = {}
acks = {}
events = {name: threading.Event() for name in ("connected", "delta", "twin", "presence", "subscribed")}
lock = threading.Lock()

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
client.username_pw_set(device_id, token)


def on_connect(c, userdata, flags, rc, props):
    events["connected"].set()


def on_subscribe(c, userdata, mid, rcs, props):
    events["subscribed"].set()


def on_message(c, userdata, msg):
    body = json.loads(msg.payload) if msg.payload else None
    with lock:
        if msg.topic == f"{base}/twin/delta" and "delta" not in seen:
            seen["delta"] = {"retain": bool(msg.retain), "body": body}
            events["delta"].set()
        elif msg.topic == f"{base}/twin":
            seen["twin"] = body
            corr = getattr(msg.properties, "CorrelationData", None)
            seen["twin_correlation"] = corr.decode() if corr else None
            events["twin"].set()
        elif msg.topic == f"{base}/presence" and "presence" not in seen:
            seen["presence"] = body
            events["presence"].set()


def on_publish(c, userdata, mid, rc, props):
    with lock:
        acks[mid] = rc.value


client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.on_publish = on_publish
client.connect(host, int(port))
client.loop_start()
assert events["connected"].wait(5), "no CONNACK"
client.subscribe([(f"{base}/twin/delta", 1), (f"{base}/twin", 1), (f"{base}/presence", 1)])
assert events["subscribed"].wait(5), "no SUBACK"
events["delta"].wait(5)
events["presence"].wait(5)


def publish(topic, payload, props=None):
    info = client.publish(topic, payload, qos=1, properties=props)
    deadline = time.time() + 5
    while time.time() < deadline:
        with lock:
            if info.mid in acks:
                return acks[info.mid]
        time.sleep(0.01)
    return None


result = {}
# Apply what the delta asks for, then report it.
delta = seen.get("delta", {}).get("body", {}).get("delta", {})
result["report"] = publish(f"{base}/twin/reported", json.dumps(delta))
props = Properties(PacketTypes.PUBLISH)
props.CorrelationData = b"req-1"
result["get"] = publish(f"{base}/twin/get", b"", props)
events["twin"].wait(5)
result["report_bad_json"] = publish(f"{base}/twin/reported", b"{nope")
result["report_array"] = publish(f"{base}/twin/reported", b"[1]")
result["report_too_large"] = publish(f"{base}/twin/reported", json.dumps({"blob": "x" * 70000}))
result["telemetry_ok"] = publish(f"{base}/telemetry", json.dumps({"temp": 21.5}))
result["telemetry_out_of_range"] = publish(f"{base}/telemetry", json.dumps({"temp": 99.0}))
with lock:
    result.update(seen)
client.disconnect()
client.loop_stop()
print(json.dumps(result), flush=True)
