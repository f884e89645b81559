//! Fast scanner for single-line JSON objects.
//!
//! `scan_object` validates the structure of a whole JSON object (strings, escapes, literals,
//! numbers, brackets, commas, colons, nesting) without building a DOM, and returns the raw bytes
//! of the values of a few requested top-level keys. It is meant for the per-line hot path of the
//! shipper, so it never allocates (except for the rare escaped-key slow path) and never recurses.
//!
//! Strictness matches `serde_json::from_slice::<serde_json::Value>` on valid UTF-8 input, with
//! these documented differences:
//! * numbers are checked against the JSON grammar but not for range (`1e400` is accepted;
//!   serde_json rejects it as "number out of range");
//! * nesting is capped at [`MAX_DEPTH`] (serde_json's default recursion limit is 128);
//! * UTF-8 is not validated (the caller has already done it).
//!
//! Why byte-wise: on the shipper's records (250–650 bytes) this scan takes about 1.6 cycles per
//! byte, some 3,200 instructions per 450-byte record at about 4 per cycle. simdjson-style
//! designs (64-byte blocks classified into bitmasks, in-string masks by carry-less multiply,
//! then a walk over the structural positions, or the whole grammar checked with mask
//! arithmetic) were measured against it on AVX-512 (Zen 5) and were not faster at this size:
//! getting a mask from a vector compare into a register takes ~17 cycles, a prefix XOR 8–12,
//! and the carries from block to block chain them, which a short record cannot hide; the walk
//! or the mask grammar then costs about as many instructions as this scan. Bitmasks do pay
//! off where the grammar is not checked: `json_skim` finds the same keys that way in half the
//! time, for sinks whose server checks each document itself.

use std::borrow::Cow;
use std::fmt;

/// Where and why a line is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub offset: usize,
    pub reason: &'static str,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for ScanError {}

/// Maximum nesting depth; the top-level object counts as depth 1.
pub const MAX_DEPTH: usize = 512;

// Kept out of line so the error paths do not bloat the hot loops.
#[cold]
#[inline(never)]
fn fail<T>(offset: usize, reason: &'static str) -> Result<T, ScanError> {
    Err(ScanError { offset, reason })
}

/// Scans `text` (one JSON value, surrounding ASCII whitespace allowed) which must be a JSON object.
/// For each i, `found[i]` is set to the raw bytes of the value of top-level key `wanted[i]`
/// (exactly as they appear in the text, e.g. `"abc"` including quotes, `123`, `{"a":1}`), or left None.
/// `found` has the same length as `wanted`; the function resets it to None first.
/// If a key appears twice, the last occurrence wins.
/// Keys in the text may contain JSON escapes (e.g. "log\u005fid"): they still match the unescaped
/// wanted key.
///
/// Whitespace means JSON whitespace (space, tab, LF, CR). On error, `found` may hold values seen
/// before the error and must be ignored.
pub fn scan_object<'a>(
    text: &'a [u8],
    wanted: &[&[u8]],
    found: &mut [Option<&'a [u8]>],
) -> Result<(), ScanError> {
    debug_assert_eq!(wanted.len(), found.len(), "found must be as long as wanted");
    found.iter_mut().for_each(|f| *f = None);
    let t = text;
    // Bit n set: some wanted key is n bytes long (63: 63 or more). One test then skips the
    // keys no wanted key can equal, which are most of them.
    let lengths = wanted.iter().fold(0u64, |m, w| m | 1 << w.len().min(63));

    let mut i = skip_ws(t, 0);
    match t.get(i) {
        Some(b'{') => {}
        Some(_) => return fail(i, "expected '{'"),
        None => return fail(i, "empty input"),
    }
    i = skip_ws(t, i + 1);
    if t.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            expect_key(t, i)?;
            let key_start = i;
            let (key_end, key_escaped) = skip_string(t, i)?;
            i = skip_ws(t, key_end);
            if t.get(i) != Some(&b':') {
                return fail(i, "expected ':'");
            }
            i = skip_ws(t, i + 1);
            let value_start = i;
            i = skip_value(t, i)?;
            // skip_value only advances over bytes it has seen, so value_start < i <= len.
            let value = &t[value_start..i];
            let key = &t[key_start..key_end];
            if key_escaped {
                match_escaped_key(key, value, wanted, found);
            } else {
                // Quotes are excluded: key_end - key_start >= 2 for a terminated string.
                let key = &key[1..key.len() - 1];
                if lengths >> key.len().min(63) & 1 != 0 {
                    for (w, f) in wanted.iter().zip(found.iter_mut()) {
                        if *w == key {
                            *f = Some(value);
                        }
                    }
                }
            }
            i = skip_ws(t, i);
            match t.get(i) {
                Some(b',') => i = skip_ws(t, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                Some(_) => return fail(i, "expected ',' or '}'"),
                None => return fail(i, "unexpected end of input"),
            }
        }
    }
    i = skip_ws(t, i);
    if i != t.len() {
        return fail(i, "trailing characters");
    }
    Ok(())
}

/// Decodes a raw JSON string value (with quotes) as returned in `found`, handling escapes;
/// returns None if `raw` is not exactly one valid JSON string.
pub fn decode_string(raw: &[u8]) -> Option<Cow<'_, str>> {
    if raw.first() != Some(&b'"') {
        return None;
    }
    let (end, escaped) = skip_string(raw, 0).ok()?;
    if end != raw.len() {
        return None;
    }
    // Validated above: raw = '"' inner '"'. Escapes are ASCII, so UTF-8 validity of the raw
    // inner bytes is what decides validity of the result.
    let inner = std::str::from_utf8(raw.get(1..end - 1)?).ok()?;
    if !escaped {
        return Some(Cow::Borrowed(inner));
    }
    let b = inner.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'\\', &b[i..]) {
        let bs = i + off;
        // `bs` points at an ASCII byte, so it is a char boundary.
        out.push_str(inner.get(i..bs)?);
        let (c, next) = match b.get(bs + 1)? {
            b'"' => ('"', bs + 2),
            b'\\' => ('\\', bs + 2),
            b'/' => ('/', bs + 2),
            b'b' => ('\u{8}', bs + 2),
            b'f' => ('\u{c}', bs + 2),
            b'n' => ('\n', bs + 2),
            b'r' => ('\r', bs + 2),
            b't' => ('\t', bs + 2),
            b'u' => unicode_escape(b, bs).ok()?,
            _ => return None,
        };
        out.push(c);
        i = next;
    }
    out.push_str(inner.get(i..)?);
    Some(Cow::Owned(out))
}

// Rare: keys with escapes are decoded and compared on the unescaped form.
#[cold]
#[inline(never)]
fn match_escaped_key<'a>(
    raw_key: &[u8],
    value: &'a [u8],
    wanted: &[&[u8]],
    found: &mut [Option<&'a [u8]>],
) {
    if let Some(key) = decode_string(raw_key) {
        for (w, f) in wanted.iter().zip(found.iter_mut()) {
            if *w == key.as_bytes() {
                *f = Some(value);
            }
        }
    }
}

#[inline(always)]
pub(crate) fn skip_ws(t: &[u8], mut i: usize) -> usize {
    while let Some(&b) = t.get(i) {
        if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// Checks that a member key starts at `t[i]`.
#[inline(always)]
fn expect_key(t: &[u8], i: usize) -> Result<(), ScanError> {
    match t.get(i) {
        Some(b'"') => Ok(()),
        // Empty objects are handled by the callers, so a '}' here always follows a ','.
        Some(b'}') => fail(i, "trailing comma"),
        Some(_) => fail(i, "expected string key"),
        None => fail(i, "unexpected end of input"),
    }
}

/// Skips the value starting at `t[i]` (whitespace already skipped); returns the index after it.
#[inline(always)]
pub(crate) fn skip_value(t: &[u8], i: usize) -> Result<usize, ScanError> {
    match t.get(i) {
        Some(b'"') => skip_string(t, i).map(|(end, _)| end),
        Some(b'-' | b'0'..=b'9') => skip_number(t, i),
        Some(b'{' | b'[') => skip_container(t, i),
        Some(b't') => skip_literal(t, i, b"true"),
        Some(b'f') => skip_literal(t, i, b"false"),
        Some(b'n') => skip_literal(t, i, b"null"),
        Some(_) => fail(i, "expected value"),
        None => fail(i, "unexpected end of input"),
    }
}

#[inline(always)]
fn skip_literal(t: &[u8], i: usize, lit: &[u8]) -> Result<usize, ScanError> {
    if t.get(i..i + lit.len()) == Some(lit) {
        Ok(i + lit.len())
    } else {
        fail(i, "invalid literal")
    }
}

/// Full JSON number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
/// What follows the number is checked by the caller (so `01` fails there).
#[inline(always)]
fn skip_number(t: &[u8], mut i: usize) -> Result<usize, ScanError> {
    if t.get(i) == Some(&b'-') {
        i += 1;
    }
    match t.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = skip_digits(t, i + 1),
        _ => return fail(i, "invalid number"),
    }
    if t.get(i) == Some(&b'.') {
        i += 1;
        if !matches!(t.get(i), Some(b'0'..=b'9')) {
            return fail(i, "invalid number");
        }
        i = skip_digits(t, i + 1);
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !matches!(t.get(i), Some(b'0'..=b'9')) {
            return fail(i, "invalid number");
        }
        i = skip_digits(t, i + 1);
    }
    Ok(i)
}

#[inline(always)]
fn skip_digits(t: &[u8], mut i: usize) -> usize {
    while matches!(t.get(i), Some(b'0'..=b'9')) {
        i += 1;
    }
    i
}

/// Skips a string starting at the quote `t[start]`. Returns the index after the closing quote
/// and whether the string contained escapes.
#[inline(always)]
fn skip_string(t: &[u8], start: usize) -> Result<(usize, bool), ScanError> {
    let mut i = start + 1;
    let mut escaped = false;
    loop {
        i = find_special(t, i);
        match t.get(i) {
            Some(b'"') => return Ok((i + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                i = match t.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i + 2,
                    Some(b'u') => unicode_escape(t, i)?.1,
                    Some(_) => return fail(i, "invalid escape"),
                    None => return fail(start, "unterminated string"),
                };
            }
            Some(_) => return fail(i, "control character in string"),
            None => return fail(start, "unterminated string"),
        }
    }
}

fn hex4(t: &[u8], i: usize) -> Option<u32> {
    let mut v = 0u32;
    for &c in t.get(i..i + 4)? {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u32::from(d);
    }
    Some(v)
}

/// Decodes the `\uXXXX` escape at `t[i]` (a backslash), including the second half of a
/// surrogate pair. Returns the char and the index after the escape. Like serde_json's string
/// parsing, unpaired surrogates are rejected (they cannot be represented as UTF-8).
#[inline(never)]
fn unicode_escape(t: &[u8], i: usize) -> Result<(char, usize), ScanError> {
    let Some(hi) = hex4(t, i + 2) else {
        return fail(i, "invalid \\u escape");
    };
    let (cp, end) = match hi {
        0xD800..=0xDBFF => {
            let lo = if t.get(i + 6..i + 8) == Some(b"\\u") {
                hex4(t, i + 8)
            } else {
                None
            };
            match lo {
                Some(lo @ 0xDC00..=0xDFFF) => {
                    (0x1_0000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), i + 12)
                }
                _ => return fail(i, "unpaired surrogate in \\u escape"),
            }
        }
        0xDC00..=0xDFFF => return fail(i, "unpaired surrogate in \\u escape"),
        _ => (hi, i + 6),
    };
    match char::from_u32(cp) {
        Some(c) => Ok((c, end)),
        None => fail(i, "invalid \\u escape"),
    }
}

/// Skips the object or array starting at `t[start]` (a `{` or `[` nested inside the top-level
/// object). Iterative, with a bit stack of container kinds, so hostile nesting cannot overflow
/// the call stack.
#[inline(never)]
fn skip_container(t: &[u8], start: usize) -> Result<usize, ScanError> {
    // Levels opened inside this call; the enclosing top-level object is one more level.
    const MAX_INNER: usize = MAX_DEPTH - 1;
    // Bit d set = level d is an array.
    let mut kinds = [0u64; MAX_INNER.div_ceil(64)];
    let mut depth = 0usize;
    let mut in_array = false;
    let mut i = start;
    loop {
        // Here a value starts at t[i] (whitespace already skipped).
        match t.get(i) {
            Some(&c @ (b'{' | b'[')) => {
                if depth == MAX_INNER {
                    return fail(i, "nesting too deep");
                }
                in_array = c == b'[';
                let (word, bit) = (depth / 64, 1u64 << (depth % 64));
                if in_array {
                    kinds[word] |= bit;
                } else {
                    kinds[word] &= !bit;
                }
                depth += 1;
                i = skip_ws(t, i + 1);
                let close = if in_array { b']' } else { b'}' };
                if t.get(i) == Some(&close) {
                    // Empty container: falls through to the closing logic below.
                    i += 1;
                    depth -= 1;
                    in_array =
                        depth > 0 && kinds[(depth - 1) / 64] & (1 << ((depth - 1) % 64)) != 0;
                } else {
                    if !in_array {
                        i = skip_key_colon(t, i)?;
                    }
                    continue;
                }
            }
            // Scalars; `in_array` still describes the innermost open container.
            _ => i = skip_value(t, i)?,
        }
        // After a value: close containers until a ',' asks for the next value.
        loop {
            if depth == 0 {
                return Ok(i);
            }
            i = skip_ws(t, i);
            match (t.get(i), in_array) {
                (Some(b','), _) => {
                    i = skip_ws(t, i + 1);
                    if in_array {
                        if t.get(i) == Some(&b']') {
                            return fail(i, "trailing comma");
                        }
                    } else {
                        i = skip_key_colon(t, i)?;
                    }
                    break;
                }
                (Some(b']'), true) | (Some(b'}'), false) => {
                    i += 1;
                    depth -= 1;
                    in_array =
                        depth > 0 && kinds[(depth - 1) / 64] & (1 << ((depth - 1) % 64)) != 0;
                }
                (Some(_), true) => return fail(i, "expected ',' or ']'"),
                (Some(_), false) => return fail(i, "expected ',' or '}'"),
                (None, _) => return fail(i, "unexpected end of input"),
            }
        }
    }
}

/// Skips `"key" :` and following whitespace inside a nested object; returns the value start.
#[inline(always)]
fn skip_key_colon(t: &[u8], i: usize) -> Result<usize, ScanError> {
    expect_key(t, i)?;
    let (end, _) = skip_string(t, i)?;
    let i = skip_ws(t, end);
    if t.get(i) != Some(&b':') {
        return fail(i, "expected ':'");
    }
    Ok(skip_ws(t, i + 1))
}

/// Index of the first byte at or after `i` that is `"`, `\` or a control character (< 0x20),
/// or `t.len()` if there is none. One pass finds both string ends and the bytes JSON forbids.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn find_special(t: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::*;
    let len = t.len();
    if i >= len {
        return len;
    }
    // SAFETY: SSE2 is part of the x86_64 baseline. Every 16-byte load reads `t[k..k + 16]`
    // with `k + 16 <= len`, or the local `buf`.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let bslash = _mm_set1_epi8(b'\\' as i8);
        let ctl_max = _mm_set1_epi8(0x1f);
        let special = |v: __m128i| -> u32 {
            // Unsigned `min(v, 0x1f) == v` <=> v <= 0x1f (SSE2 has no unsigned compare).
            let ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, ctl_max), v);
            let qb = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash));
            _mm_movemask_epi8(_mm_or_si128(qb, ctl)) as u32
        };
        while i + 16 <= len {
            let m = special(_mm_loadu_si128(t.as_ptr().add(i).cast()));
            if m != 0 {
                return i + m.trailing_zeros() as usize;
            }
            i += 16;
        }
        if i < len {
            // Tail: re-read the last 16 bytes (overlapping) and drop the already-scanned ones,
            // or, for inputs shorter than 16 bytes, pad with quotes (a hit there means "none").
            let m = if len >= 16 {
                let base = len - 16;
                special(_mm_loadu_si128(t.as_ptr().add(base).cast())) >> (i - base)
            } else {
                let mut buf = [b'"'; 16];
                buf[..len - i].copy_from_slice(&t[i..]);
                special(_mm_loadu_si128(buf.as_ptr().cast()))
            };
            return (i + m.trailing_zeros() as usize).min(len);
        }
    }
    len
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn find_special(t: &[u8], i: usize) -> usize {
    find_special_swar(t, i)
}

/// Portable version of `find_special`: 8 bytes at a time with SWAR bit tricks.
#[cfg(any(not(target_arch = "x86_64"), test))]
#[inline(always)]
fn find_special_swar(t: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = t.get(i..i + 8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let w = u64::from_le_bytes(bytes);
        let q = w ^ (LO * u64::from(b'"'));
        let s = w ^ (LO * u64::from(b'\\'));
        // (x - 0x01..) & !x flags zero bytes, (w - 0x20..) & !w flags bytes < 0x20. Both are
        // exact for the lowest flagged byte (borrows only corrupt higher bytes), which is all we
        // need from trailing_zeros on a little-endian load.
        let m = ((q.wrapping_sub(LO) & !q)
            | (s.wrapping_sub(LO) & !s)
            | (w.wrapping_sub(LO * 0x20) & !w))
            & HI;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = t.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            return i;
        }
        i += 1;
    }
    t.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_skim::check_against_scan;
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng};

    const WANTED: [&[u8]; 3] = [b"log_id", b"@timestamp", b"a"];

    fn scan(input: &[u8]) -> Result<Vec<Option<String>>, ScanError> {
        let mut found = [None; 3];
        scan_object(input, &WANTED, &mut found)?;
        Ok(found
            .iter()
            .map(|f| f.map(|v| String::from_utf8(v.to_vec()).unwrap()))
            .collect())
    }

    #[test]
    fn accepted_table() {
        let n = None;
        let s = |v: &str| Some(v.to_string());
        let cases: &[(&str, [Option<String>; 3])] = &[
            ("{}", [n.clone(), n.clone(), n.clone()]),
            (" \t\r\n{ \n } \r\n", [n.clone(), n.clone(), n.clone()]),
            (
                r#"{"log_id":"abc","@timestamp":"2024-01-01T00:00:00Z"}"#,
                [s(r#""abc""#), s(r#""2024-01-01T00:00:00Z""#), n.clone()],
            ),
            (r#"{"a":1,"a":2}"#, [n.clone(), n.clone(), s("2")]),
            (
                r#"{ "a" : {"b":[1,2,{"c":null}]} , "log_id" : 12 }"#,
                [s("12"), n.clone(), s(r#"{"b":[1,2,{"c":null}]}"#)],
            ),
            (
                r#"{"log\u005fid":"x"}"#,
                [s(r#""x""#), n.clone(), n.clone()],
            ),
            (
                r#"{"\u0040timestamp":1,"\u0061":2}"#,
                [n.clone(), s("1"), s("2")],
            ),
            (
                r#"{"b":{"log_id":1},"c":["log_id"]}"#,
                [n.clone(), n.clone(), n.clone()],
            ),
            (r#"{"a":true}"#, [n.clone(), n.clone(), s("true")]),
            (r#"{"a":false}"#, [n.clone(), n.clone(), s("false")]),
            (r#"{"a":null}"#, [n.clone(), n.clone(), s("null")]),
            (r#"{"a":-0.5e+10}"#, [n.clone(), n.clone(), s("-0.5e+10")]),
            (r#"{"a":0}"#, [n.clone(), n.clone(), s("0")]),
            (r#"{"a":-0}"#, [n.clone(), n.clone(), s("-0")]),
            (r#"{"a":1E-7}"#, [n.clone(), n.clone(), s("1E-7")]),
            (r#"{"a":123.456}"#, [n.clone(), n.clone(), s("123.456")]),
            (r#"{"a":[]}"#, [n.clone(), n.clone(), s("[]")]),
            (r#"{"a":[ ]}"#, [n.clone(), n.clone(), s("[ ]")]),
            (r#"{"a":{ }}"#, [n.clone(), n.clone(), s("{ }")]),
            (r#"{"a":""}"#, [n.clone(), n.clone(), s(r#""""#)]),
            (
                r#"{"a":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}"#,
                [
                    n.clone(),
                    n.clone(),
                    s(r#""\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#),
                ],
            ),
            (
                r#"{"a":"中文 é 😀"}"#,
                [n.clone(), n.clone(), s(r#""中文 é 😀""#)],
            ),
            (
                r#"{"log_id":1,"a":[{},[],[[]],{"x":{}},[1,"]",{"}":"["}]]}"#,
                [
                    s("1"),
                    n.clone(),
                    s(r#"[{},[],[[]],{"x":{}},[1,"]",{"}":"["}]]"#),
                ],
            ),
            // Long strings exercise the vector loop and its tail handling.
            (
                &format!(
                    r#"{{"a":"{}","log_id":"{}"}}"#,
                    "x".repeat(100),
                    "y".repeat(17)
                ),
                [
                    Some(format!(r#""{}""#, "y".repeat(17))),
                    n.clone(),
                    Some(format!(r#""{}""#, "x".repeat(100))),
                ],
            ),
        ];
        for (input, expected) in cases {
            let got = scan(input.as_bytes()).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&got[..], &expected[..], "input: {input}");
        }
    }

    #[test]
    fn rejected_table() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"", 0, "empty input"),
            (b"  \n ", 4, "empty input"),
            (b"hello", 0, "expected '{'"),
            (b"[1]", 0, "expected '{'"),
            (b"\"a\"", 0, "expected '{'"),
            (b"42", 0, "expected '{'"),
            (b"null", 0, "expected '{'"),
            (b" }", 1, "expected '{'"),
            (b"{", 1, "unexpected end of input"),
            (b"{\"a\":1", 6, "unexpected end of input"),
            (b"{\"a\":", 5, "unexpected end of input"),
            (b"{\"a\":[1,", 8, "unexpected end of input"),
            (b"{\"a\":{\"b\"", 9, "expected ':'"),
            (b"{\"a\":\"abc", 5, "unterminated string"),
            (b"{\"a\":\"abc\\", 5, "unterminated string"),
            (b"{\"ab", 1, "unterminated string"),
            (b"{\"a\":1}}", 7, "trailing characters"),
            (b"{\"a\":1}{\"b\":2}", 7, "trailing characters"),
            (b"{\"a\":1} x", 8, "trailing characters"),
            (b"{\"a\":1}\x0c", 7, "trailing characters"),
            (b"{\"a\" 1}", 5, "expected ':'"),
            (b"{1:2}", 1, "expected string key"),
            (b"{a:1}", 1, "expected string key"),
            (b"{,}", 1, "expected string key"),
            (b"{\"a\":1,}", 7, "trailing comma"),
            (b"{\"a\":1, }", 8, "trailing comma"),
            (b"{\"a\":[1,]}", 8, "trailing comma"),
            (b"{\"a\":{\"b\":1,}}", 12, "trailing comma"),
            (b"{\"a\":[1}", 7, "expected ',' or ']'"),
            (b"{\"a\":{\"b\":1]}", 11, "expected ',' or '}'"),
            (b"{\"a\":1 \"b\":2}", 7, "expected ',' or '}'"),
            (b"{\"a\":[1 2]}", 8, "expected ',' or ']'"),
            (b"{\"a\":[}", 6, "expected value"),
            (b"{\"a\":}", 5, "expected value"),
            (b"{\"a\":{1:2}}", 6, "expected string key"),
            (b"{\"a\":{\"b\" 2}}", 10, "expected ':'"),
            (b"{\"a\":\"x\x01y\"}", 7, "control character in string"),
            (b"{\"a\":\"x\ty\"}", 7, "control character in string"),
            (b"{\"a\nb\":1}", 3, "control character in string"),
            (b"{\"a\":tru}", 5, "invalid literal"),
            (b"{\"a\":nul}", 5, "invalid literal"),
            (b"{\"a\":True}", 5, "expected value"),
            (b"{\"a\":[true,fals]}", 11, "invalid literal"),
            (b"{\"a\":[[[nulll]]]}", 12, "expected ',' or ']'"),
            (b"{\"a\":hello}", 5, "expected value"),
            (b"{\"a\":01}", 6, "expected ',' or '}'"),
            (b"{\"a\":-}", 6, "invalid number"),
            (b"{\"a\":-a}", 6, "invalid number"),
            (b"{\"a\":1.}", 7, "invalid number"),
            (b"{\"a\":1.e5}", 7, "invalid number"),
            (b"{\"a\":1e}", 7, "invalid number"),
            (b"{\"a\":1e+}", 8, "invalid number"),
            (b"{\"a\":.5}", 5, "expected value"),
            (b"{\"a\":+1}", 5, "expected value"),
            (b"{\"a\":1x}", 6, "expected ',' or '}'"),
            (b"{\"a\":[1-2]}", 7, "expected ',' or ']'"),
            (b"{\"a\":\"\\x\"}", 6, "invalid escape"),
            (b"{\"a\":\"\\u12G4\"}", 6, "invalid \\u escape"),
            (b"{\"a\":\"\\u12\"}", 6, "invalid \\u escape"),
            (
                b"{\"a\":\"\\ud800\"}",
                6,
                "unpaired surrogate in \\u escape",
            ),
            (
                b"{\"a\":\"\\ud800\\u0041\"}",
                6,
                "unpaired surrogate in \\u escape",
            ),
            (
                b"{\"a\":\"\\udc00\"}",
                6,
                "unpaired surrogate in \\u escape",
            ),
            (
                b"{\"a\":\"\\ud800\\n\"}",
                6,
                "unpaired surrogate in \\u escape",
            ),
        ];
        for &(input, offset, reason) in cases {
            let err = scan(input).expect_err(&String::from_utf8_lossy(input));
            assert_eq!(
                err,
                ScanError { offset, reason },
                "input: {}",
                String::from_utf8_lossy(input)
            );
            assert!(
                serde_json::from_slice::<serde_json::Value>(input).map_or(true, |v| !v.is_object()),
                "serde_json disagrees on {}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn error_display() {
        let e = scan(b"{\"a\":\"abc").unwrap_err();
        assert_eq!(e.to_string(), "unterminated string at byte 5");
    }

    #[test]
    fn found_is_reset() {
        let mut found = [Some(&b"stale"[..]); 3];
        scan_object(b"{\"a\":1}", &WANTED, &mut found).unwrap();
        assert_eq!(found, [None, None, Some(&b"1"[..])]);
        let mut found: [Option<&[u8]>; 0] = [];
        scan_object(b"{\"a\":1}", &[], &mut found).unwrap();
    }

    #[test]
    fn nesting_limit() {
        // The top-level object is depth 1, so 511 nested levels are allowed.
        let ok = format!("{{\"a\":{}{}}}", "[".repeat(511), "]".repeat(511));
        assert!(scan(ok.as_bytes()).is_ok());
        let ok = format!("{{\"a\":{}1{}}}", "{\"b\":".repeat(511), "}".repeat(511));
        assert!(scan(ok.as_bytes()).is_ok());
        let bad = format!("{{\"a\":{}{}}}", "[".repeat(512), "]".repeat(512));
        assert_eq!(
            scan(bad.as_bytes()),
            Err(ScanError {
                offset: 5 + 511,
                reason: "nesting too deep"
            })
        );
        // Hostile depth must fail fast, not overflow the stack.
        let huge = format!("{{\"a\":{}", "[{\"x\":".repeat(1_000_000));
        assert_eq!(
            scan(huge.as_bytes()).unwrap_err().reason,
            "nesting too deep"
        );
        // Mixed kinds across the 64-bit words of the kind stack must pop correctly.
        let mut mixed = String::from("{\"a\":");
        let kinds: Vec<bool> = (0..300).map(|i| (i * 7 + i / 5) % 3 == 0).collect();
        for &arr in &kinds {
            mixed.push_str(if arr { "[" } else { "{\"k\":" });
        }
        mixed.push('1');
        for &arr in kinds.iter().rev() {
            mixed.push_str(if arr { ",2]" } else { ",\"z\":3}" });
        }
        mixed.push('}');
        assert!(scan(mixed.as_bytes()).is_ok(), "{mixed}");
        let wrong = mixed.replacen(",2]", ",2}", 1);
        assert!(scan(wrong.as_bytes()).is_err());
    }

    #[test]
    fn find_special_matches_naive() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let alphabet = b"ab \"\\\x00\x1f\x20\x7f\x80\xff\xe4";
        for _ in 0..3000 {
            let len = rng.below(70);
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(10) == 0 {
                        alphabet[rng.below(alphabet.len())]
                    } else {
                        b'a' + rng.below(26) as u8
                    }
                })
                .collect();
            for start in 0..=len {
                let naive = (start..len)
                    .find(|&k| matches!(buf[k], b'"' | b'\\' | 0..=0x1f))
                    .unwrap_or(len);
                assert_eq!(find_special(&buf, start), naive, "{buf:?} from {start}");
                assert_eq!(
                    find_special_swar(&buf, start),
                    naive,
                    "{buf:?} from {start}"
                );
            }
        }
    }

    #[test]
    fn decode_string_cases() {
        let ok: &[(&str, &str)] = &[
            (r#""""#, ""),
            (r#""abc""#, "abc"),
            (r#""中文 😀""#, "中文 😀"),
            (
                r#""a\"b\\c\/d\be\ff\ng\rh\ti""#,
                "a\"b\\c/d\u{8}e\u{c}f\ng\rh\ti",
            ),
            (r#""\u0041\u00e9\u4e2d""#, "Aé中"),
            (r#""\ud83d\ude00""#, "😀"),
            (r#""x\uD834\uDD1Ey""#, "x\u{1D11E}y"),
            (r#""\udbff\udfff""#, "\u{10FFFF}"),
            (r#""\u0000""#, "\0"),
            (r#""é\n""#, "é\n"),
        ];
        for &(raw, want) in ok {
            let got = decode_string(raw.as_bytes()).unwrap_or_else(|| panic!("{raw}"));
            assert_eq!(got, want, "{raw}");
            assert_eq!(
                matches!(got, Cow::Borrowed(_)),
                !raw.contains('\\'),
                "{raw}"
            );
        }
        let bad: &[&[u8]] = &[
            b"",
            b"\"",
            b"abc",
            b"123",
            b"\"abc",
            b"\"abc\" ",
            b" \"abc\"",
            b"\"a\"b\"",
            b"\"\\\"",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"\\ud83d\"",
            b"\"\\ud83d\\u0041\"",
            b"\"\\ude00\"",
            b"\"\\ud83dx\"",
            b"\"a\nb\"",
            b"\"\xff\"",
        ];
        for raw in bad {
            assert_eq!(decode_string(raw), None, "{}", String::from_utf8_lossy(raw));
        }
    }

    // ---- differential testing against serde_json ----

    /// xorshift64*: tiny, deterministic, good enough for test input generation.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    const KEYS: &[&str] = &[
        r#""log_id""#,
        r#""@timestamp""#,
        r#""a""#,
        r#""b""#,
        r#""""#,
        r#""é""#,
        r#""a/""#,
        r#""log_id2""#,
        r#""log\u005fid""#,
        r#""\u0040timestamp""#,
        r#""\u00e9""#,
        r#""a\/""#,
        r#""\u006c\u006fg_id""#,
    ];
    const DIFF_WANTED: [&[u8]; 6] = [b"log_id", b"@timestamp", b"a", "é".as_bytes(), b"", b"a/"];

    fn gen_ws(rng: &mut Rng, out: &mut Vec<u8>) {
        if rng.below(5) == 0 {
            for _ in 0..=rng.below(3) {
                out.push(rng.pick(b" \t\n\r"));
            }
        }
    }

    fn gen_string(rng: &mut Rng, out: &mut Vec<u8>) {
        out.push(b'"');
        // Mostly short, sometimes long enough for several vector iterations.
        let n = if rng.below(8) == 0 {
            rng.below(60)
        } else {
            rng.below(10)
        };
        for _ in 0..n {
            match rng.below(100) {
                0..=59 => out.push(rng.pick(b"abcxyzABC019 _-.:/@#{}[],'")),
                60..=74 => out.extend_from_slice(
                    rng.pick(&[r#"\""#, r"\\", r"\/", r"\b", r"\f", r"\n", r"\r", r"\t"])
                        .as_bytes(),
                ),
                75..=82 => out.extend_from_slice(
                    rng.pick(&[
                        r"\u0041", r"\u00e9", r"\u4E2D", r"\u001f", r"\u0000", r"\uffff",
                        r"\u005f", r"\u0022",
                    ])
                    .as_bytes(),
                ),
                83..=87 => out.extend_from_slice(
                    rng.pick(&[r"\ud83d\ude00", r"\uD834\uDD1E", r"\udbff\udfff"])
                        .as_bytes(),
                ),
                _ => out.extend_from_slice(rng.pick(&["é", "中", "😀", "ü", "\u{7f}"]).as_bytes()),
            }
        }
        out.push(b'"');
    }

    fn gen_digits(rng: &mut Rng, out: &mut Vec<u8>, max: usize) {
        for _ in 0..=rng.below(max) {
            out.push(b'0' + rng.below(10) as u8);
        }
    }

    fn gen_number(rng: &mut Rng, out: &mut Vec<u8>) {
        if rng.below(3) == 0 {
            out.push(b'-');
        }
        if rng.below(5) == 0 {
            out.push(b'0');
        } else {
            out.push(b'1' + rng.below(9) as u8);
            if rng.below(2) == 0 {
                gen_digits(rng, out, 6);
            }
        }
        if rng.below(3) == 0 {
            out.push(b'.');
            gen_digits(rng, out, 4);
        }
        if rng.below(5) == 0 {
            out.push(rng.pick(b"eE"));
            if rng.below(2) == 0 {
                out.push(rng.pick(b"+-"));
            }
            gen_digits(rng, out, 1);
        }
    }

    fn gen_value(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
        let kinds = if depth >= 5 { 3 } else { 5 };
        match rng.below(kinds) {
            0 => gen_string(rng, out),
            1 => gen_number(rng, out),
            2 => out.extend_from_slice(rng.pick(&[&b"true"[..], b"false", b"null"])),
            3 => gen_object(rng, out, depth + 1),
            _ => {
                out.push(b'[');
                gen_ws(rng, out);
                for k in 0..rng.below(5) {
                    if k > 0 {
                        out.push(b',');
                    }
                    gen_ws(rng, out);
                    gen_value(rng, out, depth + 1);
                    gen_ws(rng, out);
                }
                out.push(b']');
            }
        }
    }

    fn gen_object(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
        out.push(b'{');
        gen_ws(rng, out);
        for k in 0..rng.below(7) {
            if k > 0 {
                out.push(b',');
            }
            gen_ws(rng, out);
            if rng.below(6) == 0 {
                gen_string(rng, out);
            } else {
                out.extend_from_slice(rng.pick(KEYS).as_bytes());
            }
            gen_ws(rng, out);
            out.push(b':');
            gen_ws(rng, out);
            gen_value(rng, out, depth);
            gen_ws(rng, out);
        }
        out.push(b'}');
    }

    fn mutate(rng: &mut Rng, buf: &mut Vec<u8>) {
        const INTERESTING: &[u8] = b"{}[]\",:\\ 0123456789-+.eEtfnulrs\x00\x01\x1f\t\nxA";
        let pos = rng.below(buf.len() + 1);
        match rng.below(7) {
            0 => buf.truncate(pos),
            1 if pos < buf.len() => buf[pos] = rng.pick(INTERESTING),
            2 if pos < buf.len() => {
                buf.remove(pos);
            }
            3 => buf.insert(pos, rng.pick(INTERESTING)),
            4 if pos < buf.len() => {
                let end = pos + rng.below(buf.len() - pos + 1);
                let piece = buf[pos..end].to_vec();
                let at = rng.below(buf.len() + 1);
                buf.splice(at..at, piece);
            }
            5 => buf.extend_from_slice(rng.pick(&[&b"{\"b\":2}"[..], b"x", b",", b"}", b"]"])),
            _ => {
                if pos + 1 < buf.len() {
                    buf.swap(pos, pos + 1);
                }
            }
        }
    }

    #[test]
    fn differential_vs_serde_json() {
        const CASES: usize = 250_000;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut objects, mut rejected, mut skipped_utf8, mut skipped_range) = (0, 0, 0, 0);
        let mut skimmed = 0;
        let mut buf = Vec::new();
        for case in 0..CASES {
            buf.clear();
            gen_ws(&mut rng, &mut buf);
            if rng.below(10) == 0 {
                gen_value(&mut rng, &mut buf, 0);
            } else {
                gen_object(&mut rng, &mut buf, 0);
            }
            gen_ws(&mut rng, &mut buf);
            let mutations = [0, 0, 1, 1, 2][rng.below(5)];
            for _ in 0..mutations {
                mutate(&mut rng, &mut buf);
            }
            // The contract says input is valid UTF-8; serde_json would reject the rest anyway.
            if std::str::from_utf8(&buf).is_err() {
                skipped_utf8 += 1;
                continue;
            }
            let input = String::from_utf8_lossy(&buf);
            let mut found = [None; DIFF_WANTED.len()];
            let scanned = scan_object(&buf, &DIFF_WANTED, &mut found);
            skimmed += usize::from(check_against_scan(
                &buf,
                &DIFF_WANTED,
                scanned.as_ref().map(|_| ()),
                &found,
            ));
            match (serde_json::from_slice::<serde_json::Value>(&buf), scanned) {
                (Ok(serde_json::Value::Object(map)), Ok(())) => {
                    objects += 1;
                    for (w, f) in DIFF_WANTED.iter().zip(found) {
                        let key = std::str::from_utf8(w).unwrap();
                        let want = map.get(key);
                        let got = f.map(|raw| {
                            assert!(
                                !raw.is_empty()
                                    && !raw[0].is_ascii_whitespace()
                                    && !raw[raw.len() - 1].is_ascii_whitespace(),
                                "case {case}: raw value not trimmed in {input}"
                            );
                            serde_json::from_slice::<serde_json::Value>(raw)
                                .unwrap_or_else(|e| panic!("case {case}: {e} in {input}"))
                        });
                        assert_eq!(got.as_ref(), want, "case {case}: key {key} in {input}");
                        if let (Some(raw), Some(serde_json::Value::String(s))) = (f, want) {
                            assert_eq!(decode_string(raw).as_deref(), Some(s.as_str()));
                        }
                    }
                }
                (Ok(serde_json::Value::Object(_)), Err(e)) => {
                    panic!("case {case}: scan rejected a valid object ({e}): {input}")
                }
                (Ok(_), Ok(())) => panic!("case {case}: scan accepted a non-object: {input}"),
                (Err(se), Ok(())) => {
                    // Documented: numbers are grammar-checked only, not range-checked.
                    assert!(
                        se.to_string().contains("number out of range"),
                        "case {case}: serde_json rejected ({se}) what scan accepted: {input}"
                    );
                    skipped_range += 1;
                }
                (_, Err(e)) => {
                    rejected += 1;
                    assert!(e.offset <= buf.len(), "case {case}: offset out of range");
                }
            }
        }
        eprintln!(
            "differential: {CASES} cases, {objects} accepted objects, {rejected} rejected, \
             {skipped_utf8} skipped (invalid UTF-8), {skipped_range} out-of-range numbers"
        );
        // Guard against a generator that silently stops producing interesting inputs.
        assert!(objects > CASES / 4, "too few valid objects: {objects}");
        assert!(rejected > CASES / 5, "too few rejected inputs: {rejected}");
        // The skim gives up on whitespace before colons and deep nesting,
        // which this generator makes often; it must still vouch for many.
        assert!(
            skimmed > CASES / 20,
            "the skim vouched for {skimmed} objects"
        );
    }

    #[test]
    fn differential_decode_string() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut buf = Vec::new();
        let (mut decoded, mut rejected) = (0, 0);
        for case in 0..100_000 {
            buf.clear();
            gen_string(&mut rng, &mut buf);
            if rng.below(2) == 0 {
                mutate(&mut rng, &mut buf);
            }
            if std::str::from_utf8(&buf).is_err() {
                continue;
            }
            let ours = decode_string(&buf);
            let theirs = serde_json::from_slice::<String>(&buf).ok();
            // serde_json tolerates surrounding whitespace; decode_string takes exact values.
            let padded = buf.first().is_some_and(u8::is_ascii_whitespace)
                || buf.last().is_some_and(u8::is_ascii_whitespace);
            if padded {
                assert_eq!(ours, None);
                continue;
            }
            assert_eq!(
                ours.as_deref(),
                theirs.as_deref(),
                "case {case}: {:?}",
                String::from_utf8_lossy(&buf)
            );
            if ours.is_some() {
                decoded += 1;
            } else {
                rejected += 1;
            }
        }
        assert!(
            decoded > 30_000 && rejected > 10_000,
            "{decoded} {rejected}"
        );
    }

    // ---- differential testing on records like the shipper's (seeded `rand`) ----

    /// The keys the decode path asks for, plus ones the generated records have.
    const RECORD_WANTED: [&[u8]; 9] = [
        b"log_id",
        b"@timestamp",
        b"Records",
        b"messageType",
        b"detail-type",
        b"drsink",
        b"message",
        b"http",
        b"tags",
    ];

    /// Checks `buf` against serde_json: same accepted inputs (modulo the documented
    /// differences) and the same top-level values. Returns whether `scan_object` accepted it.
    fn check_against_serde(buf: &[u8], what: &str) -> bool {
        check_against_serde_skimmed(buf, what).0
    }

    /// `check_against_serde`, and whether the skim vouched for `buf`.
    fn check_against_serde_skimmed(buf: &[u8], what: &str) -> (bool, bool) {
        let input = String::from_utf8_lossy(buf);
        let mut found = [None; RECORD_WANTED.len()];
        let scanned = scan_object(buf, &RECORD_WANTED, &mut found);
        let skimmed = check_against_scan(buf, &RECORD_WANTED, scanned.as_ref().map(|_| ()), &found);
        let accepted = match (serde_json::from_slice::<serde_json::Value>(buf), scanned) {
            (Ok(serde_json::Value::Object(map)), Ok(())) => {
                for (w, f) in RECORD_WANTED.iter().zip(found) {
                    let key = std::str::from_utf8(w).unwrap();
                    let got = f.map(|raw| {
                        serde_json::from_slice::<serde_json::Value>(raw)
                            .unwrap_or_else(|e| panic!("{what}: {e} in {input}"))
                    });
                    assert_eq!(got.as_ref(), map.get(key), "{what}: key {key} in {input}");
                }
                true
            }
            (Ok(serde_json::Value::Object(_)), Err(e)) => {
                panic!("{what}: rejected a valid object ({e}): {input}")
            }
            (Ok(_), Ok(())) => panic!("{what}: accepted a non-object: {input}"),
            (Err(se), Ok(())) => {
                // Documented: no number range check, and nesting beyond serde_json's limit.
                let se = se.to_string();
                assert!(
                    se.contains("number out of range") || se.contains("recursion limit"),
                    "{what}: serde_json rejected ({se}) what scan accepted: {input}"
                );
                true
            }
            (_, Err(e)) => {
                assert!(e.offset <= buf.len(), "{what}: offset out of range");
                false
            }
        };
        (accepted, skimmed)
    }

    fn rand_string(rng: &mut StdRng, out: &mut Vec<u8>, max_len: usize) {
        const PIECES: &[&str] = &[
            "a",
            "b",
            "z",
            "0",
            "9",
            " ",
            "-",
            ".",
            ":",
            "/",
            "{",
            "}",
            "[",
            "]",
            ",",
            "'",
            r#"\""#,
            r"\\",
            r"\/",
            r"\n",
            r"\t",
            r"\r",
            r"\b",
            r"\f",
            r"\u00e9",
            r"\u0022",
            r"\u005c",
            r"\ud83d\ude00",
            "é",
            "ü",
            "中",
            "😀",
            "\u{7f}",
        ];
        out.push(b'"');
        for _ in 0..rng.gen_range(0..=max_len) {
            out.extend_from_slice(PIECES[rng.gen_range(0..PIECES.len())].as_bytes());
        }
        out.push(b'"');
    }

    /// One NDJSON-like log record, shaped like `benches/support/loggen.rs` makes them.
    fn rand_record(rng: &mut StdRng) -> Vec<u8> {
        let mut r = Vec::new();
        let ts = format!(
            "\"2026-11-21T{:02}:{:02}:{:02}.{:03}Z\"",
            rng.gen_range(0..24),
            rng.gen_range(0..60),
            rng.gen_range(0..60),
            rng.gen_range(0..1000)
        );
        r.extend_from_slice(b"{\"@timestamp\":");
        r.extend_from_slice(ts.as_bytes());
        r.extend_from_slice(b",\"level\":\"INFO\",");
        if rng.gen_bool(0.5) {
            r.extend_from_slice(b"\"log_id\":");
            rand_string(rng, &mut r, 6);
            r.push(b',');
        }
        r.extend_from_slice(b"\"message\":");
        rand_string(rng, &mut r, 60);
        r.extend_from_slice(b",\"host\":\"checkout-3.eu-west-1.internal\",\"trace_id\":\"");
        for _ in 0..32 {
            r.push(b"0123456789abcdef"[rng.gen_range(0..16)]);
        }
        r.extend_from_slice(b"\",\"http\":{\"method\":\"GET\",\"status\":");
        r.extend_from_slice(rng.gen_range(100..600).to_string().as_bytes());
        r.extend_from_slice(b",\"duration_ms\":");
        r.extend_from_slice(format!("{:.3}", rng.gen_range(0.0..900.0)).as_bytes());
        if rng.gen_bool(0.3) {
            r.extend_from_slice(b",\"neg\":-0.5e-3,\"flag\":true,\"none\":null,\"off\":false");
        }
        r.extend_from_slice(b"},\"seq\":");
        r.extend_from_slice(rng.gen_range(0..1u64 << 40).to_string().as_bytes());
        r.extend_from_slice(b",\"tags\":[\"prod\",\"eu\"");
        if rng.gen_bool(0.2) {
            r.extend_from_slice(b",[],{},[1,{\"x\":[null]}]");
        }
        r.push(b']');
        if rng.gen_bool(0.1) {
            // A duplicate: the last one wins.
            r.extend_from_slice(b",\"log_id\":\"again\"");
        }
        if rng.gen_bool(0.1) {
            r.extend_from_slice(b" ,\t\"Records\" :\n[ ] ");
        }
        r.push(b'}');
        r
    }

    fn rand_mutation(rng: &mut StdRng, buf: &mut Vec<u8>) {
        const INSERT: &[u8] = b"\"\\{}[],:\x00\x01\x1f\t\n 0-+.eEtfnu";
        let pos = rng.gen_range(0..=buf.len());
        match rng.gen_range(0..5) {
            0 => buf.truncate(pos),
            1 if pos < buf.len() => buf[pos] = INSERT[rng.gen_range(0..INSERT.len())],
            2 if pos < buf.len() => {
                buf.remove(pos);
            }
            3 => buf.insert(pos, INSERT[rng.gen_range(0..INSERT.len())]),
            _ => {
                let piece = [
                    &b"\\\""[..],
                    b"\\u12",
                    b"\\ud800",
                    b"\"\"",
                    b"{\"k\":",
                    b"]]",
                ];
                let piece = piece[rng.gen_range(0..piece.len())];
                buf.splice(pos..pos, piece.iter().copied());
            }
        }
    }

    #[test]
    fn differential_records_vs_serde_json() {
        let mut rng = StdRng::seed_from_u64(0x5eed_1095);
        let (mut accepted, mut rejected, mut skipped, mut skimmed) = (0, 0, 0, 0);
        for case in 0..40_000 {
            let mut buf = rand_record(&mut rng);
            for _ in 0..[0, 0, 1, 1, 2, 3][rng.gen_range(0..6)] {
                rand_mutation(&mut rng, &mut buf);
            }
            // The contract says input is valid UTF-8.
            if std::str::from_utf8(&buf).is_err() {
                skipped += 1;
                continue;
            }
            let (ok, vouched) = check_against_serde_skimmed(&buf, &format!("case {case}"));
            if ok {
                accepted += 1;
            } else {
                rejected += 1;
            }
            skimmed += usize::from(vouched);
        }
        eprintln!(
            "records: {accepted} accepted ({skimmed} vouched for by the skim), {rejected} rejected, {skipped} not UTF-8"
        );
        assert!(
            accepted > 15_000 && rejected > 8_000,
            "{accepted} {rejected}"
        );
        assert!(skimmed > 10_000, "the skim vouched for {skimmed} records");
    }

    /// Strings, escapes and errors at every offset around the 64-byte blocks a vector scan
    /// would use, in strings of every length up to three blocks.
    #[test]
    fn differential_block_boundaries() {
        let pieces: &[&str] = &[
            r#"\""#,
            r"\\",
            r"\u00e9",
            r"\ud83d\ude00",
            "é",
            "\u{1F600}",
            "\\",
            "\x01",
            "\t",
            "\"",
            r"\x",
            r"\u12",
            r"\udc00",
        ];
        let mut cases = 0;
        for prefix in 0..140 {
            for piece in pieces {
                for suffix in [0, 1, 7, 63, 64, 65] {
                    let text = format!(
                        "{{\"log_id\":\"{}{piece}{}\",\"@timestamp\":1}}",
                        "p".repeat(prefix),
                        "s".repeat(suffix)
                    );
                    check_against_serde(text.as_bytes(), "block boundary");
                    // The same string as a key, and unterminated.
                    let text = format!("{{\"{}{piece}\":1}}", "k".repeat(prefix));
                    check_against_serde(text.as_bytes(), "block boundary key");
                    let text = format!("{{\"a\":\"{}{piece}", "u".repeat(prefix));
                    check_against_serde(text.as_bytes(), "unterminated");
                    cases += 3;
                }
            }
        }
        assert!(cases > 30_000);
    }

    #[test]
    fn differential_deep_nesting() {
        let mut rng = StdRng::seed_from_u64(7);
        for depth in [1, 2, 3, 63, 64, 65, 126, 127, 128, 129, 510, 511, 512, 600] {
            for _ in 0..20 {
                let mut text = String::from("{\"tags\":");
                let kinds: Vec<bool> = (0..depth).map(|_| rng.gen_bool(0.5)).collect();
                for &array in &kinds {
                    text.push_str(if array { "[" } else { "{\"k\":" });
                }
                text.push_str("\"x\"");
                for &array in kinds.iter().rev() {
                    text.push(if array { ']' } else { '}' });
                }
                text.push('}');
                let ok = check_against_serde(text.as_bytes(), &format!("depth {depth}"));
                // The top-level object is depth 1.
                assert_eq!(ok, depth < MAX_DEPTH, "depth {depth}");
                let mut broken = text.into_bytes();
                rand_mutation(&mut rng, &mut broken);
                if std::str::from_utf8(&broken).is_ok() {
                    check_against_serde(&broken, &format!("depth {depth} mutated"));
                }
            }
        }
    }
}
