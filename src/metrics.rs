//! Prometheus metrics, `/healthz` and `/readyz` (`--metrics-addr`).
//!
//! The run's counters live once, in `Stats`: a collector reads them at scrape
//! time, so the hot paths bump one atomic and `/metrics` always agrees with
//! the JSON summary. What `Stats` does not hold (retries by reason, request
//! latency, DR lag, messages in flight, heartbeats, deletes) is kept here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use crate::stats::Stats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub reason: &'static str,
}

/// Why items were retried: a handful of values, so the label stays small.
#[derive(Debug, Clone, Copy)]
pub enum RetryReason<'a> {
    /// Items of a bulk response answered with a passing error (the error type).
    Item(&'a str),
    /// A whole request failed (the error text).
    Request(&'a str),
}

impl RetryReason<'_> {
    fn label(self) -> &'static str {
        match self {
            RetryReason::Item(kind) => {
                if kind.contains("circuit_breaking") {
                    "circuit_breaker"
                } else if kind.starts_with("HTTP 429")
                    || kind.contains("rejected_execution")
                    || kind.contains("too_many_requests")
                {
                    "throttled"
                } else if kind.starts_with("HTTP 5") {
                    "server_error"
                } else {
                    "item_error"
                }
            }
            RetryReason::Request(text) => {
                if text.starts_with("HTTP 429") {
                    "throttled"
                } else if text.starts_with("HTTP 5") || text.starts_with("HTTP 408") {
                    "server_error"
                } else if text.starts_with("timed out") {
                    "timeout"
                } else if text.starts_with("connection failed") {
                    "connection"
                } else {
                    "request_failed"
                }
            }
        }
    }
}

/// Every metric of a run; created once and shared.
pub struct Metrics {
    registry: Registry,
    retries: Family<RetryLabels, Counter>,
    sink_request_duration: Histogram,
    dr_lag: Histogram,
    sqs_in_flight: Gauge,
    visibility_extensions: Counter,
    messages_deleted: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Buckets of the DR lag, in seconds: from a second to two days.
const LAG_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0,
    86400.0, 172800.0,
];

/// Buckets of one sink request, in seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Metrics {
    pub fn new(stats: Arc<Stats>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StatsCollector(stats)));
        let retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "drsink_retries",
            "Item retries sent to the sink, by reason",
            retries.clone(),
        );
        let sink_request_duration = Histogram::new(REQUEST_BUCKETS.iter().copied());
        registry.register_with_unit(
            "drsink_sink_request_duration",
            "Duration of one bulk request to the sink",
            Unit::Seconds,
            sink_request_duration.clone(),
        );
        let dr_lag = Histogram::new(LAG_BUCKETS.iter().copied());
        registry.register_with_unit(
            "drsink_dr_lag",
            "From the S3 event time of an object to all its records being acknowledged",
            Unit::Seconds,
            dr_lag.clone(),
        );
        let sqs_in_flight = Gauge::default();
        registry.register(
            "drsink_sqs_messages_in_flight",
            "SQS messages received and not yet finished",
            sqs_in_flight.clone(),
        );
        let visibility_extensions = Counter::default();
        registry.register(
            "drsink_sqs_visibility_extensions",
            "Visibility heartbeats sent for messages still being worked on",
            visibility_extensions.clone(),
        );
        let messages_deleted = Counter::default();
        registry.register(
            "drsink_sqs_messages_deleted",
            "SQS messages deleted (acknowledged)",
            messages_deleted.clone(),
        );
        Metrics {
            registry,
            retries,
            sink_request_duration,
            dr_lag,
            sqs_in_flight,
            visibility_extensions,
            messages_deleted,
        }
    }

    /// Counts `items` retried, both in the run's summary and by reason.
    pub fn retried(&self, stats: &Stats, reason: RetryReason<'_>, items: u64) {
        if items == 0 {
            return;
        }
        Stats::add(&stats.retried, items);
        self.retries
            .get_or_create(&RetryLabels {
                reason: reason.label(),
            })
            .inc_by(items);
    }

    pub fn sink_request(&self, took: Duration) {
        self.sink_request_duration.observe(took.as_secs_f64());
    }

    /// An object whose records are all acknowledged: its DR lag.
    pub fn object_acknowledged(&self, event_time: Option<chrono::DateTime<chrono::Utc>>) {
        if let Some(time) = event_time {
            let lag = chrono::Utc::now().signed_duration_since(time);
            let seconds = lag.num_milliseconds().max(0) as f64 / 1000.0;
            self.dr_lag.observe(seconds);
        }
    }

    /// Holds one message in the in-flight gauge until dropped.
    pub fn message_in_flight(self: &Arc<Self>) -> InFlight {
        self.sqs_in_flight.inc();
        InFlight(Arc::clone(self))
    }

    pub fn visibility_extended(&self) {
        self.visibility_extensions.inc();
    }

    pub fn message_deleted(&self) {
        self.messages_deleted.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A message counted in `drsink_sqs_messages_in_flight`.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.sqs_in_flight.dec();
    }
}

/// Reads the `Stats` atomics at scrape time.
#[derive(Debug)]
struct StatsCollector(Arc<Stats>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let counters: [(&str, &str, &std::sync::atomic::AtomicU64); 15] = [
            (
                "drsink_records_indexed",
                "Records written for the first time",
                &s.indexed,
            ),
            (
                "drsink_records_duplicate",
                "Records already present under the same log_id",
                &s.duplicates,
            ),
            (
                "drsink_records_dead_lettered",
                "Records written to the dead-letter store",
                &s.dead_lettered,
            ),
            (
                "drsink_records_filtered",
                "Records dropped by --min-level",
                &s.filtered,
            ),
            (
                "drsink_records_read",
                "Records read from objects",
                &s.records,
            ),
            (
                "drsink_s3_bytes_read",
                "Compressed bytes read from S3",
                &s.bytes,
            ),
            (
                "drsink_sqs_messages_received",
                "SQS messages received",
                &s.messages,
            ),
            ("drsink_objects", "Objects read to the end", &s.objects),
            (
                "drsink_objects_missing",
                "Notified objects that no longer exist",
                &s.missing_objects,
            ),
            (
                "drsink_objects_archived",
                "Notified objects in an archive tier, not restored (dead-lettered)",
                &s.archived_objects,
            ),
            (
                "drsink_objects_corrupt",
                "Objects whose compressed stream broke off",
                &s.corrupt_objects,
            ),
            (
                "drsink_messages_dead_lettered",
                "Messages of no known shape dead-lettered after --max-receives",
                &s.dead_lettered_messages,
            ),
            (
                "drsink_failed",
                "Messages (backfill: objects) left for a later attempt because of an error",
                &s.failed,
            ),
            (
                "drsink_backfill_objects_skipped",
                "Objects a backfill skipped because its checkpoint has them",
                &s.skipped,
            ),
            (
                "drsink_backfill_objects_enqueued",
                "Objects a backfill --via-queue sent to the workers' queue",
                &s.enqueued,
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value.load(Ordering::Relaxed));
            let metric_encoder =
                encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            metric.encode(metric_encoder)?;
        }
        Ok(())
    }
}

/// One dependency `/readyz` checks.
#[async_trait]
pub trait Probe: Send + Sync {
    /// What is checked, for the 503 body.
    fn name(&self) -> &str;
    async fn check(&self) -> Result<(), String>;
}

/// The queue: GetQueueAttributes answers.
pub struct QueueProbe {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

#[async_trait]
impl Probe for QueueProbe {
    fn name(&self) -> &str {
        "queue"
    }

    async fn check(&self) -> Result<(), String> {
        self.sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "cannot use queue {}: {}",
                    self.queue_url,
                    crate::aws::describe(&e)
                )
            })
    }
}

/// The sink: `Sink::check`.
pub struct SinkProbe(pub Arc<dyn crate::sink::Sink>);

#[async_trait]
impl Probe for SinkProbe {
    fn name(&self) -> &str {
        "sink"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.check().await
    }
}

/// How long a `/readyz` answer is reused.
const READY_CACHE: Duration = Duration::from_secs(5);
/// Upper bound of one readiness check.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// `/readyz`: every probe passes, checked at most every few seconds.
pub struct Readiness {
    probes: Vec<Box<dyn Probe>>,
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    pub fn new(probes: Vec<Box<dyn Probe>>) -> Self {
        Readiness {
            probes,
            last: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < READY_CACHE {
                return result.clone();
            }
        }
        let result = self.check_now().await;
        *last = Some((Instant::now(), result.clone()));
        result
    }

    async fn check_now(&self) -> Result<(), String> {
        let checks = self.probes.iter().map(|probe| async move {
            match tokio::time::timeout(READY_TIMEOUT, probe.check()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{}: {e}", probe.name())),
                Err(_) => Err(format!(
                    "{}: no answer within {}s",
                    probe.name(),
                    READY_TIMEOUT.as_secs()
                )),
            }
        });
        let failures: Vec<String> = futures::future::join_all(checks)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}

/// Binds `addr` (failing at start if it cannot) and serves `/metrics`,
/// `/healthz` and `/readyz` in the background for the rest of the process.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --metrics-addr {addr}: {e}"))?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!("serving /metrics, /healthz and /readyz on http://{local}");
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = Arc::clone(&metrics);
            let readiness = Arc::clone(&readiness);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let metrics = Arc::clone(&metrics);
                    let readiness = Arc::clone(&readiness);
                    async move { Ok::<_, Infallible>(route(request, &metrics, &readiness).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("metrics endpoint connection: {e}");
                }
            });
        }
    });
    Ok(local)
}

async fn route(
    request: Request<Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into(), PLAIN);
    }
    match request.uri().path() {
        "/metrics" => text(StatusCode::OK, metrics.encode(), OPENMETRICS_TEXT),
        "/healthz" => text(StatusCode::OK, "ok\n".into(), PLAIN),
        "/readyz" => match readiness.check().await {
            Ok(()) => text(StatusCode::OK, "ready\n".into(), PLAIN),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
                PLAIN,
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
            PLAIN,
        ),
    }
}

const PLAIN: &str = "text/plain; charset=utf-8";
/// The text format Prometheus scrapes (the classic one, which
/// `prometheus-client`'s output is compatible with apart from `# EOF`).
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_retries_are_labelled_by_their_status_first() {
        for (kind, label) in [
            ("HTTP 429: es_rejected_execution_exception", "throttled"),
            ("HTTP 429: cluster_block_exception", "throttled"),
            ("HTTP 429: circuit_breaking_exception", "circuit_breaker"),
            ("HTTP 503: unavailable_shards_exception", "server_error"),
            ("HTTP 500: server error", "server_error"),
            ("index_not_found_exception", "item_error"),
        ] {
            assert_eq!(RetryReason::Item(kind).label(), label, "{kind}");
        }
    }

    #[test]
    fn counters_come_from_stats_and_retries_by_reason() {
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(Metrics::new(Arc::clone(&stats)));
        Stats::add(&stats.indexed, 7);
        Stats::add(&stats.duplicates, 2);
        Stats::add(&stats.bytes, 1234);
        metrics.retried(
            &stats,
            RetryReason::Item("es_rejected_execution_exception"),
            3,
        );
        metrics.retried(
            &stats,
            RetryReason::Request("HTTP 503 Service Unavailable from x"),
            2,
        );
        metrics.sink_request(Duration::from_millis(20));
        metrics.object_acknowledged(Some(chrono::Utc::now() - chrono::Duration::seconds(90)));
        let guard = metrics.message_in_flight();
        let text = metrics.encode();
        assert!(text.contains("drsink_records_indexed_total 7\n"), "{text}");
        assert!(
            text.contains("drsink_records_duplicate_total 2\n"),
            "{text}"
        );
        assert!(text.contains("drsink_s3_bytes_read_total 1234\n"), "{text}");
        assert!(
            text.contains("drsink_retries_total{reason=\"throttled\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("drsink_retries_total{reason=\"server_error\"} 2\n"),
            "{text}"
        );
        assert_eq!(stats.summary().retried, 5);
        assert!(
            text.contains("drsink_sink_request_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("drsink_dr_lag_seconds_bucket{le=\"120.0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("drsink_dr_lag_seconds_bucket{le=\"60.0\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("drsink_sqs_messages_in_flight 1\n"), "{text}");
        drop(guard);
        assert!(metrics
            .encode()
            .contains("drsink_sqs_messages_in_flight 0\n"));
    }

    struct Fails;

    #[async_trait]
    impl Probe for Fails {
        fn name(&self) -> &str {
            "queue"
        }
        async fn check(&self) -> Result<(), String> {
            Err("refused".into())
        }
    }

    #[tokio::test]
    async fn readiness_names_the_failing_probe() {
        let ready = Readiness::new(vec![Box::new(Fails)]);
        assert_eq!(ready.check().await, Err("queue: refused".to_owned()));
        assert_eq!(Readiness::new(vec![]).check().await, Ok(()));
    }
}
