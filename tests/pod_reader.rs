//! The hand-written reader of pod reviews (`admission::scan`, the `/mutate` path) against serde's:
//! whenever it reads a body it reads the same review serde reads, and whatever it does not read
//! is left to serde, which answers as before (SPEC §4: a body that is not a review is a 400 with
//! the reason).

mod support;

use pod_identity_webhook::admission::pod::PodView;
use pod_identity_webhook::admission::review::Review;
use pod_identity_webhook::admission::scan;
use support::{captures, fixture};

/// Reads `body` the way the server does and the serde way, and checks both give the same review
/// or the same error. Returns whether the hand-written reader took it.
fn agree(body: &[u8]) -> bool {
    let served = Review::<PodView>::parse_pod(body).map(|r| format!("{r:?}"));
    let serde = Review::<PodView>::parse_as(body).map(|r| format!("{r:?}"));
    match (&served, &serde) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{}", String::from_utf8_lossy(body)),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!(
            "the readers disagree: {served:?} vs {serde:?} on\n{}",
            String::from_utf8_lossy(body)
        ),
    }
    std::str::from_utf8(body)
        .ok()
        .and_then(scan::pod_review)
        .is_some()
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
    let (_, body) = fixture("pod-create-carts.mutate.json");
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

#[test]
fn random_edits_of_a_review_never_make_the_readers_disagree() {
    // Bytes that matter to JSON, and some that do not.
    const ALPHABET: &[u8] = b"{}[]:,\"\\ \n0-1.eEtrufalsnu\x01\x7fa/";
    let mut rng = fastrand::Rng::with_seed(0x5ca9);
    let mut read_by_hand = 0;
    for (_, body) in [
        fixture("pod-create-carts.mutate.json"),
        fixture("pod-create-irsa-init-sidecar.mutate.json"),
    ] {
        for _ in 0..3000 {
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
    // Many edits land inside strings or swap equivalent bytes: the hand-written reader still
    // reads those, so this compares real readings, not only refusals.
    assert!(
        read_by_hand > 500,
        "only {read_by_hand} edited reviews read by hand"
    );
}
