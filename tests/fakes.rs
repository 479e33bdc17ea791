//! The fakes of AWS services check what the services check, driven here by the real SDK clients:
//! the recording STS (`tests/support/sts.rs`) and the EKS fake (`tests/eks_support`) sign every
//! request again with the secret they know and refuse a wrong secret, an unknown key or no
//! signature with the service's error; the recording STS holds AssumeRole to its documented
//! limits (session name, duration, session tags) with STS's `ValidationError`. The fake
//! Kubernetes API requires its bearer token, as the API server requires a known one.

mod eks_support;
mod support;

use std::time::Duration;

use aws_sdk_sts::error::ProvideErrorMetadata;
use aws_sdk_sts::types::Tag;
use eks_support::{FakeEks, fast_tuning};
use support::sts::RecordingSts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const ROLE: &str = "arn:aws:iam::111122223333:role/carts";

/// An STS client for `sts` signing with `key` and `secret`, no retries.
fn sts_client(sts: &RecordingSts, key: &str, secret: &str) -> aws_sdk_sts::Client {
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            key, secret, None, None, "fakes",
        ))
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
        .endpoint_url(&sts.endpoint)
        .build();
    aws_sdk_sts::Client::from_conf(conf)
}

/// `(HTTP status, error code, message)` of a failed SDK call (STS's or EKS's: one error type).
fn refusal<E: ProvideErrorMetadata, T: std::fmt::Debug>(
    result: Result<T, aws_sdk_sts::error::SdkError<E>>,
) -> (u16, String, String) {
    let err = result.expect_err("refused");
    let status = err.raw_response().map_or(0, |r| r.status().as_u16());
    (
        status,
        err.code().unwrap_or("").to_string(),
        err.message().unwrap_or("").to_string(),
    )
}

/// The raw HTTP answer (status line and body) to `request` sent to `addr` as is.
async fn raw(addr: &str, request: String) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(support::WAIT, stream.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[tokio::test]
async fn sts_refuses_a_wrong_secret_an_unknown_key_and_no_signature() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let right = sts_client(&sts, "AKIDEXAMPLE", SECRET)
        .get_caller_identity()
        .send()
        .await;
    assert!(right.is_ok(), "{right:?}");

    let wrong = sts_client(&sts, "AKIDEXAMPLE", "not-the-secret")
        .get_caller_identity()
        .send()
        .await;
    let (status, code, message) = refusal(wrong);
    assert_eq!((status, code.as_str()), (403, "SignatureDoesNotMatch"));
    assert!(
        message.contains("does not match the signature you provided"),
        "{message}"
    );

    let unknown = sts_client(&sts, "AKIDNOBODYKNOWS", SECRET)
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("carts")
        .send()
        .await;
    assert_eq!(refusal(unknown).1, "InvalidClientTokenId");

    let addr = sts.endpoint.trim_start_matches("http://");
    let body = "Action=GetCallerIdentity&Version=2011-06-15";
    let (status, answer) = raw(
        addr,
        format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer.contains("<Code>MissingAuthenticationToken</Code>"),
        "{answer}"
    );
}

#[tokio::test]
async fn sts_refuses_a_session_name_outside_2_to_64_characters_of_its_alphabet() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let client = sts_client(&sts, "AKIDEXAMPLE", SECRET);
    let assume = |name: String| {
        client
            .assume_role()
            .role_arn(ROLE)
            .role_session_name(name)
            .send()
    };
    assert!(assume("a".repeat(64)).await.is_ok(), "64 characters fit");
    assert!(assume("eks-kind-carts-5d8f+=,.@_-".into()).await.is_ok());

    let (status, code, message) = refusal(assume("a".repeat(65)).await);
    assert_eq!((status, code.as_str()), (400, "ValidationError"));
    assert!(
        message.contains("at 'roleSessionName' failed to satisfy constraint: Member must have length less than or equal to 64"),
        "{message}"
    );
    let (_, code, message) = refusal(assume("a".into()).await);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("greater than or equal to 2"), "{message}");
    let (_, code, message) = refusal(assume("team-a/carts".into()).await);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("regular expression pattern"), "{message}");
}

#[tokio::test]
async fn sts_refuses_a_51st_session_tag_and_tags_over_their_sizes() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let client = sts_client(&sts, "AKIDEXAMPLE", SECRET);
    let tag = |k: String, v: String| Tag::builder().key(k).value(v).build().unwrap();
    let with_tags = |tags: Vec<Tag>| {
        client
            .assume_role()
            .role_arn(ROLE)
            .role_session_name("carts")
            .set_tags(Some(tags))
            .send()
    };
    let fifty: Vec<Tag> = (0..50).map(|i| tag(format!("k{i}"), "v".into())).collect();
    assert!(with_tags(fifty.clone()).await.is_ok(), "50 tags fit");

    let mut fifty_one = fifty;
    fifty_one.push(tag("k50".into(), "v".into()));
    let (status, code, message) = refusal(with_tags(fifty_one).await);
    assert_eq!((status, code.as_str()), (400, "ValidationError"));
    assert!(
        message.contains("at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"),
        "{message}"
    );

    assert!(
        with_tags(vec![tag("k".repeat(128), "v".repeat(256))])
            .await
            .is_ok()
    );
    let (_, code, message) = refusal(with_tags(vec![tag("k".repeat(129), "v".into())]).await);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("at 'tags.1.member.key'"), "{message}");
    let (_, code, message) = refusal(with_tags(vec![tag("k".into(), "v".repeat(257))]).await);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("at 'tags.1.member.value'"), "{message}");
}

#[tokio::test]
async fn sts_refuses_a_duration_outside_900_to_43200_seconds() {
    let sts = RecordingSts::issuing(Duration::from_secs(3600)).await;
    let client = sts_client(&sts, "AKIDEXAMPLE", SECRET);
    let lasting = |seconds: i32| {
        client
            .assume_role()
            .role_arn(ROLE)
            .role_session_name("carts")
            .duration_seconds(seconds)
            .send()
    };
    assert!(lasting(900).await.is_ok());
    assert!(lasting(43_200).await.is_ok());
    for (seconds, words) in [
        (899, "greater than or equal to 900"),
        (43_201, "less than or equal to 43200"),
    ] {
        let (status, code, message) = refusal(lasting(seconds).await);
        assert_eq!(
            (status, code.as_str()),
            (400, "ValidationError"),
            "{seconds}"
        );
        assert!(message.contains(words), "{message}");
    }
    // Every refused request was still seen on the wire.
    assert_eq!(sts.assume_role_calls().len(), 4);
}

#[tokio::test]
async fn eks_refuses_a_wrong_secret_an_unknown_key_and_no_signature() {
    let eks = FakeEks::start("kind").await;
    eks.add("team-a", "carts", "carts");
    let list = |client: aws_sdk_eks::Client| async move {
        client
            .list_pod_identity_associations()
            .cluster_name("kind")
            .send()
            .await
    };
    let tuning = fast_tuning();
    let right = list(eks.sdk_client_signing_with("AKIDEXAMPLE", SECRET, &tuning)).await;
    assert_eq!(right.unwrap().associations().len(), 1);
    assert_eq!(eks.unsigned(), 0);

    for (key, secret, want) in [
        ("AKIDEXAMPLE", "not-the-secret", "InvalidSignatureException"),
        ("AKIDNOBODYKNOWS", SECRET, "UnrecognizedClientException"),
    ] {
        let (status, code, _) =
            refusal(list(eks.sdk_client_signing_with(key, secret, &tuning)).await);
        assert_eq!((status, code.as_str()), (403, want));
    }
    assert_eq!(eks.unsigned(), 2);

    let addr = eks.addr.to_string();
    let (status, answer) = raw(
        &addr,
        format!(
            "GET /clusters/kind/pod-identity-associations HTTP/1.1\r\nHost: {addr}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-amzn-errortype: missingauthenticationtokenexception"),
        "{answer}"
    );
}

#[tokio::test]
async fn the_fake_api_server_refuses_a_client_without_its_bearer_token() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let fake = support::kube_api::FakeKubeApi::empty().await;
    let with: kube::Api<ServiceAccount> = kube::Api::all(fake.client());
    assert!(with.list(&Default::default()).await.is_ok());

    for token in [None, Some("someone-else")] {
        let mut config = kube::Config::new(format!("http://{}", fake.addr).parse().unwrap());
        config.auth_info.token = token.map(|t| t.to_string().into());
        let without: kube::Api<ServiceAccount> =
            kube::Api::all(kube::Client::try_from(config).unwrap());
        match without.list(&Default::default()).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
            other => panic!("{token:?}: {other:?}"),
        }
    }
}
