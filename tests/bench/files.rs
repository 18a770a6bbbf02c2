//! `bench-files`: upload and download of one large file (1 GiB) through the api, to the local
//! folder store and to the local S3 server (moto, `tests/s3/moto.sh`), in MiB/s, beside the raw
//! `dd` write and read speed of the same disk measured in the same run, and the peak RSS growth
//! of this process (the whole stack runs in it; the client side streams and holds one 1 MiB
//! piece) during each transfer.
//!
//!     cargo run --release -p showrunner-tests --bin bench-files
//!
//! Environment: `BENCH_BYTES` (1073741824), `BENCH_S3_BYTES` (as `BENCH_BYTES`; moto keeps
//! objects in memory, so a smaller size spares a shared machine), `BENCH_DIR` (a folder on the
//! disk to measure, default the system's temporary folder), `SHOWRUNNER_TEST_S3` (an S3 endpoint
//! instead of starting moto; `none` skips S3).

use std::process::ExitCode;
use std::time::Instant;

use futures_util::StreamExt;
use reqwest::StatusCode;
use showrunner_shared::auth::Role;
use showrunner_tests::{Options, TestApp};

const MIB: f64 = 1024.0 * 1024.0;
const PIECE: usize = 1024 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// This process's resident set now, and its peak since the last reset, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak (`VmHWM`) to the current resident set (Linux: `5` to `clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn dd(args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status =
        std::process::Command::new("dd").args(args).stderr(std::process::Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "dd {args:?} failed");
    Ok(started.elapsed().as_secs_f64())
}

/// Empties the page cache (Linux, root), so that the next read comes from the disk. `false`
/// where this process may not.
fn drop_caches() -> bool {
    let synced = std::process::Command::new("sync").status().is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// Downloads a file whole; the seconds it took.
async fn download(
    app: &TestApp,
    token: &str,
    ep: &str,
    id: &str,
    bytes: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let response = app
        .http
        .get(app.api(&format!("/episodes/{ep}/files/{id}/content")))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(response.status() == StatusCode::OK, "download: {}", response.status());
    let mut stream = response.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        got += chunk?.len() as u64;
    }
    anyhow::ensure!(got == bytes, "downloaded {got} of {bytes} bytes");
    Ok(started.elapsed().as_secs_f64())
}

struct Transfer {
    upload_mib_s: f64,
    download_mib_s: f64,
    /// The same download after the page cache was emptied, where that is allowed.
    download_cold_mib_s: Option<f64>,
    upload_rss_growth: u64,
    download_rss_growth: u64,
}

async fn transfer(app: &TestApp, bytes: u64) -> anyhow::Result<Transfer> {
    let alice = app.token("alice", Role::Admin);
    let (status, episode) = {
        let r = app
            .http
            .post(app.api("/episodes"))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&serde_json::json!({"title": "Bench"}))
            .send()
            .await?;
        (r.status(), r.json::<serde_json::Value>().await?)
    };
    anyhow::ensure!(status == StatusCode::CREATED, "episode: {status} {episode}");
    let ep = episode["data"]["id"].as_str().unwrap_or_default().to_string();
    let piece = bytes::Bytes::from((0..PIECE).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let pieces = bytes.div_ceil(PIECE as u64);
    let last = bytes - (pieces - 1) * PIECE as u64;
    let body = futures_util::stream::iter((0..pieces).map(move |i| {
        let chunk = if i + 1 == pieces { piece.slice(..last as usize) } else { piece.clone() };
        Ok::<_, std::io::Error>(chunk)
    }));
    let (before, _) = rss();
    reset_peak();
    let started = Instant::now();
    let response = app
        .http
        .post(app.api(&format!("/episodes/{ep}/files?name=big.bin")))
        .bearer_auth(&alice)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", bytes)
        .header("Prefer", "wait=30")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    let upload = started.elapsed().as_secs_f64();
    let (_, peak) = rss();
    let upload_rss_growth = peak.saturating_sub(before);
    let status = response.status();
    let created: serde_json::Value = response.json().await?;
    anyhow::ensure!(status == StatusCode::CREATED, "upload: {status} {created}");
    let id = created["data"]["id"].as_str().unwrap_or_default().to_string();

    let (before, _) = rss();
    reset_peak();
    let warm = download(app, &alice, &ep, &id, bytes).await?;
    let (_, peak) = rss();
    // Once more from the disk, when this process may empty the page cache (root on Linux).
    let download_cold = if drop_caches() {
        Some(bytes as f64 / MIB / download(app, &alice, &ep, &id, bytes).await?)
    } else {
        None
    };
    Ok(Transfer {
        upload_mib_s: bytes as f64 / MIB / upload,
        download_mib_s: bytes as f64 / MIB / warm,
        download_cold_mib_s: download_cold,
        upload_rss_growth,
        download_rss_growth: peak.saturating_sub(before),
    })
}

fn report(store: &str, bytes: u64, t: &Transfer) {
    println!(
        "{store:>6}: {:.0} MiB  upload {:>7.1} MiB/s (RSS +{:.1} MiB)  download {:>7.1} MiB/s (RSS +{:.1} MiB)",
        bytes as f64 / MIB,
        t.upload_mib_s,
        t.upload_rss_growth as f64 / MIB,
        t.download_mib_s,
        t.download_rss_growth as f64 / MIB,
    );
    if let Some(cold) = t.download_cold_mib_s {
        println!("{:>6}  download from the disk (page cache emptied) {cold:>7.1} MiB/s", "");
    }
}

async fn run() -> anyhow::Result<()> {
    let bytes = env_u64("BENCH_BYTES", 1 << 30);
    let s3_bytes = env_u64("BENCH_S3_BYTES", bytes);
    let dir = std::env::var("BENCH_DIR").map(Into::into).unwrap_or_else(|_| std::env::temp_dir());
    let work = dir.join(format!("bench-files-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&work)?;

    // The disk itself: dd writes (flushed) and reads the same amount in 8 MiB blocks.
    let raw = work.join("dd.bin");
    let count = (bytes / (8 << 20)).max(1).to_string();
    let of = format!("of={}", raw.display());
    let write = dd(&["if=/dev/zero", &of, "bs=8M", &format!("count={count}"), "conv=fdatasync"])?;
    let read = dd(&[&format!("if={}", raw.display()), "of=/dev/null", "bs=8M"])?;
    let cold = if drop_caches() {
        Some(dd(&[&format!("if={}", raw.display()), "of=/dev/null", "bs=8M"])?)
    } else {
        None
    };
    let dd_bytes = count.parse::<f64>().unwrap_or(1.0) * 8.0 * MIB;
    std::fs::remove_file(&raw)?;
    println!(
        "    dd: write {:.1} MiB/s (fdatasync), read {:.1} MiB/s (page cache warm: just written), \
         read from the disk {}",
        dd_bytes / MIB / write,
        dd_bytes / MIB / read,
        cold.map_or("not measured (the page cache cannot be emptied here)".into(), |c| format!(
            "{:.1} MiB/s (page cache emptied)",
            dd_bytes / MIB / c
        )),
    );

    let folder = work.join("store");
    let url = format!("file://{}", folder.display());
    let app = TestApp::spawn_with(Options {
        extra: vec![
            ("storage.url".into(), url),
            ("files.max_bytes".into(), (bytes + 1).to_string()),
            ("http.max_wait_secs".into(), "30".into()),
        ],
        ..Options::default()
    })
    .await;
    let local = transfer(&app, bytes).await;
    app.stop().await;
    report("folder", bytes, &local?);

    let endpoint = match std::env::var("SHOWRUNNER_TEST_S3") {
        Ok(e) if e == "none" => None,
        Ok(e) => Some(e),
        Err(_) => {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/s3/moto.sh");
            let out = std::process::Command::new("bash").arg(script).output()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
    };
    if let Some(endpoint) = endpoint {
        let bucket = format!("sr-bench-{}", uuid::Uuid::now_v7().simple());
        showrunner_shared::tls::client().put(format!("{endpoint}/{bucket}")).send().await?;
        let app = TestApp::spawn_with(Options {
            extra: vec![
                ("storage.url".into(), format!("s3://{bucket}")),
                ("storage.s3.endpoint".into(), endpoint.clone()),
                ("storage.s3.allow_http".into(), "true".into()),
                ("storage.s3.access_key_id".into(), "bench".into()),
                ("storage.s3.secret_access_key".into(), "bench".into()),
                ("files.max_bytes".into(), (s3_bytes + 1).to_string()),
            ],
            ..Options::default()
        })
        .await;
        let s3 = transfer(&app, s3_bytes).await;
        let store = showrunner_shared::storage::Storage::open(&app.settings.storage)?;
        app.stop().await;
        let keys: Vec<_> =
            store.store().list(None).filter_map(|m| async { m.ok() }).collect().await;
        for meta in keys {
            let _ = store.delete(&meta.location).await;
        }
        let _ =
            showrunner_shared::tls::client().delete(format!("{endpoint}/{bucket}")).send().await;
        report("s3", s3_bytes, &s3?);
    } else {
        println!("    s3: skipped (no S3 server)");
    }
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-files: {error:#}");
            ExitCode::FAILURE
        }
    }
}
