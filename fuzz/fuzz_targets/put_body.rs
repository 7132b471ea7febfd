//! Fuzzes the `PUT` body parser: no panics; an accepted body respects the
//! value limit and the label limits, and re-encoding it gives back the
//! same value and labels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_broker::api::body::{check_labels, parse_put, put_json};

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    match parse_put(data, LIMIT) {
        Ok(body) => {
            assert!(body.value.len() <= LIMIT);
            assert_eq!(check_labels(&body.labels), Ok(()), "labels past a limit accepted");
            let again = put_json(&body.value, &body.labels);
            let back = parse_put(&again, LIMIT).unwrap_or_else(|e| panic!("re-encoded body refused: {e}"));
            assert!(back.value == body.value, "value changed in a round trip");
            assert_eq!(back.labels, body.labels);
        }
        Err(e) => {
            let code = e.code();
            assert!(code == "invalid_body" || code == "too_large", "unexpected code {code}");
        }
    }
});
