#!/usr/bin/env bash
# The job benchmark side by side: Dramatiq and Celery (../shared/peers/jobs) and Showrunner
# (bench-jobs), on this machine's RabbitMQ and PostgreSQL, in one run; prints jobs/s of each
# and Showrunner's ratio to each peer, per scenario (plain, retry).
#
#   bash tests/bench/jobs-vs-peers.sh
#
# The systems take turns, one run each per round (Dramatiq, Showrunner, Celery; BENCH_RUNS
# rounds per scenario), so a host whose speed drifts over minutes (this one's CPU time per job
# moved by half within twenty minutes) slows every system alike instead of whichever ran
# last. Each round's Showrunner / Dramatiq ratio is printed as well as the medians'. Five
# rounds, not three: a Showrunner run lasts about 3 s, and this host's speed changes from one
# run to the next by a fifth (CPU per job 264-323 us within one batch of runs of one build), so
# with three rounds one slow run could decide the median (session 24).
#
# Needs python3 with venv (the peers' venv is created on first use from PyPI), createdb/psql.
# Environment: BENCH_N (20000), BENCH_RUNS (5), PEERS_DIR, PEER_VENV (/tmp/peer-venv),
# CARGO_TARGET_DIR (target), SKIP_PEERS=1 to run Showrunner's side only, SKIP_CELERY=1 to
# leave Celery out (it takes four times as long as the others).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers/jobs}
PEER_VENV=${PEER_VENV:-/tmp/peer-venv}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${BENCH_OUT:-/tmp/jobs-vs-peers}
N=${BENCH_N:-20000}
RUNS=${BENCH_RUNS:-5}
export BENCH_N=$N
mkdir -p "$OUT"
: > "$OUT/peers.txt"
: > "$OUT/showrunner.txt"

cargo build --release -q -p showrunner-tests --bin bench-jobs

if [ "${SKIP_PEERS:-0}" != 1 ]; then
  if [ ! -x "$PEER_VENV/bin/python" ]; then
    python3 -m venv "$PEER_VENV"
    "$PEER_VENV/bin/pip" install -q 'dramatiq[rabbitmq]' celery 'psycopg[binary]'
  fi
  psql -h 127.0.0.1 -U postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'peers'" \
    | grep -q 1 || createdb -h 127.0.0.1 -U postgres peers
fi

# One run of peer script $1 (dramatiq_bench.py, celery_bench.py) in scenario $2, as the peers'
# run.sh starts it (Dramatiq with its default 8 threads per process).
peer() {
  local args=()
  [ "$1" = dramatiq_bench.py ] && args=(--threads 8)
  (cd "$PEERS_DIR" && BENCH_RUNS=1 BENCH_DSN='host=127.0.0.1 dbname=peers user=postgres' \
    "$PEER_VENV/bin/python" "$1" "${args[@]}" --scenarios "$2") | tee -a "$OUT/peers.txt"
}

for scenario in plain retry; do
  for round in $(seq 1 "$RUNS"); do
    echo "== $scenario, round $round of $RUNS"
    if [ "${SKIP_PEERS:-0}" != 1 ]; then peer dramatiq_bench.py "$scenario"; fi
    BENCH_RUNS=1 BENCH_SCENARIOS=$scenario "$TARGET/release/bench-jobs" \
      | tee -a "$OUT/showrunner.txt"
    if [ "${SKIP_PEERS:-0}" != 1 ] && [ "${SKIP_CELERY:-0}" != 1 ]; then
      peer celery_bench.py "$scenario"
    fi
  done
done

# wall_jobs_s of every run of system $1 in scenario $2, in the order they ran
walls() {
  # (A system left out, SKIP_CELERY=1, has no runs: nothing, not a failure.)
  { grep -h "^$1 .*scenario=$2 run=" "$OUT/peers.txt" "$OUT/showrunner.txt" || true; } \
    | sed -n 's/.* wall_jobs_s=\([0-9]*\).*/\1/p'
}
median() { walls "$1" "$2" | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
ratio() { if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else echo -; fi; }
echo
echo "== summary: jobs/s (median of $RUNS runs, n=$N, worker start -> last job done)"
printf '%-9s %10s %10s %12s %14s %12s   %s\n' scenario showrunner dramatiq celery 'x dramatiq' \
  'x celery' 'x dramatiq by round'
for scenario in plain retry; do
  s=$(median showrunner "$scenario"); d=$(median dramatiq "$scenario"); c=$(median celery "$scenario")
  rounds=$(paste -d' ' <(walls showrunner "$scenario") <(walls dramatiq "$scenario") \
    | awk 'NF == 2 { printf "%s%.2f", sep, $1 / $2; sep = " " }')
  printf '%-9s %10s %10s %12s %14s %12s   %s\n' "$scenario" "${s:--}" "${d:--}" "${c:--}" \
    "$(ratio "$s" "$d")" "$(ratio "$s" "$c")" "${rounds:--}"
done
