use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use drsink::cli::{Cli, Command, LogFormat};
use drsink::shutdown::Shutdown;
use drsink::stats::Stats;

fn main() -> ExitCode {
    // The configuration file becomes environment variables before clap reads
    // them (flags > environment > file > defaults).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = drsink::config::load(&argv) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse_from(argv);
    let log_format = cli.log_format;
    init_logging(log_format);
    // Only the commands that move records end with the JSON summary.
    let summary = matches!(
        cli.command,
        Command::Worker(_) | Command::Backfill(_) | Command::Redrive(_)
    );
    let is_backfill = matches!(cli.command, Command::Backfill(_));

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stats = Arc::new(Stats::default());
    let shutdown = Shutdown::default();
    let result = runtime.block_on(async {
        tokio::spawn(watch_signals(shutdown.clone(), Arc::clone(&stats)));
        drsink::app::run(cli.command, Arc::clone(&stats), shutdown).await
    });
    // A decoding thread that was given up on (the shutdown timeout) stops at
    // its next batch; the exit does not wait long for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if summary {
        print_summary(&stats);
    }
    match result {
        Ok(()) if stats.summary().failed == 0 => ExitCode::SUCCESS,
        Ok(()) => {
            report(
                log_format,
                match is_backfill {
                    true => "some objects could not be replayed; a rerun retries them (see the log above)",
                    false => "some messages could not be processed; they stay queued (see the log above)",
                },
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            report(log_format, &format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The final error: a plain `error: …` line, or a JSON log event with
/// `--log-format json` so that collectors parse every line.
fn report(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {message}"),
        LogFormat::Json => tracing::error!("{message}"),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRSINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn print_summary(stats: &Stats) {
    let mut out = std::io::stdout().lock();
    if let Ok(line) = serde_json::to_string(&stats.summary()) {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// First SIGTERM/SIGINT: stop receiving and drain. Second: exit at once,
/// deleting nothing more.
async fn watch_signals(shutdown: Shutdown, stats: Arc<Stats>) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                return;
            }
        };
    for signal_number in 1.. {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        if signal_number == 1 {
            tracing::info!(
                "shutting down: finishing in-flight work (signal again to exit at once)"
            );
            shutdown.stop.cancel();
        } else {
            tracing::warn!("second signal: exiting now; unacknowledged messages stay queued");
            print_summary(&stats);
            std::process::exit(130);
        }
    }
}
