//! `pod-identity-webhook`: thin entry point; everything lives in the library.

use std::process::ExitCode;

use clap::Parser;
use pod_identity_webhook::cli::Cli;

// Admission allocates many small short-lived values per request (parsed names, patch operations,
// the response); mimalloc serves them with less CPU than the system allocator under load (see
// BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    Cli::parse().command.run().map_err(|e| anyhow::anyhow!(e))
}
