// MQTT.js as a wulian device: the same contract a firmware follows (docs/device-contract.md).
// Every wait is bounded; a missing environment variable fails the run instead of skipping it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import mqtt from 'mqtt';

function env(name) {
  const v = process.env[name];
  assert.ok(v, `environment variable ${name} is required`);
  return v;
}

const HTTP = env('WULIAN_HTTP').replace(/\/$/, '');
const MQTT_URL = env('WULIAN_MQTT');
// Optional: ws://host:port/mqtt of a WebSocket listener; its test is skipped without it.
const MQTT_WS_URL = process.env.WULIAN_MQTT_WS;
const API_KEY = env('WULIAN_API_KEY');
const DEVICE = env('WULIAN_DEVICE_ID');
const TOKEN = env('WULIAN_DEVICE_TOKEN');

async function api(method, path, body) {
  const res = await fetch(`${HTTP}/api/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function connect(protocolVersion, url = MQTT_URL) {
  const client = await mqtt.connectAsync(url, {
    protocolVersion,
    clientId: DEVICE,
    username: DEVICE,
    password: TOKEN,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
  });
  client.on('error', () => {}); // failures surface through the awaited calls
  return client;
}

/** Polls `f` every 100 ms until it returns a truthy value, for at most `ms`. */
async function eventually(what, ms, f) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

for (const version of [4, 5]) {
  test(`MQTT ${version === 4 ? '3.1.1' : '5.0'}: telemetry at QoS 0, 1 and 2 is stored`, { timeout: 30_000 }, async () => {
    const client = await connect(version);
    try {
      const stamp = Date.now();
      for (const qos of [0, 1, 2]) {
        const key = `mqttjs_v${version}_q${qos}`;
        const packet = await client.publishAsync(
          `devices/${DEVICE}/telemetry`,
          JSON.stringify({ [key]: stamp + qos }),
          { qos },
        );
        if (version === 5 && qos > 0) {
          // MQTT 5 acknowledgements carry a reason code; success is 0 (or absent).
          assert.ok(!packet?.reasonCode, `QoS ${qos} publish acknowledged with ${packet?.reasonCode}`);
        }
      }
      // devices/me/ is the device's own namespace too.
      await client.publishAsync('devices/me/telemetry', JSON.stringify({ [`mqttjs_v${version}_me`]: 1 }), { qos: 1 });
      const latest = await eventually('the telemetry to be stored', 10_000, async () => {
        const { status, body } = await api('GET', `/devices/${DEVICE}/telemetry/latest`);
        assert.equal(status, 200);
        const v = body.values;
        return v[`mqttjs_v${version}_q0`]?.value === stamp && v[`mqttjs_v${version}_me`] ? v : null;
      });
      assert.equal(latest[`mqttjs_v${version}_q1`].value, stamp + 1);
      assert.equal(latest[`mqttjs_v${version}_q2`].value, stamp + 2);
    } finally {
      await client.endAsync();
    }
  });

  test(`MQTT ${version === 4 ? '3.1.1' : '5.0'}: a command sent through the API is answered and succeeds`, { timeout: 30_000 }, async () => {
    const client = await connect(version);
    try {
      const granted = await client.subscribeAsync(`devices/${DEVICE}/commands/+`, { qos: 1 });
      assert.equal(granted[0].qos, 1, `SUBACK: ${JSON.stringify(granted)}`);
      const received = new Promise((resolve) => {
        client.on('message', (topic, payload, packet) => resolve({ topic, payload, packet }));
      });

      const sent = await api('POST', `/devices/${DEVICE}/commands`, {
        name: 'blink',
        params: { times: version },
        timeout_ms: 15_000,
        wait: false,
      });
      assert.equal(sent.status, 202, JSON.stringify(sent.body));
      assert.equal(sent.body.status, 'sent');
      const commandId = sent.body.id;

      const { topic, payload, packet } = await received;
      assert.equal(topic, `devices/${DEVICE}/commands/blink`);
      const command = JSON.parse(payload.toString());
      assert.equal(command.id, commandId);
      assert.equal(command.name, 'blink');
      assert.deepEqual(command.params, { times: version });

      if (version === 5) {
        // MQTT 5: answer on the response topic with the correlation data we were given.
        const props = packet.properties ?? {};
        assert.equal(props.responseTopic, `devices/${DEVICE}/commands/blink/response`);
        assert.equal(props.correlationData?.toString(), commandId);
        await client.publishAsync(props.responseTopic, JSON.stringify({ result: 'blinked' }), {
          qos: 1,
          properties: { correlationData: props.correlationData },
        });
      } else {
        // MQTT 3.1.1: no correlation data; the command id goes in the body.
        await client.publishAsync(
          `devices/${DEVICE}/commands/blink/response`,
          JSON.stringify({ id: commandId, result: 'blinked' }),
          { qos: 1 },
        );
      }

      const done = await eventually('the command to succeed', 10_000, async () => {
        const { status, body } = await api('GET', `/devices/${DEVICE}/commands/${commandId}`);
        assert.equal(status, 200);
        return body.status === 'sent' ? null : body;
      });
      assert.equal(done.status, 'succeeded', JSON.stringify(done));
      assert.equal(done.response.result, 'blinked');
    } finally {
      await client.endAsync();
    }
  });
}

test('MQTT 5.0 over WebSocket: telemetry at QoS 1 is stored', { timeout: 30_000, skip: !MQTT_WS_URL }, async () => {
  const client = await connect(5, MQTT_WS_URL);
  try {
    const stamp = Date.now();
    const packet = await client.publishAsync(
      `devices/${DEVICE}/telemetry`,
      JSON.stringify({ mqttjs_ws: stamp }),
      { qos: 1 },
    );
    assert.ok(!packet?.reasonCode, `QoS 1 publish acknowledged with ${packet?.reasonCode}`);
    await eventually('the telemetry sent over WebSocket to be stored', 10_000, async () => {
      const { status, body } = await api('GET', `/devices/${DEVICE}/telemetry/latest`);
      assert.equal(status, 200);
      return body.values.mqttjs_ws?.value === stamp;
    });
  } finally {
    await client.endAsync();
  }
});
