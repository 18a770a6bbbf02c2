//! `showrunner-activity-worker`: see `showrunner_workers::Role::Activity`.

fn main() {
    showrunner_workers::Role::Activity.main()
}
