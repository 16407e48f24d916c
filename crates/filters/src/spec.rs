//! Reading `[[filter]]` tables from the spanned TOML tree, with a place for every error.
//!
//! The `match` table is walked by hand (not through serde) so each key and value keeps
//! its byte span: a bad regex or an unknown operator is reported at its own column.

use std::collections::HashSet;
use std::ops::Range;

use memchr::memmem;
use regex::RegexBuilder;
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use watchpost_event::{ConfigError, Sym};

use crate::cond::{CmpOp, Cond, Operand, Test, parse_time};

/// Which events an include filter takes, by the anomaly flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AnomalyMode {
    /// Every event (default).
    #[default]
    Any,
    /// Only events an anomaly filter flagged.
    Only,
    /// Only events no anomaly filter flagged.
    None,
}

/// An anomaly filter's baseline definition: `anomaly = { key = [...], value = [...], ... }`.
///
/// Fields are named as in conditions; an integer `n` names the `n`-th insertion string
/// (`strN`). The filter only flags: when its `match` holds, the (key, value) pair of the
/// event is checked against the host's baseline and the event is flagged when the pair is
/// new after the learning period; later filters select flagged events with
/// `anomaly = "only"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineSpec {
    /// Key fields (may be empty: one-dimensional).
    pub key: Vec<Sym>,
    /// Value fields (at least one).
    pub value: Vec<Sym>,
    /// Learning period (event time).
    pub learning: std::time::Duration,
    /// Each key learns on its own from its first appearance.
    pub learn_per_key: bool,
    /// Values stored per key at most.
    pub max_values_per_key: u32,
    /// Pairs unseen this long are forgotten.
    pub forget_after: Option<std::time::Duration>,
    /// Where the table is written.
    pub span: Range<usize>,
}

/// What a threshold filter forwards once `count` matches fell within `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Only the match that reaches the threshold; then nothing until `within` has passed
    /// since it fired.
    First,
    /// Every match from the one that reaches the threshold on, while the count within the
    /// window stays at or above it.
    Each,
    /// When the threshold is reached, the matches held back before it as well as the one
    /// that reaches it; afterwards like `each`.
    All,
}

/// `threshold = { count = 5, within = "10m", group_by = ["IpAddress"], forward = "first" }`:
/// the filter fires only when `count` of its matches (per host and `group_by` values) fall
/// within `within` of event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdSpec {
    /// Matches needed.
    pub count: u32,
    /// The sliding window (event time).
    pub within: std::time::Duration,
    /// Counted separately per value of these fields (and per host).
    pub group_by: Vec<Sym>,
    /// What is forwarded.
    pub forward: Forward,
    /// Where the table is written.
    pub span: Range<usize>,
}

/// One filter as configured, conditions compiled, action names not yet resolved.
#[derive(Debug, Clone)]
pub struct FilterSpec {
    /// Unique name (`{{ filter }}` in templates).
    pub name: String,
    /// Where the name is written.
    pub name_span: Range<usize>,
    /// The compiled `match` table (`All([])` = every event).
    pub cond: Cond,
    /// An exclude filter: runs before every include filter.
    pub exclude: bool,
    /// Action names with their places.
    pub actions: Vec<(String, Range<usize>)>,
    /// Stop processing later filters when this one fires.
    pub stop: bool,
    /// Anomaly gate for include filters.
    pub anomaly: AnomalyMode,
    /// Where `anomaly = "only" | "none"` is written, for the check that an anomaly filter exists.
    pub anomaly_span: Option<Range<usize>>,
    /// An anomaly filter's baseline (`anomaly = { key, value, ... }`).
    pub baseline: Option<BaselineSpec>,
    /// Events this filter fires on wait for an acknowledgement (`watchpost ack`).
    pub require_ack: bool,
    /// Fire only when enough matches fall within a window.
    pub threshold: Option<ThresholdSpec>,
    /// `enabled = false` keeps the filter in the file but out of the chain.
    pub enabled: bool,
    /// Free text for people.
    pub description: Option<String>,
    /// Fields the conditions read, with places.
    pub fields: Vec<(Sym, Range<usize>)>,
    /// Fields the filter's regex captures create.
    pub captures: Vec<Sym>,
    /// The whole table.
    pub span: Range<usize>,
}

const KEYS: &[&str] = &[
    "name",
    "match",
    "exclude",
    "actions",
    "stop",
    "anomaly",
    "enabled",
    "description",
    "require_ack",
    "threshold",
];
const OPS: &[&str] = &[
    "eq",
    "in",
    "prefix",
    "suffix",
    "contains",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "ignore_case",
];

type Errors = Vec<ConfigError>;

fn err(span: &Range<usize>, msg: impl Into<String>) -> ConfigError {
    ConfigError::new(span.clone(), msg)
}

/// Parses one `[[filter]]` table. The spec comes back even when there are errors (with
/// the faulty parts left out), so later checks such as action names still run on it.
pub fn parse_filter(v: &Spanned<DeValue<'_>>) -> (FilterSpec, Errors) {
    let span = v.span();
    let mut errors = Vec::new();
    let mut spec = FilterSpec {
        name: String::new(),
        name_span: span.clone(),
        cond: Cond::All(Vec::new()),
        exclude: false,
        actions: Vec::new(),
        stop: false,
        anomaly: AnomalyMode::Any,
        anomaly_span: None,
        baseline: None,
        require_ack: false,
        threshold: None,
        enabled: true,
        description: None,
        fields: Vec::new(),
        captures: Vec::new(),
        span: span.clone(),
    };
    let Some(table) = v.get_ref().as_table() else {
        errors.push(err(&span, "a [[filter]] entry must be a table"));
        return (spec, errors);
    };
    let mut has_name = false;
    for (key, value) in table.iter() {
        let vspan = value.span();
        let k: &str = key.get_ref();
        match k {
            "name" => match value.get_ref().as_str() {
                Some(s) if !s.trim().is_empty() => {
                    spec.name = s.to_owned();
                    spec.name_span = vspan;
                    has_name = true;
                }
                _ => errors.push(err(&vspan, "`name` must be a non-empty string")),
            },
            "match" => match value.get_ref().as_table() {
                Some(t) => {
                    let mut cx = Compile {
                        errors: &mut errors,
                        fields: &mut spec.fields,
                        captures: &mut spec.captures,
                    };
                    spec.cond = cx.table(t);
                }
                None => errors.push(err(
                    &vspan,
                    "`match` must be a table, e.g. match = { source = \"sep-av\" }",
                )),
            },
            "exclude" => bool_key(value, &mut spec.exclude, "exclude", &mut errors),
            "stop" => bool_key(value, &mut spec.stop, "stop", &mut errors),
            "enabled" => bool_key(value, &mut spec.enabled, "enabled", &mut errors),
            "require_ack" => bool_key(value, &mut spec.require_ack, "require_ack", &mut errors),
            "description" => match value.get_ref().as_str() {
                Some(s) => spec.description = Some(s.to_owned()),
                None => errors.push(err(&vspan, "`description` must be a string")),
            },
            "actions" => spec.actions = string_list(value, "actions", &mut errors),
            "anomaly" => parse_anomaly(value, &mut spec, &mut errors),
            "threshold" => match value.get_ref() {
                DeValue::Table(t) => {
                    spec.threshold = parse_threshold(t, &vspan, &mut errors);
                    if let Some(th) = &spec.threshold {
                        spec.fields
                            .extend(th.group_by.iter().map(|s| (*s, vspan.clone())));
                    }
                }
                _ => errors.push(err(
                    &vspan,
                    "`threshold` must be a table: { count = 5, within = \"10m\" }",
                )),
            },
            other => errors.push(err(
                &key.span(),
                format!(
                    "unknown key `{other}` in [[filter]] (known: {})",
                    KEYS.join(", ")
                ),
            )),
        }
    }
    if !has_name {
        errors.push(err(&span, "every [[filter]] needs a `name`"));
    }
    if spec.exclude && (spec.stop || spec.anomaly != AnomalyMode::Any || spec.baseline.is_some()) {
        errors.push(err(&spec.name_span, "an exclude filter takes no `stop` or `anomaly` (it removes events before include filters run)"));
    }
    if let Some(t) = &spec.threshold
        && (spec.exclude || spec.baseline.is_some())
    {
        errors.push(err(
            &t.span,
            "a threshold belongs on an include filter that acts (not on an exclude or anomaly filter)",
        ));
    }
    if let Some(b) = &spec.baseline {
        if let Some((_, at)) = spec.actions.first() {
            errors.push(err(
                at,
                format!(
                    "an anomaly filter only flags events; act on them in a later filter with `anomaly = \"only\"` (e.g. match = {{ source = ... }}, anomaly = \"only\", actions = [...]) — `{}` has actions",
                    spec.name
                ),
            ));
        }
        if spec.require_ack {
            errors.push(err(
                &b.span,
                "`require_ack` belongs on the filter that acts on flagged events (`anomaly = \"only\"`)",
            ));
        }
    }
    (spec, errors)
}

fn bool_key(v: &Spanned<DeValue<'_>>, out: &mut bool, name: &str, errors: &mut Errors) {
    match v.get_ref().as_bool() {
        Some(b) => *out = b,
        None => errors.push(err(&v.span(), format!("`{name}` must be true or false"))),
    }
}

fn string_list(
    v: &Spanned<DeValue<'_>>,
    name: &str,
    errors: &mut Errors,
) -> Vec<(String, Range<usize>)> {
    let Some(arr) = v.get_ref().as_array() else {
        errors.push(err(
            &v.span(),
            format!("`{name}` must be a list of names, e.g. [\"siem\"]"),
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in arr.iter() {
        match item.get_ref().as_str() {
            Some(s) => out.push((s.to_owned(), item.span())),
            None => errors.push(err(
                &item.span(),
                format!("`{name}` entries must be strings"),
            )),
        }
    }
    out
}

fn parse_anomaly(v: &Spanned<DeValue<'_>>, spec: &mut FilterSpec, errors: &mut Errors) {
    let span = v.span();
    match v.get_ref() {
        DeValue::String(s) => match s.as_ref() {
            "any" => spec.anomaly = AnomalyMode::Any,
            "only" => spec.anomaly = AnomalyMode::Only,
            "none" => spec.anomaly = AnomalyMode::None,
            other => errors.push(err(
                &span,
                format!("anomaly = \"{other}\": use \"any\", \"only\" or \"none\""),
            )),
        },
        DeValue::Table(t) => {
            if let Some(b) = parse_baseline(t, &span, errors) {
                spec.fields
                    .extend(b.key.iter().chain(&b.value).map(|s| (*s, span.clone())));
                spec.baseline = Some(b);
            }
            return;
        }
        _ => errors.push(err(
            &span,
            "`anomaly` must be \"any\", \"only\" or \"none\"",
        )),
    }
    if spec.anomaly != AnomalyMode::Any {
        spec.anomaly_span = Some(span);
    }
}

const THRESHOLD_KEYS: &[&str] = &["count", "within", "group_by", "forward"];

fn parse_threshold(
    t: &DeTable<'_>,
    span: &Range<usize>,
    errors: &mut Errors,
) -> Option<ThresholdSpec> {
    let before = errors.len();
    let mut th = ThresholdSpec {
        count: 0,
        within: std::time::Duration::ZERO,
        group_by: Vec::new(),
        forward: Forward::First,
        span: span.clone(),
    };
    for (key, value) in t.iter() {
        let vspan = value.span();
        match key.get_ref().as_ref() {
            "count" => match value.get_ref() {
                DeValue::Integer(i) => match i.as_str().parse::<u32>() {
                    Ok(n) if (2..=100_000).contains(&n) => th.count = n,
                    _ => errors.push(err(
                        &vspan,
                        "`count` must be a whole number from 2 to 100000",
                    )),
                },
                _ => errors.push(err(&vspan, "`count` must be a number")),
            },
            "within" => match value
                .get_ref()
                .as_str()
                .map(watchpost_event::parse_duration)
            {
                Some(Ok(d)) if !d.is_zero() => th.within = d,
                Some(Ok(_)) => errors.push(err(&vspan, "`within` must be longer than 0")),
                Some(Err(e)) => errors.push(err(&vspan, e)),
                None => errors.push(err(
                    &vspan,
                    "`within` must be a duration string, e.g. \"10m\"",
                )),
            },
            "group_by" => th.group_by = field_list(value, "group_by", errors),
            "forward" => match value.get_ref().as_str() {
                Some("first") => th.forward = Forward::First,
                Some("each") => th.forward = Forward::Each,
                Some("all") => th.forward = Forward::All,
                _ => errors.push(err(
                    &vspan,
                    "`forward` must be \"first\", \"each\" or \"all\"",
                )),
            },
            other => errors.push(err(
                &key.span(),
                format!(
                    "unknown key `{other}` in a threshold (known: {})",
                    THRESHOLD_KEYS.join(", ")
                ),
            )),
        }
    }
    if th.count == 0 && errors.len() == before {
        errors.push(err(span, "a threshold needs `count` (and `within`)"));
    }
    if th.within.is_zero() && errors.len() == before {
        errors.push(err(span, "a threshold needs `within`, e.g. \"10m\""));
    }
    (errors.len() == before).then_some(th)
}

const BASELINE_KEYS: &[&str] = &[
    "key",
    "value",
    "learning",
    "learn_per_key",
    "max_values_per_key",
    "forget_after",
];

/// Most fields in a key or a value.
const MAX_BASELINE_FIELDS: usize = 8;

fn parse_baseline(
    t: &DeTable<'_>,
    span: &Range<usize>,
    errors: &mut Errors,
) -> Option<BaselineSpec> {
    let before = errors.len();
    let mut b = BaselineSpec {
        key: Vec::new(),
        value: Vec::new(),
        learning: std::time::Duration::from_secs(14 * 86_400),
        learn_per_key: false,
        max_values_per_key: 10_000,
        forget_after: None,
        span: span.clone(),
    };
    let mut has_value = false;
    for (key, value) in t.iter() {
        let vspan = value.span();
        match key.get_ref().as_ref() {
            "key" => b.key = field_list(value, "key", errors),
            "value" => {
                has_value = true;
                b.value = field_list(value, "value", errors);
                if b.value.is_empty() {
                    errors.push(err(&vspan, "`value` needs at least one field"));
                }
            }
            "learning" => match value
                .get_ref()
                .as_str()
                .map(watchpost_event::parse_duration)
            {
                Some(Ok(d)) => b.learning = d,
                Some(Err(e)) => errors.push(err(&vspan, e)),
                None => errors.push(err(
                    &vspan,
                    "`learning` must be a duration string, e.g. \"14d\"",
                )),
            },
            "forget_after" => match value
                .get_ref()
                .as_str()
                .map(watchpost_event::parse_duration)
            {
                Some(Ok(d)) if !d.is_zero() => b.forget_after = Some(d),
                Some(Ok(_)) => errors.push(err(&vspan, "`forget_after` must be longer than 0")),
                Some(Err(e)) => errors.push(err(&vspan, e)),
                None => errors.push(err(
                    &vspan,
                    "`forget_after` must be a duration string, e.g. \"90d\"",
                )),
            },
            "learn_per_key" => bool_key(value, &mut b.learn_per_key, "learn_per_key", errors),
            "max_values_per_key" => match value.get_ref() {
                DeValue::Integer(i) => match i.as_str().parse::<u32>() {
                    Ok(n) if n > 0 => b.max_values_per_key = n,
                    _ => errors.push(err(
                        &vspan,
                        "`max_values_per_key` must be a whole number from 1 to 4294967295",
                    )),
                },
                _ => errors.push(err(&vspan, "`max_values_per_key` must be a number")),
            },
            other => errors.push(err(
                &key.span(),
                format!(
                    "unknown key `{other}` in an anomaly baseline (known: {})",
                    BASELINE_KEYS.join(", ")
                ),
            )),
        }
    }
    if !has_value {
        errors.push(err(
            span,
            "an anomaly baseline needs `value = [...]` (and usually `key = [...]`)",
        ));
    }
    (errors.len() == before).then_some(b)
}

/// A list of field names or insertion-string positions (`"TargetUserName"`, `5` = `str5`);
/// a single name is a list of one.
fn field_list(v: &Spanned<DeValue<'_>>, name: &str, errors: &mut Errors) -> Vec<Sym> {
    let one = |item: &Spanned<DeValue<'_>>, errors: &mut Errors| -> Option<Sym> {
        match item.get_ref() {
            DeValue::String(s) if !s.is_empty() => Sym::try_new(s),
            DeValue::Integer(i) => match i.as_str().parse::<u32>() {
                Ok(n) if (1..=512).contains(&n) => Sym::try_new(&format!("str{n}")),
                _ => {
                    errors.push(err(
                        &item.span(),
                        "an insertion-string position is a number from 1 to 512",
                    ));
                    None
                }
            },
            _ => {
                errors.push(err(
                    &item.span(),
                    format!("`{name}` entries are field names (\"TargetUserName\") or insertion-string positions (6)"),
                ));
                None
            }
        }
    };
    let out: Vec<Sym> = match v.get_ref() {
        DeValue::Array(arr) => arr.iter().filter_map(|item| one(item, errors)).collect(),
        _ => one(v, errors).into_iter().collect(),
    };
    if out.len() > MAX_BASELINE_FIELDS {
        errors.push(err(
            &v.span(),
            format!("at most {MAX_BASELINE_FIELDS} fields in `{name}`"),
        ));
    }
    out
}

struct Compile<'e> {
    errors: &'e mut Errors,
    fields: &'e mut Vec<(Sym, Range<usize>)>,
    captures: &'e mut Vec<Sym>,
}

impl Compile<'_> {
    fn table(&mut self, t: &DeTable<'_>) -> Cond {
        let mut conds = Vec::new();
        for (key, value) in t.iter() {
            let k: &str = key.get_ref();
            match k {
                "all" => conds.push(Cond::All(self.list(value, "all"))),
                "any" => conds.push(Cond::Any(self.list(value, "any"))),
                "not" => match value.get_ref().as_table() {
                    Some(t) => conds.push(Cond::Not(Box::new(self.table(t)))),
                    None => self
                        .errors
                        .push(err(&value.span(), "`not` takes a table of conditions")),
                },
                name => {
                    let Some(sym) = Sym::try_new(name) else {
                        self.errors.push(err(&key.span(), "too many field names"));
                        continue;
                    };
                    self.fields.push((sym, key.span()));
                    if let Some(c) = self.field(sym, value) {
                        conds.push(c);
                    }
                }
            }
        }
        if conds.len() == 1 {
            conds.pop().unwrap_or(Cond::All(Vec::new()))
        } else {
            Cond::All(conds)
        }
    }

    fn list(&mut self, v: &Spanned<DeValue<'_>>, what: &str) -> Vec<Cond> {
        let Some(arr) = v.get_ref().as_array() else {
            self.errors.push(err(
                &v.span(),
                format!(
                    "`{what}` takes a list of tables, e.g. {what} = [{{ a = 1 }}, {{ b = 2 }}]"
                ),
            ));
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in arr.iter() {
            match item.get_ref().as_table() {
                Some(t) => out.push(self.table(t)),
                None => self.errors.push(err(
                    &item.span(),
                    format!("`{what}` entries must be tables"),
                )),
            }
        }
        out
    }

    fn field(&mut self, sym: Sym, v: &Spanned<DeValue<'_>>) -> Option<Cond> {
        let span = v.span();
        if let Some(op) = scalar(v.get_ref()) {
            return Some(Cond::Field(sym, Test::Eq(op)));
        }
        match v.get_ref() {
            DeValue::Array(_) => {
                let ops = self.operands(v)?;
                Some(Cond::Field(sym, in_test(ops)))
            }
            DeValue::Table(t) => self.ops_table(sym, t, &span),
            _ => {
                self.errors.push(err(&span, "unsupported value"));
                None
            }
        }
    }

    fn operands(&mut self, v: &Spanned<DeValue<'_>>) -> Option<Vec<Operand>> {
        let Some(arr) = v.get_ref().as_array() else {
            self.errors
                .push(err(&v.span(), "expected a list of values"));
            return None;
        };
        let mut out = Vec::new();
        for item in arr.iter() {
            match scalar(item.get_ref()) {
                Some(op) => out.push(op),
                None => self.errors.push(err(
                    &item.span(),
                    "list entries must be strings, numbers or booleans",
                )),
            }
        }
        Some(out)
    }

    fn ops_table(&mut self, sym: Sym, t: &DeTable<'_>, span: &Range<usize>) -> Option<Cond> {
        let ignore_case = t
            .get("ignore_case")
            .and_then(|v| v.get_ref().as_bool())
            .unwrap_or(false);
        let mut tests = Vec::new();
        for (key, value) in t.iter() {
            let k: &str = key.get_ref();
            if k == "ignore_case" {
                if value.get_ref().as_bool().is_none() {
                    self.errors
                        .push(err(&value.span(), "`ignore_case` must be true or false"));
                }
                continue;
            }
            if !OPS.contains(&k) {
                self.errors.push(err(
                    &key.span(),
                    format!("unknown operator `{k}` (known: {})", OPS.join(", ")),
                ));
                continue;
            }
            if let Some(test) = self.op(k, value, ignore_case) {
                tests.push(Cond::Field(sym, test));
            }
        }
        if tests.is_empty() {
            if !t.iter().any(|(k, _)| &**k.get_ref() != "ignore_case") {
                self.errors.push(err(
                    span,
                    "empty condition table: name an operator, e.g. { prefix = \"x\" }",
                ));
            }
            return None;
        }
        Some(if tests.len() == 1 {
            tests.remove(0)
        } else {
            Cond::All(tests)
        })
    }

    fn op(&mut self, op: &str, v: &Spanned<DeValue<'_>>, ignore_case: bool) -> Option<Test> {
        let span = v.span();
        let text = || v.get_ref().as_str().map(str::to_owned);
        let need_str = |errors: &mut Errors| {
            errors.push(err(&span, format!("`{op}` takes a string")));
            None
        };
        match op {
            "eq" => {
                let o = scalar(v.get_ref()).or_else(|| {
                    self.errors
                        .push(err(&span, "`eq` takes a string, number or boolean"));
                    None
                })?;
                if ignore_case {
                    self.literal_regex(&o.text, "^", "$", &span)
                } else {
                    Some(Test::Eq(o))
                }
            }
            "in" => {
                let ops = self.operands(v)?;
                if ignore_case {
                    let alts: Vec<String> = ops.iter().map(|o| regex::escape(&o.text)).collect();
                    self.regex(&format!("(?i)^(?:{})$", alts.join("|")), &span, false)
                } else {
                    Some(in_test(ops))
                }
            }
            "prefix" => match text() {
                Some(s) if ignore_case => self.literal_regex(&s, "^", "", &span),
                Some(s) => Some(Test::Prefix(s)),
                None => need_str(self.errors),
            },
            "suffix" => match text() {
                Some(s) if ignore_case => self.literal_regex(&s, "", "$", &span),
                Some(s) => Some(Test::Suffix(s)),
                None => need_str(self.errors),
            },
            "contains" => match text() {
                Some(s) if ignore_case => self.literal_regex(&s, "", "", &span),
                Some(s) => Some(Test::Contains(Box::new(
                    memmem::Finder::new(s.as_bytes()).into_owned(),
                ))),
                None => need_str(self.errors),
            },
            "regex" => match text() {
                Some(s) if ignore_case => self.regex(&format!("(?i){s}"), &span, true),
                Some(s) => self.regex(&s, &span, true),
                None => need_str(self.errors),
            },
            "exists" => match v.get_ref().as_bool() {
                Some(b) => Some(Test::Exists(b)),
                None => {
                    self.errors
                        .push(err(&span, "`exists` must be true or false"));
                    None
                }
            },
            _ => self.cmp(op, v),
        }
    }

    fn cmp(&mut self, op: &str, v: &Spanned<DeValue<'_>>) -> Option<Test> {
        let cmp = match op {
            "gt" => CmpOp::Gt,
            "gte" => CmpOp::Gte,
            "lt" => CmpOp::Lt,
            _ => CmpOp::Lte,
        };
        let o = scalar(v.get_ref());
        let n = o.as_ref().and_then(|o| {
            o.num
                .or_else(|| parse_time(&o.text).map(|t| t.as_millisecond() as f64 / 1000.0))
        });
        match n {
            Some(n) => Some(Test::Cmp(cmp, n)),
            None => {
                self.errors.push(err(
                    &v.span(),
                    format!("`{op}` takes a number or an RFC 3339 time"),
                ));
                None
            }
        }
    }

    fn literal_regex(
        &mut self,
        s: &str,
        pre: &str,
        post: &str,
        span: &Range<usize>,
    ) -> Option<Test> {
        self.regex(&format!("(?i){pre}{}{post}", regex::escape(s)), span, false)
    }

    fn regex(&mut self, pattern: &str, span: &Range<usize>, named: bool) -> Option<Test> {
        match RegexBuilder::new(pattern).size_limit(16 << 20).build() {
            Ok(re) => {
                let mut captures = Vec::new();
                if named {
                    for (i, name) in re.capture_names().enumerate() {
                        if let Some(sym) = name.and_then(Sym::try_new) {
                            captures.push((i, sym));
                            self.captures.push(sym);
                        }
                    }
                }
                Some(Test::Regex { re, captures })
            }
            Err(e) => {
                // The regex crate's message shows the expression with a caret under the
                // spot on lines of their own: kept as they are.
                self.errors
                    .push(err(span, format!("bad regular expression: {e}")));
                None
            }
        }
    }
}

fn in_test(ops: Vec<Operand>) -> Test {
    if ops.len() > 8 && ops.iter().all(|o| o.num.is_none()) {
        Test::InSet(ops.into_iter().map(|o| o.text).collect::<HashSet<_>>())
    } else {
        Test::InSmall(ops)
    }
}

fn scalar(v: &DeValue<'_>) -> Option<Operand> {
    Some(match v {
        DeValue::String(s) => Operand::new(s.as_ref()),
        DeValue::Integer(i) => {
            let n = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()?;
            Operand::new(n.to_string())
        }
        DeValue::Float(f) => Operand::new(f.as_str().replace('_', "")),
        DeValue::Boolean(b) => Operand {
            text: b.to_string(),
            num: None,
        },
        DeValue::Datetime(d) => Operand::new(d.to_string()),
        _ => return None,
    })
}
