//! A job worker process with the test job types, for tests that kill a worker with SIGKILL:
//! the same `main_for` and job runtime as `showrunner-job-worker`, plus `test.*` handlers.

fn main() -> anyhow::Result<()> {
    let registry = showrunner_tests::job_handlers::registry(&Default::default());
    showrunner_workers::main_for("job-worker", move |settings, cancel| {
        showrunner_workers::run_job_worker_with(settings, registry, cancel)
    })
}
