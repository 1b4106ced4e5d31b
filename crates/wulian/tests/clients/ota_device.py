"""A device that takes a firmware update the way a firmware team would, with Eclipse Paho.

Usage: ota_device.py MQTT_HOST MQTT_PORT HTTP_BASE DEVICE_ID TOKEN

Waits for its (retained) job on devices/{id}/ota, downloads the image over HTTP in two range
requests (as a device resuming a download would), checks its SHA-256, reports progress on
devices/{id}/ota/progress, and prints one JSON object with what happened.
"""
import hashlib
import json
import sys
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

host, port, http_base, device_id, token = sys.argv[1:6]
base = f"devices/{device_id}"
got_job = threading.Event()
job = {}
acks = {}
lock = threading.Lock()

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
client.username_pw_set(device_id, token)
client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{base}/ota", qos=1)


def on_message(c, userdata, msg):
    if msg.payload and not got_job.is_set():
        job.update(json.loads(msg.payload))
        job["_retained"] = bool(msg.retain)
        got_job.set()


def on_publish(c, userdata, mid, rc, props):
    with lock:
        acks[mid] = rc.value


client.on_message = on_message
client.on_publish = on_publish
client.connect(host, int(port))
client.loop_start()
if not got_job.wait(10):
    print(json.dumps({"error": "no job"}))
    sys.exit(1)


def report(state, progress=0):
    info = client.publish(f"{base}/ota/progress",
                          json.dumps({"campaign": job["campaign"], "state": state, "progress": progress}), qos=1)
    deadline = time.time() + 5
    while time.time() < deadline:
        with lock:
            if info.mid in acks:
                return acks[info.mid]
        time.sleep(0.01)
    return None


def fetch(first, last):
    req = urllib.request.Request(http_base + job["firmware"]["url"],
                                 headers={"Authorization": f"Bearer {token}", "Range": f"bytes={first}-{last}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read()


size = job["firmware"]["size"]
codes = [report("downloading", 0)]
half = size // 2
s1, part1 = fetch(0, half - 1)
codes.append(report("downloading", 50))
s2, part2 = fetch(half, size - 1)
image = part1 + part2
sha_ok = hashlib.sha256(image).hexdigest() == job["firmware"]["sha256"]
codes.append(report("downloaded", 100))
codes.append(report("installing", 100))
codes.append(report("succeeded" if sha_ok else "failed", 100))
client.disconnect()
client.loop_stop()
print(json.dumps({"job": job, "range_status": [s1, s2], "sha_ok": sha_ok, "acks": codes}), flush=True)
