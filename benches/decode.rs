//! `cargo bench --bench decode`: drsink's decode-to-bulk-body path next to
//! plain gzip decompression of the same bytes, on one core.
//!
//! Data: generated NDJSON logs (200–600 B records, about half with a
//! `log_id`), `BENCH_DECODE_MB` MB uncompressed (default 64), gzip level 6.
//! Criterion measures three functions in one group (throughput = uncompressed
//! bytes): `gunzip`, `decode_to_bulk` (gzip input) and `decode_plain` (the
//! same lines uncompressed: the pipeline's own cost without inflate). Then a
//! custom harness interleaves gunzip and decode runs and prints MB/s,
//! records/s and the ratio b/a (set `BENCH_DECODE_ROUNDS`, default 7; 0
//! skips it).

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};

#[path = "support/harness.rs"]
mod harness;
#[path = "support/loggen.rs"]
mod loggen;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and then
    // only a tiny input is used to check that everything runs.
    let benching = std::env::args().any(|a| a == "--bench");
    let mb = if benching {
        env_usize("BENCH_DECODE_MB", 64)
    } else {
        1
    };
    let (uncompressed, gz) = loggen::generate_gz(1, mb * 1_000_000, 32_000_000, 2);
    let plain: Vec<u8> = {
        let mut out = Vec::with_capacity(uncompressed);
        std::io::Read::read_to_end(&mut flate2::bufread::MultiGzDecoder::new(&gz[..]), &mut out)
            .expect("generated gzip");
        out
    };
    let ctx = harness::Ctx::new();

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(env_usize("BENCH_DECODE_SECS", 4) as u64))
        .configure_from_args();
    {
        let mut group = c.benchmark_group(format!("decode_{mb}MB"));
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Bytes(uncompressed as u64));
        group.bench_function("gunzip", |b| b.iter(|| harness::gunzip(&gz)));
        group.bench_function("decode_to_bulk", |b| {
            b.iter(|| harness::decode_to_bulk(&ctx, &gz))
        });
        group.bench_function("decode_plain", |b| {
            b.iter(|| harness::decode_to_bulk(&ctx, &plain))
        });
        group.finish();
    }
    c.final_summary();

    let rounds = env_usize("BENCH_DECODE_ROUNDS", 7);
    if benching && rounds > 0 {
        println!();
        harness::ratio("ratio harness", &gz, uncompressed, rounds);
        let t = std::time::Instant::now();
        let plain_run = harness::decode_to_bulk(&ctx, &plain);
        let s = t.elapsed().as_secs_f64();
        println!(
            "  decode of the same lines uncompressed (pipeline cost without inflate): {:.1} MB/s, {:.0} records/s (one run)",
            uncompressed as f64 / 1e6 / s,
            plain_run.records as f64 / s
        );
    }
}
