//! Secrets stay out of the logs, and production refuses the development JWT secret: the real
//! `showrunner` binary, run as an operator would, with recognizable secrets in its
//! configuration, against the real PostgreSQL and RabbitMQ (its own database, vhost and broker
//! user, removed at the end).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use uuid::Uuid;

const SHOWRUNNER: &str = env!("CARGO_BIN_EXE_showrunner");
const PG_SERVER: &str = "127.0.0.1:5432";

mod common;
use common::{clean_up, delete_vhost_and_user, management_put};

/// The configuration a run gets through `SHOWRUNNER__*` (nothing inherited from the caller).
fn showrunner(env: &[(&str, String)]) -> Command {
    let mut command = Command::new(SHOWRUNNER);
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

#[test]
fn production_refuses_the_development_jwt_secret() {
    let env = [("SHOWRUNNER__PROFILE", "production".to_string())];
    for args in [&["up"][..], &["token", "--user", "alice"][..]] {
        let out = showrunner(&env).args(args).output().expect("run showrunner");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("auth.jwt_secret"), "names the key: {stderr}");
        assert!(stderr.contains("production"), "{stderr}");
        assert!(!stderr.contains(showrunner_shared::config::DEV_JWT_SECRET), "{stderr}");
    }
    // Development (the default) still starts with it: `token` needs no services to show that.
    let out = showrunner(&[]).args(["token", "--user", "alice"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Production with a secret of its own is fine.
    let env = [
        ("SHOWRUNNER__PROFILE", "production".to_string()),
        ("SHOWRUNNER__AUTH__JWT_SECRET", "a-production-secret-of-its-own".to_string()),
    ];
    let out = showrunner(&env).args(["token", "--user", "alice"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A database, a vhost and a broker user of this test's own, removed on drop.
struct Sandbox {
    name: String,
    broker_password: String,
}

impl Sandbox {
    async fn create() -> Self {
        let name = format!("sr_test_{}", Uuid::now_v7().simple());
        let sandbox =
            Self { broker_password: format!("amqp-PW-{}", Uuid::now_v7().simple()), name };
        let admin = Database::connect(format!("postgres://postgres@{PG_SERVER}/postgres"))
            .await
            .expect("pg");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{}\"", sandbox.name))
            .await
            .expect("create database");
        let _ = admin.close().await;
        for (path, body) in [
            (format!("vhosts/{}", sandbox.name), serde_json::json!({})),
            (
                format!("users/{}", sandbox.name),
                serde_json::json!({"password": sandbox.broker_password, "tags": ""}),
            ),
            (
                format!("permissions/{0}/{0}", sandbox.name),
                serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
            ),
        ] {
            management_put(&path, body).await;
        }
        sandbox
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let name = self.name.clone();
        clean_up(move || async move {
            delete_vhost_and_user(&name).await;
            let url = format!("postgres://postgres@{PG_SERVER}/postgres");
            if let Ok(admin) = Database::connect(url).await {
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = admin.execute_unprepared(&sql).await;
                let _ = admin.close().await;
            }
        });
    }
}

/// A `showrunner` process whose stdout and stderr go to files.
struct Process {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    fn start(command: &mut Command, dir: &Path, label: &str) -> Self {
        let stdout = dir.join(format!("{label}.stdout"));
        let stderr = dir.join(format!("{label}.stderr"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start showrunner");
        Self { child, stdout, stderr }
    }

    fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }

    /// SIGTERM, then the exit status, within `deadline`.
    async fn stop(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                panic!(
                    "showrunner did not exit within {deadline:?} of SIGTERM:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What must not show: the secret, and its last part alone when that is long enough to be
/// unmistakable (a copy cut at a hyphen or a dot, or re-encoded around it, would still give
/// the random part away).
fn forms(secret: &str) -> Vec<&str> {
    let tail = secret.rsplit(['-', '.']).next().unwrap_or(secret);
    if tail.len() >= 16 { vec![secret, tail] } else { vec![secret] }
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let sandbox = Sandbox::create().await;
    let dir = std::env::temp_dir().join(format!("showrunner-secrets-{}", sandbox.name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let jwt_secret = format!("jwt-SECRET-{}", Uuid::now_v7().simple());
    let db_password = format!("pg-PW-{}", Uuid::now_v7().simple());
    // PostgreSQL here trusts loopback, so it accepts the password without asking for it; the
    // broker user really has this password.
    let database_url = format!("postgres://postgres:{db_password}@{PG_SERVER}/{}", sandbox.name);
    let amqp_url =
        |password: &str| format!("amqp://{0}:{password}@127.0.0.1:5672/{0}", sandbox.name);
    let env = |amqp: String| {
        vec![
            ("SHOWRUNNER__PROFILE", "production".to_string()),
            ("SHOWRUNNER__AUTH__JWT_SECRET", jwt_secret.clone()),
            ("SHOWRUNNER__DATABASE__URL", database_url.clone()),
            ("SHOWRUNNER__DATABASE__MAX_CONNECTIONS", "5".to_string()),
            ("SHOWRUNNER__AMQP__URL", amqp),
            ("SHOWRUNNER__AMQP__PARTITIONS", "2".to_string()),
            ("SHOWRUNNER__HTTP__ADDR", "127.0.0.1:0".to_string()),
            ("SHOWRUNNER__OPS__ADDR", "127.0.0.1:0".to_string()),
            ("SHOWRUNNER__STORAGE__URL", format!("file://{}", dir.join("files").display())),
            ("SHOWRUNNER__JOBS__MAX_ATTEMPTS", "1".to_string()),
            // As much as every library logs: a leak at any level counts.
            ("SHOWRUNNER__LOG__FILTER", "trace".to_string()),
        ]
    };
    let good = env(amqp_url(&sandbox.broker_password));

    let mut stack = Process::start(showrunner(&good).arg("up"), &dir, "up");
    let base = wait_for("the address line", Duration::from_secs(60), || {
        let out = std::fs::read_to_string(&stack.stdout).unwrap_or_default();
        out.lines()
            .find_map(|l| l.trim().strip_prefix("REST API"))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    })
    .await;
    let origin = base.trim_end_matches("/api/v1").to_string();
    let http = showrunner_shared::tls::client();
    let start = Instant::now();
    while !http.get(format!("{origin}/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(start.elapsed() < Duration::from_secs(60), "not ready:\n{}", stack.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Exercise the paths that log: a write applied by the workers, reads, a job that fails
    // (its error is logged), refused tokens, and a request body quoting the secrets.
    let out = showrunner(&good).args(["token", "--user", "alice", "--role", "admin"]).output();
    let token = String::from_utf8(out.expect("token").stdout).expect("utf-8").trim().to_string();
    let created = http
        .post(format!("{base}/episodes"))
        .bearer_auth(&token)
        .header("Prefer", "wait=10")
        .json(&serde_json::json!({"title": "Pilot", "categories": ["drama"]}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201, "{}", stack.output());
    let listed = http.get(format!("{base}/episodes")).bearer_auth(&token).send().await;
    assert_eq!(listed.expect("list").status(), 200);
    let job = http
        .post(format!("{base}/jobs"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"type": "webhook", "payload": {"url": "http://127.0.0.1:1/hook", "body": {}}}))
        .send()
        .await
        .expect("job");
    assert_eq!(job.status(), 202);
    // A bearer token is a credential too; the WebSocket takes it in the query string, where a
    // request log would pick it up.
    let ws = http.get(format!("{base}/ws?token={token}")).send().await.expect("ws");
    assert!(ws.status().is_client_error(), "{}", ws.status());
    for bad in ["not-a-token", "a.b.c", &format!("{token}x")] {
        let r = http.get(format!("{base}/episodes")).bearer_auth(bad).send().await.expect("get");
        assert_eq!(r.status(), 401);
    }
    wait_for("the job to fail", Duration::from_secs(30), || {
        stack.output().contains("127.0.0.1:1").then_some(())
    })
    .await;
    let status = stack.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status:?}:\n{}", stack.output());

    // A broker that refuses the password, and a database that is not there: the errors an
    // operator sees must not quote the URLs' passwords either.
    let wrong_password = format!("wrong-PW-{}", Uuid::now_v7().simple());
    let mut refused =
        Process::start(showrunner(&env(amqp_url(&wrong_password))).arg("up"), &dir, "refused");
    wait_for("the refused login to be reported", Duration::from_secs(30), || {
        let out = refused.output();
        (out.contains("ACCESS_REFUSED") || refused.child.try_wait().ok().flatten().is_some())
            .then_some(())
    })
    .await;
    refused.stop(Duration::from_secs(30)).await;
    let mut no_db_env = good.clone();
    // A hyphen in the name: `migrate` does not create such a database, so the connect fails at
    // once ("does not exist"), where an unreachable server would take the pool's timeout.
    let no_db_url =
        format!("postgres://postgres:{db_password}@{PG_SERVER}/{}-missing", sandbox.name);
    no_db_env.push(("SHOWRUNNER__DATABASE__URL", no_db_url));
    let no_db = showrunner(&no_db_env).arg("up").output().expect("run");
    assert!(!no_db.status.success());

    let logs = [
        ("up", stack.output()),
        ("wrong broker password", refused.output()),
        (
            "no database",
            format!(
                "{}{}",
                String::from_utf8_lossy(&no_db.stdout),
                String::from_utf8_lossy(&no_db.stderr)
            ),
        ),
    ];
    assert!(logs[0].1.contains("api listening"), "the run logged:\n{}", logs[0].1);
    assert!(logs[0].1.contains("TRACE"), "trace level reached the log");
    assert!(logs[2].1.contains("does not exist"), "the failure is reported: {}", logs[2].1);
    for (label, log) in &logs {
        for secret in [&jwt_secret, &db_password, &sandbox.broker_password, &wrong_password, &token]
        {
            for form in forms(secret) {
                if let Some(at) = log.find(form) {
                    let line = log[..at].rsplit('\n').next().unwrap_or_default();
                    panic!("{label}: a secret reached the log, in the line starting {line:?}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
