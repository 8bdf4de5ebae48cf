//! Live dashboard budgets, measured against a running Flowdeck (see `scripts/bench-live.sh`):
//!
//! - SSE fan-out: N subscribers to `GET /api/events?run_id=R`; each of M status updates is
//!   timed from just before its POST until each subscriber has read its event.
//! - Dashboard SSR: `GET /` as a signed-in admin, 500 times after 20 to warm up.
//!
//! Usage: `bench_live URL API_KEY RUN_ID [SUBSCRIBERS] [UPDATES]`. Plain HTTP/1.1 over
//! tokio sockets, so the load generator adds no client library of its own.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 90.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

/// One request on a fresh connection; returns the status code and the body.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A subscriber: reports `(records_processed, when)` for every `stage.status` event.
async fn subscribe(
    addr: String,
    path: String,
    key: String,
    ready: mpsc::Sender<()>,
    seen: mpsc::UnboundedSender<(i64, Instant)>,
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut lines = BufReader::new(stream).lines();
    let mut event = String::new();
    while let Some(line) = lines.next_line().await? {
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_owned();
        } else if let Some(data) = line.strip_prefix("data:") {
            match event.as_str() {
                "hello" => {
                    ready.send(()).await.ok();
                }
                "stage.status" => {
                    let now = Instant::now();
                    let value: serde_json::Value = serde_json::from_str(data.trim()).unwrap_or_default();
                    if let Some(n) = value["data"]["records_processed"].as_i64() {
                        seen.send((n, now)).ok();
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench_live URL API_KEY RUN_ID [SUBSCRIBERS] [UPDATES]");
        std::process::exit(2);
    }
    let addr = args[1]
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let key = args[2].clone();
    let run_id: i64 = args[3].parse().expect("RUN_ID");
    let subscribers: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let updates: i64 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(30);

    // Dashboard server-side rendering: 20 requests to warm the server's and the
    // database's caches, then 500 measured one after another.
    let mut ssr = Vec::new();
    for i in 0..520 {
        let started = Instant::now();
        let (status, body) = request(&addr, "GET", "/", &key, "").await.expect("GET /");
        assert_eq!(status, 200, "GET / answered {status}");
        assert!(body.contains("pipeline-row"), "the dashboard lists pipelines");
        if i >= 20 {
            ssr.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    summary("dashboard SSR (GET /, full response)", ssr);

    // SSE fan-out.
    let (ready_tx, mut ready_rx) = mpsc::channel(subscribers);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let path = format!("/api/events?run_id={run_id}");
    for _ in 0..subscribers {
        let task = subscribe(
            addr.clone(),
            path.clone(),
            key.clone(),
            ready_tx.clone(),
            seen_tx.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = task.await {
                eprintln!("subscriber failed: {e}");
            }
        });
    }
    for _ in 0..subscribers {
        tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
            .await
            .expect("every subscriber connects within 60 s");
    }
    println!("{subscribers} subscribers connected");
    let mut latencies = Vec::new();
    for n in 1..=updates {
        let body = format!(
            r#"{{"run_id": {run_id}, "stage_name": "Data Generation", "status": "running", "records_processed": {n}}}"#
        );
        let sent = Instant::now();
        let (status, answer) = request(&addr, "POST", "/api/status-update/", &key, &body)
            .await
            .expect("POST /api/status-update/");
        assert_eq!(status, 200, "status update answered {status}: {answer}");
        let mut got = 0;
        while got < subscribers {
            let (records, at) = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
                .await
                .expect("every subscriber sees the update within 10 s")
                .expect("subscribers alive");
            if records == n {
                latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                got += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    summary(
        &format!("SSE fan-out ({subscribers} subscribers x {updates} updates, POST to event read)"),
        latencies,
    );
}
