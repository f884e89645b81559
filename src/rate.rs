//! `--max-records-per-sec`: protects a DR cluster that also serves live
//! traffic. Each batch reserves its share of time before it is sent; the
//! decoding thread that made it waits for its turn.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimit {
    per_second: f64,
    /// When the next record may go.
    next: Mutex<Instant>,
}

impl RateLimit {
    pub fn new(per_second: u64) -> Self {
        RateLimit {
            per_second: per_second.max(1) as f64,
            next: Mutex::new(Instant::now()),
        }
    }

    /// How long the caller must wait before sending `records`.
    pub fn reserve(&self, records: u64) -> Duration {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(records as f64 / self.per_second);
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_space_batches_by_their_size() {
        let limit = RateLimit::new(1000);
        assert!(limit.reserve(500) < Duration::from_millis(5));
        let second = limit.reserve(500);
        assert!(second > Duration::from_millis(450) && second <= Duration::from_millis(500));
        let third = limit.reserve(1);
        assert!(third > Duration::from_millis(950) && third <= Duration::from_millis(1000));
    }
}
