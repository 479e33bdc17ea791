//! `audit`: the webhook's decisions on what runs in a cluster (see `audit::cli`), with its own
//! exit codes: 0 nothing found, 1 findings, 2 could not run.

pub use crate::audit::cli::AuditArgs;
use crate::audit::cli::run_audit;

pub fn run(args: &AuditArgs) -> super::CommandResult {
    super::run_report(|runtime, stdout| runtime.block_on(run_audit(args, stdout)))
}
