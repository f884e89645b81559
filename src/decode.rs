//! Stages 3–5 on one thread: an object's bytes → decompressed stream →
//! records → encoded batches, plus dead letters for what cannot be read.
//!
//! The format is detected per object from its first bytes (or forced with
//! `--format`): NDJSON, a JSON stream (concatenated or pretty-printed
//! objects, or an array), or plain text lines. Kept free of I/O beyond the
//! `Read` it is given, so the same code runs in the pipeline and in
//! benchmarks.

use std::cell::RefCell;
use std::io::{self, Cursor, Read};
use std::rc::Rc;

use crate::batch::{Batch, Builder, Limits};
use crate::dead_letter::DeadLetter;
use crate::decompress::{Broken, Decoder};
use crate::json_scan::scan_object;
use crate::lines::{Line, Lines};
use crate::notification::ObjectRef;
use crate::records::{Parsed, Position, Record, RecordError, RecordParser};
use crate::sink::Encoder;
use crate::values::{Values, UTF8_BOM};

/// Decompressed bytes looked at to detect the format.
const SNIFF_BYTES: u64 = 64 * 1024;

/// A container (a CloudTrail file, a CloudWatch Logs payload) may be this
/// many times `--max-record-bytes`: its entries are the records.
const CONTAINER_FACTOR: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Detect per object from its first bytes.
    Auto,
    /// One JSON object per line.
    Ndjson,
    /// JSON objects one after another, with or without line breaks, or an array of them.
    Json,
    /// Plain text lines, each indexed as `{"message": LINE}`.
    Text,
}

/// What is handed on each time a batch fills, and once at the end.
#[derive(Default)]
pub struct Chunk {
    /// Full batch (or the last, partial one).
    pub batch: Option<Batch>,
    /// Records that go to the dead-letter store; they must be stored before
    /// the object counts as done.
    pub letters: Vec<DeadLetter>,
    /// Records read since the previous chunk (batched or dead-lettered).
    pub records: u64,
    /// Records dropped by `--min-level`.
    pub filtered: u64,
    /// The object's compressed stream broke off: what was read before is
    /// kept, the fault is this dead letter.
    pub fault: Option<DeadLetter>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Reading the object itself failed; worth retrying.
    #[error("reading {object} failed: {error}")]
    Source { object: String, error: io::Error },
    /// The consumer of the chunks stopped taking them.
    #[error("{0}")]
    Stopped(String),
}

pub struct ObjectDecoder<'a> {
    pub parser: &'a RecordParser,
    pub limits: Limits,
    pub max_record_bytes: usize,
    pub format: Format,
}

/// The decode loop's state for one object.
struct Run<'a, 'o, E> {
    decoder: &'a ObjectDecoder<'a>,
    object: &'o ObjectRef,
    encoder: &'a mut dyn Encoder,
    builder: Builder,
    chunk: Chunk,
    /// Bytes of the dead letters in `chunk` (reasons and records).
    letter_bytes: usize,
    emit: E,
}

impl<E: FnMut(Chunk) -> Result<(), String>> Run<'_, '_, E> {
    fn dead(
        &mut self,
        position: Position,
        reason: String,
        record: Option<&[u8]>,
        offset: Option<u64>,
    ) -> Result<(), DecodeError> {
        let mut letter = DeadLetter::new(self.object, reason).position(position);
        if let Some(record) = record {
            letter = letter.record(record);
        }
        if let Some(offset) = offset {
            letter = letter.offset(offset);
        }
        self.letter_bytes += letter.reason.len() + record.map_or(0, <[u8]>::len);
        self.chunk.letters.push(letter);
        // An object of nothing but bad records (a Latin-1 file after one
        // good line) must not pile them all up in memory: they are handed on
        // as a batch would be.
        let limits = self.decoder.limits;
        if self.letter_bytes >= limits.bytes || self.chunk.letters.len() >= limits.records {
            self.hand_on()?;
        }
        Ok(())
    }

    fn push(&mut self, record: &Record<'_>) -> Result<(), DecodeError> {
        if record.json.len() > self.decoder.max_record_bytes {
            let reason = self.too_long(record.json.len() as u64);
            return self.dead(record.position, reason, None, None);
        }
        let encoder = &mut *self.encoder;
        let limits = self.decoder.limits;
        if let Some(full) = self
            .builder
            .push(record.position, &limits, |out| encoder.encode(record, out))
        {
            self.emit_batch(full)?;
        }
        if self.builder.is_full(&limits) {
            let full = self.builder.take();
            self.emit_batch(full)?;
        }
        Ok(())
    }

    fn emit_batch(&mut self, batch: Batch) -> Result<(), DecodeError> {
        self.chunk.batch = Some(batch);
        self.hand_on()
    }

    /// Hands the chunk read so far on.
    fn hand_on(&mut self) -> Result<(), DecodeError> {
        self.letter_bytes = 0;
        (self.emit)(std::mem::take(&mut self.chunk)).map_err(DecodeError::Stopped)
    }

    fn too_long(&self, bytes: u64) -> String {
        format!(
            "record of {bytes} bytes exceeds --max-record-bytes ({})",
            self.decoder.max_record_bytes
        )
    }

    /// Accounts for what one line or value held.
    fn take(
        &mut self,
        parsed: Result<Parsed<'_>, RecordError>,
        text: &[u8],
        position: Position,
        offset: u64,
    ) -> Result<(), DecodeError> {
        match parsed {
            Ok(Parsed::Blank | Parsed::Skipped) => {}
            Ok(Parsed::Filtered) => {
                self.chunk.records += 1;
                self.chunk.filtered += 1;
            }
            Ok(Parsed::One(record)) => {
                self.chunk.records += 1;
                self.push(&record)?;
            }
            Ok(Parsed::Many(records)) => {
                for record in records {
                    self.chunk.records += 1;
                    match record {
                        Ok(record) => self.push(&record)?,
                        Err(bad) => {
                            self.dead(bad.position, bad.error.to_string(), Some(&bad.text), None)?
                        }
                    }
                }
            }
            Err(e) => {
                self.chunk.records += 1;
                let at = match e {
                    RecordError::NotUtf8(at) => Some(offset + at as u64),
                    _ => None,
                };
                self.dead(position, e.to_string(), Some(text), at)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), DecodeError> {
        if !self.builder.is_empty() {
            self.chunk.batch = Some(self.builder.take());
        }
        (self.emit)(self.chunk).map_err(DecodeError::Stopped)
    }
}

impl<'a> ObjectDecoder<'a> {
    /// Reads the whole object, handing each chunk to `emit`; returns the
    /// number of compressed bytes read. A corrupt or truncated compressed
    /// stream is not an error: what was read before the fault is kept and
    /// the fault is reported in the last chunk.
    pub fn decode(
        &'a self,
        object: &ObjectRef,
        source: impl Read,
        encoder: &'a mut dyn Encoder,
        emit: impl FnMut(Chunk) -> Result<(), String>,
    ) -> Result<u64, DecodeError> {
        let source_fault = Rc::new(RefCell::new(None));
        let source = FaultTracking {
            inner: source,
            fault: Rc::clone(&source_fault),
        };
        let read_failed = |error: io::Error| DecodeError::Source {
            object: object.to_string(),
            error,
        };
        let mut decoder = Decoder::new(source).map_err(read_failed)?;
        let mut head = Vec::new();
        let mut sniffed = (&mut decoder).take(SNIFF_BYTES).read_to_end(&mut head);
        // A first object open past the head with no line break yet is either
        // NDJSON's long first line or objects back to back (Firehose with a
        // large first record): read on, up to a record's size, until a line
        // breaks or the object ends, so that `detect` can tell them apart.
        if self.format == Format::Auto
            && sniffed.is_ok()
            && head.len() as u64 == SNIFF_BYTES
            && opens_without_a_break(&head)
        {
            while head.len() < self.max_record_bytes {
                let before = head.len();
                sniffed = (&mut decoder).take(SNIFF_BYTES).read_to_end(&mut head);
                if sniffed.is_err()
                    || head.len() == before
                    || memchr::memchr(b'\n', &head[before..]).is_some()
                {
                    break;
                }
            }
        }
        let format = match self.format {
            Format::Auto => detect(&head),
            forced => forced,
        };
        let compression = decoder.compression();
        // When the stream already broke within the first bytes, what was
        // read before the fault is still decoded, up to the fault: the line
        // it cut off is not a record.
        let stream: Box<dyn Read + '_> = match sniffed {
            Ok(_) => Box::new(Cursor::new(head).chain(&mut decoder)),
            Err(e) => Box::new(Cursor::new(head).chain(Broken(Some(e)))),
        };

        let mut run = Run {
            decoder: self,
            object,
            encoder,
            builder: Builder::default(),
            chunk: Chunk::default(),
            letter_bytes: 0,
            emit,
        };
        let broke = match format {
            Format::Text | Format::Ndjson | Format::Auto => self.lines(&mut run, stream, format)?,
            Format::Json => self.values(&mut run, stream)?,
        };
        if let Some(e) = broke {
            if let Some(fault) = source_fault.borrow_mut().take() {
                return Err(read_failed(fault));
            }
            let at = decoder.compressed_offset();
            run.chunk.fault = Some(
                DeadLetter::new(
                    object,
                    format!("{compression:?} stream is corrupt or truncated near byte {at}: {e}"),
                )
                .offset(at),
            );
        }
        run.finish()?;
        Ok(decoder.compressed_offset())
    }

    /// Line-based formats; returns the error that broke the stream, if any.
    fn lines<E: FnMut(Chunk) -> Result<(), String>>(
        &self,
        run: &mut Run<'_, '_, E>,
        stream: impl Read,
        format: Format,
    ) -> Result<Option<io::Error>, DecodeError> {
        let limit = match format {
            Format::Text => self.max_record_bytes,
            _ => self.max_record_bytes.saturating_mul(CONTAINER_FACTOR),
        };
        let mut lines = Lines::new(stream, limit);
        loop {
            let (number, offset, line) = match lines.next_line() {
                Ok(Some(next)) => next,
                Ok(None) => return Ok(None),
                Err(e) => return Ok(Some(e)),
            };
            let position = Position::line(number);
            let text = match line {
                Line::TooLong { bytes } => {
                    run.chunk.records += 1;
                    let reason = run.too_long(bytes);
                    run.dead(position, reason, None, Some(offset))?;
                    continue;
                }
                // Not only on line 1: `cat a.ndjson b.ndjson` (or two gzip
                // members) puts b's BOM at the start of a later line.
                Line::Text(text) => text.strip_prefix(UTF8_BOM).unwrap_or(text),
            };
            if format == Format::Text {
                self.text_line(run, text, position, offset)?;
                continue;
            }
            let parsed = self.parser.parse_line(text, position);
            if matches!(parsed, Err(RecordError::NotObject(_)))
                && self.take_concatenated(run, text, number, offset)?
            {
                continue;
            }
            run.take(parsed, text, position, offset)?;
        }
    }

    /// A line of a text object. In one that was detected (not forced), a
    /// line that is JSON is read as JSON: the other region's copy of the
    /// object may start with it, and its records must get the same ids and
    /// indices there.
    #[inline(never)]
    fn text_line<E: FnMut(Chunk) -> Result<(), String>>(
        &self,
        run: &mut Run<'_, '_, E>,
        text: &[u8],
        position: Position,
        offset: u64,
    ) -> Result<(), DecodeError> {
        if self.format == Format::Auto && text.trim_ascii_start().starts_with(b"{") {
            match self.parser.parse_line(text, position) {
                Ok(parsed) => return run.take(Ok(parsed), text, position, offset),
                Err(RecordError::NotObject(_))
                    if self.take_concatenated(run, text, position.line, offset)? =>
                {
                    return Ok(())
                }
                Err(_) => {}
            }
        }
        run.take(self.parser.text(text, position), text, position, offset)
    }

    /// The objects of a line that holds several (see `concatenated`), each
    /// an entry of the line; `false` (nothing taken) when it does not.
    #[inline(never)]
    fn take_concatenated<E: FnMut(Chunk) -> Result<(), String>>(
        &self,
        run: &mut Run<'_, '_, E>,
        text: &[u8],
        line: u64,
        offset: u64,
    ) -> Result<bool, DecodeError> {
        let Some(objects) = concatenated(text) else {
            return Ok(false);
        };
        for (entry, (object, at)) in objects.iter().enumerate() {
            let position = Position {
                line,
                entry: Some(entry as u32),
            };
            run.take(
                self.parser.parse_line(object, position),
                object,
                position,
                offset + at,
            )?;
        }
        Ok(true)
    }

    /// JSON streams; returns the error that broke the stream, if any.
    fn values<E: FnMut(Chunk) -> Result<(), String>>(
        &self,
        run: &mut Run<'_, '_, E>,
        stream: impl Read,
    ) -> Result<Option<io::Error>, DecodeError> {
        let mut values = Values::new(
            stream,
            self.max_record_bytes.saturating_mul(CONTAINER_FACTOR),
            STREAM_BUFFER,
        );
        loop {
            let value = match values.next_value() {
                Ok(Some(value)) => value,
                Ok(None) => return Ok(None),
                Err(e) => return Ok(Some(e)),
            };
            let position = Position::line(value.line);
            if let Some(bytes) = value.too_long {
                run.chunk.records += 1;
                let reason = run.too_long(bytes);
                run.dead(position, reason, None, Some(value.offset))?;
                continue;
            }
            run.take(
                self.parser.parse(value.text, position),
                value.text,
                position,
                value.offset,
            )?;
        }
    }
}

/// A line of objects back to back and nothing else (Firehose writes records
/// that lack a delimiter next to ones that have it): each object and its
/// offset in the line, when there are several.
#[cold]
fn concatenated(line: &[u8]) -> Option<Vec<(Vec<u8>, u64)>> {
    // Objects only: an array on a line is not a run of records.
    if !line.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    let mut values = Values::new(line, line.len(), line.len());
    let mut objects = Vec::new();
    while let Some(value) = values.next_value().ok()? {
        if value.too_long.is_some() || scan_object(value.text, &[], &mut []).is_err() {
            return None;
        }
        objects.push((value.text.to_vec(), value.offset));
    }
    (objects.len() > 1).then_some(objects)
}

/// Whether the head starts an object and holds no line break.
fn opens_without_a_break(head: &[u8]) -> bool {
    let start = head
        .strip_prefix(UTF8_BOM)
        .unwrap_or(head)
        .trim_ascii_start();
    start.starts_with(b"{") && memchr::memchr(b'\n', start).is_none()
}

/// Read buffer of a JSON stream.
const STREAM_BUFFER: usize = 256 * 1024;

/// Lines after the first that `detect` looks at.
const DETECT_LINES: usize = 8;

/// Chooses the format from the first bytes of the decompressed object.
fn detect(head: &[u8]) -> Format {
    let head = head.strip_prefix(UTF8_BOM).unwrap_or(head);
    let start = head.trim_ascii_start();
    match start.first() {
        None => Format::Ndjson,
        // An array of objects (or an empty one); a text log may start with
        // `[` too (`[2026-11-21 12:00:00] ERROR …`, `[INFO] …`).
        Some(b'[') => match start[1..].trim_ascii_start().first() {
            None | Some(b'{' | b']') => Format::Json,
            Some(_) => Format::Text,
        },
        Some(b'{') => {
            // NDJSON when the first line is a whole object by itself; or when
            // it is not, but the lines after it are (one broken line must not
            // turn the rest into a JSON stream, where an unterminated string
            // would swallow them all). A value of a JSON stream that spans
            // lines has a line that is no whole object: the one closing it, or
            // one ending in a comma.
            let whole = |line: &[u8]| scan_object(line, &[], &mut []).is_ok();
            let Some(last_break) = memchr::memrchr(b'\n', start) else {
                // No line break yet: objects back to back (Firehose) are a
                // JSON stream; a first object still open at the end of the
                // head is one long line (a large record, or a one-line
                // container such as a CloudTrail file).
                let mut values = Values::new(start, start.len(), start.len().max(1));
                return match values.next_value() {
                    Ok(Some(first)) if first.text.len() < start.len() => Format::Json,
                    _ => Format::Ndjson,
                };
            };
            let ended = &start[..last_break];
            let mut lines = ended.split(|&b| b == b'\n').map(<[u8]>::trim_ascii);
            if lines.next().is_some_and(whole) {
                return Format::Ndjson;
            }
            let mut next = lines
                .filter(|l| !l.is_empty())
                .take(DETECT_LINES)
                .peekable();
            match next.peek().is_some() && next.all(whole) {
                true => Format::Ndjson,
                false => Format::Json,
            }
        }
        Some(_) => Format::Text,
    }
}

/// Remembers an error of the source stream itself, so that a failed read
/// (worth retrying) is told apart from a corrupt object (dead-lettered).
struct FaultTracking<R> {
    inner: R,
    fault: Rc<RefCell<Option<io::Error>>>,
}

impl<R: Read> Read for FaultTracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            *self.fault.borrow_mut() = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ParserOptions;
    use std::io::Write;
    use std::ops::Range;

    /// Writes each document on its own line.
    struct Lines;
    impl Encoder for Lines {
        fn encode(&mut self, record: &Record<'_>, out: &mut Vec<u8>) -> Range<usize> {
            let start = out.len();
            out.extend_from_slice(&record.json);
            let end = out.len();
            out.push(b'\n');
            start..end
        }
    }

    /// Every chunk `input` is handed on in, read with the defaults, 1 MiB
    /// records and batches of `batch_bytes`.
    fn chunks(input: Vec<u8>, batch_bytes: usize) -> Vec<Chunk> {
        let parser = RecordParser::new(&ParserOptions::default());
        let decoder = ObjectDecoder {
            parser: &parser,
            limits: Limits {
                bytes: batch_bytes,
                records: 10_000,
            },
            max_record_bytes: 1 << 20,
            format: Format::Auto,
        };
        let mut chunks = Vec::new();
        decoder
            .decode(
                &ObjectRef::new("b", "k"),
                Cursor::new(input),
                &mut Lines,
                |chunk| {
                    chunks.push(chunk);
                    Ok(())
                },
            )
            .unwrap();
        chunks
    }

    /// (records batched, dead letters) of `chunks`.
    fn counts(chunks: &[Chunk]) -> (usize, usize) {
        chunks.iter().fold((0, 0), |(batched, dead), chunk| {
            (
                batched + chunk.batch.as_ref().map_or(0, |b| b.entries.len()),
                dead + chunk.letters.len(),
            )
        })
    }

    #[test]
    fn a_small_object_cut_short_keeps_the_records_before_the_fault() {
        let text: String = (0..200)
            .map(|i| format!("{{\"log_id\":\"r{i}\"}}\n"))
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let whole = gz.finish().unwrap();
        let cut = whole[..whole.len() - 20].to_vec();

        let read = chunks(cut.clone(), 1 << 20);
        assert_eq!(read.iter().filter(|c| c.fault.is_some()).count(), 1);
        let (batched, dead) = counts(&read);
        // Every whole line before the fault, and not the line it cut off.
        let mut readable = Vec::new();
        let _ = flate2::read::GzDecoder::new(&cut[..]).read_to_end(&mut readable);
        let whole_lines = readable.iter().filter(|&&b| b == b'\n').count();
        assert!(!readable.ends_with(b"\n"), "a line is cut off");
        assert!(whole_lines > 150, "{whole_lines}");
        assert_eq!((batched, dead), (whole_lines, 0));
    }

    #[test]
    fn dead_letters_are_handed_on_before_they_outgrow_a_batch() {
        // One good line, then 5000 lines of Latin-1: every one a dead letter.
        let mut text = b"{\"log_id\":\"ok\"}\n".to_vec();
        for i in 0..5000 {
            // "Zürich" with its ü in Latin-1.
            text.extend_from_slice(format!("{{\"n\":{i},\"city\":\"Z").as_bytes());
            text.extend_from_slice(b"\xfcrich\"}\n");
        }
        let read = chunks(text, 16 * 1024);
        let (batched, dead) = counts(&read);
        let largest = read
            .iter()
            .map(|chunk| {
                chunk
                    .letters
                    .iter()
                    .map(|l| l.reason.len() + l.record.as_ref().map_or(0, String::len))
                    .sum::<usize>()
            })
            .max()
            .unwrap_or(0);
        assert_eq!((batched, dead), (1, 5000));
        // At most one letter past the bound (each is under 200 bytes).
        assert!(
            largest < 17 * 1024,
            "a chunk held {largest} bytes of dead letters"
        );
    }

    #[test]
    fn a_first_record_larger_than_the_head_is_told_from_a_long_first_line() {
        let record = |i: usize| {
            format!(
                "{{\"log_id\":\"r{i}\",\"pad\":\"{}\"}}",
                "x".repeat(100_000)
            )
        };
        // Firehose: objects back to back, the first beyond the 64 KiB head,
        // one of them malformed: that one alone is dead-lettered.
        let mut firehose: String = (0..5).map(record).collect();
        firehose.insert_str(record(0).len(), r#"{"log_id":"bad" "no colon"}"#);
        assert_eq!(counts(&chunks(firehose.into_bytes(), 5 << 20)), (5, 1));
        // NDJSON whose first line is as long, and a broken line later: read as
        // lines, so the broken one is dead-lettered alone.
        let ndjson = format!(
            "{}\n{{\"log_id\":\"s1\"}}\n{{\"log_id\":\"broken\n{{\"log_id\":\"s2\"}}\n",
            record(0)
        );
        assert_eq!(counts(&chunks(ndjson.into_bytes(), 5 << 20)), (3, 1));
    }

    #[test]
    fn detects_the_format_from_the_first_bytes() {
        assert_eq!(detect(b"{\"a\":1}\n{\"b\":2}\n"), Format::Ndjson);
        assert_eq!(detect(b"\xEF\xBB\xBF{\"a\":1}\r\n"), Format::Ndjson);
        assert_eq!(detect(b"{\"a\":1}{\"b\":2}"), Format::Json);
        assert_eq!(detect(b"{\n  \"a\": 1\n}\n"), Format::Json);
        assert_eq!(detect(b"  [{\"a\":1}]"), Format::Json);
        assert_eq!(detect(b"[\n  {\"a\": 1}\n]"), Format::Json);
        assert_eq!(detect(b"[]"), Format::Json);
        assert_eq!(detect(b"[2026-11-21 12:00:00] ERROR x\n"), Format::Text);
        assert_eq!(detect(b"[INFO] ok\n"), Format::Text);
        assert_eq!(detect(b"2026-11-21 GET /x 200\n"), Format::Text);
        assert_eq!(detect(b""), Format::Ndjson);
        // A broken first object followed by a good one (Beats' test data).
        assert_eq!(
            detect(b"{\"bad\": json}{\"good\":\"json\"}\n"),
            Format::Json
        );
        // A broken first line before whole ones; objects back to back on the
        // first line before whole ones (Firehose mixing delimiters).
        assert_eq!(
            detect(b"{\"a\":\"cut\n{\"b\":1}\n{\"c\":2}\n"),
            Format::Ndjson
        );
        assert_eq!(detect(b"{\"a\":1}{\"b\":2}\n{\"c\":3}\n"), Format::Ndjson);
        // Pretty-printed, even with a nested object alone on its line.
        assert_eq!(
            detect(b"{\n  \"a\": [\n    {}\n  ]\n}\n{\n  \"b\": 1\n}\n"),
            Format::Json
        );
        assert_eq!(
            detect(b"{\"a\":\"cut\n{\"b\":1}\n  \"c\": 2\n"),
            Format::Json
        );
        // A container with one entry per line, whole objects among them.
        let entries: String = (0..12)
            .map(|i| format!("{{\"eventID\":\"e{i:02}\"}},\n"))
            .collect();
        for n in [0, 1, 7, 8, 9, 12] {
            let trail = format!(
                "{{\"Records\":[\n{}{{\"eventID\":\"last\"}}\n]}}\n",
                &entries[..n * 19]
            );
            assert_eq!(detect(trail.as_bytes()), Format::Json, "{trail}");
        }
        assert_eq!(detect(b"{\"a\":\n{\"b\":1}}\n{\"c\":3}\n"), Format::Json);
        // No line break in the head: a first record longer than the head is
        // a line of NDJSON; objects back to back are a JSON stream.
        let long = format!(
            "{{\"log_id\":\"a\",\"message\":\"{}",
            "x".repeat(SNIFF_BYTES as usize)
        );
        assert_eq!(
            detect(&long.as_bytes()[..SNIFF_BYTES as usize]),
            Format::Ndjson
        );
        assert_eq!(detect(b"{\"a\":1}"), Format::Ndjson);
        assert_eq!(detect(b"{\"a\":1} {\"b\":\"2"), Format::Json);
    }
}
