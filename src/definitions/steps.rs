//! Compiling steps: the three kinds, their templates, and the built-in
//! actions' arguments.

use std::time::Duration;

use serde_json::Value;

use super::doc::{Doc, Ptr, at};
use super::model::{Action, BodyTemplate, RunStep, Shell, Step, StepKind, UrlPiece, WebhookStep};
use super::names;
use super::raw::{RawShell, RawStep, RawWebhook};
use super::retry::compile_retry;
use super::yaml::Target;
use crate::templates::pieces::{self, Piece};
use crate::templates::{Scope, Template, shell};

/// Which list of a workflow's steps is compiled: its templates see
/// different names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepList {
    Steps,
    /// `on_failure`: also `run.error`, `run.failed_step`, `run.attempts`.
    OnFailure,
}

pub fn compile_steps(
    doc: &mut Doc<'_>,
    steps: Vec<RawStep>,
    secrets: &[String],
    ptr: &[String],
    list: StepList,
) -> Vec<Step> {
    let all_steps: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
    let mut out = Vec::new();
    for (i, raw) in steps.into_iter().enumerate() {
        let step_ptr = at(ptr, &[&i]);
        let name_ptr = at(&step_ptr, &[&"name"]);
        if let Some(message) = names::check_step_name(&raw.name) {
            doc.error(&name_ptr, Target::Value, message);
        }
        if let Some(first) = all_steps[..i].iter().position(|n| *n == raw.name) {
            let first = doc
                .root
                .position(&at(ptr, &[&first, &"name"]), Target::Value);
            doc.error(
                &name_ptr,
                Target::Value,
                format!("duplicate step name `{}` (first at {first})", raw.name),
            );
        }
        let scope = Scope {
            earlier_steps: all_steps[..i].to_vec(),
            all_steps: all_steps.clone(),
            secrets: secrets.to_vec(),
            on_failure: list == StepList::OnFailure,
        };
        let mut cx = StepCx {
            doc,
            scope: &scope,
            ptr: &step_ptr,
            secrets,
        };
        if let Some(step) = cx.compile(raw) {
            out.push(step);
        }
    }
    out
}

struct StepCx<'d, 'a, 's> {
    doc: &'d mut Doc<'a>,
    scope: &'s Scope,
    ptr: &'s [String],
    secrets: &'s [String],
}

impl StepCx<'_, '_, '_> {
    fn field(&self, more: &[&dyn ToString]) -> Ptr {
        at(self.ptr, more)
    }

    fn template(&mut self, source: &str, ptr: Ptr) -> Option<Template> {
        match Template::compile(source, self.scope) {
            Ok(t) => Some(t),
            Err(errors) => {
                for e in errors {
                    self.doc.error(&ptr, Target::Value, e.to_string());
                }
                None
            }
        }
    }

    fn compile(&mut self, raw: RawStep) -> Option<Step> {
        let RawStep {
            name,
            run,
            shell,
            action,
            with,
            webhook,
            condition,
            timeout,
            env,
            continue_on_error,
            retry,
        } = raw;
        let given: Vec<&str> = [
            ("run", run.is_some()),
            ("action", action.is_some()),
            ("webhook", webhook.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, present)| present.then_some(k))
        .collect();
        if given.len() != 1 {
            let message = if given.is_empty() {
                "a step needs one of `run`, `action` or `webhook`".to_owned()
            } else {
                format!(
                    "a step has exactly one of `run`, `action` or `webhook`, this one has `{}`",
                    given.join("` and `")
                )
            };
            self.doc.error(self.ptr, Target::Value, message);
            return None;
        }
        if shell.is_some() && run.is_none() {
            self.doc.error(
                &self.field(&[&"shell"]),
                Target::Key,
                "`shell` applies only to `run` steps",
            );
        }
        if with.is_some() && action.is_none() {
            self.doc.error(
                &self.field(&[&"with"]),
                Target::Key,
                "`with` applies only to `action` steps",
            );
        }
        if !env.is_empty() && run.is_none() {
            self.doc.error(
                &self.field(&[&"env"]),
                Target::Key,
                "`env` applies only to `run` steps",
            );
        }
        let kind = if let Some(run) = run {
            self.run(&run, shell)
        } else if let Some(action) = action {
            self.action(&action, with)
        } else {
            webhook.and_then(|w| self.webhook(w))
        };
        let condition = condition.and_then(|c| self.template(&c, self.field(&[&"if"])));
        let timeout = timeout.map(|t| {
            self.doc
                .duration(Some(&t), self.field(&[&"timeout"]), Duration::ZERO)
        });
        let env = self.env(env);
        let retry = retry.map(|r| compile_retry(self.doc, r, &self.field(&[&"retry"])));
        Some(Step {
            name,
            kind: kind?,
            condition,
            timeout,
            env,
            continue_on_error,
            retry,
        })
    }

    fn env(&mut self, env: std::collections::BTreeMap<String, String>) -> Vec<(String, Template)> {
        let mut out = Vec::new();
        for (key, value) in env {
            let ptr = self.field(&[&"env", &key]);
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.doc.error(
                    &ptr,
                    Target::Key,
                    format!("invalid environment variable name `{key}`"),
                );
            } else if key.starts_with("NEXUS_") {
                self.doc.error(
                    &ptr,
                    Target::Key,
                    format!("`{key}`: names starting with `NEXUS_` are reserved for nexusd"),
                );
            }
            if let Some(t) = self.template(&value, ptr) {
                out.push((key, t));
            }
        }
        out
    }

    fn run(&mut self, source: &str, shell_kind: Option<RawShell>) -> Option<StepKind> {
        let ptr = self.field(&[&"run"]);
        let rewritten = match shell::rewrite(source) {
            Ok(r) => r,
            Err(message) => {
                self.doc.error(&ptr, Target::Value, message);
                return None;
            }
        };
        let mut vars = Vec::new();
        for (var, expr) in rewritten.vars {
            vars.push((var, self.template(&format!("{{{{{expr}}}}}"), ptr.clone())));
        }
        let vars: Vec<(String, Template)> = vars
            .into_iter()
            .map(|(v, t)| t.map(|t| (v, t)))
            .collect::<Option<_>>()?;
        for expr in &rewritten.option_risks {
            self.doc.warning(
                &ptr,
                Target::Value,
                format!("`{{{{{expr}}}}}` may start with `-` and be read as an option: put `--` before it"),
            );
        }
        Some(StepKind::Run(RunStep {
            shell: match shell_kind {
                Some(RawShell::Bash) => Shell::Bash,
                Some(RawShell::Sh) | None => Shell::Sh,
            },
            source: source.to_owned(),
            script: rewritten.script,
            vars,
        }))
    }

    fn action(
        &mut self,
        name: &str,
        with: Option<serde_json::Map<String, Value>>,
    ) -> Option<StepKind> {
        let Some(fields) = action_fields(name) else {
            let known: Vec<String> = ACTIONS.iter().map(|(a, _)| format!("`{a}`")).collect();
            let hint = crate::text::closest(name, ACTIONS.iter().map(|(a, _)| *a))
                .map(|n| format!(", did you mean `{n}`?"))
                .unwrap_or_else(|| format!(", expected one of {}", known.join(", ")));
            self.doc.error(
                &self.field(&[&"action"]),
                Target::Value,
                format!("unknown action `{name}`{hint}"),
            );
            return None;
        };
        let with = with.unwrap_or_default();
        for key in with.keys() {
            if !fields.contains(&key.as_str()) {
                let hint = crate::text::closest(key, fields.iter().copied())
                    .map(|n| format!(", did you mean `{n}`?"))
                    .unwrap_or_default();
                self.doc.error(
                    &self.field(&[&"with", key]),
                    Target::Key,
                    format!("unknown field `{key}` for action `{name}`{hint}"),
                );
            }
        }
        let mut values = Vec::new();
        for field in fields {
            values.push(self.with_field(name, &with, field));
        }
        let mut v = values.into_iter();
        let mut next = || v.next().flatten();
        let action = match name {
            "file.write" => Action::Write {
                path: next()?,
                content: next()?,
            },
            "file.append" => Action::Append {
                path: next()?,
                content: next()?,
            },
            "file.copy" => Action::Copy {
                from: next()?,
                to: next()?,
            },
            "file.move" => Action::Move {
                from: next()?,
                to: next()?,
            },
            "file.delete" => Action::Delete { path: next()? },
            "file.mkdir" => Action::Mkdir { path: next()? },
            "file.stats" => Action::Stats { path: next()? },
            _ => Action::Log { message: next()? },
        };
        Some(StepKind::Action(action))
    }

    fn with_field(
        &mut self,
        action: &str,
        with: &serde_json::Map<String, Value>,
        field: &str,
    ) -> Option<Template> {
        let ptr = self.field(&[&"with", &field]);
        match with.get(field) {
            None => {
                let at_ptr = if with.is_empty() {
                    self.field(&[&"action"])
                } else {
                    self.field(&[&"with"])
                };
                self.doc.error(
                    &at_ptr,
                    Target::Value,
                    format!("action `{action}` needs `with.{field}`"),
                );
                None
            }
            Some(Value::String(s)) => self.template(s, ptr),
            Some(other) => {
                let found = match other {
                    Value::Null => "nothing",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::Array(_) => "a list",
                    _ => "a mapping",
                };
                self.doc.error(
                    &ptr,
                    Target::Value,
                    format!("`with.{field}` must be a string, found {found}"),
                );
                None
            }
        }
    }

    fn webhook(&mut self, raw: RawWebhook) -> Option<StepKind> {
        let RawWebhook {
            url,
            method,
            headers,
            body,
            timeout,
            secret,
        } = raw;
        let url_ptr = self.field(&[&"webhook", &"url"]);
        let (origin, target) = match split_url(&url) {
            Ok(parts) => parts,
            Err(message) => {
                self.doc.error(&url_ptr, Target::Value, message);
                return None;
            }
        };
        let mut pieces = Vec::new();
        match pieces::split(target, "url") {
            Ok(parts) => {
                for part in parts {
                    pieces.push(match part {
                        Piece::Literal(text) => UrlPiece::Literal(text),
                        Piece::Expr(expr) => UrlPiece::Value(
                            self.template(&format!("{{{{{expr}}}}}"), url_ptr.clone())?,
                        ),
                    });
                }
            }
            Err(message) => {
                self.doc.error(&url_ptr, Target::Value, message);
                return None;
            }
        }
        let mut header_templates = Vec::new();
        for (name, value) in headers {
            let ptr = self.field(&[&"webhook", &"headers", &name]);
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                self.doc
                    .error(&ptr, Target::Key, format!("invalid header name `{name}`"));
            }
            header_templates.push((name, self.template(&value, ptr)?));
        }
        if let Some(name) = secret.as_ref().filter(|n| !self.secrets.contains(n)) {
            self.doc.error(
                &self.field(&[&"webhook", &"secret"]),
                Target::Value,
                format!("secret `{name}` is not declared: add it to `spec.secrets`"),
            );
        }
        let body = match body {
            Some(b) => Some(self.body(&b, self.field(&[&"webhook", &"body"]))?),
            None => None,
        };
        let timeout = self.doc.duration(
            timeout.as_deref(),
            self.field(&[&"webhook", &"timeout"]),
            Duration::from_secs(30),
        );
        Some(StepKind::Webhook(WebhookStep {
            origin: origin.to_owned(),
            target: pieces,
            method: method.unwrap_or_else(|| "POST".to_owned()),
            headers: header_templates,
            body,
            timeout,
            secret,
        }))
    }

    fn body(&mut self, value: &Value, ptr: Ptr) -> Option<BodyTemplate> {
        Some(match value {
            Value::String(s) => BodyTemplate::String(self.template(s, ptr)?),
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    out.push(self.body(item, at(&ptr, &[&i]))?);
                }
                BodyTemplate::Array(out)
            }
            Value::Object(map) => {
                let mut out = Vec::new();
                for (k, v) in map {
                    out.push((k.clone(), self.body(v, at(&ptr, &[k]))?));
                }
                BodyTemplate::Object(out)
            }
            other => BodyTemplate::Literal(other.clone()),
        })
    }
}

/// The built-in actions and their `with` fields, all required.
const ACTIONS: &[(&str, &[&str])] = &[
    ("file.write", &["path", "content"]),
    ("file.append", &["path", "content"]),
    ("file.copy", &["from", "to"]),
    ("file.move", &["from", "to"]),
    ("file.delete", &["path"]),
    ("file.mkdir", &["path"]),
    ("file.stats", &["path"]),
    ("log", &["message"]),
];

fn action_fields(name: &str) -> Option<&'static [&'static str]> {
    ACTIONS.iter().find(|(a, _)| *a == name).map(|(_, f)| *f)
}

/// Splits a webhook URL into its literal origin (`https://host:port`) and
/// the path and query that may hold placeholders.
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("webhook url `{url}` must start with `http://` or `https://`"))?;
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let origin_len = url.len() - rest.len() + authority_len;
    let (origin, target) = url.split_at(origin_len);
    let authority = &rest[..authority_len];
    if authority.contains("{{") || authority.contains("}}") {
        return Err(format!(
            "webhook url `{url}`: scheme, host and port must be literal; only the path and query may hold placeholders"
        ));
    }
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(format!("webhook url `{url}` has no valid host"));
    }
    Ok((origin, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_origin_literal() {
        assert_eq!(
            split_url("https://hooks.example.com:8443/a/{{event.name}}?x=1").unwrap(),
            ("https://hooks.example.com:8443", "/a/{{event.name}}?x=1")
        );
        assert_eq!(split_url("http://h").unwrap(), ("http://h", ""));
        assert!(split_url("https://{{event.name}}.example.com/").is_err());
        assert!(split_url("ftp://h/").is_err());
        assert!(split_url("https://user@h/").is_err());
    }
}
