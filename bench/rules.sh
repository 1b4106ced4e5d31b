#!/usr/bin/env bash
# Rule engine benchmark: the same MQTT fan-in load against two wulian servers side by side, one
# without rules and one with 100 enabled rules on the telemetry topic, alternating, in the same
# run. Reports acknowledged messages/s (at a fixed offered rate and at saturation), broker CPU
# per message, and the rule-to-action latency histogram of the server with rules.
# Everything listens on 127.0.0.1; every load stops by itself; every process is stopped on exit.
#
#   bench/rules.sh                          # defaults below (about 4 minutes)
#   ROUNDS=3 DURATION=20 bench/rules.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-15}          # seconds of load per run
CLIENTS=${CLIENTS:-500}           # publishing devices
RATE=${RATE:-5000}                # offered msgs/s at the fixed-rate runs
MAX_RATE=${MAX_RATE:-50000}       # offered msgs/s at the saturation runs
ROUNDS=${ROUNDS:-2}               # alternations of (no rules, 100 rules)

if [ -z "${WULIAN_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  echo "== building (release)"
  cargo build --release --locked -q -p wulian -p wulian-bench
fi
BENCH=${BENCH_BIN:-"$ROOT/target/release/wulian-bench"}
WULIAN=${WULIAN_BIN:-"$ROOT/target/release/wulian"}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK="$ROOT/target/bench-rules"
rm -rf "$WORK"
mkdir -p "$WORK/results"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1:$2" >&2
  return 1
}

declare -A HTTP PORT KEY PID
start() { # name
  local name=$1
  HTTP[$name]=$(free_port)
  PORT[$name]=$(free_port)
  "$WULIAN" serve --http-addr "127.0.0.1:${HTTP[$name]}" --mqtt-addr "127.0.0.1:${PORT[$name]}" \
    --data-dir "$WORK/$name-data" >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PID[$name]=$!
  PIDS+=("${PID[$name]}")
  wait_port 127.0.0.1 "${PORT[$name]}"
  KEY[$name]=$(sed -n 's/^admin API key: //p' "$WORK/$name.out" | head -1)
  echo "== $name: pid ${PID[$name]}, MQTT ${PORT[$name]}"
  "$BENCH" provision --url "http://127.0.0.1:${HTTP[$name]}" --api-key "${KEY[$name]}" \
    --count "$CLIENTS" --out "$WORK/$name.creds" --parallel 4 >/dev/null
}

api() { # name method path [json]
  local name=$1 method=$2 path=$3
  curl -sf -X "$method" -H "Authorization: Bearer ${KEY[$name]}" -H 'Content-Type: application/json' \
    ${4:+--data-binary "$4"} "http://127.0.0.1:${HTTP[$name]}/api/v1$path"
}

start plain
start rules

# 100 rules, all on the telemetry topic every message goes to (the worst case: each message
# evaluates all 100): 80 thresholds that do not fire (the bench's temp is 21.5), 10 windowed
# averages that do not fire, and 10 that fire on every 100th message each (10% of messages),
# republishing a small document — the latency the histogram measures.
for i in $(seq 0 79); do
  api rules POST /rules "{\"id\": \"threshold-$i\", \"sql\": \"SELECT device_id, temp FROM 'devices/+/telemetry' WHERE temp > $((40 + i))\", \"actions\": [{\"action\": \"alarm\", \"type\": \"hot-$i\", \"severity\": \"major\"}]}" >/dev/null
done
for i in $(seq 0 9); do
  api rules POST /rules "{\"id\": \"window-$i\", \"sql\": \"SELECT device_id, avg(temp, '5m') AS avg_temp FROM 'devices/+/telemetry' WHERE avg(temp, '5m') > $((60 + i))\", \"actions\": [{\"action\": \"alarm\", \"type\": \"warm-$i\", \"severity\": \"minor\"}]}" >/dev/null
done
for i in $(seq 0 9); do
  api rules POST /rules "{\"id\": \"sample-$i\", \"sql\": \"SELECT device_id, seq, temp FROM 'devices/+/telemetry' WHERE seq % 100 = $i\", \"actions\": [{\"action\": \"republish\", \"topic\": \"sampled/\${device_id}\", \"qos\": 0}]}" >/dev/null
done
echo "== $(api rules GET /rules | jq length) rules enabled on 'rules'"

run() { # label name rate
  local label=$1 name=$2 rate=$3
  timeout 300 "$BENCH" --port "${PORT[$name]}" --broker-pid "${PID[$name]}" --label "$name" \
    --credentials-file "$WORK/$name.creds" fan-in --clients "$CLIENTS" --rate "$rate" --qos 1 \
    --duration-secs "$DURATION" --drain-secs 3 >"$WORK/results/$label.$name.json" \
    2>"$WORK/results/$label.$name.err" || echo "   $label $name failed: $(tail -1 "$WORK/results/$label.$name.err")"
  jq -c --arg l "$label" '{run: $l, label, published: .published.completed_per_sec, broker: .broker}' \
    "$WORK/results/$label.$name.json" 2>/dev/null || true
  sleep 2
}

for round in $(seq 1 "$ROUNDS"); do
  for name in plain rules; do run "fixed-$round" "$name" "$RATE"; done
  for name in rules plain; do run "max-$round" "$name" "$MAX_RATE"; done
done

api rules GET /metrics >/dev/null 2>&1 || true
curl -sf -H "Authorization: Bearer ${KEY[rules]}" "http://127.0.0.1:${HTTP[rules]}/api/v1/metrics" \
  | grep -E '^wulian_rules_' >"$WORK/results/rules.metrics.txt"
python3 bench/rules_report.py "$WORK/results"
