#!/usr/bin/env bash
# Bike-share benchmark: one `wulian serve` carrying a simulated city (N smart-lock bikes, riders
# renting at a fixed rate), measured by `wulian-bench bikeshare` (crates/wulian-bench). Writes
# the JSON report to target/bench-bikeshare/report.json; docs/benchmarks.md ("Bike share")
# records the numbers. Everything listens on 127.0.0.1, the load is bounded in time, and the
# server is stopped on exit.
#
#   bench/bikeshare.sh                                 # 100,000 bikes, 200 trips/s, 60 s
#   BIKES=10000 RATE=50 DURATION=30 bench/bikeshare.sh # a quick run
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BIKES=${BIKES:-100000}
RATE=${RATE:-200}                 # trip starts offered per second
DURATION=${DURATION:-60}          # seconds of offered load
RIDE=${RIDE:-10}                  # seconds from unlock to the lock closing
PARKING_ZONES=${PARKING_ZONES:-2000}
SOURCE_ADDRS=${SOURCE_ADDRS:-8}   # 127.0.0.1 .. 127.0.0.N as lock source addresses
THREADS=${THREADS:-2}             # load generator's tokio workers
# Locks holding an MQTT connection; the rest connect, report and disconnect on their interval.
# Default: what the open-file limit allows both processes (each holds one socket per lock).
NOFILE=$(ulimit -Hn)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
ulimit -n "$NOFILE"
DEFAULT_CONNECTED=$((NOFILE - 1500))
MAX_CONNECTED=${MAX_CONNECTED:-$((DEFAULT_CONNECTED < BIKES ? DEFAULT_CONNECTED : BIKES))}

if [ -z "${WULIAN_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  echo "== building (release)"
  cargo build --release --locked -q -p wulian -p wulian-bench
fi
BENCH=${BENCH_BIN:-"$ROOT/target/release/wulian-bench"}
WULIAN=${WULIAN_BIN:-"$ROOT/target/release/wulian"}

# On the project's disk (not tmpfs), so the bike share's fsyncs cost what they cost.
WORK="$ROOT/target/bench-bikeshare"
rm -rf "$WORK/data"
mkdir -p "$WORK"
PID=""
cleanup() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
HTTP_PORT=$(free_port)
MQTT_PORT=$(free_port)
cat >"$WORK/wulian.toml" <<CONF
[mqtt]
max_connections = $((BIKES + 10000))
[log]
filter = "warn"
CONF
echo "== wulian serve (open files: $(ulimit -n), locks connected: $MAX_CONNECTED of $BIKES)"
"$WULIAN" serve --config "$WORK/wulian.toml" --http-addr "127.0.0.1:$HTTP_PORT" \
  --mqtt-addr "127.0.0.1:$MQTT_PORT" --data-dir "$WORK/data" >"$WORK/serve.out" 2>"$WORK/serve.log" &
PID=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break
  sleep 0.1
done
KEY=$(sed -n 's/^admin API key: //p' "$WORK/serve.out" | head -1)
[ -n "$KEY" ] || { echo "wulian printed no admin key" >&2; exit 1; }

# The outer timeout is a safety net: the bench stops by itself (setup, DURATION, drain).
timeout $((DURATION + 1800)) "$BENCH" --port "$MQTT_PORT" --broker-pid "$PID" --label wulian \
  --threads "$THREADS" --connect-concurrency 128 \
  bikeshare --url "http://127.0.0.1:$HTTP_PORT" --api-key "$KEY" --bikes "$BIKES" \
  --max-connected "$MAX_CONNECTED" --rate "$RATE" --duration-secs "$DURATION" --ride-secs "$RIDE" \
  --parking-zones "$PARKING_ZONES" --source-addrs "$SOURCE_ADDRS" \
  >"$WORK/report.json" 2>"$WORK/bench.err" || { tail -5 "$WORK/bench.err"; exit 1; }
ls -l "$WORK/data/bikeshare/" >"$WORK/bikeshare-files.txt" 2>/dev/null || true
{
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "cores=$(nproc)"
  echo "memory=$(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel=$(uname -r)"
  echo "open_files=$(ulimit -n)"
  echo "wulian=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + uncommitted changes')"
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
} >"$WORK/machine.txt"
cat "$WORK/bench.err"
jq . "$WORK/report.json" 2>/dev/null || cat "$WORK/report.json"
echo "== report: $WORK/report.json"
