//! Index routing: a record's own event time → the index it belongs in.
//!
//! Never ingestion time: two copies of a record indexed on either side of
//! midnight must still land in the same index, or they would not merge.

use chrono::format::{Item, StrftimeItems};
use chrono::DateTime;

/// Specifiers that depend on the date or hour only, and print digits alone
/// (index names must be lowercase; `%e` pads with a space, which no index
/// name may hold).
const ALLOWED: &[&str] = &[
    "%Y", "%C", "%y", "%m", "%d", "%j", "%H", "%G", "%g", "%V", "%U", "%W", "%F", "%%",
];

/// Characters no Elasticsearch or OpenSearch index name may hold.
const FORBIDDEN_CHARS: &[char] = &[
    '\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':', '+',
];

#[derive(Debug, Clone)]
pub struct IndexPattern {
    pattern: String,
    fallback: String,
}

impl IndexPattern {
    pub fn new(pattern: &str, fallback: &str) -> Result<Self, String> {
        let mut rest = pattern;
        let mut literal = String::new();
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            let spec: String = rest[at..].chars().take(2).collect();
            if !ALLOWED.contains(&spec.as_str()) {
                return Err(format!(
                    "--index `{pattern}` uses `{spec}`; allowed are {}",
                    ALLOWED.join(" ")
                ));
            }
            rest = &rest[at + spec.len()..];
        }
        literal.push_str(rest);
        if StrftimeItems::new(pattern).any(|item| matches!(item, Item::Error)) {
            return Err(format!(
                "--index `{pattern}` is not a valid strftime pattern"
            ));
        }
        for (flag, name) in [
            ("--index", literal.as_str()),
            ("--fallback-index", fallback),
        ] {
            let shown = if flag == "--index" { pattern } else { name };
            if name.is_empty() || name.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(format!(
                    "{flag} `{shown}` must be a non-empty lowercase name"
                ));
            }
            if let Some(c) = name.chars().find(|c| FORBIDDEN_CHARS.contains(c)) {
                return Err(format!(
                    "{flag} `{shown}` holds `{c}`, which no index name may hold"
                ));
            }
            if name.starts_with(['-', '_']) {
                return Err(format!("{flag} `{shown}` must not start with `-` or `_`"));
            }
        }
        Ok(IndexPattern {
            pattern: pattern.to_owned(),
            fallback: fallback.to_owned(),
        })
    }

    pub fn router(&self) -> Router {
        Router {
            pattern: self.clone(),
            hour: None,
            name: String::new(),
        }
    }
}

/// Formats index names, remembering the last hour's name: records of one
/// object are nearly always from the same hour.
pub struct Router {
    pattern: IndexPattern,
    hour: Option<i64>,
    name: String,
}

impl Router {
    pub fn index_for(&mut self, timestamp_ms: Option<i64>) -> &str {
        let Some(ms) = timestamp_ms else {
            return &self.pattern.fallback;
        };
        let hour = ms.div_euclid(3_600_000);
        if self.hour != Some(hour) {
            let Some(time) = DateTime::from_timestamp_millis(ms) else {
                return &self.pattern.fallback;
            };
            self.name = time.format(&self.pattern.pattern).to_string();
            self.hour = Some(hour);
        }
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_event_day_in_utc() {
        let p = IndexPattern::new("logs-%Y.%m.%d", "logs-undated").unwrap();
        let mut r = p.router();
        assert_eq!(r.index_for(Some(1_795_305_599_000)), "logs-2026.11.21");
        assert_eq!(r.index_for(Some(1_795_305_601_000)), "logs-2026.11.22");
        assert_eq!(r.index_for(None), "logs-undated");
        assert_eq!(r.index_for(Some(i64::MAX)), "logs-undated");
    }

    #[test]
    fn rejects_patterns_that_cannot_name_an_index() {
        assert!(IndexPattern::new("logs-%b", "x").is_err());
        assert!(IndexPattern::new("logs-%Y-%M", "x").is_err());
        assert!(IndexPattern::new("Logs-%Y", "x").is_err());
        assert!(IndexPattern::new("logs-%Y", "").is_err());
        for (pattern, fallback, error) in [
            ("logs-%Y.%m.%e", "x", "uses `%e`"),
            ("logs %Y", "x", "holds ` `"),
            ("logs-%Y", "a:b", "--fallback-index `a:b` holds `:`"),
            ("_logs-%Y", "x", "must not start with"),
        ] {
            let message = IndexPattern::new(pattern, fallback).unwrap_err();
            assert!(message.contains(error), "{pattern}: {message}");
        }
        assert!(IndexPattern::new("logs-%Y.%m.%d-%H", "x").is_ok());
    }
}
