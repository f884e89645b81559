//! One object, end to end: open → decompress → lines → records → batches →
//! delivery. The worker and any other source of object references share it.
//!
//! Decoding is CPU work, so it runs on a blocking thread and hands batches
//! over a small bounded channel to the async side, which delivers them. The
//! channel bounds memory: a slow sink stops decoding instead of piling up
//! batches.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use crate::batch::{Batch, Builder, Limits};
use crate::dead_letter::DeadLetter;
use crate::decompress::Decoder;
use crate::delivery::{Delivery, Undelivered};
use crate::lines::{Line, Lines};
use crate::notification::ObjectRef;
use crate::object::{ObjectStore, OpenError};
use crate::records::{RecordError, RecordParser};
use crate::stats::Stats;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Batches decoded ahead of delivery, per object.
const BATCHES_AHEAD: usize = 2;

pub struct Pipeline {
    pub store: ObjectStore,
    pub parser: RecordParser,
    pub delivery: Delivery,
    pub limits: Limits,
    pub max_record_bytes: usize,
}

/// How an object ended when everything in it is accounted for.
#[derive(Debug, PartialEq, Eq)]
pub enum ObjectOutcome {
    /// Every record is indexed, a duplicate, or dead-lettered.
    Done,
    /// The object no longer exists: nothing is left to index.
    Missing,
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
        let reader = match self.store.open(object).await {
            Ok(reader) => reader,
            Err(OpenError::Missing(what)) => {
                tracing::warn!(object = %object, "{what}; nothing to index");
                Stats::add(&self.stats().missing_objects, 1);
                return Ok(ObjectOutcome::Missing);
            }
            Err(e) => return Err(ObjectError::Incomplete(e.to_string())),
        };
        let (tx, mut rx) = mpsc::channel(BATCHES_AHEAD);
        let source = SyncIoBridge::new(reader);
        let decoding = {
            let this = Arc::clone(self);
            let object = object.clone();
            tokio::task::spawn_blocking(move || this.decode(&object, source, tx))
        };
        let mut delivered = Ok(());
        while let Some(batch) = rx.recv().await {
            if let Err(e) = self.delivery.deliver(object, &batch).await {
                delivered = Err(e);
                break;
            }
        }
        // Dropping the receiver stops a decoder still running.
        drop(rx);
        let decoded = decoding
            .await
            .map_err(|e| ObjectError::Incomplete(format!("decoding {object} failed: {e}")))?;
        delivered?;
        decoded?;
        Stats::add(&self.stats().objects, 1);
        Ok(ObjectOutcome::Done)
    }

    /// Runs on a blocking thread: reads the object and sends its batches.
    fn decode(
        &self,
        object: &ObjectRef,
        source: impl Read,
        batches: mpsc::Sender<Batch>,
    ) -> Result<(), ObjectError> {
        let source_fault = Rc::new(RefCell::new(None));
        let source = FaultTracking {
            inner: source,
            fault: Rc::clone(&source_fault),
        };
        let read_failed =
            |e: io::Error| ObjectError::Incomplete(format!("reading {object} failed: {e}"));
        let decoder = Decoder::new(source).map_err(read_failed)?;
        let compression = decoder.compression;
        let mut lines = Lines::new(decoder, self.max_record_bytes);
        let mut encoder = self.delivery.sink.encoder(object);
        let mut builder = Builder::default();
        let mut letters = Vec::new();
        let mut records = 0u64;

        let flush = |builder: &mut Builder,
                         letters: &mut Vec<DeadLetter>,
                         records: &mut u64|
         -> Result<(), ObjectError> {
            Stats::add(&self.stats().records, std::mem::take(records));
            self.delivery.dead_letter(letters)?;
            letters.clear();
            if !builder.is_empty() && batches.blocking_send(builder.take()).is_err() {
                // The receiver gave up; it reports why.
                return Err(ObjectError::Incomplete("delivery stopped".into()));
            }
            Ok(())
        };

        loop {
            let (number, offset, line) = match lines.next_line() {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => {
                    if let Some(fault) = source_fault.borrow_mut().take() {
                        return Err(read_failed(fault));
                    }
                    // The part read before the fault is kept; the rest of the
                    // object is recorded as a dead letter.
                    let at = lines.get_ref().compressed_offset();
                    letters.push(
                        DeadLetter::new(
                            object,
                            format!("{compression:?} stream is corrupt or truncated near byte {at}: {e}"),
                        )
                        .offset(at),
                    );
                    break;
                }
            };
            let text = match line {
                Line::TooLong { bytes } => {
                    records += 1;
                    letters.push(
                        DeadLetter::new(
                            object,
                            format!(
                                "line of {bytes} bytes exceeds --max-record-bytes ({})",
                                self.max_record_bytes
                            ),
                        )
                        .line(number)
                        .offset(offset),
                    );
                    continue;
                }
                Line::Text(text) if number == 1 => text.strip_prefix(UTF8_BOM).unwrap_or(text),
                Line::Text(text) => text,
            };
            match self.parser.parse(text) {
                Ok(None) => {}
                Ok(Some(record)) => {
                    records += 1;
                    builder.push(number, |out| encoder.encode(&record, out));
                    if builder.is_full(&self.limits) {
                        flush(&mut builder, &mut letters, &mut records)?;
                    }
                }
                Err(e) => {
                    records += 1;
                    let mut letter = DeadLetter::new(object, e.to_string())
                        .line(number)
                        .record(text);
                    if let RecordError::NotUtf8(at) = e {
                        letter = letter.offset(offset + at as u64);
                    }
                    letters.push(letter);
                }
            }
        }
        Stats::add(&self.stats().bytes, lines.get_ref().compressed_offset());
        flush(&mut builder, &mut letters, &mut records)
    }
}

/// Remembers an error of the S3 stream itself, so that a failed read (worth
/// retrying) is told apart from a corrupt object (dead-lettered).
struct FaultTracking<R> {
    inner: R,
    fault: Rc<RefCell<Option<io::Error>>>,
}

impl<R: Read> Read for FaultTracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            *self.fault.borrow_mut() = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
}
