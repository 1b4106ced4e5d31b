#!/usr/bin/env bash
# Telemetry store benchmark: wulian-tsdb (embedded, Durability::Sync) against InfluxDB 1.x
# (Debian's influxdb, WAL fsync on every write), VictoriaMetrics (Debian's victoria-metrics; it
# has no per-write fsync, see docs/benchmarks.md), PostgreSQL (ThingsBoard's ts_kv layout,
# synchronous_commit=on) and SQLite (WAL, synchronous=FULL), on this machine in the same run,
# with the same TSBS-"iot"-shaped data (crates/wulian-tsdb-bench), one engine after the other.
# Writes the results block of docs/benchmarks.md ("Telemetry store vs ...").
# Servers listen on 127.0.0.1 only; every step is bounded by `timeout`; every process started
# here is stopped on exit and the data directories are removed (the JSON reports and the
# servers' configurations and logs stay in target/bench-tsdb/results/).
#
#   bench/tsdb.sh                                   # 100 trucks x 24 h (~7.7 M values), ~10 min
#   TRUCKS=20 HOURS=6 QUERY_RUNS=10 bench/tsdb.sh   # quick
#   ENGINES="wulian victoria" bench/tsdb.sh         # a subset (the report needs wulian)
#   BENCH_BIN=... bench/tsdb.sh                     # a binary built elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TRUCKS=${TRUCKS:-100}
HOURS=${HOURS:-24}
SEED=${SEED:-1}
WRITERS=${WRITERS:-4}                  # concurrent writers (all but SQLite, which has one)
ROWS_PER_REQUEST=${ROWS_PER_REQUEST:-1000}
QUERY_RUNS=${QUERY_RUNS:-30}
QUERY_BUDGET_SECS=${QUERY_BUDGET_SECS:-10}   # a query stops repeating after this (>= 3 runs)
SETTLE_SECS=${SETTLE_SECS:-120}        # longest wait for InfluxDB's / VictoriaMetrics' merges
STEP_TIMEOUT=${STEP_TIMEOUT:-900}      # per engine
DEVICES=${DEVICES:-100000}             # the many-devices step: devices x 3 keys
MONTH_TRUCKS=${MONTH_TRUCKS:-5}         # the 30-day step (wulian only): trucks x 720 h
ENGINES=${ENGINES:-"wulian devices wulian30d influxdb victoria postgres sqlite"}
OUT=${OUT:-docs/benchmarks.md}

want() { [[ " $ENGINES " == *" $1 "* ]]; }

install_pkg() { # command, package
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "Installing $2 (apt-get)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}
want influxdb && install_pkg influxd influxdb
want victoria && install_pkg victoria-metrics victoria-metrics
if want postgres && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  install_pkg /usr/lib/postgresql/15/bin/initdb postgresql-15
fi
# The Debian packages register system services; where systemd runs, they may be started on
# their default ports. We never use them: our servers have their own ports and directories.

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
PG_DATA=""
if [ "$(id -u)" = 0 ]; then AS_PG=(runuser -u postgres --); else AS_PG=(); fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK/data"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
wait_http() { # url
  for _ in $(seq 150); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  curl -sf "$1" >/dev/null
}

SCALE=(--trucks "$TRUCKS" --hours "$HOURS" --seed "$SEED" --writers "$WRITERS"
       --rows-per-request "$ROWS_PER_REQUEST" --query-runs "$QUERY_RUNS"
       --query-budget-secs "$QUERY_BUDGET_SECS")
{
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "cores=$(nproc)"
  echo "mem=$(free -g | awk '/^Mem:/{print $2}') GiB"
  echo "kernel=$(uname -r)"
  echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "fs=$(df -T "$WORK" | awk 'NR==2{print $2}')"
  echo "influxdb=$(influxd version 2>/dev/null | head -1)"
  echo "victoria=$(dpkg-query -W -f='VictoriaMetrics ${Version}' victoria-metrics 2>/dev/null || echo 'VictoriaMetrics (version unknown)')"
  echo "postgres=$([ -n "$PG_BIN" ] && "$PG_BIN/postgres" --version)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+uncommitted')"
  echo "rustc=$(rustc --version)"
  echo "command=TRUCKS=$TRUCKS HOURS=$HOURS SEED=$SEED WRITERS=$WRITERS ROWS_PER_REQUEST=$ROWS_PER_REQUEST QUERY_RUNS=$QUERY_RUNS QUERY_BUDGET_SECS=$QUERY_BUDGET_SECS DEVICES=$DEVICES MONTH_TRUCKS=$MONTH_TRUCKS bench/tsdb.sh"
} > "$WORK/results/machine.txt"

run_step() { # name, then the command
  local name=$1; shift
  echo "== $name (load average before: $(loadavg))"
  echo "$name.load_before=$(loadavg)" >> "$WORK/results/machine.txt"
  timeout "$STEP_TIMEOUT" "$@" > "$WORK/results/$name.json"
  echo "$name.load_after=$(loadavg)" >> "$WORK/results/machine.txt"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("   %.0f values/s, %.2f B/value" % (r["values_per_sec"], r["bytes_per_value"]) if "values_per_sec" in r else "   latest of %d devices p50 %.1f ms, %.0f B/idle series" % (r["devices"], r["latest_all"]["p50_ms"], r["idle_bytes_per_series"]))' "$WORK/results/$name.json"
}

# --- wulian-tsdb, embedded -------------------------------------------------------------------
if want wulian; then
  run_step wulian "$BENCH" wulian "${SCALE[@]}" --dir "$WORK/data/wulian"
  rm -rf "$WORK/data/wulian"
fi
if want devices; then
  run_step devices "$BENCH" wulian-devices --devices "$DEVICES" --keys 3 --points 2 \
    --query-runs "$QUERY_RUNS" --dir "$WORK/data/devices"
  rm -rf "$WORK/data/devices"
fi

if want wulian30d; then
  # The goal's "30-day hourly for one device" and WAL replay at a larger size.
  run_step wulian30d "$BENCH" wulian --trucks "$MONTH_TRUCKS" --hours 720 --seed "$SEED" \
    --writers "$WRITERS" --rows-per-request "$ROWS_PER_REQUEST" --query-runs "$QUERY_RUNS" \
    --query-budget-secs "$QUERY_BUDGET_SECS" --dir "$WORK/data/wulian30d"
  rm -rf "$WORK/data/wulian30d"
fi

# --- InfluxDB 1.x ------------------------------------------------------------------------------
if want influxdb; then
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
  wait_http "http://127.0.0.1:$HTTP_PORT/ping"
  run_step influxdb "$BENCH" influx "${SCALE[@]}" --url "http://127.0.0.1:$HTTP_PORT" \
    --pid "$INFLUX_PID" --disk "$I/data" "$I/wal" --settle-secs "$SETTLE_SECS"
  kill "$INFLUX_PID"; wait "$INFLUX_PID" 2>/dev/null || true
  rm -rf "$I"
fi

# --- VictoriaMetrics ---------------------------------------------------------------------------
if want victoria; then
  VM_PORT=$(free_port)
  V="$WORK/data/victoria"
  # -retentionPeriod: the data set starts on 2026-01-01, older than the default 1 month.
  # -search.disableCache: no response cache, so repeated queries are evaluated every time.
  VM_FLAGS=(-storageDataPath "$V" -httpListenAddr "127.0.0.1:$VM_PORT" -retentionPeriod 100y
            -search.disableCache)
  echo "victoria-metrics ${VM_FLAGS[*]}" > "$WORK/results/victoria-metrics.flags"
  victoria-metrics "${VM_FLAGS[@]}" > "$WORK/results/victoria-metrics.log" 2>&1 &
  VM_PID=$!
  PIDS+=("$VM_PID")
  wait_http "http://127.0.0.1:$VM_PORT/health"
  run_step victoria "$BENCH" victoria "${SCALE[@]}" --url "http://127.0.0.1:$VM_PORT" \
    --pid "$VM_PID" --data-dir "$V" --settle-secs "$SETTLE_SECS"
  kill "$VM_PID"; wait "$VM_PID" 2>/dev/null || true
  rm -rf "$V"
fi

# --- PostgreSQL, ThingsBoard's ts_kv -------------------------------------------------------------
if want postgres; then
  PG_PORT=$(free_port)
  P="$WORK/data/postgres"
  PG_DATA="$P/data"
  mkdir -p "$P"
  [ "$(id -u)" = 0 ] && chown postgres "$P"
  "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U bench >/dev/null
  # initdb's defaults otherwise (shared_buffers 128MB, max_wal_size 1GB, fsync on,
  # synchronous_commit on, full_page_writes on): what `SHOW` reports goes into the results.
  PG_OPTS="-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$P"
  echo "postgres $PG_OPTS" > "$WORK/results/postgres.flags"
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$P/postgres.log" -w -t 60 -o "$PG_OPTS" start >/dev/null
  PG_PID=$(head -1 "$PG_DATA/postmaster.pid")
  run_step postgres "$BENCH" postgres "${SCALE[@]}" \
    --conn "host=127.0.0.1 port=$PG_PORT user=bench dbname=postgres" --pid "$PG_PID"
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
  cp "$P/postgres.log" "$WORK/results/postgres.log" 2>/dev/null || true
  rm -rf "$P"
  PG_DATA=""
fi

# --- SQLite ------------------------------------------------------------------------------------
if want sqlite; then
  run_step sqlite "$BENCH" sqlite "${SCALE[@]}" --path "$WORK/data/sqlite.db"
fi

python3 bench/tsdb_report.py "$WORK/results" "$OUT"
echo "== results written to $OUT (raw: $WORK/results)"
