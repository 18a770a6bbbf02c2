#!/usr/bin/env bash
# Validates compose.yaml without a Docker engine:
#   - it parses (python3 + PyYAML), every service has `image` or `build`, every `depends_on`
#     target exists (and a `service_healthy` target has a healthcheck);
#   - every app service (built from this repository) runs a binary the workspace builds: a
#     `[[bin]]` of some Cargo.toml, a `src/bin/*.rs` file stem, or a package's `src/main.rs`;
#   - the Dockerfile copies each of those binaries into the image;
#   - the api and the migration run; every worker role (`showrunner-*-worker`) runs with
#     `deploy.replicas` and waits for the migration to complete; every stop_grace_period
#     exceeds the process's shutdown.grace_secs (so `docker stop` never kills a drain);
#   - `docker compose config -q` accepts it, when the compose plugin is installed.
# Exits non-zero naming every problem; prints `compose.yaml: ok` otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE="${1:-$ROOT/compose.yaml}"
DOCKERFILE="$ROOT/Dockerfile"

fail() {
    echo "check-compose: $*" >&2
    exit 1
}

[[ -f "$COMPOSE" ]] || fail "$COMPOSE not found"
[[ -f "$DOCKERFILE" ]] || fail "$DOCKERFILE not found"
command -v python3 >/dev/null || fail "python3 is required"

if ! python3 -c 'import yaml' 2>/dev/null; then
    echo "check-compose: installing PyYAML" >&2
    python3 -m pip install --quiet pyyaml >&2 || fail "PyYAML is missing and could not be installed"
fi

python3 - "$ROOT" "$COMPOSE" "$DOCKERFILE" <<'PY'
import glob
import os
import re
import shlex
import sys

import yaml

root, compose_path, dockerfile_path = sys.argv[1:4]
problems = []


def problem(message):
    problems.append(message)


# --- the binaries the workspace builds -------------------------------------------------------
def load_toml(path):
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:
        return None
    with open(path, "rb") as f:
        return tomllib.load(f)


def bins_by_regex(text):
    """[[bin]] names without a TOML parser: the `name = "..."` of each [[bin]] table."""
    names = []
    for table in re.split(r"(?m)^\s*\[", text):
        if table.startswith("[bin]]"):
            m = re.search(r'(?m)^\s*name\s*=\s*"([^"]+)"', table)
            if m:
                names.append(m.group(1))
    return names


binaries = {}  # name -> where it comes from
manifests = [
    p for p in glob.glob(os.path.join(root, "**", "Cargo.toml"), recursive=True)
    if not any(part in ("target", ".git") for part in os.path.relpath(p, root).split(os.sep))
]
for manifest in sorted(manifests):
    rel = os.path.relpath(manifest, root)
    package_dir = os.path.dirname(manifest)
    with open(manifest, encoding="utf-8") as f:
        text = f.read()
    data = load_toml(manifest)
    if data is not None:
        bin_names = [b.get("name") for b in data.get("bin", []) if b.get("name")]
        package = data.get("package", {})
    else:
        bin_names = bins_by_regex(text)
        m = re.search(r'(?ms)^\[package\].*?^\s*name\s*=\s*"([^"]+)"', text)
        package = {"name": m.group(1)} if m else {}
    for name in bin_names:
        binaries.setdefault(name, f"[[bin]] in {rel}")
    if package and package.get("autobins", True) is not False:
        # Cargo's auto-discovered binaries: src/main.rs, src/bin/NAME.rs, src/bin/NAME/main.rs.
        # (src/main.rs is the package's binary unless a [[bin]] claims that path).
        bin_paths = [os.path.normpath(b.get("path", "")) for b in (data or {}).get("bin", [])]
        if (os.path.isfile(os.path.join(package_dir, "src", "main.rs")) and package.get("name")
                and os.path.normpath("src/main.rs") not in bin_paths
                and (data is not None or not bin_names)):
            binaries.setdefault(package["name"], f"src/main.rs of {rel}")
        for path in glob.glob(os.path.join(package_dir, "src", "bin", "*.rs")):
            name = os.path.splitext(os.path.basename(path))[0]
            binaries.setdefault(name, os.path.relpath(path, root))
        for path in glob.glob(os.path.join(package_dir, "src", "bin", "*", "main.rs")):
            name = os.path.basename(os.path.dirname(path))
            binaries.setdefault(name, os.path.relpath(path, root))

if not binaries:
    problem("found no binaries in the workspace's Cargo.toml files")

# --- the Dockerfile ---------------------------------------------------------------------------
with open(dockerfile_path, encoding="utf-8") as f:
    dockerfile = f.read()
# Join continuation lines, drop comments.
instructions = []
for line in re.sub(r"\\\n", " ", dockerfile).splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
        instructions.append(line.strip())
copy_lines = [i for i in instructions if re.match(r"(?i)^(COPY|ADD)\s", i)]
default_cmd = None
for i in instructions:
    m = re.match(r"(?i)^CMD\s+(.*)$", i)
    if m:
        raw = m.group(1).strip()
        try:
            default_cmd = yaml.safe_load(raw) if raw.startswith("[") else shlex.split(raw)
        except Exception:
            problem(f"Dockerfile: cannot parse CMD {raw!r}")


def dockerfile_copies(binary):
    token = re.compile(r"(^|[\s/])" + re.escape(binary) + r"(\s|$)")
    return any(token.search(line) for line in copy_lines)


# --- compose.yaml -----------------------------------------------------------------------------
try:
    with open(compose_path, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
except yaml.YAMLError as e:
    print(f"check-compose: {compose_path} is not valid YAML: {e}", file=sys.stderr)
    sys.exit(1)

if not isinstance(compose, dict) or not isinstance(compose.get("services"), dict) or not compose["services"]:
    print(f"check-compose: {compose_path} has no services", file=sys.stderr)
    sys.exit(1)

services = compose["services"]
conditions = {"service_started", "service_healthy", "service_completed_successfully"}
images_built_here = {
    s.get("image") for s in services.values() if isinstance(s, dict) and s.get("build") and s.get("image")
}
checked_binaries = set()
service_binary = {}  # app service -> the binary it runs

for name, service in services.items():
    where = f"services.{name}"
    if not isinstance(service, dict):
        problem(f"{where}: is not a mapping")
        continue
    if not service.get("image") and not service.get("build"):
        problem(f"{where}: has neither `image` nor `build`")

    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        depends = {d: {"condition": "service_started"} for d in depends}
    if not isinstance(depends, dict):
        problem(f"{where}.depends_on: must be a list or a mapping")
        depends = {}
    for target, spec in depends.items():
        if target not in services:
            problem(f"{where}.depends_on: no service named {target!r}")
            continue
        if target == name:
            problem(f"{where}.depends_on: depends on itself")
        condition = (spec or {}).get("condition", "service_started") if isinstance(spec, dict) else None
        if condition not in conditions:
            problem(f"{where}.depends_on.{target}: unknown condition {condition!r}")
        target_service = services[target] if isinstance(services[target], dict) else {}
        healthcheck = target_service.get("healthcheck") or {}
        if condition == "service_healthy" and (not healthcheck or healthcheck.get("disable")):
            problem(f"{where}.depends_on.{target}: waits for service_healthy but {target} has no healthcheck")
        if condition == "service_completed_successfully" and target_service.get("restart") not in (None, "no"):
            problem(f"{where}.depends_on.{target}: waits for it to complete but {target} restarts "
                    f"({target_service.get('restart')!r})")

    # An app service: built from this repository, or running the image built here.
    is_app = bool(service.get("build")) or (service.get("image") in images_built_here)
    if not is_app:
        continue
    command = service.get("command")
    if command is None:
        command, origin = default_cmd, "the Dockerfile's CMD"
    else:
        origin = f"{where}.command"
    if isinstance(command, str):
        command = shlex.split(command)
    if not command:
        problem(f"{where}: no command, and the Dockerfile has no CMD")
        continue
    binary = os.path.basename(str(command[0]))
    if binary not in binaries:
        problem(f"{where}: {origin} runs {binary!r}, which no Cargo.toml of the workspace builds "
                f"(binaries: {', '.join(sorted(binaries))})")
        continue
    if not dockerfile_copies(binary):
        problem(f"{where}: {origin} runs {binary!r}, but the Dockerfile does not copy it into the image")
    checked_binaries.add(binary)
    service_binary[name] = binary

# --- every role is there; workers scale with deploy.replicas and wait for the migration -------
def seconds(value):
    """A compose duration (`30s`, `1m30s`, `90`) in seconds, or None."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(value))
    if not parts:
        return None
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    return sum(float(n) * unit[u] for n, u in parts)


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return env


migrate_services = {n for n, b in service_binary.items() if b == "showrunner-migrate"}
if not migrate_services:
    problem("no service runs showrunner-migrate (the schema migration)")
if "showrunner-api" not in service_binary.values():
    problem("no service runs showrunner-api")
worker_binaries = sorted(b for b in binaries if re.fullmatch(r"showrunner-[a-z-]+-worker", b))
for binary in worker_binaries:
    runners = [n for n, b in service_binary.items() if b == binary]
    if not runners:
        problem(f"no service runs the worker role {binary}")
    for name in runners:
        service = services[name]
        replicas = (service.get("deploy") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 1:
            problem(f"services.{name}: a worker role needs deploy.replicas (an integer >= 1), got {replicas!r}")
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {} for d in depends}
        waits = any(
            t in migrate_services and isinstance(spec, dict)
            and spec.get("condition") == "service_completed_successfully"
            for t, spec in depends.items()
        )
        if not waits:
            problem(f"services.{name}: must wait for the migration (depends_on with service_completed_successfully)")
for name, binary in service_binary.items():
    if binary == "showrunner-migrate":
        continue
    service = services[name]
    stop = seconds(service.get("stop_grace_period", "10s"))
    raw = environment(service).get("SHOWRUNNER__SHUTDOWN__GRACE_SECS", 25)
    try:
        grace = float(raw)
    except (TypeError, ValueError):
        problem(f"services.{name}: SHOWRUNNER__SHUTDOWN__GRACE_SECS is not a number: {raw!r}")
        continue
    if stop is None or stop <= grace:
        problem(f"services.{name}: stop_grace_period ({service.get('stop_grace_period', '10s')}) must exceed "
                f"shutdown.grace_secs ({raw}), or the engine kills the process mid-drain")

if default_cmd:
    binary = os.path.basename(str(default_cmd[0]))
    if binary not in binaries:
        problem(f"Dockerfile: CMD runs {binary!r}, which no Cargo.toml of the workspace builds")
    elif not dockerfile_copies(binary):
        problem(f"Dockerfile: CMD runs {binary!r}, which the Dockerfile does not copy")

if problems:
    print(f"check-compose: {len(problems)} problem(s) in {os.path.relpath(compose_path, root)}:", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    sys.exit(1)
print(f"check-compose: {len(services)} services; app binaries {', '.join(sorted(checked_binaries))} "
      "are built by the workspace and copied by the Dockerfile; worker roles "
      f"{', '.join(worker_binaries)} scale with deploy.replicas", file=sys.stderr)
PY

# The compose plugin's own validation (interpolation, schema), when it is installed. It needs no
# engine; a missing plugin is not an error.
compose_cmd=()
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
    compose_cmd=(docker-compose)
fi
if ((${#compose_cmd[@]})); then
    if ! output="$(cd "$(dirname "$COMPOSE")" && "${compose_cmd[@]}" -f "$COMPOSE" config -q 2>&1)"; then
        fail "\`${compose_cmd[*]} config -q\` refused $COMPOSE:"$'\n'"$output"
    fi
    echo "check-compose: \`${compose_cmd[*]} config -q\` accepts it" >&2
else
    echo "check-compose: no docker compose plugin; skipped \`docker compose config -q\`" >&2
fi

echo "compose.yaml: ok"
