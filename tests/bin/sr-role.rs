//! One Showrunner role as a process, for the drain tests and the fault-injection suite:
//! `sr-role api|episode-worker|activity-worker|notification-worker|job-worker`. Each role runs
//! through the same `process::main` (signals, grace) and `Role` as its shipped binary; the api
//! and the job worker also know the test job types.

use showrunner_workers::Role;

fn main() {
    let role = std::env::args().nth(1).unwrap_or_default();
    let name = format!("sr-role {role}");
    let registry = showrunner_tests::job_handlers::registry(&Default::default());
    match (role.as_str(), Role::parse(&role)) {
        ("api", _) => showrunner_shared::process::main(&name, |settings, cancel| async move {
            let listener = tokio::net::TcpListener::bind(settings.http.addr).await?;
            showrunner_api::run_with(settings, registry.job_types(), listener, cancel).await
        }),
        (_, Some(role)) => showrunner_shared::process::main(&name, move |settings, cancel| {
            role.run_with(settings, registry, cancel)
        }),
        _ => {
            eprintln!(
                "usage: sr-role api|episode-worker|activity-worker|notification-worker|job-worker"
            );
            std::process::exit(2);
        }
    }
}
