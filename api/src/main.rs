//! `showrunner-api`: the REST API.

use std::sync::Arc;

use showrunner_shared::config::{Settings, path_from_args};

fn main() -> anyhow::Result<()> {
    let settings = match Settings::load(path_from_args()) {
        Ok(s) => Arc::new(s),
        Err(error) => {
            eprintln!("showrunner-api: {error}");
            std::process::exit(2);
        }
    };
    showrunner_shared::telemetry::init(&settings.log);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.http.addr).await?;
        let cancel = showrunner_shared::shutdown::on_signal();
        if let Err(error) = showrunner_api::run(settings, listener, cancel).await {
            eprintln!("showrunner-api: {error:#}");
            std::process::exit(1);
        }
        Ok(())
    })
}
