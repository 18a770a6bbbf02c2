//! What the `showrunner` binary's tests share: the RabbitMQ management API of the test
//! services, and cleaning up from a `Drop`.

// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

pub const MANAGEMENT: &str = "http://127.0.0.1:15672";

/// A PUT to the management API (a vhost, a user, permissions); panics naming the path.
pub async fn management_put(path: &str, body: serde_json::Value) {
    showrunner_shared::tls::client()
        .put(format!("{MANAGEMENT}/api/{path}"))
        .basic_auth("guest", Some("guest"))
        .timeout(Duration::from_secs(30))
        .json(&body)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("RabbitMQ management API, {path}: {e}"));
}

/// Deletes a test's own vhost and broker user; failures are ignored (the test is over).
pub async fn delete_vhost_and_user(name: &str) {
    let http = showrunner_shared::tls::client();
    for path in [format!("vhosts/{name}"), format!("users/{name}")] {
        let _ = http
            .delete(format!("{MANAGEMENT}/api/{path}"))
            .basic_auth("guest", Some("guest"))
            .timeout(Duration::from_secs(60))
            .send()
            .await;
    }
}

/// Runs `cleanup` to its end from a `Drop`, which cannot await: on a thread with a runtime of
/// its own (the test's runtime may be the one dropping).
pub fn clean_up<F, Fut>(cleanup: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(cleanup());
    })
    .join();
}
