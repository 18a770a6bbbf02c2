//! `showrunner-job-worker`: see `showrunner_workers::run_job_worker`.

fn main() -> anyhow::Result<()> {
    showrunner_workers::main_for("job-worker", showrunner_workers::run_job_worker)
}
