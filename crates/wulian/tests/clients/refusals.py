"""Checks how the broker refuses what a device may not do, as Paho sees it.

Usage: refusals.py HOST PORT DEVICE_ID TOKEN OTHER_DEVICE_ID
Prints one JSON object with what each attempt got back.
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt

host, port, device_id, token, other = sys.argv[1:6]
port = int(port)
result = {}


def connect_rc(version, username, password, client_id):
    done = threading.Event()
    got = {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
    c.username_pw_set(username, password)

    def on_connect(client, userdata, flags, rc, props):
        got["rc"] = rc.value
        done.set()

    def on_disconnect(client, userdata, flags, rc, props):
        got.setdefault("rc", rc.value)
        done.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.connect(host, port)
    c.loop_start()
    done.wait(5)
    c.loop_stop()
    c.disconnect()
    return got.get("rc")


# Wrong token: MQTT 5 reason code 0x86 (134); MQTT 3.1.1 return code 4 (paho reports 134 too, mapped).
result["v5_wrong_token"] = connect_rc(mqtt.MQTTv5, device_id, "wld_wrong", device_id)
result["v311_wrong_token"] = connect_rc(mqtt.MQTTv311, device_id, "wld_wrong", device_id)
result["v5_unknown_device"] = connect_rc(mqtt.MQTTv5, "no-such-device", token, "no-such-device")
result["v5_client_id_mismatch"] = connect_rc(mqtt.MQTTv5, device_id, token, "someone-else")

# MQTT 5: publishing into another device's namespace gets PUBACK 0x87; bad JSON gets 0x99;
# subscribing to another device's commands gets SUBACK 0x87.
acks = {}
subs = {}
ev = threading.Event()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
c.username_pw_set(device_id, token)
c.on_connect = lambda *a: ev.set()


def on_publish(client, userdata, mid, rc, props):
    acks[mid] = rc.value


def on_subscribe(client, userdata, mid, rcs, props):
    subs[mid] = [r.value for r in rcs]


c.on_publish = on_publish
c.on_subscribe = on_subscribe
c.connect(host, port)
c.loop_start()
ev.wait(5)
m_other = c.publish(f"devices/{other}/telemetry", '{"temp": 1}', qos=1).mid
m_bad = c.publish(f"devices/{device_id}/telemetry", '{"temp": ', qos=1).mid
m_obj = c.publish(f"devices/{device_id}/telemetry", '{"temp": {"c": 1}}', qos=1).mid
m_ok = c.publish(f"devices/me/telemetry", '{"ts": 5000, "values": {"alias": 1}}', qos=1).mid
s_other = c.subscribe(f"devices/{other}/commands/#", qos=1)[1]
s_all = c.subscribe("devices/+/telemetry", qos=1)[1]
s_own = c.subscribe(f"devices/{device_id}/commands/#", qos=1)[1]
for _ in range(50):
    if len(acks) >= 4 and len(subs) >= 3:
        break
    threading.Event().wait(0.1)
c.loop_stop()
c.disconnect()
result["v5_publish_other"] = acks.get(m_other)
result["v5_publish_bad_json"] = acks.get(m_bad)
result["v5_publish_object_value"] = acks.get(m_obj)
result["v5_publish_me_alias"] = acks.get(m_ok)
result["v5_subscribe_other"] = subs.get(s_other)
result["v5_subscribe_wildcard"] = subs.get(s_all)
result["v5_subscribe_own"] = subs.get(s_own)

# MQTT 3.1.1: a refused publish closes the connection (the only refusal 3.1.1 has).
closed = threading.Event()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
c.username_pw_set(device_id, token)
connected = threading.Event()
c.on_connect = lambda *a: connected.set()
c.on_disconnect = lambda *a: closed.set()
c.connect(host, port)
c.loop_start()
connected.wait(5)
c.publish(f"devices/{other}/telemetry", '{"temp": 1}', qos=1)
result["v311_publish_other_closed"] = closed.wait(5)
c.loop_stop()

print(json.dumps(result), flush=True)
