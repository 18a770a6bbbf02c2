#!/usr/bin/env bash
# The job benchmark side by side: Dramatiq and Celery (../shared/peers/jobs) and Showrunner
# (bench-jobs), on this machine's RabbitMQ and PostgreSQL, in one run; prints jobs/s of each
# and Showrunner's ratio to each peer, per scenario (plain, retry).
#
#   bash tests/bench/jobs-vs-peers.sh
#
# Needs python3 with venv (the peers' venv is created on first use from PyPI), createdb/psql.
# Environment: BENCH_N (20000), BENCH_RUNS (3), PEERS_DIR, PEER_VENV (/tmp/peer-venv),
# CARGO_TARGET_DIR (target), SKIP_PEERS=1 to run Showrunner's side only.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers/jobs}
PEER_VENV=${PEER_VENV:-/tmp/peer-venv}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${BENCH_OUT:-/tmp/jobs-vs-peers}
export BENCH_N=${BENCH_N:-20000} BENCH_RUNS=${BENCH_RUNS:-3}
mkdir -p "$OUT"

cargo build --release -q -p showrunner-tests --bin bench-jobs

if [ "${SKIP_PEERS:-0}" != 1 ]; then
  if [ ! -x "$PEER_VENV/bin/python" ]; then
    python3 -m venv "$PEER_VENV"
    "$PEER_VENV/bin/pip" install -q 'dramatiq[rabbitmq]' celery 'psycopg[binary]'
  fi
  psql -h 127.0.0.1 -U postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'peers'" \
    | grep -q 1 || createdb -h 127.0.0.1 -U postgres peers
  echo "== peers ($PEERS_DIR)"
  BENCH_DSN='host=127.0.0.1 dbname=peers user=postgres' PEER_PY="$PEER_VENV/bin/python" \
    bash "$PEERS_DIR/run.sh" | tee "$OUT/peers.txt"
else
  : > "$OUT/peers.txt"
fi

echo "== showrunner"
"$TARGET/release/bench-jobs" | tee "$OUT/showrunner.txt"

# wall_jobs_s of the MEDIAN line of system $1 in scenario $2
median() {
  grep -h "^MEDIAN $1 .*scenario=$2 " "$OUT/peers.txt" "$OUT/showrunner.txt" \
    | sed -n 's/.* wall_jobs_s=\([0-9]*\).*/\1/p' | head -1
}
echo
echo "== summary: jobs/s (median of $BENCH_RUNS runs, n=$BENCH_N, worker start -> last job done)"
printf '%-9s %10s %10s %12s %14s %12s\n' scenario showrunner dramatiq celery 'x dramatiq' 'x celery'
for scenario in plain retry; do
  s=$(median showrunner "$scenario"); d=$(median dramatiq "$scenario"); c=$(median celery "$scenario")
  ratio() { if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else echo -; fi; }
  printf '%-9s %10s %10s %12s %14s %12s\n' "$scenario" "${s:--}" "${d:--}" "${c:--}" \
    "$(ratio "$s" "$d")" "$(ratio "$s" "$c")"
done
