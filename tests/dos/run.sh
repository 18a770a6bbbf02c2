#!/usr/bin/env bash
# The HTTP edge under hostile clients, on loopback, bounded: slowloris, slow bodies, a
# connection flood and a burst of WebSocket upgrades from one address, each phase 25 s with at
# most DOS_SCALE (1000) bad connections, against one api process (`sr-role api`, release
# build) while a normal client is measured. See tests/dos/main.rs for what each phase does and
# what it prints; the README's "The edge under attack" has a run's figures.
#
#   bash tests/dos/run.sh            # DOS_SCALE=1000; SHOWRUNNER__HTTP__* change the limits
#
# Needs PostgreSQL and RabbitMQ as for the integration tests (it makes and removes its own
# database and vhost). Uses loopback addresses 127.0.{1,2,3,4}.x and 127.0.0.200 as clients.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ulimit -n 65536 2>/dev/null || ulimit -n 20000 2>/dev/null || true
echo "ulimit -n $(ulimit -n); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
cargo build --release --quiet -p showrunner-tests --bin sr-role --bin dos
# The whole run is bounded: a stack start, a 5 s baseline and four 25 s phases.
exec timeout 300 cargo run --release --quiet -p showrunner-tests --bin dos
