//! The two measured paths, shared by the criterion bench and the
//! `decode_ratio` example (which perf profiles): plain gzip decompression,
//! and drsink's decode-to-bulk-body path on the same bytes.

#![allow(dead_code)]

use std::io::Read;
use std::time::{Duration, Instant};

use drsink::batch::Limits;
use drsink::cli::EsAction;
use drsink::decode::{Format, ObjectDecoder};
use drsink::fingerprint::Scheme;
use drsink::json_skim::{skim_object, Skim, Wanted};
use drsink::notification::ObjectRef;
use drsink::records::{ParserOptions, RecordParser};
use drsink::routing::IndexPattern;
use drsink::sink::elasticsearch::Elasticsearch;
use drsink::sink::Sink;

/// Output buffer of the plain decompression (the size of drsink's line buffer).
const SINK_BUFFER: usize = 256 * 1024;

/// Plain gzip decompression (flate2 `MultiGzDecoder`, the backend drsink
/// uses) into a buffer that is thrown away; returns the bytes produced.
pub fn gunzip(gz: &[u8]) -> u64 {
    let mut decoder = flate2::bufread::MultiGzDecoder::new(gz);
    let mut buf = vec![0u8; SINK_BUFFER];
    let mut total = 0u64;
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) => panic!("gunzip: {e}"),
        }
    }
}

/// What the decode path needs, built once, as `drsink worker` does with its
/// defaults (`--format auto`, `@timestamp`, `level`, no `--min-level`,
/// whole-line fingerprints, `create`, 5 MiB / 10 000 record batches, 1 MiB
/// records).
pub struct Ctx {
    pub parser: RecordParser,
    pub sink: Elasticsearch,
    pub object: ObjectRef,
    pub limits: Limits,
    pub max_record_bytes: usize,
}

impl Ctx {
    pub fn new() -> Ctx {
        Ctx {
            parser: RecordParser::new(&ParserOptions::default()),
            sink: Elasticsearch::new(
                "http://127.0.0.1:9200",
                EsAction::Create,
                Duration::from_secs(60),
                IndexPattern::new("logs-%Y.%m.%d", "logs-undated").expect("valid pattern"),
            )
            .expect("valid sink"),
            object: ObjectRef::new("bench", "bench.json.gz"),
            limits: Limits {
                bytes: 5 * 1024 * 1024,
                records: 10_000,
            },
            max_record_bytes: 1024 * 1024,
        }
    }
}

/// Totals of one decode run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub records: u64,
    pub batches: u64,
    pub body_bytes: u64,
    pub dead_letters: u64,
}

/// drsink's decode-to-bulk-body path: `ObjectDecoder::decode` with the
/// Elasticsearch encoder; every chunk is dropped once counted.
pub fn decode_to_bulk(ctx: &Ctx, input: &[u8]) -> Decoded {
    decode_to_bulk_from(ctx, input)
}

/// `decode_to_bulk` from any reader.
pub fn decode_to_bulk_from(ctx: &Ctx, input: impl Read) -> Decoded {
    let decoder = ObjectDecoder {
        parser: &ctx.parser,
        limits: ctx.limits,
        max_record_bytes: ctx.max_record_bytes,
        format: Format::Auto,
    };
    let mut encoder = ctx.sink.encoder(&ctx.object);
    let mut out = Decoded::default();
    decoder
        .decode(&ctx.object, input, encoder.as_mut(), |chunk| {
            out.records += chunk.records;
            out.dead_letters += chunk.letters.len() as u64;
            if let Some(batch) = chunk.batch {
                out.batches += 1;
                out.body_bytes += batch.body.len() as u64;
            }
            Ok(())
        })
        .expect("decoding from memory cannot fail");
    out
}

/// How much of drsink's per-record work a `floor` run adds to the least
/// any decode path does: a ladder of real pieces, to see where the time of
/// the full path goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rung {
    /// Inflate, split lines, check UTF-8, copy each line into a bulk body
    /// behind a fixed action line; nothing is parsed, hashed or routed.
    Floor,
    /// The floor, and `json_skim` finds the parser's keys in each line.
    Skim,
    /// The skim, and a fingerprint for each line without a `log_id`.
    Fingerprint,
}

/// The keys `RecordParser` looks for with the `Ctx` options, `log_id` first.
const PARSER_KEYS: [&str; 6] = [
    "log_id",
    "@timestamp",
    "Records",
    "messageType",
    "detail-type",
    "drsink",
];

/// One rung of the ladder over `gz`; returns the number of records.
pub fn floor(gz: &[u8], rung: Rung) -> u64 {
    let wanted = Wanted::new(PARSER_KEYS.iter().map(|k| k.as_bytes().to_vec()).collect());
    let mut reader =
        std::io::BufReader::with_capacity(SINK_BUFFER, flate2::bufread::MultiGzDecoder::new(gz));
    let mut body: Vec<u8> = Vec::with_capacity(6 << 20);
    let mut records = 0;
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let buf = std::io::BufRead::fill_buf(&mut reader).expect("gunzip");
        if buf.is_empty() {
            return records;
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', buf) {
            let line = if partial.is_empty() {
                &buf[start..end]
            } else {
                partial.extend_from_slice(&buf[start..end]);
                &partial[..]
            };
            let mut ascii = false;
            let mut found = [None; PARSER_KEYS.len()];
            if rung != Rung::Floor {
                match skim_object(line, &wanted, &mut found) {
                    Skim::Found { ascii: a } => ascii = a,
                    Skim::Unsure => panic!("generated lines are all skimmed"),
                }
                if rung == Rung::Fingerprint && found[0].is_none() {
                    std::hint::black_box(Scheme::default().id(&[line]));
                }
            }
            assert!(ascii || simdutf8::basic::from_utf8(line).is_ok());
            body.extend_from_slice(
                br#"{"create":{"_index":"logs-2026.11.22","_id":"00000000-0000-0000-0000-000000000000"}}"#,
            );
            body.push(b'\n');
            body.extend_from_slice(line);
            body.push(b'\n');
            if body.len() >= 5 << 20 {
                std::hint::black_box(&body);
                body.clear();
            }
            records += 1;
            partial.clear();
            start = end + 1;
        }
        partial.extend_from_slice(&buf[start..]);
        let consumed = buf.len();
        std::io::BufRead::consume(&mut reader, consumed);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Times `rounds` interleaved runs of gunzip, the decode path and the
/// rungs of `floor` (A B C … A B C …, so drift and noise hit all alike) and
/// prints MB/s, records/s, each one's cost per record over gunzip, and the
/// ratio of the medians. Returns the ratio decode / gunzip (by throughput).
pub fn ratio(label: &str, gz: &[u8], uncompressed: usize, rounds: usize) -> f64 {
    const ALL_RUNGS: [(Rung, &str); 3] = [
        (
            Rung::Floor,
            "(c) floor: inflate, split, UTF-8 check, copy behind a fixed action line",
        ),
        (
            Rung::Skim,
            "(d) floor + json_skim of each line (UTF-8 then checked only on non-ASCII lines)",
        ),
        (
            Rung::Fingerprint,
            "(e) (d) + XXH3 fingerprint of each line without a log_id",
        ),
    ];
    // Without a SIMD skim here, the decode path runs the strict scanner.
    let skims = drsink::json_skim::available();
    let rungs_here: Vec<(Rung, &str)> = ALL_RUNGS
        .into_iter()
        .filter(|(rung, _)| skims || *rung == Rung::Floor)
        .collect();
    let ctx = Ctx::new();
    // Warm-up, and the record count.
    let produced = gunzip(gz);
    assert_eq!(produced as usize, uncompressed, "gunzip output size");
    let decoded = decode_to_bulk(&ctx, gz);
    assert_eq!(decoded.dead_letters, 0, "generated data must all be valid");
    for &(rung, _) in &rungs_here {
        assert_eq!(floor(gz, rung), decoded.records, "{rung:?} record count");
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut rungs = vec![Vec::new(); rungs_here.len()];
    for _ in 0..rounds {
        let t = Instant::now();
        std::hint::black_box(gunzip(std::hint::black_box(gz)));
        a.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(decode_to_bulk(&ctx, std::hint::black_box(gz)));
        b.push(t.elapsed());
        for ((rung, _), times) in rungs_here.iter().zip(&mut rungs) {
            let t = Instant::now();
            std::hint::black_box(floor(std::hint::black_box(gz), *rung));
            times.push(t.elapsed());
        }
    }
    let (ta, tb) = (median(a).as_secs_f64(), median(b).as_secs_f64());
    let mb = uncompressed as f64 / 1e6;
    let records = decoded.records as f64;
    let over_gunzip = |t: f64| (t - ta) / records * 1e9;
    let ratio = ta / tb;
    println!(
        "{label}: {mb:.1} MB uncompressed ({:.1} MB gzip, {} records, {:.0} B/record avg), median of {rounds} interleaved rounds",
        gz.len() as f64 / 1e6,
        decoded.records,
        uncompressed as f64 / records,
    );
    println!(
        "  (a) gunzip          {:8.1} ms  {:7.1} MB/s  {:10.0} records/s  ({:.0} ns/record)",
        ta * 1e3,
        mb / ta,
        records / ta,
        ta / records * 1e9
    );
    println!(
        "  (b) decode-to-bulk  {:8.1} ms  {:7.1} MB/s  {:10.0} records/s  (+{:.0} ns/record; {} batches, {:.1} MB of bulk bodies)",
        tb * 1e3,
        mb / tb,
        records / tb,
        over_gunzip(tb),
        decoded.batches,
        decoded.body_bytes as f64 / 1e6
    );
    for ((_, what), times) in rungs_here.iter().zip(rungs) {
        let t = median(times).as_secs_f64();
        println!(
            "  {what}: {:.1} ms, {:.1} MB/s, +{:.0} ns/record, x{:.3} of gunzip",
            t * 1e3,
            mb / t,
            over_gunzip(t),
            ta / t
        );
    }
    println!(
        "  ratio b/a = {ratio:.3} (target >= 0.8: {})",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
    ratio
}
