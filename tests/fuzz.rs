//! A fuzz harness on the stable toolchain (issue 21): arbitrary reviews and mutated captures of
//! the real API server go through the webhook's own decoding, mutation and validation, and
//! every answer is held to the contract:
//! - nothing panics, and a body that decodes gets a well-formed AdmissionReview answer for its uid;
//! - every patch is a JSON Patch that applies (json-patch) to the object as sent;
//! - a second pass over the patched pod adds nothing.
//!
//! Inputs come from a seeded generator (`FUZZ_SEED`, default 1): each input `i` is derived from
//! the seed and `i` alone, so a finding is replayed with `FUZZ_SEED=s FUZZ_FROM=i FUZZ_INPUTS=1`.
//! `cargo test` runs a few thousand; `scripts/fuzz.sh N` runs N in an optimised build. A finding's
//! body is kept in `target/tmp/fuzz-findings/`; once fixed it joins the bodies of
//! `tests/fixtures/fuzz-regressions/`, which every `cargo test` replays as stored.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use pod_identity_webhook::admission::review::{Review, response_body};
use pod_identity_webhook::audit::sources::ListedServiceAccounts;
use serde_json::{Map, Value, json};
use support::InProcessWebhook;

const PREFIX: &str = "eks.amazonaws.com";

fn webhook() -> InProcessWebhook {
    let mut accounts = ListedServiceAccounts::new();
    for (ns, name, role) in [
        (
            "team-a",
            "s3-reader",
            "arn:aws:iam::111122223333:role/team-a-s3",
        ),
        ("team-a", "db", "arn:aws:iam::111122223333:role/team-b-db"),
        ("team-b", "default", "not-an-arn"),
    ] {
        let sa = json!({"metadata": {"name": name, "annotations": {
            "eks.amazonaws.com/role-arn": role,
            "eks.amazonaws.com/audience": "sts.amazonaws.com",
            "eks.amazonaws.com/token-expiration": "99999999",
        }}});
        accounts.insert(ns, &sa, PREFIX);
    }
    let identities = support::carts_identities().with_service_accounts(Arc::new(accounts));
    InProcessWebhook::new(
        identities,
        r#"
defaultMode: warn
namespaces:
  - match: "team-*"
    mode: enforce
    allowedRoleArns: ["arn:aws:iam::111122223333:role/team-a-*"]
exemptions: ["monitoring"]
"#,
        Some("pod-identity-webhook"),
    )
}

/// A violated property, with what it takes to see it again.
#[derive(Debug)]
struct Finding {
    what: String,
    body: String,
}

/// What an input came to, to show the run reached every path.
#[derive(Debug, Clone, Copy)]
enum Seen {
    Undecodable,
    Denied,
    Unpatched,
    Patched,
    /// Decoded and patched, but not checkable (see [`InProcessWebhook::check`]).
    Unrepresentable,
}

const BUDGET: Duration = Duration::from_secs(5);

impl InProcessWebhook {
    /// Decodes `body` as the HTTP handler does, then mutates and validates it.
    fn check(&self, body: &[u8]) -> Result<Seen, Finding> {
        let fail = |what: String| Finding {
            what,
            body: String::from_utf8_lossy(body).into_owned(),
        };
        let Ok(review) = Review::read(body) else {
            return Ok(Seen::Undecodable); // answered 400 with the reason, as the server does
        };
        let req = &review.request;
        let mutated = self.runtime.block_on(self.mutator.review(req, BUDGET));
        let answer = response_body(&review.api_version, &mutated.response);
        let patch = well_formed(&answer, &req.uid).map_err(|e| fail(format!("/mutate: {e}")))?;
        let validated = self.runtime.block_on(self.validator.review(req, BUDGET));
        let v_answer = response_body(&review.api_version, &validated.response);
        let v_patch =
            well_formed(&v_answer, &req.uid).map_err(|e| fail(format!("/validate: {e}")))?;
        if v_patch.is_some() {
            return Err(fail("/validate answered with a patch".into()));
        }
        let Some(patch) = patch else {
            return Ok(if mutated.response.allowed {
                Seen::Unpatched
            } else {
                Seen::Denied
            });
        };
        // The object as the API server would hold it: patches must apply to exactly that.
        let mut sent = match serde_json::from_slice::<Value>(body) {
            Ok(sent) => sent,
            // JSON whose numbers a `Value` cannot hold (`3e607` in a field the webhook skips,
            // found at seed 1 input 1398324): valid JSON text, but the API server (Go's
            // decoder) refuses such a number, so it never sends one, and there is no object to
            // apply the patch to here.
            Err(e) if e.to_string().starts_with("number out of range") => {
                return Ok(Seen::Unrepresentable);
            }
            Err(e) => {
                return Err(fail(format!(
                    "a body serde_json cannot read was decoded and patched: {e}"
                )));
            }
        };
        let mut object = sent["request"]["object"].clone();
        json_patch::patch(&mut object, &patch)
            .map_err(|e| fail(format!("the patch does not apply: {e}; patch {patch:?}")))?;
        // A second pass over the patched pod adds nothing.
        sent["request"]["object"] = object;
        sent["request"]["uid"] = json!("second-pass");
        let second_body = serde_json::to_vec(&sent).unwrap();
        let second = Review::read(&second_body)
            .map_err(|e| fail(format!("the patched pod no longer decodes: {e}")))?;
        let again = self
            .runtime
            .block_on(self.mutator.review(&second.request, BUDGET));
        let again_answer = response_body(&second.api_version, &again.response);
        match well_formed(&again_answer, "second-pass") {
            Ok(None) => Ok(Seen::Patched),
            Ok(Some(p)) if p.0.is_empty() => Ok(Seen::Patched),
            Ok(Some(p)) => Err(fail(format!("a second pass patched again: {p:?}"))),
            Err(e) => Err(fail(format!("second pass: {e}"))),
        }
    }
}

/// Checks an answer's shape; returns its patch, if any.
fn well_formed(answer: &[u8], uid: &str) -> Result<Option<json_patch::Patch>, String> {
    let v: Value =
        serde_json::from_slice(answer).map_err(|e| format!("answer is not JSON: {e}"))?;
    if v["kind"] != "AdmissionReview" || !v["apiVersion"].is_string() {
        return Err(format!("answer is not an AdmissionReview: {v}"));
    }
    let r = &v["response"];
    if r["uid"] != uid {
        return Err(format!("answer uid {} for request uid {uid:?}", r["uid"]));
    }
    let Some(allowed) = r["allowed"].as_bool() else {
        return Err("answer has no `allowed`".into());
    };
    if !allowed && r.get("patch").is_some() {
        return Err("a denial carries a patch".into());
    }
    if !allowed && !r["status"]["message"].is_string() {
        return Err("a denial without a message".into());
    }
    let Some(patch) = r.get("patch") else {
        return Ok(None);
    };
    if r["patchType"] != "JSONPatch" {
        return Err(format!("patch with patchType {}", r["patchType"]));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().ok_or("patch is not a string")?)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("patch is not a JSON Patch: {e}"))
}

// --- inputs ---------------------------------------------------------------------------------

const STRINGS: &[&str] = &[
    "",
    " ",
    "app",
    "carts",
    "default",
    "s3-reader",
    "db",
    "team-a",
    "team-b",
    "monitoring",
    "kube-system",
    "pod-identity-webhook",
    "AWS_ROLE_ARN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "aws_session_token",
    "AWS_ACCESS_KEY",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "JAVA_TOOL_OPTIONS",
    "-Daws.accessKeyId=AKIA -Daws.secretKey=x",
    "eks.amazonaws.com/role-arn",
    "eks.amazonaws.com/skip-containers",
    "eks.amazonaws.com/token-expiration",
    "eks.amazonaws.com/audience",
    "eks.amazonaws.com/sts-regional-endpoints",
    "eks.amazonaws.com/skip-pod-identity-webhook",
    "eks.amazonaws.com/pod-identity",
    "kubernetes.io/config.mirror",
    "kubernetes.io/os",
    "pod-identity-webhook/mode",
    "windows",
    "linux",
    "true",
    "false",
    "99999999",
    "-1",
    "600",
    "86400",
    "app,sidecar",
    "arn:aws:iam::111122223333:role/team-a-x",
    "arn:aws:iam::111122223333:role/team-b-billing",
    "arn:aws-evil:iam::111122223333:role/*",
    "aws-iam-token",
    "eks-pod-identity-token",
    "/var/run/secrets/eks.amazonaws.com/serviceaccount",
    "~1",
    "~0",
    "a/b",
    "é",
    "\u{0}",
    "\u{feff}",
    "\u{1F600}",
    "\\",
    "\"",
    "Pod",
    "Deployment",
    "CronJob",
    "ServiceAccount",
    "CREATE",
    "UPDATE",
    "DELETE",
    "CONNECT",
    "ephemeralcontainers",
    "status",
    "v1",
    "apps",
    "admission.k8s.io/v1",
    "admission.k8s.io/v1beta1",
];

const KEYS: &[&str] = &[
    "containers",
    "initContainers",
    "ephemeralContainers",
    "env",
    "envFrom",
    "name",
    "value",
    "valueFrom",
    "volumes",
    "volumeMounts",
    "mountPath",
    "readOnly",
    "serviceAccountName",
    "serviceAccount",
    "annotations",
    "labels",
    "nodeSelector",
    "os",
    "securityContext",
    "windowsOptions",
    "hostNetwork",
    "metadata",
    "spec",
    "template",
    "jobTemplate",
    "kind",
    "group",
    "version",
    "operation",
    "subResource",
    "namespace",
    "uid",
    "object",
    "oldObject",
    "dryRun",
    "projected",
    "sources",
    "serviceAccountToken",
    "audience",
    "expirationSeconds",
    "path",
    "restartPolicy",
    "image",
    "request",
    "ownerReferences",
    "generateName",
];

struct Gen(fastrand::Rng);

impl Gen {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.0.usize(..items.len())]
    }

    fn string(&mut self) -> String {
        match self.0.u8(..10) {
            0 => (0..self.0.usize(..12))
                .map(|_| self.0.char(..))
                .collect::<String>(),
            1 => self.pick(KEYS).to_string(),
            2 => self.pick(STRINGS).repeat(self.0.usize(1..4)),
            _ => self.pick(STRINGS).to_string(),
        }
    }

    fn number(&mut self) -> Value {
        match self.0.u8(..8) {
            0 => json!(0),
            1 => json!(-1),
            2 => json!(i64::MAX),
            3 => json!(u64::MAX),
            4 => json!(3.5),
            5 => json!(1e300),
            6 => json!(600),
            _ => json!(self.0.i64(..)),
        }
    }

    /// A container the way the rules read them, with random pieces.
    fn container(&mut self, depth: u32) -> Value {
        let mut c = Map::new();
        c.insert("name".into(), json!(self.string()));
        if self.0.bool() {
            let env: Vec<Value> = (0..self.0.usize(..4))
                .map(|_| {
                    let mut e = json!({"name": self.string()});
                    if self.0.bool() {
                        e["value"] = json!(self.string());
                    }
                    if self.0.u8(..6) == 0 {
                        e["valueFrom"] = self.value(depth + 1);
                    }
                    e
                })
                .collect();
            c.insert("env".into(), Value::Array(env));
        }
        if self.0.u8(..3) == 0 {
            let mounts: Vec<Value> = (0..self.0.usize(..3))
                .map(|_| json!({"name": self.string(), "mountPath": self.string()}))
                .collect();
            c.insert("volumeMounts".into(), Value::Array(mounts));
        }
        if self.0.u8(..5) == 0 {
            let k = self.pick(KEYS).to_string();
            c.insert(k, self.value(depth + 1));
        }
        Value::Object(c)
    }

    fn value(&mut self, depth: u32) -> Value {
        let leaf = depth > 4;
        match self.0.u8(..if leaf { 5 } else { 9 }) {
            0 => Value::Null,
            1 => json!(self.0.bool()),
            2 => self.number(),
            3 | 4 => json!(self.string()),
            5 => Value::Array(
                (0..self.0.usize(..4))
                    .map(|_| self.value(depth + 1))
                    .collect(),
            ),
            6 => Value::Array(
                (0..self.0.usize(..4))
                    .map(|_| self.container(depth + 1))
                    .collect(),
            ),
            7 => self.container(depth + 1),
            _ => {
                let mut m = Map::new();
                for _ in 0..self.0.usize(..4) {
                    let k = if self.0.bool() {
                        self.pick(KEYS).to_string()
                    } else {
                        self.string()
                    };
                    m.insert(k, self.value(depth + 1));
                }
                Value::Object(m)
            }
        }
    }

    /// Changes one node somewhere in `v`.
    fn mutate(&mut self, v: &mut Value, depth: u32) {
        // Mostly below the review and request envelopes, where the decisions look.
        let descend = depth < 2 || (depth < 14 && self.0.u8(..5) != 0);
        match v {
            Value::Object(m) if !m.is_empty() && descend => {
                let i = self.0.usize(..m.len());
                let child = m.values_mut().nth(i).unwrap();
                self.mutate(child, depth + 1);
            }
            Value::Array(a) if !a.is_empty() && descend => {
                let i = self.0.usize(..a.len());
                self.mutate(&mut a[i], depth + 1);
            }
            Value::Object(m) => match self.0.u8(..4) {
                0 if !m.is_empty() => {
                    let k = m.keys().nth(self.0.usize(..m.len())).unwrap().clone();
                    m.remove(&k);
                }
                1 => {
                    let k = self.pick(KEYS).to_string();
                    m.insert(k, self.value(depth));
                }
                _ => *v = self.value(depth),
            },
            Value::Array(a) => match self.0.u8(..4) {
                0 if !a.is_empty() => {
                    a.remove(self.0.usize(..a.len()));
                }
                1 if !a.is_empty() => {
                    let dup = a[self.0.usize(..a.len())].clone();
                    a.push(dup);
                }
                2 => a.push(self.container(depth)),
                _ => *v = self.value(depth),
            },
            _ => *v = self.value(depth),
        }
    }

    /// Sets a field the decisions read to something random.
    fn targeted(&mut self, review: &mut Value) {
        let value = self.value(2);
        let s = json!(self.string());
        let key = self.pick(STRINGS).to_string();
        let (path, v): (Vec<&str>, Value) = match self.0.u8(..14) {
            0 => (
                vec!["operation"],
                json!(self.pick(&["CREATE", "CREATE", "UPDATE", "DELETE", "CONNECT", "create"])),
            ),
            1 => (
                vec!["kind", "kind"],
                json!(self.pick(&[
                    "Pod",
                    "Pod",
                    "Deployment",
                    "CronJob",
                    "Job",
                    "ServiceAccount",
                    "pod"
                ])),
            ),
            2 => (
                vec!["subResource"],
                json!(self.pick(&["ephemeralcontainers", "status", "", "binding"])),
            ),
            3 => (
                vec!["namespace"],
                json!(self.pick(&[
                    "team-a",
                    "team-b",
                    "monitoring",
                    "pod-identity-webhook",
                    "x"
                ])),
            ),
            4 => (vec!["object", "spec", "serviceAccountName"], s),
            5 => (vec!["object", "metadata", "annotations", &key], s),
            6 => (vec!["object", "metadata", "labels", &key], s),
            7 => (
                vec!["object", "spec", "nodeSelector", "kubernetes.io/os"],
                s,
            ),
            8 => (
                vec!["object", "spec", "ephemeralContainers"],
                json!([self.container(2)]),
            ),
            9 => (vec!["object", "spec", "volumes"], value),
            10 => (vec!["object", "spec", "initContainers"], value),
            11 => (vec!["dryRun"], json!(self.0.bool())),
            12 => (
                vec!["object", "spec", "template", "spec", "containers"],
                json!([self.container(2)]),
            ),
            _ => (vec!["object"], value),
        };
        set(review, &[&["request"], path.as_slice()].concat(), v);
    }

    /// A review built from nothing but the generator.
    fn review(&mut self) -> Value {
        let n = self.0.usize(..4);
        let containers: Vec<Value> = (0..n).map(|_| self.container(1)).collect();
        let mut review = json!({
            "apiVersion": self.pick(&["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]),
            "kind": "AdmissionReview",
            "request": {
                "uid": self.string(),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": self.pick(&["team-a", "team-b", "monitoring", "other"]),
                "userInfo": {"username": "fuzz"},
                "object": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": self.string(), "namespace": "team-a"},
                    "spec": {
                        "serviceAccountName": self.pick(&["carts", "s3-reader", "db", "default", "none"]),
                        "containers": containers,
                    },
                },
            },
        });
        for _ in 0..self.0.usize(..3) {
            self.targeted(&mut review);
        }
        review
    }
}

/// Sets `path` in `v` to `value`, making objects where nothing is; leaves `v` alone when
/// something other than an object is in the way.
fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut at = v;
    for key in path {
        if at.is_null() {
            *at = json!({});
        }
        let Value::Object(m) = at else { return };
        at = m.entry(key.to_string()).or_insert(Value::Null);
    }
    *at = value;
}

/// Byte-level damage, for the decoder.
fn damage(g: &mut Gen, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    match g.0.u8(..5) {
        0 => bytes.truncate(g.0.usize(..bytes.len())),
        1 => {
            let i = g.0.usize(..bytes.len());
            bytes[i] = g.0.u8(..);
        }
        2 => {
            let i = g.0.usize(..bytes.len());
            let b = *g.pick(b"{}[]\",:\\0an-e \x00\xff");
            bytes.insert(i, b);
        }
        3 => {
            let i = g.0.usize(..bytes.len());
            let j = g.0.usize(i..bytes.len());
            let piece = bytes[i..j].to_vec();
            let k = g.0.usize(..bytes.len());
            bytes.splice(k..k, piece);
        }
        _ => {
            let i = g.0.usize(..bytes.len());
            let j = g.0.usize(i..bytes.len());
            bytes.drain(i..j);
        }
    }
}

/// The `i`th input of a run with `seed`.
fn input(seed: u64, i: u64, fixtures: &[Value]) -> Vec<u8> {
    let mut g = Gen(fastrand::Rng::with_seed(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i,
    ));
    let mut review = if g.0.u8(..3) == 0 {
        g.review()
    } else {
        g.pick(fixtures).clone()
    };
    for _ in 0..g.0.usize(..4) {
        if g.0.bool() {
            g.targeted(&mut review);
        } else {
            g.mutate(&mut review, 0);
        }
    }
    let mut bytes = serde_json::to_vec(&review).unwrap();
    if g.0.u8(..8) == 0 {
        for _ in 0..g.0.usize(1..4) {
            damage(&mut g, &mut bytes);
        }
    }
    bytes
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// Where the bodies that were findings once are kept, byte for byte (its README says how one
/// is added).
fn regressions_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-regressions")
}

/// Every body that was a finding once, replayed as stored (not regenerated: a change to the
/// generator or the captures cannot change what is replayed), and named in the directory's
/// README with what it found.
#[test]
fn earlier_findings_stay_fixed() {
    let readme = std::fs::read_to_string(regressions_dir().join("README.md")).unwrap();
    let mut bodies: Vec<_> = std::fs::read_dir(regressions_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    bodies.sort();
    assert!(bodies.len() >= 3, "the regressions are gone: {bodies:?}");
    let hook = webhook();
    for path in &bodies {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not in the README of {}: say what it found",
            regressions_dir().display()
        );
        let body = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook.check(&body)));
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(f)) => panic!("{name}: {}", f.what),
            Err(_) => panic!("{name}: the webhook panicked"),
        }
    }
}

/// Keeps a finding's body byte for byte (the line printed is lossy UTF-8), to be added to
/// `tests/fixtures/fuzz-regressions/` once fixed; returns where it went.
fn keep_finding(seed: u64, i: u64, body: &[u8]) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
    let path = dir.join(format!("seed-{seed}-input-{i}.body"));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, body)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("not kept: {}: {e}", path.display()),
    }
}

#[test]
fn fuzz_reviews() {
    // Kept small for `cargo test`; `scripts/fuzz.sh N` sets FUZZ_INPUTS.
    let count = env_u64("FUZZ_INPUTS", 3_000);
    let seed = env_u64("FUZZ_SEED", 1);
    let from = env_u64("FUZZ_FROM", 0);
    let fixtures: Vec<Value> = support::captures(".json")
        .iter()
        .map(|c| c.review())
        .collect();
    assert!(fixtures.len() >= 10, "the API server captures");
    let hook = webhook();
    let started = Instant::now();
    let mut findings = Vec::new();
    let mut seen = [0u64; 5];
    for i in from..from + count {
        if i > from && (i - from) % 1_000_000 == 0 {
            eprintln!("{} inputs, {:?}", i - from, started.elapsed());
        }
        let body = input(seed, i, &fixtures);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook.check(&body)));
        let finding = match outcome {
            Ok(Ok(outcome)) => {
                seen[outcome as usize] += 1;
                continue;
            }
            Ok(Err(f)) => f,
            Err(panic) => Finding {
                what: format!(
                    "panic: {}",
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                ),
                body: String::from_utf8_lossy(&body).into_owned(),
            },
        };
        eprintln!(
            "FINDING seed={seed} input={i}: {}\n  body: {}\n  kept: {}",
            finding.what,
            finding.body,
            keep_finding(seed, i, &body)
        );
        findings.push(i);
        if findings.len() >= 20 {
            break;
        }
    }
    eprintln!(
        "fuzz: seed {seed}, inputs {from}..{}, {:?}, {} findings; undecodable {}, denied {}, unpatched {}, patched and re-checked {}, patched with numbers beyond f64 (not re-checked) {}",
        from + count,
        started.elapsed(),
        findings.len(),
        seen[0],
        seen[1],
        seen[2],
        seen[3],
        seen[4]
    );
    assert!(findings.is_empty(), "findings at inputs {findings:?}");
    // The generator reaches every kind of answer (a run that only made 400s would prove nothing).
    if count >= 1_000 {
        assert!(
            seen[..4].iter().all(|&n| n >= count / 100),
            "outcomes {seen:?} (undecodable, denied, unpatched, patched, unrepresentable)"
        );
    }
}
