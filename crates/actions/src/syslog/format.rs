//! Rendering one syslog message: RFC 5424 and RFC 3164 headers, CEF and JSON bodies.
//!
//! Everything renders into buffers the worker reuses, so a steady stream of events
//! allocates nothing here beyond what a template's filters allocate.

use std::fmt::Write as _;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::ser::{Serialize, SerializeMap, Serializer};
use watchpost_event::{ActionScope, Event, FieldRef, format_time};

use crate::kit::Tpl;

/// The header put in front of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`.
    Rfc5424,
    /// `<PRI>Mmm dd hh:mm:ss HOST TAG: MSG`.
    Rfc3164,
    /// The body alone.
    None,
}

/// What follows the header.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// The rendered `message` template.
    Text(Tpl),
    /// A CEF line.
    Cef(Box<Cef>),
    /// The event as a JSON object plus `filter`, `actions` and `message`.
    Json(Tpl),
}

/// The CEF header fields and extensions (all templates).
#[derive(Debug, Clone)]
pub(crate) struct Cef {
    pub(crate) vendor: Tpl,
    pub(crate) product: Tpl,
    pub(crate) version: Tpl,
    pub(crate) signature_id: Tpl,
    pub(crate) name: Tpl,
    pub(crate) severity: Tpl,
    /// `key=value` pairs in order; pairs whose value renders empty are left out.
    pub(crate) extensions: Vec<(String, Tpl)>,
}

/// RFC 5424 field limits (section 6).
const HOSTNAME_MAX: usize = 255;
const APP_NAME_MAX: usize = 48;
const PROCID_MAX: usize = 128;
const MSGID_MAX: usize = 32;
/// RFC 3164 TAG limit (section 4.1.3).
const TAG_MAX: usize = 32;

/// The enterprise number in the structured data id (`watchpost@32473`; 32473 is the
/// number RFC 5612 reserves for documentation and examples).
pub(crate) const SD_ID: &str = "watchpost@32473";

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Renders messages for one syslog action.
#[derive(Debug, Clone)]
pub(crate) struct Formatter {
    pub(crate) header: Header,
    pub(crate) body: Body,
    /// `facility * 8 + severity`.
    pub(crate) pri: u8,
    /// The configured APP-NAME / TAG (sanitised when rendering).
    pub(crate) app_name: String,
    pub(crate) hostname: Tpl,
    pub(crate) msg_id: Option<Tpl>,
    pub(crate) structured_data: bool,
    /// Zone of RFC 3164 timestamps (RFC 5424 ones are always UTC).
    pub(crate) time_zone: TimeZone,
    /// Longest message, in bytes, before framing.
    pub(crate) max_bytes: usize,
    /// PROCID: this process's id.
    pub(crate) proc_id: String,
    /// Used when the hostname template renders empty.
    pub(crate) fallback_host: String,
}

/// Buffers reused between messages.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    text: String,
    json: Vec<u8>,
}

impl Formatter {
    /// Renders one message into `out` (cleared first). `now` is used when the event has no
    /// time of its own.
    pub(crate) fn render(
        &self,
        scope: &ActionScope<'_>,
        now: Timestamp,
        out: &mut String,
        scratch: &mut Scratch,
    ) {
        out.clear();
        let time = scope.event.time.unwrap_or(now);
        match self.header {
            Header::Rfc5424 => self.header_5424(scope, time, out, scratch),
            Header::Rfc3164 => self.header_3164(scope, time, out, scratch),
            Header::None => {}
        }
        let before_body = out.len();
        match &self.body {
            Body::Text(t) => t.template.render_into(scope, out),
            Body::Cef(cef) => cef.render(scope, out, &mut scratch.text),
            Body::Json(t) => render_json(scope, t, out, scratch),
        }
        if self.header == Header::Rfc5424 && out.len() == before_body {
            out.pop(); // no MSG: drop the space after SD
        }
        truncate_at_char_boundary(out, self.max_bytes);
    }

    fn header_5424(
        &self,
        scope: &ActionScope<'_>,
        time: Timestamp,
        out: &mut String,
        s: &mut Scratch,
    ) {
        let _ = write!(out, "<{}>1 {time:.3} ", self.pri);
        self.push_host(scope, out, s, printusascii);
        out.push(' ');
        push_sanitized(out, &self.app_name, APP_NAME_MAX, printusascii);
        out.push(' ');
        push_sanitized(out, &self.proc_id, PROCID_MAX, printusascii);
        out.push(' ');
        match &self.msg_id {
            Some(t) => {
                s.text.clear();
                t.template.render_into(scope, &mut s.text);
                push_sanitized(out, &s.text, MSGID_MAX, printusascii);
            }
            None => out.push('-'),
        }
        out.push(' ');
        if self.structured_data {
            out.push('[');
            out.push_str(SD_ID);
            out.push_str(" filter=\"");
            push_sd_value(out, scope.filter);
            out.push_str("\" source=\"");
            push_sd_value(out, &scope.event.source);
            out.push_str("\"]");
        } else {
            out.push('-');
        }
        out.push(' ');
    }

    fn header_3164(
        &self,
        scope: &ActionScope<'_>,
        time: Timestamp,
        out: &mut String,
        s: &mut Scratch,
    ) {
        let dt = self.time_zone.to_datetime(time);
        let month = MONTHS[(dt.month() as usize).saturating_sub(1) % 12];
        let _ = write!(
            out,
            "<{}>{month} {:>2} {:02}:{:02}:{:02} ",
            self.pri,
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        self.push_host(scope, out, s, printusascii);
        out.push(' ');
        push_sanitized(out, &self.app_name, TAG_MAX, tag_char);
        out.push_str(": ");
    }

    fn push_host(
        &self,
        scope: &ActionScope<'_>,
        out: &mut String,
        s: &mut Scratch,
        keep: fn(char) -> bool,
    ) {
        s.text.clear();
        self.hostname.template.render_into(scope, &mut s.text);
        let host = if s.text.trim().is_empty() {
            self.fallback_host.as_str()
        } else {
            s.text.trim()
        };
        push_sanitized(out, host, HOSTNAME_MAX, keep);
    }
}

impl Cef {
    fn render(&self, scope: &ActionScope<'_>, out: &mut String, text: &mut String) {
        out.push_str("CEF:0");
        for field in [
            &self.vendor,
            &self.product,
            &self.version,
            &self.signature_id,
            &self.name,
            &self.severity,
        ] {
            out.push('|');
            text.clear();
            field.template.render_into(scope, text);
            push_cef_header(out, text);
        }
        out.push('|');
        let mut first = true;
        for (key, value) in &self.extensions {
            text.clear();
            value.template.render_into(scope, text);
            if text.is_empty() {
                continue;
            }
            if !first {
                out.push(' ');
            }
            first = false;
            out.push_str(key);
            out.push('=');
            push_cef_extension(out, text);
        }
    }
}

/// Keys the JSON body sets itself; event fields of these names are left out.
const JSON_OWN_KEYS: [&str; 3] = ["filter", "actions", "message"];

struct JsonDoc<'a> {
    event: &'a Event,
    filter: &'a str,
    actions: &'a str,
    /// `None`: no `message` key of our own (the event's own `message` field stays).
    message: Option<&'a str>,
}

impl Serialize for JsonDoc<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut map = serializer.serialize_map(None)?;
        if let Some(t) = e.time {
            map.serialize_entry("time", &format_time(t))?;
        }
        map.serialize_entry("source", &*e.source)?;
        map.serialize_entry("host", &*e.host)?;
        if e.anomaly {
            map.serialize_entry("anomaly", &true)?;
        }
        for (sym, value) in e.fields() {
            let key = sym.as_str();
            let own = match key {
                "message" => self.message.is_some(),
                _ => JSON_OWN_KEYS.contains(&key),
            };
            if sym.is_metadata() || own {
                continue;
            }
            match value {
                FieldRef::Str(s) => map.serialize_entry(key, s)?,
                FieldRef::Int(i) => map.serialize_entry(key, &i)?,
                FieldRef::Bool(b) => map.serialize_entry(key, &b)?,
                FieldRef::Time(t) => map.serialize_entry(key, &format_time(t))?,
            }
        }
        map.serialize_entry("raw", &e.raw)?;
        map.serialize_entry("filter", self.filter)?;
        map.serialize_entry("actions", self.actions)?;
        if let Some(message) = self.message {
            map.serialize_entry("message", message)?;
        }
        map.end()
    }
}

fn render_json(scope: &ActionScope<'_>, message: &Tpl, out: &mut String, s: &mut Scratch) {
    s.text.clear();
    message.template.render_into(scope, &mut s.text);
    s.json.clear();
    let doc = JsonDoc {
        event: scope.event,
        filter: scope.filter,
        actions: scope.actions,
        message: Some(&s.text),
    };
    if serde_json::to_writer(&mut s.json, &doc).is_ok() {
        // serde_json writes UTF-8; the check costs one pass over the bytes.
        out.push_str(std::str::from_utf8(&s.json).unwrap_or("{}"));
    }
}

/// The event as compact JSON (the default flag file content and `WATCHPOST_EVENT_JSON`),
/// with `filter` and `actions` added.
pub(crate) fn event_json(scope: &ActionScope<'_>) -> String {
    let doc = JsonDoc {
        event: scope.event,
        filter: scope.filter,
        actions: scope.actions,
        message: None,
    };
    serde_json::to_string(&doc).unwrap_or_default()
}

/// RFC 5424 PRINTUSASCII (`%d33-126`).
fn printusascii(c: char) -> bool {
    c.is_ascii_graphic()
}

/// Characters kept in an RFC 3164 TAG (receivers end the tag at `[`, `:` or a space).
fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

/// Appends `s` with every character `keep` rejects replaced by `_`, at most `max`
/// characters, or `-` (NILVALUE) when `s` is empty.
pub(crate) fn push_sanitized(out: &mut String, s: &str, max: usize, keep: fn(char) -> bool) {
    if s.is_empty() {
        out.push('-');
        return;
    }
    for c in s.chars().take(max) {
        out.push(if keep(c) { c } else { '_' });
    }
}

/// Escapes an SD-PARAM value: `"`, `\` and `]` get a backslash (RFC 5424 6.3.3).
pub(crate) fn push_sd_value(out: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Escapes a CEF header field: `|` and `\` get a backslash; line breaks become spaces.
pub(crate) fn push_cef_header(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '|' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Escapes a CEF extension value: `=` and `\` get a backslash; line breaks become `\n`/`\r`.
pub(crate) fn push_cef_extension(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '=' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Cuts `s` to at most `max` bytes without splitting a character.
pub(crate) fn truncate_at_char_boundary(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use watchpost_event::{Sym, Value};

    pub(crate) fn event() -> Event {
        let raw = "5/29/2019 8:23:57,Virus found,IP Address: 10.0.0.5";
        let mut e = Event::new(
            Arc::from("sep-av"),
            Arc::from("pc1.example.org"),
            raw.into(),
        );
        e.time = Some("2019-05-29T08:23:57.123Z".parse().unwrap());
        e.push(Sym::new("risk_name"), Value::Static("EICAR Test String"));
        e.push(
            Sym::new("file_path"),
            Value::Str(r"C:\Users\a=b\eicar.com".into()),
        );
        e.push(Sym::new("ip_address"), Value::Static("10.0.0.5"));
        e.push(Sym::new("count"), Value::Int(2));
        e.push(
            Sym::new("message"),
            Value::Static("the event's own message"),
        );
        e.finish();
        e
    }

    fn scope(e: &Event) -> ActionScope<'_> {
        ActionScope {
            event: e,
            filter: "virus \"found\"]",
            actions: "siem,flag",
        }
    }

    fn formatter(header: Header, body: Body) -> Formatter {
        Formatter {
            header,
            body,
            pri: 20 * 8 + 4,
            app_name: "watchpost".into(),
            hostname: Tpl::builtin("{{ host }}"),
            msg_id: None,
            structured_data: true,
            time_zone: TimeZone::UTC,
            max_bytes: 8192,
            proc_id: "4242".into(),
            fallback_host: "fallback".into(),
        }
    }

    fn text(t: &str) -> Body {
        Body::Text(Tpl::builtin(t))
    }

    fn render(f: &Formatter, e: &Event) -> String {
        let mut out = String::new();
        let now = "2024-01-02T03:04:05Z".parse().unwrap();
        f.render(&scope(e), now, &mut out, &mut Scratch::default());
        out
    }

    #[test]
    fn rfc5424_golden_with_sd_escaping() {
        let f = formatter(
            Header::Rfc5424,
            text("{{ filter }}: {{ risk_name }} on {{ host }}"),
        );
        assert_eq!(
            render(&f, &event()),
            "<164>1 2019-05-29T08:23:57.123Z pc1.example.org watchpost 4242 - \
             [watchpost@32473 filter=\"virus \\\"found\\\"\\]\" source=\"sep-av\"] \
             virus \"found\"]: EICAR Test String on pc1.example.org"
        );
    }

    #[test]
    fn rfc5424_nilvalues_sanitising_and_now() {
        let mut f = formatter(Header::Rfc5424, text(""));
        f.structured_data = false;
        f.app_name = "my app\u{e9}".into();
        f.msg_id = Some(Tpl::builtin("{{ risk_name }}"));
        f.hostname = Tpl::builtin("{{ nothing }}");
        f.fallback_host = String::new();
        let mut e = event();
        e.time = None;
        assert_eq!(
            render(&f, &e),
            "<164>1 2024-01-02T03:04:05.000Z - my_app_ 4242 EICAR_Test_String -"
        );
        f.hostname = Tpl::builtin("{{ host }}");
        e.host = Arc::from("bad host\tname");
        assert!(render(&f, &e).contains(" bad_host_name my_app_ "));
        e.host = Arc::from("h".repeat(300).as_str());
        let out = render(&f, &e);
        assert!(out.contains(&format!(" {} ", "h".repeat(255))) && !out.contains(&"h".repeat(256)));
    }

    #[test]
    fn pri_is_facility_times_eight_plus_severity() {
        let mut f = formatter(Header::Rfc3164, text("m"));
        f.pri = 0;
        assert!(render(&f, &event()).starts_with("<0>"));
        f.pri = 23 * 8 + 7;
        assert!(render(&f, &event()).starts_with("<191>"));
    }

    #[test]
    fn rfc3164_golden_and_space_padded_day() {
        let mut f = formatter(Header::Rfc3164, text("{{ filter }}: {{ risk_name }}"));
        f.app_name = "watch:post[1]".into();
        let mut e = event();
        assert_eq!(
            render(&f, &e),
            "<164>May 29 08:23:57 pc1.example.org watch_post_1_: virus \"found\"]: EICAR Test String"
        );
        e.time = Some("2019-06-05T23:01:02Z".parse().unwrap());
        f.time_zone = TimeZone::fixed(jiff::tz::offset(2));
        assert!(render(&f, &e).starts_with("<164>Jun  6 01:01:02 pc1.example.org "));
    }

    fn cef(extensions: Vec<(&str, &str)>) -> Body {
        Body::Cef(Box::new(Cef {
            vendor: Tpl::builtin("Watch|post"),
            product: Tpl::builtin("watchpost"),
            version: Tpl::builtin("0.1"),
            signature_id: Tpl::builtin("{{ filter }}"),
            name: Tpl::builtin("{{ risk_name }} in {{ file_path }}"),
            severity: Tpl::builtin("7"),
            extensions: extensions
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Tpl::builtin(v)))
                .collect(),
        }))
    }

    #[test]
    fn cef_golden_with_header_and_extension_escaping() {
        let body = cef(vec![
            ("src", "{{ ip_address }}"),
            ("fname", "{{ file_path }}"),
            ("msg", "a=b\nc"),
            ("cs1", "{{ missing }}"),
        ]);
        let f = formatter(Header::None, body);
        assert_eq!(
            render(&f, &event()),
            "CEF:0|Watch\\|post|watchpost|0.1|virus \"found\"]|EICAR Test String in C:\\\\Users\\\\a=b\\\\eicar.com|7|\
             src=10.0.0.5 fname=C:\\\\Users\\\\a\\=b\\\\eicar.com msg=a\\=b\\nc"
        );
        let f = formatter(Header::Rfc3164, cef(vec![]));
        assert!(
            render(&f, &event())
                .starts_with("<164>May 29 08:23:57 pc1.example.org watchpost: CEF:0|Watch")
        );
    }

    #[test]
    fn json_body_has_event_filter_actions_message() {
        let f = formatter(
            Header::None,
            Body::Json(Tpl::builtin("{{ filter }} on {{ host }}")),
        );
        let out = render(&f, &event());
        assert_eq!(
            out,
            r#"{"time":"2019-05-29T08:23:57.123Z","source":"sep-av","host":"pc1.example.org","#
                .to_owned()
                + r#""risk_name":"EICAR Test String","file_path":"C:\\Users\\a=b\\eicar.com","#
                + r#""ip_address":"10.0.0.5","count":2,"#
                + r#""raw":"5/29/2019 8:23:57,Virus found,IP Address: 10.0.0.5","#
                + r#""filter":"virus \"found\"]","actions":"siem,flag","#
                + r#""message":"virus \"found\"] on pc1.example.org"}"#
        );
        let f = formatter(Header::Rfc5424, Body::Json(Tpl::builtin("m")));
        let out = render(&f, &event());
        let json = out.split_once("] ").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["message"], "m");
        assert_eq!(v["count"], 2);
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let mut s = "ab\u{e9}\u{e9}".to_owned(); // a b é(2) é(2) = 6 bytes
        truncate_at_char_boundary(&mut s, 3);
        assert_eq!(s, "ab");
        let mut s = "ab\u{e9}".to_owned();
        truncate_at_char_boundary(&mut s, 4);
        assert_eq!(s, "ab\u{e9}");
        let mut f = formatter(Header::None, text("{{ raw }}\u{20ac}\u{20ac}"));
        f.max_bytes = 55;
        let out = render(&f, &event());
        assert_eq!(out.len(), 53);
        assert!(out.ends_with('\u{20ac}'));
    }

    #[test]
    fn event_json_has_filter_and_actions() {
        let e = event();
        let v: serde_json::Value = serde_json::from_str(&event_json(&scope(&e))).unwrap();
        assert_eq!(v["filter"], "virus \"found\"]");
        assert_eq!(v["actions"], "siem,flag");
        assert_eq!(v["message"], "the event's own message");
        assert_eq!(v["risk_name"], "EICAR Test String");
    }
}
