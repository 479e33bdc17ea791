//! Unit tests of manifest reading and parsing.

use super::*;

#[test]
fn multi_document_yaml_with_empty_documents() {
    let text = "# Source: chart/templates/sa.yaml\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: n}\n";
    let m = parse_text("f.yaml", text);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let kinds: Vec<_> = m.objects.iter().map(|o| o.kind().to_string()).collect();
    assert_eq!(kinds, ["ServiceAccount", "Deployment"]);
    assert_eq!(m.objects[1].group_version(), ("apps", "v1"));
    assert_eq!(m.objects[1].namespace(), Some("n"));
}

#[test]
fn lists_are_expanded_and_typed_list_items_get_their_kind() {
    let text = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}]}
{"apiVersion":"apps/v1","kind":"DeploymentList","metadata":{},"items":[{"metadata":{"name":"d"}},{"metadata":{"name":"e"}}]}"#;
    let m = parse_text("l.json", text);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    assert_eq!(m.objects.len(), 3);
    assert_eq!(m.objects[0].kind(), "Pod");
    assert_eq!(m.objects[2].kind(), "Deployment");
    assert_eq!(m.objects[2].api_version(), "apps/v1");
    assert_eq!(
        m.objects[2].origin,
        Origin {
            file: "l.json".into(),
            document: 2,
            item: Some(2)
        }
    );
}

#[test]
fn broken_yaml_names_document_and_line() {
    let text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n";
    let m = parse_text("broken.yaml", text);
    assert_eq!(m.objects.len(), 1);
    let [err] = &m.errors[..] else {
        panic!("{:?}", m.errors)
    };
    assert_eq!(err.file(), "broken.yaml");
    assert_eq!(err.document(), Some(2));
    assert!(err.line().is_some_and(|l| l >= 8), "{err}");
    assert!(
        err.to_string().starts_with("broken.yaml document 2 (line"),
        "{err}"
    );
}

#[test]
fn objects_without_kind_and_scalars_are_refused() {
    let m = parse_text("x.yaml", "metadata: {name: a}\n---\njust text\n");
    assert!(m.objects.is_empty());
    assert_eq!(m.errors.len(), 2);
    assert!(
        m.errors[0]
            .to_string()
            .contains("apiVersion and kind missing")
    );
    assert!(m.errors[1].to_string().contains("document 2"));
}

#[test]
fn broken_json_names_line() {
    let m = parse_text("x.json", "{\"apiVersion\": \"v1\",\n \"kind\": }");
    let [err] = &m.errors[..] else {
        panic!("{:?}", m.errors)
    };
    assert_eq!(err.line(), Some(2));
    assert_eq!(err.document(), Some(1));
}

#[test]
fn size_cap() {
    let err = read_capped(&b"0123456789"[..], "big", 9).unwrap_err();
    assert!(matches!(err, ManifestError::TooLarge { limit: 9, .. }));
    assert_eq!(read_capped(&b"012"[..], "ok", 3).unwrap(), b"012");
}
