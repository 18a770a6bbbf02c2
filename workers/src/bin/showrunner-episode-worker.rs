//! `showrunner-episode-worker`: see `showrunner_workers::run_episode_worker`.

fn main() {
    showrunner_shared::process::main(
        "showrunner-episode-worker",
        showrunner_workers::run_episode_worker,
    )
}
