//! Names of workflows, pipelines, stages and steps.

/// The message for a workflow, pipeline or stage name that breaks the rule,
/// or `None` when it is a good name.
pub fn check_name(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!valid).then(|| name_error(name))
}

pub fn name_error(name: &str) -> String {
    if name.len() > 63 {
        return format!(
            "invalid name `{name}`: {} characters, at most 63 are allowed",
            name.len()
        );
    }
    format!(
        "invalid name `{name}`: use lowercase letters, digits and `-`, starting and ending with a letter or digit"
    )
}

/// The stage's name when `workflow` is a stage of `pipeline`
/// (`PIPELINE/STAGE`, how a stage's runs are named).
pub fn stage_of<'a>(pipeline: &str, workflow: &'a str) -> Option<&'a str> {
    workflow.strip_prefix(pipeline)?.strip_prefix('/')
}

/// True when `workflow` is `name` itself or one of its stages.
pub fn is_or_stage_of(name: &str, workflow: &str) -> bool {
    workflow == name || stage_of(name, workflow).is_some()
}

/// The message for a step name that breaks the rule, or `None`.
pub fn check_step_name(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    (!valid).then(|| step_name_error(name))
}

pub fn step_name_error(name: &str) -> String {
    format!("invalid step name `{name}`: use lowercase letters, digits, `_` and `-` (at most 63)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_belong_to_their_pipeline_only() {
        assert_eq!(stage_of("docs", "docs/extract"), Some("extract"));
        assert_eq!(stage_of("docs", "docs-2/extract"), None);
        assert_eq!(stage_of("docs", "docs"), None);
        assert!(is_or_stage_of("docs", "docs") && is_or_stage_of("docs", "docs/a"));
        assert!(!is_or_stage_of("docs", "docsx/a"));
    }

    #[test]
    fn names_follow_the_dns_label_rule() {
        assert_eq!(check_name("text-processor"), None);
        assert_eq!(check_name("a"), None);
        assert!(check_name("Text_Processor").is_some());
        assert!(check_name("-a").is_some());
        assert!(check_name("a-").is_some());
        assert!(
            check_name(&"a".repeat(64))
                .unwrap()
                .contains("64 characters")
        );
        assert_eq!(check_name(&"a".repeat(63)), None);
        assert_eq!(check_step_name("words_2"), None);
        assert!(check_step_name("Words").is_some());
    }
}
