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
use crate::dead_letter::DeadLetterStore;
use crate::delivery::Delivery;
use crate::listing::{Selection, TimeRange};
use crate::object::ObjectStore;
use crate::pipeline::{Pipeline, INFLIGHT_UNIT};
use crate::rate::RateLimit;
use crate::records::{ParserOptions, RecordParser};
use crate::routing::IndexPattern;
use crate::sink::elasticsearch::Elasticsearch;
use crate::sink::Sink;
use crate::stats::Stats;
use crate::worker::{self, Shutdown, Worker};

pub async fn run(command: Command, stats: Arc<Stats>, shutdown: Shutdown) -> anyhow::Result<()> {
    let aws = aws_config::load_from_env().await;
    match command {
        Command::Worker(args) => run_worker(args, &aws, stats, shutdown).await,
        Command::Backfill(args) => run_backfill(args, &aws, stats, shutdown).await,
        Command::Redrive(args) => run_redrive(args, &aws, stats, shutdown).await,
    }
}

async fn run_redrive(
    mut args: RedriveArgs,
    aws: &aws_config::SdkConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Rejected-again records go back where they came from unless told otherwise.
    args.pipeline
        .dead_letter
        .get_or_insert_with(|| args.from.clone());
    let pipeline = build_pipeline(&args.pipeline, aws, stats, &shutdown).await?;
    check_sink(&pipeline).await?;
    crate::redrive::run(pipeline, &args.from, shutdown).await
}

async fn run_backfill(
    args: BackfillArgs,
    aws: &aws_config::SdkConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let pipeline = build_pipeline(&args.pipeline, aws, stats, &shutdown).await?;
    if !args.dry_run && args.via_queue.is_none() {
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
    };
    let s3 = pipeline.store.client(None);
    backfill::run(
        s3,
        aws_sdk_sqs::Client::new(aws),
        pipeline,
        settings,
        shutdown,
    )
    .await
}

async fn run_worker(
    args: WorkerArgs,
    aws: &aws_config::SdkConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let pipeline = build_pipeline(&args.pipeline, aws, stats, &shutdown).await?;
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

async fn build_pipeline(
    args: &PipelineArgs,
    aws: &aws_config::SdkConfig,
    stats: Arc<Stats>,
    shutdown: &Shutdown,
) -> anyhow::Result<Arc<Pipeline>> {
    if args.batch_bytes == 0 || args.batch_records == 0 {
        bail!("--batch-bytes and --batch-records must be at least 1");
    }
    // The budget is counted in KiB; it must hold at least one batch.
    let inflight_units = args
        .max_inflight_bytes
        .max(args.batch_bytes)
        .div_ceil(INFLIGHT_UNIT)
        .min(Semaphore::MAX_PERMITS);
    let indices =
        IndexPattern::new(&args.index, &args.fallback_index).map_err(anyhow::Error::msg)?;
    let sink: Arc<dyn Sink> = match args.sink {
        SinkKind::Elasticsearch => Arc::new(
            Elasticsearch::new(&args.es_url, args.es_action, args.es_timeout, indices)
                .map_err(anyhow::Error::msg)?,
        ),
    };
    Ok(Arc::new(Pipeline {
        store: ObjectStore::new(aws.clone(), args.s3_force_path_style),
        parser: RecordParser::new(&ParserOptions {
            timestamp_field: &args.timestamp_field,
            id_fields: &args.id_fields,
            level_field: &args.level_field,
            min_level: args.min_level,
        }),
        delivery: Delivery {
            sink,
            dead_letters: Arc::new(DeadLetterStore::new(
                args.dead_letter
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_DEAD_LETTER)),
            )),
            stats,
            max_retry_interval: args.max_retry_interval,
            abort: shutdown.abort.clone(),
        },
        limits: Limits {
            bytes: args.batch_bytes,
            records: args.batch_records,
        },
        max_record_bytes: args.max_record_bytes,
        format: args.format,
        inflight: Arc::new(Semaphore::new(inflight_units)),
        inflight_units,
        rate: args.max_records_per_sec.map(RateLimit::new),
    }))
}
