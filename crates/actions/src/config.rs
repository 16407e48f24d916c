//! Reading `[[action]]` tables: the shared part (`name`, `type`, templates, spans).

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::{ConfigError, Sym};

use crate::delivery::Deliver;
use crate::dialog::DialogSpec;
use crate::durable::Retry;
use crate::email::EmailSpec;
use crate::flag_file::FlagFileSpec;
use crate::jsonl_file::JsonlFileSpec;
use crate::kit::{Tpl, bounded, deserialize, duration, positive};
use crate::limits::LimitSpec;
use crate::open_url::OpenUrlSpec;
use crate::quarantine::QuarantineSpec;
use crate::registry::RegistrySpec;
use crate::run::RunSpec;
use crate::syslog::SyslogSpec;
use crate::webhook::WebhookSpec;

/// The action types this crate knows, as written in `type = "…"`.
pub const KINDS: &[&str] = &[
    "syslog",
    "run",
    "flag_file",
    "jsonl_file",
    "registry",
    "dialog",
    "open_url",
    "scan",
    "webhook",
    "email",
    "quarantine",
];

/// A parsed, validated `[[action]]` table, ready for [`crate::Dispatcher::start`].
#[derive(Debug, Clone)]
pub struct ActionSpec {
    name: String,
    name_span: Range<usize>,
    pub(crate) kind: Kind,
    pub(crate) common: Common,
}

/// The keys every action type shares: `retry`, `durable`, `throttle`, `dedupe`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Common {
    pub(crate) retry: Retry,
    /// Whether a `retry` table was written (a `run` action retries only then).
    pub(crate) retry_configured: bool,
    /// `durable = …` as written; the default is on for kinds with a deliverer.
    pub(crate) durable: Option<bool>,
    pub(crate) limits: LimitSpec,
    /// Where `retry` and `durable` were written (they need a kind that delivers).
    retry_span: Option<Range<usize>>,
    durable_span: Option<Range<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<Spanned<u64>>,
    max_age: Option<Spanned<String>>,
    initial_backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    max_queue: Option<Spanned<SizeValue>>,
}

/// A size: a number of bytes or a string such as `"512MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    key: Option<Spanned<String>>,
    count: Option<Spanned<u64>>,
    per: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDedupe {
    key: Option<Spanned<String>>,
    within: Spanned<String>,
}

/// Takes the common keys out of an action table and validates them.
fn parse_common(table: &mut Spanned<DeValue<'_>>, errors: &mut Vec<ConfigError>) -> Common {
    let mut common = Common::default();
    let DeValue::Table(entries) = table.get_mut() else {
        return common;
    };
    let mut take = |key: &str| entries.remove(key);
    let (retry, durable, throttle, dedupe) = (
        take("retry"),
        take("durable"),
        take("throttle"),
        take("dedupe"),
    );
    if let Some(v) = retry {
        common.retry_configured = true;
        common.retry_span = Some(v.span());
        match deserialize::<RawRetry>(v) {
            Ok(r) => {
                let d = Retry::default();
                let max_attempts = bounded(
                    r.max_attempts.as_ref(),
                    0,
                    0..=1_000_000,
                    "max_attempts",
                    errors,
                ) as u32;
                let max_age = duration(r.max_age.as_ref(), d.max_age, errors);
                let initial = duration(r.initial_backoff.as_ref(), d.initial_backoff, errors);
                positive(initial, r.initial_backoff.as_ref(), errors);
                let max_backoff = duration(r.max_backoff.as_ref(), d.max_backoff, errors);
                positive(max_backoff, r.max_backoff.as_ref(), errors);
                if let Some(s) = &r.max_backoff
                    && max_backoff < initial
                {
                    errors.push(ConfigError::new(
                        s.span(),
                        "`max_backoff` is shorter than `initial_backoff`",
                    ));
                }
                let max_queue_bytes = match &r.max_queue {
                    None => d.max_queue_bytes,
                    Some(v) => {
                        let n = match v.get_ref() {
                            SizeValue::Bytes(n) => Ok(*n),
                            SizeValue::Text(t) => watchpost_event::parse_size(t),
                        };
                        match n {
                            Ok(n) if n >= 1 << 20 => n,
                            Ok(_) => {
                                errors.push(ConfigError::new(
                                    v.span(),
                                    "`max_queue` must be at least 1MiB",
                                ));
                                d.max_queue_bytes
                            }
                            Err(m) => {
                                errors.push(ConfigError::new(v.span(), m));
                                d.max_queue_bytes
                            }
                        }
                    }
                };
                common.retry = Retry {
                    max_attempts,
                    max_age,
                    initial_backoff: initial,
                    max_backoff: max_backoff.max(initial),
                    max_queue_bytes,
                };
            }
            Err(e) => errors.extend(e),
        }
    }
    if let Some(v) = durable {
        common.durable_span = Some(v.span());
        match v.get_ref() {
            DeValue::Boolean(b) => common.durable = Some(*b),
            _ => errors.push(ConfigError::new(
                v.span(),
                "`durable` must be true or false",
            )),
        }
    }
    if let Some(v) = throttle {
        match deserialize::<RawThrottle>(v) {
            Ok(t) => {
                let key = Tpl::or_default(t.key.as_ref(), "{{ filter }}", errors);
                let count = bounded(t.count.as_ref(), 1, 1..=1_000_000, "count", errors) as u32;
                let per = duration(Some(&t.per), std::time::Duration::ZERO, errors);
                positive(per, Some(&t.per), errors);
                common.limits.throttle = key.map(|k| (k, count, per));
            }
            Err(e) => errors.extend(e),
        }
    }
    if let Some(v) = dedupe {
        match deserialize::<RawDedupe>(v) {
            Ok(d) => {
                let key = Tpl::or_default(d.key.as_ref(), "{{ filter }}|{{ raw }}", errors);
                let within = duration(Some(&d.within), std::time::Duration::ZERO, errors);
                positive(within, Some(&d.within), errors);
                common.limits.dedupe = key.map(|k| (k, within));
            }
            Err(e) => errors.extend(e),
        }
    }
    common
}

/// The type-specific part of an action.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Syslog(Box<SyslogSpec>),
    Run(Box<RunSpec>),
    FlagFile(Box<FlagFileSpec>),
    JsonlFile(Box<JsonlFileSpec>),
    Registry(Box<RegistrySpec>),
    Dialog(Box<DialogSpec>),
    OpenUrl(Box<OpenUrlSpec>),
    Webhook(Box<WebhookSpec>),
    Email(Box<EmailSpec>),
    Quarantine(Box<QuarantineSpec>),
}

impl Kind {
    /// The deliverer of a kind whose delivery can fail for a while (syslog over TCP or
    /// TLS, webhook, email; `run` when told to retry): such actions go through the durable retry loop
    /// (`durable.rs`). Adding a delivering kind is one arm here.
    pub(crate) fn deliverer(&self, name: &str, common: &Common) -> Option<Box<dyn Deliver + '_>> {
        match self {
            Kind::Syslog(s) => s.deliverer(),
            Kind::Run(r) => r.deliverer(name, common.retry_configured),
            Kind::Webhook(w) => Some(Box::new(w.deliverer())),
            Kind::Email(e) => Some(Box::new(e.deliverer())),
            Kind::FlagFile(_)
            | Kind::JsonlFile(_)
            | Kind::Registry(_)
            | Kind::Dialog(_)
            | Kind::OpenUrl(_)
            | Kind::Quarantine(_) => None,
        }
    }
}

impl ActionSpec {
    /// Whether the action's jobs go through the retry loop (its kind has a deliverer).
    pub fn retries(&self) -> bool {
        self.kind.deliverer(&self.name, &self.common).is_some()
    }

    /// Whether the retry queue of this action is kept on disk under the state directory.
    pub fn durable(&self) -> bool {
        self.retries() && self.common.durable.unwrap_or(true)
    }

    /// The action's configured name (what filters list in `actions = [...]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the name is written in the configuration text (for "duplicate name" errors).
    pub fn name_span(&self) -> Range<usize> {
        self.name_span.clone()
    }

    /// The action type: `"syslog"`, `"run"`, `"flag_file"`, `"jsonl_file"`, `"registry"`,
    /// `"dialog"`, `"open_url"`, `"webhook"` or `"email"`.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Syslog(_) => "syslog",
            Kind::Run(_) => "run",
            Kind::FlagFile(_) => "flag_file",
            Kind::JsonlFile(_) => "jsonl_file",
            Kind::Registry(_) => "registry",
            Kind::Dialog(_) => "dialog",
            Kind::OpenUrl(_) => "open_url",
            Kind::Webhook(_) => "webhook",
            Kind::Email(_) => "email",
            Kind::Quarantine(_) => "quarantine",
        }
    }

    /// Every template variable the action uses, with the byte range of its name in the
    /// configuration text. Variables of built-in default templates are not listed (they
    /// name only metadata that every event has).
    pub fn variables(&self) -> Vec<(Sym, Range<usize>)> {
        let mut out = Vec::new();
        let mut add = |t: &Tpl| t.variables_into(&mut out);
        match &self.kind {
            Kind::Syslog(s) => s.templates().for_each(&mut add),
            Kind::Run(r) => r.templates().for_each(&mut add),
            Kind::FlagFile(f) => f.templates().for_each(&mut add),
            Kind::JsonlFile(j) => j.templates().for_each(&mut add),
            Kind::Registry(r) => r.templates().for_each(&mut add),
            Kind::Dialog(d) => d.templates().for_each(&mut add),
            Kind::OpenUrl(o) => o.templates().for_each(&mut add),
            Kind::Webhook(w) => w.templates().for_each(&mut add),
            Kind::Email(e) => e.templates().for_each(&mut add),
            Kind::Quarantine(q) => q.templates().for_each(&mut add),
        }
        self.common.limits.templates().for_each(&mut add);
        out
    }

    /// Checks that need no I/O beyond file metadata (and, for `jsonl_file`, a probe file
    /// created and removed in the directory): the program exists and is executable, the
    /// flag file's directory exists or can be created, a registry action is on Windows,
    /// and so on.
    /// Syntax (targets, templates, numbers) was already checked by [`parse_action`].
    pub fn check(&self) -> Vec<ConfigError> {
        match &self.kind {
            Kind::Syslog(s) => s.check(),
            Kind::Run(r) => r.check(),
            Kind::FlagFile(f) => f.check(),
            Kind::JsonlFile(j) => j.check(),
            Kind::Registry(r) => r.check(),
            Kind::Dialog(d) => d.check(),
            Kind::OpenUrl(o) => o.check(),
            Kind::Webhook(w) => w.check(),
            Kind::Email(e) => e.check(),
            Kind::Quarantine(q) => q.check(),
        }
    }

    /// Tells the action where watchpost keeps its state (the quarantine action records
    /// itself in `<state_dir>/quarantine.json`); other actions ignore it.
    pub fn set_state_dir(&mut self, dir: &std::path::Path) {
        if let Kind::Quarantine(q) = &mut self.kind {
            q.set_state_dir(dir);
        }
    }

    /// A `quarantine` action, for the `watchpost quarantine` commands.
    pub fn as_quarantine(&self) -> Option<crate::quarantine::Quarantine<'_>> {
        match &self.kind {
            Kind::Quarantine(q) => Some(crate::quarantine::Quarantine {
                name: &self.name,
                spec: q,
            }),
            _ => None,
        }
    }

    /// A `run` action's program and argument templates as written (tests).
    #[cfg(test)]
    pub(crate) fn preview_argv(&self) -> Option<Vec<String>> {
        match &self.kind {
            Kind::Run(r) => Some(r.argv_text()),
            _ => None,
        }
    }

    /// The file a `jsonl_file` action appends to, with the place of its `path` value.
    pub fn appends_to(&self) -> Option<(&std::path::Path, Range<usize>)> {
        match &self.kind {
            Kind::JsonlFile(j) => Some(j.path()),
            _ => None,
        }
    }

    /// How many jobs may wait for this action before new ones are dropped.
    pub(crate) fn queue_capacity(&self) -> usize {
        match &self.kind {
            Kind::Syslog(s) => s.queue_capacity,
            Kind::Run(r) => r.queue_capacity,
            Kind::FlagFile(f) => f.queue_capacity,
            Kind::JsonlFile(j) => j.queue_capacity,
            Kind::Registry(r) => r.queue_capacity,
            Kind::Dialog(d) => d.queue_capacity,
            Kind::OpenUrl(o) => o.queue_capacity,
            Kind::Webhook(w) => w.queue_capacity,
            Kind::Email(e) => e.queue_capacity,
            Kind::Quarantine(q) => q.queue_capacity,
        }
    }
}

/// Parses one `[[action]]` table. Reads `name` and `type` first, then the table as the
/// type's own configuration; every problem comes back with its place in the text.
pub fn parse_action(mut table: Spanned<DeValue<'_>>) -> Result<ActionSpec, Vec<ConfigError>> {
    let span = table.span();
    let DeValue::Table(entries) = table.get_ref() else {
        return Err(vec![ConfigError::new(
            span,
            "an `[[action]]` entry must be a table",
        )]);
    };
    let name = string_entry(entries, "name", &span)?;
    let kind = string_entry(entries, "type", &span)?;
    let mut errors = Vec::new();
    check_name(&name, &mut errors);
    let common = parse_common(&mut table, &mut errors);
    let parsed = match kind.get_ref().as_str() {
        "syslog" => SyslogSpec::parse(table).map(|s| Kind::Syslog(Box::new(s))),
        "run" => RunSpec::parse(table).map(|r| Kind::Run(Box::new(r))),
        "flag_file" => FlagFileSpec::parse(table).map(|f| Kind::FlagFile(Box::new(f))),
        "jsonl_file" => JsonlFileSpec::parse(table).map(|j| Kind::JsonlFile(Box::new(j))),
        "registry" => RegistrySpec::parse(table).map(|r| Kind::Registry(Box::new(r))),
        "dialog" => DialogSpec::parse(table).map(|d| Kind::Dialog(Box::new(d))),
        "open_url" => OpenUrlSpec::parse(table).map(|o| Kind::OpenUrl(Box::new(o))),
        "quarantine" => QuarantineSpec::parse(table).map(|q| Kind::Quarantine(Box::new(q))),
        // A preset of `run`: it runs (and reports) as one.
        "scan" => crate::scan::parse(table).map(|r| Kind::Run(Box::new(r))),
        "webhook" => WebhookSpec::parse(table).map(|w| Kind::Webhook(Box::new(w))),
        "email" => EmailSpec::parse(table).map(|e| Kind::Email(Box::new(e))),
        other => Err(vec![ConfigError::new(
            kind.span(),
            format!(
                "unknown action type `{other}` (known types: {})",
                KINDS.join(", ")
            ),
        )]),
    };
    if let Ok(kind) = &parsed
        && kind.deliverer(name.get_ref(), &common).is_none()
    {
        for (key, span) in [
            ("retry", &common.retry_span),
            ("durable", &common.durable_span),
        ] {
            if let Some(span) = span {
                errors.push(ConfigError::new(
                    span.clone(),
                    format!(
                        "`{key}` applies only to actions that deliver to a peer: syslog over \
                         tcp:// or tls://, or `run` with `retry` or `retry_exit_codes`"
                    ),
                ));
            }
        }
    }
    match parsed {
        Ok(kind) if errors.is_empty() => Ok(ActionSpec {
            name: name.get_ref().clone(),
            name_span: name.span(),
            kind,
            common,
        }),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

fn string_entry(
    entries: &toml::de::DeTable<'_>,
    key: &str,
    table_span: &Range<usize>,
) -> Result<Spanned<String>, Vec<ConfigError>> {
    match entries.get(key) {
        Some(v) => match v.get_ref() {
            DeValue::String(s) => Ok(Spanned::new(v.span(), s.to_string())),
            _ => Err(vec![ConfigError::new(
                v.span(),
                format!("`{key}` must be a string"),
            )]),
        },
        None => Err(vec![ConfigError::new(
            table_span.start..table_span.start,
            format!("this action has no `{key}`"),
        )]),
    }
}

fn check_name(name: &Spanned<String>, errors: &mut Vec<ConfigError>) {
    let n = name.get_ref();
    if n.is_empty()
        || !n
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errors.push(ConfigError::new(
            name.span(),
            "an action name must be non-empty and use only letters, digits, `-`, `_` and `.`",
        ));
    } else if n.chars().all(|c| c == '.') {
        // The name is a directory name under the state directory (the retry queue).
        errors.push(ConfigError::new(
            name.span(),
            "an action name needs a letter, digit, `-` or `_`",
        ));
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// Parses a TOML text and returns the `[[action]]` entries' parse results.
    pub(crate) fn parse_all(text: &str) -> Vec<Result<ActionSpec, Vec<ConfigError>>> {
        let doc = toml::de::DeTable::parse(text).expect("valid TOML");
        let doc = doc.into_inner();
        let actions = doc.get("action").expect("has [[action]]").clone();
        let DeValue::Array(items) = actions.into_inner() else {
            panic!("not an array")
        };
        items.into_iter().map(parse_action).collect()
    }

    pub(crate) fn parse_one(text: &str) -> Result<ActionSpec, Vec<ConfigError>> {
        parse_all(text).remove(0)
    }

    pub(crate) fn parse_ok(text: &str) -> ActionSpec {
        parse_one(text).unwrap_or_else(|e| panic!("config errors: {e:?}"))
    }

    /// The text a span points at.
    pub(crate) fn at<'a>(text: &'a str, span: &Range<usize>) -> &'a str {
        &text[span.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;

    #[test]
    fn unknown_type_lists_known_types_at_the_type_value() {
        let text = "[[action]]\nname = \"x\"\ntype = \"pager\"\n";
        let errs = parse_one(text).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(at(text, &errs[0].span), "\"pager\"");
        assert!(
            errs[0]
                .message
                .contains("syslog, run, flag_file, jsonl_file, registry"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn missing_name_and_bad_name() {
        let errs = parse_one("[[action]]\ntype = \"syslog\"\n").unwrap_err();
        assert!(errs[0].message.contains("no `name`"));
        let text = "[[action]]\nname = \"a b\"\ntype = \"flag_file\"\npath = \"/tmp/x\"\n";
        let errs = parse_one(text).unwrap_err();
        assert_eq!(at(text, &errs[0].span), "\"a b\"");
        let text = "[[action]]\nname = \"..\"\ntype = \"flag_file\"\npath = \"/tmp/x\"\n";
        let errs = parse_one(text).unwrap_err();
        assert_eq!(at(text, &errs[0].span), "\"..\"");
    }

    #[test]
    fn common_keys_are_read_for_every_kind() {
        let text = "[[action]]\nname = \"s\"\ntype = \"syslog\"\ntarget = \"tls://siem.example\"\n\
                    retry = { max_attempts = 5, max_age = \"2h\", initial_backoff = \"500ms\", max_backoff = \"1m\", max_queue = \"64MiB\" }\n\
                    durable = false\nthrottle = { key = \"{{ host }}\", count = 3, per = \"1h\" }\n\
                    dedupe = { within = \"10m\" }\n";
        let spec = parse_ok(text);
        let r = &spec.common.retry;
        assert_eq!(
            (
                r.max_attempts,
                r.max_age.as_secs(),
                r.initial_backoff.as_millis(),
                r.max_backoff.as_secs()
            ),
            (5, 7200, 500, 60)
        );
        assert_eq!(r.max_queue_bytes, 64 << 20);
        assert!(spec.retries() && !spec.durable());
        assert_eq!(spec.common.limits.throttle.as_ref().unwrap().1, 3);
        assert!(spec.common.limits.dedupe.is_some());
        let vars: Vec<String> = spec
            .variables()
            .iter()
            .map(|(s, _)| s.as_str().to_owned())
            .collect();
        assert!(vars.contains(&"host".to_owned()), "{vars:?}");
        // A flag_file takes throttle/dedupe, and TCP syslog is durable by default.
        let spec = parse_ok(
            "[[action]]\nname = \"f\"\ntype = \"flag_file\"\npath = \"/tmp/x\"\ndedupe = { within = \"1m\" }\n",
        );
        assert!(!spec.retries());
        assert!(
            parse_ok("[[action]]\nname = \"t\"\ntype = \"syslog\"\ntarget = \"tcp://h\"\n")
                .durable()
        );
        assert!(
            !parse_ok("[[action]]\nname = \"u\"\ntype = \"syslog\"\ntarget = \"udp://h\"\n")
                .retries()
        );
    }

    #[test]
    fn common_key_mistakes_are_reported_at_their_place() {
        let text = "[[action]]\nname = \"s\"\ntype = \"syslog\"\ntarget = \"tcp://h\"\n\
                    retry = { max_age = \"2 days\", initial_backoff = \"0\", tries = 3 }\n";
        let errs = parse_one(text).unwrap_err();
        assert_eq!(at(text, &errs[0].span), "tries", "{errs:?}");
        let text = "[[action]]\nname = \"s\"\ntype = \"syslog\"\ntarget = \"tcp://h\"\n\
                    retry = { max_age = \"2 days\", initial_backoff = \"0\" }\ndurable = \"yes\"\n";
        let errs = parse_one(text).unwrap_err();
        let places: Vec<&str> = errs.iter().map(|e| at(text, &e.span)).collect();
        assert_eq!(places, ["\"2 days\"", "\"0\"", "\"yes\""], "{errs:?}");
        let text = "[[action]]\nname = \"f\"\ntype = \"flag_file\"\npath = \"/tmp/x\"\nretry = {}\ndurable = true\n";
        let errs = parse_one(text).unwrap_err();
        let places: Vec<&str> = errs.iter().map(|e| at(text, &e.span)).collect();
        assert_eq!(places, ["{}", "true"], "{errs:?}");
        assert!(errs[0].message.contains("deliver to a peer"));
        let text = "[[action]]\nname = \"f\"\ntype = \"flag_file\"\npath = \"/tmp/x\"\nthrottle = { count = 0 }\n";
        let errs = parse_one(text).unwrap_err();
        assert!(errs[0].message.contains("per"), "{errs:?}");
    }

    #[test]
    fn non_string_type_is_reported_at_its_value() {
        let text = "[[action]]\nname = \"x\"\ntype = 3\n";
        let errs = parse_one(text).unwrap_err();
        assert_eq!(at(text, &errs[0].span), "3");
    }
}
