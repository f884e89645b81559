//! Counters of a run, printed as one JSON summary line on exit.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::task::JoinSet;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, shared by every task of a run.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A snapshot of the counters, as printed.
        #[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
        pub struct Summary {
            $(pub $name: u64,)*
        }

        impl Stats {
            pub fn summary(&self) -> Summary {
                Summary { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// SQS messages received.
    messages,
    /// Objects read to the end.
    objects,
    /// Objects notified but gone by the time they were read.
    missing_objects,
    /// Objects in an archive tier, not restored: dead-lettered, to be
    /// replayed once restored.
    archived_objects,
    /// Non-blank lines (records) read.
    records,
    /// Records written for the first time.
    indexed,
    /// Records already present under the same log_id.
    duplicates,
    /// Records written to the dead-letter store.
    dead_lettered,
    /// Records dropped by `--min-level` (not dead letters).
    filtered,
    /// Objects whose compressed stream broke off; what came before the fault
    /// is indexed, the fault is in the dead-letter store.
    corrupt_objects,
    /// SQS messages of no known shape written to the dead-letter store after
    /// `--max-receives` receives.
    dead_lettered_messages,
    /// Objects a backfill skipped because its checkpoint has them.
    skipped,
    /// Objects a backfill put on the workers' queue (`--via-queue`).
    enqueued,
    /// Item retries sent to the sink.
    retried,
    /// Messages whose processing failed; left on the queue to come back.
    failed,
    /// Compressed bytes read from S3.
    bytes,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Collects the tasks that ended, counting one that panicked (a bug) as
    /// failed: what it held is not accounted for. `left` says what becomes
    /// of that.
    pub fn reap(&self, tasks: &mut JoinSet<()>, left: &str) {
        while let Some(joined) = tasks.try_join_next() {
            self.count_panic(joined, left);
        }
    }

    /// Waits for every task, counting them as [`Stats::reap`] does.
    pub async fn join_all(&self, tasks: &mut JoinSet<()>, left: &str) {
        while let Some(joined) = tasks.join_next().await {
            self.count_panic(joined, left);
        }
    }

    fn count_panic(&self, joined: Result<(), tokio::task::JoinError>, left: &str) {
        if let Err(e) = joined {
            tracing::error!("a task failed: {e}; {left}");
            Stats::add(&self.failed, 1);
        }
    }
}
