#!/usr/bin/env bash
# The fault-injection suite (tests/faults/main.rs): builds the suite and the role processes it
# starts, then runs it. Arguments go to the suite: --duration SECS (default 120), --clients N,
# --seed N (repeat a run's choice of faults, victims and load: the seed is printed at the start
# and the end), --keep (keep the temporary directory with every process's log).
#
#   bash tests/faults/run.sh                 # the full run, about 2.5 minutes
#   bash tests/faults/run.sh --duration 45   # the short form CI runs, about 1.5 minutes
#
# Needs root (PostgreSQL's initdb runs as the `postgres` user through runuser), PostgreSQL's
# server binaries in /usr/lib/postgresql/<major>/bin and RabbitMQ's in /usr/lib/rabbitmq/bin.
# It starts its own PostgreSQL cluster and RabbitMQ node on free ports: the services on 5432 and
# 5672 are not touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet -p showrunner-tests --bin faults --bin sr-role
# `cargo run` finds the binary wherever cargo put it (a target folder from the environment or
# a cargo configuration), and the suite finds `sr-role` beside itself.
exec cargo run --quiet -p showrunner-tests --bin faults -- "$@"
