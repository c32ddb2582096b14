//! The names a template may use, checked when a definition compiles, so a
//! typo is a validation error and not a failed run at 3 a.m.

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{Path, PathSeg};

use super::helpers::HELPERS;

/// Fields of `event` (SPEC section 3).
pub const EVENT_FIELDS: &[&str] = &[
    "id",
    "type",
    "path",
    "old_path",
    "name",
    "stem",
    "ext",
    "dir",
    "abs_path",
    "size",
    "mtime",
    "timestamp",
];

/// Fields of `steps.NAME`.
pub const STEP_FIELDS: &[&str] = &["stdout", "stderr", "exit_code", "status", "output"];

/// What exists when a template renders: the steps before this one, every
/// step of the workflow (to tell "later" from "unknown"), declared secrets.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub earlier_steps: Vec<String>,
    pub all_steps: Vec<String>,
    pub secrets: Vec<String>,
    /// An `on_failure` step's: `run.error`, `run.failed_step` and
    /// `run.attempts` exist.
    pub on_failure: bool,
}

impl Scope {
    #[cfg(test)]
    pub fn for_tests() -> Scope {
        Scope {
            earlier_steps: vec!["words".into()],
            all_steps: vec!["words".into(), "later".into()],
            secrets: vec!["TOKEN".into()],
            on_failure: false,
        }
    }

    /// Every problem with the names `template` uses.
    pub fn check(&self, template: &handlebars::Template) -> Vec<String> {
        let mut problems = Vec::new();
        self.check_elements(&template.elements, &mut problems);
        problems
    }

    fn check_elements(&self, elements: &[TemplateElement], out: &mut Vec<String>) {
        for element in elements {
            match element {
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                    self.check_expression(h, out);
                }
                TemplateElement::HelperBlock(h) => self.check_block(h, out),
                TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                    out.push("partials (`{{> ...}}`) are not supported".to_owned());
                }
                TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                    out.push("decorators (`{{* ...}}`) are not supported".to_owned());
                }
                _ => {}
            }
        }
    }

    fn check_expression(&self, h: &HelperTemplate, out: &mut Vec<String>) {
        match &h.name {
            Parameter::Path(path) if h.params.is_empty() && h.hash.is_empty() => {
                let is_helper = matches!(path, Path::Relative((segs, _))
                    if segs.len() == 1 && matches!(&segs[0], PathSeg::Named(n) if HELPERS.contains(&n.as_str())));
                if !is_helper {
                    self.check_path(path, out);
                }
            }
            name => self.check_call(name, h, out),
        }
    }

    fn check_call(&self, name: &Parameter, h: &HelperTemplate, out: &mut Vec<String>) {
        let helper = match name {
            Parameter::Name(n) => n.clone(),
            Parameter::Path(Path::Relative((_, raw))) => raw.clone(),
            _ => String::new(),
        };
        if !HELPERS.contains(&helper.as_str()) {
            let hint = match crate::text::closest(&helper, HELPERS.iter().copied()) {
                Some(near) => format!(", did you mean `{near}`?"),
                None => String::new(),
            };
            out.push(format!("unknown helper `{helper}`{hint}"));
        }
        let lenient = helper == "default";
        for (i, param) in h.params.iter().enumerate() {
            // `default` exists to name what may be missing: only its root is checked.
            if let (true, Parameter::Path(p)) = (lenient && i == 0, param) {
                self.check_root_only(p, out);
                continue;
            }
            self.check_param(param, out);
        }
        for param in h.hash.values() {
            self.check_param(param, out);
        }
    }

    fn check_block(&self, h: &HelperTemplate, out: &mut Vec<String>) {
        self.check_call(&h.name, h, out);
        let name = match &h.name {
            Parameter::Name(n) => n.as_str(),
            _ => "",
        };
        // Inside `each` and `with` names are relative to the item: the
        // render-time strict mode checks those.
        if matches!(name, "each" | "with") {
            return;
        }
        for t in [&h.template, &h.inverse].into_iter().flatten() {
            self.check_elements(&t.elements, out);
        }
    }

    fn check_param(&self, param: &Parameter, out: &mut Vec<String>) {
        match param {
            Parameter::Path(p) => self.check_path(p, out),
            Parameter::Subexpression(sub) => {
                self.check_elements(std::slice::from_ref(&sub.element), out)
            }
            _ => {}
        }
    }

    fn check_root_only(&self, path: &Path, out: &mut Vec<String>) {
        let roots = ["event", "workflow", "run", "steps", "secrets"];
        if let Some(segs) = named_segments(path)
            && segs
                .first()
                .is_some_and(|root| !roots.contains(&root.as_str()))
        {
            out.push(unknown_variable(&segs.join(".")));
        }
    }

    fn check_path(&self, path: &Path, out: &mut Vec<String>) {
        let Some(segs) = named_segments(path) else {
            return;
        };
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        if let Some(problem) = self.path_problem(&segs) {
            out.push(problem);
        }
    }

    fn path_problem(&self, segs: &[&str]) -> Option<String> {
        let full = segs.join(".");
        match segs {
            ["event"] | ["workflow"] | ["run"] | ["steps"] => None,
            ["event", field] if EVENT_FIELDS.contains(field) => None,
            ["workflow", "name"] | ["run", "id"] | ["run", "attempt"] => None,
            ["run", "error" | "failed_step" | "attempts"] if self.on_failure => None,
            ["run", field @ ("error" | "failed_step" | "attempts")] => Some(format!(
                "`run.{field}` is set only in `on_failure` steps (after the last attempt failed)"
            )),
            ["steps", step, rest @ ..] => self.step_problem(step, rest, &full),
            ["secrets", name] if self.secrets.iter().any(|s| s == name) => None,
            ["secrets", name] => Some(format!(
                "`secrets.{name}` is not declared: add `{name}` to `spec.secrets`"
            )),
            _ => Some(unknown_variable(&full)),
        }
    }

    fn step_problem(&self, step: &str, rest: &[&str], full: &str) -> Option<String> {
        if !self.earlier_steps.iter().any(|s| s == step) {
            return Some(if self.all_steps.iter().any(|s| s == step) {
                format!(
                    "`{full}` refers to step `{step}`, which runs later: only earlier steps' results exist"
                )
            } else {
                format!("`{full}` refers to no step: there is no step `{step}` before this one")
            });
        }
        match rest {
            [] | ["output", ..] => None,
            [field] if STEP_FIELDS.contains(field) => None,
            [field, ..] => Some(format!(
                "unknown step field `{field}` in `{full}`: a step has {}",
                STEP_FIELDS
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

fn named_segments(path: &Path) -> Option<Vec<String>> {
    match path {
        Path::Relative((segs, _)) => segs
            .iter()
            .map(|s| match s {
                PathSeg::Named(n) => Some(n.clone()),
                _ => None,
            })
            .collect(),
        Path::Local(_) => None,
    }
}

/// Every name a template can use, for "did you mean" suggestions.
fn known_paths() -> Vec<String> {
    let mut all: Vec<String> = EVENT_FIELDS.iter().map(|f| format!("event.{f}")).collect();
    all.extend(["workflow.name", "run.id", "run.attempt"].map(String::from));
    all
}

fn unknown_variable(full: &str) -> String {
    let known = known_paths();
    match crate::text::closest(full, known.iter().map(String::as_str)) {
        Some(near) => format!("unknown variable `{full}`, did you mean `{near}`?"),
        None => format!(
            "unknown variable `{full}`: templates can use `event.*`, `workflow.name`, `run.id`, `run.attempt`, `steps.NAME.*` and `secrets.NAME`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(source: &str) -> Vec<String> {
        let t = handlebars::Template::compile(source).unwrap();
        Scope::for_tests().check(&t)
    }

    #[test]
    fn accepts_every_documented_name() {
        for ok in [
            "{{event.path}} {{event.old_path}} {{event.abs_path}} {{event.size}}",
            "{{workflow.name}} {{run.id}} {{run.attempt}}",
            "{{steps.words.stdout}} {{steps.words.output.count}} {{steps.words.exit_code}}",
            "{{secrets.TOKEN}}",
            "{{#if (gt steps.words.stdout 100)}}{{event.name}}{{/if}}",
            "{{#each steps.words.output}}{{@key}}={{this}}{{/each}}",
            "{{default steps.words.output.maybe \"x\"}}",
        ] {
            assert_eq!(problems(ok), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn names_each_kind_of_mistake() {
        let cases = [
            (
                "{{evnt.path}}",
                "unknown variable `evnt.path`, did you mean `event.path`?",
            ),
            (
                "{{event.nmae}}",
                "unknown variable `event.nmae`, did you mean `event.name`?",
            ),
            (
                "{{steps.later.stdout}}",
                "`steps.later.stdout` refers to step `later`, which runs later: only earlier steps' results exist",
            ),
            (
                "{{steps.nope.stdout}}",
                "`steps.nope.stdout` refers to no step: there is no step `nope` before this one",
            ),
            (
                "{{secrets.OTHER}}",
                "`secrets.OTHER` is not declared: add `OTHER` to `spec.secrets`",
            ),
            (
                "{{uper event.name}}",
                "unknown helper `uper`, did you mean `upper`?",
            ),
            (
                "{{#if (gt evnt.size 1)}}x{{/if}}",
                "unknown variable `evnt.size`, did you mean `event.size`?",
            ),
        ];
        for (source, message) in cases {
            assert_eq!(problems(source), vec![message.to_owned()], "{source}");
        }
    }
}
