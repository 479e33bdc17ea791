//! The command line (docs/contract.md §6). Every command has the same shape: `cli/<command>.rs`
//! holds its `clap` arguments and a `prepare` that turns them into typed settings and the work
//! to run ([`Prepared`]); this module then starts the logging and the one async runtime, and runs
//! it. The domain modules never see a clap struct.

pub mod agent;
pub mod audit;
pub mod certs;
pub mod check;
pub mod controller;
pub mod issuer;
pub mod issuer_aws;
pub mod issuer_keys;
pub mod issuer_verify;
pub mod migrate;
pub mod serve;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::logging::{self, LogFormat};

/// What a command's run returns: an exit code, or an error whose message says what to fix.
pub type CommandResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync>>;

/// A command ready to run: its arguments checked and turned into settings.
pub struct Prepared {
    /// Structured logs to stderr (the long-running commands); the report commands write only
    /// their report and errors.
    pub log_format: Option<LogFormat>,
    /// The exit code when the runtime cannot start (the command's own "could not run").
    pub setup_failed: Option<ExitCode>,
    pub work: Pin<Box<dyn Future<Output = CommandResult>>>,
}

impl Prepared {
    pub fn new(work: impl Future<Output = CommandResult> + 'static) -> Self {
        Self {
            log_format: None,
            setup_failed: None,
            work: Box::pin(work),
        }
    }

    pub fn logging(mut self, format: LogFormat) -> Self {
        self.log_format = Some(format);
        self
    }

    pub fn setup_failed(mut self, code: u8) -> Self {
        self.setup_failed = Some(ExitCode::from(code));
        self
    }

    /// Starts the logging and the runtime, and runs the work on it.
    pub fn run(self) -> CommandResult {
        let _log_guard = self.log_format.map(logging::init);
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => match self.setup_failed {
                Some(code) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return Ok(code);
                }
                None => return Err(format!("cannot start the async runtime: {e}").into()),
            },
        };
        runtime.block_on(self.work)
    }
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
    /// The audit off the admission path: one replica at a time (a Lease) audits on watches,
    /// exports gauges and Events and, with --repair, evicts pods that got through without their
    /// identity (docs/controller.md).
    Controller(Box<controller::ControllerArgs>),
    /// Node agent serving Pod Identity credentials where EKS does not run (docs/contract.md §9).
    Agent(Box<agent::AgentArgs>),
    /// Migrate from IRSA to Pod Identity: plan (default), apply --approve, verify (docs/contract.md §10).
    Migrate(Box<migrate::MigrateArgs>),
    /// Publish the cluster's service-account issuer for IRSA outside EKS: keys, publish,
    /// provider, flags, verify (docs/irsa-self-managed.md).
    Issuer(Box<issuer::IssuerArgs>),
}

impl Command {
    pub fn run(self) -> CommandResult {
        let prepared = match self {
            Self::Serve(args) => args.prepare()?,
            Self::Certs(args) => args.prepare(),
            Self::Check(args) => args.prepare(),
            Self::Audit(args) => args.prepare(),
            Self::Controller(args) => args.prepare()?,
            Self::Agent(args) => args.prepare()?,
            Self::Migrate(args) => args.prepare(),
            Self::Issuer(args) => args.prepare(),
        };
        prepared.run()
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
