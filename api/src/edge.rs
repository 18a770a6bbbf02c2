//! The HTTP edge: the accept loop and what bounds a slow or greedy client before any handler
//! runs. Connections are capped per process and per client address (refused at once with a
//! 503 beyond either cap); hyper's own `header_read_timeout` closes a connection that does not
//! finish its request's headers in time (slowloris) and an idle keep-alive connection; a body
//! that does not arrive in time is answered 408 (`body_deadline`). `axum::serve` exposes none
//! of hyper's settings, hence this loop; it drains like `axum::serve` did.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use showrunner_shared::config::HttpSettings;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ApiError;

/// Open connections, per process and per client address.
struct Counter {
    max: usize,
    per_address: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection's place in the counts, given back when the connection (or the
/// WebSocket it became) is dropped.
struct Slot {
    counter: Arc<Counter>,
    ip: IpAddr,
}

enum Refusal {
    Process,
    Address,
}

impl Counter {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_ip) = &mut *open;
        if *total >= self.max {
            return Err(Refusal::Process);
        }
        let from_ip = by_ip.entry(ip).or_default();
        if self.per_address > 0 && *from_ip >= self.per_address {
            return Err(Refusal::Address);
        }
        *from_ip += 1;
        *total += 1;
        Ok(Slot { counter: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// A TCP stream that holds its connection's [`Slot`]. hyper hands the stream itself to an
/// upgraded WebSocket, so the slot is held for as long as the WebSocket lives too.
pub(crate) struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl Counted {
    /// The stream, and what holds its slot: the relay owns an upgraded WebSocket's socket.
    pub(crate) fn into_parts(self) -> (TcpStream, Box<dyn std::any::Any + Send + Sync>) {
        (self.stream, Box::new(self._slot))
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets hyper close each
/// connection once its request in flight is answered, and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    http: &HttpSettings,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let counter = Arc::new(Counter {
        max: http.max_connections,
        per_address: http.max_connections_per_address,
        open: Mutex::new((0, HashMap::new())),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(http.header_timeout_secs))
        .keep_alive(true);
    let connections = TaskTracker::new();
    let lingering = Arc::new(tokio::sync::Semaphore::new(MAX_LINGERING));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error, &shutdown).await;
                    continue;
                }
            },
        };
        let slot = match counter.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(stream, refusal, &lingering);
                continue;
            }
        };
        let io = TokioIo::new(Counted { stream, _slot: slot });
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, request.map(Body::new)).await }
        });
        let connection = builder.serve_connection(io, service).with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut connection = pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_end(result, peer),
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await, peer);
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

fn log_end(result: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(error) = result {
        // Timeouts and clients that go away are routine at the edge.
        tracing::debug!(%peer, %error, "connection ended");
    }
}

/// An accept that failed: a connection reset before it was accepted is nothing; anything else
/// (out of file descriptors, most likely) is waited out briefly instead of spinning.
async fn accept_failed(error: io::Error, shutdown: &CancellationToken) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(%error, "accept failed");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
}

/// Refused connections whose close may wait a moment (see [`refuse`]).
const MAX_LINGERING: usize = 64;

/// Answers a connection beyond a cap with a 503 without reading it, and closes it: a write
/// into a fresh socket's empty send buffer does not block. Closing a socket that holds unread
/// bytes (the request the client sent at once) resets it, and the reset can destroy the 503
/// before the client reads it; so the connection's request is read and dropped for up to
/// 200 ms first, for at most [`MAX_LINGERING`] refused connections at a time (beyond them,
/// a flood, the close is immediate).
fn refuse(stream: TcpStream, refusal: Refusal, lingering: &Arc<tokio::sync::Semaphore>) {
    let response: &[u8] = match refusal {
        Refusal::Process => {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n\
              connection: close\r\ncontent-length: 29\r\n\r\ntoo many open connections now\n"
        }
        Refusal::Address => {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n\
              connection: close\r\ncontent-length: 41\r\n\r\ntoo many open connections from one address\n"
        }
    };
    let _ = stream.try_write(response);
    let Ok(permit) = lingering.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Ok(1..) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {}
        })
        .await;
        drop(permit);
    });
}

/// Gives a request's body `limit` to arrive, from the end of its headers; a body still
/// arriving then is cut and the request answered 408 (connection closed). Requests without a
/// body are not touched. A file upload (gigabytes, `routes::files::is_upload`) may take as
/// long as it needs in all, but no more than `limit` between two pieces of its body.
pub async fn body_deadline(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let idle =
        crate::routes::files::is_upload(request.method(), request.uri().path()).then_some(limit);
    let request = request.map(|body| {
        Body::new(Deadline {
            body,
            sleep: Box::pin(tokio::time::sleep(limit)),
            idle,
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if expired.load(Ordering::Acquire) {
        let mut response = ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s",
            limit.as_secs()
        ))
        .into_response();
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    response
}

/// A body that fails once its deadline passes.
struct Deadline {
    body: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Set: the deadline moves this far past every piece of body that arrives.
    idle: Option<Duration>,
    expired: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            if let (Some(idle), Some(Ok(_))) = (this.idle, &frame) {
                this.sleep.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            return Poll::Ready(frame);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_process_and_per_address() {
        let counter = Arc::new(Counter { max: 3, per_address: 2, open: Mutex::default() });
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let a1 = counter.admit(a).ok();
        let a2 = counter.admit(a).ok();
        assert!(a1.is_some() && a2.is_some());
        assert!(matches!(counter.admit(a), Err(Refusal::Address)));
        let b1 = counter.admit(b).ok();
        assert!(b1.is_some());
        assert!(matches!(counter.admit(b), Err(Refusal::Process)));
        drop(a1);
        assert!(counter.admit(a).is_ok(), "a closed connection gives its place back");
        drop((a2, b1));
        assert_eq!(counter.open.lock().map(|o| (o.0, o.1.len())).ok(), Some((0, 0)));
    }
}
