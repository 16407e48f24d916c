//! The helpers every action kind uses to read its table, in one leaf module (it imports
//! no action): templates with their place in the file ([`Tpl`]), range-checked numbers
//! ([`bounded`]), durations ([`duration`], through watchpost's one duration parser), the
//! table as a kind's raw struct ([`deserialize`]). Secrets are read by `secret.rs`.

use std::ops::Range;

use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::{ConfigError, Sym, Template};

/// Deserializes a whole action table into a type's raw configuration struct.
pub(crate) fn deserialize<T: for<'de> Deserialize<'de>>(
    table: Spanned<DeValue<'_>>,
) -> Result<T, Vec<ConfigError>> {
    let span = table.span();
    // The raw structs own their strings, so any lifetime of the input will do.
    T::deserialize(table.into_deserializer()).map_err(|e| vec![from_toml(&e, span)])
}

/// A `toml` deserialization error as a [`ConfigError`] (at `fallback` if it has no span).
pub(crate) fn from_toml(e: &toml::de::Error, fallback: Range<usize>) -> ConfigError {
    ConfigError::new(
        e.span().unwrap_or(fallback),
        e.message().trim_end().to_owned(),
    )
}

/// A template from the configuration, with the span of its TOML string.
#[derive(Debug, Clone)]
pub(crate) struct Tpl {
    pub(crate) template: Template,
    /// `None` for built-in defaults.
    pub(crate) span: Option<Range<usize>>,
}

impl Tpl {
    /// Parses a configured template; a syntax error is pushed to `errors`.
    pub(crate) fn parse(s: &Spanned<String>, errors: &mut Vec<ConfigError>) -> Option<Tpl> {
        match Template::parse(s.get_ref()) {
            Ok(template) => Some(Tpl {
                template,
                span: Some(s.span()),
            }),
            Err(e) => {
                errors.push(ConfigError::in_string(&s.span(), e.offset, e.message));
                None
            }
        }
    }

    /// A configured template or, when the key is absent, a built-in default.
    pub(crate) fn or_default(
        s: Option<&Spanned<String>>,
        default: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Tpl> {
        match s {
            Some(s) => Tpl::parse(s, errors),
            None => Some(Tpl::builtin(default)),
        }
    }

    /// A built-in template (the text is a constant of this crate and always parses).
    pub(crate) fn builtin(text: &str) -> Tpl {
        let template = Template::parse(text).expect("built-in templates are valid");
        Tpl {
            template,
            span: None,
        }
    }

    pub(crate) fn variables_into(&self, out: &mut Vec<(Sym, Range<usize>)>) {
        let Some(span) = &self.span else { return };
        let source = self.template.source();
        for (sym, offset) in self.template.variables() {
            let body = source.get(offset..).unwrap_or("");
            let name_at = offset + (body.len() - body.trim_start().len());
            let start = (span.start + 1 + name_at).min(span.end);
            let end = (start + sym.as_str().len()).min(span.end);
            out.push((sym, start..end));
        }
    }

    /// The template's text up to its first variable.
    pub(crate) fn literal_prefix(&self) -> &str {
        let source = self.template.source();
        source.find("{{").map_or(source, |i| &source[..i])
    }
}

/// A positive integer setting with its span, range-checked.
pub(crate) fn bounded(
    v: Option<&Spanned<u64>>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> u64 {
    match v {
        None => default,
        Some(v) if range.contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            errors.push(ConfigError::new(
                v.span(),
                format!(
                    "`{what}` must be between {} and {}",
                    range.start(),
                    range.end()
                ),
            ));
            default
        }
    }
}

/// A duration setting (absent: `default`); a mistake is reported at its place.
pub(crate) fn duration(
    v: Option<&Spanned<String>>,
    default: std::time::Duration,
    errors: &mut Vec<ConfigError>,
) -> std::time::Duration {
    match v {
        None => default,
        Some(s) => watchpost_event::parse_duration(s.get_ref()).unwrap_or_else(|m| {
            errors.push(ConfigError::new(s.span(), m));
            default
        }),
    }
}

/// Reports a zero duration at its place.
pub(crate) fn positive(
    v: std::time::Duration,
    s: Option<&Spanned<String>>,
    errors: &mut Vec<ConfigError>,
) {
    if let Some(s) = s
        && v.is_zero()
    {
        errors.push(ConfigError::new(s.span(), "must be longer than 0"));
    }
}
