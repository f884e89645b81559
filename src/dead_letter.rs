//! The dead-letter store: what could not be indexed, with the reason, where
//! it came from, and the record itself, so nothing is dropped silently.
//!
//! Entries are NDJSON, appended to a file of this process's and synced to
//! disk (or written to S3) before the SQS message that named them is deleted.
//! The file is locked only while an append runs, so `drsink redrive` can take
//! a running worker's letters between two appends; the worker then starts a
//! new file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::aws::describe;
use crate::notification::ObjectRef;
use crate::records::Position;

/// One dead letter.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// 1-based line of the record (or its container) in its decompressed
    /// object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// 0-based index of the record in its container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<u32>,
    /// For an SQS message that names no object: its id and body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Byte offset of the fault, where that is what is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The server's error, for records the sink rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// The record's text (lossy where it was not UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    pub time: String,
}

impl DeadLetter {
    pub fn new(object: &ObjectRef, reason: impl Into<String>) -> Self {
        DeadLetter {
            bucket: Some(object.bucket.clone()),
            key: Some(object.key.clone()),
            ..DeadLetter::bare(reason.into())
        }
    }

    /// An SQS message that is not a notification drsink can act on.
    pub fn message(message_id: &str, body: &str, reason: impl Into<String>) -> Self {
        DeadLetter {
            message_id: Some(message_id.to_owned()),
            message: Some(body.to_owned()),
            ..DeadLetter::bare(reason.into())
        }
    }

    fn bare(reason: String) -> Self {
        DeadLetter {
            reason,
            bucket: None,
            key: None,
            line: None,
            entry: None,
            message_id: None,
            message: None,
            offset: None,
            error: None,
            record: None,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    pub fn position(mut self, position: Position) -> Self {
        self.line = Some(position.line);
        self.entry = position.entry;
        self
    }

    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    pub fn record(mut self, bytes: &[u8]) -> Self {
        self.record = Some(String::from_utf8_lossy(bytes).into_owned());
        self
    }

    pub fn error(mut self, error: Value) -> Self {
        self.error = Some(error);
        self
    }
}

/// The bucket and prefix of a dead-letter location `s3://bucket/prefix/`
/// given to `flag`; `None` for a local directory. The prefix must name a
/// folder of its own, ending in `/`: the worker takes every object under it
/// for one of the store's own (and redrive re-submits and removes what it
/// finds there), so an empty one would swallow the whole bucket, and `dl`
/// would also match `dlogs/…`. (It is refused rather than completed: the
/// store's objects would move, and those already written would no longer
/// be recognised.)
pub fn s3_location(text: &str, flag: &str) -> Result<Option<(String, String)>, String> {
    let Some(location) = text.strip_prefix("s3://") else {
        // `S3://…`, `s3:/…`, `https://…` would otherwise be taken for a local
        // directory, and the letters kept on a container's throwaway disk.
        let scheme = text.split_once(':').map(|(scheme, _)| scheme);
        if text.contains("://") || scheme.is_some_and(|s| s.eq_ignore_ascii_case("s3")) {
            return Err(format!(
                "{flag} `{text}` is neither s3://bucket/prefix/ (in lowercase) nor a local directory"
            ));
        }
        return Ok(None);
    };
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if bucket.is_empty() {
        return Err(format!(
            "{flag} `{text}` names no bucket (expected s3://bucket/prefix/)"
        ));
    }
    if prefix.trim_matches('/').is_empty() {
        return Err(format!(
            "{flag} `{text}` names no prefix: dead letters need a folder of their own, or every object in the bucket would be taken for one (e.g. s3://{bucket}/drsink-dead-letters/)"
        ));
    }
    if !prefix.ends_with('/') {
        return Err(format!(
            "{flag} `{text}` must end with `/` (s3://{bucket}/{prefix}/): the prefix is a folder, and `{prefix}` alone would also take in objects such as `{prefix}-other/…`"
        ));
    }
    Ok(Some((bucket.to_owned(), prefix.to_owned())))
}

/// Where dead letters are kept: a local directory, or `s3://bucket/prefix`
/// (for example in the DR bucket, so they outlive the worker's container).
pub struct DeadLetterStore {
    target: Target,
}

enum Target {
    Dir {
        dir: PathBuf,
        /// The file of the last append, if it may take the next one.
        file: Mutex<Option<PathBuf>>,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
        /// Objects written by this process so far, to name the next.
        written: AtomicU64,
    },
}

impl DeadLetterStore {
    pub fn new(dir: &Path) -> Self {
        DeadLetterStore {
            target: Target::Dir {
                dir: dir.to_owned(),
                file: Mutex::new(None),
            },
        }
    }

    /// A store of objects under `s3://bucket/prefix`.
    pub fn s3(client: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Self {
        DeadLetterStore {
            target: Target::S3 {
                client,
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                written: AtomicU64::new(0),
            },
        }
    }

    /// Whether an object is one of the store's own: a bucket notification on
    /// the dead-letter prefix must not feed dead letters back in.
    pub fn owns(&self, object: &ObjectRef) -> bool {
        match &self.target {
            Target::S3 { bucket, prefix, .. } => {
                object.bucket == *bucket && object.key.starts_with(prefix.as_str())
            }
            Target::Dir { .. } => false,
        }
    }

    /// Appends the letters and makes them durable (synced to disk, or
    /// written to S3) before returning.
    pub fn append(&self, letters: &[DeadLetter]) -> io::Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut text = Vec::new();
        for letter in letters {
            serde_json::to_writer(&mut text, letter)?;
            text.push(b'\n');
        }
        self.append_ndjson(&text)
    }

    /// Appends entries that are already NDJSON (each line ending in `\n`),
    /// such as entries kept as they were by a redrive, and makes them durable.
    pub fn append_ndjson(&self, text: &[u8]) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        match &self.target {
            Target::Dir { dir, file } => {
                let mut slot = file.lock().unwrap_or_else(|p| p.into_inner());
                let last = slot.take().and_then(|path| Some((reopen(&path)?, path)));
                let (mut file, path) = match last {
                    Some(last) => last,
                    None => create_file(dir)?,
                };
                let written = file.write_all(text).and_then(|()| file.sync_data());
                match written {
                    Ok(()) => *slot = Some(path),
                    // A torn last line stays behind; the next letters go to a
                    // new file instead of being appended to it.
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("dead-letter file {}: {e}", path.display()),
                        ))
                    }
                }
                // Dropping the file unlocks it.
                Ok(())
            }
            Target::S3 {
                client,
                bucket,
                prefix,
                written,
            } => {
                // S3 has no append: each call writes one object.
                let key = format!(
                    "{prefix}{}-{}.ndjson",
                    file_stem(),
                    written.fetch_add(1, Ordering::Relaxed)
                );
                let put = async {
                    client
                        .put_object()
                        .bucket(bucket)
                        .key(&key)
                        .content_type("application/x-ndjson")
                        .body(text.to_vec().into())
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| {
                            io::Error::other(format!(
                                "dead-letter store s3://{bucket}/{key}: {}",
                                describe(&e)
                            ))
                        })
                };
                // Callers are both async tasks and decoding threads; either
                // may wait here for the write to be durable.
                let handle = tokio::runtime::Handle::current();
                tokio::task::block_in_place(|| handle.block_on(put))
            }
        }
    }
}

/// `dead-letter-<time>-<pid>-<random>`: unique across a fleet, where every
/// container's drsink may be PID 1 and start in the same millisecond, and
/// two writers of one S3 prefix must never replace each other's objects.
fn file_stem() -> String {
    format!(
        "dead-letter-{}-{}-{:016x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id(),
        rand::random::<u64>()
    )
}

/// The last append's file, locked, if it may take the next append: not if a
/// redrive holds it (it will remove it) or has already removed it.
fn reopen(path: &Path) -> Option<File> {
    let file = OpenOptions::new().append(true).open(path).ok()?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return None,
        // No locks on this file system: warned about when the file was made.
        Err(fs::TryLockError::Error(_)) => {}
    }
    // Locked, and still under its name: a redrive may have removed it between
    // the open and the lock, and appends to a removed file are lost.
    still_named(&file, path).then_some(file)
}

/// Whether `file` (opened from `path`) is still the file under that name:
/// one locked after another process removed it is no longer in the store.
pub fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
        _ => false,
    }
}

/// A new dead-letter file, locked, and its path.
fn create_file(dir: &Path) -> io::Result<(File, PathBuf)> {
    let context = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("dead-letter directory {}: {e}", dir.display()),
        )
    };
    fs::create_dir_all(dir).map_err(context)?;
    // Named `.ndjson` only once locked: a redrive takes only files nobody
    // holds, since it removes what it has read.
    let stem = file_stem();
    let open = dir.join(format!("{stem}.open"));
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&open)
        .map_err(context)?;
    if let Err(e) = file.lock() {
        // Some network and FUSE file systems have no locks: dead letters
        // must still be written, but a redrive could then take this file.
        tracing::warn!(
            "cannot lock a new dead-letter file in {}: {e}; do not run `drsink redrive` on it while this process runs",
            dir.display()
        );
    }
    let path = dir.join(format!("{stem}.ndjson"));
    fs::rename(&open, &path).map_err(context)?;
    // The new file's name must be durable too, or a crash could lose it
    // after the messages it accounts for were deleted.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(context)?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_location_needs_a_folder_of_its_own() {
        let folder = |b: &str, p: &str| Ok(Some((b.to_owned(), p.to_owned())));
        assert_eq!(s3_location("drsink-dead-letter", "--dead-letter"), Ok(None));
        assert_eq!(
            s3_location("s3://dr/dl/", "--dead-letter"),
            folder("dr", "dl/")
        );
        assert_eq!(s3_location("s3://dr/a/b/", "--from"), folder("dr", "a/b/"));
        let error = s3_location("s3://dr/dl", "--dead-letter").unwrap_err();
        assert!(
            error.starts_with("--dead-letter `s3://dr/dl` must end with `/` (s3://dr/dl/)"),
            "{error}"
        );
        for bare in ["s3://dr", "s3://dr/", "s3://dr//"] {
            let error = s3_location(bare, "--dead-letter").unwrap_err();
            assert!(error.contains("names no prefix"), "{bare}: {error}");
            assert!(error.contains("s3://dr/drsink-dead-letters/"), "{error}");
        }
        let error = s3_location("s3:///dl/", "--from").unwrap_err();
        assert!(
            error.starts_with("--from `s3:///dl/` names no bucket"),
            "{error}"
        );
        // Mistyped locations are not taken for local directories.
        for typo in [
            "S3://dr/dl/",
            "s3:/dr/dl/",
            "s3:dr/dl/",
            "https://dr.s3.amazonaws.com/dl/",
        ] {
            let error = s3_location(typo, "--dead-letter").unwrap_err();
            assert!(
                error.contains("neither s3://bucket/prefix/"),
                "{typo}: {error}"
            );
        }
        assert_eq!(s3_location("./dl:2026", "--dead-letter"), Ok(None));
    }

    #[test]
    fn letters_are_appended_as_ndjson() {
        let dir = std::env::temp_dir().join(format!("drsink-dl-test-{}", std::process::id()));
        let store = DeadLetterStore::new(&dir);
        let object = ObjectRef::new("b", "k 1");
        store
            .append(&[DeadLetter::new(&object, "not JSON")
                .position(Position::line(3))
                .record(b"oops\xff")])
            .unwrap();
        store.append(&[DeadLetter::new(&object, "second")]).unwrap();
        let files: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(files.len(), 1);
        let path = files[0].as_ref().unwrap().path();
        assert_eq!(path.extension().unwrap(), "ndjson");
        // Not held between appends, so a redrive can take it.
        File::open(&path).unwrap().try_lock().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["reason"], "not JSON");
        assert_eq!(lines[0]["key"], "k 1");
        assert_eq!(lines[0]["line"], 3);
        assert_eq!(lines[0]["record"], "oops\u{fffd}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_a_redrive_holds_or_removed_takes_no_more_letters() {
        let dir = std::env::temp_dir().join(format!("drsink-dl-redrive-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = DeadLetterStore::new(&dir);
        let object = ObjectRef::new("b", "k");
        let append = |reason: &str| store.append(&[DeadLetter::new(&object, reason)]).unwrap();
        let files = || {
            let mut files: Vec<(PathBuf, Vec<String>)> = fs::read_dir(&dir)
                .unwrap()
                .map(|entry| {
                    let path = entry.unwrap().path();
                    let reasons = fs::read_to_string(&path)
                        .unwrap()
                        .lines()
                        .map(|l| {
                            serde_json::from_str::<Value>(l).unwrap()["reason"]
                                .as_str()
                                .unwrap()
                                .to_owned()
                        })
                        .collect();
                    (path, reasons)
                })
                .collect();
            files.sort_by_key(|(_, reasons)| reasons.clone());
            files
        };
        append("a");
        let [(first, _)] = <[_; 1]>::try_from(files()).unwrap();
        // A redrive reads the first file: the next letter goes elsewhere.
        let redrive = File::options().read(true).write(true).open(&first).unwrap();
        redrive.try_lock().unwrap();
        append("b");
        let [(_, a), (second, b)] = <[_; 2]>::try_from(files()).unwrap();
        assert_eq!((a, b), (vec!["a".to_owned()], vec!["b".to_owned()]));
        // It removes the file and lets go; the second file takes the next letter.
        fs::remove_file(&first).unwrap();
        drop(redrive);
        append("c");
        let [(path, bc)] = <[_; 1]>::try_from(files()).unwrap();
        assert_eq!(path, second);
        assert_eq!(bc, ["b", "c"]);
        // A redrive that removed the file between two appends: a new one.
        fs::remove_file(&second).unwrap();
        append("d");
        let [(path, d)] = <[_; 1]>::try_from(files()).unwrap();
        assert!(path != second);
        assert_eq!(d, vec!["d"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_names_differ_within_a_process_and_a_millisecond() {
        let names: std::collections::HashSet<String> = (0..100).map(|_| file_stem()).collect();
        assert_eq!(names.len(), 100);
    }
}
