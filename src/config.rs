//! Settings: the YAML configuration file (SPEC §8), merged with flags and environment
//! (flags and environment win over the file; the file wins over built-in defaults).
//!
//! The file is parsed strictly: an unknown key is an error naming the key, so a typo can never
//! silently turn enforcement off.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Everything that can go wrong while reading settings. Messages say what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Durations such as `500ms`, `30s`, `5m`, `1h` (SPEC §8).

/// Parses `500ms`, `30s`, `5m`, `2h` or a compound like `1m30s`. A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. `30s`, `5m` or `500ms`".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("`{text}` has a number without a unit (ms, s, m, h)"))?;
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration; write e.g. `30s`, `5m` or `500ms`"
            ));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            other => {
                return Err(format!(
                    "`{text}` has unknown unit `{other}`; use ms, s, m or h"
                ));
            }
        };
        if !secs.is_finite() || secs > 1e9 {
            return Err(format!("`{text}` is too long"));
        }
        total += Duration::from_secs_f64(secs);
    }
    Ok(total)
}

/// A duration as the config file writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Secs(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => parse_duration(&t)
                .map(ConfigDuration)
                .map_err(serde::de::Error::custom),
            Raw::Secs(s) => Ok(ConfigDuration(Duration::from_secs(s))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The file, as written by a user (SPEC §8). Every key optional, unknown keys rejected.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub tls: Option<TlsFile>,
    pub associations_file: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    /// The namespace the webhook runs in (always exempt from policy).
    pub namespace: Option<String>,
    pub eks: Option<EksFile>,
    pub injection: Option<InjectionFile>,
    pub policy: Option<PolicyFile>,
    pub server: Option<ServerFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFile {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub self_signed: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EksFile {
    pub cluster_name: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub sync_interval: Option<ConfigDuration>,
    pub ttl: Option<ConfigDuration>,
    pub negative_ttl: Option<ConfigDuration>,
    pub max_wait: Option<ConfigDuration>,
    pub ready_timeout: Option<ConfigDuration>,
    pub concurrency: Option<usize>,
    pub failure_mode: Option<FailureMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InjectionFile {
    pub aws_default_region: Option<String>,
    pub sts_regional_endpoint: Option<bool>,
    pub token_audience: Option<String>,
    pub token_mount_path: Option<String>,
    pub token_expiration: Option<i64>,
    pub annotation_prefix: Option<String>,
    pub container_credentials_full_uri: Option<String>,
    pub container_credentials_audience: Option<String>,
    pub container_credentials_token_mount_path: Option<String>,
    pub container_credentials_token_volume_name: Option<String>,
    pub container_credentials_token_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyFile {
    pub default_mode: Option<PolicyMode>,
    pub failure_policy: Option<FailurePolicy>,
    #[serde(default)]
    pub namespaces: Vec<NamespaceRule>,
    #[serde(default)]
    pub exemptions: Vec<String>,
    pub namespace_label: Option<String>,
    pub cluster_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerFile {
    pub max_body_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub reload_interval: Option<ConfigDuration>,
    pub shutdown_grace: Option<ConfigDuration>,
    pub drain_timeout: Option<ConfigDuration>,
    pub header_read_timeout: Option<ConfigDuration>,
    pub idle_timeout: Option<ConfigDuration>,
    pub log_format: Option<LogFormat>,
}

// ---------------------------------------------------------------------------------------------
// Resolved settings: what the program runs on.

/// How the validating webhook treats a namespace (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Ordered from loosest to strictest, so `max` is "the tighter of".
    Off,
    Warn,
    Enforce,
}

impl PolicyMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Some(Self::Off),
            "warn" => Some(Self::Warn),
            "enforce" => Some(Self::Enforce),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Warn => "warn",
            Self::Enforce => "enforce",
        }
    }
}

/// What the validating webhook does when identity sources cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    Open,
    Closed,
}

/// What the mutating webhook does when the EKS source cannot answer within `maxWait` and has
/// no earlier answer to fall back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// Mutate from whatever (possibly stale) data there is; admit unmutated when there is none.
    Stale,
    /// Admit unmutated with a warning as soon as the wait bound passes.
    AdmitUnmutated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
    /// JSON when not attached to a terminal (in a cluster), text on a terminal.
    Auto,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceRule {
    /// Glob on the namespace name.
    #[serde(rename = "match")]
    pub pattern: String,
    pub mode: Option<PolicyMode>,
    /// Glob patterns the `role-arn` annotation of ServiceAccounts in these namespaces must match.
    #[serde(default)]
    pub allowed_role_arns: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub enum TlsSource {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

/// The injection defaults of SPEC §2; each overridable.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectionSettings {
    pub aws_default_region: Option<String>,
    pub sts_regional_endpoint: bool,
    pub token_audience: String,
    pub token_mount_path: String,
    pub token_expiration: i64,
    pub annotation_prefix: String,
    pub container_credentials_full_uri: String,
    pub container_credentials_audience: String,
    pub container_credentials_token_mount_path: String,
    pub container_credentials_token_volume_name: String,
    pub container_credentials_token_path: String,
    /// Volume name for the IRSA token (fixed by the IRSA webhook's contract).
    pub irsa_token_volume_name: String,
    /// File name inside the IRSA token mount.
    pub irsa_token_path: String,
}

pub const DEFAULT_CREDENTIALS_URI_V4: &str = "http://169.254.170.23/v1/credentials";
pub const DEFAULT_CREDENTIALS_URI_V6: &str = "http://[fd00:ec2::23]/v1/credentials";
pub const MIN_TOKEN_EXPIRATION: i64 = 600;
/// The API server rejects projected token lifetimes of 2^32 seconds or more.
pub const MAX_TOKEN_EXPIRATION: i64 = u32::MAX as i64;

impl Default for InjectionSettings {
    fn default() -> Self {
        Self {
            aws_default_region: None,
            sts_regional_endpoint: false,
            token_audience: "sts.amazonaws.com".into(),
            token_mount_path: "/var/run/secrets/eks.amazonaws.com/serviceaccount".into(),
            token_expiration: 86400,
            annotation_prefix: "eks.amazonaws.com".into(),
            container_credentials_full_uri: DEFAULT_CREDENTIALS_URI_V4.into(),
            container_credentials_audience: "pods.eks.amazonaws.com".into(),
            container_credentials_token_mount_path:
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount".into(),
            container_credentials_token_volume_name: "eks-pod-identity-token".into(),
            container_credentials_token_path: "eks-pod-identity-token".into(),
            irsa_token_volume_name: "aws-iam-token".into(),
            irsa_token_path: "token".into(),
        }
    }
}

impl InjectionSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        fn abs_path(key: &'static str, v: &str) -> Result<(), ConfigError> {
            if !v.starts_with('/') || v.contains("..") {
                return Err(invalid(
                    key,
                    format!("`{v}` must be an absolute path without `..`"),
                ));
            }
            Ok(())
        }
        fn rel_file(key: &'static str, v: &str) -> Result<(), ConfigError> {
            if v.is_empty() || v.starts_with('/') || v.split('/').any(|p| p == "..") {
                return Err(invalid(
                    key,
                    format!("`{v}` must be a relative file path inside the mount"),
                ));
            }
            Ok(())
        }
        fn dns_label(key: &'static str, v: &str) -> Result<(), ConfigError> {
            let ok = !v.is_empty()
                && v.len() <= 63
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !v.starts_with('-')
                && !v.ends_with('-');
            if !ok {
                return Err(invalid(
                    key,
                    format!("`{v}` is not a valid volume name (DNS label, at most 63 characters)"),
                ));
            }
            Ok(())
        }
        abs_path("token-mount-path", &self.token_mount_path)?;
        abs_path(
            "container-credentials-token-mount-path",
            &self.container_credentials_token_mount_path,
        )?;
        rel_file(
            "container-credentials-token-path",
            &self.container_credentials_token_path,
        )?;
        dns_label(
            "container-credentials-token-volume-name",
            &self.container_credentials_token_volume_name,
        )?;
        if self.token_audience.is_empty() {
            return Err(invalid("token-audience", "must not be empty"));
        }
        if self.container_credentials_audience.is_empty() {
            return Err(invalid(
                "container-credentials-audience",
                "must not be empty",
            ));
        }
        if !(self.container_credentials_full_uri.starts_with("http://")
            || self.container_credentials_full_uri.starts_with("https://"))
        {
            return Err(invalid(
                "container-credentials-full-uri",
                format!(
                    "`{}` must be an http:// or https:// URL",
                    self.container_credentials_full_uri
                ),
            ));
        }
        if self.token_expiration <= 0 {
            return Err(invalid(
                "token-expiration",
                format!(
                    "{} must be a positive number of seconds",
                    self.token_expiration
                ),
            ));
        }
        let prefix = &self.annotation_prefix;
        if prefix.is_empty() || prefix.contains('/') {
            return Err(invalid(
                "annotation-prefix",
                format!("`{prefix}` must be a DNS prefix such as eks.amazonaws.com"),
            ));
        }
        if let Some(region) = &self.aws_default_region {
            validate_region("aws-default-region", region)?;
        }
        Ok(())
    }
}

fn validate_region(key: &'static str, region: &str) -> Result<(), ConfigError> {
    let ok = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{region}` is not an AWS region name such as us-east-1"),
        ))
    }
}

#[derive(Debug, Clone)]
pub struct EksSettings {
    pub cluster_name: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub sync_interval: Duration,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_wait: Duration,
    pub ready_timeout: Duration,
    pub concurrency: usize,
    pub failure_mode: FailureMode,
}

impl EksSettings {
    pub fn new(cluster_name: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            region: None,
            endpoint: None,
            sync_interval: Duration::from_secs(300),
            ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(15),
            max_wait: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(60),
            concurrency: 8,
            failure_mode: FailureMode::Stale,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub default_mode: PolicyMode,
    pub failure_policy: FailurePolicy,
    pub namespaces: Vec<NamespaceRule>,
    pub exemptions: Vec<String>,
    pub namespace_label: String,
    /// Cluster name quoted in the remedy command of denials.
    pub cluster_name: Option<String>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            default_mode: PolicyMode::Warn,
            failure_policy: FailurePolicy::Open,
            namespaces: Vec::new(),
            exemptions: Vec::new(),
            namespace_label: "pod-identity-webhook/mode".into(),
            cluster_name: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    /// HTTPS connections open at once; at the cap new ones wait in the listen backlog.
    pub max_connections: usize,
    /// How often certificate, associations and config files are checked for changes.
    pub reload_interval: Duration,
    /// After SIGTERM: how long to stay up (unready) so endpoints are removed before draining.
    pub shutdown_grace: Duration,
    /// After the grace period: how long in-flight requests get to finish.
    pub drain_timeout: Duration,
    /// HTTP/1.1: how long a request head may take from its first byte.
    pub header_read_timeout: Duration,
    /// HTTP/1.1: how long a keep-alive connection may sit idle; longer than the API server's
    /// 90 s, so that the client, not the webhook, closes an idle connection.
    pub idle_timeout: Duration,
    pub log_format: LogFormat,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8443".parse().expect("static address"),
            admin_listen: "0.0.0.0:8080".parse().expect("static address"),
            // Large pods (1,000 containers) stay far below this; the API server caps objects at 3 MiB.
            max_body_bytes: 6 * 1024 * 1024,
            max_connections: crate::server::MAX_CONNECTIONS,
            reload_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(20),
            header_read_timeout: crate::server::HEADER_READ_TIMEOUT,
            idle_timeout: crate::server::IDLE_TIMEOUT,
            log_format: LogFormat::Auto,
        }
    }
}

/// The resolved configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub tls: TlsSource,
    pub associations_file: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub namespace: Option<String>,
    pub eks: Option<EksSettings>,
    pub injection: InjectionSettings,
    pub policy: PolicySettings,
    /// The config file these settings came from, if any (watched for policy reloads).
    pub config_file: Option<PathBuf>,
    /// The flags these settings were resolved with, re-applied over the file on a reload.
    pub overrides: Overrides,
}

impl Settings {
    /// Settings for tests and local runs: self-signed, loopback, nothing else configured.
    pub fn local() -> Self {
        let server = ServerSettings {
            listen: "127.0.0.1:0".parse().expect("static address"),
            admin_listen: "127.0.0.1:0".parse().expect("static address"),
            shutdown_grace: Duration::ZERO,
            ..Default::default()
        };
        Self {
            server,
            tls: TlsSource::SelfSigned,
            associations_file: None,
            kubeconfig: None,
            namespace: None,
            eks: None,
            injection: InjectionSettings::default(),
            policy: PolicySettings::default(),
            config_file: None,
            overrides: Overrides::default(),
        }
    }
}

/// Reads and strictly parses a config file.
pub fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file_config(path, &text)
}

pub fn parse_file_config(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Values given on the command line or in the environment; `None` means "not given".
/// Kept apart from clap so that tests and other front ends can build settings too.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub port: Option<u16>,
    pub admin_listen: Option<SocketAddr>,
    pub metrics_port: Option<u16>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub self_signed: bool,
    pub associations: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub namespace: Option<String>,
    pub cluster_name: Option<String>,
    pub region: Option<String>,
    pub eks_endpoint: Option<String>,
    pub aws_default_region: Option<String>,
    pub sts_regional_endpoint: Option<bool>,
    pub token_audience: Option<String>,
    pub token_mount_path: Option<String>,
    pub token_expiration: Option<i64>,
    pub annotation_prefix: Option<String>,
    pub container_credentials_full_uri: Option<String>,
    pub container_credentials_audience: Option<String>,
    pub container_credentials_token_mount_path: Option<String>,
    pub container_credentials_token_volume_name: Option<String>,
    pub container_credentials_token_path: Option<String>,
    pub ipv6: bool,
    pub policy_default_mode: Option<PolicyMode>,
    pub failure_policy: Option<FailurePolicy>,
    pub max_body_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub reload_interval: Option<Duration>,
    pub shutdown_grace: Option<Duration>,
    pub drain_timeout: Option<Duration>,
    pub log_format: Option<LogFormat>,
    pub eks_sync_interval: Option<Duration>,
    pub eks_ttl: Option<Duration>,
    pub eks_negative_ttl: Option<Duration>,
    pub eks_max_wait: Option<Duration>,
    pub eks_ready_timeout: Option<Duration>,
    pub eks_concurrency: Option<usize>,
    pub eks_failure_mode: Option<FailureMode>,
}

impl Settings {
    /// Merges built-in defaults < config file < flags/environment, then validates the result.
    pub fn resolve(
        file: FileConfig,
        config_file: Option<PathBuf>,
        o: Overrides,
    ) -> Result<Self, ConfigError> {
        let overrides = o.clone();
        let mut server = ServerSettings::default();
        let sf = file.server.unwrap_or_default();
        server.listen = o.listen.or(file.listen).unwrap_or(server.listen);
        if let Some(port) = o.port {
            server.listen.set_port(port);
        }
        server.admin_listen = o
            .admin_listen
            .or(file.admin_listen)
            .unwrap_or(server.admin_listen);
        if let Some(port) = o.metrics_port {
            server.admin_listen.set_port(port);
        }
        server.max_body_bytes = o
            .max_body_bytes
            .or(sf.max_body_bytes)
            .unwrap_or(server.max_body_bytes);
        if server.max_body_bytes < 1024 {
            return Err(invalid(
                "max-body-bytes",
                "must be at least 1024 (a real AdmissionReview is several KiB)",
            ));
        }
        server.max_connections = o
            .max_connections
            .or(sf.max_connections)
            .unwrap_or(server.max_connections);
        if server.max_connections == 0 {
            return Err(invalid(
                "max-connections",
                "must be at least 1 (the API server needs a connection to reach the webhook)",
            ));
        }
        server.reload_interval = o
            .reload_interval
            .or(sf.reload_interval.map(|d| d.0))
            .unwrap_or(server.reload_interval);
        if server.reload_interval < Duration::from_millis(10) {
            return Err(invalid("reload-interval", "must be at least 10ms"));
        }
        server.shutdown_grace = o
            .shutdown_grace
            .or(sf.shutdown_grace.map(|d| d.0))
            .unwrap_or(server.shutdown_grace);
        server.drain_timeout = o
            .drain_timeout
            .or(sf.drain_timeout.map(|d| d.0))
            .unwrap_or(server.drain_timeout);
        if let Some(d) = sf.header_read_timeout {
            server.header_read_timeout = d.0;
        }
        if let Some(d) = sf.idle_timeout {
            server.idle_timeout = d.0;
        }
        if server.header_read_timeout < Duration::from_millis(10) {
            return Err(invalid("server.headerReadTimeout", "must be at least 10ms"));
        }
        if server.idle_timeout < server.header_read_timeout {
            return Err(invalid(
                "server.idleTimeout",
                format!(
                    "must be at least server.headerReadTimeout ({:?}); keep it above the API server's 90s",
                    server.header_read_timeout
                ),
            ));
        }
        server.log_format = o.log_format.or(sf.log_format).unwrap_or(server.log_format);
        if server.listen == server.admin_listen && server.listen.port() != 0 {
            return Err(invalid(
                "admin-listen",
                format!(
                    "{} is also the HTTPS listen address; give the admin port its own",
                    server.admin_listen
                ),
            ));
        }

        let tf = file.tls.unwrap_or_default();
        let cert = o.tls_cert.or(tf.cert);
        let key = o.tls_key.or(tf.key);
        let self_signed = o.self_signed || tf.self_signed.unwrap_or(false);
        let tls = match (cert, key, self_signed) {
            (Some(cert), Some(key), false) => TlsSource::Files { cert, key },
            (None, None, true) => TlsSource::SelfSigned,
            (Some(_), Some(_), true) => {
                return Err(invalid(
                    "tls",
                    "give either --tls-cert/--tls-key or --self-signed, not both",
                ));
            }
            (Some(_), None, _) => {
                return Err(invalid("tls-key", "--tls-cert needs --tls-key too"));
            }
            (None, Some(_), _) => {
                return Err(invalid("tls-cert", "--tls-key needs --tls-cert too"));
            }
            (None, None, false) => {
                return Err(invalid(
                    "tls",
                    "no certificate: give --tls-cert and --tls-key (for example from \
                     `pod-identity-webhook certs --out DIR`), or --self-signed for a local run",
                ));
            }
        };

        let fi = file.injection.unwrap_or_default();
        let d = InjectionSettings::default();
        let full_uri_default = if o.ipv6 {
            DEFAULT_CREDENTIALS_URI_V6.to_string()
        } else {
            d.container_credentials_full_uri.clone()
        };
        let injection = InjectionSettings {
            aws_default_region: o
                .aws_default_region
                .or(fi.aws_default_region)
                .filter(|r| !r.is_empty()),
            sts_regional_endpoint: o
                .sts_regional_endpoint
                .or(fi.sts_regional_endpoint)
                .unwrap_or(d.sts_regional_endpoint),
            token_audience: o
                .token_audience
                .or(fi.token_audience)
                .unwrap_or(d.token_audience),
            token_mount_path: o
                .token_mount_path
                .or(fi.token_mount_path)
                .unwrap_or(d.token_mount_path),
            token_expiration: o
                .token_expiration
                .or(fi.token_expiration)
                .unwrap_or(d.token_expiration),
            annotation_prefix: o
                .annotation_prefix
                .or(fi.annotation_prefix)
                .unwrap_or(d.annotation_prefix),
            container_credentials_full_uri: o
                .container_credentials_full_uri
                .or(fi.container_credentials_full_uri)
                .unwrap_or(full_uri_default),
            container_credentials_audience: o
                .container_credentials_audience
                .or(fi.container_credentials_audience)
                .unwrap_or(d.container_credentials_audience),
            container_credentials_token_mount_path: o
                .container_credentials_token_mount_path
                .or(fi.container_credentials_token_mount_path)
                .unwrap_or(d.container_credentials_token_mount_path),
            container_credentials_token_volume_name: o
                .container_credentials_token_volume_name
                .or(fi.container_credentials_token_volume_name)
                .unwrap_or(d.container_credentials_token_volume_name),
            container_credentials_token_path: o
                .container_credentials_token_path
                .or(fi.container_credentials_token_path)
                .unwrap_or(d.container_credentials_token_path),
            irsa_token_volume_name: d.irsa_token_volume_name,
            irsa_token_path: d.irsa_token_path,
        };
        injection.validate()?;

        let ef = file.eks.unwrap_or_default();
        let cluster_name = o.cluster_name.or(ef.cluster_name).filter(|c| !c.is_empty());
        let eks = match cluster_name {
            None => {
                if o.eks_endpoint.is_some() || ef.endpoint.is_some() {
                    return Err(invalid(
                        "eks-endpoint",
                        "an EKS endpoint was given without --cluster-name; name the cluster \
                         whose Pod Identity associations to read",
                    ));
                }
                None
            }
            Some(name) => {
                let mut e = EksSettings::new(name);
                e.region = o.region.or(ef.region).filter(|r| !r.is_empty());
                if let Some(r) = &e.region {
                    validate_region("region", r)?;
                }
                e.endpoint = o.eks_endpoint.or(ef.endpoint).filter(|u| !u.is_empty());
                if let Some(url) = &e.endpoint
                    && !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    return Err(invalid(
                        "eks-endpoint",
                        format!("`{url}` must be an http:// or https:// URL"),
                    ));
                }
                e.sync_interval = o
                    .eks_sync_interval
                    .or(ef.sync_interval.map(|d| d.0))
                    .unwrap_or(e.sync_interval);
                e.ttl = o.eks_ttl.or(ef.ttl.map(|d| d.0)).unwrap_or(e.ttl);
                e.negative_ttl = o
                    .eks_negative_ttl
                    .or(ef.negative_ttl.map(|d| d.0))
                    .unwrap_or(e.negative_ttl);
                e.max_wait = o
                    .eks_max_wait
                    .or(ef.max_wait.map(|d| d.0))
                    .unwrap_or(e.max_wait);
                e.ready_timeout = o
                    .eks_ready_timeout
                    .or(ef.ready_timeout.map(|d| d.0))
                    .unwrap_or(e.ready_timeout);
                e.concurrency = o
                    .eks_concurrency
                    .or(ef.concurrency)
                    .unwrap_or(e.concurrency);
                e.failure_mode = o
                    .eks_failure_mode
                    .or(ef.failure_mode)
                    .unwrap_or(e.failure_mode);
                if e.concurrency == 0 || e.concurrency > 64 {
                    return Err(invalid("eks.concurrency", "must be between 1 and 64"));
                }
                if e.ttl.is_zero() || e.negative_ttl.is_zero() || e.sync_interval.is_zero() {
                    return Err(invalid(
                        "eks",
                        "ttl, negativeTtl and syncInterval must be longer than zero",
                    ));
                }
                if e.negative_ttl > e.ttl {
                    return Err(invalid(
                        "eks.negativeTtl",
                        "must not be longer than eks.ttl (a missing association should be \
                         re-checked sooner than a present one)",
                    ));
                }
                if e.max_wait > Duration::from_secs(8) {
                    return Err(invalid(
                        "eks.maxWait",
                        "must be at most 8s: the API server calls webhooks with a 10s timeout",
                    ));
                }
                Some(e)
            }
        };

        let pf = file.policy.unwrap_or_default();
        let pd = PolicySettings::default();
        let policy = PolicySettings {
            default_mode: o
                .policy_default_mode
                .or(pf.default_mode)
                .unwrap_or(pd.default_mode),
            failure_policy: o
                .failure_policy
                .or(pf.failure_policy)
                .unwrap_or(pd.failure_policy),
            namespaces: pf.namespaces,
            exemptions: pf.exemptions,
            namespace_label: pf.namespace_label.unwrap_or(pd.namespace_label),
            cluster_name: pf
                .cluster_name
                .or_else(|| eks.as_ref().map(|e| e.cluster_name.clone())),
        };
        validate_policy(&policy)?;

        Ok(Settings {
            server,
            tls,
            associations_file: o.associations.or(file.associations_file),
            kubeconfig: o.kubeconfig.or(file.kubeconfig),
            namespace: o.namespace.or(file.namespace).filter(|n| !n.is_empty()),
            eks,
            injection,
            policy,
            config_file,
            overrides,
        })
    }
}

fn validate_policy(p: &PolicySettings) -> Result<(), ConfigError> {
    let glob = |key: &'static str, pattern: &str| {
        globset::Glob::new(pattern)
            .map(|_| ())
            .map_err(|e| invalid(key, format!("`{pattern}` is not a valid glob: {e}")))
    };
    for rule in &p.namespaces {
        glob("policy.namespaces[].match", &rule.pattern)?;
        for arn in rule.allowed_role_arns.iter().flatten() {
            glob("policy.namespaces[].allowedRoleArns", arn)?;
        }
    }
    for ex in &p.exemptions {
        if ex.matches('/').count() > 1 || ex.is_empty() {
            return Err(invalid(
                "policy.exemptions",
                format!("`{ex}` must be `namespace` or `namespace/serviceAccount`"),
            ));
        }
        glob("policy.exemptions", ex)?;
    }
    if p.namespace_label.is_empty() {
        return Err(invalid("policy.namespaceLabel", "must not be empty"));
    }
    Ok(())
}

/// Parses `key=value` style maps (used by a few flags); kept here so every front end agrees.
pub fn parse_kv_list(items: &[String]) -> Result<BTreeMap<String, String>, String> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("`{i}` is not key=value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn spec_example_config_parses() {
        let text = r#"
listen: 0.0.0.0:8443
adminListen: 0.0.0.0:8080
tls: {cert: /etc/webhook/certs/tls.crt, key: /etc/webhook/certs/tls.key}
associationsFile: /etc/webhook/associations.yaml
eks: {clusterName: prod, region: us-east-1, endpoint: null, syncInterval: 5m, ttl: 10m, negativeTtl: 15s, maxWait: 2s}
injection:
  awsDefaultRegion: us-east-1
  stsRegionalEndpoint: true
  tokenExpiration: 86400
  containerCredentialsFullUri: http://169.254.170.23/v1/credentials
policy:
  defaultMode: warn
  failurePolicy: open
  namespaces:
    - match: "team-*"
      mode: enforce
      allowedRoleArns: ["arn:aws:iam::111122223333:role/team-*"]
  exemptions: ["monitoring", "ci/deployer"]
  namespaceLabel: pod-identity-webhook/mode
"#;
        let file = parse_file_config(Path::new("c.yaml"), text).unwrap();
        let s = Settings::resolve(file, None, Overrides::default()).unwrap();
        let eks = s.eks.unwrap();
        assert_eq!(eks.cluster_name, "prod");
        assert_eq!(eks.sync_interval, Duration::from_secs(300));
        assert_eq!(eks.negative_ttl, Duration::from_secs(15));
        assert!(s.injection.sts_regional_endpoint);
        assert_eq!(s.policy.default_mode, PolicyMode::Warn);
        assert_eq!(s.policy.namespaces[0].mode, Some(PolicyMode::Enforce));
        assert_eq!(s.policy.cluster_name.as_deref(), Some("prod"));
    }

    #[test]
    fn connection_timeouts_come_from_the_file_and_are_checked() {
        let resolve = |server: &str| {
            let text = format!("tls: {{selfSigned: true}}\nserver: {server}\n");
            let file = parse_file_config(Path::new("c.yaml"), &text).unwrap();
            Settings::resolve(file, None, Overrides::default())
        };
        let s = resolve("{}").unwrap();
        assert_eq!(s.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.server.idle_timeout, Duration::from_secs(120));
        let s = resolve("{headerReadTimeout: 5s, idleTimeout: 5m}").unwrap();
        assert_eq!(s.server.header_read_timeout, Duration::from_secs(5));
        assert_eq!(s.server.idle_timeout, Duration::from_secs(300));
        let err = resolve("{headerReadTimeout: 30s, idleTimeout: 10s}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.idleTimeout"), "{err}");
        let err = resolve("{headerReadTimeout: 1ms}").unwrap_err().to_string();
        assert!(err.contains("server.headerReadTimeout"), "{err}");
    }

    #[test]
    fn the_connection_cap_comes_from_a_flag_over_the_file_and_is_checked() {
        let resolve = |server: &str, flag: Option<usize>| {
            let text = format!("tls: {{selfSigned: true}}\nserver: {server}\n");
            let file = parse_file_config(Path::new("c.yaml"), &text).unwrap();
            let o = Overrides {
                max_connections: flag,
                ..Overrides::default()
            };
            Settings::resolve(file, None, o)
        };
        let max = |server, flag| resolve(server, flag).unwrap().server.max_connections;
        assert_eq!(max("{}", None), 4096);
        assert_eq!(max("{maxConnections: 64}", None), 64);
        assert_eq!(max("{maxConnections: 64}", Some(128)), 128);
        let err = resolve("{maxConnections: 0}", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max-connections"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse_file_config(Path::new("c.yaml"), "policy:\n  defaultMod: enforce\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("defaultMod"), "{err}");
    }

    #[test]
    fn flags_win_over_file() {
        let file = parse_file_config(
            Path::new("c.yaml"),
            "listen: 0.0.0.0:9443\ninjection: {awsDefaultRegion: us-east-1}\ntls: {selfSigned: true}\n",
        )
        .unwrap();
        let o = Overrides {
            aws_default_region: Some("eu-west-1".into()),
            port: Some(10443),
            ..Default::default()
        };
        let s = Settings::resolve(file, None, o).unwrap();
        assert_eq!(s.injection.aws_default_region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.server.listen.port(), 10443);
    }

    #[test]
    fn missing_tls_says_what_to_do() {
        let err = Settings::resolve(FileConfig::default(), None, Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--self-signed"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_their_key() {
        let o = Overrides {
            self_signed: true,
            token_mount_path: Some("relative/path".into()),
            ..Default::default()
        };
        let err = Settings::resolve(FileConfig::default(), None, o)
            .unwrap_err()
            .to_string();
        assert!(err.contains("token-mount-path"), "{err}");
    }

    #[test]
    fn policy_modes_order_from_loose_to_strict() {
        assert!(PolicyMode::Enforce > PolicyMode::Warn);
        assert!(PolicyMode::Warn > PolicyMode::Off);
    }
}
