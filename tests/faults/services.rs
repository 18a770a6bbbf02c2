//! A private PostgreSQL cluster and a private RabbitMQ node in a temporary directory, on ports
//! of their own, so the suite can kill and restart them without touching the machine's shared
//! services.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

/// How often a starting RabbitMQ node is asked whether it runs.
pub const START_POLL: Duration = Duration::from_millis(500);

/// The environment `rabbitmq-server` and `rabbitmqctl` need for a private node whose files are
/// in `dir` (the single node here and each node of the cluster).
pub fn node_env(dir: &Path, node: &str, port: u16, dist_port: u16) -> Vec<(&'static str, String)> {
    let at = |file: &str| dir.join(file).to_string_lossy().into_owned();
    vec![
        ("RABBITMQ_NODENAME", node.to_string()),
        ("RABBITMQ_NODE_PORT", port.to_string()),
        ("RABBITMQ_DIST_PORT", dist_port.to_string()),
        ("RABBITMQ_MNESIA_BASE", at("mnesia")),
        ("RABBITMQ_LOG_BASE", at("log")),
        ("RABBITMQ_CONFIG_FILE", at("rabbitmq")),
        ("RABBITMQ_ADVANCED_CONFIG_FILE", at("advanced.config")),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", at("enabled_plugins")),
        ("RABBITMQ_PID_FILE", at("pid")),
    ]
}

/// `rabbitmq-server` for the node in `dir`, its output appended to `dir/server.out` (the old
/// pid file removed: the node writes it once it runs).
pub fn server_command(dir: &Path) -> anyhow::Result<Command> {
    let _ = std::fs::remove_file(dir.join("pid"));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.out"))?;
    let mut command = Command::new(format!("{RABBIT_BIN}/rabbitmq-server"));
    command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    Ok(command)
}

/// One look at a starting node: `Ok(true)` once `await_startup` answered yes (`awaited`), an
/// error once its server process exited or `deadline` passed, `Ok(false)` to look again after
/// [`START_POLL`].
pub fn node_started(
    name: &str,
    dir: &Path,
    awaited: bool,
    exited: Option<std::process::ExitStatus>,
    (deadline, limit): (Instant, Duration),
) -> anyhow::Result<bool> {
    if awaited {
        return Ok(true);
    }
    if let Some(status) = exited {
        bail!("{name} exited ({status}); see {}", dir.join("server.out").display());
    }
    if Instant::now() > deadline {
        bail!("{name} did not start within {limit:?}");
    }
    Ok(false)
}

/// A free TCP port on loopback (free now; the services bind it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(what: &str, command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("{what}: cannot start"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The newest PostgreSQL server installed the Debian way (`/usr/lib/postgresql/<major>/bin`).
fn pg_bin() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .unwrap_or(15);
    PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin"))
}

fn as_postgres(program: &str) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(pg_bin().join(program));
    command
}

pub struct Postgres {
    pub port: u16,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
}

impl Postgres {
    /// `initdb` (as the `postgres` user: PostgreSQL refuses root) and start.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let data = dir.join("pg");
        let socket_dir = dir.join("pgrun");
        std::fs::create_dir_all(&socket_dir)?;
        run("chown", Command::new("chown").args(["postgres:postgres"]).arg(&socket_dir))?;
        run(
            "mkdir pg",
            Command::new("install").args(["-d", "-o", "postgres", "-m", "700"]).arg(&data),
        )?;
        run(
            "initdb",
            as_postgres("initdb")
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
                .arg(&data),
        )?;
        let pg = Self {
            port: free_port()?,
            data,
            socket_dir,
            log: dir.join("pgrun").join("postgres.log"),
        };
        pg.start()?;
        Ok(pg)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=400 -c fsync=off",
            self.port,
            self.socket_dir.display()
        );
        run(
            "pg_ctl start",
            as_postgres("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .stdout(Stdio::null()),
        )
    }

    /// `immediate`: the way a crash stops it (recovery from the WAL at the next start).
    pub fn stop(&self, mode: &str) -> anyhow::Result<()> {
        run(
            "pg_ctl stop",
            as_postgres("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "60", "-m", mode, "stop"])
                .stdout(Stdio::null()),
        )
    }
}

pub struct Rabbit {
    pub port: u16,
    dist_port: u16,
    node: String,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl Rabbit {
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("rabbit");
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let mut dist_port = free_port()?;
        while dist_port == port {
            dist_port = free_port()?;
        }
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users.guest = false\n"),
        )?;
        // No plugins: the management listener of the shared node keeps its port to itself.
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let node = format!("srfaults{}@localhost", std::process::id());
        let mut rabbit = Self { port, dist_port, node, dir, child: None };
        rabbit.start()?;
        Ok(rabbit)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn env(&self, command: &mut Command) {
        command.envs(node_env(&self.dir, &self.node, self.port, self.dist_port));
    }

    /// Starts the node and waits until it takes AMQP connections.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let mut command = server_command(&self.dir)?;
        self.env(&mut command);
        self.child = Some(command.spawn().context("start rabbitmq-server")?);
        let limit = Duration::from_secs(90);
        let deadline = Instant::now() + limit;
        loop {
            let mut ctl = Command::new(format!("{RABBIT_BIN}/rabbitmqctl"));
            self.env(&mut ctl);
            ctl.args(["-n", &self.node, "-q", "await_startup", "--timeout", "5"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let awaited = ctl.status().is_ok_and(|s| s.success());
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if node_started("rabbitmq-server", &self.dir, awaited, exited, (deadline, limit))? {
                return Ok(());
            }
            std::thread::sleep(START_POLL);
        }
    }

    /// SIGKILL to the Erlang VM: what a crash of the broker looks like to its clients.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let pid = std::fs::read_to_string(self.dir.join("pid")).context("read the node's pid")?;
        run("kill rabbitmq", Command::new("kill").args(["-9", pid.trim()]))?;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        Ok(())
    }

    /// A clean stop (`rabbitmqctl stop`), SIGKILL if that fails.
    pub fn stop(&mut self) {
        let mut ctl = Command::new(format!("{RABBIT_BIN}/rabbitmqctl"));
        self.env(&mut ctl);
        ctl.args(["-n", &self.node, "-q", "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
        if !ctl.status().is_ok_and(|s| s.success()) {
            let _ = self.kill();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}
