//! Typed configuration: built-in defaults, then an optional TOML file, then `SHOWRUNNER__*`
//! environment variables. Every key is documented where it is declared.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Media types uploads may have unless `files.allowed_types` says otherwise.
pub const DEFAULT_FILE_TYPES: &str = "audio/*,video/*,image/*,application/pdf,text/plain,\
    application/json,application/octet-stream";

/// The development JWT secret. Fine on a laptop; the `production` profile refuses it.
pub const DEV_JWT_SECRET: &str = "showrunner-dev-secret-change-me";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `development` (the default, so one command starts a laptop) or `production`, which
    /// refuses to start with the development JWT secret.
    pub profile: Profile,
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub workers: WorkerSettings,
    pub realtime: RealtimeSettings,
    pub jobs: JobSettings,
    pub log: LogSettings,
    pub limits: LimitSettings,
    pub ops: OpsSettings,
    pub shutdown: ShutdownSettings,
    pub storage: StorageSettings,
    pub files: FileSettings,
    pub retention: RetentionSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Seconds a process drains after SIGTERM or SIGINT before it exits anyway (below the 30 s
    /// an orchestrator such as `docker stop` waits before it kills).
    pub grace_secs: u64,
}

/// What one caller may send and hold: every limit of the API except the three that live with
/// the feature they bound (`http.max_wait_secs`, `realtime.max_frame_bytes`,
/// `realtime.max_subscriptions`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Largest request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects in a JSON body.
    pub max_json_depth: usize,
    /// Longest string in a JSON body or a query parameter, in characters.
    pub max_string_chars: usize,
    /// Most items of one array (or members of one object) in a JSON body.
    pub max_list_items: usize,
    /// Largest `limit` of a list request.
    pub max_page_size: u32,
    /// WebSocket connections one user may hold open to one api instance.
    pub max_connections_per_user: usize,
    /// Requests per second one user may sustain on one api instance (a token bucket).
    pub requests_per_sec: u32,
    /// Requests one user may send at once before `requests_per_sec` applies (the bucket size).
    pub request_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeSettings {
    /// How long the event log keeps events for `resume`, in seconds.
    pub event_log_retention_secs: u64,
    /// Frames queued for one WebSocket client; a client that falls further behind is closed.
    pub send_buffer: usize,
    /// Seconds between server pings; a client silent for three of them is closed.
    pub heartbeat_secs: u64,
    /// Largest WebSocket message a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Most patterns one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Most events one `resume` replays; further behind, the client must reload.
    pub max_replay: u64,
}

/// `Debug` shows the URL without its password (see [`redact_url`]).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// PostgreSQL URL; the database name is the deployment's own.
    pub url: String,
    /// Pool size of each role's pool; unset, the role's own default
    /// ([`DatabaseSettings::pool_size_for`]).
    pub max_connections: Option<u32>,
    /// Seconds a statement waits for a pooled connection before it fails: the api then answers
    /// 503, a worker retries its batch without acking.
    pub acquire_timeout_secs: u64,
}

impl DatabaseSettings {
    /// The pool size of `role`: `max_connections` when set, else what the role needs. The
    /// api serves many requests at once; a worker applies one batch at a time beside its
    /// heartbeat, sweeper and readiness ping; a job worker finishes up to `jobs.max_in_flight`
    /// jobs, most of them grouped into shared transactions. README "Running it on a cluster"
    /// sums them per deployment.
    pub fn pool_size_for(&self, role: &str) -> u32 {
        self.max_connections.unwrap_or_else(|| default_pool_size(role))
    }
}

/// Default pool size per role (`showrunner up` gives each of its roles its own pool).
pub fn default_pool_size(role: &str) -> u32 {
    match role {
        "episode-worker" | "activity-worker" | "notification-worker" => 4,
        "job-worker" => 8,
        _ => 20,
    }
}

/// `Debug` shows the URL without its password (see [`redact_url`]).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// RabbitMQ URL (one node, or a load balancer in front of a cluster); its vhost keeps
    /// deployments apart. Not used when `urls` is set.
    pub url: String,
    /// The nodes of a cluster, in the order a process tries them (see [`AmqpSettings::nodes`]).
    /// A TOML array, or a comma-separated string in the environment. Empty: `url` alone.
    #[serde(deserialize_with = "list_or_commas")]
    pub urls: Vec<String>,
    /// How many partition queues carry episode commands (per-episode order needs a fixed
    /// number: changing it on a running system reorders in-flight commands).
    pub partitions: u16,
    /// `quorum` (default, replicated in a cluster) or `classic`.
    pub queue_type: QueueType,
    /// Unacknowledged deliveries a consumer may hold.
    pub prefetch: u16,
    /// Most messages one consumer applies in one database transaction.
    pub batch_size: usize,
    /// Redeliveries before the broker dead-letters a message to the parking lot.
    pub delivery_limit: i32,
    /// Seconds to wait for a publisher confirm before the publish counts as failed.
    pub confirm_timeout_secs: u64,
    /// Largest message body a consumer reads; a larger one is parked without being parsed.
    pub max_message_bytes: usize,
    /// `x-quorum-initial-group-size` of the quorum queues: how many nodes hold a replica of
    /// each queue created from now on. Unset: the broker's own default (RabbitMQ 3.10:
    /// `quorum_cluster_size`, 3, so every node of a cluster of up to three).
    #[serde(default)]
    pub quorum_initial_group_size: Option<u16>,
}

impl AmqpSettings {
    /// The broker nodes in the order a process tries them: `urls`, or `url` alone. A process
    /// connects to the first that answers; after it loses a connection it starts with the node
    /// after the one it lost (`broker::Nodes`).
    pub fn nodes(&self) -> &[String] {
        if self.urls.is_empty() { std::slice::from_ref(&self.url) } else { &self.urls }
    }
}

/// The default of `amqp.url`: the RabbitMQ of this machine, vhost `/`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .finish()
    }
}

impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("url", &redact_url(&self.url))
            .field("urls", &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
            .field("partitions", &self.partitions)
            .field("queue_type", &self.queue_type)
            .field("prefetch", &self.prefetch)
            .field("batch_size", &self.batch_size)
            .field("delivery_limit", &self.delivery_limit)
            .field("confirm_timeout_secs", &self.confirm_timeout_secs)
            .field("quorum_initial_group_size", &self.quorum_initial_group_size)
            .finish()
    }
}

/// `url` with the password of its userinfo replaced by `***`, for logs and messages. A URL
/// that does not parse is not shown at all, since where its password is cannot be told.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only a cannot-be-a-base URL refuses a password, and it has none to hide.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<a URL that does not parse>".to_string(),
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Quorum,
    Classic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Listen address of the API (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Longest `Prefer: wait=N` honoured, in seconds.
    pub max_wait_secs: u64,
    /// How long a viewer counts as present after `GET /episodes/{id}`, in seconds.
    pub presence_ttl_secs: u64,
    /// Seconds a connection has to send a request's headers, counted from its opening or from
    /// the end of the previous response (hyper's `header_read_timeout`): it closes slowloris
    /// connections and, since hyper counts an idle keep-alive connection the same way, idle
    /// keep-alive connections too.
    pub header_timeout_secs: u64,
    /// Seconds a request's body has to arrive, counted from the end of its headers (408).
    pub body_timeout_secs: u64,
    /// Open connections one api process holds (WebSockets included); beyond it, new
    /// connections are answered 503 and closed at once.
    pub max_connections: usize,
    /// Open connections from one client address (0: no cap, for an api behind a proxy whose
    /// address every client shares).
    pub max_connections_per_address: usize,
    /// Seconds a new WebSocket has to send its first frame (the pong to the server's opening
    /// ping counts) before it is closed.
    pub ws_first_frame_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret of the bearer tokens. Never logged.
    pub jwt_secret: Secret,
    /// Identity providers whose tokens are accepted beside the HS256 ones: a TOML array of
    /// tables, or the same as a JSON array in one string (as the environment carries it).
    #[serde(default, deserialize_with = "issuers_list_or_json")]
    pub issuers: Vec<IssuerSettings>,
    /// Clock skew allowed on `exp` and `nbf` of identity providers' tokens, in seconds (the
    /// HS256 ones are checked without).
    pub leeway_secs: u64,
    /// Seconds an issuer's keys are used before they are fetched again (kept if that fails).
    pub jwks_cache_secs: u64,
    /// Fewest seconds between two fetches of one issuer's keys, so tokens naming unknown key
    /// ids cannot make the api hammer the provider.
    pub jwks_min_refetch_secs: u64,
    /// Longest fetch of a discovery document or a key set, in seconds.
    pub jwks_timeout_secs: u64,
}

/// One identity provider (`[[auth.issuers]]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The `iss` its tokens carry, exactly.
    pub issuer: String,
    /// Where its keys are (a JWKS). Unset: read from `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The `aud` values accepted; a token must name one of them.
    pub audiences: Vec<String>,
    /// Signature algorithms accepted: `RS256`, `ES256`, `EdDSA`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim of the user's id (a UUID is taken as is, anything else becomes a UUIDv5).
    #[serde(default = "default_id_claim")]
    pub id_claim: String,
    /// Claim of the user's display name (falls back to `preferred_username`, then the id).
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// Claim holding the user's roles or groups (a string or a list); a dotted path reaches
    /// into objects (`realm_access.roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Provider roles or groups that make a user an `admin`.
    #[serde(default)]
    pub admin_roles: Vec<String>,
    /// Provider roles or groups that make a user a `member`; empty: every user of the
    /// provider with a valid token is a member.
    #[serde(default)]
    pub member_roles: Vec<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_id_claim() -> String {
    "sub".into()
}
fn default_name_claim() -> String {
    "name".into()
}
fn default_email_claim() -> String {
    "email".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}

/// The algorithms an issuer may name.
pub const ISSUER_ALGORITHMS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

/// `auth.issuers` as a TOML array of tables, or as a JSON array in one string.
fn issuers_list_or_json<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<IssuerSettings>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<IssuerSettings>),
        Json(String),
    }
    match Form::deserialize(d)? {
        Form::List(items) => Ok(items),
        Form::Json(text) if text.trim().is_empty() => Ok(Vec::new()),
        Form::Json(text) => serde_json::from_str(&text).map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Seconds between heartbeats of an episode worker (partition ownership).
    pub heartbeat_secs: u64,
    /// A worker whose heartbeat is older than this many seconds is gone; its partitions move.
    pub heartbeat_ttl_secs: u64,
    /// Outbox rows older than this many seconds are published by the sweeper (a crash left them).
    pub outbox_sweep_after_secs: u64,
    /// Commands still pending after this many seconds are published again by the sweeper.
    pub command_republish_after_secs: u64,
}

/// How long what is not history is kept, and how the history's partitions are kept (the
/// workers' retention sweep, `workers/src/retention.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Seconds between two sweeps of one process.
    pub interval_secs: u64,
    /// Rows deleted per statement (each statement is its own short transaction).
    pub batch_size: u32,
    /// Finished command rows (applied or rejected) are deleted this many seconds after they
    /// were accepted. At least 86,400: a command row is the Idempotency-Key record, documented
    /// to hold for 24 h.
    pub commands_secs: u64,
    /// Finished job rows (succeeded, failed, cancelled) are deleted this many seconds after
    /// they finished; their activity rows stay.
    pub jobs_secs: u64,
    /// Read notifications are deleted this many seconds after they were read.
    pub read_notifications_secs: u64,
    /// Presence rows whose last refresh is older than `http.presence_ttl_secs` plus this are
    /// deleted by the workers (the api expires them itself, with `viewer_left`; this only
    /// clears what no api was running to expire).
    pub presence_grace_secs: u64,
    /// Monthly partitions of `activity_log` created ahead of the current month.
    pub activity_months_ahead: u32,
    /// Partitions of `activity_log` wholly older than this many months are dropped; 0 keeps
    /// the history for ever.
    pub activity_months: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Delay before the second attempt of a failed job, in milliseconds.
    pub initial_delay_ms: u64,
    /// Each further delay is the previous one times this factor (at least 1).
    pub backoff_factor: f64,
    /// No delay between attempts exceeds this, in milliseconds.
    pub max_delay_ms: u64,
    /// Attempts of a job that does not say `maxAttempts` (including the first).
    pub max_attempts: u32,
    /// Unacknowledged job deliveries a job worker may hold.
    pub prefetch: u16,
    /// Jobs one job worker runs at the same time.
    pub max_in_flight: usize,
    /// Longest run of one attempt, in seconds. At most 1500: a job holds its delivery while it
    /// runs, and RabbitMQ closes the channel of a delivery unacked for 30 minutes.
    pub timeout_secs: u64,
    /// Hosts a `webhook` may reach: names (`hooks.example.com`, `*.example.com`), addresses or
    /// CIDR blocks (`127.0.0.1`, `10.1.0.0/16`). Empty: any host with public addresses. An
    /// address or block listed here is reachable even when it is private or loopback.
    /// A TOML array, or a comma-separated string in the environment.
    #[serde(deserialize_with = "list_or_commas")]
    pub webhook_allow_hosts: Vec<String>,
    /// Lets webhooks reach private, loopback, link-local and other non-public addresses.
    pub webhook_allow_private: bool,
    /// Longest a webhook request may take, redirects included, in seconds (`jobs.timeout_secs`
    /// still bounds the whole attempt).
    pub webhook_timeout_secs: u64,
    /// Largest webhook response body read; a larger one fails the job.
    pub webhook_max_response_bytes: usize,
    /// Redirects a webhook follows (each hop checked like the first URL).
    pub webhook_max_redirects: u32,
    /// A running attempt's lease, in seconds: its worker renews it every
    /// `jobs.lease_renew_ms`; a worker that died has its job taken over this long after its last
    /// renewal.
    pub lease_secs: u64,
    /// How often a job worker renews the leases of the attempts it runs and looks for cancel
    /// requests (one statement for all of them), in milliseconds: at least 1, at most a third
    /// of `jobs.lease_secs`, so that a lease outlives two missed renewals. Tests shorten it to
    /// make the renewal meet the worker's other writes often.
    pub lease_renew_ms: u64,
    /// How long a running job asked to stop (`POST /jobs/{id}/cancel`) may take to do so before
    /// its worker abandons it and discards whatever it returns, in seconds.
    pub cancel_grace_secs: u64,
    /// Furthest ahead `runAt` of `POST /jobs` may lie, in days.
    pub max_schedule_days: u32,
    /// Shortest time between two `job_progress` events of one job, in milliseconds (a handler
    /// may report more often: the latest report of an interval is kept for its end).
    pub progress_interval_ms: u64,
}

/// A list given as a TOML array or as one comma-separated string (as environment variables
/// carry it).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    let items = match Form::deserialize(d)? {
        Form::List(items) => items,
        Form::Text(text) => text.split(',').map(str::to_string).collect(),
    };
    Ok(items.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

/// Where files' bytes are kept (see `crate::storage`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Empty: the local folder `data/files` under the working directory (created at start);
    /// `file:///absolute/folder`; `memory://<name>` (the process's memory, for tests);
    /// `s3://<bucket>` (with `storage.s3.*`).
    pub url: String,
    pub s3: S3Settings,
}

/// An S3-compatible service. The keys are secrets: never logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`...; empty: AWS's own.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    /// Allow an `http://` endpoint (a local test server).
    pub allow_http: bool,
}

/// Uploads: how large, which media types, and when an object no row names is removed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// Largest upload, in bytes: 413 as soon as a body goes beyond it.
    pub max_bytes: u64,
    /// Media types an upload may have (`audio/*` matches every audio type); others get 415.
    /// A TOML array, or a comma-separated string in the environment.
    #[serde(deserialize_with = "list_or_commas")]
    pub allowed_types: Vec<String>,
    /// Age after which an object that no file row (and no pending command) names is removed
    /// by the job workers' sweeper: what a crash between storing and recording leaves.
    pub orphan_after_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,showrunner=debug`.
    pub filter: String,
}

/// The ops endpoints of the worker roles (`/health`, `/ready`, `/metrics`); the api serves
/// them on `http.addr`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsSettings {
    /// Whether worker processes serve them at all.
    pub enabled: bool,
    /// Listen address; unset, each worker binary takes `127.0.0.1` and its role's port
    /// ([`OpsSettings::addr_for`]), so the roles run side by side on one machine.
    pub addr: Option<SocketAddr>,
}

impl OpsSettings {
    /// The address a process running `role` listens on.
    pub fn addr_for(&self, role: &str) -> SocketAddr {
        self.addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_ops_port(role))))
    }
}

/// Default ops port per role: one process per role on one machine never collide. `up` is
/// `showrunner up`, which serves every worker role of its process on one port.
pub fn default_ops_port(role: &str) -> u16 {
    match role {
        "episode-worker" => 9101,
        "activity-worker" => 9102,
        "notification-worker" => 9103,
        "job-worker" => 9104,
        _ => 9100,
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A string that never shows in `Debug` output or logs.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {}", without_source(.0))]
    Load(#[from] config::ConfigError),
    #[error("configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A load error as one line, without the snippet of the file that TOML parse errors quote: the
/// line shown could be the one holding a password.
fn without_source(error: &config::ConfigError) -> String {
    let text = error.to_string();
    let is_snippet = |line: &str| {
        let rest = line.trim_start().trim_start_matches(|c: char| c.is_ascii_digit());
        rest.trim_start().starts_with('|')
    };
    let mut parts =
        text.lines().filter(|l| !is_snippet(l)).map(str::trim).filter(|l| !l.is_empty());
    let first = parts.next().unwrap_or_default().to_string();
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() { first } else { format!("{first}: {}", rest.join(" ")) }
}

/// The `--config FILE` argument of a process's command line, if any.
pub fn path_from_args() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(Into::into);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.into());
        }
    }
    None
}

impl Settings {
    /// Loads defaults, then `file` (or `SHOWRUNNER_CONFIG`) if given, then the environment.
    pub fn load(file: Option<PathBuf>) -> Result<Self, ConfigError> {
        Self::load_from(file, config::Environment::with_prefix("SHOWRUNNER").separator("__"))
    }

    fn load_from(file: Option<PathBuf>, env: config::Environment) -> Result<Self, ConfigError> {
        let file = file.or_else(|| std::env::var_os("SHOWRUNNER_CONFIG").map(PathBuf::from));
        let mut builder = config::Config::builder()
            .set_default("profile", "development")?
            .set_default("database.url", "postgres://postgres@127.0.0.1:5432/showrunner")?
            .set_default("database.acquire_timeout_secs", 5)?
            .set_default("amqp.url", DEFAULT_AMQP_URL)?
            .set_default("amqp.urls", "")?
            .set_default("amqp.partitions", 16)?
            .set_default("amqp.queue_type", "quorum")?
            .set_default("amqp.prefetch", 500)?
            .set_default("amqp.batch_size", 200)?
            .set_default("amqp.delivery_limit", 20)?
            .set_default("amqp.confirm_timeout_secs", 10)?
            .set_default("amqp.max_message_bytes", 1_048_576)?
            .set_default("http.addr", "127.0.0.1:8080")?
            .set_default("http.max_wait_secs", 30)?
            .set_default("http.presence_ttl_secs", 60)?
            .set_default("http.header_timeout_secs", 10)?
            .set_default("http.body_timeout_secs", 15)?
            .set_default("http.max_connections", 10_000)?
            .set_default("http.max_connections_per_address", 256)?
            .set_default("http.ws_first_frame_secs", 10)?
            .set_default("auth.jwt_secret", DEV_JWT_SECRET)?
            .set_default("auth.leeway_secs", 30)?
            .set_default("auth.jwks_cache_secs", 600)?
            .set_default("auth.jwks_min_refetch_secs", 30)?
            .set_default("auth.jwks_timeout_secs", 5)?
            .set_default("workers.heartbeat_secs", 2)?
            .set_default("workers.heartbeat_ttl_secs", 10)?
            .set_default("workers.outbox_sweep_after_secs", 5)?
            .set_default("workers.command_republish_after_secs", 300)?
            .set_default("realtime.event_log_retention_secs", 86_400)?
            .set_default("realtime.send_buffer", 1024)?
            .set_default("realtime.heartbeat_secs", 15)?
            .set_default("realtime.max_frame_bytes", 65_536)?
            .set_default("realtime.max_subscriptions", 100)?
            .set_default("realtime.max_replay", 10_000)?
            .set_default("jobs.initial_delay_ms", 1000)?
            .set_default("jobs.backoff_factor", 2.0)?
            .set_default("jobs.max_delay_ms", 300_000)?
            .set_default("jobs.max_attempts", 5)?
            .set_default("jobs.prefetch", 64)?
            .set_default("jobs.max_in_flight", 32)?
            .set_default("jobs.timeout_secs", 300)?
            .set_default("jobs.webhook_allow_hosts", "")?
            .set_default("jobs.webhook_allow_private", false)?
            .set_default("jobs.webhook_timeout_secs", 30)?
            .set_default("jobs.webhook_max_response_bytes", 1_048_576)?
            .set_default("jobs.webhook_max_redirects", 5)?
            .set_default("jobs.lease_secs", 10)?
            .set_default("jobs.lease_renew_ms", 1000)?
            .set_default("jobs.cancel_grace_secs", 10)?
            .set_default("jobs.max_schedule_days", 30)?
            .set_default("jobs.progress_interval_ms", 250)?
            .set_default("shutdown.grace_secs", 25)?
            .set_default("log.format", "text")?
            .set_default("log.filter", "info,sqlx=warn,sea_orm_migration=warn")?
            .set_default("limits.max_body_bytes", 262_144)?
            .set_default("limits.max_json_depth", 32)?
            .set_default("limits.max_string_chars", 10_000)?
            .set_default("limits.max_list_items", 1000)?
            .set_default("limits.max_page_size", 100)?
            .set_default("limits.max_connections_per_user", 20)?
            .set_default("limits.requests_per_sec", 100)?
            .set_default("limits.request_burst", 200)?
            .set_default("ops.enabled", true)?
            .set_default("storage.url", "")?
            .set_default("storage.s3.endpoint", "")?
            .set_default("storage.s3.region", "us-east-1")?
            .set_default("storage.s3.access_key_id", "")?
            .set_default("storage.s3.secret_access_key", "")?
            .set_default("storage.s3.allow_http", false)?
            .set_default("files.max_bytes", 5_u64 * 1024 * 1024 * 1024)?
            .set_default("files.allowed_types", DEFAULT_FILE_TYPES)?
            .set_default("files.orphan_after_secs", 3600)?
            .set_default("retention.interval_secs", 60)?
            .set_default("retention.batch_size", 1000)?
            .set_default("retention.commands_secs", 2 * 86_400)?
            .set_default("retention.jobs_secs", 30 * 86_400)?
            .set_default("retention.read_notifications_secs", 30 * 86_400)?
            .set_default("retention.presence_grace_secs", 3600)?
            .set_default("retention.activity_months_ahead", 2)?
            .set_default("retention.activity_months", 0)?;
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let settings: Settings = builder.add_source(env).build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Defaults plus explicit overrides, ignoring the environment: for tests and benchmarks.
    pub fn with_overrides(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let source: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env = config::Environment::with_prefix("SHOWRUNNER").separator("__").source(Some(
            source
                .into_iter()
                .map(|(k, v)| (format!("SHOWRUNNER__{}", k.replace('.', "__").to_uppercase()), v))
                .collect(),
        ));
        Self::load_from(None, env)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid { key, message: message.into() };
        if !(1..=256).contains(&self.amqp.partitions) {
            return Err(invalid("amqp.partitions", "must be between 1 and 256"));
        }
        if self.amqp.prefetch == 0 {
            return Err(invalid("amqp.prefetch", "must be at least 1"));
        }
        if self.amqp.batch_size == 0 || self.amqp.batch_size > usize::from(self.amqp.prefetch) {
            return Err(invalid("amqp.batch_size", "must be between 1 and amqp.prefetch"));
        }
        if self.amqp.delivery_limit < 1 {
            return Err(invalid("amqp.delivery_limit", "must be at least 1"));
        }
        self.validate_amqp_nodes()?;
        if self.retention.commands_secs < 86_400 {
            return Err(invalid(
                "retention.commands_secs",
                "must be at least 86400: a command row is the Idempotency-Key record, kept 24 h",
            ));
        }
        if self.retention.batch_size == 0 || self.retention.interval_secs == 0 {
            return Err(invalid(
                "retention.batch_size",
                "retention.batch_size and retention.interval_secs must be at least 1",
            ));
        }
        if !(1..=24).contains(&self.retention.activity_months_ahead) {
            return Err(invalid("retention.activity_months_ahead", "must be between 1 and 24"));
        }
        if !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return Err(invalid("database.url", "must start with postgres://"));
        }
        // Checked here because the drivers' messages for a URL they cannot parse quote the
        // whole URL, password included; `url`'s errors never quote their input.
        if let Err(error) = url::Url::parse(&self.database.url) {
            return Err(ConfigError::Invalid {
                key: "database.url",
                message: format!("is not a valid URL: {error}"),
            });
        }
        if self.database.max_connections.is_some_and(|n| n < 2) {
            return Err(invalid("database.max_connections", "must be at least 2"));
        }
        if !(1..=300).contains(&self.database.acquire_timeout_secs) {
            return Err(invalid("database.acquire_timeout_secs", "must be between 1 and 300"));
        }
        if self.auth.jwt_secret.expose().len() < 16 {
            return Err(invalid("auth.jwt_secret", "must be at least 16 bytes"));
        }
        if self.profile == Profile::Production && self.auth.jwt_secret.expose() == DEV_JWT_SECRET {
            return Err(invalid(
                "auth.jwt_secret",
                "is the development default, which anyone can read in the source; \
                 profile = \"production\" needs a secret of its own \
                 (SHOWRUNNER__AUTH__JWT_SECRET)",
            ));
        }
        if self.realtime.send_buffer == 0 {
            return Err(invalid("realtime.send_buffer", "must be at least 1"));
        }
        if self.realtime.heartbeat_secs == 0 {
            return Err(invalid("realtime.heartbeat_secs", "must be at least 1"));
        }
        if self.workers.heartbeat_ttl_secs <= self.workers.heartbeat_secs {
            return Err(invalid(
                "workers.heartbeat_ttl_secs",
                "must exceed workers.heartbeat_secs",
            ));
        }
        let jobs = &self.jobs;
        if jobs.initial_delay_ms == 0 {
            return Err(invalid("jobs.initial_delay_ms", "must be at least 1"));
        }
        if !(jobs.backoff_factor.is_finite() && jobs.backoff_factor >= 1.0) {
            return Err(invalid("jobs.backoff_factor", "must be a number >= 1"));
        }
        if jobs.max_delay_ms < jobs.initial_delay_ms {
            return Err(invalid("jobs.max_delay_ms", "must be at least jobs.initial_delay_ms"));
        }
        if !(1..=MAX_JOB_ATTEMPTS).contains(&jobs.max_attempts) {
            return Err(invalid("jobs.max_attempts", "must be between 1 and 100"));
        }
        if jobs.prefetch == 0 {
            return Err(invalid("jobs.prefetch", "must be at least 1"));
        }
        if jobs.max_in_flight == 0 {
            return Err(invalid("jobs.max_in_flight", "must be at least 1"));
        }
        if !(1..=1500).contains(&jobs.timeout_secs) {
            return Err(invalid(
                "jobs.timeout_secs",
                "must be between 1 and 1500 (RabbitMQ's consumer timeout is 30 minutes)",
            ));
        }
        if !(1..=3600).contains(&self.shutdown.grace_secs) {
            return Err(invalid("shutdown.grace_secs", "must be between 1 and 3600"));
        }
        if self.amqp.max_message_bytes < 1024 {
            return Err(invalid("amqp.max_message_bytes", "must be at least 1024"));
        }
        if jobs.webhook_timeout_secs == 0 {
            return Err(invalid("jobs.webhook_timeout_secs", "must be at least 1"));
        }
        if let Err(error) = crate::egress::Policy::from_settings(jobs) {
            return Err(invalid("jobs.webhook_allow_hosts", &error.to_string()));
        }
        if jobs.webhook_max_redirects > 20 {
            return Err(invalid("jobs.webhook_max_redirects", "must be at most 20"));
        }
        if !(3..=300).contains(&jobs.lease_secs) {
            return Err(invalid("jobs.lease_secs", "must be between 3 and 300"));
        }
        if !(1..=jobs.lease_secs * 1000 / 3).contains(&jobs.lease_renew_ms) {
            return Err(invalid(
                "jobs.lease_renew_ms",
                "must be at least 1 and at most a third of jobs.lease_secs",
            ));
        }
        if !(1..=600).contains(&jobs.cancel_grace_secs) {
            return Err(invalid("jobs.cancel_grace_secs", "must be between 1 and 600"));
        }
        if !(1..=365).contains(&jobs.max_schedule_days) {
            return Err(invalid("jobs.max_schedule_days", "must be between 1 and 365"));
        }
        if !(50..=60_000).contains(&jobs.progress_interval_ms) {
            return Err(invalid("jobs.progress_interval_ms", "must be between 50 and 60000"));
        }
        if self.files.max_bytes == 0 {
            return Err(invalid("files.max_bytes", "must be at least 1"));
        }
        if self.files.orphan_after_secs < 10 {
            return Err(invalid("files.orphan_after_secs", "must be at least 10"));
        }
        if let Err(error) = crate::storage::Location::parse(&self.storage.url) {
            return Err(invalid("storage.url", &error));
        }
        self.validate_limits()
    }

    fn validate_amqp_nodes(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid { key, message };
        let amqp = &self.amqp;
        let key = if amqp.urls.is_empty() { "amqp.url" } else { "amqp.urls" };
        if !amqp.urls.is_empty() && amqp.url != DEFAULT_AMQP_URL {
            return Err(invalid("amqp.urls", "and amqp.url are both set: set one of them".into()));
        }
        let mut vhost = None;
        for (i, node) in amqp.nodes().iter().enumerate() {
            // Which node, by position: the URL itself may hold a password.
            let which =
                if amqp.urls.is_empty() { String::new() } else { format!(" (node {})", i + 1) };
            if !node.starts_with("amqp://") && !node.starts_with("amqps://") {
                return Err(invalid(key, format!("must start with amqp:// or amqps://{which}")));
            }
            // Checked here because the drivers' messages for a URL they cannot parse quote the
            // whole URL, password included; `url`'s errors never quote their input.
            let parsed = url::Url::parse(node)
                .map_err(|error| invalid(key, format!("is not a valid URL{which}: {error}")))?;
            // Nodes of one cluster serve one deployment: a list that mixes vhosts is a mistake
            // that would split the deployment's processes between two topologies.
            let path = match parsed.path().trim_start_matches('/') {
                "" => "%2f".to_string(),
                named => named.replace("%2F", "%2f"),
            };
            if vhost.get_or_insert_with(|| path.clone()) != &path {
                return Err(invalid(key, format!("must name the same vhost on every node{which}")));
            }
        }
        if amqp.quorum_initial_group_size == Some(0) {
            return Err(invalid("amqp.quorum_initial_group_size", "must be at least 1".into()));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid { key, message: message.into() };
        if self.http.max_wait_secs > MAX_WAIT_SECS {
            return Err(invalid("http.max_wait_secs", "must be at most 30"));
        }
        for (key, value) in [
            ("http.header_timeout_secs", self.http.header_timeout_secs),
            ("http.body_timeout_secs", self.http.body_timeout_secs),
            ("http.max_connections", self.http.max_connections as u64),
            ("http.ws_first_frame_secs", self.http.ws_first_frame_secs),
            ("auth.jwks_timeout_secs", self.auth.jwks_timeout_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        self.validate_issuers()?;
        let limits = &self.limits;
        for (key, value) in [
            ("limits.max_body_bytes", limits.max_body_bytes),
            ("limits.max_json_depth", limits.max_json_depth),
            ("limits.max_string_chars", limits.max_string_chars),
            ("limits.max_list_items", limits.max_list_items),
            ("limits.max_page_size", limits.max_page_size as usize),
            ("limits.max_connections_per_user", limits.max_connections_per_user),
            ("limits.requests_per_sec", limits.requests_per_sec as usize),
            ("realtime.max_frame_bytes", self.realtime.max_frame_bytes),
            ("realtime.max_subscriptions", self.realtime.max_subscriptions),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if limits.request_burst < limits.requests_per_sec {
            return Err(invalid(
                "limits.request_burst",
                "must be at least limits.requests_per_sec",
            ));
        }
        Ok(())
    }
}

impl Settings {
    fn validate_issuers(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { key: "auth.issuers", message };
        for issuer in &self.auth.issuers {
            let name = &issuer.issuer;
            if url::Url::parse(name).is_err() {
                return Err(invalid(format!("issuer {name:?} is not a URL")));
            }
            if let Some(jwks) = &issuer.jwks_url
                && url::Url::parse(jwks).is_err()
            {
                return Err(invalid(format!("jwks_url of {name} is not a URL")));
            }
            // Without an audience, a token the provider issued to any other application
            // would be accepted here.
            if issuer.audiences.is_empty() {
                return Err(invalid(format!("{name} needs at least one audience")));
            }
            if issuer.algorithms.is_empty() {
                return Err(invalid(format!("{name} needs at least one algorithm")));
            }
            if let Some(alg) =
                issuer.algorithms.iter().find(|a| !ISSUER_ALGORITHMS.contains(&a.as_str()))
            {
                return Err(invalid(format!(
                    "{name}: algorithm {alg:?} is not one of RS256, ES256, EdDSA"
                )));
            }
        }
        let mut names: Vec<&str> = self.auth.issuers.iter().map(|i| i.issuer.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid("an issuer is listed twice".into()));
        }
        Ok(())
    }
}

/// The longest `Prefer: wait` the API may honour (`http.max_wait_secs` is at most this).
pub const MAX_WAIT_SECS: u64 = 30;

/// The most attempts a job may have (`maxAttempts` of `POST /jobs` and `jobs.max_attempts`).
pub const MAX_JOB_ATTEMPTS: u32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_on_this_machine() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert_eq!(s.amqp.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(s.database.url, "postgres://postgres@127.0.0.1:5432/showrunner");
        assert_eq!(s.http.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.amqp.queue_type, QueueType::Quorum);
    }

    #[test]
    fn each_role_gets_its_own_pool_size_unless_one_is_set() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        let sizes: Vec<u32> =
            ["api", "episode-worker", "activity-worker", "notification-worker", "job-worker"]
                .iter()
                .map(|role| s.database.pool_size_for(role))
                .collect();
        assert_eq!(sizes, [20, 4, 4, 4, 8]);
        assert_eq!(s.database.acquire_timeout_secs, 5);
        let s = Settings::with_overrides(&[("database.max_connections", "7")]).expect("loads");
        assert_eq!(s.database.pool_size_for("episode-worker"), 7);
        assert_eq!(s.database.pool_size_for("api"), 7);
        for (key, value) in
            [("database.max_connections", "1"), ("database.acquire_timeout_secs", "0")]
        {
            let err = Settings::with_overrides(&[(key, value)]).expect_err("must fail");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn overrides_reach_nested_keys() {
        let s = Settings::with_overrides(&[("amqp.partitions", "4"), ("log.format", "json")])
            .expect("overrides load");
        assert_eq!(s.amqp.partitions, 4);
        assert_eq!(s.log.format, LogFormat::Json);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = Settings::with_overrides(&[("amqp.prefetch", "lots")]).expect_err("must fail");
        assert!(err.to_string().contains("amqp.prefetch"), "{err}");
        let err = Settings::with_overrides(&[("amqp.partitions", "0")]).expect_err("must fail");
        assert!(err.to_string().contains("amqp.partitions"), "{err}");
    }

    #[test]
    fn retention_keeps_commands_for_the_idempotency_window() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert_eq!(s.retention.commands_secs, 172_800);
        let err = Settings::with_overrides(&[("retention.commands_secs", "3600")])
            .expect_err("less than 24 h must fail");
        assert!(err.to_string().contains("retention.commands_secs"), "{err}");
        let err = Settings::with_overrides(&[("retention.activity_months_ahead", "0")])
            .expect_err("no month ahead must fail");
        assert!(err.to_string().contains("retention.activity_months_ahead"), "{err}");
    }

    #[test]
    fn job_settings_are_checked() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert_eq!((s.jobs.max_attempts, s.jobs.timeout_secs), (5, 300));
        for (key, value) in [
            ("jobs.backoff_factor", "0.5"),
            ("jobs.timeout_secs", "3600"),
            ("jobs.max_delay_ms", "10"),
            ("jobs.max_in_flight", "0"),
            ("jobs.lease_renew_ms", "0"),
            // A third of the default 10 s lease at most.
            ("jobs.lease_renew_ms", "3334"),
        ] {
            let err = Settings::with_overrides(&[(key, value)]).expect_err("must fail");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn production_refuses_the_development_secret() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert_eq!(s.profile, Profile::Development);
        let err = Settings::with_overrides(&[("profile", "production")]).expect_err("must fail");
        let line = err.to_string();
        assert!(line.contains("auth.jwt_secret") && !line.contains('\n'), "{line}");
        assert!(!line.contains(DEV_JWT_SECRET), "{line}");
        let own = "a-production-secret-of-its-own";
        let s = Settings::with_overrides(&[("profile", "production"), ("auth.jwt_secret", own)])
            .expect("production with a secret of its own loads");
        assert_eq!(s.profile, Profile::Production);
        let err = Settings::with_overrides(&[("profile", "staging")]).expect_err("must fail");
        assert!(err.to_string().contains("profile"), "{err}");
    }

    #[test]
    fn limits_are_checked() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert_eq!((s.limits.requests_per_sec, s.limits.request_burst), (100, 200));
        for (key, value) in [
            ("http.max_wait_secs", "31"),
            ("limits.max_body_bytes", "0"),
            ("limits.request_burst", "10"),
            ("realtime.max_subscriptions", "0"),
        ] {
            let err = Settings::with_overrides(&[(key, value)]).expect_err("must fail");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn issuers_come_as_json_in_the_environment_and_are_checked() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert!(s.auth.issuers.is_empty());
        assert_eq!((s.http.header_timeout_secs, s.http.max_connections_per_address), (10, 256));
        let one = r#"[{"issuer":"https://sso.example/realms/a","audiences":["showrunner"],
                      "roles_claim":"realm_access.roles","admin_roles":["admin"]}]"#;
        let s = Settings::with_overrides(&[("auth.issuers", one)]).expect("loads");
        let issuer = &s.auth.issuers[0];
        assert_eq!(
            (issuer.algorithms.clone(), issuer.id_claim.as_str()),
            (vec!["RS256".into()], "sub")
        );
        assert_eq!(issuer.admin_roles, ["admin"]);
        for bad in [
            r#"[{"issuer":"https://a","audiences":[]}]"#,
            r#"[{"issuer":"https://a","audiences":["x"],"algorithms":["HS256"]}]"#,
            r#"[{"issuer":"not a url","audiences":["x"]}]"#,
            r#"[{"issuer":"https://a","audiences":["x"]},{"issuer":"https://a","audiences":["y"]}]"#,
            r#"[{"issuer":"https://a","audiences":["x"],"unknown":1}]"#,
        ] {
            let err = Settings::with_overrides(&[("auth.issuers", bad)]).expect_err(bad);
            assert!(
                err.to_string().contains("auth.issuers") || err.to_string().contains("unknown"),
                "{err}"
            );
        }
        let err = Settings::with_overrides(&[("http.max_connections", "0")]).expect_err("0");
        assert!(err.to_string().contains("http.max_connections"), "{err}");
    }

    #[test]
    fn webhook_hosts_come_as_a_list_or_a_comma_separated_string() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert!(s.jobs.webhook_allow_hosts.is_empty());
        assert!(!s.jobs.webhook_allow_private);
        let s = Settings::with_overrides(&[("jobs.webhook_allow_hosts", "127.0.0.1, ::1,")])
            .expect("overrides load");
        assert_eq!(s.jobs.webhook_allow_hosts, ["127.0.0.1", "::1"]);
    }

    #[test]
    fn ops_ports_differ_per_role_unless_set() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert!(s.ops.enabled);
        let ports: std::collections::HashSet<u16> =
            ["episode-worker", "activity-worker", "notification-worker", "job-worker", "up"]
                .iter()
                .map(|r| s.ops.addr_for(r).port())
                .collect();
        assert_eq!(ports.len(), 5);
        let s = Settings::with_overrides(&[("ops.addr", "127.0.0.1:0")]).expect("loads");
        assert_eq!(s.ops.addr_for("job-worker").to_string(), "127.0.0.1:0");
    }

    #[test]
    fn the_shutdown_grace_is_checked() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert_eq!(s.shutdown.grace_secs, 25);
        let err = Settings::with_overrides(&[("shutdown.grace_secs", "0")]).expect_err("must fail");
        assert!(err.to_string().contains("shutdown.grace_secs"), "{err}");
    }

    #[test]
    fn the_secret_is_not_printed() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert!(!format!("{s:?}").contains(DEV_JWT_SECRET));
    }

    #[test]
    fn passwords_in_urls_are_not_printed() {
        let s = Settings::with_overrides(&[
            ("database.url", "postgres://app:pg-Pa55word@db.internal:5432/showrunner"),
            ("amqp.url", "amqp://app:mq%2FPa55word@mq.internal:5672/prod"),
        ])
        .expect("loads");
        let printed = format!("{s:?}");
        for secret in ["pg-Pa55word", "mq%2FPa55word", "mq/Pa55word"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("postgres://app:***@db.internal:5432/showrunner"), "{printed}");
        assert!(printed.contains("amqp://app:***@mq.internal:5672/prod"), "{printed}");
        assert_eq!(redact_url("amqp://guest@localhost/%2f"), "amqp://guest@localhost/%2f");
        assert!(!redact_url("postgres://u:secret@h:99999/db").contains("secret"));
    }

    #[test]
    fn a_broken_config_file_is_reported_without_its_contents() {
        let path = std::env::temp_dir().join(format!("showrunner-bad-{}.toml", std::process::id()));
        let bodies = [
            "[database]\nurl = \"postgres://app:pg-Pa55word@db/showrunner\n",
            "[amqp]\nurl = \"amqp://app:mq-Pa55word@mq/prod\" trailing\n",
        ];
        for body in bodies {
            std::fs::write(&path, body).expect("write the file");
            let env = config::Environment::with_prefix("SHOWRUNNER_TEST_NONE").separator("__");
            let err = Settings::load_from(Some(path.clone()), env).expect_err("must fail");
            let line = err.to_string();
            assert!(!line.contains("Pa55word"), "{line}");
            assert!(!line.contains('\n') && line.contains("line 2"), "{line}");
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_cluster_is_a_list_of_nodes() {
        let s = Settings::with_overrides(&[]).expect("defaults load");
        assert_eq!(s.amqp.nodes(), [DEFAULT_AMQP_URL]);
        assert_eq!(s.amqp.quorum_initial_group_size, None);
        let nodes = "amqp://app:mq-Pa55word@mq1:5672/prod, amqp://app:mq-Pa55word@mq2:5672/prod,";
        let s = Settings::with_overrides(&[
            ("amqp.urls", nodes),
            ("amqp.quorum_initial_group_size", "3"),
        ])
        .expect("a list of nodes loads");
        assert_eq!(
            s.amqp.nodes(),
            ["amqp://app:mq-Pa55word@mq1:5672/prod", "amqp://app:mq-Pa55word@mq2:5672/prod"]
        );
        assert_eq!(s.amqp.quorum_initial_group_size, Some(3));
        let printed = format!("{s:?}");
        assert!(!printed.contains("Pa55word"), "{printed}");
        assert!(printed.contains("amqp://app:***@mq2:5672/prod"), "{printed}");
        // The default vhost spelled two ways is one vhost.
        Settings::with_overrides(&[("amqp.urls", "amqp://a:5672,amqp://b:5672/%2F")])
            .expect("one vhost");
    }

    #[test]
    fn a_bad_list_of_nodes_is_refused_naming_the_node_not_its_password() {
        for (pairs, wanted) in [
            (vec![("amqp.urls", "amqp://a/prod,amqp://b/test")], "amqp.urls"),
            (vec![("amqp.urls", "amqp://a/prod,http://u:mq-Pa55word@b/prod")], "(node 2)"),
            (vec![("amqp.urls", "amqp://a/p,amqp://u:mq-Pa55word@b:99999/p")], "(node 2)"),
            (vec![("amqp.urls", "amqp://a/p"), ("amqp.url", "amqp://b/p")], "both set"),
            (vec![("amqp.quorum_initial_group_size", "0")], "amqp.quorum_initial_group_size"),
        ] {
            let err = Settings::with_overrides(&pairs).expect_err("must fail");
            let line = err.to_string();
            assert!(line.contains(wanted) && !line.contains("Pa55word"), "{line}");
        }
    }

    #[test]
    fn a_url_that_does_not_parse_is_refused_without_echoing_it() {
        for (key, url) in [
            ("database.url", "postgres://app:pg-Pa55word@db:99999/showrunner"),
            ("amqp.url", "amqp://app:mq-Pa55word@mq:99999/prod"),
        ] {
            let err = Settings::with_overrides(&[(key, url)]).expect_err("must fail");
            let line = err.to_string();
            assert!(line.contains(key) && !line.contains("Pa55word"), "{line}");
        }
    }
}
