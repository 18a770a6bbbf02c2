//! `showrunner-activity-worker`: see `showrunner_workers::run_activity_worker`.

fn main() -> anyhow::Result<()> {
    showrunner_workers::main_for("activity-worker", showrunner_workers::run_activity_worker)
}
