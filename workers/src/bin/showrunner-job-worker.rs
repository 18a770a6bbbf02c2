//! `showrunner-job-worker`: see `showrunner_workers::Role::Job`.

fn main() {
    showrunner_workers::Role::Job.main()
}
