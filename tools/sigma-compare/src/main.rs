//! Per-rule, per-file detections of `watchpost-sigma` beside an independent Sigma
//! evaluator (`rsigma-eval` 0.23.0) on the same rules and EVTX records.
//!
//! Both sides see the same parsed records (`watchpost_sources::evtx`). The rsigma side
//! evaluates each rule with `rsigma_eval::evaluate_rule` on the records of the
//! channels and event ids our logsource table gives the rule, reading Sigma field names
//! through the same renames (`EventID` → `event_id`, the 4688 audit names, …), so what
//! is compared is the detection logic: values, wildcards, modifiers, conditions.
//!
//! `sigma-compare [RULES] [EVTX]` prints one line per (rule, file) with detections on
//! either side (`ours`, `rsigma`, and the record ids where they differ) and a summary.
//! With `--time` it also times `Engine::evaluate` (all rules, no logsource routing)
//! beside the parse floor and `Ruleset::matches` in the same run.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rsigma_eval::event::{Event as SEvent, EventValue};
use watchpost_event::{Event, FieldRef, Sym};
use watchpost_sigma::Ruleset;
use watchpost_sigma::logsource::{Target, WINDOWS_COMMON};

struct W<'a> {
    ev: &'a Event,
    renames: [&'a [(&'static str, &'static str)]; 2],
}

fn conv(f: FieldRef<'_>) -> EventValue<'_> {
    match f {
        FieldRef::Str(s) => EventValue::Str(Cow::Borrowed(s)),
        FieldRef::Int(i) => EventValue::Int(i),
        FieldRef::Bool(b) => EventValue::Bool(b),
        FieldRef::Time(t) => EventValue::Str(Cow::Owned(t.to_string())),
    }
}

impl SEvent for W<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        let mut name = path;
        'outer: for t in self.renames {
            for (from, to) in t {
                if *from == path {
                    name = to;
                    break 'outer;
                }
            }
        }
        self.ev.get(Sym::get(name)?).map(conv)
    }
    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.ev.fields().any(|(_, v)| pred(&v.text()))
    }
    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        self.ev.fields().map(|(_, v)| v.text()).collect()
    }
    fn to_json(&self) -> serde_json::Value {
        self.ev.to_json()
    }
}

/// An EVTX record as the `evtx` crate renders it in JSON, flattened the way Hayabusa and
/// Chainsaw read it: `System` names (`EventID` without qualifiers, `Provider_Name`,
/// attribute values such as `ProcessID`) and the leaves of `EventData`/`UserData` under
/// their own names.
fn flatten(rec: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    fn leaves(v: &Value, m: &mut serde_json::Map<String, Value>) {
        if let Value::Object(o) = v {
            for (k, x) in o {
                match x {
                    Value::Object(_) if k == "#attributes" => leaves(x, m),
                    Value::Object(_) => leaves(x, m),
                    _ => {
                        m.insert(k.clone(), x.clone());
                    }
                }
            }
        }
    }
    let mut m = serde_json::Map::new();
    let Some(ev) = rec.get("Event") else {
        return m;
    };
    if let Some(Value::Object(sys)) = ev.get("System") {
        for (k, v) in sys {
            match (k.as_str(), v) {
                ("Provider", _) => {
                    if let Some(n) = v.pointer("/#attributes/Name") {
                        m.insert("Provider_Name".into(), n.clone());
                    }
                }
                ("EventID", Value::Object(o)) => {
                    if let Some(t) = o.get("#text") {
                        m.insert("EventID".into(), t.clone());
                    }
                }
                ("TimeCreated", _) => {
                    if let Some(t) = v.pointer("/#attributes/SystemTime") {
                        m.insert("TimeCreated".into(), t.clone());
                    }
                }
                (_, Value::Object(_)) => leaves(v, &mut m),
                _ => {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    for sect in ["EventData", "UserData"] {
        if let Some(d) = ev.get(sect) {
            leaves(d, &mut m);
        }
    }
    m
}

/// rsigma's view of a flattened JSON record, with a target's renames.
struct J<'a> {
    m: &'a serde_json::Map<String, serde_json::Value>,
    renames: &'a [(&'static str, &'static str)],
}

impl SEvent for J<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        let name = self
            .renames
            .iter()
            .find(|(f, _)| *f == path)
            .map_or(path, |(_, t)| *t);
        self.m.get(name).map(EventValue::from)
    }
    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.all_string_values().iter().any(|s| pred(s))
    }
    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        self.m
            .values()
            .map(|v| match v {
                serde_json::Value::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(other.to_string()),
            })
            .collect()
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.m.clone())
    }
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

fn applies(t: &Target, channel: Option<&str>, id: Option<i64>) -> bool {
    if let Some(ids) = &t.event_ids
        && !id.is_some_and(|i| ids.contains(&i))
    {
        return false;
    }
    match (channel, t.windows, t.channel) {
        (None, false, _) => true,
        (Some(_), true, None) => true,
        (Some(ch), true, Some(tc)) => ch.eq_ignore_ascii_case(tc),
        _ => false,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let time = args.iter().any(|a| a == "--time");
    // Also evaluate every rule on every record (no channel/event-id routing), to list
    // what our logsource table keeps a rule away from.
    let unrouted = args.iter().any(|a| a == "--unrouted");
    // `--json`: the rsigma side reads each record as the `evtx` crate's JSON (as
    // Hayabusa and Chainsaw do) and routes it by its own Channel/EventID, so our XML
    // parsing is not shared with it.
    let json = args.iter().any(|a| a == "--json");
    let (mut only_our_records, mut only_json_records) = (0usize, 0usize);
    // `--pin FILE`: write the (rule, file, record ids) both sides agree on, for
    // `crates/sigma/tests/fixtures.rs`.
    let pin = args
        .iter()
        .position(|a| a == "--pin")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let pos: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--pin"))
        .map(|(_, a)| a)
        .collect();
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let rules_dir = pos
        .first()
        .map_or(shared.join("sigma/rules"), PathBuf::from);
    let evtx_dir = pos.get(1).map_or(shared.join("evtx"), PathBuf::from);

    let (ours, rejected) = Ruleset::load(&[&rules_dir]);
    for r in &rejected {
        eprintln!("ours: not loaded: {r}");
    }
    let by_key: HashMap<(PathBuf, String), usize> = ours
        .rules()
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.path.clone(), r.title.to_string()), i))
        .collect();

    let mut rule_files = Vec::new();
    files(&rules_dir, "yml", &mut rule_files);
    let mut theirs: Vec<Option<rsigma_eval::CompiledRule>> = vec![None; 0];
    theirs.resize_with(ours.len(), || None);
    let mut engine = rsigma_eval::Engine::new();
    let (mut parsed, mut failed, mut unmatched) = (0, 0, 0);
    for f in &rule_files {
        let text = std::fs::read_to_string(f).expect("rule file");
        let c = match rsigma_parser::parse_sigma_yaml(&text) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("rsigma: {}: {e}", f.display());
                failed += 1;
                continue;
            }
        };
        for e in &c.errors {
            eprintln!("rsigma: {}: {e}", f.display());
        }
        for r in &c.rules {
            match rsigma_eval::compile_rule(r) {
                Ok(cr) => {
                    parsed += 1;
                    if time {
                        let _ = engine.add_rule(r);
                    }
                    match by_key.get(&(f.clone(), r.title.clone())) {
                        Some(&i) => theirs[i] = Some(cr),
                        None => {
                            unmatched += 1;
                            eprintln!("rsigma: {}: {}: not loaded by ours", f.display(), r.title)
                        }
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("rsigma: {}: {}: {e}", f.display(), r.title);
                }
            }
        }
    }
    println!(
        "# rules: ours {} loaded ({} rejected); rsigma {parsed} compiled ({failed} failed, {unmatched} without a counterpart)",
        ours.len(),
        rejected.len()
    );

    let mut evtx = Vec::new();
    files(&evtx_dir, "evtx", &mut evtx);
    let ctx = watchpost_sources::parse::ParseCtx::new("evtx", "compare");
    let sym_ch = Sym::new("channel");
    let sym_id = Sym::new("event_id");
    // (rule, file) → (our record ids, their record ids)
    let mut pairs: BTreeMap<(usize, usize), (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    let mut records = 0usize;
    let mut all_events = Vec::new();
    let mut out = Vec::new();
    for (fi, f) in evtx.iter().enumerate() {
        let bytes = std::fs::read(f).expect("evtx");
        let (events, _) = watchpost_sources::evtx::read_evtx(&ctx, bytes, &f.to_string_lossy());
        records += events.len();
        let mut flat: HashMap<u64, serde_json::Map<String, serde_json::Value>> = HashMap::new();
        if json {
            let bytes = std::fs::read(f).expect("evtx");
            if let Ok(mut p) = evtx::EvtxParser::from_buffer(bytes) {
                for r in p.records_json_value().flatten() {
                    flat.insert(r.event_record_id, flatten(&r.data));
                }
            }
            let ours_ids: std::collections::HashSet<u64> = events
                .iter()
                .map(|e| e.origin.as_ref().map_or(0, |o| o.offset))
                .collect();
            only_our_records += ours_ids.iter().filter(|i| !flat.contains_key(i)).count();
            only_json_records += flat.keys().filter(|i| !ours_ids.contains(i)).count();
        }
        for ev in &events {
            let rid = ev.origin.as_ref().map_or(0, |o| o.offset);
            out.clear();
            ours.matches(ev, &mut out);
            for m in &out {
                pairs.entry((m.rule, fi)).or_default().0.push(rid);
            }
            let ch = ev.get(sym_ch).map(|v| v.text().into_owned());
            let id = ev.get(sym_id).and_then(|v| match v {
                FieldRef::Int(i) => Some(i),
                other => other.text().trim().parse().ok(),
            });
            if json {
                let Some(m) = flat.get(&rid) else { continue };
                let jch = m.get("Channel").and_then(|v| v.as_str());
                let jid = m.get("EventID").and_then(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                });
                for (ri, r) in ours.rules().iter().enumerate() {
                    let Some(cr) = &theirs[ri] else { continue };
                    let hit = r.targets.iter().any(|t| {
                        applies(t, jch, jid)
                            && rsigma_eval::evaluate_rule(
                                cr,
                                &J {
                                    m,
                                    renames: t.renames,
                                },
                            )
                            .is_some()
                    });
                    if hit {
                        pairs.entry((ri, fi)).or_default().1.push(rid);
                    }
                }
                continue;
            }
            for (ri, r) in ours.rules().iter().enumerate() {
                let Some(cr) = &theirs[ri] else { continue };
                let hit = r.targets.iter().any(|t| {
                    applies(t, ch.as_deref(), id)
                        && rsigma_eval::evaluate_rule(
                            cr,
                            &W {
                                ev,
                                renames: [t.renames, if t.windows { WINDOWS_COMMON } else { &[] }],
                            },
                        )
                        .is_some()
                });
                if hit {
                    pairs.entry((ri, fi)).or_default().1.push(rid);
                } else if unrouted
                    && ch.is_some()
                    && rsigma_eval::evaluate_rule(
                        cr,
                        &W {
                            ev,
                            // The 4688 names only on a Security 4688, none elsewhere.
                            renames: [
                                if ch.as_deref() == Some("Security") && id == Some(4688) {
                                    watchpost_sigma::logsource::AUDIT_4688
                                } else {
                                    &[]
                                },
                                WINDOWS_COMMON,
                            ],
                        },
                    )
                    .is_some()
                {
                    let r = &ours.rules()[ri];
                    println!(
                        "# unrouted: {} on {}:{rid} ({} {})",
                        r.path.strip_prefix(&rules_dir).unwrap_or(&r.path).display(),
                        evtx[fi]
                            .strip_prefix(&evtx_dir)
                            .unwrap_or(&evtx[fi])
                            .display(),
                        ch.as_deref().unwrap_or("-"),
                        id.unwrap_or(-1)
                    );
                }
            }
        }
        if time {
            all_events.extend(events);
        }
    }
    let (mut n_ours, mut n_theirs, mut agree, mut differ) = (0, 0, 0, 0);
    let mut fired = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    println!("# rule\tfile\tours\trsigma\tonly ours (record ids)\tonly rsigma (record ids)");
    let mut pinned = String::from(
        "# rule\tfile\trecord ids: detections watchpost-sigma and rsigma-eval 0.23 agree on\n",
    );
    for ((ri, fi), (a, b)) in &pairs {
        n_ours += a.len();
        n_theirs += b.len();
        if !a.is_empty() {
            fired.0.insert(*ri);
        }
        if !b.is_empty() {
            fired.1.insert(*ri);
        }
        let only_a: Vec<&u64> = a.iter().filter(|x| !b.contains(x)).collect();
        let only_b: Vec<&u64> = b.iter().filter(|x| !a.contains(x)).collect();
        let r = &ours.rules()[*ri];
        let rel = r.path.strip_prefix(&rules_dir).unwrap_or(&r.path);
        let frel = evtx[*fi].strip_prefix(&evtx_dir).unwrap_or(&evtx[*fi]);
        if only_a.is_empty() && only_b.is_empty() {
            agree += 1;
            let ids: Vec<String> = a.iter().map(u64::to_string).collect();
            pinned.push_str(&format!(
                "{}\t{}\t{}\n",
                rel.display(),
                frel.display(),
                ids.join(",")
            ));
        } else {
            differ += 1;
        }
        println!(
            "{}\t{}\t{}\t{}\t{only_a:?}\t{only_b:?}",
            rel.display(),
            frel.display(),
            a.len(),
            b.len()
        );
    }
    println!(
        "# {} files, {records} records; detections: ours {n_ours}, rsigma {n_theirs}; rules that fired: ours {}, rsigma {}; (rule, file) pairs: {agree} agree, {differ} differ",
        evtx.len(),
        fired.0.len(),
        fired.1.len()
    );

    if json {
        println!(
            "# records read by ours only: {only_our_records}; by the evtx crate's JSON only: {only_json_records}"
        );
    }
    if let Some(p) = pin {
        std::fs::write(&p, pinned).expect("write --pin file");
    }
    if time {
        let rounds = 5;
        let best = |f: &mut dyn FnMut() -> usize| {
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    let n = f();
                    (t.elapsed(), n)
                })
                .min()
                .expect("three runs")
        };
        let blobs: Vec<Vec<u8>> = evtx
            .iter()
            .map(|p| std::fs::read(p).expect("evtx"))
            .collect();
        let n = all_events.len() * rounds;
        let line = |name: &str, (d, h): (std::time::Duration, usize)| {
            println!(
                "# time {name}: {:.1} us/record, {:.0} records/s, {} detections per pass",
                d.as_secs_f64() * 1e6 / n as f64,
                n as f64 / d.as_secs_f64(),
                h / rounds
            );
        };
        line(
            "parse floor (read_evtx)",
            best(&mut || {
                let mut k = 0;
                for _ in 0..rounds {
                    for b in &blobs {
                        k += watchpost_sources::evtx::read_evtx(&ctx, b.clone(), "x")
                            .0
                            .len()
                            * 0;
                    }
                }
                k
            }),
        );
        let mut o = Vec::new();
        line(
            "watchpost-sigma Ruleset::matches",
            best(&mut || {
                let mut h = 0;
                for _ in 0..rounds {
                    for ev in &all_events {
                        o.clear();
                        h += ours.matches(ev, &mut o);
                    }
                }
                h
            }),
        );
        let nomap: [&[(&str, &str)]; 2] = [&[], WINDOWS_COMMON];
        // What the unrouted engine finds that we do not, and the reverse (rule title,
        // channel, event id).
        let (mut extra, mut missing) = (BTreeMap::new(), BTreeMap::new());
        for ev in &all_events {
            let key = |t: &str| {
                format!(
                    "{t} | {} {}",
                    ev.get(sym_ch)
                        .map(|v| v.text().into_owned())
                        .unwrap_or_default(),
                    ev.get(sym_id)
                        .map(|v| v.text().into_owned())
                        .unwrap_or_default()
                )
            };
            let theirs: Vec<String> = engine
                .evaluate(&W { ev, renames: nomap })
                .iter()
                .map(|r| r.header.rule_title.clone())
                .collect();
            o.clear();
            ours.matches(ev, &mut o);
            let mine: Vec<String> = o.iter().map(|m| m.title.to_string()).collect();
            for t in theirs.iter().filter(|t| !mine.contains(t)) {
                *extra.entry(key(t)).or_insert(0) += 1;
            }
            for t in mine.iter().filter(|t| !theirs.contains(t)) {
                *missing.entry(key(t)).or_insert(0) += 1;
            }
        }
        for (k, n) in &extra {
            println!("# engine only: {n} x {k}");
        }
        for (k, n) in &missing {
            println!("# ours only (engine): {n} x {k}");
        }
        line(
            "rsigma-eval Engine::evaluate (all rules, no routing)",
            best(&mut || {
                let mut h = 0;
                for _ in 0..rounds {
                    for ev in &all_events {
                        h += engine.evaluate(&W { ev, renames: nomap }).len();
                    }
                }
                h
            }),
        );
    }
}
