//! Command-line interface. Every flag can also come from `DRSINK_<FLAG_IN_UPPER_SNAKE>`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::decode::Format;
pub use crate::fingerprint::Scheme;

#[derive(Parser)]
#[command(
    name = "drsink",
    version,
    about = "Disaster-recovery log sink: S3 notifications via SQS into Elasticsearch/OpenSearch, deduplicated by log_id"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Configuration file (TOML, flat, keys are the long flag names in snake_case);
    /// flags and environment variables override it.
    #[arg(long, global = true, env = "DRSINK_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format on stderr: `text` for people, `json` (one object per line) for log collectors.
    #[arg(long, global = true, env = "DRSINK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Consume S3 event notifications from SQS and index the objects they name.
    Worker(WorkerArgs),
    /// Replay archived objects from S3 through the same pipeline (or onto the workers' queue).
    Backfill(BackfillArgs),
    /// Re-submit dead letters (e.g. after a mapping fix) through the sink; removes only what was accepted.
    Redrive(RedriveArgs),
    /// Install the index template (and optionally a retention policy) for --index; idempotent.
    Setup(crate::setup::SetupArgs),
    /// Verify queue, bucket, cluster (or HEC) and template, one line per check.
    Check(crate::check::CheckArgs),
    /// Print the effective configuration of a command (e.g. `drsink config worker`), secrets redacted.
    Config(crate::config::ConfigArgs),
}

#[derive(Args)]
pub struct BackfillArgs {
    /// Archive bucket to replay.
    #[arg(long, env = "DRSINK_BUCKET")]
    pub bucket: String,

    /// Key prefix to replay (repeatable; default: the whole bucket).
    #[arg(long = "prefix", env = "DRSINK_PREFIX", value_delimiter = ',')]
    pub prefixes: Vec<String>,

    /// Start listing after this key.
    #[arg(long, env = "DRSINK_START_AFTER")]
    pub start_after: Option<String>,

    /// Replay objects from this time on (RFC 3339 or YYYY-MM-DD): the date in
    /// the key (or its folders) when it has a date partition, else LastModified.
    #[arg(long, env = "DRSINK_SINCE", value_parser = |s: &str| crate::listing::parse_bound(s, false))]
    pub since: Option<chrono::DateTime<chrono::Utc>>,

    /// Replay objects before this time (a YYYY-MM-DD date includes that day).
    #[arg(long, env = "DRSINK_UNTIL", value_parser = |s: &str| crate::listing::parse_bound(s, true))]
    pub until: Option<chrono::DateTime<chrono::Utc>>,

    /// Objects processed at once.
    #[arg(long, env = "DRSINK_CONCURRENCY", default_value_t = default_concurrency(), value_parser = at_least_one())]
    pub concurrency: usize,

    /// File recording completed objects; a rerun with it skips them.
    #[arg(long, env = "DRSINK_CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,

    /// List and count what would be replayed; read nothing.
    #[arg(long, env = "DRSINK_DRY_RUN")]
    pub dry_run: bool,

    /// Instead of replaying here, send one S3 notification per object to
    /// this queue, so the worker fleet shares the replay.
    #[arg(long, env = "DRSINK_VIA_QUEUE")]
    pub via_queue: Option<String>,

    /// Seconds the objects under way may take to finish after SIGTERM/SIGINT;
    /// then they are given up (a rerun replays them).
    #[arg(long, env = "DRSINK_SHUTDOWN_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub shutdown_timeout: Duration,

    /// Serve Prometheus /metrics, /healthz and /readyz on this HOST:PORT.
    #[arg(long, env = "DRSINK_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Args)]
pub struct RedriveArgs {
    /// Dead-letter directory whose `*.ndjson` files are re-submitted.
    #[arg(long, env = "DRSINK_REDRIVE_FROM")]
    pub from: PathBuf,

    /// Seconds the batch under way may take to finish after SIGTERM/SIGINT;
    /// then it is given up, and its entries not yet accepted are kept.
    #[arg(long, env = "DRSINK_SHUTDOWN_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub shutdown_timeout: Duration,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// URL of the SQS queue that receives the S3 event notifications.
    #[arg(long, env = "DRSINK_QUEUE_URL", hide_env_values = true)]
    pub queue_url: String,

    /// Messages processed at once (each may name several objects).
    #[arg(long, env = "DRSINK_CONCURRENCY", default_value_t = default_concurrency(), value_parser = at_least_one())]
    pub concurrency: usize,

    /// SQS long-poll wait in seconds (0-20).
    #[arg(long, env = "DRSINK_WAIT_SECONDS", default_value_t = 20, value_parser = clap::value_parser!(i32).range(0..=20))]
    pub wait_seconds: i32,

    /// Visibility timeout in seconds (1-43200) set by each heartbeat; default: the queue's own.
    #[arg(long, env = "DRSINK_VISIBILITY_TIMEOUT", value_parser = clap::value_parser!(u32).range(1..=43200))]
    pub visibility_timeout: Option<u32>,

    /// Exit 0 once a receive comes back empty and all in-flight work is flushed.
    #[arg(long, env = "DRSINK_EXIT_WHEN_IDLE")]
    pub exit_when_idle: bool,

    /// Dead-letter and delete a message of no known shape once it has been
    /// received this many times (default: leave it to the queue's redrive policy).
    #[arg(long, env = "DRSINK_MAX_RECEIVES", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_receives: Option<u32>,

    /// Seconds to finish in-flight work after SIGTERM/SIGINT before abandoning it to the queue.
    #[arg(long, env = "DRSINK_SHUTDOWN_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub shutdown_timeout: Duration,

    /// Serve Prometheus /metrics, /healthz and /readyz on this HOST:PORT.
    #[arg(long, env = "DRSINK_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// Options shared by every command that reads objects and writes them to a sink.
///
/// None of the argument structs derives `Debug`: `--es-url`, `--hec-url` and
/// `--dedup-ledger` may carry credentials (`https://user:password@…`), and a
/// `{:?}` of them would print those. `drsink config` prints them redacted.
#[derive(Args)]
pub struct PipelineArgs {
    /// Where records go.
    #[arg(long, env = "DRSINK_SINK", value_enum, default_value_t = SinkKind::Elasticsearch)]
    pub sink: SinkKind,

    /// Base URL of the Elasticsearch/OpenSearch cluster.
    #[arg(
        long,
        env = "DRSINK_ES_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:9200"
    )]
    pub es_url: String,

    /// Bulk action: `create` keeps the first copy of a log_id, `index` overwrites it.
    #[arg(long, env = "DRSINK_ES_ACTION", value_enum, default_value_t = EsAction::Create)]
    pub es_action: EsAction,

    /// Timeout of one bulk request, in seconds.
    #[arg(long, env = "DRSINK_ES_TIMEOUT", default_value = "60", value_parser = parse_seconds)]
    pub es_timeout: Duration,

    /// Index name pattern, strftime-style, applied to each record's event time (UTC).
    #[arg(long, env = "DRSINK_INDEX", default_value = "logs-%Y.%m.%d")]
    pub index: String,

    /// Index for records without a usable event time.
    #[arg(long, env = "DRSINK_FALLBACK_INDEX", default_value = "logs-undated")]
    pub fallback_index: String,

    /// Field holding the event time: RFC 3339 text or epoch milliseconds.
    #[arg(long, env = "DRSINK_TIMESTAMP_FIELD", default_value = "@timestamp", value_parser = field_name)]
    pub timestamp_field: String,

    /// Fields whose values make the fingerprint of a record without `log_id`
    /// (comma-separated); default: the whole line.
    #[arg(long, env = "DRSINK_ID_FIELDS", value_delimiter = ',', value_parser = field_name)]
    pub id_fields: Vec<String>,

    /// How the fingerprint of a record without `log_id` is computed. Every
    /// worker of a fleet, in both regions, must use the same scheme.
    #[arg(long, env = "DRSINK_FINGERPRINT", value_enum, default_value_t = Scheme::Xxh3)]
    pub fingerprint: Scheme,

    /// Object format; `auto` detects it per object from its first bytes.
    #[arg(long, env = "DRSINK_FORMAT", value_enum, default_value_t = Format::Auto)]
    pub format: Format,

    /// Drop records below this level (trace, debug, info, warn, error, critical).
    #[arg(long, env = "DRSINK_MIN_LEVEL", value_parser = parse_level)]
    pub min_level: Option<usize>,

    /// Field holding a record's level; records without it fall back to ECS `log.level`.
    #[arg(long, env = "DRSINK_LEVEL_FIELD", default_value = "level", value_parser = field_name)]
    pub level_field: String,

    /// Send at most this many records per second (protects a cluster serving live traffic).
    #[arg(long, env = "DRSINK_MAX_RECORDS_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_records_per_sec: Option<u64>,

    /// Upper bound of decoded bytes waiting for the sink, across all objects.
    #[arg(long, env = "DRSINK_MAX_INFLIGHT_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub max_inflight_bytes: usize,

    /// Upper bound of one bulk request body, in bytes.
    #[arg(long, env = "DRSINK_BATCH_BYTES", default_value_t = 5 * 1024 * 1024)]
    pub batch_bytes: usize,

    /// Upper bound of records in one bulk request.
    #[arg(long, env = "DRSINK_BATCH_RECORDS", default_value_t = 10_000)]
    pub batch_records: usize,

    /// Longest line accepted as one record; longer ones are dead-lettered.
    #[arg(long, env = "DRSINK_MAX_RECORD_BYTES", default_value_t = 1024 * 1024)]
    pub max_record_bytes: usize,

    /// Upper bound of the wait between two retries, in seconds.
    #[arg(long, env = "DRSINK_MAX_RETRY_INTERVAL", default_value = "30", value_parser = parse_seconds)]
    pub max_retry_interval: Duration,

    /// Directory of the dead-letter store (NDJSON files) [default: drsink-dead-letter;
    /// for redrive: the --from directory].
    #[arg(long, env = "DRSINK_DEAD_LETTER")]
    pub dead_letter: Option<PathBuf>,

    /// Address S3 buckets by path (for S3-compatible endpoints).
    #[arg(long, env = "DRSINK_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: bool,

    #[command(flatten)]
    pub hec: HecArgs,

    #[command(flatten)]
    pub es_auth: crate::sink::auth::EsAuthArgs,

    #[command(flatten)]
    pub assume_role: crate::sink::auth::AssumeRoleArgs,
}

/// The Splunk HEC sink (`--sink splunk-hec`) and its dedup ledger.
#[derive(Args)]
pub struct HecArgs {
    /// Base URL of the Splunk HTTP Event Collector (e.g. https://splunk.example:8088).
    #[arg(long, env = "DRSINK_HEC_URL", hide_env_values = true)]
    pub hec_url: Option<String>,

    /// HEC token (never logged); prefer DRSINK_HEC_TOKEN or --hec-token-file.
    #[arg(long, env = "DRSINK_HEC_TOKEN", hide_env_values = true, value_parser = clap::value_parser!(crate::redact::Secret))]
    pub hec_token: Option<crate::redact::Secret>,

    /// File holding the HEC token.
    #[arg(long, env = "DRSINK_HEC_TOKEN_FILE")]
    pub hec_token_file: Option<PathBuf>,

    /// PEM file of the CA certificate(s) that signed the HEC's certificate
    /// (Splunk's own, or a company CA), trusted besides the built-in roots.
    #[arg(long, env = "DRSINK_HEC_CA_CERT")]
    pub hec_ca_cert: Option<PathBuf>,

    /// Splunk index of the events (default: the token's default index).
    #[arg(long, env = "DRSINK_HEC_INDEX")]
    pub hec_index: Option<String>,

    /// Sourcetype of the events (default: the token's).
    #[arg(long, env = "DRSINK_HEC_SOURCETYPE")]
    pub hec_sourcetype: Option<String>,

    /// Source of the events (default: s3://bucket/key of the record's object).
    #[arg(long, env = "DRSINK_HEC_SOURCE")]
    pub hec_source: Option<String>,

    /// Wait for indexer acknowledgement before counting events as accepted.
    #[arg(long, env = "DRSINK_HEC_ACK")]
    pub hec_ack: bool,

    /// Gzip the request bodies.
    #[arg(long, env = "DRSINK_HEC_COMPRESS")]
    pub hec_compress: bool,

    /// Upper bound of one HEC request body before compression, in bytes
    /// (used instead of --batch-bytes; Splunk's default max_content_length is 1 MB).
    #[arg(long, env = "DRSINK_HEC_BATCH_BYTES", default_value_t = 512 * 1024)]
    pub hec_batch_bytes: usize,

    /// Timeout of one HEC request, in seconds.
    #[arg(long, env = "DRSINK_HEC_TIMEOUT", default_value = "60", value_parser = parse_seconds)]
    pub hec_timeout: Duration,

    /// How long to wait for an indexer acknowledgement before re-sending, in seconds.
    #[arg(long, env = "DRSINK_HEC_ACK_TIMEOUT", default_value = "300", value_parser = parse_seconds)]
    pub hec_ack_timeout: Duration,

    /// Dedup ledger: `none`, `embedded` (on disk, one worker) or `redis://host:port` (a fleet).
    #[arg(long, env = "DRSINK_DEDUP_LEDGER", hide_env_values = true, default_value = "embedded", value_parser = crate::ledger::LedgerSpec::parse)]
    pub dedup_ledger: crate::ledger::LedgerSpec,

    /// Directory of the embedded dedup ledger.
    #[arg(
        long,
        env = "DRSINK_DEDUP_LEDGER_PATH",
        default_value = "drsink-ledger"
    )]
    pub dedup_ledger_path: PathBuf,

    /// How long a log_id is remembered: seconds, or e.g. 12h, 7d.
    #[arg(long, env = "DRSINK_DEDUP_WINDOW", default_value = "7d", value_parser = crate::ledger::parse_window)]
    pub dedup_window: Duration,

    /// Most log_ids the embedded ledger keeps; the oldest go first (about 150 bytes each on disk).
    #[arg(
        long,
        env = "DRSINK_DEDUP_LEDGER_MAX_ENTRIES",
        default_value_t = 20_000_000
    )]
    pub dedup_ledger_max_entries: u64,
}

/// Dead-letter directory of the worker when --dead-letter is not given.
pub const DEFAULT_DEAD_LETTER: &str = "drsink-dead-letter";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkKind {
    Elasticsearch,
    /// Splunk HTTP Event Collector, deduplicated by `--dedup-ledger`.
    SplunkHec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EsAction {
    Create,
    Index,
}

fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

fn default_concurrency() -> usize {
    // Objects spend much of their time waiting on S3 and the cluster, so keep
    // more in flight than there are cores.
    std::thread::available_parallelism().map_or(4, |n| n.get() * 4)
}

fn parse_level(s: &str) -> Result<usize, String> {
    crate::records::level_rank(s).ok_or_else(|| {
        format!("`{s}` is not a level: use trace, debug, info, warn, error or critical")
    })
}

/// A record field's name, without the spaces a list (`host, message`) puts
/// around it. An empty one would match no field: every record lacking it
/// would get the same fingerprint, and all but one be taken for duplicates.
fn field_name(s: &str) -> Result<String, String> {
    match s.trim() {
        "" => Err("a field name cannot be empty".to_owned()),
        name => Ok(name.to_owned()),
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a valid number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(extra: &[&str]) -> Result<PipelineArgs, clap::Error> {
        let argv = ["drsink", "worker", "--queue-url", "q"];
        match Cli::try_parse_from(argv.iter().chain(extra))?.command {
            Command::Worker(args) => Ok(args.pipeline),
            _ => unreachable!("parsed as a worker"),
        }
    }

    #[test]
    fn field_names_are_trimmed_and_never_empty() {
        let args = worker(&["--id-fields", "host, message"]).unwrap();
        assert_eq!(args.id_fields, ["host", "message"]);
        for bad in [
            &["--id-fields", ""][..],
            &["--id-fields", "host,,message"],
            &["--timestamp-field", " "],
            &["--level-field", ""],
        ] {
            let err = worker(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.contains("a field name cannot be empty"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn sigv4_options_need_sigv4() {
        // Without it the requests would go out unsigned.
        for without in [
            &["--es-aws-service", "aoss"][..],
            &["--es-aws-region", "eu-west-1"],
        ] {
            let err = worker(without)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("--es-aws-sigv4"), "{without:?}: {err}");
        }
        let args = worker(&["--es-aws-sigv4", "--es-aws-service", "aoss"]).unwrap();
        assert!(args.es_auth.es_aws_sigv4);
    }
}
