#!/usr/bin/env bash
# Measures what the connection budget promises: runs `showrunner up` (every role, each with its
# own pool) on a fresh database and vhost of the local PostgreSQL and RabbitMQ, sends bursts of
# writes, reads and jobs, samples pg_stat_activity every 200 ms, and prints the peak number of
# connections per role (application_name) and in all, the answers' status codes, and the
# commands and jobs left unfinished (nothing accepted may be lost).
#
# usage: deploy/measure-connections.sh [BURSTS] [REQUESTS_PER_BURST]     (default 3 x 100)
# Environment: SHOWRUNNER_BIN_DIR (where `showrunner` was built; default
#   ${CARGO_TARGET_DIR:-~/.cache/showrunner/target}/debug), PGHOST/PGPORT (127.0.0.1:5432,
#   user postgres), MANAGEMENT (http://127.0.0.1:15672, guest/guest), and any SHOWRUNNER__*
#   setting (e.g. SHOWRUNNER__DATABASE__MAX_CONNECTIONS=4 to watch a small pool run out).
set -euo pipefail

BURSTS=${1:-3}
PER_BURST=${2:-100}
BIN=${SHOWRUNNER_BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/showrunner/target}/debug}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
MANAGEMENT=${MANAGEMENT:-http://127.0.0.1:15672}
NAME=sr_measure_$(date +%s)_$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/showrunner-measure.XXXXXX")
PORT=${PORT:-18481}
UP=
SAMPLER=

[[ -x $BIN/showrunner ]] || { echo "no $BIN/showrunner: cargo build -p showrunner-cli first" >&2; exit 2; }

cleanup() {
  [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null || true
  if [[ -n $UP ]] && kill -0 "$UP" 2>/dev/null; then kill -TERM "$UP"; wait "$UP" || true; fi
  psql -d postgres -qc "DROP DATABASE IF EXISTS \"$NAME\" WITH (FORCE)" >/dev/null 2>&1 || true
  curl -sf -m 60 -u guest:guest -X DELETE "$MANAGEMENT/api/vhosts/$NAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

curl -sf -m 30 -u guest:guest -X PUT "$MANAGEMENT/api/vhosts/$NAME" >/dev/null
curl -sf -m 30 -u guest:guest -X PUT -H 'content-type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' "$MANAGEMENT/api/permissions/$NAME/guest" >/dev/null
export SHOWRUNNER__DATABASE__URL=postgres://$PGUSER@$PGHOST:$PGPORT/$NAME
export SHOWRUNNER__AMQP__URL=amqp://guest:guest@127.0.0.1:5672/$NAME
export SHOWRUNNER__HTTP__ADDR=127.0.0.1:$PORT SHOWRUNNER__OPS__ADDR=127.0.0.1:0
export SHOWRUNNER__LOG__FILTER=${SHOWRUNNER__LOG__FILTER:-warn}
"$BIN/showrunner" up >"$WORK/up.log" 2>&1 &
UP=$!
for _ in $(seq 120); do curl -sf -m 2 "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 1; done
curl -sf -m 2 "http://127.0.0.1:$PORT/ready" >/dev/null || { tail -20 "$WORK/up.log" >&2; exit 1; }

( while :; do
    psql -d postgres -Atc "SELECT application_name, count(*) FROM pg_stat_activity \
      WHERE datname = '$NAME' GROUP BY 1" 2>/dev/null | sed "s/^/$(date +%s%N)|/"
    sleep 0.2
  done ) >"$WORK/samples" &
SAMPLER=$!

TOKEN=$("$BIN/showrunner" token --user alice --role admin)
API=http://127.0.0.1:$PORT/api/v1
for burst in $(seq "$BURSTS"); do
  pids=()
  for i in $(seq "$PER_BURST"); do
    curl -s -m 60 -o /dev/null -w '%{http_code}\n' -X POST "$API/episodes" -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/json' -H 'Prefer: wait=10' -d "{\"title\":\"burst $burst $i\"}" >>"$WORK/codes" &
    pids+=($!)
    curl -s -m 60 -o /dev/null -w '%{http_code}\n' "$API/episodes?limit=20" -H "Authorization: Bearer $TOKEN" >>"$WORK/codes" &
    pids+=($!)
    curl -s -m 60 -o /dev/null -w '%{http_code}\n' -X POST "$API/jobs" -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/json' -d "{\"type\":\"episode.export\",\"payload\":{\"episodeId\":\"$(cat /proc/sys/kernel/random/uuid)\"}}" >>"$WORK/codes" &
    pids+=($!)
  done
  wait "${pids[@]}" || true
done

# Everything accepted settles: no command pending, no job queued, running or retrying.
for _ in $(seq 120); do
  left=$(psql -d "$NAME" -Atc "SELECT (SELECT count(*) FROM commands WHERE status = 'pending') \
    + (SELECT count(*) FROM jobs WHERE status IN ('queued', 'running', 'retrying'))")
  [[ $left == 0 ]] && break
  sleep 1
done
kill "$SAMPLER" 2>/dev/null || true
SAMPLER=

echo "answers (status: count):"
sort "$WORK/codes" | uniq -c | awk '{print "  " $2 ": " $1}'
echo "peak PostgreSQL connections per role:"
awk -F'|' '{ if ($3 > peak[$2]) peak[$2] = $3 } END { for (r in peak) print "  " r ": " peak[r] }' "$WORK/samples" | sort
awk -F'|' '{ total[$1] += $3 } END { for (t in total) if (total[t] > m) m = total[t]; print "  in all (one sample): " m }' "$WORK/samples"
echo "unfinished after the bursts (pending commands + unfinished jobs): $left"
psql -d "$NAME" -Atc "SELECT 'commands ' || status, count(*) FROM commands GROUP BY 1 \
  UNION ALL SELECT 'jobs ' || status, count(*) FROM jobs GROUP BY 1 ORDER BY 1" | sed 's/^/  /; s/|/: /'
echo "pool waits the process logged: $(grep -c 'acquire' "$WORK/up.log" || true)"
