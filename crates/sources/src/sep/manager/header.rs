//! The header in front of a SEPM syslog payload: RFC 5424, RFC 3164 (tag `SymantecServer:`)
//! or the text-dump prefix `YYYY-MM-DD hh:mm:ss,<Severity>,`. All ranges are byte ranges
//! of the line.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// What the header said.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Header {
    /// Where the payload starts.
    pub payload: usize,
    /// The header's time.
    pub time: Option<Timestamp>,
    /// The sending host.
    pub host: Option<(usize, usize)>,
    /// `<PRI>`.
    pub priority: Option<i64>,
    /// RFC 3164 tag / RFC 5424 APP-NAME.
    pub appname: Option<(usize, usize)>,
    /// RFC 3164 `[pid]` / RFC 5424 PROCID.
    pub procid: Option<(usize, usize)>,
    /// Text-dump severity (`Critical`, `Major`, …).
    pub severity: Option<(usize, usize)>,
}

/// Reads the header of `line`; `payload` is 0 when there is none. `now` picks the year of
/// RFC 3164 times (which have none): the year that puts the time nearest to `now` in `tz`.
pub(crate) fn strip(line: &str, tz: &TimeZone, now: Timestamp) -> Header {
    if let Some(h) = text_dump(line, tz) {
        return h;
    }
    let (priority, at) = match pri(line) {
        Some((p, at)) => (Some(p), at),
        None => (None, 0),
    };
    let rest = &line[at..];
    let parsed = if rest.as_bytes().first().is_some_and(u8::is_ascii_digit) && priority.is_some() {
        rfc5424(line, at)
    } else {
        rfc3164(line, at, tz, now)
    };
    match parsed {
        Some(mut h) => {
            h.priority = priority;
            h
        }
        None => Header::default(),
    }
}

/// `<PRI>`: the priority and the offset after `>`.
fn pri(line: &str) -> Option<(i64, usize)> {
    let rest = line.strip_prefix('<')?;
    let close = rest.find('>')?;
    let digits = &rest[..close];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, close + 2))
}

/// The next space-delimited token at `at`: its range and the offset after its space.
fn token(line: &str, at: usize) -> Option<((usize, usize), usize)> {
    let rest = line.get(at..)?;
    let end = at + rest.find(' ')?;
    (end > at).then_some(((at, end), end + 1))
}

fn nil(line: &str, r: (usize, usize)) -> Option<(usize, usize)> {
    (&line[r.0..r.1] != "-").then_some(r)
}

/// `VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]`.
fn rfc5424(line: &str, at: usize) -> Option<Header> {
    let (_version, at) = token(line, at)?;
    let (ts, at) = token(line, at)?;
    let (host, at) = token(line, at)?;
    let (app, at) = token(line, at)?;
    let (procid, at) = token(line, at)?;
    let (_msgid, at) = token(line, at)?;
    let mut at = structured_data(line, at)?;
    if line[at..].starts_with(' ') {
        at += 1;
    }
    if line[at..].starts_with('\u{feff}') {
        at += '\u{feff}'.len_utf8();
    }
    Some(Header {
        payload: at,
        time: nil(line, ts).and_then(|(s, e)| line[s..e].parse::<Timestamp>().ok()),
        host: nil(line, host),
        appname: nil(line, app),
        procid: nil(line, procid),
        ..Header::default()
    })
}

/// Skips STRUCTURED-DATA (`-` or `[…]…`); returns the offset after it.
fn structured_data(line: &str, at: usize) -> Option<usize> {
    let b = line.as_bytes();
    match b.get(at) {
        Some(b'-') => return Some(at + 1),
        Some(b'[') => {}
        _ => return None,
    }
    let mut i = at;
    while b.get(i) == Some(&b'[') {
        let mut in_quote = false;
        i += 1;
        loop {
            match b.get(i)? {
                b'\\' if in_quote => i += 1,
                b'"' => in_quote = !in_quote,
                b']' if !in_quote => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    Some(i)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mmm dd hh:mm:ss HOST TAG: MSG` (the PRI already consumed).
fn rfc3164(line: &str, at: usize, tz: &TimeZone, now: Timestamp) -> Option<Header> {
    let rest = line.get(at..)?;
    let month = MONTHS.iter().position(|m| rest.starts_with(m))? as i8 + 1;
    let after_month = rest.get(3..)?;
    let day_part = after_month.trim_start_matches(' ');
    let day_len = day_part.bytes().take_while(u8::is_ascii_digit).count();
    if after_month.len() == day_part.len() || !(1..=2).contains(&day_len) {
        return None;
    }
    let day: i8 = day_part[..day_len].parse().ok()?;
    if day_part.as_bytes().get(day_len) != Some(&b' ') {
        return None;
    }
    let clock_at = line.len() - day_part.len() + day_len + 1;
    let clock = line.get(clock_at..clock_at + 8)?;
    let (h, m, s) = hms(clock)?;
    let mut at = clock_at + 8;
    if !line[at..].starts_with(' ') {
        return None;
    }
    at += 1;
    let mut header = Header {
        time: nearest_year(month, day, h, m, s, tz, now),
        ..Header::default()
    };
    if let Some((host, next)) = token(line, at) {
        if line[host.0..host.1].ends_with(':') {
            tag(line, host, &mut header);
            header.payload = next;
            return Some(header);
        }
        header.host = Some(host);
        at = next;
        if let Some((t, next)) = token(line, at)
            && tag(line, t, &mut header)
        {
            at = next;
        }
    }
    header.payload = at;
    Some(header)
}

/// A `TAG:` or `TAG[pid]:` token (not the payload label `Site:`); records it.
fn tag(line: &str, (s, e): (usize, usize), header: &mut Header) -> bool {
    let Some(body) = line[s..e].strip_suffix(':') else {
        return false;
    };
    let (name, pid) = match body.find('[') {
        Some(i) if body.ends_with(']') => (&body[..i], Some((s + i + 1, s + body.len() - 1))),
        Some(_) => return false,
        None => (body, None),
    };
    let ok = !name.is_empty()
        && name != "Site"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if ok {
        header.appname = Some((s, s + name.len()));
        header.procid = pid;
    }
    ok
}

fn hms(s: &str) -> Option<(i8, i8, i8)> {
    let b = s.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let two = |i: usize| -> Option<i8> {
        let (x, y) = (b[i], b[i + 1]);
        (x.is_ascii_digit() && y.is_ascii_digit()).then(|| ((x - b'0') * 10 + (y - b'0')) as i8)
    };
    Some((two(0)?, two(3)?, two(6)?))
}

/// The time of a year-less date: the candidate year (last, this or next) nearest to `now`.
fn nearest_year(
    month: i8,
    day: i8,
    h: i8,
    m: i8,
    s: i8,
    tz: &TimeZone,
    now: Timestamp,
) -> Option<Timestamp> {
    let year = tz.to_datetime(now).year();
    [year - 1, year, year + 1]
        .into_iter()
        .filter_map(|y| DateTime::new(y, month, day, h, m, s, 0).ok())
        .filter_map(|dt| tz.to_timestamp(dt).ok())
        .min_by_key(|t| (t.as_second() - now.as_second()).unsigned_abs())
}

/// `YYYY-MM-DD hh:mm:ss` as a local time in `tz`.
pub(crate) fn local_datetime(s: &str, tz: &TimeZone) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i16> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (h, m, sec) = hms(&s[11..])?;
    let dt = DateTime::new(
        num(0..4)?,
        num(5..7)? as i8,
        num(8..10)? as i8,
        h,
        m,
        sec,
        0,
    )
    .ok()?;
    tz.to_timestamp(dt).ok()
}

/// The text-dump prefix `YYYY-MM-DD hh:mm:ss,<Severity>,`.
fn text_dump(line: &str, tz: &TimeZone) -> Option<Header> {
    let time = local_datetime(line.get(..19)?, tz)?;
    let rest = line.get(19..)?.strip_prefix(',')?;
    let sev_len = rest.find(',')?;
    let sev = &rest[..sev_len];
    if sev.is_empty() || !sev.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    Some(Header {
        payload: 20 + sev_len + 1,
        time: Some(time),
        severity: Some((20, 20 + sev_len)),
        ..Header::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-10-10T00:00:00Z".parse().unwrap()
    }

    fn text(line: &str, r: Option<(usize, usize)>) -> Option<&str> {
        r.map(|(s, e)| &line[s..e])
    }

    #[test]
    fn rfc3164_with_tag_and_nearest_year() {
        let line =
            "<51>Oct 4 10:51:33 symantec.test SymantecServer: host-rfc3164,Local Host IP: 1.2.3.4";
        let h = strip(line, &TimeZone::UTC, now());
        assert_eq!(&line[h.payload..], "host-rfc3164,Local Host IP: 1.2.3.4");
        assert_eq!(h.priority, Some(51));
        assert_eq!(text(line, h.host), Some("symantec.test"));
        assert_eq!(text(line, h.appname), Some("SymantecServer"));
        assert_eq!(h.time.unwrap().to_string(), "2024-10-04T10:51:33Z");
        // In January, a December time belongs to last year.
        let jan: Timestamp = "2025-01-02T00:00:00Z".parse().unwrap();
        let h = strip(
            "<54>Dec 31 23:00:00 h SymantecServer: x",
            &TimeZone::UTC,
            jan,
        );
        assert_eq!(h.time.unwrap().to_string(), "2024-12-31T23:00:00Z");
        let h = strip(
            "<54>Jun  7 09:16:10 SERVER SymantecServer[12]: DESKTOP,Category: 0",
            &TimeZone::UTC,
            now(),
        );
        assert_eq!(h.time.unwrap().to_string(), "2024-06-07T09:16:10Z");
        assert_eq!(h.procid.map(|(s, e)| e - s), Some(2));
    }

    #[test]
    fn rfc5424_and_text_dump() {
        let line = "<165>1 2021-11-16T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - host-rfc5424,Local Host IP: 1";
        let h = strip(line, &TimeZone::UTC, now());
        assert_eq!(&line[h.payload..], "host-rfc5424,Local Host IP: 1");
        assert_eq!(text(line, h.host), Some("192.0.2.1"));
        assert_eq!(text(line, h.procid), Some("8710"));
        assert_eq!(h.time.unwrap().to_string(), "2021-11-16T12:14:15.000003Z");
        let sd = "<165>1 - - - - - [a b=\"x]y\"][c] payload";
        assert_eq!(&sd[strip(sd, &TimeZone::UTC, now()).payload..], "payload");
        let dump = "2020-01-16 08:00:31,Critical,serverName,Event Description: x";
        let h = strip(dump, &TimeZone::UTC, now());
        assert_eq!(&dump[h.payload..], "serverName,Event Description: x");
        assert_eq!(text(dump, h.severity), Some("Critical"));
    }

    #[test]
    fn no_header_and_junk() {
        for line in [
            "Site: SEPSite,Server: x",
            "<999999>junk",
            "<12>Foo 1 2",
            "",
            "<",
            "2020-13-45 99:99:99,X,",
        ] {
            let h = strip(line, &TimeZone::UTC, now());
            assert_eq!(h.payload, 0, "{line}");
        }
    }
}
