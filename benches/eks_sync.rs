//! Full sync of 5,000 associations against the local EKS REST-JSON server (the real
//! aws-sdk-eks client, signing included): time from a cold start to ready, EKS calls, peak
//! memory (VmHWM of this process, which also holds the fake server). `cargo bench --bench eks_sync`

#[path = "../tests/eks_support/mod.rs"]
mod eks_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use eks_support::{FakeEks, fast_tuning};
use pod_identity_webhook::identity::AssociationSource;
use pod_identity_webhook::identity::eks_cache::{CacheOptions, EksSource};
use pod_identity_webhook::settings::EksSettings;
use tokio_util::sync::CancellationToken;

/// Peak resident set size so far, in KiB (Linux).
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than ours means "not me".
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && !"eks_sync".contains(a.as_str()))
    {
        return;
    }
    // `cargo test --benches` runs this without `--bench`: a small smoke run then.
    let full = std::env::args().any(|a| a == "--bench");
    let (count, repeats) = if full { (5_000, 5) } else { (200, 1) };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let fake = FakeEks::start("bench").await;
        fake.add_many(count);
        let s = EksSettings::new("bench");
        let mut tuning = fast_tuning();
        tuning.operation_timeout = Duration::from_secs(30);
        let mut runs = Vec::new();
        for _ in 0..repeats {
            // From a cold start to ready, as the webhook starts: the first complete List.
            let src = EksSource::new(
                Arc::new(fake.client("bench", &tuning)),
                CacheOptions::from_settings(&s),
            );
            let (lists, describes) = (fake.lists(), fake.describes());
            let before = vm_hwm_kib().unwrap_or(0);
            let stop = CancellationToken::new();
            let start = Instant::now();
            let task = tokio::spawn(src.clone().run_sync(stop.clone()));
            while !src.ready() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let took = start.elapsed();
            stop.cancel();
            task.await.unwrap();
            let after = vm_hwm_kib().unwrap_or(0);
            assert_eq!(src.stats().synced_associations, count as u64);
            runs.push(took);
            println!(
                "eks full sync {count} associations, cold start to ready: {:>8.1} ms, {} List + {} Describe calls, VmHWM {} KiB -> {} KiB",
                took.as_secs_f64() * 1e3,
                fake.lists() - lists,
                fake.describes() - describes,
                before,
                after
            );
        }
        runs.sort();
        println!(
            "eks full sync {count} associations, cold start to ready: median {:.1} ms of {repeats}",
            runs[runs.len() / 2].as_secs_f64() * 1e3
        );
    });
}
