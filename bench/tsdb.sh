#!/usr/bin/env bash
# Telemetry store benchmark: wulian-tsdb (embedded, Durability::Sync) against InfluxDB 1.x
# (Debian's influxdb package, WAL fsync on every write) and SQLite (WAL, synchronous=FULL), on
# this machine in the same run, with the same TSBS-"iot"-shaped data (crates/wulian-tsdb-bench).
# Writes the results block of docs/benchmarks.md ("Telemetry store vs InfluxDB and SQLite").
# InfluxDB listens on 127.0.0.1 only; every step is bounded by `timeout`; every process started
# here is stopped on exit and the data directories are removed (the JSON reports stay in
# target/bench-tsdb/results/).
#
#   bench/tsdb.sh                                   # 100 trucks x 24 h (~7.8 M values)
#   TRUCKS=20 HOURS=6 QUERY_RUNS=10 bench/tsdb.sh   # quick
#   BENCH_BIN=... bench/tsdb.sh                     # a binary built elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TRUCKS=${TRUCKS:-100}
HOURS=${HOURS:-24}
SEED=${SEED:-1}
WRITERS=${WRITERS:-4}                  # concurrent writers (wulian, InfluxDB; SQLite has one)
ROWS_PER_REQUEST=${ROWS_PER_REQUEST:-1000}
QUERY_RUNS=${QUERY_RUNS:-30}
SETTLE_SECS=${SETTLE_SECS:-120}        # longest wait for InfluxDB's compactions
STEP_TIMEOUT=${STEP_TIMEOUT:-600}      # per engine
OUT=${OUT:-docs/benchmarks.md}

if ! command -v influxd >/dev/null 2>&1; then
  echo "Installing influxdb (apt-get)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb >/dev/null
fi
# The Debian package registers a system service; where systemd runs, it may be started on
# 8086. We never use it: our influxd has its own ports and directories.

if [ -z "${BENCH_BIN:-}" ]; then
  echo "== building (release)"
  cargo build --release -q -p wulian-tsdb-bench
fi
BENCH=${BENCH_BIN:-"$ROOT/target/release/wulian-tsdb-bench"}

# On the project's disk (ext4, not tmpfs), so fsyncs cost what they cost.
WORK="$ROOT/target/bench-tsdb"
rm -rf "$WORK"
mkdir -p "$WORK/results" "$WORK/data"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK/data"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

SCALE=(--trucks "$TRUCKS" --hours "$HOURS" --seed "$SEED" --writers "$WRITERS"
       --rows-per-request "$ROWS_PER_REQUEST" --query-runs "$QUERY_RUNS")
{
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "cores=$(nproc)"
  echo "mem=$(free -g | awk '/^Mem:/{print $2}') GiB"
  echo "kernel=$(uname -r)"
  echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "fs=$(df -T "$WORK" | awk 'NR==2{print $2}')"
  echo "influxdb=$(influxd version 2>/dev/null | head -1)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+uncommitted')"
  echo "rustc=$(rustc --version)"
  echo "command=TRUCKS=$TRUCKS HOURS=$HOURS SEED=$SEED WRITERS=$WRITERS ROWS_PER_REQUEST=$ROWS_PER_REQUEST QUERY_RUNS=$QUERY_RUNS bench/tsdb.sh"
} > "$WORK/results/machine.txt"

run_step() { # name, then the command
  local name=$1; shift
  echo "== $name (load average before: $(loadavg))"
  echo "$name.load_before=$(loadavg)" >> "$WORK/results/machine.txt"
  timeout "$STEP_TIMEOUT" "$@" > "$WORK/results/$name.json"
  echo "$name.load_after=$(loadavg)" >> "$WORK/results/machine.txt"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("   %.0f values/s, %.2f B/value" % (r["values_per_sec"], r["bytes_per_value"]))' "$WORK/results/$name.json"
}

# --- wulian-tsdb, embedded -------------------------------------------------------------------
run_step wulian "$BENCH" wulian "${SCALE[@]}" --dir "$WORK/data/wulian"
rm -rf "$WORK/data/wulian"

# --- InfluxDB 1.x ------------------------------------------------------------------------------
HTTP_PORT=$(free_port); RPC_PORT=$(free_port)
I="$WORK/data/influx"
mkdir -p "$I"
cat > "$WORK/results/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$RPC_PORT"
[meta]
  dir = "$I/meta"
[data]
  dir = "$I/data"
  wal-dir = "$I/wal"
  # fsync the WAL on every write before answering (this is the default; stated for clarity)
  wal-fsync-delay = "0s"
  index-version = "inmem"
  # defaults are 10m and 4h: shortened so the cache is snapshotted and the shard fully
  # compacted within the benchmark, before bytes on disk are measured (no effect on durability)
  cache-snapshot-write-cold-duration = "5s"
  compact-full-write-cold-duration = "10s"
  query-log-enabled = false
[coordinator]
  log-queries-after = "0s"
[retention]
  enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:$HTTP_PORT"
  auth-enabled = false
  log-enabled = false
  max-body-size = 0
[continuous_queries]
  enabled = false
CONF
influxd -config "$WORK/results/influxdb.conf" > "$WORK/results/influxd.log" 2>&1 &
INFLUX_PID=$!
PIDS+=("$INFLUX_PID")
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null
run_step influxdb "$BENCH" influx "${SCALE[@]}" --url "http://127.0.0.1:$HTTP_PORT" \
  --pid "$INFLUX_PID" --disk "$I/data" "$I/wal" --settle-secs "$SETTLE_SECS"
kill "$INFLUX_PID"; wait "$INFLUX_PID" 2>/dev/null || true
rm -rf "$I"

# --- SQLite ------------------------------------------------------------------------------------
run_step sqlite "$BENCH" sqlite "${SCALE[@]}" --path "$WORK/data/sqlite.db"

python3 bench/tsdb_report.py "$WORK/results" "$OUT"
echo "== results written to $OUT (raw: $WORK/results)"
