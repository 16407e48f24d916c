//! Configuration diagnostics: errors and warnings with byte spans, printed as
//! `file:line:column: error: message` followed by the line and a caret, like a compiler.
//! A message of several lines (a regular expression's own caret display) keeps its
//! layout, indented under the first line; one about the whole file (an empty span at its
//! start) is printed as `file: warning: message` without a line.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

use watchpost_event::ConfigError;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The configuration cannot run.
    Error,
    /// It runs, but probably not as meant.
    Warning,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    /// Error or warning.
    pub severity: Severity,
    /// Byte range in the configuration text.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in one configuration.
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// In the order found.
    pub items: Vec<Diag>,
}

impl Diagnostics {
    /// Adds an error.
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(Diag {
            severity: Severity::Error,
            span,
            message: message.into(),
        });
    }

    /// Adds a warning.
    pub fn warning(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(Diag {
            severity: Severity::Warning,
            span,
            message: message.into(),
        });
    }

    /// Adds errors from a library crate.
    pub fn extend(&mut self, errors: Vec<ConfigError>) {
        for e in errors {
            self.push(Diag::from(e));
        }
    }

    /// Adds a toml/serde error, at `fallback` when it has no span of its own.
    pub fn toml_error(&mut self, e: &toml::de::Error, fallback: Range<usize>) {
        let message = e.message().trim().replace('\n', " ");
        self.error(e.span().unwrap_or(fallback), message);
    }

    /// Every diagnostic comes here: serde's unknown-key message (from whichever section
    /// reader) gets a "did you mean" when one of the expected keys is close.
    fn push(&mut self, mut d: Diag) {
        if let Some(better) = suggest_known_key(&d.message) {
            d.message = better;
        }
        self.items.push(d);
    }

    /// Whether any error was found.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }

    /// Renders every diagnostic, sorted by place.
    pub fn render(&self, path: &Path, text: &str) -> String {
        let mut items = self.items.clone();
        items.sort_by_key(|d| d.span.start);
        let mut out = String::new();
        for d in &items {
            let kind = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let mut lines = d.message.lines();
            let first = lines.next().unwrap_or_default();
            let (line, col) = line_col(text, d.span.start);
            if d.span == (0..0) {
                let _ = writeln!(out, "{}: {kind}: {first}", path.display());
            } else {
                let _ = writeln!(out, "{}:{line}:{col}: {kind}: {first}", path.display());
            }
            for more in lines {
                let _ = writeln!(out, "    {more}");
            }
            if d.span == (0..0) {
                continue;
            }
            if let Some(src) = text.lines().nth(line - 1) {
                let _ = writeln!(out, "    {src}");
                let width = span_width(text, &d.span).max(1);
                let _ = writeln!(out, "    {}{}", " ".repeat(col - 1), "^".repeat(width));
            }
        }
        out
    }
}

/// serde's "unknown field `strat_at`, expected one of `name`, …, `start_at`, …" becomes
/// "unknown field `strat_at`; did you mean `start_at`?" when one expected key is close.
fn suggest_known_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = expected
        .iter()
        .copied()
        .filter(|k| edit_distance(k, name) <= 2)
        .min_by_key(|k| edit_distance(k, name))?;
    Some(format!("unknown field `{name}`; did you mean `{best}`?"))
}

/// Levenshtein distance (for "did you mean" hints; names are short).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// 1-based line and column (in characters) of byte `offset`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn span_width(text: &str, span: &Range<usize>) -> usize {
    let start = floor_boundary(text, span.start.min(text.len()));
    let end = floor_boundary(text, span.end.min(text.len())).max(start);
    text[start..end]
        .lines()
        .next()
        .map_or(0, |l| l.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 10), (2, 4));
    }

    #[test]
    fn render_points_at_the_span() {
        let t = "x = 1\nname = \"bad\"\n";
        let mut d = Diagnostics::default();
        d.error(13..18, "no good");
        let r = d.render(Path::new("c.toml"), t);
        assert!(
            r.starts_with("c.toml:2:8: error: no good\n    name = \"bad\"\n           ^^^^^\n"),
            "{r}"
        );
    }

    #[test]
    fn several_lines_keep_their_layout_and_the_whole_file_has_no_line() {
        let t = "# comment\nre = '(x'\n";
        let mut d = Diagnostics::default();
        d.error(
            15..19,
            "bad regular expression: regex parse error:\n    (x\n    ^\nerror: unclosed group",
        );
        d.warning(0..0, "no [[source]] is configured");
        let r = d.render(Path::new("c.toml"), t);
        assert_eq!(
            r,
            "c.toml: warning: no [[source]] is configured\n\
             c.toml:2:6: error: bad regular expression: regex parse error:\n\
             \x20       (x\n\
             \x20       ^\n\
             \x20   error: unclosed group\n\
             \x20   re = '(x'\n\
             \x20        ^^^^\n"
        );
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        assert_eq!(
            suggest_known_key(
                "unknown field `strat_at`, expected one of `name`, `start_at`, `path`"
            )
            .as_deref(),
            Some("unknown field `strat_at`; did you mean `start_at`?")
        );
        assert_eq!(
            suggest_known_key("unknown field `zzzzzz`, expected one of `name`, `path`"),
            None
        );
        assert_eq!(
            suggest_known_key("unknown field `nam`, expected `name`").as_deref(),
            Some("unknown field `nam`; did you mean `name`?")
        );
        assert_eq!(edit_distance("risk_name", "risk_nam"), 1);
    }
}
