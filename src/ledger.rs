//! The deduplication ledger of sinks that cannot merge by id (Splunk HEC).
//!
//! Before a request is sent, each of its log_ids is looked up: one already
//! recorded within the window is a duplicate and is not sent again. A log_id
//! is recorded only once the sink has accepted its event (acknowledged, with
//! indexer acknowledgement), so a failed send never hides a record.
//!
//! Three kinds: `none`; `embedded`, an on-disk `redb` database for a single
//! worker (survives restarts, bounded by the window and by a number of
//! entries); `redis://…` for a fleet, where a log_id being sent is also
//! claimed for a while, so that two workers do not send it at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::redact::url as redact;

/// What the ledger knows of one log_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not recorded: send it (with Redis, it is now claimed by this worker).
    New,
    /// Accepted before, within the window: a duplicate.
    Done,
    /// Being sent by another worker right now: try again later.
    Busy,
}

#[async_trait]
pub trait Ledger: Send + Sync {
    /// Looks up each id (and claims the new ones where the ledger can).
    async fn claim(&self, ids: &[String]) -> Result<Vec<Verdict>, String>;
    /// Records ids whose events were accepted.
    async fn record(&self, ids: &[String]) -> Result<(), String>;
    /// Gives up the claims on ids that were not accepted.
    async fn release(&self, ids: &[String]);
}

/// `--dedup-ledger`. Parsing never fails (so that clap never echoes a value
/// that may hold a Redis password); `Invalid` is refused when the sink is
/// built.
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerSpec {
    None,
    Embedded,
    Redis(String),
    Invalid,
}

impl LedgerSpec {
    pub fn parse(text: &str) -> Result<LedgerSpec, String> {
        let text = text.trim();
        Ok(match text {
            "none" => LedgerSpec::None,
            "embedded" => LedgerSpec::Embedded,
            _ if text.starts_with("redis://")
                || text.starts_with("rediss://")
                || text.starts_with("redis+unix://") =>
            {
                LedgerSpec::Redis(text.to_owned())
            }
            _ => LedgerSpec::Invalid,
        })
    }
}

impl fmt::Debug for LedgerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerSpec::None => f.write_str("None"),
            LedgerSpec::Embedded => f.write_str("Embedded"),
            LedgerSpec::Redis(url) => write!(f, "Redis({})", redact(url)),
            LedgerSpec::Invalid => f.write_str("Invalid"),
        }
    }
}

/// Everything needed to open a ledger.
pub struct LedgerOptions<'a> {
    pub spec: &'a LedgerSpec,
    pub path: &'a Path,
    pub window: Duration,
    pub max_entries: u64,
    /// How long a Redis claim holds: longer than one request and its ack
    /// wait (whose polls never outlast the ack timeout).
    pub claim_ttl: Duration,
    /// Tells this worker's claims from others' (Redis).
    pub owner: &'a str,
}

/// Opens the ledger; `None` for `--dedup-ledger none`.
pub async fn open(options: &LedgerOptions<'_>) -> Result<Option<Arc<dyn Ledger>>, String> {
    if options.window.is_zero() {
        return Err("--dedup-window must be longer than 0 seconds".to_owned());
    }
    match options.spec {
        LedgerSpec::None => Ok(None),
        LedgerSpec::Embedded => {
            let ledger = Embedded::open(options.path, options.window, options.max_entries)?;
            Ok(Some(Arc::new(ledger)))
        }
        LedgerSpec::Redis(url) => {
            let ledger =
                RedisLedger::connect(url, options.window, options.claim_ttl, options.owner).await?;
            Ok(Some(Arc::new(ledger)))
        }
        LedgerSpec::Invalid => {
            Err("--dedup-ledger must be `none`, `embedded` or a redis://host:port URL".to_owned())
        }
    }
}

/// `7d`, `12h`, `30m`, `45s` or plain seconds.
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let factor = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86400.0,
        _ => {
            return Err(format!(
                "`{text}`: use seconds or a number with s, m, h or d"
            ))
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: use seconds or a number with s, m, h or d"))?;
    Duration::try_from_secs_f64(value * factor).map_err(|_| format!("`{text}` is not a duration"))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------- embedded

/// log_id → when it was recorded (epoch seconds).
const IDS: TableDefinition<&str, u64> = TableDefinition::new("log_ids");
/// (when, log_id): the same entries in time order, for expiry and eviction.
const BY_TIME: TableDefinition<(u64, &str), ()> = TableDefinition::new("by_time");
/// Entries removed per write at most, so one commit stays small.
const PURGE_STEP: usize = 50_000;

/// The on-disk ledger of a single worker.
pub struct Embedded {
    db: Arc<Database>,
    window_secs: u64,
    max_entries: u64,
}

impl Embedded {
    pub fn open(dir: &Path, window: Duration, max_entries: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the dedup ledger directory {}: {e}",
                dir.display()
            )
        })?;
        let file: PathBuf = dir.join("ledger.redb");
        let db = Database::create(&file).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => format!(
                "the dedup ledger {} is in use by another drsink process; give each worker its own \
                 --dedup-ledger-path, or share a redis:// ledger",
                file.display()
            ),
            e => format!("cannot open the dedup ledger {}: {e}", file.display()),
        })?;
        let ledger = Embedded {
            db: Arc::new(db),
            window_secs: window.as_secs().max(1),
            max_entries: max_entries.max(1),
        };
        // Create the tables, so that lookups find them.
        ledger.write(&[], now_secs())?;
        Ok(ledger)
    }

    fn lookup(&self, ids: &[String], now: u64) -> Result<Vec<Verdict>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(IDS).map_err(|e| e.to_string())?;
        let cutoff = now.saturating_sub(self.window_secs);
        ids.iter()
            .map(|id| {
                let seen = table.get(id.as_str()).map_err(|e| e.to_string())?;
                Ok(match seen {
                    Some(at) if at.value() > cutoff => Verdict::Done,
                    _ => Verdict::New,
                })
            })
            .collect()
    }

    /// Records `ids` at `now`, then drops expired entries and the oldest
    /// ones beyond the size bound.
    fn write(&self, ids: &[String], now: u64) -> Result<(), String> {
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(IDS).map_err(|e| e.to_string())?;
            let mut by_time = txn.open_table(BY_TIME).map_err(|e| e.to_string())?;
            for id in ids {
                let old = table
                    .insert(id.as_str(), now)
                    .map_err(|e| e.to_string())?
                    .map(|at| at.value());
                if let Some(at) = old {
                    by_time
                        .remove((at, id.as_str()))
                        .map_err(|e| e.to_string())?;
                }
                by_time
                    .insert((now, id.as_str()), ())
                    .map_err(|e| e.to_string())?;
            }
            let cutoff = now.saturating_sub(self.window_secs);
            let expired = {
                let mut expired = 0usize;
                let mut range = by_time
                    .range(..(cutoff + 1, ""))
                    .map_err(|e| e.to_string())?;
                while expired < PURGE_STEP && range.next().is_some() {
                    expired += 1;
                }
                expired
            };
            let total = by_time.len().map_err(|e| e.to_string())?;
            let excess = total.saturating_sub(self.max_entries);
            let remove = (expired as u64).max(excess).min(PURGE_STEP as u64 * 4);
            for _ in 0..remove {
                let Some((key, ())) = by_time
                    .pop_first()
                    .map_err(|e| e.to_string())?
                    .map(|(k, v)| (k.value().1.to_owned(), v.value()))
                else {
                    break;
                };
                table.remove(key.as_str()).map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

#[async_trait]
impl Ledger for Embedded {
    async fn claim(&self, ids: &[String]) -> Result<Vec<Verdict>, String> {
        let this = self.clone_handle();
        let ids = ids.to_vec();
        tokio::task::spawn_blocking(move || this.lookup(&ids, now_secs()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("dedup ledger lookup failed: {e}"))
    }

    async fn record(&self, ids: &[String]) -> Result<(), String> {
        let this = self.clone_handle();
        let ids = ids.to_vec();
        tokio::task::spawn_blocking(move || this.write(&ids, now_secs()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("dedup ledger write failed: {e}"))
    }

    async fn release(&self, _ids: &[String]) {}
}

impl Embedded {
    fn clone_handle(&self) -> Embedded {
        Embedded {
            db: Arc::clone(&self.db),
            window_secs: self.window_secs,
            max_entries: self.max_entries,
        }
    }
}

// ------------------------------------------------------------------- redis

/// Per key: `d` once accepted (expires after the window), or the claiming
/// worker's owner tag while it sends (expires after the claim TTL).
const CLAIM_SCRIPT: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == 'd' then
    out[i] = 1
  elseif (not v) or v == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 0
  else
    out[i] = 2
  end
end
return out
";

const RELEASE_SCRIPT: &str = r"
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
  end
end
return 0
";

/// Keys per script call or pipeline.
const REDIS_CHUNK: usize = 1000;
const KEY_PREFIX: &str = "drsink:log_id:";

pub struct RedisLedger {
    conn: redis::aio::ConnectionManager,
    claim: redis::Script,
    release: redis::Script,
    window_secs: u64,
    claim_ttl_ms: u64,
    owner: String,
    describe: String,
}

impl RedisLedger {
    pub async fn connect(
        url: &str,
        window: Duration,
        claim_ttl: Duration,
        owner: &str,
    ) -> Result<Self, String> {
        let describe = redact(url);
        // `rediss://` uses the process's default TLS provider, and two are
        // built in (the AWS SDK's and reqwest's): without a choice it panics.
        // An error only says one is chosen already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = redis::Client::open(url)
            .map_err(|e| format!("--dedup-ledger {describe} is not a usable Redis URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| format!("cannot connect to the dedup ledger at {describe}: {e}"))?;
        Ok(RedisLedger {
            conn,
            claim: redis::Script::new(CLAIM_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
            window_secs: window.as_secs().max(1),
            claim_ttl_ms: u64::try_from(claim_ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1000),
            owner: format!("p:{owner}"),
            describe,
        })
    }

    fn error(&self, e: redis::RedisError) -> String {
        format!("dedup ledger {}: {e}", self.describe)
    }
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn claim(&self, ids: &[String]) -> Result<Vec<Verdict>, String> {
        let mut conn = self.conn.clone();
        let mut verdicts = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(REDIS_CHUNK) {
            let mut call = self.claim.prepare_invoke();
            for id in chunk {
                call.key(format!("{KEY_PREFIX}{id}"));
            }
            call.arg(&self.owner).arg(self.claim_ttl_ms);
            let answers: Vec<i64> = call
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            if answers.len() != chunk.len() {
                return Err(format!(
                    "dedup ledger {} answered {} verdicts for {} ids",
                    self.describe,
                    answers.len(),
                    chunk.len()
                ));
            }
            verdicts.extend(answers.into_iter().map(|a| match a {
                1 => Verdict::Done,
                0 => Verdict::New,
                _ => Verdict::Busy,
            }));
        }
        Ok(verdicts)
    }

    async fn record(&self, ids: &[String]) -> Result<(), String> {
        let mut conn = self.conn.clone();
        for chunk in ids.chunks(REDIS_CHUNK) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("SET")
                    .arg(format!("{KEY_PREFIX}{id}"))
                    .arg("d")
                    .arg("EX")
                    .arg(self.window_secs)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    async fn release(&self, ids: &[String]) {
        let mut conn = self.conn.clone();
        for chunk in ids.chunks(REDIS_CHUNK) {
            let mut call = self.release.prepare_invoke();
            for id in chunk {
                call.key(format!("{KEY_PREFIX}{id}"));
            }
            call.arg(&self.owner);
            if let Err(e) = call.invoke_async::<i64>(&mut conn).await {
                // The claims expire by themselves after the claim TTL.
                tracing::debug!(error = %self.error(e), "cannot release ledger claims");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "drsink-ledger-test-{name}-{}-{}",
            std::process::id(),
            now_secs()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn embedded_entries_expire_after_the_window() {
        let dir = temp_dir("expiry");
        let ledger = Embedded::open(&dir, Duration::from_secs(10), 100).unwrap();
        ledger.write(&ids(&["a", "b"]), 1000).unwrap();
        assert_eq!(
            ledger.lookup(&ids(&["a", "b", "c"]), 1005).unwrap(),
            vec![Verdict::Done, Verdict::Done, Verdict::New]
        );
        assert_eq!(
            ledger.lookup(&ids(&["a"]), 1010).unwrap(),
            vec![Verdict::New]
        );
        // Recording again refreshes the time; the expired entry is purged.
        ledger.write(&ids(&["b"]), 1008).unwrap();
        ledger.write(&ids(&["c"]), 1015).unwrap();
        assert_eq!(
            ledger.lookup(&ids(&["a", "b", "c"]), 1015).unwrap(),
            vec![Verdict::New, Verdict::Done, Verdict::Done]
        );
        let txn = ledger.db.begin_read().unwrap();
        assert_eq!(txn.open_table(IDS).unwrap().len().unwrap(), 2);
        assert_eq!(txn.open_table(BY_TIME).unwrap().len().unwrap(), 2);
        drop(txn);
        // It survives a restart (opening purges by the real clock).
        ledger.write(&ids(&["z"]), now_secs()).unwrap();
        drop(ledger);
        let again = Embedded::open(&dir, Duration::from_secs(10), 100).unwrap();
        assert_eq!(
            again.lookup(&ids(&["z", "c"]), now_secs()).unwrap(),
            vec![Verdict::Done, Verdict::New]
        );
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn embedded_ledger_evicts_the_oldest_beyond_its_size() {
        let dir = temp_dir("size");
        let ledger = Embedded::open(&dir, Duration::from_secs(1000), 2).unwrap();
        ledger.write(&ids(&["a"]), 100).unwrap();
        ledger.write(&ids(&["b"]), 101).unwrap();
        ledger.write(&ids(&["c"]), 102).unwrap();
        assert_eq!(
            ledger.lookup(&ids(&["a", "b", "c"]), 103).unwrap(),
            vec![Verdict::New, Verdict::Done, Verdict::Done]
        );
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_process_on_the_same_ledger_gets_a_clear_error() {
        let dir = temp_dir("lock");
        let first = Embedded::open(&dir, Duration::from_secs(10), 10).unwrap();
        let second = Embedded::open(&dir, Duration::from_secs(10), 10);
        assert!(second
            .err()
            .unwrap()
            .contains("in use by another drsink process"));
        drop(first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn windows_and_specs_parse() {
        assert_eq!(parse_window("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_window("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_window("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_window("7w").is_err());
        assert!(parse_window("x").is_err());
        assert_eq!(LedgerSpec::parse("none").unwrap(), LedgerSpec::None);
        assert_eq!(LedgerSpec::parse("embedded").unwrap(), LedgerSpec::Embedded);
        assert_eq!(LedgerSpec::parse("bogus").unwrap(), LedgerSpec::Invalid);
        let redis = LedgerSpec::parse("redis://:hunter2@127.0.0.1:6379/0").unwrap();
        assert!(matches!(redis, LedgerSpec::Redis(_)));
        let shown = format!("{redis:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
