//! `drsink redrive --from DIR|s3://bucket/prefix/`: re-submits dead letters (for example after a
//! mapping fix) through the same sink and the same `Delivery` as the worker,
//! so retries, dead letters and counting behave alike.
//!
//! Each NDJSON entry with a `record` is re-parsed and re-encoded; the record
//! is the document as it was sent (with a generated `log_id` already in it),
//! so it keeps its id and its index. A file is removed only once every entry
//! in it is accounted for: accepted (indexed or a duplicate), rejected again
//! (a new dead letter, written by `Delivery`), or kept as it was (entries
//! without a record, such as a corrupt object tail, and records that no
//! longer parse). Kept entries are copied verbatim into the new dead-letter
//! file before the old file goes, so a crash at any point can only leave an
//! entry twice, never lose it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::aws::describe;
use crate::batch::{Batch, Builder, Limits};
use crate::dead_letter;
use crate::delivery::Undelivered;
use crate::notification::ObjectRef;
use crate::pipeline::Pipeline;
use crate::records::{Parsed, Position, RecordParser};
use crate::shutdown::Shutdown;
use crate::sink::Encoder;
use crate::stats::Stats;

/// Kept entries are written out once this many bytes are waiting, so a file
/// full of unparsable records does not pile up in memory.
const KEEP_FLUSH_BYTES: usize = 1024 * 1024;

/// The fields of a dead letter that a redrive needs; the rest is carried
/// along only when the entry is kept verbatim.
#[derive(Debug, Deserialize)]
struct Letter {
    bucket: String,
    key: String,
    #[serde(default)]
    line: Option<u64>,
    #[serde(default)]
    entry: Option<u32>,
    #[serde(default)]
    record: Option<String>,
}

/// What one line of a dead-letter file asks for.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// A record to submit again.
    Record {
        object: ObjectRef,
        position: Position,
        record: String,
    },
    /// Nothing to submit (an object-level fault, or a line that is not a
    /// dead letter at all): stays in the store as it is.
    Keep,
}

fn parse_entry(raw: &[u8]) -> Entry {
    match serde_json::from_slice::<Letter>(raw) {
        Ok(Letter {
            bucket,
            key,
            line,
            entry,
            record: Some(record),
        }) => Entry::Record {
            object: ObjectRef::new(bucket, key),
            // Every record letter drsink writes has its line; 0 marks one
            // that does not.
            position: Position {
                line: line.unwrap_or(0),
                entry,
            },
            record,
        },
        _ => Entry::Keep,
    }
}

/// Where the dead letters to redrive are: a directory, or the objects under
/// `s3://bucket/prefix`.
enum Source {
    Dir(PathBuf),
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
}

impl Source {
    fn new(from: &Path, pipeline: &Pipeline) -> anyhow::Result<Source> {
        let text = from.to_string_lossy();
        Ok(
            match dead_letter::s3_location(&text, "--from").map_err(anyhow::Error::msg)? {
                Some((bucket, prefix)) => Source::S3 {
                    client: pipeline.store.client(None),
                    bucket,
                    prefix,
                },
                None => Source::Dir(from.to_owned()),
            },
        )
    }

    /// The `*.ndjson` files (objects), oldest name first. Listed once at the
    /// start, so what this run writes as its own dead letters is never read
    /// back.
    async fn list(&self) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        match self {
            Source::Dir(dir) => {
                let entries = std::fs::read_dir(dir).with_context(|| {
                    format!("cannot list the dead-letter directory {}", dir.display())
                })?;
                for entry in entries {
                    let entry = entry?;
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "ndjson")
                        && entry.file_type()?.is_file()
                    {
                        names.push(path.to_string_lossy().into_owned());
                    }
                }
            }
            Source::S3 {
                client,
                bucket,
                prefix,
            } => {
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| {
                        anyhow::anyhow!("cannot list s3://{bucket}/{prefix}: {}", describe(&e))
                    })?;
                    names.extend(
                        page.contents()
                            .iter()
                            .filter_map(|o| o.key())
                            .filter(|k| k.ends_with(".ndjson"))
                            .map(str::to_owned),
                    );
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn describe(&self, name: &str) -> String {
        match self {
            Source::Dir(_) => name.to_owned(),
            Source::S3 { bucket, .. } => format!("s3://{bucket}/{name}"),
        }
    }

    /// The file's entries; `None` for a file that a running drsink is
    /// appending to at this moment (or another redrive reads), which is left
    /// for a later run, or one that another redrive has removed since the
    /// listing.
    async fn open(&self, name: &str) -> anyhow::Result<Option<Opened>> {
        match self {
            Source::Dir(_) => {
                // Writable: on NFS an exclusive lock needs a file open for writing.
                let file = match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(name)
                {
                    Ok(file) => file,
                    // Redriven and removed by another run since the listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot open dead-letter file {name}"))
                    }
                };
                // Held until the file is removed or left: no one else reads it meanwhile.
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => tracing::warn!(
                        file = name,
                        "cannot lock ({e}); redriving it unlocked: no worker or other redrive \
                         may use this directory meanwhile"
                    ),
                }
                // Another redrive may have removed it between the open and the lock.
                if !dead_letter::still_named(&file, Path::new(name)) {
                    return Ok(None);
                }
                let lock = file
                    .try_clone()
                    .with_context(|| format!("cannot lock dead-letter file {name}"))?;
                Ok(Some(Opened {
                    reader: Box::new(tokio::io::BufReader::new(tokio::fs::File::from_std(file))),
                    _lock: Some(lock),
                }))
            }
            Source::S3 { client, bucket, .. } => {
                let object = client
                    .get_object()
                    .bucket(bucket)
                    .key(name)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot read s3://{bucket}/{name}: {}", describe(&e))
                    })?;
                Ok(Some(Opened {
                    reader: Box::new(object.body.into_async_read()),
                    _lock: None,
                }))
            }
        }
    }

    async fn remove(&self, name: &str) -> anyhow::Result<()> {
        match self {
            Source::Dir(_) => {
                std::fs::remove_file(name).with_context(|| format!("cannot remove {name}"))
            }
            Source::S3 { client, bucket, .. } => client
                .delete_object()
                .bucket(bucket)
                .key(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    anyhow::anyhow!("cannot remove s3://{bucket}/{name}: {}", describe(&e))
                }),
        }
    }
}

/// Re-submits every dead letter in `from`; see the module comment.
///
/// The first signal stops it taking entries; the batch under way may finish
/// within `shutdown_timeout` (a request Splunk already took would otherwise
/// be sent again by the next redrive, and doubled), then it is given up and
/// its entries not yet accepted are kept.
pub async fn run(
    pipeline: Arc<Pipeline>,
    from: &Path,
    shutdown_timeout: Duration,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let source = Source::new(from, &pipeline)?;
    let files = source.list().await?;
    let _deadline = shutdown.abort_after_stop(
        shutdown_timeout,
        "the batch under way is given up; its entries stay in the dead-letter store",
    );
    tracing::info!(
        files = files.len(),
        "redriving dead letters from {}",
        from.display()
    );
    let mut result = Ok(());
    for name in &files {
        let shown = source.describe(name);
        let mut file = RedriveFile::new(&pipeline, &shown, &shutdown);
        let Some(opened) = source.open(name).await? else {
            tracing::warn!(file = %shown, "in use by a running drsink (or gone); left for a later redrive");
            continue;
        };
        match file.run(opened.reader).await {
            Ok(FileEnd::Done) => {
                source.remove(name).await.with_context(|| {
                    format!("{shown} was redriven but cannot be removed; its entries would be submitted again")
                })?;
                tracing::info!(file = %shown, kept = file.kept, "redriven and removed");
            }
            Ok(FileEnd::Stopped) => {
                source
                    .remove(name)
                    .await
                    .with_context(|| format!("cannot remove {shown} after keeping its rest"))?;
                result = Err(match file.fatal.take() {
                    Some(reason) => anyhow::anyhow!(
                        "the sink refused the redrive ({reason}); the entries not yet accepted stay in the dead-letter store"
                    ),
                    None => anyhow::anyhow!(
                        "redrive was interrupted; the entries not yet accepted stay in the dead-letter store"
                    ),
                });
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    result
}

/// A dead-letter file or object being redriven.
struct Opened {
    reader: Box<dyn AsyncBufRead + Send + Unpin>,
    /// The file's lock (a handle of the same open file), held until the
    /// file is removed or left.
    _lock: Option<std::fs::File>,
}

enum FileEnd {
    /// Every entry is accepted, rejected again, or kept.
    Done,
    /// Interrupted; what was not confirmed is kept, so the file may go.
    Stopped,
}

/// The redrive of one dead-letter file.
struct RedriveFile<'a> {
    pipeline: &'a Pipeline,
    /// The file (or object) as messages name it.
    name: &'a str,
    /// Entries to write back verbatim, each ending in `\n`.
    keep: Vec<u8>,
    /// The raw entries of the batch being filled, kept if it is interrupted.
    pending_raw: Vec<u8>,
    builder: Builder,
    object: Option<ObjectRef>,
    encoder: Option<Box<dyn Encoder>>,
    kept: u64,
    /// Set once nothing more is submitted: the rest is kept verbatim.
    stopped: bool,
    /// Why the sink stopped taking anything, if it did.
    fatal: Option<String>,
    shutdown: &'a Shutdown,
}

impl<'a> RedriveFile<'a> {
    fn new(pipeline: &'a Pipeline, name: &'a str, shutdown: &'a Shutdown) -> Self {
        RedriveFile {
            pipeline,
            name,
            shutdown,
            keep: Vec::new(),
            pending_raw: Vec::new(),
            builder: Builder::default(),
            object: None,
            encoder: None,
            kept: 0,
            stopped: false,
            fatal: None,
        }
    }

    fn stats(&self) -> &Stats {
        &self.pipeline.delivery.stats
    }

    async fn run(&mut self, mut reader: impl AsyncBufRead + Unpin) -> anyhow::Result<FileEnd> {
        let stop = &self.shutdown.stop;
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let read = reader
                .read_until(b'\n', &mut raw)
                .await
                .with_context(|| format!("cannot read dead-letter file {}", self.name))?;
            if read == 0 {
                break;
            }
            if raw.trim_ascii().is_empty() {
                continue;
            }
            if !raw.ends_with(b"\n") {
                raw.push(b'\n');
            }
            if self.stopped || stop.is_cancelled() {
                self.stop_filling()?;
                self.keep_raw(&raw)?;
                continue;
            }
            self.entry(&raw).await?;
        }
        match self.stopped || stop.is_cancelled() {
            true => self.stop_filling()?,
            false => self.flush_batch().await?,
        }
        self.write_kept()?;
        Ok(if self.stopped {
            FileEnd::Stopped
        } else {
            FileEnd::Done
        })
    }

    async fn entry(&mut self, raw: &[u8]) -> anyhow::Result<()> {
        let Entry::Record {
            object,
            position,
            record,
        } = parse_entry(raw)
        else {
            return self.keep_raw(raw);
        };
        if self.object.as_ref() != Some(&object) {
            // A batch is delivered for one object, whose name its dead
            // letters carry.
            self.flush_batch().await?;
            self.encoder = Some(self.pipeline.delivery.sink.encoder(&object));
            self.object = Some(object);
        }
        Stats::add(&self.stats().records, 1);
        let parser: &RecordParser = &self.pipeline.parser;
        let parsed = match parser.parse(record.as_bytes(), position) {
            // Not sent, as the worker would not send it.
            Ok(Parsed::One(parsed)) if parsed.json.len() <= self.pipeline.max_record_bytes => {
                parsed
            }
            // What drsink dead-letters is one document; anything else (a
            // record that does not parse, which is why it is here, one the
            // current options filter out, or one above --max-record-bytes)
            // is kept as it is: its letter still says why it came here.
            Ok(_) | Err(_) => {
                Stats::add(&self.stats().dead_lettered, 1);
                return self.keep_raw(raw);
            }
        };
        let limits = self.limits();
        let Some(encoder) = self.encoder.as_mut() else {
            bail!("internal error: a redrive record without its encoder");
        };
        match self
            .builder
            .push(position, &limits, |out| encoder.encode(&parsed, out))
        {
            // This entry starts the next batch: the raw entries waiting are
            // those of the sealed one.
            Some(full) => {
                let raw_of_full = std::mem::replace(&mut self.pending_raw, raw.to_vec());
                self.deliver(full, raw_of_full).await?;
            }
            None => self.pending_raw.extend_from_slice(raw),
        }
        if !self.stopped && self.builder.is_full(&limits) {
            self.flush_batch().await?;
        }
        Ok(())
    }

    fn limits(&self) -> Limits {
        self.pipeline.limits
    }

    /// Delivers the batch being filled.
    async fn flush_batch(&mut self) -> anyhow::Result<()> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let batch = self.builder.take();
        let raw = std::mem::take(&mut self.pending_raw);
        self.deliver(batch, raw).await
    }

    /// Delivers `batch`, whose raw entries are `raw` (one line each, in
    /// order). When that is interrupted, the entries not yet accepted or
    /// rejected again are kept verbatim. (One whose request was under way may
    /// have been taken; a second submission merges with it by log_id.)
    async fn deliver(&mut self, batch: Batch, raw: Vec<u8>) -> anyhow::Result<()> {
        let Some(object) = self.object.as_ref() else {
            bail!("internal error: a redrive batch without its object");
        };
        let mut settled = vec![false; batch.entries.len()];
        if let Some(rate) = &self.pipeline.rate {
            let wait = rate.reserve(batch.entries.len() as u64);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown.stop.cancelled() => {
                    self.stopped = true;
                    return self.keep_unsettled(&raw, &settled);
                }
            }
        }
        let delivered = self
            .pipeline
            .delivery
            .deliver_settling(object, &batch, &mut settled)
            .await;
        match delivered {
            Ok(()) => Ok(()),
            Err(Undelivered::Interrupted) => {
                self.stopped = true;
                self.keep_unsettled(&raw, &settled)
            }
            Err(Undelivered::Fatal(reason)) => {
                self.stopped = true;
                self.fatal.get_or_insert(reason);
                self.keep_unsettled(&raw, &settled)
            }
            // The store cannot take the rejections: leave the file in place.
            Err(e @ Undelivered::DeadLetter(_)) => {
                bail!("redriving {}: {e}", self.name)
            }
        }
    }

    /// Nothing more is submitted: the batch being filled was never sent, so
    /// its entries are kept as they were.
    fn stop_filling(&mut self) -> anyhow::Result<()> {
        self.stopped = true;
        if self.builder.is_empty() {
            return Ok(());
        }
        let entries = self.builder.take().entries.len() as u64;
        let raw = std::mem::take(&mut self.pending_raw);
        self.keep_raw_many(&raw, entries)
    }

    /// Keeps the raw entries (one line each) whose `settled` is false.
    fn keep_unsettled(&mut self, raw: &[u8], settled: &[bool]) -> anyhow::Result<()> {
        let lines = raw.split_inclusive(|&b| b == b'\n');
        for (line, _) in lines.zip(settled).filter(|(_, &done)| !done) {
            self.keep_raw(line)?;
        }
        Ok(())
    }

    fn keep_raw(&mut self, raw: &[u8]) -> anyhow::Result<()> {
        self.keep_raw_many(raw, 1)
    }

    fn keep_raw_many(&mut self, raw: &[u8], entries: u64) -> anyhow::Result<()> {
        self.keep.extend_from_slice(raw);
        self.kept += entries;
        if self.keep.len() >= KEEP_FLUSH_BYTES {
            self.write_kept()?;
        }
        Ok(())
    }

    fn write_kept(&mut self) -> anyhow::Result<()> {
        self.pipeline
            .delivery
            .dead_letters
            .append_ndjson(&self.keep)
            .with_context(|| {
                format!(
                    "cannot keep the entries of {} in the dead-letter store",
                    self.name
                )
            })?;
        self.keep.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_with_a_record_are_redriven_with_their_origin() {
        let raw = br#"{"reason":"rejected by the sink: mapper_parsing_exception","bucket":"b","key":"k 1.gz","line":7,"entry":2,"error":{"type":"mapper_parsing_exception"},"record":"{\"log_id\":\"x\"}","time":"2026-11-21T00:00:00.000Z"}"#;
        assert_eq!(
            parse_entry(raw),
            Entry::Record {
                object: ObjectRef::new("b", "k 1.gz"),
                position: Position {
                    line: 7,
                    entry: Some(2)
                },
                record: r#"{"log_id":"x"}"#.into(),
            }
        );
    }

    #[test]
    fn entries_without_a_record_or_unreadable_lines_are_kept() {
        let object_fault =
            br#"{"reason":"Gzip stream is corrupt","bucket":"b","key":"k","offset":99,"time":"t"}"#;
        assert_eq!(parse_entry(object_fault), Entry::Keep);
        assert_eq!(
            parse_entry(b"{\"bucket\":\"b\",\"key\":\"k\",\"rec"),
            Entry::Keep
        );
        assert_eq!(parse_entry(b"not json\xff"), Entry::Keep);
        // A message-level letter (a poison SQS message) names no object.
        assert_eq!(
            parse_entry(br#"{"reason":"r","message_id":"m","message":"x","record":"{}"}"#),
            Entry::Keep
        );
    }

    #[tokio::test]
    async fn only_ndjson_files_are_listed_in_name_order() {
        let dir = std::env::temp_dir().join(format!("drsink-redrive-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub.ndjson")).unwrap();
        for name in ["b.ndjson", "a.ndjson", "notes.txt"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let names: Vec<_> = Source::Dir(dir.clone())
            .list()
            .await
            .unwrap()
            .iter()
            .map(|p| {
                Path::new(p)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["a.ndjson", "b.ndjson"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
