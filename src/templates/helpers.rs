//! The helpers templates may call beyond handlebars' own `if`, `unless`,
//! `each`, `with`, `and`, `or` and `not`.
//!
//! Every helper returns a value; none writes to the output itself, so every
//! result goes through the one output path (and, in `run`, into an
//! environment variable, never into the script).

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson, handlebars_helper,
};
use serde_json::Value;

/// Helper names a template may call, for the compile-time check.
pub const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or",
    "not", "len", "json", "basename", "dirname", "stem", "ext", "replace", "upper", "lower",
    "default",
];

/// Registers the helpers on `hb`, replacing handlebars' comparisons with ones
/// that compare numeric strings as numbers (a step's stdout is a string).
pub fn register(hb: &mut Handlebars<'static>) {
    hb.register_helper("json", Box::new(json));
    hb.register_helper("basename", Box::new(basename));
    hb.register_helper("dirname", Box::new(dirname));
    hb.register_helper("stem", Box::new(stem));
    hb.register_helper("ext", Box::new(ext));
    hb.register_helper("replace", Box::new(replace));
    hb.register_helper("upper", Box::new(upper));
    hb.register_helper("lower", Box::new(lower));
    hb.register_helper("default", Box::new(DefaultHelper));
    hb.register_helper("eq", Box::new(eq));
    hb.register_helper("ne", Box::new(ne));
    hb.register_helper("gt", Box::new(gt));
    hb.register_helper("gte", Box::new(gte));
    hb.register_helper("lt", Box::new(lt));
    hb.register_helper("lte", Box::new(lte));
    hb.unregister_helper("log");
    hb.unregister_helper("raw");
}

handlebars_helper!(json: |v: Value| serde_json::to_string(&v).unwrap_or_default());
handlebars_helper!(basename: |p: str| split_name(p).1.to_owned());
handlebars_helper!(dirname: |p: str| split_name(p).0.to_owned());
handlebars_helper!(stem: |p: str| split_ext(split_name(p).1).0.to_owned());
handlebars_helper!(ext: |p: str| split_ext(split_name(p).1).1.to_owned());
handlebars_helper!(replace: |s: str, from: str, to: str| if from.is_empty() { s.to_owned() } else { s.replace(from, to) });
handlebars_helper!(upper: |s: str| s.to_uppercase());
handlebars_helper!(lower: |s: str| s.to_lowercase());
handlebars_helper!(eq: |a: Value, b: Value| compare(&a, &b) == Some(std::cmp::Ordering::Equal));
handlebars_helper!(ne: |a: Value, b: Value| compare(&a, &b) != Some(std::cmp::Ordering::Equal));
handlebars_helper!(gt: |a: Value, b: Value| compare(&a, &b) == Some(std::cmp::Ordering::Greater));
handlebars_helper!(gte: |a: Value, b: Value| matches!(compare(&a, &b), Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)));
handlebars_helper!(lt: |a: Value, b: Value| compare(&a, &b) == Some(std::cmp::Ordering::Less));
handlebars_helper!(lte: |a: Value, b: Value| matches!(compare(&a, &b), Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)));

/// `(dir, name)` of a `/`-separated path: `/a/b.txt` is `("/a", "b.txt")`.
pub fn split_name(path: &str) -> (&str, &str) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => ("/", &trimmed[1..]),
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (".", trimmed),
    }
}

/// `(stem, ext)` of a file name: `a.tar.gz` is `("a.tar", "gz")`; a leading
/// dot does not start an extension (`.env` has none).
pub fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Numbers (and numeric strings) compare as numbers, anything else as JSON.
fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (as_number(a), as_number(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y),
        _ => match (a, b) {
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            _ => (a == b).then_some(std::cmp::Ordering::Equal),
        },
    }
}

/// `{{default value "fallback"}}`: the fallback when the value is missing,
/// null or empty. It is the one helper that may name a missing variable, so
/// it reads its first parameter leniently even in strict mode.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let fallback = h
            .param(1)
            .ok_or_else(|| RenderErrorReason::ParamNotFoundForIndex("default", 1))?
            .value()
            .clone();
        let value = h.param(0).map(|p| p.value().clone());
        let chosen = match value {
            None | Some(Value::Null) => fallback,
            Some(Value::String(s)) if s.is_empty() => fallback,
            Some(v) => v,
        };
        Ok(ScopedJson::Derived(chosen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths_like_the_event_fields() {
        assert_eq!(
            split_name("/workspace/uploads/a.txt"),
            ("/workspace/uploads", "a.txt")
        );
        assert_eq!(split_name("/a.txt"), ("/", "a.txt"));
        assert_eq!(split_ext("a.tar.gz"), ("a.tar", "gz"));
        assert_eq!(split_ext(".env"), (".env", ""));
        assert_eq!(split_ext("README"), ("README", ""));
    }

    #[test]
    fn compares_numeric_strings_as_numbers() {
        use serde_json::json;
        assert_eq!(
            compare(&json!("120"), &json!(100)),
            Some(std::cmp::Ordering::Greater)
        );
        assert_eq!(
            compare(&json!(" 9\n"), &json!(10)),
            Some(std::cmp::Ordering::Less)
        );
        assert_eq!(
            compare(&json!("b"), &json!("a")),
            Some(std::cmp::Ordering::Greater)
        );
    }
}
