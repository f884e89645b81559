//! Configuration file (`--config FILE` or `DRSINK_CONFIG`): flat TOML whose
//! keys are the long flag names in snake_case (`queue_url = "…"`).
//!
//! Precedence is flags > environment > file > defaults. Before clap parses,
//! the file is read and checked, and each value is exported as the option's
//! environment variable unless that variable is already set; clap then does
//! the rest. `drsink config COMMAND [FLAGS]` prints the effective
//! configuration and where each value came from, with secrets redacted.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::parser::ValueSource;
use clap::{ArgAction, Args, CommandFactory};

use crate::cli::Cli;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "DRSINK_CONFIG";

#[derive(Args)]
pub struct ConfigArgs {
    /// The command and flags whose effective configuration to print, e.g. `worker --es-url …`.
    #[arg(
        value_name = "COMMAND [FLAGS]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<OsString>,
}

/// What was taken from the configuration file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub path: PathBuf,
    /// Environment variable → (key, value) set from the file.
    pub exported: BTreeMap<String, (String, String)>,
    /// Keys the file sets that were already set in the environment.
    pub overridden: BTreeSet<String>,
    /// Keys of other commands' options, which this command ignores.
    pub ignored: Vec<String>,
}

static LOADED: OnceLock<Option<Loaded>> = OnceLock::new();

/// Reads the configuration file named by `--config` in `argv` or by
/// `DRSINK_CONFIG`, rejects unknown keys and invalid values, and exports the
/// rest as environment variables. Call before anything else runs (it sets
/// process environment variables).
pub fn load(argv: &[OsString]) -> Result<(), String> {
    let path = config_path(argv).or_else(|| {
        std::env::var_os(CONFIG_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    let loaded = match path {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!("cannot read the configuration file {}: {e}", path.display())
            })?;
            let command = subcommand(argv);
            let entries = to_env(&path, &text, command.as_deref())?;
            let mut loaded = Loaded {
                path,
                ignored: entries.ignored,
                ..Loaded::default()
            };
            for (var, key, value) in entries.values {
                if std::env::var_os(&var).is_some() {
                    loaded.overridden.insert(key);
                } else {
                    std::env::set_var(&var, &value);
                    loaded.exported.insert(var, (key, value));
                }
            }
            Some(loaded)
        }
    };
    let _ = LOADED.set(loaded);
    Ok(())
}

/// The value of `--config FILE` / `--config=FILE` (before a `--`).
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            return None;
        }
        if text == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// The command whose options the file must fit: the first argument naming a
/// command (after `config`, the command named after it).
fn subcommand(argv: &[OsString]) -> Option<String> {
    let cli = Cli::command();
    let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
    let mut found = argv
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .filter(|a| names.contains(a));
    match found.next() {
        Some("config") => found.next().map(str::to_owned),
        other => other.map(str::to_owned),
    }
}

/// The file's values as (environment variable, key, value).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entries {
    pub values: Vec<(String, String, String)>,
    pub ignored: Vec<String>,
}

/// Checks the file's keys and values against the options of `command` (or
/// of any command when none is known) and maps them to environment variables.
pub fn to_env(path: &Path, text: &str, command: Option<&str>) -> Result<Entries, String> {
    let file = path.display();
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // Where, but not the line itself: it may hold a secret.
        let at = e.span().map_or(String::new(), |span| {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        format!(
            "configuration file {file} is not valid TOML{at}: {}",
            e.message()
        )
    })?;
    let mut cli = Cli::command();
    cli.build();
    let target = command.and_then(|name| cli.find_subcommand(name));
    let mut entries = Entries::default();
    for (key, value) in &table {
        if key.contains('-') {
            return Err(format!(
                "configuration file {file}: unknown key `{key}`: keys are snake_case: write `{}`",
                key.replace('-', "_")
            ));
        }
        if key == "config" {
            return Err(format!(
                "configuration file {file}: unknown key `config`: the file cannot name another configuration file"
            ));
        }
        let flag = key.replace('_', "-");
        let find = |cmd: &clap::Command| {
            cmd.get_arguments()
                .find(|a| a.get_long() == Some(flag.as_str()) && !a.is_hide_set())
                .cloned()
        };
        let arg = match target {
            Some(cmd) => find(cmd),
            None => cli.get_subcommands().find_map(find),
        };
        let Some(arg) = arg else {
            if cli.get_subcommands().any(|c| find(c).is_some()) {
                entries.ignored.push(key.clone());
                continue;
            }
            return Err(format!(
                "configuration file {file}: unknown key `{key}`: not an option of any drsink command"
            ));
        };
        let Some(var) = arg.get_env().and_then(OsStr::to_str) else {
            return Err(format!(
                "configuration file {file}: key `{key}` cannot be set from a file"
            ));
        };
        let bad = |why: String| format!("configuration file {file}: key `{key}`: {why}");
        let takes_value = arg.get_action().takes_values();
        let text = match value {
            toml::Value::Boolean(b) => b.to_string(),
            _ if !takes_value => {
                return Err(bad(format!(
                    "expected true or false, not {}",
                    value.type_str()
                )))
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Array(items) => {
                if arg.get_value_delimiter() != Some(',') {
                    return Err(bad("takes one value, not a list".to_owned()));
                }
                // As if the key were left out (an empty value would be a
                // list of one empty item).
                if items.is_empty() {
                    continue;
                }
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    let part = match item {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Float(f) => f.to_string(),
                        other => {
                            return Err(bad(format!(
                                "list items must be strings or numbers, not {}",
                                other.type_str()
                            )))
                        }
                    };
                    if part.contains(',') {
                        return Err(bad(format!("list item `{part}` must not contain a comma")));
                    }
                    parts.push(part);
                }
                parts.join(",")
            }
            toml::Value::Table(_) => {
                return Err(bad(
                    "tables are not allowed: the file is flat, one key per option".to_owned(),
                ))
            }
        };
        if takes_value {
            // The option's own parser, alone (not its relations to others).
            let mut probe = clap::Arg::new("value")
                .long("value")
                .allow_hyphen_values(true)
                .value_parser(arg.get_value_parser().clone());
            if let Some(delimiter) = arg.get_value_delimiter() {
                probe = probe.value_delimiter(delimiter);
            }
            let checked = clap::Command::new("drsink")
                .arg(probe)
                .try_get_matches_from(["drsink".to_owned(), format!("--value={text}")]);
            if let Err(e) = checked {
                let reason = if is_secret(key) {
                    "invalid value (not shown: it is a secret)".to_owned()
                } else {
                    clap_reason(&e).replace("'--value <value>'", &format!("--{flag}"))
                };
                return Err(bad(reason));
            }
        }
        entries.values.push((var.to_owned(), key.clone(), text));
    }
    Ok(entries)
}

/// A clap error as one line, without its `error: ` and usage.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    text.lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether an option holds a secret (its value is never printed).
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    if key.ends_with("_file") || key.ends_with("_path") {
        return false;
    }
    [
        "token",
        "password",
        "secret",
        "api_key",
        "apikey",
        "credential",
        "private_key",
        "external_id",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// A value fit for printing: secrets hidden, credentials taken out of URLs.
pub fn redact(key: &str, value: &str) -> String {
    if is_secret(key) {
        return if value.is_empty() {
            String::new()
        } else {
            "(redacted)".to_owned()
        };
    }
    // Whole: a password may hold a comma.
    crate::redact::url(value)
}

/// `drsink config COMMAND [FLAGS]`: the effective configuration of that
/// command, one `key = "value"  # source` line per option (TOML, so it can
/// seed a configuration file).
pub fn print(args: &ConfigArgs) -> anyhow::Result<()> {
    let mut argv: Vec<OsString> = vec!["drsink".into()];
    argv.extend(args.args.iter().cloned());
    let name = argv[1].to_string_lossy().into_owned();
    if name == "config" {
        anyhow::bail!("`drsink config` takes a command to describe, e.g. `drsink config worker`");
    }
    let mut cli = Cli::command();
    cli.build();
    let matches = cli
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|e| anyhow::anyhow!("drsink config {name}: {}", clap_reason(&e)))?;
    let (Some(sub), Some(sub_matches)) = (
        cli.find_subcommand(&name),
        matches.subcommand_matches(&name),
    ) else {
        anyhow::bail!("`{name}` is not a drsink command");
    };
    let loaded = LOADED.get().cloned().flatten();
    let from_file: BTreeMap<String, String> = loaded
        .iter()
        .flat_map(|l| {
            l.exported
                .iter()
                .map(|(var, (key, _))| (var.clone(), key.clone()))
        })
        .collect();
    let mut out = String::new();
    match &loaded {
        Some(l) => out.push_str(&format!(
            "# drsink {name}: effective configuration (file {})\n",
            l.path.display()
        )),
        None => out.push_str(&format!(
            "# drsink {name}: effective configuration (no configuration file)\n"
        )),
    }
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if matches!(id, "help" | "version" | "config") || arg.is_hide_set() {
            continue;
        }
        let key = long.replace('-', "_");
        let source = match sub_matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => match arg.get_env().and_then(OsStr::to_str) {
                Some(var) if from_file.contains_key(var) => "file",
                _ => "env",
            },
            Some(ValueSource::DefaultValue) => "default",
            _ => "",
        };
        let raw: Vec<String> = sub_matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let line = if flag {
            let on = sub_matches.get_flag(id);
            let source = if source.is_empty() { "default" } else { source };
            format!("{key} = {on}  # {source}")
        } else if source.is_empty() || raw.is_empty() {
            format!("# {key} = (unset)")
        } else {
            let value = raw
                .iter()
                .map(|one| redact(&key, one))
                .collect::<Vec<_>>()
                .join(",");
            format!("{key} = {}  # {source}", toml_string(&value))
        };
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(l) = &loaded {
        if !l.ignored.is_empty() {
            out.push_str(&format!(
                "# ignored (options of other commands): {}\n",
                l.ignored.join(", ")
            ));
        }
    }
    // A closed pipe (`drsink config worker | head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    Ok(())
}

fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str, command: Option<&str>) -> Result<Entries, String> {
        to_env(Path::new("drsink.toml"), text, command)
    }

    #[test]
    fn file_values_become_environment_variables() {
        let entries = env(
            r#"
queue_url = "https://sqs.example/1/q"
concurrency = 8
exit_when_idle = true
id_fields = ["host", "msg"]
bucket = "archive"
"#,
            Some("worker"),
        )
        .unwrap();
        assert_eq!(
            entries.values,
            [
                (
                    "DRSINK_CONCURRENCY".into(),
                    "concurrency".into(),
                    "8".into()
                ),
                (
                    "DRSINK_EXIT_WHEN_IDLE".into(),
                    "exit_when_idle".into(),
                    "true".into()
                ),
                (
                    "DRSINK_ID_FIELDS".into(),
                    "id_fields".into(),
                    "host,msg".into()
                ),
                (
                    "DRSINK_QUEUE_URL".into(),
                    "queue_url".into(),
                    "https://sqs.example/1/q".into()
                ),
            ]
        );
        assert_eq!(entries.ignored, ["bucket"]);
        // An empty list is as if the key were left out.
        let entries = env("id_fields = []\nprefix = []\n", Some("backfill")).unwrap();
        assert!(entries.values.is_empty(), "{:?}", entries.values);
        // Options named differently from their variable use the variable clap reads.
        let entries = env("from = \"dl\"\n", Some("redrive")).unwrap();
        assert_eq!(entries.values[0].0, "DRSINK_REDRIVE_FROM");
    }

    #[test]
    fn bad_files_are_rejected_with_key_and_reason() {
        let err = env("queue_ur = \"x\"", Some("worker")).unwrap_err();
        assert!(
            err.contains("drsink.toml") && err.contains("`queue_ur`"),
            "{err}"
        );
        let err = env("queue-url = \"x\"", Some("worker")).unwrap_err();
        assert!(err.contains("snake_case"), "{err}");
        let err = env("concurrency = 0", Some("worker")).unwrap_err();
        assert!(err.contains("`concurrency`"), "{err}");
        let err = env("exit_when_idle = \"yes\"", Some("worker")).unwrap_err();
        assert!(err.contains("true or false"), "{err}");
        let err = env("es_url = [\"a\", \"b\"]", Some("worker")).unwrap_err();
        assert!(err.contains("one value"), "{err}");
        let err = env("[worker]\nqueue_url = \"x\"", Some("worker")).unwrap_err();
        assert!(err.contains("unknown key `worker`"), "{err}");
        let err = env("es_url = {a = 1}", Some("worker")).unwrap_err();
        assert!(err.contains("tables are not allowed"), "{err}");
        let err = env("config = \"other.toml\"", Some("worker")).unwrap_err();
        assert!(
            err.contains("cannot name another configuration file"),
            "{err}"
        );
        let err = env("id_fields = [\"host\", \" \"]", Some("worker")).unwrap_err();
        assert!(
            err.contains("`id_fields`") && err.contains("a field name cannot be empty"),
            "{err}"
        );
        let err = env("queue_url = ", Some("worker")).unwrap_err();
        assert!(err.contains("not valid TOML"), "{err}");
        // Where it broke, never the line itself (it may hold a secret).
        let err = env("queue_url = \"q\"\nes_password = \"hunter2", Some("worker")).unwrap_err();
        assert!(err.contains("not valid TOML at line 2, column "), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn finds_the_file_and_the_command() {
        let argv = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&argv(&["drsink", "worker", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path(&argv(&["drsink", "--config=b.toml", "worker"])),
            Some(PathBuf::from("b.toml"))
        );
        assert_eq!(
            config_path(&argv(&["drsink", "worker", "--", "--config"])),
            None
        );
        assert_eq!(
            subcommand(&argv(&["drsink", "config", "backfill"])).as_deref(),
            Some("backfill")
        );
        assert_eq!(
            subcommand(&argv(&["drsink", "--config", "x", "check"])).as_deref(),
            Some("check")
        );
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("hec_token", "abc"), "(redacted)");
        assert_eq!(redact("es_api_key", "abc"), "(redacted)");
        assert_eq!(redact("es_password", "abc"), "(redacted)");
        assert_eq!(redact("hec_token_file", "/run/token"), "/run/token");
        assert_eq!(
            redact("es_url", "https://elastic:s3cret@search:9200/x"),
            "https://(redacted)@search:9200/x"
        );
        assert_eq!(
            redact("dedup_ledger", "redis://:pw@cache:6379"),
            "redis://(redacted)@cache:6379"
        );
        assert_eq!(redact("es_url", "http://host:9200"), "http://host:9200");
        assert_eq!(
            redact("es_url", "https://elastic:pa,ss@search:9200"),
            "https://(redacted)@search:9200"
        );
        assert_eq!(redact("index", "logs-%Y"), "logs-%Y");
    }
}
