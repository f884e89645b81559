//! Splunk HTTP Event Collector sink, deduplicated by a ledger.
//!
//! Splunk cannot merge two copies of an event by id, so this sink looks
//! every log_id up in the dedup ledger (`crate::ledger`) before it sends,
//! and records it only once Splunk accepted the event (acknowledged it,
//! with `--hec-ack`). The README says exactly what that guarantees.
//!
//! Each entry of a batch is one line, one HEC event object with the log_id
//! first, so the sink reads the ids back from the body it is handed:
//!
//! `{"fields":{"log_id":"…"},"time":1795305599.000,"host":…,"source":"s3://b/k","event":{…the record…}}`

use std::collections::{BTreeSet, HashSet};
use std::io::Write as _;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{write_json_str, Encoder, ItemOutcome, SendError, Sink};
use crate::cli::HecArgs;
use crate::json_scan::scan_object;
use crate::ledger::{self, Ledger, LedgerOptions, Verdict};
use crate::notification::ObjectRef;
use crate::records::Record;
use crate::redact::{transport_error, url as redact, Secret};

const EVENT_PATH: &str = "services/collector/event";
const ACK_PATH: &str = "services/collector/ack";
const HEALTH_PATH: &str = "services/collector/health";

/// What to do when something that is not HEC answered.
const CHECK_HEC_URL: &str = "check --hec-url (the HEC base URL, usually port 8088; a redirect \
                             or a page of another server is not HEC)";
const CHANNEL_HEADER: &str = "X-Splunk-Request-Channel";
/// What every entry starts with; the log_id's JSON string follows.
const ENTRY_START: &[u8] = b"{\"fields\":{\"log_id\":";

/// How the sink is set up.
pub struct Settings {
    pub url: String,
    pub token: Secret,
    pub index: Option<String>,
    pub sourcetype: Option<String>,
    pub source: Option<String>,
    pub ack: bool,
    pub compress: bool,
    pub timeout: Duration,
    pub ack_timeout: Duration,
    /// Trusted besides the built-in roots (`--hec-ca-cert`).
    pub ca_certs: Vec<reqwest::Certificate>,
}

pub struct SplunkHec {
    client: reqwest::Client,
    base: reqwest::Url,
    auth: HeaderValue,
    token: Secret,
    channel: String,
    index: Option<String>,
    sourcetype: Option<String>,
    source: Option<String>,
    ack: bool,
    compress: bool,
    /// `--hec-timeout`, the longest one request may take.
    timeout: Duration,
    ack_timeout: Duration,
    ledger: Option<Arc<dyn Ledger>>,
    /// log_ids in requests of this process not yet answered.
    in_flight: Mutex<HashSet<String>>,
    warned_no_ack_id: AtomicBool,
    ack_ids: Mutex<AckIds>,
}

/// The ackIds this process's channel was given, to notice one given twice.
/// HEC counts a channel's ackIds from 0 and forgets the channel when it
/// restarts (or when a load balancer sends a request to another node): an
/// ackId still awaited from before would then be answered for a new
/// request, and events lost in the restart would count as indexed.
#[derive(Debug, Default)]
struct AckIds {
    /// The latest ackIds of the current era. Answers come out of order only
    /// among the requests in flight, far fewer than `RECENT_ACK_IDS`.
    recent: BTreeSet<u64>,
    /// Every ackId up to this one was given in this era (it left `recent`).
    given_up_to: Option<u64>,
    /// How many times the ackIds started over.
    era: u64,
}

const RECENT_ACK_IDS: usize = 4096;

impl AckIds {
    /// Notes an ackId HEC just gave; returns its era, and whether it was
    /// given before (so a new era began with it).
    fn note(&mut self, id: u64) -> (u64, bool) {
        let again = self.recent.contains(&id) || self.given_up_to.is_some_and(|up| id <= up);
        if again {
            *self = AckIds {
                era: self.era + 1,
                ..AckIds::default()
            };
        }
        self.recent.insert(id);
        if self.recent.len() > RECENT_ACK_IDS {
            self.given_up_to = self.recent.pop_first().max(self.given_up_to);
        }
        (self.era, again)
    }
}

/// How the wait for an acknowledgement ended.
#[derive(Debug, PartialEq, Eq)]
enum AckWait {
    Acknowledged,
    TimedOut,
    /// HEC gave the ackId again (`AckIds`): what it says of it now is about
    /// another request.
    Forgotten,
}

/// Builds the sink from the command line: token, ledger and all.
pub async fn from_args(args: &HecArgs) -> Result<SplunkHec, String> {
    let url = args
        .hec_url
        .clone()
        .ok_or("--sink splunk-hec needs --hec-url (the HEC base URL, e.g. https://splunk:8088)")?;
    let token = match (&args.hec_token, &args.hec_token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => read_token(path)?,
        (None, None) => return Err(
            "--sink splunk-hec needs a token: --hec-token, DRSINK_HEC_TOKEN or --hec-token-file"
                .to_owned(),
        ),
    };
    let ca_certs = match &args.hec_ca_cert {
        Some(path) => super::auth::ca_certificates(path, "--hec-ca-cert")?,
        None => Vec::new(),
    };
    let channel = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string();
    let ledger = ledger::open(&LedgerOptions {
        spec: &args.dedup_ledger,
        path: &args.dedup_ledger_path,
        window: args.dedup_window,
        max_entries: args.dedup_ledger_max_entries,
        claim_ttl: args.hec_timeout + args.hec_ack_timeout + Duration::from_secs(30),
        owner: &channel,
    })
    .await?;
    SplunkHec::new(
        Settings {
            url,
            token,
            index: args.hec_index.clone(),
            sourcetype: args.hec_sourcetype.clone(),
            source: args.hec_source.clone(),
            ack: args.hec_ack,
            compress: args.hec_compress,
            timeout: args.hec_timeout,
            ack_timeout: args.hec_ack_timeout,
            ca_certs,
        },
        ledger,
        channel,
    )
}

fn read_token(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --hec-token-file {}: {e}", path.display()))?;
    Ok(Secret::new(text.trim()))
}

impl SplunkHec {
    pub fn new(
        settings: Settings,
        ledger: Option<Arc<dyn Ledger>>,
        channel: String,
    ) -> Result<Self, String> {
        let base = super::base_url("--hec-url", &settings.url)?;
        if settings.token.expose().is_empty() {
            return Err("the HEC token is empty".to_owned());
        }
        let mut auth = HeaderValue::from_str(&format!("Splunk {}", settings.token.expose()))
            .map_err(|_| "the HEC token holds characters that cannot go in a header".to_owned())?;
        auth.set_sensitive(true);
        let mut builder = reqwest::Client::builder();
        for cert in settings.ca_certs {
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .timeout(settings.timeout)
            // A load balancer's stickiness cookie: an ackId is known only to
            // the HEC node that took the request.
            .cookie_store(true)
            // A redirect (to a login page, say) is a wrong --hec-url: an
            // answer from wherever it leads is no HEC's.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(SplunkHec {
            client,
            base,
            auth,
            token: settings.token,
            channel,
            index: settings.index,
            sourcetype: settings.sourcetype,
            source: settings.source,
            ack: settings.ack,
            compress: settings.compress,
            timeout: settings.timeout,
            ack_timeout: settings.ack_timeout,
            ledger,
            in_flight: Mutex::new(HashSet::new()),
            warned_no_ack_id: AtomicBool::new(false),
            ack_ids: Mutex::new(AckIds::default()),
        })
    }

    fn endpoint(&self, path: &str) -> reqwest::Url {
        super::endpoint(&self.base, path)
    }

    fn describe(&self) -> String {
        redact(self.base.as_str())
    }

    /// A request to HEC. The channel goes only with `--hec-ack`: a token with
    /// indexer acknowledgement then answers code 10 ("Data channel is
    /// missing") and the worker stops with that advice, where a channel
    /// would get the events accepted and their acks left unpolled.
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .client
            .post(self.endpoint(path))
            .header(AUTHORIZATION, self.auth.clone());
        match self.ack {
            true => request.header(CHANNEL_HEADER, &self.channel),
            false => request,
        }
    }

    /// Text from the server, fit for a message: never with the token (or a
    /// part of it cut off at the end).
    fn server_text(&self, text: &str) -> String {
        if text.contains(self.token.expose()) {
            "(the answer quoted the token; not shown)".to_owned()
        } else {
            text.chars().take(300).collect()
        }
    }

    /// Posts events; outcomes per event sent, or why the whole request failed.
    async fn post_events(&self, body: Bytes, count: usize) -> Result<Vec<ItemOutcome>, SendError> {
        let mut request = self
            .post(EVENT_PATH)
            .header(CONTENT_TYPE, "application/json");
        let body = if self.compress {
            request = request.header(CONTENT_ENCODING, "gzip");
            tokio::task::spawn_blocking(move || gzip(&body))
                .await
                .map_err(|e| SendError::Transient(format!("compression failed: {e}")))?
                .map_err(|e| SendError::Transient(format!("compression failed: {e}")))?
        } else {
            body
        };
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Transient(transport_error(e)))?;
        let status = response.status().as_u16();
        let text = response
            .bytes()
            .await
            .map_err(|e| SendError::Transient(transport_error(e)))?;
        let reply: Option<Reply> = serde_json::from_slice(&text).ok();
        match interpret(status, reply.as_ref(), count) {
            Answer::Accepted { ack_id } => {
                let waited = match (self.ack, ack_id) {
                    (false, _) => AckWait::Acknowledged,
                    (true, Some(id)) => {
                        let era = self.note_ack_id(id);
                        self.wait_for_ack(id, era).await?
                    }
                    (true, None) => {
                        if !self.warned_no_ack_id.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                hec = %self.describe(),
                                "--hec-ack is set but HEC returned no ackId: the token has no indexer \
                                 acknowledgement, so a 200 response counts as accepted"
                            );
                        }
                        AckWait::Acknowledged
                    }
                };
                let retry = |reason: String| vec![ItemOutcome::Retry(reason); count];
                Ok(match waited {
                    AckWait::Acknowledged => vec![ItemOutcome::Indexed; count],
                    AckWait::TimedOut => retry(format!(
                        "not acknowledged within {} s",
                        self.ack_timeout.as_secs()
                    )),
                    AckWait::Forgotten => retry(
                        "HEC gave its ackId again before acknowledging it (HEC restarted, or a \
                         load balancer sent a request to another node)"
                            .to_owned(),
                    ),
                })
            }
            Answer::Partial { accepted, error } => Ok(partial_outcomes(accepted, error, count)),
            Answer::Failed(failure) => Err(self.failure(failure, status, reply.as_ref(), &text)),
        }
    }

    fn failure(
        &self,
        failure: Failure,
        status: u16,
        reply: Option<&Reply>,
        raw: &[u8],
    ) -> SendError {
        let hec = self.describe();
        let said = match reply {
            Some(r) => format!(
                "code {}: {}",
                r.code.unwrap_or(-1),
                self.server_text(&r.text)
            ),
            None => self.server_text(&String::from_utf8_lossy(raw)),
        };
        match failure {
            Failure::TooLarge => SendError::Refused(format!("too large for {hec} (HTTP {status})")),
            Failure::Unnamed => SendError::Refused(format!("HTTP {status} from {hec} ({said})")),
            Failure::Transient => SendError::Transient(format!("HTTP {status} from {hec} ({said})")),
            Failure::Token => SendError::Fatal(format!(
                "Splunk HEC at {hec} refused the token (HTTP {status}, {said}): check --hec-token, \
                 DRSINK_HEC_TOKEN or --hec-token-file"
            )),
            Failure::Index => SendError::Fatal(format!(
                "Splunk HEC at {hec} refused the index (HTTP {status}, {said}): the token must allow \
                 --hec-index"
            )),
            Failure::Channel => SendError::Fatal(format!(
                "Splunk HEC at {hec} requires indexer acknowledgement for this token (HTTP {status}, \
                 {said}): run with --hec-ack"
            )),
            Failure::AckDisabled => SendError::Fatal(format!(
                "--hec-ack is set but the token at {hec} has indexer acknowledgement disabled \
                 (HTTP {status}, {said})"
            )),
            Failure::NotHec => SendError::Fatal(format!(
                "{hec} answered HTTP {status} to an event request with no HEC reply ({said}): \
                 {CHECK_HEC_URL}"
            )),
            Failure::Other => SendError::Fatal(format!(
                "Splunk HEC at {hec} answered HTTP {status} to an event request ({said})"
            )),
        }
    }

    /// Notes an ackId HEC gave this channel; returns its era (`AckIds`).
    fn note_ack_id(&self, id: u64) -> u64 {
        let (era, again) = self
            .ack_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(id);
        if again {
            tracing::warn!(
                hec = %self.describe(),
                ack_id = id,
                "HEC gave this channel an ackId it had given before: it restarted, or a load \
                 balancer without stickiness sent the request to another node; the events whose \
                 acknowledgement was still awaited are sent again"
            );
        }
        era
    }

    /// Whether HEC's ackIds started over since `era`.
    fn forgot(&self, era: u64) -> bool {
        self.ack_ids.lock().unwrap_or_else(|e| e.into_inner()).era != era
    }

    /// Polls the ack endpoint until the ackId of `era` is acknowledged, the
    /// ack timeout passes, or HEC gives the ackId to another request.
    async fn wait_for_ack(&self, ack_id: u64, era: u64) -> Result<AckWait, SendError> {
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        let mut interval = Duration::from_millis(100);
        let body = json!({ "acks": [ack_id] }).to_string();
        loop {
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_secs(2));
            if self.forgot(era) {
                return Ok(AckWait::Forgotten);
            }
            // No poll outlasts the ack timeout: a Redis claim is held for the
            // request and this wait (plus a margin), not for one more poll.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(AckWait::TimedOut);
            }
            let answer = self
                .post(ACK_PATH)
                .header(CONTENT_TYPE, "application/json")
                .timeout(left.min(self.timeout))
                .body(body.clone())
                .send()
                .await;
            match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.bytes().await.unwrap_or_default();
                    match status {
                        200 => {
                            let acks: Option<AckReply> = serde_json::from_slice(&text).ok();
                            let key = ack_id.to_string();
                            if acks.is_some_and(|a| a.acks.get(&key).copied().unwrap_or(false)) {
                                // A true that came after the ackId was given
                                // again may be the new request's.
                                return Ok(match self.forgot(era) {
                                    true => AckWait::Forgotten,
                                    false => AckWait::Acknowledged,
                                });
                            }
                        }
                        401 | 403 => {
                            let reply: Option<Reply> = serde_json::from_slice(&text).ok();
                            return Err(self.failure(
                                Failure::Token,
                                status,
                                reply.as_ref(),
                                &text,
                            ));
                        }
                        // The events were taken; any other 400 (a channel
                        // a restarted node does not know) leaves the ack
                        // unknown: polled again until the ack timeout, then
                        // the events are sent again.
                        400 => {
                            let reply: Option<Reply> = serde_json::from_slice(&text).ok();
                            if reply.as_ref().and_then(|r| r.code) == Some(14) {
                                return Err(self.failure(
                                    Failure::AckDisabled,
                                    status,
                                    reply.as_ref(),
                                    &text,
                                ));
                            }
                            tracing::debug!(status, "ack poll refused; polling again");
                        }
                        _ => tracing::debug!(status, "ack poll failed; polling again"),
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %transport_error(e), "ack poll failed; polling again")
                }
            }
            if tokio::time::Instant::now() + interval > deadline {
                return Ok(AckWait::TimedOut);
            }
        }
    }
}

/// Removes this process's marks of its log_ids in flight, however the send ends.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    ids: Vec<String>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            set.remove(id);
        }
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    Ok(Bytes::from(encoder.finish()?))
}

// ----------------------------------------------------------------- encoding

struct HecEncoder {
    /// `,"source":…[,"sourcetype":…][,"index":…],"event":`
    tail: Vec<u8>,
}

impl Encoder for HecEncoder {
    fn encode(&mut self, record: &Record<'_>, out: &mut Vec<u8>) -> Range<usize> {
        out.extend_from_slice(ENTRY_START);
        write_json_str(out, &record.log_id);
        out.extend_from_slice(b"},\"time\":");
        let millis = record.timestamp_ms.unwrap_or_else(now_millis);
        write_epoch_seconds(out, millis);
        if let Some(host) = host_of(&record.json) {
            out.extend_from_slice(b",\"host\":");
            out.extend_from_slice(host);
        }
        out.extend_from_slice(&self.tail);
        let start = out.len();
        // Records are on one line (raw newlines in JSON are whitespace and
        // were turned into spaces), so each entry is exactly one line.
        out.extend_from_slice(&record.json);
        let end = out.len();
        out.extend_from_slice(b"}\n");
        start..end
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Epoch milliseconds as seconds with three decimals.
fn write_epoch_seconds(out: &mut Vec<u8>, millis: i64) {
    if millis < 0 {
        out.push(b'-');
    }
    let abs = millis.unsigned_abs();
    out.extend_from_slice(itoa::Buffer::new().format(abs / 1000).as_bytes());
    let frac = abs % 1000;
    out.push(b'.');
    out.push(b'0' + (frac / 100) as u8);
    out.push(b'0' + (frac / 10 % 10) as u8);
    out.push(b'0' + (frac % 10) as u8);
}

/// The record's top-level `host`, when it is a string: its raw JSON text.
fn host_of(json: &[u8]) -> Option<&[u8]> {
    // Most records that lack the key are told apart without scanning.
    memchr::memmem::find(json, b"\"host\"")?;
    let mut found = [None];
    scan_object(json, &[b"host"], &mut found).ok()?;
    found[0].filter(|raw| raw.first() == Some(&b'"') && raw.len() > 2)
}

/// The entries of a body (as written by `HecEncoder`): each line's range
/// and log_id.
fn split_entries(body: &[u8]) -> Result<Vec<(Range<usize>, String)>, String> {
    let mut entries = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i + 1);
        let line = &body[start..end];
        if !line.trim_ascii().is_empty() {
            let rest = line
                .strip_prefix(ENTRY_START)
                .ok_or("an entry does not start with its log_id")?;
            let log_id = serde_json::Deserializer::from_slice(rest)
                .into_iter::<String>()
                .next()
                .ok_or("an entry has no log_id")?
                .map_err(|e| format!("an entry's log_id is unreadable: {e}"))?;
            entries.push((start..end, log_id));
        }
        start = end;
    }
    Ok(entries)
}

// ------------------------------------------------------------------ answers

#[derive(Debug, Default, Deserialize)]
struct Reply {
    #[serde(default)]
    text: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default, rename = "invalid-event-number")]
    invalid_event_number: Option<usize>,
    #[serde(default, rename = "ackId")]
    ack_id: Option<u64>,
}

#[derive(Deserialize)]
struct AckReply {
    acks: std::collections::HashMap<String, bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// 413: split the batch.
    TooLarge,
    /// Busy, 5xx, throttled: retry.
    Transient,
    /// 401/403, codes 1-4.
    Token,
    /// 400 code 7: the index is not allowed.
    Index,
    /// 400 codes 10/11: the token needs a channel (ack is on for it).
    Channel,
    /// 400 code 14: ack asked of a token without it.
    AckDisabled,
    /// A 2xx or 3xx that is no HEC reply (`code` 0): something else answered.
    NotHec,
    /// A 400 naming no event (invalid data, or a proxy's own 400): some
    /// event of the batch is at fault; splitting finds it.
    Unnamed,
    Other,
}

#[derive(Debug, PartialEq)]
enum Answer {
    Accepted {
        ack_id: Option<u64>,
    },
    /// Events before `accepted` were taken; that one is bad; the rest were
    /// not looked at.
    Partial {
        accepted: usize,
        error: Value,
    },
    Failed(Failure),
}

/// What an answer to a request of `count` events means, by HEC's documented
/// status codes.
fn interpret(status: u16, reply: Option<&Reply>, count: usize) -> Answer {
    let code = reply.and_then(|r| r.code);
    match status {
        // Only HEC's own `{"text":"Success","code":0}` says the events were
        // taken: a proxy's or a login page's 200 must not delete messages.
        200..=299 if code == Some(0) => Answer::Accepted {
            ack_id: reply.and_then(|r| r.ack_id),
        },
        200..=399 => Answer::Failed(Failure::NotHec),
        401 | 403 => Answer::Failed(Failure::Token),
        413 => Answer::Failed(Failure::TooLarge),
        408 | 429 | 500..=599 => Answer::Failed(Failure::Transient),
        // A refused index, channel or ack setting is the configuration's
        // fault, even when Splunk names the event it stopped at: retrying or
        // dead-lettering event by event would drain the batch.
        400 => match (code, reply.and_then(|r| r.invalid_event_number)) {
            (Some(7), _) => Answer::Failed(Failure::Index),
            (Some(10 | 11), _) => Answer::Failed(Failure::Channel),
            (Some(14), _) => Answer::Failed(Failure::AckDisabled),
            (_, Some(n)) if n < count => Answer::Partial {
                accepted: n,
                error: json!({
                    "type": format!(
                        "{} (HEC code {})",
                        reply.map_or("invalid event", |r| r.text.as_str()),
                        code.unwrap_or(-1)
                    ),
                    "code": code,
                }),
            },
            // A number past the request's events: not a reading we can trust.
            (_, Some(_)) => Answer::Failed(Failure::Transient),
            (_, None) => Answer::Failed(Failure::Unnamed),
        },
        _ => Answer::Failed(Failure::Other),
    }
}

fn partial_outcomes(accepted: usize, error: Value, count: usize) -> Vec<ItemOutcome> {
    (0..count)
        .map(|i| match i.cmp(&accepted) {
            std::cmp::Ordering::Less => ItemOutcome::Indexed,
            std::cmp::Ordering::Equal => ItemOutcome::Reject(error.clone()),
            std::cmp::Ordering::Greater => {
                ItemOutcome::Retry("sent after an invalid event, not processed".to_owned())
            }
        })
        .collect()
}

#[async_trait]
impl Sink for SplunkHec {
    fn encoder(&self, object: &ObjectRef) -> Box<dyn Encoder> {
        let mut tail = b",\"source\":".to_vec();
        match &self.source {
            Some(source) => write_json_str(&mut tail, source),
            None => write_json_str(&mut tail, &object.to_string()),
        }
        if let Some(sourcetype) = &self.sourcetype {
            tail.extend_from_slice(b",\"sourcetype\":");
            write_json_str(&mut tail, sourcetype);
        }
        if let Some(index) = &self.index {
            tail.extend_from_slice(b",\"index\":");
            write_json_str(&mut tail, index);
        }
        tail.extend_from_slice(b",\"event\":");
        Box::new(HecEncoder { tail })
    }

    async fn send(&self, body: Bytes, items: usize) -> Result<Vec<ItemOutcome>, SendError> {
        let entries = split_entries(&body)
            .map_err(|e| SendError::Fatal(format!("internal error in the HEC sink: {e}")))?;
        if entries.len() != items {
            return Err(SendError::Fatal(format!(
                "internal error in the HEC sink: {} entries in a body of {items}",
                entries.len()
            )));
        }
        let mut outcomes: Vec<Option<ItemOutcome>> = vec![None; items];
        let mut guard = InFlight {
            set: &self.in_flight,
            ids: Vec::new(),
        };
        let mut to_send: Vec<usize> = Vec::with_capacity(items);
        if let Some(ledger) = &self.ledger {
            let mut mine = Vec::with_capacity(items);
            {
                let mut set = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                for (i, (_, id)) in entries.iter().enumerate() {
                    if set.insert(id.clone()) {
                        guard.ids.push(id.clone());
                        mine.push(i);
                    } else {
                        outcomes[i] = Some(ItemOutcome::Retry(
                            "the same log_id is being sent in another request".to_owned(),
                        ));
                    }
                }
            }
            let verdicts = match ledger.claim(&guard.ids).await {
                Ok(verdicts) => verdicts,
                Err(e) => {
                    // Claimed in part (chunk by chunk): the other workers
                    // must not wait out the TTL on the ids claimed.
                    ledger.release(&guard.ids).await;
                    return Err(SendError::Transient(e));
                }
            };
            for (&i, verdict) in mine.iter().zip(verdicts) {
                match verdict {
                    Verdict::New => to_send.push(i),
                    Verdict::Done => outcomes[i] = Some(ItemOutcome::Duplicate),
                    Verdict::Busy => {
                        outcomes[i] = Some(ItemOutcome::Retry(
                            "another worker is sending the same log_id".to_owned(),
                        ))
                    }
                }
            }
        } else {
            to_send.extend(0..items);
        }

        if !to_send.is_empty() {
            let request = if to_send.len() == items {
                body.clone()
            } else {
                let size = to_send.iter().map(|&i| entries[i].0.len()).sum();
                let mut part = Vec::with_capacity(size);
                for &i in &to_send {
                    part.extend_from_slice(&body[entries[i].0.clone()]);
                }
                Bytes::from(part)
            };
            let sent_ids = |filter: &dyn Fn(usize) -> bool| -> Vec<String> {
                to_send
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| filter(k))
                    .map(|(_, &i)| entries[i].1.clone())
                    .collect()
            };
            match self.post_events(request, to_send.len()).await {
                Err(e) => {
                    if let Some(ledger) = &self.ledger {
                        ledger.release(&sent_ids(&|_| true)).await;
                    }
                    return Err(e);
                }
                Ok(sent) => {
                    if let Some(ledger) = &self.ledger {
                        let accepted = sent_ids(&|k| sent.get(k) == Some(&ItemOutcome::Indexed));
                        let refused = sent_ids(&|k| sent.get(k) != Some(&ItemOutcome::Indexed));
                        if let Err(e) = ledger.record(&accepted).await {
                            // The events are in Splunk: re-sending them would
                            // double them for sure, so they count as done.
                            tracing::warn!(error = %e, events = accepted.len(),
                                "accepted events could not be recorded in the dedup ledger; \
                                 a later copy of them may be sent again");
                        }
                        if !refused.is_empty() {
                            ledger.release(&refused).await;
                        }
                    }
                    for (&i, outcome) in to_send.iter().zip(sent) {
                        outcomes[i] = Some(outcome);
                    }
                }
            }
        }
        drop(guard);
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| ItemOutcome::Retry("no answer".to_owned())))
            .collect())
    }

    async fn check(&self) -> Result<(), String> {
        let hec = self.describe();
        let response = self
            .client
            .get(self.endpoint(HEALTH_PATH))
            .send()
            .await
            .map_err(|e| format!("cannot reach Splunk HEC at {hec}: {}", transport_error(e)))?;
        let status = response.status().as_u16();
        let text = response.bytes().await.unwrap_or_default();
        let reply: Option<Reply> = serde_json::from_slice(&text).ok();
        match status {
            // "HEC is healthy" (code 17).
            200..=299 if reply.as_ref().and_then(|r| r.code) == Some(17) => {}
            200..=399 => {
                return Err(format!(
                "{hec} answered HTTP {status} to {HEALTH_PATH} with no HEC reply; {CHECK_HEC_URL}"
            ))
            }
            503 => {
                return Err(format!(
                    "Splunk HEC at {hec} reports itself unhealthy (HTTP 503 to {HEALTH_PATH}): its \
                     queues are full or its indexers are down"
                ))
            }
            status => {
                return Err(format!(
                    "Splunk HEC at {hec} answered HTTP {status} to {HEALTH_PATH}; check --hec-url \
                     (the HEC base URL, usually port 8088)"
                ))
            }
        }
        // An empty request checks the token without sending anything: a good
        // token gets 400 "No data" (code 5).
        let response = self
            .post(EVENT_PATH)
            .header(CONTENT_TYPE, "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot reach Splunk HEC at {hec}: {}", transport_error(e)))?;
        let status = response.status().as_u16();
        let text = response.bytes().await.unwrap_or_default();
        let reply: Option<Reply> = serde_json::from_slice(&text).ok();
        match (status, reply.as_ref().and_then(|r| r.code)) {
            // A token with indexer acknowledgement, without `--hec-ack` (10),
            // or a channel it refuses (11).
            (400, Some(10 | 11)) => Err(self
                .failure(Failure::Channel, status, reply.as_ref(), &text)
                .to_string()),
            // 400 "No data" (code 5): the token was taken.
            (400, Some(5)) => Ok(()),
            (401 | 403, _) => Err(self
                .failure(Failure::Token, status, reply.as_ref(), &text)
                .to_string()),
            _ => Err(format!(
                "Splunk HEC at {hec} answered HTTP {status} to an empty request to {EVENT_PATH} \
                 (a working HEC answers 400 \"No data\")"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Position;
    use clap::Parser;

    fn sink(source: Option<&str>, index: Option<&str>) -> SplunkHec {
        SplunkHec::new(
            Settings {
                url: "http://u:pw@localhost:8088".into(),
                token: Secret::new("secret-token-123"),
                index: index.map(str::to_owned),
                sourcetype: Some("drsink:json".into()),
                source: source.map(str::to_owned),
                ack: false,
                compress: false,
                timeout: Duration::from_secs(1),
                ack_timeout: Duration::from_secs(1),
                ca_certs: Vec::new(),
            },
            None,
            "chan".into(),
        )
        .unwrap()
    }

    /// A ledger whose claims fail (Redis gone mid-claim), recording releases.
    #[derive(Default)]
    struct FailingLedger {
        released: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Ledger for FailingLedger {
        async fn claim(&self, _ids: &[String]) -> Result<Vec<Verdict>, String> {
            Err("connection reset".to_owned())
        }
        async fn record(&self, _ids: &[String]) -> Result<(), String> {
            Ok(())
        }
        async fn release(&self, ids: &[String]) {
            self.released.lock().unwrap().extend_from_slice(ids);
        }
    }

    #[tokio::test]
    async fn a_failed_claim_gives_up_what_it_may_have_claimed() {
        let ledger = Arc::new(FailingLedger::default());
        let mut hec = sink(None, None);
        hec.ledger = Some(Arc::clone(&ledger) as Arc<dyn Ledger>);
        let body = Bytes::from_static(
            b"{\"fields\":{\"log_id\":\"a\"},\"event\":{}}\n{\"fields\":{\"log_id\":\"b\"},\"event\":{}}\n",
        );
        let sent = hec.send(body, 2).await;
        assert!(matches!(sent, Err(SendError::Transient(_))), "{sent:?}");
        assert_eq!(*ledger.released.lock().unwrap(), ["a", "b"]);
        assert!(hec.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_ack_wait_ends_at_the_ack_timeout_even_when_a_poll_hangs() {
        // A HEC that takes the connection and never answers the poll.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let _held = std::thread::spawn(move || {
            let connections: Vec<_> = listener.incoming().take(4).collect();
            std::thread::sleep(Duration::from_secs(30));
            drop(connections);
        });
        let hec = SplunkHec::new(
            Settings {
                url,
                token: Secret::new("t"),
                index: None,
                sourcetype: None,
                source: None,
                ack: true,
                compress: false,
                timeout: Duration::from_secs(20),
                ack_timeout: Duration::from_secs(1),
                ca_certs: Vec::new(),
            },
            None,
            "chan".into(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        assert_eq!(hec.wait_for_ack(7, 0).await.unwrap(), AckWait::TimedOut);
        // Within the ack timeout (and the first poll's pause), not --hec-timeout.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn an_ack_id_given_again_begins_a_new_era() {
        let mut ids = AckIds::default();
        // Answers of concurrent requests come out of order: no restart.
        for id in [0, 2, 1, 3] {
            assert_eq!(ids.note(id), (0, false), "ackId {id}");
        }
        // HEC restarted and counts from 0 again.
        assert_eq!(ids.note(0), (1, true));
        assert_eq!(ids.note(1), (1, false));
        assert_eq!(ids.note(1), (2, true));
        // An ackId that left the recent ones still counts as given.
        let mut ids = AckIds::default();
        let many = RECENT_ACK_IDS as u64 + 10;
        for id in 0..many {
            assert_eq!(ids.note(id), (0, false), "ackId {id}");
        }
        assert_eq!(ids.note(5), (1, true));
    }

    fn object() -> ObjectRef {
        ObjectRef::new("b", "k/x.log")
    }

    fn record(log_id: &str, ts: Option<i64>, json: &'static [u8]) -> Record<'static> {
        Record {
            log_id: log_id.to_owned().into(),
            id_generated: false,
            timestamp_ms: ts,
            json: json.into(),
            position: Position::line(3),
            has_origin: false,
        }
    }

    #[test]
    fn events_carry_metadata_the_record_and_the_log_id() {
        let s = sink(None, Some("dr"));
        let mut enc = s.encoder(&object());
        let mut out = Vec::new();
        let doc = enc.encode(
            &record(
                "id\"1",
                Some(1_795_305_599_007),
                br#"{"host":"web-1","msg":"x"}"#,
            ),
            &mut out,
        );
        let second = enc.encode(&record("id2", Some(-1), br#"{"msg":"y"}"#), &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"fields": {"log_id": "id\"1"}, "time": 1_795_305_599.007, "host": "web-1",
                   "source": "s3://b/k/x.log", "sourcetype": "drsink:json", "index": "dr",
                   "event": {"host": "web-1", "msg": "x"}})
        );
        assert_eq!(lines[1]["time"], json!(-0.001));
        assert!(lines[1].get("host").is_none());
        assert_eq!(&out[doc], br#"{"host":"web-1","msg":"x"}"#);
        assert_eq!(&out[second], br#"{"msg":"y"}"#);
        let entries = split_entries(&out).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
            ["id\"1", "id2"]
        );
        assert_eq!(entries[1].0.end, out.len());
    }

    #[test]
    fn source_flag_and_missing_time() {
        let s = sink(Some("dr-archive"), None);
        let mut out = Vec::new();
        s.encoder(&object())
            .encode(&record("a", None, br#"{"m":1}"#), &mut out);
        let event: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(event["source"], "dr-archive");
        assert!(event.get("index").is_none());
        let now = now_millis() as f64 / 1000.0;
        let time = event["time"].as_f64().unwrap();
        assert!((now - time).abs() < 60.0, "{time} vs {now}");
    }

    #[test]
    fn answers_map_by_documented_codes() {
        let reply = |code: i64, n: Option<usize>| Reply {
            text: "t".into(),
            code: Some(code),
            invalid_event_number: n,
            ack_id: None,
        };
        assert_eq!(
            interpret(
                200,
                Some(&Reply {
                    ack_id: Some(7),
                    ..reply(0, None)
                }),
                3
            ),
            Answer::Accepted { ack_id: Some(7) }
        );
        // A 200 that is no HEC reply (a login page, a proxy) takes nothing.
        for (status, answer) in [(200, None), (200, Some(reply(17, None))), (302, None)] {
            assert_eq!(
                interpret(status, answer.as_ref(), 3),
                Answer::Failed(Failure::NotHec)
            );
        }
        for (status, code) in [(401, 2), (401, 3), (403, 4), (403, 1)] {
            assert_eq!(
                interpret(status, Some(&reply(code, None)), 3),
                Answer::Failed(Failure::Token)
            );
        }
        assert_eq!(
            interpret(503, Some(&reply(9, None)), 3),
            Answer::Failed(Failure::Transient)
        );
        assert_eq!(interpret(500, None, 3), Answer::Failed(Failure::Transient));
        assert_eq!(interpret(413, None, 3), Answer::Failed(Failure::TooLarge));
        for number in [None, Some(0), Some(2)] {
            assert_eq!(
                interpret(400, Some(&reply(7, number)), 3),
                Answer::Failed(Failure::Index)
            );
        }
        assert_eq!(
            interpret(400, Some(&reply(10, None)), 3),
            Answer::Failed(Failure::Channel)
        );
        assert_eq!(
            interpret(400, Some(&reply(6, Some(5))), 3),
            Answer::Failed(Failure::Transient)
        );
        // A 400 that names no event is the batch's, not the configuration's:
        // split to find the event at fault, never stop the fleet.
        assert_eq!(
            interpret(400, Some(&reply(6, None)), 3),
            Answer::Failed(Failure::Unnamed)
        );
        assert_eq!(interpret(400, None, 3), Answer::Failed(Failure::Unnamed));
        let Answer::Partial { accepted, error } = interpret(400, Some(&reply(6, Some(1))), 3)
        else {
            panic!("not partial");
        };
        assert_eq!(accepted, 1);
        let outcomes = partial_outcomes(accepted, error, 3);
        assert_eq!(outcomes[0], ItemOutcome::Indexed);
        assert!(matches!(&outcomes[1], ItemOutcome::Reject(e) if e["type"] == "t (HEC code 6)"));
        assert!(matches!(outcomes[2], ItemOutcome::Retry(_)));
    }

    #[test]
    fn the_token_is_never_shown() {
        let s = sink(None, None);
        let err = s.failure(
            Failure::Token,
            403,
            Some(&Reply {
                text: "Invalid token secret-token-123".into(),
                code: Some(4),
                ..Reply::default()
            }),
            b"",
        );
        let text = err.to_string();
        assert!(text.contains("refused the token"), "{text}");
        assert!(!text.contains("secret-token-123"), "{text}");
        assert!(!text.contains("pw"), "{text}");
        assert!(!format!("{:?}", s.token).contains("secret"));
        // Quoted across the point where a long answer is cut.
        let page = format!("{}Authorization: Splunk secret-token-123", "x".repeat(285));
        let text = s
            .failure(Failure::NotHec, 200, None, page.as_bytes())
            .to_string();
        assert!(!text.contains("secret-"), "{text}");
        let cli = crate::cli::Cli::try_parse_from([
            "drsink",
            "redrive",
            "--from",
            "x",
            "--sink",
            "splunk-hec",
            "--hec-token",
            "secret-token-123",
        ])
        .unwrap();
        // The argument structs have no `Debug` at all; the token's own says nothing.
        let crate::cli::Command::Redrive(args) = cli.command else {
            panic!("parsed as redrive")
        };
        let token = format!("{:?}", args.pipeline.hec.hec_token);
        assert!(!token.contains("secret-token-123"), "{token}");
    }
}
