//! One Showrunner role as a process, for the drain tests and the fault-injection suite:
//! `sr-role api|episode-worker|activity-worker|notification-worker|job-worker`. Each role runs
//! through the same `process::main` (signals, grace) and entry point as its shipped binary;
//! the api and the job worker also know the test job types.

fn main() {
    let role = std::env::args().nth(1).unwrap_or_default();
    let name = format!("sr-role {role}");
    match role.as_str() {
        "api" => showrunner_shared::process::main(&name, |settings, cancel| async move {
            let listener = tokio::net::TcpListener::bind(settings.http.addr).await?;
            let types = showrunner_tests::job_handlers::registry(&Default::default()).job_types();
            showrunner_api::run_with(settings, types, listener, cancel).await
        }),
        "episode-worker" => {
            showrunner_shared::process::main(&name, showrunner_workers::run_episode_worker)
        }
        "activity-worker" => {
            showrunner_shared::process::main(&name, showrunner_workers::run_activity_worker)
        }
        "notification-worker" => {
            showrunner_shared::process::main(&name, showrunner_workers::run_notification_worker)
        }
        "job-worker" => {
            let registry = showrunner_tests::job_handlers::registry(&Default::default());
            showrunner_shared::process::main(&name, move |settings, cancel| {
                showrunner_workers::run_job_worker_with(settings, registry, cancel)
            })
        }
        _ => {
            eprintln!(
                "usage: sr-role api|episode-worker|activity-worker|notification-worker|job-worker"
            );
            std::process::exit(2);
        }
    }
}
