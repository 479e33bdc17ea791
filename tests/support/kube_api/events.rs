//! Events (`events.k8s.io/v1`): created with the API server's validation and answers, and kept
//! for tests to read ([`super::FakeKubeApi::events`]).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::responses::json_response;
use super::store::Cluster;

/// `POST /apis/events.k8s.io/v1/namespaces/{namespace}/events`, as kube-apiserver answers it:
/// the namespace must be the URL's, the fields events.k8s.io/v1 requires must be there
/// (`eventTime`, `reportingController`, `reportingInstance`, `action`, `reason`, a `type` of
/// Normal or Warning, a `note` of at most 1024 bytes, `regarding` in the event's namespace),
/// else 422 `Invalid` naming the fields; a name already taken in the namespace, 409
/// `AlreadyExists`; created, 201 with the stored object.
pub(super) async fn create_event(
    State(f): State<Arc<Cluster>>,
    UrlPath(namespace): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(mut event) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
                    "reason": "UnsupportedMediaType", "code": 415}),
        );
    };
    if event["metadata"]["namespace"]
        .as_str()
        .is_some_and(|ns| ns != namespace)
    {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the namespace of the provided object does not match the namespace sent on the request",
                    "reason": "BadRequest", "code": 400}),
        );
    }
    let name = event["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut causes = Vec::new();
    let mut invalid = |reason: &str, field: &str, message: &str| {
        causes.push(json!({"reason": reason, "message": message, "field": field}));
    };
    if name.is_empty() {
        invalid(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        );
    }
    let text = |field: &str| event[field].as_str().unwrap_or_default().to_string();
    if event["eventTime"].is_null() {
        invalid("FieldValueRequired", "eventTime", "Required value");
    }
    for field in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        let value = text(field);
        if value.is_empty() {
            invalid("FieldValueRequired", field, "Required value");
        } else if value.len() > 128 {
            invalid(
                "FieldValueTooLong",
                field,
                "Too long: may not be longer than 128",
            );
        }
    }
    if !matches!(text("type").as_str(), "Normal" | "Warning") {
        invalid(
            "FieldValueNotSupported",
            "type",
            "Unsupported value: supported values: \"Normal\", \"Warning\"",
        );
    }
    if text("note").len() > 1024 {
        invalid(
            "FieldValueTooLong",
            "note",
            "Too long: may not be longer than 1024",
        );
    }
    if event["regarding"]["namespace"].as_str() != Some(namespace.as_str()) {
        invalid(
            "FieldValueInvalid",
            "regarding.namespace",
            "Invalid value: does not match event.namespace",
        );
    }
    if !causes.is_empty() {
        let fields: Vec<String> = causes
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["field"].as_str().unwrap(),
                    c["message"].as_str().unwrap()
                )
            })
            .collect();
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("Event.events.k8s.io {name:?} is invalid: [{}]", fields.join(", ")),
                    "reason": "Invalid",
                    "details": {"name": name, "group": "events.k8s.io", "kind": "Event", "causes": causes},
                    "code": 422}),
        );
    }
    let mut events = f.events.lock().unwrap();
    if events
        .iter()
        .any(|e| e["metadata"]["namespace"] == namespace && e["metadata"]["name"] == name)
    {
        return json_response(
            StatusCode::CONFLICT,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("events.events.k8s.io {name:?} already exists"),
                    "reason": "AlreadyExists",
                    "details": {"name": name, "group": "events.k8s.io", "kind": "events"},
                    "code": 409}),
        );
    }
    event["kind"] = json!("Event");
    event["apiVersion"] = json!("events.k8s.io/v1");
    event["metadata"]["namespace"] = json!(namespace);
    event["metadata"]["uid"] = json!(format!("8d2b7a40-0000-4000-8000-{:012}", events.len()));
    event["metadata"]["resourceVersion"] = json!((5000 + events.len()).to_string());
    event["metadata"]["creationTimestamp"] = json!("2026-12-03T06:00:00Z");
    event["metadata"]["managedFields"] = json!([{"manager": "pod-identity-webhook", "operation": "Update",
        "apiVersion": "events.k8s.io/v1", "time": "2026-12-03T06:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:action": {}, "f:eventTime": {}, "f:note": {}, "f:reason": {}, "f:regarding": {},
                     "f:reportingController": {}, "f:reportingInstance": {}, "f:type": {}}}]);
    events.push(event.clone());
    json_response(StatusCode::CREATED, &event)
}
