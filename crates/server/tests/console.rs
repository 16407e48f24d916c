//! The web console on the fleet server, over a private PostgreSQL: agents ship events
//! and heartbeats through the real API, users log in with `user add` passwords, and every
//! page answers from PostgreSQL: the overview's charts and hosts needing attention,
//! search with keyset pages, an event with its outcomes, acknowledgement (recorded with
//! `origin = 'server'` and in the audit log), a viewer refused, hosts and baselines.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Answer, Env, credential, enroll, events, request, send_batch};
use watchpost_fleet_protocol::{CheckStatus, Heartbeat};

const PASSWORD: &str = "correct horse battery";

fn text(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

fn login(env: &Env, user: &str) -> String {
    let a = request(
        env.addr,
        "POST",
        "/console/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("user={user}&password=correct+horse+battery&next=%2Fconsole%2F").as_bytes(),
    );
    assert_eq!(a.status, 303, "{}", text(&a));
    a.header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn get(env: &Env, path: &str, cookie: &str) -> Answer {
    request(env.addr, "GET", path, &[("Cookie", cookie)], b"")
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    html[at..at + 64].to_owned()
}

#[test]
fn the_fleet_console_reads_and_acknowledges_in_postgresql() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let Some(env) = Env::start(|c| {
        c.console = Some(watchpost_server::config::ConsoleSettings {
            session_key_file: None,
        });
    }) else {
        return;
    };
    let db = env.db();
    let secret = env.rt.block_on(async {
        use watchpost_server::admin;
        admin::group_add(&db, "test", "lab", "").await.unwrap();
        admin::user_add(&db, "test", "ann", "analyst", Some(PASSWORD))
            .await
            .unwrap();
        admin::user_add(&db, "test", "vic", "viewer", Some(PASSWORD))
            .await
            .unwrap();
        admin::secret_create(&db, "test", "lab", "s1", None)
            .await
            .unwrap()
    });
    let cred = credential(&enroll(env.addr, &secret, "host-a", "PC-A"));
    assert_eq!(
        send_batch(env.addr, &cred, &events("s1", 1, 120, "PC-A")).status,
        200
    );
    let auth = format!("Bearer {cred}");
    let hb = Heartbeat {
        version: "0.1.0".into(),
        hostname: "PC-A".into(),
        config_generation: Some("gen-7".into()),
        checks: vec![CheckStatus {
            name: "defs".into(),
            status: "stale".into(),
            detail: "9 days".into(),
        }],
        baseline_pairs: Some(42),
        ..Heartbeat::default()
    };
    let a = request(
        env.addr,
        "POST",
        "/api/v1/heartbeat",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(&hb).unwrap(),
    );
    assert_eq!(a.status, 200);

    // Not logged in: to the login form. The API is unchanged beside it.
    let a = get(&env, "/console/", "");
    assert_eq!(a.status, 303);
    assert_eq!(
        request(env.addr, "GET", "/api/v1/health", &[], b"").status,
        200
    );
    let cookie = login(&env, "ann");
    let a = get(&env, "/console/", &cookie);
    assert_eq!(a.status, 200, "{}", text(&a));
    assert!(
        a.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = text(&a);
    assert!(
        html.contains(">40</span> waiting for acknowledgement"),
        "{html}"
    );
    assert!(html.contains("120 in total"), "{html}");
    assert!(html.contains("check defs: stale"), "{html}");

    // Search with keyset pages: 40 anomalies, 50 per page.
    let a = get(
        &env,
        "/console/events?q=isanomaly%3Atrue+needsack%3Atrue+host%3APC-A",
        &cookie,
    );
    let html = text(&a);
    assert_eq!(a.status, 200);
    assert_eq!(html.matches("<td><a href=\"/console/events/").count(), 40);
    let a = get(&env, "/console/events?q=&since=1h", &cookie);
    assert_eq!(
        text(&a).matches("<td><a href=\"/console/events/").count(),
        50
    );
    assert!(text(&a).contains("rel=\"next\""));
    let a = get(&env, "/console/events?q=isanomaly%3Amaybe", &cookie);
    assert_eq!(a.status, 400);
    let token = csrf(&html);
    let first: i64 = {
        let at = html.find("<td><a href=\"/console/events/").unwrap() + 29;
        html[at..at + html[at..].find('"').unwrap()]
            .parse()
            .unwrap()
    };
    let a = get(&env, &format!("/console/events/{first}"), &cookie);
    assert_eq!(a.status, 200);
    let html = text(&a);
    assert!(html.contains("EICAR Test String"), "{html}");
    assert!(html.contains("href=\"/console/hosts/"), "links the agent");
    assert_eq!(get(&env, "/console/events/99999999", &cookie).status, 404);

    // A viewer is refused; the analyst acknowledges.
    let vcookie = login(&env, "vic");
    let vtoken = csrf(&text(&get(&env, "/console/", &vcookie)));
    let form = |tok: &str| format!("id={first}&comment=known&csrf={tok}");
    let post = |cookie: &str, body: String| {
        request(
            env.addr,
            "POST",
            "/console/ack",
            &[
                ("Cookie", cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
    };
    assert_eq!(post(&vcookie, form(&vtoken)).status, 403);
    assert_eq!(post(&cookie, form("00")).status, 403, "CSRF");
    let a = post(&cookie, form(&token));
    assert_eq!(a.status, 303, "{}", text(&a));
    assert_eq!(
        env.pg.psql(&format!(
            "SELECT acked_by || ' ' || ack_comment || ' ' || ack_origin FROM events WHERE id = {first}"
        )),
        "ann known server"
    );
    let html = text(&get(&env, "/console/audit", &cookie));
    assert!(
        html.contains("event.ack") && html.contains("console.denied"),
        "{html}"
    );
    assert!(text(&get(&env, "/console/", &cookie)).contains(">39</span> waiting"));

    // Hosts and baselines from the heartbeat.
    let html = text(&get(&env, "/console/hosts", &cookie));
    assert!(
        html.contains("PC-A") && html.contains("gen-7") && html.contains("online"),
        "{html}"
    );
    let id = env.pg.psql("SELECT id FROM agents");
    let html = text(&get(&env, &format!("/console/hosts/{id}"), &cookie));
    assert!(
        html.contains("check defs: stale") || html.contains("stale"),
        "{html}"
    );
    assert!(html.contains("No commands were sent"), "{html}");
    let html = text(&get(&env, "/console/baselines", &cookie));
    assert!(html.contains("42"), "{html}");
    assert_eq!(get(&env, "/console/hosts/77777", &cookie).status, 404);
    env.stop();
}
