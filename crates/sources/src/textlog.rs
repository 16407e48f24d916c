//! Plain text logs (`type = "text"`): `auth.log`, application logs, anything line based.
//!
//! Every line is an event. A BSD-syslog prefix (`Nov 22 13:00:00 host sshd[123]: …`,
//! optionally with `<PRI>`, or RFC 5424) is recognised: its time becomes the event's time
//! (year-less times take the year nearest to now), its host the event's host, and the rest
//! of the line `message`, with `program` and `pid` from the tag. Without a prefix the whole
//! line is `message`. A source's `pattern` (a regular expression) is matched against
//! `message`; its named captures become fields. A line the pattern does not match is still
//! an event (filters can require a capture with `{ exists = true }`).

use regex::Regex;
use watchpost_event::{Event, Sym, Value};

use crate::parse::{ParseCtx, ParseError, Parser, Schema};
use crate::sep::manager::syslog_header;

const FIELD_NAMES: [&str; 4] = ["message", "program", "pid", "priority"];

/// Fields every text event may have (captures of a `pattern` add theirs).
pub const FIELDS: &[&str] = &FIELD_NAMES;

/// Longest line accepted.
const MAX_LINE: usize = 1 << 20;

/// The parser for `type = "text"` sources.
#[derive(Debug, Clone)]
pub struct TextParser {
    pattern: Option<Regex>,
    captures: Vec<(usize, Sym)>,
    schema: &'static [&'static str],
    syms: [Sym; 4],
}

impl TextParser {
    /// A parser; `pattern`'s named captures become fields.
    pub fn new(pattern: Option<Regex>) -> TextParser {
        let mut names: Vec<&'static str> = FIELDS.to_vec();
        let mut captures = Vec::new();
        if let Some(re) = &pattern {
            for (i, name) in re.capture_names().enumerate() {
                if let Some(sym) = name.and_then(Sym::try_new) {
                    captures.push((i, sym));
                    names.push(sym.as_str());
                }
            }
        }
        TextParser {
            pattern,
            captures,
            // Built once per configured source, so the leak is bounded by the configuration.
            schema: Box::leak(names.into_boxed_slice()),
            syms: Sym::many(FIELD_NAMES),
        }
    }
}

impl Parser for TextParser {
    fn parse(&self, ctx: &ParseCtx, record: &[u8]) -> Result<Event, ParseError> {
        if record.len() > MAX_LINE {
            return Err(ParseError::new(
                MAX_LINE,
                format!("line over the {MAX_LINE}-byte limit"),
            ));
        }
        let raw = crate::text::decode(record).into_owned();
        let header = syslog_header(&raw, &ctx.tz, jiff::Timestamp::now());
        let mut event = Event::with_capacity(
            ctx.source.clone(),
            ctx.local_host.clone(),
            raw,
            4 + self.captures.len(),
        );
        let [message, program, pid, priority] = self.syms;
        event.time = header.time;
        if let Some((s, e)) = header.host {
            event.host = event.raw[s..e].into();
        }
        if let Some((s, e)) = header.appname {
            event.push_span(program, s, e);
        }
        if let Some((s, e)) = header.procid {
            event.push_span(pid, s, e);
        }
        if let Some(p) = header.priority {
            event.push(priority, Value::Int(p));
        }
        let body = header.payload.min(event.raw.len());
        event.push_span(message, body, event.raw.len());
        if let Some(re) = &self.pattern {
            let found: Vec<(Sym, usize, usize)> = match re.captures(&event.raw[body..]) {
                Some(c) => self
                    .captures
                    .iter()
                    .filter_map(|(i, sym)| {
                        c.get(*i).map(|m| (*sym, body + m.start(), body + m.end()))
                    })
                    .collect(),
                None => Vec::new(),
            };
            for (sym, s, e) in found {
                event.push_span(sym, s, e);
            }
        }
        event.finish();
        Ok(event)
    }

    fn schema(&self) -> Schema {
        Schema::Fixed(self.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &TextParser, line: &str) -> Event {
        let mut ctx = ParseCtx::new("auth", "here");
        ctx.tz = jiff::tz::TimeZone::UTC;
        p.parse(&ctx, line.as_bytes()).unwrap()
    }

    fn get(e: &Event, n: &str) -> Option<String> {
        e.get_str(Sym::new(n)).map(|c| c.into_owned())
    }

    #[test]
    fn syslog_prefix_and_pattern_captures() {
        let re =
            Regex::new(r"^Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<ip>\S+)").unwrap();
        let p = TextParser::new(Some(re));
        let e = parse(
            &p,
            "Nov 22 13:00:01 web1 sshd[4242]: Accepted publickey for ann from 10.0.0.7 port 50522 ssh2",
        );
        assert_eq!(&*e.host, "web1");
        assert_eq!(get(&e, "program").as_deref(), Some("sshd"));
        assert_eq!(get(&e, "pid").as_deref(), Some("4242"));
        assert_eq!(get(&e, "user").as_deref(), Some("ann"));
        assert_eq!(get(&e, "ip").as_deref(), Some("10.0.0.7"));
        assert_eq!(get(&e, "method").as_deref(), Some("publickey"));
        assert!(
            get(&e, "message")
                .unwrap()
                .starts_with("Accepted publickey")
        );
        let t = e.time.unwrap().to_zoned(jiff::tz::TimeZone::UTC);
        assert_eq!((t.month(), t.day(), t.hour(), t.second()), (11, 22, 13, 1));
        assert!(
            p.schema().allows("ip") && p.schema().allows("program") && !p.schema().allows("nope")
        );
    }

    #[test]
    fn lines_without_prefix_or_match_are_still_events() {
        let p = TextParser::new(Some(Regex::new(r"(?P<x>never)").unwrap()));
        let e = parse(&p, "plain application line");
        assert_eq!(
            get(&e, "message").as_deref(),
            Some("plain application line")
        );
        assert_eq!(get(&e, "x"), None);
        assert_eq!(&*e.host, "here");
        assert!(e.time.is_none());
        let e = parse(&TextParser::new(None), "Gr\u{fc}\u{df}e");
        assert_eq!(get(&e, "message").as_deref(), Some("Grüße"));
    }
}
