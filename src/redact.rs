//! Keeping secrets out of logs, errors and configuration dumps.

/// A URL (or any value that may hold one) fit for messages: credentials in
/// it, `scheme://user:password@host…`, become `scheme://(redacted)@host…`.
/// Everything up to the last `@` is taken out, since a password may hold
/// `/`, `?` or `#` unencoded (the URL is then invalid, and the error that
/// says so must not show it). Without a scheme, `user:password@host` is
/// redacted the same way, and a value such as `@timestamp` is left alone.
/// A password in the query (`redis+unix:///run/redis.sock?pass=…`, the only
/// way to give one to a Unix socket), a token or a key is redacted too.
pub fn url(value: &str) -> String {
    let (scheme, rest) = match value.find("://") {
        Some(end) => (&value[..end + 3], &value[end + 3..]),
        None => ("", value),
    };
    // The query first: a password there may hold an `@` too.
    let rest = match rest.split_once('?') {
        Some((head, query)) if !scheme.is_empty() => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_parameter(name) => {
                        format!("{name}=(redacted)")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{head}?{}", pairs.join("&"))
        }
        _ => rest.to_owned(),
    };
    match rest.rfind('@') {
        Some(at) if !scheme.is_empty() || rest[..at].contains(':') => {
            format!("{scheme}(redacted)@{}", &rest[at + 1..])
        }
        _ => format!("{scheme}{rest}"),
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

/// A query parameter that names a credential (`pass`, `access_token`,
/// `api_key`, `X-Amz-Signature`…).
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "token", "secret", "key", "signature", "auth"]
        .iter()
        .any(|word| name.contains(word))
}

impl std::str::FromStr for Secret {
    type Err = String;

    /// Never echoes the value, so clap's errors cannot show it. Only line
    /// breaks at the end are dropped (a Kubernetes secret made from a file
    /// often ends with one); spaces may belong to a password.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim_end_matches(['\r', '\n']);
        if s.trim().is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Secret(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_urls_are_redacted() {
        for (value, shown) in [
            (
                "http://u:secret@localhost:9200/",
                "http://(redacted)@localhost:9200/",
            ),
            ("redis://:pw@cache:6379", "redis://(redacted)@cache:6379"),
            // A password holding `/`, `?` or `#`, or given without a scheme.
            ("http://u:hun/ter2@h:9200/", "http://(redacted)@h:9200/"),
            (
                "rediss://u:p#w?x@cache:6379",
                "rediss://(redacted)@cache:6379",
            ),
            ("u:hunter2@h:9200", "(redacted)@h:9200"),
            // Rather too much than too little: an `@` in a path is taken out too.
            ("http://host:9200/a@b", "http://(redacted)@b"),
            // A Unix socket's password, in the query.
            (
                "redis+unix:///run/r.sock?db=1&pass=hunter2",
                "redis+unix:///run/r.sock?db=1&pass=(redacted)",
            ),
            (
                "redis+unix:///run/r.sock?user=app&PASSWORD=x",
                "redis+unix:///run/r.sock?user=app&PASSWORD=(redacted)",
            ),
            (
                "redis+unix:///run/r.sock?pass=p@ssw0rd&db=2",
                "redis+unix:///run/r.sock?pass=(redacted)&db=2",
            ),
            (
                "https://hec.example/services?token=abc&sourcetype=x&api_key=k",
                "https://hec.example/services?token=(redacted)&sourcetype=x&api_key=(redacted)",
            ),
        ] {
            assert_eq!(super::url(value), shown);
        }
        for plain in ["logs-%Y", "@timestamp", "http://host:9200/", "user@host"] {
            assert_eq!(super::url(plain), plain);
        }
    }

    #[test]
    fn a_secret_keeps_its_spaces_and_loses_a_trailing_line_break() {
        let secret: super::Secret = " pass word \n".parse().unwrap();
        assert_eq!(secret.expose(), " pass word ");
        assert!(" \r\n".parse::<super::Secret>().is_err());
    }
}
