//! Pod mutation (docs/contract.md §2): a pure function from (pod, identity, settings) to a JSON Patch.
//!
//! The pod is read into a narrow view holding only what the rules look at; everything else in
//! the object is never parsed, so it cannot be lost. The patch is a list of targeted `add`
//! operations (`/spec/containers/0/env/-`, …); whole containers or lists are never rewritten.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::Serialize;

use super::injection::InjectionSettings;
use super::proxy;
use crate::identity::sa::{TOKEN_EXPIRATION, TOKEN_EXPIRATION_BOUNDS, parse_token_expiration};
use crate::identity::{IdentityKind, ResolvedIdentity};
use crate::object::{ObjectView, SpecView};

pub const POD_IDENTITY_LABEL: &str = "eks.amazonaws.com/pod-identity";
/// [`POD_IDENTITY_LABEL`] in the pod's labels, as a JSON Pointer ("/" in a key is "~1").
const LABEL_POINTER: &str = "/metadata/labels/eks.amazonaws.com~1pod-identity";
pub const SKIP_LABEL: &str = "eks.amazonaws.com/skip-pod-identity-webhook";
pub const SKIP_CONTAINERS: &str = "skip-containers";

pub const ENV_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
pub const ENV_AUTH_TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
pub const ENV_ROLE_ARN: &str = "AWS_ROLE_ARN";
pub const ENV_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
pub const ENV_STS_REGIONAL: &str = "AWS_STS_REGIONAL_ENDPOINTS";
pub const ENV_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
pub const ENV_REGION: &str = "AWS_REGION";

/// Why a pod was left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    MirrorPod,
    OptOutLabel,
}

impl Skip {
    /// Checks the pod-level reasons to leave a pod untouched (docs/contract.md §2 "Untouched").
    pub fn check(pod: &ObjectView<'_>) -> Option<Skip> {
        if pod.metadata.is_mirror_pod() {
            return Some(Skip::MirrorPod);
        }
        // Any value opts out, except an explicit "false" (the label reads as a switch).
        if pod
            .label(SKIP_LABEL)
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("false"))
        {
            return Some(Skip::OptOutLabel);
        }
        None
    }
}

/// Why a pod is too large for the mutating webhook, when it is: more containers (of the three
/// kinds together) or volumes than the settings allow. Checked before anything is resolved or
/// written, so the work and the answer for a pod of any shape stay small (issue 21).
pub fn too_large(spec: &SpecView<'_>, settings: &InjectionSettings) -> Option<String> {
    let containers = spec.container_count();
    if containers > settings.max_containers {
        return Some(format!(
            "pod has {containers} containers (containers, initContainers and ephemeralContainers \
             together); pod-identity-webhook admits pods of at most {} \
             (injection.maxContainers): split the pod",
            settings.max_containers
        ));
    }
    let volumes = spec.volume_count();
    if volumes > settings.max_volumes {
        return Some(format!(
            "pod has {volumes} volumes; pod-identity-webhook admits pods of at most {} \
             (injection.maxVolumes): split the pod",
            settings.max_volumes
        ));
    }
    None
}

/// The result of mutating one pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mutation<'a> {
    /// Targeted `add` operations; empty when the pod already carries everything.
    pub patch: Patch<'a>,
    /// Admission warnings for the user (each short).
    pub warnings: Vec<String>,
}

/// A JSON Patch of `add` operations, typed rather than built from `serde_json::Value`s: it is
/// made for every pod, and typed values borrow their strings and serialise without maps.
/// Object keys serialise in sorted order, as `Value` maps would (the same bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Patch<'a>(pub Vec<Add<'a>>);

/// `{"op":"add","path":…,"value":…}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Add<'a> {
    op: &'static str,
    /// A JSON Pointer (RFC 6901), already escaped.
    pub path: String,
    pub value: Item<'a>,
}

/// What an `add` puts in the pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Item<'a> {
    Env(EnvVar<'a>),
    Mount(Mount<'a>),
    Volume(Volume<'a>),
    /// The pod's first labels: `{"eks.amazonaws.com/pod-identity": "enabled"}`.
    Labels(PodIdentityLabel),
    /// The pod's first metadata, when it had none: `{"labels": {…}}`.
    Metadata(PodMetadata),
    Text(&'static str),
    /// A value written in place of the pod's own (a `NO_PROXY` with the agent's addresses).
    String(String),
    List(Vec<Item<'a>>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvVar<'a> {
    pub name: &'a str,
    pub value: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount<'a> {
    pub mount_path: &'a str,
    pub name: &'a str,
    pub read_only: bool,
}

/// A projected ServiceAccount token volume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Volume<'a> {
    pub name: &'a str,
    pub projected: Projected<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projected<'a> {
    pub sources: [Source<'a>; 1],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source<'a> {
    pub service_account_token: TokenProjection<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenProjection<'a> {
    pub audience: &'a str,
    pub expiration_seconds: i64,
    pub path: &'a str,
}

/// `{POD_IDENTITY_LABEL: value}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodIdentityLabel {
    #[serde(rename = "eks.amazonaws.com/pod-identity")]
    pub value: &'static str,
}

/// `{"labels": {POD_IDENTITY_LABEL: value}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodMetadata {
    pub labels: PodIdentityLabel,
}

impl Mutation<'_> {
    /// Whether the patch gives some container the identity's credentials (the
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` or `AWS_ROLE_ARN` pair), not just the region, STS or
    /// mount extras: a pod whose containers set their own credential variables gets none.
    pub fn injects_credentials(&self) -> bool {
        fn credential(item: &Item<'_>) -> bool {
            match item {
                Item::Env(e) => e.name == ENV_FULL_URI || e.name == ENV_ROLE_ARN,
                Item::List(items) => items.iter().any(credential),
                _ => false,
            }
        }
        self.patch.0.iter().any(|op| credential(&op.value))
    }
}

impl Patch<'_> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same patch as `json-patch`'s type, to apply it (tests, offline checks).
    pub fn to_json_patch(&self) -> json_patch::Patch {
        let value = serde_json::to_value(self).expect("a typed patch always serialises");
        serde_json::from_value(value).expect("a typed patch is a valid JSON Patch")
    }
}

/// Computes the patch that gives `pod` its identity (docs/contract.md §2). Pure: the webhook calls it with
/// the pod of a request, `check` with a pod read from a manifest.
pub fn mutate_pod<'a>(
    pod: &ObjectView<'_>,
    identity: &'a ResolvedIdentity,
    settings: &'a InjectionSettings,
) -> Mutation<'a> {
    let mut ops: Vec<Add<'a>> = Vec::new();
    let mut warnings = Vec::new();
    let prefix = settings.annotation_prefix.as_str();
    let sa = &identity.service_account;

    let (volume_name, mount_path, token_path, audience) = match &identity.kind {
        IdentityKind::PodIdentity(_) => (
            settings.container_credentials_token_volume_name.as_str(),
            settings.container_credentials_token_mount_path.as_str(),
            settings.container_credentials_token_path.as_str(),
            settings.container_credentials_audience.as_str(),
        ),
        IdentityKind::Irsa { .. } => (
            settings.irsa_token_volume_name.as_str(),
            settings.token_mount_path.as_str(),
            settings.irsa_token_path.as_str(),
            sa.audience.as_deref().unwrap_or(&settings.token_audience),
        ),
    };

    let token_file = {
        let path = [mount_path.trim_end_matches('/'), "/", token_path].concat();
        if pod.is_windows() {
            format!("C:{}", path.replace('/', "\\"))
        } else {
            path
        }
    };

    // Pod annotation > ServiceAccount annotation > configured default; within what the API
    // server issues (600 s .. 48 h).
    let expiration = pod
        .metadata
        .prefixed_annotation(prefix, TOKEN_EXPIRATION)
        .and_then(parse_token_expiration)
        .or(sa.token_expiration)
        .unwrap_or(settings.token_expiration)
        .clamp(
            *TOKEN_EXPIRATION_BOUNDS.start(),
            *TOKEN_EXPIRATION_BOUNDS.end(),
        );

    let sts_regional = sa
        .sts_regional_endpoints
        .unwrap_or(settings.sts_regional_endpoint);

    // The mode's pair, in the order docs/contract.md §2 appends them.
    let token_file: Cow<'a, str> = Cow::Owned(token_file);
    let pair: [(&str, Cow<'a, str>); 2] = match &identity.kind {
        IdentityKind::PodIdentity(_) => [
            (
                ENV_FULL_URI,
                settings.container_credentials_full_uri.as_str().into(),
            ),
            (ENV_AUTH_TOKEN_FILE, token_file),
        ],
        IdentityKind::Irsa { role_arn } => [
            (ENV_ROLE_ARN, role_arn.as_str().into()),
            (ENV_WEB_IDENTITY_TOKEN_FILE, token_file),
        ],
    };

    let skipped: BTreeSet<&str> = pod
        .metadata
        .prefixed_annotation(prefix, SKIP_CONTAINERS)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();

    let mut injected_any = false;
    for (list, i, c) in pod.spec.all_containers() {
        if skipped.contains(&*c.name) {
            continue;
        }
        injected_any = true;
        let has_env = |name: &str| c.has_env(name);

        let mut env: Vec<Item<'a>> = Vec::with_capacity(5);
        if sts_regional && !has_env(ENV_STS_REGIONAL) {
            env.push(env_var(ENV_STS_REGIONAL, "regional".into()));
        }
        if let Some(region) = &settings.aws_default_region
            && !has_env(ENV_DEFAULT_REGION)
            && !has_env(ENV_REGION)
        {
            env.push(env_var(ENV_DEFAULT_REGION, region.as_str().into()));
            env.push(env_var(ENV_REGION, region.as_str().into()));
        }
        let injects_pair = !pair.iter().any(|(name, _)| has_env(name));
        if injects_pair {
            for (name, value) in &pair {
                env.push(env_var(name, value.clone()));
            }
        }
        let container = format!("/spec/{list}/{i}");
        // Behind a proxy, what the credentials come from goes into NO_PROXY, or the SDK's
        // requests go to the proxy (docs/injection.md, "Proxies"): the agent's addresses for
        // Pod Identity; for IRSA only the STS endpoints the user names.
        let bypass: Vec<&str> = match &identity.kind {
            IdentityKind::PodIdentity(_) => proxy::AGENT_ADDRESSES.to_vec(),
            IdentityKind::Irsa { .. } => settings.sts_no_proxy_entries().collect(),
        };
        if injects_pair && !bypass.is_empty() && proxy::uses_proxy_settings(c) {
            let mut listed = false;
            for (j, var) in c.env.iter().flatten().enumerate() {
                if !var.name.eq_ignore_ascii_case(proxy::NO_PROXY) {
                    continue;
                }
                listed = true;
                match &var.value {
                    Some(value) => {
                        if let Some(extended) = proxy::with_entries(value, &bypass) {
                            // `add` on an existing member replaces its value (RFC 6902 4.1).
                            ops.push(add(
                                format!("{container}/env/{j}/value"),
                                Item::String(extended),
                            ));
                        }
                    }
                    None => warnings.push(format!(
                        "container {} takes {} from a reference: make sure it lists {}, or \
                         credential requests go through the proxy",
                        &*c.name,
                        &*var.name,
                        bypass.join(" and ")
                    )),
                }
            }
            if !listed {
                let all: Cow<'a, str> = bypass.join(",").into();
                env.push(env_var(proxy::NO_PROXY, all.clone()));
                env.push(env_var(proxy::NO_PROXY_LOWER, all));
            }
        }
        append(&mut ops, &container, "env", &c.env, env);

        let mounted = c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == volume_name || m.mount_path == mount_path);
        if !mounted {
            let mount = Item::Mount(Mount {
                mount_path,
                name: volume_name,
                read_only: true,
            });
            append(
                &mut ops,
                &container,
                "volumeMounts",
                &c.volume_mounts,
                vec![mount],
            );
        }
    }

    // A pod whose every container is skipped needs no token volume (nothing reads it).
    if injected_any {
        let has_volume = pod
            .spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == volume_name);
        if !has_volume {
            let volume = Item::Volume(Volume {
                name: volume_name,
                projected: Projected {
                    sources: [Source {
                        service_account_token: TokenProjection {
                            audience,
                            expiration_seconds: expiration,
                            path: token_path,
                        },
                    }],
                },
            });
            append(
                &mut ops,
                "/spec",
                "volumes",
                &pod.spec.volumes,
                vec![volume],
            );
        }
    }

    if let IdentityKind::PodIdentity(_) = identity.kind {
        if injected_any && pod.label(POD_IDENTITY_LABEL).is_none() {
            let label = PodIdentityLabel { value: "enabled" };
            ops.push(match (&pod.metadata.labels, pod.metadata.present) {
                (Some(_), _) => add(LABEL_POINTER.into(), Item::Text("enabled")),
                (None, true) => add("/metadata/labels".into(), Item::Labels(label)),
                // No metadata at all (never from the API server, but a patch must apply).
                (None, false) => add(
                    "/metadata".into(),
                    Item::Metadata(PodMetadata { labels: label }),
                ),
            });
        }
        if pod.spec.host_network == Some(true) {
            warnings.push(
                "hostNetwork pod: the EKS Pod Identity agent may not serve it; prefer IRSA"
                    .to_string(),
            );
        }
    }

    Mutation {
        patch: Patch(ops),
        warnings,
    }
}

fn env_var<'a>(name: &'a str, value: Cow<'a, str>) -> Item<'a> {
    Item::Env(EnvVar { name, value })
}

fn add(path: String, value: Item<'_>) -> Add<'_> {
    Add {
        op: "add",
        path,
        value,
    }
}

/// Appends items to the list `field` of the object at `parent` (a JSON Pointer whose tokens
/// need no escaping), creating the list only when the object has none.
fn append<'a, T>(
    ops: &mut Vec<Add<'a>>,
    parent: &str,
    field: &str,
    existing: &Option<T>,
    items: Vec<Item<'a>>,
) {
    if items.is_empty() {
        return;
    }
    if existing.is_some() {
        for item in items {
            ops.push(add([parent, "/", field, "/-"].concat(), item));
        }
    } else {
        ops.push(add([parent, "/", field].concat(), Item::List(items)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_is_written_under_its_key() {
        let label = serde_json::to_value(PodIdentityLabel { value: "enabled" }).unwrap();
        assert_eq!(label, serde_json::json!({POD_IDENTITY_LABEL: "enabled"}));
    }

    #[test]
    fn the_label_pointer_is_the_label_key_escaped() {
        let escaped = POD_IDENTITY_LABEL.replace('~', "~0").replace('/', "~1");
        assert_eq!(LABEL_POINTER, format!("/metadata/labels/{escaped}"));
    }
}
