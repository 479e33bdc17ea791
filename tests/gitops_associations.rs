//! The controller's GitOps associations (docs/controller.md#gitops-associations) on a real
//! kube-apiserver (ServiceAccounts, Events) and the EKS stand-in (tests/eks_support, the real
//! `aws-sdk-eks` against it): associations created, updated and deleted with the annotation;
//! a hand-made association left alone and reported; the allowlist's refusal as an Event with no
//! EKS call; drift put back; throttling and an outage retried with nothing lost; `--dry-run`
//! making no write.
//!
//! Its own harness, as the cluster tier; each case has a control plane and an EKS stand-in of
//! its own (the controller watches every namespace). One case alone:
//! `cargo test --test gitops_associations -- NAME`.

mod eks_support;
mod support;

use std::time::Duration;

use eks_support::{FakeEks, Fault, role_arn};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use support::cases::{admin_body, ensure, namespace, service_account};
use support::control_plane::{ControlPlane, binaries, skip_without_control_plane};

type Case = fn() -> Result<(), Failed>;

const CASES: &[(&str, Case)] = &[
    (
        "an_annotated_service_account_gets_its_association_updated_and_deleted_with_the_annotation",
        an_annotated_service_account_gets_its_association_updated_and_deleted_with_the_annotation,
    ),
    (
        "a_hand_made_association_is_left_alone_and_reported",
        a_hand_made_association_is_left_alone_and_reported,
    ),
    (
        "a_role_outside_the_allowlist_is_refused_with_an_event_and_no_eks_call",
        a_role_outside_the_allowlist_is_refused_with_an_event_and_no_eks_call,
    ),
    (
        "an_association_changed_or_deleted_out_of_band_is_put_back",
        an_association_changed_or_deleted_out_of_band_is_put_back,
    ),
    (
        "throttling_and_an_outage_are_retried_and_nothing_is_lost",
        throttling_and_an_outage_are_retried_and_nothing_is_lost,
    ),
    (
        "dry_run_logs_and_counts_and_makes_no_eks_write",
        dry_run_logs_and_counts_and_makes_no_eks_write,
    ),
];

fn main() {
    let args = Arguments::from_args();
    let skip = skip_without_control_plane("gitops associations tier");
    let trials = CASES
        .iter()
        .map(|&(name, case)| Trial::test(name, case).with_ignored_flag(skip))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

const ANNOTATION: &str = "pod-identity-webhook/association-role-arn";
const CLUSTER: &str = "demo";
const WAIT: Duration = Duration::from_secs(20);

/// A control plane, the EKS stand-in and the controller (in this process, GitOps on).
struct Harness {
    plane: ControlPlane,
    fake: FakeEks,
    port: u16,
    running: Option<pod_identity_webhook::controller::Running>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// `controller --gitops-associations` with `extra` flags; namespace `team-a` may only have
    /// roles `team-a-*`.
    fn start(extra: &[&str]) -> Result<Self, Failed> {
        support::static_aws_credentials();
        let plane = ControlPlane::start(&binaries()?);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let fake = rt.block_on(FakeEks::start(CLUSTER));
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "eks: {{clusterName: {CLUSTER}, region: us-east-1, endpoint: \"{}\"}}\n\
                 policy:\n  namespaces:\n    - match: team-a\n      mode: warn\n      \
                 allowedRoleArns: [\"arn:aws:iam::111122223333:role/team-a-*\"]\n",
                fake.url()
            ),
        )
        .unwrap();
        let mut args = vec!["--gitops-associations", "--gitops-resync-interval", "2s"];
        args.extend(extra);
        let running = rt.block_on(support::controller::in_process(
            &config,
            &plane.kubeconfig,
            &args,
        ));
        namespace(&plane, "team-a");
        Ok(Self {
            port: running.admin_addr.port(),
            running: Some(running),
            plane,
            fake,
            rt,
            _dir: dir,
        })
    }

    fn annotate(&self, sa: &str, role: &str) {
        service_account(&self.plane, "team-a", sa, &[(ANNOTATION, &role_arn(role))]);
    }

    /// The role of `team-a/sa`'s association in the stand-in.
    fn role(&self, sa: &str) -> Option<String> {
        self.fake
            .all()
            .into_iter()
            .find(|(ns, s, _)| ns == "team-a" && s == sa)
            .map(|(_, _, role)| role)
    }

    fn eventually_role(&self, sa: &str, want: Option<&str>) -> Result<(), Failed> {
        let want = want.map(role_arn);
        let got = self
            .plane
            .eventually_or_none(WAIT, || (self.role(sa) == want).then_some(()));
        ensure(
            got.is_some(),
            format!(
                "team-a/{sa}: association role {:?}, expected {want:?}; associations {:?}",
                self.role(sa),
                self.fake.all()
            ),
        )
    }

    fn metric(&self, series: &str) -> f64 {
        admin_body(self.port, "/metrics")
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The Events on `team-a/sa` of `reason`.
    fn events(&self, sa: &str, reason: &str) -> Vec<Value> {
        let out = self.plane.kubectl(&[
            "get",
            "events.v1.events.k8s.io",
            "-n",
            "team-a",
            "-o",
            "json",
        ]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["regarding"]["name"] == sa && e["reason"] == reason)
            .cloned()
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.rt.block_on(running.shutdown());
        }
    }
}

/// Annotate: created with the ownership tag; change the annotation: updated in place; remove
/// it: deleted; a second ServiceAccount deleted outright: its association deleted.
fn an_annotated_service_account_gets_its_association_updated_and_deleted_with_the_annotation()
-> Result<(), Failed> {
    let h = Harness::start(&[])?;
    h.annotate("carts", "team-a-carts");
    h.annotate("orders", "team-a-orders");
    h.eventually_role("carts", Some("team-a-carts"))?;
    h.eventually_role("orders", Some("team-a-orders"))?;
    let tags = h.fake.tags("team-a", "carts").unwrap();
    ensure(
        tags.get("pod-identity-webhook/managed-by")
            .map(String::as_str)
            == Some("gitops-associations"),
        format!("the ownership tag: {tags:?}"),
    )?;

    h.annotate("carts", "team-a-carts-v2");
    h.eventually_role("carts", Some("team-a-carts-v2"))?;
    ensure(
        h.fake.creates() == 2 && h.fake.updates() == 1,
        format!(
            "an annotation change is one update: creates {}, updates {}",
            h.fake.creates(),
            h.fake.updates()
        ),
    )?;

    h.plane.kubectl_ok(&[
        "annotate",
        "serviceaccount",
        "carts",
        "-n",
        "team-a",
        &format!("{ANNOTATION}-"),
    ]);
    h.eventually_role("carts", None)?;
    h.plane
        .kubectl_ok(&["delete", "serviceaccount", "orders", "-n", "team-a"]);
    h.eventually_role("orders", None)?;
    ensure(
        h.fake.deletes() == 2 && h.fake.all().is_empty(),
        format!("deletes {}, left {:?}", h.fake.deletes(), h.fake.all()),
    )?;
    ensure(
        h.metric("pod_identity_webhook_gitops_eks_calls_total{operation=\"CreatePodIdentityAssociation\",outcome=\"ok\"}") == 2.0
            && h.metric("pod_identity_webhook_gitops_reconciles_total{result=\"ok\"}") >= 1.0,
        admin_body(h.port, "/metrics"),
    )
}

/// An association made by hand (no ownership tag) for an annotated ServiceAccount: never
/// updated, reported as a Warning Event and on /metrics; deleting the ServiceAccount leaves it.
fn a_hand_made_association_is_left_alone_and_reported() -> Result<(), Failed> {
    let h = Harness::start(&[])?;
    h.fake
        .add_tagged("team-a", "carts", "team-a-by-hand", &[("team", "a")]);
    h.annotate("carts", "team-a-carts");
    let reported = h.plane.eventually_or_none(WAIT, || {
        h.events("carts", "HandMadeAssociation").into_iter().next()
    });
    let Some(event) = reported else {
        return Err("no HandMadeAssociation event".into());
    };
    ensure(
        event["type"] == "Warning"
            && event["note"]
                .as_str()
                .is_some_and(|n| n.contains("left alone")),
        format!("the event: {event}"),
    )?;
    ensure(
        h.metric("pod_identity_webhook_gitops_hand_made_associations ") == 1.0,
        admin_body(h.port, "/metrics"),
    )?;
    h.plane
        .kubectl_ok(&["delete", "serviceaccount", "carts", "-n", "team-a"]);
    // Two resyncs later it is still there, untouched.
    std::thread::sleep(Duration::from_secs(5));
    ensure(
        h.role("carts") == Some(role_arn("team-a-by-hand"))
            && h.fake.write_requests("create")
                + h.fake.write_requests("update")
                + h.fake.write_requests("delete")
                == 0,
        format!(
            "the hand-made association was touched: {:?}, creates {}, updates {}, deletes {}",
            h.fake.all(),
            h.fake.write_requests("create"),
            h.fake.write_requests("update"),
            h.fake.write_requests("delete")
        ),
    )
}

/// team-a may only have `team-a-*` roles: another one is refused before any EKS call, with a
/// Warning Event on the ServiceAccount; an allowed one next to it is created.
fn a_role_outside_the_allowlist_is_refused_with_an_event_and_no_eks_call() -> Result<(), Failed> {
    let h = Harness::start(&[])?;
    h.annotate("thief", "team-b-secrets");
    h.annotate("carts", "team-a-carts");
    h.eventually_role("carts", Some("team-a-carts"))?;
    let refused = h.plane.eventually_or_none(WAIT, || {
        h.events("thief", "AssociationRefused").into_iter().next()
    });
    let Some(event) = refused else {
        return Err("no AssociationRefused event".into());
    };
    ensure(
        event["type"] == "Warning"
            && event["regarding"]["kind"] == "ServiceAccount"
            && event["note"]
                .as_str()
                .is_some_and(|n| n.contains("allowedRoleArns")),
        format!("the event: {event}"),
    )?;
    ensure(
        h.role("thief").is_none() && h.fake.write_requests("create") == 1,
        format!(
            "creates asked: {}, associations {:?}",
            h.fake.write_requests("create"),
            h.fake.all()
        ),
    )?;
    ensure(
        h.metric("pod_identity_webhook_gitops_refused_service_accounts ") == 1.0,
        admin_body(h.port, "/metrics"),
    )?;
    ensure(
        h.events("thief", "AssociationRefused").len() == 1,
        "one event per hour, not one per reconcile",
    )
}

/// The resync (2 s here) re-reads every association: one of ours whose role was changed out of
/// band gets the annotated role back, one deleted out of band is created again; both counted.
fn an_association_changed_or_deleted_out_of_band_is_put_back() -> Result<(), Failed> {
    let h = Harness::start(&[])?;
    h.annotate("carts", "team-a-carts");
    h.annotate("orders", "team-a-orders");
    h.eventually_role("carts", Some("team-a-carts"))?;
    h.eventually_role("orders", Some("team-a-orders"))?;
    h.fake.set_role("team-a", "carts", "team-a-tampered");
    h.fake.remove("team-a", "orders");
    h.eventually_role("carts", Some("team-a-carts"))?;
    h.eventually_role("orders", Some("team-a-orders"))?;
    let drift = h.plane.eventually_or_none(WAIT, || {
        let d = h.metric("pod_identity_webhook_gitops_drift_total ");
        (d == 2.0).then_some(d)
    });
    ensure(drift.is_some(), admin_body(h.port, "/metrics"))?;
    ensure(
        h.fake.creates() == 3 && h.fake.updates() == 1,
        format!("creates {}, updates {}", h.fake.creates(), h.fake.updates()),
    )
}

/// Two throttled creates are retried by the SDK with backoff (one association, three requests);
/// then EKS is down (every call 500) while two more ServiceAccounts are annotated: reconciles fail
/// and are retried with backoff; once it is back both are created, each exactly once.
fn throttling_and_an_outage_are_retried_and_nothing_is_lost() -> Result<(), Failed> {
    let h = Harness::start(&[])?;
    h.fake.fail_next_writes(2, Fault::Throttle);
    h.annotate("carts", "team-a-carts");
    h.eventually_role("carts", Some("team-a-carts"))?;
    ensure(
        h.fake.write_requests("create") == 3 && h.fake.creates() == 1,
        format!(
            "throttled twice then created: {} requests, {} created",
            h.fake.write_requests("create"),
            h.fake.creates()
        ),
    )?;

    h.fake.set_down(true);
    h.annotate("orders", "team-a-orders");
    h.annotate("payments", "team-a-payments");
    let failed = h.plane.eventually_or_none(WAIT, || {
        (h.metric("pod_identity_webhook_gitops_reconciles_total{result=\"failed\"}") >= 2.0)
            .then_some(())
    });
    ensure(failed.is_some(), admin_body(h.port, "/metrics"))?;
    ensure(
        h.metric("pod_identity_webhook_gitops_eks_calls_total{operation=\"ListPodIdentityAssociations\",outcome=\"server_error\"}") >= 2.0,
        admin_body(h.port, "/metrics"),
    )?;
    h.fake.set_down(false);
    h.eventually_role("orders", Some("team-a-orders"))?;
    h.eventually_role("payments", Some("team-a-payments"))?;

    // Writes failing while reads work: the create fails after the SDK's three attempts and the
    // next reconcile makes it.
    h.fake.fail_next_writes(3, Fault::Server);
    h.annotate("shipping", "team-a-shipping");
    h.eventually_role("shipping", Some("team-a-shipping"))?;
    ensure(
        h.metric("pod_identity_webhook_gitops_actions_total{action=\"create\",outcome=\"failed\"}")
            == 1.0,
        admin_body(h.port, "/metrics"),
    )?;
    std::thread::sleep(Duration::from_secs(3));
    ensure(
        h.fake.creates() == 4 && h.fake.all().len() == 4,
        format!(
            "each ServiceAccount's association made once: creates {}, {:?}",
            h.fake.creates(),
            h.fake.all()
        ),
    )
}

/// `--dry-run`: what would be created and deleted is counted (and logged), no EKS write is
/// asked.
fn dry_run_logs_and_counts_and_makes_no_eks_write() -> Result<(), Failed> {
    let h = Harness::start(&["--dry-run"])?;
    h.fake.add_tagged(
        "team-a",
        "gone",
        "team-a-gone",
        &[("pod-identity-webhook/managed-by", "gitops-associations")],
    );
    h.annotate("carts", "team-a-carts");
    let counted = h.plane.eventually_or_none(WAIT, || {
        let create = h.metric(
            "pod_identity_webhook_gitops_actions_total{action=\"create\",outcome=\"dry_run\"}",
        );
        let delete = h.metric(
            "pod_identity_webhook_gitops_actions_total{action=\"delete\",outcome=\"dry_run\"}",
        );
        (create >= 1.0 && delete >= 1.0).then_some(())
    });
    ensure(counted.is_some(), admin_body(h.port, "/metrics"))?;
    ensure(
        h.fake.write_requests("create")
            + h.fake.write_requests("update")
            + h.fake.write_requests("delete")
            == 0
            && h.fake.all().len() == 1,
        format!("writes in a dry run: {:?}", h.fake.all()),
    )
}
