//! `showrunner-notification-worker`: see `showrunner_workers::run_notification_worker`.

fn main() {
    showrunner_shared::process::main(
        "showrunner-notification-worker",
        showrunner_workers::run_notification_worker,
    )
}
