//! `showrunner-job-worker`: see `showrunner_workers::run_job_worker`.

fn main() {
    showrunner_shared::process::main("showrunner-job-worker", showrunner_workers::run_job_worker)
}
