//! Stage 3: a byte stream → a decompressed byte stream.
//!
//! Compression is detected by magic bytes, never by key suffix or
//! Content-Type, which producers get wrong. Gzip files made of several members
//! (Firehose, `cat a.gz b.gz`) and zstd files of several frames are read to
//! the end.

use std::io::{self, BufReader, Chain, Cursor, Read};

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

/// Counts the compressed bytes consumed, so a corrupt stream can be reported
/// with the offset where decoding failed.
pub struct Counted<R> {
    inner: R,
    pub count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

type Peeked<R> = Chain<Cursor<Vec<u8>>, R>;

/// A decompressing reader over `source`, whatever its compression.
pub struct Decoder<R: Read> {
    inner: Inner<R>,
    pub compression: Compression,
}

enum Inner<R: Read> {
    // Boxed: the inflate state is far larger than the other variants.
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<Counted<Peeked<R>>>>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Counted<Peeked<R>>>>),
    Plain(Counted<Peeked<R>>),
}

/// Compressed input is read in chunks of this size.
const READ_BUFFER: usize = 256 * 1024;

impl<R: Read> Decoder<R> {
    pub fn new(mut source: R) -> io::Result<Decoder<R>> {
        // A stream may hand out fewer bytes than the magic in its first read.
        let mut prefix = Vec::with_capacity(ZSTD_MAGIC.len());
        (&mut source)
            .take(ZSTD_MAGIC.len() as u64)
            .read_to_end(&mut prefix)?;
        let compression = Compression::detect(&prefix);
        let counted = Counted {
            inner: Cursor::new(prefix).chain(source),
            count: 0,
        };
        let inner = match compression {
            Compression::Gzip => Inner::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(
                BufReader::with_capacity(READ_BUFFER, counted),
            ))),
            Compression::Zstd => Inner::Zstd(zstd::stream::read::Decoder::with_buffer(
                BufReader::with_capacity(READ_BUFFER, counted),
            )?),
            Compression::None => Inner::Plain(counted),
        };
        Ok(Decoder { inner, compression })
    }

    /// Compressed bytes read so far (an upper bound of where a fault lies).
    pub fn compressed_offset(&self) -> u64 {
        match &self.inner {
            Inner::Gzip(d) => d.get_ref().get_ref().count,
            Inner::Zstd(d) => d.get_ref().get_ref().count,
            Inner::Plain(c) => c.count,
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Gzip(d) => d.read(buf),
            Inner::Zstd(d) => d.read(buf),
            Inner::Plain(c) => c.read(buf),
        }
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
        (d.compression, out)
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
        assert_eq!((d.compression, out), (Compression::Gzip, b"x\n".to_vec()));
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
    fn truncated_gzip_is_an_error_after_the_readable_part() {
        let data = gzip(&b"line\n".repeat(10_000));
        let mut d = Decoder::new(Cursor::new(data[..data.len() / 2].to_vec())).unwrap();
        let mut out = Vec::new();
        assert!(d.read_to_end(&mut out).is_err());
        assert!(!out.is_empty());
    }
}
