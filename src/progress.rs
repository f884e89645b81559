//! Backfill progress: a progress bar on a terminal; elsewhere (a container's
//! log) a JSON line on stderr every few seconds.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::stats::Stats;

/// What has been listed so far; the rest comes from the run's `Stats`.
#[derive(Default)]
pub struct Listed {
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
    /// Listing has finished: the totals are final.
    pub complete: AtomicBool,
}

const LOG_EVERY: Duration = Duration::from_secs(5);

/// Reports until the returned handle is aborted (or dropped).
pub fn start(listed: Arc<Listed>, stats: Arc<Stats>) -> tokio_util::task::AbortOnDropHandle<()> {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {msg} [{elapsed_precise}, ETA {eta}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        let mut ticks = tokio::time::interval(if terminal {
            Duration::from_millis(250)
        } else {
            LOG_EVERY
        });
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let now = stats.summary();
            let done_objects = now.objects
                + now.missing_objects
                + now.archived_objects
                + now.skipped
                + now.failed
                + now.enqueued;
            let total_objects = listed.objects.load(Ordering::Relaxed);
            let total_bytes = listed.bytes.load(Ordering::Relaxed);
            let elapsed = started.elapsed().as_secs_f64().max(0.001);
            let records_per_sec = now.records as f64 / elapsed;
            match &bar {
                Some(bar) => {
                    bar.set_length(total_bytes);
                    bar.set_position(now.bytes.min(total_bytes));
                    bar.set_message(format!(
                        "{done_objects}/{total_objects}{} objects, {records_per_sec:.0} records/s",
                        if listed.complete.load(Ordering::Relaxed) {
                            ""
                        } else {
                            "+"
                        }
                    ));
                }
                None => {
                    let line = serde_json::json!({
                        "progress": {
                            "objects_done": done_objects,
                            "objects_listed": total_objects,
                            "bytes_done": now.bytes,
                            "bytes_listed": total_bytes,
                            "listing_complete": listed.complete.load(Ordering::Relaxed),
                            "records": now.records,
                            "records_per_sec": records_per_sec.round(),
                            "elapsed_sec": elapsed.round(),
                        }
                    });
                    eprintln!("{line}");
                }
            }
        }
    }))
}
