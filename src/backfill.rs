//! `drsink backfill`: object references from listing an archive bucket,
//! through the same pipeline as the worker, so replayed records merge with
//! what the worker already indexed.
//!
//! With `--via-queue` nothing is read here: each object becomes an S3
//! notification on the workers' queue and the whole fleet shares the replay.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::aws::describe;
use crate::checkpoint::{self, Checkpoint};
use crate::dead_letter::DeadLetter;
use crate::delivery::Undelivered;
use crate::listing::{self, Listed, Selection};
use crate::notification;
use crate::pipeline::{ObjectError, ObjectOutcome, Pipeline};
use crate::progress;
use crate::shutdown::Shutdown;
use crate::stats::Stats;

pub struct Settings {
    pub selection: Selection,
    pub concurrency: usize,
    pub checkpoint: Option<PathBuf>,
    pub dry_run: bool,
    pub via_queue: Option<String>,
    /// Region named in the notifications sent with `--via-queue`.
    pub region: Option<String>,
    pub shutdown_timeout: Duration,
}

/// What becomes of the object of a replay task that panicked.
const REPLAY_LEFT: &str = "its object is not checkpointed, so a rerun retries it";

/// SQS takes at most this many messages per SendMessageBatch.
const SQS_BATCH: usize = 10;

pub async fn run(
    sqs: aws_sdk_sqs::Client,
    pipeline: Arc<Pipeline>,
    settings: Settings,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let stats = Arc::clone(&pipeline.delivery.stats);
    let _deadline = shutdown.abort_after_stop(
        settings.shutdown_timeout,
        "the objects under way are given up; a rerun replays them",
    );
    let checkpoint = match &settings.checkpoint {
        Some(path) if !settings.dry_run => {
            let kind = match settings.via_queue {
                Some(_) => checkpoint::Kind::Enqueued,
                None => checkpoint::Kind::Replayed,
            };
            let checkpoint = Checkpoint::open(path, kind)?;
            if !checkpoint.is_empty() {
                tracing::info!(
                    completed = checkpoint.len(),
                    "resuming from checkpoint {}",
                    path.display()
                );
            }
            Some(Arc::new(checkpoint))
        }
        _ => None,
    };
    let listed = Arc::new(progress::Listed::default());
    let progress = progress::start(Arc::clone(&listed), Arc::clone(&stats));

    let (tx, mut rx) = mpsc::channel::<Listed>(1024);
    let selection = settings.selection.clone();
    let s3 = pipeline.store.client(None);
    let mut listing = tokio::spawn(async move { listing::list(&s3, &selection, tx).await });

    let mut queue_batch = Vec::new();
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let fatal = Arc::new(Mutex::new(None::<String>));
    // An object whose replay a shutdown cut short: the run is not done.
    let interrupted = Arc::new(AtomicBool::new(false));
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            () = shutdown.stop.cancelled() => break,
        };
        let Some(object) = next else { break };
        listed.objects.fetch_add(1, Ordering::Relaxed);
        listed.bytes.fetch_add(object.size, Ordering::Relaxed);
        if settings.dry_run {
            Stats::add(&stats.objects, 1);
            Stats::add(&stats.bytes, object.size);
            listed.done(object.size);
            continue;
        }
        if checkpoint
            .as_ref()
            .is_some_and(|c| c.is_done(&object.object.bucket, &object.object.key))
        {
            Stats::add(&stats.skipped, 1);
            listed.done(object.size);
            continue;
        }
        if let Some(queue) = &settings.via_queue {
            queue_batch.push(object);
            if queue_batch.len() == SQS_BATCH {
                let batch = std::mem::take(&mut queue_batch);
                enqueue(&sqs, queue, &batch, settings.region.as_deref(), &stats).await?;
                sent(checkpoint.as_deref(), &listed, &batch);
            }
            continue;
        }
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot?,
            () = shutdown.stop.cancelled() => break,
        };
        stats.reap(&mut tasks, REPLAY_LEFT);
        let (pipeline, checkpoint, stats, shutdown, fatal, interrupted, listed) = (
            Arc::clone(&pipeline),
            checkpoint.clone(),
            Arc::clone(&stats),
            shutdown.clone(),
            Arc::clone(&fatal),
            Arc::clone(&interrupted),
            Arc::clone(&listed),
        );
        tasks.spawn(async move {
            let _slot = slot;
            let cut_short = replay(
                &pipeline,
                &object,
                checkpoint.as_deref(),
                &stats,
                &shutdown,
                &fatal,
            )
            .await;
            if cut_short {
                interrupted.store(true, Ordering::Relaxed);
            } else {
                listed.done(object.size);
            }
        });
    }
    // The loop ends when the listing has sent its last object (or on stop).
    listed
        .complete
        .store(!shutdown.stop.is_cancelled(), Ordering::Relaxed);
    if let Some(queue) = &settings.via_queue {
        if !queue_batch.is_empty() {
            enqueue(
                &sqs,
                queue,
                &queue_batch,
                settings.region.as_deref(),
                &stats,
            )
            .await?;
            sent(checkpoint.as_deref(), &listed, &queue_batch);
        }
    }
    stats.join_all(&mut tasks, REPLAY_LEFT).await;
    progress.finish();
    // A listing that ended (with an error, say) is heard out, even after a
    // stop; one still running is not waited for.
    if !shutdown.stop.is_cancelled() || listing.is_finished() {
        match (&mut listing).await {
            Ok(result) => result?,
            Err(e) => anyhow::bail!("listing failed: {e}"),
        }
    } else {
        listing.abort();
    }
    if let Some(reason) = fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        anyhow::bail!(reason);
    }
    // A job runner must not take a stopped replay for a finished one.
    if !listed.complete.load(Ordering::Relaxed) || interrupted.load(Ordering::Relaxed) {
        anyhow::bail!(
            "backfill stopped before it was done; run it again{} to replay the rest",
            match (&settings.checkpoint, settings.dry_run) {
                (Some(_), false) => " with the same --checkpoint",
                _ => "",
            }
        );
    }
    Ok(())
}

/// Replays one object; a failure is counted, logged with its bucket/key and
/// recorded in the dead-letter store, and the object is left for a rerun.
/// Returns whether a shutdown interrupted it.
async fn replay(
    pipeline: &Arc<Pipeline>,
    listed: &Listed,
    checkpoint: Option<&Checkpoint>,
    stats: &Stats,
    shutdown: &Shutdown,
    fatal: &Mutex<Option<String>>,
) -> bool {
    let object = &listed.object;
    match pipeline.process(object).await {
        // Not checkpointed: a rerun once it is restored replays it.
        Ok(ObjectOutcome::Archived) => {}
        Ok(_) => {
            if let Some(checkpoint) = checkpoint {
                if let Err(e) = checkpoint.record(&object.bucket, &object.key) {
                    tracing::warn!(object = %object, "{e}; the object will be replayed by a rerun");
                }
            }
        }
        Err(ObjectError::Undelivered(Undelivered::Interrupted)) => return true,
        Err(ObjectError::Undelivered(Undelivered::Fatal(reason))) => {
            fatal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(reason);
            // As the worker does: what is under way finishes (or fails
            // alike) within the shutdown timeout.
            shutdown.stop.cancel();
        }
        Err(e) => {
            let reason = format!("backfill could not replay {object}: {e}; a rerun retries it");
            tracing::error!(object = %object, "{reason}");
            Stats::add(&stats.failed, 1);
            if let Err(e) = pipeline
                .delivery
                .dead_letters
                .append(&[DeadLetter::new(object, reason)])
            {
                tracing::error!("{e}");
            }
        }
    }
    false
}

/// Objects handed to the fleet (`--via-queue`) are done here; the
/// checkpoint holds them.
fn sent(checkpoint: Option<&Checkpoint>, progress: &progress::Listed, objects: &[Listed]) {
    for object in objects {
        progress.done(object.size);
    }
    let Some(checkpoint) = checkpoint else { return };
    let names = objects
        .iter()
        .map(|o| (o.object.bucket.as_str(), o.object.key.as_str()));
    if let Err(e) = checkpoint.record_all(names) {
        tracing::warn!("{e}; a rerun sends these {} objects again", objects.len());
    }
}

async fn enqueue(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    objects: &[Listed],
    region: Option<&str>,
    stats: &Stats,
) -> anyhow::Result<()> {
    let entries = objects
        .iter()
        .enumerate()
        .map(|(i, listed)| {
            let mut object = listed.object.clone();
            object.region = region.map(str::to_owned);
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(notification::s3_event(&object, listed.size))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sent = sqs
        .send_message_batch()
        .queue_url(queue)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("sending to {queue} failed: {}", describe(&e)))?;
    if let Some(failure) = sent.failed().first() {
        let object = failure
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| objects.get(i));
        anyhow::bail!(
            "{queue} refused the notification for {}: {}",
            object.map_or_else(|| "an object".to_owned(), |o| o.object.to_string()),
            failure.message().unwrap_or(failure.code())
        );
    }
    Stats::add(&stats.enqueued, sent.successful().len() as u64);
    Ok(())
}
