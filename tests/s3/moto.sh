#!/usr/bin/env bash
# A local S3-compatible server for the S3 tests: moto's server (PyPI, pinned with everything it
# pulls in by tests/s3/requirements.txt) in a venv, on a loopback port. Idempotent: a server
# already answering on the port is reused; otherwise one is started in the background (it keeps
# running for later test runs) and this waits until it answers. Prints the endpoint.
#
# usage: tests/s3/moto.sh          (CI: `.ci/run` runs it before the tests)
# Environment: SHOWRUNNER_S3_PORT (default 9327), SHOWRUNNER_S3_VENV (default a venv under
# ~/.cache/showrunner named after the requirements' hash).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=${SHOWRUNNER_S3_PORT:-9327}
ENDPOINT=http://127.0.0.1:$PORT
REQUIREMENTS=$HERE/requirements.txt
VENV=${SHOWRUNNER_S3_VENV:-$HOME/.cache/showrunner/s3-venv-$(sha256sum "$REQUIREMENTS" | cut -c1-12)}

answers() { curl -s -m 2 -o /dev/null "$ENDPOINT/" ; }

if answers; then
  echo "$ENDPOINT"
  exit 0
fi
if [ ! -x "$VENV/bin/moto_server" ]; then
  echo "installing moto into $VENV" >&2
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS" >&2
fi
LOG=${TMPDIR:-/tmp}/showrunner-moto-$PORT.log
# Its own session, so it outlives this script and the test that ran it.
setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 < /dev/null &
for _ in $(seq 100); do
  if answers; then
    echo "$ENDPOINT"
    exit 0
  fi
  sleep 0.2
done
echo "moto did not answer on $ENDPOINT; its log: $LOG" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
