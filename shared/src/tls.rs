//! The process's one TLS stack: rustls with `ring` (no aws-lc-rs, no OpenSSL). reqwest is
//! built with rustls but without a crypto provider, so the provider must be installed before
//! the first HTTP client is built (reqwest panics otherwise): [`install`] does it, once per
//! process, and every place that builds a client calls it first.

use std::sync::Once;

/// Makes ring the process's rustls crypto provider. Idempotent and cheap.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err: another provider was installed first (a test harness); that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client builder, with the provider installed.
pub fn client_builder() -> reqwest::ClientBuilder {
    install();
    reqwest::Client::builder()
}

/// `reqwest::Client::new()`, with the provider installed.
pub fn client() -> reqwest::Client {
    install();
    reqwest::Client::new()
}
