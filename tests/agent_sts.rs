//! What the credentials agent sends STS on the wire (docs/contract.md §9): moto (a real STS
//! implementation) issuing credentials for an association and chaining to the target role, with
//! the session policy as its recorder sees it; the recording STS seeing the session tags, the
//! session name, the external id, the chained call's signer, and one session for a
//! ServiceAccount whose association disables session tags.

mod support;

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use support::agent::*;
use support::kube_api::PodToken;
use support::sts::{Moto, RecordingSts};

#[tokio::test]
async fn moto_issues_credentials_for_the_association_and_chains_to_the_target_role() {
    if skip_without_moto() {
        return;
    }
    let moto = Moto::start().await;
    let h = Harness::start(&moto.endpoint, |_| {}).await;

    let (status, answer) = h.get(&h.pod_token("team-a", "carts", "carts-5d8f")).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["AccessKeyId"].as_str().unwrap().starts_with("ASIA"),
        "{answer}"
    );
    assert!(!answer["SecretAccessKey"].as_str().unwrap().is_empty());
    assert!(!answer["Token"].as_str().unwrap().is_empty());
    assert_eq!(answer["AccountId"], "111122223333");
    let left = expiration(&answer)
        .duration_since(SystemTime::now())
        .expect("not expired");
    assert!(
        left > Duration::from_secs(3000) && left <= Duration::from_secs(3601),
        "DurationSeconds 3600: {left:?}"
    );

    // targetRoleArn: the answer is the target role's credentials, in the target's account.
    let (status, chained) = h.get(&h.pod_token("team-a", "orders", "orders-1")).await;
    assert_eq!(status, 200, "{chained}");
    assert_eq!(chained["AccountId"], "444455556666");
    assert_ne!(chained["AccessKeyId"], answer["AccessKeyId"]);

    // The credentials work as any SDK uses them: moto knows whose they are.
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(Credentials::new(
                chained["AccessKeyId"].as_str().unwrap(),
                chained["SecretAccessKey"].as_str().unwrap(),
                Some(chained["Token"].as_str().unwrap().to_string()),
                None,
                "agent",
            ))
            .build(),
    );
    let me = sts.get_caller_identity().send().await.unwrap();
    let arn = me.arn().unwrap();
    assert!(
        arn.starts_with("arn:aws:sts::444455556666:assumed-role/orders-data/eks-kind-orders-1-"),
        "{arn}"
    );
    assert_eq!(
        h.metric("pod_identity_agent_sts_calls_total{result=\"ok\"}")
            .await,
        3.0
    );
}

const SESSION_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::reports/*"}]}"#;

#[tokio::test]
async fn the_session_policy_goes_to_sts_as_policy_and_no_session_tags_go_with_it() {
    if skip_without_moto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("moto-recording.jsonl");
    let moto = Moto::recording(&recording).await;
    let file = dir.path().join("associations.yaml");
    let policy = serde_json::to_string(SESSION_POLICY).unwrap();
    std::fs::write(
        &file,
        format!(
            "associations:
  - {{namespace: team-a, serviceAccount: reports, roleArn: '{CARTS_ROLE}', disableSessionTags: true,
     policy: {policy}}}
  - {{namespace: team-a, serviceAccount: chained, roleArn: '{ORDERS_ROLE}', targetRoleArn: '{TARGET_ROLE}',
     disableSessionTags: true, policy: {policy}}}
"
        ),
    )
    .unwrap();
    let h = Harness::start(&moto.endpoint, |s| s.associations_file = Some(file)).await;

    let (status, answer) = h.get(&h.pod_token("team-a", "reports", "reports-1")).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = h.get(&h.pod_token("team-a", "chained", "chained-1")).await;
    assert_eq!(status, 200, "{answer}");

    // What moto's recorder saw on the wire.
    let calls: Vec<_> = Moto::recorded(&recording)
        .into_iter()
        .filter(|c| c.action() == "AssumeRole")
        .collect();
    let roles: Vec<&str> = calls.iter().map(|c| c.params["RoleArn"].as_str()).collect();
    assert_eq!(roles, [CARTS_ROLE, ORDERS_ROLE, TARGET_ROLE]);
    for call in &calls {
        assert!(call.tags().is_empty(), "no session tags: {:?}", call.params);
        assert!(call.transitive_keys().is_empty(), "{:?}", call.params);
    }
    // The policy scopes the credentials the pod gets: those of the one call, or of the target
    // role's (a session policy does not carry into a chained session).
    assert_eq!(
        calls[0].params.get("Policy").map(String::as_str),
        Some(SESSION_POLICY)
    );
    assert_eq!(calls[1].params.get("Policy"), None, "{:?}", calls[1].params);
    assert_eq!(
        calls[2].params.get("Policy").map(String::as_str),
        Some(SESSION_POLICY)
    );
}

#[tokio::test]
async fn the_wire_carries_session_tags_session_name_and_external_id() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let h = Harness::start(&sts.endpoint, |_| {}).await;
    let pod = "carts-7c9d8b6f5-x2x4q";
    let (status, answer) = h.get(&h.pod_token("team-a", "carts", pod)).await;
    assert_eq!(status, 200, "{answer}");

    // No --cluster-arn: the agent asked STS who it is, for the synthetic cluster ARN.
    assert!(
        sts.calls()
            .iter()
            .any(|c| c.action() == "GetCallerIdentity")
    );
    let calls = sts.assume_role_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.params["RoleArn"], CARTS_ROLE);
    assert_eq!(call.params["DurationSeconds"], "3600");
    assert_eq!(
        call.signed_by, "AKIDAGENTEXAMPLE",
        "the agent's own credentials"
    );
    assert!(!call.params.contains_key("ExternalId"));
    let name = &call.params["RoleSessionName"];
    assert!(name.starts_with(&format!("eks-kind-{pod}-")), "{name}");
    assert!(name.len() <= 64, "{name}");
    let tags = call.tags();
    let uid = PodToken::pod("team-a", "carts", pod).pod_uid;
    assert_eq!(
        tags,
        [
            (
                "eks-cluster-arn",
                "arn:aws:eks:us-east-1:111122223333:cluster/kind"
            ),
            ("eks-cluster-name", "kind"),
            ("kubernetes-namespace", "team-a"),
            ("kubernetes-service-account", "carts"),
            ("kubernetes-pod-name", pod),
            ("kubernetes-pod-uid", uid.as_str()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        call.transitive_keys(),
        tags.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "every tag is transitive"
    );

    // Chaining: the target role is assumed with the first credentials and the external id.
    let (status, _) = h.get(&h.pod_token("team-a", "orders", "orders-1")).await;
    assert_eq!(status, 200);
    let calls = sts.assume_role_calls();
    let (first, second) = (&calls[1], &calls[2]);
    assert_eq!(first.params["RoleArn"], ORDERS_ROLE);
    assert_eq!(first.tags().len(), 6);
    assert!(!first.params.contains_key("ExternalId"));
    assert_eq!(second.params["RoleArn"], TARGET_ROLE);
    assert_eq!(second.params["ExternalId"], "ext-0rders");
    assert!(
        second.signed_by.starts_with("ASIARECORDED"),
        "signed with the first role's credentials: {}",
        second.signed_by
    );

    // disableSessionTags: no tags, and every pod of the ServiceAccount shares one session.
    for pod in ["batch-a", "batch-b", "batch-c"] {
        let (status, answer) = h.get(&h.pod_token("team-b", "batch", pod)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let batch: Vec<_> = sts
        .assume_role_calls()
        .into_iter()
        .filter(|c| c.params["RoleArn"] == SHARED_ROLE)
        .collect();
    assert_eq!(batch.len(), 1, "one STS call for the whole ServiceAccount");
    assert!(batch[0].tags().is_empty());
    assert!(batch[0].params["RoleSessionName"].starts_with("eks-kind-batch-"));
}
