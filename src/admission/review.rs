//! The AdmissionReview wire format (docs/contract.md §4), read and written with serde.
//!
//! A body is read once, into the review and its object's [`ObjectView`] together. Only a body
//! that does not read that way is looked at again, to say what is wrong with it: an envelope
//! that is not a review is answered with HTTP 400, an object that is not readable with
//! `allowed: false` naming the field.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::object::map_only::from_objects_only;
use crate::object::{ObjectView, Text, read_bounded};

/// API versions the API server may send; the response echoes the one received.
pub const SUPPORTED_API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// The longest answer the API server reads from a webhook (its webhook client stops at 3 MiB);
/// a longer one fails the call, which `failurePolicy: Ignore` turns into a pod admitted
/// unchecked. A patch that would not fit is refused instead (issue 21).
pub const MAX_ANSWER_BYTES: usize = 3 * 1024 * 1024;

/// Longest message quoting the request (parse errors quote values, which may be as long as the
/// body): longer ones are cut.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Room in an answer for what surrounds the response (`apiVersion`, `kind`, `patchType`, the
/// keys of the patch).
const ENVELOPE_BYTES: usize = 160;

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

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

#[derive(Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de>")
)]
struct ReviewIn<'a, O> {
    #[serde(borrow)]
    api_version: Option<Text<'a>>,
    #[serde(borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    request: Option<AdmissionRequest<'a, O>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(remote = "Self")]
pub struct GroupVersionKind<'a> {
    #[serde(default, borrow)]
    pub group: Text<'a>,
    #[serde(default, borrow)]
    pub version: Text<'a>,
    #[serde(default, borrow)]
    pub kind: Text<'a>,
}

/// The request's object as read: its view, or why it is not a readable object.
#[derive(Debug)]
pub enum Object<V> {
    Read(V),
    /// The message names the field that was wrong.
    Unreadable(String),
}

/// One admission request, borrowing from the request body. `object` is `None` when the
/// request has none (or `null`).
#[derive(Debug, Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de>")
)]
pub struct AdmissionRequest<'a, O = Object<ObjectView<'a>>> {
    #[serde(borrow)]
    pub uid: Text<'a>,
    #[serde(borrow)]
    pub kind: GroupVersionKind<'a>,
    #[serde(default, borrow)]
    pub sub_resource: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub namespace: Option<Text<'a>>,
    pub operation: Operation,
    #[serde(default)]
    pub object: Option<O>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

// The review, its request and the request's kind read from JSON objects only, as the objects
// do (see `object::map_only`): a body that is an array is not a review.
from_objects_only!(GroupVersionKind);
from_objects_only!(ReviewIn<'a, O>, AdmissionRequest<'a, O>);

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

impl<'a, O> AdmissionRequest<'a, O> {
    fn map_object<P>(self, f: impl FnOnce(Option<O>) -> Option<P>) -> AdmissionRequest<'a, P> {
        AdmissionRequest {
            uid: self.uid,
            kind: self.kind,
            sub_resource: self.sub_resource,
            name: self.name,
            namespace: self.namespace,
            operation: self.operation,
            object: f(self.object),
            dry_run: self.dry_run,
        }
    }

    /// The subresource, when the request is about one (`status`, `ephemeralcontainers`, …).
    pub fn sub_resource(&self) -> Option<&str> {
        self.sub_resource.as_deref().filter(|s| !s.is_empty())
    }
}

/// A read review: the request plus the apiVersion to echo.
#[derive(Debug)]
pub struct Review<'a, O = Object<ObjectView<'a>>> {
    pub api_version: Text<'a>,
    pub request: AdmissionRequest<'a, O>,
}

impl<'a> Review<'a> {
    /// Reads a body: the review and its object in one pass. Any error is answered with HTTP
    /// 400 (docs/contract.md §4); an object that is not readable is not an error here but
    /// [`Object::Unreadable`], for the decision to answer.
    pub fn read(body: &'a [u8]) -> Result<Self, ReviewError> {
        // One UTF-8 check of the whole body up front: parsing from `&str` then skips the
        // per-string checks.
        let body = std::str::from_utf8(body).map_err(|e| {
            ReviewError::Json(format!("body is not UTF-8 at byte {}", e.valid_up_to()))
        })?;
        if let Ok(review) = read_bounded(|| Review::<ObjectView>::parse(body)) {
            return Ok(Review {
                api_version: review.api_version,
                request: review.request.map_object(|o| o.map(Object::Read)),
            });
        }
        // Not read in one pass: is it the review or its object?
        let review = Review::<&RawValue>::parse(body)?;
        let kind = review.request.kind.kind.clone();
        let read = |raw: &'a RawValue| match read_bounded(|| read_object(raw, &kind)) {
            Ok(view) => Object::Read(view),
            Err(message) => Object::Unreadable(message),
        };
        Ok(Review {
            api_version: review.api_version,
            request: review
                .request
                .map_object(|o| o.filter(|o| o.get() != "null").map(read)),
        })
    }
}

impl<'a, O: Deserialize<'a>> Review<'a, O> {
    /// Reads a body with its object read as `O` in the same pass.
    pub fn parse(body: &'a str) -> Result<Self, ReviewError> {
        let raw: ReviewIn<'a, O> = serde_json::from_str(body).map_err(|e| {
            ReviewError::Json(clip(e.to_string().replace('\n', " "), MAX_MESSAGE_BYTES))
        })?;
        let api_version = raw.api_version.unwrap_or_default();
        if !SUPPORTED_API_VERSIONS.contains(&&*api_version) {
            return Err(ReviewError::ApiVersion(clip(
                api_version.to_string(),
                MAX_MESSAGE_BYTES,
            )));
        }
        match raw.kind.as_deref() {
            Some("AdmissionReview") => {}
            other => {
                return Err(ReviewError::Kind(clip(
                    other.unwrap_or_default().to_string(),
                    MAX_MESSAGE_BYTES,
                )));
            }
        }
        let request = raw.request.ok_or(ReviewError::NoRequest)?;
        if request.uid.trim().is_empty() {
            return Err(ReviewError::EmptyUid);
        }
        Ok(Review {
            api_version,
            request,
        })
    }
}

/// Reads an object, naming the field that is wrong when it is not readable. Only for objects
/// that failed to read already: tracking the path costs an allocation per key.
fn read_object<'a>(raw: &'a RawValue, kind: &str) -> Result<ObjectView<'a>, String> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let what = if kind.is_empty() { "object" } else { kind };
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path.is_empty() || path == "." {
            format!("object is not a readable {what}: {inner}")
        } else {
            format!("object is not a readable {what}: at {path}: {inner}")
        };
        clip(message, MAX_MESSAGE_BYTES)
    })
}

/// `status` of a response (a subset of metav1.Status).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResponseStatus {
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
    /// Base64 (standard alphabet) of the JSON Patch document; set by
    /// [`AdmissionResponse::with_patch`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ResponseStatus>,
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
            status: Some(ResponseStatus {
                code,
                message: message.into(),
                reason: Some(match code {
                    400 => "BadRequest",
                    _ => "Forbidden",
                }),
            }),
        }
    }

    /// Attaches a JSON Patch; an empty patch attaches nothing (docs/contract.md §2: no patch, not `[]`).
    pub fn with_patch<P: Serialize + ?Sized>(self, patch: &P) -> Self {
        self.with_patch_within(patch, usize::MAX)
            .expect("no answer is longer than usize::MAX")
    }

    /// Attaches a JSON Patch when the whole answer stays within `max_answer` bytes; else
    /// `Err` with the length it would have had. Measured before the patch is encoded.
    pub fn with_patch_within<P: Serialize + ?Sized>(
        mut self,
        patch: &P,
        max_answer: usize,
    ) -> Result<Self, usize> {
        use base64::Engine;
        let json = serde_json::to_vec(patch).expect("a patch always serialises");
        if json == b"[]" {
            return Ok(self);
        }
        let answer = json
            .len()
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(serialized_len(&self))
            .saturating_add(ENVELOPE_BYTES);
        if answer > max_answer {
            return Err(answer);
        }
        self.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
        self.patch_type = Some("JSONPatch");
        Ok(self)
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }
}

/// The length of a value's JSON, counted without writing it anywhere.
fn serialized_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("an answer always serialises");
    count.0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: &'a AdmissionResponse,
}

/// The AdmissionReview answer, echoing the request's apiVersion.
pub fn response_body(api_version: &str, response: &AdmissionResponse) -> Vec<u8> {
    serde_json::to_vec(&ReviewOut {
        api_version,
        kind: "AdmissionReview",
        response,
    })
    .expect("an answer always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"serviceAccountName":"a"}},"oldObject":null}}"#;

    #[test]
    fn reads_the_review_and_its_object_in_one_pass() {
        let r = Review::read(MINIMAL.as_bytes()).unwrap();
        assert_eq!(r.request.uid, "u1");
        let Some(Object::Read(pod)) = &r.request.object else {
            panic!("{r:?}")
        };
        assert_eq!(pod.service_account(), "a");
    }

    #[test]
    fn an_unreadable_object_is_not_an_unreadable_review() {
        let bad = MINIMAL.replace(r#""serviceAccountName":"a""#, r#""containers":7"#);
        let r = Review::read(bad.as_bytes()).unwrap();
        let Some(Object::Unreadable(message)) = &r.request.object else {
            panic!("{r:?}")
        };
        assert!(message.contains("Pod: at spec.containers"), "{message}");
        let null = MINIMAL.replace(
            r#""object":{"spec":{"serviceAccountName":"a"}}"#,
            r#""object":null"#,
        );
        assert!(
            Review::read(null.as_bytes())
                .unwrap()
                .request
                .object
                .is_none()
        );
    }

    #[test]
    fn rejects_what_is_not_a_review() {
        assert!(matches!(
            Review::read(b"not json"),
            Err(ReviewError::Json(_))
        ));
        assert!(matches!(
            Review::read(br#"{"apiVersion":"v1","kind":"Pod"}"#),
            Err(ReviewError::ApiVersion(_))
        ));
        assert!(matches!(
            Review::read(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
            Err(ReviewError::NoRequest)
        ));
        let no_uid = MINIMAL.replace(r#""uid":"u1""#, r#""uid":"""#);
        assert!(matches!(
            Review::read(no_uid.as_bytes()),
            Err(ReviewError::EmptyUid)
        ));
    }

    /// Found by tests/fuzz.rs (seed 1, input 14435): `"metadata": []` read as empty metadata,
    /// and the patch then added `/metadata/labels` to an array.
    #[test]
    fn arrays_in_place_of_objects_are_not_read_as_their_fields() {
        for (from, to) in [
            (r#""spec":{"#, r#""metadata":[],"spec":{"#),
            (r#""serviceAccountName":"a""#, r#""containers":[["app"]]"#),
        ] {
            let bad = MINIMAL.replace(from, to);
            let r = Review::read(bad.as_bytes()).unwrap();
            let Some(Object::Unreadable(message)) = &r.request.object else {
                panic!("{to}: {r:?}")
            };
            assert!(message.contains("expected an object"), "{message}");
        }
        let body = format!(
            r#"["admission.k8s.io/v1","AdmissionReview",{}]"#,
            &MINIMAL[MINIMAL.find(r#"{"uid""#).unwrap()..MINIMAL.len() - 1]
        );
        assert!(matches!(
            Review::read(body.as_bytes()),
            Err(ReviewError::Json(_))
        ));
        let request_array = MINIMAL.replace(
            r#""request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","#,
            r#""request":["u1",{"group":"","version":"v1","kind":"Pod"},null,null,null,"CREATE"],"x":{"#,
        );
        assert!(matches!(
            Review::read(request_array.as_bytes()),
            Err(ReviewError::Json(_))
        ));
        let kind_array = MINIMAL.replace(
            r#"{"group":"","version":"v1","kind":"Pod"}"#,
            r#"["","v1","Pod"]"#,
        );
        assert!(matches!(
            Review::read(kind_array.as_bytes()),
            Err(ReviewError::Json(_))
        ));
    }

    #[test]
    fn messages_quoting_the_request_are_cut() {
        let long = "é".repeat(100_000);
        let kind = MINIMAL.replace(
            r#""kind":"AdmissionReview""#,
            &format!(r#""kind":"{long}""#),
        );
        let Err(ReviewError::Kind(k)) = Review::read(kind.as_bytes()) else {
            panic!("kind accepted")
        };
        assert!(
            k.len() <= MAX_MESSAGE_BYTES + 3 && k.ends_with('…'),
            "{}",
            k.len()
        );
        let object = MINIMAL.replace(
            r#""serviceAccountName":"a""#,
            &format!(r#""containers":"{long}""#),
        );
        let r = Review::read(object.as_bytes()).unwrap();
        let Some(Object::Unreadable(message)) = &r.request.object else {
            panic!("{r:?}")
        };
        assert!(message.starts_with("object is not a readable Pod: at spec.containers"));
        assert!(message.len() <= MAX_MESSAGE_BYTES + 3, "{}", message.len());
    }

    #[test]
    fn a_patch_that_would_make_the_answer_too_long_is_not_attached() {
        let patch = vec!["x".repeat(1000); 10];
        let full = AdmissionResponse::allow("u").with_patch(&patch);
        let len = response_body("admission.k8s.io/v1", &full).len();
        // The estimate is never below the real length, and above it by the envelope at most.
        let within = AdmissionResponse::allow("u").with_patch_within(&patch, len + ENVELOPE_BYTES);
        assert_eq!(within.unwrap(), full);
        let too_long = AdmissionResponse::allow("u")
            .with_patch_within(&patch, len - 1)
            .unwrap_err();
        assert!(
            too_long >= len && too_long <= len + ENVELOPE_BYTES,
            "{too_long} vs {len}"
        );
    }

    #[test]
    fn patch_is_base64_string_and_empty_patch_is_absent() {
        use base64::Engine;
        let empty: [&str; 0] = [];
        let r = AdmissionResponse::allow("u").with_patch(&empty);
        let body = String::from_utf8(response_body("admission.k8s.io/v1", &r)).unwrap();
        assert!(!body.contains("patch"), "{body}");
        let r = AdmissionResponse::allow("u").with_patch(&["a", "b"]);
        let v: serde_json::Value = serde_json::from_slice(&response_body("x", &r)).unwrap();
        assert_eq!(v["apiVersion"], "x");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, br#"["a","b"]"#);
    }
}
