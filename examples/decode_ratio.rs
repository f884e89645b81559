//! The decode ratio harness outside criterion, for profiling (`perf record`)
//! and for the objects `scripts/bench` made.
//!
//!   decode_ratio [ROUNDS] [FILE.gz ...]
//!
//! Without files it generates 64 MB (`BENCH_DECODE_MB`) of logs. With
//! `DECODE_ONLY=1` it runs only the decode path ROUNDS times (for perf).
//! With `SPLIT=1` it also times the decode path with inflate moved to a
//! second thread (a read-ahead of 256 KiB buffers), the experiment behind
//! proposal 2 of the bench proposals: the pipeline then sees plain bytes.

use std::io::Read;
use std::sync::mpsc;
use std::time::Instant;

#[path = "../benches/support/harness.rs"]
mod harness;
#[path = "../benches/support/loggen.rs"]
mod loggen;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().map_or(5, |r| r.parse().expect("ROUNDS"));
    let gz = if args.len() > 1 {
        let mut all = Vec::new();
        for path in &args[1..] {
            all.extend(std::fs::read(path).expect("read FILE.gz"));
        }
        all
    } else {
        let mb: usize = std::env::var("BENCH_DECODE_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        loggen::generate_gz(1, mb * 1_000_000, 32_000_000, 2).1
    };
    let uncompressed = harness::gunzip(&gz) as usize;
    if std::env::var_os("DECODE_ONLY").is_some() {
        let ctx = harness::Ctx::new();
        let t = Instant::now();
        let mut records = 0;
        for _ in 0..rounds {
            records += harness::decode_to_bulk(&ctx, &gz).records;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "decode only: {rounds} rounds, {:.1} MB/s, {:.0} records/s",
            (uncompressed * rounds) as f64 / 1e6 / s,
            records as f64 / s
        );
        return;
    }
    harness::ratio("decode_ratio", &gz, uncompressed, rounds);
    if std::env::var_os("SPLIT").is_some() {
        let ctx = harness::Ctx::new();
        let (mut one, mut two) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            harness::decode_to_bulk(&ctx, &gz);
            one.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::thread::scope(|s| {
                let reader = ReadAhead::spawn(s, flate2::bufread::MultiGzDecoder::new(&gz[..]));
                harness::decode_to_bulk_from(&ctx, reader);
            });
            two.push(t.elapsed().as_secs_f64());
        }
        one.sort_by(f64::total_cmp);
        two.sort_by(f64::total_cmp);
        let (a, b) = (one[rounds / 2], two[rounds / 2]);
        println!(
            "  split: decode-to-bulk on one thread {:.1} MB/s, inflate on a second thread {:.1} MB/s: x{:.2}",
            uncompressed as f64 / 1e6 / a,
            uncompressed as f64 / 1e6 / b,
            a / b
        );
    }
}

/// Reads `inner` on another thread, 256 KiB at a time, a few buffers ahead.
struct ReadAhead {
    chunks: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ReadAhead {
    fn spawn<'s, R: Read + Send + 's>(
        scope: &'s std::thread::Scope<'s, '_>,
        mut inner: R,
    ) -> ReadAhead {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
        scope.spawn(move || loop {
            let mut buf = vec![0u8; 256 * 1024];
            let mut filled = 0;
            while filled < buf.len() {
                match inner.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => panic!("inflate: {e}"),
                }
            }
            buf.truncate(filled);
            if filled == 0 || tx.send(buf).is_err() {
                return;
            }
        });
        ReadAhead {
            chunks: rx,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.current.len() {
            match self.chunks.recv() {
                Ok(next) => {
                    self.current = next;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
