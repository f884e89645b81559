//! `drsink setup`: installs the index template kept in `mappings/` (one for
//! Elasticsearch 8, one for OpenSearch 2/3, chosen from `GET /`) for the
//! indices `--index` and `--fallback-index` name, and optionally a retention
//! policy (ILM on Elasticsearch, ISM on OpenSearch).
//!
//! Idempotent: what is installed is compared with what would be installed,
//! and only a difference is written.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Args;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::cli::{PipelineArgs, SinkKind};
use crate::routing::IndexPattern;
use crate::sink::auth::EsConnection;
use crate::sink::elasticsearch::Elasticsearch;

const ES_TEMPLATE: &str = include_str!("../mappings/elasticsearch.json");
const OPENSEARCH_TEMPLATE: &str = include_str!("../mappings/opensearch.json");

/// Priority of the template: above Elasticsearch 8's built-in `logs-*-*`
/// data-stream template (100), so `logs-app-2026.11.21` stays a plain index.
const PRIORITY: u64 = 200;

#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// Name of the index template (and retention policy) [default: `drsink-` and the
    /// literal part of --index, e.g. `drsink-logs`].
    #[arg(long, env = "DRSINK_TEMPLATE_NAME")]
    pub template_name: Option<String>,
}

#[derive(Args)]
pub struct SetupArgs {
    /// Delete indices this many days after their creation (ILM on Elasticsearch,
    /// ISM on OpenSearch); default: no retention policy.
    #[arg(long, env = "DRSINK_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention_days: Option<u32>,

    #[command(flatten)]
    pub template: TemplateArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Elasticsearch,
    OpenSearch,
}

impl std::fmt::Display for Flavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavour::Elasticsearch => "Elasticsearch",
            Flavour::OpenSearch => "OpenSearch",
        })
    }
}

/// The cluster's flavour and version, from `GET /`.
pub struct Cluster {
    pub flavour: Flavour,
    pub version: String,
}

impl std::fmt::Display for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.flavour, self.version)
    }
}

/// What `--index` and `--fallback-index` become in the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    pub name: String,
    pub patterns: Vec<String>,
}

impl Naming {
    pub fn new(index: &str, fallback: &str, template_name: Option<&str>) -> Result<Naming, String> {
        IndexPattern::new(index, fallback)?;
        let patterns = index_patterns(index, fallback)?;
        let name = match template_name {
            Some(name) => {
                if name.is_empty()
                    || name.starts_with(['_', '-', '+'])
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
                {
                    return Err(format!(
                        "--template-name `{name}` must be lowercase letters, digits, `-`, `_` or `.`, not starting with `_`, `-` or `+`"
                    ));
                }
                name.to_owned()
            }
            None => default_template_name(&patterns[0]),
        };
        Ok(Naming { name, patterns })
    }
}

/// The index pattern of the names `--index` produces: the specifiers (and
/// whatever lies between them) become one `*`, e.g. `logs-%Y.%m.%d` →
/// `logs-*`; the fallback index is added unless the pattern covers it.
pub fn index_patterns(index: &str, fallback: &str) -> Result<Vec<String>, String> {
    let mut first = None;
    let mut last_end = 0;
    let mut at = 0;
    while let Some(found) = index[at..].find('%') {
        let start = at + found;
        let end = index[start + 1..]
            .chars()
            .next()
            .map_or(index.len(), |c| start + 1 + c.len_utf8());
        first.get_or_insert(start);
        last_end = end;
        at = end;
    }
    let pattern = match first {
        None => index.to_owned(),
        Some(first) => format!("{}*{}", &index[..first], &index[last_end..]),
    };
    if pattern.trim_matches('*').is_empty() {
        return Err(format!(
            "--index `{index}` has no literal text, so its indices cannot be told from others; give it a prefix such as `logs-{index}`"
        ));
    }
    let mut patterns = vec![pattern];
    if !glob_matches(&patterns[0], fallback) {
        patterns.push(fallback.to_owned());
    }
    Ok(patterns)
}

/// `*`-only glob matching, as index patterns use it.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

fn default_template_name(pattern: &str) -> String {
    let mut name = String::from("drsink");
    for piece in pattern
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .filter(|p| !p.is_empty())
    {
        name.push('-');
        name.push_str(piece);
    }
    name
}

/// The template this drsink installs for `naming` on `flavour`.
pub fn desired_template(
    flavour: Flavour,
    naming: &Naming,
    timestamp_field: &str,
    lifecycle: Option<&str>,
) -> Result<Value, String> {
    let (file, text) = match flavour {
        Flavour::Elasticsearch => ("mappings/elasticsearch.json", ES_TEMPLATE),
        Flavour::OpenSearch => ("mappings/opensearch.json", OPENSEARCH_TEMPLATE),
    };
    let mut template: Value =
        serde_json::from_str(text).map_err(|e| format!("{file} is not valid JSON: {e}"))?;
    let broken = || format!("{file} lacks template.settings.index or template.mappings.properties");
    template["index_patterns"] = json!(naming.patterns);
    template["priority"] = json!(PRIORITY);
    if timestamp_field != "@timestamp" {
        // A dotted name (`event.created`) is an object path to the cluster.
        let mut properties = template
            .pointer_mut("/template/mappings/properties")
            .and_then(Value::as_object_mut)
            .ok_or_else(broken)?;
        let not_a_path = |why: &str| format!("--timestamp-field {timestamp_field}: {why}");
        let mut path = timestamp_field.split('.').peekable();
        while let Some(name) = path.next() {
            if name.is_empty() {
                return Err(not_a_path("a dotted name has an empty part"));
            }
            if path.peek().is_none() {
                properties.insert(name.to_owned(), json!({ "type": "date" }));
                break;
            }
            let object = properties
                .entry(name)
                .or_insert_with(|| json!({ "properties": {} }));
            properties = object
                .as_object_mut()
                .filter(|o| o.get("type").is_none_or(|t| t == "object"))
                .and_then(|o| {
                    o.entry("properties")
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                })
                .ok_or_else(|| not_a_path(&format!("`{name}` is not an object in {file}")))?;
        }
    }
    if let Some(policy) = lifecycle {
        template
            .pointer_mut("/template/settings/index")
            .and_then(Value::as_object_mut)
            .ok_or_else(broken)?
            .insert("lifecycle".to_owned(), json!({ "name": policy }));
    }
    Ok(template)
}

/// Whether `installed` already is `desired`: settings must be equal (the
/// server returns them as strings, nested or dotted), everything else must
/// be there with the same values (servers add defaults of their own).
pub fn template_matches(installed: &Value, desired: &Value) -> bool {
    let settings = |v: &Value| flat_settings(v.pointer("/template/settings"));
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(t) = v.get_mut("template").and_then(Value::as_object_mut) {
            t.remove("settings");
        }
        v
    };
    settings(installed) == settings(desired) && covers(&strip(installed), &strip(desired))
}

fn flat_settings(settings: Option<&Value>) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                let key = if prefix.starts_with("index.") {
                    prefix.to_owned()
                } else {
                    format!("index.{prefix}")
                };
                out.insert(key, scalar_text(other));
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Some(settings) = settings {
        walk("", settings, &mut out);
    }
    out
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every key of `desired` is in `installed` with an equal value; arrays
/// must have the same length; scalars compare as text ("1" = 1).
pub fn covers(installed: &Value, desired: &Value) -> bool {
    match (installed, desired) {
        (Value::Object(i), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| i.get(k).is_some_and(|iv| covers(iv, dv))),
        (Value::Array(i), Value::Array(d)) => {
            i.len() == d.len() && i.iter().zip(d).all(|(iv, dv)| covers(iv, dv))
        }
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => false,
        (i, d) => i == d || scalar_text(i) == scalar_text(d),
    }
}

/// What to check when the cluster does not answer `GET /` with its version
/// (a 401 or 403 is as likely as a wrong URL).
pub const REACH_ADVICE: &str =
    "check --es-url, the network path to the cluster and the credentials";

/// `GET /`: Elasticsearch or OpenSearch, and which version. OpenSearch
/// Serverless has no `GET /` (and no versions).
pub async fn detect(es: &Elasticsearch) -> Result<Cluster, String> {
    if es.is_serverless() {
        return Ok(Cluster {
            flavour: Flavour::OpenSearch,
            version: "Serverless".to_owned(),
        });
    }
    let (status, body) = es.admin(Method::GET, "", &[], None).await?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "{} answered HTTP {status} to GET /{}",
            es.display_url(),
            error_reason(&body)
        ));
    }
    let version = body.get("version").unwrap_or(&Value::Null);
    let number = version
        .get("number")
        .and_then(Value::as_str)
        .unwrap_or("(unknown version)")
        .to_owned();
    let flavour = match version.get("distribution").and_then(Value::as_str) {
        Some("opensearch") => Flavour::OpenSearch,
        _ => Flavour::Elasticsearch,
    };
    Ok(Cluster {
        flavour,
        version: number,
    })
}

/// `: reason` from an error body, or nothing.
pub fn error_reason(body: &Value) -> String {
    let reason = match body.get("error") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(e) => e
            .get("reason")
            .or_else(|| e.pointer("/root_cause/0/reason"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        None => None,
    };
    reason.map_or_else(String::new, |r| format!(": {r}"))
}

/// `GET _index_template/NAME`: the installed template, if any.
pub async fn installed_template(es: &Elasticsearch, name: &str) -> Result<Option<Value>, String> {
    let path = format!("_index_template/{name}");
    let (status, body) = es.admin(Method::GET, &path, &[], None).await?;
    match status {
        200..=299 => Ok(body
            .get("index_templates")
            .and_then(Value::as_array)
            .and_then(|all| {
                all.iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
            })
            .and_then(|t| t.get("index_template"))
            .cloned()),
        404 => Ok(None),
        _ => Err(format!(
            "{} answered HTTP {status} to GET /{path}{}",
            es.display_url(),
            error_reason(&body)
        )),
    }
}

/// The sink of `args` as Elasticsearch/OpenSearch, with its credentials
/// (for setup and check).
pub fn cluster_client(
    args: &PipelineArgs,
    aws: &aws_config::SdkConfig,
) -> anyhow::Result<Elasticsearch> {
    let indices =
        IndexPattern::new(&args.index, &args.fallback_index).map_err(anyhow::Error::msg)?;
    let connection = EsConnection::from_args(&args.es_auth, aws).map_err(anyhow::Error::msg)?;
    Elasticsearch::with_connection(
        &args.es_url,
        args.es_action,
        args.es_timeout,
        indices,
        connection,
    )
    .map_err(anyhow::Error::msg)
}

enum Retention {
    /// Installed (or already there) under this name.
    Policy(String),
    /// The cluster has no ILM/ISM API.
    Unsupported,
}

pub async fn run(args: SetupArgs, aws: &aws_config::SdkConfig) -> anyhow::Result<()> {
    if args.pipeline.sink != SinkKind::Elasticsearch {
        println!(
            "setup: nothing to install for --sink splunk-hec (Splunk indexes are configured in Splunk)"
        );
        return Ok(());
    }
    let naming = Naming::new(
        &args.pipeline.index,
        &args.pipeline.fallback_index,
        args.template.template_name.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let es = cluster_client(&args.pipeline, aws)?;
    let cluster = detect(&es)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the cluster: {e}; {REACH_ADVICE}"))?;
    println!("cluster: {} is {cluster}", es.display_url());
    let mut changes = 0;

    let lifecycle = match args.retention_days {
        None => None,
        Some(days) => {
            match install_retention(&es, cluster.flavour, &naming, days, &mut changes).await? {
                Retention::Policy(name) => Some(name),
                Retention::Unsupported => None,
            }
        }
    };
    // ISM attaches its policy through the policy's own `ism_template`.
    let setting = lifecycle
        .as_deref()
        .filter(|_| cluster.flavour == Flavour::Elasticsearch);
    let desired = desired_template(
        cluster.flavour,
        &naming,
        &args.pipeline.timestamp_field,
        setting,
    )
    .map_err(anyhow::Error::msg)?;
    let patterns = naming.patterns.join(", ");
    match installed_template(&es, &naming.name)
        .await
        .map_err(anyhow::Error::msg)?
    {
        Some(installed) if template_matches(&installed, &desired) => {
            println!(
                "template: {} is up to date (index patterns {patterns})",
                naming.name
            );
        }
        existing => {
            let path = format!("_index_template/{}", naming.name);
            let (status, body) = es
                .admin(Method::PUT, &path, &[], Some(&desired))
                .await
                .map_err(anyhow::Error::msg)?;
            if !(200..300).contains(&status) {
                bail!(
                    "{} refused index template {} (HTTP {status}{})",
                    es.display_url(),
                    naming.name,
                    error_reason(&body)
                );
            }
            changes += 1;
            println!(
                "template: {} {} (index patterns {patterns}; applies to indices created from now on)",
                naming.name,
                if existing.is_some() {
                    "updated"
                } else {
                    "created"
                }
            );
        }
    }
    if changes == 0 {
        println!("setup: no change; everything was already in place");
    } else {
        println!("setup: done, {changes} change(s)");
    }
    Ok(())
}

/// Whether an answer means "this API does not exist here" rather than
/// "this policy does not exist" or "you may not ask" (a 403 of an IAM
/// policy, a proxy's 502 page), which must not pass for success.
fn api_missing(status: u16, body: &Value) -> bool {
    match status {
        // A missing policy is a 404 with an error object.
        404 => body.get("error").is_none_or(|e| !e.is_object()) || no_handler(body),
        400 | 405 | 501 => no_handler(body),
        _ => false,
    }
}

/// Elasticsearch's and OpenSearch's answer to a path they have no API for.
fn no_handler(body: &Value) -> bool {
    error_reason(body).contains("no handler found")
}

async fn install_retention(
    es: &Elasticsearch,
    flavour: Flavour,
    naming: &Naming,
    days: u32,
    changes: &mut usize,
) -> anyhow::Result<Retention> {
    let name = &naming.name;
    let (api, path) = match flavour {
        Flavour::Elasticsearch => ("ILM", format!("_ilm/policy/{name}")),
        Flavour::OpenSearch => ("ISM", format!("_plugins/_ism/policies/{name}")),
    };
    let (status, body) = es
        .admin(Method::GET, &path, &[], None)
        .await
        .map_err(anyhow::Error::msg)?;
    if api_missing(status, &body) {
        println!(
            "retention: not supported by this cluster (GET /{path} answered HTTP {status}{}): no {api} policy installed; delete old indices another way",
            error_reason(&body)
        );
        return Ok(Retention::Unsupported);
    }
    let desired = retention_policy(flavour, naming, days);
    let installed = match (status, flavour) {
        (200..=299, Flavour::Elasticsearch) => {
            body.get(name.as_str()).and_then(|p| p.get("policy"))
        }
        (200..=299, Flavour::OpenSearch) => body.get("policy"),
        (404, _) => None,
        _ => bail!(
            "{} answered HTTP {status} to GET /{path}{}",
            es.display_url(),
            error_reason(&body)
        ),
    };
    if let Some(installed) = installed {
        if covers(installed, &desired["policy"]) {
            println!("retention: {api} policy {name} is up to date (delete after {days} days)");
            return Ok(Retention::Policy(name.clone()));
        }
    }
    // ISM refuses to overwrite a policy without its sequence number.
    let mut query = Vec::new();
    let (seq_no, primary_term);
    if flavour == Flavour::OpenSearch && installed.is_some() {
        seq_no = body.get("_seq_no").map(scalar_text).unwrap_or_default();
        primary_term = body
            .get("_primary_term")
            .map(scalar_text)
            .unwrap_or_default();
        query.push(("if_seq_no", seq_no.as_str()));
        query.push(("if_primary_term", primary_term.as_str()));
    }
    let (status, answer) = es
        .admin(Method::PUT, &path, &query, Some(&desired))
        .await
        .map_err(anyhow::Error::msg)?;
    if !(200..300).contains(&status) {
        bail!(
            "{} refused {api} policy {name} (HTTP {status}{})",
            es.display_url(),
            error_reason(&answer)
        );
    }
    *changes += 1;
    println!(
        "retention: {api} policy {name} {} (delete indices {days} days after their creation)",
        if installed.is_some() {
            "updated"
        } else {
            "created"
        }
    );
    Ok(Retention::Policy(name.clone()))
}

/// The retention policy: keep an index `days` days after its creation, then
/// delete it.
pub fn retention_policy(flavour: Flavour, naming: &Naming, days: u32) -> Value {
    let age = format!("{days}d");
    match flavour {
        Flavour::Elasticsearch => json!({
            "policy": {
                "_meta": { "managed_by": "drsink" },
                "phases": {
                    "hot": { "min_age": "0ms", "actions": {} },
                    "delete": { "min_age": age, "actions": { "delete": {} } }
                }
            }
        }),
        Flavour::OpenSearch => {
            let mut policy = Map::new();
            policy.insert(
                "description".into(),
                json!(format!(
                    "drsink: delete indices {days} days after their creation"
                )),
            );
            policy.insert("default_state".into(), json!("hot"));
            policy.insert(
                "states".into(),
                json!([
                    {
                        "name": "hot",
                        "actions": [],
                        "transitions": [
                            { "state_name": "delete", "conditions": { "min_index_age": age } }
                        ]
                    },
                    { "name": "delete", "actions": [ { "delete": {} } ], "transitions": [] }
                ]),
            );
            policy.insert(
                "ism_template".into(),
                json!([{ "index_patterns": naming.patterns, "priority": PRIORITY }]),
            );
            json!({ "policy": policy })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_api_passes_for_unsupported_retention() {
        let no_handler =
            json!({"error": "no handler found for uri [/_ilm/policy/x] and method [GET]"});
        assert!(api_missing(400, &no_handler));
        assert!(api_missing(404, &Value::Null));
        // A policy not there yet is not a missing API.
        let not_found = json!({"error": {"type": "resource_not_found_exception", "reason": "policy [x] does not exist"}, "status": 404});
        assert!(!api_missing(404, &not_found));
        // Refusals and outages must not pass for "not supported".
        let denied = json!({"Message": "User: arn:aws:iam::1:role/r is not authorized to perform: es:ESHttpGet"});
        assert!(!api_missing(403, &denied));
        assert!(!api_missing(401, &Value::Null));
        assert!(!api_missing(502, &Value::Null));
        assert!(!api_missing(429, &json!({"error": "too many requests"})));
        assert!(!api_missing(500, &no_handler));
    }

    #[test]
    fn patterns_from_index() {
        assert_eq!(
            index_patterns("logs-%Y.%m.%d", "logs-undated").unwrap(),
            ["logs-*"]
        );
        assert_eq!(
            index_patterns("logs-%Y.%m.%d", "undated").unwrap(),
            ["logs-*", "undated"]
        );
        assert_eq!(
            index_patterns("app-%Y.%m-eu-%d.x", "app-none").unwrap(),
            ["app-*.x", "app-none"]
        );
        assert_eq!(index_patterns("%Y-logs", "x").unwrap(), ["*-logs", "x"]);
        assert_eq!(index_patterns("static", "static").unwrap(), ["static"]);
        assert!(index_patterns("%Y.%m.%d", "x").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_matches("logs-*", "logs-undated"));
        assert!(glob_matches("*-logs", "eu-logs"));
        assert!(glob_matches("a*b*c", "a-b-c"));
        assert!(!glob_matches("a*b*c", "a-c"));
        assert!(!glob_matches("logs-*", "log"));
        assert!(glob_matches("x", "x"));
    }

    #[test]
    fn naming() {
        let n = Naming::new("logs-%Y.%m.%d", "logs-undated", None).unwrap();
        assert_eq!(n.name, "drsink-logs");
        let n = Naming::new("my.app-%Y", "fallback", None).unwrap();
        assert_eq!(n.name, "drsink-my-app");
        assert_eq!(n.patterns, ["my.app-*", "fallback"]);
        assert!(Naming::new("logs-%Y", "x", Some("_bad")).is_err());
        assert!(Naming::new("logs-%Y", "x", Some("Upper")).is_err());
    }

    #[test]
    fn templates_compare_like_servers_return_them() {
        let naming = Naming::new("logs-%Y.%m.%d", "undated", None).unwrap();
        for flavour in [Flavour::Elasticsearch, Flavour::OpenSearch] {
            let desired = desired_template(flavour, &naming, "ts", None).unwrap();
            assert_eq!(desired["index_patterns"], json!(["logs-*", "undated"]));
            assert_eq!(
                desired.pointer("/template/mappings/properties/ts"),
                Some(&json!({"type": "date"}))
            );
            let mut installed = desired.clone();
            installed["composed_of"] = json!([]);
            installed["template"]["settings"] = json!({"index": {
                "number_of_shards": "1", "refresh_interval": "5s", "codec": "best_compression",
                "mapping": {"ignore_malformed": "true", "total_fields": {"limit": "2000"}}}});
            assert!(template_matches(&installed, &desired));
            let with_policy = desired_template(flavour, &naming, "ts", Some("p")).unwrap();
            assert!(!template_matches(&installed, &with_policy));
            installed["index_patterns"] = json!(["logs-*"]);
            assert!(!template_matches(&installed, &desired));
        }
    }

    #[test]
    fn a_dotted_timestamp_field_is_mapped_as_an_object_path() {
        let naming = Naming::new("logs-%Y.%m.%d", "undated", None).unwrap();
        for flavour in [Flavour::Elasticsearch, Flavour::OpenSearch] {
            let desired = desired_template(flavour, &naming, "event.created", None).unwrap();
            assert_eq!(
                desired.pointer("/template/mappings/properties/event/properties/created"),
                Some(&json!({"type": "date"}))
            );
            // Beside what the template maps under the same object.
            let desired = desired_template(flavour, &naming, "drsink.seen", None).unwrap();
            let drsink = desired.pointer("/template/mappings/properties/drsink/properties");
            assert_eq!(drsink.unwrap()["seen"], json!({"type": "date"}));
            assert_eq!(drsink.unwrap()["line"]["type"], "long");
            for bad in ["message.time", "event..created", "event."] {
                assert!(
                    desired_template(flavour, &naming, bad, None).is_err(),
                    "{bad}"
                );
            }
        }
    }

    #[test]
    fn policies_compare_with_server_defaults() {
        let naming = Naming::new("logs-%Y", "x", None).unwrap();
        let desired = retention_policy(Flavour::Elasticsearch, &naming, 30);
        let mut installed = desired["policy"].clone();
        installed["phases"]["delete"]["actions"]["delete"] =
            json!({"delete_searchable_snapshot": true});
        assert!(covers(&installed, &desired["policy"]));
        let other = retention_policy(Flavour::Elasticsearch, &naming, 7);
        assert!(!covers(&installed, &other["policy"]));
    }
}
