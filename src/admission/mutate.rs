//! Pod mutation (SPEC §2): a pure function from (pod, identity, settings) to a JSON Patch.
//!
//! The pod is read into a narrow view holding only what the rules look at; everything else in
//! the object is never parsed, so it cannot be lost. The patch is a list of targeted `add`
//! operations (`/spec/containers/0/env/-`, …); whole containers or lists are never rewritten.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{Value, json};

use crate::config::{InjectionSettings, MAX_TOKEN_EXPIRATION, MIN_TOKEN_EXPIRATION};
use crate::identity::sa::{TOKEN_EXPIRATION, annotation, parse_token_expiration};
use crate::identity::{IdentityKind, ResolvedIdentity};

use super::pod::PodView;

pub const POD_IDENTITY_LABEL: &str = "eks.amazonaws.com/pod-identity";
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
    /// Checks the pod-level reasons to leave a pod untouched (SPEC §2 "Untouched").
    pub fn check(pod: &PodView) -> Option<Skip> {
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

/// The result of mutating one pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mutation {
    /// Targeted `add` operations; empty when the pod already carries everything.
    pub patch: Patch,
    /// Admission warnings for the user (each short).
    pub warnings: Vec<String>,
}

/// Computes the patch that gives `pod` its identity (SPEC §2).
pub fn mutate_pod(
    pod: &PodView,
    identity: &ResolvedIdentity,
    settings: &InjectionSettings,
) -> Mutation {
    let mut ops: Vec<PatchOperation> = Vec::new();
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
        let path = format!("{}/{}", mount_path.trim_end_matches('/'), token_path);
        if pod.is_windows() {
            format!("C:{}", path.replace('/', "\\"))
        } else {
            path
        }
    };

    // Pod annotation > ServiceAccount annotation > configured default; minimum 600 s.
    let expiration = annotation(
        pod.metadata.annotations.iter().flatten(),
        prefix,
        TOKEN_EXPIRATION,
    )
    .and_then(parse_token_expiration)
    .or(sa.token_expiration)
    .unwrap_or(settings.token_expiration)
    .clamp(MIN_TOKEN_EXPIRATION, MAX_TOKEN_EXPIRATION);

    let sts_regional = sa
        .sts_regional_endpoints
        .unwrap_or(settings.sts_regional_endpoint);

    // The mode's pair, in the order the SPEC appends them.
    let pair: [(&str, String); 2] = match &identity.kind {
        IdentityKind::PodIdentity(_) => [
            (
                ENV_FULL_URI,
                settings.container_credentials_full_uri.clone(),
            ),
            (ENV_AUTH_TOKEN_FILE, token_file),
        ],
        IdentityKind::Irsa { role_arn } => [
            (ENV_ROLE_ARN, role_arn.clone()),
            (ENV_WEB_IDENTITY_TOKEN_FILE, token_file),
        ],
    };

    let skipped: Vec<&str> = annotation(
        pod.metadata.annotations.iter().flatten(),
        prefix,
        SKIP_CONTAINERS,
    )
    .map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default();

    let mut injected_any = false;
    for (list, i, c) in pod.spec.all_containers() {
        if skipped.contains(&c.name.as_str()) {
            continue;
        }
        injected_any = true;
        let has_env = |name: &str| c.has_env(name);

        let mut env: Vec<Value> = Vec::with_capacity(5);
        if sts_regional && !has_env(ENV_STS_REGIONAL) {
            env.push(env_var(ENV_STS_REGIONAL, "regional"));
        }
        if let Some(region) = &settings.aws_default_region
            && !has_env(ENV_DEFAULT_REGION)
            && !has_env(ENV_REGION)
        {
            env.push(env_var(ENV_DEFAULT_REGION, region));
            env.push(env_var(ENV_REGION, region));
        }
        if !pair.iter().any(|(name, _)| has_env(name)) {
            for (name, value) in &pair {
                env.push(env_var(name, value));
            }
        }
        append(
            &mut ops,
            &["spec", list, &i.to_string(), "env"],
            &c.env,
            env,
        );

        let mounted = c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == volume_name || m.mount_path == mount_path);
        if !mounted {
            let mount = json!({"name": volume_name, "readOnly": true, "mountPath": mount_path});
            append(
                &mut ops,
                &["spec", list, &i.to_string(), "volumeMounts"],
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
            let volume = json!({
                "name": volume_name,
                "projected": {"sources": [{"serviceAccountToken": {
                    "audience": audience,
                    "expirationSeconds": expiration,
                    "path": token_path,
                }}]}
            });
            append(
                &mut ops,
                &["spec", "volumes"],
                &pod.spec.volumes,
                vec![volume],
            );
        }
    }

    if let IdentityKind::PodIdentity(_) = identity.kind {
        if injected_any && pod.label(POD_IDENTITY_LABEL).is_none() {
            match pod.metadata.labels {
                Some(_) => ops.push(add(
                    &["metadata", "labels", POD_IDENTITY_LABEL],
                    Value::String("enabled".into()),
                )),
                None => ops.push(add(
                    &["metadata", "labels"],
                    json!({POD_IDENTITY_LABEL: "enabled"}),
                )),
            }
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

fn env_var(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

/// Appends items to a list, creating the list only when the pod has none.
fn append<T>(
    ops: &mut Vec<PatchOperation>,
    list: &[&str],
    existing: &Option<T>,
    items: Vec<Value>,
) {
    if items.is_empty() {
        return;
    }
    if existing.is_some() {
        let mut path = list.to_vec();
        path.push("-");
        for item in items {
            ops.push(add(&path, item));
        }
    } else {
        ops.push(add(list, Value::Array(items)));
    }
}
