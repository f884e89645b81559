//! Writes generated gzip NDJSON log objects for `scripts/bench`.
//!
//!   loggen DIR TOTAL_MB OBJECT_MB [SEED]
//!
//! Writes `DIR/obj-NNNN.json.gz`, each about OBJECT_MB MB uncompressed (the
//! last one may be smaller), TOTAL_MB MB in all, and prints one line per
//! object: `name uncompressed_bytes gzip_bytes`. Objects larger than 64 MB
//! are made of several gzip members (like `cat a.gz b.gz`), compressed on
//! both cores.

use std::io::Write;

#[path = "../benches/support/loggen.rs"]
mod loggen;

const MB: usize = 1_000_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: loggen DIR TOTAL_MB OBJECT_MB [SEED]");
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[1]);
    let total: usize = args[2].parse().expect("TOTAL_MB");
    let object: usize = args[3].parse().expect("OBJECT_MB");
    let seed: u64 = args.get(4).map_or(7, |s| s.parse().expect("SEED"));
    std::fs::create_dir_all(dir).expect("create DIR");
    let mut stdout = std::io::stdout().lock();
    let mut left = total * MB;
    let mut n = 0u64;
    while left > 0 {
        let want = left.min(object * MB);
        let (bytes, gz) = loggen::generate_gz(seed * 100_000 + n, want, 64 * MB, 2);
        let name = format!("obj-{n:04}.json.gz");
        std::fs::write(dir.join(&name), &gz).expect("write object");
        writeln!(stdout, "{name} {bytes} {}", gz.len()).expect("stdout");
        left = left.saturating_sub(bytes);
        n += 1;
    }
}
