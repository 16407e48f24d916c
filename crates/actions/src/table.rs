//! The table of action kinds: adding a kind is its own file plus one line here.

use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::ConfigError;

use crate::kind::ActionKind;

/// `name` and `type` as written, for kinds that report at them.
pub(crate) struct Head {
    /// `type = "…"`.
    pub(crate) kind: Spanned<String>,
}

type Parse = fn(Spanned<DeValue<'_>>, &Head) -> Result<Box<dyn ActionKind>, Vec<ConfigError>>;

fn boxed<T: ActionKind>(
    r: Result<T, Vec<ConfigError>>,
) -> Result<Box<dyn ActionKind>, Vec<ConfigError>> {
    r.map(|k| Box::new(k) as Box<dyn ActionKind>)
}

/// Every action type as written in `type = "…"`, with its parser.
pub(crate) const TABLE: &[(&str, Parse)] = &[
    ("syslog", |t, _| boxed(crate::syslog::SyslogSpec::parse(t))),
    ("run", |t, _| boxed(crate::run::RunSpec::parse(t))),
    ("flag_file", |t, _| {
        boxed(crate::flag_file::FlagFileSpec::parse(t))
    }),
    ("jsonl_file", |t, _| {
        boxed(crate::jsonl_file::JsonlFileSpec::parse(t))
    }),
    ("registry", |t, h| {
        boxed(crate::registry::RegistrySpec::parse(t, h.kind.span()))
    }),
    ("dialog", |t, h| {
        boxed(crate::dialog::DialogSpec::parse(t, h.kind.span()))
    }),
    ("open_url", |t, _| {
        boxed(crate::open_url::OpenUrlSpec::parse(t))
    }),
    ("scan", |t, _| boxed(crate::scan::parse(t))),
    ("webhook", |t, _| {
        boxed(crate::webhook::WebhookSpec::parse(t))
    }),
    ("email", |t, _| boxed(crate::email::EmailSpec::parse(t))),
    ("quarantine", |t, h| {
        boxed(crate::quarantine::QuarantineSpec::parse(t, h.kind.span()))
    }),
];
