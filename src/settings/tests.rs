use std::time::Duration;

use super::*;

/// Settings from a config file's text and `serve` flags, as the command line makes them.
fn load(text: &str, flags: &[&str]) -> Result<Settings, SettingsError> {
    Settings::parse(
        Some(Path::new("c.yaml")),
        text,
        Flags::parse(flags).expect("flags parse"),
    )
}

fn error(text: &str, flags: &[&str]) -> String {
    load(text, flags).unwrap_err().to_string()
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
    let s = load(text, &[]).unwrap();
    let eks = s.eks_source().unwrap();
    assert_eq!(eks.cluster_name, "prod");
    assert_eq!(eks.sync_interval, Duration::from_secs(300));
    assert_eq!(eks.negative_ttl, Duration::from_secs(15));
    assert!(s.injection.sts_regional_endpoint);
    assert_eq!(s.policy.default_mode, PolicyMode::Warn);
    assert_eq!(s.policy.namespaces[0].mode, Some(PolicyMode::Enforce));
    assert_eq!(s.policy.cluster_name.as_deref(), Some("prod"));
    assert_eq!(
        s.tls.source().unwrap(),
        TlsSource::Files {
            cert: "/etc/webhook/certs/tls.crt".into(),
            key: "/etc/webhook/certs/tls.key".into()
        }
    );
}

#[test]
fn durations_read_as_30s_5m_500ms() {
    let s = load(
        "tls: {selfSigned: true}\nserver: {drainTimeout: 500ms, shutdownGrace: 1m 30s}\neks: {clusterName: c, ttl: 1h}\n",
        &["--eks-max-wait=1500ms"],
    )
    .unwrap();
    assert_eq!(s.server.drain_timeout, Duration::from_millis(500));
    assert_eq!(s.server.shutdown_grace, Duration::from_secs(90));
    assert_eq!(s.eks.ttl, Duration::from_secs(3600));
    assert_eq!(s.eks.max_wait, Duration::from_millis(1500));
    let err = error("tls: {selfSigned: true}\nserver: {drainTimeout: 5x}\n", &[]);
    assert!(err.contains("drainTimeout"), "{err}");
    assert!(Flags::parse(["--eks-ttl=soon"]).is_err());
}

#[test]
fn connection_timeouts_come_from_the_file_and_are_checked() {
    let resolve = |server: &str| {
        load(
            &format!("tls: {{selfSigned: true}}\nserver: {server}\n"),
            &[],
        )
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

    assert_eq!(
        resolve("{}").unwrap().server.connections,
        ConnectionSettings::default()
    );
    let s = resolve("{connections: {handshakeTimeout: 2s, adminMaxConnections: 8}}").unwrap();
    assert_eq!(
        s.server.connections.handshake_timeout,
        Duration::from_secs(2)
    );
    assert_eq!(s.server.connections.admin_max_connections, 8);
    assert_eq!(s.server.connections.body_timeout, Duration::from_secs(30));
    let err = resolve("{connections: {bodyMemoryBytes: 1024}}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.connections.bodyMemoryBytes"), "{err}");
    let err = resolve("{connections: {bodyTimeout: 1ms}}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.connections.bodyTimeout"), "{err}");
    let err = resolve("{connections: {bodyTimout: 1s}}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bodyTimout"), "unknown keys are named: {err}");
}

#[test]
fn the_connection_cap_comes_from_a_flag_over_the_file_and_is_checked() {
    let max = |server: &str, flags: &[&str]| {
        load(
            &format!("tls: {{selfSigned: true}}\nserver: {server}\n"),
            flags,
        )
        .unwrap()
        .server
        .max_connections
    };
    assert_eq!(max("{}", &[]), 4096);
    assert_eq!(max("{maxConnections: 64}", &[]), 64);
    assert_eq!(max("{maxConnections: 64}", &["--max-connections=128"]), 128);
    let err = error(
        "tls: {selfSigned: true}\nserver: {maxConnections: 0}\n",
        &[],
    );
    assert!(err.contains("max-connections"), "{err}");
}

#[test]
fn unknown_keys_are_named_at_every_level() {
    for (text, key) in [
        ("policy:\n  defaultMod: enforce\n", "defaultMod"),
        ("polcy: {}\n", "polcy"),
        ("tls: {selfSigned: true, crt: x}\n", "crt"),
        ("eks: {clusterNme: x}\n", "clusterNme"),
        ("policy: {namespaces: [{match: a, mod: enforce}]}\n", "mod"),
        ("configFile: x.yaml\n", "configFile"),
    ] {
        let err = error(text, &["--self-signed"]);
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn flags_win_over_the_file_and_only_the_flags_given() {
    let s = load(
        "listen: 0.0.0.0:9443\ninjection: {awsDefaultRegion: us-east-1, tokenAudience: a}\ntls: {selfSigned: true}\neks: {clusterName: prod, ttl: 20m}\n",
        &["--aws-default-region=eu-west-1", "--port=10443", "--eks-negative-ttl=5s"],
    )
    .unwrap();
    assert_eq!(s.injection.aws_default_region.as_deref(), Some("eu-west-1"));
    assert_eq!(s.listen, "0.0.0.0:10443".parse().unwrap());
    assert_eq!(s.injection.token_audience, "a");
    assert_eq!(s.eks.ttl, Duration::from_secs(1200));
    assert_eq!(s.eks.negative_ttl, Duration::from_secs(5));
    // A boolean flag can turn off what the file turned on.
    let s = load(
        "tls: {selfSigned: true}\ninjection: {stsRegionalEndpoint: true}\n",
        &["--sts-regional-endpoint=false"],
    )
    .unwrap();
    assert!(!s.injection.sts_regional_endpoint);
}

#[test]
fn ipv6_changes_only_the_default_credentials_uri() {
    let uri = |text: &str, flags: &[&str]| {
        load(text, flags)
            .unwrap()
            .injection
            .container_credentials_full_uri
    };
    assert_eq!(uri("", &["--self-signed", "--ipv6"]), DEFAULT_V6);
    assert_eq!(
        uri(
            "injection: {containerCredentialsFullUri: 'http://10.0.0.1/creds'}\n",
            &["--self-signed", "--ipv6"]
        ),
        "http://10.0.0.1/creds"
    );
}

const DEFAULT_V6: &str = crate::admission::injection::DEFAULT_CREDENTIALS_URI_V6;

#[test]
fn missing_tls_says_what_to_do() {
    let err = error("", &[]);
    assert!(err.contains("--self-signed"), "{err}");
}

#[test]
fn bad_values_are_rejected_with_their_key() {
    let err = error("", &["--self-signed", "--token-mount-path=relative/path"]);
    assert!(err.contains("token-mount-path"), "{err}");
    assert!(err.contains("injection.tokenMountPath"), "{err}");
}

#[test]
fn an_eks_endpoint_needs_a_cluster_name() {
    let err = error("", &["--self-signed", "--eks-endpoint=http://127.0.0.1:1"]);
    assert!(err.contains("--cluster-name"), "{err}");
    assert!(load("", &["--self-signed"]).unwrap().eks_source().is_none());
}

/// docs/configuration.md: every value is validated once, after the merge. The EKS settings too,
/// with or without a cluster name (a bad value does not wait for `clusterName` to show).
#[test]
fn eks_settings_are_validated_without_a_cluster_name_too() {
    for cluster in ["", "clusterName: prod, "] {
        for (eks, key) in [
            ("maxWait: 0s", "eks.maxWait"),
            ("maxWait: 9s", "eks.maxWait"),
            ("ttl: 0s", "eks.ttl"),
            ("concurrency: 0", "eks.concurrency"),
            ("concurrency: 65", "eks.concurrency"),
            ("ttl: 1m, negativeTtl: 2m", "eks.negativeTtl"),
        ] {
            let text = format!("eks: {{{cluster}{eks}}}\n");
            let err = error(&text, &["--self-signed"]);
            assert!(err.contains(key), "{text}: {err}");
        }
    }
    let flags = ["--self-signed", "--eks-max-wait=9s"];
    assert!(error("", &flags).contains("--eks-max-wait"));
}

#[test]
fn a_file_that_is_not_settings_is_not_quoted() {
    let err = error("AWS_SECRET_ACCESS_KEY=abcdefgh12345\n", &["--self-signed"]);
    assert!(!err.contains("abcdefgh12345"), "{err}");
}

#[test]
fn policy_modes_order_from_loose_to_strict() {
    assert!(PolicyMode::Enforce > PolicyMode::Warn);
    assert!(PolicyMode::Warn > PolicyMode::Off);
}

#[test]
fn catch_all_exemptions_are_refused_where_anything_is_enforced() {
    for pattern in ["*", "**", "*/*", "**/*", "?*", "[a-z0-9]*", "*/**"] {
        let text = format!("policy: {{defaultMode: enforce, exemptions: ['{pattern}']}}\n");
        let err = error(&text, &["--self-signed"]);
        assert!(err.contains("policy.exemptions"), "{pattern}: {err}");
        assert!(err.contains("every namespace"), "{pattern}: {err}");
        // Enforced by a namespace rule only: refused too.
        let text = format!(
            "policy: {{namespaces: [{{match: 'team-*', mode: enforce}}], exemptions: ['{pattern}']}}\n"
        );
        assert!(load(&text, &["--self-signed"]).is_err(), "{pattern}");
        // Nothing enforced: exempting everything undoes nothing.
        let text = format!("policy: {{defaultMode: warn, exemptions: ['{pattern}']}}\n");
        assert!(load(&text, &["--self-signed"]).is_ok(), "{pattern}");
    }
    // The flag's enforce counts as much as the file's.
    let err = error(
        "policy: {exemptions: ['*']}\n",
        &["--self-signed", "--policy-default-mode=enforce"],
    );
    assert!(err.contains("policy.exemptions"), "{err}");
    // Narrow patterns stay allowed with enforce.
    for pattern in ["monitoring", "team-*", "ci/deployer", "*/default", "kube-*"] {
        let text = format!("policy: {{defaultMode: enforce, exemptions: ['{pattern}']}}\n");
        assert!(load(&text, &["--self-signed"]).is_ok(), "{pattern}");
    }
}

#[test]
fn annotation_prefixes_must_be_dns_subdomains() {
    for bad in [
        "EKS .com",
        "Eks.amazonaws.com",
        "eks.amazonaws.com/",
        "eks.amazonaws.com/role",
        "-eks.com",
        "eks-.com",
        "a..b",
        ".eks.com",
        "eks_com",
        "eks.com\nx",
        "",
    ] {
        let err = error(
            "",
            &["--self-signed", &format!("--annotation-prefix={bad}")],
        );
        assert!(err.contains("injection.annotationPrefix"), "{bad:?}: {err}");
        assert!(err.contains("DNS subdomain"), "{bad:?}: {err}");
    }
    let long = format!("{}.com", vec!["a".repeat(63); 4].join("."));
    assert!(
        load(
            "",
            &["--self-signed", &format!("--annotation-prefix={long}")]
        )
        .is_err()
    );
    for good in [
        "eks.amazonaws.com",
        "example.com",
        "irsa",
        "a-1.b-2.example",
    ] {
        let s = load(
            &format!("injection: {{annotationPrefix: '{good}'}}\n"),
            &["--self-signed"],
        )
        .unwrap();
        assert_eq!(s.injection.annotation_prefix, good);
    }
}

#[test]
fn absurd_sizes_and_zero_waits_are_refused_naming_the_key() {
    for (server, key) in [
        ("{maxBodyBytes: 1000000000000}", "server.maxBodyBytes"),
        ("{maxBodyBytes: 67108865}", "server.maxBodyBytes"),
        ("{maxBodyBytes: 0}", "server.maxBodyBytes"),
        ("{maxConnections: 0}", "server.maxConnections"),
        ("{maxConnections: 1000000000}", "server.maxConnections"),
        ("{idleTimeout: 0s}", "server.idleTimeout"),
        ("{headerReadTimeout: 0s}", "server.headerReadTimeout"),
        ("{reloadInterval: 0s}", "server.reloadInterval"),
    ] {
        let err = error(
            &format!("tls: {{selfSigned: true}}\nserver: {server}\n"),
            &[],
        );
        assert!(err.contains(key), "{server}: {err}");
    }
    let s = load(
        "tls: {selfSigned: true}\nserver: {maxBodyBytes: 67108864, connections: {bodyMemoryBytes: 67108864}}\n",
        &[],
    )
    .unwrap();
    assert_eq!(s.server.max_body_bytes, 64 * 1024 * 1024);
    let err = error("", &["--self-signed", "--max-body-bytes=1000000000000"]);
    assert!(err.contains("--max-body-bytes"), "{err}");
    for eks in [
        "{clusterName: c, maxWait: 0s}",
        "{clusterName: c, maxWait: 9s}",
    ] {
        let err = error(&format!("tls: {{selfSigned: true}}\neks: {eks}\n"), &[]);
        assert!(err.contains("eks.maxWait"), "{eks}: {err}");
    }
    for eks in [
        "{clusterName: c, concurrency: 0}",
        "{clusterName: c, ttl: 0s}",
    ] {
        assert!(load(&format!("tls: {{selfSigned: true}}\neks: {eks}\n"), &[]).is_err());
    }
}

#[test]
fn a_config_file_that_is_not_a_regular_small_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; MAX_CONFIG_FILE_BYTES as usize + 1]).unwrap();
    for (path, why) in [
        (fifo, "FIFO"),
        (big, "larger than"),
        (std::path::PathBuf::from("/dev/zero"), "character device"),
        (dir.path().to_owned(), "directory"),
    ] {
        let flags = Flags::parse([
            format!("--config={}", path.display()),
            "--self-signed".into(),
        ]);
        let err = Settings::load(flags.unwrap()).unwrap_err().to_string();
        assert!(err.contains(why), "{}: {err}", path.display());
    }
}

#[test]
fn pod_size_limits_come_from_the_file_or_flags_and_are_checked() {
    let s = load("tls: {selfSigned: true}\n", &[]).unwrap();
    assert_eq!(s.injection.max_containers, 250);
    assert_eq!(s.injection.max_volumes, 1000);
    let s = load(
        "tls: {selfSigned: true}\ninjection: {maxContainers: 40, maxVolumes: 4096}\n",
        &["--max-containers=60"],
    )
    .unwrap();
    assert_eq!(
        (s.injection.max_containers, s.injection.max_volumes),
        (60, 4096)
    );
    for (injection, key) in [
        ("{maxContainers: 0}", "injection.maxContainers"),
        ("{maxContainers: 4097}", "injection.maxContainers"),
        ("{maxVolumes: 0}", "injection.maxVolumes"),
        ("{maxVolumes: 50000}", "injection.maxVolumes"),
    ] {
        let err = error(
            &format!("tls: {{selfSigned: true}}\ninjection: {injection}\n"),
            &[],
        );
        assert!(
            err.contains(key) && err.contains("4096"),
            "{injection}: {err}"
        );
    }
}
