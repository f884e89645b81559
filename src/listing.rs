//! Backfill's source of object references: the objects of an archive bucket
//! selected by prefix, start key and time range, listed page by page with
//! ListObjectsV2 (never the whole bucket into memory).
//!
//! An object's time is the date in its key when the key has a date
//! partition (`YYYY/MM/DD`, `YYYY-MM-DD`, `dt=YYYY-MM-DD`), else its
//! LastModified: a replicated or copied archive has recent LastModified
//! times, but its keys still say when the logs were written. With a time
//! range, listing walks the key hierarchy and skips whole partitions outside
//! the range without listing their objects.

use aws_sdk_s3::Client;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use tokio::sync::mpsc;

use crate::aws::describe;
use crate::notification::ObjectRef;

/// One object to replay.
#[derive(Debug, Clone)]
pub struct Listed {
    pub object: ObjectRef,
    pub size: u64,
}

/// Which objects to replay.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub bucket: String,
    /// Key prefixes; none means the whole bucket.
    pub prefixes: Vec<String>,
    pub start_after: Option<String>,
    pub range: TimeRange,
}

/// `[since, until)`; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl TimeRange {
    pub fn is_open(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    fn contains(&self, time: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| time >= s) && self.until.is_none_or(|u| time < u)
    }

    /// Whether any day of `[first, last]` overlaps the range.
    fn overlaps_days(&self, first: NaiveDate, last: NaiveDate) -> bool {
        let start = first.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        let end = last
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc());
        let (Some(start), Some(end)) = (start, end) else {
            return true;
        };
        self.since.is_none_or(|s| end > s) && self.until.is_none_or(|u| start < u)
    }
}

/// Parses `--since`/`--until`: an RFC 3339 time, or a `YYYY-MM-DD` date.
/// A date given as `--until` includes that whole day.
pub fn parse_bound(text: &str, is_until: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("`{text}` is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    let day = if is_until {
        date.succ_opt()
            .ok_or_else(|| format!("`{text}` is out of range"))?
    } else {
        date
    };
    day.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{text}` is out of range"))
}

/// The days a key or key prefix covers according to its date partition:
/// one day for a full date, a month for `…/YYYY/MM/`, a year for `…/YYYY/`;
/// Hive's `year=YYYY/month=M/day=D` likewise. A year alone must be a whole
/// segment (`web-2001/` is a host name, not a year).
///
/// The first date that reaches past `root` (the `--prefix` listed) decides.
/// A date wholly inside the root names the folder the user chose, such as a
/// copied archive's `exports/2027-01-15/`, not the days of the logs below
/// it: a prefix under the root is never judged by it, and a key only when it
/// has no date of its own (`--prefix app/2026/11/21/`).
fn partition_days(path: &str, root: &str, key: bool) -> Option<(NaiveDate, NaiveDate)> {
    let bytes = path.as_bytes();
    let root_len = if path.starts_with(root) {
        root.len()
    } else {
        0
    };
    let mut inside_root = None;
    for at in 0..bytes.len() {
        let Some((end, days)) = date_at(path, at) else {
            continue;
        };
        if end > root_len {
            return Some(days);
        }
        inside_root = Some(days);
    }
    inside_root.filter(|_| key)
}

/// The days a key covers: its own date partition, or else that of the
/// nearest folder above it that has one (`logs/2026/11/web-3/app.gz` is of
/// November 2026, as the prefix `logs/2026/11/` is). So a key is judged by
/// LastModified, which a copied archive has of the copy, only when no folder
/// it is in is a date.
fn key_days(key: &str, root: &str) -> Option<(NaiveDate, NaiveDate)> {
    partition_days(key, root, true).or_else(|| {
        key.match_indices('/')
            .rev()
            .find_map(|(at, _)| partition_days(&key[..=at], root, true))
    })
}

/// The date partition starting at byte `at` of `path`: where it ends, and
/// the days it covers.
fn date_at(path: &str, at: usize) -> Option<(usize, (NaiveDate, NaiveDate))> {
    let bytes = path.as_bytes();
    let digits = |at: usize, n: usize| -> Option<u32> {
        let slice = bytes.get(at..at + n)?;
        if slice.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(slice).ok()?.parse().ok()
        } else {
            None
        }
    };
    let segment_start = at == 0 || bytes[at - 1] == b'/';
    // Bytes first, so that the slice below starts at an ASCII byte.
    if segment_start && bytes[at..].starts_with(b"year=") {
        return hive_days(&path[at..]).map(|(len, days)| (at + len, days));
    }
    if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
        return None;
    }
    let year = digits(at, 4).filter(|y| (1970..=2200).contains(y))?;
    let sep = match bytes.get(at + 4) {
        Some(b'/') => b'/',
        Some(b'-') => b'-',
        _ => return None,
    };
    let Some(month) = digits(at + 5, 2).filter(|m| (1..=12).contains(m)) else {
        // `…/YYYY/` ending a prefix: the whole year (a segment of its own).
        if sep == b'/' && segment_start && at + 5 == bytes.len() {
            return Some((at + 5, year_days(year)?));
        }
        return None;
    };
    if bytes.get(at + 7) != Some(&sep) {
        return None;
    }
    match digits(at + 8, 2).and_then(|d| NaiveDate::from_ymd_opt(year as i32, month, d)) {
        Some(day) if !bytes.get(at + 10).is_some_and(u8::is_ascii_digit) => {
            Some((at + 10, (day, day)))
        }
        Some(_) => None,
        // `…/YYYY/MM/` ending a prefix: the whole month.
        None if sep == b'/' && segment_start && at + 8 == bytes.len() => {
            Some((at + 8, month_days(year, month)?))
        }
        None => None,
    }
}

/// `year=YYYY/[month=M/[day=D/…]]` (months and days with or without a
/// leading zero), the partitions Hive, Glue and Athena write: how long it
/// is, and the days it covers.
fn hive_days(text: &str) -> Option<(usize, (NaiveDate, NaiveDate))> {
    // `name=N` ending the path or followed by `/`: N, and the length taken.
    let number = |text: &str, name: &str, max_len: usize| -> Option<(u32, usize)> {
        let rest = text.strip_prefix(name)?;
        let len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 || len > max_len || !matches!(rest.as_bytes().get(len), None | Some(b'/')) {
            return None;
        }
        Some((rest[..len].parse().ok()?, name.len() + len))
    };
    let (year, mut used) = number(text, "year=", 4)?;
    if !(1970..=2200).contains(&year) {
        return None;
    }
    let Some((month, len)) = text
        .get(used + 1..)
        .and_then(|rest| number(rest, "month=", 2))
        .filter(|(m, _)| (1..=12).contains(m))
    else {
        return Some((used, year_days(year)?));
    };
    used += 1 + len;
    let day = text
        .get(used + 1..)
        .and_then(|rest| number(rest, "day=", 2))
        .and_then(|(day, len)| Some((len, NaiveDate::from_ymd_opt(year as i32, month, day)?)));
    match day {
        Some((len, day)) => Some((used + 1 + len, (day, day))),
        // No day, or one the month does not have: the month.
        None => Some((used, month_days(year, month)?)),
    }
}

fn year_days(year: u32) -> Option<(NaiveDate, NaiveDate)> {
    let first = NaiveDate::from_ymd_opt(year as i32, 1, 1)?;
    Some((first, NaiveDate::from_ymd_opt(year as i32, 12, 31)?))
}

fn month_days(year: u32, month: u32) -> Option<(NaiveDate, NaiveDate)> {
    let first = NaiveDate::from_ymd_opt(year as i32, month, 1)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year as i32 + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year as i32, month + 1, 1)?
    };
    Some((first, next - TimeDelta::days(1)))
}

/// The StartAfter to send when listing `prefix`. With a delimiter, S3 rolls
/// the keys after StartAfter up into prefixes, but some S3-compatible stores
/// (moto among them) compare the prefixes themselves with StartAfter and drop
/// the one that holds it (`a/2026/` sorts before `a/2026/11/20/x`), and with
/// it every later key inside. Listing from that prefix's name (`a/2026`)
/// instead keeps it on both; `list` drops what lies before the real key.
fn start_after_at(prefix: &str, start_after: &str, delimited: bool) -> String {
    match start_after.strip_prefix(prefix) {
        Some(rest) if delimited => match rest.find('/') {
            Some(slash) => format!("{prefix}{}", &rest[..slash]),
            None => start_after.to_owned(),
        },
        _ => start_after.to_owned(),
    }
}

impl Selection {
    /// Whether a key comes after `--start-after`.
    fn is_after_start(&self, key: &str) -> bool {
        self.start_after.as_deref().is_none_or(|after| key > after)
    }

    /// Whether a listed prefix can hold keys after `--start-after`: not if
    /// it sorts before it and does not hold it.
    fn may_hold_keys_after_start(&self, prefix: &str) -> bool {
        self.is_after_start(prefix)
            || self
                .start_after
                .as_deref()
                .is_some_and(|after| after.starts_with(prefix))
    }
}

/// Lists the selected objects into `out`, in key order per prefix; stops
/// early (Ok) when the receiver is gone.
pub async fn list(
    s3: &Client,
    selection: &Selection,
    out: mpsc::Sender<Listed>,
) -> anyhow::Result<()> {
    let roots = if selection.prefixes.is_empty() {
        vec![String::new()]
    } else {
        selection.prefixes.clone()
    };
    // With a time range, walk the hierarchy so partitions can be skipped.
    let delimiter = (!selection.range.is_open()).then_some("/");
    for root in roots {
        let mut pending = vec![root.clone()];
        while let Some(prefix) = pending.pop() {
            let mut children = Vec::new();
            let mut pages = s3
                .list_objects_v2()
                .bucket(&selection.bucket)
                .prefix(&prefix)
                .set_delimiter(delimiter.map(str::to_owned))
                .set_start_after(
                    selection
                        .start_after
                        .as_deref()
                        .map(|after| start_after_at(&prefix, after, delimiter.is_some())),
                )
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| {
                    anyhow::anyhow!(
                        "listing s3://{}/{prefix} failed: {}",
                        selection.bucket,
                        describe(&e)
                    )
                })?;
                for common in page.common_prefixes() {
                    if let Some(child) = common.prefix() {
                        let keep = selection.may_hold_keys_after_start(child)
                            && partition_days(child, &root, false).is_none_or(|(first, last)| {
                                selection.range.overlaps_days(first, last)
                            });
                        if keep {
                            children.push(child.to_owned());
                        } else {
                            tracing::debug!(
                                prefix = child,
                                "partition outside the time range: skipped"
                            );
                        }
                    }
                }
                for object in page.contents() {
                    let Some(key) = object.key() else { continue };
                    if !selection.is_after_start(key) {
                        continue;
                    }
                    let selected = match key_days(key, &root) {
                        Some((first, last)) => selection.range.overlaps_days(first, last),
                        None => object
                            .last_modified()
                            .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                            .is_none_or(|t| selection.range.contains(t)),
                    };
                    if !selected {
                        continue;
                    }
                    let listed = Listed {
                        object: ObjectRef::new(selection.bucket.clone(), key.to_owned()),
                        size: object.size().unwrap_or(0).max(0) as u64,
                    };
                    if out.send(listed).await.is_err() {
                        return Ok(());
                    }
                }
            }
            // Depth first, in key order: the stack pops the last pushed.
            pending.extend(children.into_iter().rev());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn finds_date_partitions_in_keys_and_prefixes() {
        let d = day(2026, 11, 21);
        let key = |path: &str| partition_days(path, "", true);
        assert_eq!(key("app/2026/11/21/web.log.gz"), Some((d, d)));
        assert_eq!(key("logs/dt=2026-11-21/part-0.gz"), Some((d, d)));
        assert_eq!(
            key("firehose/stream-1-2026-11-21-12-00-00-abc"),
            Some((d, d))
        );
        assert_eq!(
            key("AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/"),
            Some((day(2026, 11, 1), day(2026, 11, 30)))
        );
        assert_eq!(
            key("AWSLogs/123456789012/CloudTrail/us-east-1/2026/"),
            Some((day(2026, 1, 1), day(2026, 12, 31)))
        );
        assert_eq!(key("AWSLogs/123456789012/"), None);
        assert_eq!(key("app/12026/11/21/x"), None);
        assert_eq!(key("app/2026/13/01/x"), None);
        // A number ending a segment is no year.
        assert_eq!(key("hosts/web-2001/"), None);
        assert_eq!(key("servers/zk-2181/2026/11/21/x"), Some((d, d)));
        // Hive partitions, padded or not.
        assert_eq!(
            key("t/year=2026/month=11/day=21/part-0.parquet"),
            Some((d, d))
        );
        assert_eq!(
            key("t/year=2026/month=2/"),
            Some((day(2026, 2, 1), day(2026, 2, 28)))
        );
        assert_eq!(
            key("t/year=2026/"),
            Some((day(2026, 1, 1), day(2026, 12, 31)))
        );
        assert_eq!(
            key("t/year=2026/month=11/day=5/x"),
            Some((day(2026, 11, 5), day(2026, 11, 5)))
        );
        // Dates after `=` or `_`, and a Hive day the month does not have.
        assert_eq!(key("logs/dt=2026/11/21/x"), Some((d, d)));
        assert_eq!(key("logs/archive_2026/11/21/x"), Some((d, d)));
        assert_eq!(
            key("t/year=2026/month=11/day=31/x"),
            Some((day(2026, 11, 1), day(2026, 11, 30)))
        );
        // Keys that are not ASCII.
        assert_eq!(key("journaux/é/2026/11/21/ü.gz"), Some((d, d)));
        assert_eq!(key("ü/year=2026/month=11/day=21/ü"), Some((d, d)));
        assert_eq!(key("日志/ü"), None);
    }

    #[test]
    fn a_key_in_a_month_or_year_folder_takes_its_days() {
        let november = Some((day(2026, 11, 1), day(2026, 11, 30)));
        assert_eq!(key_days("logs/2026/11/app.gz", ""), november);
        assert_eq!(key_days("logs/2026/11/web-3/app.gz", ""), november);
        assert_eq!(
            key_days("logs/2026/app.gz", ""),
            Some((day(2026, 1, 1), day(2026, 12, 31)))
        );
        // A key's own date still decides, and a key with none has none.
        let d = day(2026, 11, 21);
        assert_eq!(key_days("logs/2026/11/app-2026-11-21.gz", ""), Some((d, d)));
        assert_eq!(key_days("logs/app.gz", ""), None);
        assert_eq!(key_days("app.gz", ""), None);
    }

    #[test]
    fn a_date_inside_the_listed_prefix_does_not_judge_what_is_below_it() {
        let d = day(2026, 11, 21);
        let root = "exports/2027-01-15/";
        let key = "exports/2027-01-15/AWSLogs/1/CloudTrail/us-east-1/2026/11/21/x.json.gz";
        assert_eq!(partition_days(key, root, true), Some((d, d)));
        assert_eq!(
            partition_days("exports/2027-01-15/AWSLogs/", root, false),
            None
        );
        // Without it as the root, the first date decides.
        assert_eq!(
            partition_days("exports/2027-01-15/", "", false),
            Some((day(2027, 1, 15), day(2027, 1, 15)))
        );
        // A root ending inside a date, or naming the day itself.
        assert_eq!(
            partition_days("app/2026/11/21/", "app/2026/11/", false),
            Some((d, d))
        );
        assert_eq!(
            partition_days("app/2026/11/21/x", "app/2026/11/21/", true),
            Some((d, d))
        );
        assert_eq!(
            partition_days("app/2026/11/21/x/", "app/2026/11/21/", false),
            None
        );
    }

    #[test]
    fn a_delimited_listing_starts_at_the_prefix_holding_start_after() {
        let after = "a/2026/11/20/part 0";
        assert_eq!(start_after_at("", after, true), "a");
        assert_eq!(start_after_at("a/", after, true), "a/2026");
        assert_eq!(start_after_at("a/2026/11/", after, true), "a/2026/11/20");
        assert_eq!(start_after_at("a/2026/11/20/", after, true), after);
        assert_eq!(start_after_at("b/", after, true), after);
        assert_eq!(start_after_at("", after, false), after);
        let selection = Selection {
            bucket: "b".into(),
            prefixes: Vec::new(),
            start_after: Some(after.into()),
            range: TimeRange::default(),
        };
        assert!(selection.may_hold_keys_after_start("a/2026/"));
        assert!(selection.may_hold_keys_after_start("a/2026/11/21/"));
        assert!(!selection.may_hold_keys_after_start("a/2026/11/19/"));
        assert!(!selection.may_hold_keys_after_start("a/2026-old/"));
    }

    #[test]
    fn bounds_take_dates_or_times_and_until_dates_include_the_day() {
        let range = TimeRange {
            since: Some(parse_bound("2026-11-20", false).unwrap()),
            until: Some(parse_bound("2026-11-21", true).unwrap()),
        };
        assert!(range.overlaps_days(day(2026, 11, 20), day(2026, 11, 20)));
        assert!(range.overlaps_days(day(2026, 11, 21), day(2026, 11, 21)));
        assert!(!range.overlaps_days(day(2026, 11, 22), day(2026, 11, 22)));
        assert!(!range.overlaps_days(day(2026, 11, 19), day(2026, 11, 19)));
        assert!(range.overlaps_days(day(2026, 11, 1), day(2026, 11, 30)));
        assert!(!range.overlaps_days(day(2025, 1, 1), day(2025, 12, 31)));
        let t = parse_bound("2026-11-21T12:00:00Z", true).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-21T12:00:00+00:00");
        assert!(parse_bound("yesterday", false).is_err());
    }
}
