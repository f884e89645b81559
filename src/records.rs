//! Stage 4b: a line → a record: its `log_id`, its event time and its original
//! JSON text.
//!
//! Only the few top-level fields needed are located (see `json_scan`); the
//! record's bytes are passed on untouched, never parsed into a tree and
//! re-serialized.

use std::borrow::Cow;

use chrono::DateTime;
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::json_scan::{decode_string, scan_object, ScanError};

/// Namespace of drsink's content fingerprints (UUID v5). Changing it would
/// change every generated log_id and break deduplication against data
/// already indexed.
const FINGERPRINT_NAMESPACE: Uuid = Uuid::from_u128(0x6d2f_1c4e_8a4b_5d7e_9f10_2b3c_4d5e_6f70);

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub log_id: Cow<'a, str>,
    /// True when `log_id` is a fingerprint that the document does not carry
    /// yet; the sink adds it.
    pub id_generated: bool,
    /// Event time in epoch milliseconds, when the record has a usable one.
    pub timestamp_ms: Option<i64>,
    /// The record's JSON object text, trimmed.
    pub json: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("invalid UTF-8 at byte {0} of the line")]
    NotUtf8(usize),
    #[error("not a JSON object: {0}")]
    NotObject(ScanError),
}

/// How records are read: which field holds the event time, and what the
/// fingerprint of a record without `log_id` covers.
pub struct RecordParser {
    /// `log_id`, the timestamp field, then the fingerprint fields.
    wanted: Vec<Vec<u8>>,
}

const LOG_ID: usize = 0;
const TIMESTAMP: usize = 1;
const ID_FIELDS: usize = 2;

impl RecordParser {
    pub fn new(timestamp_field: &str, id_fields: &[String]) -> Self {
        let mut wanted = vec![b"log_id".to_vec(), timestamp_field.as_bytes().to_vec()];
        wanted.extend(id_fields.iter().map(|f| f.as_bytes().to_vec()));
        RecordParser { wanted }
    }

    /// Parses one line; `Ok(None)` for a blank line.
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<Option<Record<'a>>, RecordError> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(None);
        }
        simdutf8::compat::from_utf8(line).map_err(|e| RecordError::NotUtf8(e.valid_up_to()))?;

        let wanted: Vec<&[u8]> = self.wanted.iter().map(Vec::as_slice).collect();
        let mut found = vec![None; wanted.len()];
        scan_object(line, &wanted, &mut found).map_err(RecordError::NotObject)?;

        let given_id = found[LOG_ID].and_then(|raw| match decode_string(raw) {
            Some(id) if !id.is_empty() => Some(id),
            Some(_) => None,
            // A non-string id (say, a number) is used as written.
            None => std::str::from_utf8(raw).ok().map(Cow::Borrowed),
        });
        let (log_id, id_generated) = match given_id {
            Some(id) => (id, false),
            None => (
                Cow::Owned(self.fingerprint(line, &found[ID_FIELDS..])),
                // A record whose `log_id` is present but unusable (empty)
                // keeps its own field: adding another would duplicate the key.
                found[LOG_ID].is_none(),
            ),
        };
        Ok(Some(Record {
            log_id,
            id_generated,
            timestamp_ms: found[TIMESTAMP].and_then(parse_timestamp),
            json: line,
        }))
    }

    /// A UUID v5 of the record's content only, so the copy of a line read
    /// from the other region's object gets the same id.
    fn fingerprint(&self, line: &[u8], fields: &[Option<&[u8]>]) -> String {
        let mut hasher = Sha1::new();
        hasher.update(FINGERPRINT_NAMESPACE.as_bytes());
        if fields.is_empty() {
            hasher.update(line);
        } else {
            for (name, value) in self.wanted[ID_FIELDS..].iter().zip(fields) {
                hasher.update(name);
                hasher.update([0]);
                // A missing field differs from every JSON value.
                hasher.update(value.unwrap_or(b"\x01"));
                hasher.update([0]);
            }
        }
        let digest: [u8; 20] = hasher.finalize().into();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_sha1_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
    }
}

/// RFC 3339 text, or epoch milliseconds as a JSON number.
fn parse_timestamp(raw: &[u8]) -> Option<i64> {
    if let Some(text) = decode_string(raw) {
        return DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|t| t.timestamp_millis());
    }
    let text = std::str::from_utf8(raw).ok()?;
    match text.parse::<i64>() {
        Ok(ms) => Some(ms),
        Err(_) => text
            .parse::<f64>()
            .ok()
            .filter(|ms| ms.is_finite() && ms.abs() < 1e17)
            .map(|ms| ms as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> RecordParser {
        RecordParser::new("@timestamp", &[])
    }

    #[test]
    fn given_log_id_is_used_and_not_added_again() {
        let r = parser()
            .parse(br#" {"log_id":"a-1","@timestamp":"2026-11-21T23:59:59Z"} "#)
            .unwrap()
            .unwrap();
        assert_eq!(r.log_id, "a-1");
        assert!(!r.id_generated);
        assert_eq!(r.timestamp_ms, Some(1_795_305_599_000));
        assert_eq!(
            r.json,
            br#"{"log_id":"a-1","@timestamp":"2026-11-21T23:59:59Z"}"#
        );
    }

    #[test]
    fn fingerprint_depends_on_content_only_and_is_a_uuid_v5() {
        let p = parser();
        let a = p.parse(br#"{"msg":"x"}"#).unwrap().unwrap();
        let b = p.parse(b"  {\"msg\":\"x\"}\r").unwrap().unwrap();
        let c = p.parse(br#"{"msg":"y"}"#).unwrap().unwrap();
        assert!(a.id_generated);
        assert_eq!(a.log_id, b.log_id);
        assert_ne!(a.log_id, c.log_id);
        let id = Uuid::parse_str(&a.log_id).unwrap();
        assert_eq!(id.get_version_num(), 5);
    }

    #[test]
    fn id_fields_limit_the_fingerprint() {
        let p = RecordParser::new("@timestamp", &["host".into(), "seq".into()]);
        let a = p
            .parse(br#"{"host":"h","seq":1,"received":"t1"}"#)
            .unwrap()
            .unwrap();
        let b = p
            .parse(br#"{"received":"t2","seq":1,"host":"h"}"#)
            .unwrap()
            .unwrap();
        let c = p.parse(br#"{"host":"h","seq":2}"#).unwrap().unwrap();
        assert_eq!(a.log_id, b.log_id);
        assert_ne!(a.log_id, c.log_id);
    }

    #[test]
    fn timestamps_in_rfc3339_and_epoch_millis() {
        let p = parser();
        let ts = |line: &[u8]| p.parse(line).unwrap().unwrap().timestamp_ms;
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
        assert_eq!(p.parse(b"  \r").unwrap(), None);
        assert!(matches!(
            p.parse(b"plain text"),
            Err(RecordError::NotObject(_))
        ));
        assert!(matches!(
            p.parse(br#"{"a":"b"#),
            Err(RecordError::NotObject(_))
        ));
        assert_eq!(p.parse(b"{\"a\":\"\xff\"}"), Err(RecordError::NotUtf8(6)));
    }
}
