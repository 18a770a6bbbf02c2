//! `showrunner`: the operator's command.
//!
//! - `showrunner up`: applies migrations, then runs the api and every worker role in this one
//!   process against the configured RabbitMQ and PostgreSQL, and prints the URLs.
//! - `showrunner token --user NAME [--name N] [--email E] [--role member|admin] [--hours H]`:
//!   prints a bearer token signed with `auth.jwt_secret`. The user id is derived from NAME
//!   (UUIDv5), so the same name always gets the same id.
//! - `showrunner topology`: declares the RabbitMQ topology (exchanges, queues, bindings) in
//!   `amqp.url`'s vhost and exits. The deploy step runs it with a user that may configure;
//!   the roles' least-privilege users then only verify it (deploy/README.md).

use std::sync::Arc;

use showrunner_shared::auth::{self, Claims, Role};
use showrunner_shared::config::{Settings, path_from_args};
use uuid::Uuid;

const USAGE: &str = "usage: showrunner [--config FILE] up
       showrunner [--config FILE] topology
       showrunner [--config FILE] token --user NAME [--name DISPLAY] [--email EMAIL] [--role member|admin] [--hours N]";

fn main() {
    // Before any HTTP client exists (the JWKS fetcher, webhooks, S3).
    showrunner_shared::tls::install();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match Settings::load(path_from_args()) {
        Ok(s) => Arc::new(s),
        Err(error) => fail(2, &error.to_string()),
    };
    let command = args.iter().position(|a| a == "up" || a == "token" || a == "topology");
    match command.map(|i| (args[i].as_str(), &args[i + 1..])) {
        Some(("up", _)) => {
            showrunner_shared::telemetry::init(&settings.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| fail(1, &e.to_string()));
            if let Err(error) = runtime.block_on(up(settings)) {
                fail(1, &format!("{error:#}"));
            }
        }
        Some(("topology", _)) => {
            showrunner_shared::telemetry::init(&settings.log);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| fail(1, &e.to_string()));
            if let Err(error) = runtime.block_on(topology(&settings)) {
                fail(1, &format!("{error:#}"));
            }
        }
        Some(("token", rest)) => match token(&settings, rest) {
            Ok(t) => println!("{t}"),
            Err(message) => fail(2, &format!("{message}\n{USAGE}")),
        },
        _ => fail(2, USAGE),
    }
}

fn fail(code: i32, message: &str) -> ! {
    eprintln!("showrunner: {message}");
    std::process::exit(code)
}

async fn up(settings: Arc<Settings>) -> anyhow::Result<()> {
    showrunner_migrations::migrate(&settings.database.url).await?;
    let cancel = showrunner_shared::shutdown::on_signal();
    let listener = tokio::net::TcpListener::bind(settings.http.addr).await?;
    let addr = listener.local_addr()?;
    let mut roles = tokio::task::JoinSet::new();
    roles.spawn(showrunner_api::run(settings.clone(), listener, cancel.clone()));
    // One ops server for every worker role of this process.
    let ops = showrunner_workers::ops::Ops::new();
    let ops_addr = settings.ops.addr_for("up");
    let ops_listener = tokio::net::TcpListener::bind(ops_addr)
        .await
        .map_err(|e| anyhow::anyhow!("ops.addr {ops_addr}: {e}"))?;
    let ops_addr = ops_listener.local_addr()?;
    tokio::spawn(ops.clone().serve(ops_listener, cancel.clone()));
    use showrunner_workers::ops::scoped;
    let (s, c) = (&settings, &cancel);
    for role in showrunner_workers::Role::ALL {
        roles.spawn(scoped(ops.clone(), role.run(s.clone(), c.clone())));
    }
    println!("Showrunner is up:");
    println!("  REST API     http://{addr}/api/v1  (OpenAPI: http://{addr}/api/v1/openapi.json)");
    println!(
        "  health       http://{addr}/health  ready: http://{addr}/ready  metrics: http://{addr}/metrics"
    );
    println!("  workers      http://{ops_addr}/ready  http://{ops_addr}/metrics");
    println!(
        "  RabbitMQ UI  http://127.0.0.1:15672  (guest/guest, if rabbitmq_management is enabled)"
    );
    println!("  a token:     showrunner token --user alice --role admin");
    println!("Ctrl-C stops everything.");
    let grace = std::time::Duration::from_secs(settings.shutdown.grace_secs);
    let all = async {
        let mut failure = None;
        while let Some(done) = roles.join_next().await {
            let result = done.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(error) = result {
                tracing::error!(error = format!("{error:#}"), "a role failed, stopping the others");
                failure.get_or_insert(error);
                cancel.cancel();
            }
        }
        failure.map_or(Ok(()), Err)
    };
    match showrunner_shared::process::within_grace(&cancel, grace, all).await {
        Some(result) => result,
        None => {
            eprintln!(
                "showrunner: the drain did not end within {}s (shutdown.grace_secs); exiting",
                grace.as_secs()
            );
            std::process::exit(showrunner_shared::process::EXIT_GRACE_EXCEEDED)
        }
    }
}

/// Declares the topology with this configuration's user (which needs configure rights on it).
async fn topology(settings: &Settings) -> anyhow::Result<()> {
    use showrunner_shared::broker::{self, Nodes, topology};
    let (conn, _) = Nodes::new(&settings.amqp).connect("topology").await?;
    topology::declare(&conn, &settings.amqp).await?;
    let _ = broker::bounded(conn.close(200, "topology declared".into())).await;
    println!("topology declared ({} command partitions)", settings.amqp.partitions);
    Ok(())
}

fn token(settings: &Settings, args: &[String]) -> Result<String, String> {
    let mut user = None;
    let mut name = None;
    let mut email = None;
    let mut role = Role::Member;
    let mut hours: i64 = 24;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--user" => user = Some(value()?),
            "--name" => name = Some(value()?),
            "--email" => email = Some(value()?),
            "--role" => {
                role = match value()?.as_str() {
                    "member" => Role::Member,
                    "admin" => Role::Admin,
                    other => return Err(format!("unknown role {other:?}")),
                }
            }
            "--hours" => {
                hours = value()?.parse().map_err(|_| "--hours takes a whole number".to_string())?
            }
            "--config" => {
                value()?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let user = user.ok_or("--user is required")?;
    let claims = Claims {
        sub: user_id(&user),
        name: name.unwrap_or_else(|| user.clone()),
        email: email.unwrap_or_else(|| format!("{user}@localhost")),
        role,
        exp: chrono_now() + hours * 3600,
    };
    Ok(auth::encode(&claims, settings.auth.jwt_secret.expose().as_bytes()))
}

/// A stable id per user name, or the name itself when it is a UUID.
fn user_id(user: &str) -> Uuid {
    Uuid::parse_str(user).unwrap_or_else(|_| {
        Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("showrunner-user:{user}").as_bytes())
    })
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
