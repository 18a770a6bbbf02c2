//! `showrunner-migrate`: applies every pending migration to `database.url` and exits.

fn main() {
    showrunner_shared::process::main("showrunner-migrate", |settings, _cancel| async move {
        showrunner_migrations::migrate(&settings.database.url).await?;
        tracing::info!("database schema is current");
        Ok(())
    });
}
