//! The `dialog` action: show the logged-on user a message with a templated title and text.
//!
//! * **Windows**: a message box through `WTSSendMessageW`, which works from the service in
//!   session 0: the box goes to the active console session (`WTSGetActiveConsoleSessionId`);
//!   when watchpost runs in a user's session (not as a service), to that session. The call
//!   does not wait for the user (`bWait = FALSE`); `timeout` closes the box after that many
//!   seconds. Nobody at the console: a log line instead.
//! * **Linux** (and other Unix): a desktop notification, `org.freedesktop.Notifications.Notify`
//!   on the session bus: `bus` if configured, else `DBUS_SESSION_BUS_ADDRESS`, else
//!   `/run/user/<uid>/bus` if it exists. Spoken by the small client in `dbus.rs` under a
//!   5 s deadline for connecting, authenticating and the call together.
//!
//! When the message cannot be shown (no session bus, no notification server, nobody logged
//! on, the call failed) the action logs `dialog <name>: <why>; would have shown: <title>:
//! <text>` at warning level and counts the job as failed (`last_error` says why). Nothing
//! else stops.
//!
//! The text goes into the notification body with `&`, `<` and `>` escaped: notification
//! servers read the body as markup, and event data must not add links or formatting.

use std::time::Duration;

use crossbeam_channel::Receiver;
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::ConfigError;

use crate::Job;
use crate::control::{Control, Counters};
use crate::kit::{Tpl, bounded, deserialize};

/// Connecting, authenticating and calling `Notify` must finish within this.
#[cfg_attr(windows, allow(dead_code))]
pub(crate) const BUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The icon of the message box / notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Icon {
    Info,
    Warning,
    Error,
}

/// Urgency of a freedesktop notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Urgency {
    Low,
    Normal,
    Critical,
}

impl Urgency {
    #[cfg_attr(windows, allow(dead_code))]
    fn byte(self) -> u8 {
        match self {
            Urgency::Low => 0,
            Urgency::Normal => 1,
            Urgency::Critical => 2,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDialog {
    title: Option<Spanned<String>>,
    text: Option<Spanned<String>>,
    timeout: Option<Spanned<u64>>,
    #[serde(alias = "style")]
    icon: Option<Icon>,
    urgency: Option<Urgency>,
    bus: Option<Spanned<String>>,
}

/// A validated `dialog` action. (`urgency` and `bus` are used on Unix only.)
#[derive(Debug, Clone)]
#[cfg_attr(windows, allow(dead_code))]
pub(crate) struct DialogSpec {
    title: Tpl,
    text: Tpl,
    /// Seconds; `None`: Windows keeps the box until dismissed, the notification server
    /// uses its default.
    timeout: Option<u32>,
    icon: Icon,
    urgency: Urgency,
    /// A configured bus address (Unix).
    bus: Option<String>,
}

/// Where the session bus may be, as found in the environment when a job runs (Unix).
#[derive(Debug, Clone, Default)]
#[cfg_attr(windows, allow(dead_code))]
pub(crate) struct BusEnv {
    /// `DBUS_SESSION_BUS_ADDRESS`.
    pub(crate) session_address: Option<String>,
    /// `/run/user/<uid>/bus` when it exists.
    pub(crate) runtime_bus: Option<String>,
}

impl BusEnv {
    pub(crate) fn current() -> BusEnv {
        let session_address = std::env::var("DBUS_SESSION_BUS_ADDRESS")
            .ok()
            .filter(|a| !a.trim().is_empty());
        #[cfg(unix)]
        let runtime_bus = {
            let path = format!("/run/user/{}/bus", rustix::process::getuid().as_raw());
            std::path::Path::new(&path)
                .exists()
                .then(|| format!("unix:path={path}"))
        };
        #[cfg(not(unix))]
        let runtime_bus = None;
        BusEnv {
            session_address,
            runtime_bus,
        }
    }
}

impl DialogSpec {
    pub(crate) fn parse(
        table: Spanned<DeValue<'_>>,
        type_span: std::ops::Range<usize>,
    ) -> Result<DialogSpec, Vec<ConfigError>> {
        let raw: RawDialog = deserialize(table)?;
        let mut errors = Vec::new();
        let title = Tpl::or_default(raw.title.as_ref(), "watchpost: {{ filter }}", &mut errors);
        let text = match &raw.text {
            Some(t) => Tpl::parse(t, &mut errors),
            None => {
                let span = type_span.clone();
                errors.push(ConfigError::new(
                    span.start..span.start,
                    "a dialog needs `text` (the message, a template)",
                ));
                None
            }
        };
        let timeout = raw
            .timeout
            .as_ref()
            .map(|t| bounded(Some(t), 0, 0..=86_400, "timeout", &mut errors) as u32);
        if let Some(bus) = &raw.bus
            && !bus.get_ref().starts_with("unix:")
        {
            errors.push(ConfigError::new(
                bus.span(),
                "`bus` is a D-Bus address like \"unix:path=/run/user/1000/bus\"",
            ));
        }
        let icon = raw.icon.unwrap_or(Icon::Info);
        let urgency = raw.urgency.unwrap_or(match icon {
            Icon::Error => Urgency::Critical,
            Icon::Info | Icon::Warning => Urgency::Normal,
        });
        match (title, text) {
            (Some(title), Some(text)) if errors.is_empty() => Ok(DialogSpec {
                title,
                text,
                timeout,
                icon,
                urgency,
                bus: raw.bus.map(Spanned::into_inner),
            }),
            _ => Err(errors),
        }
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        [&self.title, &self.text].into_iter()
    }

    /// Nothing to check: whether a user or a session bus is there is known only when a
    /// job runs (and not being able to show one is logged, not fatal).
    pub(crate) fn check(&self) -> Vec<ConfigError> {
        Vec::new()
    }

    pub(crate) fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        while let Ok(job) = rx.recv() {
            if ctl.past_deadline() {
                counters.dropped(1);
                break;
            }
            let outcome = self.shown(name, &job, counters, &BusEnv::current());
            ctl.report(
                name,
                &job,
                1,
                outcome.as_ref().map(|_| ()).map_err(String::as_str),
            );
        }
    }

    /// Renders and shows one message; counts and logs the outcome.
    #[cfg(test)]
    pub(crate) fn handle(&self, name: &str, job: &Job, counters: &Counters, env: &BusEnv) {
        let _ = self.shown(name, job, counters, env);
    }

    /// [`DialogSpec::handle`], returning the outcome for the event store.
    fn shown(
        &self,
        name: &str,
        job: &Job,
        counters: &Counters,
        env: &BusEnv,
    ) -> Result<(), String> {
        let scope = job.scope();
        let title = clean(&self.title.template.render(&scope));
        let text = clean(&self.text.template.render(&scope));
        match self.show(&title, &text, env) {
            Ok(()) => {
                counters.ok();
                Ok(())
            }
            Err(why) => {
                tracing::warn!(
                    action = name,
                    "dialog {name}: {why}; would have shown: {title}: {text}"
                );
                counters.failed(why.clone());
                Err(why)
            }
        }
    }

    #[cfg(windows)]
    fn show(&self, title: &str, text: &str, _: &BusEnv) -> Result<(), String> {
        win::show(title, text, self.icon, self.timeout.unwrap_or(0))
    }

    #[cfg(not(windows))]
    fn show(&self, title: &str, text: &str, env: &BusEnv) -> Result<(), String> {
        use crate::dbus::{BusError, Connection, Message, Value};

        let Some(address) = self
            .bus
            .clone()
            .or_else(|| env.session_address.clone())
            .or_else(|| env.runtime_bus.clone())
        else {
            return Err("no desktop session bus".to_owned());
        };
        let deadline = std::time::Instant::now() + BUS_TIMEOUT;
        let mut conn = Connection::open(&address, deadline).map_err(|e| match e {
            BusError::Connect(m) => format!("no desktop session bus ({m})"),
            e => format!("session bus {address}: {e}"),
        })?;
        let icon = match self.icon {
            Icon::Info => "dialog-information",
            Icon::Warning => "dialog-warning",
            Icon::Error => "dialog-error",
        };
        let expire = self.timeout.map_or(-1, |s| {
            i32::try_from(s.saturating_mul(1000)).unwrap_or(i32::MAX)
        });
        let body = vec![
            Value::Str("watchpost".into()),
            Value::U32(0),
            Value::Str(icon.into()),
            Value::Str(title.into()),
            Value::Str(markup_escape(text)),
            Value::Array("s".into(), Vec::new()),
            Value::Array(
                "{sv}".into(),
                vec![Value::DictEntry(
                    Box::new(Value::Str("urgency".into())),
                    Box::new(Value::Variant(Box::new(Value::Byte(self.urgency.byte())))),
                )],
            ),
            Value::I32(expire),
        ];
        conn.call(Message::call(
            "org.freedesktop.Notifications",
            "/org/freedesktop/Notifications",
            "org.freedesktop.Notifications",
            "Notify",
            body,
        ))
        .map_err(|e| format!("org.freedesktop.Notifications.Notify on {address} failed: {e}"))?;
        Ok(())
    }
}

/// NUL bytes (which neither D-Bus nor Win32 strings carry) become U+FFFD.
fn clean(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// Escapes text for a notification body, which servers read as simple markup.
#[cfg_attr(windows, allow(dead_code))]
fn markup_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(windows)]
#[allow(unsafe_code)] // Win32 calls: WTS* take pointers to UTF-16 buffers we own.
mod win {
    use std::io;

    use windows_sys::Win32::System::RemoteDesktop::{
        ProcessIdToSessionId, WTS_CURRENT_SERVER_HANDLE, WTSGetActiveConsoleSessionId,
        WTSSendMessageW,
    };
    use windows_sys::Win32::System::Threading::GetCurrentProcessId;
    use windows_sys::Win32::UI::WindowsAndMessaging::{
        MB_ICONERROR, MB_ICONINFORMATION, MB_ICONWARNING, MB_OK, MB_SETFOREGROUND, MB_TOPMOST,
    };

    use super::Icon;

    /// The session a message should go to: ours when we run in a user's session, else
    /// (a service in session 0) the active console session; `None` when nobody is there.
    pub(crate) fn target_session() -> Option<u32> {
        let mut own = 0u32;
        // SAFETY: `own` is a valid place for the session id.
        let ok = unsafe { ProcessIdToSessionId(GetCurrentProcessId(), &mut own) };
        if ok != 0 && own != 0 {
            return Some(own);
        }
        // SAFETY: no arguments.
        let console = unsafe { WTSGetActiveConsoleSessionId() };
        (console != u32::MAX).then_some(console)
    }

    pub(super) fn show(title: &str, text: &str, icon: Icon, timeout: u32) -> Result<(), String> {
        let Some(session) = target_session() else {
            return Err("nobody is logged on at the console".to_owned());
        };
        let title: Vec<u16> = title.encode_utf16().collect();
        let text: Vec<u16> = text.encode_utf16().collect();
        let style = MB_OK
            | MB_SETFOREGROUND
            | MB_TOPMOST
            | match icon {
                Icon::Info => MB_ICONINFORMATION,
                Icon::Warning => MB_ICONWARNING,
                Icon::Error => MB_ICONERROR,
            };
        let mut response = 0;
        // SAFETY: the buffers outlive the call and their lengths are given in bytes, as
        // WTSSendMessageW expects; `response` is a valid place for the answer. With
        // bWait = FALSE the call returns at once (response IDASYNC).
        let ok = unsafe {
            WTSSendMessageW(
                WTS_CURRENT_SERVER_HANDLE,
                session,
                title.as_ptr(),
                (title.len() * 2) as u32,
                text.as_ptr(),
                (text.len() * 2) as u32,
                style,
                timeout,
                &mut response,
                0,
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            // Wine's stub fails without setting an error code.
            return Err(match e.raw_os_error() {
                Some(0) | None => {
                    format!("WTSSendMessageW to session {session} failed (no error code)")
                }
                _ => format!("WTSSendMessageW to session {session} failed: {e}"),
            });
        }
        tracing::debug!(session, response, "message box sent");
        Ok(())
    }
}

impl crate::kind::ActionKind for DialogSpec {
    fn kind(&self) -> &'static str {
        "dialog"
    }

    fn templates(&self) -> Vec<&Tpl> {
        DialogSpec::templates(self).collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        DialogSpec::check(self)
    }

    fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        DialogSpec::work(self, name, rx, counters, ctl);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::*;

    const HEAD: &str = "[[action]]\nname = \"warn-user\"\ntype = \"dialog\"\n";

    #[test]
    fn parses_with_defaults_and_lists_variables() {
        let text = format!("{HEAD}text = \"{{{{ risk_name }}}} in {{{{ file_path }}}}\"\n");
        let spec = parse_ok(&text);
        assert_eq!(spec.kind(), "dialog");
        let vars: Vec<&str> = spec.variables().iter().map(|(_, s)| at(&text, s)).collect();
        assert_eq!(vars, ["risk_name", "file_path"]);
        let d = spec.kind_as::<DialogSpec>().expect("a dialog");
        assert_eq!(
            (d.icon, d.urgency, d.timeout),
            (Icon::Info, Urgency::Normal, None)
        );
        assert!(spec.check().is_empty());

        let text = format!("{HEAD}text = \"x\"\nstyle = \"error\"\ntimeout = 30\n");
        let spec = parse_ok(&text);
        let d = spec.kind_as::<DialogSpec>().expect("a dialog");
        assert_eq!(
            (d.icon, d.urgency, d.timeout),
            (Icon::Error, Urgency::Critical, Some(30))
        );
    }

    #[test]
    fn config_errors_have_places() {
        let errs = parse_one(HEAD).unwrap_err();
        assert!(errs[0].message.contains("needs `text`"), "{errs:?}");

        let text = format!("{HEAD}text = \"x\"\nicon = \"question\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "\"question\"", "{errs:?}");

        let text = format!("{HEAD}text = \"x\"\ntimeout = 100000\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "100000", "{errs:?}");

        let text = format!("{HEAD}text = \"x\"\nbus = \"tcp:host=h\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "\"tcp:host=h\"", "{errs:?}");

        let text = format!("{HEAD}text = \"{{{{ x | bogus }}}}\"\nurgency = \"high\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("high"), "{errs:?}");
    }

    #[test]
    fn markup_is_escaped_and_nul_replaced() {
        assert_eq!(
            markup_escape("<a href=\"x\">&</a>"),
            "&lt;a href=\"x\"&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(clean("a\0b"), "a\u{FFFD}b");
    }

    /// A minimal `tracing` subscriber that keeps the formatted messages (used with
    /// `with_default`, so only for the calling thread).
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    struct Text(String);

    impl tracing::field::Visit for Text {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut t = Text(String::new());
            event.record(&mut t);
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", event.metadata().level(), t.0));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// Runs `f` with log messages captured; returns them.
    fn logs_of(f: impl FnOnce()) -> Vec<String> {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Capture(lines.clone()), f);
        lines.lock().unwrap().clone()
    }

    fn test_job(risk: &str) -> Job {
        use std::sync::Arc;
        use watchpost_event::{Event, Sym, Value};
        let mut e = Event::new(Arc::from("sep-av"), Arc::from("pc1"), "raw".into());
        e.push(Sym::new("risk_name"), Value::Str(risk.into()));
        e.push(
            Sym::new("file_path"),
            Value::Static(r"C:\Users\a\eicar.com"),
        );
        e.finish();
        Job {
            event: Arc::new(e),
            filter: Arc::from("virus-found"),
            actions: Arc::from("warn-user"),
            stored: None,
            ticket: Default::default(),
        }
    }

    fn spec(extra: &str) -> DialogSpec {
        let text = format!(
            "{HEAD}title = \"Threat on {{{{ host }}}}\"\ntext = \"{{{{ risk_name }}}} in {{{{ file_path }}}}\"\n{extra}"
        );
        parse_ok(&text)
            .kind_as::<DialogSpec>()
            .expect("a dialog")
            .clone()
    }

    #[test]
    #[cfg(not(windows))]
    fn without_a_session_bus_the_message_is_logged_and_counted() {
        let counters = Counters::default();
        let d = spec("");
        let logs = logs_of(|| {
            d.handle(
                "warn-user",
                &test_job("EICAR"),
                &counters,
                &BusEnv::default(),
            )
        });
        assert_eq!(
            logs,
            [
                r"WARN dialog warn-user: no desktop session bus; would have shown: Threat on pc1: EICAR in C:\Users\a\eicar.com"
            ]
        );
        let stats = counters.snapshot("warn-user", "dialog", 0);
        assert_eq!((stats.ok, stats.failed), (0, 1));
        assert_eq!(stats.last_error.as_deref(), Some("no desktop session bus"));

        // A bus address that leads nowhere is no session bus either.
        let d = spec("bus = \"unix:path=/nonexistent-watchpost/bus\"\n");
        let logs = logs_of(|| {
            d.handle(
                "warn-user",
                &test_job("EICAR"),
                &counters,
                &BusEnv::default(),
            )
        });
        assert!(
            logs[0].contains(
                "dialog warn-user: no desktop session bus (unix:path=/nonexistent-watchpost/bus: "
            ),
            "{logs:?}"
        );
        assert!(
            logs[0].ends_with("would have shown: Threat on pc1: EICAR in C:\\Users\\a\\eicar.com"),
            "{logs:?}"
        );
        assert_eq!(counters.snapshot("w", "dialog", 0).failed, 2);
    }

    #[test]
    #[cfg(windows)]
    fn under_windows_the_message_box_call_has_a_defined_outcome() {
        let counters = Counters::default();
        let d = spec("icon = \"warning\"\ntimeout = 5\n");
        let session = win::target_session();
        let logs = logs_of(|| {
            d.handle(
                "warn-user",
                &test_job("EICAR"),
                &counters,
                &BusEnv::default(),
            )
        });
        let stats = counters.snapshot("warn-user", "dialog", 0);
        // Under Wine 8 the test process is in session 1 (so the own-session path is taken)
        // and WTSSendMessageW is a stub that returns FALSE without an error code: the job
        // fails with "… failed (no error code)" and the would-have-shown line. On Windows
        // the box is shown and the job is ok. What happened is printed with --nocapture.
        eprintln!("target session {session:?}; stats {stats:?}; logs {logs:?}");
        assert_eq!(stats.ok + stats.failed, 1, "{stats:?}");
        if stats.failed == 1 {
            let e = stats.last_error.unwrap_or_default();
            assert!(
                e.contains("WTSSendMessageW") || e.contains("nobody is logged on"),
                "{e}"
            );
            assert_eq!(logs.len(), 1, "{logs:?}");
            assert!(
                logs[0].contains("would have shown: Threat on pc1: EICAR in"),
                "{logs:?}"
            );
        } else {
            assert!(logs.iter().all(|l| !l.starts_with("WARN")), "{logs:?}");
        }
    }

    #[cfg(unix)]
    mod bus {
        use std::io::{BufRead as _, BufReader};
        use std::process::{Child, Command, Stdio};
        use std::time::{Duration, Instant};

        use super::*;
        use crate::dbus::{Connection, METHOD_CALL, Message, Value};

        /// A private session bus: `dbus-daemon --session` on a socket in a temporary
        /// directory, killed when dropped.
        struct Bus {
            child: Child,
            address: String,
            _dir: tempfile::TempDir,
        }

        impl Drop for Bus {
            fn drop(&mut self) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }

        fn start_bus() -> Bus {
            let dir = tempfile::tempdir().unwrap();
            let mut child = Command::new("dbus-daemon")
                .args(["--session", "--nofork", "--print-address=1", "--nopidfile"])
                .arg(format!(
                    "--address=unix:path={}",
                    dir.path().join("bus").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("dbus-daemon must be installed (Debian: apt-get install dbus-daemon)");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            Bus {
                child,
                address: line.trim().to_owned(),
                _dir: dir,
            }
        }

        /// A fake notification server: owns `org.freedesktop.Notifications` on the bus
        /// and records the `Notify` calls it answers, until it has `n` of them.
        fn fake_server(address: &str, n: usize) -> std::thread::JoinHandle<Vec<Message>> {
            let mut conn =
                Connection::open(address, Instant::now() + Duration::from_secs(10)).unwrap();
            let reply = conn
                .call(Message::call(
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "RequestName",
                    vec![
                        Value::Str("org.freedesktop.Notifications".into()),
                        Value::U32(4),
                    ],
                ))
                .unwrap();
            assert_eq!(reply.body, [Value::U32(1)], "primary owner");
            std::thread::spawn(move || {
                conn.set_deadline(Instant::now() + Duration::from_secs(30));
                let mut seen = Vec::new();
                let mut id = 0;
                while seen.len() < n {
                    let m = conn.receive().unwrap();
                    if m.kind == METHOD_CALL && m.member.as_deref() == Some("Notify") {
                        id += 1;
                        conn.send(&Message::reply(&m, vec![Value::U32(id)]))
                            .unwrap();
                        seen.push(m);
                    }
                }
                seen
            })
        }

        fn args(
            m: &Message,
        ) -> (
            String,
            u32,
            String,
            String,
            String,
            Vec<Value>,
            Vec<Value>,
            i32,
        ) {
            let s = |i: usize| m.body[i].as_str().unwrap().to_owned();
            let (
                Value::U32(replaces),
                Value::Array(_, actions),
                Value::Array(_, hints),
                Value::I32(expire),
            ) = (&m.body[1], &m.body[5], &m.body[6], &m.body[7])
            else {
                panic!("unexpected Notify body {:?}", m.body)
            };
            (
                s(0),
                *replaces,
                s(2),
                s(3),
                s(4),
                actions.clone(),
                hints.clone(),
                *expire,
            )
        }

        fn urgency(hints: &[Value]) -> Option<u8> {
            hints.iter().find_map(|h| match h {
                Value::DictEntry(k, v) if k.as_str() == Some("urgency") => match &**v {
                    Value::Variant(b) => match **b {
                        Value::Byte(u) => Some(u),
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            })
        }

        #[test]
        fn notify_reaches_the_notification_server_on_the_session_bus() {
            let bus = start_bus();
            let server = fake_server(&bus.address, 2);

            // Found through DBUS_SESSION_BUS_ADDRESS (as the environment gives it).
            let counters = Counters::default();
            let env = BusEnv {
                session_address: Some(bus.address.clone()),
                runtime_bus: None,
            };
            let d = spec("icon = \"warning\"\ntimeout = 30\n");
            let logs =
                logs_of(|| d.handle("warn-user", &test_job("EICAR <b>&</b>"), &counters, &env));
            assert!(logs.iter().all(|l| !l.starts_with("WARN")), "{logs:?}");

            // Through the dispatcher, with `bus` configured and the defaults.
            let text = format!(
                "{HEAD}text = \"{{{{ risk_name }}}}\"\nicon = \"error\"\nbus = \"{}\"\n",
                bus.address
            );
            let dispatcher = crate::Dispatcher::start(vec![parse_ok(&text)]).unwrap();
            assert!(dispatcher.submit(0, test_job("Trojan.Gen")));
            let stats = dispatcher.shutdown(Duration::from_secs(10));

            let calls = server.join().unwrap();
            let (app, replaces, icon, summary, body, actions, hints, expire) = args(&calls[0]);
            assert_eq!(
                (app.as_str(), replaces, icon.as_str()),
                ("watchpost", 0, "dialog-warning")
            );
            assert_eq!(summary, "Threat on pc1");
            assert_eq!(
                body,
                r"EICAR &lt;b&gt;&amp;&lt;/b&gt; in C:\Users\a\eicar.com"
            );
            assert!(actions.is_empty());
            assert_eq!((urgency(&hints), expire), (Some(1), 30_000));
            assert_eq!(counters.snapshot("w", "dialog", 0).ok, 1);

            let (_, _, icon, summary, body, _, hints, expire) = args(&calls[1]);
            assert_eq!(
                (icon.as_str(), summary.as_str(), body.as_str()),
                ("dialog-error", "watchpost: virus-found", "Trojan.Gen")
            );
            assert_eq!((urgency(&hints), expire), (Some(2), -1));
            assert_eq!((stats[0].ok, stats[0].failed), (1, 0), "{stats:?}");
            assert_eq!(
                calls[1].interface.as_deref(),
                Some("org.freedesktop.Notifications")
            );
            assert_eq!(
                calls[1].path.as_deref(),
                Some("/org/freedesktop/Notifications")
            );
        }

        #[test]
        fn a_bus_without_a_notification_server_is_reported() {
            let bus = start_bus();
            // A name nobody owns, not activatable: the bus answers with an error at once.
            let counters = Counters::default();
            let d = spec(&format!("bus = \"{}\"\n", bus.address));
            let env = BusEnv::default();
            let started = Instant::now();
            let logs = logs_of(|| d.handle("warn-user", &test_job("EICAR"), &counters, &env));
            assert!(started.elapsed() < BUS_TIMEOUT + Duration::from_secs(1));
            let stats = counters.snapshot("w", "dialog", 0);
            assert_eq!(stats.failed, 1);
            let e = stats.last_error.unwrap();
            assert!(e.contains("Notify on unix:path="), "{e}");
            assert!(e.contains("org.freedesktop.DBus.Error"), "{e}");
            assert!(
                logs[0].contains("would have shown: Threat on pc1: EICAR in"),
                "{logs:?}"
            );
        }

        #[test]
        fn a_bus_that_never_answers_times_out() {
            // A socket that accepts but never speaks: the worker gives up at the deadline.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("silent");
            let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            let counters = Counters::default();
            let d = spec(&format!("bus = \"unix:path={}\"\n", path.display()));
            let started = Instant::now();
            let _ = logs_of(|| {
                d.handle(
                    "warn-user",
                    &test_job("EICAR"),
                    &counters,
                    &BusEnv::default(),
                )
            });
            let took = started.elapsed();
            assert!(
                took >= BUS_TIMEOUT - Duration::from_millis(100)
                    && took < BUS_TIMEOUT + Duration::from_secs(2),
                "{took:?}"
            );
            let e = counters.snapshot("w", "dialog", 0).last_error.unwrap();
            assert!(e.contains("did not answer in time"), "{e}");
        }
    }
}
