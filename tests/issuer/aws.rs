//! The AWS cases of the issuer tier, against moto: `publish` (objects, content type, ACL),
//! `provider` (URL, client IDs, idempotent rerun), and `verify` naming each planted fault.

use std::process::Output;

use libtest_mimic::Failed;

use super::support::control_plane::ISSUER;
use super::support::sts::Moto;
use super::{https, plane, run, run_ok};

const HOST: &str = "kubernetes.default.svc.cluster.local";

fn env(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

fn env_ref<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn sdk(moto: &Moto) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&moto.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn publish_and_provider_against_moto() -> Result<(), Failed> {
    let rt = runtime();
    let moto = rt.block_on(Moto::start());
    let shared = rt.block_on(sdk(&moto));
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build(),
    );
    rt.block_on(s3.create_bucket().bucket("oidc").send())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("sa.pub");
    std::fs::write(&key, rcgen::KeyPair::generate().unwrap().public_key_pem()).unwrap();
    let key = key.to_str().unwrap();
    let env = env(&moto);
    let env = env_ref(&env);
    let issuer = "https://oidc.example/c1";

    let out = run_ok(
        &[
            "issuer",
            "publish",
            "--issuer",
            issuer,
            "--public-key",
            key,
            "--bucket",
            "oidc",
            "--prefix",
            "c1",
            "--path-style",
        ],
        &env,
    )?;
    assert_eq!(
        out,
        "s3://oidc/c1/.well-known/openid-configuration\ns3://oidc/c1/openid/v1/jwks\n"
    );
    let local = dir.path().join("site");
    run_ok(
        &[
            "issuer",
            "keys",
            "--issuer",
            issuer,
            "--public-key",
            key,
            "--out",
            local.to_str().unwrap(),
        ],
        &[],
    )?;
    for rel in [".well-known/openid-configuration", "openid/v1/jwks"] {
        let object = rt
            .block_on(
                s3.get_object()
                    .bucket("oidc")
                    .key(format!("c1/{rel}"))
                    .send(),
            )
            .unwrap();
        assert_eq!(object.content_type(), Some("application/json"), "{rel}");
        let body = rt.block_on(object.body.collect()).unwrap().into_bytes();
        assert_eq!(body, std::fs::read(local.join(rel)).unwrap(), "{rel}");
        let acl = rt
            .block_on(
                s3.get_object_acl()
                    .bucket("oidc")
                    .key(format!("c1/{rel}"))
                    .send(),
            )
            .unwrap();
        assert!(public(&acl), "{rel} is not public-read: {acl:?}");
    }
    // --acl none leaves reading to a bucket policy.
    run_ok(
        &[
            "issuer",
            "publish",
            "--issuer",
            issuer,
            "--public-key",
            key,
            "--bucket",
            "oidc",
            "--prefix",
            "c2",
            "--path-style",
            "--acl",
            "none",
        ],
        &env,
    )?;
    let acl = rt
        .block_on(
            s3.get_object_acl()
                .bucket("oidc")
                .key("c2/openid/v1/jwks")
                .send(),
        )
        .unwrap();
    assert!(!public(&acl), "{acl:?}");

    // The provider: created, then left alone on a rerun, same ARN.
    let iam = aws_sdk_iam::Client::new(&shared);
    let first = run_ok(&["issuer", "provider", "--issuer", issuer], &env)?;
    assert!(
        first.trim().ends_with(":oidc-provider/oidc.example/c1"),
        "{first}"
    );
    let again = run(&["issuer", "provider", "--issuer", issuer], &env);
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), first);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));
    let providers = rt
        .block_on(iam.list_open_id_connect_providers().send())
        .unwrap();
    assert_eq!(providers.open_id_connect_provider_list().len(), 1);
    let got = rt
        .block_on(
            iam.get_open_id_connect_provider()
                .open_id_connect_provider_arn(first.trim())
                .send(),
        )
        .unwrap();
    assert_eq!(got.url(), Some("oidc.example/c1"));
    assert_eq!(got.client_id_list(), ["sts.amazonaws.com"]);
    // A port cannot be an IAM provider's.
    let port = run(
        &[
            "issuer",
            "provider",
            "--issuer",
            "https://oidc.example:8443/c1",
        ],
        &env,
    );
    assert!(!port.status.success());
    assert!(String::from_utf8_lossy(&port.stderr).contains("port"));
    Ok(())
}

fn public(acl: &aws_sdk_s3::operation::get_object_acl::GetObjectAclOutput) -> bool {
    acl.grants().iter().any(|g| {
        g.grantee().and_then(|e| e.uri()) == Some("http://acs.amazonaws.com/groups/global/AllUsers")
    })
}

fn trust(provider_arn: &str, sub: &str) -> String {
    serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {
            format!("{HOST}:sub"): sub, format!("{HOST}:aud"): "sts.amazonaws.com"}}}]})
    .to_string()
}

fn stdout(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn verify_names_each_planted_fault() -> Result<(), Failed> {
    let plane = plane()?;
    plane.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: verifier\n  namespace: default\n",
    );
    let kubeconfig = plane.kubeconfig.to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let site = work.path().join("site");
    let site_s = site.to_str().unwrap().to_string();
    run_ok(
        &[
            "issuer",
            "keys",
            "--issuer",
            ISSUER,
            "--from-cluster",
            "--kubeconfig",
            kubeconfig,
            "--out",
            &site_s,
        ],
        &[],
    )?;
    let served = https::serve(site.clone(), HOST);
    let ca = work.path().join("ca.pem");
    std::fs::write(&ca, &served.ca_pem).unwrap();
    let addr = served.addr.to_string();
    let base = [
        "issuer",
        "verify",
        "--issuer",
        ISSUER,
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        "default",
        "--service-account",
        "verifier",
        "--ca-file",
        ca.to_str().unwrap(),
        "--connect-to",
        &addr,
    ];
    let verify = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        run(&args, env)
    };

    let out = verify(&["--no-aws"], &[]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("system:serviceaccount:default:verifier verifies"),
        "{}",
        stdout(&out)
    );

    let rt = runtime();
    let moto = rt.block_on(Moto::start());
    let env = env(&moto);
    let env = env_ref(&env);
    let out = verify(&[], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("IAM has no OIDC provider for {HOST}")),
        "{}",
        stdout(&out)
    );

    let arn = run_ok(&["issuer", "provider", "--issuer", ISSUER], &env)?;
    let arn = arn.trim();
    let iam = aws_sdk_iam::Client::new(&rt.block_on(sdk(&moto)));
    let wrong = "system:serviceaccount:default:other";
    rt.block_on(
        iam.create_role()
            .role_name("web")
            .assume_role_policy_document(trust(arn, wrong))
            .send(),
    )
    .unwrap();
    let out = verify(&["--role", "web"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{HOST}:sub"))
            && text.contains(wrong)
            && text.contains("default:verifier"),
        "{text}"
    );

    rt.block_on(
        iam.update_assume_role_policy()
            .role_name("web")
            .policy_document(trust(arn, "system:serviceaccount:default:verifier"))
            .send(),
    )
    .unwrap();
    let out = verify(&["--role", "web"], &env);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("role web trusts"), "{}", stdout(&out));

    // A wrong kid in the published JWKS.
    let jwks_path = site.join("openid/v1/jwks");
    let good = std::fs::read_to_string(&jwks_path).unwrap();
    let kid = serde_json::from_str::<serde_json::Value>(&good).unwrap()["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&jwks_path, good.replace(&kid, "planted-kid")).unwrap();
    let out = verify(&["--no-aws"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("kid {kid:?}")) && text.contains("planted-kid"),
        "{text}"
    );

    // A published issuer with a trailing slash.
    let slash = format!("{ISSUER}/");
    run_ok(
        &[
            "issuer",
            "keys",
            "--issuer",
            &slash,
            "--public-key",
            plane.sa_key.to_str().unwrap(),
            "--out",
            &site_s,
        ],
        &[],
    )?;
    let out = verify(&["--no-aws"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{slash:?}")) && text.contains("trailing slash"),
        "{text}"
    );
    Ok(())
}
