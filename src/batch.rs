//! Stage 5: records → batches, each one request body for the sink.
//!
//! A batch remembers where each record's entry lies in the body, so that the
//! items a sink asks to retry can be re-sent alone, and a rejected one can be
//! dead-lettered with its line number.

use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;

use crate::records::Position;

/// When a batch is full.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub bytes: usize,
    pub records: usize,
}

/// One record's part of a batch body.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The whole entry (e.g. bulk action line and document).
    pub range: Range<usize>,
    /// The document alone, as sent.
    pub document: Range<usize>,
    /// Where the record lies in its object.
    pub position: Position,
}

/// A batch being filled.
#[derive(Default)]
pub struct Builder {
    body: Vec<u8>,
    entries: Vec<Entry>,
    /// Capacity of the last body handed out: a new body starts with it, so
    /// it fills without reallocations.
    capacity: usize,
    /// The entry that did not fit in the last batch, waiting for the next
    /// body. That one is taken only when needed: a batch whose delivery is
    /// quick (or that is dropped at once) gives its body back first, to be
    /// reused while still in the cache.
    carried: Option<Entry>,
    carried_bytes: Vec<u8>,
}

impl Builder {
    /// Appends one entry; `encode` writes it and returns where its document
    /// starts and ends, relative to the body. An entry that would take the
    /// body past `limits.bytes` starts the next batch instead: the batch
    /// before it is returned, sealed, so no body passes the bound (a
    /// cluster's or proxy's request limit) but by an entry that alone does.
    pub fn push(
        &mut self,
        position: Position,
        limits: &Limits,
        encode: impl FnOnce(&mut Vec<u8>) -> Range<usize>,
    ) -> Option<Batch> {
        self.open_body();
        let start = self.body.len();
        let document = encode(&mut self.body);
        let end = self.body.len();
        if end <= limits.bytes || self.entries.is_empty() {
            self.entries.push(Entry {
                range: start..end,
                document,
                position,
            });
            return None;
        }
        self.carried_bytes.clear();
        self.carried_bytes.extend_from_slice(&self.body[start..]);
        self.carried = Some(Entry {
            range: 0..end - start,
            document: document.start - start..document.end - start,
            position,
        });
        self.body.truncate(start);
        Some(self.seal())
    }

    pub fn is_full(&self, limits: &Limits) -> bool {
        let (bytes, entries) = match &self.carried {
            Some(entry) => (entry.range.len(), 1),
            None => (self.body.len(), self.entries.len()),
        };
        bytes >= limits.bytes || entries >= limits.records
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.carried.is_none()
    }

    /// Hands out the batch, leaving an empty builder; its next entry goes
    /// into a recycled body, or a new one of the same capacity.
    pub fn take(&mut self) -> Batch {
        self.open_body();
        self.seal()
    }

    /// Makes sure a body is there, with the carried entry at its start.
    fn open_body(&mut self) {
        if self.body.capacity() == 0 {
            self.body = Spare::take().unwrap_or_else(|| Vec::with_capacity(self.capacity));
        }
        if let Some(entry) = self.carried.take() {
            // Carried only by `push`, right after sealing: it opens the body.
            debug_assert!(self.body.is_empty() && self.entries.is_empty());
            self.body.extend_from_slice(&self.carried_bytes);
            self.entries.push(entry);
        }
    }

    fn seal(&mut self) -> Batch {
        self.capacity = self.capacity.max(self.body.capacity());
        Batch {
            body: Bytes::from_owner(Spare(std::mem::take(&mut self.body))),
            entries: std::mem::take(&mut self.entries),
        }
    }
}

impl Drop for Builder {
    /// A body taken for a batch that never came (the object ended) is kept.
    fn drop(&mut self) {
        Spare::keep(std::mem::take(&mut self.body));
    }
}

/// Bodies of batches that were delivered, kept for the next ones. A body
/// is freed on the thread that sent it, and the allocator hands such large
/// blocks back to the system: every new body then costs a page fault per
/// 4 KiB written (a third of the worker's CPU time went to the kernel).
static SPARE_BODIES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Spare bodies kept at most: enough for the bodies that come back while
/// others are being filled, few enough that little memory sits idle
/// outside the `--max-inflight-bytes` budget.
const SPARE_BODIES_MAX: usize = 4;

/// A batch body that goes back to `SPARE_BODIES` when its last `Bytes` is
/// dropped.
struct Spare(Vec<u8>);

impl Spare {
    fn take() -> Option<Vec<u8>> {
        SPARE_BODIES.lock().ok()?.pop()
    }

    fn keep(mut body: Vec<u8>) {
        if body.capacity() == 0 {
            return;
        }
        body.clear();
        if let Ok(mut spare) = SPARE_BODIES.lock() {
            if spare.len() < SPARE_BODIES_MAX {
                spare.push(body);
            }
        }
    }
}

impl AsRef<[u8]> for Spare {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        Spare::keep(std::mem::take(&mut self.0));
    }
}

/// A sealed batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub body: Bytes,
    pub entries: Vec<Entry>,
}

impl Batch {
    /// The request body holding only the given entries.
    pub fn body_of(&self, items: &[usize]) -> Bytes {
        if items.len() == self.entries.len() {
            return self.body.clone();
        }
        let size = items.iter().map(|&i| self.entries[i].range.len()).sum();
        let mut body = Vec::with_capacity(size);
        for &i in items {
            body.extend_from_slice(&self.body[self.entries[i].range.clone()]);
        }
        Bytes::from(body)
    }

    pub fn document(&self, item: usize) -> &[u8] {
        &self.body[self.entries[item].document.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> impl FnOnce(&mut Vec<u8>) -> Range<usize> + '_ {
        move |out: &mut Vec<u8>| {
            out.extend_from_slice(b"A\n");
            let start = out.len();
            out.extend_from_slice(text.as_bytes());
            let end = out.len();
            out.push(b'\n');
            start..end
        }
    }

    #[test]
    fn subsets_and_documents_come_from_the_recorded_ranges() {
        let mut b = Builder::default();
        let limits = Limits {
            bytes: 1000,
            records: 3,
        };
        assert!(b.push(Position::line(1), &limits, entry("one")).is_none());
        assert!(b.push(Position::line(3), &limits, entry("three")).is_none());
        assert!(b.push(Position::line(4), &limits, entry("four")).is_none());
        assert!(b.is_full(&limits));
        assert!(!b.is_full(&Limits {
            bytes: 1000,
            records: 4
        }));
        let batch = b.take();
        assert!(b.is_empty());
        assert_eq!(&batch.body_of(&[0, 2])[..], b"A\none\nA\nfour\n");
        assert_eq!(batch.document(1), b"three");
        assert_eq!(batch.entries[1].position, Position::line(3));
        // Its body is recycled once dropped, and starts empty again.
        drop(batch);
        b.push(Position::line(5), &limits, entry("five"));
        b.push(Position::line(6), &limits, entry("six"));
        assert_eq!(&b.take().body[..], b"A\nfive\nA\nsix\n");
    }

    #[test]
    fn an_entry_that_would_pass_the_byte_bound_starts_the_next_batch() {
        let mut b = Builder::default();
        let limits = Limits {
            bytes: 20,
            records: 100,
        };
        // Entries of 2 + len + 1 bytes: 8 + 8 fit in 20, a third does not.
        assert!(b.push(Position::line(1), &limits, entry("one12")).is_none());
        assert!(b.push(Position::line(2), &limits, entry("two12")).is_none());
        let full = b.push(Position::line(3), &limits, entry("three")).unwrap();
        assert_eq!(&full.body[..], b"A\none12\nA\ntwo12\n");
        assert_eq!(full.entries.len(), 2);
        assert!(!b.is_full(&limits) && !b.is_empty());
        // The entry that did not fit leads the next batch, its ranges moved along.
        let next = b.take();
        assert_eq!(&next.body[..], b"A\nthree\n");
        assert_eq!(next.document(0), b"three");
        assert_eq!(next.entries[0].position, Position::line(3));
        // An entry larger than the bound alone still goes, alone.
        let big = "x".repeat(30);
        assert!(b.push(Position::line(4), &limits, entry(&big)).is_none());
        assert!(b.is_full(&limits));
        let full = b.push(Position::line(5), &limits, entry("five")).unwrap();
        assert_eq!(full.document(0), big.as_bytes());
        // ... and so does one that did not fit behind another.
        let five = b.push(Position::line(6), &limits, entry(&big)).unwrap();
        assert_eq!(five.document(0), b"five");
        assert!(b.is_full(&limits));
        let last = b.take();
        assert_eq!(
            (last.document(0), last.entries[0].position),
            (big.as_bytes(), Position::line(6))
        );
        assert!(b.is_empty());
    }
}
