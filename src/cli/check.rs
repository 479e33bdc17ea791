//! `check`: the webhook's decisions on manifests (see `audit::cli`), with its own exit codes:
//! 0 clean, 1 denied, 2 unreadable input or could not run.

use std::process::ExitCode;

pub use crate::audit::cli::CheckArgs;
use crate::audit::cli::{SETUP_FAILED, run_check};

pub fn run(args: &CheckArgs) -> super::Outcome {
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
    Ok(match runtime.block_on(run_check(args, &mut stdout)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(SETUP_FAILED)
        }
    })
}
