//! Whether a policy set can read the request id, decided from the parsed
//! policies (Cedar's JSON policy form), never from their text.
//!
//! The decision cache leaves the request id out of its key only when no
//! policy can read it; a policy that can is decided afresh on every
//! request. The text of a policy is no guide: `context["request\u{5f}id"]`
//! reads `request_id` without spelling it, and a comment can spell it
//! without reading it. So the answer comes from each policy's expression
//! tree, and it is conservative: `context` may appear only as the direct
//! operand of an attribute access (`context.a`, `context["a"]`) or of a
//! `has` test whose first attribute is not `request_id`; `context` used in
//! any other way (compared, put in a record or set, passed to a function,
//! `is`, `like`, …), a node this walk does not know, or a policy that cannot
//! be turned into JSON counts as reading it.

use cedar_policy::PolicySet;
use serde_json::Value;

/// The context attribute whose value differs on every request.
const REQUEST_ID: &str = "request_id";

/// Whether any policy of `set` could read `context.request_id`.
pub(crate) fn reads_request_id(set: &PolicySet) -> bool {
    set.policies().any(|p| match p.to_json() {
        // Only the conditions can name `context`: the scope constraints
        // hold principal, action and resource alone, and annotations are
        // not evaluated.
        Ok(json) => json.get("conditions").is_none_or(expr_reads),
        // SECURITY: a policy we cannot inspect is assumed to read it.
        Err(_) => true,
    })
}

/// Whether the JSON expression (or any JSON holding expressions) `v` can
/// read `context.request_id`.
fn expr_reads(v: &Value) -> bool {
    match v {
        Value::Object(node) => {
            if node.len() == 1 {
                if let Some(Value::String(var)) = node.get("Var") {
                    // `context` as a whole value: anything could read it.
                    return var == "context";
                }
                for op in [".", "has"] {
                    if let Some(access) = node.get(op).and_then(context_access) {
                        return access.is_none_or(|attr| attr == REQUEST_ID);
                    }
                }
            }
            node.values().any(expr_reads)
        }
        Value::Array(items) => items.iter().any(expr_reads),
        _ => false,
    }
}

/// For the operands of `.` or `has` (`{"left": …, "attr": …}`) whose
/// left is `context` itself: `Some(Some(attr))`, the (first) attribute
/// named, or `Some(None)` when the shape is not one this walk knows.
/// `None` when the left operand is not `context` (the caller then walks
/// the operands like any other node).
fn context_access(operands: &Value) -> Option<Option<&str>> {
    let operands = operands.as_object()?;
    let left = operands.get("left")?.as_object()?;
    if !(left.len() == 1 && left.get("Var").is_some_and(|v| v == "context")) {
        return None;
    }
    if operands.len() != 2 {
        return Some(None);
    }
    Some(match operands.get("attr") {
        Some(Value::String(attr)) => Some(attr.as_str()),
        // The extended `has` (`context has a.b`) lists a path; only its
        // first step is an attribute of `context`.
        Some(Value::Array(path)) => path.first().and_then(Value::as_str),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn reads(text: &str) -> bool {
        reads_request_id(&PolicySet::from_str(text).unwrap())
    }

    #[test]
    fn spelled_or_escaped_reads_count() {
        for body in [
            r#"context.request_id == "x""#,
            r#"context["request_id"] == "x""#,
            r#"context["request\u{5f}id"] == "x""#,
            r#"context["\u{72}equest_id"] like "x*""#,
            "context has request_id",
            r#"context has request_id.x"#,
            r#"["x"].contains(context.request_id)"#,
            r#"{ c: context }.c.request_id == "x""#,
            r#"{ c: context }.c.transport == "unix""#,
            r#"{ "Var": context.request_id }["Var"] == "x""#,
            r#"{ ".": { left: context, attr: "transport" } }["."].left.request_id == "x""#,
            "context == context",
            r#"context != { transport: "unix" }"#,
            r#"[context].contains(context)"#,
            r#"(if true then context else context).request_id == "x""#,
            r#"context.peer_uid == 1 || context.request_id == "x""#,
        ] {
            let policy = format!("permit(principal, action, resource) when {{ {body} }};");
            assert!(reads(&policy), "{policy}");
        }
        // In an `unless` too, and in any policy of the set.
        assert!(reads(
            "permit(principal, action, resource);\nforbid(principal, action, resource) unless { context.request_id like \"a*\" };"
        ));
    }

    #[test]
    fn other_attributes_and_mentions_in_text_do_not() {
        for text in [
            "permit(principal, action, resource);",
            "// context.request_id == \"x\"\npermit(principal, action, resource);",
            r#"@note("request_id") permit(principal, action, resource) when { context.transport == "request_id" };"#,
            r#"permit(principal, action, resource) when { context has peer_uid && context.peer_uid == 7 };"#,
            r#"permit(principal, action, resource) when { context has peer_uid.x };"#,
            r#"permit(principal, action, resource) when { context["transport"] like "request_id*" };"#,
            r#"permit(principal, action, resource) when { resource.request_id == "x" };"#,
        ] {
            assert!(!reads(text), "{text}");
        }
    }
}
