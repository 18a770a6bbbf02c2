#!/usr/bin/env bash
# The fault-injection suite (tests/faults/main.rs): builds the suite and the role processes it
# starts, then runs it. Arguments go to the suite: --duration SECS (default 120), --clients N,
# --keep (keep the temporary directory with every process's log), --cluster (a three-node
# RabbitMQ cluster and node faults instead of one node: tests/faults/cluster.rs).
#
#   bash tests/faults/run.sh                           # the full run, about 2.5 minutes
#   bash tests/faults/run.sh --duration 45             # the short form CI runs, about 1.5 minutes
#   bash tests/faults/run.sh --cluster --duration 45   # the cluster's short form (CI), about 3 minutes
#
# Needs root (PostgreSQL's initdb runs as the `postgres` user through runuser), PostgreSQL's
# server binaries in /usr/lib/postgresql/<major>/bin and RabbitMQ's in /usr/lib/rabbitmq/bin.
# It starts its own PostgreSQL cluster and RabbitMQ node (or nodes) on free ports: the services
# on 5432 and 5672 are not touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet -p showrunner-tests --bin faults --bin sr-role
# Where cargo put them (its configuration or a wrapper may choose another folder than
# CARGO_TARGET_DIR says).
target=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

# The suite in a process group of its own (job control): every process it starts (role
# processes, RabbitMQ nodes) is in that group unless it leaves it.
set -m
"$target/debug/faults" "$@" &
child=$!
set +m

# The suite stops and removes what it started, also when it fails or is interrupted; this is
# for a suite that could not (killed, or crashed): what is left of its process group, then its
# nodes and its PostgreSQL by the pids they wrote (only where the process is still the one
# started from that directory).
cleanup() {
  local dir="${TMPDIR:-/tmp}/srfaults-$child" pidfile pid bin
  [ -d "$dir" ] || return 0
  if kill -0 -- -"$child" 2>/dev/null; then
    echo "run.sh: stopping the processes the suite left running"
    kill -9 -- -"$child" 2>/dev/null || true
  fi
  for pidfile in "$dir"/rabbit/pid "$dir"/cluster/c*/pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if grep -qF "$dir" "/proc/$pid/cmdline" 2>/dev/null; then
      echo "run.sh: stopping a RabbitMQ node the suite left running (pid $pid)"
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  if [ -f "$dir/pg/postmaster.pid" ]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    echo "run.sh: stopping the PostgreSQL the suite left running"
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  case " $* " in
    *" --keep "*) ;;
    *) rm -rf "$dir" ;;
  esac
}

# Ctrl-C or SIGTERM: the suite tears down by itself; wait for it, then check.
trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
set +e
wait "$child"
status=$?
while kill -0 "$child" 2>/dev/null; do
  wait "$child"
  status=$?
done
set -e
cleanup "$@"
exit "$status"
