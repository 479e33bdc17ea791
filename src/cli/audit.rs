//! `audit`: the webhook's decisions on what runs in a cluster (see `audit::cli`), with its own
//! exit codes: 0 nothing found, 1 findings, 2 could not run.

use std::process::ExitCode;

pub use crate::audit::cli::AuditArgs;
use crate::audit::cli::{SETUP_FAILED, run_audit};

pub fn run(args: &AuditArgs) -> super::Outcome {
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
    Ok(match runtime.block_on(run_audit(args, &mut stdout)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(SETUP_FAILED)
        }
    })
}
