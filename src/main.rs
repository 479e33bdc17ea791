//! `pod-identity-webhook`: thin entry point; everything lives in the library.

use anyhow::Context;
use clap::Parser;
use pod_identity_webhook::cli::{CertsArgs, Cli, Command};
use pod_identity_webhook::telemetry::logging;
use pod_identity_webhook::{certs, serve, tls};

// Admission allocates many small short-lived values per request (parsed names, patch operations,
// the response); mimalloc serves them with less CPU than the system allocator under load (see
// BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
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
                    let running = serve::start(settings).await?;
                    running.run_until(serve::shutdown_signal()).await;
                    anyhow::Ok(())
                })
        }
        Command::Certs(args) => run_certs(args),
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
