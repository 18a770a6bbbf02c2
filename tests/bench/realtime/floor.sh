#!/usr/bin/env bash
# The machine's floor for the realtime benchmark: the same generator and method as run.sh, against
#   floor: loadgen/src/bin/floor.rs, the leanest Rust relay we could write (no broker, no database;
#          each event serialised once with its WebSocket header, written straight into each
#          subscriber's socket from 2 shard tasks on a 2-worker tokio runtime), proto json;
#   ws:    the peer kit's bare Node relay (ws-relay.js on the `ws` package), proto json-sub (the
#          peer kit's unadapted json: `{"op":"sub"}`);
#   sio:   (only if asked: TARGETS="floor ws sio") the peer kit's Socket.IO relay (server.js), proto
#          eio, as run.sh runs it: the three side by side in one session.
#
#   bash tests/bench/realtime/floor.sh       # ~10 min on 2 vCPUs; prints results/floor/summary.md
#
# On a machine shared with other benchmarks, run it under `flock -o /tmp/bench.lock` (-o: the
# relays it starts must not inherit the lock).
# Env: RUNS (2) server runs per system; TARGETS ("floor ws"; or any of floor ws sio); RATES (run.sh's list + 3500,4000,5000;
# each system stops at its first saturated step); CONNS (10000); ROOMS (100); SECS (10); WARMUP (2);
# BCAST (30); FLOOR_ARGS ("--threads 2 --shards 2"); PEER (../shared/peers/realtime);
# CARGO_TARGET_DIR (default <repo>/target); OUT (default tests/bench/realtime/results/floor).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
PEER=${PEER:-$(cd "$ROOT/.." && pwd)/shared/peers/realtime}
RUNS=${RUNS:-2}
TARGETS=${TARGETS:-floor ws}
RATES=${RATES:-100,250,450,600,800,1000,1350,1600,2000,2500,3000,3500,4000,5000}
CONNS=${CONNS:-10000}; ROOMS=${ROOMS:-100}; SECS=${SECS:-10}; WARMUP=${WARMUP:-2}; BCAST=${BCAST:-30}
FLOOR_ARGS=${FLOOR_ARGS:---threads 2 --shards 2}
OUT=${OUT:-$HERE/results/floor}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

ulimit -n 65536 2>/dev/null || ulimit -n 20000
[ "$(ulimit -n)" -ge 20000 ] || { echo "ulimit -n is $(ulimit -n): need >= 20000 for 10,000 clients" >&2; exit 1; }

echo "== build (release): loadgen + floor"
CARGO_TARGET_DIR="$TARGET_DIR/loadgen" cargo build --release --quiet --manifest-path "$HERE/loadgen/Cargo.toml" --bins
LOADGEN="$TARGET_DIR/loadgen/release/loadgen"
FLOOR="$TARGET_DIR/loadgen/release/floor"

WORK=$(mktemp -d /tmp/realtime-floor.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT"

if [[ " $TARGETS " == *" ws "* || " $TARGETS " == *" sio "* ]]; then
  echo "== peer kit -> $WORK"
  cp "$PEER"/{package.json,package-lock.json,ws-relay.js,server.js} "$WORK/"
  chmod -R u+w "$WORK"
  (cd "$WORK" && { npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error; }) >/dev/null
fi

for sys in $TARGETS; do
  case $sys in
    floor) PORT=4100; PROTO=json;     URL="ws://127.0.0.1:$PORT/"; VERSION="floor ($FLOOR_ARGS)";;
    ws)    PORT=4000; PROTO=json-sub; URL="ws://127.0.0.1:$PORT/"
           VERSION="node $(node --version) ws $(cd "$WORK" && node -p 'require("ws/package.json").version')";;
    sio)   PORT=3000; PROTO=eio;      URL="ws://127.0.0.1:$PORT/socket.io/?EIO=4&transport=websocket"
           VERSION="node $(node --version) socket.io $(cd "$WORK" && node -p 'require("socket.io/package.json").version')";;
    *) echo "unknown target $sys" >&2; exit 2;;
  esac
  : > "$OUT/$sys.jsonl"; : > "$OUT/$sys.txt"; : > "$OUT/$sys-cpu.jsonl"
  echo "# $(date -u +%FT%TZ) $sys: $VERSION, proto $PROTO, rates $RATES, sources external, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/$sys.txt"
  for i in $(seq 1 "$RUNS"); do
    if [ "$sys" = floor ]; then
      # shellcheck disable=SC2086  # FLOOR_ARGS is a list of flags
      "$FLOOR" --port $PORT --ingest-port $((PORT + 1)) $FLOOR_ARGS > "$OUT/$sys-server-r$i.log" 2>&1 &
    else
      JS=ws-relay.js; [ "$sys" = sio ] && JS=server.js
      (cd "$WORK" && exec node $JS --port $PORT --ingest-port $((PORT + 1))) > "$OUT/$sys-server-r$i.log" 2>&1 &
    fi
    SP=$!; PIDS+=("$SP")
    sleep 2
    kill -0 "$SP" 2>/dev/null || { echo "$sys relay died:" >&2; cat "$OUT/$sys-server-r$i.log" >&2; exit 1; }
    python3 "$HERE/cpusample.py" "$OUT/$sys-cpu.jsonl" "$SP" 0.5 &
    SAMPLER=$!; PIDS+=("$SAMPLER")
    "$LOADGEN" run --proto "$PROTO" --url "$URL" --ingest "127.0.0.1:$((PORT + 1))" --server-pid "$SP" \
      --conns "$CONNS" --rooms "$ROOMS" --rates "$RATES" --sources external \
      --warmup "$WARMUP" --secs "$SECS" --bcast "$BCAST" --label "$sys-r$i" --out "$OUT/$sys.jsonl" 2>&1 \
      | grep --line-buffered -v '^  connecting' | tee -a "$OUT/$sys.txt"
    kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
    kill "$SP" 2>/dev/null || true; wait "$SP" 2>/dev/null || true
    sleep 3
  done
done

echo
# shellcheck disable=SC2086
python3 "$HERE/floorsum.py" "$OUT" $TARGETS | tee "$OUT/summary.md"
