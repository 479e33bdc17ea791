//! The `controller` command of this checkout as a process against a control plane
//! (tests/controller_cluster.rs): started on a webhook's config file, stopped cleanly or killed.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use super::control_plane::{admin_status, free_port, log_tail, spawn, stop, webhook_binary};

/// A running `pod-identity-webhook controller`.
pub struct ControllerProcess {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub admin_port: u16,
    pub identity: String,
}

impl ControllerProcess {
    /// Starts `controller --config config` with `args` added, as `identity`, and waits until
    /// `/readyz` answers 200.
    pub fn start(config: &Path, identity: &str, args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("controller")
            .tempdir()
            .unwrap();
        let admin_port = free_port();
        let mut all: Vec<String> = vec![
            "controller".into(),
            "--config".into(),
            config.display().to_string(),
            "--admin-listen".into(),
            format!("127.0.0.1:{admin_port}"),
            "--identity".into(),
            identity.into(),
            "--log-format".into(),
            "text".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let log = dir.path().join("controller.log");
        let child = spawn(&webhook_binary(), &all, &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while admin_status(admin_port, "/readyz") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "the controller is not ready after 30 s:\n{}",
                log_tail(&log, 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            dir,
            child: Some(child),
            admin_port,
            identity: identity.into(),
        }
    }

    /// Stops the process cleanly (SIGTERM): it gives the Lease up.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }

    /// Kills the process (SIGKILL), as a crash or a lost node would: its Lease expires.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.dir.path().join("controller.log"), n)
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ControllerProcess {
    /// The process's resident set size in KiB (`VmRSS` of /proc), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

/// `controller` on `config` and `kubeconfig`, in this process, without leader election (the
/// fake API has no Leases; tests/controller_cluster.rs elects on a real API server), auditing
/// every 100 ms; `extra` arguments appended.
pub async fn in_process(
    config: &Path,
    kubeconfig: &Path,
    extra: &[&str],
) -> pod_identity_webhook::controller::Running {
    use pod_identity_webhook::cli::{Cli, Command};
    let mut args: Vec<String> = [
        "pod-identity-webhook",
        "controller",
        "--config",
        &config.display().to_string(),
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--admin-listen",
        "127.0.0.1:0",
        "--leader-elect=false",
        "--audit-interval",
        "100ms",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    let Command::Controller(args) = <Cli as clap::Parser>::try_parse_from(args)
        .expect("controller arguments parse")
        .command
    else {
        panic!("controller expected")
    };
    pod_identity_webhook::controller::start(args.settings().expect("settings"))
        .await
        .expect("the controller starts")
}
