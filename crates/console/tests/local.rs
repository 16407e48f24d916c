//! The console over the agent's SQLite store, request by request: login and its rate
//! limit, roles, CSRF, escaping of event values, bad input as 4xx, keyset pages,
//! acknowledgement and the audit log; and the blocking server's limits over TCP.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use watchpost_console::auth::{FileUser, Keys, UserFile, hash_password};
use watchpost_console::local::{LocalBackend, LocalState};
use watchpost_console::{Console, Request, Response};
use watchpost_fleet_protocol::{CheckStatus, Heartbeat};
use watchpost_store::{NewEvent, StoreOptions, Writer};

const PASSWORD: &str = "correct horse battery";

struct Fake;

impl LocalState for Fake {
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            config_generation: Some("abc123".into()),
            checks: vec![CheckStatus {
                name: "sep-definitions".into(),
                status: "stale".into(),
                detail: "older than 3 days".into(),
            }],
            definitions_age_hours: Some(24.0 * 9.0),
            ..Heartbeat::default()
        }
    }
    fn baselines(&self) -> Option<&watchpost_anomaly::Baselines> {
        None
    }
}

fn event(host: &str, fields: &[(&str, &str)], anomaly: bool) -> NewEvent {
    NewEvent {
        time: Some(jiff::Timestamp::now()),
        source: "security".into(),
        host: host.into(),
        filters: vec![
            if anomaly {
                "new-logon-source"
            } else {
                "av-hit"
            }
            .into(),
        ],
        anomaly,
        anomaly_why: anomaly
            .then(|| "new value \"10.9.9.9\" for key \"alice\" (learning ended)".into()),
        needs_ack: anomaly,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        raw: fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        origin: Some("Security:42".into()),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    console: Console,
    anomaly: u64,
    xss: u64,
}

fn fixture(extra: usize) -> Fixture {
    fixture_with(extra, Box::new(Fake))
}

fn fixture_with(extra: usize, state: Box<dyn LocalState>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("events.db");
    let w = Writer::start(
        &store,
        StoreOptions {
            flush_every: Duration::from_millis(10),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    for i in 0..extra {
        w.submit(event("pc2", &[("n", &i.to_string())], false))
            .unwrap();
    }
    let anomaly = w
        .submit(event(
            "PC1",
            &[("TargetUserName", "alice"), ("IpAddress", "10.9.9.9")],
            true,
        ))
        .unwrap();
    let xss = w
        .submit(event(
            "PC1",
            &[
                ("CommandLine", "<script>console.log('XSS-1')</script>"),
                ("User", "\"><img src=x onerror=console.log('XSS-2')>"),
                ("rule_level", "high"),
            ],
            true,
        ))
        .unwrap();
    w.shutdown();
    let users = dir.path().join("users.toml");
    let mut f = UserFile::default();
    for (name, role) in [("ann", "analyst"), ("vic", "viewer")] {
        f.set(FileUser {
            name: name.into(),
            role: role.into(),
            password: hash_password(PASSWORD).unwrap(),
            disabled: false,
        });
    }
    std::fs::write(&users, f.to_text()).unwrap();
    let backend = LocalBackend::open(&store, users, "pc1".into(), state).unwrap();
    Fixture {
        console: Console::new(Arc::new(backend), Keys::random().unwrap(), false),
        _dir: dir,
        anomaly,
        xss,
    }
}

fn body(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn post(path: &str, cookie: Option<&str>, form: &str) -> Request {
    Request {
        method: "POST".into(),
        path: path.into(),
        cookie: cookie.map(str::to_owned),
        content_type: Some("application/x-www-form-urlencoded".into()),
        peer: "127.0.0.1".into(),
        body: form.as_bytes().to_vec(),
        ..Request::default()
    }
}

fn get(path: &str, cookie: &str) -> Request {
    let mut r = Request::get(path);
    r.cookie = Some(cookie.into());
    r
}

fn login(c: &Console, user: &str) -> String {
    let r = c.handle(&post(
        "/console/login",
        None,
        &format!("user={user}&password=correct+horse+battery&next=%2Fconsole%2F"),
    ));
    assert_eq!(r.status, 303, "{}", body(&r));
    let set = r.header("Set-Cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().unwrap().to_owned()
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[at..at + 64].to_owned()
}

#[test]
fn login_roles_csrf_escaping_and_acknowledgement() {
    let fx = fixture(3);
    let c = &fx.console;
    // Not logged in: pages send to the login form, state changes are refused.
    let r = c.handle(&Request::get("/console/events?q=x"));
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("Location"),
        Some("/console/login?next=%2Fconsole%2Fevents%3Fq%3Dx")
    );
    assert_eq!(c.handle(&post("/console/ack", None, "id=1")).status, 403);
    // A wrong password, then the limit.
    let wrong = post("/console/login", None, "user=ann&password=nope");
    assert_eq!(c.handle(&wrong).status, 403);
    let cookie = login(c, "ann");
    let overview = c.handle(&get("/console/", &cookie));
    assert_eq!(overview.status, 200);
    let html = body(&overview);
    assert!(
        overview
            .header("Content-Security-Policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(html.contains("<svg"), "charts are drawn");
    assert!(
        html.contains("check sep-definitions: stale (9 days old)"),
        "{html}"
    );
    assert!(
        html.contains(">2</span> waiting for acknowledgement"),
        "{html}"
    );
    assert!(html.contains("By rule level"));
    // Search, detail, escaping.
    let r = c.handle(&get(
        "/console/events?q=isanomaly%3Atrue+needsack%3Atrue+host%3APC1",
        &cookie,
    ));
    assert_eq!(r.status, 200);
    let html = body(&r);
    assert!(html.contains(&format!("href=\"/console/events/{}\"", fx.anomaly)));
    assert!(!html.contains("/console/events/1\""), "not an anomaly");
    let token = csrf(&html);
    let r = c.handle(&get(&format!("/console/events/{}", fx.xss), &cookie));
    let html = body(&r);
    assert!(
        html.contains("&lt;script&gt;console.log('XSS-1')&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>console.log"));
    assert!(!html.contains("<img src=x"));
    assert!(html.contains("&quot;&gt;&lt;img src=x onerror="));
    // Bad input: clear 4xx.
    for (path, status, text) in [
        ("/console/events?q=isanomaly%3Amaybe", 400, "isanomaly"),
        ("/console/events?q=%22open", 400, "unclosed quote"),
        (
            "/console/events?before=abc",
            400,
            "`before` must be an event id",
        ),
        ("/console/events?since=yesterday", 400, "is not a time"),
        ("/console/events/abc", 400, "not an event id"),
        ("/console/events/999999", 404, "no event 999999"),
        ("/console/hosts/nope", 404, "no host"),
        ("/console/nowhere", 404, "No such page"),
    ] {
        let r = c.handle(&get(path, &cookie));
        assert_eq!(r.status, status, "{path}");
        assert!(body(&r).contains(text), "{path}: {}", body(&r));
    }
    // A page past the end is an empty page, not an error.
    let r = c.handle(&get("/console/events?before=1", &cookie));
    assert_eq!(r.status, 200);
    assert!(body(&r).contains("No events match"));
    // A state change without the token, or with another session's, is refused.
    let form = format!("id={}&comment=fine", fx.anomaly);
    assert_eq!(
        c.handle(&post("/console/ack", Some(&cookie), &form)).status,
        403
    );
    let vcookie = login(c, "vic");
    let vtoken = csrf(&body(&c.handle(&get("/console/", &vcookie))));
    assert_eq!(
        c.handle(&post(
            "/console/ack",
            Some(&cookie),
            &format!("{form}&csrf={vtoken}")
        ))
        .status,
        403
    );
    // A viewer cannot acknowledge, even with a valid token.
    let r = c.handle(&post(
        "/console/ack",
        Some(&vcookie),
        &format!("{form}&csrf={vtoken}"),
    ));
    assert_eq!(r.status, 403);
    assert!(body(&r).contains("Your role (viewer) cannot acknowledge"));
    // Missing comment: 400.
    let r = c.handle(&post(
        "/console/ack",
        Some(&cookie),
        &format!("id={}&comment=&csrf={token}", fx.anomaly),
    ));
    assert_eq!(r.status, 400);
    // The analyst acknowledges both anomalies at once.
    let r = c.handle(&post(
        "/console/ack",
        Some(&cookie),
        &format!(
            "id={}&id={}&comment=known+admin+laptop&csrf={token}&back=%2Fconsole%2Fevents%3Fq%3Dneedsack%253Atrue",
            fx.anomaly, fx.xss
        ),
    ));
    assert_eq!(r.status, 303, "{}", body(&r));
    assert_eq!(
        r.header("Location"),
        Some("/console/events?q=needsack%3Atrue&done=2")
    );
    let html = body(&c.handle(&get("/console/events?q=needsack%3Atrue&done=2", &cookie)));
    assert!(html.contains("2 event(s) acknowledged") && html.contains("No events match"));
    let html = body(&c.handle(&get(&format!("/console/events/{}", fx.anomaly), &cookie)));
    assert!(
        html.contains("Acknowledged by <strong>ann</strong>"),
        "{html}"
    );
    assert!(html.contains("known admin laptop"));
    let html = body(&c.handle(&get("/console/audit", &cookie)));
    for what in [
        "event.ack",
        "console.denied",
        "console.csrf_refused",
        "console.login_failed",
        "console.login",
    ] {
        assert!(html.contains(what), "{what} in the audit log: {html}");
    }
    // Logging out ends the cookie; a disabled user's session ends at once.
    let r = c.handle(&post(
        "/console/logout",
        Some(&cookie),
        &format!("csrf={token}"),
    ));
    assert!(r.header("Set-Cookie").unwrap().contains("Max-Age=0"));
}

#[test]
fn a_login_posted_from_another_site_is_refused() {
    let fx = fixture(0);
    let mut r = post(
        "/console/login",
        None,
        "user=ann&password=correct+horse+battery",
    );
    r.host = Some("127.0.0.1:8443".into());
    r.origin = Some("https://evil.example".into());
    let answer = fx.console.handle(&r);
    assert_eq!(answer.status, 403);
    assert!(answer.header("Set-Cookie").is_none(), "no session");
    assert!(body(&answer).contains("another site"));
    // From the console's own page: signed in.
    r.origin = Some("http://127.0.0.1:8443".into());
    assert_eq!(fx.console.handle(&r).status, 303);
}

#[test]
fn login_attempts_are_limited() {
    let fx = fixture(0);
    for _ in 0..5 {
        let r = fx
            .console
            .handle(&post("/console/login", None, "user=ann&password=wrong"));
        assert_eq!(r.status, 403);
    }
    let r = fx.console.handle(&post(
        "/console/login",
        None,
        "user=ann&password=correct+horse+battery",
    ));
    assert_eq!(r.status, 429, "even the right password waits");
    assert!(r.header("Retry-After").is_some());
}

#[test]
fn pages_follow_the_keyset_both_ways() {
    let fx = fixture(120);
    let c = &fx.console;
    let cookie = login(c, "vic");
    let ids_of = |html: &str| -> Vec<u64> {
        html.match_indices("<td><a href=\"/console/events/")
            .map(|(i, m)| {
                let rest = &html[i + m.len()..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    };
    for order in ["desc", "asc"] {
        let mut seen = Vec::new();
        let mut next = format!("/console/events?q=&order={order}");
        loop {
            let html = body(&c.handle(&get(&next, &cookie)));
            let ids = ids_of(&html);
            assert!(ids.len() <= 50);
            seen.extend(ids);
            let Some(at) = html.find("rel=\"next\" href=\"") else {
                break;
            };
            let rest = &html[at + 17..];
            next = rest[..rest.find('"').unwrap()].replace("&amp;", "&");
        }
        assert_eq!(seen.len(), 122, "{order}");
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        if order == "desc" {
            sorted.reverse();
        }
        assert_eq!(seen, sorted, "{order}: in order, no repeats");
    }
}

fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_blocking_server_limits_requests() {
    let fx = fixture(0);
    let server = watchpost_console::serve::Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let console = Arc::new(fx.console);
    let (s2, c2) = (stop.clone(), console.clone());
    let t = std::thread::spawn(move || {
        server.run(c2, || s2.load(std::sync::atomic::Ordering::SeqCst));
    });
    let r = raw(addr, b"GET /console/login HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("Content-Security-Policy: default-src 'none'"));
    assert!(r.contains("<form method=\"post\" action=\"/console/login\">"));
    let r = raw(addr, b"GET /console/static/console.css HTTP/1.1\r\n\r\n");
    assert!(r.contains("text/css"));
    let mut huge = b"GET /console/ HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    huge.extend_from_slice(b"\r\n\r\n");
    assert!(raw(addr, &huge).starts_with("HTTP/1.1 431"));
    let r = raw(
        addr,
        b"POST /console/login HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(raw(addr, b"BLAH\r\n\r\n").starts_with("HTTP/1.1 400"));
    let r = raw(
        addr,
        b"POST /console/login HTTP/1.1\r\nContent-Length: 32\r\n\r\nuser=ann&password=correct+horse+",
    );
    assert!(
        r.starts_with("HTTP/1.1 403"),
        "a wrong password over TCP: {r}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = TcpStream::connect(addr);
    t.join().unwrap();
}

#[test]
fn the_agents_console_has_no_groups_and_sends_no_commands() {
    let fx = fixture(0);
    let cookie = login(&fx.console, "ann");
    let r = fx.console.handle(&get("/console/", &cookie));
    let html = body(&r);
    assert!(
        !html.contains("/console/groups"),
        "no Groups in the navigation: {html}"
    );
    let token = csrf(&html);
    for path in [
        "/console/groups",
        "/console/groups/lab",
        "/console/groups/lab/diff?from=1&to=2",
    ] {
        let r = fx.console.handle(&get(path, &cookie));
        assert_eq!(r.status, 404, "{path}");
        assert!(body(&r).contains("fleet server"), "{path}: {}", body(&r));
    }
    let r = fx.console.handle(&post(
        "/console/groups/lab/publish",
        Some(&cookie),
        &format!("csrf={token}&config=x"),
    ));
    assert_eq!(r.status, 404);
    let r = fx.console.handle(&post(
        "/console/hosts/local/command",
        Some(&cookie),
        &format!("csrf={token}&kind=reload"),
    ));
    assert_eq!(r.status, 404);
    assert!(body(&r).contains("fleet server"));
    // The host page offers no command form.
    let html = body(&fx.console.handle(&get("/console/hosts/local", &cookie)));
    assert!(!html.contains("/command"), "{html}");
}

#[test]
fn odd_paths_are_answered_not_panicked_on() {
    let fx = fixture(0);
    let cookie = login(&fx.console, "ann");
    let token = csrf(&body(&fx.console.handle(&get("/console/", &cookie))));
    for path in [
        "/console/hosts/command",
        "/console/hosts//command",
        "/console/groups/",
        "/console/groups//publish",
        "/console/groups/x/",
    ] {
        let r = fx.console.handle(&post(
            path,
            Some(&cookie),
            &format!("csrf={token}&kind=reload"),
        ));
        assert!((400..500).contains(&r.status), "{path}: {}", r.status);
    }
}

/// A daemon whose quarantine is in force until released (as the agent's quarantine API
/// records it), or whose release fails.
struct Quarantined {
    released: std::sync::Mutex<Vec<(String, String)>>,
    fails: bool,
}

impl LocalState for Quarantined {
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            quarantine: self.released.lock().unwrap().is_empty().then(|| {
                watchpost_fleet_protocol::QuarantineStatus {
                    since_ms: 1_765_000_000_000,
                    reason: "filter ransomware-note <b>".into(),
                    until_ms: None,
                }
            }),
            ..Heartbeat::default()
        }
    }
    fn baselines(&self) -> Option<&watchpost_anomaly::Baselines> {
        None
    }
    fn release_quarantine(&self, by: &str, reason: &str) -> Result<bool, String> {
        if self.fails {
            return Err("nft: Operation not permitted".into());
        }
        let mut r = self.released.lock().unwrap();
        let was = r.is_empty();
        r.push((by.to_owned(), reason.to_owned()));
        Ok(was)
    }
}

#[test]
fn the_agents_console_releases_its_own_quarantine() {
    let fx = fixture_with(
        0,
        Box::new(Quarantined {
            released: Default::default(),
            fails: false,
        }),
    );
    // A viewer sees the quarantine, no button; a hand-made release is refused.
    let vic = login(&fx.console, "vic");
    let html = body(&fx.console.handle(&get("/console/hosts/local", &vic)));
    assert!(html.contains("filter ransomware-note &lt;b&gt;"), "{html}");
    assert!(!html.contains("form class=\"release\""), "{html}");
    assert!(html.contains("cannot release a quarantine"), "{html}");
    let vtoken = csrf(&html);
    let r = fx.console.handle(&post(
        "/console/hosts/local/command",
        Some(&vic),
        &format!("csrf={vtoken}&kind=quarantine_release"),
    ));
    assert_eq!(r.status, 403);
    // The analyst releases it.
    let ann = login(&fx.console, "ann");
    let html = body(&fx.console.handle(&get("/console/hosts/local", &ann)));
    assert!(html.contains("form class=\"release\""), "{html}");
    assert!(html.contains("Release quarantine"), "{html}");
    let token = csrf(&html);
    let r = fx.console.handle(&post(
        "/console/hosts/local/command",
        Some(&ann),
        &format!("csrf={token}&kind=quarantine_release&reason=false+positive"),
    ));
    assert_eq!(r.status, 303, "{}", body(&r));
    assert_eq!(
        r.header("Location"),
        Some("/console/hosts/local?released=1")
    );
    let html = body(
        &fx.console
            .handle(&get("/console/hosts/local?released=1", &ann)),
    );
    assert!(html.contains("The quarantine was released."), "{html}");
    assert!(html.contains("Not quarantined."), "{html}");
    // Again: nothing to release.
    let r = fx.console.handle(&post(
        "/console/hosts/local/command",
        Some(&ann),
        &format!("csrf={token}&kind=quarantine_release"),
    ));
    assert_eq!(
        r.header("Location"),
        Some("/console/hosts/local?released=0")
    );
    // Other commands are the fleet's; the audit log has the release and the refusal.
    let r = fx.console.handle(&post(
        "/console/hosts/local/command",
        Some(&ann),
        &format!("csrf={token}&kind=quarantine_apply&reason=x"),
    ));
    assert_eq!(r.status, 404);
    let html = body(&fx.console.handle(&get("/console/audit", &ann)));
    assert!(html.contains("quarantine.release"), "{html}");
    assert!(html.contains("console.denied"), "{html}");
    assert!(html.contains("false positive"), "{html}");

    // A release that fails says why.
    let fx = fixture_with(
        0,
        Box::new(Quarantined {
            released: Default::default(),
            fails: true,
        }),
    );
    let ann = login(&fx.console, "ann");
    let token = csrf(&body(&fx.console.handle(&get("/console/", &ann))));
    let r = fx.console.handle(&post(
        "/console/hosts/local/command",
        Some(&ann),
        &format!("csrf={token}&kind=quarantine_release"),
    ));
    assert_eq!(r.status, 400);
    assert!(
        body(&r).contains("nft: Operation not permitted"),
        "{}",
        body(&r)
    );
}
