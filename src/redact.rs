//! Keeping secrets out of logs, errors and configuration dumps.

/// A URL (or any value that may hold one) fit for messages: credentials in
/// it, `scheme://user:password@host…`, become `scheme://(redacted)@host…`.
pub fn url(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else {
        return value.to_owned();
    };
    let rest = &value[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://(redacted)@{}", &value[..scheme_end], &rest[at + 1..]),
        None => value.to_owned(),
    }
}

/// Describes an HTTP transport error without its URL (which may carry
/// credentials).
pub fn transport_error(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let err = err.without_url();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A secret value (password, API key, token): shown as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    /// Never echoes the value, so clap's errors cannot show it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Secret(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            super::url("http://u:secret@localhost:9200/"),
            "http://(redacted)@localhost:9200/"
        );
        assert_eq!(
            super::url("redis://:pw@cache:6379"),
            "redis://(redacted)@cache:6379"
        );
        assert_eq!(super::url("http://host:9200/a@b"), "http://host:9200/a@b");
        assert_eq!(super::url("logs-%Y"), "logs-%Y");
    }
}
