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

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event as Xml};
use watchpost_event::{Event, Sym, Value};

use crate::parse::{ParseCtx, ParseError, Schema};

/// The System fields this module produces (data fields are open).
pub const SYSTEM_FIELDS: &[&str] = &[
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

/// The element being read: name, `Data/@Name`, and its text so far.
struct Open {
    name: String,
    data_name: Option<String>,
    text: String,
}

/// Parses one event's XML.
pub fn parse_event_xml(ctx: &ParseCtx, xml: &str) -> Result<Event, ParseError> {
    let mut st = State {
        event: Event::new(ctx.source.clone(), ctx.local_host.clone(), xml.to_owned()),
        section: Section::None,
        depth: 0,
        open: None,
        position: 0,
        saw_event: false,
    };
    let mut reader = Reader::from_str(xml);
    loop {
        let at = reader.buffer_position() as usize;
        let ev = reader
            .read_event()
            .map_err(|e| ParseError::new(at, format!("bad event XML: {e}")))?;
        match ev {
            Xml::Start(e) => st.start(&e),
            Xml::Empty(e) => st.empty(&e),
            Xml::Text(t) => {
                let text = t
                    .xml_content()
                    .map_err(|e| ParseError::new(at, format!("bad XML text: {e}")))?;
                st.text(&text);
            }
            Xml::GeneralRef(r) => {
                let name = String::from_utf8_lossy(&r).into_owned();
                let c = entity(&name)
                    .ok_or_else(|| ParseError::new(at, format!("unknown XML entity &{name};")))?;
                st.text(c.encode_utf8(&mut [0; 4]));
            }
            Xml::CData(t) => st.text(&String::from_utf8_lossy(&t)),
            Xml::End(e) => st.end(&String::from_utf8_lossy(e.local_name().as_ref())),
            Xml::Eof => break,
            _ => {}
        }
    }
    if !st.saw_event {
        return Err(ParseError::new(
            0,
            "not a Windows event: no <Event> root element",
        ));
    }
    st.event.finish();
    Ok(st.event)
}

/// Where the reader is in the document.
struct State {
    event: Event,
    section: Section,
    depth: usize,
    /// Only leaf elements carry values: a child's start replaces its parent here.
    open: Option<Open>,
    /// Insertion strings seen so far.
    position: usize,
    saw_event: bool,
}

impl State {
    fn start(&mut self, e: &BytesStart<'_>) {
        self.depth += 1;
        let name = local(e);
        self.saw_event |= self.depth == 1 && name == "Event";
        self.section = enter(self.section, self.depth, &name);
        if self.section == Section::System {
            system_attrs(&mut self.event, e, &name);
        }
        self.open = Some(Open {
            data_name: attr(e, "Name"),
            name,
            text: String::new(),
        });
    }

    fn empty(&mut self, e: &BytesStart<'_>) {
        let name = local(e);
        if self.section == Section::System || self.depth == 1 {
            system_attrs(&mut self.event, e, &name);
        } else if self.section == Section::EventData && name == "Data" {
            self.position += 1;
            push_data(
                &mut self.event,
                attr(e, "Name").as_deref(),
                self.position,
                String::new(),
            );
        }
    }

    fn text(&mut self, text: &str) {
        if let Some(o) = &mut self.open {
            o.text.push_str(text);
        }
    }

    fn end(&mut self, name: &str) {
        if let Some(o) = self.open.take().filter(|o| o.name == name) {
            store_leaf(&mut self.event, self.section, o, &mut self.position);
        }
        if self.depth <= 2 && name != "Event" {
            self.section = Section::None;
        }
        self.depth = self.depth.saturating_sub(1);
    }
}

/// The character of an XML entity reference (`amp`, `#60`, `#x3C`).
fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

fn enter(section: Section, depth: usize, name: &str) -> Section {
    if depth != 2 {
        return section;
    }
    match name {
        "System" => Section::System,
        "EventData" => Section::EventData,
        "UserData" => Section::UserData,
        "RenderingInfo" => Section::Rendering,
        _ => Section::None,
    }
}

fn local(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

fn attr(e: &BytesStart<'_>, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == key.as_bytes())
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn set(event: &mut Event, name: &str, value: String) {
    if let Some(sym) = Sym::try_new(name) {
        event.push(sym, Value::Str(value.into_boxed_str()));
    }
}

fn system_attrs(event: &mut Event, e: &BytesStart<'_>, name: &str) {
    match name {
        "Provider" => {
            if let Some(v) = attr(e, "Name").or_else(|| attr(e, "EventSourceName")) {
                set(event, "provider", v);
            }
        }
        "TimeCreated" => {
            if let Some(t) = attr(e, "SystemTime").and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
                event.time = Some(t);
            }
        }
        "Execution" => {
            for (a, f) in [("ProcessID", "process_id"), ("ThreadID", "thread_id")] {
                if let Some(v) = attr(e, a) {
                    set(event, f, v);
                }
            }
        }
        "Security" => {
            if let Some(v) = attr(e, "UserID") {
                set(event, "user_sid", v);
            }
        }
        "Correlation" => {
            if let Some(v) = attr(e, "ActivityID") {
                set(event, "activity_id", v);
            }
        }
        "EventID" => {
            if let Some(v) = attr(e, "Qualifiers") {
                set(event, "qualifiers", v);
            }
        }
        _ => {}
    }
}

fn store_leaf(event: &mut Event, section: Section, o: Open, position: &mut usize) {
    match section {
        Section::System => {
            let field = match o.name.as_str() {
                "EventID" => "event_id",
                "Version" => "version",
                "Level" => "level",
                "Task" => "task",
                "Opcode" => "opcode",
                "Keywords" => "keywords",
                "EventRecordID" => "record_id",
                "Channel" => "channel",
                "Computer" => {
                    event.host = o.text.as_str().into();
                    "computer"
                }
                _ => return,
            };
            set(event, field, o.text);
        }
        Section::EventData if o.name == "Data" => {
            *position += 1;
            push_data(event, o.data_name.as_deref(), *position, o.text);
        }
        Section::UserData => {
            *position += 1;
            push_data(event, Some(&o.name), *position, o.text);
        }
        Section::Rendering if o.name == "Message" => set(event, "message", o.text),
        _ => {}
    }
}

fn push_data(event: &mut Event, name: Option<&str>, position: usize, value: String) {
    if position > MAX_DATA {
        return;
    }
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        set(event, n, value.clone());
    }
    set(event, &format!("str{position}"), value);
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
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_event_xml(&ctx(), "not xml at all").is_err());
        assert!(parse_event_xml(&ctx(), "<Event><System><EventID>1</EventID>").is_ok());
        assert!(parse_event_xml(&ctx(), "<a><b></c></a>").is_err());
    }
}
