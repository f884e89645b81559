//! Backfill progress: a progress bar on a terminal; elsewhere (a container's
//! log) a JSON line on stderr every few seconds.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::stats::Stats;

/// What has been listed so far, and how much of it is done (replayed,
/// skipped, sent to the queue, or given up on); the rest comes from the
/// run's `Stats`.
#[derive(Default)]
pub struct Listed {
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
    /// Listing has finished: the totals are final.
    pub complete: AtomicBool,
    done_objects: AtomicU64,
    done_bytes: AtomicU64,
}

impl Listed {
    /// One listed object of `bytes` is done with, whatever its outcome.
    pub fn done(&self, bytes: u64) {
        self.done_objects.fetch_add(1, Ordering::Relaxed);
        self.done_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

const LOG_EVERY: Duration = Duration::from_secs(5);

/// The running report; [`Progress::finish`] logs the final figures.
pub struct Progress {
    listed: Arc<Listed>,
    stats: Arc<Stats>,
    started: Instant,
    terminal: bool,
    _reporter: tokio_util::task::AbortOnDropHandle<()>,
}

impl Progress {
    /// A last JSON line once the run is over, so that a job's log ends with
    /// what was done (a terminal's bar shows it already).
    pub fn finish(self) {
        if !self.terminal {
            eprintln!("{}", line(&self.listed, &self.stats, self.started));
        }
    }
}

/// Reports until the returned `Progress` is dropped or finished.
pub fn start(listed: Arc<Listed>, stats: Arc<Stats>) -> Progress {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let reporter = {
        let (listed, stats) = (Arc::clone(&listed), Arc::clone(&stats));
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
                match &bar {
                    Some(bar) => {
                        let total_bytes = listed.bytes.load(Ordering::Relaxed);
                        bar.set_length(total_bytes);
                        bar.set_position(
                            listed.done_bytes.load(Ordering::Relaxed).min(total_bytes),
                        );
                        bar.set_message(format!(
                            "{}/{}{} objects, {:.0} records/s",
                            listed.done_objects.load(Ordering::Relaxed),
                            listed.objects.load(Ordering::Relaxed),
                            if listed.complete.load(Ordering::Relaxed) {
                                ""
                            } else {
                                "+"
                            },
                            records_per_sec(&stats, started),
                        ));
                    }
                    None => eprintln!("{}", line(&listed, &stats, started)),
                }
            }
        }))
    };
    Progress {
        listed,
        stats,
        started,
        terminal,
        _reporter: reporter,
    }
}

fn records_per_sec(stats: &Stats, started: Instant) -> f64 {
    stats.summary().records as f64 / started.elapsed().as_secs_f64().max(0.001)
}

/// The JSON progress line.
fn line(listed: &Listed, stats: &Stats, started: Instant) -> serde_json::Value {
    serde_json::json!({
        "progress": {
            "objects_done": listed.done_objects.load(Ordering::Relaxed),
            "objects_listed": listed.objects.load(Ordering::Relaxed),
            "bytes_done": listed.done_bytes.load(Ordering::Relaxed),
            "bytes_listed": listed.bytes.load(Ordering::Relaxed),
            "listing_complete": listed.complete.load(Ordering::Relaxed),
            "records": stats.summary().records,
            "records_per_sec": records_per_sec(stats, started).round(),
            "elapsed_sec": started.elapsed().as_secs_f64().round(),
        }
    })
}
