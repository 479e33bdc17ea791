//! The static-credentials rule (SPEC §3): containers that set AWS keys as literal values.

use crate::object::SpecView;

/// The environment variables that carry static AWS keys.
pub const STATIC_KEY_VARS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

/// A container that sets a static AWS key as a literal env value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticCredential {
    pub container: String,
    pub variable: String,
}

/// Containers (init containers and native sidecars included) that set a static AWS key as a
/// literal value; a `valueFrom` reference is not a literal.
pub fn static_credentials(pod: &SpecView) -> Vec<StaticCredential> {
    let mut found = Vec::new();
    for (_, _, c) in pod.all_containers() {
        for e in c.env.iter().flatten() {
            if STATIC_KEY_VARS.contains(&&*e.name)
                && e.value.as_deref().is_some_and(|v| !v.is_empty())
            {
                found.push(StaticCredential {
                    container: c.name.to_string(),
                    variable: e.name.to_string(),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectView;

    #[test]
    fn literal_keys_are_found_and_secret_references_are_not() {
        let pod = r#"{"spec":{"initContainers":[{"name":"i","env":[{"name":"AWS_ACCESS_KEY_ID","value":"AKIA"}]}],"containers":[{"name":"c","env":[{"name":"AWS_SECRET_ACCESS_KEY","valueFrom":{"secretKeyRef":{"name":"s","key":"k"}}},{"name":"AWS_ACCESS_KEY_ID","value":""}]}]}}"#;
        let o: ObjectView = serde_json::from_str(pod).unwrap();
        assert_eq!(
            static_credentials(&o.spec),
            [StaticCredential {
                container: "i".into(),
                variable: "AWS_ACCESS_KEY_ID".into()
            }]
        );
    }
}
