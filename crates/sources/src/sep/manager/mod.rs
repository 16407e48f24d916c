//! SEP Manager syslog export ("External Logging") lines.
//!
//! A line is an optional header (RFC 5424, RFC 3164 with tag `SymantecServer:`, or the
//! text-dump prefix `YYYY-MM-DD hh:mm:ss,<Severity>,`) and a CSV payload of `Label: value`
//! cells mixed with bare values. Labels become snake_case field names (aliases normalised,
//! see [`LABELS`]); bare values are named by their position within the line's family
//! ([`Family`], chosen from the first cells). Unknown labels are kept as fields, so the
//! schema is [`Schema::Open`]; [`known_fields`] lists the names this parser knows.
//!
//! Metadata: `host` is the computer the payload names (`computer_name`; for server families
//! the SEPM `server`), else the header's host, else the local host. `time` is the payload's
//! `Event time`, else the header time, else `Begin`. Payload times (`YYYY-MM-DD hh:mm:ss`)
//! and RFC 3164 times are read in `ParseCtx::tz`; an RFC 3164 time has no year: the year
//! that puts it nearest to now is used. Values are trimmed of surrounding blanks.

mod header;

/// The syslog prefix reader, shared with the plain text source.
pub(crate) use header::strip as syslog_header;
mod labels;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use jiff::Timestamp;
use watchpost_event::{Event, Sym, Value};

use super::av::{Cell, split_csv};
use super::common::{
    check_len, dec, host_arc, ips_description, original_offset, signature_category,
};
use crate::parse::{ParseCtx, ParseError, Parser, Schema};
use crate::text;

pub(crate) use header::local_datetime;
pub use labels::{DERIVED, LABELS, field_name};

/// The SEPM log a line comes from: the manager's own log types, as its External Logging
/// settings name them (Broadcom article TECH171741, "External Logging settings and log
/// event severity levels for Endpoint Protection Manager"), told apart by the labels and
/// shape of the line's cells. The same split is made by Elastic's `symantec_endpoint`
/// pipeline (`event.provider`), Splunk Connect for Syslog (one sourcetype per log) and
/// SEKOIA's parser; see docs/formats.md for the rules and the sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Administrative log: administrator logons, failed logons, logoffs, account and
    /// group changes: `Site: …,Server: …,Domain: …,Admin: …,<description>`.
    Administrative,
    /// Policy log: policy edits, `Site: …,Server: …,Domain: …,Admin: …,Event Description:
    /// Policy has been edited: …,<policy name>`.
    Policy,
    /// Server system log: `Site: …,Server: …,<description>` (LiveUpdate, database
    /// maintenance, services).
    ServerSystem,
    /// Agent activity log, as the server records clients' doings: `Site: …,Server Name:
    /// …,Domain Name: …,<description>,<host>,<user>,<domain>`.
    AgentActivity,
    /// Agent system log: `<host>,Category: <n>,<source>,…`.
    AgentSystem,
    /// Agent risk log (virus and security-risk detections by Auto-Protect and scans):
    /// `Virus found,…`, `Security risk found,…`, with `Risk name:`.
    Risk,
    /// Agent proactive detection log (SONAR and other proactive threat detections):
    /// `Potential risk found,Computer name: …,Detection type: …`, `SONAR detection now
    /// allowed,…`.
    ProactiveThreat,
    /// Agent scan log: `Scan ID: …`.
    Scan,
    /// Agent behavior log (application and device control): `<host>,<ip>,<action>,…,
    /// Begin: …`.
    Behavior,
    /// Agent packet log: `<host>,Local Host: …` without MAC or rule.
    Packet,
    /// Agent security log (IPS): `<host>,Event Description: …`.
    Security,
    /// Agent traffic log (firewall): `<host>,Local Host IP: …,…,Rule: …`.
    Traffic,
    /// None of the above.
    Unknown,
}

impl Family {
    /// The value of the `family` field.
    pub fn name(self) -> &'static str {
        match self {
            Family::Administrative => "administrative",
            Family::Policy => "policy",
            Family::ServerSystem => "server_system",
            Family::AgentActivity => "agent_activity",
            Family::AgentSystem => "agent_system",
            Family::Risk => "risk",
            Family::ProactiveThreat => "proactive_threat",
            Family::Scan => "scan",
            Family::Behavior => "behavior",
            Family::Packet => "packet",
            Family::Security => "security",
            Family::Traffic => "traffic",
            Family::Unknown => "unknown",
        }
    }

    /// Names of the bare (unlabelled) values, by their position among bare values.
    /// Further bare values are named `bare_<position>`. `labelled` says which labels the
    /// line has: a value some lines label and others leave bare (`File path:`, `Event
    /// Description:`) is not in the list when the line labels it.
    pub fn bare_names(self, labelled: &dyn Fn(&str) -> bool) -> &'static [&'static str] {
        match self {
            Family::Risk | Family::ProactiveThreat if labelled("file_path") => {
                &["event_description", "description"]
            }
            Family::Risk | Family::ProactiveThreat => {
                &["event_description", "file_path", "description"]
            }
            Family::Security => &["computer_name", "traffic_direction", "network_protocol"],
            Family::Traffic => &["computer_name", "network_protocol", "traffic_direction"],
            Family::Packet => &["computer_name", "traffic_direction"],
            Family::Behavior => &[
                "computer_name",
                "local_host_ip",
                "action",
                "event_description",
                "api_name",
                "caller_process_id",
                "caller_process_name",
                "caller_return_address",
                "caller_return_module_name",
                "parameters",
            ],
            Family::AgentSystem => &["computer_name", "event_source", "event_description"],
            Family::Scan => &["action", "event_description"],
            Family::Administrative | Family::ServerSystem => &["event_description"],
            Family::Policy if labelled("event_description") => &["policy_name"],
            Family::Policy => &["event_description", "policy_name"],
            Family::AgentActivity => &[
                "event_description",
                "computer_name",
                "user_name",
                "user_domain",
            ],
            Family::Unknown => &[],
        }
    }

    fn is_server(self) -> bool {
        matches!(
            self,
            Family::ServerSystem | Family::Administrative | Family::Policy | Family::AgentActivity
        )
    }
}

/// Every family, `Unknown` last.
pub const ALL_FAMILIES: [Family; 13] = [
    Family::Administrative,
    Family::Policy,
    Family::ServerSystem,
    Family::AgentActivity,
    Family::AgentSystem,
    Family::Risk,
    Family::ProactiveThreat,
    Family::Scan,
    Family::Behavior,
    Family::Packet,
    Family::Security,
    Family::Traffic,
    Family::Unknown,
];

/// Most distinct unknown labels interned (hostile input cannot fill the symbol table);
/// beyond it an unknown `Label: value` cell is kept as a bare value.
const MAX_UNKNOWN_LABELS: usize = 10_000;
static UNKNOWN_LABELS: AtomicUsize = AtomicUsize::new(0);

/// Most CSV cells read from a line.
const MAX_CELLS: usize = 256;

struct Syms {
    labels: HashMap<&'static str, Sym>,
    /// The fields of [`LABELS`]: what a label the manager writes becomes.
    label_syms: Vec<Sym>,
    names: HashMap<&'static str, Sym>,
    bare: Vec<Sym>,
    known: Vec<&'static str>,
}

static SYMS: LazyLock<Syms> = LazyLock::new(|| {
    let mut known: Vec<&'static str> = Vec::new();
    for name in LABELS.iter().map(|(_, n)| *n).chain(DERIVED) {
        if !known.contains(&name) {
            known.push(name);
        }
    }
    for f in ALL_FAMILIES {
        for name in f
            .bare_names(&|_| false)
            .iter()
            .chain(f.bare_names(&|_| true))
        {
            if !known.contains(name) {
                known.push(name);
            }
        }
    }
    let names: HashMap<_, _> = known.iter().map(|n| (*n, Sym::new(n))).collect();
    let labels: HashMap<&'static str, Sym> = LABELS.iter().map(|(l, n)| (*l, names[n])).collect();
    let mut label_syms: Vec<Sym> = labels.values().copied().collect();
    label_syms.sort_unstable();
    label_syms.dedup();
    let bare = (0..64).map(|i| Sym::new(&format!("bare_{i}"))).collect();
    Syms {
        labels,
        label_syms,
        names,
        bare,
        known,
    }
});

fn sym(name: &str) -> Sym {
    SYMS.names
        .get(name)
        .copied()
        .unwrap_or_else(|| Sym::new(name))
}

/// The names this parser knows (labels, bare-value names, derived fields); the schema is
/// open because unknown labels are kept too.
pub fn known_fields() -> &'static [&'static str] {
    SYMS.known.as_slice()
}

fn label_sym(label: &str) -> Option<Sym> {
    if let Some(s) = SYMS.labels.get(label) {
        return Some(*s);
    }
    let name = field_name(label);
    if let Some(s) = Sym::get(&name) {
        return Some(s);
    }
    if UNKNOWN_LABELS.fetch_add(1, Ordering::Relaxed) >= MAX_UNKNOWN_LABELS {
        UNKNOWN_LABELS.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Sym::try_new(&name)
}

/// Parser for SEPM syslog export lines.
#[derive(Clone, Copy, Debug, Default)]
pub struct SepManagerParser;

impl Parser for SepManagerParser {
    fn parse(&self, ctx: &ParseCtx, record: &[u8]) -> Result<Event, ParseError> {
        parse_line(ctx, record)
    }

    fn schema(&self) -> Schema {
        Schema::Open
    }
}

/// A value: a range of the line, or owned text (after `""` unescaping or joining).
#[derive(Clone, Debug)]
enum Val {
    Span(usize, usize),
    Owned(String),
}

impl Val {
    fn text<'a>(&'a self, raw: &'a str) -> &'a str {
        match self {
            Val::Span(s, e) => raw.get(*s..*e).unwrap_or(""),
            Val::Owned(s) => s,
        }
    }

    fn value(&self) -> Value {
        match self {
            Val::Span(s, e) => Value::Span {
                start: *s as u32,
                len: (e - s) as u32,
            },
            Val::Owned(s) => Value::Str(s.as_str().into()),
        }
    }

    /// A sub-range `a..b` of this value's text.
    fn sub(&self, a: usize, b: usize) -> Val {
        match self {
            Val::Span(s, _) => Val::Span(s + a, s + b),
            Val::Owned(t) => Val::Owned(t[a..b].to_owned()),
        }
    }
}

/// One CSV cell, classified.
#[derive(Clone, Debug)]
struct Tok {
    /// The label's field, for `Label: value` cells.
    label: Option<Sym>,
    /// The value (bare cells: the whole cell), trimmed.
    val: Val,
    /// The whole cell, trimmed.
    full: Val,
}

/// Trimmed sub-range of `text[a..b]`.
fn trim_range(text: &str, a: usize, b: usize) -> (usize, usize) {
    let t = &text[a..b];
    let lead = t.len() - t.trim_start().len();
    (a + lead, a + lead + t.trim().len())
}

/// Splits `Label: value` / `Label:`; returns the label and the value's offset.
fn split_label(text: &str) -> Option<(&str, usize)> {
    let colon = text.find(':')?;
    let label = &text[..colon];
    let after = &text[colon + 1..];
    if !(after.is_empty() || after.starts_with(' ')) || label.is_empty() || label.len() > 64 {
        return None;
    }
    let ok = label.as_bytes()[0].is_ascii_alphabetic()
        && label.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b' ' | b'(' | b')' | b'-' | b'/' | b'#')
        });
    ok.then_some((label, (colon + 2).min(text.len())))
}

fn tokenize(raw: &str, cell: Cell) -> Tok {
    let (mut s, mut e) = (cell.start as usize, cell.end as usize);
    let (text, base): (Cow<'_, str>, Option<usize>) = if cell.escaped {
        (Cow::Owned(raw[s..e].replace("\"\"", "\"")), None)
    } else {
        let t = &raw[s..e];
        if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') {
            s += 1;
            e -= 1;
        }
        (Cow::Borrowed(&raw[s..e]), Some(s))
    };
    let make = |(a, b): (usize, usize)| match base {
        Some(off) => Val::Span(off + a, off + b),
        None => Val::Owned(text[a..b].to_owned()),
    };
    let full = make(trim_range(&text, 0, text.len()));
    if let Some((label, at)) = split_label(&text)
        && let Some(sym) = label_sym(label)
    {
        let val = make(trim_range(&text, at, text.len()));
        return Tok {
            label: Some(sym),
            val,
            full,
        };
    }
    for answer in ["Yes", "No"] {
        if text.strip_prefix("Detection Submissions ") == Some(answer) {
            let n = text.len();
            let val = make((n - answer.len(), n));
            return Tok {
                label: Some(sym("detection_submissions")),
                val,
                full,
            };
        }
    }
    Tok {
        label: None,
        val: full.clone(),
        full,
    }
}

/// Joins a labelled value that opens a quote with the bare cells that close it
/// (`"Application version: ""3",0,6,"0"""` → `3,0,6,0`).
fn join_split_values(raw: &str, toks: &mut Vec<Tok>) {
    let mut i = 0;
    while i < toks.len() {
        let opens = toks[i].label.is_some() && {
            let v = toks[i].val.text(raw);
            v.starts_with('"') && (v.len() == 1 || !v.ends_with('"'))
        };
        if opens {
            let close = (i + 1..toks.len().min(i + 9))
                .take_while(|&j| toks[j].label.is_none())
                .find(|&j| toks[j].full.text(raw).ends_with('"'));
            if let Some(j) = close {
                let mut joined = toks[i].val.text(raw).to_owned();
                for t in &toks[i + 1..=j] {
                    joined.push(',');
                    joined.push_str(t.full.text(raw));
                }
                let inner = joined
                    .trim_start_matches('"')
                    .trim_end_matches('"')
                    .to_owned();
                toks[i].val = Val::Owned(inner);
                toks.drain(i + 1..=j);
            }
        }
        i += 1;
    }
}

fn is_risk_opening(text: &str) -> bool {
    text.ends_with(" found") || text == "SONAR detection now allowed"
}

fn classify(raw: &str, toks: &[Tok]) -> Family {
    let has = |name: &str| {
        let s = sym(name);
        toks.iter().any(|t| t.label == Some(s))
    };
    let Some(first) = toks.first() else {
        return Family::Unknown;
    };
    if let Some(label) = first.label {
        return if label == sym("site") {
            server_family(raw, toks)
        } else if label == sym("scan_id") {
            Family::Scan
        } else {
            Family::Unknown
        };
    }
    let opening = first.val.text(raw);
    let second = toks.get(1).map(|t| t.label);
    if is_risk_opening(opening)
        || second
            .flatten()
            .is_some_and(|l| l == sym("ip_address") || l == sym("computer_name"))
    {
        // The proactive detection log has SONAR's own fields; the risk log has none.
        let proactive = opening == "SONAR detection now allowed"
            || has("detection_type")
            || has("coh_engine_version")
            || has("detection_score");
        return if proactive {
            Family::ProactiveThreat
        } else {
            Family::Risk
        };
    }
    match second {
        Some(Some(l)) if l == sym("event_description") => Family::Security,
        Some(Some(l)) if l == sym("local_host_ip") => {
            if has("local_host_mac") || has("rule") {
                Family::Traffic
            } else {
                Family::Packet
            }
        }
        Some(Some(l)) if l == sym("category") => Family::AgentSystem,
        Some(None) if toks.get(2).is_some_and(|t| t.label.is_none()) && has("begin") => {
            Family::Behavior
        }
        _ => Family::Unknown,
    }
}

/// A line opening with `Site:`: the server's own logs. With `Admin:`, a policy edit
/// (the description names a policy and the policy's name follows it) or another
/// administrative event (logons, failed logons, accounts: the description is the last
/// cell); with a domain but no admin, clients' activity as the server records it;
/// otherwise the server's system log.
fn server_family(raw: &str, toks: &[Tok]) -> Family {
    let admin = sym("admin");
    match toks.iter().position(|t| t.label == Some(admin)) {
        Some(i) => {
            let after = &toks[i + 1..];
            let about_policy = after
                .first()
                .is_some_and(|t| t.full.text(raw).to_ascii_lowercase().contains("policy"));
            if after.len() >= 2 && about_policy {
                Family::Policy
            } else {
                Family::Administrative
            }
        }
        None if toks.iter().any(|t| t.label == Some(sym("domain_name"))) => Family::AgentActivity,
        None => Family::ServerSystem,
    }
}

/// The labels server-family lines use; any other `x: y` cell there is message text.
const SERVER_LABELS: [&str; 5] = [
    "site",
    "server",
    "domain_name",
    "admin",
    "event_description",
];

/// Parses one SEPM syslog line.
pub fn parse_line(ctx: &ParseCtx, line: &[u8]) -> Result<Event, ParseError> {
    parse_line_at(ctx, line, Timestamp::now())
}

/// [`parse_line`] with `now` given (it picks the year of RFC 3164 header times).
pub fn parse_line_at(ctx: &ParseCtx, line: &[u8], now: Timestamp) -> Result<Event, ParseError> {
    check_len(line)?;
    parse_decoded(ctx, line, now).map_err(|e| ParseError {
        column: original_offset(line, e.column),
        ..e
    })
}

/// Parses the decoded text of `line`; error columns count bytes of that text.
fn parse_decoded(ctx: &ParseCtx, line: &[u8], now: Timestamp) -> Result<Event, ParseError> {
    let raw = text::decode(line).into_owned();
    let h = header::strip(&raw, &ctx.tz, now);
    if raw[h.payload..].trim().is_empty() {
        return Err(ParseError::new(
            h.payload,
            "no SEPM payload after the header",
        ));
    }
    let toks = tokens(&raw, h.payload)?;
    let family = classify(&raw, &toks);
    if family == Family::Unknown && toks.iter().all(|t| t.label.is_none()) {
        return Err(ParseError::new(
            h.payload,
            "not a SEPM syslog line: no `Label: value` fields",
        ));
    }
    let fields = name_fields(&raw, &toks, family);
    Ok(build_event(ctx, raw, &h, family, fields))
}

/// The payload's cells (from byte `payload` of `raw`), classified.
fn tokens(raw: &str, payload: usize) -> Result<Vec<Tok>, ParseError> {
    let mut cells = vec![Cell::default(); MAX_CELLS];
    let n = split_csv(&raw.as_bytes()[payload..], &mut cells)
        .map_err(|e| ParseError::new(payload + e.column, e.message))?;
    let mut toks: Vec<Tok> = cells[..n]
        .iter()
        .map(|c| {
            let off = payload as u32;
            tokenize(
                raw,
                Cell {
                    start: c.start + off,
                    end: c.end + off,
                    escaped: c.escaped,
                },
            )
        })
        .collect();
    join_split_values(raw, &mut toks);
    Ok(toks)
}

/// Whether `line` is recognisably a line of the SEPM export (for telling a file's format):
/// its syslog header names `SymantecServer`, or its payload falls into a family and
/// carries at least one label the manager writes. Any comma-separated text would fit
/// some family by the shape of its cells alone; the label is what makes it the manager's.
pub fn recognises(line: &[u8]) -> bool {
    if memchr::memmem::find(line, b" SymantecServer:").is_some() {
        return true;
    }
    if check_len(line).is_err() {
        return false;
    }
    let raw = text::decode(line).into_owned();
    let h = header::strip(&raw, &jiff::tz::TimeZone::UTC, Timestamp::now());
    let Ok(toks) = tokens(&raw, h.payload) else {
        return false;
    };
    classify(&raw, &toks) != Family::Unknown
        && toks
            .iter()
            .any(|t| t.label.is_some_and(|l| SYMS.label_syms.contains(&l)))
}

/// Names every token: labels by their label, bare values by position within the family.
fn name_fields(raw: &str, toks: &[Tok], family: Family) -> Vec<(Sym, Val)> {
    let server_labels = SERVER_LABELS.map(sym);
    let labelled = |name: &str| {
        let s = sym(name);
        toks.iter().any(|t| t.label == Some(s))
    };
    let bare_names = family.bare_names(&labelled);
    let mut out = Vec::with_capacity(toks.len() + 8);
    let mut k = 0;
    for t in toks {
        let label = t
            .label
            .filter(|l| !family.is_server() || server_labels.contains(l));
        let (name, val) = match label {
            Some(l) => (Some(l), &t.val),
            None => {
                let name = match bare_names.get(k) {
                    Some(n) => Some(sym(n)),
                    None => SYMS
                        .bare
                        .get(k)
                        .copied()
                        .or_else(|| Sym::try_new(&format!("bare_{k}"))),
                };
                k += 1;
                (name, &t.full)
            }
        };
        if let Some(name) = name.filter(|_| !val.text(raw).is_empty()) {
            out.push((name, val.clone()));
        }
    }
    out
}

fn find<'a>(fields: &'a [(Sym, Val)], name: &str) -> Option<&'a Val> {
    let s = sym(name);
    fields.iter().find(|(f, _)| *f == s).map(|(_, v)| v)
}

/// Adds `signature_name` and `signature_category` for IPS lines to `fields`; returns
/// `signature_id` and `blocked`.
fn signature_fields(raw: &str, fields: &mut Vec<(Sym, Val)>) -> Vec<(Sym, Value)> {
    let desc = find(fields, "event_description").cloned();
    let info = desc
        .as_ref()
        .map(|d| ips_description(d.text(raw)))
        .unwrap_or_default();
    let cids_id = find(fields, "cids_signature_id").and_then(|v| dec(v.text(raw).as_bytes()));
    let mut extra: Vec<(Sym, Val)> = Vec::new();
    let name = match (find(fields, "cids_signature_string"), info.name, &desc) {
        (Some(v), _, _) => Some(v.clone()),
        (None, Some((s, e)), Some(d)) => Some(d.sub(s, e)),
        _ => None,
    };
    let sid = cids_id.filter(|&v| v > 0).or(info.sid);
    let mut out = Vec::new();
    if let Some(sid) = sid {
        out.push((sym("signature_id"), Value::Int(sid)));
    }
    if let Some(name) = name {
        if let Some(cat) = signature_category(name.text(raw)) {
            let lead = name.text(raw).find(cat).unwrap_or(0);
            extra.push((sym("signature_category"), name.sub(lead, lead + cat.len())));
        }
        extra.insert(0, (sym("signature_name"), name));
    }
    fields.extend(extra);
    if let Some(b) = info.blocked {
        out.push((sym("blocked"), Value::Bool(b)));
    }
    out
}

fn build_event(
    ctx: &ParseCtx,
    raw: String,
    h: &header::Header,
    family: Family,
    mut fields: Vec<(Sym, Val)>,
) -> Event {
    let extras = signature_fields(&raw, &mut fields);
    let computer = find(&fields, "computer_name")
        .or_else(|| {
            family
                .is_server()
                .then(|| find(&fields, "server"))
                .flatten()
        })
        .map(|v| v.text(&raw))
        .or_else(|| h.host.map(|(s, e)| &raw[s..e]))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(host_arc);
    let time = find(&fields, "event_time")
        .and_then(|v| local_datetime(v.text(&raw), &ctx.tz))
        .or(h.time)
        .or_else(|| find(&fields, "begin").and_then(|v| local_datetime(v.text(&raw), &ctx.tz)));
    let header_fields = [
        ("syslog_hostname", h.host),
        ("syslog_appname", h.appname),
        ("syslog_procid", h.procid),
        ("severity", h.severity),
    ];
    for (name, range) in header_fields {
        if let Some((s, e)) = range {
            fields.push((sym(name), Val::Span(s, e)));
        }
    }
    let mut ev = Event::new(
        ctx.source.clone(),
        computer.unwrap_or_else(|| ctx.local_host.clone()),
        raw,
    );
    ev.time = time;
    ev.push(sym("family"), Value::Static(family.name()));
    if let Some(p) = h.priority {
        ev.push(sym("syslog_priority"), Value::Int(p));
    }
    for (name, val) in fields {
        ev.push(name, val.value());
    }
    for (name, v) in extras {
        ev.push(name, v);
    }
    ev.finish();
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_snake_case_with_aliases() {
        assert_eq!(field_name("File size (bytes)"), "file_size_bytes");
        assert_eq!(field_name("CIDS Signature SubID"), "cids_signature_subid");
        assert_eq!(field_name("SHA-256"), "sha256");
        assert_eq!(field_name("End Time"), "end");
        assert_eq!(field_name("Brand New Label #2"), "brand_new_label_2");
        assert_eq!(field_name("Host"), "host_label");
        assert_eq!(field_name("Source"), "scan_source");
    }

    #[test]
    fn split_label_rules() {
        assert_eq!(split_label("Risk name: X"), Some(("Risk name", 11)));
        assert_eq!(split_label("MD-5:"), Some(("MD-5", 5)));
        assert_eq!(split_label("e:\\path"), None);
        assert_eq!(
            split_label("Event Description: [SID: 1] a: b").map(|x| x.0),
            Some("Event Description")
        );
        assert_eq!(split_label("New content update. Remote file path: x"), None);
    }
}
