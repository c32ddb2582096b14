//! Handlebars templates: compiled once when a definition loads, checked
//! against the names that will exist when they render, rendered strictly.
//!
//! Output is never HTML-escaped: values go into files as they are, into
//! webhook bodies as JSON strings, into URLs percent-encoded, and into shell
//! commands only through environment variables (see [`shell`]).

pub mod helpers;
pub mod pieces;
pub mod scope;
pub mod shell;

use std::sync::{Arc, OnceLock};

use handlebars::{Context, Handlebars, RenderContext, Renderable, StringOutput};
use serde_json::Value;

pub use scope::Scope;

/// A compiled template and its source.
#[derive(Clone)]
pub struct Template {
    source: String,
    compiled: Arc<handlebars::Template>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why a template could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("invalid template: {0}")]
    Syntax(String),
    #[error("{0}")]
    Scope(String),
    #[error("rendering failed: {0}")]
    Render(String),
}

impl Template {
    /// Compiles `source`, then checks every name it uses against `scope`.
    pub fn compile(source: &str, scope: &Scope) -> Result<Template, Vec<TemplateError>> {
        let compiled = parse_cached(source)?;
        let problems = scope.check(&compiled);
        if !problems.is_empty() {
            return Err(problems.into_iter().map(TemplateError::Scope).collect());
        }
        Ok(Template {
            source: source.to_owned(),
            compiled,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the template has no placeholder at all.
    pub fn is_literal(&self) -> bool {
        self.compiled
            .elements
            .iter()
            .all(|e| matches!(e, handlebars::template::TemplateElement::RawString(_)))
    }

    /// Renders with `data` as the context; an unknown name is an error.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let hb = engine();
        let ctx = Context::wraps(data).map_err(|e| TemplateError::Render(e.to_string()))?;
        let mut rc = RenderContext::new(None);
        let mut out = StringOutput::new();
        self.compiled
            .render(hb, &ctx, &mut rc, &mut out)
            .map_err(|e| TemplateError::Render(render_message(&e)))?;
        out.into_string()
            .map_err(|e| TemplateError::Render(e.to_string()))
    }
}

/// Parses a template, reusing the parse of an identical source: the same few
/// templates (`{{event.path}}`, ...) recur across a repository, and parsing
/// is the costly part of loading. The cache is per thread and bounded.
fn parse_cached(source: &str) -> Result<Arc<handlebars::Template>, Vec<TemplateError>> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    const MAX_ENTRIES: usize = 1024;
    thread_local! {
        static CACHE: RefCell<HashMap<String, Arc<handlebars::Template>>> = RefCell::new(HashMap::new());
    }
    if let Some(hit) = CACHE.with(|c| c.borrow().get(source).cloned()) {
        return Ok(hit);
    }
    let parsed = handlebars::Template::compile(source)
        .map(Arc::new)
        .map_err(|e| vec![TemplateError::Syntax(syntax_message(&e))])?;
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(source.to_owned(), Arc::clone(&parsed));
    });
    Ok(parsed)
}

/// The one registry: strict, unescaped, with our helpers.
fn engine() -> &'static Handlebars<'static> {
    static ENGINE: OnceLock<Handlebars<'static>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        helpers::register(&mut hb);
        hb
    })
}

fn syntax_message(e: &handlebars::TemplateError) -> String {
    let reason = e.reason().to_string();
    match e.pos() {
        Some((l, c)) => format!("{reason} (template line {l}, column {c})"),
        _ => reason,
    }
}

fn render_message(e: &handlebars::RenderError) -> String {
    let reason = e.reason().to_string();
    reason.trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(source: &str) -> Template {
        Template::compile(source, &Scope::for_tests()).unwrap()
    }

    #[test]
    fn renders_values_unescaped() {
        let t = compile("{{event.path}}");
        let out = t
            .render(&json!({"event": {"path": "/a/<b>&'\".txt"}}))
            .unwrap();
        assert_eq!(out, "/a/<b>&'\".txt");
    }

    #[test]
    fn unknown_names_fail_at_render_time_too() {
        let t = compile("{{event.size}}");
        assert!(t.render(&json!({"event": {}})).is_err());
    }

    #[test]
    fn helpers_work_as_documented() {
        let data = json!({"event": {"path": "/in/My File.tar.gz", "name": "My File.tar.gz"},
                          "steps": {"words": {"stdout": "120", "output": {}}}});
        let cases = [
            ("{{basename event.path}}", "My File.tar.gz"),
            ("{{dirname event.path}}", "/in"),
            ("{{stem event.name}}", "My File.tar"),
            ("{{ext event.name}}", "gz"),
            ("{{upper (ext event.name)}}", "GZ"),
            ("{{lower event.name}}", "my file.tar.gz"),
            ("{{replace event.name \" \" \"_\"}}", "My_File.tar.gz"),
            ("{{json event.name}}", "\"My File.tar.gz\""),
            ("{{gt steps.words.stdout 100}}", "true"),
            ("{{lt steps.words.stdout 100}}", "false"),
            ("{{default steps.words.output.missing \"none\"}}", "none"),
            (
                "{{#if (gt steps.words.stdout 100)}}long{{else}}short{{/if}}",
                "long",
            ),
        ];
        for (source, expected) in cases {
            assert_eq!(compile(source).render(&data).unwrap(), expected, "{source}");
        }
    }
}
