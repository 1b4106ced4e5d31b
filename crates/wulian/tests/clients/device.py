"""A device written the way a firmware team would, with the Eclipse Paho client.

Usage: device.py HOST PORT DEVICE_ID TOKEN {5|311} {answer|fail|ignore}

Connects with its id and token, subscribes to its commands, and answers each one:
MQTT 5 on the response topic with the correlation data it was given, MQTT 3.1.1 on
devices/{id}/commands/{name}/response with the command id in the JSON body.
Prints "ready" once subscribed, then one line per command it saw, and
"disconnected <reason code>" when the server closes the connection (then exits).
"""
import json
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, device_id, token, version, mode = sys.argv[1:7]
v5 = version == "5"
client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id=device_id,
    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
)
client.username_pw_set(device_id, token)


def on_connect(client, userdata, flags, reason_code, properties):
    if reason_code.is_failure:
        print(f"connect failed: {reason_code}", flush=True)
        sys.exit(2)
    client.subscribe(f"devices/{device_id}/commands/+", qos=1)


def on_subscribe(client, userdata, mid, reason_codes, properties):
    print("ready", flush=True)


def on_message(client, userdata, msg):
    command = json.loads(msg.payload)
    print(f"command {command['name']} {json.dumps(command['params'], sort_keys=True)}", flush=True)
    if mode == "ignore":
        return
    answer = {"id": command["id"], "echo": command["params"]}
    if mode == "fail":
        answer["error"] = "jammed"
    if v5:
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = msg.properties.CorrelationData
        del answer["id"]  # MQTT 5 devices are matched by correlation data alone
        client.publish(msg.properties.ResponseTopic, json.dumps(answer), qos=1, properties=props)
    else:
        client.publish(msg.topic + "/response", json.dumps(answer), qos=1)


def on_disconnect(client, userdata, flags, reason_code, properties):
    print(f"disconnected {reason_code.value}", flush=True)
    sys.exit(3)


client.on_connect = on_connect
client.on_disconnect = on_disconnect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(host, int(port), keepalive=30)
client.loop_forever()
