//! The AdmissionReview wire format (SPEC §4).
//!
//! Our own small types rather than `kube::core::admission`: the request object stays a raw JSON
//! slice (parsed once, into just the fields a decision needs), and the response's `patch` is
//! always the base64 string the API server expects.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::json::{self, WriteJson};
use super::pod::PodView;
use super::scan;
use super::text::Text;
use crate::policy::workload::ObjectView;

/// API versions the API server may send; the response echoes the one received.
pub const SUPPORTED_API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// Why a body could not be read as an AdmissionReview (answered with HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not an AdmissionReview: {0}")]
    Json(String),
    #[error("unsupported AdmissionReview apiVersion `{0}`; send admission.k8s.io/v1")]
    ApiVersion(String),
    #[error("kind is `{0}`, expected AdmissionReview")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has an empty uid")]
    EmptyUid,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct ReviewIn<'a, O> {
    #[serde(borrow)]
    api_version: Option<Text<'a>>,
    #[serde(borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    request: Option<AdmissionRequest<'a, O>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GroupVersionKind<'a> {
    #[serde(default, borrow)]
    pub group: Text<'a>,
    #[serde(default, borrow)]
    pub version: Text<'a>,
    #[serde(default, borrow)]
    pub kind: Text<'a>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GroupVersionResource<'a> {
    #[serde(default, borrow)]
    pub group: Text<'a>,
    #[serde(default, borrow)]
    pub version: Text<'a>,
    #[serde(default, borrow)]
    pub resource: Text<'a>,
}

/// Who sent the request (for messages). No decision reads its groups, so they are skipped.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserInfo<'a> {
    #[serde(default, borrow)]
    pub username: Option<Cow<'a, str>>,
}

/// One admission request, borrowing from the request body (its strings are [`Text`]). The
/// object is a raw slice of the body unless it is read straight into a view `O` (the one-pass
/// path for pods).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
pub struct AdmissionRequest<'a, O = &'a RawValue> {
    #[serde(borrow)]
    pub uid: Text<'a>,
    #[serde(borrow)]
    pub kind: GroupVersionKind<'a>,
    #[serde(default, borrow)]
    pub resource: GroupVersionResource<'a>,
    #[serde(default, borrow)]
    pub sub_resource: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub namespace: Option<Text<'a>>,
    pub operation: Operation,
    #[serde(default, borrow)]
    pub user_info: UserInfo<'a>,
    #[serde(default)]
    pub object: Option<O>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

impl AdmissionRequest<'_> {
    /// The object, treating an explicit JSON `null` like an absent one.
    pub fn object(&self) -> Option<&RawValue> {
        self.object.filter(|o| o.get() != "null")
    }
}

/// A parsed review: the request plus the apiVersion to echo.
#[derive(Debug)]
pub struct Review<'a, O = &'a RawValue> {
    pub api_version: Text<'a>,
    pub request: AdmissionRequest<'a, O>,
}

impl<'a> Review<'a> {
    /// Parses a body, keeping the object as a raw slice of it. Any error here is answered with
    /// HTTP 400 (SPEC §4).
    pub fn parse(body: &'a [u8]) -> Result<Self, ReviewError> {
        Self::parse_as(body)
    }
}

impl<'a, O: Deserialize<'a>> Review<'a, O> {
    /// Parses a body with its object read as `O` in the same pass. Fails where [`Review::parse`]
    /// fails, and also when the object is not a valid `O`.
    pub fn parse_as(body: &'a [u8]) -> Result<Self, ReviewError> {
        // One UTF-8 check of the whole body up front: parsing from `&str` then skips the
        // per-string checks, and the borrowed object needs none again.
        let body = std::str::from_utf8(body).map_err(|e| {
            ReviewError::Json(format!("body is not UTF-8 at byte {}", e.valid_up_to()))
        })?;
        let raw: ReviewIn<'a, O> =
            serde_json::from_str(body).map_err(|e| ReviewError::Json(one_line(&e)))?;
        Self::checked(raw.api_version, raw.kind, raw.request)
    }
}

impl<'a> Review<'a, PodView<'a>> {
    /// [`Review::parse_as`] for a pod: the same review, read by the hand-written reader
    /// (`admission/scan.rs`) when the body has the shape the API server sends, else by serde.
    pub fn parse_pod(body: &'a [u8]) -> Result<Self, ReviewError> {
        Self::parse_scanned(body, scan::pod_review)
    }
}

impl<'a> Review<'a, ObjectView<'a>> {
    /// [`Review::parse_as`] for any object `/validate` checks, read as [`Review::parse_pod`]
    /// reads a pod.
    pub fn parse_object(body: &'a [u8]) -> Result<Self, ReviewError> {
        Self::parse_scanned(body, scan::object_review)
    }
}

impl<'a, O: Deserialize<'a>> Review<'a, O> {
    fn parse_scanned(
        body: &'a [u8],
        scan: fn(&'a str) -> Option<scan::ReviewParts<'a, O>>,
    ) -> Result<Self, ReviewError> {
        if let Ok(text) = std::str::from_utf8(body)
            && let Some((api_version, kind, request)) = scan(text)
        {
            return Self::checked(api_version, kind, request);
        }
        Self::parse_as(body)
    }
}

impl<'a, O> Review<'a, O> {
    /// The checks of a read review (SPEC §4), whichever reader read it.
    pub(crate) fn checked(
        api_version: Option<Text<'a>>,
        kind: Option<Text<'a>>,
        request: Option<AdmissionRequest<'a, O>>,
    ) -> Result<Self, ReviewError> {
        let api_version = api_version.unwrap_or_default();
        if !SUPPORTED_API_VERSIONS.contains(&&*api_version) {
            return Err(ReviewError::ApiVersion(api_version.to_string()));
        }
        match kind.as_deref() {
            Some("AdmissionReview") => {}
            other => return Err(ReviewError::Kind(other.unwrap_or_default().to_string())),
        }
        let request = request.ok_or(ReviewError::NoRequest)?;
        if request.uid.trim().is_empty() {
            return Err(ReviewError::EmptyUid);
        }
        Ok(Review {
            api_version,
            request,
        })
    }
}

fn one_line(e: &serde_json::Error) -> String {
    e.to_string().replace('\n', " ")
}

/// `status` of a response (a subset of metav1.Status).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The answer to one request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 (standard alphabet) of the JSON Patch document. Private: only
    /// [`AdmissionResponse::with_patch`] sets it, so it is always base64 and is written without
    /// an escape check.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl AdmissionResponse {
    pub fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_string(),
            allowed: true,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            status: None,
        }
    }

    pub fn deny(uid: &str, code: u16, message: impl Into<String>) -> Self {
        Self {
            uid: uid.to_string(),
            allowed: false,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            status: Some(Status {
                code,
                message: message.into(),
                reason: Some(match code {
                    400 => "BadRequest",
                    _ => "Forbidden",
                }),
            }),
        }
    }

    /// Attaches a JSON Patch; an empty patch attaches nothing (SPEC §2: no patch, not `[]`).
    pub fn with_patch<P: WriteJson + ?Sized>(mut self, patch: &P) -> Self {
        // Written whole, then encoded in one go: a base64 writer under many small writes costs
        // more than the copy it saves.
        let mut json = Vec::with_capacity(1024);
        patch.write_json(&mut json);
        if json != b"[]" {
            self.patch = Some(base64_simd::STANDARD.encode_to_string(json));
            self.patch_type = Some("JSONPatch");
        }
        self
    }

    /// The base64 text of the attached patch, if any.
    pub fn patch(&self) -> Option<&str> {
        self.patch.as_deref()
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }
}

/// Serialises the AdmissionReview answer, echoing the request's apiVersion. Written by hand
/// (see [`super::json`]); the same bytes as serde_json of the derived `Serialize`.
pub fn response_body(api_version: &str, response: &AdmissionResponse) -> Vec<u8> {
    let patch_len = response.patch.as_ref().map_or(0, String::len);
    let mut out = Vec::with_capacity(192 + patch_len);
    json::object(&mut out, |o| {
        o.member("apiVersion", api_version)
            .member("kind", "AdmissionReview")
            .member("response", response);
    });
    out
}

impl WriteJson for AdmissionResponse {
    fn write_json(&self, out: &mut Vec<u8>) {
        json::object(out, |o| {
            o.member("uid", &self.uid).member("allowed", &self.allowed);
            if let Some(t) = self.patch_type {
                o.member("patchType", t);
            }
            if let Some(p) = &self.patch {
                o.member("patch", &json::Base64(p));
            }
            if !self.warnings.is_empty() {
                o.member("warnings", &self.warnings[..]);
            }
            if let Some(s) = &self.status {
                o.member("status", s);
            }
        });
    }
}

impl WriteJson for Status {
    fn write_json(&self, out: &mut Vec<u8>) {
        json::object(out, |o| {
            o.member("code", &self.code)
                .member("message", &self.message);
            if let Some(r) = self.reason {
                o.member("reason", r);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"a":1},"oldObject":null}}"#;

    #[test]
    fn parses_and_borrows_object() {
        let r = Review::parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(r.request.uid, "u1");
        assert_eq!(r.request.object().unwrap().get(), r#"{"a":1}"#);
    }

    #[test]
    fn rejects_what_is_not_a_review() {
        assert!(matches!(
            Review::parse(b"not json"),
            Err(ReviewError::Json(_))
        ));
        assert!(matches!(
            Review::parse(br#"{"apiVersion":"v1","kind":"Pod"}"#),
            Err(ReviewError::ApiVersion(_))
        ));
        assert!(matches!(
            Review::parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
            Err(ReviewError::NoRequest)
        ));
        let no_uid = MINIMAL.replace(r#""uid":"u1""#, r#""uid":"""#);
        assert!(matches!(
            Review::parse(no_uid.as_bytes()),
            Err(ReviewError::EmptyUid)
        ));
    }

    #[test]
    fn patch_is_base64_string_and_empty_patch_is_absent() {
        use super::super::mutate::Patch;
        use base64::Engine;
        let empty = AdmissionResponse::allow("u").with_patch(&Patch::default());
        let body = String::from_utf8(response_body("admission.k8s.io/v1", &empty)).unwrap();
        assert!(!body.contains("patch"), "{body}");
        let r = AdmissionResponse::allow("u").with_patch(&["a", "b"][..]);
        let v: serde_json::Value = serde_json::from_slice(&response_body("x", &r)).unwrap();
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, br#"["a","b"]"#);
    }

    /// What `response_body` writes by hand, as serde_json writes it from the derives.
    fn serde_body(api_version: &str, response: &AdmissionResponse) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ReviewOut<'a> {
            api_version: &'a str,
            kind: &'static str,
            response: &'a AdmissionResponse,
        }
        serde_json::to_vec(&ReviewOut {
            api_version,
            kind: "AdmissionReview",
            response,
        })
        .unwrap()
    }

    #[test]
    fn answers_are_the_bytes_serde_json_would_write() {
        let responses = [
            AdmissionResponse::allow("705ab4f5-6393-11e8-b7cc-42010a800002"),
            AdmissionResponse::allow("u").with_patch(&["x"][..]),
            AdmissionResponse::allow("u\"q\"").with_warnings(vec![
                "first".into(),
                "with \"quotes\", a\ttab and ünïcödé".into(),
            ]),
            AdmissionResponse::deny("u", 403, "ServiceAccount `a/b` has no \"role\"\n"),
            AdmissionResponse::deny("u", 400, "cannot read the pod"),
            AdmissionResponse {
                status: Some(Status {
                    code: 500,
                    message: String::new(),
                    reason: None,
                }),
                ..AdmissionResponse::allow("u")
            },
        ];
        for r in &responses {
            for api_version in SUPPORTED_API_VERSIONS {
                assert_eq!(
                    String::from_utf8(response_body(api_version, r)).unwrap(),
                    String::from_utf8(serde_body(api_version, r)).unwrap()
                );
            }
        }
    }
}
