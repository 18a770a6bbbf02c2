#!/usr/bin/env bash
# Where a write's CPU goes: starts `showrunner up` as ../shared/peers/pipeline/run.sh does (own
# database and vhost, rate limits lifted, warn logs), drives POST /api/v1/episodes with the kit's
# wrk script, and prints wrk's result, the CPU each process used while wrk ran (user + system from
# /proc, in 1/100 s ticks: Showrunner, RabbitMQ's beam.smp, every postgres process), the database's
# counters (pg_stat_database), the server's WAL (pg_stat_wal) and the api's /metrics (batch handler seconds by queue).
#
#   bash tests/bench/write-profile.sh [wait|202] [SECONDS] [CONNECTIONS]
#
# Environment: SHOWRUNNER_BIN (folder of the built `showrunner`, default target/release),
# PERF=1 records `perf record -F 499 -g` of Showrunner for 10 s mid-run into /tmp/perf-MODE.data
# (PERFTARGET=-a: the whole machine), PEERS (../shared/peers/pipeline, for post.lua).
# Run it alone on the machine: every process's CPU is counted, whoever caused it.
set -uo pipefail
MODE=${1:-202} SECS=${2:-20} CONNS=${3:-64}
BIN=${SHOWRUNNER_BIN:-$PWD/target/release}
PEERS=${PEERS:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/peers/pipeline}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
MGMT=${MGMT:-http://guest:guest@127.0.0.1:15672}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
[ -f "$PEERS/post.lua" ] || { echo "no $PEERS/post.lua (set PEERS)" >&2; exit 2; }
db=write_profile_$$
psql "$PG/postgres" -qc "create database $db"
curl -sf -m 10 -X PUT "$MGMT/api/vhosts/$db" >/dev/null
curl -sf -m 10 -X PUT -H 'content-type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' "$MGMT/api/permissions/$db/guest" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SHOWRUNNER__DATABASE__URL="$PG/$db" SHOWRUNNER__AMQP__URL="amqp://guest:guest@127.0.0.1:5672/$db" \
  SHOWRUNNER__HTTP__ADDR="127.0.0.1:$port" SHOWRUNNER__OPS__ADDR=127.0.0.1:0 \
  SHOWRUNNER__LIMITS__REQUESTS_PER_SEC=1000000 SHOWRUNNER__LIMITS__REQUEST_BURST=1000000 \
  SHOWRUNNER__LOG__FILTER=warn
"$BIN/showrunner" up >"/tmp/$db.log" 2>&1 & pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  curl -sf -m 60 -X DELETE "$MGMT/api/vhosts/$db" >/dev/null
  psql "$PG/postgres" -qc "drop database if exists $db with (force)"
}
trap cleanup EXIT
for _ in $(seq 120); do curl -sf -o /dev/null -m 2 "http://127.0.0.1:$port/ready" && break; sleep 0.5; done
token=$("$BIN/showrunner" token --user bench-user --role member | tail -n 1)

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
group() { local t=0 p; for p in $(pgrep -f "$1"); do t=$((t + $(ticks "$p"))); done; echo "$t"; }
snapshot() { echo "showrunner=$(ticks "$pid") rabbitmq=$(group beam.smp) postgres=$(group postgres)"; }
pgstat() { # this database's counters, and the server's WAL (pg_stat_wal: every database's)
  psql "$PG/$db" -Atc "select 'commits=' || xact_commit || ' inserted=' || tup_inserted || \
    ' updated=' || tup_updated || ' wal_records=' || (select wal_records from pg_stat_wal) || \
    ' wal_bytes=' || (select wal_bytes from pg_stat_wal) \
    from pg_stat_database where datname = current_database()"
}

before="$(snapshot) $(pgstat)"
perf_pid=""
if [ "${PERF:-0}" = 1 ]; then
  (sleep 5; perf record -F 499 -g -o "/tmp/perf-$MODE.data" ${PERFTARGET:--p $pid} -- sleep 10 >/dev/null 2>&1) &
  perf_pid=$!
fi
wait_secs=""; [ "$MODE" = wait ] && wait_secs=30
TOKEN=$token WAIT=$wait_secs wrk -t2 -c"$CONNS" -d"${SECS}s" --timeout 35s -s "$PEERS/post.lua" \
  "http://127.0.0.1:$port" | grep '^RESULT'
after="$(snapshot) $(pgstat)"
[ -n "$perf_pid" ] && wait "$perf_pid"
echo "before: $before"
echo "after:  $after"
curl -s -m 10 "http://127.0.0.1:$port/metrics" | grep -E '^showrunner_handler_duration_seconds_(sum|count)'
sleep 3
psql "$PG/$db" -Atc "select 'episodes=' || (select count(*) from episodes) || ' commands=' || (select count(*) from commands)"
