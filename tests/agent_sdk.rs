//! A real SDK as the agent's client: aws-config's container credentials provider, configured
//! through the environment exactly as the webhook configures a pod. One test in this binary:
//! it sets the process environment before any other thread exists.

mod support;

use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use support::WAIT;
use support::agent::{Harness, refresh_short_lived};
use support::sts::RecordingSts;

#[test]
fn the_rust_sdk_container_provider_obtains_and_refreshes_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("eks-pod-identity-token");
    // The agent's port is only known once it runs; a listener reserved here gives it.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    // SAFETY: no other thread runs yet (one test in this binary, the runtime starts below).
    unsafe {
        std::env::set_var(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{addr}/v1/credentials"),
        );
        std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file);
    }
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let sts = RecordingSts::issuing(Duration::from_secs(8)).await;
            let h = Harness::start(&sts.endpoint, |s| {
                s.binds = vec![addr];
                refresh_short_lived(s);
            })
            .await;
            std::fs::write(&token_file, h.pod_token("team-a", "carts", "carts-1")).unwrap();
            let provider = aws_config::ecs::EcsCredentialsProvider::builder().build();

            let first = provider.provide_credentials().await.expect("credentials");
            assert!(first.access_key_id().starts_with("ASIARECORDED"));
            assert!(first.session_token().unwrap().starts_with("session-token-"));
            let expiry = first.expiry().expect("the SDK read Expiration");
            assert!(expiry > SystemTime::now());

            let deadline = Instant::now() + WAIT;
            loop {
                let next = provider.provide_credentials().await.expect("credentials");
                if next.access_key_id() != first.access_key_id() {
                    // Expirations have whole-second precision: a refresh within the same
                    // second as the first issue expires in the same second, never earlier.
                    assert!(
                        next.expiry().unwrap() >= expiry,
                        "the refreshed ones never expire earlier"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the SDK never saw refreshed credentials"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
}
