//! The command line (docs/contract.md §6): one module per command. A command is a variant of [`Command`]
//! holding its `clap::Args` struct, and that struct's `run`.

pub mod audit;
pub mod certs;
pub mod check;
pub mod migrate;
pub mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What a command's `run` returns: an exit code, or an error whose message says what to fix.
pub type CommandResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync>>;

/// Runs a report command (`check`, `audit`) on a current-thread runtime, writing to stdout:
/// its exit code, or `SETUP_FAILED` with the error on stderr when it could not run.
fn run_report<E: std::fmt::Display>(
    command: impl FnOnce(&tokio::runtime::Runtime, &mut std::io::StdoutLock<'static>) -> Result<u8, E>,
) -> CommandResult {
    use crate::audit::cli::SETUP_FAILED;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Ok(ExitCode::from(SETUP_FAILED));
        }
    };
    let mut stdout = std::io::stdout().lock();
    Ok(match command(&runtime, &mut stdout) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(SETUP_FAILED)
        }
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "pod-identity-webhook",
    version,
    about = "Admission webhook that injects EKS Pod Identity / IRSA credentials into pods and enforces identity policy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook (HTTPS admission endpoint + plain-HTTP admin endpoint).
    Serve(Box<serve::ServeArgs>),
    /// Generate a CA and a serving certificate for the webhook Service.
    Certs(certs::CertsArgs),
    /// Run the webhook's decisions on manifests (CI, pre-commit): exit 0 clean, 1 denied,
    /// 2 unreadable input.
    Check(Box<check::CheckArgs>),
    /// Run the webhook's decisions on what runs in a cluster: workloads without identity,
    /// roles outside their namespace's allowlist, pods that need a restart.
    Audit(Box<audit::AuditArgs>),
    /// Node agent serving Pod Identity credentials where EKS does not run (docs/contract.md §9).
    Agent(Box<crate::agent::args::AgentArgs>),
    /// Migrate from IRSA to Pod Identity: plan (default), apply --approve, verify (docs/contract.md §10).
    Migrate(Box<migrate::MigrateArgs>),
}

impl Command {
    pub fn run(self) -> CommandResult {
        match self {
            Self::Serve(args) => args.run(),
            Self::Certs(args) => args.run(),
            Self::Check(args) => check::run(&args),
            Self::Audit(args) => audit::run(&args),
            Self::Agent(args) => {
                crate::agent::command::run(*args)?;
                Ok(ExitCode::SUCCESS)
            }
            Self::Migrate(args) => args.run(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
