#!/usr/bin/env bash
# Rolls a Showrunner release out in the order an upgrade needs (deploy/CHECKLIST.md, "Upgrading"):
#   1. the shared configuration (ConfigMap, KEDA's TriggerAuthentication);
#   2. the deploy step: the Job that migrates the schema (expand-only) and declares the broker
#      topology, waited for to complete; a failure stops here, the old release keeps running;
#   3. the workers, each rolled and waited for (they read the new schema and the old commands);
#   4. the api last (it is what starts producing the new release's commands and events).
# The contract step of a migration (dropping what the old release used) ships in a later release.
#
# usage: deploy/kubernetes/rollout.sh OVERLAY_DIR        e.g. deploy/kubernetes/overlays/production
# Needs kubectl with access to the cluster, KEDA's CRDs installed and the Secret `showrunner`
# created (secret.example.yaml). Environment: NAMESPACE (default: the overlay's namespace),
# JOB_TIMEOUT_SECS (default 1800), ROLL_TIMEOUT (default 10m).
set -euo pipefail

[[ $# -eq 1 && -f "$1/kustomization.yaml" ]] || { sed -n '2,14p' "$0" >&2; exit 2; }
RENDERED=$(mktemp "${TMPDIR:-/tmp}/showrunner-release.XXXXXX.yaml")
trap 'rm -f "$RENDERED"' EXIT
kubectl kustomize "$1" >"$RENDERED"
NAMESPACE=${NAMESPACE:-$(awk '/^  namespace: /{print $2; exit}' "$RENDERED")}
NAMESPACE=${NAMESPACE:-default}
k() { kubectl --namespace "$NAMESPACE" "$@"; }
WORKERS=(episode-worker activity-worker notification-worker job-worker)
step() { printf '\n== %s\n' "$*"; }

step "preflight: the Secret and KEDA"
k get secret showrunner >/dev/null || { echo "no Secret showrunner in $NAMESPACE (secret.example.yaml)" >&2; exit 1; }
kubectl get crd scaledobjects.keda.sh >/dev/null || { echo "KEDA is not installed (no scaledobjects.keda.sh CRD)" >&2; exit 1; }

step "1. shared configuration"
k apply -f "$RENDERED" -l '!app.kubernetes.io/component'

step "2. migrate and declare the topology"
# A Job's pod template cannot change: the previous release's Job goes first.
k delete job showrunner-migrate --ignore-not-found --wait=true
k apply -f "$RENDERED" -l 'app.kubernetes.io/component=migrate'
deadline=$(( $(date +%s) + ${JOB_TIMEOUT_SECS:-1800} ))
while :; do
    status=$(k get job showrunner-migrate -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')
    case " $status " in
        *" Complete "*) echo "migration and topology: done"; break ;;
        *" Failed "*)
            k logs job/showrunner-migrate --all-containers --tail=50 >&2 || true
            echo "the deploy step failed: nothing was rolled; the running release is untouched" >&2
            exit 1 ;;
    esac
    (( $(date +%s) < deadline )) || { echo "the deploy step did not finish in time" >&2; exit 1; }
    sleep 5
done

step "3. workers"
for role in "${WORKERS[@]}"; do
    k apply -f "$RENDERED" -l "app.kubernetes.io/component=$role"
done
for role in "${WORKERS[@]}"; do
    k rollout status "deployment/showrunner-$role" --timeout="${ROLL_TIMEOUT:-10m}"
done

step "4. api"
k apply -f "$RENDERED" -l 'app.kubernetes.io/component=api'
k rollout status deployment/showrunner-api --timeout="${ROLL_TIMEOUT:-10m}"
echo "rolled out to $NAMESPACE"
