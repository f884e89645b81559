//! `drsink worker`: object references from SQS notifications, and the
//! acknowledgement that closes the loop: a message is deleted only once every
//! record of every object it names is indexed, a duplicate, or dead-lettered.
//!
//! Each message is handled by its own task, so a message is deleted as soon
//! as it is done, never held back by slower messages received with it. While
//! a message is worked on, a heartbeat extends its visibility so that a large
//! object is not handed to a second worker half-way.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{Message, QueueAttributeName};
use aws_sdk_sqs::Client;
use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::aws::describe;
use crate::dead_letter::DeadLetter;
use crate::delivery::Undelivered;
use crate::notification::{self, Notification};
use crate::pipeline::{ObjectError, Pipeline};
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// What becomes of the message of a task that panicked.
const MESSAGE_LEFT: &str = "its message stays queued and comes back after its visibility timeout";

/// SQS returns at most this many messages per receive.
const MAX_RECEIVE: usize = 10;

pub struct Settings {
    pub queue_url: String,
    pub concurrency: usize,
    pub wait_seconds: i32,
    pub visibility_timeout: Option<u32>,
    pub exit_when_idle: bool,
    pub max_receives: Option<u32>,
    pub shutdown_timeout: Duration,
}

pub struct Worker {
    sqs: Client,
    settings: Settings,
    pipeline: Arc<Pipeline>,
    shutdown: Shutdown,
    /// Visibility timeout each heartbeat sets, in seconds.
    visibility: i32,
    /// The first fatal error, which ends the run.
    fatal: Mutex<Option<String>>,
}

impl Worker {
    /// Connects to the queue; fails with one sentence if it cannot be used.
    pub async fn new(
        sqs: Client,
        settings: Settings,
        pipeline: Arc<Pipeline>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&settings.queue_url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot use queue {}: {}", settings.queue_url, describe(&e))
            })?;
        let queue_visibility = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(30);
        // --visibility-timeout is checked at start; the queue's own may be 0.
        let visibility = settings
            .visibility_timeout
            .unwrap_or(queue_visibility)
            .clamp(1, 43_200);
        Ok(Worker {
            sqs,
            settings,
            pipeline,
            shutdown,
            visibility: visibility as i32,
            fatal: Mutex::new(None),
        })
    }

    fn stats(&self) -> &Stats {
        &self.pipeline.delivery.stats
    }

    /// Receives and processes messages until stopped (or idle, with
    /// `--exit-when-idle`), then drains in-flight work.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        // The shutdown timeout runs from the signal, not from the end of the
        // receive under way then: an orchestrator's grace period counts
        // from the signal too.
        let deadline = self.shutdown.abort_after_stop(
            self.settings.shutdown_timeout,
            "unfinished messages stay queued",
        );
        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut receive_failures = 0u32;
        loop {
            self.stats().reap(&mut tasks, MESSAGE_LEFT);
            // The stop first: a receive started after it would raise the
            // receive count of messages it can only hand back.
            let first = tokio::select! {
                biased;
                () = self.shutdown.stop.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let mut permits = vec![first];
            while permits.len() < MAX_RECEIVE {
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            // Not raced against the stop (or a fatal error): a receive
            // dropped half-way would leave the messages SQS handed out
            // invisible for a whole visibility timeout. It lasts at most
            // --wait-seconds, unless the shutdown timeout ends first.
            let received = tokio::select! {
                received = self.receive(permits.len()) => received,
                () = deadline.passed.cancelled() => break,
            };
            if self.shutdown.stop.is_cancelled() {
                if let Ok(messages) = &received {
                    for message in messages {
                        self.release(
                            message.message_id().unwrap_or("(no id)"),
                            message.receipt_handle().unwrap_or_default(),
                        )
                        .await;
                    }
                }
                break;
            }
            let messages = match received {
                Ok(messages) => {
                    receive_failures = 0;
                    messages
                }
                Err(e) => {
                    receive_failures = receive_failures.saturating_add(1);
                    let pause = Duration::from_secs(1 << receive_failures.min(5));
                    tracing::warn!(
                        "receiving from {} failed: {e}; retrying in {pause:?}",
                        self.settings.queue_url
                    );
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = self.shutdown.stop.cancelled() => break,
                    }
                }
            };
            if messages.is_empty() {
                self.stats().reap(&mut tasks, MESSAGE_LEFT);
                if self.settings.exit_when_idle && tasks.is_empty() {
                    tracing::info!("queue is empty and all work is flushed; exiting");
                    break;
                }
                continue;
            }
            for (message, permit) in messages.into_iter().zip(permits) {
                tasks.spawn(Arc::clone(&self).handle(message, permit));
            }
        }
        self.drain(tasks).await;
        match self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => Ok(()),
        }
    }

    /// Lets in-flight messages finish until the shutdown timeout (counted
    /// from the signal) aborts them; what they leave stays queued.
    async fn drain(&self, mut tasks: JoinSet<()>) {
        if tasks.is_empty() {
            return;
        }
        tracing::info!(in_flight = tasks.len(), "finishing in-flight messages");
        self.stats().join_all(&mut tasks, MESSAGE_LEFT).await;
    }

    async fn receive(&self, max: usize) -> Result<Vec<Message>, String> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(&self.settings.queue_url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(self.settings.wait_seconds)
            // The timeout the heartbeat keeps up: a `--visibility-timeout`
            // longer than the queue's must hold from the receive on.
            .visibility_timeout(self.visibility)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(output.messages.unwrap_or_default())
    }

    async fn handle(self: Arc<Self>, message: Message, _slot: OwnedSemaphorePermit) {
        Stats::add(&self.stats().messages, 1);
        let _in_flight = self.pipeline.delivery.metrics.message_in_flight();
        let id = message.message_id().unwrap_or("(no id)").to_owned();
        let Some(receipt) = message.receipt_handle().map(str::to_owned) else {
            tracing::error!(message_id = %id, "message has no receipt handle; cannot acknowledge it");
            return;
        };
        let objects = match notification::parse(message.body().unwrap_or_default()) {
            Ok(Notification::Test) => {
                tracing::info!(message_id = %id, "deleting s3:TestEvent message");
                self.delete(&id, &receipt).await;
                return;
            }
            Ok(Notification::Objects { objects, ignored }) => {
                for event in ignored {
                    tracing::info!(message_id = %id, event = %event, "ignoring event that creates no object");
                }
                objects
            }
            Err(e) => {
                self.poison(&message, &id, &receipt, &e.to_string()).await;
                return;
            }
        };

        let mut heartbeat = self.heartbeat(receipt.clone(), id.clone());
        // Whatever is logged while its objects are read and sent (a retried
        // bulk request, a corrupt stream) names the message.
        let processing = AssertUnwindSafe(
            async {
                for object in &objects {
                    self.pipeline
                        .process(object)
                        .await
                        .map_err(|e| (object, e))?;
                }
                Ok(())
            }
            .instrument(tracing::info_span!("message", message_id = %id)),
        )
        .catch_unwind();
        // The heartbeat ends only when SQS no longer holds the message for
        // this worker: its work is given up (what was sent merges by log_id
        // when the next receive takes the message up), and it is not deleted.
        let outcome = tokio::select! {
            outcome = processing => outcome,
            lost = &mut heartbeat => {
                match lost {
                    Ok(LostHold::Limit) => {
                        tracing::warn!(message_id = %id, "message {id} has been held for 12 hours, the most SQS allows; its work is given up and it goes back to the queue at once");
                        self.release(&id, &receipt).await;
                    }
                    Ok(LostHold::Gone(reason)) => {
                        tracing::warn!(message_id = %id, "message {id} is no longer held by this worker ({reason}); its work is given up, and the next receive takes it up");
                    }
                    Err(e) => tracing::error!(message_id = %id, "the heartbeat of message {id} failed: {e}; its work is given up"),
                }
                Stats::add(&self.stats().failed, 1);
                return;
            }
        };
        drop(heartbeat);
        // A panic is a bug, but it must not pass unnoticed: the message is
        // counted as failed, and stays queued like any other failure (not
        // released at once, which would loop it through the fleet).
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(message_id = %id, "message {id}: processing it panicked ({what}); it stays queued and comes back after its visibility timeout");
                Stats::add(&self.stats().failed, 1);
                return;
            }
        };

        match outcome {
            Ok(()) => self.delete(&id, &receipt).await,
            Err((_, ObjectError::Undelivered(Undelivered::Interrupted))) => {
                tracing::info!(message_id = %id, "shutdown before message {id} was acknowledged; it goes back to the queue");
                self.release(&id, &receipt).await;
            }
            Err((_, ObjectError::Undelivered(Undelivered::Fatal(reason)))) => {
                self.fail(reason);
            }
            Err((object, e)) => {
                tracing::error!(message_id = %id, object = %object, "message {id}: {e}; it stays queued and comes back after its visibility timeout");
                Stats::add(&self.stats().failed, 1);
            }
        }
    }

    /// A message of no known shape is never deleted silently and never loops
    /// forever: it is left for the queue's redrive policy, or with
    /// `--max-receives` dead-lettered and deleted once received that often.
    async fn poison(&self, message: &Message, id: &str, receipt: &str, reason: &str) {
        let receives = message
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            })
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(1);
        let reason = format!("message {id} is not an S3 notification: {reason}");
        match self.settings.max_receives {
            Some(max) if receives >= max => {
                let letter = DeadLetter::message(id, message.body().unwrap_or_default(), &reason);
                match self.pipeline.delivery.dead_letters.append(&[letter]) {
                    Ok(()) => {
                        tracing::error!(message_id = %id, "{reason}; received {receives} times, so it is dead-lettered and deleted");
                        Stats::add(&self.stats().dead_lettered_messages, 1);
                        self.delete(id, receipt).await;
                    }
                    Err(e) => {
                        tracing::error!(message_id = %id, "{reason}; dead-lettering it failed ({e}), so it stays queued");
                        Stats::add(&self.stats().failed, 1);
                    }
                }
            }
            _ => {
                tracing::error!(message_id = %id, "{reason}; left for the queue's redrive policy (received {receives} times)");
                Stats::add(&self.stats().failed, 1);
            }
        }
    }

    /// Records the first fatal error and stops taking work.
    /// The rest under way is not cut off: a request the sink already took
    /// (a HEC ack awaited) would otherwise be sent again by the next worker.
    /// It finishes, or fails the same way, within the shutdown timeout.
    fn fail(&self, reason: String) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        fatal.get_or_insert(reason);
        self.shutdown.stop.cancel();
    }

    async fn delete(&self, id: &str, receipt: &str) {
        let deleted = self
            .sqs
            .delete_message()
            .queue_url(&self.settings.queue_url)
            .receipt_handle(receipt)
            .send()
            .await;
        match deleted {
            Ok(_) => self.pipeline.delivery.metrics.message_deleted(),
            // The message comes back; its records merge by log_id.
            Err(e) => {
                tracing::warn!(message_id = %id, "deleting message {id} failed: {}; it will be processed again", describe(&e));
                Stats::add(&self.stats().failed, 1);
            }
        }
    }

    /// Makes a message this worker gives up visible to the fleet at once.
    async fn release(&self, id: &str, receipt: &str) {
        let released = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.settings.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await;
        if let Err(e) = released {
            // It comes back after its visibility timeout instead.
            tracing::warn!(message_id = %id, "releasing message {id} failed: {}", describe(&e));
        }
    }

    /// Extends the message's visibility ahead of its expiry until dropped,
    /// or until SQS no longer holds the message for this worker: then it
    /// ends and says why. Each extension is only the queue's own timeout, so
    /// the messages of a killed worker come back to the fleet within that
    /// time; a failed one is retried well before the message's expiry.
    fn heartbeat(&self, receipt: String, id: String) -> AbortOnDropHandle<LostHold> {
        let sqs = self.sqs.clone();
        let queue_url = self.settings.queue_url.clone();
        let visibility = self.visibility;
        let metrics = Arc::clone(&self.pipeline.delivery.metrics);
        let every = Duration::from_millis(visibility as u64 * 1000 / 3);
        // Counted from just after the receive, so it ends no later than SQS's.
        let received = tokio::time::Instant::now();
        AbortOnDropHandle::new(tokio::spawn(async move {
            let mut next = every;
            loop {
                tokio::time::sleep(next).await;
                let extension = match next_hold(visibility, received.elapsed(), every) {
                    Ok(extension) => extension,
                    Err(end) => {
                        tokio::time::sleep(end).await;
                        return LostHold::Limit;
                    }
                };
                let extended = sqs
                    .change_message_visibility()
                    .queue_url(&queue_url)
                    .receipt_handle(&receipt)
                    .visibility_timeout(extension)
                    .send()
                    .await;
                match extended {
                    Ok(_) => {
                        metrics.visibility_extended();
                        next = every;
                    }
                    Err(e)
                        if e.as_service_error().is_some_and(|e| {
                            e.is_message_not_inflight() || e.is_receipt_handle_is_invalid()
                        }) =>
                    {
                        return LostHold::Gone(describe(&e));
                    }
                    Err(e) => {
                        next = every / 4;
                        tracing::warn!(
                            message_id = %id,
                            "extending the visibility of message {id} failed: {}; retrying in {next:?}",
                            describe(&e)
                        );
                    }
                }
            }
        }))
    }
}

/// SQS keeps a message invisible for at most 12 hours from its receive.
const MAX_HOLD: Duration = Duration::from_secs(12 * 3600);

/// Why a message's heartbeat ended.
enum LostHold {
    /// The next extension would pass [`MAX_HOLD`].
    Limit,
    /// SQS refused the receipt handle (the message was received anew, or
    /// deleted): the message is not this worker's any more.
    Gone(String),
}

/// What the heartbeat does after `held` of the 12 hours: extend by this many
/// seconds, or, when the hold ends before the next beat, wait until just
/// before its end (`Err`) and give the message up.
fn next_hold(visibility: i32, held: Duration, every: Duration) -> Result<i32, Duration> {
    let left = MAX_HOLD.saturating_sub(held);
    if left <= every {
        return Err(left.saturating_sub(Duration::from_secs(1)));
    }
    Ok(visibility.min(i32::try_from(left.as_secs()).unwrap_or(i32::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_end_at_sqs_twelve_hours() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let every = Duration::from_secs(100);
        assert_eq!(next_hold(300, Duration::ZERO, every), Ok(300));
        // The last stretch is extended only up to the 12 hours…
        assert_eq!(
            next_hold(300, MAX_HOLD - Duration::from_secs(250), every),
            Ok(250)
        );
        // …and when it ends before the next beat, the message is given up then.
        assert_eq!(
            next_hold(300, MAX_HOLD - Duration::from_secs(100), every),
            Err(Duration::from_secs(99))
        );
        assert_eq!(next_hold(300, MAX_HOLD * 2, every), Err(Duration::ZERO));
        // --visibility-timeout 43200: the receive itself held it 12 hours.
        assert_eq!(next_hold(43_200, hours(4), hours(4)), Ok(28_800));
        assert_eq!(
            next_hold(43_200, hours(8), hours(4)),
            Err(hours(4) - Duration::from_secs(1))
        );
    }
}
