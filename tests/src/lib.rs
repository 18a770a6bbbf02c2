//! `TestApp`: a whole Showrunner stack for one test or benchmark, in this process, against the
//! real RabbitMQ and PostgreSQL, isolated by its own database and its own vhost, both removed
//! when the app is stopped or dropped. Helpers wait for conditions with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, FromQueryResult, Statement,
};
use showrunner_shared::auth::{self, Claims, Role};
use showrunner_shared::config::Settings;
use showrunner_workers::Role as Worker;
use showrunner_workers::jobs::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP_SERVER: &str = "amqp://guest:guest@127.0.0.1:5672";
pub const MANAGEMENT: &str = "http://127.0.0.1:15672";
pub const TEST_SECRET: &str = "test-secret-test-secret-test-secret";

/// How a test wants its stack.
#[derive(Debug, Clone)]
pub struct Options {
    pub partitions: u16,
    pub api_instances: usize,
    pub episode_workers: usize,
    pub activity_workers: usize,
    pub notification_workers: usize,
    /// Job workers started with the stack (more with [`TestApp::start_job_worker`]).
    pub job_workers: usize,
    /// The job types the job workers run and the api accepts: the built-in ones unless a test
    /// adds its own.
    pub job_registry: Registry,
    pub extra: Vec<(String, String)>,
}

impl Options {
    /// The api alone: no episode, activity, notification or job worker (a test starts the
    /// parts it needs, or calls the workers' code directly).
    pub fn no_workers() -> Self {
        Self {
            episode_workers: 0,
            activity_workers: 0,
            notification_workers: 0,
            job_workers: 0,
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            partitions: 4,
            api_instances: 1,
            episode_workers: 1,
            activity_workers: 1,
            notification_workers: 1,
            job_workers: 0,
            job_registry: Registry::builtin(),
            extra: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub name: String,
    pub addr: SocketAddr,
    /// Every api instance's address (the first is `addr`).
    pub addrs: Vec<SocketAddr>,
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub http: reqwest::Client,
    cancel: CancellationToken,
    roles: JoinSet<anyhow::Result<()>>,
    episode_workers: Vec<CancellationToken>,
    job_registry: Registry,
    cleaned: bool,
}

pub mod job_handlers;

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        match Self::try_spawn(options).await {
            Ok(app) => app,
            Err(error) => panic!("cannot start a test stack: {error:#}"),
        }
    }

    async fn try_spawn(options: Options) -> anyhow::Result<Self> {
        let name = format!("sr_test_{}", Uuid::now_v7().simple());
        create_database(&name).await?;
        create_vhost(&name).await?;
        let database_url = format!("{PG_SERVER}/{name}");
        let amqp_url = format!("{AMQP_SERVER}/{name}");
        let partitions = options.partitions.to_string();
        // The stack's files in this process's memory, under the stack's own name.
        let storage_url = format!("memory://{name}");
        let mut pairs: Vec<(&str, &str)> = vec![
            ("storage.url", &storage_url),
            ("database.url", &database_url),
            ("database.max_connections", "10"),
            ("amqp.url", &amqp_url),
            ("amqp.partitions", &partitions),
            ("http.addr", "127.0.0.1:0"),
            ("auth.jwt_secret", TEST_SECRET),
            ("workers.heartbeat_secs", "1"),
            ("workers.heartbeat_ttl_secs", "4"),
            // Many stacks share the test process: no worker opens an ops port of its own
            // (tests/it/ops.rs serves one per stack through `ops::scoped`).
            ("ops.enabled", "false"),
        ];
        pairs.extend(options.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let settings = Arc::new(Settings::with_overrides(&pairs)?);
        showrunner_migrations::migrate(&settings.database.url).await?;
        let db = Database::connect(&settings.database.url).await?;

        let cancel = CancellationToken::new();
        let mut roles = JoinSet::new();
        let mut addrs = Vec::new();
        for _ in 0..options.api_instances.max(1) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            roles.spawn(showrunner_api::run_with(
                settings.clone(),
                options.job_registry.job_types(),
                listener,
                cancel.child_token(),
            ));
        }
        let addr = addrs[0];
        let mut episode_workers = Vec::new();
        for (role, count) in [
            (Worker::Episode, options.episode_workers),
            (Worker::Activity, options.activity_workers),
            (Worker::Notification, options.notification_workers),
            (Worker::Job, options.job_workers),
        ] {
            for _ in 0..count {
                let token = cancel.child_token();
                if role == Worker::Episode {
                    episode_workers.push(token.clone());
                }
                let registry = options.job_registry.clone();
                roles.spawn(role.run_with(settings.clone(), registry, token));
            }
        }
        let app = Self {
            name,
            addr,
            addrs: addrs.clone(),
            settings,
            db,
            http: showrunner_shared::tls::client(),
            cancel,
            roles,
            episode_workers,
            job_registry: options.job_registry,
            cleaned: false,
        };
        for addr in &addrs {
            let url = format!("http://{addr}/ready");
            let http = app.http.clone();
            wait_until("the api is ready", Duration::from_secs(20), || {
                let (http, url) = (http.clone(), url.clone());
                async move { http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) }
            })
            .await;
        }
        Ok(app)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The WebSocket URL of api instance `instance`, with the token in the query.
    pub fn ws_url(&self, instance: usize, token: &str) -> String {
        format!("ws://{}/api/v1/ws?token={token}", self.addrs[instance])
    }

    pub fn api(&self, path: &str) -> String {
        self.url(&format!("/api/v1{path}"))
    }

    /// A bearer token for `name` (a stable id per name) with `role`.
    pub fn token(&self, name: &str, role: Role) -> String {
        auth::encode(&claims(name, role), TEST_SECRET.as_bytes())
    }

    pub fn user_id(name: &str) -> Uuid {
        claims(name, Role::Member).sub
    }

    /// A lapin connection to this app's vhost, for tests that talk to the broker directly.
    pub async fn amqp(&self) -> lapin::Connection {
        showrunner_shared::broker::connect(&self.settings.amqp.url, "test")
            .await
            .unwrap_or_else(|e| panic!("connect to the test vhost: {e}"))
    }

    /// Starts one more job worker in this process, with the stack's job types.
    pub fn start_job_worker(&mut self) {
        self.roles.spawn(Worker::Job.run_with(
            self.settings.clone(),
            self.job_registry.clone(),
            self.cancel.child_token(),
        ));
    }

    /// The `SHOWRUNNER__*` variables that point a separate process at this stack.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SHOWRUNNER__DATABASE__URL".into(), self.settings.database.url.clone()),
            ("SHOWRUNNER__AMQP__URL".into(), self.settings.amqp.url.clone()),
            ("SHOWRUNNER__AMQP__PARTITIONS".into(), self.settings.amqp.partitions.to_string()),
            (
                "SHOWRUNNER__AMQP__QUEUE_TYPE".into(),
                match self.settings.amqp.queue_type {
                    showrunner_shared::config::QueueType::Quorum => "quorum".into(),
                    showrunner_shared::config::QueueType::Classic => "classic".into(),
                },
            ),
            ("SHOWRUNNER__AUTH__JWT_SECRET".into(), TEST_SECRET.into()),
            ("SHOWRUNNER__OPS__ADDR".into(), "127.0.0.1:0".into()),
            ("SHOWRUNNER__JOBS__TIMEOUT_SECS".into(), self.settings.jobs.timeout_secs.to_string()),
            (
                "SHOWRUNNER__JOBS__INITIAL_DELAY_MS".into(),
                self.settings.jobs.initial_delay_ms.to_string(),
            ),
            ("SHOWRUNNER__JOBS__MAX_DELAY_MS".into(), self.settings.jobs.max_delay_ms.to_string()),
        ]
    }

    /// Starts one more episode worker in this process.
    pub fn start_episode_worker(&mut self) {
        let token = self.cancel.child_token();
        self.episode_workers.push(token.clone());
        self.roles.spawn(Worker::Episode.run(self.settings.clone(), token));
    }

    /// Stops the `index`th episode worker (it drains and leaves).
    pub fn stop_episode_worker(&self, index: usize) {
        if let Some(token) = self.episode_workers.get(index) {
            token.cancel();
        }
    }

    /// Runs `query` and returns the first column of the first row as i64.
    pub async fn count(&self, query: &str) -> i64 {
        #[derive(FromQueryResult)]
        struct Count {
            n: i64,
        }
        let sql = format!("SELECT ({query})::bigint AS n");
        Count::find_by_statement(Statement::from_string(DbBackend::Postgres, sql))
            .one(&self.db)
            .await
            .ok()
            .flatten()
            .map_or(-1, |c| c.n)
    }

    /// Stops every role, then removes the database and the vhost.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        while let Some(result) = self.roles.join_next().await {
            if let Ok(Err(error)) = result {
                eprintln!("a role ended with an error: {error:#}");
            }
        }
        let _ = self.db.clone().close().await;
        cleanup(&self.name).await;
        self.cleaned = true;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // A test that panicked: stop the roles and clean up from a thread of our own, since
        // Drop cannot await.
        self.cancel.cancel();
        self.roles.abort_all();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(cleanup(&name));
            }
        })
        .join();
    }
}

fn claims(name: &str, role: Role) -> Claims {
    Claims {
        sub: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("showrunner-test-user:{name}").as_bytes()),
        name: name.to_string(),
        email: format!("{name}@example.com"),
        role,
        exp: chrono::Utc::now().timestamp() + 3600,
    }
}

async fn create_database(name: &str) -> anyhow::Result<()> {
    let admin = Database::connect(format!("{PG_SERVER}/postgres"))
        .await
        .context("connect to PostgreSQL")?;
    admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
    admin.close().await?;
    Ok(())
}

/// The management API answers, or is made to: on a fresh machine the plugin is off, and the
/// tests enable it once (that needs the rights `rabbitmq-plugins` needs, as in CI).
async fn ensure_management() -> anyhow::Result<()> {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_try_init(|| async {
            let http = showrunner_shared::tls::client();
            let up = || async {
                http.get(format!("{MANAGEMENT}/api/overview"))
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            };
            if up().await {
                return Ok(());
            }
            let status = tokio::process::Command::new("rabbitmq-plugins")
                .args(["enable", "--quiet", "rabbitmq_management"])
                .status()
                .await
                .context("the RabbitMQ management API is down and rabbitmq-plugins cannot run")?;
            anyhow::ensure!(status.success(), "rabbitmq-plugins enable rabbitmq_management failed");
            let start = Instant::now();
            while !up().await {
                anyhow::ensure!(
                    start.elapsed() < Duration::from_secs(60),
                    "the management API did not come up"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(())
        })
        .await
        .map(|_| ())
}

async fn create_vhost(name: &str) -> anyhow::Result<()> {
    ensure_management().await?;
    let http = showrunner_shared::tls::client();
    let put = |path: String, body: serde_json::Value| {
        http.put(format!("{MANAGEMENT}/api/{path}"))
            .basic_auth("guest", Some("guest"))
            .json(&body)
            .send()
    };
    put(format!("vhosts/{name}"), serde_json::json!({}))
        .await
        .context("RabbitMQ management API (enable rabbitmq_management)")?
        .error_for_status()?;
    put(
        format!("permissions/{name}/guest"),
        serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
    )
    .await?
    .error_for_status()?;
    Ok(())
}

async fn cleanup(name: &str) {
    let http = showrunner_shared::tls::client();
    let _ = http
        .delete(format!("{MANAGEMENT}/api/vhosts/{name}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await;
    if let Ok(admin) = Database::connect(format!("{PG_SERVER}/postgres")).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
        let _ = admin.close().await;
    }
}

/// Polls `condition` until it holds; panics with `what` after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, deadline, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Queue details from the management API (`messages`, `consumers`, `single_active_consumer_tag`...).
pub async fn queue_info(vhost: &str, queue: &str) -> Option<serde_json::Value> {
    showrunner_shared::tls::client()
        .get(format!("{MANAGEMENT}/api/queues/{vhost}/{queue}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Polls `probe` until it yields a value; panics with `what` after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Queues one job of `job_type` per payload as `POST /jobs` does, without HTTP: the rows
/// (`queued`, created by the test user `creator`, a fresh dispatch id each) in one statement,
/// then their requests published with confirms, 500 at a time. For the tests and `bench-jobs`
/// that queue thousands of jobs before a worker runs; the ids, in payload order.
pub async fn queue_jobs(
    db: &DatabaseConnection,
    publisher: &showrunner_shared::broker::Publisher,
    job_type: &str,
    max_attempts: i32,
    creator: &str,
    payloads: Vec<String>,
) -> anyhow::Result<Vec<Uuid>> {
    use showrunner_shared::broker::topology::{JOBS_EXCHANGE, JOBS_KEY};
    use showrunner_shared::broker::{Outgoing, publisher_json_properties};
    use showrunner_shared::contracts::JobRequest;

    let ids: Vec<Uuid> = payloads.iter().map(|_| Uuid::now_v7()).collect();
    let dispatches: Vec<Uuid> = payloads.iter().map(|_| Uuid::now_v7()).collect();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO jobs (id, type, payload, status, max_attempts, created_by, \
         created_by_name, dispatch_id) \
         SELECT id, $5, payload::jsonb, 'queued', $6, $4, $7, dispatch \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) AS t(id, dispatch, payload)",
        [
            ids.clone().into(),
            dispatches.clone().into(),
            payloads.into(),
            TestApp::user_id(creator).into(),
            job_type.into(),
            max_attempts.into(),
            creator.into(),
        ],
    ))
    .await
    .context("record the job rows")?;
    let bodies: Vec<(String, Vec<u8>)> = ids
        .iter()
        .zip(&dispatches)
        .map(|(id, dispatch)| {
            let request = JobRequest { job_id: *id, dispatch_id: *dispatch, not_before: None };
            // A struct of two ids and an absent time always serializes.
            (dispatch.to_string(), serde_json::to_vec(&request).unwrap_or_default())
        })
        .collect();
    for chunk in bodies.chunks(500) {
        let messages = chunk
            .iter()
            .map(|(message_id, body)| Outgoing {
                exchange: JOBS_EXCHANGE,
                routing_key: JOBS_KEY,
                body,
                properties: publisher_json_properties(message_id, "job", Default::default()),
                mandatory: true,
            })
            .collect();
        publisher.publish_all(messages).await.context("publish the job requests")?;
    }
    Ok(ids)
}
