//! Stage 4a: a decompressed stream → lines.
//!
//! Lines are handed out as slices of the read buffer when they fit in it, so
//! the common case copies nothing; a line longer than the record limit is
//! skipped without being held in memory.

use std::io::{self, BufRead, BufReader, Read};

use memchr::memchr;

/// Buffer of decompressed bytes; most lines are found whole inside it.
const BUFFER: usize = 256 * 1024;

pub enum Line<'a> {
    Text(&'a [u8]),
    /// A line over the limit; only its length is known.
    TooLong {
        bytes: u64,
    },
}

pub struct Lines<R: Read> {
    reader: BufReader<R>,
    /// A line that straddles buffer refills is assembled here.
    assembled: Vec<u8>,
    /// Bytes of the last returned line still to consume from `reader`.
    pending: usize,
    max: usize,
    /// 1-based number of the last returned line.
    number: u64,
    /// Offset in the decompressed stream of the next line's first byte.
    offset: u64,
}

impl<R: Read> Lines<R> {
    pub fn new(inner: R, max_line_bytes: usize) -> Self {
        Lines {
            reader: BufReader::with_capacity(BUFFER, inner),
            assembled: Vec::new(),
            pending: 0,
            max: max_line_bytes,
            number: 0,
            offset: 0,
        }
    }

    pub fn get_ref(&self) -> &R {
        self.reader.get_ref()
    }

    /// The next line with its 1-based number and the decompressed byte offset
    /// where it starts. The line excludes its `\n`.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, u64, Line<'_>)>> {
        self.reader.consume(self.pending);
        self.pending = 0;
        let start = self.offset;

        let available = self.reader.fill_buf()?;
        if available.is_empty() {
            return Ok(None);
        }
        if let Some(end) = memchr(b'\n', available) {
            // Fast path: the whole line is in the buffer.
            self.pending = end + 1;
            self.offset += end as u64 + 1;
            self.number += 1;
            let line = if end > self.max {
                Line::TooLong { bytes: end as u64 }
            } else {
                Line::Text(&self.reader.buffer()[..end])
            };
            return Ok(Some((self.number, start, line)));
        }

        self.assembled.clear();
        let mut length: u64 = 0;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                break; // last line without a newline
            }
            let (chunk, consumed, done) = match memchr(b'\n', available) {
                Some(end) => (&available[..end], end + 1, true),
                None => (available, available.len(), false),
            };
            length += chunk.len() as u64;
            if length <= self.max as u64 {
                self.assembled.extend_from_slice(chunk);
            }
            self.reader.consume(consumed);
            self.offset += consumed as u64;
            if done {
                break;
            }
        }
        self.number += 1;
        let line = if length > self.max as u64 {
            Line::TooLong { bytes: length }
        } else {
            Line::Text(&self.assembled)
        };
        Ok(Some((self.number, start, line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn collect(data: &[u8], max: usize, buffer: usize) -> Vec<(u64, u64, Result<String, u64>)> {
        let mut lines = Lines::new(Cursor::new(data.to_vec()), max);
        lines.reader = BufReader::with_capacity(buffer, Cursor::new(data.to_vec()));
        let mut out = Vec::new();
        while let Some((n, off, line)) = lines.next_line().unwrap() {
            out.push((
                n,
                off,
                match line {
                    Line::Text(t) => Ok(String::from_utf8(t.to_vec()).unwrap()),
                    Line::TooLong { bytes } => Err(bytes),
                },
            ));
        }
        out
    }

    #[test]
    fn splits_lines_with_numbers_and_offsets_across_small_buffers() {
        let data = b"alpha\nbravo-long-line\n\nlast-without-newline";
        for buffer in [1, 3, 7, 64] {
            assert_eq!(
                collect(data, 100, buffer),
                vec![
                    (1, 0, Ok("alpha".into())),
                    (2, 6, Ok("bravo-long-line".into())),
                    (3, 22, Ok("".into())),
                    (4, 23, Ok("last-without-newline".into())),
                ],
                "buffer {buffer}"
            );
        }
    }

    #[test]
    fn lines_over_the_limit_are_reported_not_held() {
        let data = b"ok\n0123456789\nok2\n";
        for buffer in [4, 64] {
            assert_eq!(
                collect(data, 5, buffer),
                vec![
                    (1, 0, Ok("ok".into())),
                    (2, 3, Err(10)),
                    (3, 14, Ok("ok2".into()))
                ],
                "buffer {buffer}"
            );
        }
    }
}
