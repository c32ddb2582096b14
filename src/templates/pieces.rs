//! Splitting a string into literal text and single `{{expression}}`
//! placeholders, for the places where each value must be handled on its own
//! (a shell command, a URL) instead of pasted into the text.

/// A part of a template source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text as written.
    Literal(String),
    /// One expression, without its braces (`event.path`, `basename event.path`).
    Expr(String),
}

/// Splits `source`; block helpers, raw `{{{...}}}` and partials are refused,
/// since their output would be pasted as text. `what` names the field for
/// messages (`run`, `url`).
pub fn split(source: &str, what: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        if start > 0 && rest[..start].ends_with('\\') {
            return Err(format!(
                "escaped `\\{{{{` is not supported in `{what}`: write the braces in a variable instead"
            ));
        }
        push_literal(&mut pieces, &rest[..start]);
        let after = &rest[start + 2..];
        if after.starts_with('{') {
            return Err(format!(
                "`{{{{{{...}}}}}}` (raw output) is not allowed in `{what}`: use `{{{{...}}}}`, values never need escaping here"
            ));
        }
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed `{{{{` in `{what}`"))?;
        let inner = after[..end]
            .trim_start_matches('~')
            .trim_end_matches('~')
            .trim();
        rest = &after[end + 2..];
        if inner.starts_with('!') {
            continue;
        }
        if let Some(c) = inner.chars().next().filter(|c| "#/^>*&".contains(*c)) {
            return Err(format!(
                "`{{{{{c}...}}}}` is not allowed in `{what}`: only plain `{{{{expression}}}}` placeholders are; use the step's `if:` or an earlier step for logic"
            ));
        }
        if inner.is_empty() || inner == "else" {
            return Err(format!("empty or misplaced `{{{{{inner}}}}}` in `{what}`"));
        }
        pieces.push(Piece::Expr(inner.to_owned()));
    }
    push_literal(&mut pieces, rest);
    Ok(pieces)
}

fn push_literal(pieces: &mut Vec<Piece>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Piece::Literal(prev)) = pieces.last_mut() {
        prev.push_str(text);
    } else {
        pieces.push(Piece::Literal(text.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_literals_and_expressions() {
        assert_eq!(
            split(
                "wc -w < {{event.abs_path}} {{! note }}| {{basename event.path}}",
                "run"
            )
            .unwrap(),
            vec![
                Piece::Literal("wc -w < ".into()),
                Piece::Expr("event.abs_path".into()),
                Piece::Literal(" | ".into()),
                Piece::Expr("basename event.path".into()),
            ]
        );
    }

    #[test]
    fn refuses_what_would_paste_text() {
        for bad in [
            "{{{event.path}}}",
            "{{#if x}}a{{/if}}",
            "{{> p}}",
            "{{event.path",
            "\\{{x}}",
        ] {
            assert!(split(bad, "run").is_err(), "{bad}");
        }
    }
}
