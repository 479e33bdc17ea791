//! The fake API server's JSON answers: a JSON body with its status, and the `Status` objects
//! kube-apiserver answers errors with (404 `NotFound`, 405 `MethodNotAllowed`, any other code).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub(super) fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub(super) fn not_found(what: &str, name: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                "code": 404, "message": format!("{what} \"{name}\" not found")}),
    )
}

pub(super) fn status_error(code: u16, reason: &str, message: String) -> Response {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

pub(super) fn method_not_allowed() -> Response {
    status_error(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource".into(),
    )
}
