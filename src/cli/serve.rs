//! `serve`: the webhook. Its settings are [`Settings`] (each flag also a config-file key, declared
//! in `crate::settings`); this module adds the IRSA webhook's flags that mean nothing here, and
//! runs the server.

use std::process::ExitCode;

use clap::Args;

use super::Prepared;
use crate::settings::{Flags, Settings, SettingsError};
use crate::startup;

/// `serve` flags: every setting of [`Settings`] (each also a config-file key), plus a few the
/// IRSA webhook had.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub flags: Flags,

    /// Accepted for compatibility with the IRSA webhook's arguments; ignored.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub in_cluster: Option<String>,
    /// Accepted for compatibility with the IRSA webhook's arguments; ignored.
    #[arg(long, hide = true)]
    pub service_name: Option<String>,
    /// Accepted for compatibility with the IRSA webhook's arguments; ignored.
    #[arg(long, hide = true)]
    pub tls_secret: Option<String>,
    /// Accepted for compatibility with the IRSA webhook's arguments; ignored.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub logtostderr: Option<String>,
}

impl ServeArgs {
    /// Flags the IRSA webhook had that mean nothing here (logged once at start-up).
    pub fn ignored_flags(&self) -> Vec<&'static str> {
        [
            ("--in-cluster", self.in_cluster.is_some()),
            ("--service-name", self.service_name.is_some()),
            ("--tls-secret", self.tls_secret.is_some()),
            ("--logtostderr", self.logtostderr.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    /// The config file (if any) with the flags over it, validated.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        Settings::load(self.flags.clone())
    }

    /// The settings (an error names the flag or key to fix), then the server until SIGTERM.
    pub fn prepare(self) -> Result<Prepared, Box<dyn std::error::Error + Send + Sync>> {
        let settings = self.settings().map_err(|e| {
            format!("{e}\n(see `pod-identity-webhook serve --help` and docs/configuration.md)")
        })?;
        let log_format = settings.server.log_format;
        let ignored = self.ignored_flags();
        Ok(Prepared::new(async move {
            for flag in ignored {
                tracing::warn!(flag, "flag of the IRSA webhook accepted and ignored");
            }
            let running = startup::start(settings).await?;
            running.run_until(startup::shutdown_signal()).await;
            Ok(ExitCode::SUCCESS)
        })
        .logging(log_format))
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn irsa_webhook_arguments_are_accepted() {
        let cli = Cli::try_parse_from([
            "pod-identity-webhook",
            "serve",
            "--tls-cert=/c",
            "--tls-key=/k",
            "--port=443",
            "--metrics-port=9999",
            "--aws-default-region=us-west-2",
            "--sts-regional-endpoint=true",
            "--token-audience=sts.amazonaws.com",
            "--token-expiration=3600",
            "--annotation-prefix=eks.amazonaws.com",
            "--in-cluster=false",
            "--logtostderr",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        let s = args.settings().unwrap();
        assert_eq!(s.listen.port(), 443);
        assert_eq!(s.admin_listen.port(), 9999);
        assert!(s.injection.sts_regional_endpoint);
        assert_eq!(s.injection.token_expiration, 3600);
        assert_eq!(args.ignored_flags(), vec!["--in-cluster", "--logtostderr"]);
    }
}
