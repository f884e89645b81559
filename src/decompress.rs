//! Stage 3: a byte stream → a decompressed byte stream.
//!
//! Compression is detected by magic bytes, never by key suffix or
//! Content-Type, which producers get wrong. Gzip files made of several members
//! (Firehose, `cat a.gz b.gz`) and zstd files of several frames are read to
//! the end.

use std::cell::Cell;
use std::io::{self, BufReader, Cursor, Read};
use std::rc::Rc;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if prefix.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Counts the bytes read from the object, so a corrupt stream can be
/// reported with the offset where decoding failed.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Compressed input is read in chunks of this size.
const READ_BUFFER: usize = 256 * 1024;

/// Compression nested deeper than this is not unwrapped (a payload that
/// merely looks compressed after three layers is taken as it is).
const MAX_LAYERS: usize = 3;

/// A decompressing reader over an object, whatever its compression.
pub struct Decoder<'a> {
    reader: Box<dyn Read + 'a>,
    /// Compression layers, outermost first. Firehose delivering CloudWatch
    /// Logs payloads puts its own gzip around gzip'd payloads.
    pub layers: Vec<Compression>,
    read: Rc<Cell<u64>>,
}

impl<'a> Decoder<'a> {
    pub fn new(source: impl Read + 'a) -> io::Result<Decoder<'a>> {
        let read = Rc::new(Cell::new(0));
        let mut reader: Box<dyn Read + 'a> = Box::new(Counted {
            inner: source,
            count: Rc::clone(&read),
        });
        let mut layers = Vec::new();
        loop {
            // A stream may hand out fewer bytes than the magic in one read.
            let mut prefix = Vec::with_capacity(ZSTD_MAGIC.len());
            let peek = (&mut reader)
                .take(ZSTD_MAGIC.len() as u64)
                .read_to_end(&mut prefix);
            if let Err(e) = peek {
                if layers.is_empty() {
                    return Err(e);
                }
                // A decompressed stream that breaks within its first bytes is
                // a corrupt object, not a failed read: the error is handed
                // out by the first read, as a later fault would be.
                return Ok(Decoder {
                    reader: Box::new(Cursor::new(prefix).chain(Broken(Some(e)))),
                    layers,
                    read,
                });
            }
            let compression = Compression::detect(&prefix);
            let peeked = BufReader::with_capacity(READ_BUFFER, Cursor::new(prefix).chain(reader));
            reader = match compression {
                _ if layers.len() == MAX_LAYERS => Box::new(peeked),
                Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(peeked)),
                Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(peeked)?),
                Compression::None => Box::new(peeked),
            };
            if compression == Compression::None || layers.len() == MAX_LAYERS {
                break;
            }
            layers.push(compression);
        }
        Ok(Decoder {
            reader,
            layers,
            read,
        })
    }

    /// Bytes read from the object so far (an upper bound of where a fault
    /// lies).
    pub fn compressed_offset(&self) -> u64 {
        self.read.get()
    }

    /// The outermost compression, for messages.
    pub fn compression(&self) -> Compression {
        self.layers.first().copied().unwrap_or(Compression::None)
    }
}

/// A stream that broke: its error, once.
pub struct Broken(pub Option<io::Error>);

impl Read for Broken {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        self.0.take().map_or(Ok(0), Err)
    }
}

impl Read for Decoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn decode(bytes: Vec<u8>) -> (Compression, Vec<u8>) {
        let mut d = Decoder::new(Cursor::new(bytes)).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        (d.compression(), out)
    }

    /// A reader that hands out one byte per read, like a slow network stream.
    struct Trickle(Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn multi_member_gzip_is_read_to_the_end() {
        let mut data = gzip(b"first\n");
        data.extend(gzip(b"second\n"));
        assert_eq!(
            decode(data),
            (Compression::Gzip, b"first\nsecond\n".to_vec())
        );
    }

    #[test]
    fn multi_frame_zstd_is_read_to_the_end() {
        let mut data = zstd::encode_all(&b"one\n"[..], 3).unwrap();
        data.extend(zstd::encode_all(&b"two\n"[..], 3).unwrap());
        assert_eq!(decode(data), (Compression::Zstd, b"one\ntwo\n".to_vec()));
    }

    #[test]
    fn magic_split_over_reads_is_still_detected() {
        let mut d = Decoder::new(Trickle(Cursor::new(gzip(b"x\n")))).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!((d.compression(), out), (Compression::Gzip, b"x\n".to_vec()));
    }

    #[test]
    fn gzip_inside_gzip_is_unwrapped() {
        let mut inner = gzip(b"{\"a\":1}");
        inner.extend(gzip(b"{\"b\":2}"));
        let mut d = Decoder::new(Cursor::new(gzip(&inner))).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(d.layers, [Compression::Gzip, Compression::Gzip]);
        assert_eq!(out, b"{\"a\":1}{\"b\":2}");
    }

    #[test]
    fn plain_and_empty_objects_pass_through() {
        assert_eq!(
            decode(b"{}\n".to_vec()),
            (Compression::None, b"{}\n".to_vec())
        );
        assert_eq!(decode(Vec::new()), (Compression::None, Vec::new()));
    }

    #[test]
    fn gzip_cut_within_its_header_is_an_error_of_the_first_read() {
        let data = gzip(&b"line\n".repeat(100));
        let mut d = Decoder::new(Cursor::new(data[..10].to_vec())).unwrap();
        assert_eq!(d.compression(), Compression::Gzip);
        let mut out = Vec::new();
        assert!(d.read_to_end(&mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn truncated_gzip_is_an_error_after_the_readable_part() {
        let data = gzip(&b"line\n".repeat(10_000));
        let mut d = Decoder::new(Cursor::new(data[..data.len() / 2].to_vec())).unwrap();
        let mut out = Vec::new();
        assert!(d.read_to_end(&mut out).is_err());
        assert!(!out.is_empty());
    }
}
