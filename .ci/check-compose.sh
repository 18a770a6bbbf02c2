#!/usr/bin/env bash
# Validates the compose files without a Docker engine: compose.yaml alone, and compose.yaml with
# compose.cluster.yaml over it (the three-node RabbitMQ cluster), each as compose merges them:
#   - it parses (python3 + PyYAML), every service has `image` or `build`, every `depends_on`
#     target exists (and a `service_healthy` target has a healthcheck);
#   - every app service (built from this repository) runs a binary the workspace builds: a
#     `[[bin]]` of some Cargo.toml, a `src/bin/*.rs` file stem, or a package's `src/main.rs`;
#   - the Dockerfile copies each of those binaries into the image;
#   - the api and the migration run; every worker role (`showrunner-*-worker`) runs with
#     `deploy.replicas` and waits for the migration to complete; every stop_grace_period
#     exceeds the process's shutdown.grace_secs (so `docker stop` never kills a drain);
#   - RabbitMQ is a release with community support (4.3 or newer); a cluster has an odd number
#     of nodes (3 or more), each with its own host name and data volume, one Erlang cookie, and
#     a peer discovery list naming exactly those nodes;
#   - the PostgreSQL connections every pool may open (replicas x the role's pool size, from
#     SHOWRUNNER__DATABASE__MAX_CONNECTIONS or the role's default in shared/src/config.rs) fit in
#     the postgres service's max_connections less its reserved and operator connections;
#   - `docker compose config -q` accepts it, when the compose plugin is installed.
# usage: check-compose.sh [FILE...]   (the files of one configuration; default: both above)
# Exits non-zero naming every problem; prints `compose: ok` otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="$ROOT/Dockerfile"

fail() {
    echo "check-compose: $*" >&2
    exit 1
}

[[ -f "$DOCKERFILE" ]] || fail "$DOCKERFILE not found"
command -v python3 >/dev/null || fail "python3 is required"

if ! python3 -c 'import yaml' 2>/dev/null; then
    echo "check-compose: installing PyYAML" >&2
    python3 -m pip install --quiet pyyaml >&2 || fail "PyYAML is missing and could not be installed"
fi

# The compose plugin's own validation (interpolation, schema), when it is installed. It needs no
# engine; a missing plugin is not an error.
compose_cmd=()
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
    compose_cmd=(docker-compose)
fi

check() { # check FILE...: one configuration
    local file args=()
    for file in "$@"; do
        [[ -f "$file" ]] || fail "$file not found"
        args+=(-f "$file")
    done
    python3 - "$ROOT" "$DOCKERFILE" "$@" <<'PY'
import glob
import os
import re
import shlex
import sys

import yaml

root, dockerfile_path = sys.argv[1:3]
compose_paths = sys.argv[3:]
compose_label = " + ".join(os.path.relpath(p, root) for p in compose_paths)
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
def merge(base, override):
    """Compose's merge of an override file, as far as these checks need it: mappings merge key
    by key, anything else (lists included) is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base.get(key), value) if key in base else value
        return merged
    return override


compose = {}
for compose_path in compose_paths:
    try:
        with open(compose_path, encoding="utf-8") as f:
            compose = merge(compose, yaml.safe_load(f) or {})
    except yaml.YAMLError as e:
        print(f"check-compose: {compose_path} is not valid YAML: {e}", file=sys.stderr)
        sys.exit(1)

if not isinstance(compose, dict) or not isinstance(compose.get("services"), dict) or not compose["services"]:
    print(f"check-compose: {compose_label} has no services", file=sys.stderr)
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

# --- RabbitMQ: a supported release; a cluster that can keep a majority ------------------------
# Community support covers the latest release series only; 3.x (3.10 included) is long over.
SUPPORTED_RABBITMQ = (4, 3)
brokers = {n: s for n, s in services.items()
           if isinstance(s, dict) and str(s.get("image", "")).startswith("rabbitmq:")}
if not brokers:
    problem("no RabbitMQ service (image rabbitmq:...)")
for name, service in brokers.items():
    tag = str(service["image"]).split(":", 1)[1]
    m = re.match(r"(\d+)\.(\d+)", tag)
    if not m or (int(m.group(1)), int(m.group(2))) < SUPPORTED_RABBITMQ:
        problem(f"services.{name}: image {service['image']} is not a supported RabbitMQ release "
                f"(needs {SUPPORTED_RABBITMQ[0]}.{SUPPORTED_RABBITMQ[1]} or newer, a major.minor tag)")


def mounts(service):
    """(source, target) of every volume of a service, short or long syntax."""
    found = []
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) >= 2:
                found.append((parts[0], parts[1]))
        elif isinstance(v, dict):
            found.append((v.get("source"), v.get("target")))
    return found


if len(brokers) > 1:
    if len(brokers) < 3 or len(brokers) % 2 == 0:
        problem(f"a RabbitMQ cluster needs an odd number of nodes, 3 or more (quorum queues and the "
                f"metadata store need a majority), has {len(brokers)}: {', '.join(sorted(brokers))}")
    hosts, data, cookies, peer_lists = {}, {}, set(), []
    for name, service in brokers.items():
        host = service.get("hostname")
        if not host:
            problem(f"services.{name}: a cluster node needs a fixed hostname (its node name is rabbit@<hostname>)")
        hosts[name] = host
        env = environment(service)
        args = " ".join(str(env.get(k, "")) for k in ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "RABBITMQ_CTL_ERL_ARGS"))
        found = set(re.findall(r"-setcookie\s+(\S+)", args))
        if len(found) != 1 or not str(env.get("RABBITMQ_CTL_ERL_ARGS", "")).strip():
            problem(f"services.{name}: needs the cluster's Erlang cookie in RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS "
                    f"and RABBITMQ_CTL_ERL_ARGS (-setcookie ...), the same for the server and its CLI")
        cookies |= found
        for source, target in mounts(service):
            if target == "/var/lib/rabbitmq":
                data[name] = source
            elif target and target.startswith("/etc/rabbitmq/conf.d/") and source:
                path = os.path.normpath(os.path.join(os.path.dirname(compose_paths[0]), source))
                try:
                    with open(path, encoding="utf-8") as f:
                        conf = f.read()
                except OSError as e:
                    problem(f"services.{name}: mounts {source}, which cannot be read: {e}")
                    continue
                listed = re.findall(r"(?m)^\s*cluster_formation\.classic_config\.nodes\.\d+\s*=\s*(\S+)", conf)
                if listed:
                    peer_lists.append((name, set(listed)))
    if len(cookies) > 1:
        problem(f"the RabbitMQ nodes use different Erlang cookies: they cannot join one cluster")
    if len(set(hosts.values())) != len(hosts):
        problem(f"the RabbitMQ nodes' hostnames repeat: {hosts}")
    if len(data) != len(brokers) or len(set(data.values())) != len(data):
        problem(f"every RabbitMQ node needs a data volume of its own at /var/lib/rabbitmq, got {data}")
    expected = {f"rabbit@{h}" for h in hosts.values() if h}
    if len(peer_lists) != len(brokers):
        problem("every RabbitMQ node needs the peer discovery list (cluster_formation.classic_config.nodes.N in a "
                "file mounted under /etc/rabbitmq/conf.d/)")
    for name, listed in peer_lists:
        if listed != expected:
            problem(f"services.{name}: its peer discovery list {sorted(listed)} is not the cluster's nodes {sorted(expected)}")

# --- PostgreSQL: what every pool may open fits in max_connections ---------------------------
with open(os.path.join(root, "shared", "src", "config.rs"), encoding="utf-8") as f:
    config_rs = f.read()
pool_fn = re.search(r"pub fn default_pool_size\(role: &str\) -> u32 \{(.*?)\n\}", config_rs, re.S)
default_pool, fallback_pool = {}, 20
if not pool_fn:
    problem("cannot find default_pool_size in shared/src/config.rs")
else:
    for arm, size in re.findall(r"\n\s*(.+?) => (\d+),", pool_fn.group(1)):
        if arm.strip() == "_":
            fallback_pool = int(size)
        for role in re.findall(r'"([a-z-]+)"', arm):
            default_pool[role] = int(size)
postgres = [s for s in services.values() if isinstance(s, dict) and str(s.get("image", "")).startswith("postgres:")]
max_connections = 100  # PostgreSQL's default
for service in postgres:
    command = service.get("command") or []
    command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    for i, word in enumerate(command):
        m = re.match(r"max_connections=(\d+)$", word)
        if m and i > 0 and command[i - 1] == "-c":
            max_connections = int(m.group(1))
# superuser_reserved_connections (3) and a few for psql, backups and monitoring.
available = max_connections - 3 - 5
opened, parts = 0, []
for name, binary in sorted(service_binary.items()):
    service = services[name]
    if binary == "showrunner-migrate":
        opened += 1  # one connection, and it exits before the roles start
        parts.append(f"{name} 1")
        continue
    role = binary.removeprefix("showrunner-")
    raw = environment(service).get("SHOWRUNNER__DATABASE__MAX_CONNECTIONS")
    pool = int(raw) if raw else default_pool.get(role, fallback_pool)
    # The api also holds one LISTEN connection beside its pool (api/src/settled.rs).
    pool += 1 if role == "api" else 0
    replicas = (service.get("deploy") or {}).get("replicas", 1)
    replicas = replicas if isinstance(replicas, int) else 1
    opened += replicas * pool
    parts.append(f"{name} {replicas} x {pool}")
print(f"check-compose: {compose_label}: PostgreSQL connections at most {opened} ({', '.join(parts)}) "
      f"of {available} available (max_connections {max_connections})", file=sys.stderr)
if opened > available:
    problem(f"the pools may open {opened} PostgreSQL connections, more than the {available} that max_connections "
            f"= {max_connections} leaves: smaller pools (SHOWRUNNER__DATABASE__MAX_CONNECTIONS), fewer replicas, "
            f"or a larger max_connections on the postgres service")

if problems:
    print(f"check-compose: {len(problems)} problem(s) in {compose_label}:", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    sys.exit(1)
print(f"check-compose: {compose_label}: {len(services)} services; app binaries {', '.join(sorted(checked_binaries))} "
      "are built by the workspace and copied by the Dockerfile; worker roles "
      f"{', '.join(worker_binaries)} scale with deploy.replicas", file=sys.stderr)
PY
    if ((${#compose_cmd[@]})); then
        if ! output="$(cd "$ROOT" && "${compose_cmd[@]}" "${args[@]}" config -q 2>&1)"; then
            fail "\`${compose_cmd[*]} ${args[*]} config -q\` refused it:"$'\n'"$output"
        fi
        echo "check-compose: \`${compose_cmd[*]} ${args[*]} config -q\` accepts it" >&2
    else
        echo "check-compose: no docker compose plugin; skipped \`docker compose config -q\`" >&2
    fi
}

if (($#)); then
    check "$@"
else
    check "$ROOT/compose.yaml"
    check "$ROOT/compose.yaml" "$ROOT/compose.cluster.yaml"
fi
echo "compose: ok"
