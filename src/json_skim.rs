//! Structural skim of one-line JSON objects: finds a few top-level keys
//! without checking the grammar of everything else.
//!
//! `json_scan::scan_object` checks every byte of a record against the JSON
//! grammar; on 450-byte log lines that costs more than inflating them. A
//! sink whose server parses each document on its own (Elasticsearch and
//! OpenSearch take one document per line of a `_bulk` body and reject a
//! malformed one per item) does not need that: it needs the values of a few
//! top-level keys, found where the record's structure says they are, and a
//! line that cannot disturb its neighbours. This skim gives exactly that:
//!
//! * the line is one object: it starts with `{`, its strings are closed, its
//!   brackets balance in number (their kinds are the server's to match),
//!   and the `}` closing the first `{` is its last byte;
//! * every top-level key is found (a key with an escape, or a colon not right
//!   after a key, makes the skim give up: the caller then runs the strict
//!   scanner, which also finds the precise error of a malformed line);
//! * the values of the wanted keys are checked as strictly as
//!   `scan_object` checks them, so they are exactly what it would return;
//! * whether the line is pure ASCII (the caller validates UTF-8 otherwise).
//!
//! The rest (commas, literals, numbers, escapes inside other strings,
//! control characters) is left to the server's parser. On every valid JSON
//! object the skim returns what `scan_object` returns, or gives up; the
//! differential tests hold it to that.
//!
//! How: each 64-byte window of the line is classified with AVX-512 or AVX2
//! (chosen once, at run time) into bitmasks: quotes, backslashes, colons,
//! brackets, bytes ≥ 0x80. Escaped quotes are removed, the in-string mask is
//! a carry-less multiply (prefix XOR) of the quotes, depth is told by the
//! parity of the brackets (or counted bracket by bracket when something
//! nests deeper than one container), and only the top-level colons are
//! visited: a hash of the four bytes before each names the one wanted key
//! it may end. Without those instructions (or off x86-64) the skim gives
//! up on every line and the strict scanner runs.

// Without SIMD code for the processor, the skim always defers to the scanner.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use crate::json_scan::{skip_value, skip_ws};

/// What the skim learned about a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skim {
    /// The line is one object; `found` holds the wanted keys' values.
    Found {
        /// No byte ≥ 0x80: the line is valid UTF-8 without further checks.
        ascii: bool,
    },
    /// Something unusual (or no SIMD skim here): use `json_scan::scan_object`.
    Unsure,
}

/// Keys looked for, found through the four bytes before a colon.
pub struct Wanted {
    keys: Vec<Vec<u8>>,
    /// For each `tail_hash(t)` of a tail `t` (the four bytes before the
    /// colon: a key's last three bytes and its closing quote), the index of
    /// the one wanted key with that hash, `NO_KEY`, or `ANY_KEY` when
    /// several share it.
    slots: [u8; 256],
    /// Some wanted key is empty (no tail to hash), or there are too many
    /// keys for `slots`: every colon is checked against every key.
    every_colon: bool,
    /// Some wanted key has a byte that JSON text can only hold escaped
    /// (`"`, `\`, a control character): the skim compares raw bytes, so
    /// it leaves such lookups to the scanner.
    needs_unescaping: bool,
}

/// Hash of the four bytes before a colon, 0..256.
#[inline(always)]
fn tail_hash(tail: u32) -> usize {
    (tail.wrapping_mul(0x9E37_79B1) >> 24) as usize
}

const NO_KEY: u8 = 0xFF;
const ANY_KEY: u8 = 0xFE;

impl Wanted {
    pub fn new(keys: Vec<Vec<u8>>) -> Self {
        let mut slots = [NO_KEY; 256];
        for (index, key) in keys.iter().enumerate() {
            let index = u8::try_from(index).unwrap_or(ANY_KEY).min(ANY_KEY);
            let mut add = |tail: [u8; 4]| {
                let slot = &mut slots[tail_hash(u32::from_le_bytes(tail))];
                *slot = if *slot == NO_KEY || *slot == index {
                    index
                } else {
                    ANY_KEY
                };
            };
            match key.len() {
                0 => {}
                // `X"k"`: X is whatever precedes the opening quote.
                1 => {
                    for before in [b'{', b',', b' ', b'\t', b'\n', b'\r'] {
                        add([before, b'"', key[0], b'"']);
                    }
                }
                2 => add([b'"', key[0], key[1], b'"']),
                n => add([key[n - 3], key[n - 2], key[n - 1], b'"']),
            }
        }
        Wanted {
            every_colon: keys.iter().any(|k| k.is_empty()) || keys.len() >= usize::from(ANY_KEY),
            needs_unescaping: keys
                .iter()
                .any(|k| k.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20)),
            keys,
            slots,
        }
    }

    /// The keys, in the order of `found`.
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// Which wanted key may end right before `text[colon]`: an index,
    /// `NO_KEY` or `ANY_KEY`.
    #[inline(always)]
    fn slot_at(&self, text: &[u8], colon: usize) -> u8 {
        // A colon after a key is at byte 3 at the earliest (`{"":`).
        match text.get(colon.wrapping_sub(4)..colon) {
            Some(&[a, b, c, d]) if !self.every_colon => {
                self.slots[tail_hash(u32::from_le_bytes([a, b, c, d]))]
            }
            _ => ANY_KEY,
        }
    }
}

/// Skims `text` (one line, ASCII whitespace trimmed) for the top-level keys
/// in `wanted`; `found[i]` gets the raw value of `wanted.keys[i]` (the last
/// one when a key repeats), as `json_scan::scan_object` would return it.
/// After `Skim::Unsure`, `found` must be ignored.
pub fn skim_object<'a>(text: &'a [u8], wanted: &Wanted, found: &mut [Option<&'a [u8]>]) -> Skim {
    debug_assert_eq!(wanted.keys.len(), found.len());
    match implementation() {
        Some(skim) => skim_with(skim, text, wanted, found),
        None => Skim::Unsure,
    }
}

/// `skim` on the lines it can take: every implementation assumes that the
/// object's own brackets are the first and the last byte, and that the
/// wanted keys can be compared raw.
fn skim_with<'a>(
    skim: Implementation,
    text: &'a [u8],
    wanted: &Wanted,
    found: &mut [Option<&'a [u8]>],
) -> Skim {
    let takes = text.len() >= 2
        && text[0] == b'{'
        && text[text.len() - 1] == b'}'
        && !wanted.needs_unescaping;
    match takes {
        true => skim(text, wanted, found),
        false => Skim::Unsure,
    }
}

type Implementation = for<'a> fn(&'a [u8], &Wanted, &mut [Option<&'a [u8]>]) -> Skim;

/// Whether this processor can skim at all (else `skim_object` always
/// defers to the scanner).
pub fn available() -> bool {
    implementation().is_some()
}

/// The fastest skim this processor can run, chosen once.
fn implementation() -> Option<Implementation> {
    static CHOSEN: std::sync::OnceLock<Option<Implementation>> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| implementations().into_iter().last().map(|(_, skim)| skim))
}

/// Every skim this processor can run, slowest first, by name.
fn implementations() -> Vec<(&'static str, Implementation)> {
    #[allow(unused_mut)]
    let mut all: Vec<(&'static str, Implementation)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        let scalar = has!("pclmulqdq") && has!("bmi1") && has!("lzcnt") && has!("popcnt");
        if scalar && has!("avx2") {
            // SAFETY: the features `avx2::skim` is compiled for were detected.
            all.push(("avx2", |text, wanted, found| unsafe {
                avx2::skim(text, wanted, found)
            }));
        }
        if scalar && has!("avx512f") && has!("avx512bw") {
            // SAFETY: the features `avx512::skim` is compiled for were detected.
            all.push(("avx512", |text, wanted, found| unsafe {
                avx512::skim(text, wanted, found)
            }));
        }
    }
    all
}

/// The classes of one 64-byte window, bit i for byte i.
#[derive(Clone, Copy)]
struct Window {
    quote: u64,
    backslash: u64,
    colon: u64,
    /// `{` or `[`.
    open: u64,
    /// `}` or `]`.
    close: u64,
    /// Bytes >= 0x80.
    high: u64,
}

const ODD_BITS: u64 = 0xAAAA_AAAA_AAAA_AAAA;

/// State carried from one window to the next.
#[derive(Default)]
struct Carry {
    /// 1 when the previous window ended with an escaping backslash.
    escape: u64,
    /// All ones when the previous window ended inside a string.
    in_string: u64,
    /// All ones when the previous window ended inside a nested container.
    nested: u64,
    /// The previous window's real quotes (for keys that straddle windows).
    quotes: u64,
    /// Carry of the escaped-string sum.
    escaped_sum: u64,
    /// Bit 63: the previous window's last byte closed a string with an escape.
    escaped_close: u64,
}

/// Windows whose top-level colons are collected before their keys are
/// looked at: the mask arithmetic runs in a tight loop, the key lookups
/// (loads, hashing, comparisons) in another.
const WINDOWS_PER_PASS: usize = 16;

/// Skims one line, window by window; `classify(base)` gives the classes of
/// `text[base..base + 64]` (nothing past the end).
///
/// Depth is first told by parity (a prefix XOR of the brackets), which is
/// exact while nothing nests deeper than one container inside the object;
/// a deeper line (`Pass::Deeper`) is walked again with `EXACT`, which
/// counts depth bracket by bracket.
#[inline(always)]
fn walk<'a, const EXACT: bool>(
    text: &'a [u8],
    wanted: &Wanted,
    found: &mut [Option<&'a [u8]>],
    prefix_xor: impl Fn(u64) -> u64,
    classify: impl Fn(usize) -> Window,
) -> Pass {
    found.iter_mut().for_each(|f| *f = None);
    let len = text.len();
    let mut depth = 0usize;
    let mut carry = Carry::default();
    // Any bit set: a shape the skim does not take.
    let mut odd = 0u64;
    let mut high = 0u64;
    // Brackets that close the object, and opening ones at its own depth
    // parity: exactly one of each (at the last byte and at byte 0).
    let (mut closes_object, mut opens_on_odd) = (0u32, 0u32);
    let mut last_closes = 0u64;
    let mut colons = [0u64; WINDOWS_PER_PASS];
    let mut base = 0;
    while base < len {
        let pass_base = base;
        let mut windows = 0;
        while windows < WINDOWS_PER_PASS && base < len {
            let w = classify(base);
            high |= w.high;
            // Bytes escaped by a backslash: the byte after an odd-length run
            // (simdjson's branch-free formulation).
            let potential = w.backslash & !carry.escape;
            let series = ((potential << 1) | ODD_BITS).wrapping_sub(potential) ^ ODD_BITS;
            let escaped = series ^ (w.backslash | carry.escape);
            carry.escape = (series & w.backslash) >> 63;
            let quote = w.quote & !escaped;
            // In a string: from the opening quote up to (not including) the
            // closing one.
            let in_string = prefix_xor(quote) ^ carry.in_string;
            carry.in_string = ((in_string as i64) >> 63) as u64;
            let outside = !in_string;
            let open = w.open & outside;
            let close = w.close & outside;
            // Depth parity: odd inside the object itself, even inside a
            // nested container. Depth 3 is odd again, so an opening bracket
            // that lands on odd parity (other than the object's own) is a
            // shape left to the scanner.
            let top = if EXACT {
                let Some(top) = exact_depth(&mut depth, open, close, &mut last_closes) else {
                    return Pass::Done(Skim::Unsure);
                };
                opens_on_odd += u32::from(base == 0);
                closes_object += last_closes.count_ones();
                top
            } else {
                let parity = prefix_xor(open | close) ^ carry.nested;
                carry.nested = ((parity as i64) >> 63) as u64;
                opens_on_odd += (open & parity).count_ones();
                last_closes = close & !parity;
                closes_object += last_closes.count_ones();
                parity
            };
            let top = w.colon & outside & top;
            // Every top-level colon must follow a key's closing quote.
            odd |= top & !(quote << 1 | carry.quotes >> 63);
            // A key with an escape: adding the backslashes inside strings to
            // the in-string runs carries into the closing quote of each
            // string that has one.
            let (sum, c1) = in_string.overflowing_add(w.backslash & in_string);
            let (sum, c2) = sum.overflowing_add(carry.escaped_sum);
            carry.escaped_sum = u64::from(c1 | c2);
            let escaped_close = sum & quote & outside;
            odd |= top & (escaped_close << 1 | carry.escaped_close >> 63);
            carry.escaped_close = escaped_close;
            carry.quotes = quote;
            colons[windows] = top;
            windows += 1;
            base += 64;
        }
        for (i, &top) in colons[..windows].iter().enumerate() {
            let window = pass_base + i * 64;
            let mut each = top;
            while each != 0 {
                let colon = window + each.trailing_zeros() as usize;
                each &= each - 1;
                let slot = wanted.slot_at(text, colon);
                if slot != NO_KEY && !take(text, colon, slot, wanted, found) {
                    // By parity, a colon of a deeper container can look like a
                    // top-level one.
                    return match EXACT {
                        true => Pass::Done(Skim::Unsure),
                        false => Pass::Deeper,
                    };
                }
            }
        }
    }
    if !EXACT && opens_on_odd > 1 {
        return Pass::Deeper;
    }
    // The object's own `}` is the last byte, and nothing else closes it.
    let last_byte = (len - 1) % 64;
    if odd != 0 || opens_on_odd != 1 || closes_object != 1 || last_closes >> last_byte & 1 == 0 {
        return Pass::Done(Skim::Unsure);
    }
    Pass::Done(Skim::Found { ascii: high == 0 })
}

/// One walk of a line.
enum Pass {
    Done(Skim),
    /// Something nests deeper than parity can tell: walk again, exactly.
    Deeper,
}

/// Both walks of a line, the exact one only when the first needs it.
#[inline(always)]
fn skim_walks<'a>(
    text: &'a [u8],
    wanted: &Wanted,
    found: &mut [Option<&'a [u8]>],
    prefix_xor: impl Fn(u64) -> u64 + Copy,
    classify: impl Fn(usize) -> Window + Copy,
) -> Skim {
    match walk::<false>(text, wanted, found, prefix_xor, classify) {
        Pass::Done(skim) => skim,
        Pass::Deeper => match walk::<true>(text, wanted, found, prefix_xor, classify) {
            Pass::Done(skim) => skim,
            Pass::Deeper => Skim::Unsure,
        },
    }
}

/// Depth counted at each bracket of a window (`open`, `close`: outside
/// strings); returns the mask of the window's bytes at depth 1 and sets
/// `closes` to the brackets that close the object. `None` when the depth
/// goes below zero or past `json_scan::MAX_DEPTH`.
#[inline(always)]
fn exact_depth(depth: &mut usize, open: u64, close: u64, closes: &mut u64) -> Option<u64> {
    let (mut top, mut from) = (0u64, 0u32);
    let mut brackets = open | close;
    *closes = 0;
    while brackets != 0 {
        let at = brackets.trailing_zeros();
        brackets &= brackets - 1;
        if *depth == 1 {
            top |= below(at) & !below(from);
        }
        from = at + 1;
        if open >> at & 1 != 0 {
            *depth += 1;
            if *depth > crate::json_scan::MAX_DEPTH {
                return None;
            }
        } else {
            *depth = depth.checked_sub(1)?;
            if *depth == 0 {
                *closes |= 1 << at;
            }
        }
    }
    if *depth == 1 {
        top |= !below(from);
    }
    Some(top)
}

/// Bits below `n` (n <= 64).
#[inline(always)]
fn below(n: u32) -> u64 {
    1u64.checked_shl(n).unwrap_or(0).wrapping_sub(1)
}

/// Records the value after `text[colon]` for each wanted key that ends
/// right before it (only the key at `slot`, unless it is `ANY_KEY`);
/// `false` when that value is malformed.
#[inline(always)]
fn take<'a>(
    text: &'a [u8],
    colon: usize,
    slot: u8,
    wanted: &Wanted,
    found: &mut [Option<&'a [u8]>],
) -> bool {
    let (keys, found) = match slot {
        ANY_KEY => (&wanted.keys[..], found),
        one => {
            let one = usize::from(one);
            (&wanted.keys[one..=one], &mut found[one..=one])
        }
    };
    let mut value = None;
    for (w, f) in keys.iter().zip(found.iter_mut()) {
        // `colon - 1` is the key's closing quote; no quote can be inside a
        // key without an escape, and keys with escapes were excluded.
        let Some(open) = colon.checked_sub(w.len() + 2) else {
            continue;
        };
        if text[open] != b'"' || text[open + 1..colon - 1] != w[..] {
            continue;
        }
        if value.is_none() {
            let start = skip_ws(text, colon + 1);
            match skip_value(text, start) {
                Ok(end) => value = Some(&text[start..end]),
                Err(_) => return false,
            }
        }
        *f = value;
    }
    true
}

/// Prefix XOR: bit i is the XOR of bits 0..=i (a carry-less multiply by all
/// ones). Callers must have `pclmulqdq`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefix_xor(bits: u64) -> u64 {
    use std::arch::x86_64::*;
    let product = _mm_clmulepi64_si128(_mm_set_epi64x(0, bits as i64), _mm_set1_epi8(-1), 0);
    _mm_cvtsi128_si64(product) as u64
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Bitmask of the bytes of a 64-byte window (`lo`, `hi`) equal to `byte`.
    #[inline(always)]
    unsafe fn eq(lo: __m256i, hi: __m256i, byte: u8) -> u64 {
        let b = _mm256_set1_epi8(byte as i8);
        let l = _mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, b)) as u32 as u64;
        let h = _mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, b)) as u32 as u64;
        l | h << 32
    }

    #[target_feature(enable = "avx2,pclmulqdq,bmi1,lzcnt,popcnt")]
    pub(super) unsafe fn skim<'a>(
        text: &'a [u8],
        wanted: &Wanted,
        found: &mut [Option<&'a [u8]>],
    ) -> Skim {
        let len = text.len();
        let mut pad = [b' '; 64];
        let tail = len & !63;
        pad[..len - tail].copy_from_slice(&text[tail..]);
        let case = _mm256_set1_epi8(0x20);
        let classify = |base: usize| {
            let p = if base + 64 <= len {
                text.as_ptr().add(base)
            } else {
                pad.as_ptr()
            };
            let lo = _mm256_loadu_si256(p.cast());
            let hi = _mm256_loadu_si256(p.add(32).cast());
            // `[` and `{` (and `]`, `}`) differ only in bit 0x20.
            let (lo_c, hi_c) = (_mm256_or_si256(lo, case), _mm256_or_si256(hi, case));
            Window {
                quote: eq(lo, hi, b'"'),
                backslash: eq(lo, hi, b'\\'),
                colon: eq(lo, hi, b':'),
                open: eq(lo_c, hi_c, b'{'),
                close: eq(lo_c, hi_c, b'}'),
                high: (_mm256_movemask_epi8(lo) as u32 as u64)
                    | (_mm256_movemask_epi8(hi) as u32 as u64) << 32,
            }
        };
        skim_walks(text, wanted, found, |b| prefix_xor(b), classify)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,pclmulqdq,bmi1,lzcnt,popcnt")]
    pub(super) unsafe fn skim<'a>(
        text: &'a [u8],
        wanted: &Wanted,
        found: &mut [Option<&'a [u8]>],
    ) -> Skim {
        let len = text.len();
        let quote = _mm512_set1_epi8(b'"' as i8);
        let backslash = _mm512_set1_epi8(b'\\' as i8);
        let colon = _mm512_set1_epi8(b':' as i8);
        let open = _mm512_set1_epi8(b'{' as i8);
        let close = _mm512_set1_epi8(b'}' as i8);
        let case = _mm512_set1_epi8(0x20);
        let classify = |base: usize| {
            // Past the end, a masked load reads nothing and gives zeros.
            let rest = len - base;
            let v = if rest >= 64 {
                _mm512_loadu_si512(text.as_ptr().add(base).cast())
            } else {
                _mm512_maskz_loadu_epi8((1u64 << rest) - 1, text.as_ptr().add(base).cast())
            };
            let c = _mm512_or_si512(v, case);
            Window {
                quote: _mm512_cmpeq_epi8_mask(v, quote),
                backslash: _mm512_cmpeq_epi8_mask(v, backslash),
                colon: _mm512_cmpeq_epi8_mask(v, colon),
                open: _mm512_cmpeq_epi8_mask(c, open),
                close: _mm512_cmpeq_epi8_mask(c, close),
                high: _mm512_movepi8_mask(v),
            }
        };
        skim_walks(text, wanted, found, |b| prefix_xor(b), classify)
    }
}

/// Test support: the skim of every implementation this machine has, held
/// to what `json_scan::scan_object` said of the same text. Returns whether
/// the skim vouched for a text the scanner accepted (so a test can check
/// that it does so often).
#[cfg(test)]
pub(crate) fn check_against_scan(
    text: &[u8],
    keys: &[&[u8]],
    scanned: Result<(), &crate::json_scan::ScanError>,
    scan_found: &[Option<&[u8]>],
) -> bool {
    let mut vouched = false;
    let text = text.trim_ascii();
    let wanted = Wanted::new(keys.iter().map(|k| k.to_vec()).collect());
    for (name, skim) in every_skim() {
        let mut found = vec![None; keys.len()];
        let skimmed = skim(text, &wanted, &mut found);
        let input = String::from_utf8_lossy(text);
        if let (Ok(()), Skim::Found { ascii }) = (scanned, skimmed) {
            assert_eq!(found, scan_found, "{name}: values differ for {input}");
            assert_eq!(ascii, text.is_ascii(), "{name}: ascii flag for {input}");
            vouched = true;
        }
    }
    vouched
}

#[cfg(test)]
type TestSkim = dyn for<'a> Fn(&'a [u8], &Wanted, &mut [Option<&'a [u8]>]) -> Skim;

/// Test support: the dispatch, and every implementation behind the same
/// checks (none where the processor has no SIMD skim: the dispatch then
/// only ever defers to the scanner).
#[cfg(test)]
fn every_skim() -> Vec<(&'static str, Box<TestSkim>)> {
    let mut all: Vec<(&'static str, Box<TestSkim>)> = Vec::new();
    if available() {
        all.push(("dispatch", Box::new(skim_object)));
    }
    for (name, skim) in implementations() {
        all.push((
            name,
            Box::new(move |text, wanted, found| skim_with(skim, text, wanted, found)),
        ));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&[u8]; 4] = [b"log_id", b"@timestamp", b"a", b"drsink"];

    fn skims(text: &str) -> Vec<(&'static str, Skim, Vec<Option<String>>)> {
        let wanted = Wanted::new(KEYS.iter().map(|k| k.to_vec()).collect());
        every_skim()
            .into_iter()
            .map(|(name, skim)| {
                let mut found = vec![None; KEYS.len()];
                let skimmed = skim(text.as_bytes(), &wanted, &mut found);
                let found = found
                    .iter()
                    .map(|f| f.map(|v| String::from_utf8(v.to_vec()).unwrap()))
                    .collect();
                (name, skimmed, found)
            })
            .collect()
    }

    #[test]
    fn finds_top_level_keys_only() {
        let text = r#"{"@timestamp":"2026-11-22T00:00:00Z","m":"a \"log_id\": x","http":{"log_id":1,"a":2},"log_id":"id-1","tags":["a","log_id"],"a":3}"#;
        for (name, skimmed, found) in skims(text) {
            assert_eq!(skimmed, Skim::Found { ascii: true }, "{name}");
            let s = |v: &str| Some(v.to_owned());
            assert_eq!(
                found,
                [s(r#""id-1""#), s(r#""2026-11-22T00:00:00Z""#), s("3"), None],
                "{name}"
            );
        }
    }

    #[test]
    fn keys_sharing_a_tail_are_all_found() {
        // `_id"` ends both; "a" and "xa" share `"a"` after a quote or not.
        let keys: [&[u8]; 4] = [b"log_id", b"trace_id", b"a", b"xa"];
        let text = br#"{"trace_id":"t","xa":1,"log_id":"l","a":2,"id":3}"#;
        let mut found = [None; 4];
        let scanned = crate::json_scan::scan_object(text, &keys, &mut found);
        assert_eq!(found.iter().filter(|f| f.is_some()).count(), 4);
        assert!(check_against_scan(
            text,
            &keys,
            scanned.as_ref().map(|_| ()),
            &found
        ));
    }

    #[test]
    fn nesting_of_any_depth_is_walked_exactly() {
        let text = r#"{"kubernetes":{"labels":{"app":"x","log_id":"no"},"a":[{"a":[1]}]},"log_id":"yes","a":{"b":{"c":{"d":1}}}}"#;
        for (name, skimmed, found) in skims(text) {
            assert_eq!(skimmed, Skim::Found { ascii: true }, "{name}");
            assert_eq!(found[0].as_deref(), Some(r#""yes""#), "{name}");
            assert_eq!(
                found[2].as_deref(),
                Some(r#"{"b":{"c":{"d":1}}}"#),
                "{name}"
            );
        }
    }

    #[test]
    fn leaves_the_grammar_to_the_server() {
        // Structurally one object: the skim takes it, the server judges it.
        for text in [
            r#"{"log_id":"x","n":tru}"#,
            r#"{"log_id":"x" "n":1}"#,
            r#"{"b":[1,],"log_id":"y"}"#,
        ] {
            for (name, skimmed, _) in skims(text) {
                assert!(matches!(skimmed, Skim::Found { .. }), "{name}: {text}");
            }
        }
    }

    #[test]
    fn gives_up_on_what_it_cannot_vouch_for() {
        let cases = [
            ("not an object", r#"["log_id"]"#),
            ("text", "not json"),
            ("unterminated string", r#"{"log_id":"x}"#),
            ("unclosed object", r#"{"log_id":"x","h":{"a":1}"#),
            ("trailing value", r#"{"log_id":"x"}{"log_id":"y"}"#),
            ("trailing bytes", r#"{"log_id":"x"}x"#),
            ("extra close", r#"{"log_id":"x"}}"#),
            ("closed by a bracket", r#"{"log_id":1]"#),
            ("escaped key", r#"{"log\u005fid":"x"}"#),
            (
                "escaped key across windows",
                &format!(r#"{{"m":"{}","lo\u0067_id":"x"}}"#, "y".repeat(60)),
            ),
            ("space before colon", r#"{"log_id" :"x"}"#),
            (
                "deep and unbalanced",
                r#"{"a":{"b":{"c":1}},"log_id":"x"}}"#,
            ),
            ("deep and unclosed", r#"{"a":{"b":[{"c":1}],"log_id":"x"}"#),
            ("bad wanted value", r#"{"log_id":"x\q"}"#),
        ];
        for (what, text) in cases {
            for (name, skimmed, _) in skims(text) {
                assert_eq!(skimmed, Skim::Unsure, "{name}: {what}: {text}");
            }
        }
    }

    #[test]
    fn keys_json_can_only_hold_escaped_are_left_to_the_scanner() {
        let keys: [&[u8]; 2] = [b"log_id", br#"a","b"#];
        let text = br#"{"x":"a","b":1,"log_id":"y"}"#;
        let mut found = [None; 2];
        let scanned = crate::json_scan::scan_object(text, &keys, &mut found);
        assert_eq!(found, [Some(&br#""y""#[..]), None]);
        check_against_scan(text, &keys, scanned.as_ref().map(|_| ()), &found);
        let wanted = Wanted::new(keys.iter().map(|k| k.to_vec()).collect());
        for (name, skim) in every_skim() {
            assert_eq!(skim(text, &wanted, &mut [None; 2]), Skim::Unsure, "{name}");
        }
    }

    #[test]
    fn every_window_offset_of_keys_and_escapes() {
        let keys: [&[u8]; 4] = KEYS;
        for pad in 0..150 {
            for piece in ["", r#"\""#, r"\\", r#"\\\""#, "é", "{}", "[]"] {
                let text = format!(
                    r#"{{"m":"{}{piece}","log_id":"i{pad}","h":{{"x":"{piece}"}},"a":{pad}}}"#,
                    "p".repeat(pad)
                );
                let mut found = [None; 4];
                let scanned = crate::json_scan::scan_object(text.as_bytes(), &keys, &mut found);
                assert!(scanned.is_ok(), "{text}");
                check_against_scan(text.as_bytes(), &keys, scanned.as_ref().map(|_| ()), &found);
                for (name, skimmed, _) in skims(&text) {
                    assert!(matches!(skimmed, Skim::Found { .. }), "{name}: {text}");
                }
            }
        }
    }
}
