//! One settings model (docs/contract.md §6, §8), filled by the YAML file, the flags and the environment.
//!
//! Each setting is declared once, as a field of a section struct that derives both
//! `clap::Args` (its flag, environment variable and help) and `serde::Deserialize` (its key in
//! the file). Sections live with their domain ([`PolicySettings`] in `policy`, [`EksSettings`]
//! in `identity`, [`InjectionSettings`] in `admission`); this module composes them and adds the
//! listener, TLS and server sections.
//!
//! Precedence: built-in defaults (each section's `Default`) < the file < environment < flags.
//! The file is read strictly: an unknown key is an error naming it, so a typo can never
//! silently turn enforcement off. Flags override the file through clap's own derive: the flag
//! fields carry no clap defaults, so `update_from_arg_matches` writes exactly the flags (and
//! environment variables) that were given over what the file said. Validation happens once, in
//! [`Settings::load`] / [`Settings::parse`], with messages naming the key and what to do.

mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, ArgMatches, Args, FromArgMatches};
use serde::{Deserialize, Serialize};

use crate::serde_errors::{self, Keys};

pub use crate::admission::injection::InjectionSettings;
pub use crate::identity::eks_settings::{EksSettings, FailureMode};
pub use crate::policy::{FailurePolicy, NamespaceRule, PolicyMode, PolicySettings};
pub use crate::telemetry::logging::LogFormat;

/// A config file larger than this is refused unread (a real one is a few KiB).
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// Everything that can go wrong while reading settings. Messages say what to change.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: {message}")]
    Parse {
        path: PathBuf,
        // Boxed: it is far larger than the other variants.
        message: Box<serde_errors::Described>,
    },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("flags: {0}")]
    Flags(#[from] clap::Error),
}

/// The settings the webhook runs on (`serve`).
#[derive(Debug, Clone, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    /// YAML configuration file (docs/contract.md §8); unknown keys are errors.
    #[arg(
        long = "config",
        env = "POD_IDENTITY_WEBHOOK_CONFIG",
        value_name = "FILE"
    )]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// HTTPS admission endpoint [default: 0.0.0.0:8443].
    #[arg(
        long,
        env = "POD_IDENTITY_WEBHOOK_LISTEN",
        required = false,
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Plain-HTTP admin endpoint: /livez /readyz /metrics [default: 0.0.0.0:8080].
    #[arg(
        long,
        env = "POD_IDENTITY_WEBHOOK_ADMIN_LISTEN",
        required = false,
        value_name = "ADDR"
    )]
    pub admin_listen: SocketAddr,
    #[command(flatten)]
    pub tls: TlsSettings,
    /// Associations file (YAML/JSON), for clusters without EKS and local runs.
    #[arg(
        long = "associations",
        env = "POD_IDENTITY_WEBHOOK_ASSOCIATIONS",
        value_name = "FILE"
    )]
    pub associations_file: Option<PathBuf>,
    /// Kubeconfig for the Kubernetes API [default: in-cluster config when running in a pod].
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The webhook's own namespace, always exempt from policy [default: the pod's namespace].
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub eks: EksSettings,
    #[command(flatten)]
    pub injection: InjectionSettings,
    #[command(flatten)]
    pub policy: PolicySettings,
    #[command(flatten)]
    pub server: ServerSettings,
    /// Read by `controller` only; `serve` has no flags for it.
    #[arg(skip)]
    pub controller: ControllerFileSettings,
    #[command(flatten)]
    #[serde(skip)]
    pub aliases: Aliases,
    /// The flags these settings were made with: laid over the file again on every reload.
    #[arg(skip)]
    #[serde(skip)]
    pub flags: Flags,
}

/// The `tls` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsSettings {
    /// PEM certificate chain; re-read when it changes.
    #[arg(
        long = "tls-cert",
        env = "POD_IDENTITY_WEBHOOK_TLS_CERT",
        value_name = "PATH"
    )]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); re-read when it changes.
    #[arg(
        long = "tls-key",
        env = "POD_IDENTITY_WEBHOOK_TLS_KEY",
        value_name = "PATH"
    )]
    pub key: Option<PathBuf>,
    /// Generate a throw-away CA and certificate at start-up (local runs) [default: false].
    #[arg(long, required = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub self_signed: bool,
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsSource {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

impl TlsSettings {
    /// A certificate and key read from files.
    pub fn files(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert: Some(cert),
            key: Some(key),
            self_signed: false,
        }
    }

    /// Which certificate to serve; an error names the flags to give.
    pub fn source(&self) -> Result<TlsSource, SettingsError> {
        let invalid = |key, message: &str| SettingsError::Invalid {
            key,
            message: message.into(),
        };
        match (&self.cert, &self.key, self.self_signed) {
            (Some(cert), Some(key), false) => Ok(TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None, true) => Ok(TlsSource::SelfSigned),
            (Some(_), Some(_), true) => Err(invalid(
                "tls",
                "give either --tls-cert/--tls-key or --self-signed, not both",
            )),
            (Some(_), None, _) => Err(invalid(
                "tls.key (--tls-key)",
                "--tls-cert needs --tls-key too",
            )),
            (None, Some(_), _) => Err(invalid(
                "tls.cert (--tls-cert)",
                "--tls-key needs --tls-cert too",
            )),
            (None, None, false) => Err(invalid(
                "tls",
                "no certificate: give --tls-cert and --tls-key (for example from \
                 `pod-identity-webhook certs --out DIR`), or --self-signed for a local run",
            )),
        }
    }
}

/// The `server` section: limits and timings of the listeners, reloads and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerSettings {
    /// Largest accepted request body in bytes [default: 6291456].
    #[arg(long, required = false, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// Most HTTPS connections open at once; more wait until one closes [default: 4096].
    #[arg(long, required = false, value_name = "N")]
    pub max_connections: usize,
    /// How often certificate, associations and config files are checked [default: 5s].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// After SIGTERM, stay up unready this long before draining [default: 5s].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Time in-flight requests get to finish when draining [default: 20s].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// HTTP/1.1: how long a request head may take from its first byte [default: 10s].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// HTTP/1.1: how long a keep-alive connection may sit idle; above the API server's 90s, so
    /// that the client, not the webhook, closes it [default: 2m].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Log format: json, text, or auto (JSON unless stderr is a terminal) [default: auto].
    #[arg(
        long,
        env = "POD_IDENTITY_WEBHOOK_LOG_FORMAT",
        required = false,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
    /// Deadlines and caps of every connection (`server.connections`).
    #[command(flatten)]
    pub connections: ConnectionSettings,
    /// Refused: the background audit runs in the `controller` command now (docs/controller.md);
    /// kept so that `serve` names the move instead of "unknown argument".
    #[arg(long, hide = true, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub audit_interval: Option<Duration>,
}

/// `server.connections`: how long a client may stall each step of a connection, and what
/// connections may hold. Every default outlives what a live API server needs by a wide margin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionSettings {
    /// A TLS handshake must complete within this [default: 10s].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A request body may go this long without a byte [default: 10s].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A whole request body must arrive within this [default: 30s].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// HTTP/2: a PING after this long without a frame from the client [default: 30s].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub http2_keep_alive_interval: Duration,
    /// HTTP/2: an unanswered PING closes the connection after this [default: 10s].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub http2_keep_alive_timeout: Duration,
    /// HTTP/2: requests in flight at once on one connection [default: 250].
    #[arg(long, required = false, value_name = "N")]
    pub http2_max_concurrent_streams: u32,
    /// Request bodies buffered at once, all connections together; a request that finds no room
    /// is answered 503 at once [default: 33554432]. With the peak memory of the reviews being
    /// decided, this sizes the webhook's memory: see docs/operations.md, Memory.
    #[arg(long, required = false, value_name = "BYTES")]
    pub body_memory_bytes: usize,
    /// Connections open at once on the admin port [default: 64].
    #[arg(long, required = false, value_name = "N")]
    pub admin_max_connections: usize,
    /// `/readyz` turns unready when the HTTPS listener has been unable to accept (at its
    /// connection cap, or failing to accept) for this long [default: 5s].
    #[arg(long, required = false, value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(with = "humantime_serde")]
    pub unready_after_blocked: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_keep_alive_timeout: Duration::from_secs(10),
            http2_max_concurrent_streams: 250,
            body_memory_bytes: 32 * 1024 * 1024,
            admin_max_connections: 64,
            unready_after_blocked: Duration::from_secs(5),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: crate::server::MAX_BODY_BYTES,
            max_connections: crate::server::MAX_CONNECTIONS,
            reload_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(20),
            header_read_timeout: crate::server::HEADER_READ_TIMEOUT,
            idle_timeout: crate::server::IDLE_TIMEOUT,
            log_format: LogFormat::Auto,
            connections: ConnectionSettings::default(),
            audit_interval: None,
        }
    }
}

/// Flags of the IRSA webhook that adjust other settings; not keys of the file.
#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct Aliases {
    /// Port of the HTTPS endpoint (alias of the --listen port, as in the IRSA webhook).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Port of the admin endpoint (alias of the --admin-listen port, as in the IRSA webhook).
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// IPv6 cluster: the credentials URI defaults to http://[fd00:ec2::23]/v1/credentials.
    #[arg(long, required = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub ipv6: bool,
}

/// The `controller` section: what `pod-identity-webhook controller` does besides the audit
/// (docs/controller.md); its flags win over it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerFileSettings {
    /// GitOps associations (`--gitops-associations`): associations from ServiceAccount
    /// annotations.
    pub gitops_associations: bool,
    /// Every association re-read (drift put back) this often (`--gitops-resync-interval`).
    #[serde(with = "humantime_serde")]
    pub gitops_resync_interval: Duration,
}

impl Default for ControllerFileSettings {
    fn default() -> Self {
        Self {
            gitops_associations: false,
            gitops_resync_interval: Duration::from_secs(300),
        }
    }
}

/// The flags and environment variables given to `serve`, as clap matched them. Declares the
/// arguments of [`Settings`]; [`Flags::apply`] writes the given ones over a [`Settings`].
#[derive(Debug, Clone, Default)]
pub struct Flags(Option<ArgMatches>);

impl FromArgMatches for Flags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(Some(matches.clone())))
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0 = Some(matches.clone());
        Ok(())
    }
}

impl Args for Flags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Settings::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Settings::augment_args_for_update(cmd)
    }
}

impl Flags {
    /// Parses `serve` arguments (without the program and command names), for tests and tools.
    pub fn parse<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cmd = Self::augment_args(clap::Command::new("serve").no_binary_name(true));
        Self::from_arg_matches(&cmd.try_get_matches_from(args)?)
    }

    /// Writes the settings that were given as flags or environment variables over `settings`.
    pub fn apply(&self, settings: &mut Settings) -> Result<(), clap::Error> {
        match &self.0 {
            Some(matches) => settings.update_from_arg_matches(matches),
            None => Ok(()),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            config_file: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            tls: TlsSettings::default(),
            associations_file: None,
            kubeconfig: None,
            namespace: None,
            eks: EksSettings::default(),
            injection: InjectionSettings::default(),
            policy: PolicySettings::default(),
            server: ServerSettings::default(),
            controller: ControllerFileSettings::default(),
            aliases: Aliases::default(),
            flags: Flags::default(),
        }
    }
}

impl Settings {
    /// Settings for tests and local runs: self-signed, loopback, nothing else configured.
    pub fn local() -> Self {
        let mut s = Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        };
        s.tls.self_signed = true;
        s.server.shutdown_grace = Duration::ZERO;
        s
    }

    /// Reads the config file the flags name (if any), lays the flags over it and validates.
    pub fn load(flags: Flags) -> Result<Self, SettingsError> {
        let mut given = Self::default();
        flags.apply(&mut given)?;
        match given.config_file {
            Some(path) => {
                let text = read_config_file(&path)?;
                Self::parse(Some(&path), &text, flags)
            }
            None => Self::parse(None, "", flags),
        }
    }

    /// Settings from a config file's `text` (read from `path`) with `flags` over it; validated.
    pub fn parse(path: Option<&Path>, text: &str, flags: Flags) -> Result<Self, SettingsError> {
        Self::parse_then(path, text, flags, |_| {})
    }

    /// [`Settings::parse`], with `adjust` applied before validation (commands other than
    /// `serve` set what their own flags say, or what does not concern them).
    pub fn parse_then(
        path: Option<&Path>,
        text: &str,
        flags: Flags,
        adjust: impl FnOnce(&mut Self),
    ) -> Result<Self, SettingsError> {
        let mut settings = if text.trim().is_empty() {
            Self::default()
        } else {
            // Keys are named (a typo is worth showing), values are not (the file may be a
            // secret behind a symlink).
            serde_errors::from_yaml::<Self>(text).map_err(|e| SettingsError::Parse {
                path: path.unwrap_or(Path::new("<config>")).to_owned(),
                message: Box::new(e.describe(Keys::Named)),
            })?
        };
        flags.apply(&mut settings)?;
        settings.config_file = path.map(Path::to_owned);
        settings.flags = flags;
        settings.apply_aliases();
        adjust(&mut settings);
        settings.validate()?;
        Ok(settings)
    }

    /// Settings from a config file's text alone (tests, tools).
    pub fn from_yaml(text: &str) -> Result<Self, SettingsError> {
        Self::parse(None, text, Flags::default())
    }

    /// The EKS source's settings, when a cluster is named.
    pub fn eks_source(&self) -> Option<&EksSettings> {
        self.eks.enabled().then_some(&self.eks)
    }

    /// Values that follow from others: the IRSA webhook's port flags, `--ipv6`, empty strings
    /// given as "not set", the policy's cluster name.
    fn apply_aliases(&mut self) {
        if let Some(port) = self.aliases.port {
            self.listen.set_port(port);
        }
        if let Some(port) = self.aliases.metrics_port {
            self.admin_listen.set_port(port);
        }
        let injection = &mut self.injection;
        if self.aliases.ipv6
            && injection.container_credentials_full_uri
                == crate::admission::injection::DEFAULT_CREDENTIALS_URI_V4
        {
            injection.container_credentials_full_uri =
                crate::admission::injection::DEFAULT_CREDENTIALS_URI_V6.into();
        }
        for value in [
            &mut injection.aws_default_region,
            &mut self.eks.region,
            &mut self.eks.endpoint,
            &mut self.namespace,
            &mut self.policy.cluster_name,
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            }
        }
        if self.policy.cluster_name.is_none() && self.eks.enabled() {
            self.policy.cluster_name = Some(self.eks.cluster_name.clone());
        }
    }
}

/// Reads a config file: a regular file of at most [`MAX_CONFIG_FILE_BYTES`], UTF-8.
pub fn read_config_file(path: &Path) -> Result<String, SettingsError> {
    let fail = |reason: String| SettingsError::Read {
        path: path.to_owned(),
        reason,
    };
    // Opened non-blocking and checked on the descriptor: a FIFO named as the config file
    // must not block start-up.
    let bytes = crate::files::read_capped(path, MAX_CONFIG_FILE_BYTES).map_err(|e| match e {
        crate::files::ReadError::TooLarge { .. } => fail(format!(
            "larger than {MAX_CONFIG_FILE_BYTES} bytes; is it the right file?"
        )),
        e => fail(e.to_string()),
    })?;
    String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))
}

#[cfg(test)]
mod tests;
