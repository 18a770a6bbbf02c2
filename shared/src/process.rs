//! The `main` of every Showrunner binary: configuration (one clear line and exit 2 when it is
//! wrong), logging, the tokio runtime, and one shutdown signal (SIGTERM or SIGINT) followed by
//! a drain bounded by `shutdown.grace_secs`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Settings, path_from_args};

/// Every process that links this crate allocates through mimalloc: under load glibc's malloc,
/// free and memmove were a fifth of Showrunner's profile (many small, short-lived buffers moved
/// between tokio's threads); README "One hop per event" measures the change.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of a process whose drain outlived `shutdown.grace_secs`: not 0, so a supervisor
/// or a test sees that work was cut off (the broker redelivers whatever was left unacked).
pub const EXIT_GRACE_EXCEEDED: i32 = 3;

/// Runs `run` to the end; a failure is printed as one line and exits 1. After the shutdown
/// signal, `run` has `shutdown.grace_secs` to return; then the process exits with
/// [`EXIT_GRACE_EXCEEDED`] without waiting further.
pub fn main<F, Fut>(binary: &str, run: F)
where
    F: FnOnce(Arc<Settings>, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    // Before any HTTP client exists (the JWKS fetcher, webhooks, S3).
    crate::tls::install();
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
    let grace = Duration::from_secs(settings.shutdown.grace_secs);
    let result = runtime.block_on(async move {
        let cancel = crate::shutdown::on_signal();
        within_grace(&cancel.clone(), grace, run(settings, cancel)).await
    });
    match result {
        Some(Ok(())) => {}
        Some(Err(error)) => {
            eprintln!("{binary}: {error:#}");
            std::process::exit(1);
        }
        None => {
            eprintln!(
                "{binary}: the drain did not end within {}s (shutdown.grace_secs); exiting, \
                 unacked work goes back to the broker",
                grace.as_secs()
            );
            // Without dropping the runtime: a task stuck in a blocking call must not hold the
            // exit up.
            std::process::exit(EXIT_GRACE_EXCEEDED);
        }
    }
}

/// Runs `work` to the end, unless `cancel` fires and `work` then takes longer than `grace`
/// (`None`).
pub async fn within_grace<T>(
    cancel: &CancellationToken,
    grace: Duration,
    work: impl Future<Output = T>,
) -> Option<T> {
    let deadline = async {
        cancel.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = work => Some(result),
        () = deadline => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_gets_the_grace_after_the_signal_and_no_more() {
        let cancel = CancellationToken::new();
        let grace = Duration::from_millis(200);
        // Without the signal, work may take longer than the grace.
        let slow = tokio::time::sleep(Duration::from_millis(400));
        assert_eq!(within_grace(&cancel, grace, slow).await, Some(()));
        // After it, the grace bounds it.
        cancel.cancel();
        let started = std::time::Instant::now();
        assert_eq!(within_grace(&cancel, grace, std::future::pending::<()>()).await, None);
        let took = started.elapsed();
        assert!(took >= grace && took < Duration::from_secs(5), "{took:?}");
        // Work that ends within the grace keeps its result.
        let quick = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            7
        };
        assert_eq!(within_grace(&cancel, grace, quick).await, Some(7));
    }
}
