//! `hack/kind-quickstart.sh` driven with `docker`, `kind`, `kubectl` and `helm` replaced by
//! stand-ins on `PATH` (shell scripts written here, which append their arguments to a log and
//! answer what the script needs), from a copy of `hack/`, `manifests/` and `charts/` in a
//! temporary directory. No Docker,
//! kind or cluster needed; `openssl` (the script's certificate check) is the system's.
//!
//! Checked from the recorded calls: the image built and loaded is the one the applied
//! kustomization runs (rendered with the control plane's kubectl when `hack/control-plane.sh` has
//! built it), the Secret `pod-identity-agent-aws` is created once and never replaced, the
//! certificates are reused while valid and renewed near their end without a bind mount, a failed
//! demo pod ends the wait at once, a rollout failure prints the DaemonSet's and pods' events,
//! `AGENT_STS=aws` drops the stand-in, `--help` works from any directory, and `--helm` installs
//! the chart with the image loaded and the certificate's CA instead of applying the overlay
//! (rendered with the real helm of `hack/helm.sh` when it has been built).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

// Only the skip helper and the tool lookups of tests/support: this file needs nothing else.
#[allow(dead_code)] // Not every file uses every part of it.
#[path = "support/skip.rs"]
mod skip;
#[path = "support/tools.rs"]
mod tools;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const DOCKER: &str = r#"#!/usr/bin/env bash
{ printf 'docker'; printf '\t%s' "$@"; printf '\n'; } >> "$STANDIN_LOG"
case "$1" in
  create) echo standin-container-1 ;;
  # docker cp CONTAINER:/tmp/certs/. DEST: what the image's `certs` command would have written.
  cp) cp -R "$STANDIN_CERTS"/. "$3" ;;
esac
exit 0
"#;

const KIND: &str = r#"#!/usr/bin/env bash
{ printf 'kind'; printf '\t%s' "$@"; printf '\n'; } >> "$STANDIN_LOG"
case "$1 $2" in
  "get clusters") cat "$STANDIN_STATE/clusters" 2>/dev/null || true ;;
  "create cluster") echo "$4" >> "$STANDIN_STATE/clusters" ;;
esac
exit 0
"#;

const KUBECTL: &str = r#"#!/usr/bin/env bash
{ printf 'kubectl'; printf '\t%s' "$@"; printf '\n'; } >> "$STANDIN_LOG"
[ "$1" = --context ] && shift 2
args=" $* "
case "$args" in
  *" apply -k "*)
    n=$(ls "$STANDIN_STATE" | grep -c '^applied-' || true)
    cp "$3/kustomization.yaml" "$STANDIN_STATE/applied-$n.yaml" ;;
  *"/pod-no-identity.yaml "*)
    echo 'Error from server: admission webhook "validate.pod-identity-webhook.io" denied the request: ServiceAccount "nobody" has no Pod Identity association or IRSA role' >&2
    exit 1 ;;
  *" apply -f - "*) cat >/dev/null ;;
  *" get secret pod-identity-agent-aws "*)
    [ -f "$STANDIN_STATE/secret" ] || { echo 'Error from server (NotFound): secrets "pod-identity-agent-aws" not found' >&2; exit 1; } ;;
  *" create secret generic pod-identity-agent-aws "*)
    [ -f "$STANDIN_STATE/secret" ] && { echo 'Error from server (AlreadyExists)' >&2; exit 1; }
    touch "$STANDIN_STATE/secret" ;;
  *" create secret tls "*) printf 'apiVersion: v1\nkind: Secret\n' ;;
  *" rollout status daemonset/pod-identity-agent "*)
    [ -z "${STANDIN_ROLLOUT_FAIL:-}" ] || { echo 'error: timed out waiting for the condition' >&2; exit 1; } ;;
  *" get pod carts -o jsonpath={.spec.containers[0].env[*].name} "*)
    echo "AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" ;;
  *" get pod carts -o jsonpath={.spec.volumes[*].name} "*) echo "eks-pod-identity-token kube-api-access-x" ;;
  *" get pod carts-aws -o jsonpath={.status.phase} "*) echo "${STANDIN_POD_PHASE:-Succeeded}" ;;
  *" logs carts-aws "*) echo "arn:aws:sts::111122223333:assumed-role/carts/eks-demo-carts-aws-abc" ;;
  *" describe "*) echo "Events: (stand-in)" ;;
esac
exit 0
"#;

const HELM: &str = r#"#!/usr/bin/env bash
{ printf 'helm'; printf '\t%s' "$@"; printf '\n'; } >> "$STANDIN_LOG"
exit 0
"#;

/// A copy of the parts of the repository the script uses, stand-ins on PATH, and their log.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["hack", "manifests", "charts"] {
            copy_dir(&root().join(sub), &d.join("repo").join(sub));
        }
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (name, text) in [
            ("docker", DOCKER),
            ("kind", KIND),
            ("kubectl", KUBECTL),
            ("helm", HELM),
        ] {
            let path = bin.join(name);
            std::fs::write(&path, text).unwrap();
            make_executable(&path);
        }
        std::fs::create_dir_all(d.join("state")).unwrap();
        let sandbox = Self { dir };
        sandbox.new_certificates();
        sandbox
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// What the stand-in `docker cp` hands out next: a fresh pair from this checkout's `certs`.
    fn new_certificates(&self) {
        let out = self.path("certs-next");
        let _ = std::fs::remove_dir_all(&out);
        let status = Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
            .args(["certs", "--out"])
            .arg(&out)
            .args([
                "--service",
                "pod-identity-webhook",
                "--namespace",
                "pod-identity-webhook",
            ])
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
    }

    /// Runs the script with `env`; its output.
    fn run(&self, env: &[(&str, &str)]) -> Output {
        self.run_with(&[], env)
    }

    /// [`Self::run`] with `--helm`.
    fn run_helm(&self, env: &[(&str, &str)]) -> Output {
        self.run_with(&["--helm"], env)
    }

    /// Runs the script with `args` and `env` (`PATH` in `env` replaces the stand-ins' one).
    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(self.path("repo/hack/kind-quickstart.sh"))
            .args(args)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin",
                    self.path("bin").display()
                ),
            )
            .env("HOME", self.dir.path())
            .env("STANDIN_LOG", self.path("calls.log"))
            .env("STANDIN_STATE", self.path("state"))
            .env("STANDIN_CERTS", self.path("certs-next"))
            .current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn run_ok(&self, env: &[(&str, &str)]) -> Output {
        let out = self.run(env);
        assert!(
            out.status.success(),
            "the script failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The recorded calls, each as its argument list (the tool first).
    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.path("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    fn calls_with(&self, words: &[&str]) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|c| words.iter().all(|w| c.iter().any(|a| a == w)))
            .collect()
    }

    fn forget_calls(&self) {
        let _ = std::fs::remove_file(self.path("calls.log"));
    }

    /// The kustomizations `kubectl apply -k` was given, in order.
    fn applied(&self) -> Vec<String> {
        (0..)
            .map(|n| self.path(&format!("state/applied-{n}.yaml")))
            .take_while(|p| p.exists())
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    fn certs_dir(&self, cluster: &str) -> PathBuf {
        self.path(&format!("repo/certs/out/kind-{cluster}"))
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `overlay` rendered by the control plane's kubectl (kustomize built in: `$CONTROL_PLANE_DIR`'s,
/// else built by `hack/control-plane.sh`); `None` when there is none, which fails under CI.
fn kustomize(overlay: &Path) -> Option<String> {
    let kubectl = match tools::control_plane() {
        Ok(dir) => dir.join("kubectl"),
        Err(why) => {
            skip::missing(
                "the control plane's kubectl (the overlay is not rendered)",
                &why,
            );
            return None;
        }
    };
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(overlay)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_image_loaded_is_the_image_applied_and_the_secret_is_never_replaced() {
    let s = Sandbox::new();
    let image = "registry.example.com:5000/platform/piw:t-1";
    let env = [("IMAGE", image), ("KIND_CLUSTER_NAME", "demo")];
    s.run_ok(&env);

    assert_eq!(s.calls_with(&["kind", "create"]).len(), 1);
    let build = s.calls_with(&["docker", "build"]);
    assert_eq!(build, [vec!["docker", "build", "-t", image, "."]]);
    let load = s.calls_with(&["kind", "load"]);
    assert_eq!(
        load,
        [vec![
            "kind",
            "load",
            "docker-image",
            image,
            "--name",
            "demo"
        ]]
    );
    // The certificates come from the same image, copied out of a container: no bind mount.
    assert_eq!(s.calls_with(&["docker", "create", image]).len(), 1);
    assert!(s.calls_with(&["docker", "cp"]).len() == 1);
    assert!(
        s.calls()
            .iter()
            .all(|c| c[0] != "docker" || !c.iter().any(|a| a == "-v" || a == "--volume")),
        "no bind mount"
    );

    // What is applied runs that image: the kustomization names it ...
    let applied = s.applied();
    assert_eq!(applied.len(), 1);
    assert!(
        applied[0].contains("newName: \"registry.example.com:5000/platform/piw\"")
            && applied[0].contains("newTag: \"t-1\""),
        "{}",
        applied[0]
    );
    assert!(applied[0].contains("../../../../manifests/overlays/kind"));
    // ... and, rendered, every container of the webhook and the agent runs it.
    if let Some(text) = kustomize(&s.certs_dir("demo").join("overlay")) {
        let images: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .collect();
        assert_eq!(images.len(), 3, "webhook, setup-link, agent: {images:?}");
        assert!(images.iter().all(|i| *i == image), "{images:?}");
        assert!(text.contains("value: demo"), "the agent's cluster name");
        assert!(text.contains("POD_IDENTITY_AGENT_STS_ENDPOINT"), "stand-in");
    }

    // The agent's Secret: created on the first run ...
    let created = ["create", "secret", "generic", "pod-identity-agent-aws"];
    assert_eq!(s.calls_with(&created).len(), 1);
    let secret_call = &s.calls_with(&created)[0];
    assert!(
        secret_call
            .windows(2)
            .any(|w| w == ["-n", "pod-identity-agent"])
    );
    // ... left alone on the second: looked up, neither created nor applied again.
    s.forget_calls();
    s.run_ok(&env);
    assert_eq!(
        s.calls_with(&["get", "secret", "pod-identity-agent-aws"])
            .len(),
        1
    );
    assert!(s.calls_with(&created).is_empty());
    assert!(
        s.calls()
            .iter()
            .all(|c| !c.iter().any(|a| a.contains("AKIAMOTODEMO"))),
        "the stand-in's keys are not written again"
    );
    assert_eq!(s.calls_with(&["kind", "create"]).len(), 0, "cluster reused");
    assert_eq!(s.applied().len(), 2);
    assert_eq!(s.applied()[1], applied[0]);
}

#[test]
fn certificates_are_reused_while_valid_and_renewed_near_their_end() {
    let s = Sandbox::new();
    s.run_ok(&[]);
    let dir = s.certs_dir("pod-identity-webhook");
    let first = std::fs::read(dir.join("tls.crt")).unwrap();
    assert_eq!(
        first,
        std::fs::read(s.path("certs-next/tls.crt")).unwrap(),
        "the certificate the image made"
    );
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.join("tls.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode, 0o600);

    // Valid for a year: reused, no container started.
    s.new_certificates();
    s.forget_calls();
    s.run_ok(&[]);
    assert!(s.calls_with(&["docker", "create"]).is_empty());
    assert_eq!(std::fs::read(dir.join("tls.crt")).unwrap(), first);

    // Ending in two days (inside the default 30): renewed, and the new pair goes into the Secret.
    let near = near_expiry_pem(2);
    std::fs::write(dir.join("tls.crt"), &near).unwrap();
    s.forget_calls();
    s.run_ok(&[]);
    assert_eq!(s.calls_with(&["docker", "create"]).len(), 1);
    let renewed = std::fs::read(dir.join("tls.crt")).unwrap();
    assert_ne!(renewed, near.as_bytes());
    assert_eq!(
        renewed,
        std::fs::read(s.path("certs-next/tls.crt")).unwrap()
    );
    let tls = s.calls_with(&["create", "secret", "tls", "pod-identity-webhook-tls"]);
    assert_eq!(tls.len(), 1);
    // No scratch directory left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("new."))
        .collect();
    assert!(leftovers.is_empty());

    // CERT_RENEW_DAYS moves the threshold: a fresh year-long pair is renewed at 400 days.
    s.forget_calls();
    s.run_ok(&[("CERT_RENEW_DAYS", "400")]);
    assert_eq!(s.calls_with(&["docker", "create"]).len(), 1);
}

/// A self-signed certificate ending `days` from now.
fn near_expiry_pem(days: i64) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["pod-identity-webhook.pod-identity-webhook.svc".into()])
            .unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(300);
    params.not_after = now + time::Duration::days(days);
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn a_failed_demo_pod_ends_the_wait_at_once() {
    let s = Sandbox::new();
    let started = Instant::now();
    let out = s.run(&[("STANDIN_POD_PHASE", "Failed")]);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "waited {:?}",
        started.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pod carts-aws failed"), "{err}");
    assert!(err.contains("did not obtain credentials"), "{err}");
}

#[test]
fn an_agent_rollout_failure_prints_the_daemonsets_and_pods_events() {
    let s = Sandbox::new();
    let out = s.run(&[("STANDIN_ROLLOUT_FAIL", "1")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the credentials agent did not become ready"),
        "{err}"
    );
    assert!(err.contains("Events: (stand-in)"), "{err}");
    let described = s.calls_with(&["describe"]);
    let has = |words: &[&str]| {
        described
            .iter()
            .any(|c| words.iter().all(|w| c.iter().any(|a| a == w)))
    };
    assert!(has(&["pod-identity-agent", "daemonset/pod-identity-agent"]));
    assert!(has(&[
        "pod-identity-agent",
        "pods",
        "app.kubernetes.io/name=pod-identity-agent"
    ]));
}

#[test]
fn real_sts_needs_the_secret_and_drops_the_stand_in() {
    let s = Sandbox::new();
    let out = s.run(&[("AGENT_STS", "aws")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("create secret generic pod-identity-agent-aws"),
        "{err}"
    );
    assert!(
        s.calls_with(&["create", "secret", "generic"]).is_empty(),
        "never creates stand-in keys for real STS"
    );

    // With the user's Secret in place.
    std::fs::write(s.path("state/secret"), "").unwrap();
    s.forget_calls();
    let out = s.run_ok(&[("AGENT_STS", "aws")]);
    assert!(
        s.calls_with(&["hack/demo/sts-moto.yaml"]).is_empty(),
        "no moto"
    );
    assert!(
        s.calls_with(&["hack/demo/pod-carts-aws.yaml"]).is_empty(),
        "no stand-in check of the caller"
    );
    let applied = s.applied();
    assert!(
        applied[0].contains("{name: POD_IDENTITY_AGENT_STS_ENDPOINT, $patch: delete}"),
        "{}",
        applied[0]
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("AWS CLI step is skipped"));
    if let Some(text) = kustomize(&s.certs_dir("pod-identity-webhook").join("overlay")) {
        assert!(!text.contains("STS_ENDPOINT"));
    }
}

/// helm: `$HELM`, else built by `hack/helm.sh`.
fn real_helm() -> Result<PathBuf, String> {
    tools::helm()
}

#[test]
fn helm_installs_the_chart_with_the_image_loaded_and_the_ca() {
    let s = Sandbox::new();
    let image = "registry.example.com:5000/platform/piw:t-1";
    let env = [("IMAGE", image), ("KIND_CLUSTER_NAME", "demo")];
    // Without helm on PATH: the prerequisites name it, and nothing runs.
    let nohelm = s.path("nohelm");
    std::fs::create_dir_all(&nohelm).unwrap();
    for tool in ["docker", "kind", "kubectl"] {
        std::os::unix::fs::symlink(s.path(&format!("bin/{tool}")), nohelm.join(tool)).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", nohelm.display());
    let missing = s.run_with(&["--helm"], &[("PATH", &path)]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && err.contains("helm (for --helm)"),
        "{err}"
    );
    assert!(s.calls().is_empty(), "{:?}", s.calls());

    let out = s.run_helm(&env);
    assert!(
        out.status.success(),
        "the script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The chart, not the overlay; no caBundle patch (the chart sets it).
    assert!(s.applied().is_empty(), "kubectl apply -k with --helm");
    assert!(s.calls_with(&["patch"]).is_empty());
    let helm = s.calls_with(&["helm"]);
    assert_eq!(helm.len(), 1, "{helm:?}");
    let call = &helm[0];
    let ca = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(s.certs_dir("demo").join("ca.crt")).unwrap())
    };
    let has = |pair: [&str; 2]| call.windows(2).any(|w| w == pair);
    assert!(call[1..3] == ["upgrade", "--install"], "{call:?}");
    assert!(has(["--namespace", "pod-identity-webhook"]), "{call:?}");
    assert!(has(["--kube-context", "kind-demo"]), "{call:?}");
    assert!(
        has([
            "--set-string",
            "image.repository=registry.example.com:5000/platform/piw"
        ]),
        "{call:?}"
    );
    assert!(has(["--set-string", "image.tag=t-1"]), "{call:?}");
    assert!(has(["--set-string", "agent.clusterName=demo"]), "{call:?}");
    assert!(
        has(["--set-string", &format!("certificates.caBundle={ca}")]),
        "{call:?}"
    );
    // The rollouts and the demo run as without --helm.
    assert_eq!(s.calls_with(&["rollout", "restart"]).len(), 2);
    assert_eq!(s.calls_with(&["hack/demo/pod-carts.yaml"]).len(), 1);

    // Rendered by the real helm with the same arguments: every container runs the image, both
    // webhook configurations trust the CA, the agent names this cluster and uses the stand-in.
    match real_helm() {
        Ok(helm) => {
            let mut args: Vec<String> = call[3..]
                .iter()
                .filter(|a| !a.starts_with("kind-") && *a != "--kube-context")
                .cloned()
                .collect();
            args.insert(0, "template".into());
            let out = Command::new(helm)
                .args(&args)
                .env("HELM_CACHE_HOME", s.path("helm/cache"))
                .env("HELM_CONFIG_HOME", s.path("helm/config"))
                .env("HELM_DATA_HOME", s.path("helm/data"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let images: Vec<&str> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("image: "))
                .collect();
            assert_eq!(images.len(), 3, "webhook, setup-link, agent: {images:?}");
            assert!(
                images.iter().all(|i| i.trim_matches('"') == image),
                "{images:?}"
            );
            let bundles: Vec<&str> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("caBundle: "))
                .map(|b| b.trim_matches('"'))
                .collect();
            assert_eq!(
                bundles,
                [ca.as_str(), ca.as_str()],
                "both configurations trust the CA"
            );
            assert!(text.contains("value: \"demo\""), "the agent's cluster name");
            assert!(text.contains("POD_IDENTITY_AGENT_STS_ENDPOINT"), "stand-in");
            assert!(
                !text.contains("kind: Namespace"),
                "the script made the namespaces"
            );
        }
        Err(why) => skip::missing(
            "helm built by hack/helm.sh (the chart is not rendered)",
            &why,
        ),
    }

    // Real STS: the stand-in's endpoint emptied.
    std::fs::write(s.path("state/secret"), "").unwrap();
    s.forget_calls();
    let out = s.run_helm(&[("AGENT_STS", "aws")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let helm = s.calls_with(&["helm"]);
    assert!(
        helm[0]
            .windows(2)
            .any(|w| w == ["--set-string", "agent.stsEndpoint="]),
        "{helm:?}"
    );
}

#[test]
fn hostile_settings_are_refused_before_anything_runs() {
    let s = Sandbox::new();
    for (key, value) in [
        ("IMAGE", "pod-identity-webhook"),
        ("IMAGE", "x:y\n    newName: evil"),
        ("IMAGE", "Upper/case:tag"),
        ("IMAGE", "x:$(touch pwned)"),
        ("KIND_CLUSTER_NAME", "../../etc"),
        ("AGENT_STS", "moto"),
        ("CERT_RENEW_DAYS", "1; rm -rf /"),
    ] {
        let out = s.run(&[(key, value)]);
        assert!(!out.status.success(), "{key}={value:?} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(key),
            "{key}={value:?}: the message names it"
        );
        assert!(s.calls().is_empty(), "{key}={value:?}: {:?}", s.calls());
    }
    assert!(!s.path("pwned").exists());
}

#[test]
fn help_is_the_header_from_any_directory() {
    let script = root().join("hack/kind-quickstart.sh");
    for dir in [root(), root().join("hack"), PathBuf::from("/")] {
        let out = Command::new("bash")
            .arg(&script)
            .arg("--help")
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "from {}", dir.display());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("The webhook on a local kind cluster"));
        assert!(text.contains("--delete") && text.contains("IMAGE"));
        assert!(!text.contains("set -euo") && !text.contains("#!"), "{text}");
    }
    // Relative, from hack/ itself (the way the issue found it broken).
    let out = Command::new("bash")
        .args(["./kind-quickstart.sh", "--help"])
        .current_dir(root().join("hack"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("The webhook on a local kind"));
}
