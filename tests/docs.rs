//! What the docs, help texts and metrics say is what the program does (issue 35): every fenced
//! shell command in README.md, DEVELOPMENT.md, BENCHMARKS.md and docs/ runs (or is in [`SKIP`]
//! with its reason), every YAML example in docs/ is loaded by the program, every metric name the
//! docs give is on `/metrics` of a running webhook, agent and controller, every relative link
//! resolves (file and `#anchor`), and the `--help` of every command matches its snapshot in
//! tests/fixtures/help/.

mod eks_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::markdown::{self, Block, root};

const BIN: &str = env!("CARGO_BIN_EXE_pod-identity-webhook");

/// Documented commands that are not run here, each with the reason. An entry ending in a space
/// names every command that starts with it; any other entry names one command exactly (as
/// [`markdown::normalized`] writes it, trailing comment taken off). A fenced command that is
/// neither run nor named here fails `every_documented_command_runs`.
const SKIP: &[(&str, &str)] = &[
    (
        "kubectl ",
        "needs a cluster (tests/cluster.rs drives the real API server)",
    ),
    ("kind ", "needs docker and kind"),
    ("docker ", "needs docker and a registry"),
    (
        "helm ",
        "needs a cluster (tests/helm_chart.rs installs the chart on the control plane)",
    ),
    ("aws ", "needs an AWS account"),
    (
        "pod-identity-webhook check -f deploy/nested.yaml",
        "its input is generated (tests/check.rs builds the nested YAML and checks this error)",
    ),
    (
        "pod-identity-webhook check -f deploy/huge-name.yaml",
        "its input is a generated 15 MB name, its output shortened (tests/check.rs checks it)",
    ),
    ("$EDITOR ", "interactive"),
    ("cargo test ", "the test suite itself"),
    (
        "scripts/suite-under-load.sh ",
        "the test suite itself, five times under load",
    ),
    (
        "UPDATE_SNAPSHOTS=1 cargo test ",
        "rewrites tests/fixtures/help/: run by hand after a help change",
    ),
    (
        "cargo run -- serve --self-signed --associations examples/associations.yaml --listen 127.0.0.1:8443 --admin-listen 127.0.0.1:8080",
        "a server: readme_quick_start_answers_as_documented runs it, with the next block",
    ),
    (
        "curl ",
        "talks to the quick start's server: readme_quick_start_answers_as_documented runs it",
    ),
    (
        "nice -n 10 scripts/fuzz.sh ",
        "placeholders (N SEED FROM); tests/fuzz.rs runs the harness",
    ),
    (
        "scripts/fuzz.sh 1 SEED INPUT",
        "placeholders for a finding's seed and input",
    ),
    (
        "hack/kind-quickstart.sh",
        "creates a kind cluster: needs docker and kind",
    ),
    (
        "hack/kind-quickstart.sh --helm",
        "creates a kind cluster: needs docker, kind and helm",
    ),
    (
        "hack/kind-quickstart.sh --delete",
        "deletes the kind cluster: needs kind",
    ),
    (
        "kustomize build deploy/overlays/prod ",
        "the reader's own overlay and config (check's CI use; tests/check.rs runs check -f -)",
    ),
    (
        "for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do ",
        "kubectl patch: needs a cluster",
    ),
    (
        "pod-identity-webhook migrate ",
        "needs a cluster, EKS and IAM (tests/migrate.rs runs plan/apply/verify against the fake \
         API, moto and the EKS stand-in; tests/cluster.rs on a real API server)",
    ),
    (
        "pod-identity-webhook issuer publish ",
        "needs S3 (tests/issuer.rs publishes to moto)",
    ),
    (
        "pod-identity-webhook issuer verify ",
        "needs the published issuer, a cluster and IAM (tests/issuer.rs verifies on loopback)",
    ),
    (
        "PROVIDER_ARN=$(pod-identity-webhook issuer provider ",
        "needs IAM (tests/issuer.rs creates the provider in moto)",
    ),
    (
        "pod-identity-webhook agent trust-policy --role-arn arn:aws:iam::111122223333:role/carts --namespace team-a --service-account carts --cluster-name my-cluster > trust.json",
        "without --agent-principal it asks STS who the agent is: needs AWS credentials (the \
         same command with --agent-principal runs, docs/agent.md's `$ ` example)",
    ),
    (
        "set -eu",
        "the first line of migrate's generated script, shown as sample output",
    ),
];

/// YAML examples in docs/ that the program does not read, each with the reason, named by
/// `file:first line`.
const NOT_PROGRAM_INPUT: &[(&str, &str)] = &[
    (
        "docs/agent.md:# kubeadm: JoinConfiguration of the nodes",
        "kubeadm's configuration: the startup taint on new nodes",
    ),
    (
        "docs/agent.md:# kind: the cluster's config (kind passes it to kubeadm)",
        "kind's cluster configuration: the startup taint on new nodes",
    ),
    (
        "docs/agent.md:# Karpenter: startupTaints of the NodePool (taints Karpenter expects something else to remove)",
        "a Karpenter NodePool: the startup taint on new nodes",
    ),
    (
        "docs/check-audit.md:jobs:",
        "a GitHub Actions workflow (its command is check's)",
    ),
    (
        "docs/injection.md:# a container's env as written",
        "a container's env before and after the mutating webhook (tests/mutation_table.rs checks it)",
    ),
    (
        "docs/operations.md:# kustomization.yaml of your overlay",
        "a kustomization (tests/helm_chart.rs renders the network-policy component and compares it with the chart)",
    ),
    (
        "docs/controller.md:# a ServiceAccount GitOps associations makes an association for",
        "a ServiceAccount (tests/gitops_associations.rs annotates them the same way)",
    ),
    (
        "docs/controller.md:# kustomization.yaml of your overlay, GitOps associations on",
        "a kustomization (tests/helm_chart.rs and tests/manifests_cluster.rs render components/gitops-associations)",
    ),
    (
        "docs/controller.md:apiVersion: kustomize.config.k8s.io/v1beta1",
        "a kustomization (tests/helm_chart.rs renders the shipped overlays and components)",
    ),
];

fn skip_reason(command: &str) -> Option<&'static str> {
    let command = markdown::normalized(command);
    let command = command.split(" # ").next().unwrap_or("").trim();
    SKIP.iter().find_map(|(entry, reason)| {
        let hit = if entry.ends_with(' ') {
            command.starts_with(entry) || command == entry.trim_end()
        } else {
            command == *entry
        };
        hit.then_some(*reason)
    })
}

fn shell_blocks() -> Vec<Block> {
    markdown::doc_files()
        .iter()
        .flat_map(|f| markdown::blocks(f))
        .filter(markdown::is_shell)
        .collect()
}

/// A scratch copy of the repository as a reader's checkout looks to the docs' commands: the
/// read-only trees linked, `certs/` copied (the commands write `certs/out`), and
/// `pod-identity-webhook` on `PATH` as the binary of this build.
struct Checkout {
    dir: tempfile::TempDir,
}

impl Checkout {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for tree in [
            "examples",
            "hack",
            "manifests",
            "charts",
            "scripts",
            "docs",
            "tests",
        ] {
            std::os::unix::fs::symlink(root().join(tree), dir.path().join(tree)).unwrap();
        }
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        for file in ["generate.sh", "README.md"] {
            std::fs::copy(
                root().join("certs").join(file),
                dir.path().join("certs").join(file),
            )
            .unwrap();
        }
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(BIN, dir.path().join("bin/pod-identity-webhook")).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `script` run by bash in the checkout, within `limit`: `(success, stdout + stderr)`.
    fn run(&self, script: &str, env: &[(&str, String)], limit: Duration) -> (bool, String) {
        let path = format!(
            "{}:{}",
            self.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.path())
            .env("PATH", path)
            .env("HOME", self.path())
            .env_remove("POD_IDENTITY_WEBHOOK_BIN")
            .env_remove("RUST_BACKTRACE")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("bash runs");
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if started.elapsed() > limit {
                // The whole group: the script and whatever it started.
                // SAFETY: kill(2) on the process group this test created; no memory is shared.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return (false, format!("still running after {limit:?}; stopped"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

/// `cargo run -- ARGS` in the docs is this build's binary.
fn as_built(command: &str) -> String {
    command.replace("cargo run -- ", "pod-identity-webhook ")
}

#[test]
fn every_documented_command_runs_or_is_skipped_with_a_reason() {
    // Each doc file's commands run in order in one shell (a walkthrough sets variables and
    // files that later commands use), in a checkout of its own.
    let mut by_file: BTreeMap<PathBuf, Vec<(String, markdown::Shown)>> = BTreeMap::new();
    for block in shell_blocks() {
        for command in markdown::shown_commands(&block) {
            if skip_reason(&command.text).is_none() {
                by_file
                    .entry(block.file.clone())
                    .or_default()
                    .push((block.at(), command));
            }
        }
    }
    let mut failures = Vec::new();
    let mut ran = 0;
    for (file, commands) in &by_file {
        let checkout = Checkout::new();
        let mut script = String::from(
            "set -o pipefail\nfail() { echo \"DOCS COMMAND FAILED (exit $1) at $at\" >&2; exit 1; }\n",
        );
        for (n, (at, command)) in commands.iter().enumerate() {
            eprintln!("runs {at}: {}", markdown::normalized(&command.text));
            let text = as_built(&command.text);
            match &command.error {
                None => script.push_str(&format!("at='{at}'\n{{\n{text}\n}} || fail $?\n")),
                // Shown failing: it must fail, with the error the doc shows.
                Some(error) => {
                    let expected = format!("expected-error-{n}.txt");
                    std::fs::write(checkout.path().join(&expected), error).unwrap();
                    script.push_str(&format!(
                        "at='{at}'\nif ( {text}\n) >error.txt 2>&1; then echo 'the docs show it \
                         failing; it succeeded' >&2; fail 0; fi\ngrep -qF -f {expected} error.txt \
                         || {{ cat error.txt >&2; echo \"not the error the docs show: $(cat \
                         {expected})\" >&2; fail 1; }}\n"
                    ));
                }
            }
            ran += 1;
        }
        let (ok, output) = checkout.run(&script, &[], Duration::from_secs(120));
        if !ok {
            failures.push(format!(
                "{}: {output}\n  (fix the command or the program; a command that cannot run \
                 without a cluster or an account goes into SKIP in tests/docs.rs with its reason)",
                file.display()
            ));
        }
    }
    assert!(ran >= 10, "only {ran} documented commands ran");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_skip_list_names_only_commands_the_docs_still_show() {
    let commands: Vec<String> = shell_blocks().iter().flat_map(markdown::commands).collect();
    let stale: Vec<&str> = SKIP
        .iter()
        .map(|(entry, _)| *entry)
        .filter(|entry| {
            !commands.iter().any(|c| {
                let c = markdown::normalized(c);
                let c = c.split(" # ").next().unwrap_or("").trim().to_string();
                c.starts_with(entry.trim_end())
            })
        })
        .collect();
    assert!(
        stale.is_empty(),
        "SKIP in tests/docs.rs names commands no doc shows any more: {stale:?}; take them out"
    );
}

/// The README's quick start word for word: its `serve` command (the binary of this build, free
/// ports in place of 8443 and 8080), then its `curl` block with the CA file the log names.
#[test]
fn readme_quick_start_answers_as_documented() {
    let blocks = markdown::blocks(Path::new("README.md"));
    let serve = blocks
        .iter()
        .flat_map(markdown::commands)
        .find(|c| c.starts_with("cargo run -- serve"))
        .expect("README shows `cargo run -- serve`");
    let curl = blocks
        .iter()
        .find(|b| b.text.contains("curl "))
        .expect("README shows the curl commands");
    let (https, admin) = (
        support::control_plane::free_port(),
        support::control_plane::free_port(),
    );
    let ports = |text: &str| {
        text.replace(":8443", &format!(":{https}"))
            .replace(":8080", &format!(":{admin}"))
    };
    let checkout = Checkout::new();
    let log = checkout.path().join("serve.log");
    let mut server = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec {} 2>{}",
            as_built(&ports(&serve)),
            log.display()
        ))
        .current_dir(checkout.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                checkout.path().join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .spawn()
        .expect("serve starts");
    let started = Instant::now();
    let ca = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let ready = support::control_plane::admin_status(admin, "/readyz") == Some(200);
        let ca = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|l| l["ca"].as_str().map(str::to_string));
        if let (true, Some(ca)) = (ready, ca) {
            break ca;
        }
        if started.elapsed() > Duration::from_secs(20) || server.try_wait().unwrap().is_some() {
            let _ = server.kill();
            panic!("README's serve command did not become ready with its CA logged:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (ok, output) = checkout.run(
        &format!("set -o pipefail\n{}", ports(&curl.text)),
        &[("CA_FILE_FROM_THE_LOG", ca)],
        Duration::from_secs(30),
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "README's curl block failed:\n{output}");
    // The decoded patch (jq's pretty JSON), then readyz's answer, then the metrics.
    assert!(
        output.contains("\"AWS_CONTAINER_CREDENTIALS_FULL_URI\"")
            || output.contains("AWS_ROLE_ARN"),
        "the decoded patch gives no credentials:\n{output}"
    );
    assert!(
        output.contains("pod_identity_webhook_admissions_total"),
        "no metrics after the review:\n{output}"
    );
}

/// A YAML example as the program reads it: the settings file, an associations file, the webhook
/// rules the manifests register, a pre-commit configuration of the hook this repository ships.
#[test]
fn every_yaml_example_in_docs_is_loaded_by_the_program() {
    let mut failures = Vec::new();
    let mut loaded = 0;
    for file in markdown::doc_files()
        .into_iter()
        .filter(|f| f.starts_with("docs"))
    {
        for block in markdown::blocks(&file) {
            if !matches!(block.lang.as_str(), "yaml" | "yml") {
                continue;
            }
            let first = block.text.lines().next().unwrap_or("").trim().to_string();
            let name = format!("{}:{first}", file.display());
            if NOT_PROGRAM_INPUT.iter().any(|(n, _)| *n == name) {
                continue;
            }
            loaded += 1;
            if let Err(e) = load_yaml_example(&block) {
                failures.push(format!("{}: {e}", block.at()));
            }
        }
    }
    assert!(loaded >= 8, "only {loaded} YAML examples found");
    assert!(
        failures.is_empty(),
        "YAML examples the program does not take as shown (fix the example or the program; a \
         block that is not the program's input goes into NOT_PROGRAM_INPUT in tests/docs.rs):\n{}",
        failures.join("\n")
    );
}

fn load_yaml_example(block: &Block) -> Result<(), String> {
    let value: serde_json::Value =
        serde_yaml_ng::from_str(&block.text).map_err(|e| format!("not YAML: {e}"))?;
    let keys: BTreeSet<&str> = value
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if value["kind"] == "ClusterRole" {
        serde_json::from_value::<k8s_openapi::api::rbac::v1::ClusterRole>(value)
            .map(|_| ())
            .map_err(|e| format!("as a ClusterRole: {e}"))
    } else if keys.contains("associations") {
        let path = Path::new("docs-example.yaml");
        pod_identity_webhook::identity::file::format::parse(path, &block.text)
            .map(|_| ())
            .map_err(|e| format!("as an associations file: {e}"))
    } else if keys.contains("repos") {
        pre_commit_config(&value)
    } else if keys.contains("rules") {
        webhook_rules_as_registered(&value)
    } else {
        // As `serve --config FILE` reads it; an example without `tls:` is tried as a local run
        // would be (`--self-signed`).
        let mut args: Vec<&str> = Vec::new();
        if !keys.contains("tls") {
            args.push("--self-signed");
        }
        let flags = pod_identity_webhook::settings::Flags::parse(args)
            .map_err(|e| format!("flags: {e}"))?;
        pod_identity_webhook::settings::Settings::parse(
            Some(Path::new("docs-example.yaml")),
            &block.text,
            flags,
        )
        .map(|_| ())
        .map_err(|e| format!("as the settings file (serve --config): {e}"))
    }
}

/// The hook id is the one `.pre-commit-hooks.yaml` declares, and `rev:` is something the
/// repository has: a tag it carries or a commit id.
fn pre_commit_config(value: &serde_json::Value) -> Result<(), String> {
    let hooks: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join(".pre-commit-hooks.yaml")).unwrap(),
    )
    .unwrap();
    let ids: Vec<&str> = hooks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["id"].as_str())
        .collect();
    for repo in value["repos"].as_array().into_iter().flatten() {
        for hook in repo["hooks"].as_array().into_iter().flatten() {
            let id = hook["id"].as_str().unwrap_or("");
            if !ids.contains(&id) {
                return Err(format!(
                    "hook id {id:?} is not in .pre-commit-hooks.yaml ({ids:?})"
                ));
            }
        }
        let rev = repo["rev"].as_str().unwrap_or("");
        let is_commit = rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit());
        let tags = Command::new("git")
            .args(["tag", "--list"])
            .current_dir(root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if !is_commit && !tags.lines().any(|t| t == rev) {
            return Err(format!(
                "rev {rev:?} is neither a tag of this repository nor a commit id"
            ));
        }
    }
    Ok(())
}

/// The rules shown are the validating webhook's rules in manifests/base/webhooks.yaml.
fn webhook_rules_as_registered(value: &serde_json::Value) -> Result<(), String> {
    let shipped = std::fs::read_to_string(root().join("manifests/base/webhooks.yaml")).unwrap();
    let validating = shipped
        .split("\n---")
        .map(|doc| serde_yaml_ng::from_str::<serde_json::Value>(doc).unwrap())
        .find(|doc| doc["kind"] == "ValidatingWebhookConfiguration")
        .expect("manifests/base/webhooks.yaml has the ValidatingWebhookConfiguration");
    let rules = |rules: &serde_json::Value| -> BTreeSet<String> {
        rules
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|rule| {
                let list = |k: &str| -> Vec<String> {
                    rule[k]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|v| v.as_str().unwrap_or("").to_string())
                        .collect()
                };
                let mut out = Vec::new();
                for group in list("apiGroups") {
                    for resource in list("resources") {
                        for op in list("operations") {
                            out.push(format!("{group}/{resource} {op}"));
                        }
                    }
                }
                out
            })
            .collect()
    };
    let (shown, registered) = (
        rules(&value["rules"]),
        rules(&validating["webhooks"][0]["rules"]),
    );
    if shown != registered {
        return Err(format!(
            "the rules shown are not the ones manifests/base/webhooks.yaml registers: missing \
             {:?}, extra {:?}",
            registered.difference(&shown).collect::<Vec<_>>(),
            shown.difference(&registered).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// docs/policy.md shows examples/config-multitenant.yaml: the same settings, comments aside.
#[test]
fn the_multitenant_example_in_the_docs_is_the_example_file() {
    let shown = markdown::blocks(Path::new("docs/policy.md"))
        .into_iter()
        .find(|b| b.lang == "yaml" && b.text.contains("policy:"))
        .expect("docs/policy.md shows the multi-tenant configuration");
    let file = std::fs::read_to_string(root().join("examples/config-multitenant.yaml")).unwrap();
    let (shown, file): (serde_json::Value, serde_json::Value) = (
        serde_yaml_ng::from_str(&shown.text).unwrap(),
        serde_yaml_ng::from_str(&file).unwrap(),
    );
    assert_eq!(
        shown, file,
        "docs/policy.md's example differs from examples/config-multitenant.yaml"
    );
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown::doc_files() {
        for link in markdown::links(&file) {
            let target = link.target.as_str();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target, None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                normalize(&file.parent().unwrap().join(path))
            };
            let at = format!("{}:{}: {target}", file.display(), link.line);
            if !root().join(&resolved).exists() {
                broken.push(format!("{at}: no file {}", resolved.display()));
                continue;
            }
            if let Some(anchor) = anchor
                && resolved.extension().is_some_and(|e| e == "md")
                && !markdown::anchors(&resolved).contains(anchor)
            {
                broken.push(format!(
                    "{at}: no heading with anchor #{anchor} in {}",
                    resolved.display()
                ));
            }
        }
    }
    assert!(checked >= 20, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// `a/b/../c` → `a/c` (the target need not exist for the error message).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

// ---- help snapshots ----

fn help_dir() -> PathBuf {
    root().join("tests/fixtures/help")
}

/// `--help` of a command line, as a user's terminal of 100 columns shows it, with no setting in
/// the environment (clap prints the values of the environment variables it reads).
fn help(args: &[String]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "100")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{args:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands a help text lists (its `Commands:` section), without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

/// Every command line with its help text: the program, each command, each subcommand.
fn all_help() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut queue = vec![Vec::<String>::new()];
    while let Some(args) = queue.pop() {
        let text = help(&args);
        for sub in subcommands(&text) {
            let mut next = args.clone();
            next.push(sub);
            queue.push(next);
        }
        let name = if args.is_empty() {
            "pod-identity-webhook".to_string()
        } else {
            args.join(".")
        };
        out.insert(name, text);
    }
    out
}

#[test]
fn every_help_text_matches_its_snapshot() {
    let help = all_help();
    assert!(
        help.len() >= 15,
        "only {} commands found: {:?}",
        help.len(),
        help.keys()
    );
    let dir = help_dir();
    let existing: BTreeSet<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    name.strip_suffix(".txt").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &help {
            std::fs::write(dir.join(format!("{name}.txt")), text).unwrap();
        }
        for stale in existing.iter().filter(|n| !help.contains_key(*n)) {
            std::fs::remove_file(dir.join(format!("{stale}.txt"))).unwrap();
        }
        return;
    }
    let mut differ = Vec::new();
    for (name, text) in &help {
        let snapshot = std::fs::read_to_string(dir.join(format!("{name}.txt"))).unwrap_or_default();
        if &snapshot != text {
            let first = snapshot
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(snapshot.lines().count().min(text.lines().count()));
            differ.push(format!(
                "{name}: first difference at line {}:\n  snapshot: {:?}\n  now:      {:?}",
                first + 1,
                snapshot.lines().nth(first).unwrap_or("<none>"),
                text.lines().nth(first).unwrap_or("<none>")
            ));
        }
    }
    for stale in existing.iter().filter(|n| !help.contains_key(*n)) {
        differ.push(format!(
            "{stale}: a snapshot of a command that no longer exists"
        ));
    }
    assert!(
        differ.is_empty(),
        "--help differs from tests/fixtures/help/:\n{}\n\nIf the change is intended, run \
         `UPDATE_SNAPSHOTS=1 cargo test --locked --test docs every_help_text` and review the diff \
         of tests/fixtures/help/ (help texts are user text: no code comments).",
        differ.join("\n")
    );
}

// ---- metrics ----

/// Every metric name the docs give: `pod_identity_*` names anywhere, the unprefixed names of
/// docs/operations.md's metrics table, and unprefixed counter/histogram names (`*_total`,
/// `*_seconds`) elsewhere, which operations.md says are all `pod_identity_webhook_`.
fn documented_metrics() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for file in markdown::doc_files() {
        let text = markdown::read(&file);
        let mut in_table = false;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("## ") {
                in_table = file == Path::new("docs/operations.md") && line == "## Metrics";
            }
            // The metric column of operations.md's table: its names are unprefixed.
            let first_cell: Vec<&str> = if in_table {
                let cell = line.split('|').nth(1).unwrap_or("");
                cell.split('`').skip(1).step_by(2).collect()
            } else {
                Vec::new()
            };
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 0 {
                    continue;
                }
                let name = span.split('{').next().unwrap_or("");
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    continue;
                }
                let in_first_cell = first_cell.contains(&span);
                let full = if name.ends_with('_') {
                    continue; // the prefix itself
                } else if name.starts_with("pod_identity_") {
                    name.to_string()
                } else if in_first_cell || ["_total", "_seconds"].iter().any(|s| name.ends_with(s))
                {
                    format!("pod_identity_webhook_{name}")
                } else {
                    continue;
                };
                out.entry(full)
                    .or_insert_with(|| format!("{}:{}", file.display(), n + 1));
            }
        }
    }
    out
}

/// The metric names a Prometheus text exposes: every `# TYPE` family (counters' samples add
/// `_total`) and every sample name.
fn exposed(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                out.insert(name.to_string());
                if kind == "counter" {
                    out.insert(format!("{name}_total"));
                }
            }
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            out.insert(name.to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_on_metrics_of_a_running_webhook_agent_and_controller() {
    let documented = documented_metrics();
    assert!(
        documented.len() >= 30,
        "only {} metric names found",
        documented.len()
    );
    // A family shows once it has a series: each process is given the traffic that makes one.

    // The webhook on both sources, the associations file and EKS (the stand-in): a mutation, a
    // validation of the same pod unmutated (a missed injection), a body that is not a review, a
    // connection that never says hello, and a change to the associations file.
    support::static_aws_credentials();
    let eks = eks_support::FakeEks::start("prod").await;
    let associations = std::fs::read_to_string(root().join("examples/associations.yaml")).unwrap();
    let webhook = support::WebhookBuilder::new()
        .associations(&associations)
        .settings(|s| {
            let mut settings = pod_identity_webhook::settings::EksSettings::new("prod");
            settings.region = Some("us-east-1".into());
            settings.endpoint = Some(eks.url());
            s.eks = settings;
            s.server.reload_interval = Duration::from_millis(20);
            s.server.connections.handshake_timeout = Duration::from_millis(100);
        })
        .start()
        .await;
    support::wait_readyz(webhook.admin_addr, 200).await;
    let review = std::fs::read(root().join("examples/review-pod-carts.json")).unwrap();
    let mut client = support::TlsClient::to(&webhook, false).await;
    for path in ["/mutate?timeout=10s", "/validate?timeout=10s"] {
        let answer = client.review(path, review.clone()).await.unwrap();
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    }
    let answer = client
        .post("/mutate", "application/json", b"not a review".to_vec())
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    let silent = tokio::net::TcpStream::connect(webhook.https_addr)
        .await
        .unwrap();
    std::fs::write(
        webhook.dir.path().join("associations.yaml"),
        format!("{associations}\n# changed\n"),
    )
    .unwrap();

    // The agent: a wrong path, then credentials for a pod (a TokenReview, an STS call, a
    // cache miss), refreshed in the background before they expire.
    let sts = support::sts::RecordingSts::issuing(Duration::from_secs(8)).await;
    let agent =
        support::agent::Harness::start(&sts.endpoint, support::agent::refresh_short_lived).await;
    let token = agent.pod_token("team-a", "carts", "carts-0");
    let (status, body) = support::agent::get(
        agent.addr(),
        "/wrong",
        &agent.addr().to_string(),
        Some(&token),
    )
    .await;
    // docs/agent.md's table of answers: a wrong path is 404 `NotFound`.
    assert_eq!(
        (status, body["Code"].as_str()),
        (404, Some("NotFound")),
        "{body}"
    );
    let (status, _) = agent.get(&token).await;
    assert_eq!(status, 200, "the agent serves carts' credentials");

    // The controller, on a cluster with a Deployment that has no identity, and GitOps
    // associations on the EKS stand-in for a ServiceAccount annotated with a role.
    let dir = tempfile::tempdir().unwrap();
    let annotated = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "docs-gitops",
            "namespace": "team-a",
            "uid": "uid-docs-gitops",
            "resourceVersion": "4002",
            "annotations": {
                "pod-identity-webhook/association-role-arn": "arn:aws:iam::111122223333:role/docs-gitops"
            }
        }
    });
    let kube = support::kube_api::FakeKubeApi::start_changed(
        0,
        Vec::new(),
        support::kube_api::Changes {
            service_accounts: vec![annotated],
            ..Default::default()
        },
    )
    .await;
    let (_, deployment) = support::fixture("deployment-create-carts.validate.json");
    let mut deployment: serde_json::Value = serde_json::from_slice(&deployment).unwrap();
    let mut deployment = deployment["request"]["object"].take();
    deployment["metadata"]["namespace"] = "team-a".into();
    deployment["metadata"]["name"] = "orders".into();
    deployment["metadata"]["uid"] = "uid-orders".into();
    deployment["metadata"]["resourceVersion"] = "4001".into();
    deployment["spec"]["template"]["spec"]["serviceAccountName"] = "orders".into();
    kube.put(deployment);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "associationsFile: {}\npolicy: {{defaultMode: enforce, clusterName: prod}}\n",
            root().join("examples/associations.yaml").display()
        ),
    )
    .unwrap();
    let eks_url = eks.url();
    let controller = support::controller::in_process(
        &config,
        &kube.kubeconfig(dir.path()),
        &[
            "--gitops-associations",
            "--cluster-name",
            "prod",
            "--region",
            "us-east-1",
            "--eks-endpoint",
            &eks_url,
        ],
    )
    .await;

    let mut names = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        names.clear();
        for addr in [
            webhook.admin_addr,
            agent.agent.admin_addr,
            controller.admin_addr,
        ] {
            names.extend(exposed(&support::admin_get(addr, "/metrics").await.1));
        }
        // Deadlines, reloads, the audit's run and the agent's refresh come a moment later.
        if documented.keys().all(|n| names.contains(n)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(silent);
    let missing: Vec<String> = documented
        .iter()
        .filter(|(n, _)| !names.contains(*n))
        .map(|(n, at)| format!("{n} ({at})"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics the docs name that the running webhook, agent and controller do not export \
         (fix the docs' name, or the program; a family shows once it has a series, so a new one \
         may need traffic in this test):\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_test_file_is_in_the_development_test_table() {
    let development = markdown::read(Path::new("DEVELOPMENT.md"));
    let missing: Vec<String> = std::fs::read_dir(root().join("tests"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".rs"))
        .filter(|name| !development.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "test files DEVELOPMENT.md's table does not name: {missing:?}; add a row saying what \
         each checks"
    );
}

/// docs/agent.md's settings table: every flag `agent --help` lists, with its environment
/// variable where it has one (and none it does not read).
#[test]
fn the_agent_settings_table_has_every_flag_and_environment_variable() {
    let help = help(&["agent".to_string()]);
    let mut flags = Vec::new();
    let mut envs = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("--") {
            let flag = rest.split([' ', '=']).next().unwrap_or("");
            if !["help", "version"].contains(&flag) {
                flags.push(format!("--{flag}"));
            }
        }
        if let Some(rest) = t.strip_prefix("[env: ") {
            envs.push(rest.split('=').next().unwrap_or("").to_string());
        }
    }
    let doc = markdown::read(Path::new("docs/agent.md"));
    let table: String = doc
        .split("## Settings")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/agent.md has a Settings section")
        .to_string();
    let missing: Vec<&String> = flags
        .iter()
        .chain(&envs)
        .filter(|name| {
            !table.contains(&format!("`{name}`")) && !table.contains(&format!("`{name}` "))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/agent.md's settings table leaves out {missing:?} (agent --help has them)"
    );
    let documented_envs: BTreeSet<&str> = table
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("POD_IDENTITY_AGENT_"))
        .collect();
    let unknown: Vec<&&str> = documented_envs
        .iter()
        .filter(|e| !envs.iter().any(|have| have == **e))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/agent.md names environment variables the agent does not read: {unknown:?}"
    );
}

/// Every flag says what it does: a snapshot line with a flag and nothing after it is a flag
/// without a doc comment.
#[test]
fn every_flag_in_the_help_snapshots_has_a_help_text() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/help");
    let mut bare = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            let flag_only = t.starts_with('-')
                && t.split_whitespace()
                    .all(|w| w.starts_with('-') || w.starts_with('<') || w.ends_with(','));
            // Long help puts the text on the next line, indented further.
            let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
            let text_below = !next.is_empty() && !next.starts_with('-');
            if flag_only && !text_below {
                bare.push(format!(
                    "{}: {t}",
                    path.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "flags without help text (give each a doc comment):\n{}",
        bare.join("\n")
    );
}
