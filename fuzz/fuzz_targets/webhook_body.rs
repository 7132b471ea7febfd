//! Fuzzes the webhook's typed review parsing, with the input as the whole
//! body (first byte even) or as the `request.object` of a well-formed
//! envelope (first byte odd, so the object path is reached): never a panic,
//! never fails open, a malformed body's reason is one of ours (serde's can
//! quote the input) and the uid echoed back is short and printable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_broker::webhook::review::respond;

/// How every refusal of a malformed body begins.
const MALFORMED: &[&str] = &[
    "the body is not JSON",
    "the body is not an AdmissionReview",
    "`request.object` holds more than",
    "expected `apiVersion: admission.k8s.io/v1`",
    "the review has no `request`",
    "the review's `request.uid`",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut b = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"fuzz","operation":"CREATE","object":"#.to_vec();
        b.extend_from_slice(rest);
        b.extend_from_slice(b"}}");
        b
    };
    let (answer, well_formed) = respond(&body);
    let allowed = answer.pointer("/response/allowed").and_then(|v| v.as_bool());
    assert!(allowed.is_some(), "every answer says allowed or not: {answer}");
    let uid = answer
        .pointer("/response/uid")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no uid: {answer}"));
    assert!(uid.len() <= 128 && uid.bytes().all(|b| b.is_ascii_graphic()), "uid {uid:?}");
    if !well_formed {
        assert_eq!(allowed, Some(false), "a malformed review must be refused");
        let reason = answer
            .pointer("/response/status/message")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        assert!(
            MALFORMED.iter().any(|m| reason.starts_with(m)),
            "not one of our reasons: {reason}"
        );
    }
});
