//! Helpers of the control-plane cases (tests/cluster.rs, tests/controller_cluster.rs): objects
//! applied with kubectl, what a pod's env names, an admin port's body.

use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::Value;

use super::control_plane::ControlPlane;

pub fn namespace(plane: &ControlPlane, name: &str) {
    plane.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
    ));
}

pub fn service_account(plane: &ControlPlane, ns: &str, name: &str, annotations: &[(&str, &str)]) {
    let mut yaml = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
    );
    if !annotations.is_empty() {
        yaml += "  annotations:\n";
        for (k, v) in annotations {
            yaml += &format!("    {k}: \"{v}\"\n");
        }
    }
    plane.apply(&yaml);
}

pub fn pod_yaml(ns: &str, name: &str, sa: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  \
         serviceAccountName: {sa}\n  containers:\n    - name: app\n      image: busybox:1.36\n      \
         env: [{{name: APP_MODE, value: demo}}]\n"
    )
}

pub fn env_names(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

pub fn ensure(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what.into().into())
    }
}

/// `GET path` on a plain-HTTP admin port: the body.
pub fn admin_body(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}
