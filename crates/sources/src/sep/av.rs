//! SEP client daily AV log (`Logs\AV\MMDDYYYY.Log`): one CSV line per event.
//!
//! Fields are read by 0-based index (reference §1.3) and named in [`FIELDS`]. Coded fields
//! carry the number and, where the code is known, a `…_name` with the decoded text. Event
//! Data (17) and Event Data 2 (59) are TAB-separated; their known sub-fields get their own
//! names. Empty fields are left out. See `docs/formats.md` for the full table.
//!
//! The line is parsed from bytes; text values are spans of [`Event::raw`] (the line decoded
//! as UTF-8, else Windows-1252), decoded names are `&'static str`: a typical line costs the
//! `raw` copy and the field vector, nothing per field.

use std::sync::LazyLock;

use jiff::Timestamp;
use jiff::civil::DateTime;
use watchpost_event::{Event, Sym, Value};

use super::codes::Table;
use super::common::{Draft, MAX_FIELD, check_len, dec, hex_digit};
use crate::parse::{ParseCtx, ParseError, Parser, Schema};

/// How a field's text is stored.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Verbatim text.
    Text,
    /// A decimal integer (kept as text if it is not one).
    Int,
    /// A decimal code with a decoded name in the second field.
    Code(Table, &'static str),
    /// A path written with doubled backslashes: `\\` becomes `\`.
    Path,
    /// A 12-hex-digit local time (field 0 becomes `Event::time`).
    Time,
    /// Event Data (field 17): TAB-separated sub-fields.
    EventData,
    /// Event Data 2 (field 59): TAB-separated sub-fields.
    EventData2,
}

/// Field names by index (SEP 12.1+/14 layout; 91 fields in SEP 14.2).
pub const FIELDS: [(&str, Kind); 91] = {
    use Kind::*;
    [
        ("time", Time),
        ("event_code", Code(Table::AvEvent, "event_name")),
        ("category", Code(Table::AvCategory, "category_name")),
        ("logger", Code(Table::AvLogger, "logger_name")),
        ("computer", Text),
        ("user", Text),
        ("risk_name", Text),
        ("file_path", Text),
        ("action1", Code(Table::AvAction, "action1_name")),
        ("action2", Code(Table::AvAction, "action2_name")),
        ("action_taken", Code(Table::AvAction, "action_taken_name")),
        ("virus_type", Code(Table::VirusType, "virus_type_name")),
        ("flags", Int),
        ("description", Text),
        ("scan_id", Int),
        ("new_ext", Text),
        ("group_id", Int),
        ("event_data", EventData),
        ("vbin_id", Int),
        ("virus_id", Int),
        (
            "quarantine_forward_status",
            Code(Table::ForwardStatus, "quarantine_forward_status_name"),
        ),
        ("access", Int),
        ("snd_status", Int),
        ("compressed", Int),
        ("depth", Int),
        ("still_infected", Int),
        ("def_info", Text),
        ("def_sequence", Int),
        ("clean_info", Code(Table::CleanInfo, "clean_info_name")),
        ("delete_info", Code(Table::DeleteInfo, "delete_info_name")),
        ("backup_id", Int),
        ("parent", Text),
        ("machine_guid", Text),
        ("client_group", Text),
        ("ip_address", Text),
        ("domain_name", Text),
        ("nt_domain", Text),
        ("mac_address", Text),
        ("client_version", Text),
        ("remote_machine", Text),
        ("remote_machine_ip", Text),
        ("action1_status", Int),
        ("action2_status", Int),
        ("license_feature_name", Text),
        ("license_feature_version", Text),
        ("license_serial_number", Text),
        ("license_fulfillment_id", Text),
        ("license_start_date", Text),
        ("license_expiration_date", Text),
        ("license_lifecycle", Int),
        ("license_seats_total", Int),
        ("license_seats", Int),
        ("error_code", Int),
        ("license_seats_delta", Int),
        (
            "eraser_status",
            Code(Table::EraserStatus, "eraser_status_name"),
        ),
        ("domain_guid", Text),
        ("log_session_guid", Text),
        ("vbin_session_id", Int),
        ("login_domain", Text),
        ("event_data2", EventData2),
        (
            "eraser_category",
            Code(Table::EraserCategory, "eraser_category_name"),
        ),
        (
            "category_set",
            Code(Table::CategorySet, "category_set_name"),
        ),
        ("subcategory_set", Int),
        ("display_name_to_use", Int),
        (
            "reputation_disposition",
            Code(Table::Disposition, "reputation_disposition_name"),
        ),
        ("reputation_confidence", Int),
        ("first_seen", Int),
        ("reputation_prevalence", Int),
        ("downloaded_url", Text),
        ("creator_for_dropper", Text),
        ("cids_state", Code(Table::CidsState, "cids_state_name")),
        (
            "behavior_risk_level",
            Code(Table::RiskLevel, "behavior_risk_level_name"),
        ),
        (
            "detection_type",
            Code(Table::DetectionType, "detection_type_name"),
        ),
        ("acknowledge_text", Text),
        ("vsic_state", Code(Table::VsicState, "vsic_state_name")),
        ("scan_guid", Text),
        ("scan_duration", Int),
        ("scan_start_time", Time),
        (
            "target_app_type",
            Code(Table::TargetAppType, "target_app_type_name"),
        ),
        ("scan_command_guid", Text),
        ("field_80", Text),
        ("location", Text),
        ("field_82", Text),
        ("cert_signer", Text),
        ("cert_issuer", Text),
        ("cert_thumbprint", Text),
        ("field_86", Text),
        ("cert_serial", Text),
        ("cert_signing_time", Int),
        ("field_89", Text),
        ("field_90", Text),
    ]
};

/// A named sub-field: (index inside the TAB list, name, kind).
type Sub = (usize, &'static str, Kind);

/// Event Data type 101 (detection / remediation).
const ED_101: [Sub; 10] = [
    (1, "anomaly_guid", Kind::Text),
    (3, "side_effects_repaired", Kind::Int),
    (4, "anomaly_action_type", Kind::Text),
    (5, "anomaly_action_operation", Kind::Text),
    (6, "remediation_target", Kind::Path),
    (7, "anomaly_name", Kind::Text),
    (8, "anomaly_categories", Kind::Text),
    (9, "anomaly_action_type_id", Kind::Int),
    (10, "anomaly_action_operation_id", Kind::Int),
    (11, "previous_log_guid", Kind::Text),
];

/// Event Data type 301 (tamper protection).
const ED_301: [Sub; 6] = [
    (1, "actor_pid", Kind::Int),
    (2, "actor_process", Kind::Path),
    (
        3,
        "tamper_operation",
        Kind::Code(Table::TamperOperation, "tamper_operation_name"),
    ),
    (4, "target_pid", Kind::Int),
    (5, "target", Kind::Path),
    (6, "target_process", Kind::Path),
];

/// Event Data scan summary `status:risks:scanned:omitted:trusted_skipped` (colon-separated).
const ED_SCAN: [&str; 5] = [
    "scan_status",
    "scan_risks",
    "scan_scanned",
    "scan_omitted",
    "scan_trusted_skipped",
];

/// Event Data 2 (record type 502: the detected file).
const ED2: [Sub; 7] = [
    (1, "company", Kind::Text),
    (2, "file_size", Kind::Int),
    (
        3,
        "hash_type",
        Kind::Code(Table::HashType, "hash_type_name"),
    ),
    (4, "hash", Kind::Text),
    (5, "product_version", Kind::Text),
    (8, "sonar_engine_version", Kind::Text),
    (12, "product_name", Kind::Text),
];

/// Symbols, interned once in push order (so events are usually born sorted).
struct Syms {
    main: [Sym; 91],
    name: [Option<Sym>; 91],
    ed_type: Sym,
    ed101: SubSyms<10>,
    ed301: SubSyms<6>,
    scan: [Sym; 5],
    ed2_type: Sym,
    ed2: SubSyms<7>,
    hashes: [Sym; 3],
    detection: Sym,
    schema: Vec<&'static str>,
}

struct SubSyms<const N: usize> {
    main: [Sym; N],
    name: [Option<Sym>; N],
}

struct Interner(Vec<&'static str>);

impl Interner {
    fn sym(&mut self, name: &'static str) -> Sym {
        self.0.push(name);
        Sym::new(name)
    }

    fn kind(&mut self, name: &'static str, kind: Kind) -> (Sym, Option<Sym>) {
        let main = self.sym(name);
        let named = match kind {
            Kind::Code(_, n) => Some(self.sym(n)),
            _ => None,
        };
        (main, named)
    }

    fn subs<const N: usize>(&mut self, specs: &[Sub; N]) -> SubSyms<N> {
        let mut out = SubSyms {
            main: [Sym::RAW; N],
            name: [None; N],
        };
        for (i, (_, name, kind)) in specs.iter().enumerate() {
            (out.main[i], out.name[i]) = self.kind(name, *kind);
        }
        out
    }
}

static SYMS: LazyLock<Syms> = LazyLock::new(|| {
    let mut it = Interner(Vec::new());
    let mut main = [Sym::TIME; 91];
    let mut name = [None; 91];
    let mut ed_type = Sym::RAW;
    let mut ed101 = SubSyms {
        main: [Sym::RAW; 10],
        name: [None; 10],
    };
    let mut ed301 = SubSyms {
        main: [Sym::RAW; 6],
        name: [None; 6],
    };
    let mut scan = [Sym::RAW; 5];
    let mut ed2_type = Sym::RAW;
    let mut ed2 = SubSyms {
        main: [Sym::RAW; 7],
        name: [None; 7],
    };
    let mut hashes = [Sym::RAW; 3];
    for (i, (n, kind)) in FIELDS.iter().enumerate().skip(1) {
        (main[i], name[i]) = it.kind(n, *kind);
        match kind {
            Kind::EventData => {
                ed_type = it.sym("event_data_type");
                ed101 = it.subs(&ED_101);
                ed301 = it.subs(&ED_301);
                scan = ED_SCAN.map(|s| it.sym(s));
            }
            Kind::EventData2 => {
                ed2_type = it.sym("event_data2_type");
                ed2 = it.subs(&ED2);
                hashes = ["md5", "sha1", "sha256"].map(|s| it.sym(s));
            }
            _ => {}
        }
    }
    let detection = it.sym("detection");
    Syms {
        main,
        name,
        ed_type,
        ed101,
        ed301,
        scan,
        ed2_type,
        ed2,
        hashes,
        detection,
        schema: it.0,
    }
});

/// Fewest fields a line may have (SAV 8.x wrote 39).
pub const MIN_FIELDS: usize = 39;

/// Most CSV cells read from a line; later cells are ignored.
const MAX_CELLS: usize = 96;

/// Parser for the SEP client daily AV log.
#[derive(Clone, Copy, Debug, Default)]
pub struct SepAvParser;

impl Parser for SepAvParser {
    fn parse(&self, ctx: &ParseCtx, record: &[u8]) -> Result<Event, ParseError> {
        parse_line(ctx, record)
    }

    fn schema(&self) -> Schema {
        Schema::Fixed(schema())
    }
}

/// Every field name the AV parser can produce.
pub fn schema() -> &'static [&'static str] {
    SYMS.schema.as_slice()
}

/// One CSV cell: byte range of its content (quotes excluded) and whether `""` occurs in it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cell {
    pub start: u32,
    pub end: u32,
    pub escaped: bool,
}

/// Splits a CSV line into `cells`; returns how many were found (at most `cells.len()`).
/// Quoted cells may contain commas and `""`; an unterminated quote is an error.
///
/// A plain byte scan: cells are short, so per-cell `memchr` calls cost more than they save.
pub(crate) fn split_csv(line: &[u8], cells: &mut [Cell]) -> Result<usize, ParseError> {
    if memchr::memchr(b'"', line).is_none() {
        return split_plain(line, cells);
    }
    let len = line.len();
    let mut n = 0;
    let mut i = 0;
    while n < cells.len() {
        let cell = if line.get(i) == Some(&b'"') {
            let (cell, next) = quoted(line, i)?;
            if next < len && line[next] != b',' {
                return Err(ParseError::new(
                    next,
                    "unexpected text after a closing quote",
                ));
            }
            i = next;
            cell
        } else {
            let start = i;
            i += line[i..].iter().position(|&b| b == b',').unwrap_or(len - i);
            Cell {
                start: start as u32,
                end: i as u32,
                escaped: false,
            }
        };
        if (cell.end - cell.start) as usize > MAX_FIELD {
            return Err(ParseError::new(
                cell.start as usize,
                format!("field {n} is longer than {MAX_FIELD} bytes"),
            ));
        }
        cells[n] = cell;
        n += 1;
        if i >= len {
            break;
        }
        i += 1;
    }
    Ok(n)
}

/// A quoted cell starting at `open` (the quote): the cell and the index after its closing quote.
/// The common case, a line without quotes: cells between the commas found by SIMD search.
/// Same results as the general loop (cells beyond `cells.len()` are ignored).
fn split_plain(line: &[u8], cells: &mut [Cell]) -> Result<usize, ParseError> {
    let mut n = 0;
    let mut start = 0usize;
    let ends = memchr::memchr_iter(b',', line).chain(std::iter::once(line.len()));
    for end in ends {
        if n == cells.len() {
            break;
        }
        if end - start > MAX_FIELD {
            return Err(ParseError::new(
                start,
                format!("field {n} is longer than {MAX_FIELD} bytes"),
            ));
        }
        cells[n] = Cell {
            start: start as u32,
            end: end as u32,
            escaped: false,
        };
        n += 1;
        start = end + 1;
    }
    Ok(n)
}

fn quoted(line: &[u8], open: usize) -> Result<(Cell, usize), ParseError> {
    let start = open + 1;
    let mut j = start;
    let mut escaped = false;
    loop {
        let Some(p) = line[j..].iter().position(|&b| b == b'"') else {
            return Err(ParseError::new(
                open,
                "quote is never closed (truncated line?)",
            ));
        };
        let q = j + p;
        if line.get(q + 1) == Some(&b'"') {
            escaped = true;
            j = q + 2;
            continue;
        }
        return Ok((
            Cell {
                start: start as u32,
                end: q as u32,
                escaped,
            },
            q + 1,
        ));
    }
}

/// Decodes a 12-hex-digit AV log time (§1.2) to a civil date-time.
/// The error's offset is relative to the field.
pub fn decode_time(field: &[u8]) -> Result<DateTime, (usize, String)> {
    if field.len() != 12 {
        return Err((
            0,
            format!("time must be 12 hex digits, found {} bytes", field.len()),
        ));
    }
    let mut o = [0u8; 6];
    for (k, pair) in field.chunks_exact(2).enumerate() {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(h), Some(l)) => o[k] = (h << 4) | l,
            _ => return Err((2 * k, "time is not hexadecimal".to_owned())),
        }
    }
    let checks = [
        (1, 11, "month"),
        (2, 31, "day"),
        (3, 23, "hour"),
        (4, 59, "minute"),
        (5, 59, "second"),
    ];
    for (k, max, what) in checks {
        if o[k] > max || (k == 2 && o[k] == 0) {
            return Err((2 * k, format!("{what} {} out of range", o[k])));
        }
    }
    DateTime::new(
        1970 + i16::from(o[0]),
        o[1] as i8 + 1,
        o[2] as i8,
        o[3] as i8,
        o[4] as i8,
        o[5] as i8,
        0,
    )
    .map_err(|e| (4, format!("invalid date: {e}")))
}

fn local_time(ctx: &ParseCtx, field: &[u8], base: usize) -> Result<Timestamp, ParseError> {
    let dt = decode_time(field).map_err(|(off, msg)| ParseError::new(base + off, msg))?;
    ctx.tz
        .to_timestamp(dt)
        .map_err(|e| ParseError::new(base, format!("time not representable: {e}")))
}

/// Parses one AV log line (without its line terminator).
pub fn parse_line(ctx: &ParseCtx, line: &[u8]) -> Result<Event, ParseError> {
    check_len(line)?;
    let mut cells = [Cell::default(); MAX_CELLS];
    let n = split_csv(line, &mut cells)?;
    let cells = &cells[..n];
    if n < MIN_FIELDS {
        return Err(ParseError::new(
            line.len(),
            format!("only {n} fields; an AV log line has at least {MIN_FIELDS} (truncated?)"),
        ));
    }
    let field = |i: usize| &line[cells[i].start as usize..cells[i].end as usize];
    let time = local_time(ctx, field(0), cells[0].start as usize)?;
    let event_code = dec(field(1))
        .ok_or_else(|| ParseError::new(cells[1].start as usize, "event number is not a number"))?;
    let syms = &*SYMS;
    let mut d = Draft::new(ctx, line);
    d.ev.time = Some(time);
    let mut logger = None;
    for (i, cell) in cells.iter().enumerate().take(FIELDS.len()).skip(1) {
        let (s, e) = (cell.start as usize, cell.end as usize);
        if s == e {
            continue;
        }
        if cell.escaped {
            let text = d.text(s, e).replace("\"\"", "\"");
            d.push(syms.main[i], Value::Str(text.into_boxed_str()));
            continue;
        }
        match FIELDS[i].1 {
            Kind::EventData => event_data(&mut d, line, s, e),
            Kind::EventData2 => event_data2(&mut d, line, s, e),
            Kind::Time => match scan_time(ctx, field(0), &line[s..e], time) {
                Some(t) => d.time(syms.main[i], t),
                None => d.span(syms.main[i], s, e),
            },
            kind => {
                let v = push_value(&mut d, line, s, e, kind, syms.main[i], syms.name[i]);
                if i == 3 {
                    logger = v;
                }
            }
        }
    }
    if let Some(det) = detection(event_code, logger) {
        d.push(syms.detection, Value::Static(det));
    }
    if let Some(computer) = cells.get(4) {
        d.host_from(computer.start as usize, computer.end as usize);
    }
    Ok(d.finish())
}

/// A second time field (scan start); usually the same text as field 0, whose time is reused.
fn scan_time(ctx: &ParseCtx, field0: &[u8], field: &[u8], time0: Timestamp) -> Option<Timestamp> {
    if field == field0 {
        return Some(time0);
    }
    decode_time(field)
        .ok()
        .and_then(|dt| ctx.tz.to_timestamp(dt).ok())
}

/// Pushes one field of a simple kind; returns its integer value if it had one.
fn push_value(
    d: &mut Draft<'_>,
    line: &[u8],
    s: usize,
    e: usize,
    kind: Kind,
    sym: Sym,
    name_sym: Option<Sym>,
) -> Option<i64> {
    match kind {
        Kind::Int | Kind::Code(..) => match dec(&line[s..e]) {
            Some(v) => {
                d.push(sym, Value::Int(v));
                if let (Kind::Code(table, _), Some(ns)) = (kind, name_sym)
                    && let Some(name) = table.name(v)
                {
                    d.push(ns, Value::Static(name));
                }
                Some(v)
            }
            None => {
                d.span(sym, s, e);
                None
            }
        },
        Kind::Path if line[s..e].windows(2).any(|w| w == b"\\\\") => {
            let text = d.text(s, e).replace("\\\\", "\\");
            d.push(sym, Value::Str(text.into_boxed_str()));
            None
        }
        _ => {
            d.span(sym, s, e);
            None
        }
    }
}

/// The TAB-separated parts of `line[s..e]` as byte ranges (at most `N`).
fn tab_parts<const N: usize>(line: &[u8], s: usize, e: usize) -> ([(usize, usize); N], usize) {
    let mut parts = [(0, 0); N];
    let mut n = 0;
    let mut start = s;
    for p in memchr::memchr_iter(b'\t', &line[s..e])
        .map(|p| s + p)
        .chain([e])
    {
        if n == N {
            break;
        }
        parts[n] = (start, p);
        n += 1;
        start = p + 1;
    }
    (parts, n)
}

fn push_subs<const N: usize>(
    d: &mut Draft<'_>,
    line: &[u8],
    parts: &[(usize, usize)],
    specs: &[Sub; N],
    syms: &SubSyms<N>,
) {
    for (k, (idx, _, kind)) in specs.iter().enumerate() {
        if let Some(&(s, e)) = parts.get(*idx).filter(|(s, e)| e > s) {
            push_value(d, line, s, e, *kind, syms.main[k], syms.name[k]);
        }
    }
}

/// Event Data (field 17): type 101 / 201 / 301 sub-fields or a scan summary.
fn event_data(d: &mut Draft<'_>, line: &[u8], s: usize, e: usize) {
    let syms = &*SYMS;
    d.span(syms.main[17], s, e);
    let (parts, n) = tab_parts::<16>(line, s, e);
    let parts = &parts[..n];
    let (ts, te) = parts[0];
    let first = &line[ts..te];
    if n == 1 && first.contains(&b':') {
        let mut start = ts;
        for (k, p) in memchr::memchr_iter(b':', first)
            .map(|p| ts + p)
            .chain([te])
            .enumerate()
        {
            if k < ED_SCAN.len() {
                push_value(d, line, start, p, Kind::Int, syms.scan[k], None);
            }
            start = p + 1;
        }
        return;
    }
    let Some(kind) = dec(first) else { return };
    d.push(syms.ed_type, Value::Int(kind));
    match kind {
        101 => push_subs(d, line, parts, &ED_101, &syms.ed101),
        301 => push_subs(d, line, parts, &ED_301, &syms.ed301),
        _ => {}
    }
}

/// Event Data 2 (field 59): the detected file's company, size, hash, version, product.
fn event_data2(d: &mut Draft<'_>, line: &[u8], s: usize, e: usize) {
    let syms = &*SYMS;
    d.span(syms.main[59], s, e);
    let (parts, n) = tab_parts::<16>(line, s, e);
    let parts = &parts[..n];
    let (ts, te) = parts[0];
    if let Some(t) = dec(&line[ts..te]) {
        d.push(syms.ed2_type, Value::Int(t));
    }
    push_subs(d, line, parts, &ED2, &syms.ed2);
    let hash_type = parts.get(3).and_then(|&(s, e)| dec(&line[s..e]));
    if let (Some(t @ 0..=2), Some(&(hs, he))) = (hash_type, parts.get(4)) {
        d.span(syms.hashes[t as usize], hs, he);
    }
}

/// The `detection` value for the one line per detection that should fire: event 5
/// (virus found) named by the engine that found it, and event 72 (SONAR process detection).
pub fn detection(event_code: i64, logger: Option<i64>) -> Option<&'static str> {
    match (event_code, logger) {
        (72, _) | (5, Some(16)) => Some("sonar"),
        (5, Some(2)) => Some("auto_protect"),
        (5, Some(0)) => Some("scheduled_scan"),
        (5, Some(1)) => Some("manual_scan"),
        (5, _) => Some("other"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ParseCtx {
        let mut c = ParseCtx::new("sep-av", "localbox");
        c.tz = jiff::tz::TimeZone::UTC;
        c
    }

    #[test]
    fn time_decodes_the_worked_examples() {
        let dt = decode_time(b"31041D081739").unwrap();
        assert_eq!(dt.to_string(), "2019-05-29T08:23:57");
        assert_eq!(
            decode_time(b"200A13080122").unwrap().to_string(),
            "2002-11-19T08:01:34"
        );
        assert_eq!(
            decode_time(b"2A0A1E0A2F1D").unwrap().to_string(),
            "2012-11-30T10:47:29"
        );
        assert_eq!(decode_time(b"310C1D081739").unwrap_err().0, 2);
        assert_eq!(decode_time(b"31040008173").unwrap_err().0, 0);
        assert_eq!(decode_time(b"3104000817zz").unwrap_err().0, 10);
        assert_eq!(decode_time(b"310400081739").unwrap_err().0, 4);
        assert!(decode_time(b"31011F081739").is_err(), "February 31st");
    }

    #[test]
    fn csv_quotes_and_errors() {
        let mut cells = [Cell::default(); 8];
        let line = b"a,\"b,\"\"c\"\"\",,d";
        let n = split_csv(line, &mut cells).unwrap();
        assert_eq!(n, 4);
        assert!(cells[1].escaped);
        assert_eq!(
            &line[cells[1].start as usize..cells[1].end as usize],
            b"b,\"\"c\"\""
        );
        assert_eq!(cells[2].start, cells[2].end);
        assert_eq!(split_csv(b"a,\"open", &mut cells).unwrap_err().column, 2);
        assert_eq!(split_csv(b"\"x\"y,z", &mut cells).unwrap_err().column, 3);
    }

    #[test]
    fn short_lines_and_bad_numbers_are_errors() {
        let e = parse_line(&ctx(), b"31041D081739,5,1").unwrap_err();
        assert_eq!(e.column, 16);
        let mut line = b"31041D081739,x".to_vec();
        line.extend(std::iter::repeat_n(b',', 40));
        assert_eq!(parse_line(&ctx(), &line).unwrap_err().column, 13);
    }

    #[test]
    fn doubled_quotes_become_owned_text_and_detection_is_set() {
        let mut line =
            b"31041D081739,5,1,2,pc1,user,EICAR,c:\\x,5,1,1,0,0,\"say \"\"hi\"\"\"".to_vec();
        line.extend(std::iter::repeat_n(b',', 40));
        let ev = parse_line(&ctx(), &line).unwrap();
        assert_eq!(ev.get_str(Sym::new("description")).unwrap(), "say \"hi\"");
        assert_eq!(ev.get_str(Sym::new("detection")).unwrap(), "auto_protect");
        assert_eq!(&*ev.host, "pc1");
        assert_eq!(ev.get_str(Sym::new("logger_name")).unwrap(), "Real_Time");
    }
}
