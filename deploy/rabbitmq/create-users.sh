#!/usr/bin/env bash
# Creates (or updates) Showrunner's broker users in one vhost through the management API, each
# with exactly its permission set from permissions.json beside this script: `deploy` (declares
# the topology, for the deploy step only), one user per role, and `monitoring` (KEDA's queue
# depths; tag `monitoring`). Idempotent: run it again after permissions.json changes.
#
# usage: deploy/rabbitmq/create-users.sh MANAGEMENT_URL VHOST
#   MANAGEMENT_URL  e.g. https://rabbitmq.internal:15671 (plain http only on a private network)
# Environment:
#   RABBITMQ_ADMIN_USER / RABBITMQ_ADMIN_PASSWORD   an administrator of the cluster
#   SHOWRUNNER_PASSWORD_<ROLE>                      each user's password, ROLE in upper case with
#     `_` for `-`: SHOWRUNNER_PASSWORD_DEPLOY, _API, _EPISODE_WORKER, _ACTIVITY_WORKER,
#     _NOTIFICATION_WORKER, _JOB_WORKER, _MONITORING (from your secrets manager; never logged)
#   SHOWRUNNER_USER_PREFIX                          user names are <prefix><role>
#                                                   (default `showrunner-`)
# The users' AMQP URLs then go into the Secret (deploy/kubernetes/secret.example.yaml).
set -euo pipefail

[[ $# -eq 2 ]] || { sed -n '7,18p' "$0" >&2; exit 2; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export MANAGEMENT_URL=${1%/} VHOST=$2 PERMISSIONS=$HERE/permissions.json
: "${RABBITMQ_ADMIN_USER:?set RABBITMQ_ADMIN_USER}" "${RABBITMQ_ADMIN_PASSWORD:?set RABBITMQ_ADMIN_PASSWORD}"

python3 - <<'PY'
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

base, vhost = os.environ["MANAGEMENT_URL"], os.environ["VHOST"]
prefix = os.environ.get("SHOWRUNNER_USER_PREFIX", "showrunner-")
auth = base64.b64encode(
    f"{os.environ['RABBITMQ_ADMIN_USER']}:{os.environ['RABBITMQ_ADMIN_PASSWORD']}".encode()
).decode()
with open(os.environ["PERMISSIONS"], encoding="utf-8") as f:
    sets = {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def put(path, body):
    request = urllib.request.Request(
        f"{base}/api/{path}", data=json.dumps(body).encode(), method="PUT",
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as e:
        # The body says why (never the password: it is not echoed back).
        sys.exit(f"create-users: PUT /api/{path.split('/')[0]}/... answered {e.code}: {e.read()[:300]!r}")
    except urllib.error.URLError as e:
        sys.exit(f"create-users: cannot reach {base}: {e.reason}")


q = lambda s: urllib.parse.quote(s, safe="")
missing = [r for r in sets if not os.environ.get(f"SHOWRUNNER_PASSWORD_{r.upper().replace('-', '_')}")]
if missing:
    sys.exit("create-users: no password for " + ", ".join(
        f"SHOWRUNNER_PASSWORD_{r.upper().replace('-', '_')}" for r in missing))
put(f"vhosts/{q(vhost)}", {"description": "Showrunner", "default_queue_type": "quorum"})
for role, permissions in sets.items():
    user = f"{prefix}{role}"
    password = os.environ[f"SHOWRUNNER_PASSWORD_{role.upper().replace('-', '_')}"]
    put(f"users/{q(user)}", {"password": password, "tags": "monitoring" if role == "monitoring" else ""})
    put(f"permissions/{q(vhost)}/{q(user)}", permissions)
    print(f"{user}: configure {permissions['configure']}  write {permissions['write']}  read {permissions['read']}")
PY
