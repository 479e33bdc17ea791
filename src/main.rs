//! `pod-identity-webhook`: thin entry point; everything lives in the library.

use anyhow::Context;
use clap::Parser;
use pod_identity_webhook::audit::{self, cli::CheckArgs};
use pod_identity_webhook::cli::{CertsArgs, Cli, Command};
use pod_identity_webhook::server::tls;
use pod_identity_webhook::telemetry::logging;
use pod_identity_webhook::{certs, startup};
use std::process::ExitCode;

// Admission allocates many small short-lived values per request (parsed names, patch operations,
// the response); mimalloc serves them with less CPU than the system allocator under load (see
// BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let settings = args
                .settings()
                .context("invalid configuration (see `pod-identity-webhook serve --help`)")?;
            let _log_guard = logging::init(settings.server.log_format);
            for flag in args.ignored_flags() {
                tracing::warn!(flag, "flag of the IRSA webhook accepted and ignored");
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(async {
                    let running = startup::start(settings).await?;
                    running.run_until(startup::shutdown_signal()).await;
                    anyhow::Ok(ExitCode::SUCCESS)
                })
        }
        Command::Certs(args) => run_certs(args).map(|()| ExitCode::SUCCESS),
        Command::Check(args) => Ok(run_check(&args)),
        Command::Agent(args) => {
            pod_identity_webhook::agent::command::run(*args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `check`: its own exit codes (0 clean, 1 denied, 2 unreadable input or could not run).
fn run_check(args: &CheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(audit::cli::SETUP_FAILED);
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(audit::cli::run_check(args, &mut stdout)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(audit::cli::SETUP_FAILED)
        }
    }
}

fn run_certs(args: CertsArgs) -> anyhow::Result<()> {
    tls::install_default_provider();
    let mut names = certs::service_names(&args.service, &args.namespace);
    names.extend(args.sans.iter().cloned());
    let generated = certs::generate(&names)?;
    let written = certs::write(&args.out, &generated)
        .with_context(|| format!("cannot write certificates into {}", args.out.display()))?;
    eprintln!(
        "wrote {}, {}, {}, {}",
        written.ca_cert.display(),
        written.ca_key.display(),
        written.cert.display(),
        written.key.display()
    );
    eprintln!("caBundle for the webhook configurations (also on stdout):");
    println!("{}", generated.ca_bundle());
    Ok(())
}
