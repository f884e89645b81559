//! Stage 4a for JSON that is not one object per line: concatenated objects
//! with no delimiter (what Firehose writes), pretty-printed objects spanning
//! lines, and a top-level array of objects.
//!
//! The splitter only finds where each top-level value ends (tracking strings
//! and nesting); validating the value is the record parser's job.

use std::io::{self, BufRead, BufReader, Read};

/// A byte-order mark some producers put before the first byte of a text.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One top-level value, or a run of bytes that cannot start one.
pub struct Value<'a> {
    pub text: &'a [u8],
    /// 1-based line where the value starts.
    pub line: u64,
    /// Decompressed byte offset where the value starts.
    pub offset: u64,
    /// The value's length when it was longer than the limit; `text` is
    /// then empty.
    pub too_long: Option<u64>,
}

pub struct Values<R: Read> {
    reader: BufReader<R>,
    value: Vec<u8>,
    max: usize,
    line: u64,
    offset: u64,
    /// Inside a top-level `[`: commas and the closing `]` separate values.
    in_array: bool,
    started: bool,
}

impl<R: Read> Values<R> {
    pub fn new(inner: R, max_value_bytes: usize, buffer: usize) -> Self {
        Values {
            reader: BufReader::with_capacity(buffer, inner),
            value: Vec::new(),
            max: max_value_bytes,
            line: 1,
            offset: 0,
            in_array: false,
            started: false,
        }
    }

    pub fn get_ref(&self) -> &R {
        self.reader.get_ref()
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        Ok(self.reader.fill_buf()?.first().copied())
    }

    fn advance(&mut self, byte: u8) {
        self.reader.consume(1);
        self.offset += 1;
        if byte == b'\n' {
            self.line += 1;
        }
    }

    /// The next top-level value.
    pub fn next_value(&mut self) -> io::Result<Option<Value<'_>>> {
        // Skip separators: whitespace, and inside a top-level array, commas
        // and its brackets.
        loop {
            // A BOM before a value: the first one's, or that of a file
            // concatenated to another (`cat a.json b.json`, gzip members).
            if self.reader.fill_buf()?.starts_with(UTF8_BOM) {
                self.reader.consume(UTF8_BOM.len());
                self.offset += UTF8_BOM.len() as u64;
                continue;
            }
            let Some(byte) = self.peek()? else {
                return Ok(None);
            };
            let whitespace = matches!(byte, b' ' | b'\t' | b'\r' | b'\n');
            let separator = match byte {
                _ if whitespace => true,
                b'[' if !self.started => {
                    self.in_array = true;
                    true
                }
                b',' | b']' => self.in_array,
                _ => false,
            };
            // Leading whitespace does not start the text: a `[` after it
            // still opens the top-level array.
            if !whitespace {
                self.started = true;
            }
            if !separator {
                break;
            }
            self.advance(byte);
        }

        let (line, offset) = (self.line, self.offset);
        self.value.clear();
        let mut length = 0usize;
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let structured = matches!(self.peek()?, Some(b'{' | b'['));
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            let mut end = None;
            for (i, &b) in available.iter().enumerate() {
                if b == b'\n' {
                    self.line += 1;
                }
                if !structured {
                    // Not JSON: the run ends at the line's end or where a
                    // value starts, so one bad run does not swallow the rest.
                    // (It never starts with `{`, so one met at the start of
                    // a refilled buffer ends it too.)
                    if b == b'\n' || b == b'{' {
                        if b == b'\n' {
                            self.line -= 1;
                        }
                        end = Some(i);
                        break;
                    }
                    continue;
                }
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let taken = end.unwrap_or(available.len());
            length += taken;
            if length <= self.max {
                self.value.extend_from_slice(&available[..taken]);
            } else {
                self.value.clear();
            }
            self.reader.consume(taken);
            self.offset += taken as u64;
            if end.is_some() {
                break;
            }
        }
        Ok(Some(Value {
            text: &self.value,
            line,
            offset,
            too_long: (length > self.max).then_some(length as u64),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn split(data: &str, max: usize) -> Vec<(String, u64, Option<u64>)> {
        let mut values = Values::new(Cursor::new(data.as_bytes().to_vec()), max, 64);
        let mut out = Vec::new();
        while let Some(v) = values.next_value().unwrap() {
            out.push((
                String::from_utf8(v.text.to_vec()).unwrap(),
                v.line,
                v.too_long,
            ));
        }
        out
    }

    #[test]
    fn a_bad_run_ends_at_a_value_however_the_reads_fall() {
        for buffer in [1, 2, 4, 5, 64] {
            let mut values = Values::new(Cursor::new(b"oops{\"a\":1}".to_vec()), 100, buffer);
            let mut out = Vec::new();
            while let Some(v) = values.next_value().unwrap() {
                out.push(String::from_utf8(v.text.to_vec()).unwrap());
            }
            assert_eq!(out, ["oops", "{\"a\":1}"], "buffer {buffer}");
        }
    }

    #[test]
    fn concatenated_and_pretty_printed_objects() {
        assert_eq!(
            split("{\"a\":\"}{\\\"\"}{\"b\":[1,{}]}\n{\n  \"c\": 1\n}\n", 100),
            vec![
                ("{\"a\":\"}{\\\"\"}".into(), 1, None),
                ("{\"b\":[1,{}]}".into(), 1, None),
                ("{\n  \"c\": 1\n}".into(), 2, None),
            ]
        );
    }

    #[test]
    fn top_level_array_elements() {
        assert_eq!(
            split("[ {\"a\":1},\n {\"b\":2} ]\n", 100),
            vec![("{\"a\":1}".into(), 1, None), ("{\"b\":2}".into(), 2, None)]
        );
        // Whitespace (and a BOM) before the array does not hide it.
        assert_eq!(
            split("\u{feff}\r\n  [ {\"a\":1},\n {\"b\":2} ]\n", 100),
            vec![("{\"a\":1}".into(), 2, None), ("{\"b\":2}".into(), 3, None)]
        );
    }

    #[test]
    fn a_bom_before_an_array_or_the_first_object_is_skipped() {
        assert_eq!(
            split("\u{feff}[{\"a\":1},\n {\"b\":2}]", 100),
            vec![("{\"a\":1}".into(), 1, None), ("{\"b\":2}".into(), 2, None)]
        );
        assert_eq!(
            split("\u{feff}{\"a\":1}{\"b\":2}", 100),
            vec![("{\"a\":1}".into(), 1, None), ("{\"b\":2}".into(), 1, None)]
        );
        // Two files concatenated, each with its BOM.
        assert_eq!(
            split("\u{feff}{\"a\":1}\n\u{feff}{\"b\":2}\n", 100),
            vec![("{\"a\":1}".into(), 1, None), ("{\"b\":2}".into(), 2, None)]
        );
    }

    #[test]
    fn garbage_runs_end_at_the_line_or_the_next_object() {
        assert_eq!(
            split("oops{\"a\":1}\nbad line\n{\"b\":2}", 100),
            vec![
                ("oops".into(), 1, None),
                ("{\"a\":1}".into(), 1, None),
                ("bad line".into(), 2, None),
                ("{\"b\":2}".into(), 3, None),
            ]
        );
    }

    #[test]
    fn long_values_are_cut_and_flagged() {
        let out = split("{\"a\":\"0123456789\"}{\"b\":1}", 8);
        assert_eq!(out[0], ("".into(), 1, Some(18)));
        assert_eq!(out[1], ("{\"b\":1}".into(), 1, None));
    }
}
