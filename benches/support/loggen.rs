//! Generated log records for the benchmarks: NDJSON lines of typical size
//! (200–600 bytes) with the fields real application logs carry.
//!
//! Shared by `benches/decode.rs` and the example binaries through `#[path]`,
//! so the criterion bench, the custom ratio harness and `scripts/bench` all
//! read the same kind of data.

#![allow(dead_code)]

use std::io::Write;

use flate2::write::GzEncoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LEVELS: &[(&str, u32)] = &[("INFO", 70), ("DEBUG", 12), ("WARN", 12), ("ERROR", 6)];
const SERVICES: &[&str] = &[
    "checkout",
    "payments",
    "catalog",
    "search",
    "auth",
    "gateway",
    "inventory",
    "shipping",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const PATHS: &[&str] = &[
    "/api/v1/orders",
    "/api/v1/orders/{id}",
    "/api/v2/catalog/items/{id}",
    "/api/v1/users/{id}/sessions",
    "/healthz",
    "/api/v1/payments/{id}/capture",
    "/search",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "Go-http-client/2.0",
    "python-requests/2.32.3",
];
const WORDS: &[&str] = &[
    "request",
    "completed",
    "failed",
    "retrying",
    "connection",
    "upstream",
    "timeout",
    "user",
    "order",
    "cache",
    "miss",
    "hit",
    "session",
    "token",
    "expired",
    "refreshed",
    "queue",
    "message",
    "processed",
    "latency",
    "slow",
    "query",
    "rows",
    "returned",
    "invalid",
    "payload",
    "accepted",
    "rejected",
    "shard",
    "replica",
    "café",
    "naïve",
    "déjà",
    "vu",
    "worker",
];

/// Deterministic record generator (same seed, same lines).
pub struct LogGen {
    rng: StdRng,
    seq: u64,
    /// Event time of the next record, epoch milliseconds.
    now_ms: i64,
}

impl LogGen {
    pub fn new(seed: u64) -> Self {
        LogGen {
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            // 2026-11-21T08:00:00Z
            now_ms: 1_795_248_000_000 + (seed as i64 % 24) * 3_600_000,
        }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.gen_range(0..items.len())]
    }

    fn hex(&mut self, out: &mut Vec<u8>, digits: usize) {
        for _ in 0..digits {
            let d = self.rng.gen_range(0..16u8);
            out.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        }
    }

    /// Appends one record and its `\n` to `out`.
    pub fn record(&mut self, out: &mut Vec<u8>) {
        self.seq += 1;
        self.now_ms += self.rng.gen_range(0..40);
        let ms = self.now_ms;
        let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
        let day = secs.div_euclid(86_400);
        let tod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(day);
        let roll = self.rng.gen_range(0..100);
        let mut acc = 0;
        let level = LEVELS
            .iter()
            .find(|(_, w)| {
                acc += w;
                roll < acc
            })
            .map_or("INFO", |(l, _)| l);
        let service = self.pick(SERVICES);
        let _ = write!(
            out,
            "{{\"@timestamp\":\"{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z\",\"level\":\"{level}\",",
            tod / 3600,
            tod / 60 % 60,
            tod % 60
        );
        // About half of the records carry their own log_id.
        if self.rng.gen_bool(0.5) {
            let _ = write!(out, "\"log_id\":\"{service}-");
            self.hex(out, 16);
            out.extend_from_slice(b"\",");
        }
        let method = self.pick(METHODS);
        let id = self.rng.gen_range(1..2_000_000u32);
        let path = self.pick(PATHS).replace("{id}", &id.to_string());
        let status = match self.rng.gen_range(0..100) {
            0..=84 => 200,
            85..=89 => 201,
            90..=93 => 404,
            94..=96 => 429,
            _ => 503,
        };
        let duration = self.rng.gen_range(0.2..900.0f64);
        // The message: a few words, a quoted value (escaped quotes), and
        // sometimes an escaped newline/tab or a \u escape.
        out.extend_from_slice(b"\"message\":\"");
        let _ = write!(out, "{method} {path} {status} in {duration:.1}ms:");
        for _ in 0..self.rng.gen_range(0..14) {
            out.push(b' ');
            out.extend_from_slice(self.pick(WORDS).as_bytes());
        }
        let _ = write!(out, " user=\\\"u{}\\\"", self.rng.gen_range(1..50_000));
        match self.rng.gen_range(0..10) {
            0 => out.extend_from_slice(b"\\n\\tat com.example.Handler.run(Handler.java:42)"),
            1 => out.extend_from_slice(b" caf\\u00e9 \\/ path"),
            _ => {}
        }
        out.extend_from_slice(b"\",");
        let _ = write!(
            out,
            "\"host\":\"{service}-{}.eu-west-1.internal\",\"service\":\"{service}\",\"trace_id\":\"",
            self.rng.gen_range(0..24)
        );
        self.hex(out, 32);
        let _ = write!(
            out,
            "\",\"http\":{{\"method\":\"{method}\",\"path\":\"{path}\",\"status\":{status},\"duration_ms\":{duration:.3},\"bytes\":{}",
            self.rng.gen_range(0..200_000)
        );
        if self.rng.gen_bool(0.4) {
            let agent = self.pick(AGENTS);
            let _ = write!(out, ",\"user_agent\":\"{agent}\"");
        }
        let _ = writeln!(out, "}},\"seq\":{},\"tags\":[\"prod\",\"eu\"]}}", self.seq);
    }

    /// At least `bytes` of NDJSON (whole records).
    pub fn ndjson(&mut self, bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes + 1024);
        while out.len() < bytes {
            self.record(&mut out);
        }
        out
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// One gzip member at the default level (what Firehose and most shippers use).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(data.len() / 6),
        flate2::Compression::default(),
    );
    enc.write_all(data).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

/// Generated NDJSON of about `bytes`, gzip-compressed in members of
/// `member_bytes` on `threads` threads; returns (uncompressed, gzip).
pub fn generate_gz(
    seed: u64,
    bytes: usize,
    member_bytes: usize,
    threads: usize,
) -> (usize, Vec<u8>) {
    let members = bytes.div_ceil(member_bytes).max(1);
    let threads = threads.clamp(1, members);
    let results: Vec<Vec<(usize, usize, Vec<u8>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..members)
                        .step_by(threads)
                        .map(|i| {
                            let want = member_bytes.min(bytes - i * member_bytes);
                            let text =
                                LogGen::new(seed.wrapping_mul(1_000_003) + i as u64).ndjson(want);
                            (i, text.len(), gzip(&text))
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<_> = results.into_iter().flatten().collect();
    all.sort_by_key(|(i, _, _)| *i);
    let total = all.iter().map(|(_, n, _)| n).sum();
    let gz = all.into_iter().flat_map(|(_, _, g)| g).collect();
    (total, gz)
}
