//! docs/contract.md §2, rule by rule, on the pure mutation: (pod JSON, identity, settings) → patch. Every
//! patch is applied with json-patch to the pod and the result is read back; every mutated pod
//! is mutated a second time, which must add nothing.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use pod_identity_webhook::admission::mutate::{Skip, mutate_pod};
use pod_identity_webhook::identity::file::FileSource;
use pod_identity_webhook::identity::{
    Association, AssociationSummary, Freshness, Identities, IdentityError, IdentityKind,
    ResolvedIdentity, ServiceAccountInfo, ServiceAccountStore,
};
use pod_identity_webhook::object::ObjectView as PodView;
use pod_identity_webhook::settings::InjectionSettings;

const PI_TOKEN: &str =
    "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token";
const IRSA_TOKEN: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";
const FULL_URI: &str = "http://169.254.170.23/v1/credentials";
const ROLE: &str = "arn:aws:iam::111122223333:role/app";

fn association() -> Association {
    Association {
        namespace: "team-a".into(),
        service_account: "app".into(),
        role_arn: ROLE.into(),
        target_role_arn: None,
        external_id: None,
        disable_session_tags: None,
        policy: None,
        association_id: None,
    }
}

fn pod_identity() -> ResolvedIdentity {
    ResolvedIdentity {
        kind: IdentityKind::PodIdentity(Arc::new(AssociationSummary::from(&association()))),
        service_account: Arc::new(ServiceAccountInfo::default()),
    }
}

fn irsa(sa: ServiceAccountInfo) -> ResolvedIdentity {
    ResolvedIdentity {
        kind: IdentityKind::Irsa {
            role_arn: ROLE.into(),
        },
        service_account: Arc::new(sa),
    }
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "team-a"},
           "spec": spec})
}

fn one_container() -> Value {
    pod(json!({"serviceAccountName": "app", "containers": [{"name": "app", "image": "x"}]}))
}

/// Mutates, applies the patch, checks the second pass adds nothing; returns the patched pod
/// and the warnings.
fn run(
    pod: &Value,
    identity: &ResolvedIdentity,
    settings: &InjectionSettings,
) -> (Value, Vec<String>) {
    // Read from the JSON text, as the webhook reads a request body (the view borrows from it).
    let text = pod.to_string();
    let view: PodView = serde_json::from_str(&text).unwrap();
    let mutation = mutate_pod(&view, identity, settings);
    let patch = mutation.patch.to_json_patch();
    for op in &patch.0 {
        let op = serde_json::to_value(op).unwrap();
        assert_eq!(op["op"], "add", "only targeted adds: {op}");
    }
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies");
    let text = patched.to_string();
    let again: PodView = serde_json::from_str(&text).unwrap();
    let second = mutate_pod(&again, identity, settings);
    assert!(
        second.patch.is_empty(),
        "second pass must add nothing: {:?}",
        second.patch
    );
    (patched, mutation.warnings)
}

fn env(container: &Value) -> Vec<(String, String)> {
    support::env_pairs(container)
}

fn env_names(container: &Value) -> Vec<String> {
    env(container).into_iter().map(|(k, _)| k).collect()
}

fn volume<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
}

fn mounts(container: &Value) -> Vec<(String, String)> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["name"].as_str().unwrap().into(),
                m["mountPath"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn expiration(pod: &Value, volume_name: &str) -> i64 {
    volume(pod, volume_name).unwrap()["projected"]["sources"][0]["serviceAccountToken"]
        ["expirationSeconds"]
        .as_i64()
        .unwrap()
}

#[test]
fn pod_identity_adds_the_pair_the_volume_the_mount_and_the_label() {
    let (p, warnings) = run(
        &one_container(),
        &pod_identity(),
        &InjectionSettings::default(),
    );
    let c = &p["spec"]["containers"][0];
    assert_eq!(
        env(c),
        [
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI".into(), FULL_URI.into()),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".into(),
                PI_TOKEN.into()
            )
        ]
    );
    assert_eq!(
        mounts(c),
        [(
            "eks-pod-identity-token".into(),
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount".into()
        )]
    );
    assert_eq!(c["volumeMounts"][0]["readOnly"], true);
    assert_eq!(
        volume(&p, "eks-pod-identity-token").unwrap()["projected"],
        json!({"sources": [{"serviceAccountToken": {"audience": "pods.eks.amazonaws.com",
               "expirationSeconds": 86400, "path": "eks-pod-identity-token"}}]})
    );
    assert_eq!(
        p["metadata"]["labels"]["eks.amazonaws.com/pod-identity"],
        "enabled"
    );
    assert!(warnings.is_empty());
}

#[test]
fn existing_labels_keep_theirs_and_gain_one() {
    let mut p = one_container();
    p["metadata"]["labels"] = json!({"app": "carts"});
    let (p, _) = run(&p, &pod_identity(), &InjectionSettings::default());
    assert_eq!(
        p["metadata"]["labels"],
        json!({"app": "carts", "eks.amazonaws.com/pod-identity": "enabled"})
    );
}

/// Found by tests/fuzz.rs (seed 1, input 140926): a pod without `metadata` (never from the API
/// server) was patched at `/metadata/labels`, which does not apply.
#[test]
fn a_pod_without_metadata_gains_metadata_with_the_label() {
    let mut p = one_container();
    p.as_object_mut().unwrap().remove("metadata");
    let (p, _) = run(&p, &pod_identity(), &InjectionSettings::default());
    assert_eq!(
        p["metadata"],
        json!({"labels": {"eks.amazonaws.com/pod-identity": "enabled"}})
    );
}

#[test]
fn irsa_env_order_is_sts_default_region_region_then_role_and_token_file() {
    let settings = InjectionSettings {
        aws_default_region: Some("eu-west-1".into()),
        sts_regional_endpoint: true,
        ..Default::default()
    };
    let (p, _) = run(
        &one_container(),
        &irsa(ServiceAccountInfo::default()),
        &settings,
    );
    assert_eq!(
        env(&p["spec"]["containers"][0]),
        [
            ("AWS_STS_REGIONAL_ENDPOINTS".into(), "regional".into()),
            ("AWS_DEFAULT_REGION".into(), "eu-west-1".into()),
            ("AWS_REGION".into(), "eu-west-1".into()),
            ("AWS_ROLE_ARN".into(), ROLE.into()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE".into(), IRSA_TOKEN.into()),
        ]
    );
    let v = volume(&p, "aws-iam-token").unwrap();
    assert_eq!(
        v["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"})
    );
    assert_eq!(
        mounts(&p["spec"]["containers"][0]),
        [(
            "aws-iam-token".into(),
            "/var/run/secrets/eks.amazonaws.com/serviceaccount".into()
        )]
    );
    assert!(
        p["metadata"].get("labels").is_none(),
        "IRSA pods get no Pod Identity label"
    );
}

#[test]
fn irsa_audience_and_sts_come_from_the_service_account_which_wins_over_the_flag() {
    let sa = ServiceAccountInfo {
        audience: Some("custom-aud".into()),
        sts_regional_endpoints: Some(false),
        ..Default::default()
    };
    let settings = InjectionSettings {
        sts_regional_endpoint: true,
        ..Default::default()
    };
    let (p, _) = run(&one_container(), &irsa(sa), &settings);
    assert_eq!(
        env_names(&p["spec"]["containers"][0]),
        ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"],
        "SA says false: no STS variable despite the flag"
    );
    assert_eq!(
        volume(&p, "aws-iam-token").unwrap()["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "custom-aud"
    );
    let sa = ServiceAccountInfo {
        sts_regional_endpoints: Some(true),
        ..Default::default()
    };
    let (p, _) = run(&one_container(), &irsa(sa), &InjectionSettings::default());
    assert_eq!(
        env_names(&p["spec"]["containers"][0])[0],
        "AWS_STS_REGIONAL_ENDPOINTS",
        "SA says true: the variable despite the flag being off"
    );
}

#[test]
fn an_existing_env_name_is_never_overridden() {
    let settings = InjectionSettings {
        aws_default_region: Some("eu-west-1".into()),
        sts_regional_endpoint: true,
        ..Default::default()
    };
    let p = pod(json!({"containers": [{"name": "app", "env": [
        {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "legacy"},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-2"}]}]}));
    let (p, _) = run(&p, &pod_identity(), &settings);
    assert_eq!(
        env(&p["spec"]["containers"][0]),
        [
            ("AWS_STS_REGIONAL_ENDPOINTS".into(), "legacy".into()),
            ("AWS_DEFAULT_REGION".into(), "us-east-2".into()),
            // The container sets one region variable: neither is added.
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI".into(), FULL_URI.into()),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".into(),
                PI_TOKEN.into()
            ),
        ]
    );
}

#[test]
fn one_variable_of_the_pair_present_means_neither_is_added() {
    for (existing, value) in [
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://localhost:9999/creds",
        ),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/mine"),
    ] {
        let p = pod(
            json!({"containers": [{"name": "app", "env": [{"name": existing, "value": value}]}]}),
        );
        let (p, _) = run(&p, &pod_identity(), &InjectionSettings::default());
        assert_eq!(
            env(&p["spec"]["containers"][0]),
            [(existing.into(), value.into())]
        );
    }
    let p = pod(
        json!({"containers": [{"name": "app", "env": [{"name": "AWS_ROLE_ARN", "value": "mine"}]}]}),
    );
    let (p, _) = run(
        &p,
        &irsa(ServiceAccountInfo::default()),
        &InjectionSettings::default(),
    );
    assert_eq!(env_names(&p["spec"]["containers"][0]), ["AWS_ROLE_ARN"]);
}

#[test]
fn a_volume_or_mount_whose_name_exists_is_kept_as_it_is() {
    let p = pod(json!({
        "containers": [{"name": "a", "volumeMounts": [{"name": "eks-pod-identity-token", "mountPath": "/custom"}]},
                       {"name": "b"}],
        "volumes": [{"name": "eks-pod-identity-token", "emptyDir": {}}]}));
    let (p, _) = run(&p, &pod_identity(), &InjectionSettings::default());
    assert_eq!(
        p["spec"]["volumes"],
        json!([{"name": "eks-pod-identity-token", "emptyDir": {}}])
    );
    assert_eq!(
        mounts(&p["spec"]["containers"][0]),
        [("eks-pod-identity-token".into(), "/custom".into())]
    );
    assert_eq!(
        mounts(&p["spec"]["containers"][1]),
        [(
            "eks-pod-identity-token".into(),
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount".into()
        )]
    );
}

#[test]
fn init_containers_and_native_sidecars_are_injected_ephemeral_containers_never() {
    let p = pod(json!({
        "initContainers": [{"name": "init"}, {"name": "proxy", "restartPolicy": "Always"}],
        "containers": [{"name": "app"}],
        "ephemeralContainers": [{"name": "debug"}]}));
    let (p, _) = run(&p, &pod_identity(), &InjectionSettings::default());
    for c in [
        &p["spec"]["initContainers"][0],
        &p["spec"]["initContainers"][1],
        &p["spec"]["containers"][0],
    ] {
        assert_eq!(env(c).len(), 2, "{}", c["name"]);
        assert_eq!(mounts(c).len(), 1, "{}", c["name"]);
    }
    assert_eq!(p["spec"]["ephemeralContainers"], json!([{"name": "debug"}]));
}

#[test]
fn skip_containers_leaves_the_listed_ones_alone() {
    let mut p = pod(json!({"containers": [{"name": "app"}, {"name": "envoy"}, {"name": "log"}]}));
    p["metadata"]["annotations"] = json!({"eks.amazonaws.com/skip-containers": " envoy ,log"});
    let (patched, _) = run(&p, &pod_identity(), &InjectionSettings::default());
    let c = &patched["spec"]["containers"];
    assert_eq!(env(&c[0]).len(), 2);
    assert_eq!(c[1], json!({"name": "envoy"}));
    assert_eq!(c[2], json!({"name": "log"}));

    // Every container skipped: nothing reads a token, so no volume and no label either.
    p["metadata"]["annotations"] = json!({"eks.amazonaws.com/skip-containers": "app,envoy,log"});
    let (patched, _) = run(&p, &pod_identity(), &InjectionSettings::default());
    assert_eq!(patched, p);
}

#[test]
fn windows_pods_get_the_c_drive_form_of_the_token_path() {
    for key in ["kubernetes.io/os", "beta.kubernetes.io/os"] {
        let p = pod(json!({"nodeSelector": {key: "windows"}, "containers": [{"name": "app"}]}));
        let (p, _) = run(&p, &pod_identity(), &InjectionSettings::default());
        assert_eq!(
            env(&p["spec"]["containers"][0])[1].1,
            r"C:\var\run\secrets\pods.eks.amazonaws.com\serviceaccount\eks-pod-identity-token"
        );
        let (p, _) = run(
            &pod(json!({"nodeSelector": {key: "windows"}, "containers": [{"name": "app"}]})),
            &irsa(ServiceAccountInfo::default()),
            &InjectionSettings::default(),
        );
        assert_eq!(
            env(&p["spec"]["containers"][0])[1].1,
            r"C:\var\run\secrets\eks.amazonaws.com\serviceaccount\token"
        );
    }
}

#[test]
fn token_lifetime_pod_annotation_beats_service_account_beats_default_within_600s_and_48h() {
    let settings = InjectionSettings::default();
    let sa_says = |secs: Option<i64>| {
        irsa(ServiceAccountInfo {
            token_expiration: secs,
            ..Default::default()
        })
    };
    let with_annotation = |value: Option<&str>| {
        let mut p = one_container();
        if let Some(v) = value {
            p["metadata"]["annotations"] = json!({"eks.amazonaws.com/token-expiration": v});
        }
        p
    };
    let cases = [
        // (pod annotation, SA annotation, expected)
        (Some("7200"), Some(3600), 7200),
        (None, Some(3600), 3600),
        (None, None, 86400),
        (Some("not-a-number"), Some(3600), 3600),
        (Some("60"), None, 600),
        (None, Some(10), 600),
        // The API server issues projected tokens for at most 48 hours.
        (None, Some(99_999_999), 172_800),
        (Some("99999999"), None, 172_800),
        (Some("-5"), None, 600),
    ];
    for (pod_value, sa_value, want) in cases {
        let (p, _) = run(&with_annotation(pod_value), &sa_says(sa_value), &settings);
        assert_eq!(
            expiration(&p, "aws-iam-token"),
            want,
            "pod {pod_value:?}, SA {sa_value:?}"
        );
    }
    // Pod Identity honours the pod annotation too.
    let (p, _) = run(&with_annotation(Some("7200")), &pod_identity(), &settings);
    assert_eq!(expiration(&p, "eks-pod-identity-token"), 7200);
}

#[test]
fn fields_unknown_to_k8s_openapi_survive() {
    let p = pod(json!({
        "futurePodField": {"enabled": true},
        "containers": [{"name": "app", "futureContainerField": [1, 2, 3],
                        "env": [{"name": "X", "valueFrom": {"futureSource": {"k": "v"}}}]}]}));
    let (patched, _) = run(&p, &pod_identity(), &InjectionSettings::default());
    assert_eq!(patched["spec"]["futurePodField"], json!({"enabled": true}));
    let c = &patched["spec"]["containers"][0];
    assert_eq!(c["futureContainerField"], json!([1, 2, 3]));
    assert_eq!(
        c["env"][0],
        json!({"name": "X", "valueFrom": {"futureSource": {"k": "v"}}})
    );
}

#[test]
fn host_network_pods_with_pod_identity_are_mutated_with_a_warning() {
    let p = pod(json!({"hostNetwork": true, "containers": [{"name": "app"}]}));
    let (patched, warnings) = run(&p, &pod_identity(), &InjectionSettings::default());
    assert_eq!(env(&patched["spec"]["containers"][0]).len(), 2);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("hostNetwork"));
}

#[test]
fn mirror_pods_and_opted_out_pods_are_left_untouched() {
    let skip = |meta: Value| -> Option<Skip> {
        let mut p = one_container();
        p["metadata"]
            .as_object_mut()
            .unwrap()
            .extend(meta.as_object().unwrap().clone());
        let text = p.to_string();
        Skip::check(&serde_json::from_str::<PodView>(&text).unwrap())
    };
    assert_eq!(
        skip(json!({"annotations": {"kubernetes.io/config.mirror": "abc"}})),
        Some(Skip::MirrorPod)
    );
    assert_eq!(
        skip(json!({"labels": {"eks.amazonaws.com/skip-pod-identity-webhook": "true"}})),
        Some(Skip::OptOutLabel)
    );
    assert_eq!(
        skip(json!({"labels": {"eks.amazonaws.com/skip-pod-identity-webhook": "false"}})),
        None,
        "an explicit false does not opt out"
    );
    assert_eq!(skip(json!({})), None);
}

/// A ServiceAccount store with fixed contents.
struct Accounts(HashMap<(String, String), Arc<ServiceAccountInfo>>);

impl ServiceAccountStore for Accounts {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ServiceAccountInfo>>, IdentityError>> {
        let found = self.0.get(&(namespace.into(), name.into())).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn ready(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn an_association_wins_over_an_irsa_annotation_and_irsa_serves_without_one() {
    let annotated = |role: &str| {
        Arc::new(ServiceAccountInfo {
            role_arn: Some(role.into()),
            ..Default::default()
        })
    };
    let accounts = Accounts(HashMap::from([
        (
            ("team-a".into(), "app".into()),
            annotated("arn:aws:iam::111122223333:role/irsa"),
        ),
        (
            ("team-a".into(), "legacy".into()),
            annotated("arn:aws:iam::111122223333:role/legacy"),
        ),
        (
            ("team-a".into(), "plain".into()),
            Arc::new(ServiceAccountInfo::default()),
        ),
    ]));
    let identities = Identities::new("eks.amazonaws.com")
        .with_associations(FileSource::from_list(vec![association()]).unwrap())
        .with_service_accounts(Arc::new(accounts));

    let both = identities.resolve("team-a", "app", Freshness::Cached).await;
    assert!(
        matches!(&both.identity.unwrap().kind, IdentityKind::PodIdentity(a) if a.service_account == "app"),
        "the association wins"
    );
    let legacy = identities
        .resolve("team-a", "legacy", Freshness::Cached)
        .await;
    assert_eq!(
        legacy.identity.unwrap().kind,
        IdentityKind::Irsa {
            role_arn: "arn:aws:iam::111122223333:role/legacy".into()
        }
    );
    let plain = identities
        .resolve("team-a", "plain", Freshness::Cached)
        .await;
    assert!(
        plain.identity.is_none() && plain.complete(),
        "no identity: untouched"
    );
}

#[test]
fn the_ipv6_credentials_uri_is_configurable() {
    let settings = InjectionSettings {
        container_credentials_full_uri: "http://[fd00:ec2::23]/v1/credentials".into(),
        ..Default::default()
    };
    let (p, _) = run(&one_container(), &pod_identity(), &settings);
    assert_eq!(
        env(&p["spec"]["containers"][0])[0],
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string(),
            "http://[fd00:ec2::23]/v1/credentials".to_string()
        )
    );
}

#[test]
fn a_linux_node_selector_keeps_the_posix_token_path() {
    let p = pod(
        json!({"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "app"}]}),
    );
    let (p, _) = run(&p, &pod_identity(), &InjectionSettings::default());
    assert_eq!(env(&p["spec"]["containers"][0])[1].1, PI_TOKEN);
}

#[test]
fn host_network_pods_with_irsa_get_no_warning() {
    let p = pod(json!({"hostNetwork": true, "containers": [{"name": "app"}]}));
    let (patched, warnings) = run(
        &p,
        &irsa(ServiceAccountInfo::default()),
        &InjectionSettings::default(),
    );
    assert_eq!(env(&patched["spec"]["containers"][0]).len(), 2);
    assert!(
        warnings.is_empty(),
        "IRSA does not use the node agent: {warnings:?}"
    );
}

/// docs/injection.md, "Proxies": a container behind a proxy gets the agent's addresses in its
/// `NO_PROXY`, appended to what it lists (either spelling), created when absent; other
/// containers and IRSA pods are left as they are.
#[test]
fn no_proxy_gains_the_agent_addresses_behind_a_proxy() {
    const BOTH: &str = "169.254.170.23,fd00:ec2::23";
    let pair = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", FULL_URI),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", PI_TOKEN),
    ];
    type Env = &'static [(&'static str, &'static str)];
    // (the container's env, what it ends with after the pair is appended)
    let rows: [(Env, Env); 7] = [
        (&[("APP", "1")], &[("APP", "1")]),
        (
            &[("HTTPS_PROXY", "http://proxy:3128")],
            &[("HTTPS_PROXY", "http://proxy:3128")],
        ),
        (
            &[
                ("http_proxy", "http://proxy:3128"),
                ("NO_PROXY", "localhost"),
            ],
            &[
                ("http_proxy", "http://proxy:3128"),
                ("NO_PROXY", "localhost,169.254.170.23,fd00:ec2::23"),
            ],
        ),
        (
            &[("HTTP_PROXY", "http://p"), ("no_proxy", "localhost,.svc")],
            &[
                ("HTTP_PROXY", "http://p"),
                ("no_proxy", "localhost,.svc,169.254.170.23,fd00:ec2::23"),
            ],
        ),
        (
            &[("HTTP_PROXY", "http://p"), ("NO_PROXY", BOTH)],
            &[("HTTP_PROXY", "http://p"), ("NO_PROXY", BOTH)],
        ),
        (
            &[("HTTP_PROXY", "http://p"), ("NO_PROXY", "169.254.0.0/16")],
            &[
                ("HTTP_PROXY", "http://p"),
                ("NO_PROXY", "169.254.0.0/16,fd00:ec2::23"),
            ],
        ),
        (
            &[("NO_PROXY", ".svc")],
            &[("NO_PROXY", ".svc,169.254.170.23,fd00:ec2::23")],
        ),
    ];
    for (i, (given, kept)) in rows.iter().enumerate() {
        let given: Vec<Value> = given
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        let p = pod(json!({"serviceAccountName": "app",
            "containers": [{"name": "app", "image": "x", "env": given}]}));
        let (patched, warnings) = run(&p, &pod_identity(), &InjectionSettings::default());
        let mut want: Vec<(String, String)> = kept
            .iter()
            .chain(&pair)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        if i == 1 {
            // No NO_PROXY of any spelling: both are created.
            want.push(("NO_PROXY".into(), BOTH.into()));
            want.push(("no_proxy".into(), BOTH.into()));
        }
        assert_eq!(env(&patched["spec"]["containers"][0]), want, "row {i}");
        assert!(warnings.is_empty(), "row {i}: {warnings:?}");
    }

    // A NO_PROXY from a reference cannot be read: left alone, with a warning that says so.
    let p = pod(
        json!({"serviceAccountName": "app", "containers": [{"name": "app", "image": "x",
        "env": [{"name": "HTTP_PROXY", "value": "http://p"},
                {"name": "NO_PROXY", "valueFrom": {"configMapKeyRef": {"name": "proxy", "key": "no"}}}]}]}),
    );
    let (patched, warnings) = run(&p, &pod_identity(), &InjectionSettings::default());
    let c = &patched["spec"]["containers"][0];
    assert_eq!(c["env"][1]["valueFrom"]["configMapKeyRef"]["name"], "proxy");
    assert!(c["env"][1].get("value").is_none());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("NO_PROXY") && warnings[0].contains("169.254.170.23"),
        "{warnings:?}"
    );

    // IRSA reaches STS, not the agent: its pods' proxy settings are theirs, unless the
    // settings name the STS endpoint they reach directly.
    let p = pod(
        json!({"serviceAccountName": "app", "containers": [{"name": "app", "image": "x",
        "env": [{"name": "HTTPS_PROXY", "value": "http://p"}, {"name": "no_proxy", "value": "localhost"}]}]}),
    );
    let (patched, _) = run(
        &p,
        &irsa(ServiceAccountInfo::default()),
        &InjectionSettings::default(),
    );
    assert_eq!(
        patched["spec"]["containers"][0]["env"][1]["value"],
        "localhost"
    );
    let settings = InjectionSettings {
        sts_no_proxy: Some(" sts.eu-west-1.amazonaws.com, 10.1.0.0/16 ".into()),
        ..InjectionSettings::default()
    };
    let (patched, _) = run(&p, &irsa(ServiceAccountInfo::default()), &settings);
    assert_eq!(
        patched["spec"]["containers"][0]["env"][1]["value"],
        "localhost,sts.eu-west-1.amazonaws.com,10.1.0.0/16"
    );
    let covered = pod(
        json!({"serviceAccountName": "app", "containers": [{"name": "app", "image": "x",
        "env": [{"name": "HTTPS_PROXY", "value": "http://p"}, {"name": "NO_PROXY", "value": ".amazonaws.com,10.1.0.0/16"}]}]}),
    );
    let (patched, _) = run(&covered, &irsa(ServiceAccountInfo::default()), &settings);
    assert_eq!(
        patched["spec"]["containers"][0]["env"][1]["value"],
        ".amazonaws.com,10.1.0.0/16"
    );
    assert!(
        !env_names(&patched["spec"]["containers"][0])
            .iter()
            .any(|n| n == "no_proxy")
    );
}
