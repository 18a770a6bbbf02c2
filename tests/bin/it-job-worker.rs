//! A job worker process with the test job types, for tests that kill a worker with SIGKILL:
//! the same process `main` and job runtime as `showrunner-job-worker`, plus `test.*` handlers.

fn main() {
    let registry = showrunner_tests::job_handlers::registry(&Default::default());
    showrunner_shared::process::main("it-job-worker", move |settings, cancel| {
        showrunner_workers::Role::Job.run_with(settings, registry, cancel)
    })
}
