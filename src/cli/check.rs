//! `check`: the webhook's decisions on manifests (see `audit::cli`), with its own exit codes:
//! 0 clean, 1 denied, 2 unreadable input or could not run.

pub use crate::audit::cli::CheckArgs;
use crate::audit::cli::run_check;

pub fn run(args: &CheckArgs) -> super::CommandResult {
    super::run_report(|runtime, stdout| runtime.block_on(run_check(args, stdout)))
}
