//! `showrunner-episode-worker`: see `showrunner_workers::run_episode_worker`.

fn main() -> anyhow::Result<()> {
    showrunner_workers::main_for("episode-worker", showrunner_workers::run_episode_worker)
}
