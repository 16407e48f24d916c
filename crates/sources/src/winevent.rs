//! Windows event XML (as rendered by `EvtRender` or stored in EVTX records) → [`Event`].
//!
//! Portable: the EVTX reader and the live Windows Event Log source share it.
//!
//! Fields: from `<System>`: `event_id`, `provider`, `channel`, `computer`, `record_id`,
//! `version`, `level`, `task`, `opcode`, `keywords`, `process_id`, `thread_id`,
//! `user_sid`, `qualifiers`, `activity_id`; `TimeCreated/@SystemTime` becomes the event's
//! time and `Computer` its host. Insertion strings of `<EventData>` (and the leaf elements
//! of `<UserData>`) are fields both by name (`TargetUserName`) and by 1-based position
//! (`str1` … `strN`, as EventSentry's `$STRn`). `<RenderingInfo><Message>` becomes
//! `message`. Values are the raw strings of the record (`-`, `%%1833`, SIDs).

use watchpost_event::{Event, Sym, Value};

use crate::parse::{ParseCtx, ParseError, Schema};
use crate::xmlscan::{Attr, Scanner, Tok, has_refs, unescape};

/// The System fields this module produces (data fields are open).
pub const SYSTEM_FIELDS: &[&str] = &SYSTEM_NAMES;

/// [`SYSTEM_FIELDS`] as an array (its order gives the indices in [`f`]).
const SYSTEM_NAMES: [&str; 16] = [
    "event_id",
    "provider",
    "channel",
    "computer",
    "record_id",
    "version",
    "level",
    "task",
    "opcode",
    "keywords",
    "process_id",
    "thread_id",
    "user_sid",
    "qualifiers",
    "activity_id",
    "message",
];

/// Schema of Windows events: System fields plus any insertion-string name.
pub const SCHEMA: Schema = Schema::Open;

/// Parses records that are one event's XML each (EVTX records, rendered live events).
#[derive(Debug, Clone, Copy, Default)]
pub struct EventXmlParser;

/// Longest event XML accepted (EVTX records are far smaller: a chunk is 64 KiB).
const MAX_XML: usize = 1 << 20;

impl crate::parse::Parser for EventXmlParser {
    fn parse(&self, ctx: &ParseCtx, record: &[u8]) -> Result<Event, ParseError> {
        if record.len() > MAX_XML {
            return Err(ParseError::new(
                MAX_XML,
                format!("event XML over the {MAX_XML}-byte limit"),
            ));
        }
        // Offsets are in the decoded text; keep them inside the record for the caller.
        parse_event_xml(ctx, &crate::text::decode(record)).map_err(|mut e| {
            e.column = e.column.min(record.len());
            e
        })
    }

    fn schema(&self) -> Schema {
        SCHEMA
    }
}

/// Most insertion strings kept per event (`str1` … `str512`).
const MAX_DATA: usize = 512;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    System,
    EventData,
    UserData,
    Rendering,
}

/// A value found in the XML: bytes of the document (no escapes in them), or unescaped
/// text. Spans become [`Value::Span`]s of the event's `raw` (the document itself), so the
/// common case copies nothing.
#[derive(Debug, Clone)]
enum Text {
    Span(usize, usize),
    Owned(String),
}

impl Text {
    fn into_value(self) -> Value {
        match self {
            Text::Span(start, end) => Value::Span {
                start: start as u32,
                len: (end - start) as u32,
            },
            Text::Owned(s) => Value::Str(s.into_boxed_str()),
        }
    }

    fn as_str<'x>(&'x self, xml: &'x str) -> &'x str {
        match self {
            Text::Span(start, end) => &xml[*start..*end],
            Text::Owned(s) => s,
        }
    }
}

/// The leaf element being read: its local name, `Data/@Name`, and its text so far.
struct Open<'x> {
    name: &'x [u8],
    data_name: Option<Text>,
    text: Option<Text>,
}

/// Parses one event's XML (copies it to become the event's `raw`; see
/// [`parse_event_xml_owned`] to hand it over instead).
pub fn parse_event_xml(ctx: &ParseCtx, xml: &str) -> Result<Event, ParseError> {
    parse_event_xml_owned(ctx, xml.to_owned())
}

/// Parses one event's XML, which becomes the event's `raw`; field values are spans of it
/// wherever the XML has no character references in them.
pub fn parse_event_xml_owned(ctx: &ParseCtx, xml: String) -> Result<Event, ParseError> {
    if xml.len() > u32::MAX as usize {
        return Err(ParseError::new(0, "event XML over 4 GiB"));
    }
    let (fields, time, host) = scan(&xml)?;
    let mut event = Event::with_capacity(
        ctx.source.clone(),
        ctx.local_host.clone(),
        xml,
        fields.len(),
    );
    if let Some(h) = host {
        event.host = h.as_str(&event.raw).into();
    }
    event.time = time;
    for (sym, text) in fields {
        event.push(sym, text.into_value());
    }
    event.finish();
    Ok(event)
}

type Scanned = (Vec<(Sym, Text)>, Option<jiff::Timestamp>, Option<Text>);

/// Reads the document: fields in document order, the time, the computer.
fn scan(xml: &str) -> Result<Scanned, ParseError> {
    let mut st = State {
        xml,
        fields: Vec::with_capacity(48),
        time: None,
        host: None,
        section: Section::None,
        depth: 0,
        open: None,
        position: 0,
        saw_event: false,
    };
    let mut scanner = Scanner::new(xml);
    while let Some(tok) = scanner.next_tok()? {
        match tok {
            Tok::Start { name, empty } => {
                let attrs = &scanner.attrs;
                if empty {
                    st.empty(name, attrs);
                } else {
                    st.start(name, attrs);
                }
            }
            Tok::Text(a, b) => {
                if st.open.is_some() {
                    let raw = &xml[a..b];
                    st.text(if has_refs(raw.as_bytes()) {
                        Text::Owned(unescape(raw, a)?)
                    } else {
                        Text::Span(a, b)
                    });
                }
            }
            Tok::CData(a, b) => st.text(Text::Span(a, b)),
            Tok::End { name } => st.end(name),
        }
    }
    if !st.saw_event {
        return Err(ParseError::new(
            0,
            "not a Windows event: no <Event> root element",
        ));
    }
    Ok((st.fields, st.time, st.host))
}

/// Where the reader is in the document.
struct State<'x> {
    xml: &'x str,
    fields: Vec<(Sym, Text)>,
    time: Option<jiff::Timestamp>,
    host: Option<Text>,
    section: Section,
    depth: usize,
    /// Only leaf elements carry values: a child's start replaces its parent here.
    open: Option<Open<'x>>,
    /// Insertion strings seen so far.
    position: usize,
    saw_event: bool,
}

impl<'x> State<'x> {
    fn start(&mut self, name: &'x [u8], attrs: &[Attr<'x>]) {
        self.depth += 1;
        self.saw_event |= self.depth == 1 && name == b"Event";
        self.section = enter(self.section, self.depth, name);
        if self.section == Section::System {
            self.system_attrs(attrs, name);
        }
        let data_name = if self.section == Section::EventData && name == b"Data" {
            attr(self.xml, attrs, b"Name")
        } else {
            None
        };
        self.open = Some(Open {
            data_name,
            name,
            text: None,
        });
    }

    fn empty(&mut self, name: &'x [u8], attrs: &[Attr<'x>]) {
        if self.section == Section::System || self.depth == 1 {
            self.system_attrs(attrs, name);
        } else if self.section == Section::EventData && name == b"Data" {
            self.position += 1;
            let data_name = attr(self.xml, attrs, b"Name");
            self.push_data(data_name, Text::Owned(String::new()));
        }
    }

    fn text(&mut self, text: Text) {
        let xml = self.xml;
        if let Some(o) = &mut self.open {
            o.text = Some(match (o.text.take(), text) {
                (None, t) => t,
                (Some(a), b) => {
                    let mut s = a.as_str(xml).to_owned();
                    s.push_str(b.as_str(xml));
                    Text::Owned(s)
                }
            });
        }
    }

    fn end(&mut self, name: &[u8]) {
        if let Some(o) = self.open.take().filter(|o| o.name == name) {
            self.store_leaf(o);
        }
        if self.depth <= 2 && name != b"Event" {
            self.section = Section::None;
        }
        self.depth = self.depth.saturating_sub(1);
    }

    fn set(&mut self, sym: Sym, value: Text) {
        self.fields.push((sym, value));
    }

    fn system_attrs(&mut self, e: &[Attr<'x>], name: &[u8]) {
        let s = sys();
        match name {
            b"Provider" => {
                if let Some(v) =
                    attr(self.xml, e, b"Name").or_else(|| attr(self.xml, e, b"EventSourceName"))
                {
                    self.set(s[f::PROVIDER], v);
                }
            }
            b"TimeCreated" => {
                if let Some(t) = attr(self.xml, e, b"SystemTime")
                    .and_then(|v| v.as_str(self.xml).parse::<jiff::Timestamp>().ok())
                {
                    self.time = Some(t);
                }
            }
            b"Execution" => {
                if let Some(v) = attr(self.xml, e, b"ProcessID") {
                    self.set(s[f::PROCESS_ID], v);
                }
                if let Some(v) = attr(self.xml, e, b"ThreadID") {
                    self.set(s[f::THREAD_ID], v);
                }
            }
            b"Security" => {
                if let Some(v) = attr(self.xml, e, b"UserID") {
                    self.set(s[f::USER_SID], v);
                }
            }
            b"Correlation" => {
                if let Some(v) = attr(self.xml, e, b"ActivityID") {
                    self.set(s[f::ACTIVITY_ID], v);
                }
            }
            b"EventID" => {
                if let Some(v) = attr(self.xml, e, b"Qualifiers") {
                    self.set(s[f::QUALIFIERS], v);
                }
            }
            _ => {}
        }
    }

    fn store_leaf(&mut self, o: Open<'x>) {
        let s = sys();
        let text = o.text.unwrap_or(Text::Owned(String::new()));
        match self.section {
            Section::System => {
                let field = match o.name {
                    b"EventID" => s[f::EVENT_ID],
                    b"Version" => s[f::VERSION],
                    b"Level" => s[f::LEVEL],
                    b"Task" => s[f::TASK],
                    b"Opcode" => s[f::OPCODE],
                    b"Keywords" => s[f::KEYWORDS],
                    b"EventRecordID" => s[f::RECORD_ID],
                    b"Channel" => s[f::CHANNEL],
                    b"Computer" => {
                        self.host = Some(text.clone());
                        s[f::COMPUTER]
                    }
                    _ => return,
                };
                self.set(field, text);
            }
            Section::EventData if o.name == b"Data" => {
                self.position += 1;
                self.push_data(o.data_name, text);
            }
            Section::UserData => {
                self.position += 1;
                let start = o.name.as_ptr() as usize - self.xml.as_ptr() as usize;
                self.push_data(Some(Text::Span(start, start + o.name.len())), text);
            }
            Section::Rendering if o.name == b"Message" => self.set(s[f::MESSAGE], text),
            _ => {}
        }
    }

    /// Insertion string number `self.position`: by its name (when it has one) and as `strN`.
    fn push_data(&mut self, name: Option<Text>, value: Text) {
        if self.position > MAX_DATA {
            return;
        }
        if let Some(sym) = name.and_then(|n| named_sym(n.as_str(self.xml))) {
            self.set(sym, value.clone());
        }
        if let Some(sym) = position_sym(self.position) {
            self.set(sym, value);
        }
    }
}

/// Indices of the System fields in [`SYSTEM_NAMES`] and [`sys`].
mod f {
    pub const EVENT_ID: usize = 0;
    pub const PROVIDER: usize = 1;
    pub const CHANNEL: usize = 2;
    pub const COMPUTER: usize = 3;
    pub const RECORD_ID: usize = 4;
    pub const VERSION: usize = 5;
    pub const LEVEL: usize = 6;
    pub const TASK: usize = 7;
    pub const OPCODE: usize = 8;
    pub const KEYWORDS: usize = 9;
    pub const PROCESS_ID: usize = 10;
    pub const THREAD_ID: usize = 11;
    pub const USER_SID: usize = 12;
    pub const QUALIFIERS: usize = 13;
    pub const ACTIVITY_ID: usize = 14;
    pub const MESSAGE: usize = 15;
}

/// The symbols of the System fields, interned once (indexed by [`f`]).
fn sys() -> &'static [Sym; 16] {
    static SYMS: std::sync::LazyLock<[Sym; 16]> =
        std::sync::LazyLock::new(|| SYSTEM_NAMES.map(Sym::new));
    &SYMS
}

thread_local! {
    /// `str1` … `strN` symbols made so far on this thread (index = N - 1).
    static POSITION_SYMS: std::cell::RefCell<Vec<Sym>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Insertion-string names seen on this thread: the shared interner takes a lock and
    /// hashes with SipHash; this cache keeps that off the per-record path.
    static NAME_SYMS: std::cell::RefCell<std::collections::HashMap<Box<str>, Sym, foldhash::fast::FixedState>> =
        const { std::cell::RefCell::new(std::collections::HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0))) };
}

/// The symbol of `strN` (`n` from 1).
fn position_sym(n: usize) -> Option<Sym> {
    POSITION_SYMS.with_borrow_mut(|v| {
        while v.len() < n {
            let sym = Sym::try_new(&format!("str{}", v.len() + 1))?;
            v.push(sym);
        }
        v.get(n - 1).copied()
    })
}

/// The symbol of an insertion string's name (`None` when empty or the table is full).
fn named_sym(name: &str) -> Option<Sym> {
    if name.is_empty() {
        return None;
    }
    NAME_SYMS.with_borrow_mut(|m| {
        if let Some(sym) = m.get(name) {
            return Some(*sym);
        }
        let sym = Sym::try_new(name)?;
        // Bounded: names come from input; past the cap the interner answers directly.
        if m.len() < 4096 {
            m.insert(name.into(), sym);
        }
        Some(sym)
    })
}

fn enter(section: Section, depth: usize, name: &[u8]) -> Section {
    if depth != 2 {
        return section;
    }
    match name {
        b"System" => Section::System,
        b"EventData" => Section::EventData,
        b"UserData" => Section::UserData,
        b"RenderingInfo" => Section::Rendering,
        _ => Section::None,
    }
}

/// An attribute's value: a span of the document when it holds no references, else
/// unescaped (`None` when the references are bad).
fn attr(xml: &str, attrs: &[Attr<'_>], key: &[u8]) -> Option<Text> {
    let a = attrs.iter().find(|a| a.name == key)?;
    let (start, end) = a.value;
    let raw = &xml[start..end];
    if has_refs(raw.as_bytes()) {
        unescape(raw, start).ok().map(Text::Owned)
    } else {
        Some(Text::Span(start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Security-Auditing" Guid="{54849625-5478-4994-a5ba-3e3b0328c30d}"/><EventID>4624</EventID><Version>2</Version><Level>0</Level><Task>12544</Task><Opcode>0</Opcode><Keywords>0x8020000000000000</Keywords><TimeCreated SystemTime="2019-03-19T23:34:25.926990Z"/><EventRecordID>6016</EventRecordID><Correlation/><Execution ProcessID="572" ThreadID="3720"/><Channel>Security</Channel><Computer>WIN-DC1.lab.local</Computer><Security/></System><EventData><Data Name="SubjectUserSid">S-1-5-18</Data><Data Name="SubjectUserName">WIN$</Data><Data Name="TargetUserName">admin &amp; co</Data><Data Name="Empty"></Data><Data Name="LogonType">10</Data><Data Name="IpAddress">127.0.0.1</Data></EventData></Event>"#;

    fn ctx() -> ParseCtx {
        ParseCtx::new("security", "local")
    }

    #[test]
    fn system_and_event_data_by_name_and_position() {
        let e = parse_event_xml(&ctx(), XML).unwrap();
        let g = |n: &str| e.get_str(Sym::new(n)).map(|c| c.into_owned());
        assert_eq!(g("event_id").as_deref(), Some("4624"));
        assert_eq!(
            g("provider").as_deref(),
            Some("Microsoft-Windows-Security-Auditing")
        );
        assert_eq!(g("channel").as_deref(), Some("Security"));
        assert_eq!(g("record_id").as_deref(), Some("6016"));
        assert_eq!(g("process_id").as_deref(), Some("572"));
        assert_eq!(&*e.host, "WIN-DC1.lab.local");
        assert_eq!(e.time.unwrap().to_string(), "2019-03-19T23:34:25.92699Z");
        assert_eq!(g("TargetUserName").as_deref(), Some("admin & co"));
        assert_eq!(g("str3").as_deref(), Some("admin & co"));
        assert_eq!(g("str4").as_deref(), Some(""));
        assert_eq!(g("LogonType").as_deref(), Some("10"));
        assert_eq!(g("str5").as_deref(), Some("10"));
        assert_eq!(g("str6").as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn user_data_and_rendering_info() {
        let xml = r#"<Event><System><EventID Qualifiers="16384">1102</EventID><Channel>Security</Channel><Computer>pc</Computer></System><UserData><LogFileCleared xmlns="x"><SubjectUserSid>S-1-5-21-1</SubjectUserSid><SubjectUserName>bob</SubjectUserName></LogFileCleared></UserData><RenderingInfo Culture="en-US"><Message>The audit log was cleared.</Message></RenderingInfo></Event>"#;
        let e = parse_event_xml(&ctx(), xml).unwrap();
        let g = |n: &str| e.get_str(Sym::new(n)).map(|c| c.into_owned());
        assert_eq!(g("qualifiers").as_deref(), Some("16384"));
        assert_eq!(g("SubjectUserName").as_deref(), Some("bob"));
        assert_eq!(g("str2").as_deref(), Some("bob"));
        assert_eq!(g("message").as_deref(), Some("The audit log was cleared."));
    }

    #[test]
    fn references_cdata_and_prefixes_are_unescaped() {
        let xml = r#"<e:Event xmlns:e="x"><e:System><e:Provider Name="A &quot;B&quot;"/><e:EventID>7</e:EventID><e:Computer>pc&#x41;</e:Computer></e:System><e:EventData><e:Data Name="Cmd">a &lt;b&gt; c</e:Data><e:Data Name="Raw"><![CDATA[<x>]]></e:Data><e:Data Name="P&amp;Q">v</e:Data><e:Data/></e:EventData></e:Event>"#;
        let e = parse_event_xml(&ctx(), xml).unwrap();
        let g = |n: &str| e.get_str(Sym::new(n)).map(|c| c.into_owned());
        assert_eq!(g("provider").as_deref(), Some("A \"B\""));
        assert_eq!(g("event_id").as_deref(), Some("7"));
        assert_eq!(&*e.host, "pcA");
        assert_eq!(g("Cmd").as_deref(), Some("a <b> c"));
        assert_eq!(g("str1").as_deref(), Some("a <b> c"));
        assert_eq!(g("Raw").as_deref(), Some("<x>"));
        assert_eq!(g("P&Q").as_deref(), Some("v"));
        assert_eq!(g("str3").as_deref(), Some("v"));
        assert_eq!(g("str4").as_deref(), Some(""));
        // Plain values are spans of the document: nothing copied.
        let Some(watchpost_event::FieldRef::Str(id)) = e.get(Sym::new("event_id")) else {
            panic!("no event_id")
        };
        let raw = e.raw.as_bytes().as_ptr_range();
        assert!(raw.contains(&id.as_ptr()), "event_id was copied");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_event_xml(&ctx(), "not xml at all").is_err());
        assert!(parse_event_xml(&ctx(), "<Event><System><EventID>1</EventID>").is_ok());
        assert!(parse_event_xml(&ctx(), "<a><b></c></a>").is_err());
    }
}
