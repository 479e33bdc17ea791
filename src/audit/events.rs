//! The Kubernetes Events the controller writes (`events.k8s.io/v1`): one per object and reason per
//! hour, named alike on every replica so a change of leader never doubles one; the audit's
//! findings, the repair's evictions and the GitOps associations controller's refusals all go through
//! [`EventWriter`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::audit::findings::Finding;

/// Most bytes of an event's note (the API server refuses longer ones).
pub const NOTE_MAX_BYTES: usize = 1024;

/// Events per audit run at most; the rest wait for a later run.
pub const MAX_EVENTS_PER_RUN: usize = 20;

/// An object gets the same event (reason) again only after this long.
pub const EVENT_REPEAT: Duration = Duration::from_secs(3600);

/// The events' `reportingController`.
pub const REPORTING_CONTROLLER: &str = "pod-identity-webhook";

/// The findings that get an event now: not evented for the same object and reason within
/// [`EVENT_REPEAT`] (`sent`, pruned here), and at most [`MAX_EVENTS_PER_RUN`].
fn due<'a>(
    findings: &'a [Finding],
    sent: &mut HashMap<(String, &'static str), Instant>,
    now: Instant,
) -> Vec<&'a Finding> {
    sent.retain(|_, at| now.duration_since(*at) < EVENT_REPEAT);
    let mut seen = std::collections::HashSet::new();
    findings
        .iter()
        .filter(|f| {
            f.uid.as_ref().is_some_and(|uid| {
                let key = (uid.clone(), f.reason.as_str());
                !sent.contains_key(&key) && seen.insert(key)
            })
        })
        .take(MAX_EVENTS_PER_RUN)
        .collect()
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Writes the audit's and the repair's events (`events.k8s.io/v1`).
pub struct EventWriter {
    client: Client,
    /// `reportingInstance`: the pod's name.
    instance: String,
}

impl EventWriter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            instance: std::env::var("POD_NAME")
                .ok()
                .filter(|n| !n.is_empty() && n.len() <= 128)
                .unwrap_or_else(|| REPORTING_CONTROLLER.into()),
        }
    }

    /// One event on `f`'s object: `reason` (CamelCase), `action`, `note`. An event of the same
    /// name (object, reason, hour) already there counts as recorded.
    pub async fn record(
        &self,
        f: &Finding,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let mut event = self.event(f, crate::telemetry::metrics::unix_now());
        let uid = f.uid.clone().unwrap_or_default();
        event.metadata.name = Some(event_name(
            &f.name,
            &uid,
            reason,
            crate::telemetry::metrics::unix_now(),
        ));
        event.reason = Some(reason.into());
        event.action = Some(action.into());
        event.note = Some(cut(note, NOTE_MAX_BYTES));
        event.type_ = Some("Normal".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &f.namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One event per object and reason per [`EVENT_REPEAT`], at most [`MAX_EVENTS_PER_RUN`] a
    /// run. An event's name is the same for every replica within the hour ([`event_name`]), so
    /// after a change of leader the API server keeps the first and answers the others 409,
    /// which counts as recorded.
    pub async fn publish(
        &self,
        findings: &[Finding],
        sent: &mut HashMap<(String, &'static str), Instant>,
    ) {
        let now = Instant::now();
        let unix_now = crate::telemetry::metrics::unix_now();
        for f in due(findings, sent, now) {
            let event = self.event(f, unix_now);
            let api: Api<Event> = Api::namespaced(self.client.clone(), &f.namespace);
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                Err(e) => {
                    tracing::warn!(error = %e, kind = %f.kind, namespace = %f.namespace, name = %f.name, "cannot record the audit event");
                    // The API refuses events (RBAC, overload): try again next run, not now.
                    return;
                }
            }
            if let Some(uid) = &f.uid {
                sent.insert((uid.clone(), f.reason.as_str()), now);
            }
        }
    }

    /// One `Warning` event on `regarding` (the GitOps associations controller's refusals and
    /// reports): named alike on every replica within the hour, so a repeat is answered 409,
    /// which counts as recorded.
    pub async fn warn(
        &self,
        regarding: &Regarding,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let unix_now = crate::telemetry::metrics::unix_now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(
                    &regarding.name,
                    &regarding.uid,
                    reason,
                    unix_now,
                )),
                namespace: Some(regarding.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            type_: Some("Warning".into()),
            reason: Some(reason.into()),
            action: Some(action.into()),
            note: Some(cut(note, NOTE_MAX_BYTES)),
            regarding: Some(ObjectReference {
                api_version: Some(regarding.api_version.into()),
                kind: Some(regarding.kind.into()),
                name: Some(regarding.name.clone()),
                namespace: Some(regarding.namespace.clone()),
                uid: Some(regarding.uid.clone()),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &regarding.namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn event(&self, f: &Finding, unix_now: i64) -> Event {
        let uid = f.uid.clone().unwrap_or_default();
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(&f.name, &uid, f.reason.as_str(), unix_now)),
                namespace: Some(f.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            type_: Some("Warning".into()),
            reason: Some(event_reason(f)),
            action: Some("Audit".into()),
            note: Some(cut(&f.message, NOTE_MAX_BYTES)),
            regarding: Some(ObjectReference {
                api_version: Some(f.api_version.clone()),
                kind: Some(f.kind.clone()),
                name: Some(f.name.clone()),
                namespace: Some(f.namespace.clone()),
                uid: Some(uid),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }
}

/// `<object>.<hash>`: the hash of the object's uid, the reason and the hour, so every replica
/// names the same event alike within an hour; at most 253 characters.
fn event_name(object: &str, uid: &str, reason: &str, unix_now: i64) -> String {
    use sha2::Digest;
    let hour = unix_now.div_euclid(EVENT_REPEAT.as_secs() as i64);
    let digest = sha2::Sha256::digest(format!("{uid}/{reason}/{hour}"));
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut end = object.len().min(200);
    while !object.is_char_boundary(end) {
        end -= 1;
    }
    let prefix = object[..end].trim_end_matches(['.', '-']);
    format!("{prefix}.{hash}")
}

/// The event reason: CamelCase, as Kubernetes reasons are.
fn event_reason(f: &Finding) -> String {
    f.reason
        .as_str()
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|first| first.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `text` in at most `max` bytes, cut on a character boundary with `...` when too long.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::findings::{Reason, Severity};

    fn finding(uid: &str, reason: Reason) -> Finding {
        Finding {
            namespace: "team-a".into(),
            kind: "Pod".into(),
            name: uid.into(),
            reason,
            severity: Severity::Restart,
            service_account: None,
            message: "m".into(),
            owner: None,
            uid: Some(uid.into()),
            api_version: "v1".into(),
        }
    }

    #[test]
    fn events_are_due_once_per_object_and_reason_per_hour_and_twenty_a_run() {
        let now = Instant::now();
        let mut sent = HashMap::new();
        let findings: Vec<Finding> = (0..30)
            .map(|i| finding(&format!("uid-{i}"), Reason::NeedsRestart))
            .chain([
                finding("uid-0", Reason::NoIdentity),
                finding("uid-0", Reason::NoIdentity),
            ])
            .collect();
        let first = due(&findings, &mut sent, now);
        assert_eq!(first.len(), MAX_EVENTS_PER_RUN);
        for f in &first {
            sent.insert((f.uid.clone().unwrap(), f.reason.as_str()), now);
        }
        // The next run: the other ten and uid-0's second reason, once.
        let second = due(&findings, &mut sent, now + Duration::from_secs(60));
        assert_eq!(second.len(), 11, "{second:?}");
        assert!(
            second
                .iter()
                .all(|f| !sent.contains_key(&(f.uid.clone().unwrap(), f.reason.as_str())))
        );
        for f in &second {
            sent.insert((f.uid.clone().unwrap(), f.reason.as_str()), now);
        }
        assert!(due(&findings, &mut sent, now + Duration::from_secs(120)).is_empty());
        // An hour on, they are due again.
        assert_eq!(
            due(&findings, &mut sent, now + EVENT_REPEAT).len(),
            MAX_EVENTS_PER_RUN
        );
        // Without a uid there is nothing to attach the event to.
        let mut no_uid = finding("x", Reason::Policy);
        no_uid.uid = None;
        assert!(due(&[no_uid], &mut HashMap::new(), now).is_empty());
    }

    #[test]
    fn event_names_agree_across_replicas_within_the_hour() {
        let at = 1_800_000_000;
        let name = event_name("carts", "uid-1", "needs-restart", at);
        assert!(name.starts_with("carts."), "{name}");
        assert_eq!(name, event_name("carts", "uid-1", "needs-restart", at + 1));
        assert_ne!(name, event_name("carts", "uid-1", "no-identity", at));
        assert_ne!(name, event_name("carts", "uid-2", "needs-restart", at));
        assert_ne!(
            name,
            event_name("carts", "uid-1", "needs-restart", at + 3600)
        );
        let long = "a".repeat(253);
        assert!(event_name(&long, "u", "policy", at).len() <= 253);
    }

    #[test]
    fn reasons_are_camel_case_and_notes_fit_the_api_limit() {
        assert_eq!(
            event_reason(&finding("u", Reason::IrsaWithAssociation)),
            "IrsaWithAssociation"
        );
        assert_eq!(
            event_reason(&finding("u", Reason::NoIdentity)),
            "NoIdentity"
        );
        let long = "é".repeat(NOTE_MAX_BYTES);
        let note = cut(&long, NOTE_MAX_BYTES);
        assert!(note.len() <= NOTE_MAX_BYTES && note.ends_with("..."));
        assert_eq!(cut("short", NOTE_MAX_BYTES), "short");
    }
}
