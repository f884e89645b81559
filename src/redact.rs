//! Keeping secrets out of logs, errors and configuration dumps.

/// A URL fit for messages: its user name and password removed.
pub fn url(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
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

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            super::url("http://u:secret@localhost:9200/"),
            "http://localhost:9200/"
        );
        assert_eq!(super::url("redis://:pw@cache:6379"), "redis://cache:6379");
        assert_eq!(super::url("not a url"), "(unparsable URL)");
    }
}
