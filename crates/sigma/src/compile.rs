//! A rule's `detection` compiled into a [`Cond`] tree over event fields.

use std::collections::HashMap;

use serde_json::Value as Json;
use watchpost_event::{Event, FieldRef, Sym};

use crate::condition::{self, Expr};
use crate::pattern::{self, Cidr, LazyRegex, Pat, Tok};

/// A hash map with a fast hasher for the maps loading builds (their keys come from the
/// rules, not from events).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Dense numbering of the event fields a rule set reads, for the per-event cache of
/// folded (lowercased) values.
#[derive(Default, Debug)]
pub(crate) struct Slots {
    /// (field, System field read when the event lacks it) → slot.
    map: FastMap<(Sym, Option<Sym>), u32>,
}

impl Slots {
    pub(crate) fn slot(&mut self, sym: Sym, alt: Option<Sym>) -> u32 {
        let n = self.map.len() as u32;
        *self.map.entry((sym, alt)).or_insert(n)
    }
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The slot of (field, System fallback), if numbered.
    pub(crate) fn get(&self, sym: Sym, alt: Option<Sym>) -> Option<u32> {
        self.map.get(&(sym, alt)).copied()
    }

    /// (field, System fallback) of each slot, in slot order.
    pub(crate) fn syms(&self) -> Vec<(Sym, Option<Sym>)> {
        let mut v = vec![(Sym::SOURCE, None); self.map.len()];
        for (k, slot) in &self.map {
            v[*slot as usize] = *k;
        }
        v
    }
}

/// Per-thread scratch for evaluation: folded field values of the current event, which
/// rule forms its needles selected, and the candidate plans of the (channel, event id,
/// provider) keys met so far.
#[derive(Default)]
pub struct Scratch {
    epoch: u32,
    folded: Vec<(u32, String)>,
    tmp: String,
    /// The current event's lowercased channel and provider (index keys).
    pub(crate) key: String,
    pub(crate) provider: String,
    /// Epoch per rule form: whether one of its needles occurs in the current event.
    pub(crate) marks: Vec<u32>,
    /// The ruleset the plans below were made for ([`crate::Ruleset`]'s serial number).
    pub(crate) owner: u64,
    /// Candidate plans by key (see `Ruleset::plan`).
    pub(crate) plans: HashMap<Box<[u8]>, std::sync::Arc<Plan>, foldhash::fast::FixedState>,
    /// The current event's plan key.
    pub(crate) plan_key: Vec<u8>,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("plans", &self.plans.len())
            .finish_non_exhaustive()
    }
}

/// What an event of one (channel, event id, provider) is tested against: the rule forms
/// the index files under that key, in rule order (each with [`Plan::NEEDLED`] set when
/// it is evaluated only if one of its needles occurs), and the field slots whose needles
/// those forms use.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) cands: Box<[u32]>,
    pub(crate) slots: Box<[u32]>,
}

impl Plan {
    /// Flag bit of a candidate that needs one of its needles.
    pub(crate) const NEEDLED: u32 = 1 << 31;
}

impl Scratch {
    /// A new, empty scratch.
    pub fn new() -> Scratch {
        Scratch::default()
    }

    pub(crate) fn next_event(&mut self, slots: usize, variants: usize) {
        if self.folded.len() < slots {
            self.folded.resize_with(slots, || (0, String::new()));
        }
        if self.marks.len() < variants {
            self.marks.resize(variants, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.folded.iter_mut().for_each(|f| f.0 = 0);
            self.marks.iter_mut().for_each(|f| *f = 0);
            self.epoch = 1;
        }
    }

    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The folded text of the current event's field in `slot` (folded now if not yet).
    fn folded_mut(&mut self, slot: u32, text: &str) -> &mut String {
        let e = &mut self.folded[slot as usize];
        if e.0 != self.epoch {
            pattern::fold_into(text, &mut e.1);
            e.0 = self.epoch;
        }
        &mut e.1
    }
}

/// The needle prefilter: per field, one Aho-Corasick automaton over the (folded)
/// literals that rules require in that field. A rule form whose required needles are
/// all absent from the event is skipped without evaluating its condition.
///
/// Per event, each field some candidate needs a needle in is scanned once, and every
/// needle found marks the rule forms that carry it (so the cost follows the needles that
/// occur, not the number of candidates and their needles).
///
/// Each field's automaton is built the first time an event's field is scanned (a
/// contiguous NFA: building DFAs for every field of thousands of rules took a fifth of
/// loading them and most of the memory, and most fields never occur in a given hunt).
#[derive(Default)]
pub(crate) struct Needles {
    ids: FastMap<(u32, String), u32>,
    /// needle id → slot.
    slot_of: Vec<u32>,
    /// per slot: its needles.
    per_slot: Vec<Option<SlotNeedles>>,
    /// needle id → the rule forms that carry it.
    forms_of: Vec<Box<[u32]>>,
}

struct SlotNeedles {
    sym: Sym,
    /// The literals, in automaton pattern order.
    lits: Vec<String>,
    /// automaton pattern → needle id.
    ids: Vec<u32>,
    /// Built at first use; `None` if it could not be built (every needle then counts as
    /// present: no prefilter for that field).
    ac: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>>,
}

impl Needles {
    pub(crate) fn intern(&mut self, slot: u32, lit: String) -> u32 {
        let n = self.ids.len() as u32;
        let id = *self.ids.entry((slot, lit)).or_insert(n);
        if id == n {
            self.slot_of.push(slot);
        }
        id
    }

    /// The slot of needle `id`.
    pub(crate) fn slot_of(&self, id: u32) -> u32 {
        self.slot_of[id as usize]
    }

    /// Builds the per-slot needle lists and, from each form's needles (`forms[i]` are
    /// form `i`'s), the forms of each needle.
    pub(crate) fn build<'a>(
        &mut self,
        slots: &Slots,
        forms: impl Iterator<Item = &'a [u32]>,
    ) -> Result<(), String> {
        let mut by_slot: Vec<Vec<(String, u32)>> = vec![Vec::new(); slots.len()];
        for ((slot, lit), id) in self.ids.drain() {
            by_slot[slot as usize].push((lit, id));
        }
        let mut sym_of = vec![None; slots.len()];
        for ((sym, alt), slot) in &slots.map {
            if alt.is_none() {
                sym_of[*slot as usize] = Some(*sym);
            }
        }
        self.per_slot = Vec::with_capacity(slots.len());
        for (slot, mut lits) in by_slot.into_iter().enumerate() {
            if lits.is_empty() {
                self.per_slot.push(None);
                continue;
            }
            lits.sort_by_key(|(_, id)| *id);
            let sym = sym_of[slot].ok_or("slot without field")?;
            let (lits, ids) = lits.into_iter().unzip();
            self.per_slot.push(Some(SlotNeedles {
                sym,
                lits,
                ids,
                ac: std::sync::OnceLock::new(),
            }));
        }
        let mut forms_of: Vec<Vec<u32>> = vec![Vec::new(); self.slot_of.len()];
        for (form, needles) in forms.enumerate() {
            for &n in needles {
                forms_of[n as usize].push(form as u32);
            }
        }
        self.forms_of = forms_of.into_iter().map(Vec::into_boxed_slice).collect();
        Ok(())
    }

    /// Scans the current event's field in `slot` once: every needle of that field that
    /// occurs marks its forms in `sc.marks`.
    pub(crate) fn scan(&self, ev: &Event, sc: &mut Scratch, slot: u32) {
        let Some(n) = &self.per_slot[slot as usize] else {
            return;
        };
        let Some(v) = ev.get(n.sym) else {
            return;
        };
        let raw = text(&v);
        let epoch = sc.epoch;
        let e = &mut sc.folded[slot as usize];
        if e.0 != epoch {
            pattern::fold_into(&raw, &mut e.1);
            e.0 = epoch;
        }
        let ac = n.ac.get_or_init(|| {
            aho_corasick::AhoCorasick::builder()
                .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
                .build(&n.lits)
                .ok()
        });
        let marks = &mut sc.marks;
        let mut mark = |id: u32| {
            for &f in &self.forms_of[id as usize] {
                marks[f as usize] = epoch;
            }
        };
        match ac {
            Some(ac) => {
                for m in ac.find_overlapping_iter(e.1.as_str()) {
                    mark(n.ids[m.pattern().as_usize()]);
                }
            }
            None => n.ids.iter().for_each(|&i| mark(i)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cmp {
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RefKind {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

/// One test of one value.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // tests live in a few long-lived vectors; inline is faster
pub(crate) enum Test {
    /// Wildcard pattern; on the folded value unless `cased`.
    Str {
        pat: Pat,
        cased: bool,
    },
    Re(LazyRegex),
    Num(Cmp, f64),
    Cidr(Cidr),
    /// `null`: absent or empty.
    Null,
    Exists(bool),
    FieldRef {
        other: Sym,
        kind: RefKind,
        cased: bool,
    },
    /// `neq`: the value matches none of these.
    NoneOf(Vec<Test>),
    /// `minute`/`hour`/`day`/`week`/`month`/`year` of a timestamp value (UTC), equal to
    /// or compared with the number.
    TimePart {
        part: TimePart,
        cmp: Option<Cmp>,
        n: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum TimePart {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

fn cmp(op: Cmp, v: f64, n: f64) -> bool {
    match op {
        Cmp::Lt => v < n,
        Cmp::Lte => v <= n,
        Cmp::Gt => v > n,
        Cmp::Gte => v >= n,
    }
}

/// Tests on one field; true when any test holds (an `all` list compiles to an `And`
/// of single-value field tests).
#[derive(Debug)]
pub(crate) struct FieldTest {
    pub(crate) sym: Sym,
    /// The System field read when the event has no `sym` (a Sigma System name such as
    /// `Level` that EventData may also carry).
    pub(crate) alt: Option<Sym>,
    /// `Data` on a Windows event: when the event has no field of that name, any of its
    /// unnamed `<Data>` values (`str1` … `strN`), as Hayabusa reads `Data`.
    pub(crate) positional: bool,
    pub(crate) slot: u32,
    pub(crate) tests: Vec<Test>,
}

/// Keyword search: any field value matches any of `tests`. When every keyword is a
/// plain ASCII literal (the usual case: `- 'sekurlsa::'`), one ASCII-case-insensitive
/// Aho-Corasick automaton over them scans each ASCII value once instead of folding it and
/// running each keyword's search in turn (a keyword rule meets every event of a hunt).
#[derive(Debug)]
pub(crate) struct Keywords {
    tests: Vec<Test>,
    /// The literals, when every test is one.
    lits: Option<Vec<String>>,
    ac: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>>,
}

impl Keywords {
    fn automaton(&self) -> Option<&aho_corasick::AhoCorasick> {
        self.ac
            .get_or_init(|| {
                let lits = self.lits.as_ref()?;
                aho_corasick::AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(lits)
                    .ok()
            })
            .as_ref()
    }
}

/// A compiled condition.
#[derive(Debug)]
pub(crate) enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Field(FieldTest),
    /// Keyword search: any field value matches any pattern.
    Keywords(Keywords),
    Const(bool),
}

fn text<'a>(v: &FieldRef<'a>) -> std::borrow::Cow<'a, str> {
    v.text()
}

impl Test {
    /// Tests the value's text as written (folded string tests are done by the caller,
    /// which caches the folded text).
    fn eval_raw(&self, ev: &Event, raw: &str) -> bool {
        match self {
            Test::Str { pat, cased: true } => pat.is_match(raw),
            Test::Str { pat, cased: false } => pat.is_match(&pattern::fold(raw)),
            Test::Re(r) => r.is_match(raw),
            Test::Num(op, n) => watchpost_event::parse_number(raw).is_some_and(|v| cmp(*op, v, *n)),
            Test::NoneOf(tests) => !tests.iter().any(|t| t.eval_raw(ev, raw)),
            Test::TimePart { part, cmp: op, n } => {
                let Ok(ts) = raw.trim().parse::<jiff::Timestamp>() else {
                    return false;
                };
                let z = ts.to_zoned(jiff::tz::TimeZone::UTC);
                let v = match part {
                    TimePart::Minute => z.minute() as f64,
                    TimePart::Hour => z.hour() as f64,
                    TimePart::Day => z.day() as f64,
                    TimePart::Week => z.date().iso_week_date().week() as f64,
                    TimePart::Month => z.month() as f64,
                    TimePart::Year => z.year() as f64,
                };
                match op {
                    Some(op) => cmp(*op, v, *n),
                    None => v == *n,
                }
            }
            Test::Cidr(c) => c.contains(raw),
            Test::Null => raw.is_empty(),
            Test::Exists(b) => *b,
            Test::FieldRef { other, kind, cased } => match ev.get(*other) {
                None => false,
                Some(o) => {
                    let o = text(&o);
                    let (a, b) = if *cased {
                        (raw.to_string(), o.into_owned())
                    } else {
                        (pattern::fold(raw), pattern::fold(&o))
                    };
                    match kind {
                        RefKind::Exact => a == b,
                        RefKind::Prefix => a.starts_with(&b),
                        RefKind::Suffix => a.ends_with(&b),
                        RefKind::Contains => a.contains(&b),
                    }
                }
            },
        }
    }
}

impl Cond {
    pub(crate) fn eval(&self, ev: &Event, sc: &mut Scratch) -> bool {
        match self {
            Cond::And(v) => v.iter().all(|c| c.eval(ev, sc)),
            Cond::Or(v) => v.iter().any(|c| c.eval(ev, sc)),
            Cond::Not(c) => !c.eval(ev, sc),
            Cond::Const(b) => *b,
            Cond::Field(f) => f.eval(ev, sc),
            Cond::Keywords(kw) => {
                let tests = &kw.tests;
                let ac = kw.automaton();
                let mut tmp = std::mem::take(&mut sc.tmp);
                let hit = ev.fields().any(|(_, v)| {
                    let raw = text(&v);
                    if let Some(ac) = ac
                        && raw.is_ascii()
                    {
                        return ac.is_match(raw.as_bytes());
                    }
                    let mut done = false;
                    tests.iter().any(|t| match t {
                        Test::Str { pat, cased: false } => {
                            if !done {
                                pattern::fold_into(&raw, &mut tmp);
                                done = true;
                            }
                            pat.is_match(&tmp)
                        }
                        Test::Str { pat, cased: true } => pat.is_match(&raw),
                        Test::Re(r) => r.is_match(&raw),
                        _ => false,
                    })
                });
                sc.tmp = tmp;
                hit
            }
        }
    }

    /// Renumbers field slots (a rule compiled on a worker thread with its own slots
    /// joining the set's): slot `i` becomes `map[i]`.
    pub(crate) fn remap_slots(&mut self, map: &[u32]) {
        match self {
            Cond::And(v) | Cond::Or(v) => v.iter_mut().for_each(|c| c.remap_slots(map)),
            Cond::Not(c) => c.remap_slots(map),
            Cond::Field(f) => f.slot = map[f.slot as usize],
            Cond::Keywords(_) | Cond::Const(_) => {}
        }
    }

    /// Fields whose tests hold on `ev` (for [`crate::Match::fields`]).
    pub(crate) fn matched_fields(&self, ev: &Event, sc: &mut Scratch, out: &mut Vec<Sym>) {
        match self {
            Cond::And(v) | Cond::Or(v) => v.iter().for_each(|c| c.matched_fields(ev, sc, out)),
            Cond::Field(f) => {
                let sym = match f.alt {
                    Some(a) if ev.get(f.sym).is_none() => a,
                    _ => f.sym,
                };
                if ev.get(sym).is_some() && f.eval(ev, sc) && !out.contains(&sym) {
                    out.push(sym);
                }
            }
            _ => {}
        }
    }

    /// Needles (field slot, folded literal) of which at least one occurs in every event
    /// the condition matches, when there is such a set. Tests of the fields in `skip`
    /// (those the index already decides: channel, event id, provider) give none: every
    /// candidate has them, so they would filter nothing.
    pub(crate) fn required(&self, skip: &[Sym]) -> Option<Vec<(u32, &str)>> {
        match self {
            Cond::Field(f) if f.alt.is_none() && !f.positional && !skip.contains(&f.sym) => {
                let mut out = Vec::new();
                for t in &f.tests {
                    match t {
                        Test::Str { pat, cased: false } => out.push((f.slot, pat.literal()?)),
                        _ => return None,
                    }
                }
                (!out.is_empty()).then_some(out)
            }
            Cond::And(v) => v.iter().filter_map(|c| c.required(skip)).min_by_key(|r| {
                r.iter()
                    .map(|(_, l)| 64usize.saturating_sub(l.len()))
                    .sum::<usize>()
            }),
            Cond::Or(v) => {
                let mut out = Vec::new();
                for c in v {
                    out.extend(c.required(skip)?);
                }
                (!out.is_empty()).then_some(out)
            }
            _ => None,
        }
    }

    /// Event ids every match must have, when the condition pins them.
    pub(crate) fn pinned_ids(&self, event_id: Sym) -> Option<Vec<i64>> {
        self.pinned(event_id)?
            .iter()
            .map(|s| s.parse::<i64>().ok())
            .collect()
    }

    /// Values (lowercased unless the test is cased) one of which field `sym` must equal
    /// in every match, when the condition pins them.
    pub(crate) fn pinned(&self, sym: Sym) -> Option<Vec<String>> {
        match self {
            Cond::Field(f) if f.sym == sym && f.alt.is_none() => {
                let mut vals = Vec::new();
                for t in &f.tests {
                    match t {
                        Test::Str {
                            pat: Pat::Exact(s), ..
                        } => vals.push(s.to_string()),
                        _ => return None,
                    }
                }
                Some(vals)
            }
            Cond::And(v) => v.iter().find_map(|c| c.pinned(sym)),
            Cond::Or(v) => {
                let mut vals = Vec::new();
                for c in v {
                    vals.extend(c.pinned(sym)?);
                }
                vals.sort();
                vals.dedup();
                Some(vals)
            }
            _ => None,
        }
    }
}

impl FieldTest {
    fn eval(&self, ev: &Event, sc: &mut Scratch) -> bool {
        let v = match ev
            .get(self.sym)
            .or_else(|| self.alt.and_then(|a| ev.get(a)))
        {
            None if self.positional && ev.get(positional(0)).is_some() => {
                let mut folded = std::mem::take(&mut sc.tmp);
                let mut hit = false;
                for i in 0..MAX_POSITIONAL {
                    let Some(v) = ev.get(positional(i)) else {
                        break;
                    };
                    let raw = text(&v);
                    pattern::fold_into(&raw, &mut folded);
                    if self.eval_text(ev, &raw, &folded) {
                        hit = true;
                        break;
                    }
                }
                sc.tmp = folded;
                return hit;
            }
            None => {
                return self
                    .tests
                    .iter()
                    .any(|t| matches!(t, Test::Null | Test::Exists(false)));
            }
            Some(v) => v,
        };
        let raw = text(&v);
        let folded = std::mem::take(sc.folded_mut(self.slot, &raw));
        let hit = self.eval_text(ev, &raw, &folded);
        *sc.folded_mut(self.slot, &raw) = folded;
        hit
    }

    /// The tests on one value, as written and folded.
    fn eval_text(&self, ev: &Event, raw: &str, folded: &str) -> bool {
        self.tests.iter().any(|t| match t {
            Test::Str { pat, cased: false } => pat.is_match(folded),
            Test::Exists(b) => *b,
            other => other.eval_raw(ev, raw),
        })
    }
}

/// Most unnamed `<Data>` values a `Data` test reads (the EVTX reader keeps 512).
const MAX_POSITIONAL: usize = 512;

/// The field of the `i`-th (from 0) unnamed `<Data>` value: `str1`, `str2`, ….
fn positional(i: usize) -> Sym {
    static SYMS: std::sync::OnceLock<Vec<Sym>> = std::sync::OnceLock::new();
    SYMS.get_or_init(|| {
        (1..=MAX_POSITIONAL)
            .map(|n| Sym::new(&format!("str{n}")))
            .collect()
    })[i]
}

/// How Sigma field names become event fields.
pub(crate) struct Names<'a> {
    pub(crate) renames: &'a [&'a [(&'a str, &'a str)]],
    /// Sigma names read from the event's field of that name, else from a System field.
    pub(crate) fallbacks: &'a [(&'a str, &'a str)],
    /// Values of `%name%` placeholders (the `expand` modifier).
    pub(crate) vars: &'a crate::Placeholders,
}

impl Names<'_> {
    /// The event field for a Sigma field name, and the System field to read when the
    /// event lacks it.
    fn field(&self, name: &str) -> (Sym, Option<Sym>) {
        let sym = self.sym(name);
        let alt = self
            .fallbacks
            .iter()
            .find(|(from, _)| *from == name)
            .map(|(_, to)| Sym::new(to));
        (sym, alt)
    }

    fn sym(&self, name: &str) -> Sym {
        for table in self.renames {
            if let Some((_, to)) = table.iter().find(|(from, _)| *from == name) {
                return Sym::new(to);
            }
        }
        Sym::new(name)
    }
}

/// Compiles a rule's `detection` mapping.
pub(crate) fn compile_detection(
    detection: &serde_json::Map<String, Json>,
    names: &Names<'_>,
    slots: &mut Slots,
) -> Result<Cond, String> {
    let cond = match detection.get("condition") {
        Some(Json::String(s)) => condition::parse(s)?,
        Some(Json::Array(v)) => {
            let mut alts = Vec::new();
            for c in v {
                match c {
                    Json::String(s) => alts.push(condition::parse(s)?),
                    _ => return Err("condition list entries must be strings".into()),
                }
            }
            Expr::Or(alts)
        }
        Some(_) => return Err("condition must be a string".into()),
        // Hayabusa reads a detection with one identifier and no condition as that
        // identifier (some of its rules are written so).
        None => {
            let mut ids = detection.keys().filter(|k| *k != "timeframe");
            match (ids.next(), ids.next()) {
                (Some(only), None) => Expr::Id(only.clone()),
                _ => return Err("detection has no condition".into()),
            }
        }
    };
    if detection.contains_key("timeframe") {
        return Err("`timeframe` in a detection (deprecated aggregation) is not supported".into());
    }
    let mut idents = HashMap::new();
    for (k, v) in detection {
        if k == "condition" {
            continue;
        }
        idents.insert(k.as_str(), v);
    }
    lower_expr(&cond, &idents, names, slots)
}

fn lower_expr(
    e: &Expr,
    idents: &HashMap<&str, &Json>,
    names: &Names<'_>,
    slots: &mut Slots,
) -> Result<Cond, String> {
    Ok(match e {
        Expr::Id(id) => {
            let v = idents
                .get(id.as_str())
                .ok_or_else(|| format!("condition names unknown identifier `{id}`"))?;
            compile_ident(v, names, slots).map_err(|m| format!("{id}: {m}"))?
        }
        Expr::Not(x) => Cond::Not(Box::new(lower_expr(x, idents, names, slots)?)),
        Expr::And(v) => Cond::And(
            v.iter()
                .map(|x| lower_expr(x, idents, names, slots))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Or(v) => Cond::Or(
            v.iter()
                .map(|x| lower_expr(x, idents, names, slots))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Of { all, pattern } => {
            let mut ids: Vec<&str> = idents
                .keys()
                .copied()
                .filter(|k| condition::pattern_matches(pattern, k))
                .collect();
            ids.sort_unstable();
            if ids.is_empty() {
                return Err(format!("`of {pattern}` matches no identifier"));
            }
            let parts = ids
                .iter()
                .map(|id| lower_expr(&Expr::Id(id.to_string()), idents, names, slots))
                .collect::<Result<Vec<_>, _>>()?;
            if *all {
                Cond::And(parts)
            } else {
                Cond::Or(parts)
            }
        }
    })
}

fn compile_ident(v: &Json, names: &Names<'_>, slots: &mut Slots) -> Result<Cond, String> {
    match v {
        Json::Object(m) => compile_map(m, names, slots),
        Json::Array(items) => {
            if items.iter().all(|i| !i.is_object() && !i.is_array()) {
                return keywords(items);
            }
            let parts = items
                .iter()
                .map(|i| match i {
                    Json::Object(m) => compile_map(m, names, slots),
                    other => keywords(std::slice::from_ref(other)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Cond::Or(parts))
        }
        Json::Null => Err("identifier has no value".into()),
        scalar => keywords(std::slice::from_ref(scalar)),
    }
}

fn scalar_text(v: &Json) -> Result<String, String> {
    match v {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("expected a plain value, found {v}")),
    }
}

fn keywords(items: &[Json]) -> Result<Cond, String> {
    let mut tests = Vec::with_capacity(items.len());
    for i in items {
        let mut toks = pattern::tokenize(&scalar_text(i)?);
        if toks.first() != Some(&Tok::Star) {
            toks.insert(0, Tok::Star);
        }
        if toks.last() != Some(&Tok::Star) {
            toks.push(Tok::Star);
        }
        tests.push(Test::Str {
            pat: Pat::compile(&toks, true)?,
            cased: false,
        });
    }
    let lits = tests
        .iter()
        .map(|t| match t {
            Test::Str {
                pat: Pat::Contains(f),
                cased: false,
            } => std::str::from_utf8(f.needle())
                .ok()
                .filter(|l| l.is_ascii() && !l.is_empty())
                .map(str::to_string),
            _ => None,
        })
        .collect::<Option<Vec<String>>>();
    Ok(Cond::Keywords(Keywords {
        tests,
        lits,
        ac: std::sync::OnceLock::new(),
    }))
}

fn compile_map(
    m: &serde_json::Map<String, Json>,
    names: &Names<'_>,
    slots: &mut Slots,
) -> Result<Cond, String> {
    let mut parts = Vec::new();
    for (k, v) in m {
        parts.push(compile_field(k, v, names, slots)?);
    }
    Ok(if parts.len() == 1 {
        parts.pop().unwrap_or(Cond::Const(true))
    } else {
        Cond::And(parts)
    })
}

#[derive(Default)]
struct Mods {
    contains: bool,
    starts: bool,
    ends: bool,
    all: bool,
    cased: bool,
    re: bool,
    re_flags: String,
    cidr: bool,
    exists: bool,
    fieldref: bool,
    cmp: Option<Cmp>,
    neq: bool,
    expand: bool,
    time_part: Option<TimePart>,
    /// Value transformations in the order written.
    transforms: Vec<&'static str>,
}

fn parse_mods(list: &[&str]) -> Result<Mods, String> {
    let mut m = Mods::default();
    for &x in list {
        match x {
            "contains" => m.contains = true,
            "startswith" => m.starts = true,
            "endswith" => m.ends = true,
            "all" => m.all = true,
            "cased" => m.cased = true,
            "re" => m.re = true,
            "i" | "m" | "s" if m.re => m.re_flags.push_str(x),
            "cidr" => m.cidr = true,
            "exists" => m.exists = true,
            "fieldref" => m.fieldref = true,
            "lt" => m.cmp = Some(Cmp::Lt),
            "lte" => m.cmp = Some(Cmp::Lte),
            "gt" => m.cmp = Some(Cmp::Gt),
            "gte" => m.cmp = Some(Cmp::Gte),
            "neq" => m.neq = true,
            "minute" => m.time_part = Some(TimePart::Minute),
            "hour" => m.time_part = Some(TimePart::Hour),
            "day" => m.time_part = Some(TimePart::Day),
            "week" => m.time_part = Some(TimePart::Week),
            "month" => m.time_part = Some(TimePart::Month),
            "year" => m.time_part = Some(TimePart::Year),
            "base64" => m.transforms.push("base64"),
            "base64offset" => m.transforms.push("base64offset"),
            "wide" | "utf16le" => m.transforms.push("utf16le"),
            "utf16be" => m.transforms.push("utf16be"),
            "utf16" => m.transforms.push("utf16"),
            "windash" => m.transforms.push("windash"),
            "expand" => m.expand = true,
            other => return Err(format!("unknown modifier `{other}`")),
        }
    }
    Ok(m)
}

fn compile_field(
    key: &str,
    v: &Json,
    names: &Names<'_>,
    slots: &mut Slots,
) -> Result<Cond, String> {
    let mut it = key.split('|');
    let field = it.next().unwrap_or("");
    let mod_list: Vec<&str> = it.collect();
    let mods = parse_mods(&mod_list)?;
    let values: Vec<&Json> = match v {
        Json::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if field.is_empty() {
        // `|contains: x` without a field name: keyword search.
        let mut items: Vec<Json> = Vec::new();
        for v in values {
            if mods.expand {
                for alt in names.vars.expand(&scalar_text(v)?)? {
                    items.push(Json::String(alt));
                }
            } else {
                items.push(v.clone());
            }
        }
        return keywords(&items);
    }
    let (sym, alt) = names.field(field);
    let slot = slots.slot(sym, alt);
    // Windows targets (the only ones with fallbacks) read `Data` as Hayabusa does.
    let positional = field == "Data" && !names.fallbacks.is_empty();
    let mut per_value = Vec::with_capacity(values.len());
    for val in &values {
        per_value.push(compile_value(val, &mods, names)?);
    }
    if per_value.is_empty() {
        return Err(format!("{field}: empty value list"));
    }
    if mods.all && per_value.len() > 1 {
        Ok(Cond::And(
            per_value
                .into_iter()
                .map(|tests| {
                    Cond::Field(FieldTest {
                        sym,
                        alt,
                        positional,
                        slot,
                        tests,
                    })
                })
                .collect(),
        ))
    } else {
        // Sized once: a test is a few hundred bytes and lists of values are long.
        let mut tests = Vec::with_capacity(per_value.iter().map(Vec::len).sum());
        per_value.into_iter().for_each(|v| tests.extend(v));
        Ok(Cond::Field(FieldTest {
            sym,
            alt,
            positional,
            slot,
            tests,
        }))
    }
}

fn compile_value(v: &Json, m: &Mods, names: &Names<'_>) -> Result<Vec<Test>, String> {
    if m.neq {
        if v.is_null() {
            return Err("`neq` needs a value".into());
        }
        let inner = Mods {
            neq: false,
            transforms: m.transforms.clone(),
            re_flags: m.re_flags.clone(),
            ..*m
        };
        return Ok(vec![Test::NoneOf(compile_value(v, &inner, names)?)]);
    }
    if v.is_null() {
        return Ok(vec![Test::Null]);
    }
    if m.exists {
        return match v {
            Json::Bool(b) => Ok(vec![Test::Exists(*b)]),
            Json::String(s) if s == "true" || s == "false" => Ok(vec![Test::Exists(s == "true")]),
            _ => Err("`exists` needs true or false".into()),
        };
    }
    let s = scalar_text(v)?;
    if m.expand {
        let inner = Mods {
            expand: false,
            transforms: m.transforms.clone(),
            re_flags: m.re_flags.clone(),
            ..*m
        };
        let mut tests = Vec::new();
        for alt in names.vars.expand(&s)? {
            tests.extend(compile_value(&Json::String(alt), &inner, names)?);
        }
        return Ok(tests);
    }
    if let Some(part) = m.time_part {
        let n = watchpost_event::parse_number(&s).ok_or("time part modifiers need a number")?;
        return Ok(vec![Test::TimePart {
            part,
            cmp: m.cmp,
            n,
        }]);
    }
    if let Some(op) = m.cmp {
        let n = watchpost_event::parse_number(&s).ok_or("lt/lte/gt/gte need a number")?;
        return Ok(vec![Test::Num(op, n)]);
    }
    if m.re {
        let mut flags = m.re_flags.clone();
        if m.cased {
            flags.retain(|c| c != 'i');
        }
        let src = if flags.is_empty() {
            s
        } else {
            format!("(?{flags}){s}")
        };
        let r = LazyRegex::new(src).map_err(|e| format!("regex: {e}"))?;
        return Ok(vec![Test::Re(r)]);
    }
    if m.cidr {
        return Ok(vec![Test::Cidr(Cidr::parse(&s)?)]);
    }
    if m.fieldref {
        let kind = match (m.contains, m.starts, m.ends) {
            (true, _, _) => RefKind::Contains,
            (_, true, _) => RefKind::Prefix,
            (_, _, true) => RefKind::Suffix,
            _ => RefKind::Exact,
        };
        return Ok(vec![Test::FieldRef {
            other: names.sym(&s),
            kind,
            cased: m.cased,
        }]);
    }
    if m.transforms.is_empty() && !s.contains(['*', '?']) && !s.contains("\\\\") {
        // Most values: no wildcard, no escape to undo, no transformation. The same
        // pattern as tokenizing would give, without its allocations (thousands of rules
        // have tens of thousands of such values).
        return Ok(vec![Test::Str {
            pat: Pat::plain(
                if m.cased { s } else { pattern::fold(&s) },
                m.contains || m.ends,
                m.contains || m.starts,
            ),
            cased: m.cased,
        }]);
    }
    let mut alts: Vec<Vec<Tok>> = vec![pattern::tokenize(&s)];
    let mut binary = false;
    for t in &m.transforms {
        let mut next = Vec::new();
        for a in alts {
            match *t {
                "utf16le" | "utf16be" | "utf16" => {
                    let mut out = Vec::new();
                    if *t == "utf16" {
                        out.push(Tok::Lit(vec![0xFF, 0xFE]));
                    }
                    for tok in a {
                        match tok {
                            Tok::Lit(l) => {
                                let s = String::from_utf8(l).map_err(|_| "wide: not UTF-8")?;
                                let mut b = Vec::new();
                                for u in s.encode_utf16() {
                                    if *t == "utf16be" {
                                        b.extend_from_slice(&u.to_be_bytes());
                                    } else {
                                        b.extend_from_slice(&u.to_le_bytes());
                                    }
                                }
                                out.push(Tok::Lit(b));
                            }
                            w => out.push(w),
                        }
                    }
                    next.push(out);
                }
                "base64" | "base64offset" => {
                    binary = true;
                    let lit = pattern::literal(&a)
                        .ok_or("base64 of a value with wildcards is not defined")?;
                    if *t == "base64" {
                        next.push(vec![Tok::Lit(pattern::base64(&lit).into_bytes())]);
                    } else {
                        for f in pattern::base64_offsets(&lit) {
                            next.push(vec![Tok::Lit(f)]);
                        }
                    }
                }
                _ => {
                    // windash: each `-` or `/` that starts a word, as each dash form.
                    for dash in ["-", "/", "\u{2013}", "\u{2014}", "\u{2015}"] {
                        let mut out = Vec::new();
                        for tok in &a {
                            match tok {
                                Tok::Lit(l) => {
                                    let mut b = Vec::with_capacity(l.len());
                                    for (i, &c) in l.iter().enumerate() {
                                        let word_start = i == 0 || !is_word(l[i - 1]);
                                        let next_word = l.get(i + 1).is_some_and(|&n| is_word(n));
                                        if (c == b'-' || c == b'/') && word_start && next_word {
                                            b.extend_from_slice(dash.as_bytes());
                                        } else {
                                            b.push(c);
                                        }
                                    }
                                    out.push(Tok::Lit(b));
                                }
                                w => out.push(w.clone()),
                            }
                        }
                        if !next.contains(&out) {
                            next.push(out);
                        }
                    }
                }
            }
        }
        alts = next;
    }
    let cased = m.cased || binary;
    let mut tests = Vec::with_capacity(alts.len());
    for mut a in alts {
        if (m.contains || m.ends) && a.first() != Some(&Tok::Star) {
            a.insert(0, Tok::Star);
        }
        if (m.contains || m.starts) && a.last() != Some(&Tok::Star) {
            a.push(Tok::Star);
        }
        tests.push(Test::Str {
            pat: Pat::compile(&a, !cased)?,
            cased,
        });
    }
    Ok(tests)
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}
