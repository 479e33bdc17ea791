//! Issue 28 on the real API server: a pod the mutating webhook did not see (its configuration
//! gone, the validating one in place) is refused in an enforce namespace with the message
//! saying so; once the mutating webhook is back, the same pod is admitted, mutated.

use libtest_mimic::Failed;

use super::support::cases::admin_body;
use super::support::control_plane::{ControlPlane, WebhookProcess, binaries};
use super::{POLICY, associations, ensure, env_names, namespace, pod_yaml, service_account};

/// Its own control plane: deleting the mutating configuration must not touch the other cases.
pub fn a_pod_the_mutating_webhook_missed_is_refused_in_an_enforce_namespace(
    _tier: &super::Tier,
) -> Result<(), Failed> {
    let plane = ControlPlane::start(&binaries()?);
    let webhook = WebhookProcess::start(&plane, POLICY, &associations(&[("strict-m", "carts")]));
    let (mutating, validating): (Vec<_>, Vec<_>) = webhook
        .configurations()
        .into_iter()
        .partition(|doc| doc["kind"] == "MutatingWebhookConfiguration");
    ensure(
        !mutating.is_empty() && !validating.is_empty(),
        "the shipped manifests have both configurations",
    )?;
    for doc in &validating {
        plane.apply(&doc.to_string());
    }
    namespace(&plane, "strict-m");
    service_account(&plane, "strict-m", "carts", &[]);

    let pod = pod_yaml("strict-m", "carts-0", "carts");
    let out = plane.kubectl_stdin(&["apply", "-f", "-"], Some(pod.as_bytes()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure(
        !out.status.success(),
        "a pod without its credentials was admitted",
    )?;
    for part in [
        "admission webhook \"validate.pod-identity-webhook.io\" denied the request",
        "pod strict-m/carts-0 was admitted without the credentials of its ServiceAccount \"carts\"'s Pod Identity association",
        "the mutating webhook did not run or did not see it",
    ] {
        ensure(
            stderr.contains(part),
            format!("kubectl's message lacks {part:?}: {stderr}"),
        )?;
    }
    let metrics = admin_body(webhook.admin_port, "/metrics");
    ensure(
        metrics.contains(
            "pod_identity_webhook_admission_missed_injection_total{outcome=\"denied\"} 1",
        ),
        format!("not counted: {metrics}"),
    )?;

    // The retry, once the mutating webhook sees pods again: admitted, with the credentials.
    for doc in &mutating {
        plane.apply(&doc.to_string());
    }
    plane.apply(&pod);
    let admitted = plane.get_json("pod", "strict-m", "carts-0");
    ensure(
        env_names(&admitted).contains(&"AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string()),
        format!("not mutated: {admitted}"),
    )
}
