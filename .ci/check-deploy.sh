#!/usr/bin/env bash
# Validates the Kubernetes kit in deploy/kubernetes offline (no cluster, no internet):
#   1. renders the base and every overlay with `kubectl kustomize` (kustomize built into kubectl;
#      on this project's machines it comes with the Debian image's kubectl);
#   2. validates every rendered object against the Kubernetes JSON schemas of the target
#      version with kubernetes-validate (PyPI, pinned in deploy/requirements.txt, installed into
#      a venv under ~/.cache/showrunner), strict: an unknown field fails. KEDA's ScaledObject and
#      TriggerAuthentication are CRDs that kubernetes-validate has no schema for: step 3 checks
#      what the kit relies on in them, not their full schema;
#   3. checks what the schemas cannot know (deploy/kubernetes/checks.py): a Deployment per role
#      running its binary, probes on /ready and /health at the role's port, a grace period
#      above shutdown.grace_secs, resources, a PodDisruptionBudget per role, the migration Job,
#      every secret from the one Secret with the keys of secret.example.yaml, the KEDA objects
#      pointing at real Deployments and queues, and the PostgreSQL connection budget;
#   4. parses the kit's scripts (rollout.sh, create-users.sh: they need a cluster to run).
# Exits non-zero naming every problem.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT=$ROOT/deploy/kubernetes
# The Kubernetes release the kit targets (a kubernetes-validate schema version).
K8S_VERSION=${K8S_VERSION:-1.33.0}
REQUIREMENTS=$ROOT/deploy/requirements.txt
CACHE=$HOME/.cache/showrunner
VENV=$CACHE/deploy-venv-$(sha256sum "$REQUIREMENTS" | cut -c1-12)
OUT=$(mktemp -d "${TMPDIR:-/tmp}/showrunner-deploy.XXXXXX")
trap 'rm -rf "$OUT"' EXIT

fail() {
    echo "check-deploy: $*" >&2
    exit 1
}

command -v kubectl >/dev/null \
    || fail "kubectl is required for \`kubectl kustomize\` (apt-get install kubectl, or any kubectl >= 1.27)"

if ! "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    echo "check-deploy: installing kubernetes-validate into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$REQUIREMENTS" >&2 \
        || fail "could not install deploy/requirements.txt from PyPI"
fi

# The kit's scripts need a cluster or a broker to run; here they are only parsed.
for script in "$KIT/rollout.sh" "$ROOT/deploy/rabbitmq/create-users.sh"; do
    bash -n "$script" || fail "${script#"$ROOT"/} does not parse"
done

targets=("$KIT/base")
for overlay in "$KIT"/overlays/*/; do
    targets+=("${overlay%/}")
done

for target in "${targets[@]}"; do
    name=${target#"$KIT"/}
    rendered=$OUT/${name//\//_}.yaml
    if ! kubectl kustomize "$target" >"$rendered" 2>"$OUT/kustomize.err"; then
        fail "\`kubectl kustomize $name\` failed:"$'\n'"$(cat "$OUT/kustomize.err")"
    fi
    # Only KEDA's kinds may lack a schema; anything else unknown is an error.
    if ! "$VENV/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$rendered" \
        >"$OUT/validate.out" 2>&1; then
        fail "$name does not validate against Kubernetes $K8S_VERSION:"$'\n'"$(cat "$OUT/validate.out")"
    fi
    if grep -v "Couldn't find schema for kind \(ScaledObject\|TriggerAuthentication\) with api version keda.sh/v1alpha1" \
        "$OUT/validate.out" | grep -q .; then
        fail "$name: kubernetes-validate reported:"$'\n'"$(cat "$OUT/validate.out")"
    fi
    "$VENV/bin/python" "$KIT/checks.py" "$ROOT" "$rendered" "$name" \
        || fail "$name: the checks above failed"
done
echo "deploy/kubernetes: ok (kustomize renders, Kubernetes $K8S_VERSION schemas strict, kit checks)"
