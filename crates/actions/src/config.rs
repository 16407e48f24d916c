//! Reading `[[action]]` tables: the shared part (`name`, `type`, templates, spans).

use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::{ConfigError, Sym};

use std::sync::Arc;

use crate::common::{Common, parse_common};
use crate::kind::ActionKind;
use crate::kit::{Tpl, bounded};
use crate::table::{Head, TABLE};

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
    pub(crate) kind: Arc<dyn ActionKind>,
    pub(crate) common: Common,
}

impl ActionSpec {
    /// Whether the action's jobs go through the retry loop (its kind has a deliverer).
    pub fn retries(&self) -> bool {
        self.kind.deliverer(&self.name, &self.common).is_some()
    }

    /// The kind's concrete spec (the quarantine commands, tests).
    pub(crate) fn kind_as<T: 'static>(&self) -> Option<&T> {
        self.kind.as_any().downcast_ref::<T>()
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
    /// `"dialog"`, `"open_url"`, `"webhook"`, `"email"` or `"quarantine"`.
    pub fn kind(&self) -> &'static str {
        self.kind.kind()
    }

    /// Every template variable the action uses, with the byte range of its name in the
    /// configuration text. Variables of built-in default templates are not listed (they
    /// name only metadata that every event has).
    pub fn variables(&self) -> Vec<(Sym, Range<usize>)> {
        let mut out = Vec::new();
        let mut add = |t: &Tpl| t.variables_into(&mut out);
        self.kind.templates().into_iter().for_each(&mut add);
        self.common.limits.templates().for_each(&mut add);
        out
    }

    /// Checks that need no I/O beyond file metadata (and, for `jsonl_file`, a probe file
    /// created and removed in the directory): the program exists and is executable, the
    /// flag file's directory exists or can be created, a registry action is on Windows,
    /// and so on.
    /// Syntax (targets, templates, numbers) was already checked by [`parse_action`].
    pub fn check(&self) -> Vec<ConfigError> {
        self.kind.check()
    }

    /// Tells the action where watchpost keeps its state (the quarantine action records
    /// itself in `<state_dir>/quarantine.json`); other actions ignore it.
    pub fn set_state_dir(&mut self, dir: &std::path::Path) {
        // Unique while the configuration is being read (nothing shares it yet).
        if let Some(kind) = Arc::get_mut(&mut self.kind) {
            kind.set_state_dir(dir);
        }
    }

    /// A `quarantine` action, for the `watchpost quarantine` commands.
    pub fn as_quarantine(&self) -> Option<crate::quarantine::Quarantine<'_>> {
        self.kind_as::<crate::quarantine::QuarantineSpec>()
            .map(|q| crate::quarantine::Quarantine {
                name: &self.name,
                spec: q,
            })
    }

    /// A `run` action's program and argument templates as written (tests).
    #[cfg(test)]
    pub(crate) fn preview_argv(&self) -> Option<Vec<String>> {
        self.kind_as::<crate::run::RunSpec>()
            .map(crate::run::RunSpec::argv_text)
    }

    /// The file a `jsonl_file` action appends to, with the place of its `path` value.
    pub fn appends_to(&self) -> Option<(&std::path::Path, Range<usize>)> {
        self.kind.appends_to()
    }

    /// How many jobs may wait for this action before new ones are dropped.
    pub(crate) fn queue_capacity(&self) -> usize {
        self.common.queue_capacity
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
    let mut common = parse_common(&mut table, &mut errors);
    let head = Head { kind: kind.clone() };
    let parsed = match TABLE.iter().find(|(k, _)| *k == kind.get_ref().as_str()) {
        Some((_, parse)) => parse(table, &head),
        None => Err(vec![ConfigError::new(
            kind.span(),
            format!(
                "unknown action type `{}` (known types: {})",
                kind.get_ref(),
                KINDS.join(", ")
            ),
        )]),
    };
    if let Ok(k) = &parsed {
        let (default, range) = k.queue_capacity();
        common.queue_capacity = bounded(
            common.queue_capacity_raw.as_ref(),
            default,
            range,
            "queue_capacity",
            &mut errors,
        ) as usize;
        if k.deliverer(name.get_ref(), &common).is_none() {
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
    }
    match parsed {
        Ok(kind) if errors.is_empty() => Ok(ActionSpec {
            name: name.get_ref().clone(),
            name_span: name.span(),
            kind: Arc::from(kind),
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

/// Warnings about syslog targets a quarantine would cut off: for every applying
/// `quarantine` action with the firewall on this system, each `syslog` action whose target
/// is an IP address the allow-list does not let through (host names cannot be judged here).
pub fn check_allow_lists(actions: &[ActionSpec]) -> Vec<ConfigError> {
    let targets: Vec<(&str, (&str, u16))> = actions
        .iter()
        .filter_map(|s| {
            let sys = s.kind_as::<crate::syslog::SyslogSpec>()?;
            Some((s.name(), sys.target_host_port()))
        })
        .collect();
    actions
        .iter()
        .filter_map(|a| Some((a.name(), a.kind_as::<crate::quarantine::QuarantineSpec>()?)))
        .flat_map(|(name, q)| q.cut_off(name, &targets))
        .collect()
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
