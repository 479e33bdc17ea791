//! `issuer flags`: the kube-apiserver flags that make its tokens match the published issuer, as
//! command-line flags, a kind `Cluster` config and a kubeadm `ClusterConfiguration` patch.

use super::default_jwks_uri;

/// What the flags say.
#[derive(Debug, Clone)]
pub struct Flags {
    /// The new issuer, first: the API server signs with the first `--service-account-issuer`.
    pub issuer: String,
    /// Issuers the API server should still accept (tokens already issued), after the first.
    pub previous: Vec<String>,
    /// `--service-account-jwks-uri` (else the API server names its own address).
    pub jwks_uri: Option<String>,
    pub key_file: String,
    pub signing_key_file: String,
}

impl Flags {
    fn jwks_uri(&self) -> String {
        self.jwks_uri
            .clone()
            .unwrap_or_else(|| default_jwks_uri(&self.issuer))
    }

    /// `(name, value)` in the order kube-apiserver documents them; issuers repeat.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("service-account-issuer", self.issuer.clone())];
        for old in &self.previous {
            out.push(("service-account-issuer", old.clone()));
        }
        out.push(("service-account-jwks-uri", self.jwks_uri()));
        out.push(("service-account-key-file", self.key_file.clone()));
        out.push((
            "service-account-signing-key-file",
            self.signing_key_file.clone(),
        ));
        // The audiences the API server itself accepts: its issuers, so in-cluster tokens keep
        // working. IRSA tokens ask for `sts.amazonaws.com` themselves; only STS checks that.
        let audiences: Vec<&str> = std::iter::once(self.issuer.as_str())
            .chain(self.previous.iter().map(String::as_str))
            .collect();
        out.push(("api-audiences", audiences.join(",")));
        out
    }

    /// The whole text `issuer flags` prints.
    pub fn render(&self) -> String {
        let pairs = self.pairs();
        let mut s = String::from("# kube-apiserver flags\n");
        for (name, value) in &pairs {
            s.push_str(&format!("--{name}={value}\n"));
        }
        let extra_args = |indent: &str| {
            pairs
                .iter()
                .map(|(n, v)| format!("{indent}- name: {n}\n{indent}  value: {}\n", yaml_str(v)))
                .collect::<String>()
        };
        s.push_str(
            "\n# kind: `kind create cluster --config kind.yaml` (node images of Kubernetes 1.31+,\n\
             # whose kubeadm API is v1beta4); kubeadm's own sa.key / sa.pub sign the tokens.\n\
             kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nkubeadmConfigPatches:\n- |\n  \
             kind: ClusterConfiguration\n  apiServer:\n    extraArgs:\n",
        );
        s.push_str(&extra_args("    "));
        s.push_str(
            "\n# kubeadm: merge into the ClusterConfiguration given to `kubeadm init --config`\n\
             # (or `kubectl -n kube-system edit cm kubeadm-config` and `kubeadm upgrade apply`).\n\
             apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer:\n  extraArgs:\n",
        );
        s.push_str(&extra_args("  "));
        s
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is valid YAML).
fn yaml_str(v: &str) -> String {
    serde_json::Value::String(v.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_patches_carry_the_same_values() {
        let f = Flags {
            issuer: "https://oidc.example/c1".into(),
            previous: vec!["https://kubernetes.default.svc.cluster.local".into()],
            jwks_uri: None,
            key_file: "/etc/kubernetes/pki/sa.pub".into(),
            signing_key_file: "/etc/kubernetes/pki/sa.key".into(),
        };
        let text = f.render();
        assert!(
            text.contains("--service-account-jwks-uri=https://oidc.example/c1/openid/v1/jwks\n")
        );
        assert!(text.contains(
            "--api-audiences=https://oidc.example/c1,https://kubernetes.default.svc.cluster.local\n"
        ));
        // The kind and kubeadm documents parse, and list the same flags.
        let docs: Vec<&str> = text.split("\n\n").skip(1).collect();
        let kind: serde_json::Value = serde_yaml_ng::from_str(docs[0]).unwrap();
        let patch: serde_json::Value =
            serde_yaml_ng::from_str(kind["kubeadmConfigPatches"][0].as_str().unwrap()).unwrap();
        let kubeadm: serde_json::Value = serde_yaml_ng::from_str(docs[1]).unwrap();
        assert_eq!(patch["apiServer"], kubeadm["apiServer"]);
        assert_eq!(
            kubeadm["apiServer"]["extraArgs"].as_array().unwrap().len(),
            6
        );
    }
}
