//! `showrunner-notification-worker`: see `showrunner_workers::run_notification_worker`.

fn main() -> anyhow::Result<()> {
    showrunner_workers::main_for("notification-worker", showrunner_workers::run_notification_worker)
}
