//! Memory per request (issue 21, docs/contract.md §12): the heap a review takes, from reading the body to
//! the answer's bytes, measured by a counting allocator for pods of hostile shapes. It stays
//! at most twice the body plus 1 MiB, however the body is shaped.
//!
//! One test in this binary: the allocator counts every thread's allocations.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use pod_identity_webhook::admission::review::{Review, response_body};
use support::InProcessWebhook;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // A moved block is briefly held twice.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const BUDGET: Duration = Duration::from_secs(5);

impl InProcessWebhook {
    /// The most heap held at once while `/mutate` and `/validate` each answer `body`, as the
    /// handler does (read, decide, write the answer), beyond what was held before.
    fn peak(&self, body: &[u8]) -> usize {
        let mut most = 0;
        for mutate in [true, false] {
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            {
                let answer = match Review::read(body) {
                    Ok(review) => {
                        let decision = if mutate {
                            self.runtime
                                .block_on(self.mutator.review(&review.request, BUDGET))
                        } else {
                            self.runtime
                                .block_on(self.validator.review(&review.request, BUDGET))
                        };
                        response_body(&review.api_version, &decision.response)
                    }
                    Err(e) => e.to_string().into_bytes(),
                };
                std::hint::black_box(answer);
            }
            most = most.max(PEAK.load(Ordering::Relaxed) - before);
        }
        most
    }
}

/// A pod review for `carts` in `team-a` whose spec is `spec`, with `"@"` replaced by `list`.
fn review(spec: serde_json::Value, list: &str) -> Vec<u8> {
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "team-a", "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "team-a"}, "spec": spec}}});
    serde_json::to_string(&review)
        .unwrap()
        .replacen(r#""@""#, list, 1)
        .into_bytes()
}

fn repeat(entry: &str, n: usize) -> String {
    let mut s = String::with_capacity((entry.len() + 1) * n + 2);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(entry);
    }
    s.push(']');
    s
}

#[test]
fn memory_per_review_is_at_most_twice_the_body_plus_one_mebibyte_whatever_its_shape() {
    let webhook =
        InProcessWebhook::new(support::carts_identities(), "defaultMode: enforce\n", None);
    let carts = |key: &str| json!({"serviceAccountName": "carts", key: "@"});
    let annotations = {
        let entries: Vec<String> = (0..300_000).map(|i| format!(r#""{i:x}":"""#)).collect();
        format!("{{{}}}", entries.join(","))
    };
    let shapes: Vec<(&str, Vec<u8>)> = vec![
        (
            "50,000 {} containers",
            review(carts("containers"), &repeat("{}", 50_000)),
        ),
        (
            "1,000,000 {} containers",
            review(carts("containers"), &repeat("{}", 1_000_000)),
        ),
        (
            "1,000,000 {} volumes",
            review(carts("volumes"), &repeat("{}", 1_000_000)),
        ),
        (
            "4,096 {} containers",
            review(carts("containers"), &repeat("{}", 4096)),
        ),
        (
            "250 {} containers, mutated",
            review(carts("containers"), &repeat("{}", 250)),
        ),
        (
            "one container with 1,000,000 {} env entries",
            review(
                json!({"serviceAccountName": "carts", "containers": [{"name": "c", "env": "@"}]}),
                &repeat("{}", 1_000_000),
            ),
        ),
        (
            "one container with 1,000,000 {} volumeMounts",
            review(
                json!({"serviceAccountName": "carts", "containers": [{"name": "c", "volumeMounts": "@"}]}),
                &repeat("{}", 1_000_000),
            ),
        ),
        (
            "250 containers of 4,000 {} env entries",
            review(
                carts("containers"),
                &repeat(&format!(r#"{{"env":{}}}"#, repeat("{}", 4000)), 250),
            ),
        ),
        (
            "one container with 2,000,000 {} env entries (6 MB, the largest body)",
            review(
                json!({"serviceAccountName": "carts", "containers": [{"name": "c", "env": "@"}]}),
                &repeat("{}", 2_000_000),
            ),
        ),
        (
            "a container name of 1,000,000 escaped characters",
            review(
                json!({"serviceAccountName": "carts", "containers": [{"name": "\n".repeat(1_000_000)}]}),
                "",
            ),
        ),
        ("300,000 annotations", {
            let mut body = review(
                json!({"serviceAccountName": "carts", "containers": [{}]}),
                "",
            );
            let text = String::from_utf8(body).unwrap().replacen(
                r#""name":"p""#,
                &format!(r#""name":"p","annotations":{annotations}"#),
                1,
            );
            body = text.into_bytes();
            body
        }),
    ];
    let mut worst = 0.0f64;
    for (what, body) in &shapes {
        let peak = webhook.peak(body);
        let ratio = peak as f64 / body.len() as f64;
        println!(
            "{what}: body {} bytes, peak {} bytes, {ratio:.1}x",
            body.len(),
            peak
        );
        if body.len() > 1024 * 1024 {
            worst = worst.max(ratio);
        }
        // What a review holds besides the body (the decision, the answer, the bounds of
        // src/object/bounded.rs) is under 1 MiB (650 KB measured), whatever the body.
        assert!(
            peak <= 2 * body.len() + 1024 * 1024,
            "{what}: {peak} bytes for a body of {}",
            body.len()
        );
    }
    println!("worst ratio for bodies over 1 MiB: {worst:.1}x");
}
