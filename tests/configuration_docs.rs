//! docs/configuration.md against the settings model: every file key, flag, environment variable
//! and default in its table is the model's, and every key and flag of the model is in the table.

use std::collections::BTreeMap;

use clap::Args;
use pod_identity_webhook::settings::{
    EksSettings, InjectionSettings, PolicySettings, ServerSettings, Settings, TlsSettings,
};
use serde_json::Value;

/// `file key -> default` for every leaf of the model (`null` / `[]` when there is none).
fn model_defaults() -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_string(), leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        &serde_json::to_value(Settings::default()).unwrap(),
        &mut out,
    );
    out
}

/// `arg id -> (long flag, env var)` of every `serve` setting flag.
fn model_flags() -> BTreeMap<String, (String, Option<String>)> {
    flags_of(Settings::augment_args(clap::Command::new("serve")))
}

/// The flags of the section a file key is in (ids are unique within a section).
fn section_flags(key: &str) -> BTreeMap<String, (String, Option<String>)> {
    let cmd = clap::Command::new("section");
    match key.split_once('.').map(|(section, _)| section) {
        Some("tls") => flags_of(TlsSettings::augment_args(cmd)),
        Some("eks") => flags_of(EksSettings::augment_args(cmd)),
        Some("injection") => flags_of(InjectionSettings::augment_args(cmd)),
        Some("policy") => flags_of(PolicySettings::augment_args(cmd)),
        Some("server") => flags_of(ServerSettings::augment_args(cmd)),
        _ => model_flags(),
    }
}

fn flags_of(cmd: clap::Command) -> BTreeMap<String, (String, Option<String>)> {
    cmd.get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            Some((a.get_id().to_string(), (format!("--{long}"), env)))
        })
        .collect()
}

/// The arg id of a file key: its last segment in snake_case.
fn arg_id(key: &str) -> String {
    let last = key.rsplit('.').next().unwrap();
    let mut id = String::new();
    for c in last.chars() {
        if c.is_ascii_uppercase() {
            id.push('_');
            id.push(c.to_ascii_lowercase());
        } else {
            id.push(c);
        }
    }
    id
}

/// The table rows: `file key -> [flag, environment, default]` cells.
fn documented() -> (String, BTreeMap<String, Vec<String>>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let text = std::fs::read_to_string(path).expect("docs/configuration.md");
    let rows = text
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            (cells[0].trim_matches('`').to_string(), cells[1..].to_vec())
        })
        .collect();
    (text, rows)
}

#[test]
fn every_key_of_the_model_is_documented_with_its_flag_environment_and_default() {
    let defaults = model_defaults();
    let (_, rows) = documented();
    let documented_keys: Vec<&String> = rows.keys().collect();
    let model_keys: Vec<&String> = defaults.keys().collect();
    assert_eq!(
        documented_keys, model_keys,
        "file keys in the table vs the model"
    );
    for (key, default) in &defaults {
        let cells = &rows[key];
        let (flag_cell, env_cell, default_cell) = (&cells[0], &cells[1], &cells[2]);
        match section_flags(key).get(&arg_id(key)) {
            Some((long, env)) => {
                assert_eq!(flag_cell, &format!("`{long}`"), "{key}: flag");
                let env = env.as_ref().map(|e| format!("`{e}`")).unwrap_or_default();
                assert_eq!(env_cell, &env, "{key}: environment");
            }
            None => assert_eq!(flag_cell, "(file only)", "{key}: no flag"),
        }
        let expected = match default {
            Value::Null => "none".to_string(),
            Value::Array(a) if a.is_empty() => "none".to_string(),
            Value::String(s) if s.is_empty() => "none".to_string(),
            Value::String(s) => format!("`{s}`"),
            other => format!("`{other}`"),
        };
        assert_eq!(default_cell, &expected, "{key}: default");
    }
}

#[test]
fn every_flag_of_serve_is_documented() {
    let (text, _) = documented();
    for (long, env) in model_flags().values() {
        assert!(
            text.contains(&format!("`{long}")),
            "{long} is not in docs/configuration.md"
        );
        if let Some(env) = env {
            assert!(
                text.contains(env.as_str()),
                "{env} is not in docs/configuration.md"
            );
        }
    }
}
