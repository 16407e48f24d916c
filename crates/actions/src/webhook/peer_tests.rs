//! The webhook action against a real HTTP(S) receiver (`tests/helpers/http_receiver.py`,
//! its own process on 127.0.0.1): bodies and headers as received, answers classified,
//! a silent server timed out, TLS verified against a test CA made with `openssl`.

// Test code: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use watchpost_event::{Event, Sym, Value};

use super::*;
use crate::config::test_util::parse_ok;
use crate::testpeer::{self, Peer, received};

fn job() -> Job {
    let mut e = Event::new(Arc::from("sep-av"), Arc::from("pc1"), "a raw line".into());
    e.time = Some("2026-11-22T10:00:00Z".parse().unwrap());
    e.push(Sym::new("risk_name"), Value::Static("EICAR Test/String"));
    e.finish();
    Job {
        event: Arc::new(e),
        filter: Arc::from("virus"),
        actions: Arc::from("hook"),
        stored: None,
        ticket: Default::default(),
    }
}

fn spec(extra: &str) -> WebhookSpec {
    parse_ok(&format!(
        "[[action]]\nname = \"hook\"\ntype = \"webhook\"\n{extra}\n"
    ))
    .kind_as::<WebhookSpec>()
    .expect("a webhook action")
    .clone()
}

fn receiver(dir: &Path, tls: Option<&testpeer::Certs>) -> (Peer, std::path::PathBuf) {
    let log = dir.join(if tls.is_some() {
        "https.log"
    } else {
        "http.log"
    });
    let mut args = vec!["--log".to_owned(), log.display().to_string()];
    if let Some(c) = tls {
        args.extend([
            "--cert".to_owned(),
            c.cert.display().to_string(),
            "--key".to_owned(),
            c.key.display().to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (testpeer::start("http_receiver.py", dir, &args), log)
}

fn send(spec: &WebhookSpec) -> Result<(), Failure> {
    spec.deliverer().deliver(&job(), &Control::default())
}

#[test]
fn http_post_put_headers_auth_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, log) = receiver(dir.path(), None);
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let base = format!("http://127.0.0.1:{}", peer.port);

    // The event as JSON, a bearer token from a file, a templated header.
    let s = spec(&format!(
        "url = \"{base}/in/{{{{ risk_name | url }}}}?h={{{{ host | url }}}}\"\n\
         headers = {{ X-Watchpost-Filter = \"{{{{ filter }}}}\" }}\n\
         bearer_token_file = '{}'",
        token.display()
    ));
    send(&s).unwrap();
    // PUT of a templated body with basic auth.
    let s = spec(&format!(
        "url = \"{base}/put\"\nmethod = \"PUT\"\ncontent_type = \"text/plain; charset=utf-8\"\n\
         body = \"{{{{ filter }}}} on {{{{ host }}}}: {{{{ risk_name }}}}\"\n\
         username = \"alice\"\npassword_file = '{}'",
        token.display()
    ));
    send(&s).unwrap();
    let got = received(&log, 2);
    assert_eq!(got[0]["method"], "POST");
    assert_eq!(got[0]["path"], "/in/EICAR%20Test%2FString?h=pc1");
    let h = &got[0]["headers"];
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["authorization"], "Bearer t0ken");
    assert_eq!(h["x-watchpost-filter"], "virus");
    assert_eq!(h["host"], format!("127.0.0.1:{}", peer.port));
    assert!(h["user-agent"].as_str().unwrap().starts_with("watchpost/"));
    let body: serde_json::Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["risk_name"], "EICAR Test/String");
    assert_eq!(body["filter"], "virus");
    assert_eq!(body["host"], "pc1");
    assert_eq!(body["time"], "2026-11-22T10:00:00.000Z");
    assert_eq!(got[1]["method"], "PUT");
    assert_eq!(got[1]["body"], "virus on pc1: EICAR Test/String");
    assert_eq!(
        got[1]["headers"]["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        got[1]["headers"]["authorization"],
        format!("Basic {}", net::base64(b"alice:t0ken"))
    );

    // Answers: 5xx, 429 transient; 4xx permanent with the start of the body (also chunked).
    for (path, transient) in [
        ("status/500", true),
        ("status/503", true),
        ("status/429", true),
        ("status/408", true),
        ("status/400", false),
        ("status/404", false),
        ("chunked/403", false),
        ("chunked/502", true),
    ] {
        let e = send(&spec(&format!("url = \"{base}/{path}\""))).unwrap_err();
        assert_eq!(e.is_transient(), transient, "{path}: {e}");
        let status = &path[path.len() - 3..];
        let m = e.message();
        assert!(
            m.starts_with(&format!("webhook {base}: HTTP {status}")),
            "{m}"
        );
        assert!(m.contains(&format!("answer {status} xxx")), "{m}");
        // The body shown is cut at 200 bytes.
        assert!(m.len() < 300, "{} bytes: {m}", m.len());
    }

    // A server that accepts and never answers: a transient timeout, on time.
    let s = spec(&format!("url = \"{base}/silent\"\ntimeout = \"1s\""));
    let start = Instant::now();
    let e = send(&s).unwrap_err();
    let took = start.elapsed();
    assert!(e.is_transient() && e.message().contains("timed out"), "{e}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // Shutdown's deadline cuts an attempt short, whatever the action's timeout.
    let s = spec(&format!("url = \"{base}/silent\"\ntimeout = \"30s\""));
    let ctl = Control::default();
    ctl.set_deadline(Instant::now() + Duration::from_millis(300));
    let start = Instant::now();
    let e = s.deliverer().deliver(&job(), &ctl).unwrap_err();
    assert!(e.is_transient() && e.message().contains("timed out"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // Nobody listening: transient.
    drop(peer);
    let e = send(&spec(&format!("url = \"{base}/\"\ntimeout = \"2s\""))).unwrap_err();
    assert!(e.is_transient(), "{e}");
}

#[test]
fn https_is_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = testpeer::make_certs(dir.path());
    let (peer, log) = receiver(dir.path(), Some(&certs));
    let port = peer.port;
    let tls = |ca: &Path, extra: &str| {
        spec(&format!(
            "url = \"https://localhost:{port}/alert\"\ntimeout = \"5s\"\n\
             tls = {{ ca_file = '{}'{extra} }}",
            ca.display()
        ))
    };
    send(&tls(&certs.ca, "")).unwrap();
    let got = received(&log, 1);
    assert_eq!(got[0]["path"], "/alert");
    assert_eq!(got[0]["headers"]["host"], format!("localhost:{port}"));

    // The IP address is in the certificate too.
    let s = spec(&format!(
        "url = \"https://127.0.0.1:{port}/ip\"\ntls = {{ ca_file = '{}' }}",
        certs.ca.display()
    ));
    send(&s).unwrap();

    let e = send(&tls(&certs.other_ca, "")).unwrap_err();
    assert!(
        e.message().contains("invalid peer certificate") && e.message().contains("UnknownIssuer"),
        "{e}"
    );
    assert!(
        e.message().contains(&format!("https://localhost:{port}")),
        "{e}"
    );
    let e = send(&tls(&certs.ca, ", server_name = \"other.example\"")).unwrap_err();
    assert!(
        e.message().contains("invalid peer certificate")
            && e.message().contains("not valid for name \"other.example\""),
        "{e}"
    );
    // The system store does not know the test CA.
    let e = send(&spec(&format!("url = \"https://localhost:{port}/\""))).unwrap_err();
    assert!(e.message().contains("invalid peer certificate"), "{e}");
    // verify = false accepts it (check-config warns).
    send(&tls(&certs.other_ca, ", verify = false")).unwrap();
    assert_eq!(received(&log, 3).len(), 3);
}
