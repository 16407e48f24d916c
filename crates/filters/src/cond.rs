//! Conditions: the compiled form of a filter's `match` table, and their evaluation.
//!
//! A condition is a closed enum ([`Cond`]) over field tests ([`Test`]). Plain string
//! tests (equals, prefix, suffix, contains via `memchr::memmem`) come before regular
//! expressions; case-insensitive string tests compile to anchored regexes.

use std::collections::HashSet;

use jiff::Timestamp;
use memchr::memmem;
use regex::Regex;
use watchpost_event::{Event, FieldRef, Sym, Value};

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Cond {
    /// Every sub-condition holds (an empty list holds).
    All(Vec<Cond>),
    /// At least one sub-condition holds.
    Any(Vec<Cond>),
    /// The sub-condition does not hold.
    Not(Box<Cond>),
    /// A test on one field.
    Field(Sym, Test),
}

/// A literal to compare with, kept in every form a field may take.
#[derive(Debug, Clone, PartialEq)]
pub struct Operand {
    /// The text form (`5`, `true`, `System Infected: x`).
    pub text: String,
    /// The numeric form, when the literal is a number.
    pub num: Option<f64>,
}

impl Operand {
    /// An operand from text, with its number if it is one.
    pub fn new(text: impl Into<String>) -> Operand {
        let text = text.into();
        let num = watchpost_event::parse_number(&text);
        Operand { text, num }
    }

    fn matches(&self, v: FieldRef<'_>) -> bool {
        match v {
            FieldRef::Str(s) => s == self.text,
            FieldRef::Int(i) => self.num == Some(i as f64),
            FieldRef::Bool(b) => self.text == if b { "true" } else { "false" },
            FieldRef::Time(t) => parse_time(&self.text) == Some(t),
        }
    }
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
}

/// A test on one field's value.
#[derive(Debug, Clone)]
pub enum Test {
    /// Equal to the literal (integers and numeric text compare as numbers).
    Eq(Operand),
    /// Equal to one of a few literals.
    InSmall(Vec<Operand>),
    /// Equal to one of many strings (hash lookup).
    InSet(HashSet<String>),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(Box<memmem::Finder<'static>>),
    /// Matches a regular expression; named captures become fields when the filter fires.
    Regex {
        /// The expression.
        re: Regex,
        /// Capture group index → field to set.
        captures: Vec<(usize, Sym)>,
    },
    /// Numeric (or time) comparison.
    Cmp(CmpOp, f64),
    /// The field exists (`true`) or does not (`false`).
    Exists(bool),
}

/// Named captures collected while a filter is evaluated, applied only if it fires.
pub type Captures = Vec<(Sym, String)>;

impl Cond {
    /// Whether `event` satisfies the condition; regex captures are pushed to `caps`.
    pub fn eval(&self, event: &Event, caps: &mut Captures) -> bool {
        match self {
            Cond::All(cs) => cs.iter().all(|c| c.eval(event, caps)),
            Cond::Any(cs) => cs.iter().any(|c| c.eval(event, caps)),
            Cond::Not(c) => {
                let mark = caps.len();
                let r = !c.eval(event, caps);
                caps.truncate(mark);
                r
            }
            Cond::Field(sym, test) => test.eval(event.get(*sym), caps),
        }
    }

    /// Every field the condition reads.
    pub fn fields(&self, out: &mut Vec<Sym>) {
        match self {
            Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| c.fields(out)),
            Cond::Not(c) => c.fields(out),
            Cond::Field(sym, _) => out.push(*sym),
        }
    }

    /// If the condition requires `source` to be one of some names, those names.
    /// Used to skip filters for events of other sources without evaluating them.
    pub fn required_sources(&self) -> Option<Vec<&str>> {
        match self {
            Cond::Field(Sym::SOURCE, Test::Eq(op)) => Some(vec![op.text.as_str()]),
            Cond::Field(Sym::SOURCE, Test::InSmall(ops)) => {
                Some(ops.iter().map(|o| o.text.as_str()).collect())
            }
            Cond::Field(Sym::SOURCE, Test::InSet(set)) => {
                Some(set.iter().map(|s| s.as_str()).collect())
            }
            Cond::All(cs) => cs.iter().find_map(|c| c.required_sources()),
            _ => None,
        }
    }
}

impl Cond {
    /// The condition without the `source` test that [`Cond::required_sources`] found, for use
    /// inside a plan that only runs for those sources. `None` when there is nothing to strip
    /// or more than one such test (then the condition is used as it is).
    pub fn without_source_test(&self) -> Option<Cond> {
        fn is_source_test(c: &Cond) -> bool {
            matches!(
                c,
                Cond::Field(Sym::SOURCE, Test::Eq(_) | Test::InSmall(_) | Test::InSet(_))
            )
        }
        fn count(c: &Cond) -> usize {
            match c {
                c if is_source_test(c) => 1,
                Cond::All(cs) => cs.iter().map(count).sum(),
                _ => 0,
            }
        }
        fn strip(c: &Cond) -> Cond {
            match c {
                c if is_source_test(c) => Cond::All(Vec::new()),
                Cond::All(cs) => {
                    let mut kept: Vec<Cond> = cs
                        .iter()
                        .filter(|c| !is_source_test(c))
                        .map(strip)
                        .collect();
                    if kept.len() == 1 {
                        kept.remove(0)
                    } else {
                        Cond::All(kept)
                    }
                }
                other => other.clone(),
            }
        }
        (count(self) == 1).then(|| strip(self))
    }
}

impl Test {
    fn eval(&self, value: Option<FieldRef<'_>>, caps: &mut Captures) -> bool {
        if let Test::Exists(want) = self {
            return value.is_some() == *want;
        }
        let Some(v) = value else { return false };
        match self {
            Test::Eq(op) => op.matches(v),
            Test::InSmall(ops) => ops.iter().any(|op| op.matches(v)),
            Test::InSet(set) => set.contains(v.text().as_ref()),
            Test::Prefix(p) => v.text().starts_with(p.as_str()),
            Test::Suffix(s) => v.text().ends_with(s.as_str()),
            Test::Contains(f) => f.find(v.text().as_bytes()).is_some(),
            Test::Regex { re, captures } => regex_eval(re, captures, &v.text(), caps),
            Test::Cmp(op, n) => compare(v, *op, *n),
            Test::Exists(_) => unreachable_exists(),
        }
    }
}

// `Exists` returns before the match; this keeps the match exhaustive without a panic path.
fn unreachable_exists() -> bool {
    false
}

fn regex_eval(re: &Regex, captures: &[(usize, Sym)], text: &str, caps: &mut Captures) -> bool {
    if captures.is_empty() {
        return re.is_match(text);
    }
    let Some(c) = re.captures(text) else {
        return false;
    };
    for (i, sym) in captures {
        if let Some(m) = c.get(*i) {
            caps.push((*sym, m.as_str().to_owned()));
        }
    }
    true
}

fn compare(v: FieldRef<'_>, op: CmpOp, n: f64) -> bool {
    let x = match v {
        FieldRef::Str(s) => match watchpost_event::parse_number(s) {
            Some(x) => x,
            None => match parse_time(s) {
                Some(t) => t.as_millisecond() as f64 / 1000.0,
                None => return false,
            },
        },
        other => match other.as_f64() {
            Some(x) => x,
            None => return false,
        },
    };
    match op {
        CmpOp::Gt => x > n,
        CmpOp::Gte => x >= n,
        CmpOp::Lt => x < n,
        CmpOp::Lte => x <= n,
    }
}

/// Parses an RFC 3339 time (`2024-05-01T10:00:00Z`).
pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.trim().parse::<Timestamp>().ok()
}

/// Applies collected captures to the event.
pub fn apply_captures(event: &mut Event, caps: &mut Captures) {
    for (sym, text) in caps.drain(..) {
        event.set(sym, Value::Str(text.into_boxed_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Event {
        let mut e = Event::new("sep-ips".into(), "pc1".into(), String::new());
        e.push(
            Sym::new("signature_name"),
            Value::Static("System Infected: Tidserv Activity"),
        );
        e.push(Sym::new("event_code"), Value::Static("5"));
        e.push(Sym::new("count_i"), Value::Int(12));
        e.push(Sym::new("hexv"), Value::Static("0x10"));
        e.finish();
        e
    }

    fn field(name: &str, t: Test) -> Cond {
        Cond::Field(Sym::new(name), t)
    }

    #[test]
    fn string_tests() {
        let e = ev();
        let mut c = Vec::new();
        assert!(field("signature_name", Test::Prefix("System Infected:".into())).eval(&e, &mut c));
        assert!(field("signature_name", Test::Suffix("Activity".into())).eval(&e, &mut c));
        let f = Box::new(memmem::Finder::new("Tidserv").into_owned());
        assert!(field("signature_name", Test::Contains(f)).eval(&e, &mut c));
        assert!(!field("signature_name", Test::Prefix("Web Attack:".into())).eval(&e, &mut c));
        assert!(field("source", Test::Eq(Operand::new("sep-ips"))).eval(&e, &mut c));
    }

    #[test]
    fn numbers_compare_across_types() {
        let e = ev();
        let mut c = Vec::new();
        assert!(field("event_code", Test::Eq(Operand::new("5"))).eval(&e, &mut c));
        assert!(field("count_i", Test::Eq(Operand::new("12"))).eval(&e, &mut c));
        assert!(field("count_i", Test::Cmp(CmpOp::Gt, 10.0)).eval(&e, &mut c));
        assert!(field("hexv", Test::Cmp(CmpOp::Gte, 16.0)).eval(&e, &mut c));
        assert!(!field("signature_name", Test::Cmp(CmpOp::Gt, 1.0)).eval(&e, &mut c));
    }

    #[test]
    fn regex_captures_and_combinators() {
        let e = ev();
        let mut c = Vec::new();
        let re = Regex::new(r"Infected: (?P<family>\w+)").unwrap();
        let t = Test::Regex {
            re,
            captures: vec![(1, Sym::new("family"))],
        };
        let cond = Cond::All(vec![
            field("signature_name", t),
            Cond::Not(Box::new(field("missing", Test::Exists(true)))),
        ]);
        assert!(cond.eval(&e, &mut c));
        assert_eq!(c, vec![(Sym::new("family"), "Tidserv".to_owned())]);
        let mut e2 = e.clone();
        apply_captures(&mut e2, &mut c);
        assert_eq!(e2.get_str(Sym::new("family")).unwrap(), "Tidserv");
        assert!(!Cond::Any(vec![]).eval(&e, &mut c));
    }

    #[test]
    fn required_sources_found_in_all() {
        let c = Cond::All(vec![
            field("x", Test::Exists(true)),
            Cond::Field(Sym::SOURCE, Test::Eq(Operand::new("sep-av"))),
        ]);
        assert_eq!(c.required_sources(), Some(vec!["sep-av"]));
        assert_eq!(field("x", Test::Exists(true)).required_sources(), None);
    }
}
