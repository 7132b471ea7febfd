//! Fuzzes the admission webhook's review handling: any body gives an
//! AdmissionReview answer, never a panic, and never fails open: a body that
//! is not a well-formed review is refused (`allowed: false`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_broker::webhook::review::respond;

fuzz_target!(|data: &[u8]| {
    let (answer, well_formed) = respond(data);
    let allowed = answer.pointer("/response/allowed").and_then(|v| v.as_bool());
    assert!(allowed.is_some(), "every answer says allowed or not: {answer}");
    if !well_formed {
        assert_eq!(allowed, Some(false), "a malformed review must be refused");
    }
});
