#!/usr/bin/env bash
# The soak benchmark (issue 20): at least a million commands at a steady rate against a whole
# stack, on a PostgreSQL of its own with autovacuum on (as production runs), reporting every
# minute the throughput, the POST p99 and the dead tuples, and at the end the bytes per command
# by table at steady state and the targets (tests/bench/soak/main.rs says which).
#
#   bash tests/bench/soak/run.sh                          # 1,000,000 commands at 500/s, ~34 min
#   bash tests/bench/soak/run.sh --n 200000 --rate 800    # any bench-soak option
#   SOAK_PROFILE=debug bash tests/bench/soak/run.sh --n 3000 --rate 100 --report-secs 10
#
# It starts a private PostgreSQL cluster (initdb from /usr/lib/postgresql/<newest>/bin, as the
# `postgres` user, on a free loopback port, autovacuum on, its other settings the defaults) and
# a RabbitMQ vhost of its own on the node at 127.0.0.1:5672 (through the management API at
# 127.0.0.1:15672, guest/guest), and removes both afterwards, also when interrupted. The event
# log keeps 10 minutes here (realtime.event_log_retention_secs=600) so that its retention reaches
# steady state within the run; every other setting is the default. Needs root (runuser). Run it
# under `nice` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/../../.."
profile=${SOAK_PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --quiet --release -p showrunner-tests --bin bench-soak
else
  cargo build --quiet -p showrunner-tests --bin bench-soak
fi
target=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=$(mktemp -d "${TMPDIR:-/tmp}/srsoak-XXXXXX")
chmod 755 "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
vhost="srsoak_$(basename "$dir" | tr -c 'a-zA-Z0-9\n' '_')"
mgmt=http://127.0.0.1:15672/api

cleanup() {
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true
  curl -s -m 10 -u guest:guest -X DELETE "$mgmt/vhosts/$vhost" >/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

install -d -o postgres -m 700 "$dir/pg"
install -d -o postgres -m 755 "$dir/run"
runuser -u postgres -- "$pgbin/initdb" -A trust -U postgres -E UTF8 -D "$dir/pg" >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/run/postgres.log" -w -t 60 \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $dir/run -c max_connections=200 -c autovacuum=on -c log_checkpoints=on -c log_autovacuum_min_duration=1000 -c log_timezone=UTC" \
  start >/dev/null
echo "soak: PostgreSQL $(basename "$(dirname "$pgbin")") on 127.0.0.1:$port ($dir/pg), autovacuum $(
  runuser -u postgres -- psql -h 127.0.0.1 -p "$port" -U postgres -Atc 'SHOW autovacuum' postgres), vhost $vhost"

# A fresh machine's RabbitMQ has its management plugin off; the vhost is made through it.
if ! curl -sf -m 10 -u guest:guest "$mgmt/overview" >/dev/null; then
  rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null
  for _ in $(seq 60); do curl -sf -m 5 -u guest:guest "$mgmt/overview" >/dev/null && break; sleep 1; done
fi
curl -sf -m 10 -u guest:guest -X PUT -H 'content-type: application/json' -d '{}' "$mgmt/vhosts/$vhost" >/dev/null
curl -sf -m 10 -u guest:guest -X PUT -H 'content-type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' "$mgmt/permissions/$vhost/guest" >/dev/null

status=0
"$target/$profile/bench-soak" \
  --database-url "postgres://postgres@127.0.0.1:$port/showrunner" \
  --amqp-url "amqp://guest:guest@127.0.0.1:5672/$vhost" \
  --set realtime.event_log_retention_secs=600 "$@" || status=$?

# What PostgreSQL did meanwhile, by wall-clock time, to set beside the rows' `at` column: a p99
# spike that coincides with a checkpoint or a long autovacuum is the database's I/O, not the
# code's.
echo
echo "PostgreSQL checkpoints (start, then what was written) and autovacuums over 1 s:"
grep -E 'checkpoint starting|checkpoint complete|automatic (vacuum|analyze)' "$dir/run/postgres.log" |
  sed -E 's/^([0-9-]+ )?([0-9:]+)(\.[0-9]+)? UTC \[[0-9]+\] LOG: +/\2 /; s/; distance=.*//; s/ (index scans|pages|tuples|buffer usage|avg read rate|system usage|WAL usage):.*//' |
  grep -vE '^\s' || true
exit "$status"
