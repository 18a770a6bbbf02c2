"""What the Kubernetes schemas cannot check in a rendered kit (run by .ci/check-deploy.sh).

usage: checks.py REPO_ROOT RENDERED.yaml NAME
Prints the connection budget; exits 1 naming every problem.
"""

import json
import re
import sys

import yaml

root, rendered_path, name = sys.argv[1:4]
problems = []


def problem(message):
    problems.append(message)


with open(rendered_path, encoding="utf-8") as f:
    docs = [d for d in yaml.safe_load_all(f) if d]


def objects(kind):
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


deployments = objects("Deployment")
config_maps = objects("ConfigMap")
pdbs = objects("PodDisruptionBudget")
jobs = objects("Job")
scaled = objects("ScaledObject")
trigger_auths = objects("TriggerAuthentication")

# --- what the code says ----------------------------------------------------------------------
with open(f"{root}/shared/src/config.rs", encoding="utf-8") as f:
    config_rs = f.read()
pool_fn = re.search(r"pub fn default_pool_size\(role: &str\) -> u32 \{(.*?)\n\}", config_rs, re.S)
if not pool_fn:
    print(f"{name}: cannot find default_pool_size in shared/src/config.rs", file=sys.stderr)
    sys.exit(1)
default_pool = {}
fallback_pool = None
for arm, size in re.findall(r"\n\s*(.+?) => (\d+),", pool_fn.group(1)):
    if arm.strip() == "_":
        fallback_pool = int(size)
    for role in re.findall(r'"([a-z-]+)"', arm):
        default_pool[role] = int(size)
with open(f"{root}/Dockerfile", encoding="utf-8") as f:
    dockerfile = f.read()
with open(f"{root}/deploy/rabbitmq/permissions.json", encoding="utf-8") as f:
    permission_sets = json.load(f)
with open(f"{root}/deploy/kubernetes/secret.example.yaml", encoding="utf-8") as f:
    secret_example = yaml.safe_load(f)
secret_name = secret_example["metadata"]["name"]
secret_keys = set(secret_example.get("stringData", {}))

# role -> (binary, the env variable holding its listen address)
ROLES = {
    "api": ("showrunner-api", "SHOWRUNNER__HTTP__ADDR"),
    "episode-worker": ("showrunner-episode-worker", "SHOWRUNNER__OPS__ADDR"),
    "activity-worker": ("showrunner-activity-worker", "SHOWRUNNER__OPS__ADDR"),
    "notification-worker": ("showrunner-notification-worker", "SHOWRUNNER__OPS__ADDR"),
    "job-worker": ("showrunner-job-worker", "SHOWRUNNER__OPS__ADDR"),
}

# --- shared configuration ----------------------------------------------------------------------
config = config_maps.get("showrunner-config")
if not config:
    problem("no ConfigMap showrunner-config")
    config = {"data": {}, "metadata": {}}
config_data = config.get("data") or {}
budget_raw = (config["metadata"].get("annotations") or {}).get("showrunner.dev/postgres-connection-budget")
try:
    budget = int(budget_raw)
except (TypeError, ValueError):
    problem("showrunner-config needs the annotation showrunner.dev/postgres-connection-budget (an integer)")
    budget = None
partitions = int(config_data.get("SHOWRUNNER__AMQP__PARTITIONS", 16))


def env_of(container):
    """Plain values (ConfigMap first, then env) and secret references of a container."""
    values, secrets = {}, {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef", {}).get("name")
        if ref:
            if ref not in config_maps:
                problem(f"container {container['name']}: envFrom names a missing ConfigMap {ref}")
            values.update(config_maps.get(ref, {}).get("data") or {})
        if "secretRef" in source:
            problem(f"container {container['name']}: envFrom secretRef hands over a whole Secret; name each key")
    for var in container.get("env") or []:
        if "value" in var:
            values[var["name"]] = var["value"]
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secrets[var["name"]] = ref
            if ref.get("name") != secret_name:
                problem(f"container {container['name']}: {var['name']} comes from Secret {ref.get('name')!r}, not {secret_name!r}")
            elif ref.get("key") not in secret_keys:
                problem(f"container {container['name']}: {var['name']} reads key {ref.get('key')!r}, "
                        f"which secret.example.yaml does not list")
    return values, secrets


def check_resources(where, container):
    resources = container.get("resources") or {}
    for path in ("requests.cpu", "requests.memory", "limits.memory"):
        section, key = path.split(".")
        if not (resources.get(section) or {}).get(key):
            problem(f"{where}: container {container['name']} has no resources.{path}")


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    problem(f"container {container['name']}: no port named {port!r}")
    return None


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


if any(d.get("kind") == "Secret" for d in docs):
    problem("the kit renders a Secret: secrets are created out of band (secret.example.yaml)")

# --- one Deployment per role -----------------------------------------------------------------------
budget_lines = []
total = 0
for role, (binary, addr_var) in ROLES.items():
    deployment = deployments.get(f"showrunner-{role}")
    where = f"Deployment showrunner-{role}"
    if not deployment:
        problem(f"no Deployment showrunner-{role}")
        continue
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels") or {}
    if not matches(spec.get("selector") or {}, labels):
        problem(f"{where}: its selector does not select its own pods")
    scalers = [so for so in scaled.values()
               if so["spec"]["scaleTargetRef"].get("name") == deployment["metadata"]["name"]]
    replicas = spec.get("replicas")
    if scalers:
        # KEDA owns the count: a replicas field would reset it at every apply.
        if replicas is not None:
            problem(f"{where}: KEDA scales it, so it must not set replicas (each apply would reset KEDA's count)")
        replicas = max(so["spec"].get("minReplicaCount", 0) for so in scalers)
    elif not isinstance(replicas, int) or replicas < 1:
        problem(f"{where}: needs replicas >= 1, got {replicas!r}")
        replicas = 1
    containers = [c for c in pod.get("containers") or [] if c.get("name") == role]
    if not containers:
        problem(f"{where}: no container named {role}")
        continue
    container = containers[0]
    command = container.get("command") or []
    if not command or command[0] != binary:
        problem(f"{where}: runs {command!r}, not {binary}")
    if not re.search(r"/usr/local/bin/" + re.escape(binary) + r"\s", dockerfile):
        problem(f"{where}: the Dockerfile does not install {binary}")
    values, secrets = env_of(container)
    for var in ("SHOWRUNNER__DATABASE__URL", "SHOWRUNNER__AMQP__URL", "SHOWRUNNER__AUTH__JWT_SECRET"):
        if var not in secrets:
            problem(f"{where}: {var} must come from the Secret")
    amqp_key = (secrets.get("SHOWRUNNER__AMQP__URL") or {}).get("key")
    if amqp_key != f"amqp-url-{role}":
        problem(f"{where}: SHOWRUNNER__AMQP__URL reads {amqp_key!r}; each role has its own broker user (amqp-url-{role})")
    if role not in permission_sets:
        problem(f"{where}: deploy/rabbitmq/permissions.json has no permission set for {role}")
    if values.get("SHOWRUNNER__PROFILE") != "production":
        problem(f"{where}: SHOWRUNNER__PROFILE must be production")
    # Listen address and probes.
    addr = values.get(addr_var, "")
    host, _, port = addr.rpartition(":")
    if host not in ("0.0.0.0", "[::]"):
        problem(f"{where}: {addr_var} = {addr!r} must listen on every interface (0.0.0.0:PORT), or the kubelet cannot probe it")
    listen_port = int(port) if port.isdigit() else None
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = (container.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path:
            problem(f"{where}: {probe} must GET {path}, got {get.get('path')!r}")
        if port_number(container, get.get("port")) != listen_port:
            problem(f"{where}: {probe} probes port {get.get('port')!r}, the process listens on {listen_port}")
    # Drain before the kill.
    grace = float(values.get("SHOWRUNNER__SHUTDOWN__GRACE_SECS", 25))
    termination = pod.get("terminationGracePeriodSeconds", 30)
    if termination <= grace:
        problem(f"{where}: terminationGracePeriodSeconds ({termination}) must exceed shutdown.grace_secs ({grace:g})")
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        check_resources(where, c)
    # One PodDisruptionBudget selecting its pods.
    covering = [n for n, p in pdbs.items() if matches(p["spec"].get("selector") or {}, labels)]
    if len(covering) != 1:
        problem(f"{where}: needs exactly one PodDisruptionBudget selecting its pods, found {covering}")
    # Connections: the most replicas this role can have (KEDA's maximum where KEDA scales it).
    most = max([replicas] + [so["spec"].get("maxReplicaCount", 100) for so in scalers])
    pool_raw = values.get("SHOWRUNNER__DATABASE__MAX_CONNECTIONS")
    pool = int(pool_raw) if pool_raw else default_pool.get(role, fallback_pool)
    # The api also holds one LISTEN connection beside its pool (api/src/settled.rs).
    pool += 1 if role == "api" else 0
    total += most * pool
    budget_lines.append(f"{role} {most} x {pool}")

# --- the migration Job ---------------------------------------------------------------------
deploy_steps = []
for job_name, job in jobs.items():
    pod = job["spec"]["template"]["spec"]
    steps = [(c, (c.get("command") or [None])) for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])]
    commands = [cmd for _, cmd in steps]
    if ["showrunner-migrate"] in commands:
        deploy_steps.append(job_name)
        if ["showrunner", "topology"] not in commands:
            problem(f"Job {job_name}: declares no topology (`showrunner topology` with the deploy user)")
        elif commands.index(["showrunner-migrate"]) > commands.index(["showrunner", "topology"]):
            problem(f"Job {job_name}: must migrate before it declares the topology")
        if pod.get("restartPolicy") not in ("Never", "OnFailure"):
            problem(f"Job {job_name}: restartPolicy must be Never or OnFailure")
        for container, cmd in steps:
            _, secrets = env_of(container)
            check_resources(f"Job {job_name}", container)
            if cmd == ["showrunner-migrate"]:
                key = (secrets.get("SHOWRUNNER__DATABASE__URL") or {}).get("key")
                if key != "database-migrate-url":
                    problem(f"Job {job_name}: the migration must use database-migrate-url (straight to PostgreSQL), not {key!r}")
            if cmd == ["showrunner", "topology"]:
                key = (secrets.get("SHOWRUNNER__AMQP__URL") or {}).get("key")
                if key != "amqp-url-deploy":
                    problem(f"Job {job_name}: the topology needs the deploy user (amqp-url-deploy), not {key!r}")
if len(deploy_steps) != 1:
    problem(f"needs exactly one Job running showrunner-migrate, found {deploy_steps}")
total += 1  # the migration's one connection
budget_lines.append("migration 1")

# --- KEDA ----------------------------------------------------------------------------------------
command_queues = [f"showrunner.commands.p{p:03}" for p in range(partitions)]
not_commands = ["showrunner.commands.p000.parked", "showrunner.commands", "showrunner.jobs"]
expected_scaling = {"showrunner-episode-worker", "showrunner-job-worker"}
targets = set()
for so_name, so in scaled.items():
    spec = so["spec"]
    target = spec.get("scaleTargetRef", {}).get("name")
    targets.add(target)
    if target not in deployments:
        problem(f"ScaledObject {so_name}: scales {target!r}, which is no Deployment of the kit")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if low < 1 or high < low:
        problem(f"ScaledObject {so_name}: needs 1 <= minReplicaCount <= maxReplicaCount, got {low}..{high}")
    if target == "showrunner-episode-worker" and high > partitions:
        problem(f"ScaledObject {so_name}: maxReplicaCount {high} exceeds the {partitions} partitions (the rest would idle)")
    for trigger in spec.get("triggers") or []:
        if trigger.get("type") != "rabbitmq":
            problem(f"ScaledObject {so_name}: trigger type {trigger.get('type')!r}, expected rabbitmq")
            continue
        meta = trigger.get("metadata") or {}
        auth = (trigger.get("authenticationRef") or {}).get("name")
        if auth not in trigger_auths:
            problem(f"ScaledObject {so_name}: authenticationRef {auth!r} is no TriggerAuthentication of the kit")
        for ref in (trigger_auths.get(auth) or {}).get("spec", {}).get("secretTargetRef") or []:
            if ref.get("name") != secret_name or ref.get("key") not in secret_keys:
                problem(f"TriggerAuthentication {auth}: reads {ref.get('name')}/{ref.get('key')}, not a key of secret.example.yaml")
        if meta.get("mode") not in ("QueueLength", "MessageRate") or not str(meta.get("value", "")).strip():
            problem(f"ScaledObject {so_name}: needs mode QueueLength or MessageRate and a value")
        queue = meta.get("queueName", "")
        if target == "showrunner-episode-worker":
            if meta.get("useRegex") != "true" or meta.get("protocol") != "http":
                problem(f"ScaledObject {so_name}: the partition queues need useRegex \"true\" over protocol http")
            try:
                pattern = re.compile(queue)
            except re.error as e:
                problem(f"ScaledObject {so_name}: queueName is not a regex: {e}")
                continue
            if not all(pattern.search(q) for q in command_queues) or any(pattern.search(q) for q in not_commands):
                problem(f"ScaledObject {so_name}: queueName {queue!r} must match every partition queue and nothing else")
        elif target == "showrunner-job-worker" and queue != "showrunner.jobs":
            problem(f"ScaledObject {so_name}: queueName {queue!r}, the job queue is showrunner.jobs")
if targets != expected_scaling:
    problem(f"KEDA must scale exactly {sorted(expected_scaling)}, scales {sorted(t for t in targets if t)}")

# --- the connection budget -------------------------------------------------------------------------
line = f"{name}: PostgreSQL connections at most {total} ({', '.join(budget_lines)})"
if budget is not None:
    line += f", budget {budget}"
    if total > budget:
        problem(f"the pools may open {total} connections, over the budget of {budget} "
                "(showrunner.dev/postgres-connection-budget): fewer replicas, smaller pools, or PgBouncer")
print(line, file=sys.stderr)

if problems:
    print(f"check-deploy: {len(problems)} problem(s) in {name}:", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    sys.exit(1)
