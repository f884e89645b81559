//! Stages 3–5 on one thread: an object's bytes → decompressed lines →
//! records → encoded batches, plus dead letters for what cannot be read.
//!
//! Kept free of I/O beyond the `Read` it is given, so the same code runs in
//! the pipeline and in benchmarks.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use crate::batch::{Batch, Builder, Limits};
use crate::dead_letter::DeadLetter;
use crate::decompress::Decoder;
use crate::lines::{Line, Lines};
use crate::notification::ObjectRef;
use crate::records::{RecordError, RecordParser};
use crate::sink::Encoder;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What is handed on each time a batch fills, and once at the end.
#[derive(Default)]
pub struct Chunk {
    /// Full batch (or the last, partial one).
    pub batch: Option<Batch>,
    /// Records and object faults that go to the dead-letter store; they must
    /// be stored before the batch's object counts as done.
    pub letters: Vec<DeadLetter>,
    /// Records read since the previous chunk (indexed or dead-lettered).
    pub records: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Reading the object itself failed; worth retrying.
    #[error("reading {object} failed: {error}")]
    Source { object: String, error: io::Error },
    /// The consumer of the chunks stopped taking them.
    #[error("{0}")]
    Stopped(String),
}

pub struct ObjectDecoder<'a> {
    pub parser: &'a RecordParser,
    pub limits: Limits,
    pub max_record_bytes: usize,
}

impl ObjectDecoder<'_> {
    /// Reads the whole object, handing each chunk to `emit`; returns the
    /// number of compressed bytes read. A corrupt or truncated compressed
    /// stream is not an error: what was read before the fault is kept and
    /// the fault is a dead letter.
    pub fn decode(
        &self,
        object: &ObjectRef,
        source: impl Read,
        encoder: &mut dyn Encoder,
        mut emit: impl FnMut(Chunk) -> Result<(), String>,
    ) -> Result<u64, DecodeError> {
        let source_fault = Rc::new(RefCell::new(None));
        let source = FaultTracking {
            inner: source,
            fault: Rc::clone(&source_fault),
        };
        let read_failed = |error: io::Error| DecodeError::Source {
            object: object.to_string(),
            error,
        };
        let decoder = Decoder::new(source).map_err(read_failed)?;
        let compression = decoder.compression;
        let mut lines = Lines::new(decoder, self.max_record_bytes);
        let mut builder = Builder::default();
        let mut chunk = Chunk::default();

        loop {
            let (number, offset, line) = match lines.next_line() {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => {
                    if let Some(fault) = source_fault.borrow_mut().take() {
                        return Err(read_failed(fault));
                    }
                    let at = lines.get_ref().compressed_offset();
                    chunk.letters.push(
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
                    chunk.records += 1;
                    chunk.letters.push(
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
                    chunk.records += 1;
                    builder.push(number, |out| encoder.encode(&record, out));
                    if builder.is_full(&self.limits) {
                        chunk.batch = Some(builder.take());
                        emit(std::mem::take(&mut chunk)).map_err(DecodeError::Stopped)?;
                    }
                }
                Err(e) => {
                    chunk.records += 1;
                    let mut letter = DeadLetter::new(object, e.to_string())
                        .line(number)
                        .record(text);
                    if let RecordError::NotUtf8(at) = e {
                        letter = letter.offset(offset + at as u64);
                    }
                    chunk.letters.push(letter);
                }
            }
        }
        if !builder.is_empty() {
            chunk.batch = Some(builder.take());
        }
        emit(chunk).map_err(DecodeError::Stopped)?;
        Ok(lines.get_ref().compressed_offset())
    }
}

/// Remembers an error of the source stream itself, so that a failed read
/// (worth retrying) is told apart from a corrupt object (dead-lettered).
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
