//! The `run` action: argv without a shell, environment, timeout, captured output.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod common;

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{event, job, specs};
use watchpost_actions::Dispatcher;
use watchpost_event::{Sym, Value};

/// Log lines recorded by [`Capture`] (`message key=value …`).
static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A minimal `tracing` subscriber that records events as text.
struct Capture;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
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
        let mut fields = Fields(format!("{}", event.metadata().level()));
        event.record(&mut fields);
        LOGS.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| tracing::subscriber::set_global_default(Capture).expect("one subscriber"));
}

#[test]
fn arguments_arrive_verbatim_and_never_through_a_shell() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("argv.txt");
    let pwned = dir.path().join("pwned");
    // The fixture script is ours; watchpost itself only execs /bin/sh with an argv.
    let config = format!(
        r#"
[[action]]
name = "script"
type = "run"
program = "/bin/sh"
args = ["-c", 'printf "%s\n" "$@" > "$OUT"; printf "%s\n" "$RISK" "$WATCHPOST_FILTER" "$WATCHPOST_SOURCE" "$WATCHPOST_HOST" "$WATCHPOST_EVENT_JSON" >> "$OUT"; echo to-stdout; echo to-stderr >&2', "sh", "{{{{ evil }}}}", "{{{{ risk_name }}}}", "{{{{ file_path }}}}"]
env = {{ OUT = "{out}", RISK = "{{{{ risk_name | upper }}}}" }}
"#,
        out = out.display()
    );
    let dispatcher = Dispatcher::start(specs(&config)).unwrap();
    let mut e = event("pc1");
    let evil = format!("$(touch {}); rm -rf x; `id` \"'", pwned.display());
    e.set(Sym::new("evil"), Value::Str(evil.clone().into()));
    assert!(dispatcher.submit(0, job(e, "virus-found")));
    let stats = dispatcher.shutdown(Duration::from_secs(20));
    assert_eq!((stats[0].ok, stats[0].failed), (1, 0), "{stats:?}");

    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], evil, "the hostile value is one verbatim argument");
    assert_eq!(&lines[1..3], ["EICAR Test String", r"C:\Users\a\eicar.com"]);
    assert_eq!(
        &lines[3..7],
        ["EICAR TEST STRING", "virus-found", "sep-av", "pc1"]
    );
    let json: serde_json::Value = serde_json::from_str(lines[7]).unwrap();
    assert_eq!(json["risk_name"], "EICAR Test String");
    assert_eq!(json["filter"], "virus-found");
    assert!(!pwned.exists(), "nothing was interpreted by a shell");

    let logs = LOGS.lock().unwrap().join("\n");
    assert!(
        logs.contains("INFO") && logs.contains("stdout=to-stdout"),
        "{logs}"
    );
    assert!(
        logs.contains("WARN") && logs.contains("stderr=to-stderr"),
        "{logs}"
    );
    assert!(
        logs.contains("action=script") && logs.contains("status=exit status: 0"),
        "{logs}"
    );
}

#[test]
fn a_slow_program_is_killed_at_its_timeout() {
    let config = r#"
[[action]]
name = "slow"
type = "run"
program = "sleep"
args = ["30"]
timeout_secs = 1
"#;
    let dispatcher = Dispatcher::start(specs(config)).unwrap();
    let start = Instant::now();
    assert!(dispatcher.submit(0, job(event("pc1"), "f")));
    let stats = dispatcher.shutdown(Duration::from_secs(20));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        (stats[0].ok, stats[0].failed, stats[0].timed_out),
        (0, 1, 1),
        "{stats:?}"
    );
    assert!(
        stats[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("killed"),
        "{stats:?}"
    );
}

#[test]
fn a_non_zero_exit_is_a_failure() {
    let config = "[[action]]\nname = \"no\"\ntype = \"run\"\nprogram = \"false\"\n";
    let dispatcher = Dispatcher::start(specs(config)).unwrap();
    assert!(dispatcher.submit(0, job(event("pc1"), "f")));
    let stats = dispatcher.shutdown(Duration::from_secs(20));
    assert_eq!(
        (stats[0].ok, stats[0].failed, stats[0].timed_out),
        (0, 1, 0),
        "{stats:?}"
    );
    assert!(
        stats[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("exit status: 1"),
        "{stats:?}"
    );
}

/// `scan` (a preset of `run`): a stand-in `clamdscan` receives the preset's arguments and
/// the detected file as one argv element.
#[test]
fn the_scan_preset_runs_the_scanner_on_the_detected_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("argv.txt");
    let scanner = dir.path().join("clamdscan");
    std::fs::write(
        &scanner,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n", out.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&scanner, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        "[[action]]\nname = \"scan-file\"\ntype = \"scan\"\nscanner = \"clamav\"\nprogram = \"{}\"\n",
        scanner.display()
    );
    let dispatcher = Dispatcher::start(specs(&config)).unwrap();
    assert!(dispatcher.submit(0, job(event("pc1"), "virus-found")));
    let stats = dispatcher.shutdown(Duration::from_secs(20));
    assert_eq!((stats[0].ok, stats[0].failed), (1, 0), "{stats:?}");
    let argv = std::fs::read_to_string(&out).unwrap();
    assert_eq!(argv, "--fdpass\n--no-summary\nC:\\Users\\a\\eicar.com\n");
}
