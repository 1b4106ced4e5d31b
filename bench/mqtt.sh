#!/usr/bin/env bash
# MQTT broker benchmark: wulian against Mosquitto, side by side on this machine, with the same
# load generator (crates/wulian-bench) and the same scenarios. Writes the results block of
# docs/benchmarks.md ("MQTT broker vs Mosquitto"). Everything listens on 127.0.0.1 only, every
# load is bounded in time, and every process started here is stopped on exit.
#
#   bench/mqtt.sh                 # defaults below (about 5 minutes)
#   DURATION=20 FANIN_CLIENTS=1000 CONNECTIONS=5000 bench/mqtt.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-15}            # seconds of load per message scenario
FANIN_CLIENTS=${FANIN_CLIENTS:-1000}
FANIN_RATE=${FANIN_RATE:-10000}     # offered msgs/s over all fan-in clients (below the
                                    # load generator's own ceiling on 2 shared cores)
FANIN_MAX_RATE=${FANIN_MAX_RATE:-50000} # offered msgs/s for the saturation run
FANOUT_SUBS=${FANOUT_SUBS:-1000}
FANOUT_RATE=${FANOUT_RATE:-20}      # publisher msgs/s; deliveries = rate x subscribers
QOS2_CLIENTS=${QOS2_CLIENTS:-200}
QOS2_RATE=${QOS2_RATE:-5000}
CONNECTIONS=${CONNECTIONS:-5000}
TLS_CONNECTIONS=${TLS_CONNECTIONS:-3000} # idle connections over mutual TLS (0: skip)
# The raw-client scenarios (`wulian-bench fan-in --raw`: the codec, one task per connection,
# publishes pipelined up to the in-flight window): cheap enough that the broker, not the load
# generator, is the ceiling. RAW_MAX_RATE is offered to find the acknowledgement ceiling; the
# sweep offers each rate with a subscriber on devices/+/telemetry and the report keeps each
# broker's highest delivered rate.
RAW_MAX_RATE=${RAW_MAX_RATE:-200000}
RAW_SWEEP=${RAW_SWEEP:-"20000 40000 60000 80000 100000 150000 200000"}
SWEEP_DURATION=${SWEEP_DURATION:-5}
QOS2_RAW_RATE=${QOS2_RAW_RATE:-50000}
SOURCE_ADDRS=${SOURCE_ADDRS:-4}     # 127.0.0.1 .. 127.0.0.N as client source addresses
OUT=${OUT:-docs/benchmarks.md}
# wulian's wildcard and fan-out subscribers log in as an application (docs/mqtt.md): any
# username, an API key as the password; by default the admin key printed on first start.
WULIAN_SUB_USER=${WULIAN_SUB_USER:-apikey}
WULIAN_SUB_PASSWORD=${WULIAN_SUB_PASSWORD:-}

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "Installing mosquitto (apt-get)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
# mosquitto's Debian package starts a system service on port 1883; we never use it.

# Thousands of sockets in the load generator and in each broker.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# WULIAN_BIN / BENCH_BIN: use binaries built elsewhere (e.g. from another commit) instead.
if [ -z "${WULIAN_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  echo "== building (release)"
  cargo build --release --locked -q -p wulian -p wulian-bench
fi
BENCH=${BENCH_BIN:-"$ROOT/target/release/wulian-bench"}
WULIAN=${WULIAN_BIN:-"$ROOT/target/release/wulian"}

# On the project's disk (not tmpfs), so wulian's fsyncs cost what they cost.
WORK="$ROOT/target/bench-mqtt"
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

wait_port() { # host port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1:$2" >&2
  return 1
}

# Mutual TLS: one CA, one server certificate and a certificate per device (CN = device id),
# all ECDSA P-256, for both brokers. Device ids are those provisioned below (bench-000000…).
CERTS="$WORK/certs"
if [ "$TLS_CONNECTIONS" -gt 0 ]; then
  "$BENCH" device-certs --out "$CERTS" --count "$TLS_CONNECTIONS" >"$WORK/results/device-certs.json"
fi

# --- Mosquitto: settings matched to wulian's defaults (mqtt.max_inflight = 64,
#     mqtt.outgoing_queue = 1000), no persistence, TCP_NODELAY like wulian. Its TLS listener
#     requires a client certificate from the same CA and takes the CN as the username.
MQ_PORT=$(free_port)
MQ_TLS_PORT=$(free_port)
MQ_TLS_LISTENER=""
if [ "$TLS_CONNECTIONS" -gt 0 ]; then
  MQ_TLS_LISTENER="listener $MQ_TLS_PORT 127.0.0.1
cafile $CERTS/ca.pem
certfile $CERTS/server.pem
keyfile $CERTS/server.key
require_certificate true
use_identity_as_username true"
fi
cat >"$WORK/mosquitto.conf" <<CONF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
$MQ_TLS_LISTENER
max_inflight_messages 64
max_queued_messages 1000
set_tcp_nodelay true
persistence false
max_connections -1
log_dest stderr
log_type error
log_type warning
CONF
"$MOSQUITTO" -c "$WORK/mosquitto.conf" 2>"$WORK/mosquitto.log" &
MQ_PID=$!
PIDS+=("$MQ_PID")
wait_port 127.0.0.1 "$MQ_PORT"

# --- wulian serve with its defaults (durability = sync: a QoS 1 PUBACK waits for fsync).
start_wulian() { # name extra-args... -> sets S_PID S_HTTP S_PORT S_KEY
  local name=$1
  shift
  S_HTTP=$(free_port)
  S_PORT=$(free_port)
  "$WULIAN" serve --http-addr "127.0.0.1:$S_HTTP" --mqtt-addr "127.0.0.1:$S_PORT" \
    --data-dir "$WORK/$name-data" "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
  S_PID=$!
  PIDS+=("$S_PID")
  wait_port 127.0.0.1 "$S_PORT"
  wait_port 127.0.0.1 "$S_HTTP"
  # The admin key is printed on the first start only (a restart keeps the one it had).
  S_KEY=$(sed -n 's/^admin API key: //p' "$WORK/$name.out" | head -1)
  [ -n "$S_KEY" ] || [ -n "${WL_KEY:-}" ] || { echo "wulian printed no admin key" >&2; return 1; }
}
# wulian's configuration: no connection limit of its own, like Mosquitto's
# `max_connections -1` (the process's open-file limit bounds both), and a TLS listener on the
# same server certificate, device certificates required.
WL_TLS_PORT=$(free_port)
{
  echo "[mqtt]"
  echo "max_connections = 1000000"
  if [ "$TLS_CONNECTIONS" -gt 0 ]; then
    cat <<CONF

[[mqtt.listeners]]
kind = "tls"
addr = "127.0.0.1:$WL_TLS_PORT"
cert = "$CERTS/server.pem"
key = "$CERTS/server.key"
client_auth = "required"
CONF
  fi
} >"$WORK/wulian.toml"
TLS_CONFIG=(--config "$WORK/wulian.toml")
start_wulian wulian "${TLS_CONFIG[@]}"
WL_PID=$S_PID WL_HTTP=$S_HTTP WL_PORT=$S_PORT WL_KEY=$S_KEY

DEVICES=$((CONNECTIONS > FANIN_CLIENTS ? CONNECTIONS : FANIN_CLIENTS))
echo "== provisioning $DEVICES wulian devices"
"$BENCH" provision --url "http://127.0.0.1:$WL_HTTP" --api-key "$WL_KEY" --count "$DEVICES" \
  --out "$WORK/wulian.creds" --parallel 4 | tee "$WORK/results/provision.json"
if [ "$TLS_CONNECTIONS" -gt 0 ]; then
  # The tenant's device CA (docs/mqtt.md, "Device certificates"); listeners reload it within 1 s.
  jq -n --rawfile pem "$CERTS/ca.pem" '{name: "bench", certificate: $pem}' \
    | curl -sf -X POST -H "Authorization: Bearer $WL_KEY" -H 'Content-Type: application/json' \
      --data-binary @- "http://127.0.0.1:$WL_HTTP/api/v1/ca-certificates" >/dev/null
  sleep 2
fi

# run NAME TARGET ARGS...: one bounded load; the JSON report (or the error) is kept.
run() {
  local name=$1 target=$2
  shift 2
  local port pid creds=()
  case $target in
    mosquitto) port=$MQ_PORT pid=$MQ_PID ;;
    wulian) port=$WL_PORT pid=$WL_PID creds=(--credentials-file "$WORK/wulian.creds") ;;
  esac
  # TLS scenarios connect to each broker's TLS listener.
  if [[ $name == *-mtls ]]; then
    case $target in
      mosquitto) port=$MQ_TLS_PORT ;;
      wulian) port=$WL_TLS_PORT ;;
    esac
  fi
  echo "== $name against $target"
  # The outer timeout is a safety net only: every scenario already stops by itself.
  if timeout 300 "$BENCH" --port "$port" --broker-pid "$pid" --label "$target" "${creds[@]}" "$@" \
    >"$WORK/results/$name.$target.json" 2>"$WORK/results/$name.$target.err"; then
    jq -c '{scenario, label, published: .published.completed_per_sec, delivered: .delivered.per_sec, connected, errors, first_error}' \
      "$WORK/results/$name.$target.json" 2>/dev/null || cat "$WORK/results/$name.$target.json"
  else
    echo "   failed: $(grep -m1 '^Error: ' "$WORK/results/$name.$target.err" || tail -1 "$WORK/results/$name.$target.err")"
  fi
  sleep 2 # let the broker settle between runs
}

sub_args() { # target: a wildcard/fan-out subscriber's credentials
  if [ "$1" = wulian ]; then
    echo "--subscriber-user $WULIAN_SUB_USER --subscriber-password ${WULIAN_SUB_PASSWORD:-$WL_KEY}"
  fi
}

metric() { # name: wulian's counter value
  curl -s -H "Authorization: Bearer $WL_KEY" "http://127.0.0.1:$WL_HTTP/api/v1/metrics" \
    | awk -v m="$1" '$1 == m {print $2}'
}

LOAD=(--duration-secs "$DURATION" --drain-secs 3)
for target in mosquitto wulian; do
  before=$( [ $target = wulian ] && metric wulian_mqtt_publish_received_total || echo 0)
  run fan-in "$target" fan-in --clients "$FANIN_CLIENTS" --rate "$FANIN_RATE" --qos 1 "${LOAD[@]}"
  if [ $target = wulian ]; then
    after=$(metric wulian_mqtt_publish_received_total)
    echo "{\"publish_received\": $(( ${after:-0} - ${before:-0} ))}" >"$WORK/results/fan-in.wulian.server.json"
  fi
done
for target in mosquitto wulian; do
  run fan-in-max "$target" fan-in --clients "$FANIN_CLIENTS" --rate "$FANIN_MAX_RATE" --qos 1 "${LOAD[@]}"
done
for target in mosquitto wulian; do
  # shellcheck disable=SC2046
  run fan-in-sub "$target" fan-in --clients "$FANIN_CLIENTS" --rate "$FANIN_RATE" --qos 1 \
    --subscribe 'devices/+/telemetry' $(sub_args $target) "${LOAD[@]}"
done
for target in mosquitto wulian; do
  # shellcheck disable=SC2046
  run fan-out "$target" fan-out --subscribers "$FANOUT_SUBS" --rate "$FANOUT_RATE" --qos 1 \
    --duration-secs "$DURATION" --drain-secs 3 $(sub_args $target)
done
for target in mosquitto wulian; do
  run qos2 "$target" qos2 --clients "$QOS2_CLIENTS" --rate "$QOS2_RATE" "${LOAD[@]}"
done
# Raw client: latency with a subscriber at the fixed rate, QoS 1 and QoS 0.
for qos in 1 0; do
  for target in mosquitto wulian; do
    # shellcheck disable=SC2046
    run "fan-in-raw-sub-q$qos" "$target" fan-in --raw --clients "$FANIN_CLIENTS" --rate "$FANIN_RATE" \
      --qos "$qos" --subscribe 'devices/+/telemetry' $(sub_args $target) "${LOAD[@]}"
  done
done
# Raw client: the acknowledgement ceiling (QoS 1, no subscriber) and QoS 2's.
for target in mosquitto wulian; do
  run fan-in-raw-max "$target" fan-in --raw --clients "$FANIN_CLIENTS" --rate "$RAW_MAX_RATE" \
    --qos 1 "${LOAD[@]}"
done
for target in mosquitto wulian; do
  run qos2-raw "$target" qos2 --raw --clients "$FANIN_CLIENTS" --rate "$QOS2_RAW_RATE" "${LOAD[@]}"
done
# Raw client: delivered to the subscriber per second, offered rate by offered rate.
for qos in 1 0; do
  for rate in $RAW_SWEEP; do
    for target in mosquitto wulian; do
      # shellcheck disable=SC2046
      run "fan-in-raw-sweep-q$qos-$rate" "$target" fan-in --raw --clients "$FANIN_CLIENTS" \
        --rate "$rate" --qos "$qos" --subscribe 'devices/+/telemetry' $(sub_args $target) \
        --duration-secs "$SWEEP_DURATION" --drain-secs 3
    done
  done
done
# Connection memory is measured on fresh processes: a broker that ran the message scenarios
# hands the new connections memory those freed, and its RSS hardly grows (an earlier version
# of this script reported 4.0 KiB per wulian connection that way, against 7.2 KiB fresh).
fresh_brokers() {
  kill "$MQ_PID" "$WL_PID"
  wait "$MQ_PID" "$WL_PID" 2>/dev/null || true
  "$MOSQUITTO" -c "$WORK/mosquitto.conf" 2>>"$WORK/mosquitto.log" &
  MQ_PID=$!
  PIDS+=("$MQ_PID")
  wait_port 127.0.0.1 "$MQ_PORT"
  start_wulian wulian "${TLS_CONFIG[@]}"
  WL_PID=$S_PID WL_HTTP=$S_HTTP WL_PORT=$S_PORT
  if [ "$TLS_CONNECTIONS" -gt 0 ]; then wait_port 127.0.0.1 "$WL_TLS_PORT"; fi
  sleep 2
}
fresh_brokers
for target in mosquitto wulian; do
  run connections "$target" connections --count "$CONNECTIONS" --source-addrs "$SOURCE_ADDRS" \
    --duration-secs 120 --hold-secs 3 --connect-concurrency 64
done
if [ "$TLS_CONNECTIONS" -gt 0 ]; then
  fresh_brokers
  for target in mosquitto wulian; do
    run connections-mtls "$target" connections --count "$TLS_CONNECTIONS" \
      --source-addrs "$SOURCE_ADDRS" --duration-secs 120 --hold-secs 3 --connect-concurrency 64 \
      --tls-ca "$CERTS/ca.pem" --client-certs "$CERTS/devices"
  done
fi

# Machine and versions, for the record.
{
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "cores=$(nproc)"
  echo "memory=$(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel=$(uname -r)"
  echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "mosquitto=$("$MOSQUITTO" -h | head -1)"
  echo "wulian=${WULIAN_VERSION:-$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + uncommitted changes')}"
  echo "rustc=$(rustc --version)"
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "duration=$DURATION"
  echo "sweep_duration=$SWEEP_DURATION"
  echo "raw_sweep=$RAW_SWEEP"
} >"$WORK/results/machine.txt"

python3 bench/mqtt_report.py "$WORK/results" "$OUT"
echo "== results written to $OUT"
