//! Stage 7: a batch → acknowledged records, shared by every sink.
//!
//! Every item of a response is accounted for: done (indexed or duplicate),
//! dead-lettered with the server's error, or retried alone with exponential
//! backoff and full jitter. Retries go on for as long as the work is held;
//! only shutdown or a fatal sink error stops them, and then the batch is
//! reported undelivered so its SQS message is not deleted.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::metrics::{Metrics, RetryReason};
use crate::notification::ObjectRef;
use crate::sink::{ItemOutcome, SendError, Sink};
use crate::stats::Stats;

#[derive(Debug, thiserror::Error)]
pub enum Undelivered {
    /// Shutdown came before the batch was fully acknowledged.
    #[error("interrupted by shutdown")]
    Interrupted,
    /// The sink cannot accept anything; the worker must stop.
    #[error("{0}")]
    Fatal(String),
    #[error("cannot write to the dead-letter store: {0}")]
    DeadLetter(std::io::Error),
}

pub struct Delivery {
    pub sink: Arc<dyn Sink>,
    pub dead_letters: Arc<DeadLetterStore>,
    pub stats: Arc<Stats>,
    pub metrics: Arc<Metrics>,
    pub max_retry_interval: Duration,
    /// Cancelled when in-flight work must be abandoned.
    pub abort: CancellationToken,
}

const FIRST_RETRY_INTERVAL: Duration = Duration::from_millis(100);
const MIN_RETRY_INTERVAL: Duration = Duration::from_millis(10);

impl Delivery {
    /// Delivers every entry of the batch, or says why it could not.
    pub async fn deliver(&self, object: &ObjectRef, batch: &Batch) -> Result<(), Undelivered> {
        self.deliver_settling(object, batch, &mut vec![false; batch.entries.len()])
            .await
    }

    /// `deliver`, marking in `settled` every entry done with (indexed, a
    /// duplicate, or dead-lettered), so that the caller of a batch left
    /// undelivered can tell those from the entries still to be sent.
    pub async fn deliver_settling(
        &self,
        object: &ObjectRef,
        batch: &Batch,
        settled: &mut [bool],
    ) -> Result<(), Undelivered> {
        let all = (0..batch.entries.len()).collect();
        self.deliver_items(object, batch, all, settled).await
    }

    async fn deliver_items(
        &self,
        object: &ObjectRef,
        batch: &Batch,
        mut pending: Vec<usize>,
        settled: &mut [bool],
    ) -> Result<(), Undelivered> {
        let mut attempt: u32 = 0;
        while !pending.is_empty() {
            let body = batch.body_of(&pending);
            let started = std::time::Instant::now();
            let sent = tokio::select! {
                result = self.sink.send(body, pending.len()) => result,
                () = self.abort.cancelled() => return Err(Undelivered::Interrupted),
            };
            self.metrics.sink_request(started.elapsed());
            match sent {
                Ok(outcomes) => {
                    pending = self.account(object, batch, &pending, outcomes, settled)?;
                }
                Err(SendError::Refused(_)) if pending.len() > 1 => {
                    let second = pending.split_off(pending.len() / 2);
                    Box::pin(self.deliver_items(object, batch, pending, settled)).await?;
                    return Box::pin(self.deliver_items(object, batch, second, settled)).await;
                }
                Err(SendError::Refused(reason)) => {
                    let letter = self.letter(
                        object,
                        batch,
                        pending[0],
                        format!("the sink refused the record: {reason}"),
                    );
                    self.dead_letter(&[letter])?;
                    settled[pending[0]] = true;
                    return Ok(());
                }
                Err(SendError::Transient(reason)) => {
                    tracing::warn!(object = %object, items = pending.len(), %reason, "bulk request failed; retrying");
                    let reason = RetryReason::Request(&reason);
                    self.metrics
                        .retried(&self.stats, reason, pending.len() as u64);
                }
                Err(SendError::Fatal(reason)) => return Err(Undelivered::Fatal(reason)),
            }
            if !pending.is_empty() {
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(backoff(attempt, self.max_retry_interval)) => {}
                    () = self.abort.cancelled() => return Err(Undelivered::Interrupted),
                }
            }
        }
        Ok(())
    }

    /// Counts the outcomes and dead-letters rejections; returns the items to
    /// retry.
    fn account(
        &self,
        object: &ObjectRef,
        batch: &Batch,
        pending: &[usize],
        outcomes: Vec<ItemOutcome>,
        settled: &mut [bool],
    ) -> Result<Vec<usize>, Undelivered> {
        let (mut indexed, mut duplicates) = (0, 0);
        let mut retry = Vec::new();
        let mut letters = Vec::new();
        let mut retry_reason = None;
        // An item the sink said nothing about is not done: retry it.
        let missing = pending.len().saturating_sub(outcomes.len());
        let outcomes = outcomes.into_iter().chain(
            std::iter::repeat_with(|| ItemOutcome::Retry("no outcome from the sink".into()))
                .take(missing),
        );
        for (&item, outcome) in pending.iter().zip(outcomes) {
            match outcome {
                ItemOutcome::Indexed => indexed += 1,
                ItemOutcome::Duplicate => duplicates += 1,
                ItemOutcome::Retry(reason) => {
                    retry.push(item);
                    retry_reason.get_or_insert(reason);
                }
                ItemOutcome::Reject(error) => {
                    let reason = error.get("type").and_then(|t| t.as_str()).map_or_else(
                        || "rejected by the sink".to_owned(),
                        |t| format!("rejected by the sink: {t}"),
                    );
                    letters.push(self.letter(object, batch, item, reason).error(error));
                }
            }
        }
        Stats::add(&self.stats.indexed, indexed);
        Stats::add(&self.stats.duplicates, duplicates);
        self.dead_letter(&letters)?;
        for &item in pending {
            settled[item] = true;
        }
        for &item in &retry {
            settled[item] = false;
        }
        if let Some(reason) = retry_reason {
            let label = RetryReason::Item(&reason);
            self.metrics.retried(&self.stats, label, retry.len() as u64);
            tracing::debug!(object = %object, items = retry.len(), %reason, "retrying items");
        }
        Ok(retry)
    }

    fn letter(
        &self,
        object: &ObjectRef,
        batch: &Batch,
        item: usize,
        reason: impl Into<String>,
    ) -> DeadLetter {
        DeadLetter::new(object, reason)
            .position(batch.entries[item].position)
            .record(batch.document(item))
    }

    pub fn dead_letter(&self, letters: &[DeadLetter]) -> Result<(), Undelivered> {
        self.dead_letters
            .append(letters)
            .map_err(Undelivered::DeadLetter)?;
        Stats::add(&self.stats.dead_lettered, letters.len() as u64);
        Ok(())
    }
}

/// Exponential backoff with full jitter, capped at `max` (but never a tight
/// loop, even with `--max-retry-interval 0`).
fn backoff(attempt: u32, max: Duration) -> Duration {
    let ceiling = FIRST_RETRY_INTERVAL
        .saturating_mul(1u32 << attempt.min(20))
        .min(max);
    ceiling
        .mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
        .max(MIN_RETRY_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_its_cap_and_never_spins() {
        for attempt in [1, 5, 40] {
            for _ in 0..2000 {
                assert!(backoff(attempt, Duration::ZERO) >= MIN_RETRY_INTERVAL);
                let wait = backoff(attempt, Duration::from_secs(2));
                assert!((MIN_RETRY_INTERVAL..=Duration::from_secs(2)).contains(&wait));
            }
        }
        let waits: Vec<Duration> = (0..2000)
            .map(|_| backoff(1, Duration::from_secs(60)))
            .collect();
        assert!(waits.iter().all(|w| *w <= FIRST_RETRY_INTERVAL * 2));
    }
}
