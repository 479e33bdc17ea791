//! `certs`: writes a CA and a serving certificate for the webhook Service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{CommandResult, Prepared};
use crate::certs;
use crate::server::tls;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory for ca.crt, ca.key, tls.crt, tls.key.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Service name the API server calls.
    #[arg(long, default_value = "pod-identity-webhook")]
    pub service: String,
    /// Namespace of that Service.
    #[arg(long, default_value = "pod-identity-webhook")]
    pub namespace: String,
    /// Extra subject names (DNS names or IPs), e.g. --san 127.0.0.1 --san localhost.
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    pub sans: Vec<String>,
}

impl CertsArgs {
    pub fn prepare(self) -> Prepared {
        Prepared::new(async move { self.write() })
    }

    fn write(self) -> CommandResult {
        tls::install_default_provider();
        let mut names = certs::service_names(&self.service, &self.namespace);
        names.extend(self.sans.iter().cloned());
        let generated = certs::generate(&names)?;
        let written = certs::write(&self.out, &generated)
            .map_err(|e| format!("cannot write certificates into {}: {e}", self.out.display()))?;
        eprintln!(
            "wrote {}, {}, {}, {}",
            written.ca_cert.display(),
            written.ca_key.display(),
            written.cert.display(),
            written.key.display()
        );
        eprintln!("caBundle for the webhook configurations (also on stdout):");
        println!("{}", generated.ca_bundle());
        Ok(ExitCode::SUCCESS)
    }
}
