//! One object, end to end: open → decompress → lines → records → batches →
//! delivery. The worker and any other source of object references share it.
//!
//! Decoding is CPU work, so it runs on a blocking thread and hands batches
//! over a small bounded channel to the async side, which delivers them. The
//! channel bounds memory: a slow sink stops decoding instead of piling up
//! batches.

use std::io::Read;
use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::io::SyncIoBridge;

use crate::batch::{Batch, Limits};
use crate::dead_letter::DeadLetter;
use crate::decode::{Format, ObjectDecoder};
use crate::delivery::{Delivery, Undelivered};
use crate::notification::ObjectRef;
use crate::object::{ObjectStore, OpenError};
use crate::rate::RateLimit;
use crate::records::RecordParser;
use crate::stats::Stats;

/// Batches decoded ahead of delivery, per object.
const BATCHES_AHEAD: usize = 2;

pub struct Pipeline {
    pub store: ObjectStore,
    pub parser: RecordParser,
    pub delivery: Delivery,
    pub limits: Limits,
    pub max_record_bytes: usize,
    pub format: Format,
    /// Bytes of batches decoded but not yet acknowledged, across all
    /// objects, in KiB permits: a slow cluster slows reading instead of
    /// growing memory.
    pub inflight: Arc<Semaphore>,
    pub inflight_units: usize,
    pub rate: Option<RateLimit>,
}

/// Unit of the in-flight byte budget.
pub const INFLIGHT_UNIT: usize = 1024;

/// How an object ended when everything in it is accounted for.
#[derive(Debug, PartialEq, Eq)]
pub enum ObjectOutcome {
    /// Every record is indexed, a duplicate, or dead-lettered.
    Done,
    /// The object no longer exists: nothing is left to index.
    Missing,
    /// The object is one of the dead-letter store's own.
    Own,
    /// The object is archived and not restored: it is in the dead-letter
    /// store, to be replayed once restored.
    Archived,
}

/// Why an object is not fully accounted for; its message must stay queued.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{0}")]
    Incomplete(String),
    #[error(transparent)]
    Undelivered(#[from] Undelivered),
}

impl Pipeline {
    fn stats(&self) -> &Stats {
        &self.delivery.stats
    }

    pub async fn process(
        self: &Arc<Self>,
        object: &ObjectRef,
    ) -> Result<ObjectOutcome, ObjectError> {
        if self.delivery.dead_letters.owns(object) {
            // A notification for one of drsink's own dead-letter objects.
            tracing::debug!(object = %object, "skipping the dead-letter store's own object");
            return Ok(ObjectOutcome::Own);
        }
        // A GetObject that hangs must not outlast the shutdown timeout.
        let opened = tokio::select! {
            opened = self.store.open(object) => opened,
            () = self.delivery.abort.cancelled() => return Err(Undelivered::Interrupted.into()),
        };
        let reader = match opened {
            Ok(reader) => reader,
            Err(OpenError::Missing(what)) => {
                tracing::warn!(object = %object, "{what}; nothing to index");
                Stats::add(&self.stats().missing_objects, 1);
                return Ok(ObjectOutcome::Missing);
            }
            Err(e @ OpenError::Archived { .. }) => {
                // Retrying cannot help until someone restores it, so it is
                // recorded instead of going round the queue for days.
                let reason = format!(
                    "{e}: restore it (S3 RestoreObject), then replay it with `drsink backfill --bucket {} --prefix <its key>`",
                    object.bucket
                );
                tracing::warn!(object = %object, "{reason}");
                self.delivery
                    .dead_letters
                    .append(&[DeadLetter::new(object, reason)])
                    .map_err(|e| ObjectError::Incomplete(e.to_string()))?;
                Stats::add(&self.stats().archived_objects, 1);
                return Ok(ObjectOutcome::Archived);
            }
            Err(e) => return Err(ObjectError::Incomplete(e.to_string())),
        };
        let (tx, mut rx) = mpsc::channel(BATCHES_AHEAD);
        let source = SyncIoBridge::new(reader);
        let decoding = {
            let this = Arc::clone(self);
            let object = object.clone();
            // The decoding thread logs under the message's span too.
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || span.in_scope(|| this.decode(&object, source, tx)))
        };
        let mut delivered = Ok(());
        loop {
            // Waiting for the decoder (a slow read, a rate limit) must not
            // outlast the shutdown timeout either.
            let next = tokio::select! {
                next = rx.recv() => next,
                () = self.delivery.abort.cancelled() => {
                    delivered = Err(Undelivered::Interrupted);
                    break;
                }
            };
            let Some((batch, _budget)) = next else { break };
            if let Err(e) = self.delivery.deliver(object, &batch).await {
                delivered = Err(e);
                break;
            }
        }
        // Dropping the receiver stops a decoder still running, at its next
        // batch; when delivery failed or was aborted, it is not waited for.
        drop(rx);
        delivered?;
        let decoded = tokio::select! {
            decoded = decoding => decoded,
            () = self.delivery.abort.cancelled() => return Err(Undelivered::Interrupted.into()),
        }
        .map_err(|e| ObjectError::Incomplete(format!("decoding {object} failed: {e}")))?;
        decoded?;
        Stats::add(&self.stats().objects, 1);
        self.delivery.metrics.object_acknowledged(object.event_time);
        Ok(ObjectOutcome::Done)
    }

    /// Waits (on the decoding thread) until `bytes` fit in the in-flight
    /// budget; a batch larger than the whole budget takes all of it.
    fn reserve(
        &self,
        bytes: usize,
        batches: &mpsc::Sender<(Batch, OwnedSemaphorePermit)>,
    ) -> Option<OwnedSemaphorePermit> {
        let units = bytes.div_ceil(INFLIGHT_UNIT).clamp(1, self.inflight_units);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        let inflight = Arc::clone(&self.inflight);
        tokio::runtime::Handle::current().block_on(async {
            tokio::select! {
                permit = inflight.acquire_many_owned(units) => permit.ok(),
                () = batches.closed() => None,
            }
        })
    }

    /// Runs on a blocking thread: reads the object and sends its batches,
    /// dead letters first, so a batch is never acknowledged before them.
    fn decode(
        &self,
        object: &ObjectRef,
        source: impl Read,
        batches: mpsc::Sender<(Batch, OwnedSemaphorePermit)>,
    ) -> Result<(), ObjectError> {
        let decoder = ObjectDecoder {
            parser: &self.parser,
            limits: self.limits,
            max_record_bytes: self.max_record_bytes,
            format: self.format,
        };
        let mut encoder = self.delivery.sink.encoder(object);
        let bytes = decoder
            .decode(object, source, encoder.as_mut(), |chunk| {
                // A closed channel means delivery gave up; it says why. The
                // message then goes back to the queue, so nothing more is
                // written for it.
                let stopped = || "delivery stopped".to_owned();
                if batches.is_closed() {
                    return Err(stopped());
                }
                Stats::add(&self.stats().records, chunk.records);
                Stats::add(&self.stats().filtered, chunk.filtered);
                self.delivery
                    .dead_letter(&chunk.letters)
                    .map_err(|e| e.to_string())?;
                if let Some(fault) = chunk.fault {
                    tracing::warn!(object = %object, "{}", fault.reason);
                    self.delivery
                        .dead_letters
                        .append(&[fault])
                        .map_err(|e| e.to_string())?;
                    Stats::add(&self.stats().corrupt_objects, 1);
                }
                let Some(batch) = chunk.batch else {
                    return Ok(());
                };
                if let Some(rate) = &self.rate {
                    let wait = rate.reserve(batch.entries.len() as u64);
                    tokio::runtime::Handle::current().block_on(async {
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = batches.closed() => {}
                        }
                    });
                    if batches.is_closed() {
                        return Err(stopped());
                    }
                }
                let budget = self
                    .reserve(batch.body.len(), &batches)
                    .ok_or_else(stopped)?;
                batches
                    .blocking_send((batch, budget))
                    .map_err(|_| stopped())
            })
            .map_err(|e| ObjectError::Incomplete(e.to_string()))?;
        Stats::add(&self.stats().bytes, bytes);
        Ok(())
    }
}
