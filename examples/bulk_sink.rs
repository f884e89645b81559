//! A fast local `_bulk` endpoint, so that benchmarks measure drsink rather
//! than a search server.
//!
//!   bulk_sink [ADDR] [PORT_FILE]      (default 127.0.0.1:0)
//!
//! Prints (and writes to PORT_FILE) the bound address. Speaks just enough
//! HTTP/1.1 for reqwest: keep-alive, `Content-Length` bodies. `POST
//! …/_bulk` answers every action as Elasticsearch 8 does, item by item: the
//! first `create` (or `index`) of an `_index`/`_id` is `201 created` with the
//! index, id, version, shards and sequence number; a later `create` of the
//! same id is the `409` version conflict, a later `index` a `200 updated`. The
//! ids seen are remembered (as 64-bit hashes) until `POST /_bench_forget`, so
//! a replay of the same objects meets duplicates as a cluster would. A
//! `filter_path` of `items.*.FIELD` entries keeps only those fields of each
//! item, as the cluster does. `GET /_bench_stats` answers what it saw since
//! the previous call (requests, items, duplicates, body and response bytes,
//! first-to-last bulk request seconds) and starts counting anew. Any other
//! request gets a root answer. One thread, so its CPU use is easy to tell
//! apart.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::io::Write as _;
use std::sync::{LazyLock, Mutex};

use memchr::memmem;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Stats {
    requests: u64,
    items: u64,
    duplicates: u64,
    body_bytes: u64,
    response_bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

static STATS: Mutex<Stats> = Mutex::new(Stats {
    requests: 0,
    items: 0,
    duplicates: 0,
    body_bytes: 0,
    response_bytes: 0,
    first: None,
    last: None,
});

/// Hashes of the `_index`/`_id` pairs written so far.
static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

/// The keys are hashes already: the set takes them as they are.
type Seen = HashSet<u64, BuildHasherDefault<AsIs>>;

#[derive(Default)]
struct AsIs(u64);

impl Hasher for AsIs {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        bytes
            .iter()
            .for_each(|&b| self.0 = self.0.rotate_left(8) ^ u64::from(b));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

static INDEX_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"_index\":\""));
static ID_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"_id\":\""));

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
        "{{\"requests\":{},\"items\":{},\"duplicates\":{},\"body_bytes\":{},\"response_bytes\":{},\"window_seconds\":{window:.3}}}",
        s.requests, s.items, s.duplicates, s.body_bytes, s.response_bytes
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
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let json: Vec<u8> = if method == "POST" && path_only.ends_with("/_bulk") {
            let (out, items, duplicates) = answer_bulk(body, query);
            let mut s = STATS.lock().unwrap();
            s.requests += 1;
            s.items += items;
            s.duplicates += duplicates;
            s.body_bytes += length as u64;
            s.response_bytes += out.len() as u64;
            s.first.get_or_insert(started);
            out
        } else if path_only == "/_bench_stats" {
            take_stats().into_bytes()
        } else if path_only == "/_bench_forget" {
            *SEEN.lock().unwrap() = None;
            b"{}".to_vec()
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

/// The response to a bulk body, the number of items and of duplicates.
fn answer_bulk(body: &[u8], query: &str) -> (Vec<u8>, u64, u64) {
    // `filter_path=items.*.status,items.*.error` (percent-encoded or not).
    let filter: Option<Vec<String>> = query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("filter_path=")?;
        let value = value.replace("%2C", ",").replace("%2c", ",");
        Some(value.split(',').map(str::to_owned).collect())
    });
    let wants = |field: &str| {
        filter
            .as_ref()
            .is_none_or(|f| f.iter().any(|p| p == &format!("items.*.{field}")))
    };
    let (want_index, want_id, want_version, want_result) = (
        wants("_index"),
        wants("_id"),
        wants("_version"),
        wants("result"),
    );
    let (want_shards, want_seq, want_term) =
        (wants("_shards"), wants("_seq_no"), wants("_primary_term"));
    let (want_status, want_error) = (wants("status"), wants("error"));
    let mut seen = SEEN.lock().unwrap();
    let seen =
        seen.get_or_insert_with(|| Seen::with_capacity_and_hasher(1 << 22, Default::default()));
    let mut out = Vec::with_capacity(64 + body.len() / 2);
    out.extend_from_slice(match filter {
        None => br#"{"took":1,"items":["#,
        Some(_) => br#"{"items":["#,
    });
    let (mut items, mut duplicates) = (0u64, 0u64);
    let mut at = 0;
    while let Some(action) = next_line(body, &mut at) {
        let _document = next_line(body, &mut at);
        if action.is_empty() {
            continue;
        }
        let kind = if action.starts_with(b"{\"index\"") {
            "index"
        } else {
            "create"
        };
        let index = field(action, &INDEX_KEY);
        let id = field(action, &ID_KEY);
        let hash = |bytes: &[u8]| twox_hash::XxHash3_128::oneshot(bytes) as u64;
        let key = hash(index).rotate_left(17) ^ hash(id);
        let first = seen.insert(key);
        if items > 0 {
            out.push(b',');
        }
        items += 1;
        let (status, result): (u16, &[u8]) = match (first, kind) {
            (true, _) => (201, b"created"),
            (false, "index") => (200, b"updated"),
            (false, _) => (409, b""),
        };
        duplicates += u64::from(status == 409);
        // Written straight into the answer: the sink must cost far less than
        // drsink's reading of it.
        out.extend_from_slice(if kind == "index" {
            b"{\"index\":{"
        } else {
            b"{\"create\":{"
        });
        let mut fields = Fields {
            out: &mut out,
            any: false,
        };
        if want_index {
            fields.add(&[b"\"_index\":\"", index, b"\""]);
        }
        if want_id {
            fields.add(&[b"\"_id\":\"", id, b"\""]);
        }
        if status != 409 {
            if want_version {
                fields.add(&[b"\"_version\":", if first { b"1" } else { b"2" }]);
            }
            if want_result {
                fields.add(&[b"\"result\":\"", result, b"\""]);
            }
            if want_shards {
                fields.add(&[br#""_shards":{"total":2,"successful":1,"failed":0}"#]);
            }
            if want_seq {
                fields.add(&[
                    b"\"_seq_no\":",
                    itoa::Buffer::new().format(items).as_bytes(),
                ]);
            }
            if want_term {
                fields.add(&[b"\"_primary_term\":1"]);
            }
        }
        if want_status {
            fields.add(&[
                b"\"status\":",
                itoa::Buffer::new().format(status).as_bytes(),
            ]);
        }
        if status == 409 && want_error {
            fields.add(&[
                b"\"error\":{\"type\":\"version_conflict_engine_exception\",\"reason\":\"[",
                id,
                b"]: version conflict, document already exists (current version [1])\",\"index_uuid\":\"bUlKsInKbEnChUuId0000w\",\"shard\":\"0\",\"index\":\"",
                index,
                b"\"}",
            ]);
        }
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
    if filter.is_none() {
        let _ = write!(out, ",\"errors\":{}", duplicates > 0);
    }
    out.push(b'}');
    (out, items, duplicates)
}

/// The line of `body` at `*at` (found with memchr), moving `*at` past it.
fn next_line<'a>(body: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let rest = body.get(*at..).filter(|rest| !rest.is_empty())?;
    let len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
    *at += len + 1;
    Some(&rest[..len])
}

/// The fields of one item, comma-separated as they are added.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    any: bool,
}

impl Fields<'_> {
    fn add(&mut self, parts: &[&[u8]]) {
        if self.any {
            self.out.push(b',');
        }
        self.any = true;
        parts
            .iter()
            .for_each(|part| self.out.extend_from_slice(part));
    }
}

/// The JSON string value after `key` in an action line (no escapes expected).
fn field<'a>(action: &'a [u8], key: &memmem::Finder<'_>) -> &'a [u8] {
    let Some(at) = key.find(action) else {
        return b"";
    };
    let rest = &action[at + key.needle().len()..];
    &rest[..memchr::memchr(b'"', rest).unwrap_or(rest.len())]
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 64 * 1024 {
        buf.reserve(256 * 1024);
    }
    // Appends into the spare capacity: nothing is zeroed or copied twice.
    stream.read_buf(buf).await
}
