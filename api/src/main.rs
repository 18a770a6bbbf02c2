//! `showrunner-api`: the REST API and the WebSocket relay.

fn main() {
    showrunner_shared::process::main("showrunner-api", |settings, cancel| async move {
        let listener = tokio::net::TcpListener::bind(settings.http.addr).await?;
        showrunner_api::run(settings, listener, cancel).await
    });
}
