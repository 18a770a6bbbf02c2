#!/usr/bin/env bash
# Realtime relay benchmark: Showrunner beside Socket.IO, same machine, same run, same generator.
#
#   bash tests/bench/realtime/run.sh
#
# Needs: RabbitMQ (127.0.0.1:5672, guest/guest, management :15672) and PostgreSQL (127.0.0.1:5432,
# user postgres) as for the integration tests; Node 20 + npm; the peer kit (read-only) at
# ../shared/peers/realtime (PEER=...). It builds the load generator (loadgen/, the peer kit's,
# with its `json` protocol adapted to Showrunner's frames) and `bench-realtime` (server.rs: a
# Showrunner stack in one process + a TCP->RabbitMQ ingest bridge), copies the peer kit to a
# temp dir and `npm ci`s it, then runs, one after the other, the Socket.IO peer (server.js,
# --proto eio) and Showrunner (--proto json) through the same matrix: 10,000 clients on 100
# topics x 100 + `all`; fan-out at rising event rates from the generator's separate publisher
# (for Showrunner: publisher -> bridge -> `showrunner.events` -> sequencer -> `showrunner.live`
# -> relay); broadcast of one event to all 10,000. It prints a side-by-side summary with the
# targets (results/summary.md) and where the CPU went (sampled per process during each window).
#
# Each system's rates rise until a step's p99 passes STOP_P99_MS (100) or deliveries fall behind
# (saturated: < 95 % of the target, a drain over 1 s, or frames lost). For Showrunner the
# generator also reads the relay's own fan-out histograms from /metrics at each window's edges
# (server side: event arrival at the relay -> frame written to the last matching socket, and per
# socket) and prints them beside the client-side latencies. The load average is recorded before
# and after each system (the machine may be shared: compare within one run only).
#
# Env: RUNS (1) server runs per system; RATES (events/s, each x100 deliveries); STOP_P99_MS
# (100); SIO_RATES (Socket.IO's list, default RATES); CONNS (10000);
# ROOMS (100); SECS (10); WARMUP (2); BCAST (30); SOURCES (external); ONLY (socketio|showrunner);
# CARGO_TARGET_DIR (default <repo>/target); OUT (results dir, default tests/bench/realtime/results);
# PIN (empty): "GEN_CPUS:SERVER_CPUS", e.g. PIN=1:0, runs the generator (and its publisher) under
# `taskset -c GEN_CPUS` and the server under `taskset -c SERVER_CPUS`, for when the generator is
# the limit (on 2 cores that leaves each one core; RabbitMQ and PostgreSQL are not pinned).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
PEER=${PEER:-$(cd "$ROOT/.." && pwd)/shared/peers/realtime}
RUNS=${RUNS:-1}
RATES=${RATES:-100,250,450,600,800,1000,1200,1400,1600,1800,2000,2500,3000}
STOP_P99_MS=${STOP_P99_MS:-100}
PIN=${PIN:-}
GEN_PIN=(); SERVER_PIN=()
if [ -n "$PIN" ]; then
  GEN_PIN=(taskset -c "${PIN%%:*}"); SERVER_PIN=(taskset -c "${PIN##*:}")
fi
SIO_RATES=${SIO_RATES:-$RATES}
CONNS=${CONNS:-10000}; ROOMS=${ROOMS:-100}; SECS=${SECS:-10}; WARMUP=${WARMUP:-2}; BCAST=${BCAST:-30}
SOURCES=${SOURCES:-external}
ONLY=${ONLY:-}
OUT=${OUT:-$HERE/results}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SIO_PORT=3000; SIO_INGEST=3001; SR_INGEST=5101

ulimit -n 65536 2>/dev/null || ulimit -n 20000
[ "$(ulimit -n)" -ge 20000 ] || { echo "ulimit -n is $(ulimit -n): need >= 20000 for 10,000 clients" >&2; exit 1; }

echo "== build (release)"
CARGO_TARGET_DIR="$TARGET_DIR/loadgen" cargo build --release --quiet --manifest-path "$HERE/loadgen/Cargo.toml"
CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" \
  -p showrunner-tests --bin bench-realtime
LOADGEN="$TARGET_DIR/loadgen/release/loadgen"
SERVER="$TARGET_DIR/release/bench-realtime"

WORK=$(mktemp -d /tmp/realtime-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

mkdir -p "$OUT"
echo "== peer kit -> $WORK"
cp "$PEER"/{package.json,package-lock.json,server.js,ws-relay.js,summarize.py} "$WORK/"
chmod -R u+w "$WORK"
(cd "$WORK" && { npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error; }) >/dev/null

# loadgen NAME PROTO URL INGEST PID RATES RUN [extra args]
loadgen() {
  local name=$1 proto=$2 url=$3 ingest=$4 pid=$5 rates=$6 run=$7
  shift 7
  "${GEN_PIN[@]}" "$LOADGEN" run --proto "$proto" --url "$url" --ingest "$ingest" --server-pid "$pid" \
    --conns "$CONNS" --rooms "$ROOMS" --rates "$rates" --sources "$SOURCES" --stop-p99-ms "$STOP_P99_MS" "$@" \
    --warmup "$WARMUP" --secs "$SECS" --bcast "$BCAST" --label "$name-r$run" --out "$OUT/$name.jsonl" 2>&1 \
    | grep --line-buffered -v '^  connecting' | tee -a "$OUT/$name.txt"
}

sampler_start() {  # sampler_start FILE SERVER_PID
  python3 "$HERE/cpusample.py" "$1" "$2" 0.5 &
  SAMPLER=$!; PIDS+=("$SAMPLER")
}
sampler_stop() { kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; }

# loadavg NAME WHEN: the machine's load average into NAME's JSONL (compare.py prints it).
loadavg() {
  read -r l1 l5 l15 _ < /proc/loadavg
  echo "{\"label\": \"$1\", \"phase\": \"loadavg\", \"when\": \"$2\", \"load1\": $l1, \"load5\": $l5, \"load15\": $l15, \"pin\": \"$PIN\"}" >> "$OUT/$1.jsonl"
  echo "# load average $2: $l1 $l5 $l15${PIN:+ (pinned generator:server $PIN)}" | tee -a "$OUT/$1.txt"
}

if [ "$ONLY" != showrunner ]; then
  : > "$OUT/socketio.jsonl"; : > "$OUT/socketio.txt"; : > "$OUT/socketio-cpu.jsonl"
  echo "# $(date -u +%FT%TZ) Socket.IO: node server.js (socket.io $(cd "$WORK" && node -p 'require("socket.io/package.json").version')), proto eio, rates $SIO_RATES, sources $SOURCES" | tee -a "$OUT/socketio.txt"
  for i in $(seq 1 "$RUNS"); do
    (cd "$WORK" && exec "${SERVER_PIN[@]}" node server.js --port $SIO_PORT --ingest-port $SIO_INGEST) > "$OUT/socketio-server-r$i.log" 2>&1 &
    SP=$!; PIDS+=("$SP")
    sleep 2
    sampler_start "$OUT/socketio-cpu.jsonl" "$SP"
    loadavg socketio before
    loadgen socketio eio "ws://127.0.0.1:$SIO_PORT/socket.io/?EIO=4&transport=websocket" "127.0.0.1:$SIO_INGEST" "$SP" "$SIO_RATES" "$i"
    loadavg socketio after
    sampler_stop
    kill "$SP"; wait "$SP" 2>/dev/null || true
    sleep 3
  done
fi

if [ "$ONLY" != socketio ]; then
  : > "$OUT/showrunner.jsonl"; : > "$OUT/showrunner.txt"; : > "$OUT/showrunner-cpu.jsonl"
  echo "# $(date -u +%FT%TZ) Showrunner: bench-realtime (api + activity worker in one process; events via RabbitMQ), proto json, rates $RATES, sources $SOURCES" | tee -a "$OUT/showrunner.txt"
  for i in $(seq 1 "$RUNS"); do
    INFO="$WORK/showrunner-r$i.info"
    "${SERVER_PIN[@]}" "$SERVER" --ingest-port $SR_INGEST --info "$INFO" > "$OUT/showrunner-server-r$i.log" 2>&1 &
    SP=$!; PIDS+=("$SP")
    for _ in $(seq 1 240); do
      [ -s "$INFO" ] && grep -q '^READY' "$INFO" && break
      kill -0 "$SP" 2>/dev/null || { echo "bench-realtime died:" >&2; cat "$OUT/showrunner-server-r$i.log" >&2; exit 1; }
      sleep 0.5
    done
    grep -q '^READY' "$INFO" || { echo "bench-realtime not ready after 120 s" >&2; exit 1; }
    URL=$(sed -n 's/^WS_URL=//p' "$INFO"); REPORTED=$(sed -n 's/^PID=//p' "$INFO")
    METRICS=$(sed -n 's/^METRICS_URL=//p' "$INFO")
    # Memory per connection is the RSS delta of the process that runs the api (here: the whole stack).
    [ "$REPORTED" = "$SP" ] || { echo "pid mismatch: started $SP, server says $REPORTED" >&2; exit 1; }
    sleep 2
    sampler_start "$OUT/showrunner-cpu.jsonl" "$SP"
    loadavg showrunner before
    loadgen showrunner json "$URL" "127.0.0.1:$SR_INGEST" "$SP" "$RATES" "$i" --metrics "$METRICS"
    loadavg showrunner after
    sampler_stop
    kill -TERM "$SP"; wait "$SP" 2>/dev/null || true   # SIGTERM: the stack drops its database and vhost
    sleep 3
  done
fi

echo
python3 "$HERE/compare.py" "$OUT/socketio.jsonl" "$OUT/showrunner.jsonl" "$OUT/showrunner-cpu.jsonl" "$OUT/socketio-cpu.jsonl" \
  | tee "$OUT/summary.md"
rm -rf "$WORK"
