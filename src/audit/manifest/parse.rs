//! Turning one file's text into manifest objects: JSON values or YAML documents, `List` kinds
//! expanded, each object with its origin and each failure with its file, document and line.

use super::*;

/// Parses one file's text: JSON when it starts with `{` or `[` (one or more concatenated
/// values, as `kubectl get -o json` prints), else YAML documents separated by `---`.
pub fn parse_text(name: &str, text: &str) -> Manifests {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let documents = if text.trim_start().starts_with(['{', '[']) {
        json_documents(name, text)
    } else {
        yaml_documents(name, text)
    };
    let mut out = Manifests::default();
    let mut count = 0usize;
    for doc in documents {
        match doc {
            Ok((document, value)) => {
                for object in objects_of(name, document, value) {
                    count += 1;
                    if count > MAX_OBJECTS_PER_FILE {
                        out.errors.push(ManifestError::TooManyObjects {
                            file: name.to_string(),
                            limit: MAX_OBJECTS_PER_FILE,
                        });
                        return out;
                    }
                    match object {
                        Ok(o) => out.objects.push(o),
                        Err(e) => out.errors.push(e),
                    }
                }
            }
            Err(e) => out.errors.push(e),
        }
    }
    out
}

type Document = Result<(usize, Value), ManifestError>;

fn yaml_documents(name: &str, text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    if let Err(deep) = crate::audit::flow_depth::check(text) {
        // Not a document's error: the scan covers the whole file before the parser starts.
        return vec![Err(ManifestError::TooDeep {
            file: name.to_string(),
            line: deep.line,
            column: deep.column,
            limit: crate::audit::flow_depth::MAX_FLOW_DEPTH,
        })];
    }
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        match serde_errors::from_yaml_document::<Value>(de) {
            Ok(value) => docs.push(Ok((document, value))),
            Err(e) => {
                let described = e.describe(Keys::Named);
                let location = described.location;
                docs.push(Err(ManifestError::Parse {
                    file: name.to_string(),
                    document,
                    line: location.map(|l| l.line),
                    column: location.map(|l| l.column),
                    // The location is reported apart.
                    message: Described {
                        location: None,
                        ..described
                    }
                    .to_string(),
                }));
                // After a syntax error the YAML stream cannot be resynchronised: the parser
                // would report the same error for every further document.
                break;
            }
        }
        if docs.len() > MAX_OBJECTS_PER_FILE {
            break;
        }
    }
    docs
}

fn json_documents(name: &str, text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    for (i, value) in stream.enumerate() {
        let document = i + 1;
        match value {
            Ok(v) => docs.push(Ok((document, v))),
            Err(e) => {
                docs.push(Err(ManifestError::Parse {
                    file: name.to_string(),
                    document,
                    line: Some(e.line()),
                    column: Some(e.column()),
                    message: serde_errors::json_problem(&e).to_string(),
                }));
                break;
            }
        }
        if docs.len() > MAX_OBJECTS_PER_FILE {
            break;
        }
    }
    docs
}

/// The objects of one document: itself, or the items of a `List` (`v1/List`, or a typed list
/// such as `PodList` whose items carry no `apiVersion`/`kind` of their own). Empty documents
/// (only comments, or `---` twice) give nothing.
fn objects_of(
    name: &str,
    document: usize,
    value: Value,
) -> Vec<Result<ManifestObject, ManifestError>> {
    let origin = |item| Origin {
        file: name.to_string(),
        document,
        item,
    };
    let map = match value {
        Value::Null => return Vec::new(),
        Value::Object(map) => map,
        other => {
            return vec![Err(ManifestError::NotAnObject {
                origin: origin(None),
                message: format!(
                    "a {} is not a Kubernetes object (expected a mapping with apiVersion and kind)",
                    json_type(&other)
                ),
            })];
        }
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    let is_list = kind.ends_with("List") && map.get("items").is_some();
    if !is_list {
        return vec![object(origin(None), map)];
    }
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    // Items of a typed list are of the list's kind without `List`; `v1/List` items name theirs.
    let item_kind = (kind != "List").then(|| kind.trim_end_matches("List").to_string());
    let api_version = api_version.to_string();
    let Some(Value::Array(items)) = map.get("items").cloned() else {
        return vec![Err(ManifestError::NotAnObject {
            origin: origin(None),
            message: format!("{kind}: `items` is not a list"),
        })];
    };
    items
        .into_iter()
        .enumerate()
        .flat_map(|(i, item)| {
            let at = origin(Some(i + 1));
            match item {
                Value::Object(mut m) => {
                    if let Some(k) = &item_kind {
                        m.entry("kind").or_insert_with(|| Value::String(k.clone()));
                        m.entry("apiVersion")
                            .or_insert_with(|| Value::String(api_version.clone()));
                    }
                    vec![object(at, m)]
                }
                Value::Null => Vec::new(),
                other => vec![Err(ManifestError::NotAnObject {
                    origin: at,
                    message: format!("list item is a {}, not an object", json_type(&other)),
                })],
            }
        })
        .collect()
}

fn object(origin: Origin, map: Map<String, Value>) -> Result<ManifestObject, ManifestError> {
    let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default();
    let missing: Vec<&str> = ["apiVersion", "kind"]
        .into_iter()
        .filter(|k| text(k).is_empty())
        .collect();
    if !missing.is_empty() {
        return Err(ManifestError::NotAnObject {
            origin,
            message: format!(
                "not a Kubernetes object: {} missing (every object needs apiVersion and kind)",
                missing.join(" and ")
            ),
        });
    }
    if !map.get("metadata").is_none_or(Value::is_object) {
        return Err(ManifestError::NotAnObject {
            origin,
            message: format!("{}: metadata is not a mapping", text("kind")),
        });
    }
    Ok(ManifestObject {
        origin,
        object: Value::Object(map),
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}
