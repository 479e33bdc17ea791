//! `pod-identity-webhook check` (docs/contract.md §11), run as the built binary: every captured object gets
//! the verdict (and patch) the running webhook gives it over TLS, with the same config file;
//! ServiceAccounts in the checked manifests count; unreadable input is named by file and
//! document; exit codes 0 / 1 / 2.

mod eks_support;
mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::kube_api::FakeKubeApi;
use support::{
    Capture, TlsClient, apply_answer, captures, decode_patch, fixtures_dir, run_binary as run,
    run_binary_env, strings,
};

/// The config file both the webhook and `check` read (docs/contract.md §8).
fn write_config(dir: &Path, mode: &str) -> PathBuf {
    let path = dir.join(format!("config-{mode}.yaml"));
    let associations = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/associations.yaml");
    std::fs::write(
        &path,
        format!(
            "associationsFile: {}
policy:
  defaultMode: {mode}
  clusterName: prod
  namespaces:
    - match: \"team-*\"
      allowedRoleArns: [\"arn:aws:iam::111122223333:role/carts\", \"arn:aws:iam::111122223333:role/db\"]
",
            associations.display()
        ),
    )
    .unwrap();
    path
}

/// What `/validate` answered, in `check`'s words.
/// `check --config CONFIG EXTRA...`.
fn check_args(config: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&["check", "--config", config.to_str().unwrap()]);
    args.extend(strings(extra));
    args
}

fn webhook_verdict(response: &Value) -> &'static str {
    match (
        response["allowed"].as_bool().unwrap(),
        response["status"]["code"].as_u64(),
    ) {
        (false, Some(400)) => "invalid",
        (false, _) => "denied",
        (true, _) if response.get("warnings").is_some() => "warned",
        (true, _) => "allowed",
    }
}

fn webhook_messages(response: &Value) -> Vec<String> {
    response["status"]["message"]
        .as_str()
        .map(str::to_string)
        .into_iter()
        .chain(
            response["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| w.as_str().unwrap().to_string()),
        )
        .collect()
}

fn check_json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The report on the object from `file`.
fn report_for<'a>(report: &'a Value, file: &Path) -> &'a Value {
    let name = file.display().to_string();
    let found: Vec<&Value> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["file"] == name.as_str())
        .collect();
    assert_eq!(found.len(), 1, "one report for {name}: {report}");
    found[0]
}

/// Each capture's object in its own JSON file, named after the capture.
fn write_objects(dir: &Path, fixtures: &[Capture]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    fixtures
        .iter()
        .map(|f| {
            let path = dir.join(format!("{}.json", f.name));
            std::fs::write(&path, f.review()["request"]["object"].to_string()).unwrap();
            path
        })
        .collect()
}

/// The capture as the creation of its object (a pod UPDATE is always allowed at admission,
/// while `check` decides the object's creation).
fn as_creation(capture: &Capture) -> Value {
    let mut review = capture.review();
    review["request"]["operation"] = json!("CREATE");
    review["request"]
        .as_object_mut()
        .unwrap()
        .remove("oldObject");
    review
}

/// The webhook's `/validate` answer to a pod's creation as the API server asks it: after
/// `/mutate` has patched the pod (issue 28: `/validate` denies a pod the mutation missed, and
/// the captures were recorded without the mutating webhook; `check` runs both on the object).
async fn validate_mutated(client: &mut TlsClient, capture: &Capture, mut review: Value) -> Value {
    let body = serde_json::to_vec(&review).unwrap();
    let mutate = client.review("/mutate?timeout=10s", body).await.unwrap();
    let object = &review["request"]["object"];
    review["request"]["object"] = apply_answer(object, &mutate.json());
    let body = serde_json::to_vec(&review).unwrap();
    let answer = client.review(&capture.path, body).await.unwrap();
    answer.json()["response"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_captured_object_gets_the_webhooks_verdict_and_patch() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeKubeApi::start(0, Vec::new()).await;
    let kubeconfig = fake.kubeconfig(dir.path());
    let validate = captures(".validate.json");
    let mutate = captures(".mutate.json");
    assert!(validate.len() >= 16 && mutate.len() >= 4);
    let validate_files = write_objects(&dir.path().join("objects/validate"), &validate);
    let mutate_files = write_objects(&dir.path().join("objects/mutate"), &mutate);
    let service_accounts = fixtures_dir().join("kube-api/serviceaccounts.list.json");

    for mode in ["enforce", "warn"] {
        let config = write_config(dir.path(), mode);
        let running = support::serve_config(&config, Some(&kubeconfig)).await;
        let mut client = TlsClient::to(&running, false).await;

        // ServiceAccounts from the live (fake) cluster, and from a saved `kubectl get sa -o json`.
        for identities in [
            vec!["--kubeconfig", kubeconfig.to_str().unwrap()],
            vec!["--service-accounts", service_accounts.to_str().unwrap()],
        ] {
            let objects = dir.path().join("objects");
            let mut args = vec![
                "check",
                "-f",
                objects.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--show-patch",
                "--output",
                "json",
            ];
            args.extend(&identities);
            let (code, stdout, stderr) = run(strings(&args), None).await;
            let report = check_json(&stdout);
            assert_eq!(
                report["objects"].as_array().unwrap().len(),
                validate.len() + mutate.len(),
                "{stderr}"
            );
            let mut any_denied = false;

            for (capture, file) in validate.iter().zip(&validate_files) {
                let at = format!("{mode} {identities:?} {}", capture.name);
                let ours = report_for(&report, file);
                let recorded = client.send(capture).await.unwrap().json()["response"].clone();
                let is_pod = capture.review()["request"]["kind"]["kind"] == "Pod";
                let is_pod_update = is_pod && capture.review()["request"]["operation"] == "UPDATE";
                let theirs = if is_pod_update {
                    assert_eq!(recorded["allowed"], true, "{at}: pod updates pass");
                    validate_mutated(&mut client, capture, as_creation(capture)).await
                } else if is_pod {
                    validate_mutated(&mut client, capture, capture.review()).await
                } else {
                    // Workload and ServiceAccount updates are decided as their creation is.
                    recorded
                };
                assert_eq!(ours["verdict"], webhook_verdict(&theirs), "{at}: {ours}");
                let messages: Vec<String> =
                    serde_json::from_value(ours["messages"].clone()).unwrap();
                let expected = webhook_messages(&theirs);
                assert!(
                    messages.starts_with(&expected),
                    "{at}: check said {messages:?}, /validate {expected:?}"
                );
                any_denied |= ours["verdict"] == "denied";
            }

            for (capture, file) in mutate.iter().zip(&mutate_files) {
                let at = format!("{mode} {identities:?} {}", capture.name);
                let ours = report_for(&report, file);
                let answer = client.send(capture).await.unwrap().json();
                let patch = serde_json::to_value(decode_patch(&answer)).unwrap();
                let mutated = !patch.as_array().unwrap().is_empty();
                assert_eq!(ours["mutated"], mutated, "{at}: {ours}");
                if mutated {
                    assert_eq!(ours["patch"], patch, "{at}");
                } else {
                    assert!(ours.get("patch").is_none(), "{at}: {ours}");
                }
                // Warnings of /mutate (host network) are reported too.
                for w in webhook_messages(&answer["response"]) {
                    assert!(
                        ours["messages"].as_array().unwrap().contains(&json!(w)),
                        "{at}: {w}"
                    );
                }
            }
            assert_eq!(mode == "enforce", any_denied, "{mode}");
            assert_eq!(code, if any_denied { 1 } else { 0 }, "{mode}: {stderr}");
            assert_eq!(report["summary"]["exitCode"], code);
        }
        drop(running);
    }
}

const APP: &str = "\
# Source: shop/templates/carts.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: shop
  annotations:
    eks.amazonaws.com/role-arn: arn:aws:iam::111122223333:role/carts
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: carts
spec:
  selector: {matchLabels: {app: carts}}
  template:
    metadata: {labels: {app: carts}}
    spec:
      serviceAccountName: shop
      containers: [{name: app, image: carts:1}]
";

const ORDERS: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
  namespace: team-a
spec:
  selector: {matchLabels: {app: orders}}
  template:
    metadata: {labels: {app: orders}}
    spec:
      serviceAccountName: orders
      containers: [{name: app, image: orders:1}]
";

/// A chart-like tree: the Deployment and its ServiceAccount in one file (namespace from
/// `--namespace`), a Deployment in a sub-directory whose ServiceAccount has no identity, a JSON
/// `List`, and files that are not manifests.
fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("orders")).unwrap();
    std::fs::write(root.join("carts.yaml"), APP).unwrap();
    std::fs::write(root.join("orders/deployment.yml"), ORDERS).unwrap();
    std::fs::write(
        root.join("orders/pods.json"),
        json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-0", "namespace": "team-a"},
             "spec": {"serviceAccountName": "db", "containers": [{"name": "db", "image": "db"}]}},
        ]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(root.join("README.md"), "not a manifest: {[").unwrap();
    std::fs::write(root.join("orders/.hidden.yaml"), "not: [valid").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_with_a_deployment_and_its_service_account_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "enforce");
    let tree = dir.path().join("chart");
    write_tree(&tree);
    let base = |extra: &[&str]| {
        [
            check_args(&config, &["--namespace", "team-a"]),
            strings(extra),
        ]
        .concat()
    };

    let (code, stdout, stderr) = run(base(&["-f", tree.to_str().unwrap()]), None).await;
    assert_eq!(code, 1, "orders is denied: {stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    assert_eq!(lines[0], "ServiceAccount team-a/shop: allowed");
    assert_eq!(lines[1], "Deployment team-a/carts: allowed");
    // Each pod and template names the identity it gets and where it comes from.
    assert_eq!(
        lines[2],
        "  identity: IRSA role arn:aws:iam::111122223333:role/carts"
    );
    assert!(
        lines[4].starts_with("Pod team-a/db-0: mutated: identity injected"),
        "{stdout}"
    );
    assert_eq!(
        lines[5],
        "  identity: role arn:aws:iam::111122223333:role/db from associations[1] (team-a/db)"
    );
    let lines: Vec<&str> = lines
        .into_iter()
        .filter(|l| !l.starts_with("  identity: "))
        .collect();
    assert!(
        lines[2].starts_with("Deployment team-a/orders: denied: Deployment team-a/orders: ServiceAccount \"orders\" has no EKS Pod Identity association"),
        "{stdout}"
    );
    assert!(lines[2].contains("--cluster-name prod --namespace team-a --service-account orders"));
    assert!(
        lines[2].ends_with(&format!(
            "[{} document 1]",
            tree.join("orders/deployment.yml").display()
        )),
        "{stdout}"
    );
    assert_eq!(
        lines[4],
        "4 objects: 2 allowed, 1 mutated, 0 warned, 1 denied"
    );

    // Without its ServiceAccount the carts Deployment has no identity either; piped in as
    // `helm template | pod-identity-webhook check -f -` would.
    let deployment_only = APP.split("---\n").nth(1).unwrap().to_string();
    let (code, stdout, _) = run(
        base(&["-f", "-", "-o", "json"]),
        Some(deployment_only.into_bytes()),
    )
    .await;
    assert_eq!(code, 1);
    let report = check_json(&stdout);
    let [carts] = report["objects"].as_array().unwrap().as_slice() else {
        panic!("{report}")
    };
    assert_eq!(carts["file"], "<stdin>");
    assert_eq!(carts["namespace"], "team-a");
    assert_eq!(carts["status"], "denied");

    // The ServiceAccount given apart (it exists already) counts as well.
    let sa_file = dir.path().join("sa.yaml");
    std::fs::write(&sa_file, APP.split("---\n").next().unwrap()).unwrap();
    let deployment_only = APP.split("---\n").nth(1).unwrap().to_string();
    let (code, stdout, _) = run(
        base(&["-f", "-", "--service-accounts", sa_file.to_str().unwrap()]),
        Some(deployment_only.into_bytes()),
    )
    .await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with("Deployment team-a/carts: allowed\n"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_input_is_named_by_file_and_document() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "warn");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        format!("{APP}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [oops\n"),
    )
    .unwrap();
    let args = |extra: &[&str]| check_args(&config, extra);

    let (code, stdout, _) = run(args(&["-f", broken.to_str().unwrap()]), None).await;
    assert_eq!(code, 2, "{stdout}");
    // The documents before the broken one are still checked.
    assert!(
        stdout.starts_with(
            "ServiceAccount default/shop: allowed\nDeployment default/carts: allowed\n"
        ),
        "{stdout}"
    );
    let error = stdout
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        error.starts_with(&format!(
            "error: {} document 3 (line 25, column",
            broken.display()
        )),
        "{error}"
    );

    let (code, stdout, _) = run(args(&["-f", broken.to_str().unwrap(), "-o", "json"]), None).await;
    assert_eq!(code, 2);
    let report = check_json(&stdout);
    let [error] = report["errors"].as_array().unwrap().as_slice() else {
        panic!("{report}")
    };
    assert_eq!(error["file"], broken.display().to_string());
    assert_eq!(error["document"], 3);
    assert_eq!(error["line"], 25);

    // Over the size cap, missing, and an object that is not one: each named, exit 2.
    let missing = dir.path().join("missing.yaml");
    let (code, stdout, _) = run(
        args(&[
            "-f",
            broken.to_str().unwrap(),
            "-f",
            missing.to_str().unwrap(),
            "--max-file-bytes",
            "100",
        ]),
        None,
    )
    .await;
    assert_eq!(code, 2);
    assert!(
        stdout.contains(&format!(
            "error: {}: larger than 100 bytes",
            broken.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("error: {}: cannot read", missing.display())),
        "{stdout}"
    );
    let (code, stdout, _) = run(
        args(&["-f", "-"]),
        Some(b"kind: Pod\n---\n- a list\n".to_vec()),
    )
    .await;
    assert_eq!(code, 2);
    assert!(
        stdout.contains("error: <stdin> document 1: not a Kubernetes object: apiVersion missing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("error: <stdin> document 2: a list is not a Kubernetes object"),
        "{stdout}"
    );

    // A config the webhook would refuse stops `check` too, before any decision.
    let bad_config = dir.path().join("bad.yaml");
    std::fs::write(&bad_config, "policy:\n  defaultMod: enforce\n").unwrap();
    let (code, stdout, stderr) = run(
        check_args(&bad_config, &["-f", broken.to_str().unwrap()]),
        None,
    )
    .await;
    assert_eq!(code, 2, "{stdout}");
    assert!(stderr.contains("defaultMod"), "{stderr}");
}

/// Identities from `--associations` (over the config file's `associationsFile`) and from the
/// EKS API (`--cluster-name`, here the fake EKS API through the real SDK; credentials from the
/// environment): the orders Deployment is denied without an association and allowed with one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_from_an_associations_file_and_from_eks() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "enforce");
    let manifest = dir.path().join("orders.yaml");
    std::fs::write(&manifest, ORDERS).unwrap();
    let base = check_args(&config, &["-f", manifest.to_str().unwrap()]);

    let (code, stdout, _) = run(base.clone(), None).await;
    assert_eq!(
        code, 1,
        "no association for orders in the config's file: {stdout}"
    );

    let associations = dir.path().join("associations.yaml");
    std::fs::write(
        &associations,
        "associations:\n  - namespace: team-a\n    serviceAccount: orders\n    roleArn: arn:aws:iam::111122223333:role/orders\n",
    )
    .unwrap();
    let mut args = base.clone();
    args.extend(strings(&["--associations", associations.to_str().unwrap()]));
    let (code, stdout, stderr) = run(args, None).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    // The identity and the entry it comes from; an exact entry is the operator's, as an EKS
    // association is: the namespace's allowlist (carts and db) bounds pattern entries only.
    assert_eq!(
        stdout.lines().take(2).collect::<Vec<_>>(),
        [
            "Deployment team-a/orders: allowed",
            "  identity: role arn:aws:iam::111122223333:role/orders from associations[0] (team-a/orders)"
        ]
    );

    let eks = eks_support::FakeEks::start("prod").await;
    let env = || {
        vec![
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".to_string()),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
            ),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    };
    let mut args = base.clone();
    args.extend(strings(&[
        "--cluster-name",
        "prod",
        "--region",
        "us-east-1",
        "--eks-endpoint",
        &eks.url(),
    ]));
    let (code, stdout, stderr) = run_binary_env(args.clone(), None, env()).await;
    assert_eq!(code, 1, "EKS has no association yet: {stdout}{stderr}");
    assert!(eks.lists() >= 1, "EKS was asked");
    eks.add("team-a", "orders", "orders");
    let (code, stdout, stderr) = run_binary_env(args, None, env()).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    // EKS associations are the cluster operator's: no allowlist applies to them.
    let lines: Vec<&str> = stdout.lines().take(2).collect();
    assert_eq!(lines[0], "Deployment team-a/orders: allowed");
    assert!(
        lines[1].starts_with("  identity: EKS association a-"),
        "{stdout}"
    );
}

/// The command lines docs/check-audit.md gives (the CI one-liner, the GitHub Actions step, the
/// pre-commit hook with `.pre-commit-hooks.yaml`'s entry) run as written, on files laid out
/// as the docs name them: clean manifests pass (0), a denied one fails the step (1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_ci_step_and_pre_commit_hook_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/check-audit.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let deploy = dir.path().join("deploy");
    std::fs::create_dir_all(deploy.join("manifests")).unwrap();
    let config = write_config(dir.path(), "enforce");
    std::fs::copy(&config, deploy.join("webhook-config.yaml")).unwrap();
    std::fs::copy(
        root.join("examples/associations.yaml"),
        deploy.join("associations.yaml"),
    )
    .unwrap();
    // Relative paths of the docs, under the temporary repository.
    let local = |arg: &str| match arg.strip_prefix("deploy/") {
        Some(rest) => deploy.join(rest).display().to_string(),
        None => arg.to_string(),
    };

    // Shell lines (continuations joined) that pipe into `pod-identity-webhook check`.
    let joined = docs.replace("\\\n", " ");
    let piped: Vec<Vec<String>> = joined
        .lines()
        .filter_map(|l| l.split_once("| pod-identity-webhook check"))
        .map(|(_, rest)| {
            std::iter::once("check".to_string())
                .chain(rest.split_whitespace().map(local))
                .collect()
        })
        .collect();
    assert_eq!(piped.len(), 2, "the one-liner and the Actions step");
    for args in piped {
        let (code, stdout, stderr) = run(args.clone(), Some(APP.as_bytes().to_vec())).await;
        assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
        assert!(
            stdout.ends_with("2 objects: 2 allowed, 0 mutated, 0 warned, 0 denied\n"),
            "{stdout}"
        );
        let (code, stdout, _) = run(args.clone(), Some(ORDERS.as_bytes().to_vec())).await;
        assert_eq!(code, 1, "{args:?}: {stdout}");
    }

    // pre-commit: the hook's entry, the documented args, then the changed files.
    let hooks: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join(".pre-commit-hooks.yaml")).unwrap(),
    )
    .unwrap();
    let hook = &hooks[0];
    let block = docs
        .split("```yaml\n")
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("repos:"))
        .expect("the .pre-commit-config.yaml block");
    let user: Value = serde_yaml_ng::from_str(block).unwrap();
    let used = &user["repos"][0]["hooks"][0];
    assert_eq!(used["id"], hook["id"]);
    let entry: Vec<String> = hook["entry"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(entry[0], "pod-identity-webhook", "the binary's name");
    let hook_args: Vec<String> = entry[1..]
        .iter()
        .cloned()
        .chain(
            used["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| local(a.as_str().unwrap())),
        )
        .collect();
    let carts = deploy.join("manifests/carts.yaml");
    std::fs::write(&carts, APP).unwrap();
    let orders = deploy.join("manifests/orders.yaml");
    std::fs::write(&orders, ORDERS).unwrap();
    let mut args = hook_args.clone();
    args.push(carts.display().to_string());
    let (code, stdout, stderr) = run(args.clone(), None).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    args.push(orders.display().to_string());
    let (code, stdout, _) = run(args, None).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&format!("[{} document 1]", orders.display())),
        "{stdout}"
    );
}

/// Runs `check` with `args`, printing and returning how long it took.
async fn timed(what: &str, args: Vec<String>, stdin: Option<Vec<u8>>) -> (i32, String, f64) {
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = run(args, stdin).await;
    let took = started.elapsed().as_secs_f64();
    println!("{what}: exit {code} in {took:.2} s");
    (code, format!("{stdout}{stderr}"), took)
}

/// Issue 33: nested flow collections made libyaml's time grow with the square of the nesting
/// (500 KB of `{a: ` took minutes). The flow-depth pre-scan refuses them before the parser, at
/// once; nesting at the limit, repeated, parses in linear time; a file past its deadline is
/// reported and the other files are still checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_flow_collections_are_refused_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "warn");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let n = 500 * 1024 / 4;
    let maps = write(
        "maps.yaml",
        format!("x: {}1{}\n", "{a: ".repeat(n), "}".repeat(n)),
    );
    let lists = write(
        "lists.yaml",
        format!("x: {}a{}\n", "[a, ".repeat(100_000), "]".repeat(100_000)),
    );
    for (what, file) in [("500 KB of {a: ", &maps), ("[a, x100k", &lists)] {
        let (code, out, took) = timed(what, check_args(&config, &["-f", file]), None).await;
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains(&format!(
                "error: {file} (line 1, column 260): flow collections ([...] or {{...}}) nested deeper than 64; not parsed"
            )),
            "{out}"
        );
        assert!(took < 10.0, "{what}: {took:.2} s");
    }

    // At the limit, 64 deep, repeated over 256 KiB: read, in time linear in its size (1 MiB of
    // it takes 4-6 s in a test build alone on 2 cores, too close to the bound in a loaded run).
    let deep = format!("{}1{}", "[".repeat(63), "]".repeat(63));
    let data: Vec<String> = (0..50).map(|k| format!("k{k}: {deep}")).collect();
    let mut text = String::new();
    while text.len() < 256 * 1024 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{}}}\ndata: {{{}}}\n",
            text.len(),
            data.join(", ")
        ));
    }
    let at_limit = write("at-limit.yaml", text);
    let (code, out, took) = timed(
        "256 KiB of 64-deep flow",
        check_args(&config, &["-f", &at_limit]),
        None,
    )
    .await;
    assert!(!out.contains("nested deeper"), "{out}");
    assert_eq!(code, 0, "{out}");
    assert!(took < 10.0, "{took:.2} s");

    // Each file has its own deadline: past it the file is named, the next one still checked.
    // Nearly 16 MiB of Deployments takes far more than 2 s to parse in a test build; APP, a
    // few milliseconds.
    let deployment = APP.split("---\n").nth(1).unwrap();
    let mut big = String::new();
    while big.len() + deployment.len() < 16 * 1024 * 1024 - 1024 {
        big.push_str("---\n");
        big.push_str(deployment);
    }
    let big = write("big.yaml", big);
    let app = write("app.yaml", APP.to_string());
    let (code, out, took) = timed(
        "deadline",
        check_args(&config, &["--file-deadline", "2s", "-f", &big, "-f", &app]),
        None,
    )
    .await;
    assert_eq!(code, 2, "{}", &out[out.len().saturating_sub(2000)..]);
    assert!(
        out.contains(&format!("error: {big}: not parsed within 2s")),
        "{}",
        &out[out.len().saturating_sub(2000)..]
    );
    assert!(out.contains("Deployment default/carts: allowed"), "{out}");
    assert!(took < 10.0, "{took:.2} s");
}

/// Issue 33: an input that gives nothing is an error (a CI job pointed at the wrong path must
/// not pass), unless --allow-empty; files that are not regular are refused without being
/// opened for reading, so a FIFO never blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_give_nothing_fail_and_special_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "warn");
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(path("empty.yaml"), "").unwrap();
    std::fs::write(path("comments.yaml"), "# nothing here\n---\n").unwrap();
    std::fs::create_dir(path("empty-dir")).unwrap();
    std::fs::create_dir(path("no-manifests")).unwrap();
    std::fs::write(path("no-manifests/README.md"), "# docs\n").unwrap();

    /// What is given, its arguments, stdin, the error expected.
    type Case<'a> = (&'a str, Vec<&'a str>, Option<Vec<u8>>, String);
    let cases: [Case; 5] = [
        (
            "an empty file",
            vec!["-f", "EMPTY"],
            None,
            format!(
                "error: {}: no object in it (empty, or only comments)",
                path("empty.yaml")
            ),
        ),
        (
            "only comments",
            vec!["-f", "COMMENTS"],
            None,
            format!(
                "error: {}: no object in it (empty, or only comments)",
                path("comments.yaml")
            ),
        ),
        (
            "an empty directory",
            vec!["-f", "EMPTY_DIR"],
            None,
            format!(
                "error: {}: no .yaml, .yml or .json file in it",
                path("empty-dir")
            ),
        ),
        (
            "no manifests in a directory",
            vec!["NO_MANIFESTS"],
            None,
            format!(
                "error: {}: no .yaml, .yml or .json file in it",
                path("no-manifests")
            ),
        ),
        (
            "an empty stream",
            vec!["-f", "-"],
            Some(Vec::new()),
            "error: <stdin>: no object in it (an empty stream, or only comments)".to_string(),
        ),
    ];
    for (what, args, stdin, error) in cases {
        let args: Vec<String> = args
            .iter()
            .map(|a| match *a {
                "EMPTY" => path("empty.yaml"),
                "COMMENTS" => path("comments.yaml"),
                "EMPTY_DIR" => path("empty-dir"),
                "NO_MANIFESTS" => path("no-manifests"),
                other => other.to_string(),
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, _) = timed(what, check_args(&config, &args), stdin.clone()).await;
        assert_eq!(code, 2, "{what}: {out}");
        assert!(out.contains(&error), "{what}: {out}");
        assert!(out.contains("--allow-empty"), "{what}: {out}");
        let allowed = [&args[..], &["--allow-empty"]].concat();
        let (code, out, _) = timed(what, check_args(&config, &allowed), stdin).await;
        assert_eq!(code, 0, "{what} with --allow-empty: {out}");
        assert!(out.contains("0 objects"), "{out}");
    }

    // A FIFO named like a manifest, given or found in a directory, and a device: refused at
    // once (nothing ever writes to the FIFO: opening it for reading would wait forever).
    std::fs::create_dir(path("with-fifo")).unwrap();
    std::fs::write(path("with-fifo/app.yaml"), APP).unwrap();
    for fifo in [path("x.yaml"), path("with-fifo/x.yaml")] {
        let c = std::ffi::CString::new(fifo.clone()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
    for (what, input, error) in [
        (
            "a FIFO",
            path("x.yaml"),
            format!("error: {}: a FIFO, not a regular file", path("x.yaml")),
        ),
        (
            "a FIFO in a directory",
            path("with-fifo"),
            format!(
                "error: {}: a FIFO, not a regular file",
                path("with-fifo/x.yaml")
            ),
        ),
        (
            "a device",
            "/dev/zero".to_string(),
            "error: /dev/zero: a character device, not a regular file".to_string(),
        ),
    ] {
        let (code, out, took) = timed(what, check_args(&config, &["-f", &input]), None).await;
        assert_eq!(code, 2, "{what}: {out}");
        assert!(out.contains(&error), "{what}: {out}");
        assert!(took < 10.0, "{what}: {took:.2} s");
    }
    // The directory's real manifest is still checked beside the refused FIFO.
    let (_, out, _) = timed(
        "a FIFO beside a manifest",
        check_args(&config, &["-f", &path("with-fifo")]),
        None,
    )
    .await;
    assert!(out.contains("Deployment default/carts: allowed"), "{out}");
}

/// Issue 33: output repeats no value longer than a few hundred bytes: a 15 MB `metadata.name`
/// is shown cut, with its length, in text and JSON, in the object line and in the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_name_is_shown_cut_with_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "enforce");
    let name = "a".repeat(15_000_000);
    let sa = "s".repeat(100_000);
    let file = dir.path().join("huge.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: team-a\nspec:\n  serviceAccountName: {sa}\n  containers: [{{name: app, image: x}}]\n"
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (code, out, took) = timed("15 MB name", check_args(&config, &["-f", file]), None).await;
    assert_eq!(code, 1, "{}", &out[..out.len().min(2000)]);
    assert!(out.len() < 4096, "{} bytes of output", out.len());
    let line = out.lines().next().unwrap();
    assert!(line.starts_with("Pod team-a/aaaa"), "{line}");
    assert!(line.contains("… (15000000 bytes): denied: "), "{line}");
    assert!(
        line.contains("… (100000 bytes)"),
        "the ServiceAccount, cut: {line}"
    );
    assert!(took < 30.0, "{took:.2} s");

    let (_, out, _) = timed(
        "15 MB name, JSON",
        check_args(&config, &["-f", file, "-o", "json"]),
        None,
    )
    .await;
    assert!(out.len() < 8192, "{} bytes of output", out.len());
    let report = check_json(&out);
    let name = report["objects"][0]["name"].as_str().unwrap();
    assert_eq!(name, format!("{}… (15000000 bytes)", "a".repeat(256)));
}
