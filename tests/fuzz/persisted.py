"""After a fuzz run: every row the API let in obeys the domain rules, every accepted command
was applied or rejected, and nothing was parked as unprocessable.

usage: persisted.py DATABASE_URL MANAGEMENT_URL VHOST
Exits 1 naming every violation; prints what the run left behind.
"""

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from base64 import b64encode

# The rules of shared/src/domain.rs and of POST /jobs (api/src/routes/jobs.rs).
TITLE_MAX, DESCRIPTION_MAX, CATEGORIES_MAX, CATEGORY_MAX = 200, 10_000, 20, 50
EPISODE_STATUSES = {"draft", "in_production", "published", "archived"}
COMMAND_STATUSES = {"pending", "applied", "rejected"}
JOB_STATUSES = {"queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled"}
# The job types `showrunner up` declares (shared/src/jobs/types.rs, JobTypes::builtin).
JOB_TYPES = {"webhook", "episode.export", "composition.export", "file.purge"}
JOB_TYPE = re.compile(r"^[a-z0-9._-]{1,100}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]([\t\x20-\x7e]{0,198}[\x21-\x7e])?$")
# Rust's char::is_whitespace (Unicode White_Space), which str::trim uses; Python's
# str.isspace differs (it counts \x1c-\x1f).
WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}


def blank(s):
    return all(c in WHITE_SPACE for c in s)


def rows(db_url, query):
    out = subprocess.run(
        ["psql", db_url, "-v", "ON_ERROR_STOP=1", "-At", "-c", f"SELECT row_to_json(t)::text FROM ({query}) t"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # Not splitlines(): it also splits at U+2028 and friends, which JSON leaves unescaped.
    return [json.loads(line) for line in out.split("\n") if line]


def episode_problems(e):
    title, description, categories = e["title"], e["description"], e["categories"]
    if blank(title) or len(title) > TITLE_MAX or "\0" in title:
        yield f"title {title!r} breaks 1..{TITLE_MAX} non-blank characters"
    if len(description) > DESCRIPTION_MAX or "\0" in description:
        yield f"description of {len(description)} characters"
    if e["status"] not in EPISODE_STATUSES:
        yield f"status {e['status']!r}"
    if len(categories) > CATEGORIES_MAX:
        yield f"{len(categories)} categories"
    if len(set(categories)) != len(categories):
        yield f"repeated categories {categories!r}"
    for c in categories:
        if blank(c) or len(c) > CATEGORY_MAX or "\0" in c:
            yield f"category {c!r}"
    if e["version"] < 1:
        yield f"version {e['version']}"


def job_problems(j):
    if not JOB_TYPE.match(j["type"]) or j["type"] not in JOB_TYPES:
        yield f"type {j['type']!r}"
    if j["progress_percent"] is not None and not 0 <= j["progress_percent"] <= 100:
        yield f"progress_percent {j['progress_percent']}"
    if not 1 <= j["max_attempts"] <= 100:
        yield f"max_attempts {j['max_attempts']}"
    if not 0 <= j["attempts"] <= j["max_attempts"]:
        yield f"attempts {j['attempts']} of {j['max_attempts']}"
    if j["status"] not in JOB_STATUSES:
        yield f"status {j['status']!r}"


def command_problems(c):
    if c["status"] not in COMMAND_STATUSES:
        yield f"status {c['status']!r}"
    if c["status"] == "pending":
        yield "still pending: accepted but neither applied nor rejected"
    key = c["idempotency_key"]
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        yield f"idempotency key {key!r}"


def parked(management, vhost):
    url = f"{management}/api/queues/{urllib.parse.quote(vhost, safe='')}"
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        queues = json.load(response)
    return {q["name"]: q.get("messages", 0) for q in queues if q["name"].endswith(".parked")}


def main():
    db_url, management, vhost = sys.argv[1:4]
    # The workers apply what the api accepted asynchronously: give them a deadline to finish.
    deadline = time.monotonic() + 60
    while True:
        pending = rows(db_url, "SELECT count(*) AS n FROM commands WHERE status = 'pending'")[0]["n"]
        if pending == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    failures = []
    tables = {
        "episodes": ("SELECT * FROM episodes", episode_problems),
        "jobs": ("SELECT * FROM jobs", job_problems),
        "commands": ("SELECT id, status, idempotency_key FROM commands", command_problems),
    }
    for table, (query, problems) in tables.items():
        found = rows(db_url, query)
        print(f"{table}: {len(found)} rows")
        for row in found:
            failures += [f"{table} {row['id']}: {p}" for p in problems(row)]
    counts = rows(
        db_url,
        "SELECT (SELECT count(*) FROM activity_log) AS activity, "
        "(SELECT count(*) FROM notifications) AS notifications, "
        "(SELECT count(*) FROM commands WHERE status = 'rejected') AS rejected_commands",
    )[0]
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    # The parking lots hold what a consumer could not process: an accepted request that ends up
    # there was invalid and slipped through. (Jobs that failed for good are parked by design.)
    for queue, messages in sorted(parked(management, vhost).items()):
        if messages and queue != "showrunner.jobs.parked":
            failures.append(f"queue {queue}: {messages} parked message(s)")

    if failures:
        print(f"{len(failures)} violation(s) of the domain rules in what was persisted:")
        for failure in failures[:50]:
            print(f"  {failure}")
        sys.exit(1)
    print("persisted data: every row obeys the domain rules")


if __name__ == "__main__":
    main()
