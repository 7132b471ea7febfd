//! `admission.k8s.io/v1` AdmissionReview in, AdmissionReview out: the object
//! goes through the same injection as `secret-broker inject`, and the
//! difference comes back as a base64 JSONPatch. Anything malformed is
//! refused with the reason; nothing fails open.
//!
//! The body is read in two typed passes over the same bytes. The first
//! checks the envelope (`apiVersion`, `kind`, `request.uid`,
//! `request.operation`) and counts the JSON values in `request.object`
//! without keeping any of them; only a review that passes it has its object
//! built into a JSON tree, by the second. Everything else in the review
//! (`oldObject`, `userInfo`, `options`...) is skipped, never built.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

/// Most JSON values (mappings, lists, keys and scalars, each counted once)
/// the reviewed object may hold before it is built into a tree.
///
/// SECURITY: a tree costs far more than its text (a `0,` of two bytes
/// becomes a value of tens of bytes), so the body cap alone does not bound
/// memory. A real pod or workload holds hundreds to a few thousand values
/// (a container with 100 environment variables is about 300); this leaves
/// room for objects far larger than anyone writes, while a tree at the
/// limit stays a few tens of MiB (measured in `tests/webhook.rs`).
pub const MAX_OBJECT_NODES: u64 = 100_000;

/// The longest `request.uid` echoed back (Kubernetes sends a 36-byte UUID).
const MAX_UID_BYTES: usize = 128;

/// The message of the node limit's error (matched to tell it from others).
const TOO_MANY_NODES: &str = "the object holds too many JSON values";

/// The first pass: the envelope, typed; the object counted, not kept.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<RequestHead>,
}

#[derive(Deserialize)]
struct RequestHead {
    uid: Option<String>,
    operation: Option<String>,
    object: Option<Counted>,
    #[serde(rename = "oldObject")]
    _old_object: Option<IgnoredAny>,
}

/// The second pass: the object alone, as a tree.
#[derive(Deserialize)]
struct WithObject {
    request: ObjectOnly,
}

#[derive(Deserialize)]
struct ObjectOnly {
    object: Value,
}

/// How many JSON values a value holds (itself included), counted while
/// skipping it; more than [`MAX_OBJECT_NODES`] is an error at once.
/// `null` counts as absent.
struct Counted(u64);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl CountVisitor {
    fn add<E: de::Error>(n: u64, more: u64) -> Result<u64, E> {
        let n = n.saturating_add(more);
        if n > MAX_OBJECT_NODES {
            return Err(E::custom(TOO_MANY_NODES));
        }
        Ok(n)
    }
}

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Counted;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Counted, E> {
        Ok(Counted(1))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Counted, E> {
        Ok(Counted(1))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Counted, E> {
        Ok(Counted(1))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Counted, E> {
        Ok(Counted(1))
    }
    fn visit_str<E>(self, _: &str) -> Result<Counted, E> {
        Ok(Counted(1))
    }
    fn visit_unit<E>(self) -> Result<Counted, E> {
        Ok(Counted(0))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted, A::Error> {
        let mut n = 1;
        while let Some(Counted(c)) = seq.next_element()? {
            n = Self::add(n, c.max(1))?;
        }
        Ok(Counted(n))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counted, A::Error> {
        let mut n = 1;
        while let Some((IgnoredAny, Counted(c))) = map.next_entry()? {
            n = Self::add(n, 1 + c.max(1))?;
        }
        Ok(Counted(n))
    }
}

/// Why a body is not a review, in our words: serde's messages can quote the
/// input (a value in the pod spec), so only its category and position are
/// kept.
fn parse_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    if e.to_string().starts_with(TOO_MANY_NODES) {
        return format!(
            "`request.object` holds more than {MAX_OBJECT_NODES} JSON values; no pod or workload needs that many"
        );
    }
    let what = match e.classify() {
        Category::Syntax | Category::Io => "the body is not JSON",
        Category::Eof => "the body is not JSON (it ends early)",
        Category::Data => "the body is not an AdmissionReview (a field has the wrong type)",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// The response to one review body: an AdmissionReview, and whether the
/// request itself was well-formed (for the HTTP status).
pub fn respond(body: &[u8]) -> (Value, bool) {
    respond_with(body, &crate::inject::InjectOptions::default())
}

/// As [`respond`], injecting with `opts` (the webhook's `--image`).
pub fn respond_with(body: &[u8], opts: &crate::inject::InjectOptions) -> (Value, bool) {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return (deny(&uid_only(body), &parse_error(&e)), false),
    };
    let uid = envelope
        .request
        .as_ref()
        .and_then(|r| r.uid.as_deref())
        .filter(|u| usable_uid(u))
        .unwrap_or_default()
        .to_owned();
    let request = match check(&envelope) {
        Err(reason) => return (deny(&uid, &reason), false),
        Ok(request) => request,
    };
    if request.object.is_none() {
        // DELETE and CONNECT carry no object: nothing to inject.
        if matches!(request.operation.as_deref(), Some("DELETE" | "CONNECT")) {
            return (allow(&uid, None), true);
        }
        return (deny(&uid, "the review's `request.object` is missing"), true);
    }
    let object = match serde_json::from_slice::<WithObject>(body) {
        Ok(w) => w.request.object,
        Err(e) => return (deny(&uid, &parse_error(&e)), false),
    };
    (decide(&uid, &object, opts), true)
}

/// The review's uid alone (everything else skipped), for a refusal the
/// API server can match to its call: empty when the body has none.
fn uid_only(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct UidOnly {
        request: Option<UidRequest>,
    }
    #[derive(Deserialize)]
    struct UidRequest {
        uid: Option<String>,
    }
    serde_json::from_slice::<UidOnly>(body)
        .ok()
        .and_then(|r| r.request?.uid)
        .filter(|u| usable_uid(u))
        .unwrap_or_default()
}

/// A uid we echo back and log: short, printable ASCII.
fn usable_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= MAX_UID_BYTES && uid.bytes().all(|b| b.is_ascii_graphic())
}

fn check(review: &Envelope) -> Result<&RequestHead, String> {
    if review.api_version.as_deref() != Some("admission.k8s.io/v1")
        || review.kind.as_deref() != Some("AdmissionReview")
    {
        return Err(
            "expected `apiVersion: admission.k8s.io/v1` and `kind: AdmissionReview`".into(),
        );
    }
    let request = review
        .request
        .as_ref()
        .ok_or("the review has no `request`")?;
    match request.uid.as_deref() {
        None | Some("") => Err("the review's `request.uid` is missing".into()),
        Some(u) if !usable_uid(u) => Err(format!(
            "the review's `request.uid` is not 1-{MAX_UID_BYTES} printable ASCII characters"
        )),
        Some(_) => Ok(request),
    }
}

fn decide(uid: &str, object: &Value, opts: &crate::inject::InjectOptions) -> Value {
    match crate::inject::inject_value_with(object, opts) {
        Ok(injected) => {
            let mut answer = match injected.value {
                None => allow(uid, None),
                Some(new) => {
                    let patch = json_patch::diff(object, &new);
                    match serde_json::to_vec(&patch) {
                        Ok(bytes) => allow(uid, Some(&bytes)),
                        Err(e) => return deny(uid, &format!("cannot encode the patch: {e}")),
                    }
                }
            };
            // What `inject` prints on stderr, `kubectl` shows as
            // `Warning: ...` to whoever applied the object.
            if !injected.warnings.is_empty() {
                answer["response"]["warnings"] = json!(
                    injected
                        .warnings
                        .iter()
                        .map(|w| format!("secret-broker: {w}"))
                        .collect::<Vec<_>>()
                );
            }
            answer
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(v: &Value) -> &str {
        v["response"]["status"]["message"].as_str().unwrap_or("")
    }

    fn review_of(object: &str) -> String {
        format!(
            r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"u-1","operation":"CREATE","object":{object}}}}}"#
        )
    }

    #[test]
    fn a_top_level_array_is_refused_at_its_first_element() {
        let mut body = b"[0".to_vec();
        body.extend(b",0".repeat(100_000));
        body.push(b']');
        let (v, ok) = respond(&body);
        assert!(!ok);
        assert_eq!(v["response"]["allowed"], false);
        // The first element is where a string (`apiVersion`) was expected.
        assert!(reason(&v).contains("line 1 column 2"), "{v}");
    }

    #[test]
    fn the_envelope_is_checked_before_the_object_is_built() {
        // Wrong apiVersion, and an object over the node limit: the
        // envelope's reason wins (the object was never built).
        let body = review_of("{}").replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
        let (v, ok) = respond(body.as_bytes());
        assert!(!ok && reason(&v).contains("expected `apiVersion"), "{v}");

        let big = format!(r#"{{"kind":"Pod","x":[{}0]}}"#, "0,".repeat(200_000));
        let (v, ok) = respond(review_of(&big).as_bytes());
        assert!(!ok, "{v}");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["uid"], "u-1");
        assert!(reason(&v).contains("more than 100000 JSON values"), "{v}");
    }

    #[test]
    fn objects_at_the_node_limit_are_counted_exactly() {
        // A mapping with one key whose value is a list of n scalars holds
        // 1 (mapping) + 1 (key) + 1 (list) + n values.
        let fits = MAX_OBJECT_NODES - 3;
        for (n, ok) in [(fits, true), (fits + 1, false)] {
            let list = vec!["1"; usize::try_from(n).unwrap()].join(",");
            let body = review_of(&format!(r#"{{"x":[{list}]}}"#));
            let (v, _) = respond(body.as_bytes());
            let over = reason(&v).contains("JSON values");
            assert_eq!(!over, ok, "n = {n}: {v}");
        }
    }

    #[test]
    fn serde_messages_never_quote_the_input() {
        for body in [
            r#"{"apiVersion": "CANARY-1", "kind": 7}"#,
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":{"a":"CANARY-1"},"operation":9}}"#,
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":"CANARY-1"}"#,
            "{\"CANARY-1\" 1}",
        ] {
            let (v, ok) = respond(body.as_bytes());
            assert!(!ok);
            assert!(!v.to_string().contains("CANARY"), "{v}");
        }
    }

    #[test]
    fn odd_uids_are_not_echoed() {
        let body = review_of("{}").replace("u-1", "u\\n1");
        let (v, ok) = respond(body.as_bytes());
        assert!(!ok);
        assert_eq!(v["response"]["uid"], "");
        assert!(reason(&v).contains("`request.uid` is not"), "{v}");
    }

    #[test]
    fn delete_without_an_object_is_allowed() {
        let body = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"d","operation":"DELETE","object":null,"oldObject":{"kind":"Pod"}}}"#;
        let (v, ok) = respond(body.as_bytes());
        assert!(ok);
        assert_eq!(v["response"]["allowed"], true);
    }

    fn job_review(annotations: &str, run_as: &str) -> String {
        review_of(&format!(
            r#"{{"apiVersion":"batch/v1","kind":"Job","metadata":{{"name":"t"}},"spec":{{"template":{{"metadata":{{"annotations":{{"secret-broker.io/inject":"true","secret-broker.io/role":"task","secret-broker.io/scope":"acme/t","secret-broker.io/store-secret":"s"{annotations}}}}},"spec":{{"containers":[{{"name":"m","image":"i","command":["/app"]{run_as}}}]}}}}}}}}"#
        ))
    }

    #[test]
    fn warnings_reach_the_admission_review() {
        let (v, ok) = respond(job_review("", "").as_bytes());
        assert!(ok && v["response"]["allowed"] == true, "{v}");
        let warnings: Vec<&str> = v["response"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert_eq!(warnings.len(), 2, "{v}");
        assert!(
            warnings[0].contains("the task's store is `embedded`"),
            "{v}"
        );
        assert!(
            warnings[1].contains("injection sets runAsUser 10001"),
            "{v}"
        );
        // The API server truncates longer ones.
        assert!(warnings.iter().all(|w| w.len() <= 256), "{warnings:?}");

        let quiet = job_review(
            r#","secret-broker.io/store":"external","secret-broker.io/env":"A=acme/t/a""#,
            r#","securityContext":{"runAsUser":2000,"runAsGroup":2000}"#,
        );
        let (v, ok) = respond(quiet.as_bytes());
        assert!(ok && v["response"]["allowed"] == true, "{v}");
        assert!(v["response"].get("warnings").is_none(), "{v}");
    }

    #[test]
    fn a_pod_that_could_never_start_is_refused() {
        // `run` wiring on the task's own embedded store: every read fails.
        let (v, ok) = respond(job_review(r#","secret-broker.io/env":"A=acme/t/a""#, "").as_bytes());
        assert!(ok && v["response"]["allowed"] == false, "{v}");
        assert!(reason(&v).contains("the task's store is `embedded`"), "{v}");
    }

    #[test]
    fn the_default_image_is_the_webhooks() {
        let opts = crate::inject::InjectOptions {
            image: "mirror.local/sb:1".into(),
        };
        let (v, ok) = respond_with(job_review("", "").as_bytes(), &opts);
        assert!(ok, "{v}");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch = String::from_utf8(patch).unwrap();
        assert!(patch.contains("mirror.local/sb:1"), "{patch}");
        assert!(!patch.contains("ghcr.io"), "{patch}");
    }
}
