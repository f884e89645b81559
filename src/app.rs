//! Wiring: parsed command-line options → the running command.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::sync::Semaphore;

use crate::backfill;
use crate::batch::Limits;
use crate::cli::{
    BackfillArgs, Command, PipelineArgs, RedriveArgs, SinkKind, WorkerArgs, DEFAULT_DEAD_LETTER,
};
use crate::dead_letter::{self, DeadLetterStore};
use crate::delivery::Delivery;
use crate::ledger::LedgerSpec;
use crate::listing::{Selection, TimeRange};
use crate::metrics::{self, Metrics};
use crate::object::ObjectStore;
use crate::pipeline::{Pipeline, INFLIGHT_UNIT};
use crate::rate::RateLimit;
use crate::records::{ParserOptions, RecordParser};
use crate::routing::IndexPattern;
use crate::shutdown::Shutdown;
use crate::sink::auth::EsConnection;
use crate::sink::elasticsearch::Elasticsearch;
use crate::sink::Sink;
use crate::stats::Stats;
use crate::worker::{self, Worker};

pub async fn run(command: Command, stats: Arc<Stats>, shutdown: Shutdown) -> anyhow::Result<()> {
    if let Command::Config(args) = &command {
        return crate::config::print(args);
    }
    let aws = aws_config::load_from_env().await;
    match command {
        Command::Worker(args) => run_worker(args, &aws, stats, shutdown).await,
        Command::Backfill(args) => run_backfill(args, &aws, stats, shutdown).await,
        Command::Redrive(args) => run_redrive(args, &aws, stats, shutdown).await,
        Command::Setup(args) => crate::setup::run(args, &aws).await,
        Command::Check(args) => crate::check::run(args, &aws).await,
        Command::Config(args) => crate::config::print(&args),
    }
}

async fn run_redrive(
    mut args: RedriveArgs,
    aws: &aws_config::SdkConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Checked under its own name first: the default --dead-letter copies it.
    dead_letter::s3_location(&args.from.to_string_lossy(), "--from").map_err(anyhow::Error::msg)?;
    // Rejected-again records go back where they came from unless told otherwise.
    args.pipeline
        .dead_letter
        .get_or_insert_with(|| args.from.clone());
    let pipeline = build_pipeline(&args.pipeline, aws, stats, &shutdown).await?;
    check_sink(&pipeline).await?;
    crate::redrive::run(pipeline, &args.from, args.shutdown_timeout, shutdown).await
}

async fn run_backfill(
    mut args: BackfillArgs,
    aws: &aws_config::SdkConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    if let (Some(since), Some(until)) = (args.since, args.until) {
        if since >= until {
            anyhow::bail!(
                "--since {} is not before --until {}: the range holds no time",
                since.to_rfc3339(),
                until.to_rfc3339()
            );
        }
    }
    // Only a replay here writes to the sink; otherwise it takes no dedup
    // ledger either (the embedded one may be a worker's, locked).
    let uses_sink = !args.dry_run && args.via_queue.is_none();
    if !uses_sink {
        args.pipeline.hec.dedup_ledger = LedgerSpec::None;
    }
    let pipeline = build_pipeline(&args.pipeline, aws, stats, &shutdown).await?;
    if let Some(addr) = args.metrics_addr {
        let queue = args.via_queue.as_ref().map(|url| (aws, url.as_str()));
        serve_metrics(addr, &pipeline, queue, uses_sink).await?;
    }
    if uses_sink {
        check_sink(&pipeline).await?;
    }
    let settings = backfill::Settings {
        selection: Selection {
            bucket: args.bucket,
            prefixes: args.prefixes,
            start_after: args.start_after,
            range: TimeRange {
                since: args.since,
                until: args.until,
            },
        },
        concurrency: args.concurrency,
        checkpoint: args.checkpoint,
        dry_run: args.dry_run,
        via_queue: args.via_queue,
        region: aws.region().map(|r| r.to_string()),
        shutdown_timeout: args.shutdown_timeout,
    };
    backfill::run(aws_sdk_sqs::Client::new(aws), pipeline, settings, shutdown).await
}

async fn run_worker(
    args: WorkerArgs,
    aws: &aws_config::SdkConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let pipeline = build_pipeline(&args.pipeline, aws, stats, &shutdown).await?;
    if let Some(addr) = args.metrics_addr {
        serve_metrics(addr, &pipeline, Some((aws, &args.queue_url)), true).await?;
    }
    check_sink(&pipeline).await?;
    let settings = worker::Settings {
        queue_url: args.queue_url,
        concurrency: args.concurrency,
        wait_seconds: args.wait_seconds,
        visibility_timeout: args.visibility_timeout,
        exit_when_idle: args.exit_when_idle,
        max_receives: args.max_receives,
        shutdown_timeout: args.shutdown_timeout,
    };
    let worker = Worker::new(aws_sdk_sqs::Client::new(aws), settings, pipeline, shutdown).await?;
    Arc::new(worker).run().await
}

/// `--metrics-addr`: /metrics, /healthz, and /readyz checking the sink (and
/// the queue, when there is one).
async fn serve_metrics(
    addr: std::net::SocketAddr,
    pipeline: &Pipeline,
    queue: Option<(&aws_config::SdkConfig, &str)>,
    uses_sink: bool,
) -> anyhow::Result<()> {
    let mut probes: Vec<Box<dyn metrics::Probe>> = Vec::new();
    if let Some((aws, queue_url)) = queue {
        probes.push(Box::new(metrics::QueueProbe {
            sqs: aws_sdk_sqs::Client::new(aws),
            queue_url: queue_url.to_owned(),
        }));
    }
    if uses_sink {
        probes.push(Box::new(metrics::SinkProbe(Arc::clone(
            &pipeline.delivery.sink,
        ))));
    }
    let readiness = Arc::new(metrics::Readiness::new(probes));
    metrics::serve(addr, Arc::clone(&pipeline.delivery.metrics), readiness).await?;
    Ok(())
}

/// Fails fast, with one sentence, when the sink cannot be reached.
async fn check_sink(pipeline: &Pipeline) -> anyhow::Result<()> {
    pipeline
        .delivery
        .sink
        .check()
        .await
        .map_err(anyhow::Error::msg)
        .context("the sink is not usable")
}

/// `--dead-letter`: a directory, or `s3://bucket/prefix/`.
fn dead_letter_store(target: &Path, store: &ObjectStore) -> anyhow::Result<DeadLetterStore> {
    let text = target.to_string_lossy();
    match dead_letter::s3_location(&text, "--dead-letter").map_err(anyhow::Error::msg)? {
        Some((bucket, prefix)) => Ok(DeadLetterStore::s3(store.client(None), &bucket, &prefix)),
        None => Ok(DeadLetterStore::new(target)),
    }
}

async fn build_pipeline(
    args: &PipelineArgs,
    aws: &aws_config::SdkConfig,
    stats: Arc<Stats>,
    shutdown: &Shutdown,
) -> anyhow::Result<Arc<Pipeline>> {
    if args.batch_bytes == 0 || args.batch_records == 0 || args.hec.hec_batch_bytes == 0 {
        bail!("--batch-bytes, --hec-batch-bytes and --batch-records must be at least 1");
    }
    let batch_bytes = match args.sink {
        SinkKind::SplunkHec => args.hec.hec_batch_bytes,
        SinkKind::Elasticsearch => args.batch_bytes,
    };
    // The budget is counted in KiB; it must hold at least one batch.
    let inflight_units = args
        .max_inflight_bytes
        .max(batch_bytes)
        .div_ceil(INFLIGHT_UNIT)
        .min(Semaphore::MAX_PERMITS);
    let indices =
        IndexPattern::new(&args.index, &args.fallback_index).map_err(anyhow::Error::msg)?;
    let sink: Arc<dyn Sink> = match args.sink {
        SinkKind::Elasticsearch => Arc::new(
            Elasticsearch::with_connection(
                &args.es_url,
                args.es_action,
                args.es_timeout,
                indices,
                EsConnection::from_args(&args.es_auth, aws).map_err(anyhow::Error::msg)?,
            )
            .map_err(anyhow::Error::msg)?,
        ),
        SinkKind::SplunkHec => Arc::new(
            crate::sink::splunk::from_args(&args.hec)
                .await
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let store = ObjectStore::new(
        crate::sink::auth::s3_config(aws, &args.assume_role)
            .await
            .map_err(anyhow::Error::msg)?,
        args.s3_force_path_style,
    );
    let dead_letters = dead_letter_store(
        args.dead_letter
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DEAD_LETTER)),
        &store,
    )?;
    Ok(Arc::new(Pipeline {
        store,
        parser: RecordParser::new(&ParserOptions {
            timestamp_field: &args.timestamp_field,
            id_fields: &args.id_fields,
            level_field: &args.level_field,
            min_level: args.min_level,
            fingerprint: args.fingerprint,
            skim: sink.parses_each_document(),
        }),
        delivery: Delivery {
            sink,
            dead_letters: Arc::new(dead_letters),
            metrics: Arc::new(Metrics::new(Arc::clone(&stats))),
            stats,
            max_retry_interval: args.max_retry_interval,
            abort: shutdown.abort.clone(),
        },
        limits: Limits {
            bytes: batch_bytes,
            records: args.batch_records,
        },
        max_record_bytes: args.max_record_bytes,
        format: args.format,
        inflight: Arc::new(Semaphore::new(inflight_units)),
        inflight_units,
        rate: args.max_records_per_sec.map(RateLimit::new),
    }))
}
