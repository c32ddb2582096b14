//! The JSON Schema of a definition document, and its errors in our words.
//!
//! The schema (`schemas/nexus-v1.schema.json`) is what editors use; running
//! it here first means a document gets every structural problem at once
//! (serde stops at the first), each with the JSON pointer that `yaml` turns
//! into a line and column.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use serde_json::Value;

use super::yaml::Target;

/// The schema's text, as `nexusd schema` prints it.
pub const SCHEMA_TEXT: &str = include_str!("../../schemas/nexus-v1.schema.json");

/// A structural problem: where (pointer into the document) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    pub pointer: Vec<String>,
    pub target: Target,
    pub message: String,
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        // The schema is compiled into the binary and checked by a unit test,
        // so a failure here is a build defect, not user input.
        let schema: Value = serde_json::from_str(SCHEMA_TEXT).expect("embedded schema is JSON");
        jsonschema::draft202012::new(&schema).expect("embedded schema is valid")
    })
}

/// Every problem the schema finds in `doc`, in document order.
pub fn check(doc: &Value) -> Vec<SchemaProblem> {
    let mut problems = Vec::new();
    for error in validator().iter_errors(doc) {
        let pointer: Vec<String> = error
            .instance_path()
            .segments()
            .map(|s| match s {
                LocationSegment::Property(p) => p.into_owned(),
                LocationSegment::Index(i) => i.to_string(),
            })
            .collect();
        let instance = lookup(doc, &pointer);
        describe(
            error.kind(),
            pointer,
            instance,
            &error.to_string(),
            &mut problems,
        );
    }
    problems
}

fn lookup<'a>(doc: &'a Value, pointer: &[String]) -> Option<&'a Value> {
    pointer.iter().try_fold(doc, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn describe(
    kind: &ValidationErrorKind,
    pointer: Vec<String>,
    instance: Option<&Value>,
    fallback: &str,
    out: &mut Vec<SchemaProblem>,
) {
    let field = pointer.last().map(String::as_str).unwrap_or("");
    let at_value = |message: String| SchemaProblem {
        pointer: pointer.clone(),
        target: Target::Value,
        message,
    };
    match kind {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for key in unexpected {
                let mut at = pointer.clone();
                at.push(key.clone());
                out.push(SchemaProblem {
                    pointer: at,
                    target: Target::Key,
                    message: unknown_field_message(key),
                });
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            out.push(SchemaProblem {
                pointer: pointer.clone(),
                target: Target::Key,
                message: format!("missing field `{name}`"),
            });
        }
        ValidationErrorKind::Type { kind } => {
            out.push(at_value(format!(
                "expected {}, found {}",
                expected_types(kind, field),
                json_type_name(instance)
            )));
        }
        ValidationErrorKind::Enum { options } => {
            out.push(at_value(enum_message(field, instance, options)));
        }
        ValidationErrorKind::Constant { expected_value } => {
            out.push(at_value(format!(
                "`{field}` must be {}, found {}",
                show(expected_value),
                instance.map_or("nothing".to_owned(), show)
            )));
        }
        ValidationErrorKind::Pattern { .. } | ValidationErrorKind::MaxLength { .. } => {
            out.push(at_value(pattern_message(&pointer, instance)));
        }
        ValidationErrorKind::MinItems { .. } => {
            out.push(at_value(format!("`{field}` is empty: give at least one")));
        }
        ValidationErrorKind::Minimum { limit } => {
            out.push(at_value(format!("`{field}` must be at least {limit}")));
        }
        ValidationErrorKind::OneOfNotValid { .. } => {
            out.push(at_value(
                "a step needs one of `run`, `action` or `webhook`".to_owned(),
            ));
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            let kinds: Vec<&str> = ["run", "action", "webhook"]
                .into_iter()
                .filter(|k| instance.and_then(|i| i.get(k)).is_some())
                .collect();
            out.push(at_value(format!(
                "a step has exactly one of `run`, `action` or `webhook`, this one has `{}`",
                kinds.join("` and `")
            )));
        }
        _ => out.push(at_value(fallback.to_owned())),
    }
}

/// Every field name of the format, for "did you mean" suggestions.
const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "name",
    "description",
    "labels",
    "on",
    "concurrency",
    "timeout",
    "retry",
    "secrets",
    "steps",
    "stages",
    "event",
    "pattern",
    "ignore",
    "settle",
    "on_burst",
    "max_attempts",
    "backoff",
    "multiplier",
    "max_backoff",
    "non_retryable_exit_codes",
    "run",
    "shell",
    "action",
    "with",
    "webhook",
    "if",
    "env",
    "continue_on_error",
    "url",
    "method",
    "headers",
    "body",
    "secret",
];

fn unknown_field_message(key: &str) -> String {
    match crate::text::closest(key, FIELDS.iter().copied()) {
        Some(near) => format!("unknown field `{key}`, did you mean `{near}`?"),
        None => format!("unknown field `{key}`"),
    }
}

fn expected_types(kind: &TypeKind, field: &str) -> String {
    let names: Vec<&str> = match kind {
        TypeKind::Single(t) => vec![t.as_str()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.as_str()).collect(),
    };
    if names == ["string", "array"] && matches!(field, "event" | "pattern") {
        return "a string or a list of strings".to_owned();
    }
    let words: Vec<&str> = names
        .into_iter()
        .map(|n| match n {
            "object" => "a mapping",
            "array" => "a list",
            "string" => "a string",
            "integer" => "a whole number",
            "number" => "a number",
            "boolean" => "`true` or `false`",
            _ => "null",
        })
        .collect();
    words.join(" or ")
}

fn json_type_name(v: Option<&Value>) -> &'static str {
    match v {
        None | Some(Value::Null) => "nothing",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "a list",
        Some(Value::Object(_)) => "a mapping",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

fn enum_message(field: &str, instance: Option<&Value>, options: &Value) -> String {
    let what = match field {
        "event" => "event type",
        "kind" => "kind",
        "action" => "action",
        "shell" => "shell",
        "method" => "method",
        "on_burst" => "`on_burst` value",
        _ => "value",
    };
    let choices: Vec<String> = options
        .as_array()
        .map(|a| a.iter().map(show).collect())
        .unwrap_or_default();
    let found = instance.map_or("nothing".to_owned(), show);
    format!(
        "unknown {what} {found}, expected one of {}",
        choices.join(", ")
    )
}

fn pattern_message(pointer: &[String], instance: Option<&Value>) -> String {
    let value = instance.and_then(Value::as_str).unwrap_or_default();
    let field = pointer.last().map(String::as_str).unwrap_or("");
    let parent = pointer
        .len()
        .checked_sub(2)
        .map(|i| pointer[i].as_str())
        .unwrap_or("");
    let in_steps = pointer.len() >= 3 && pointer[pointer.len() - 3] == "steps";
    match field {
        "name" if in_steps => crate::definitions::names::step_name_error(value),
        "name" => crate::definitions::names::name_error(value),
        "timeout" | "backoff" | "max_backoff" | "settle" => {
            crate::definitions::duration::duration_error(value)
        }
        _ if parent == "secrets" => format!(
            "invalid secret name `{value}`: use letters, digits and `_`, not starting with a digit"
        ),
        _ => format!("invalid value `{value}` for `{field}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_schema_compiles() {
        let _ = validator();
    }

    #[test]
    fn unknown_field_points_at_the_key_with_a_suggestion() {
        let doc = serde_json::json!({
            "apiVersion": "nexus/v1", "kind": "Workflow", "metadata": {"name": "a"},
            "spec": {"on": [{"event": "file.created", "pattern": "/x"}], "stpes": []}
        });
        let problems = check(&doc);
        assert!(
            problems.contains(&SchemaProblem {
                pointer: vec!["spec".into(), "stpes".into()],
                target: Target::Key,
                message: "unknown field `stpes`, did you mean `steps`?".into(),
            }),
            "{problems:?}"
        );
    }
}
