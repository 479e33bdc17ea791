//! The checks every [`Settings`] passes once, after the file and the flags are merged. Each
//! error names the key (file key and flag) and what to write instead.

use std::time::Duration;

use super::{Settings, SettingsError};
use crate::admission::injection::{InjectionSettings, MAX_TOKEN_EXPIRATION, MIN_TOKEN_EXPIRATION};
use crate::identity::eks_settings::EksSettings;
use crate::object::MAX_LIST_ENTRIES;
use crate::policy::Policy;

fn invalid(key: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        message: message.into(),
    }
}

impl Settings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        self.tls.source()?;
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(invalid(
                "adminListen (--admin-listen)",
                format!(
                    "{} is also the HTTPS listen address; give the admin port its own",
                    self.admin_listen
                ),
            ));
        }
        self.validate_server()?;
        validate_injection(&self.injection)?;
        // Checked whether or not a cluster is named: a bad value in the file is wrong now, not
        // only once someone adds `clusterName`.
        validate_eks(&self.eks)?;
        if !self.eks.enabled() && self.eks.endpoint.is_some() {
            return Err(invalid(
                "eks.endpoint (--eks-endpoint)",
                "an EKS endpoint was given without --cluster-name; name the cluster whose Pod \
                 Identity associations to read",
            ));
        }
        Policy::compile(&self.policy, None).map_err(|e| SettingsError::Invalid {
            key: e.key,
            message: e.message,
        })?;
        refuse_catch_all_exemptions(&self.policy)
    }

    fn validate_server(&self) -> Result<(), SettingsError> {
        let s = &self.server;
        if !(1024..=MAX_BODY_BYTES_BOUND).contains(&s.max_body_bytes) {
            return Err(invalid(
                "server.maxBodyBytes (--max-body-bytes)",
                format!(
                    "{} is out of range: give 1024 (a real AdmissionReview is several KiB) to \
                     {MAX_BODY_BYTES_BOUND} (64 MiB; the API server stores objects of at most 3 MiB, \
                     and every buffered body costs memory)",
                    s.max_body_bytes
                ),
            ));
        }
        if !(1..=MAX_CONNECTIONS_BOUND).contains(&s.max_connections) {
            return Err(invalid(
                "server.maxConnections (--max-connections)",
                format!(
                    "{} is out of range: give 1 (the API server needs a connection to reach the \
                     webhook) to {MAX_CONNECTIONS_BOUND}",
                    s.max_connections
                ),
            ));
        }
        if s.reload_interval < Duration::from_millis(10) {
            return Err(invalid(
                "server.reloadInterval (--reload-interval)",
                "must be at least 10ms",
            ));
        }
        if s.header_read_timeout < Duration::from_millis(10) {
            return Err(invalid(
                "server.headerReadTimeout (--header-read-timeout)",
                "must be at least 10ms",
            ));
        }
        if s.idle_timeout < s.header_read_timeout {
            return Err(invalid(
                "server.idleTimeout (--idle-timeout)",
                format!(
                    "must be at least server.headerReadTimeout ({}); keep it above the API \
                     server's 90s",
                    humantime::format_duration(s.header_read_timeout)
                ),
            ));
        }
        let c = &s.connections;
        for (key, d) in [
            (
                "server.connections.handshakeTimeout (--handshake-timeout)",
                c.handshake_timeout,
            ),
            (
                "server.connections.bodyReadTimeout (--body-read-timeout)",
                c.body_read_timeout,
            ),
            (
                "server.connections.bodyTimeout (--body-timeout)",
                c.body_timeout,
            ),
            (
                "server.connections.http2KeepAliveInterval (--http2-keep-alive-interval)",
                c.http2_keep_alive_interval,
            ),
            (
                "server.connections.http2KeepAliveTimeout (--http2-keep-alive-timeout)",
                c.http2_keep_alive_timeout,
            ),
            (
                "server.connections.unreadyAfterBlocked (--unready-after-blocked)",
                c.unready_after_blocked,
            ),
        ] {
            if d < Duration::from_millis(10) {
                return Err(invalid(key, "must be at least 10ms"));
            }
        }
        if c.http2_max_concurrent_streams == 0 {
            return Err(invalid(
                "server.connections.http2MaxConcurrentStreams (--http2-max-concurrent-streams)",
                "must be at least 1",
            ));
        }
        if c.admin_max_connections == 0 {
            return Err(invalid(
                "server.connections.adminMaxConnections (--admin-max-connections)",
                "must be at least 1 (probes need a connection)",
            ));
        }
        if c.body_memory_bytes < s.max_body_bytes {
            return Err(invalid(
                "server.connections.bodyMemoryBytes (--body-memory-bytes)",
                format!(
                    "must be at least server.maxBodyBytes ({}), or no request of the largest size could be read",
                    s.max_body_bytes
                ),
            ));
        }
        Ok(())
    }
}

fn validate_injection(i: &InjectionSettings) -> Result<(), SettingsError> {
    fn abs_path(key: &'static str, v: &str) -> Result<(), SettingsError> {
        if !v.starts_with('/') || v.contains("..") {
            return Err(invalid(
                key,
                format!("`{v}` must be an absolute path without `..`"),
            ));
        }
        Ok(())
    }
    abs_path(
        "injection.tokenMountPath (--token-mount-path)",
        &i.token_mount_path,
    )?;
    abs_path(
        "injection.containerCredentialsTokenMountPath (--container-credentials-token-mount-path)",
        &i.container_credentials_token_mount_path,
    )?;
    let path = &i.container_credentials_token_path;
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
        return Err(invalid(
            "injection.containerCredentialsTokenPath (--container-credentials-token-path)",
            format!("`{path}` must be a relative file path inside the mount"),
        ));
    }
    let volume = &i.container_credentials_token_volume_name;
    if !is_dns_label(volume) {
        return Err(invalid(
            "injection.containerCredentialsTokenVolumeName (--container-credentials-token-volume-name)",
            format!("`{volume}` is not a valid volume name (DNS label, at most 63 characters)"),
        ));
    }
    if i.token_audience.is_empty() {
        return Err(invalid(
            "injection.tokenAudience (--token-audience)",
            "must not be empty",
        ));
    }
    if i.container_credentials_audience.is_empty() {
        return Err(invalid(
            "injection.containerCredentialsAudience (--container-credentials-audience)",
            "must not be empty",
        ));
    }
    let uri = &i.container_credentials_full_uri;
    if !(uri.starts_with("http://") || uri.starts_with("https://")) {
        return Err(invalid(
            "injection.containerCredentialsFullUri (--container-credentials-full-uri)",
            format!("`{uri}` must be an http:// or https:// URL"),
        ));
    }
    if !(MIN_TOKEN_EXPIRATION..=MAX_TOKEN_EXPIRATION).contains(&i.token_expiration) {
        return Err(invalid(
            "injection.tokenExpiration (--token-expiration)",
            format!(
                "{} must be between {MIN_TOKEN_EXPIRATION} and {MAX_TOKEN_EXPIRATION} seconds",
                i.token_expiration
            ),
        ));
    }
    let prefix = &i.annotation_prefix;
    if !is_dns_subdomain(prefix) {
        return Err(invalid(
            "injection.annotationPrefix (--annotation-prefix)",
            format!(
                "`{}` is not an annotation prefix: write a DNS subdomain such as \
                 eks.amazonaws.com (lowercase letters, digits, `-` and `.`, at most 253 characters)",
                prefix.escape_debug()
            ),
        ));
    }
    if let Some(region) = &i.aws_default_region {
        validate_region("injection.awsDefaultRegion (--aws-default-region)", region)?;
    }
    let entries: Vec<&str> = i.sts_no_proxy_entries().collect();
    if i.sts_no_proxy.is_some() && entries.is_empty()
        || entries.len() > 16
        || entries
            .iter()
            .any(|e| e.len() > 253 || e.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(invalid(
            "injection.stsNoProxy (--sts-no-proxy)",
            "give 1 to 16 comma-separated host names, addresses or CIDR blocks, without spaces, \
             each at most 253 characters",
        ));
    }
    for (key, value) in [
        (
            "injection.maxContainers (--max-containers)",
            i.max_containers,
        ),
        ("injection.maxVolumes (--max-volumes)", i.max_volumes),
    ] {
        if !(1..=MAX_LIST_ENTRIES).contains(&value) {
            return Err(invalid(
                key,
                format!(
                    "{value} is out of range: give 1 to {MAX_LIST_ENTRIES} (the most entries \
                     of a pod's list the webhook reads)"
                ),
            ));
        }
    }
    Ok(())
}

fn validate_eks(e: &EksSettings) -> Result<(), SettingsError> {
    if let Some(region) = &e.region {
        validate_region("eks.region (--region)", region)?;
    }
    if let Some(url) = &e.endpoint
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(invalid(
            "eks.endpoint (--eks-endpoint)",
            format!("`{url}` must be an http:// or https:// URL"),
        ));
    }
    if e.concurrency == 0 || e.concurrency > 64 {
        return Err(invalid(
            "eks.concurrency (--eks-concurrency)",
            "must be between 1 and 64",
        ));
    }
    if e.ttl.is_zero() || e.negative_ttl.is_zero() || e.sync_interval.is_zero() {
        return Err(invalid(
            "eks.ttl, eks.negativeTtl, eks.syncInterval",
            "must be longer than zero",
        ));
    }
    if e.negative_ttl > e.ttl {
        return Err(invalid(
            "eks.negativeTtl (--eks-negative-ttl)",
            "must not be longer than eks.ttl (a missing association should be re-checked sooner \
             than a present one)",
        ));
    }
    if e.max_wait.is_zero() || e.max_wait > Duration::from_secs(8) {
        return Err(invalid(
            "eks.maxWait (--eks-max-wait)",
            "must be longer than zero (an admission would never wait for EKS) and at most 8s \
             (the API server calls webhooks with a 10s timeout)",
        ));
    }
    Ok(())
}

fn validate_region(key: &'static str, region: &str) -> Result<(), SettingsError> {
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

/// The largest `server.maxBodyBytes`: far above the 3 MiB the API server stores, far below what
/// would let a few clients exhaust memory.
pub const MAX_BODY_BYTES_BOUND: usize = 64 * 1024 * 1024;
/// The largest `server.maxConnections`: beyond it the cap protects nothing (each connection holds
/// buffers and a file descriptor).
pub const MAX_CONNECTIONS_BOUND: usize = 65536;

/// Namespace names an exemption pattern is tried on to see whether it exempts everything: DNS
/// labels of every shape (a digit first, one character, dashes, the usual names).
const PROBE_NAMESPACES: [&str; 6] = ["a", "0", "default", "team-a", "z9-prod-1", "kube-system"];

/// A catch-all exemption (`*`, `*/*`, `**`, `?*`, `[a-z0-9]*`, ...) turns policy off in every
/// namespace; with `enforce` anywhere it silently undoes the enforcement, so it is refused. With
/// only `warn` and `off` it exempts nothing that matters and is accepted.
fn refuse_catch_all_exemptions(p: &crate::policy::PolicySettings) -> Result<(), SettingsError> {
    use crate::policy::PolicyMode::Enforce;
    let enforce = p.default_mode == Enforce || p.namespaces.iter().any(|r| r.mode == Some(Enforce));
    if !enforce {
        return Ok(());
    }
    for pattern in &p.exemptions {
        // Compiled as the policy compiles it: `*` stops at `/`.
        let Ok(glob) = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
        else {
            continue;
        };
        let m = glob.compile_matcher();
        let catch_all = PROBE_NAMESPACES.iter().all(|ns| {
            if pattern.contains('/') {
                PROBE_NAMESPACES
                    .iter()
                    .all(|sa| m.is_match(format!("{ns}/{sa}")))
            } else {
                m.is_match(ns)
            }
        });
        if catch_all {
            return Err(invalid(
                "policy.exemptions",
                format!(
                    "`{pattern}` exempts every namespace (or every ServiceAccount), which turns \
                     the enforce mode off everywhere; list the namespaces (or \
                     namespace/serviceAccount pairs) to exempt, or set the mode to warn or off"
                ),
            ));
        }
    }
    Ok(())
}

/// A DNS subdomain (RFC 1123), as Kubernetes requires of annotation key prefixes.
fn is_dns_subdomain(v: &str) -> bool {
    v.len() <= 253 && v.split('.').all(is_dns_label)
}

fn is_dns_label(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;

    #[test]
    fn sts_no_proxy_takes_a_short_list_of_entries_without_spaces() {
        let with = |v: &str| {
            Settings::from_yaml(&format!(
                "tls:\n  selfSigned: true\ninjection:\n  stsNoProxy: {v:?}\n"
            ))
        };
        let ok = with("sts.eu-west-1.amazonaws.com, 10.0.0.0/8").unwrap();
        assert_eq!(
            ok.injection.sts_no_proxy_entries().collect::<Vec<_>>(),
            ["sts.eu-west-1.amazonaws.com", "10.0.0.0/8"]
        );
        let many = vec!["a.example"; 17].join(",");
        for bad in [" , ", "sts.amazonaws.com other", many.as_str()] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains("injection.stsNoProxy (--sts-no-proxy)"),
                "{bad}: {e}"
            );
        }
    }
}
