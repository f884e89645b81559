//! Backfill checkpoint: the objects already replayed (or, with `--via-queue`,
//! sent to the workers' queue), so a rerun skips them.
//!
//! An append-only journal of one JSON line per completed object, each
//! written with a single append and synced before the object counts as
//! done. A crash can at worst leave a torn last line, which loading ignores
//! (that object is replayed again, and its records merge by log_id).
//! Objects are identified by bucket and key, never by LastModified, which
//! many objects share.
//!
//! The two kinds refuse each other's file: objects sent to the queue are not
//! done (a worker may still fail on one), so a replay here must not skip them.
//! A queue's checkpoint starts with a `{"kind":"enqueued"}` line.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Done<'a> {
    #[serde(borrow)]
    bucket: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
}

/// What a checkpoint's objects went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Replayed by this backfill.
    Replayed,
    /// Sent to the workers' queue (`--via-queue`).
    Enqueued,
}

#[derive(Serialize, Deserialize)]
struct Header {
    kind: Kind,
}

pub struct Checkpoint {
    path: PathBuf,
    done: HashSet<(String, String)>,
    journal: Mutex<File>,
}

impl Checkpoint {
    pub fn open(path: &Path, kind: Kind) -> io::Result<Checkpoint> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("checkpoint {}: {e}", path.display()));
        let mut journal = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(context)?;
        // Held while this run lasts: two backfills sharing a checkpoint would
        // each replay what the other is replaying (doubles in Splunk).
        match journal.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "checkpoint {} is in use by another backfill: give each run a checkpoint file of its own",
                        path.display()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => tracing::warn!(
                checkpoint = %path.display(),
                "cannot lock the checkpoint ({e}); do not share it with another backfill"
            ),
        }
        let mut done = HashSet::new();
        // A file without a header is of the kind that came first.
        let mut found = None;
        match File::open(path) {
            Ok(file) => {
                // Bytes, not text: a line torn inside a multi-byte key is
                // not UTF-8, and must be skipped like any torn line.
                for line in BufReader::new(file).split(b'\n') {
                    let line = line.map_err(context)?;
                    if let Ok(entry) = serde_json::from_slice::<Done>(&line) {
                        found.get_or_insert(Kind::Replayed);
                        done.insert((entry.bucket.into_owned(), entry.key.into_owned()));
                    } else if let Ok(header) = serde_json::from_slice::<Header>(&line) {
                        found.get_or_insert(header.kind);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(context(e)),
        }
        match found {
            Some(found) if found != kind => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "checkpoint {} records objects {}, and this run {}: give it a checkpoint file of its own",
                        path.display(),
                        kind_text(found),
                        match kind {
                            Kind::Replayed => "replays them here",
                            Kind::Enqueued => "sends them to a queue",
                        }
                    ),
                ))
            }
            _ => {}
        }
        // Close a line torn by a crash, so the next entry starts a line.
        let length = journal.metadata().map_err(context)?.len();
        if length > 0 {
            let mut last = [0u8];
            journal.seek(SeekFrom::Start(length - 1)).map_err(context)?;
            journal.read_exact(&mut last).map_err(context)?;
            if last != *b"\n" {
                journal.write_all(b"\n").map_err(context)?;
            }
        }
        if found.is_none() && kind == Kind::Enqueued {
            let mut header = serde_json::to_vec(&Header { kind })?;
            header.push(b'\n');
            journal
                .write_all(&header)
                .and_then(|()| journal.sync_data())
                .map_err(context)?;
        }
        Ok(Checkpoint {
            path: path.to_owned(),
            done,
            journal: Mutex::new(journal),
        })
    }

    /// Objects completed by earlier runs.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    pub fn is_done(&self, bucket: &str, key: &str) -> bool {
        self.done.contains(&(bucket.to_owned(), key.to_owned()))
    }

    /// Records an object as completed, durably.
    pub fn record(&self, bucket: &str, key: &str) -> io::Result<()> {
        self.record_all([(bucket, key)])
    }

    /// Records objects as completed with one append and one sync.
    pub fn record_all<'a>(
        &self,
        objects: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> io::Result<()> {
        let mut lines = Vec::new();
        for (bucket, key) in objects {
            serde_json::to_writer(
                &mut lines,
                &Done {
                    bucket: bucket.into(),
                    key: key.into(),
                },
            )?;
            lines.push(b'\n');
        }
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        journal
            .write_all(&lines)
            .and_then(|()| journal.sync_data())
            .map_err(|e| {
                io::Error::new(e.kind(), format!("checkpoint {}: {e}", self.path.display()))
            })
    }
}

fn kind_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Replayed => "replayed by a backfill",
        Kind::Enqueued => "sent to a queue with --via-queue",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_objects_survive_a_reopen_and_torn_lines_are_ignored() {
        let path = std::env::temp_dir().join(format!("drsink-checkpoint-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let first = Checkpoint::open(&path, Kind::Replayed).unwrap();
        assert!(first.is_empty());
        first.record("b", "k 1").unwrap();
        first.record("b", "k\n2").unwrap();
        drop(first);
        // A crash mid-append leaves a torn last line.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"bucket\":\"b\",\"ke")
            .unwrap();
        let again = Checkpoint::open(&path, Kind::Replayed).unwrap();
        assert_eq!(again.len(), 2);
        assert!(again.is_done("b", "k 1"));
        assert!(again.is_done("b", "k\n2"));
        assert!(!again.is_done("b", "k 3"));
        again.record("b", "k 3").unwrap();
        again.record_all([("b", "k 4"), ("c", "k 4")]).unwrap();
        // Not shared with another run while this one has it open.
        let error = Checkpoint::open(&path, Kind::Replayed).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!("checkpoint {} is in use by another backfill: give each run a checkpoint file of its own", path.display())
        );
        drop(again);
        let last = Checkpoint::open(&path, Kind::Replayed).unwrap();
        assert_eq!(last.len(), 5);
        assert!(last.is_done("b", "k 3") && last.is_done("b", "k 4") && last.is_done("c", "k 4"));
        drop(last);
        let error = Checkpoint::open(&path, Kind::Enqueued).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!("checkpoint {} records objects replayed by a backfill, and this run sends them to a queue: give it a checkpoint file of its own", path.display())
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_queue_s_checkpoint_is_marked_and_refused_by_a_replay() {
        let path = std::env::temp_dir().join(format!("drsink-checkpoint-q-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sent = Checkpoint::open(&path, Kind::Enqueued).unwrap();
        drop(sent);
        // Marked even before its first object.
        let sent = Checkpoint::open(&path, Kind::Enqueued).unwrap();
        sent.record_all([("b", "k 1")]).unwrap();
        drop(sent);
        let again = Checkpoint::open(&path, Kind::Enqueued).unwrap();
        assert_eq!(again.len(), 1);
        assert!(again.is_done("b", "k 1"));
        drop(again);
        let error = Checkpoint::open(&path, Kind::Replayed).err().unwrap();
        assert!(
            error.to_string().contains(
                "records objects sent to a queue with --via-queue, and this run replays them here"
            ),
            "{error}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
