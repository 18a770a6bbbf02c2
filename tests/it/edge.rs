//! The HTTP edge under hostile clients: slowloris headers, trickling bodies, idle keep-alive
//! connections, connection floods from one address and beyond the process's cap, silent
//! WebSockets. Each test holds the bad clients open while a normal client is served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use showrunner_shared::auth::Role;
use showrunner_tests::{Options, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{DEADLINE, send, ws_next, ws_say};

async fn spawn(extra: &[(&str, &str)], episode_workers: usize) -> TestApp {
    TestApp::spawn_with(Options {
        extra: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        episode_workers,
        ..Options::default()
    })
    .await
}

/// A TCP connection to `addr` from loopback address `from` (all of 127/8 is loopback on
/// Linux, so one test can be several clients).
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind");
    socket.connect(addr).await.unwrap_or_else(|e| panic!("connect from {from:?}: {e}"))
}

/// Everything `stream` sends until the server closes it; panics if that takes longer than
/// the deadline.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Err(_) => panic!("still open after {DEADLINE:?}"),
            Ok(Ok(0) | Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// A normal client: `GET /health` on a new connection from `from`; the status line and how
/// long the answer took.
async fn health_from(from: [u8; 4], addr: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = connect_from(from, addr).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_to_close(&mut stream).await;
    let text = String::from_utf8_lossy(&answer);
    (text.lines().next().unwrap_or_default().to_string(), started.elapsed())
}

async fn assert_served(from: [u8; 4], addr: SocketAddr) {
    let (status, took) = health_from(from, addr).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "the normal client from {from:?}");
    assert!(took < Duration::from_secs(1), "the normal client waited {took:?}");
}

/// Whether `stream` got a 503 at once (the caps' answer) rather than being held.
async fn refused(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503"),
        Ok(_) => panic!("closed without an answer"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn slowloris_headers_are_cut_after_the_header_timeout_while_others_are_served() {
    let app = spawn(&[("http.header_timeout_secs", "1")], 1).await;
    let partial = [
        "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n",
        // A WebSocket handshake that never ends is bounded the same way.
        "GET /api/v1/ws?token=x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    ];
    let mut held = Vec::new();
    for i in 0..40 {
        let mut stream = connect_from([127, 0, 0, 1], app.addr).await;
        stream.write_all(partial[i % 2].as_bytes()).await.expect("write");
        held.push((Instant::now(), stream));
    }
    // Trickling the headers byte by byte does not extend the time either.
    let trickles: Vec<_> = (0..10)
        .map(|_| {
            let addr = app.addr;
            tokio::spawn(async move {
                let stream = connect_from([127, 0, 0, 1], addr).await;
                let opened = Instant::now();
                let (mut read, mut write) = stream.into_split();
                let _ = write.write_all(b"GET /health HTTP/1.1\r\n").await;
                let writer = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if write.write_all(b"X").await.is_err() {
                            return;
                        }
                    }
                });
                let mut buf = [0u8; 1024];
                loop {
                    match tokio::time::timeout(DEADLINE, read.read(&mut buf)).await {
                        Err(_) => panic!("a trickling client still open after {DEADLINE:?}"),
                        Ok(Ok(0) | Err(_)) => break,
                        Ok(Ok(_)) => {}
                    }
                }
                writer.abort();
                opened.elapsed()
            })
        })
        .collect();
    for _ in 0..5 {
        assert_served([127, 0, 0, 1], app.addr).await;
    }
    let closed = join_all(held.iter_mut().map(|(opened, stream)| async move {
        read_to_close(stream).await;
        opened.elapsed()
    }))
    .await;
    for took in closed.into_iter().chain(join_all(trickles).await.into_iter().flatten()) {
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
            "a slow header closed after {took:?}, not after the 1 s header timeout"
        );
    }
    assert_served([127, 0, 0, 1], app.addr).await;
    app.stop().await;
}

#[tokio::test]
async fn a_trickling_body_is_answered_408_and_closed() {
    let app = spawn(&[("http.body_timeout_secs", "1")], 1).await;
    let token = app.token("alice", Role::Member);
    let body = json!({"title": "slow"}).to_string();
    let stream = connect_from([127, 0, 0, 1], app.addr).await;
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST /api/v1/episodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    write.write_all(head.as_bytes()).await.expect("write");
    let bytes = body.into_bytes();
    let trickle = tokio::spawn(async move {
        for byte in bytes.iter().take(bytes.len() - 1) {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    // A normal client's full body is served meanwhile.
    let (status, _) = send(
        app.http.post(app.api("/episodes")).bearer_auth(&token).json(&json!({"title": "fast"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(DEADLINE, read.read(&mut buf)).await {
            Err(_) => panic!("the slow body's connection still open after {DEADLINE:?}"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!((Duration::from_millis(900)..Duration::from_secs(4)).contains(&took), "{took:?}");
    trickle.abort();
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn(&[("http.header_timeout_secs", "1")], 1).await;
    let mut stream = connect_from([127, 0, 0, 1], app.addr).await;
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = [0u8; 4096];
    // Used again within the timeout, the connection is kept.
    for _ in 0..2 {
        stream.write_all(request).await.expect("write");
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let idle_since = Instant::now() - Duration::from_millis(300);
    let rest = read_to_close(&mut stream).await;
    let took = idle_since.elapsed();
    assert!((Duration::from_millis(900)..Duration::from_secs(4)).contains(&took), "{took:?}");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"), "nothing else was answered");
    app.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_caps_are_refused_at_once() {
    let app = spawn(
        &[
            ("http.header_timeout_secs", "30"),
            ("http.max_connections", "45"),
            ("http.max_connections_per_address", "20"),
        ],
        1,
    )
    .await;
    let (one, two, three, four) = ([127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 4]);
    // Twenty silent connections from one address: held (the header timeout is long here).
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from(one, app.addr).await);
    }
    // The 21st from that address is answered 503 at once, a WebSocket handshake too...
    let started = Instant::now();
    let mut extra = connect_from(one, app.addr).await;
    assert!(refused(&mut extra).await, "the 21st connection from one address");
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    let socket = connect_from(one, app.addr).await;
    let url = format!("ws://{}/api/v1/ws?token={}", app.addr, app.token("a", Role::Member));
    match tokio_tungstenite::client_async(url, socket).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!("a WebSocket over the address cap: {other:?}"),
    }
    // ...while another address is served.
    assert_served(two, app.addr).await;

    // Twenty more from a third address: 40 open. Five more fit under the process's 45.
    for _ in 0..20 {
        held.push(connect_from(three, app.addr).await);
    }
    for _ in 0..5 {
        let mut stream = connect_from(four, app.addr).await;
        assert!(!refused(&mut stream).await, "under the process cap");
        held.push(stream);
    }
    let started = Instant::now();
    let mut beyond = connect_from(four, app.addr).await;
    assert!(refused(&mut beyond).await, "the 46th connection of the process");
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    let (status, _) = health_from(two, app.addr).await;
    assert!(status.starts_with("HTTP/1.1 503"), "a full process refuses everyone: {status}");
    // Closed connections give their places back.
    held.truncate(30);
    showrunner_tests::wait_until("a place is free again", DEADLINE, || async {
        health_from(two, app.addr).await.0 == "HTTP/1.1 200 OK"
    })
    .await;
    drop(held);
    app.stop().await;
}

#[tokio::test]
async fn long_waits_and_websockets_outlive_the_edge_timeouts_and_silent_sockets_do_not() {
    let app = spawn(
        &[
            ("http.header_timeout_secs", "1"),
            ("http.body_timeout_secs", "1"),
            ("http.ws_first_frame_secs", "2"),
        ],
        // No episode worker: the command stays pending, so `Prefer: wait` waits it out.
        0,
    )
    .await;
    let token = app.token("alice", Role::Member);
    let mut live = tokio_tungstenite::connect_async(app.ws_url(0, &token)).await.expect("ws").0;
    let mut silent = tokio_tungstenite::connect_async(app.ws_url(0, &token)).await.expect("ws").0;
    let started = Instant::now();
    let wait = send(
        app.http
            .post(app.api("/episodes"))
            .bearer_auth(&token)
            .header("Prefer", "wait=3")
            .json(&json!({"title": "waited"})),
    );
    // The live socket reads all along, so its client answers the opening ping.
    let read = async {
        let until = tokio::time::Instant::now() + Duration::from_millis(3200);
        while let Ok(Some(frame)) = tokio::time::timeout_at(until, live.next()).await {
            assert!(matches!(frame, Ok(Message::Ping(_) | Message::Pong(_))), "{frame:?}");
        }
    };
    let ((status, _), ()) = tokio::join!(wait, read);
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(started.elapsed() >= Duration::from_millis(2900), "{:?}", started.elapsed());
    // Past the header, body and first-frame times, the live socket still works.
    ws_say(&mut live, json!({"op": "subscribe", "topics": ["episode.*.created"]})).await;
    assert_eq!(ws_next(&mut live).await["op"], "subscribed");
    // The silent one never read, so never answered: closed 1008 after 2 s.
    let close = ws_next(&mut silent).await;
    assert_eq!(close["close"], 1008, "{close}");
    app.stop().await;
}
