//! The `syslog` action: configuration, and the worker that renders and sends.

mod format;
mod transport;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use crossbeam_channel::Receiver;
use jiff::tz::TimeZone;
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::ConfigError;

use crate::Job;
use crate::control::{Control, Counters};
use crate::kind::Direct;
use crate::kit::{Tpl, bounded, deserialize};
pub(crate) use format::event_json;
use format::{Body, Cef, Formatter, Header, Scratch};
use transport::{Framing, Proto, SendError, Settings, Stream, Target, Transport};
use watchpost_support::lock;

use crate::delivery::{Deliver, Failure};
use crate::tls::{RawTls, TlsSpec};

/// Largest UDP payload over IPv4.
const UDP_MAX: u64 = 65_507;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    Rfc5424,
    Rfc3164,
    Cef,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HeaderChoice {
    Rfc5424,
    Rfc3164,
    None,
}

/// A facility or severity: a name or a number.
#[derive(Debug, Clone)]
enum Code {
    Num(i64),
    Name(String),
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Code, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Code;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a name or a number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Code, E> {
                Ok(Code::Num(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Code, E> {
                Ok(Code::Num(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Code, E> {
                Ok(Code::Name(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("security", 13),
    ("console", 14),
    ("solaris-cron", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

const SEVERITIES: &[(&str, u8)] = &[
    ("emerg", 0),
    ("emergency", 0),
    ("alert", 1),
    ("crit", 2),
    ("critical", 2),
    ("err", 3),
    ("error", 3),
    ("warning", 4),
    ("warn", 4),
    ("notice", 5),
    ("info", 6),
    ("informational", 6),
    ("debug", 7),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCef {
    vendor: Option<Spanned<String>>,
    product: Option<Spanned<String>>,
    version: Option<Spanned<String>>,
    signature_id: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    severity: Option<Spanned<String>>,
    extensions: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslog {
    target: Spanned<String>,
    format: Option<Format>,
    message: Option<Spanned<String>>,
    facility: Option<Spanned<Code>>,
    severity: Option<Spanned<Code>>,
    app_name: Option<Spanned<String>>,
    hostname: Option<Spanned<String>>,
    msg_id: Option<Spanned<String>>,
    structured_data: Option<bool>,
    framing: Option<Spanned<Framing>>,
    cef: Option<Spanned<RawCef>>,
    cef_header: Option<Spanned<HeaderChoice>>,
    json_header: Option<Spanned<HeaderChoice>>,
    time_zone: Option<Spanned<String>>,
    max_message_bytes: Option<Spanned<u64>>,
    connect_timeout_secs: Option<Spanned<u64>>,
    write_timeout_secs: Option<Spanned<u64>>,
    send_retries: Option<Spanned<u64>>,
    max_backoff_secs: Option<Spanned<u64>>,
    tls: Option<Spanned<RawTls>>,
}

/// A validated `syslog` action.
#[derive(Debug, Clone)]
pub(crate) struct SyslogSpec {
    formatter: Formatter,
    settings: Settings,
    /// Where `send_retries` was written (no effect any more: a warning).
    send_retries: Option<std::ops::Range<usize>>,
}

impl SyslogSpec {
    /// The target's host (name or address) and port, e.g. for the quarantine's allow-list
    /// check.
    pub(crate) fn target_host_port(&self) -> (&str, u16) {
        (&self.settings.target.host, self.settings.target.port)
    }

    pub(crate) fn parse(table: Spanned<DeValue<'_>>) -> Result<SyslogSpec, Vec<ConfigError>> {
        let span = table.span();
        let raw: RawSyslog = deserialize(table)?;
        let mut errors = Vec::new();
        let target = Target::parse(raw.target.get_ref())
            .map_err(|m| errors.push(ConfigError::new(raw.target.span(), m)))
            .ok();
        let format = raw.format.unwrap_or(Format::Rfc5424);
        let header = header_for(format, &raw, &mut errors);
        let body = body_for(format, &raw, &mut errors);
        let max_bytes = max_message_bytes(target.as_ref(), &raw, &mut errors);
        let settings = target.and_then(|t| settings(t, &raw, &mut errors));
        let e = &mut errors;
        let facility = code(raw.facility.as_ref(), FACILITIES, 1, "facility", 23, e);
        let severity = code(raw.severity.as_ref(), SEVERITIES, 4, "severity", 7, e);
        let hostname = Tpl::or_default(raw.hostname.as_ref(), "{{ host }}", e);
        let msg_id = raw.msg_id.as_ref().and_then(|m| Tpl::parse(m, e));
        let time_zone = time_zone(raw.time_zone.as_ref(), e);
        let app_name = raw
            .app_name
            .as_ref()
            .map_or("watchpost", |a| a.get_ref().as_str());
        if app_name.is_empty() {
            e.push(ConfigError::new(
                raw.app_name.as_ref().map_or(span, |a| a.span()),
                "`app_name` is empty",
            ));
        }
        let (Some(settings), Some(body), Some(hostname), true) =
            (settings, body, hostname, errors.is_empty())
        else {
            return Err(errors);
        };
        let formatter = Formatter {
            header,
            body,
            pri: (facility * 8 + severity) as u8,
            app_name: app_name.to_owned(),
            hostname,
            msg_id,
            structured_data: raw.structured_data.unwrap_or(true),
            time_zone,
            max_bytes: max_bytes as usize,
            proc_id: std::process::id().to_string(),
            fallback_host: local_hostname(),
        };
        Ok(SyslogSpec {
            formatter,
            settings,
            send_retries: raw.send_retries.as_ref().map(|s| s.span()),
        })
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        let f = &self.formatter;
        let mut all: Vec<&Tpl> = vec![&f.hostname];
        all.extend(&f.msg_id);
        match &f.body {
            Body::Text(t) | Body::Json(t) => all.push(t),
            Body::Cef(c) => {
                all.extend([
                    &c.vendor,
                    &c.product,
                    &c.version,
                    &c.signature_id,
                    &c.name,
                    &c.severity,
                ]);
                all.extend(c.extensions.iter().map(|(_, t)| t));
            }
        }
        all.into_iter()
    }

    /// Syntax was checked while parsing (host names are resolved when the action
    /// starts, and again on every reconnect); a `tls` table's files are read here.
    pub(crate) fn check(&self) -> Vec<ConfigError> {
        let mut out = self
            .settings
            .tls
            .as_ref()
            .map(TlsSpec::check)
            .unwrap_or_default();
        if let Some(span) = &self.send_retries {
            out.push(ConfigError::warning(
                span.clone(),
                "`send_retries` has no effect any more: TCP and TLS delivery retries through \
                 the retry queue (see `retry`); UDP never retries",
            ));
        }
        out
    }

    /// TCP and TLS targets deliver through the durable retry loop; UDP does not.
    pub(crate) fn deliverer(&self) -> Option<Box<dyn Deliver>> {
        (self.settings.target.proto != Proto::Udp).then(|| {
            Box::new(SyslogDeliver {
                formatter: self.formatter.clone(),
                stream: Stream::new(self.settings.clone()),
                out: String::with_capacity(4096),
                scratch: Scratch::default(),
            }) as Box<dyn Deliver>
        })
    }

    /// The UDP worker: waits on the queue, renders into reused buffers, sends.
    pub(crate) fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        let udp = udp_state(self);
        while let Ok(job) = rx.recv() {
            if ctl.past_deadline() {
                counters.dropped(1);
                break;
            }
            let mut u = lock(&udp);
            let outcome = u.send(&self.formatter, &job, ctl);
            counters.finish(ctl, name, &job, outcome);
        }
    }
}

/// The UDP sender's state: the socket and the reused render buffers.
#[derive(Debug)]
struct UdpState {
    transport: Transport,
    out: String,
    scratch: Scratch,
}

/// A UDP sender for `spec`.
fn udp_state(spec: &SyslogSpec) -> Mutex<UdpState> {
    Mutex::new(UdpState {
        transport: Transport::new(spec.settings.clone()),
        out: String::with_capacity(4096),
        scratch: Scratch::default(),
    })
}

impl UdpState {
    fn render(&mut self, formatter: &Formatter, job: &Job) {
        formatter.render(
            &job.scope(),
            jiff::Timestamp::now(),
            &mut self.out,
            &mut self.scratch,
        );
    }

    fn send(&mut self, formatter: &Formatter, job: &Job, ctl: &Control) -> Result<(), SendError> {
        self.render(formatter, job);
        self.transport.send(&self.out, ctl)
    }
}

/// Most queued jobs the UDP worker sends with one system call.
const SEND_BATCH: usize = 64;

/// UDP syslog sent from the thread that judged the event (see [`Direct`]).
struct UdpDirect {
    name: Arc<str>,
    formatter: Formatter,
    counters: Arc<Counters>,
    ctl: Arc<Control>,
    state: Mutex<UdpState>,
    /// Jobs given to the queue and not yet sent by the worker.
    queued: AtomicUsize,
}

impl UdpDirect {
    fn to_queue(&self, job: Job) -> Result<(), Job> {
        Err(self.to_worker(job))
    }
}

impl Direct for UdpDirect {
    fn try_run(&self, job: Job) -> Result<(), Job> {
        if self.queued.load(Ordering::SeqCst) > 0 || self.ctl.past_deadline() {
            return self.to_queue(job);
        }
        let mut u = match self.state.try_lock() {
            Ok(u) => u,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return self.to_queue(job),
        };
        u.render(&self.formatter, &job);
        let UdpState { transport, out, .. } = &mut *u;
        match transport.try_send(out) {
            Some(outcome) => {
                drop(u);
                self.counters.finish(&self.ctl, &self.name, &job, outcome);
                Ok(())
            }
            None => {
                drop(u);
                self.to_queue(job)
            }
        }
    }

    fn to_worker(&self, job: Job) -> Job {
        self.queued.fetch_add(1, Ordering::SeqCst);
        job
    }

    fn not_queued(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    fn serve(&self, rx: &Receiver<Job>) {
        let mut jobs: Vec<Job> = Vec::with_capacity(SEND_BATCH);
        let mut msgs: Vec<String> = Vec::new();
        while let Ok(job) = rx.recv() {
            jobs.push(job);
            jobs.extend(rx.try_iter().take(SEND_BATCH - 1));
            if self.ctl.past_deadline() {
                self.counters.dropped(jobs.len() as u64);
                break;
            }
            let mut u = lock(&self.state);
            if jobs.len() == 1 {
                let outcome = u.send(&self.formatter, &jobs[0], &self.ctl);
                drop(u);
                self.counters
                    .finish(&self.ctl, &self.name, &jobs[0], outcome);
            } else {
                if msgs.len() < jobs.len() {
                    msgs.resize_with(jobs.len(), String::new);
                }
                for (job, msg) in jobs.iter().zip(msgs.iter_mut()) {
                    u.render(&self.formatter, job);
                    msg.clear();
                    msg.push_str(&u.out);
                }
                u.transport
                    .send_many(&msgs[..jobs.len()], &self.ctl, &mut |i, outcome| {
                        self.counters
                            .finish(&self.ctl, &self.name, &jobs[i], outcome);
                    });
            }
            self.queued.fetch_sub(jobs.len(), Ordering::SeqCst);
            // The jobs' tickets go now: the batch was sent.
            jobs.clear();
        }
    }
}

fn header_for(format: Format, raw: &RawSyslog, errors: &mut Vec<ConfigError>) -> Header {
    for (key, value, applies) in [
        ("cef_header", &raw.cef_header, "cef"),
        ("json_header", &raw.json_header, "json"),
    ] {
        if let Some(v) = value.as_ref().filter(|_| format != applies_to(applies)) {
            errors.push(ConfigError::new(
                v.span(),
                format!("`{key}` only applies to format = \"{applies}\""),
            ));
        }
    }
    let choice = |c: &Option<Spanned<HeaderChoice>>, default| match c
        .as_ref()
        .map_or(default, |c| *c.get_ref())
    {
        HeaderChoice::Rfc5424 => Header::Rfc5424,
        HeaderChoice::Rfc3164 => Header::Rfc3164,
        HeaderChoice::None => Header::None,
    };
    match format {
        Format::Rfc5424 => Header::Rfc5424,
        Format::Rfc3164 => Header::Rfc3164,
        Format::Cef => choice(&raw.cef_header, HeaderChoice::Rfc3164),
        Format::Json => choice(&raw.json_header, HeaderChoice::Rfc5424),
    }
}

fn applies_to(name: &str) -> Format {
    if name == "cef" {
        Format::Cef
    } else {
        Format::Json
    }
}

fn body_for(format: Format, raw: &RawSyslog, errors: &mut Vec<ConfigError>) -> Option<Body> {
    if format != Format::Cef
        && let Some(cef) = &raw.cef
    {
        let message = "`cef` only applies to format = \"cef\"";
        errors.push(ConfigError::new(cef.span(), message));
    }
    match format {
        Format::Rfc5424 | Format::Rfc3164 => {
            Tpl::or_default(raw.message.as_ref(), "{{ filter }}: {{ raw }}", errors).map(Body::Text)
        }
        Format::Json => Tpl::or_default(raw.message.as_ref(), "{{ filter }} on {{ host }}", errors)
            .map(Body::Json),
        Format::Cef => cef_body(raw, errors).map(|c| Body::Cef(Box::new(c))),
    }
}

fn cef_body(raw: &RawSyslog, errors: &mut Vec<ConfigError>) -> Option<Cef> {
    let empty = RawCef {
        vendor: None,
        product: None,
        version: None,
        signature_id: None,
        name: None,
        severity: None,
        extensions: None,
    };
    let c = raw.cef.as_ref().map_or(&empty, |c| c.get_ref());
    let mut field =
        |v: &Option<Spanned<String>>, default: &str| Tpl::or_default(v.as_ref(), default, errors);
    let vendor = field(&c.vendor, "watchpost");
    let product = field(&c.product, "watchpost");
    let version = field(&c.version, env!("CARGO_PKG_VERSION"));
    let signature_id = field(&c.signature_id, "{{ filter }}");
    let name = field(&c.name, "{{ filter }}");
    let severity = field(&c.severity, "5");
    let mut extensions = Vec::new();
    match &c.extensions {
        Some(map) => {
            for (key, value) in map {
                if key.get_ref().is_empty()
                    || !key
                        .get_ref()
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                {
                    errors.push(ConfigError::new(
                        key.span(),
                        "a CEF extension key uses only letters, digits and `_`",
                    ));
                }
                extensions.extend(Tpl::parse(value, errors).map(|t| (key.get_ref().clone(), t)));
            }
        }
        None => {
            for (k, v) in [
                ("dvchost", "{{ host }}"),
                ("cs1Label", "filter"),
                ("cs1", "{{ filter }}"),
                ("cs2Label", "source"),
                ("cs2", "{{ source }}"),
            ] {
                extensions.push((k.to_owned(), Tpl::builtin(v)));
            }
        }
    }
    if let Some(m) = &raw.message {
        extensions.extend(Tpl::parse(m, errors).map(|t| ("msg".to_owned(), t)));
    }
    Some(Cef {
        vendor: vendor?,
        product: product?,
        version: version?,
        signature_id: signature_id?,
        name: name?,
        severity: severity?,
        extensions,
    })
}

/// One attempt of a TCP/TLS syslog job: render, then [`Stream::send`].
struct SyslogDeliver {
    formatter: Formatter,
    stream: Stream,
    out: String,
    scratch: Scratch,
}

impl Deliver for SyslogDeliver {
    fn deliver(&mut self, job: &Job, ctl: &Control) -> Result<(), Failure> {
        let scope = job.scope();
        self.formatter.render(
            &scope,
            jiff::Timestamp::now(),
            &mut self.out,
            &mut self.scratch,
        );
        // Every stream failure may pass: the receiver restarts, the network heals, a
        // certificate is renewed.
        self.stream
            .send(&self.out, ctl)
            .map_err(|e| Failure::Transient(e.to_string()))
    }
}

/// The transport settings (framing, timeouts, TLS).
fn settings(target: Target, raw: &RawSyslog, errors: &mut Vec<ConfigError>) -> Option<Settings> {
    let before = errors.len();
    let framing = framing_for(Some(&target), raw, errors);
    let connect_timeout = secs(&raw.connect_timeout_secs, 5, "connect_timeout_secs", errors);
    let write_timeout = secs(&raw.write_timeout_secs, 10, "write_timeout_secs", errors);
    let max_backoff = secs(&raw.max_backoff_secs, 30, "max_backoff_secs", errors);
    // Accepted for old configurations; retries are the `retry` table's business now.
    let _ = bounded(
        raw.send_retries.as_ref(),
        3,
        0..=100,
        "send_retries",
        errors,
    );
    let tls = match (&raw.tls, target.proto) {
        (Some(t), Proto::Tls) => Some(TlsSpec::parse(t.get_ref(), errors)),
        (None, Proto::Tls) => Some(TlsSpec::system()),
        (Some(t), _) => {
            errors.push(ConfigError::new(
                t.span(),
                "`tls` only applies to tls:// targets",
            ));
            None
        }
        (None, _) => None,
    };
    let settings = Settings {
        target,
        framing,
        connect_timeout,
        write_timeout,
        max_backoff,
        tls,
    };
    (errors.len() == before).then_some(settings)
}

/// `max_message_bytes`: default and limit depend on the transport.
fn max_message_bytes(
    target: Option<&Target>,
    raw: &RawSyslog,
    errors: &mut Vec<ConfigError>,
) -> u64 {
    let tcp = target.is_some_and(|t| t.proto != Proto::Udp);
    let (default, max) = if tcp {
        (65_536, 16 << 20)
    } else {
        (8192, UDP_MAX)
    };
    bounded(
        raw.max_message_bytes.as_ref(),
        default,
        480..=max,
        "max_message_bytes",
        errors,
    )
}

fn framing_for(target: Option<&Target>, raw: &RawSyslog, errors: &mut Vec<ConfigError>) -> Framing {
    match (&raw.framing, target.map(|t| t.proto)) {
        (Some(f), Some(Proto::Udp)) => {
            errors.push(ConfigError::new(
                f.span(),
                "`framing` only applies to tcp:// targets",
            ));
            *f.get_ref()
        }
        (Some(f), Some(Proto::Tls)) if *f.get_ref() != Framing::OctetCounting => {
            errors.push(ConfigError::new(
                f.span(),
                "tls:// targets use octet-counting framing (RFC 5425)",
            ));
            Framing::OctetCounting
        }
        (Some(f), _) => *f.get_ref(),
        (None, _) => Framing::OctetCounting,
    }
}

fn code(
    v: Option<&Spanned<Code>>,
    names: &[(&str, u8)],
    default: u32,
    what: &str,
    max: i64,
    errors: &mut Vec<ConfigError>,
) -> u32 {
    let Some(v) = v else { return default };
    let found = match v.get_ref() {
        Code::Num(n) if (0..=max).contains(n) => Some(*n as u32),
        Code::Num(_) => None,
        Code::Name(s) => names
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, c)| u32::from(*c)),
    };
    found.unwrap_or_else(|| {
        let list: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
        errors.push(ConfigError::new(
            v.span(),
            format!("unknown {what}: use 0-{max} or one of {}", list.join(", ")),
        ));
        default
    })
}

fn secs(
    v: &Option<Spanned<u64>>,
    default: u64,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    Duration::from_secs(bounded(v.as_ref(), default, 1..=3600, what, errors))
}

fn time_zone(v: Option<&Spanned<String>>, errors: &mut Vec<ConfigError>) -> TimeZone {
    let Some(v) = v else {
        return TimeZone::system();
    };
    match v.get_ref().as_str() {
        "local" => TimeZone::system(),
        "UTC" | "utc" => TimeZone::UTC,
        name => TimeZone::get(name).unwrap_or_else(|e| {
            errors.push(ConfigError::new(
                v.span(),
                format!("unknown time zone `{name}` ({e}); use \"local\", \"UTC\" or an IANA name"),
            ));
            TimeZone::UTC
        }),
    }
}

/// This computer's name, used when an event's host renders empty (`-` if unknown).
fn local_hostname() -> String {
    let from_file = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        });
    from_file
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

impl crate::kind::ActionKind for SyslogSpec {
    fn kind(&self) -> &'static str {
        "syslog"
    }

    fn queue_capacity(&self) -> (u64, std::ops::RangeInclusive<u64>) {
        (10_000, 1..=1_000_000)
    }

    fn templates(&self) -> Vec<&Tpl> {
        SyslogSpec::templates(self).collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        SyslogSpec::check(self)
    }

    fn deliverer(&self, _: &str, _: &crate::common::Common) -> Option<Box<dyn Deliver + '_>> {
        SyslogSpec::deliverer(self)
    }

    fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        SyslogSpec::work(self, name, rx, counters, ctl);
    }

    fn direct(
        &self,
        name: &str,
        counters: &Arc<Counters>,
        ctl: &Arc<Control>,
    ) -> Option<Arc<dyn Direct>> {
        (self.settings.target.proto == Proto::Udp).then(|| {
            Arc::new(UdpDirect {
                name: name.into(),
                formatter: self.formatter.clone(),
                counters: counters.clone(),
                ctl: ctl.clone(),
                state: udp_state(self),
                queued: AtomicUsize::new(0),
            }) as Arc<dyn Direct>
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_util::*;

    const HEAD: &str = "[[action]]\nname = \"siem\"\ntype = \"syslog\"\n";

    #[test]
    fn full_example_parses_and_lists_variables() {
        let text = format!(
            "{HEAD}target = \"udp://127.0.0.1:514\"\nformat = \"cef\"\nmessage = \"{{{{ filter }}}}: {{{{ risk_name }}}}\"\n\
             facility = \"local4\"\nseverity = 3\nhostname = \"{{{{host}}}}\"\n\
             cef = {{ vendor = \"v\", signature_id = \"{{{{ filter }}}}\", extensions = {{ src = \"{{{{  ip_address | trim }}}}\" }} }}\n"
        );
        let spec = parse_ok(&text);
        assert_eq!((spec.name(), spec.kind()), ("siem", "syslog"));
        assert!(spec.check().is_empty());
        let vars: Vec<(String, &str)> = spec
            .variables()
            .into_iter()
            .map(|(s, r)| (s.as_str().to_owned(), at(&text, &r)))
            .collect();
        for name in ["host", "filter", "ip_address", "risk_name"] {
            assert!(
                vars.iter().any(|(s, t)| s == name && *t == name),
                "{name} in {vars:?}"
            );
        }
    }

    #[test]
    fn unknown_key_is_reported_at_the_key() {
        let text = format!("{HEAD}target = \"udp://127.0.0.1:514\"\nformt = \"json\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(at(&text, &errs[0].span), "formt");
        assert!(
            errs[0].message.contains("unknown field `formt`"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn bad_target_bad_template_and_bad_codes_are_all_reported() {
        let text = format!(
            "{HEAD}target = \"udp//x\"\nmessage = \"a {{{{ risk_name\"\nfacility = \"local9\"\nseverity = 8\n"
        );
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert_eq!(at(&text, &errs[0].span), "\"udp//x\"");
        assert!(errs[0].message.contains("tcp:// or tls://"));
        assert_eq!(
            errs[1].span.start,
            text.find("{{").unwrap(),
            "template error points at `{{{{`"
        );
        assert_eq!(at(&text, &errs[2].span), "\"local9\"");
        assert!(errs[2].message.contains("local7"));
        assert_eq!(at(&text, &errs[3].span), "8");
    }

    #[test]
    fn options_that_do_not_apply_are_rejected() {
        let text = format!(
            "{HEAD}target = \"udp://h:514\"\nframing = \"lf\"\ncef_header = \"none\"\ncef = {{ name = \"x\" }}\n"
        );
        let errs = parse_one(&text).unwrap_err();
        let places: Vec<&str> = errs.iter().map(|e| at(&text, &e.span)).collect();
        assert_eq!(
            places,
            ["\"none\"", "{ name = \"x\" }", "\"lf\""],
            "{errs:?}"
        );
        let text = format!("{HEAD}target = \"udp://h:514\"\nformat = \"xml\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "\"xml\"");
        let text = format!("{HEAD}target = \"udp://h:514\"\nmax_message_bytes = 70000\n");
        assert_eq!(at(&text, &parse_one(&text).unwrap_err()[0].span), "70000");
    }

    #[test]
    fn tls_targets_and_their_table() {
        let text = format!(
            "{HEAD}target = \"tls://siem.example\"\ntls = {{ ca_file = \"/nonexistent/ca.pem\", server_name = \"siem.example\" }}\nsend_retries = 2\n"
        );
        let spec = parse_ok(&text);
        assert!(spec.durable());
        let found = spec.check();
        assert!(
            found
                .iter()
                .any(|e| !e.warning && e.message.contains("/nonexistent/ca.pem")),
            "{found:?}"
        );
        let w = found.iter().find(|e| e.warning).unwrap();
        assert_eq!(at(&text, &w.span), "2");
        let text = format!("{HEAD}target = \"udp://h\"\ntls = {{ verify = false }}\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "{ verify = false }");
        let text = format!("{HEAD}target = \"tls://h\"\nframing = \"lf\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert!(errs[0].message.contains("RFC 5425"), "{errs:?}");
        let text = format!("{HEAD}target = \"tls://h\"\ntls = {{ ca = \"x\" }}\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "ca");
    }

    #[test]
    fn cef_extension_keys_are_checked() {
        let text = format!(
            "{HEAD}target = \"tcp://h:514\"\nformat = \"cef\"\ncef = {{ extensions = {{ \"a b\" = \"x\" }} }}\n"
        );
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "\"a b\"");
    }
}
