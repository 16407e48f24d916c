//! The `open_url` action with a stand-in browser (`watchpost-argv-probe`, built with the
//! tests, writes its argv to a file): the exact URL arrives as one argument with event
//! values percent-encoded; URLs a template turns into `javascript:`, `file:` or text with
//! spaces are refused and counted as failures, and nothing is started for them.
//! Runs on Linux and (in the user-session path, `browser` configured) under Wine.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{event, job, specs, wait_for};
use watchpost_actions::Dispatcher;
use watchpost_event::{Sym, Value};

/// The probe's path as the configuration must name it (absolute; under Wine a Unix path
/// is not absolute, so it goes through drive Z:, which maps `/`).
fn probe() -> String {
    let p = env!("CARGO_BIN_EXE_watchpost-argv-probe");
    if cfg!(windows) && p.starts_with('/') {
        format!("Z:{}", p.replace('/', "\\"))
    } else {
        p.to_owned()
    }
}

fn toml_str(p: &Path) -> String {
    let s = p.display().to_string();
    if cfg!(windows) && s.starts_with('/') {
        format!("'Z:{}'", s.replace('/', "\\"))
    } else {
        format!("'{s}'")
    }
}

#[test]
fn the_browser_gets_the_exact_url_with_encoded_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("argv.txt");
    let config = format!(
        r#"
[[action]]
name = "threat-page"
type = "open_url"
url = "https://www.example.com/threats/search?q={{{{ risk_name | url }}}}&host={{{{ host | url }}}}&f={{{{ file_path | lower | url }}}}"
browser = ['{probe}', {out}]
"#,
        probe = probe(),
        out = toml_str(&out),
    );
    let specs = specs(&config);
    for s in &specs {
        assert!(s.check().is_empty(), "{:?}", s.check());
    }
    let dispatcher = Dispatcher::start(specs).unwrap();
    assert!(dispatcher.submit(0, job(event("pc 1&x=y"), "virus-found")));
    let text = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&out).ok()
    })
    .expect("the probe ran");
    let stats = dispatcher.shutdown(Duration::from_secs(10));
    assert_eq!(
        text,
        "https://www.example.com/threats/search?q=EICAR%20Test%20String&host=pc%201%26x%3Dy&f=c%3A%5Cusers%5Ca%5Ceicar.com\n"
    );
    assert_eq!((stats[0].ok, stats[0].failed), (1, 0), "{stats:?}");
}

#[test]
fn dangerous_or_malformed_urls_from_templates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("argv.txt");
    let config = format!(
        r#"
[[action]]
name = "raw-link"
type = "open_url"
url = "{{{{ link }}}}"
browser = ['{probe}', {out}]
"#,
        probe = probe(),
        out = toml_str(&out),
    );
    let dispatcher = Dispatcher::start(specs(&config)).unwrap();
    let links = [
        "javascript:alert(document.cookie)",
        "file:///etc/passwd",
        "FILE:///C:/Windows/System32/calc.exe",
        "calc.exe",
        "https://example.com/a b\" & calc",
    ];
    for link in links {
        let mut e = event("pc1");
        e.set(Sym::new("link"), Value::Str(link.into()));
        assert!(dispatcher.submit(0, job(e, "f")));
    }
    let stats = dispatcher.shutdown(Duration::from_secs(10));
    assert_eq!(
        (stats[0].ok, stats[0].failed),
        (0, links.len() as u64),
        "{stats:?}"
    );
    let last = stats[0].last_error.as_deref().unwrap_or("");
    assert!(
        last.contains("refusing to open") && last.contains("cannot appear in a URL"),
        "{last}"
    );
    assert!(!out.exists(), "nothing was started");

    // Each reason, one at a time.
    for (link, why) in [
        ("javascript:alert(1)", "scheme `javascript` is not allowed"),
        ("file:///etc/passwd", "scheme `file` is not allowed"),
        ("calc.exe", "does not start with a URL scheme"),
    ] {
        let dispatcher = Dispatcher::start(specs(&config)).unwrap();
        let mut e = event("pc1");
        e.set(Sym::new("link"), Value::Str(link.into()));
        dispatcher.submit(0, job(e, "f"));
        let stats = dispatcher.shutdown(Duration::from_secs(10));
        let last = stats[0].last_error.clone().unwrap_or_default();
        assert!(last.contains(why), "{link}: {last}");
    }
}

#[test]
fn a_browser_that_fails_counts_as_failed() {
    // The probe exits 2 when it gets no arguments at all: a browser argv of just the probe
    // gives it the URL as its output file name, so use a directory that does not exist.
    let config = format!(
        r#"
[[action]]
name = "broken"
type = "open_url"
url = "https://example.com/"
browser = ['{probe}', {out}]
"#,
        probe = probe(),
        out = toml_str(Path::new("/nonexistent-watchpost-dir/argv.txt")),
    );
    let dispatcher = Dispatcher::start(specs(&config)).unwrap();
    dispatcher.submit(0, job(event("pc1"), "f"));
    let stats = dispatcher.shutdown(Duration::from_secs(20));
    assert_eq!((stats[0].ok, stats[0].failed), (0, 1), "{stats:?}");
    let last = stats[0].last_error.clone().unwrap_or_default();
    assert!(last.contains("exited with"), "{last}");
}
