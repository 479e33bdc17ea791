//! Where the Go-built tools of the test tiers are: the control plane's binaries (etcd,
//! kube-apiserver, kube-controller-manager, kubectl) and helm, each from an environment variable
//! when set, else built (once, into `target/`) by the `hack/` script that pins its version.
//! Needs nothing else of tests/support, so a test file can include it alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Where the control plane's binaries are: `$CONTROL_PLANE_DIR`, else what `hack/control-plane.sh`
/// built (it returns at once when they are already there). `Err` is a one-line reason that names
/// the command to run.
pub fn control_plane() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(find_or_build).clone()
}

fn find_or_build() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = match std::env::var_os("CONTROL_PLANE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // The script answers at once when the binaries are built; it needs Go only to build.
            let out = Command::new(root.join("hack/control-plane.sh"))
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("hack/control-plane.sh could not run: {e}"))?;
            if !out.status.success() {
                if Command::new("go").arg("version").output().is_err() {
                    return Err("Go not found: install Go 1.24 or newer and run \
                                hack/control-plane.sh (or set CONTROL_PLANE_DIR)"
                        .into());
                }
                return Err(format!(
                    "hack/control-plane.sh failed ({}); run it by hand to see why",
                    out.status
                ));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
        }
    };
    for bin in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        if !dir.join(bin).is_file() {
            return Err(format!(
                "{} has no {bin}: run hack/control-plane.sh",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// The helm binary: `$HELM`, else what `hack/helm.sh` built (it returns at once when built).
/// `Err` is a one-line reason.
pub fn helm() -> Result<PathBuf, String> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(path) = std::env::var_os("HELM") {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(format!("HELM={} is not a file", path.display()))
            };
        }
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/helm.sh"))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("hack/helm.sh could not run: {e}"))?;
        if !out.status.success() {
            if Command::new("go").arg("version").output().is_err() {
                return Err(
                    "Go not found: install Go 1.24 or newer and run hack/helm.sh \
                            (or set HELM to a helm v4 binary)"
                        .into(),
                );
            }
            return Err(format!(
                "hack/helm.sh failed ({}); run it by hand to see why",
                out.status
            ));
        }
        let path = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .trim(),
        );
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "hack/helm.sh printed {}, which is not a file",
                path.display()
            ))
        }
    })
    .clone()
}
