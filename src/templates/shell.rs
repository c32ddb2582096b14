//! Making `run` commands injection-proof.
//!
//! Each `{{placeholder}}` is rewritten, once, at load time, into a reference
//! to an environment variable that will hold its rendered value:
//! `"${NEXUS_V1}"` where the placeholder stands unquoted, `${NEXUS_V1}` inside
//! double quotes. The shell then expands the variable as one word and never
//! parses the value as code, whatever it holds (GitHub's advice for `run:`).
//! Inside single quotes the shell would not expand it at all, so a
//! placeholder there is a validation error.

use super::pieces::{self, Piece};

/// A `run` command ready to execute: the script with variable references,
/// and the expression each variable takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub script: String,
    /// `(variable name, expression source)` in order of appearance.
    pub vars: Vec<(String, String)>,
    /// Placeholders whose value may start with `-` and reach a command as an
    /// option: the expressions, for a warning.
    pub option_risks: Vec<String>,
}

/// Where the scanner stands in the shell's quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    /// Unquoted; inside `$( )` the depth of unmatched `(`.
    Bare {
        parens: u32,
    },
    Single,
    Double,
    Backtick,
}

/// A tiny model of the POSIX shell's quoting, enough to know the context of
/// each placeholder. It errs towards "unquoted", which is safe: a needless
/// pair of double quotes around a variable reference changes nothing.
struct Scanner {
    stack: Vec<Quote>,
    escaped: bool,
    /// The current word's text at bare level, to spot `--`.
    word: String,
    /// A `--` was seen in the current simple command.
    saw_double_dash: bool,
    prev: Option<char>,
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            stack: vec![Quote::Bare { parens: 0 }],
            escaped: false,
            word: String::new(),
            saw_double_dash: false,
            prev: None,
        }
    }

    fn top(&self) -> Quote {
        *self.stack.last().unwrap_or(&Quote::Bare { parens: 0 })
    }

    fn feed(&mut self, text: &str) {
        for c in text.chars() {
            self.step(c);
            self.prev = Some(c);
        }
    }

    fn step(&mut self, c: char) {
        if self.escaped {
            self.escaped = false;
            self.word.push(c);
            return;
        }
        match self.top() {
            Quote::Single => {
                if c == '\'' {
                    self.stack.pop();
                }
            }
            Quote::Double => match c {
                '\\' => self.escaped = true,
                '"' => {
                    self.stack.pop();
                }
                '`' => self.stack.push(Quote::Backtick),
                '(' if self.prev == Some('$') => self.stack.push(Quote::Bare { parens: 0 }),
                _ => {}
            },
            Quote::Backtick => match c {
                '\\' => self.escaped = true,
                '`' => {
                    self.stack.pop();
                }
                '\'' => self.stack.push(Quote::Single),
                '"' => self.stack.push(Quote::Double),
                _ => {}
            },
            Quote::Bare { parens } => self.step_bare(c, parens),
        }
    }

    fn step_bare(&mut self, c: char, parens: u32) {
        let nested = self.stack.len() > 1;
        match c {
            '\\' => self.escaped = true,
            '\'' => self.stack.push(Quote::Single),
            '"' => self.stack.push(Quote::Double),
            '`' => self.stack.push(Quote::Backtick),
            '(' => {
                if self.prev == Some('$') || nested {
                    self.set_parens(parens + 1);
                }
                self.end_word(true);
            }
            ')' if nested && parens == 0 => {
                self.stack.pop();
            }
            ')' => {
                self.set_parens(parens.saturating_sub(1));
                self.end_word(true);
            }
            ';' | '&' | '|' | '\n' => self.end_word(true),
            c if c.is_whitespace() => self.end_word(false),
            c => self.word.push(c),
        }
    }

    fn set_parens(&mut self, n: u32) {
        if let Some(Quote::Bare { parens }) = self.stack.last_mut() {
            *parens = n;
        }
    }

    fn end_word(&mut self, command_ends: bool) {
        if self.word == "--" {
            self.saw_double_dash = true;
        }
        self.word.clear();
        if command_ends {
            self.saw_double_dash = false;
        }
    }

    /// True when a placeholder here would start a new word.
    fn at_word_start(&self) -> bool {
        self.word.is_empty()
            && match self.prev {
                None => true,
                Some(p) => p.is_whitespace() || "\"';|&(`".contains(p),
            }
    }
}

/// Expressions whose value always starts with `/` (virtual and absolute
/// paths), and so can never be taken for an option.
const SAFE_LEADING: &[&str] = &[
    "event.path",
    "event.abs_path",
    "event.dir",
    "event.old_path",
    "run.id",
    "run.attempt",
    "event.size",
];

/// Rewrites a `run` command (see the module doc).
pub fn rewrite(source: &str) -> Result<Rewritten, String> {
    let pieces = pieces::split(source, "run")?;
    let mut scanner = Scanner::new();
    let mut out = Rewritten {
        script: String::with_capacity(source.len() + 16),
        vars: Vec::new(),
        option_risks: Vec::new(),
    };
    for piece in pieces {
        match piece {
            Piece::Literal(text) => {
                scanner.feed(&text);
                out.script.push_str(&text);
            }
            Piece::Expr(expr) => {
                let var = format!("NEXUS_V{}", out.vars.len() + 1);
                match scanner.top() {
                    Quote::Single => {
                        return Err(format!(
                            "`{{{{{expr}}}}}` stands inside single quotes, where the shell would not expand it: remove the quotes or use double quotes"
                        ));
                    }
                    Quote::Double => out.script.push_str(&format!("${{{var}}}")),
                    Quote::Bare { .. } | Quote::Backtick => {
                        out.script.push_str(&format!("\"${{{var}}}\""))
                    }
                }
                let leading_risk = scanner.at_word_start()
                    && !scanner.saw_double_dash
                    && !SAFE_LEADING.contains(&expr.as_str());
                if leading_risk {
                    out.option_risks.push(expr.clone());
                }
                // The value joins the current word: it is not empty text.
                scanner.word.push('x');
                scanner.prev = Some('x');
                out.vars.push((var, expr));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(source: &str) -> String {
        rewrite(source).unwrap().script
    }

    #[test]
    fn rewrites_by_quoting_context() {
        let cases = [
            ("cat {{event.path}}", "cat \"${NEXUS_V1}\""),
            ("cat \"{{event.path}}\"", "cat \"${NEXUS_V1}\""),
            (
                "cat \"dir/{{event.name}}.bak\"",
                "cat \"dir/${NEXUS_V1}.bak\"",
            ),
            (
                "echo $(basename {{event.path}})",
                "echo $(basename \"${NEXUS_V1}\")",
            ),
            (
                "echo \"$(basename {{event.path}}) {{event.name}}\"",
                "echo \"$(basename \"${NEXUS_V1}\") ${NEXUS_V2}\"",
            ),
            (
                "echo 'it''s' {{event.path}}",
                "echo 'it''s' \"${NEXUS_V1}\"",
            ),
            ("echo \\' {{event.path}}", "echo \\' \"${NEXUS_V1}\""),
            ("wc -w < {{event.abs_path}}", "wc -w < \"${NEXUS_V1}\""),
        ];
        for (source, expected) in cases {
            assert_eq!(script(source), expected, "{source}");
        }
    }

    #[test]
    fn numbers_variables_in_order() {
        let r = rewrite("cp -- {{event.path}} {{steps.a.stdout}}").unwrap();
        assert_eq!(
            r.vars,
            vec![
                ("NEXUS_V1".to_owned(), "event.path".to_owned()),
                ("NEXUS_V2".to_owned(), "steps.a.stdout".to_owned())
            ]
        );
    }

    #[test]
    fn refuses_single_quotes() {
        let err = rewrite("cat '{{event.path}}'").unwrap_err();
        assert!(err.contains("inside single quotes"), "{err}");
        assert!(rewrite("echo \"'\" {{event.path}}").is_ok());
    }

    #[test]
    fn flags_values_that_may_become_options() {
        assert_eq!(
            rewrite("cat {{event.name}}").unwrap().option_risks,
            vec!["event.name"]
        );
        assert!(
            rewrite("cat -- {{event.name}}")
                .unwrap()
                .option_risks
                .is_empty()
        );
        assert!(
            rewrite("cat {{event.path}}")
                .unwrap()
                .option_risks
                .is_empty()
        );
        assert!(
            rewrite("cat ./{{event.name}}")
                .unwrap()
                .option_risks
                .is_empty()
        );
        assert_eq!(
            rewrite("cat -- a; rm {{event.name}}").unwrap().option_risks,
            vec!["event.name"]
        );
    }
}
