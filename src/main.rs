use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use drsink::cli::Cli;
use drsink::stats::Stats;
use drsink::worker::Shutdown;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DRSINK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

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
    print_summary(&stats);
    match result {
        Ok(()) if stats.summary().failed == 0 => ExitCode::SUCCESS,
        Ok(()) => {
            eprintln!(
                "error: some messages could not be processed; they stay queued (see the log above)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
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
