//! Shutdown in two stages: stop taking work, then abandon what is left.
//!
//! The first SIGTERM/SIGINT (or `--exit-when-idle`) cancels `stop`; work
//! under way may finish until `--shutdown-timeout`, counted from the signal,
//! cancels `abort`. Whatever is not acknowledged by then stays where it came
//! from (the queue, the checkpoint's "to do") for the next run.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

#[derive(Clone, Default)]
pub struct Shutdown {
    /// Cancelled on the first SIGTERM/SIGINT, or when idle with
    /// `--exit-when-idle`: no more work is taken.
    pub stop: CancellationToken,
    /// Cancelled when in-flight work must be given up (shutdown timeout,
    /// second signal, fatal error).
    pub abort: CancellationToken,
}

/// The timer started by [`Shutdown::abort_after_stop`]; dropping it ends it.
pub struct Deadline {
    /// Cancelled only when the timeout ran out (not by a fatal error's abort).
    pub passed: CancellationToken,
    _timer: AbortOnDropHandle<()>,
}

impl Shutdown {
    /// Aborts in-flight work once `timeout` has passed since the stop.
    /// `left` says, for the log, what happens to the work given up.
    pub fn abort_after_stop(&self, timeout: Duration, left: &'static str) -> Deadline {
        let passed = CancellationToken::new();
        let (shutdown, deadline) = (self.clone(), passed.clone());
        let timer = tokio::spawn(async move {
            shutdown.stop.cancelled().await;
            tokio::select! {
                () = tokio::time::sleep(timeout) => {
                    tracing::warn!("shutdown timeout reached; {left}");
                    shutdown.abort.cancel();
                    deadline.cancel();
                }
                () = shutdown.abort.cancelled() => {}
            }
        });
        Deadline {
            passed,
            _timer: AbortOnDropHandle::new(timer),
        }
    }
}
