//! Stage 4b: a line or JSON value → records: each with its `log_id`, its
//! event time and its JSON text.
//!
//! In the common case (one log object per line) only a few top-level fields
//! are located (see `json_scan`) and the record's bytes are passed on
//! untouched, never parsed into a tree and re-serialized. Containers that
//! AWS services write — CloudTrail files, CloudWatch Logs subscription
//! payloads — are expanded into one record per entry, and EventBridge
//! envelopes take their id and time from the envelope.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::fingerprint::Scheme;
use crate::json_scan::{decode_string, scan_object, ScanError};
use crate::json_skim::{skim_object, Skim, Wanted};
use crate::timestamp;

/// Where a record lies in its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line where the record (or its container) starts.
    pub line: u64,
    /// 0-based index of the record in its container, if it was expanded.
    pub entry: Option<u32>,
}

impl Position {
    pub fn line(line: u64) -> Self {
        Position { line, entry: None }
    }
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub log_id: Cow<'a, str>,
    /// True when `log_id` is a fingerprint that the document does not carry
    /// yet; the sink adds it.
    pub id_generated: bool,
    /// Event time in epoch milliseconds, when the record has a usable one.
    pub timestamp_ms: Option<i64>,
    /// The record's JSON object text, on one line.
    pub json: Cow<'a, [u8]>,
    pub position: Position,
    /// The record already says where it came from (a `drsink` field): it is
    /// being re-driven from the dead-letter store.
    pub has_origin: bool,
}

/// What one line or value held.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// Only whitespace.
    Blank,
    /// Below `--min-level`.
    Filtered,
    /// A message that carries no log (a CloudWatch Logs CONTROL_MESSAGE).
    Skipped,
    One(Record<'a>),
    /// The entries of a container; an entry that is not a usable record is
    /// an error of its own.
    Many(Vec<Result<Record<'static>, BadEntry>>),
}

/// An entry of a container that is not a usable record.
#[derive(Debug)]
pub struct BadEntry {
    pub position: Position,
    pub error: RecordError,
    /// The entry as written, kept with its dead letter.
    pub text: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("invalid UTF-8 at byte {0} of the record")]
    NotUtf8(usize),
    #[error("not a JSON object: {0}")]
    NotObject(ScanError),
    #[error("{0}")]
    BadContainer(String),
}

/// Log levels in order of severity, with the names producers use for them.
const LEVELS: &[&[&str]] = &[
    &["trace"],
    &["debug"],
    &["info", "information", "notice"],
    &["warn", "warning"],
    &["error", "err"],
    &[
        "critical",
        "crit",
        "fatal",
        "alert",
        "emergency",
        "emerg",
        "panic",
    ],
];

/// The rank of a level name in `LEVELS`, case-insensitively.
pub fn level_rank(name: &str) -> Option<usize> {
    let name = name.trim().to_ascii_lowercase();
    LEVELS
        .iter()
        .position(|names| names.contains(&name.as_str()))
}

/// The numeric levels of pino and bunyan (10 trace … 60 fatal) as ranks.
fn pino_rank(raw: &[u8]) -> Option<usize> {
    let n: usize = std::str::from_utf8(raw).ok()?.parse().ok()?;
    (n.is_multiple_of(10) && (10..=60).contains(&n)).then(|| n / 10 - 1)
}

/// How records are read.
pub struct RecordParser {
    timestamp_field: String,
    /// The top-level keys located in every record; see the indices below.
    wanted: Vec<Vec<u8>>,
    /// The keys `parse` looks for, in the order of its `found` slots: the
    /// first `looked_for` of `wanted` (the level fields only when
    /// filtering, since every wanted key costs a comparison per key of
    /// every record), then the `--id-fields`.
    keys: Wanted,
    looked_for: usize,
    id_fields: usize,
    min_level: Option<usize>,
    fingerprint: Scheme,
    skim: bool,
}

const LOG_ID: usize = 0;
const TIMESTAMP: usize = 1;
const RECORDS: usize = 2;
const MESSAGE_TYPE: usize = 3;
const DETAIL_TYPE: usize = 4;
const ORIGIN: usize = 5;
const LEVEL: usize = 6;
const ECS_LEVEL_DOTTED: usize = 7;
const ECS_LOG: usize = 8;
const ID_FIELDS: usize = 9;
/// Keys looked up without a heap allocation.
const INLINE_KEYS: usize = 16;

pub struct ParserOptions<'a> {
    pub timestamp_field: &'a str,
    pub id_fields: &'a [String],
    pub level_field: &'a str,
    /// Records below this level (a `level_rank`) are filtered out.
    pub min_level: Option<usize>,
    pub fingerprint: Scheme,
    /// Only skim each record's structure (`json_skim`) instead of checking
    /// its whole grammar: right for a sink whose server parses every
    /// document on its own and rejects a malformed one alone.
    pub skim: bool,
}

impl Default for ParserOptions<'_> {
    /// `drsink worker`'s defaults with the Elasticsearch sink.
    fn default() -> Self {
        ParserOptions {
            timestamp_field: "@timestamp",
            id_fields: &[],
            level_field: "level",
            min_level: None,
            fingerprint: Scheme::default(),
            skim: true,
        }
    }
}

impl RecordParser {
    pub fn new(options: &ParserOptions<'_>) -> Self {
        let mut wanted: Vec<Vec<u8>> = [
            "log_id",
            options.timestamp_field,
            "Records",
            "messageType",
            "detail-type",
            "drsink",
            options.level_field,
            "log.level",
            "log",
        ]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
        wanted.extend(options.id_fields.iter().map(|f| f.as_bytes().to_vec()));
        let looked_for = match options.min_level {
            Some(_) => ID_FIELDS,
            None => LEVEL,
        };
        let keys = wanted[..looked_for]
            .iter()
            .chain(&wanted[ID_FIELDS..])
            .cloned()
            .collect();
        RecordParser {
            timestamp_field: options.timestamp_field.to_owned(),
            keys: Wanted::new(keys),
            looked_for,
            wanted,
            id_fields: options.id_fields.len(),
            min_level: options.min_level,
            fingerprint: options.fingerprint,
            skim: options.skim,
        }
    }

    /// Parses one JSON object (a value of a JSON stream, a dead letter
    /// being re-driven: anything that may span lines).
    pub fn parse<'a>(&self, text: &'a [u8], position: Position) -> Result<Parsed<'a>, RecordError> {
        self.parse_text(text, position, true)
    }

    /// Parses one line of NDJSON: it holds no line break, so it is not
    /// searched for one.
    pub fn parse_line<'a>(
        &self,
        line: &'a [u8],
        position: Position,
    ) -> Result<Parsed<'a>, RecordError> {
        self.parse_text(line, position, false)
    }

    fn parse_text<'a>(
        &self,
        text: &'a [u8],
        position: Position,
        may_span_lines: bool,
    ) -> Result<Parsed<'a>, RecordError> {
        let text = text.trim_ascii();
        if text.is_empty() {
            return Ok(Parsed::Blank);
        }
        let (keys, wanted_count) = (&self.keys, self.looked_for);
        let count = keys.keys().len();
        // On the stack: two heap allocations per record cost more than
        // the key comparisons (see BENCHMARKS.md).
        let mut found_buf = [None; INLINE_KEYS];
        let mut found_vec: Vec<Option<&[u8]>>;
        let found: &mut [Option<&[u8]>] = if count <= INLINE_KEYS {
            &mut found_buf[..count]
        } else {
            found_vec = vec![None; count];
            &mut found_vec
        };
        // Only a line is skimmed: a text that may span lines gets its line
        // breaks replaced below, and only the scanner rejects one inside a
        // string (where it would otherwise be indexed as a space).
        let skimmed = match self.skim && !may_span_lines {
            true => skim_object(text, keys, found),
            false => Skim::Unsure,
        };
        match skimmed {
            Skim::Found { ascii: true } => {}
            Skim::Found { ascii: false } => check_utf8(text)?,
            Skim::Unsure => {
                check_utf8(text)?;
                scan(text, keys.keys(), found).map_err(RecordError::NotObject)?;
            }
        }
        let found = &*found;
        let field = |index: usize| -> Option<&'a [u8]> {
            match index {
                _ if index < wanted_count => found[index],
                _ if index >= ID_FIELDS => found[wanted_count + index - ID_FIELDS],
                _ => None,
            }
        };

        if let Some(minimum) = self.min_level {
            if self
                .level(field(LEVEL), field(ECS_LEVEL_DOTTED), field(ECS_LOG))
                .is_some_and(|rank| rank < minimum)
            {
                return Ok(Parsed::Filtered);
            }
        }
        // Containers are recognised by their whole shape; anything else that
        // merely shares a field name is an ordinary record.
        if field(LOG_ID).is_none() {
            if field(MESSAGE_TYPE).is_some() {
                if let Some(parsed) = self.cloudwatch(text, position) {
                    return Ok(parsed);
                }
            }
            if field(RECORDS).is_some_and(|r| r.starts_with(b"[")) {
                if let Some(parsed) = self.cloudtrail(text, position) {
                    return Ok(parsed);
                }
            }
            if field(DETAIL_TYPE).is_some() {
                if let Some(record) = self.eventbridge(text, field(TIMESTAMP), position) {
                    return Ok(Parsed::One(record));
                }
            }
        }

        let given_id = field(LOG_ID).and_then(|raw| self.given_id(raw));
        let (log_id, id_generated) = match given_id {
            Some(id) => (id, false),
            None => {
                let fields: Vec<Option<&[u8]>> =
                    (0..self.id_fields).map(|i| field(ID_FIELDS + i)).collect();
                // drsink writes a generated id beside its origin, so a record
                // with an origin but no `log_id` at all is not one it wrote.
                let first_reading = match field(ORIGIN) {
                    Some(origin) if fields.is_empty() && field(LOG_ID).is_some() => {
                        without_origin(text, origin)
                    }
                    _ => None,
                };
                (
                    Cow::Owned(self.fingerprint(first_reading.as_deref().unwrap_or(text), &fields)),
                    // A record whose `log_id` is present but unusable (empty)
                    // keeps its own field: adding another would duplicate the key.
                    field(LOG_ID).is_none(),
                )
            }
        };
        Ok(Parsed::One(Record {
            log_id,
            id_generated,
            timestamp_ms: field(TIMESTAMP).and_then(timestamp::parse),
            json: match may_span_lines {
                true => one_line(text),
                false => Cow::Borrowed(text),
            },
            position,
            has_origin: field(ORIGIN).is_some(),
        }))
    }

    /// The `_id` a record's own `log_id` gives: a string, or a number as
    /// written. A string too long for an `_id` (Elasticsearch allows 512
    /// bytes) is replaced by a fingerprint of it, the same in either
    /// region's copy. Anything else (null, a boolean, an object, an empty string) is
    /// no id: the record gets a fingerprint instead.
    fn given_id<'a>(&self, raw: &'a [u8]) -> Option<Cow<'a, str>> {
        match decode_string(raw) {
            Some(id) if id.is_empty() => None,
            Some(id) if id.len() > MAX_ID_BYTES => Some(Cow::Owned(self.long_id(&id))),
            Some(id) => Some(id),
            None if raw
                .first()
                .is_some_and(|b| *b == b'-' || b.is_ascii_digit()) =>
            {
                std::str::from_utf8(raw).ok().map(Cow::Borrowed)
            }
            None => None,
        }
    }

    /// An id too long for an `_id`, as a fingerprint of it.
    fn long_id(&self, id: &str) -> String {
        self.fingerprint.id(&[b"log_id\0", id.as_bytes()])
    }

    /// A container's id of an entry (CloudWatch Logs event `id`, CloudTrail
    /// `eventID`, EventBridge `id`), held to the rules of a `log_id`: none
    /// or an empty one gives the entry's fingerprint, a long one its own.
    fn entry_id(&self, id: Option<&str>, entry: &[u8]) -> String {
        match id {
            None | Some("") => self.fingerprint(entry, &[]),
            Some(id) if id.len() > MAX_ID_BYTES => self.long_id(id),
            Some(id) => id.to_owned(),
        }
    }

    /// A line that is not JSON, as `{"message": LINE}`.
    pub fn text(&self, line: &[u8], position: Position) -> Result<Parsed<'static>, RecordError> {
        let line = line.trim_ascii_end();
        if line.trim_ascii().is_empty() {
            return Ok(Parsed::Blank);
        }
        let text = std::str::from_utf8(line).map_err(|e| RecordError::NotUtf8(e.valid_up_to()))?;
        let json = serde_json::to_vec(&serde_json::json!({ "message": text }))
            .map_err(|e| RecordError::BadContainer(e.to_string()))?;
        Ok(Parsed::One(Record {
            log_id: Cow::Owned(self.fingerprint(line, &[])),
            id_generated: true,
            timestamp_ms: None,
            json: Cow::Owned(json),
            position,
            has_origin: false,
        }))
    }

    fn level(
        &self,
        level: Option<&[u8]>,
        dotted: Option<&[u8]>,
        log: Option<&[u8]>,
    ) -> Option<usize> {
        let nested = || {
            let mut found = [None];
            scan_object(log?, &[b"level"], &mut found).ok()?;
            found[0]
        };
        let raw = level.or(dotted).or_else(nested)?;
        match decode_string(raw) {
            Some(name) => level_rank(&name),
            None => pino_rank(raw),
        }
    }

    /// CloudWatch Logs subscription payload: one record per log event;
    /// `None` when `text` does not have that shape.
    fn cloudwatch<'a>(&self, text: &'a [u8], position: Position) -> Option<Parsed<'a>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Payload<'a> {
            #[serde(borrow)]
            message_type: Cow<'a, str>,
            #[serde(default, borrow)]
            owner: Cow<'a, str>,
            #[serde(borrow)]
            log_group: Cow<'a, str>,
            #[serde(default, borrow)]
            log_stream: Cow<'a, str>,
            /// Each event is read on its own: one that cannot be is a dead
            /// letter of its own, not a reason to take the payload for an
            /// ordinary record.
            #[serde(borrow)]
            log_events: Vec<&'a RawValue>,
        }
        #[derive(Deserialize)]
        struct Event<'a> {
            #[serde(borrow)]
            id: Cow<'a, str>,
            timestamp: i64,
            #[serde(borrow)]
            message: Cow<'a, str>,
        }
        let payload: Payload = serde_json::from_slice(text).ok()?;
        match payload.message_type.as_ref() {
            "DATA_MESSAGE" => {}
            "CONTROL_MESSAGE" => return Some(Parsed::Skipped),
            _ => return None,
        }
        let records = payload
            .log_events
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let position = Position {
                    line: position.line,
                    entry: Some(i as u32),
                };
                let bad = |error: String| BadEntry {
                    position,
                    error: RecordError::BadContainer(error),
                    text: raw.get().as_bytes().to_vec(),
                };
                let event: Event = serde_json::from_str(raw.get())
                    .map_err(|e| bad(format!("a CloudWatch Logs event is unreadable: {e}")))?;
                let time = DateTime::from_timestamp_millis(event.timestamp)
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
                let log_id = self.entry_id(Some(&event.id), raw.get().as_bytes());
                let mut doc = serde_json::Map::new();
                doc.insert("log_id".into(), log_id.as_str().into());
                if let Some(time) = time {
                    doc.insert(self.timestamp_field.clone(), time.into());
                }
                doc.insert("message".into(), event.message.as_ref().into());
                // A message that is itself JSON is kept parsed as well, so
                // its fields can be searched.
                if event.message.trim_start().starts_with('{') {
                    if let Ok(parsed @ serde_json::Value::Object(_)) =
                        serde_json::from_str(&event.message)
                    {
                        doc.insert("json".into(), parsed);
                    }
                }
                doc.insert("logGroup".into(), payload.log_group.as_ref().into());
                doc.insert("logStream".into(), payload.log_stream.as_ref().into());
                doc.insert("owner".into(), payload.owner.as_ref().into());
                let json = serde_json::to_vec(&doc).map_err(|e| bad(e.to_string()))?;
                Ok(Record {
                    log_id: Cow::Owned(log_id),
                    id_generated: false,
                    timestamp_ms: Some(event.timestamp),
                    json: Cow::Owned(json),
                    position,
                    has_origin: false,
                })
            })
            .collect();
        Some(Parsed::Many(records))
    }

    /// CloudTrail file: one record per `Records[]` entry, id `eventID`, time
    /// `eventTime`; `None` when `text` is not such a file (or holds no entry,
    /// which is then kept as an ordinary record rather than vanishing).
    fn cloudtrail<'a>(&self, text: &'a [u8], position: Position) -> Option<Parsed<'a>> {
        #[derive(Deserialize)]
        struct Trail<'a> {
            #[serde(rename = "Records", borrow)]
            records: Vec<&'a RawValue>,
        }
        let trail: Trail = serde_json::from_slice(text).ok()?;
        if trail.records.is_empty() {
            return None;
        }
        let records = trail
            .records
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let position = Position {
                    line: position.line,
                    entry: Some(i as u32),
                };
                self.enveloped(entry.get().as_bytes(), b"eventID", b"eventTime", position)
                    .map_err(|error| BadEntry {
                        position,
                        error,
                        text: entry.get().as_bytes().to_vec(),
                    })
            })
            .collect();
        Some(Parsed::Many(records))
    }

    /// EventBridge event: the envelope's `id` and `time` are the record's.
    fn eventbridge<'a>(
        &self,
        text: &'a [u8],
        timestamp: Option<&[u8]>,
        position: Position,
    ) -> Option<Record<'a>> {
        if timestamp.is_some() && self.timestamp_field != "time" {
            // One that already has its own event time: an ordinary record
            // (unless that time is the envelope's own, `--timestamp-field time`).
            return None;
        }
        // The envelope as EventBridge writes it, or an ordinary record.
        let mut found = [None; 4];
        scan_object(text, &[b"id", b"time", b"source", b"detail"], &mut found).ok()?;
        let [id, time, source, detail] = found;
        let is_text = |raw: Option<&[u8]>| raw.is_some_and(|r| r.len() > 2 && r[0] == b'"');
        if !(is_text(id) && is_text(time) && is_text(source) && detail.is_some()) {
            return None;
        }
        self.enveloped(text, b"id", b"time", position).ok()
    }

    /// A record whose id and time are in fields of its own (`id_key`,
    /// `time_key`): they are copied to `log_id` and the timestamp field.
    fn enveloped(
        &self,
        text: &[u8],
        id_key: &[u8],
        time_key: &[u8],
        position: Position,
    ) -> Result<Record<'static>, RecordError> {
        let mut found = [None; 3];
        scan_object(
            text,
            &[id_key, time_key, self.timestamp_field.as_bytes()],
            &mut found,
        )
        .map_err(RecordError::NotObject)?;
        let [id, time, own_timestamp] = found;
        let id = id.and_then(decode_string);
        let time_text = time.and_then(decode_string);
        let mut json = b"{".to_vec();
        let log_id = self.entry_id(id.as_deref(), text);
        json.extend_from_slice(b"\"log_id\":");
        serde_json::to_writer(&mut json, &log_id)
            .map_err(|e| RecordError::BadContainer(e.to_string()))?;
        json.push(b',');
        if let (Some(time), None) = (&time_text, own_timestamp) {
            serde_json::to_writer(&mut json, &self.timestamp_field)
                .map_err(|e| RecordError::BadContainer(e.to_string()))?;
            json.push(b':');
            serde_json::to_writer(&mut json, time.as_ref())
                .map_err(|e| RecordError::BadContainer(e.to_string()))?;
            json.push(b',');
        }
        let rest = &text.trim_ascii()[1..];
        if rest.trim_ascii_start().starts_with(b"}") {
            json.pop();
        }
        json.extend_from_slice(rest);
        Ok(Record {
            log_id: Cow::Owned(log_id),
            id_generated: false,
            timestamp_ms: own_timestamp.or(time).and_then(timestamp::parse),
            json: Cow::Owned(one_line(&json).into_owned()),
            position,
            has_origin: false,
        })
    }

    /// A fingerprint of the record's content only (the whole text, or the
    /// `--id-fields`), so the copy of a line read from the other region's
    /// object gets the same id.
    fn fingerprint(&self, text: &[u8], fields: &[Option<&[u8]>]) -> String {
        if fields.is_empty() {
            return self.fingerprint.id(&[text]);
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(fields.len() * 4);
        for (name, value) in self.wanted[ID_FIELDS..].iter().zip(fields) {
            // A missing field differs from every JSON value.
            parts.extend([name.as_slice(), b"\0", value.unwrap_or(b"\x01"), b"\0"]);
        }
        self.fingerprint.id(&parts)
    }
}

/// A record as it was before the Elasticsearch sink put its origin in front
/// of its fields (`{"drsink":{…},` then the record's own text after its
/// `{`): a redriven record whose `log_id` is unusable must get the
/// fingerprint its first reading gave, not one of where it was read.
/// `origin` is the `drsink` value, a slice of `text`.
fn without_origin(text: &[u8], origin: &[u8]) -> Option<Vec<u8>> {
    const SPLICED: &[u8] = b"{\"drsink\":";
    let at = (origin.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    if at != SPLICED.len() || !text.starts_with(SPLICED) {
        return None;
    }
    let rest = text.get(at + origin.len()..)?;
    let rest = match rest.strip_prefix(b",") {
        Some(fields) => fields,
        None if rest.trim_ascii_start().starts_with(b"}") => rest,
        None => return None,
    };
    Some([b"{", rest].concat())
}

/// UTF-8 check; the slower pass that finds where the text goes wrong runs
/// only when it does.
fn check_utf8(text: &[u8]) -> Result<(), RecordError> {
    if simdutf8::basic::from_utf8(text).is_ok() {
        return Ok(());
    }
    simdutf8::compat::from_utf8(text)
        .map(drop)
        .map_err(|e| RecordError::NotUtf8(e.valid_up_to()))
}

/// `scan_object` with the keys as slices, on the stack for the usual few.
fn scan<'a>(
    text: &'a [u8],
    keys: &[Vec<u8>],
    found: &mut [Option<&'a [u8]>],
) -> Result<(), ScanError> {
    let mut inline = [&[][..]; INLINE_KEYS];
    let many: Vec<&[u8]>;
    let wanted: &[&[u8]] = if keys.len() <= INLINE_KEYS {
        for (slot, key) in inline.iter_mut().zip(keys) {
            *slot = key;
        }
        &inline[..keys.len()]
    } else {
        many = keys.iter().map(Vec::as_slice).collect();
        &many
    };
    scan_object(text, wanted, found)
}

/// Longest `_id` Elasticsearch and OpenSearch accept, in bytes.
const MAX_ID_BYTES: usize = 512;

/// A bulk request holds one document per line. In valid JSON a line break
/// can only be whitespace between tokens, so it can become a space.
fn one_line(text: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr2(b'\n', b'\r', text).is_none() {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser_with(id_fields: &[String], min_level: Option<&str>) -> RecordParser {
        parser_skimming(id_fields, min_level, false)
    }

    fn parser_skimming(id_fields: &[String], min_level: Option<&str>, skim: bool) -> RecordParser {
        RecordParser::new(&ParserOptions {
            id_fields,
            min_level: min_level.and_then(level_rank),
            skim,
            ..Default::default()
        })
    }

    fn parser() -> RecordParser {
        parser_with(&[], None)
    }

    fn one(parsed: Parsed<'_>) -> Record<'_> {
        match parsed {
            Parsed::One(r) => r,
            other => panic!("expected one record, got {other:?}"),
        }
    }

    fn many(parsed: Parsed<'_>) -> Vec<Record<'static>> {
        match parsed {
            Parsed::Many(records) => records.into_iter().map(|r| r.unwrap()).collect(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    fn at(line: u64) -> Position {
        Position::line(line)
    }

    fn json(record: &Record<'_>) -> serde_json::Value {
        serde_json::from_slice(&record.json).unwrap()
    }

    #[test]
    fn given_log_id_is_used_and_not_added_again() {
        let r = one(parser()
            .parse(
                br#" {"log_id":"a-1","@timestamp":"2026-11-21T23:59:59Z"} "#,
                at(1),
            )
            .unwrap());
        assert_eq!(r.log_id, "a-1");
        assert!(!r.id_generated);
        assert_eq!(r.timestamp_ms, Some(1_795_305_599_000));
        assert_eq!(
            &r.json[..],
            br#"{"log_id":"a-1","@timestamp":"2026-11-21T23:59:59Z"}"#
        );
        assert!(matches!(r.json, Cow::Borrowed(_)));
    }

    #[test]
    fn fingerprint_depends_on_content_only() {
        let p = parser();
        let a = one(p.parse(br#"{"msg":"x"}"#, at(1)).unwrap());
        let b = one(p.parse(b"  {\"msg\":\"x\"}\r", at(9)).unwrap());
        let c = one(p.parse(br#"{"msg":"y"}"#, at(1)).unwrap());
        assert!(a.id_generated);
        assert_eq!(a.log_id, b.log_id);
        assert_ne!(a.log_id, c.log_id);
        assert_eq!(a.log_id, Scheme::default().id(&[br#"{"msg":"x"}"#]));
    }

    #[test]
    fn only_a_record_drsink_wrote_is_fingerprinted_without_its_origin() {
        let p = parser();
        let plain = one(p.parse(br#"{"a":1}"#, at(1)).unwrap());
        // A producer's own leading `drsink` field is part of its record.
        let own = one(p.parse(br#"{"drsink":{"x":1},"a":1}"#, at(1)).unwrap());
        assert_ne!(own.log_id, plain.log_id);
        // A redriven record whose `log_id` was unusable (empty) keeps the
        // fingerprint of its first reading.
        let empty = one(p.parse(br#"{"log_id":"","a":1}"#, at(1)).unwrap());
        let redriven = one(p
            .parse(
                br#"{"drsink":{"source":"s3://b/k","line":1},"log_id":"","a":1}"#,
                at(1),
            )
            .unwrap());
        assert_eq!(redriven.log_id, empty.log_id);
    }

    #[test]
    fn id_fields_limit_the_fingerprint() {
        let p = parser_with(&["host".into(), "seq".into()], None);
        let a = one(p
            .parse(br#"{"host":"h","seq":1,"received":"t1"}"#, at(1))
            .unwrap());
        let b = one(p
            .parse(br#"{"received":"t2","seq":1,"host":"h"}"#, at(1))
            .unwrap());
        let c = one(p.parse(br#"{"host":"h","seq":2}"#, at(1)).unwrap());
        assert_eq!(a.log_id, b.log_id);
        assert_ne!(a.log_id, c.log_id);
    }

    #[test]
    fn timestamps_in_rfc3339_and_epoch_millis() {
        let p = parser();
        let ts = |line: &[u8]| one(p.parse(line, at(1)).unwrap()).timestamp_ms;
        assert_eq!(
            ts(br#"{"@timestamp":1795305599000}"#),
            Some(1_795_305_599_000)
        );
        assert_eq!(
            ts(br#"{"@timestamp":"2026-11-22T01:00:00+01:00"}"#),
            Some(1_795_305_600_000)
        );
        assert_eq!(ts(br#"{"@timestamp":"yesterday"}"#), None);
        assert_eq!(ts(br#"{"other":1}"#), None);
    }

    #[test]
    fn blank_lines_are_skipped_and_bad_lines_are_errors() {
        let p = parser();
        assert!(matches!(p.parse(b"  \r", at(1)).unwrap(), Parsed::Blank));
        assert!(matches!(
            p.parse(b"plain text", at(1)),
            Err(RecordError::NotObject(_))
        ));
        assert!(matches!(
            p.parse(br#"{"a":"b"#, at(1)),
            Err(RecordError::NotObject(_))
        ));
        assert_eq!(
            p.parse(b"{\"a\":\"\xff\"}", at(1)).unwrap_err(),
            RecordError::NotUtf8(6)
        );
    }

    #[test]
    fn a_skimming_parser_leaves_bad_tokens_to_the_sink_but_not_bad_structure() {
        let (strict, skimming) = (parser(), parser_skimming(&[], None, true));
        if !crate::json_skim::available() {
            return; // nothing skims here: every record gets the scanner's verdict
        }
        let line = br#"{"log_id":"k-1","@timestamp":"2026-11-21T23:59:59Z","n":tru}"#;
        assert!(matches!(
            strict.parse(line, at(1)),
            Err(RecordError::NotObject(_))
        ));
        let r = one(skimming.parse_line(line, at(1)).unwrap());
        assert_eq!(
            (r.log_id.as_ref(), r.timestamp_ms),
            ("k-1", Some(1_795_305_599_000))
        );
        assert_eq!(&r.json[..], line);
        // What the skim cannot vouch for gets the scanner's verdict, word for word.
        for bad in [&b"not json"[..], br#"{"log_id":"x"#, br#"{"a":1}{"b":2}"#] {
            assert_eq!(
                skimming.parse_line(bad, at(1)).unwrap_err(),
                strict.parse(bad, at(1)).unwrap_err()
            );
        }
        assert_eq!(
            skimming.parse_line(b"{\"a\":\"\xff\"}", at(1)).unwrap_err(),
            RecordError::NotUtf8(6)
        );
        // The same records as the strict parser on valid input, levels included.
        let leveled = parser_skimming(&["host".into()], Some("warn"), true);
        let strict_leveled = parser_with(&["host".into()], Some("warn"));
        for line in [
            &br#"{"level":"info","host":"h"}"#[..],
            br#"{"level":"ERROR","host":"h","m":"caf\u00e9 \"x\""}"#,
            br#"{"log":{"level":"debug"},"host":"h"}"#,
        ] {
            assert_eq!(
                format!("{:?}", leveled.parse_line(line, at(2)).unwrap()),
                format!("{:?}", strict_leveled.parse(line, at(2)).unwrap())
            );
        }
        // A text that may span lines is never only skimmed: a raw line break
        // inside a string would become a space and pass as valid.
        let value = b"{\"log_id\":\"v\",\n\"m\":\"two\nlines\"}";
        assert!(matches!(
            skimming.parse(value, at(1)),
            Err(RecordError::NotObject(_))
        ));
    }

    #[test]
    fn pretty_printed_objects_become_one_line() {
        let r = one(parser()
            .parse(b"{\n  \"a\": 1,\r\n  \"b\": \"x\"\n}", at(3))
            .unwrap());
        assert_eq!(&r.json[..], b"{   \"a\": 1,    \"b\": \"x\" }");
        assert_eq!(r.position, at(3));
        // A line has no line break to replace: its bytes pass as they are
        // (a carriage return between tokens is whitespace to any parser).
        for skim in [false, true] {
            let line = b"{\"a\":\r1,\"log_id\":\"l\"}";
            let r = one(parser_skimming(&[], None, skim)
                .parse_line(line, at(4))
                .unwrap());
            assert!(matches!(r.json, Cow::Borrowed(_)));
            assert_eq!((&r.json[..], r.log_id.as_ref()), (&line[..], "l"));
        }
    }

    #[test]
    fn text_lines_become_messages_with_fingerprints() {
        let p = parser();
        let a = one(p.text(b"GET /index.html 200\r", at(2)).unwrap());
        let b = one(p.text(b"GET /index.html 200", at(7)).unwrap());
        assert_eq!(
            json(&a),
            serde_json::json!({"message": "GET /index.html 200"})
        );
        assert_eq!(a.log_id, b.log_id);
        assert!(a.id_generated);
        assert!(matches!(p.text(b"   ", at(1)).unwrap(), Parsed::Blank));
    }

    #[test]
    fn cloudwatch_payloads_expand_into_their_events() {
        let p = parser();
        let payload = br#"{"messageType":"DATA_MESSAGE","owner":"1234","logGroup":"/aws/lambda/x","logStream":"s","subscriptionFilters":["f"],"logEvents":[{"id":"e1","timestamp":1795305599000,"message":"START"},{"id":"e2","timestamp":1795305600000,"message":"{\"level\":\"error\",\"n\":1}"}]}"#;
        let records = many(p.parse(payload, at(4)).unwrap());
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].log_id, "e1");
        assert_eq!(records[0].timestamp_ms, Some(1_795_305_599_000));
        assert_eq!(
            records[1].position,
            Position {
                line: 4,
                entry: Some(1)
            }
        );
        let doc = json(&records[1]);
        assert_eq!(doc["log_id"], "e2");
        assert_eq!(doc["@timestamp"], "2026-11-22T00:00:00.000Z");
        assert_eq!(doc["json"]["level"], "error");
        assert_eq!(doc["logGroup"], "/aws/lambda/x");
        assert_eq!(doc["owner"], "1234");
        let control = br#"{"messageType":"CONTROL_MESSAGE","logGroup":"","logEvents":[{"id":"","timestamp":1,"message":"health"}]}"#;
        assert!(matches!(p.parse(control, at(1)).unwrap(), Parsed::Skipped));
    }

    #[test]
    fn container_ids_follow_the_rules_of_a_log_id() {
        let p = parser();
        let long = "e".repeat(600);
        let payload = format!(
            r#"{{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","logEvents":[{{"id":"","timestamp":1795305599000,"message":"a"}},{{"id":"","timestamp":1795305599000,"message":"b"}},{{"id":"{long}","timestamp":1795305599000,"message":"c"}}]}}"#
        );
        let records = many(p.parse(payload.as_bytes(), at(1)).unwrap());
        // No event shares an empty _id, and none is longer than an _id may be.
        assert!(records
            .iter()
            .all(|r| !r.log_id.is_empty() && r.log_id.len() <= MAX_ID_BYTES));
        assert_ne!(records[0].log_id, records[1].log_id);
        assert_eq!(json(&records[0])["log_id"], records[0].log_id.as_ref());
        assert_eq!(records[2].log_id, p.long_id(&long));
        let trail =
            format!(r#"{{"Records":[{{"eventID":"{long}","eventTime":"2026-11-21T00:00:00Z"}}]}}"#);
        let entries = many(p.parse(trail.as_bytes(), at(1)).unwrap());
        assert_eq!(entries[0].log_id, p.long_id(&long));
    }

    #[test]
    fn cloudtrail_files_expand_into_their_entries() {
        let trail = br#"{"Records":[{"eventID":"t-1","eventTime":"2026-11-21T12:00:00Z","eventName":"PutObject"},{"eventTime":"2026-11-21T12:00:01Z"}]}"#;
        let records = many(parser().parse(trail, at(1)).unwrap());
        assert_eq!(records[0].log_id, "t-1");
        assert_eq!(json(&records[0])["@timestamp"], "2026-11-21T12:00:00Z");
        assert_eq!(json(&records[0])["eventName"], "PutObject");
        assert_eq!(records[1].timestamp_ms, Some(1_795_262_401_000));
        assert_eq!(json(&records[1])["log_id"], records[1].log_id.as_ref());
    }

    #[test]
    fn lookalikes_of_containers_are_ordinary_records() {
        let p = parser();
        for line in [
            &br#"{"messageType":"ORDER_CREATED","order":7}"#[..],
            br#"{"Records":[]}"#,
            br#"{"detail-type":"x","id":"shared","note":"no envelope"}"#,
        ] {
            let r = one(p.parse(line, at(1)).unwrap());
            assert!(r.id_generated, "{}", String::from_utf8_lossy(line));
            assert_eq!(&r.json[..], line);
        }
    }

    #[test]
    fn only_strings_and_numbers_are_ids() {
        let p = parser();
        let id = |line: &[u8]| {
            let r = one(p.parse(line, at(1)).unwrap());
            (r.log_id.into_owned(), r.id_generated)
        };
        assert_eq!(id(br#"{"log_id":12345}"#), ("12345".to_owned(), false));
        let (null_id, generated) = id(br#"{"log_id":null,"m":1}"#);
        assert!(!generated, "the record keeps its own log_id field");
        assert_ne!(null_id, id(br#"{"log_id":null,"m":2}"#).0);
        assert!(uuid::Uuid::parse_str(&id(br#"{"log_id":{"a":"b"}}"#).0).is_ok());
        let long = format!(r#"{{"log_id":"{}"}}"#, "x".repeat(600));
        let (long_id, generated) = id(long.as_bytes());
        assert!(!generated);
        assert_eq!(long_id, id(long.as_bytes()).0);
        assert!(uuid::Uuid::parse_str(&long_id).is_ok());
    }

    #[test]
    fn eventbridge_envelopes_take_id_and_time() {
        let event = br#"{"version":"0","id":"ev-1","detail-type":"x","source":"s","time":"2026-11-21T12:00:00Z","detail":{"a":1}}"#;
        let r = one(parser().parse(event, at(1)).unwrap());
        assert_eq!(r.log_id, "ev-1");
        assert!(!r.id_generated);
        assert_eq!(json(&r)["@timestamp"], "2026-11-21T12:00:00Z");
        assert_eq!(json(&r)["detail"]["a"], 1);
    }

    #[test]
    fn eventbridge_envelopes_keep_their_id_when_time_is_the_timestamp_field() {
        let event = br#"{"version":"0","id":"ev-1","detail-type":"x","source":"s","time":"2026-11-21T12:00:00Z","detail":{"a":1}}"#;
        let p = RecordParser::new(&ParserOptions {
            timestamp_field: "time",
            ..Default::default()
        });
        let r = one(p.parse_line(event, at(1)).unwrap());
        assert_eq!((r.log_id.as_ref(), r.id_generated), ("ev-1", false));
        assert_eq!(r.timestamp_ms, Some(1_795_262_400_000));
        assert_eq!(json(&r)["time"], "2026-11-21T12:00:00Z");
        assert_eq!(json(&r).as_object().unwrap().len(), 7);
    }

    #[test]
    fn min_level_filters_with_aliases_and_ecs_fallback() {
        let p = parser_with(&[], Some("WARN"));
        let kept = |line: &[u8]| !matches!(p.parse(line, at(1)).unwrap(), Parsed::Filtered);
        assert!(kept(br#"{"level":"ERROR"}"#));
        assert!(kept(br#"{"level":"warning"}"#));
        assert!(kept(br#"{"level":"Fatal"}"#));
        assert!(!kept(br#"{"level":"info"}"#));
        assert!(!kept(br#"{"log.level":"debug"}"#));
        assert!(!kept(br#"{"log":{"level":"INFO"}}"#));
        assert!(kept(br#"{"log":{"level":"crit"}}"#));
        assert!(kept(br#"{"message":"no level"}"#));
        assert!(kept(br#"{"level":"unknown-level"}"#));
        // pino and bunyan write numbers.
        assert!(!kept(br#"{"level":30}"#));
        assert!(kept(br#"{"level":40}"#));
        assert!(kept(br#"{"level":60}"#));
        assert!(kept(br#"{"level":35}"#));
    }
}
