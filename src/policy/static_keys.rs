//! The static-credentials rule (docs/contract.md §3): containers that set AWS keys as literal values.

use crate::object::ContainerView;

/// The environment variables through which AWS SDKs read static keys (every SDK's names,
/// matched case-insensitively).
pub const STATIC_KEY_VARS: [&str; 5] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "AWS_SESSION_TOKEN",
];

/// JVM option variables, and the system properties in them that carry keys to the Java SDKs.
pub const JAVA_OPTION_VARS: [&str; 2] = ["JAVA_TOOL_OPTIONS", "JAVA_OPTS"];
pub const JAVA_KEY_PROPERTIES: [&str; 4] = [
    "-Daws.accessKeyId=",
    "-Daws.secretKey=",
    "-Daws.secretAccessKey=",
    "-Daws.sessionToken=",
];

/// A container that sets a static AWS key as a literal env value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticCredential {
    pub container: String,
    /// The variable, and for JVM options the property: `JAVA_TOOL_OPTIONS (-Daws.secretKey)`.
    pub variable: String,
}

/// The containers' static keys set as literal values; a `valueFrom` reference (a Secret) is
/// not a literal.
pub fn static_credentials<'c, 'a: 'c>(
    containers: impl IntoIterator<Item = &'c ContainerView<'a>>,
) -> Vec<StaticCredential> {
    let mut found = Vec::new();
    for c in containers {
        for e in c.env.iter().flatten() {
            let Some(value) = e.value.as_deref().filter(|v| !v.is_empty()) else {
                continue;
            };
            let name = &*e.name;
            let credential = |variable: String| StaticCredential {
                container: c.name.to_string(),
                variable,
            };
            if STATIC_KEY_VARS.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                found.push(credential(name.to_string()));
            } else if JAVA_OPTION_VARS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(name))
            {
                for option in value.split_whitespace() {
                    let property = JAVA_KEY_PROPERTIES.iter().find(|p| {
                        option
                            .get(..p.len())
                            .is_some_and(|head| head.eq_ignore_ascii_case(p))
                    });
                    if let Some(p) = property {
                        found.push(credential(format!("{name} ({})", p.trim_end_matches('='))));
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectView;

    fn found(spec: &str) -> Vec<String> {
        let text = format!(r#"{{"spec":{spec}}}"#);
        let o: ObjectView = serde_json::from_str(&text).unwrap();
        static_credentials(o.spec.every_container())
            .into_iter()
            .map(|c| format!("{}:{}", c.container, c.variable))
            .collect()
    }

    #[test]
    fn every_sdks_key_names_in_every_kind_of_container() {
        let env = |name: &str| format!(r#"[{{"name":"{name}","value":"x"}}]"#);
        for name in STATIC_KEY_VARS {
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                let spec = format!(r#"{{"{list}":[{{"name":"c","env":{}}}]}}"#, env(name));
                assert_eq!(found(&spec), [format!("c:{name}")], "{list} {name}");
                let lower = name.to_ascii_lowercase();
                let spec = format!(r#"{{"{list}":[{{"name":"c","env":{}}}]}}"#, env(&lower));
                assert_eq!(found(&spec), [format!("c:{lower}")], "{list} {lower}");
            }
        }
    }

    #[test]
    fn java_system_properties_carry_keys_too() {
        let spec = r#"{"containers":[{"name":"j","env":[
            {"name":"JAVA_TOOL_OPTIONS","value":"-Xmx1g -Daws.accessKeyId=AKIA -Daws.secretKey=s"},
            {"name":"JAVA_OPTS","value":"-Daws.region=eu-west-1"}]}]}"#;
        assert_eq!(
            found(spec),
            [
                "j:JAVA_TOOL_OPTIONS (-Daws.accessKeyId)",
                "j:JAVA_TOOL_OPTIONS (-Daws.secretKey)"
            ]
        );
    }

    #[test]
    fn secret_references_and_empty_values_are_not_literal_keys() {
        let spec = r#"{"containers":[{"name":"c","env":[
            {"name":"AWS_SECRET_ACCESS_KEY","valueFrom":{"secretKeyRef":{"name":"s","key":"k"}}},
            {"name":"AWS_ACCESS_KEY_ID","value":""},
            {"name":"AWS_REGION","value":"eu-west-1"}]}]}"#;
        assert!(found(spec).is_empty());
    }
}
