//! A fast local `_bulk` endpoint that accepts everything, so that benchmarks
//! measure drsink rather than a search server.
//!
//!   bulk_sink [ADDR] [PORT_FILE]      (default 127.0.0.1:0)
//!
//! Prints (and writes to PORT_FILE) the bound address. Speaks just enough
//! HTTP/1.1 for reqwest: keep-alive, `Content-Length` bodies. `POST
//! …/_bulk` answers one `{"create":{"status":201}}` item per action line (a
//! bulk body is action/document line pairs), so drsink's per-item accounting
//! works. `GET /_bench_stats` answers what it saw since the previous call
//! (requests, items, body bytes, first-to-last bulk request seconds) and
//! starts counting anew. Any other request gets `200 {}`. One thread, so its
//! CPU use is easy to tell apart; it counts newlines with memchr and copies
//! nothing twice, far below the cost of producing the bodies.

use std::io;
use std::sync::Mutex;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Stats {
    requests: u64,
    items: u64,
    body_bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

static STATS: Mutex<Stats> = Mutex::new(Stats {
    requests: 0,
    items: 0,
    body_bytes: 0,
    first: None,
    last: None,
});

const ITEM: &[u8] = br#"{"create":{"status":201}}"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().map_or("127.0.0.1:0", String::as_str);
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("{local}");
    if let Some(path) = args.get(1) {
        std::fs::write(path, format!("{local}\n"))?;
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(async move {
                    let _ = serve(stream).await;
                });
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("{}", take_stats());
    Ok(())
}

fn take_stats() -> String {
    let s = std::mem::take(&mut *STATS.lock().unwrap());
    let window = match (s.first, s.last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    format!(
        "{{\"requests\":{},\"items\":{},\"body_bytes\":{},\"window_seconds\":{window:.3}}}",
        s.requests, s.items, s.body_bytes
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut response: Vec<u8> = Vec::new();
    loop {
        // The request head.
        let head_end = loop {
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = std::str::from_utf8(&buf[..head_end])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "head is not UTF-8"))?
            .to_owned();
        let mut request_line = head.split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let path = request_line.next().unwrap_or_default().to_owned();
        if header(&head, "transfer-encoding").is_some() {
            stream
                .write_all(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?;
            return Ok(());
        }
        let length: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let close = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        // The body, whole (at most one batch, reused across requests).
        while buf.len() < head_end + length {
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body = &buf[head_end..head_end + length];
        let started = Instant::now();

        response.clear();
        let path_only = path.split('?').next().unwrap_or_default();
        let json: Vec<u8> = if method == "POST" && path_only.ends_with("/_bulk") {
            let newlines = memchr::memchr_iter(b'\n', body).count();
            let lines = newlines + usize::from(body.last().is_some_and(|&b| b != b'\n'));
            let items = lines / 2;
            {
                let mut s = STATS.lock().unwrap();
                s.requests += 1;
                s.items += items as u64;
                s.body_bytes += length as u64;
                s.first.get_or_insert(started);
            }
            let mut out = Vec::with_capacity(40 + items * (ITEM.len() + 1));
            out.extend_from_slice(br#"{"took":1,"errors":false,"items":["#);
            for i in 0..items {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(ITEM);
            }
            out.extend_from_slice(b"]}");
            out
        } else if path_only == "/_bench_stats" {
            take_stats().into_bytes()
        } else {
            br#"{"name":"bulk_sink","version":{"number":"8.15.0"}}"#.to_vec()
        };
        response.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
                json.len(),
                if close { "Connection: close\r\n" } else { "" }
            )
            .as_bytes(),
        );
        response.extend_from_slice(&json);
        stream.write_all(&response).await?;
        if method == "POST" && path_only.ends_with("/_bulk") {
            STATS.lock().unwrap().last = Some(Instant::now());
        }
        buf.drain(..head_end + length);
        if close {
            return Ok(());
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 64 * 1024 {
        buf.reserve(256 * 1024);
    }
    // Appends into the spare capacity: nothing is zeroed or copied twice.
    stream.read_buf(buf).await
}
