//! `showrunner-episode-worker`: see `showrunner_workers::Role::Episode`.

fn main() {
    showrunner_workers::Role::Episode.main()
}
