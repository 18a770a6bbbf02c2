//! `showrunner-activity-worker`: see `showrunner_workers::run_activity_worker`.

fn main() {
    showrunner_shared::process::main(
        "showrunner-activity-worker",
        showrunner_workers::run_activity_worker,
    )
}
