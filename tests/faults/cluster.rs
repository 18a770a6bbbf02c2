//! The suite's cluster mode (`--cluster`): a real three-node RabbitMQ cluster on this machine
//! instead of the single node, and node faults instead of the rotation of process faults.
//!
//! The nodes run on loopback with ports of their own (AMQP, Erlang distribution, management),
//! names `srfaults<pid>-c<n>@localhost`, data and logs under the suite's temporary directory,
//! and an Erlang cookie of their own (their `HOME` is that directory, so neither the nodes nor
//! the `rabbitmqctl` calls that manage them can reach the machine's own node, which shares
//! epmd on 4369 and nothing else). `c2` and `c3` join `c1` with `rabbitmqctl join_cluster`.
//!
//! Under load it stops (cleanly) the node the api is connected to, brings it back, then
//! kills -9 the node that leads most command partition queues and brings it back, in turn while
//! the duration lasts (one round at least). A probe writes an episode every 250 ms and keeps
//! each attempt's time and answer, which gives how long after each fault writes were accepted
//! again; its writes are checked with everyone else's.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::Log;
use crate::load::{Accepted, Api, ClientReport};

use crate::services::{self, RABBIT_BIN};
/// Nodes in the cluster: the smallest that survives the loss of one.
const SIZE: usize = 3;
/// How long a node stays down before the suite brings it back.
const DOWN_FOR: Duration = Duration::from_secs(8);
/// The longest a node fault may keep writes from being accepted (measured: one to a few
/// seconds; a process that cannot fail over waits for its node to come back, 30 s and more).
const MAX_GAP: Duration = Duration::from_secs(30);
/// How long a node may take to start, and its queue replicas to be back online (a few seconds
/// on a quiet machine; over 100 s were seen on this one shared with other builds).
const START_LIMIT: Duration = Duration::from_secs(300);

/// Ports for the nodes, below the kernel's ephemeral range: a port in that range may be taken
/// by an outgoing connection (or a client's connection to itself while the node is down, which
/// loopback allows) in the seconds a stopped node is away, and the node cannot listen again.
fn ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (20_000u16, ephemeral_low.max(20_000 + 1_000));
    let span = u32::from(high - low);
    let start = (std::process::id() * 97) % span;
    let mut found = Vec::new();
    for i in 0..span {
        let port = low + ((start + i) % span) as u16;
        // The ports of the machine's own node, in case they are configured in this range.
        if [5672, 15672, 25672, 15692, 4369].contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            found.push(port);
            if found.len() == count {
                return Ok(found);
            }
        }
    }
    bail!("no {count} free ports between {low} and {high}")
}

struct Node {
    name: String,
    amqp: u16,
    dist: u16,
    management: u16,
    dir: PathBuf,
    home: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn env(&self, command: &mut Command) {
        command
            .env("HOME", &self.home)
            .envs(services::node_env(&self.dir, &self.name, self.amqp, self.dist))
            // Three VMs share two cores: schedulers that spin while idle would eat them.
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "+sbwt none +sbwtdcpu none +sbwtdio none");
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(format!("{RABBIT_BIN}/rabbitmqctl"));
        self.env(&mut command);
        command.arg("-n").arg(&self.name).args(args).stdin(Stdio::null());
        command
    }

    async fn run_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = self.ctl(args).output().await.context("run rabbitmqctl")?;
        if !output.status.success() {
            bail!(
                "rabbitmqctl -n {} {} failed ({}): {}{}",
                self.name,
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::from(services::server_command(&self.dir)?);
        self.env(&mut command);
        self.child = Some(command.spawn().context("start rabbitmq-server")?);
        Ok(())
    }

    /// Waits until the node runs (`await_startup`), or fails if it exits or takes too long.
    async fn wait_started(&mut self) -> anyhow::Result<()> {
        let deadline = (Instant::now() + START_LIMIT, START_LIMIT);
        loop {
            let awaited = self
                .ctl(&["-q", "await_startup", "--timeout", "5"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if services::node_started(&self.name, &self.dir, awaited, exited, deadline)? {
                return Ok(());
            }
            tokio::time::sleep(services::START_POLL).await;
        }
    }

    /// A clean stop (`rabbitmqctl stop`): the node closes its client connections and leaves.
    async fn stop(&mut self) -> anyhow::Result<()> {
        let pid = self.dir.join("pid");
        self.run_ctl(&["stop", &pid.to_string_lossy()]).await?;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
        Ok(())
    }

    /// SIGKILL to the node's VM: a crash, as its clients and the other nodes see it.
    async fn kill(&mut self) -> anyhow::Result<()> {
        let pid = std::fs::read_to_string(self.dir.join("pid")).context("read the node's pid")?;
        let status = Command::new("kill").args(["-9", pid.trim()]).status().await?;
        anyhow::ensure!(status.success(), "kill -9 {} failed", pid.trim());
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
        Ok(())
    }

    /// Kills the node if it runs; for the teardown and for a suite that failed half way.
    fn kill_now(&mut self) {
        if self.child.is_none() {
            return;
        }
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp)
    }

    fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/{path}", self.management)
    }
}

pub struct Cluster {
    nodes: Vec<Node>,
    http: reqwest::Client,
    /// What the checks at creation found wrong (the group size).
    findings: Vec<String>,
}

impl Drop for Cluster {
    /// Whatever happened, no node outlives the suite.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill_now();
        }
    }
}

impl Cluster {
    /// Starts three nodes under `dir` and joins the second and third to the first.
    pub async fn create(dir: &Path) -> anyhow::Result<Self> {
        let base = dir.join("cluster");
        std::fs::create_dir_all(&base)?;
        let cookie = base.join(".erlang.cookie");
        std::fs::write(&cookie, format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)))?;
        // Erlang refuses a cookie file that others can read.
        let status = Command::new("chmod").arg("400").arg(&cookie).status().await?;
        anyhow::ensure!(status.success(), "chmod the cookie");
        let ports = ports(3 * SIZE)?;
        let mut nodes = Vec::new();
        for i in 0..SIZE {
            let node_dir = base.join(format!("c{}", i + 1));
            std::fs::create_dir_all(&node_dir)?;
            let (amqp, dist, management) = (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]);
            std::fs::write(
                node_dir.join("rabbitmq.conf"),
                format!(
                    "listeners.tcp.default = 127.0.0.1:{amqp}\nloopback_users.guest = false\n\
                     management.tcp.port = {management}\nmanagement.tcp.ip = 127.0.0.1\n\
                     collect_statistics_interval = 1000\n"
                ),
            )?;
            std::fs::write(node_dir.join("enabled_plugins"), "[rabbitmq_management].\n")?;
            nodes.push(Node {
                name: format!("srfaults{}-c{}@localhost", std::process::id(), i + 1),
                amqp,
                dist,
                management,
                dir: node_dir,
                home: base.clone(),
                child: None,
            });
        }
        let http = showrunner_shared::tls::client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("an HTTP client")?;
        let mut cluster = Self { nodes, http, findings: Vec::new() };
        for node in &mut cluster.nodes {
            node.spawn()?;
        }
        for node in &mut cluster.nodes {
            node.wait_started().await?;
        }
        let first = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            node.run_ctl(&["stop_app"]).await?;
            node.run_ctl(&["join_cluster", &first]).await?;
            node.run_ctl(&["start_app"]).await?;
        }
        let deadline = Instant::now() + START_LIMIT;
        while cluster.running_nodes().await.len() < SIZE {
            anyhow::ensure!(Instant::now() < deadline, "the nodes did not form one cluster");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Checked before the load: it declares a topology's worth of quorum queues.
        if let Some(finding) = cluster.group_size_holds().await? {
            cluster.findings.push(format!("amqp.quorum_initial_group_size: {finding}"));
        }
        Ok(cluster)
    }

    /// Every node's URL, comma-separated, in node order (`amqp.urls`).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(Node::url).collect::<Vec<_>>().join(",")
    }

    pub fn describe(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{} (AMQP {}, management {})", n.name, n.amqp, n.management))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The first answer of a management API GET from any node that answers.
    async fn get(&self, path: &str) -> Option<Value> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let answer = self.http.get(node.api(path)).basic_auth("guest", Some("guest")).send();
            if let Ok(response) = answer.await
                && response.status().is_success()
                && let Ok(value) = response.json::<Value>().await
            {
                return Some(value);
            }
        }
        None
    }

    /// The names of the nodes the cluster reports running.
    async fn running_nodes(&self) -> Vec<String> {
        let Some(Value::Array(nodes)) = self.get("nodes?columns=name,running").await else {
            return Vec::new();
        };
        nodes
            .iter()
            .filter(|n| n["running"] == true)
            .filter_map(|n| Some(n["name"].as_str()?.to_string()))
            .collect()
    }

    /// The quorum queues of vhost `/`: name, leader, members, members online.
    async fn quorum_queues(&self) -> Vec<(String, String, usize, usize)> {
        let path = "queues/%2F?columns=name,type,leader,members,online";
        let Some(Value::Array(queues)) = self.get(path).await else { return Vec::new() };
        let len = |v: &Value| v.as_array().map_or(0, Vec::len);
        queues
            .iter()
            .filter(|q| q["type"] == "quorum")
            .filter_map(|q| {
                let name = q["name"].as_str()?.to_string();
                let leader = q["leader"].as_str().unwrap_or_default().to_string();
                Some((name, leader, len(&q["members"]), len(&q["online"])))
            })
            .collect()
    }

    fn index_of(&self, node_name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == node_name)
    }

    /// The node the api's connection is on (management API `connections`), if it has one.
    async fn api_node(&self) -> Option<usize> {
        let Some(Value::Array(connections)) =
            self.get("connections?columns=user_provided_name,node").await
        else {
            return None;
        };
        connections
            .iter()
            .find(|c| {
                c["user_provided_name"].as_str().is_some_and(|n| n.starts_with("showrunner-api@"))
            })
            .and_then(|c| self.index_of(c["node"].as_str()?))
    }

    /// The node that leads the most command partition queues, and how many it leads.
    async fn command_leader(&self) -> Option<(usize, usize)> {
        let mut led: HashMap<String, usize> = HashMap::new();
        for (name, leader, _, _) in self.quorum_queues().await {
            if name.starts_with("showrunner.commands.p") && !name.ends_with(".parked") {
                *led.entry(leader).or_default() += 1;
            }
        }
        let (leader, count) = led.into_iter().max_by_key(|(_, n)| *n)?;
        Some((self.index_of(&leader)?, count))
    }

    /// Waits until every node runs and every quorum queue has all its members online.
    async fn wait_whole(&self) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let queues = self.quorum_queues().await;
            if self.running_nodes().await.len() == SIZE
                && !queues.is_empty()
                && queues.iter().all(|(_, _, members, online)| online == members)
            {
                return Ok(start.elapsed());
            }
            anyhow::ensure!(
                start.elapsed() < START_LIMIT,
                "the cluster was not whole again within {START_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Kills every node that still runs (the data goes with the suite's directory).
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            node.kill_now();
        }
    }

    /// `amqp.quorum_initial_group_size` on this cluster: the topology declared in a scratch
    /// vhost with a group size of 2 must give every quorum queue 2 members. `None` if it does.
    async fn group_size_holds(&self) -> anyhow::Result<Option<String>> {
        let vhost = "sr_group_size";
        let node = &self.nodes[0];
        let put = |path: String, body: Value| {
            self.http.put(node.api(&path)).basic_auth("guest", Some("guest")).json(&body).send()
        };
        put(format!("vhosts/{vhost}"), json!({})).await?.error_for_status()?;
        put(
            format!("permissions/{vhost}/guest"),
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await?
        .error_for_status()?;
        let url = format!("amqp://guest:guest@127.0.0.1:{}/{vhost}", node.amqp);
        let settings = showrunner_shared::config::Settings::with_overrides(&[
            ("amqp.url", &url),
            ("amqp.partitions", "1"),
            ("amqp.quorum_initial_group_size", "2"),
        ])?;
        let conn = showrunner_shared::broker::connect(&url, "faults").await?;
        showrunner_shared::broker::topology::declare(&conn, &settings.amqp).await?;
        let _ = conn.close(200, "declared".into()).await;
        let queues = self.get(&format!("queues/{vhost}?columns=name,members")).await;
        let _ = self
            .http
            .delete(node.api(&format!("vhosts/{vhost}")))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
        let sizes: Vec<usize> = queues
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|q| q["members"].as_array().map_or(0, Vec::len))
            .collect();
        Ok(if !sizes.is_empty() && sizes.iter().all(|&n| n == 2) {
            None
        } else {
            Some(format!("declared with a group size of 2, the queues have {sizes:?} members"))
        })
    }
}

/// One attempt of the probe: when it was sent, when it was answered, whether it was accepted.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    sent: Instant,
    answered: Instant,
    accepted: bool,
}

#[derive(Default)]
struct ProbeLog {
    attempts: Vec<Attempt>,
    report: ClientReport,
}

/// Writes an episode every 250 ms (each retried with its key until accepted, at most 20 in
/// flight) until `stop`; the ones in hand get until `give_up`.
async fn probe(
    api: Arc<Api>,
    token: String,
    stop: Arc<AtomicBool>,
    give_up: Arc<AtomicBool>,
    log: Arc<Mutex<ProbeLog>>,
) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut writes = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if in_flight.load(Ordering::Relaxed) >= 20 {
            continue;
        }
        n += 1;
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (api, token, give_up, log, in_flight) =
            (api.clone(), token.clone(), give_up.clone(), log.clone(), in_flight.clone());
        writes.spawn(async move {
            probe_write(&api, &token, n, &give_up, &log).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    while writes.join_next().await.is_some() {}
}

async fn probe_write(api: &Api, token: &str, n: u64, give_up: &AtomicBool, log: &Mutex<ProbeLog>) {
    let key = Uuid::now_v7().to_string();
    let body = json!({"title": format!("probe {n}"), "categories": ["faults"]});
    let mut first = true;
    loop {
        let sent = Instant::now();
        let answer = api
            .http
            .post(format!("{}/episodes", api.base))
            .bearer_auth(token)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        let (accepted, outcome) = match answer {
            Ok(r) if r.status().is_success() => (true, r.json::<Value>().await.ok()),
            Ok(r) if r.status().is_server_error() => (false, None),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.report.unexpected.push(format!("probe POST (key {key}): {status} {text}"));
                return;
            }
            Err(_) => (false, None),
        };
        let done = {
            let mut guard = log.lock().unwrap_or_else(|p| p.into_inner());
            guard.attempts.push(Attempt { sent, answered: Instant::now(), accepted });
            guard.report.attempts += 1;
            if !first {
                guard.report.retries += 1;
            }
            if accepted {
                let ids = outcome
                    .as_ref()
                    .map(|v| (uuid_at(v, &["data", "id"]), uuid_at(v, &["commandId"])));
                match ids {
                    Some((Some(episode_id), Some(command_id))) => {
                        guard.report.accepted.push(Accepted {
                            command_id,
                            kind: "create",
                            episode_id,
                            title: Some(format!("probe {n}")),
                        })
                    }
                    _ => guard.report.unexpected.push(format!("probe create answered {outcome:?}")),
                }
                true
            } else if give_up.load(Ordering::Relaxed) {
                guard.report.abandoned += 1;
                true
            } else {
                false
            }
        };
        if done {
            return;
        }
        first = false;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn uuid_at(value: &Value, path: &[&str]) -> Option<Uuid> {
    path.iter().try_fold(value, |v, k| v.get(k))?.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

/// A node fault: when the suite began it and when the action (the stop, the kill) returned.
struct Fault {
    what: String,
    began: Instant,
    ended: Instant,
}

/// What the cluster mode ran, for the end of the suite.
pub struct Run {
    probe: tokio::task::JoinHandle<()>,
    log: Arc<Mutex<ProbeLog>>,
    faults: Vec<Fault>,
    /// Findings about the cluster itself (queue replicas, the group size).
    pub violations: Vec<String>,
}

/// Starts the probe, then injects node faults until `end` (one round of each at least).
#[allow(clippy::too_many_arguments)]
pub async fn inject(
    cluster: &mut Cluster,
    api: Arc<Api>,
    token: String,
    stop: Arc<AtomicBool>,
    give_up: Arc<AtomicBool>,
    log: &mut Log,
    counts: &mut HashMap<&'static str, u32>,
    end: Instant,
) -> anyhow::Result<Run> {
    let probe_log = Arc::new(Mutex::new(ProbeLog::default()));
    let probe = tokio::spawn(probe(api, token, stop, give_up, probe_log.clone()));
    let mut run = Run { probe, log: probe_log, faults: Vec::new(), violations: Vec::new() };

    let queues = cluster.quorum_queues().await;
    let short: Vec<&str> = queues
        .iter()
        .filter(|(_, _, members, _)| *members != SIZE)
        .map(|(name, ..)| name.as_str())
        .collect();
    log.act(format!(
        "{} quorum queues, {} of them without a replica on each of the {SIZE} nodes",
        queues.len(),
        short.len()
    ));
    if queues.is_empty() || !short.is_empty() {
        run.violations.push(format!(
            "quorum queues without {SIZE} replicas (the broker's default group size): {short:?}"
        ));
    }
    if cluster.findings.is_empty() {
        log.act("before the load: a topology declared with amqp.quorum_initial_group_size = 2 got 2 replicas per queue".into());
    }
    run.violations.append(&mut cluster.findings);

    let mut round = 0;
    while round == 0 || Instant::now() < end {
        round += 1;
        tokio::time::sleep(Duration::from_secs(5)).await;

        // A clean stop of the node the api is on: every connection there closes.
        let victim = cluster.api_node().await.unwrap_or(0);
        let name = cluster.nodes[victim].name.clone();
        let began = Instant::now();
        cluster.nodes[victim].stop().await?;
        log.act(format!(
            "stopped {name}, the api's node (rabbitmqctl stop took {:.1}s)",
            began.elapsed().as_secs_f64()
        ));
        let what = format!("stop c{} (the api's node)", victim + 1);
        run.faults.push(Fault { what, began, ended: Instant::now() });
        *counts.entry("stop the api's RabbitMQ node, start it again").or_default() += 1;
        bring_back(cluster, victim, log).await?;

        // kill -9 the node that leads most command queues.
        let (victim, led) = cluster.command_leader().await.context("no command queue leader")?;
        let name = cluster.nodes[victim].name.clone();
        let began = Instant::now();
        cluster.nodes[victim].kill().await?;
        let what = format!("kill -9 c{} (leader of {led} command queues)", victim + 1);
        run.faults.push(Fault { what, began, ended: Instant::now() });
        log.act(format!("kill -9 {name}, leader of {led} command partition queues"));
        *counts.entry("kill -9 the command queues' leader node, start it again").or_default() += 1;
        bring_back(cluster, victim, log).await?;
    }
    Ok(run)
}

/// Leaves node `i` down for [`DOWN_FOR`], starts it and waits until the cluster is whole.
async fn bring_back(cluster: &mut Cluster, i: usize, log: &mut Log) -> anyhow::Result<()> {
    tokio::time::sleep(DOWN_FOR).await;
    let began = Instant::now();
    cluster.nodes[i].spawn()?;
    cluster.nodes[i].wait_started().await?;
    let started = began.elapsed();
    let whole = cluster.wait_whole().await?;
    log.act(format!(
        "{} back: started in {:.1}s, every queue replica online {:.1}s later",
        cluster.nodes[i].name,
        started.as_secs_f64(),
        whole.as_secs_f64()
    ));
    Ok(())
}

impl Run {
    /// The probe's writes (checked like the load's) and the recovery after each fault, printed;
    /// a fault that kept writes from being accepted for more than [`MAX_GAP`] is a violation.
    pub async fn finish(mut self) -> anyhow::Result<(ClientReport, Vec<String>)> {
        (&mut self.probe).await?;
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let attempts = std::mem::take(&mut log.attempts);
        println!(
            "\n== writes during and after each node fault (a probe writes every 250 ms and retries every 250 ms)"
        );
        println!(
            "  {:<46} {:>8} {:>12} {:>10} {:>9}",
            "fault", "took", "no write for", "from", "refused"
        );
        for fault in &self.faults {
            // Accepted answers from just before the fault to 30 s after its action returned;
            // the longest wait between two of them is how long writes were not accepted.
            let window_end = fault.ended + Duration::from_secs(30);
            let mut oks: Vec<Instant> = attempts
                .iter()
                .filter(|a| a.accepted && a.answered <= window_end)
                .map(|a| a.answered)
                .collect();
            oks.sort();
            let mut last =
                oks.iter().rev().find(|t| **t <= fault.began).copied().unwrap_or(fault.began);
            let (mut gap, mut gap_from) = (Duration::ZERO, last);
            for t in oks.iter().filter(|t| **t > fault.began) {
                if t.duration_since(last) > gap {
                    (gap, gap_from) = (t.duration_since(last), last);
                }
                last = *t;
            }
            let refused = attempts
                .iter()
                .filter(|a| !a.accepted && a.sent >= fault.began && a.sent <= window_end)
                .count();
            let accepted_after = oks.iter().any(|t| *t > fault.ended);
            if !accepted_after {
                self.violations.push(format!(
                    "no write was accepted from {:.1} s before \"{}\" ended to 30 s after \
                     ({refused} attempts refused): losing one node of three must not stop writes",
                    fault.ended.duration_since(last.min(fault.ended)).as_secs_f64(),
                    fault.what,
                ));
            } else if gap > MAX_GAP {
                self.violations.push(format!(
                    "no write was accepted for {:.1} s around \"{}\": losing one node of three \
                     must not stop writes for more than {MAX_GAP:?}",
                    gap.as_secs_f64(),
                    fault.what,
                ));
            }
            // Where the gap began, from the fault's beginning (negative: the last accepted
            // write before the fault).
            let from = if gap_from >= fault.began {
                gap_from.duration_since(fault.began).as_secs_f64()
            } else {
                -fault.began.duration_since(gap_from).as_secs_f64()
            };
            let gap = if accepted_after {
                format!("{:.1} s", gap.as_secs_f64())
            } else {
                "not again".to_string()
            };
            println!(
                "  {:<46} {:>8} {:>12} {:>10} {:>9}",
                fault.what,
                format!("{:.1} s", fault.ended.duration_since(fault.began).as_secs_f64()),
                gap,
                format!("{from:+.1} s"),
                refused
            );
        }
        println!(
            "  (took: the stop or kill itself; no write for: the longest time between two accepted \
             writes, from just before the fault to 30 s after it; from: when that began, from the \
             fault's start; refused: attempts answered 5xx or not at all meanwhile)"
        );
        Ok((std::mem::take(&mut log.report), std::mem::take(&mut self.violations)))
    }
}
