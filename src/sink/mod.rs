//! Stage 6: the sink, behind one small trait.
//!
//! A sink only encodes records and sends one request, saying per item what
//! happened. Batching, retries, dead letters and acknowledgement are shared
//! (see `delivery`), so every sink gets them alike.

pub mod auth;
pub mod elasticsearch;
pub mod splunk;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use crate::notification::ObjectRef;
use crate::records::Record;
use crate::redact;

/// What became of one item of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOutcome {
    /// Written for the first time.
    Indexed,
    /// Already there under the same log_id: also done.
    Duplicate,
    /// Failed for a reason that passes (throttling, an unavailable shard).
    Retry(String),
    /// Can never be written as it is: goes to the dead-letter store with the
    /// server's error.
    Reject(serde_json::Value),
}

/// Why a whole request failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: connection refused, timeout, 5xx, 429.
    #[error("{0}")]
    Transient(String),
    /// The sink refused the whole request because of something in it
    /// (413 too large, 400 unparsable): the batch is split until the record
    /// at fault is alone, and that one is dead-lettered with this reason.
    #[error("{0}")]
    Refused(String),
    /// Retrying cannot help (bad credentials, wrong URL): stop the worker.
    #[error("{0}")]
    Fatal(String),
}

/// Writes one record's entry into a request body.
pub trait Encoder: Send {
    /// Appends the record's entry to `out` and returns where its document lies.
    fn encode(&mut self, record: &Record<'_>, out: &mut Vec<u8>) -> Range<usize>;
}

#[async_trait]
pub trait Sink: Send + Sync {
    /// An encoder for the records of one object.
    fn encoder(&self, object: &ObjectRef) -> Box<dyn Encoder>;

    /// Sends one request body of `items` entries; the outcomes are in the
    /// order of the entries.
    async fn send(&self, body: Bytes, items: usize) -> Result<Vec<ItemOutcome>, SendError>;

    /// Whether the server parses every document of a request on its own and
    /// rejects a malformed one alone (Elasticsearch's `_bulk`, one document
    /// per line). drsink then only skims each record for the fields it
    /// needs and leaves the rest of the grammar to the server; a sink whose
    /// documents share one JSON stream (Splunk HEC) needs each record
    /// checked whole, or a malformed one could swallow its neighbours.
    fn parses_each_document(&self) -> bool {
        false
    }

    /// Checks at start that the sink can be reached, so a wrong URL fails
    /// fast with a clear message.
    async fn check(&self) -> Result<(), String>;
}

/// The base URL given to `flag`: valid, and `http://` or `https://`.
fn base_url(flag: &str, url: &str) -> Result<reqwest::Url, String> {
    let base = reqwest::Url::parse(url)
        .map_err(|e| format!("{flag} `{}` is not a valid URL: {e}", redact::url(url)))?;
    match base.scheme() {
        "http" | "https" => Ok(base),
        scheme => Err(format!(
            "{flag} `{}` must be an http:// or https:// URL, not {scheme}://",
            redact::url(url)
        )),
    }
}

/// `path` under a base URL that may itself have a path (a proxy prefix).
fn endpoint(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut url = base.clone();
    let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// Appends `text` as a JSON string, copying it as it is when nothing in it
/// needs escaping (the common case for ids and index names).
fn write_json_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}
