//! Templates: text with `{{ variable }}` placeholders.
//!
//! Syntax: `{{ name }}` inserts a field or metadata value; `{{ name | filter | … }}`
//! transforms it. Filters: `upper`, `lower`, `trim`, `json` (escaped for the inside of a
//! JSON string), `url` (percent-encoded for a URL component), `cef` (escaped for a CEF
//! extension value), `default("text")` (used when the field is missing or empty). A
//! string literal `{{ "{{" }}` writes braces. A field that does not exist renders empty.
//!
//! Templates are parsed once when the configuration loads; a syntax error carries the
//! byte offset inside the template so the config loader can point at the column.

use std::fmt::Write as _;

use thiserror::Error;

use crate::{Event, FieldRef, Sym};

/// A syntax error in a template.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{message} (at byte {offset} of the template)")]
pub struct TemplateError {
    /// Byte offset in the template text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Anything that can answer a variable lookup (an event, or an event plus the firing filter).
pub trait Lookup {
    /// The value of `sym`, if present.
    fn lookup(&self, sym: Sym) -> Option<FieldRef<'_>>;
}

impl Lookup for Event {
    fn lookup(&self, sym: Sym) -> Option<FieldRef<'_>> {
        self.get(sym)
    }
}

/// An event seen by an action: adds `filter` and `actions`.
pub struct ActionScope<'a> {
    /// The event.
    pub event: &'a Event,
    /// The filter that fired.
    pub filter: &'a str,
    /// The filter's actions, comma-separated.
    pub actions: &'a str,
}

impl Lookup for ActionScope<'_> {
    fn lookup(&self, sym: Sym) -> Option<FieldRef<'_>> {
        match sym {
            Sym::FILTER => Some(FieldRef::Str(self.filter)),
            Sym::ACTIONS => Some(FieldRef::Str(self.actions)),
            _ => self.event.get(sym),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Filter {
    Upper,
    Lower,
    Trim,
    Json,
    Url,
    Cef,
    Default(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Lit(String),
    Var {
        sym: Sym,
        offset: usize,
        filters: Vec<Filter>,
    },
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        let mut pos = 0;
        while let Some(open) = rest.find("{{") {
            lit.push_str(&rest[..open]);
            let body_start = pos + open + 2;
            let after = &rest[open + 2..];
            let close = find_close(after).ok_or_else(|| TemplateError {
                offset: pos + open,
                message: "`{{` is never closed by `}}`".into(),
            })?;
            let body = &after[..close];
            match parse_expr(body, body_start)? {
                Expr::Lit(s) => lit.push_str(&s),
                Expr::Var(sym, filters) => {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var {
                        sym,
                        offset: body_start,
                        filters,
                    });
                }
            }
            let consumed = open + 2 + close + 2;
            rest = &rest[consumed..];
            pos += consumed;
        }
        if let Some(i) = rest.find("}}") {
            return Err(TemplateError {
                offset: pos + i,
                message: "`}}` without `{{`".into(),
            });
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            parts,
            source: text.to_owned(),
        })
    }

    /// The template text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables the template names, with their byte offsets.
    pub fn variables(&self) -> impl Iterator<Item = (Sym, usize)> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Var { sym, offset, .. } => Some((*sym, *offset)),
            Part::Lit(_) => None,
        })
    }

    /// Whether the template has no variables.
    pub fn is_constant(&self) -> bool {
        self.variables().next().is_none()
    }

    /// Renders into a new string.
    pub fn render(&self, scope: &dyn Lookup) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        self.render_into(scope, &mut out);
        out
    }

    /// Renders, appending to `out`.
    pub fn render_into(&self, scope: &dyn Lookup, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var { sym, filters, .. } => {
                    let value = scope.lookup(*sym);
                    if filters.is_empty() {
                        if let Some(v) = value {
                            v.write_to(out);
                        }
                    } else {
                        apply_filters(value, filters, out);
                    }
                }
            }
        }
    }
}

fn find_close(s: &str) -> Option<usize> {
    // Skip over string literals so `{{ "}}" }}` works.
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'}' if !in_str && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

enum Expr {
    Lit(String),
    Var(Sym, Vec<Filter>),
}

fn err(offset: usize, message: impl Into<String>) -> TemplateError {
    TemplateError {
        offset,
        message: message.into(),
    }
}

fn parse_expr(body: &str, base: usize) -> Result<Expr, TemplateError> {
    let mut segments = split_pipes(body);
    let (head_off, head) = segments.remove(0);
    let head_trim = head.trim();
    let head_at = base + head_off + (head.len() - head.trim_start().len());
    if head_trim.is_empty() {
        return Err(err(base, "empty `{{ }}`: name a field, e.g. `{{ host }}`"));
    }
    if head_trim.starts_with('"') {
        if !segments.is_empty() {
            return Err(err(head_at, "a string literal takes no filters"));
        }
        return parse_string(head_trim, head_at).map(Expr::Lit);
    }
    if !head_trim
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'))
    {
        return Err(err(head_at, format!("`{head_trim}` is not a field name")));
    }
    let sym = Sym::try_new(head_trim).ok_or_else(|| err(head_at, "too many field names"))?;
    let mut filters = Vec::new();
    for (off, seg) in segments {
        filters.push(parse_filter(
            seg.trim(),
            base + off + (seg.len() - seg.trim_start().len()),
        )?);
    }
    Ok(Expr::Var(sym, filters))
}

fn split_pipes(body: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_str = false;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'|' if !in_str => {
                out.push((start, &body[start..i]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push((start, &body[start..]));
    out
}

fn parse_string(s: &str, at: usize) -> Result<String, TemplateError> {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| err(at, "unterminated string literal"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(c @ ('"' | '\\')) => out.push(c),
                _ => {
                    return Err(err(
                        at,
                        "unknown escape in string literal (use \\\" \\\\ \\n \\t)",
                    ));
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn parse_filter(s: &str, at: usize) -> Result<Filter, TemplateError> {
    Ok(match s {
        "upper" => Filter::Upper,
        "lower" => Filter::Lower,
        "trim" => Filter::Trim,
        "json" => Filter::Json,
        "url" => Filter::Url,
        "cef" => Filter::Cef,
        _ if s.starts_with("default") => {
            let arg = s["default".len()..].trim();
            let arg = arg
                .strip_prefix('(')
                .and_then(|a| a.strip_suffix(')'))
                .ok_or_else(|| err(at, "write default(\"text\")"))?;
            Filter::Default(parse_string(arg.trim(), at)?)
        }
        "" => return Err(err(at, "empty filter after `|`")),
        other => {
            return Err(err(
                at,
                format!(
                    "unknown filter `{other}` (known: upper, lower, trim, json, url, cef, default(\"…\"))"
                ),
            ));
        }
    })
}

fn apply_filters(value: Option<FieldRef<'_>>, filters: &[Filter], out: &mut String) {
    let mut text = value.map(|v| v.text().into_owned()).unwrap_or_default();
    for f in filters {
        text = match f {
            Filter::Upper => text.to_uppercase(),
            Filter::Lower => text.to_lowercase(),
            Filter::Trim => text.trim().to_owned(),
            Filter::Json => json_escape(&text),
            Filter::Url => url_escape(&text),
            Filter::Cef => cef_escape(&text),
            Filter::Default(d) if text.is_empty() => d.clone(),
            Filter::Default(_) => text,
        };
    }
    out.push_str(&text);
}

/// Escapes text for the inside of a JSON string (no surrounding quotes).
pub fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Escapes a CEF extension value: backslash, `=`, and line breaks.
pub fn cef_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn event() -> Event {
        let mut e = Event::new("sep-av".into(), "pc1".into(), "raw line".into());
        e.push(Sym::new("risk_name"), Value::Static("EICAR Test String"));
        e.push(Sym::new("count"), Value::Int(3));
        e.finish();
        e
    }

    #[test]
    fn renders_fields_metadata_and_filter_scope() {
        let t = Template::parse("{{filter}}: {{ risk_name }} on {{ host }} x{{count}}").unwrap();
        let e = event();
        let scope = ActionScope {
            event: &e,
            filter: "virus",
            actions: "siem",
        };
        assert_eq!(t.render(&scope), "virus: EICAR Test String on pc1 x3");
    }

    #[test]
    fn missing_fields_render_empty_and_default_applies() {
        let t = Template::parse("[{{ nope }}] [{{ nope | default(\"n/a\") }}]").unwrap();
        assert_eq!(t.render(&event()), "[] [n/a]");
    }

    #[test]
    fn filters_transform() {
        let t =
            Template::parse("{{ risk_name | url }}|{{ risk_name | upper }}|{{ \"{{\" }}").unwrap();
        assert_eq!(
            t.render(&event()),
            "EICAR%20Test%20String|EICAR TEST STRING|{{"
        );
        let j = Template::parse("{\"r\":\"{{ raw | json }}\"}").unwrap();
        let mut e = event();
        e.raw = "a \"q\"\n".into();
        assert_eq!(j.render(&e), "{\"r\":\"a \\\"q\\\"\\n\"}");
    }

    #[test]
    fn syntax_errors_have_offsets() {
        let e = Template::parse("abc {{ risk_name").unwrap_err();
        assert_eq!(e.offset, 4);
        let e = Template::parse("ab {{ }}").unwrap_err();
        assert!(e.message.contains("empty"));
        let e = Template::parse("{{ x | bogus }}").unwrap_err();
        assert_eq!(e.offset, 7);
        assert!(Template::parse("a }} b").is_err());
        assert!(Template::parse("{{ a b }}").is_err());
    }

    #[test]
    fn variables_are_listed() {
        let t = Template::parse("{{ a }} and {{ b | lower }}").unwrap();
        let names: Vec<_> = t.variables().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(Template::parse("plain").unwrap().is_constant());
    }
}
