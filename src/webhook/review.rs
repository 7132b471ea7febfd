//! `admission.k8s.io/v1` AdmissionReview in, AdmissionReview out: the object
//! goes through the same injection as `secret-broker inject`, and the
//! difference comes back as a base64 JSONPatch. Anything malformed is
//! refused with the reason; nothing fails open.

use base64::Engine as _;
use serde_json::{Value, json};

/// The response to one review body: an AdmissionReview, and whether the
/// request itself was well-formed (for the HTTP status).
pub fn respond(body: &[u8]) -> (Value, bool) {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return (deny("", &format!("the body is not JSON: {e}")), false),
    };
    let uid = review
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match check(&review) {
        Err(reason) => (deny(&uid, &reason), false),
        Ok(request) => (decide(&uid, request), true),
    }
}

fn check(review: &Value) -> Result<&Value, String> {
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err(
            "expected `apiVersion: admission.k8s.io/v1` and `kind: AdmissionReview`".into(),
        );
    }
    let request = review
        .get("request")
        .filter(|r| r.is_object())
        .ok_or("the review has no `request`")?;
    if !request["uid"].is_string() || request["uid"] == "" {
        return Err("the review's `request.uid` is missing".into());
    }
    Ok(request)
}

fn decide(uid: &str, request: &Value) -> Value {
    let object = &request["object"];
    if object.is_null() {
        // DELETE and CONNECT carry no object: nothing to inject.
        if matches!(request["operation"].as_str(), Some("DELETE" | "CONNECT")) {
            return allow(uid, None);
        }
        return deny(uid, "the review's `request.object` is missing");
    }
    match crate::inject::inject_value(object) {
        Ok(None) => allow(uid, None),
        Ok(Some(new)) => {
            let patch = json_patch::diff(object, &new);
            match serde_json::to_vec(&patch) {
                Ok(bytes) => allow(uid, Some(&bytes)),
                Err(e) => deny(uid, &format!("cannot encode the patch: {e}")),
            }
        }
        Err(e) => deny(uid, &format!("secret-broker injection refused: {e}")),
    }
}

fn review(response: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

fn allow(uid: &str, patch: Option<&[u8]>) -> Value {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(p) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(p));
    }
    review(response)
}

/// A refusal with `reason` (for requests that never reached [`respond`]).
pub fn refuse(reason: &str) -> Value {
    deny("", reason)
}

fn deny(uid: &str, reason: &str) -> Value {
    review(json!({
        "uid": uid,
        "allowed": false,
        "status": { "code": 400, "reason": "BadRequest", "message": reason },
    }))
}
