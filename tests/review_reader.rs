//! The hand-written reader of reviews (`admission::scan`: pods on `/mutate`, any checked object on
//! `/validate`) against serde's: whenever it reads a body it reads the same review serde reads, and
//! whatever it does not read is left to serde, which answers as before (SPEC §4: a body that is
//! not a review is a 400 with the reason).

mod support;

use pod_identity_webhook::admission::pod::PodView;
use pod_identity_webhook::admission::review::{Review, ReviewError};
use pod_identity_webhook::admission::scan;
use pod_identity_webhook::admission::validate;
use pod_identity_webhook::policy::workload::ObjectView;
use support::{captures, fixture};

/// Checks that the server's read and serde's give the same review or the same error; passes on
/// whether the hand-written reader took the body.
fn same<O: std::fmt::Debug>(
    body: &[u8],
    served: Result<Review<'_, O>, ReviewError>,
    serde: Result<Review<'_, O>, ReviewError>,
    by_hand: bool,
) -> bool {
    let served = served.map(|r| format!("{r:?}"));
    let serde = serde.map(|r| format!("{r:?}"));
    match (&served, &serde) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{}", String::from_utf8_lossy(body)),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!(
            "the readers disagree: {served:?} vs {serde:?} on\n{}",
            String::from_utf8_lossy(body)
        ),
    }
    by_hand
}

/// A pod review (`/mutate`) read both ways; whether the hand-written reader took it.
fn agree(body: &[u8]) -> bool {
    let by_hand = std::str::from_utf8(body)
        .ok()
        .and_then(scan::pod_review)
        .is_some();
    same(
        body,
        Review::<PodView>::parse_pod(body),
        Review::<PodView>::parse_as(body),
        by_hand,
    )
}

/// A `/validate` review read both ways; whether the hand-written reader took it.
fn agree_object(body: &[u8]) -> bool {
    let by_hand = std::str::from_utf8(body)
        .ok()
        .and_then(scan::object_review)
        .is_some();
    same(
        body,
        Review::<ObjectView>::parse_object(body),
        Review::<ObjectView>::parse_as(body),
        by_hand,
    )
}

fn pod_captures() -> Vec<support::Capture> {
    let mut all = captures(".mutate.json");
    all.extend(
        captures(".validate.json")
            .into_iter()
            .filter(|c| c.name.starts_with("pod-create")),
    );
    assert!(all.len() >= 7, "{} pod captures", all.len());
    all
}

fn compact(body: &[u8]) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn every_captured_pod_is_read_by_hand_as_serde_reads_it() {
    for c in pod_captures() {
        // As captured (indented) and as the API server sends it (compact).
        for body in [c.body.clone(), compact(&c.body)] {
            assert!(agree(&body), "{} was left to serde", c.name);
        }
    }
}

#[test]
fn every_truncation_of_a_review_is_refused_as_serde_refuses_it() {
    let (_, body) = fixture("pod-create-irsa-init-sidecar.mutate.json");
    for end in 0..body.len() {
        assert!(!agree(&body[..end]), "a review cut at byte {end} was read");
    }
}

/// The carts review (compact) with `from` replaced by `to`, once.
fn edited(from: &str, to: &str) -> Vec<u8> {
    edited_capture("pod-create-carts.mutate.json", from, to)
}

/// A capture (compact) with `from` replaced by `to`, once.
fn edited_capture(name: &str, from: &str, to: &str) -> Vec<u8> {
    let (_, body) = fixture(name);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{from} in\n{text}");
    text.replacen(from, to, 1).into_bytes()
}

#[test]
fn escapes_are_undone_as_serde_undoes_them() {
    for (from, to) in [
        // A read string with escapes (borrowed no more, same text).
        (
            r#""serviceAccountName":"carts""#,
            r#""serviceAccountName":"c\u0061rts\n\/""#,
        ),
        (
            r#""name":"carts-0","namespace":"team-a","object""#,
            r#""name":"carts-\u00e9\ud83d\ude00","namespace":"team-a","object""#,
        ),
        // An escaped field name is the field (serde matches names unescaped).
        (
            r#""serviceAccountName":"carts""#,
            r#""serviceAccountN\u0061me":"x""#,
        ),
        // Escapes in map keys and annotation values.
        (r#""labels":{"#, r#""labels":{"x\"y":"a\\b","#),
        (
            r#""annotations":{"#,
            r#""annotations":{"k\u002fx":"{\"a\":1}","#,
        ),
        // A lone surrogate where nobody reads it (serde passes over it).
        (
            r#""schedulerName":"default-scheduler""#,
            r#""schedulerName":"\ud800""#,
        ),
    ] {
        assert!(agree(&edited(from, to)), "{to}");
    }
}

#[test]
fn what_serde_refuses_is_left_to_serde() {
    for (from, to) in [
        // Not JSON, in parts the view skips.
        (r#""priority":0"#, r#""priority":01"#),
        (r#""priority":0"#, r#""priority":1."#),
        (r#""priority":0"#, r#""priority":-"#),
        (r#""priority":0"#, r#""priority":tru"#),
        (r#""priority":0"#, r#""priority":"a"b""#),
        (r#""priority":0"#, r#""priority":[1 2]"#),
        (r#""priority":0"#, r#""priority":{"a" 1}"#),
        (r#""priority":0"#, r#""priority":{"a":1,}"#),
        (
            r#""schedulerName":"default-scheduler""#,
            "\"schedulerName\":\"a\tb\"",
        ),
        (
            r#""schedulerName":"default-scheduler""#,
            r#""schedulerName":"\x""#,
        ),
        (
            r#""schedulerName":"default-scheduler""#,
            r#""schedulerName":"\u12G4""#,
        ),
        // A lone surrogate in a string the view reads.
        (
            r#""serviceAccountName":"carts""#,
            r#""serviceAccountName":"\ud800""#,
        ),
        // Wrong types where the view reads.
        (
            r#""serviceAccountName":"carts""#,
            r#""serviceAccountName":7"#,
        ),
        (r#""labels":{"#, r#""labels":{"n":1,"#),
        (r#""annotations":{"#, r#""annotations":{"n":true,"#),
        (r#""operation":"CREATE""#, r#""operation":"PATCH""#),
        (r#""dryRun":false"#, r#""dryRun":"no""#),
    ] {
        assert!(!agree(&edited(from, to)), "{to} was read by hand");
    }
}

#[test]
fn unusual_shapes_are_left_to_serde_which_reads_them() {
    for (from, to) in [
        // A duplicate field (serde refuses it), also when one is written with escapes.
        (
            r#""operation":"CREATE""#,
            r#""operation":"CREATE","operation":"CREATE""#,
        ),
        (
            r#""operation":"CREATE""#,
            r#""operation":"CREATE","oper\u0061tion":"CREATE""#,
        ),
        // `null` where the view wants a value.
        (
            r#""uid":"eee93076-7f13-446a-b60d-52e5a0600d63""#,
            r#""uid":null"#,
        ),
        (r#""metadata":{"#, r#""metadata":null,"m":{"#),
        // Nesting deeper than serde_json allows.
        (
            r#""priority":0"#,
            &format!(r#""priority":{}0{}"#, "[".repeat(200), "]".repeat(200)),
        ),
    ] {
        assert!(!agree(&edited(from, to)), "{to} was read by hand");
    }
}

#[test]
fn nulls_and_absent_fields_read_as_serde_reads_them() {
    for (from, to) in [
        (r#""labels":{"#, r#""labels":null,"l":{"#),
        (r#""annotations":{"#, r#""annotations":null,"a":{"#),
        (r#""dryRun":false"#, r#""dryRun":null"#),
        (r#""namespace":"team-a","object""#, r#""object""#),
        (
            r#""serviceAccountName":"carts""#,
            r#""serviceAccountName":null"#,
        ),
        (r#""volumes":["#, r#""volumes":null,"v":["#),
        (
            r#""oldObject":null"#,
            r#""x":[1,-2.5e3,true,false,null,{},[]]"#,
        ),
        // Nothing reads an old object: passed over like any other field.
        (
            r#""oldObject":null"#,
            r#""oldObject":{"kind":"Pod","spec":{}}"#,
        ),
    ] {
        assert!(agree(&edited(from, to)), "{to} was left to serde");
    }
}

#[test]
fn the_review_checks_answer_the_same_whichever_reader_read() {
    for (from, to) in [
        (
            r#""apiVersion":"admission.k8s.io/v1""#,
            r#""apiVersion":"v2""#,
        ),
        (r#""kind":"AdmissionReview""#, r#""kind":"Review""#),
        (
            r#""uid":"eee93076-7f13-446a-b60d-52e5a0600d63""#,
            r#""uid":" ""#,
        ),
    ] {
        let body = edited(from, to);
        assert!(agree(&body), "{to}");
        assert!(Review::<PodView>::parse_pod(&body).is_err(), "{to}");
    }
    // Only whitespace may follow the review.
    let (_, body) = fixture("pod-create-carts.mutate.json");
    let mut spaced = body.clone();
    spaced.extend_from_slice(b" \n");
    assert!(agree(&spaced));
    let mut trailing = body;
    trailing.extend_from_slice(b"{}");
    assert!(!agree(&trailing));
}

/// Random byte edits of `captures`, each read both ways by `agree`; how many were read by hand.
fn random_edits(captures: &[&str], rounds: usize, agree: fn(&[u8]) -> bool) -> usize {
    // Bytes that matter to JSON, and some that do not.
    const ALPHABET: &[u8] = b"{}[]:,\"\\ \n0-1.eEtrufalsnu\x01\x7fa/";
    let mut rng = fastrand::Rng::with_seed(0x5ca9);
    let mut read_by_hand = 0;
    for name in captures {
        let (_, body) = fixture(name);
        for _ in 0..rounds {
            let mut edited = body.clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..edited.len());
                let byte = ALPHABET[rng.usize(..ALPHABET.len())];
                match rng.u8(..3) {
                    0 => edited[at] = byte,
                    1 => edited.insert(at, byte),
                    _ => {
                        edited.remove(at);
                    }
                }
            }
            if agree(&edited) {
                read_by_hand += 1;
            }
        }
    }
    read_by_hand
}

#[test]
fn random_edits_of_a_review_never_make_the_readers_disagree() {
    let read_by_hand = random_edits(
        &[
            "pod-create-carts.mutate.json",
            "pod-create-irsa-init-sidecar.mutate.json",
        ],
        3000,
        agree,
    );
    // Many edits land inside strings or swap equivalent bytes: the hand-written reader still
    // reads those, so this compares real readings, not only refusals.
    assert!(
        read_by_hand > 500,
        "only {read_by_hand} edited reviews read by hand"
    );
}

// --- /validate ---------------------------------------------------------------------------------

#[test]
fn every_captured_object_is_read_by_hand_as_serde_reads_it() {
    let all = captures(".validate.json");
    assert!(all.len() >= 15, "{} validate captures", all.len());
    for c in all {
        for body in [c.body.clone(), compact(&c.body)] {
            assert!(agree_object(&body), "{} was left to serde", c.name);
        }
    }
}

#[test]
fn every_truncation_of_an_update_review_is_refused_as_serde_refuses_it() {
    let (_, body) = fixture("deployment-update-image.validate.json");
    for end in 0..body.len() {
        assert!(
            !agree_object(&body[..end]),
            "a review cut at byte {end} was read"
        );
    }
}

#[test]
fn an_objects_kind_says_where_its_pod_spec_is_for_both_readers() {
    let deployment = "deployment-create-carts.validate.json";
    let cronjob = "cronjob-create-reporter.validate.json";
    for (name, from, to) in [
        // Another kind: no pod spec is checked.
        (
            deployment,
            r#""kind":"Deployment","metadata""#,
            r#""kind":"Widget","metadata""#,
        ),
        // No template, no job template: an empty pod spec for both.
        (deployment, r#""template":{"#, r#""templat":{"#),
        (cronjob, r#""jobTemplate":{"#, r#""jobTemplat":{"#),
    ] {
        assert!(agree_object(&edited_capture(name, from, to)), "{to}");
    }
    // The kind after the spec: the pod spec is passed over by both (then read the raw way).
    let spec_first = String::from_utf8(edited_capture(
        deployment,
        r#""kind":"Deployment","metadata""#,
        r#""metadata""#,
    ))
    .unwrap()
    .replacen(r#""status":{}}"#, r#""status":{},"kind":"Deployment"}"#, 1);
    assert!(agree_object(spec_first.as_bytes()));
    assert!(
        validate::read_review(spec_first.as_bytes()).is_none(),
        "a spec before its kind is read the raw way"
    );

    // A kind that is not a string, twice the kind, a null template: serde refuses them.
    for (name, from, to) in [
        (
            deployment,
            r#""kind":"Deployment","metadata""#,
            r#""kind":7,"metadata""#,
        ),
        (
            deployment,
            r#""kind":"Deployment","metadata""#,
            r#""kind":"Deployment","kind":"Deployment","metadata""#,
        ),
        (deployment, r#""template":{"#, r#""template":null,"t":{"#),
        (
            cronjob,
            r#""jobTemplate":{"#,
            r#""jobTemplate":{"spec":null},"j":{"#,
        ),
    ] {
        assert!(
            !agree_object(&edited_capture(name, from, to)),
            "{to} was read by hand"
        );
    }
}

#[test]
fn random_edits_of_validate_reviews_never_make_the_readers_disagree() {
    let read_by_hand = random_edits(
        &[
            "deployment-update-image.validate.json",
            "cronjob-create-reporter.validate.json",
            "sa-update-add-role-annotation.validate.json",
        ],
        2000,
        agree_object,
    );
    assert!(
        read_by_hand > 500,
        "only {read_by_hand} edited reviews read by hand"
    );
}
