//! `showrunner-migrate`: applies every pending migration to `database.url` and exits.

use showrunner_shared::config::{Settings, path_from_args};

#[tokio::main]
async fn main() {
    let settings = match Settings::load(path_from_args()) {
        Ok(s) => s,
        Err(error) => {
            eprintln!("showrunner-migrate: {error}");
            std::process::exit(2);
        }
    };
    showrunner_shared::telemetry::init(&settings.log);
    if let Err(error) = showrunner_migrations::migrate(&settings.database.url).await {
        eprintln!("showrunner-migrate: applying migrations: {error}");
        std::process::exit(1);
    }
    tracing::info!("database schema is current");
}
