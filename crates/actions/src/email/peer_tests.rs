//! The email action against a real SMTP server (aiosmtpd, `tests/helpers/
//! smtp_receiver.py`, its own process on 127.0.0.1): STARTTLS and implicit TLS with a
//! test CA made by `openssl`, AUTH PLAIN and LOGIN, the received message parsed by
//! Python's `email` package; a wrong password (535) and a refused recipient (550) are
//! permanent, a 451 transient.

// Test code: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use watchpost_event::{Event, Sym, Value};

use super::tests::spec;
use super::*;
use crate::testpeer::{self, Certs, Peer, received};

fn job() -> Job {
    let raw = "Virus found\n.hidden line after a dot\n..two dots";
    let mut e = Event::new(Arc::from("sep-av"), Arc::from("pc1"), raw.into());
    e.time = Some("2026-11-22T10:00:00Z".parse().unwrap());
    e.push(Sym::new("risk_name"), Value::Static("EICAR Test String"));
    e.push(Sym::new("user"), Value::Static("Jürgen Müller"));
    e.finish();
    Job {
        event: Arc::new(e),
        filter: Arc::from("virus"),
        actions: Arc::from("mail"),
        stored: None,
        ticket: Default::default(),
    }
}

fn receiver(dir: &Path, name: &str, certs: &Certs, extra: &[&str]) -> (Peer, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let (log_s, cert, key) = (
        log.display().to_string(),
        certs.cert.display().to_string(),
        certs.key.display().to_string(),
    );
    let mut args = vec!["--log", &log_s, "--cert", &cert, "--key", &key];
    args.extend(extra);
    let script_dir = dir.join(name);
    std::fs::create_dir_all(&script_dir).unwrap();
    (testpeer::start("smtp_receiver.py", &script_dir, &args), log)
}

fn send(s: &EmailSpec) -> Result<(), Failure> {
    s.deliverer().deliver(&job(), &Control::default())
}

#[test]
fn starttls_and_implicit_tls_with_auth() {
    let dir = tempfile::tempdir().unwrap();
    let certs = testpeer::make_certs(dir.path());
    let auth = ["--user", "alert", "--password", "s3cret pw"];
    let (st, st_log) = receiver(
        dir.path(),
        "starttls",
        &certs,
        &[&["--mode", "starttls"][..], &auth].concat(),
    );
    let (imp, imp_log) = receiver(
        dir.path(),
        "tls",
        &certs,
        &[&["--mode", "tls", "--only-login"][..], &auth].concat(),
    );
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret pw\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let conf = |port: u16, mode: &str, ca: &Path, pw: &Path, to: &str, extra: &str| {
        spec(&format!(
            "server = \"localhost:{port}\"\ntls = \"{mode}\"\ntls_options = {{ ca_file = '{}' }}\n\
             username = \"alert\"\npassword_file = '{}'\nfrom = \"watchpost@example.org\"\n\
             to = [{to}]\ntimeout = \"10s\"\n{extra}",
            ca.display(),
            pw.display()
        ))
    };
    let two = "\"soc@example.org\", \"oncall@example.org\"";

    // STARTTLS, AUTH PLAIN, the default subject and body.
    conf(st.port, "starttls", &certs.ca, &pw, two, "")
        .deliverer()
        .deliver(&job(), &Control::default())
        .unwrap();
    let m = &received(&st_log, 1)[0];
    assert_eq!(m["mail_from"], "watchpost@example.org");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["soc@example.org", "oncall@example.org"])
    );
    assert_eq!(m["auth_user"], "alert");
    assert_eq!(m["tls"], true);
    assert_eq!(m["subject"], "watchpost: virus on pc1");
    let h = &m["headers"];
    assert_eq!(h["from"], "watchpost@example.org");
    assert_eq!(h["to"], "soc@example.org, oncall@example.org");
    assert_eq!(h["mime-version"], "1.0");
    assert_eq!(h["content-type"], "text/plain; charset=\"utf-8\"");
    assert_eq!(h["content-transfer-encoding"], "quoted-printable");
    assert!(h["date"].as_str().unwrap().ends_with("+0000"), "{h}");
    assert!(
        h["message-id"].as_str().unwrap().ends_with("@example.org>"),
        "{h}"
    );
    let body = m["body"].as_str().unwrap();
    for want in [
        "Filter:  virus\n",
        "Host:    pc1\n",
        "Source:  sep-av\n",
        "Time:    2026-11-22T10:00:00.000Z\n",
        "  risk_name: EICAR Test String\n",
        "  user: Jürgen Müller\n",
        // Dot-stuffing undone by the server: the lines arrive as written.
        "Record:\n  Virus found\n  .hidden line after a dot\n  ..two dots\n",
    ] {
        assert!(body.contains(want), "{want:?} not in:\n{body}");
    }

    // Implicit TLS, AUTH LOGIN (the server offers only that), templated non-ASCII subject.
    let s = conf(
        imp.port,
        "tls",
        &certs.ca,
        &pw,
        "\"soc@example.org\"",
        "subject = \"Virus bei {{ user }} – {{ risk_name }} 🚨\"\nbody = \"{{ risk_name }} auf {{ host }}\\n.\\nEnde\"",
    );
    s.deliverer().deliver(&job(), &Control::default()).unwrap();
    let m = &received(&imp_log, 1)[0];
    assert_eq!(
        m["subject"],
        "Virus bei Jürgen Müller – EICAR Test String 🚨"
    );
    assert_eq!(m["body"], "EICAR Test String auf pc1\n.\nEnde\n");
    assert_eq!(m["auth_user"], "alert");
    assert!(m["raw"].as_str().unwrap().contains("Subject: =?UTF-8?B?"));

    // A wrong password: 535, permanent.
    let e = send(&conf(st.port, "starttls", &certs.ca, &wrong, two, "")).unwrap_err();
    assert!(!e.is_transient() && e.message().contains("535"), "{e}");
    assert!(!e.message().contains("nope"), "{e}");
    let e = send(&conf(imp.port, "tls", &certs.ca, &wrong, two, "")).unwrap_err();
    assert!(!e.is_transient() && e.message().contains("535"), "{e}");
    // A recipient the server defers: 451, transient; one it refuses: 550, permanent.
    let e = send(&conf(
        st.port,
        "starttls",
        &certs.ca,
        &pw,
        "\"tempfail@example.org\"",
        "",
    ))
    .unwrap_err();
    assert!(
        e.is_transient() && e.message().contains("451 4.3.0 try again later"),
        "{e}"
    );
    assert!(
        e.message().contains("RCPT TO:<tempfail@example.org>"),
        "{e}"
    );
    let e = send(&conf(
        st.port,
        "starttls",
        &certs.ca,
        &pw,
        "\"a@example.org\", \"reject@example.org\"",
        "",
    ))
    .unwrap_err();
    assert!(!e.is_transient() && e.message().contains("550"), "{e}");
    // The wrong CA: the handshake fails, transient, nothing sent.
    for (port, mode) in [(st.port, "starttls"), (imp.port, "tls")] {
        let e = send(&conf(port, mode, &certs.other_ca, &pw, two, "")).unwrap_err();
        assert!(
            e.is_transient() && e.message().contains("invalid peer certificate"),
            "{mode}: {e}"
        );
    }
    assert_eq!(received(&st_log, 1).len(), 1);
    assert_eq!(received(&imp_log, 1).len(), 1);
}

#[test]
fn plain_smtp_on_loopback_and_a_missing_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = testpeer::make_certs(dir.path());
    let (plain, log) = receiver(dir.path(), "plain", &certs, &["--mode", "none"]);
    let s = spec(&format!(
        "server = \"127.0.0.1:{}\"\ntls = \"none\"\nfrom = \"w@example.org\"\nto = [\"soc@example.org\"]",
        plain.port
    ));
    assert!(
        s.check().is_empty(),
        "no warning for a server on this machine"
    );
    send(&s).unwrap();
    let m = &received(&log, 1)[0];
    assert_eq!(m["tls"], false);
    assert!(
        m["body"]
            .as_str()
            .unwrap()
            .contains("\n  .hidden line after a dot\n")
    );
    // Asked for STARTTLS, a server that does not offer it is not sent to in clear.
    let s = spec(&format!(
        "server = \"127.0.0.1:{}\"\nfrom = \"w@example.org\"\nto = [\"soc@example.org\"]",
        plain.port
    ));
    let e = send(&s).unwrap_err();
    assert!(
        e.is_transient() && e.message().contains("does not offer STARTTLS"),
        "{e}"
    );
    assert_eq!(received(&log, 1).len(), 1);
    // Nobody listening: transient.
    drop(plain);
    let e = send(&spec(&format!(
        "server = \"127.0.0.1:{}\"\ntls = \"none\"\nfrom = \"w@example.org\"\nto = [\"soc@example.org\"]\ntimeout = \"2s\"",
        s.port
    )))
    .unwrap_err();
    assert!(e.is_transient(), "{e}");
}
