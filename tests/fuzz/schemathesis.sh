#!/usr/bin/env bash
# Property-based fuzzing of the REST API: schemathesis (from PyPI, pinned) generates requests
# from the OpenAPI document the api serves and sends them to a whole stack (`showrunner up`)
# on a fresh database and a fresh vhost, as a member and then as an admin. It fails on any
# 5xx, any 4xx that is not application/problem+json, any answer the document does not
# describe, and then on anything invalid that was persisted (tests/fuzz/persisted.py).
#
# usage: tests/fuzz/schemathesis.sh [short|long]
#   short: 60 examples per operation, fixed seed (under a minute with a warm build; CI runs it)
#   long:  500 examples per operation, a new seed each run (default; about 5 minutes)
# Environment: CARGO_TARGET_DIR (default ~/.cache/showrunner/target), FUZZ_SEED (a seed to
# replay), FUZZ_KEEP=1 (keep the database and vhost for inspection).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

MODE=${1:-long}
case $MODE in
  # CI's form: a fixed seed, so a red run is the code's doing and replays the same way.
  short) EXAMPLES=60 ADMIN_EXAMPLES=20 PHASES=examples,coverage,fuzzing,stateful
    FUZZ_SEED=${FUZZ_SEED:-20261125} ;;
  long) EXAMPLES=500 ADMIN_EXAMPLES=100 PHASES=examples,coverage,fuzzing,stateful ;;
  *) echo "usage: $0 [short|long]" >&2; exit 2 ;;
esac

# schemathesis and everything it pulls in, pinned (pip freeze of a working install).
REQUIREMENTS=$ROOT/tests/fuzz/requirements.txt
SCHEMATHESIS_VERSION=$(sed -n 's/^schemathesis==//p' "$REQUIREMENTS")
CACHE=$HOME/.cache/showrunner
VENV=$CACHE/fuzz-venv-$(sha256sum "$REQUIREMENTS" | cut -c1-12)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
PG=postgres://postgres@127.0.0.1:5432
MANAGEMENT=http://127.0.0.1:15672
# Not sr_test_*: CI's leftover sweep drops those, and may run while this does.
NAME=sr_fuzz_$(date +%s)_$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/showrunner-fuzz.XXXXXX")
REPORT=$CACHE/fuzz-report
STACK_PID=

log() { printf '\n== %s\n' "$*"; }

cleanup() {
  local status=$?
  if [ -n "$STACK_PID" ] && kill -0 "$STACK_PID" 2>/dev/null; then
    kill -TERM "$STACK_PID" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$STACK_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$STACK_PID" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$WORK/stack.log" ]; then
    echo "-- last lines of the stack's log ($WORK/stack.log):" >&2
    tail -n 40 "$WORK/stack.log" >&2 || true
  fi
  if [ "${FUZZ_KEEP:-0}" = 1 ]; then
    echo "kept database $NAME and vhost $NAME"
  else
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS \"$NAME\" WITH (FORCE)" >/dev/null 2>&1 || true
    curl -sf -u guest:guest -X DELETE "$MANAGEMENT/api/vhosts/$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "schemathesis $SCHEMATHESIS_VERSION"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$REQUIREMENTS"
fi
"$VENV/bin/schemathesis" --version

log "build"
cargo build --locked -q -p showrunner-cli
SHOWRUNNER=$CARGO_TARGET_DIR/debug/showrunner

log "leftovers of killed fuzz runs"
# A run killed with SIGKILL cannot clean up. Names carry their start time; no run lasts two
# hours, so older ones are leftovers (and never another run's live stack).
NOW=$(date +%s)
stale() { local t=${1#sr_fuzz_}; t=${t%%_*}; [[ $t =~ ^[0-9]+$ ]] && [ $((NOW - t)) -gt 7200 ]; }
for db in $(psql "$PG/postgres" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'sr\_fuzz\_%'"); do
  if stale "$db"; then psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" && echo "dropped database $db"; fi
done
for vhost in $(curl -sf -u guest:guest "$MANAGEMENT/api/vhosts" | python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin) if v["name"].startswith("sr_fuzz_")))'); do
  if stale "$vhost"; then curl -sf -u guest:guest -X DELETE "$MANAGEMENT/api/vhosts/$vhost" && echo "deleted vhost $vhost"; fi
done

log "database and vhost $NAME"
psql "$PG/postgres" -qc "CREATE DATABASE \"$NAME\""
curl -sf -u guest:guest -X PUT -H 'content-type: application/json' -d '{}' \
  "$MANAGEMENT/api/vhosts/$NAME" >/dev/null
curl -sf -u guest:guest -X PUT -H 'content-type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' "$MANAGEMENT/api/permissions/$NAME/guest" >/dev/null

export SHOWRUNNER__PROFILE=production
export SHOWRUNNER__DATABASE__URL=$PG/$NAME
export SHOWRUNNER__DATABASE__MAX_CONNECTIONS=10
export SHOWRUNNER__AMQP__URL=amqp://guest:guest@127.0.0.1:5672/$NAME
export SHOWRUNNER__AMQP__PARTITIONS=4
export SHOWRUNNER__HTTP__ADDR=127.0.0.1:0
SHOWRUNNER__AUTH__JWT_SECRET=fuzz-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export SHOWRUNNER__AUTH__JWT_SECRET
export SHOWRUNNER__STORAGE__URL=file://$WORK/files
export SHOWRUNNER__LOG__FILTER=warn
# A free port for the workers' ops server, so a `showrunner up` elsewhere on the machine does
# not collide; and the per-user rate limit out of the way (tests/it/limits.rs covers it): a
# fuzzer that mostly hears 429 tests little else.
export SHOWRUNNER__OPS__ADDR=127.0.0.1:0
export SHOWRUNNER__LIMITS__REQUESTS_PER_SEC=100000
export SHOWRUNNER__LIMITS__REQUEST_BURST=100000

log "start the stack"
"$SHOWRUNNER" up >"$WORK/stack.log" 2>&1 &
STACK_PID=$!
BASE=
for _ in $(seq 120); do
  BASE=$(sed -n 's|^ *REST API *\(http://[^ ]*/api/v1\) .*|\1|p' "$WORK/stack.log" | head -n1)
  [ -n "$BASE" ] && break
  kill -0 "$STACK_PID" 2>/dev/null || { echo "the stack exited" >&2; exit 1; }
  sleep 0.5
done
[ -n "$BASE" ] || { echo "the stack did not print its address within 60 s" >&2; exit 1; }
ORIGIN=${BASE%/api/v1}
for _ in $(seq 120); do
  curl -sf "$ORIGIN/ready" >/dev/null && break
  sleep 0.5
done
curl -sf "$ORIGIN/ready" >/dev/null || { echo "$ORIGIN/ready did not answer 200 within 60 s" >&2; exit 1; }
echo "ready at $BASE"

MEMBER=$("$SHOWRUNNER" token --user fuzz-member --role member)
ADMIN=$("$SHOWRUNNER" token --user fuzz-admin --role admin)

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,unsupported_method,client_errors_are_problem_json
export SCHEMATHESIS_HOOKS=$ROOT/tests/fuzz/hooks.py
rm -rf "$REPORT"
# One worker: with several, hypothesis (6.170) failed now and then describing its own
# strategies ("AST constructor recursion depth mismatch"), a race in the tool, not the API.
fuzz() { # fuzz LABEL TOKEN EXAMPLES
  log "schemathesis as $1 ($3 examples per operation, phases $PHASES)"
  # Run from the cache: schemathesis keeps its state (what `st replay` reads) in ./.schemathesis.
  mkdir -p "$CACHE/fuzz-state"
  (cd "$CACHE/fuzz-state" && "$VENV/bin/schemathesis" run "$BASE/openapi.json" \
    --url "$BASE" \
    --header "Authorization: Bearer $2" \
    --checks "$CHECKS" \
    --phases "$PHASES" \
    --max-examples "$3" \
    --workers 1 \
    ${FUZZ_EXTRA:-} \
    --request-timeout 40 \
    --generation-database none \
    ${FUZZ_SEED:+--seed "$FUZZ_SEED"} \
    --report junit --report-dir "$REPORT/$1" \
    --no-color)
}
FAILED=()
fuzz member "$MEMBER" "$EXAMPLES" || FAILED+=("schemathesis as member")
fuzz admin "$ADMIN" "$ADMIN_EXAMPLES" || FAILED+=("schemathesis as admin")

log "what was persisted"
"$VENV/bin/python" tests/fuzz/persisted.py "$PG/$NAME" "$MANAGEMENT" "$NAME" \
  || FAILED+=("the persisted-data check")

log "the stack stops cleanly"
kill -TERM "$STACK_PID"
for _ in $(seq 60); do kill -0 "$STACK_PID" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$STACK_PID" 2>/dev/null; then echo "the stack did not stop within 30 s" >&2; exit 1; fi
wait "$STACK_PID"
STACK_PID=
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'fuzzing FAILED: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
echo "fuzzing passed"
