//! The `main` of every Showrunner binary: configuration (one clear line and exit 2 when it is
//! wrong), logging, the tokio runtime, and one shutdown signal (SIGTERM or SIGINT).

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Settings, path_from_args};

/// Runs `run` to the end; a failure is printed as one line and exits 1.
pub fn main<F, Fut>(binary: &str, run: F)
where
    F: FnOnce(Arc<Settings>, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = match Settings::load(path_from_args()) {
        Ok(s) => Arc::new(s),
        Err(error) => {
            eprintln!("{binary}: {error}");
            std::process::exit(2);
        }
    };
    crate::telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("{binary}: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        let cancel = crate::shutdown::on_signal();
        run(settings, cancel).await
    });
    if let Err(error) = result {
        eprintln!("{binary}: {error:#}");
        std::process::exit(1);
    }
}
