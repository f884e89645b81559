//! Elasticsearch / OpenSearch `_bulk` sink.
//!
//! Each record is a `create` (or `index`) action with `_id` = log_id, so the
//! second copy of a record merges with the first. The HTTP status of `_bulk`
//! says almost nothing: every item of the response is read.
//!
//! The response is asked for only what drsink reads of each item
//! (`filter_path`, as Beats and Logstash do): a cluster's full item repeats
//! the index, id, version, shards and sequence number, about 190 bytes per
//! record, which is as much response to read as a third of the logs sent.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::auth::EsConnection;
use super::{write_json_str, Encoder, ItemOutcome, SendError, Sink};
use crate::cli::EsAction;
use crate::notification::ObjectRef;
use crate::records::Record;
use crate::redact::{transport_error, url as redact};
use crate::routing::{IndexPattern, Router};

pub struct Elasticsearch {
    client: reqwest::Client,
    connection: EsConnection,
    base: reqwest::Url,
    action: EsAction,
    indices: IndexPattern,
    /// Whether `_bulk` asks for the filtered response; turned off for good
    /// when a request refused with `filter_path` is taken without it (a proxy
    /// or a compatible store that knows only the bulk API itself).
    filter_responses: AtomicBool,
}

impl Elasticsearch {
    pub fn new(
        url: &str,
        action: EsAction,
        timeout: Duration,
        indices: IndexPattern,
    ) -> Result<Self, String> {
        Self::with_connection(url, action, timeout, indices, EsConnection::default())
    }

    /// A sink with credentials and TLS settings (`--es-username`, `--es-aws-sigv4`, …).
    pub fn with_connection(
        url: &str,
        action: EsAction,
        timeout: Duration,
        indices: IndexPattern,
        connection: EsConnection,
    ) -> Result<Self, String> {
        let base = super::base_url("--es-url", url)?;
        let client = connection.client(timeout)?;
        Ok(Elasticsearch {
            client,
            connection,
            base,
            action,
            indices,
            filter_responses: AtomicBool::new(true),
        })
    }

    fn endpoint(&self, path: &str) -> reqwest::Url {
        super::endpoint(&self.base, path)
    }

    fn describe(&self) -> String {
        redact(self.base.as_str())
    }

    /// Sends a request with this sink's credentials (or SigV4 signature).
    async fn execute(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        let mut request = request.build().map_err(transport_error)?;
        self.connection.authorize(&mut request).await?;
        self.client.execute(request).await.map_err(transport_error)
    }

    /// What the start-up check and `/readyz` ask: `GET /`, or on OpenSearch
    /// Serverless (which has no `GET /`) the index names.
    fn probe(&self) -> reqwest::Url {
        match self.connection.is_serverless() {
            true => {
                let mut url = self.endpoint("_cat/indices");
                url.set_query(Some("h=index"));
                url
            }
            false => self.base.clone(),
        }
    }

    /// Whether the cluster is OpenSearch Serverless.
    pub fn is_serverless(&self) -> bool {
        self.connection.is_serverless()
    }

    /// One administrative request (`drsink setup`, `drsink check`) with this
    /// sink's client and credentials: the HTTP status and the JSON body
    /// (`null` when the body is empty or not JSON).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut request = self.client.request(method.clone(), self.endpoint(path));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = self
            .execute(request)
            .await
            .map_err(|e| format!("{method} /{path} to {} failed: {e}", self.describe()))?;
        let status = response.status().as_u16();
        let text = response.bytes().await.map_err(|e| {
            format!(
                "reading the answer to {method} /{path} from {} failed: {}",
                self.describe(),
                transport_error(e)
            )
        })?;
        Ok((status, serde_json::from_slice(&text).unwrap_or(Value::Null)))
    }

    /// The cluster's URL without credentials, for messages.
    pub fn display_url(&self) -> String {
        self.describe()
    }
}

struct EsEncoder {
    action: &'static [u8],
    router: Router,
    /// `"drsink":{"source":"s3://bucket/key","line":` — where every
    /// document came from, so an operator can trace it to its archive object.
    origin: Vec<u8>,
    /// The previous record's index, and its action line up to the id:
    /// records of one object nearly always share it.
    index: String,
    prefix: Vec<u8>,
}

impl Encoder for EsEncoder {
    fn encode(&mut self, record: &Record<'_>, out: &mut Vec<u8>) -> Range<usize> {
        let index = self.router.index_for(record.timestamp_ms);
        if index != self.index || self.prefix.is_empty() {
            self.index.clear();
            self.index.push_str(index);
            self.prefix.clear();
            self.prefix.extend_from_slice(self.action);
            write_json_str(&mut self.prefix, index);
            self.prefix.extend_from_slice(b",\"_id\":");
        }
        out.extend_from_slice(&self.prefix);
        write_id(out, record);
        out.extend_from_slice(b"}}\n");
        let start = out.len();
        // Fields are spliced in front of the record's own rather than
        // re-serializing the record.
        out.push(b'{');
        if !record.has_origin {
            out.extend_from_slice(&self.origin);
            out.extend_from_slice(itoa::Buffer::new().format(record.position.line).as_bytes());
            if let Some(entry) = record.position.entry {
                out.extend_from_slice(b",\"entry\":");
                out.extend_from_slice(itoa::Buffer::new().format(entry).as_bytes());
            }
            out.extend_from_slice(b"},");
        }
        if record.id_generated {
            out.extend_from_slice(b"\"log_id\":");
            write_id(out, record);
            out.push(b',');
        }
        let rest = &record.json[1..];
        if rest.trim_ascii_start().starts_with(b"}") && out.last() == Some(&b',') {
            out.pop();
        }
        out.extend_from_slice(rest);
        let end = out.len();
        out.push(b'\n');
        start..end
    }
}

/// A generated id is a UUID, and a borrowed one is the record's own JSON
/// string without escapes (the scanner rejects raw control characters) or a
/// bare number: none needs escaping.
fn write_id(out: &mut Vec<u8>, record: &Record<'_>) {
    if record.id_generated || matches!(record.log_id, std::borrow::Cow::Borrowed(_)) {
        out.push(b'"');
        out.extend_from_slice(record.log_id.as_bytes());
        out.push(b'"');
    } else {
        write_json_str(out, &record.log_id);
    }
}

#[derive(Deserialize)]
struct BulkResponse<'a> {
    #[serde(borrow)]
    items: Vec<BulkItem<'a>>,
}

#[derive(Deserialize)]
enum BulkItem<'a> {
    #[serde(rename = "create", borrow)]
    Create(ItemResult<'a>),
    #[serde(rename = "index", borrow)]
    Index(ItemResult<'a>),
}

#[derive(Deserialize)]
struct ItemResult<'a> {
    status: u16,
    #[serde(default)]
    result: Option<Written>,
    /// Left as text until an outcome needs it: in a failover most items are
    /// duplicates, each with an error that says only that.
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

/// An item's `result`, as far as it tells a duplicate.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Written {
    /// `index` over an existing document.
    Updated,
    /// Nothing written: the same document again, or dropped by an ingest
    /// pipeline (then with either action).
    Noop,
    #[serde(other)]
    Other,
}

/// The fields of each item `classify` reads.
const FILTER_PATH: &str = "items.*.status,items.*.result,items.*.error";

/// Errors that pass when the cluster has caught up.
const TRANSIENT_TYPES: &[&str] = &[
    "es_rejected_execution_exception",
    "rejected_execution_exception",
    "circuit_breaking_exception",
    "unavailable_shards_exception",
    "cluster_block_exception",
    "process_cluster_event_timeout_exception",
];

fn classify(action: EsAction, item: &ItemResult<'_>) -> ItemOutcome {
    match item.status {
        200..=299 if matches!(item.result, Some(Written::Updated | Written::Noop)) => {
            return ItemOutcome::Duplicate
        }
        200..=299 => return ItemOutcome::Indexed,
        409 if action == EsAction::Create => return ItemOutcome::Duplicate,
        _ => {}
    }
    let error: Option<Value> = item
        .error
        .and_then(|raw| serde_json::from_str(raw.get()).ok());
    let error_type = error
        .as_ref()
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str);
    match item.status {
        // An index made read-only (ILM/ISM `readonly`, a shrink, or by hand)
        // takes none of the late records meant for it: holding their
        // messages would wedge the queue for good. The other blocks pass (a
        // full disk's read-only-allow-delete, 429) or concern every record
        // alike (the cluster read-only, 403 below).
        403 if error
            .as_ref()
            .and_then(block_reason)
            .is_some_and(blocks_index_writes) =>
        {
            ItemOutcome::Reject(error.unwrap_or_default())
        }
        // Permissions or a missing index (auto-create off) concern every
        // record alike: hold the messages until the cluster is fixed rather
        // than dead-letter everything.
        401 | 403 | 404 => ItemOutcome::Retry(
            error_type
                .unwrap_or("forbidden or missing index")
                .to_owned(),
        ),
        // The status leads, so the retry is counted as throttled or as a
        // server error whatever the type says.
        429 | 500..=599 => ItemOutcome::Retry(format!(
            "HTTP {}: {}",
            item.status,
            error_type.unwrap_or("server error")
        )),
        _ if error_type.is_some_and(|t| TRANSIENT_TYPES.contains(&t)) => {
            ItemOutcome::Retry(error_type.unwrap_or_default().to_owned())
        }
        status => ItemOutcome::Reject(error.unwrap_or_else(|| json!({ "status": status }))),
    }
}

/// The reason of a whole-request `cluster_block_exception`: a read-only
/// cluster (`cluster.blocks.read_only`) answers `_bulk` with a 403 of its
/// own, which is an operator's pause, not a credentials problem.
fn cluster_block(body: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(body).ok()?;
    block_reason(body.get("error")?).map(str::to_owned)
}

/// The reason of an error that is a `cluster_block_exception`.
fn block_reason(error: &Value) -> Option<&str> {
    (error.get("type")?.as_str()? == "cluster_block_exception").then(|| {
        error
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("blocked")
    })
}

/// Whether a block is one on writes to its index (`index.blocks.write`,
/// `index.blocks.read_only`), as Elasticsearch and OpenSearch name them.
fn blocks_index_writes(reason: &str) -> bool {
    reason.contains("index write (api)") || reason.contains("index read-only (api)")
}

#[async_trait]
impl Sink for Elasticsearch {
    fn parses_each_document(&self) -> bool {
        true
    }

    fn encoder(&self, object: &ObjectRef) -> Box<dyn Encoder> {
        let mut origin = b"\"drsink\":{\"source\":".to_vec();
        write_json_str(&mut origin, &object.to_string());
        origin.extend_from_slice(b",\"line\":");
        Box::new(EsEncoder {
            origin,
            action: match self.action {
                EsAction::Create => b"{\"create\":{\"_index\":",
                EsAction::Index => b"{\"index\":{\"_index\":",
            },
            router: self.indices.router(),
            index: String::new(),
            prefix: Vec::new(),
        })
    }

    async fn send(&self, body: Bytes, items: usize) -> Result<Vec<ItemOutcome>, SendError> {
        let asked = self.filter_responses.load(Ordering::Relaxed);
        let mut filtered = asked;
        let (status, text) = loop {
            let mut url = self.endpoint("_bulk");
            if filtered {
                url.query_pairs_mut()
                    .append_pair("filter_path", FILTER_PATH);
            }
            let request = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone());
            let response = self.execute(request).await.map_err(SendError::Transient)?;
            let status = response.status();
            let text = response
                .bytes()
                .await
                .map_err(|e| SendError::Transient(transport_error(e)))?;
            // A server that does not take the parameter may not say so (a
            // proxy's bare 400): the same request once more without it tells.
            // Nothing was written by a request refused whole.
            if filtered && status.as_u16() == 400 {
                filtered = false;
                continue;
            }
            break (status, text);
        };
        if asked
            && !filtered
            && status.is_success()
            && self.filter_responses.swap(false, Ordering::Relaxed)
        {
            tracing::warn!(
                "{} refused a bulk request with filter_path and took it without; bulk responses are read whole from now on",
                self.describe()
            );
        }
        if status.as_u16() == 403 {
            if let Some(reason) = cluster_block(&text) {
                return Err(SendError::Transient(format!(
                    "{} takes no writes for now: {reason} (retrying until the block is lifted)",
                    self.describe()
                )));
            }
        }
        match status.as_u16() {
            200..=299 => {}
            413 => {
                return Err(SendError::Refused(format!(
                    "too large for {} (HTTP 413)",
                    self.describe()
                )))
            }
            // A record that makes the whole request unparsable (the rest of
            // the batch is fine): splitting finds it.
            400 => {
                return Err(SendError::Refused(format!(
                    "{} answered HTTP 400: {}",
                    self.describe(),
                    String::from_utf8_lossy(&text[..text.len().min(300)])
                )))
            }
            408 | 429 | 500..=599 => {
                return Err(SendError::Transient(format!(
                    "HTTP {status} from {}",
                    self.describe()
                )))
            }
            401 | 403 => {
                return Err(SendError::Fatal(format!(
                    "{} refused the request (HTTP {status}): check the credentials and permissions",
                    self.describe()
                )))
            }
            _ => {
                return Err(SendError::Fatal(format!(
                    "{} answered HTTP {status} to a bulk request: {}",
                    self.describe(),
                    String::from_utf8_lossy(&text[..text.len().min(300)])
                )))
            }
        }
        let parsed: BulkResponse = serde_json::from_slice(&text).map_err(|e| {
            SendError::Transient(format!(
                "unreadable bulk response from {}: {e}",
                self.describe()
            ))
        })?;
        if parsed.items.len() != items {
            return Err(SendError::Transient(format!(
                "bulk response from {} has {} items for {items} sent",
                self.describe(),
                parsed.items.len()
            )));
        }
        Ok(parsed
            .items
            .iter()
            .map(|item| match item {
                BulkItem::Create(r) | BulkItem::Index(r) => classify(self.action, r),
            })
            .collect())
    }

    async fn check(&self) -> Result<(), String> {
        let response = self
            .execute(self.client.get(self.probe()))
            .await
            .map_err(|e| {
                // With TLS 1.3 a server that demands a client certificate
                // rejects it after the handshake, so the client may only
                // see the connection close.
                let hint = if self.base.scheme() == "https"
                    && !self.connection.has_client_certificate()
                {
                    " (if the server requires a TLS client certificate, pass --es-client-cert and --es-client-key)"
                } else {
                    ""
                };
                format!("cannot reach {}: {e}{hint}", self.describe())
            })?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(format!(
                "{} answered HTTP {status}; check --es-url and the credentials",
                self.describe()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Position;

    /// How an item the cluster answered with these fields is classified.
    fn outcome(
        action: EsAction,
        status: u16,
        result: Option<&str>,
        error: Option<Value>,
    ) -> ItemOutcome {
        let text = json!({ "status": status, "result": result, "error": error }).to_string();
        let item: ItemResult = serde_json::from_str(&text).expect("an item");
        classify(action, &item)
    }

    #[test]
    fn bulk_items_are_classified_by_status_and_error_type() {
        use ItemOutcome::*;
        let c = EsAction::Create;
        assert_eq!(outcome(c, 201, Some("created"), None), Indexed);
        assert_eq!(outcome(c, 201, None, None), Indexed);
        // Dropped by an ingest pipeline: nothing written, whatever the action.
        assert_eq!(outcome(c, 200, Some("noop"), None), Duplicate);
        assert_eq!(
            outcome(
                c,
                409,
                None,
                Some(json!({"type": "version_conflict_engine_exception"}))
            ),
            Duplicate
        );
        assert_eq!(
            outcome(EsAction::Index, 200, Some("updated"), None),
            Duplicate
        );
        assert_eq!(
            outcome(
                c,
                429,
                None,
                Some(json!({"type": "es_rejected_execution_exception"}))
            ),
            Retry("HTTP 429: es_rejected_execution_exception".into())
        );
        assert_eq!(
            outcome(c, 503, None, None),
            Retry("HTTP 503: server error".into())
        );
        let mapping =
            json!({"type": "mapper_parsing_exception", "reason": "failed to parse field"});
        assert_eq!(
            outcome(c, 400, None, Some(mapping.clone())),
            Reject(mapping)
        );
    }

    #[test]
    fn whole_and_filtered_responses_read_alike() {
        use ItemOutcome::*;
        // As Elasticsearch 8 answers without filter_path, and with drsink's.
        let whole = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"logs-2026.11.22","_id":"a","_version":1,"result":"created","_shards":{"total":2,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}},
            {"create":{"_index":"logs-2026.11.22","_id":"b","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[b]: version conflict, document already exists (current version [1])","index_uuid":"x","shard":"0","index":"logs-2026.11.22"}}},
            {"create":{"_index":"logs-2026.11.22","_id":"c","status":400,"error":{"type":"document_parsing_exception","reason":"[1:9] failed to parse field [n] of type [long]","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"x\""}}}}]}"#;
        let filtered = br#"{"items":[{"create":{"status":201}},{"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"[b]: version conflict"}}},{"create":{"status":400,"error":{"type":"document_parsing_exception","reason":"[1:9] failed to parse field [n] of type [long]"}}}]}"#;
        for body in [&whole[..], &filtered[..]] {
            let parsed: BulkResponse = serde_json::from_slice(body).expect("a bulk response");
            let outcomes: Vec<ItemOutcome> = parsed
                .items
                .iter()
                .map(|(BulkItem::Create(r) | BulkItem::Index(r))| classify(EsAction::Create, r))
                .collect();
            assert!(matches!(
                &outcomes[..],
                [Indexed, Duplicate, Reject(error)] if error["type"] == "document_parsing_exception"
            ));
        }
    }

    #[test]
    fn a_whole_request_cluster_block_is_told_from_a_refusal() {
        let body = br#"{"error":{"root_cause":[],"type":"cluster_block_exception","reason":"blocked by: [FORBIDDEN/6/cluster read-only (api)];"},"status":403}"#;
        assert_eq!(
            cluster_block(body).as_deref(),
            Some("blocked by: [FORBIDDEN/6/cluster read-only (api)];")
        );
        let denied = br#"{"error":{"type":"security_exception","reason":"action [indices:data/write/bulk] is unauthorized"},"status":403}"#;
        assert_eq!(cluster_block(denied), None);
        assert_eq!(cluster_block(b"<html>Forbidden</html>"), None);
    }

    #[test]
    fn only_blocks_on_an_index_s_writes_reject_its_records() {
        use ItemOutcome::*;
        let block = |status: u16, reason: &str| {
            let error = json!({"type": "cluster_block_exception", "reason": reason});
            (
                outcome(EsAction::Create, status, None, Some(error.clone())),
                error,
            )
        };
        for reason in [
            "index [logs-2026.11.20] blocked by: [FORBIDDEN/8/index write (api)];",
            "index [logs-2026.11.20] blocked by: [FORBIDDEN/5/index read-only (api)];",
        ] {
            let (outcome, error) = block(403, reason);
            assert_eq!(outcome, Reject(error));
        }
        let retried = Retry("cluster_block_exception".into());
        let full_disk = "index [l] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];";
        assert_eq!(
            block(429, full_disk).0,
            Retry("HTTP 429: cluster_block_exception".into())
        );
        assert_eq!(
            block(403, "blocked by: [FORBIDDEN/6/cluster read-only (api)];").0,
            retried
        );
    }

    fn encode(record: Record<'_>) -> (String, String) {
        let sink = Elasticsearch::new(
            "http://u:secret@localhost:9200",
            EsAction::Create,
            Duration::from_secs(1),
            IndexPattern::new("logs-%Y.%m.%d", "logs-undated").unwrap(),
        )
        .unwrap();
        let object = ObjectRef::new("b", "k");
        let mut out = Vec::new();
        let doc = sink.encoder(&object).encode(&record, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        (text, String::from_utf8(out[doc].to_vec()).unwrap())
    }

    fn record(log_id: &str, id_generated: bool, json: &'static [u8]) -> Record<'static> {
        Record {
            log_id: log_id.to_owned().into(),
            id_generated,
            timestamp_ms: Some(1_795_305_599_000),
            json: json.into(),
            position: Position::line(7),
            has_origin: false,
        }
    }

    #[test]
    fn encodes_create_actions_with_origin_and_given_ids() {
        let (text, doc) = encode(record("a\"1", false, br#"{"log_id":"a\"1"}"#));
        assert_eq!(
            text,
            format!(
                "{{\"create\":{{\"_index\":\"logs-2026.11.21\",\"_id\":\"a\\\"1\"}}}}\n{doc}\n"
            )
        );
        assert_eq!(
            doc,
            r#"{"drsink":{"source":"s3://b/k","line":7},"log_id":"a\"1"}"#
        );
    }

    #[test]
    fn splices_generated_ids_and_container_entries() {
        let (_, doc) = encode(record("g", true, br#"{"msg":"x"}"#));
        assert_eq!(
            doc,
            r#"{"drsink":{"source":"s3://b/k","line":7},"log_id":"g","msg":"x"}"#
        );
        let mut empty = record("g", true, b"{ }");
        empty.timestamp_ms = None;
        empty.position.entry = Some(2);
        let (text, doc) = encode(empty);
        assert_eq!(
            doc,
            r#"{"drsink":{"source":"s3://b/k","line":7,"entry":2},"log_id":"g" }"#
        );
        assert!(text.contains("logs-undated"));
    }

    #[test]
    fn redriven_records_keep_their_origin() {
        let mut again = record(
            "g",
            false,
            br#"{"drsink":{"source":"s3://a/b","line":1},"log_id":"g"}"#,
        );
        again.has_origin = true;
        let (_, doc) = encode(again);
        assert_eq!(
            doc,
            r#"{"drsink":{"source":"s3://a/b","line":1},"log_id":"g"}"#
        );
    }

    #[test]
    fn a_redriven_record_with_an_unusable_log_id_keeps_its_fingerprint() {
        use crate::records::{Parsed, ParserOptions, RecordParser};
        let parser = RecordParser::new(&ParserOptions::default());
        let one = |text: &[u8]| match parser.parse(text, Position::line(3)) {
            Ok(Parsed::One(record)) => record.log_id.into_owned(),
            other => panic!("{other:?}"),
        };
        for line in [
            &br#"{"log_id":null,"msg":"same log"}"#[..],
            br#"{ "log_id": "", "n": [1] }"#,
            br#"{"log_id":{}}"#,
        ] {
            let Ok(Parsed::One(first)) = parser.parse(line, Position::line(3)) else {
                panic!("{line:?}");
            };
            assert!(!first.id_generated, "the record keeps its own log_id field");
            let (_, document) = encode(first.clone());
            assert!(document.starts_with(r#"{"drsink":"#), "{document}");
            assert_eq!(one(document.as_bytes()), first.log_id, "{document}");
        }
    }

    #[test]
    fn messages_never_show_credentials() {
        assert_eq!(
            redact("http://u:secret@localhost:9200/"),
            "http://(redacted)@localhost:9200/"
        );
    }
}
