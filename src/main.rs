//! The `switchboard` binary: parses the command line, sets up logging, and maps outcomes to
//! exit codes (0 ok, 1 runtime failure, 2 bad usage or bad config).

use std::process::ExitCode;

use clap::Parser;
use switchboard::cli::{self, Cli, Command, LogFormat};
use switchboard::daemon::{self, DaemonError};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            init_logging(cli.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("cannot start the runtime: {err}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(daemon::run(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(DaemonError::Config(err)) => {
                    eprintln!("{err}");
                    ExitCode::from(2)
                }
                Err(err @ DaemonError::Runtime(_)) => {
                    tracing::error!(error = %err, "switchboard failed");
                    eprintln!("switchboard: {err}");
                    ExitCode::from(1)
                }
            }
        }
        Command::CheckConfig { file } => match cli::load(&file) {
            Ok(loaded) => {
                print!(
                    "{}",
                    cli::summary(&file.display().to_string(), &loaded.config, &loaded.hash)
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::from(2)
            }
        },
        Command::Route(args) => {
            let loaded = match cli::load(&args.config) {
                Ok(loaded) => loaded,
                Err(err) => {
                    eprintln!("{err}");
                    return ExitCode::from(2);
                }
            };
            match cli::route(&loaded.config, &args) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("switchboard route: {err}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Schema { payload } => {
            print!("{}", cli::schema(payload));
            ExitCode::SUCCESS
        }
        Command::Tap(args) => admin_command("tap", async { cli::tap(&args).await.map(|()| None) }),
        Command::Dead { admin, action } => {
            admin_command("dead", async { cli::dead(&admin, &action).await.map(Some) })
        }
        Command::Spool { admin, action } => admin_command("spool", async {
            cli::spool(&admin, &action).await.map(Some)
        }),
    }
}

/// Runs a command that talks to the daemon's admin API; prints its JSON, if any.
fn admin_command(
    name: &str,
    command: impl std::future::Future<Output = Result<Option<serde_json::Value>, String>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(command) {
        Ok(Some(value)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchboard {name}: {err}");
            ExitCode::from(1)
        }
    }
}
