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
    let Some(env) = Env::with_console() else {
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

/// A group configuration for the tests: valid as it is.
pub const GOOD: &str = r#"
[[source]]
name = "av"
type = "sep_av_log"
path = "/var/log/sep/*.log"

[[filter]]
name = "av-detection"
match = { source = "av" }
actions = ["siem"]

[[action]]
name = "siem"
type = "syslog"
target = "udp://127.0.0.1:514"
"#;

fn post_form(env: &Env, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Answer {
    let body = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", watchpost_console::http::encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    request(
        env.addr,
        "POST",
        path,
        &[
            ("Cookie", cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    )
}

#[test]
fn groups_configuration_and_commands_through_the_fleet_console() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let Some(env) = Env::with_console() else {
        return;
    };
    let db = env.db();
    let secret = env.rt.block_on(async {
        use watchpost_server::admin;
        admin::group_add(&db, "test", "lab", "the lab's PCs")
            .await
            .unwrap();
        admin::group_add(&db, "test", "empty", "").await.unwrap();
        for (u, r) in [("ada", "admin"), ("ann", "analyst"), ("vic", "viewer")] {
            admin::user_add(&db, "test", u, r, Some(PASSWORD))
                .await
                .unwrap();
        }
        admin::secret_create(&db, "test", "lab", "s1", None)
            .await
            .unwrap()
    });
    let cred = credential(&enroll(env.addr, &secret, "host-a", "PC-A"));
    let agent = env.pg.psql("SELECT id FROM agents");
    let admin = login(&env, "ada");
    let token = csrf(&text(&get(&env, "/console/", &admin)));

    // The groups list: no version yet.
    let a = get(&env, "/console/groups", &admin);
    assert_eq!(a.status, 200);
    let html = text(&a);
    assert!(html.contains("href=\"/console/groups/lab\""), "{html}");
    assert!(html.contains("none (hosts run their own files)"), "{html}");
    assert!(html.contains("the lab&#39;s PCs") || html.contains("the lab's PCs"));

    // A configuration with an error: refused, the diagnostic at its line, nothing stored.
    let bad = GOOD.replace("actions = [\"siem\"]", "actions = [\"nope\"]");
    let a = post_form(
        &env,
        "/console/groups/lab/publish",
        &admin,
        &[("csrf", &token), ("config", &bad), ("comment", "first try")],
    );
    assert_eq!(a.status, 422, "{}", text(&a));
    let html = text(&a);
    assert!(html.contains("nothing was published"), "{html}");
    assert!(
        html.contains("<a href=\"#L10\"><code>group.toml:10:12</code></a>"),
        "{html}"
    );
    assert!(html.contains("<tr id=\"L10\" class=\"bad\">"), "{html}");
    assert!(html.contains("unknown action `nope`"), "{html}");
    // The text comes back in the editor to be corrected.
    assert!(html.contains("actions = [&quot;nope&quot;]"), "{html}");
    assert_eq!(env.pg.psql("SELECT count(*) FROM config_versions"), "0");

    // A good one is published; a second changes one line; the diff shows it.
    let a = post_form(
        &env,
        "/console/groups/lab/publish",
        &admin,
        &[
            ("csrf", &token),
            ("config", GOOD),
            ("comment", "<b>first</b>"),
        ],
    );
    assert_eq!(a.status, 303, "{}", text(&a));
    assert_eq!(
        a.header("location"),
        Some("/console/groups/lab?published=1&warnings=0")
    );
    let second = GOOD.replace("udp://127.0.0.1:514", "udp://10.0.0.5:514");
    let a = post_form(
        &env,
        "/console/groups/lab/publish",
        &admin,
        &[
            ("csrf", &token),
            ("base", "1"),
            ("config", &second),
            ("comment", "new SIEM"),
        ],
    );
    assert_eq!(a.status, 303, "{}", text(&a));
    assert_eq!(
        env.pg.psql(
            "SELECT string_agg(version || ':' || created_by || ':' || comment, ',' ORDER BY version) FROM config_versions"
        ),
        "1:ada:<b>first</b>,2:ada:new SIEM"
    );
    let html = text(&get(&env, "/console/groups/lab?published=2", &admin));
    assert!(html.contains("Version 2 published"), "{html}");
    assert!(
        html.contains("&lt;b&gt;first&lt;/b&gt;"),
        "the comment is escaped"
    );
    assert!(!html.contains("<b>first</b>"));
    assert!(html.contains("changes from 1"), "{html}");
    // The editor starts from the published version.
    assert!(html.contains("udp://10.0.0.5:514"), "{html}");
    let a = get(&env, "/console/groups/lab/diff?from=1&to=2", &admin);
    assert_eq!(a.status, 200);
    let html = text(&a);
    assert!(
        html.contains("<span class=\"add\">+1</span> <span class=\"del\">−1</span>"),
        "{html}"
    );
    assert!(
        html.contains("<tr class=\"del\"><td class=\"ln\">15</td><td class=\"ln\"></td><td>−</td><td class=\"code\">target = &quot;udp://127.0.0.1:514&quot;</td></tr>"),
        "{html}"
    );
    assert!(
        html.contains("<tr class=\"add\"><td class=\"ln\"></td><td class=\"ln\">15</td><td>+</td><td class=\"code\">target = &quot;udp://10.0.0.5:514&quot;</td></tr>"),
        "{html}"
    );
    let a = get(&env, "/console/groups/lab/versions/1", &admin);
    assert_eq!(a.status, 200);
    assert!(text(&a).contains("udp://127.0.0.1:514"));
    assert_eq!(
        get(&env, "/console/groups/lab/versions/9", &admin).status,
        404
    );
    assert_eq!(
        get(&env, "/console/groups/lab/versions/x", &admin).status,
        400
    );
    assert_eq!(
        get(&env, "/console/groups/lab/diff?from=1&to=x", &admin).status,
        400
    );
    assert_eq!(get(&env, "/console/groups/nosuch", &admin).status, 404);

    // The agent runs version 2... then refuses it (as a real agent would report).
    let auth = format!("Bearer {cred}");
    let report = |version: i32, ok: bool, diagnostics: &str| {
        let r = watchpost_fleet_protocol::Report {
            config: Some(watchpost_fleet_protocol::ConfigReport {
                version,
                ok,
                generation: 4,
                diagnostics: diagnostics.into(),
            }),
            ..Default::default()
        };
        let a = request(
            env.addr,
            "POST",
            "/api/v1/report",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &serde_json::to_vec(&r).unwrap(),
        );
        assert_eq!(a.status, 200, "{}", text(&a));
    };
    let hb = watchpost_fleet_protocol::Heartbeat {
        version: "0.1.0".into(),
        hostname: "PC-A".into(),
        config_generation: Some("gen-a1".into()),
        ..Default::default()
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
    report(2, true, "");
    let html = text(&get(&env, "/console/groups", &admin));
    assert!(
        html.contains("<td><span class=\"ok\">1</span></td><td>0</td><td>0</td>"),
        "one host on the published version: {html}"
    );
    report(2, false, "group.toml:16:10: error: <cannot reach> the SIEM");
    let html = text(&get(&env, "/console/groups/lab", &admin));
    assert!(html.contains("refused"), "{html}");
    // Its reload counter from the report, the generation its heartbeat names.
    assert!(
        html.contains("<td>4</td><td><code>gen-a1</code></td>"),
        "{html}"
    );
    assert!(
        html.contains("group.toml:16:10: error: &lt;cannot reach&gt; the SIEM"),
        "{html}"
    );
    let html = text(&get(&env, "/console/groups", &admin));
    assert!(
        html.contains(
            "<td><span class=\"ok\">0</span></td><td>0</td><td><span class=\"failed\">1</span></td>"
        ),
        "one host rejecting: {html}"
    );

    // Roll back to version 1: published again, the host is behind.
    let a = post_form(
        &env,
        "/console/groups/lab/rollback",
        &admin,
        &[("csrf", &token), ("version", "1")],
    );
    assert_eq!(a.status, 303, "{}", text(&a));
    assert_eq!(
        env.pg
            .psql("SELECT published_version || ' ' || published_by FROM groups WHERE name = 'lab'"),
        "1 ada"
    );
    let html = text(&get(&env, "/console/groups", &admin));
    assert!(
        html.contains("<td><span class=\"ok\">0</span></td><td><span class=\"waiting\">1</span></td><td>0</td>"),
        "one host behind: {html}"
    );
    assert_eq!(
        post_form(
            &env,
            "/console/groups/lab/rollback",
            &admin,
            &[("csrf", &token), ("version", "7")]
        )
        .status,
        404
    );
    // Without the CSRF token: refused.
    assert_eq!(
        post_form(
            &env,
            "/console/groups/lab/rollback",
            &admin,
            &[("version", "2")]
        )
        .status,
        403
    );

    // A viewer and an analyst cannot publish or roll back: 403, audited, nothing changes.
    let viewer = login(&env, "vic");
    let vtoken = csrf(&text(&get(&env, "/console/", &viewer)));
    let analyst = login(&env, "ann");
    let atoken = csrf(&text(&get(&env, "/console/", &analyst)));
    let html = text(&get(&env, "/console/groups/lab", &viewer));
    assert!(html.contains("cannot publish configuration"), "{html}");
    assert!(!html.contains("form class=\"publish\""));
    for (c, t) in [(&viewer, &vtoken), (&analyst, &atoken)] {
        let a = post_form(
            &env,
            "/console/groups/lab/publish",
            c,
            &[("csrf", t), ("config", GOOD), ("comment", "sneaky")],
        );
        assert_eq!(a.status, 403, "{}", text(&a));
        assert!(text(&a).contains("an admin can"));
        assert_eq!(
            post_form(
                &env,
                "/console/groups/lab/rollback",
                c,
                &[("csrf", t), ("version", "2")]
            )
            .status,
            403
        );
    }
    assert_eq!(env.pg.psql("SELECT count(*) FROM config_versions"), "2");
    assert_eq!(
        env.pg
            .psql("SELECT published_version FROM groups WHERE name = 'lab'"),
        "1"
    );
    assert_eq!(
        env.pg.psql(
            "SELECT count(*) FROM audit_log WHERE action = 'console.denied' AND target IN ('publish group lab', 'rollback group lab')"
        ),
        "4"
    );

    // Commands: a viewer is refused; the analyst releases the quarantine.
    let host = format!("/console/hosts/{agent}");
    let command = format!("{host}/command");
    let a = post_form(
        &env,
        &command,
        &viewer,
        &[("csrf", &vtoken), ("kind", "quarantine_release")],
    );
    assert_eq!(a.status, 403);
    assert_eq!(
        env.pg.psql(&format!(
            "SELECT count(*) FROM audit_log WHERE action = 'console.denied' AND target = 'command to host {agent}'"
        )),
        "1"
    );
    assert_eq!(env.pg.psql("SELECT count(*) FROM commands"), "0");
    let a = post_form(
        &env,
        &command,
        &analyst,
        &[
            ("csrf", &atoken),
            ("kind", "quarantine_release"),
            ("reason", "false alarm, ticket 4711"),
        ],
    );
    assert_eq!(a.status, 303, "{}", text(&a));
    let id = env.pg.psql("SELECT id FROM commands");
    assert_eq!(
        a.header("location"),
        Some(format!("{host}?sent={id}").as_str())
    );
    assert_eq!(
        env.pg
            .psql("SELECT kind || ' ' || created_by || ' ' || (args ->> 'reason') FROM commands"),
        "quarantine_release ann false alarm, ticket 4711"
    );
    let html = text(&get(&env, &format!("{host}?sent={id}"), &analyst));
    assert!(html.contains(&format!("Command {id} sent")), "{html}");
    assert!(
        html.contains(&format!(
            "<td>{id}</td><td>quarantine_release</td><td>reason: false alarm, ticket 4711</td><td>ann</td>"
        )),
        "{html}"
    );
    assert!(html.contains("<td>waiting</td>"), "{html}");
    // The host reports the result: it is shown with the command.
    let r = watchpost_fleet_protocol::Report {
        results: vec![watchpost_fleet_protocol::CommandResult {
            id: id.parse().unwrap(),
            ok: true,
            output: "quarantine released <nft>".into(),
        }],
        ..Default::default()
    };
    let a = request(
        env.addr,
        "POST",
        "/api/v1/report",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(&r).unwrap(),
    );
    assert_eq!(a.status, 200, "{}", text(&a));
    let html = text(&get(&env, &host, &viewer));
    assert!(
        html.contains("<td>ok quarantine released &lt;nft&gt;</td>"),
        "{html}"
    );
    // Run an action with fields; bad field lines and unknown kinds are a 400.
    let a = post_form(
        &env,
        &command,
        &analyst,
        &[
            ("csrf", &atoken),
            ("kind", "run_action"),
            ("action", "siem"),
            ("fields", "path=C:\\x.exe\nuser=<bob>"),
        ],
    );
    assert_eq!(a.status, 303, "{}", text(&a));
    assert_eq!(
        env.pg
            .psql("SELECT args::text FROM commands WHERE kind = 'run_action'"),
        r#"{"kind": "run_action", "action": "siem", "fields": {"path": "C:\\x.exe", "user": "<bob>"}}"#
    );
    let html = text(&get(&env, &host, &analyst));
    assert!(
        html.contains("action: siem; path=C:\\x.exe, user=&lt;bob&gt;"),
        "{html}"
    );
    let a = post_form(
        &env,
        &command,
        &analyst,
        &[
            ("csrf", &atoken),
            ("kind", "run_action"),
            ("action", "siem"),
            ("fields", "no equals"),
        ],
    );
    assert_eq!(a.status, 400);
    assert!(text(&a).contains("name=value"));
    assert_eq!(
        post_form(
            &env,
            &command,
            &analyst,
            &[("csrf", &atoken), ("kind", "rm -rf")]
        )
        .status,
        400
    );
    assert_eq!(
        post_form(
            &env,
            "/console/hosts/99999/command",
            &analyst,
            &[("csrf", &atoken), ("kind", "reload")]
        )
        .status,
        404
    );
    // Odd paths are answered, never panicked on.
    for path in [
        "/console/hosts/command",
        "/console/hosts//command",
        "/console/hosts/PC-A/command",
        "/console/groups/",
        "/console/groups//publish",
        "/console/groups/lab/",
        "/console/groups/lab/destroy",
    ] {
        let a = post_form(&env, path, &admin, &[("csrf", &token), ("kind", "reload")]);
        assert!((400..500).contains(&a.status), "{path}: {}", a.status);
    }
    for path in [
        "/console/groups/lab/versions/",
        "/console/groups/lab/diff",
        "/console/groups/lab/diff?from=1",
        "/console/groups/lab/diff?from=1&to=99",
        "/console/groups/lab?edit=99",
        "/console/groups/lab?edit=abc",
    ] {
        let a = get(&env, path, &admin);
        assert!((400..500).contains(&a.status), "{path}: {}", a.status);
    }
    assert_eq!(env.pg.psql("SELECT count(*) FROM commands"), "2");
    // The audit log names who sent, published and rolled back.
    let html = text(&get(&env, "/console/audit", &admin));
    for what in [
        "command.send",
        "config.publish",
        "config.rollback",
        "console.denied",
    ] {
        assert!(html.contains(what), "{what}: {html}");
    }
    env.stop();
}

#[test]
fn the_hosts_page_pages_by_name_and_filters_thousands_of_hosts() {
    let Some(env) = Env::with_console() else {
        return;
    };
    let db = env.db();
    env.rt.block_on(async {
        use watchpost_server::admin;
        admin::group_add(&db, "test", "lab", "").await.unwrap();
        admin::group_add(&db, "test", "office", "").await.unwrap();
        admin::user_add(&db, "test", "vic", "viewer", Some(PASSWORD))
            .await
            .unwrap();
    });
    // 2,500 hosts: PC-0000 … PC-2499, every fifth in `office`, seen now (online) except
    // every hundredth (never seen: needs attention); one name with LIKE's own characters.
    env.pg.psql(
        "INSERT INTO agents (host_id, group_id, hostname, version, last_seen_at)
         SELECT 'h' || n, (SELECT id FROM groups WHERE name = CASE WHEN n % 5 = 0 THEN 'office' ELSE 'lab' END),
                'PC-' || lpad(n::text, 4, '0'), '0.1.0', CASE WHEN n % 100 = 7 THEN NULL ELSE now() END
         FROM generate_series(0, 2499) n;
         INSERT INTO agents (host_id, group_id, hostname) SELECT 'odd', id, 'ODD_100%' FROM groups WHERE name = 'lab'",
    );
    let cookie = login(&env, "vic");
    let names = |html: &str| -> Vec<String> {
        html.split("<a href=\"/console/hosts/")
            .skip(1)
            .filter_map(|s| s.split_once("\">").map(|(_, r)| r))
            .filter_map(|r| r.split_once("</a>").map(|(n, _)| n.to_owned()))
            .collect()
    };
    let next = |html: &str| -> Option<String> {
        html.split_once("rel=\"next\" href=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(l, _)| l.replace("&amp;", "&"))
    };

    // Page after page, 100 each, in name order, every host once.
    let mut seen = Vec::new();
    let mut path = "/console/hosts".to_owned();
    let mut pages = 0;
    loop {
        let a = get(&env, &path, &cookie);
        assert_eq!(a.status, 200, "{}", text(&a));
        let html = text(&a);
        if pages == 0 {
            assert!(html.contains("2501 hosts, by name"), "{html}");
        }
        let page = names(&html);
        assert!(page.len() <= 100);
        seen.extend(page);
        pages += 1;
        match next(&html) {
            Some(n) => path = n,
            None => break,
        }
    }
    assert_eq!(pages, 26);
    assert_eq!(seen.len(), 2501);
    let mut sorted = seen.clone();
    sorted.sort_by_key(|n| n.to_lowercase());
    sorted.dedup();
    assert_eq!(seen, sorted, "in name order, each once");

    // A part of a name; the group; needing attention; filters kept on the next page.
    let html = text(&get(&env, "/console/hosts?name=pc-24", &cookie));
    assert!(html.contains("100 hosts match"), "{html}");
    assert_eq!(names(&html).first().map(String::as_str), Some("PC-2400"));
    let html = text(&get(&env, "/console/hosts?group=office", &cookie));
    assert!(html.contains("500 hosts match"), "{html}");
    assert!(
        names(&html)
            .iter()
            .all(|n| n[3..].parse::<u32>().unwrap() % 5 == 0)
    );
    let link = next(&html).unwrap();
    assert!(link.contains("group=office"), "{link}");
    let html = text(&get(&env, "/console/hosts?attention=1", &cookie));
    // 25 never seen, and ODD_100% (never seen either).
    assert!(html.contains("26 hosts match"), "{html}");
    // LIKE's characters are taken as they are: `_` and `%` match only themselves.
    let html = text(&get(&env, "/console/hosts?name=d_100%25", &cookie));
    assert!(html.contains("1 host matches"), "{html}");
    let html = text(&get(&env, "/console/hosts?name=C_0", &cookie));
    assert!(html.contains("No host matches."), "{html}");
    // Bad input: a page after something that is not a host id.
    assert_eq!(get(&env, "/console/hosts?after=x'", &cookie).status, 400);
}

#[test]
fn a_command_to_every_host_of_a_group_is_sent_once() {
    let Some(env) = Env::with_console() else {
        return;
    };
    let db = env.db();
    let secret = env.rt.block_on(async {
        use watchpost_server::admin;
        admin::group_add(&db, "test", "lab", "").await.unwrap();
        admin::group_add(&db, "test", "office", "").await.unwrap();
        for (u, r) in [("ann", "analyst"), ("vic", "viewer")] {
            admin::user_add(&db, "test", u, r, Some(PASSWORD))
                .await
                .unwrap();
        }
        admin::secret_create(&db, "test", "lab", "s1", None)
            .await
            .unwrap()
    });
    for (id, name) in [("h1", "PC-1"), ("h2", "PC-2"), ("h3", "PC-3")] {
        enroll(env.addr, &secret, id, name);
    }
    // One host elsewhere: not reached.
    env.pg.psql(
        "INSERT INTO agents (host_id, group_id, hostname) SELECT 'o1', id, 'OFF-1' FROM groups WHERE name = 'office'",
    );

    // The analyst's group page offers the form, with a fresh request id.
    let ann = login(&env, "ann");
    let html = text(&get(&env, "/console/groups/lab", &ann));
    assert!(
        html.contains("action=\"/console/groups/lab/command\""),
        "{html}"
    );
    let token = csrf(&html);
    let at = html.find("name=\"request\" value=\"").unwrap() + 22;
    let request_id = html[at..at + 32].to_owned();
    assert!(request_id.chars().all(|c| c.is_ascii_hexdigit()));
    let form = [
        ("csrf", token.as_str()),
        ("request", request_id.as_str()),
        ("kind", "run_checks"),
    ];
    let a = post_form(&env, "/console/groups/lab/command", &ann, &form);
    assert_eq!(a.status, 303, "{}", text(&a));
    let location = a.header("location").unwrap().to_owned();
    assert!(location.ends_with("&hosts=3"), "{location}");
    let html = text(&get(&env, &location, &ann));
    assert!(
        html.contains("sent to the group&#39;s 3 host(s)")
            || html.contains("sent to the group's 3 host(s)"),
        "{html}"
    );
    // The same form again (a double click): the same command, not a second one.
    let again = post_form(&env, "/console/groups/lab/command", &ann, &form);
    assert_eq!(again.header("location"), Some(location.as_str()));
    assert_eq!(env.pg.psql("SELECT count(*) FROM commands"), "1");
    assert_eq!(
        env.pg.psql(
            "SELECT string_agg(a.hostname, ',' ORDER BY a.hostname) FROM command_results r JOIN agents a ON a.id = r.agent_id"
        ),
        "PC-1,PC-2,PC-3"
    );
    assert_eq!(
        env.pg
            .psql("SELECT created_by || ' ' || kind FROM commands"),
        "ann run_checks"
    );
    // Each host's page lists it.
    let host = env.pg.psql("SELECT id FROM agents WHERE hostname = 'PC-2'");
    let html = text(&get(&env, &format!("/console/hosts/{host}"), &ann));
    assert!(html.contains("run_checks"), "{html}");
    // A group that does not exist; a viewer (refused, audited).
    let a = post_form(&env, "/console/groups/nope/command", &ann, &form[..1]);
    assert_eq!(a.status, 400, "no kind: {}", text(&a));
    let a = post_form(
        &env,
        "/console/groups/nope/command",
        &ann,
        &[("csrf", &token), ("kind", "reload")],
    );
    assert_eq!(a.status, 404, "{}", text(&a));
    let vic = login(&env, "vic");
    let vic_token = csrf(&text(&get(&env, "/console/", &vic)));
    let html = text(&get(&env, "/console/groups/lab", &vic));
    assert!(
        !html.contains("/console/groups/lab/command"),
        "no form for a viewer"
    );
    let a = post_form(
        &env,
        "/console/groups/lab/command",
        &vic,
        &[("csrf", &vic_token), ("kind", "reload")],
    );
    assert_eq!(a.status, 403);
    assert_eq!(env.pg.psql("SELECT count(*) FROM commands"), "1");
    assert_eq!(
        env.pg.psql("SELECT count(*) FROM audit_log WHERE action = 'console.denied' AND target = 'command to group lab'"),
        "1"
    );
}

/// A Sigma rule that loads.
const RULE: &str = "title: Failed logon\nid: 5f2a2b3c-1d4e-4f60-8a9b-0c1d2e3f4a5b\nlogsource: { product: windows, service: security }\ndetection:\n  sel: { EventID: 4625 }\n  condition: sel\nlevel: high\n";

fn with_rules() -> String {
    format!(
        "{GOOD}\n[[rules]]\nname = \"lab\"\nsigma = \"rules/\"\nplaceholders_file = \"vars.yml\"\nactions = [\"siem\"]\n"
    )
}

/// The group `lab` and these users (name, role); a database connection.
fn lab_with_users(env: &Env, users: &[(&str, &str)]) -> tokio_postgres::Client {
    let db = env.db();
    env.rt.block_on(async {
        use watchpost_server::admin;
        admin::group_add(&db, "test", "lab", "").await.unwrap();
        for (u, r) in users {
            admin::user_add(&db, "test", u, r, Some(PASSWORD))
                .await
                .unwrap();
        }
    });
    db
}

/// Publishes (as the CLI does) group.toml with its rules and two files: the rule file
/// `rules/failed_logon.yml` holding `rule`, and the placeholder file `vars.yml`.
fn publish_with_rules(env: &Env, db: &tokio_postgres::Client, rule: &str) {
    let files = [
        ("rules/failed_logon.yml".to_owned(), rule.to_owned()),
        ("vars.yml".to_owned(), "vars:\n  Admins: root\n".to_owned()),
    ]
    .into_iter()
    .collect();
    env.rt
        .block_on(watchpost_server::control::config_publish(
            db,
            "cli",
            "lab",
            &with_rules(),
            &files,
            "",
            &[],
        ))
        .unwrap();
}

/// A version's file as stored.
fn stored_file(env: &Env, version: i32, name: &str) -> String {
    env.pg.psql(&format!(
        "SELECT files ->> '{name}' FROM config_versions WHERE version = {version}"
    ))
}

#[test]
fn rule_and_placeholder_files_are_viewed_edited_added_and_removed_in_the_console() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let Some(env) = Env::with_console() else {
        return;
    };
    let db = lab_with_users(&env, &[("ada", "admin"), ("vic", "viewer")]);
    publish_with_rules(&env, &db, RULE);
    let admin = login(&env, "ada");
    let token = csrf(&text(&get(&env, "/console/", &admin)));
    let versions = || env.pg.psql("SELECT count(*) FROM config_versions");
    let files_form = |fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(fields);
        post_form(&env, "/console/groups/lab/files", &admin, &all)
    };

    // The group page lists version 1's files, each with its page; the admin may add one.
    let html = text(&get(&env, "/console/groups/lab", &admin));
    let page = "/console/groups/lab/versions/1/files/rules/failed_logon.yml";
    assert!(html.contains(&format!("href=\"{page}\"")), "{html}");
    assert!(html.contains("Remove and publish") && html.contains("Add a file"));
    let a = get(&env, page, &admin);
    assert_eq!(a.status, 200);
    let html = text(&a);
    assert!(
        html.contains("<td class=\"code\">title: Failed logon</td>"),
        "{html}"
    );
    assert!(html.contains("textarea id=\"content\""), "{html}");
    assert_eq!(
        get(
            &env,
            "/console/groups/lab/versions/1/files/rules/nope.yml",
            &admin
        )
        .status,
        404
    );
    assert_eq!(
        get(
            &env,
            "/console/groups/lab/versions/7/files/vars.yml",
            &admin
        )
        .status,
        404
    );

    // A viewer reads the file but gets no editor; a hand-made change is refused, audited.
    let viewer = login(&env, "vic");
    let html = text(&get(&env, page, &viewer));
    assert!(html.contains("title: Failed logon") && !html.contains("form class=\"publish"));
    let vt = csrf(&text(&get(&env, "/console/", &viewer)));
    let a = post_form(
        &env,
        "/console/groups/lab/files",
        &viewer,
        &[
            ("csrf", &vt),
            ("op", "remove"),
            ("base", "1"),
            ("name", "vars.yml"),
        ],
    );
    assert_eq!(a.status, 403, "{}", text(&a));
    assert_eq!(
        env.pg.psql("SELECT count(*) FROM audit_log WHERE action = 'console.denied' AND target = 'files group lab'"),
        "1"
    );
    // Without the CSRF token: refused.
    let a = post_form(
        &env,
        "/console/groups/lab/files",
        &admin,
        &[("op", "remove"), ("base", "1"), ("name", "vars.yml")],
    );
    assert_eq!(a.status, 403);
    assert_eq!(versions(), "1");

    // An edit that breaks the rule: refused, the reason at the file and its line, the
    // text kept in the editor, nothing stored.
    let broken = RULE.replace("  condition: sel\n", "  condition: sel\n  - oops\n");
    let save_rule = |content: &str, comment: &str| {
        files_form(&[
            ("op", "save"),
            ("base", "1"),
            ("name", "rules/failed_logon.yml"),
            ("content", content),
            ("comment", comment),
        ])
    };
    let a = save_rule(&broken, "<i>broken</i>");
    assert_eq!(a.status, 422, "{}", text(&a));
    let html = text(&a);
    assert!(
        html.contains("This file does not load; nothing was published"),
        "{html}"
    );
    assert!(
        html.contains("not loaded: rules/failed_logon.yml: YAML"),
        "{html}"
    );
    assert!(
        html.contains("<tr id=\"L7\" class=\"bad\">"),
        "the YAML error's line: {html}"
    );
    assert!(html.contains("  - oops"), "{html}");
    assert!(html.contains("&lt;i&gt;broken&lt;/i&gt;") && !html.contains("<i>broken</i>"));
    assert_eq!(versions(), "1");

    // A good edit (as a browser sends it, CR LF): version 2, stored with LF, the other
    // file and group.toml as they were.
    let edited = RULE.replace("4625", "4624");
    let a = save_rule(&edited.replace('\n', "\r\n"), "successful logons");
    assert_eq!(a.status, 303, "{}", text(&a));
    assert_eq!(
        a.header("location"),
        Some("/console/groups/lab?published=2&warnings=0")
    );
    assert_eq!(
        stored_file(&env, 2, "rules/failed_logon.yml"),
        edited.trim_end()
    );
    assert_eq!(
        stored_file(&env, 2, "vars.yml"),
        stored_file(&env, 1, "vars.yml")
    );
    assert_eq!(
        env.pg
            .psql("SELECT count(DISTINCT config) FROM config_versions"),
        "1"
    );
    assert_eq!(
        env.pg
            .psql("SELECT created_by || ' ' || comment FROM config_versions WHERE version = 2"),
        "ada successful logons"
    );

    // Adding: a rule that loads is published (comment made from the change); one that
    // does not is refused at its file; a name taken or not allowed is a 400.
    let second = RULE
        .replace("Failed logon", "Explicit logon")
        .replace("4625", "4648")
        .replace(
            "5f2a2b3c-1d4e-4f60-8a9b-0c1d2e3f4a5b",
            "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        );
    let a = files_form(&[
        ("op", "add"),
        ("base", "2"),
        ("name", "rules/second.yml"),
        ("content", &second),
    ]);
    assert_eq!(a.status, 303, "{}", text(&a));
    assert_eq!(
        env.pg
            .psql("SELECT comment FROM config_versions WHERE version = 3"),
        "rules/second.yml added"
    );
    let a = files_form(&[
        ("op", "add"),
        ("base", "3"),
        ("name", "rules/third.yml"),
        (
            "content",
            "title: no detection\nlogsource: { product: windows, service: security }\n",
        ),
    ]);
    assert_eq!(a.status, 422, "{}", text(&a));
    let html = text(&a);
    assert!(html.contains("not loaded: rules/third.yml"), "{html}");
    assert!(
        html.contains("value=\"rules/third.yml\""),
        "the name stays: {html}"
    );
    for (name, why) in [
        ("rules/second.yml", "already has"),
        ("../x.yml", "file name"),
        ("", "file name"),
    ] {
        let a = files_form(&[
            ("op", "add"),
            ("base", "3"),
            ("name", name),
            ("content", RULE),
        ]);
        assert_eq!(a.status, 400, "{name}");
        assert!(text(&a).contains(why), "{name}: {}", text(&a));
    }
    assert_eq!(
        files_form(&[
            ("op", "save"),
            ("base", "3"),
            ("name", "rules/nope.yml"),
            ("content", RULE)
        ])
        .status,
        400
    );
    assert_eq!(
        files_form(&[
            ("op", "save"),
            ("base", "x"),
            ("name", "vars.yml"),
            ("content", RULE)
        ])
        .status,
        400
    );
    assert_eq!(
        files_form(&[
            ("op", "save"),
            ("base", "9"),
            ("name", "vars.yml"),
            ("content", RULE)
        ])
        .status,
        404
    );
    assert_eq!(
        files_form(&[("op", "rename"), ("base", "3"), ("name", "vars.yml")]).status,
        400
    );
    assert_eq!(versions(), "3");

    // Removing the placeholder file group.toml reads: refused, shown at group.toml's line.
    let a = files_form(&[("op", "remove"), ("base", "3"), ("name", "vars.yml")]);
    assert_eq!(a.status, 422, "{}", text(&a));
    let html = text(&a);
    assert!(html.contains("nothing was published"), "{html}");
    assert!(
        html.contains("vars.yml") && html.contains("class=\"bad\""),
        "{html}"
    );
    // Removing the second rule: version 4.
    let a = files_form(&[
        ("op", "remove"),
        ("base", "3"),
        ("name", "rules/second.yml"),
    ]);
    assert_eq!(a.status, 303, "{}", text(&a));
    assert_eq!(stored_file(&env, 4, "rules/second.yml"), "");
    assert_eq!(versions(), "4");

    // The differences cover the files: the changed line, a file added, one removed.
    let html = text(&get(&env, "/console/groups/lab/diff?from=1&to=2", &admin));
    assert!(
        html.contains("id=\"file-rules%2Ffailed_logon.yml\""),
        "{html}"
    );
    assert!(html.contains("(changed, +1 −1)"), "{html}");
    assert!(
        html.contains("<td class=\"code\">  sel: { EventID: 4625 }</td>"),
        "{html}"
    );
    assert!(
        html.contains("<td class=\"code\">  sel: { EventID: 4624 }</td>"),
        "{html}"
    );
    assert!(html.contains("lines in <code>group.toml</code>"));
    let html = text(&get(&env, "/console/groups/lab/diff?from=2&to=4", &admin));
    assert!(html.contains("the files are the same"), "{html}");
    let html = text(&get(&env, "/console/groups/lab/diff?from=3&to=4", &admin));
    assert!(
        html.contains("rules/second.yml</code></a> (removed, +0 −7)"),
        "{html}"
    );
    let html = text(&get(&env, "/console/groups/lab/diff?from=1&to=3", &admin));
    assert!(
        html.contains("rules/second.yml</code></a> (added, +7 −0)"),
        "{html}"
    );
    // The version page links its files.
    let html = text(&get(&env, "/console/groups/lab/versions/3", &admin));
    assert!(
        html.contains("href=\"/console/groups/lab/versions/3/files/rules/second.yml\""),
        "{html}"
    );
    env.stop();
}

#[test]
fn publications_take_what_a_version_may_hold_and_refuse_more_with_413() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let Some(env) = Env::with_console() else {
        return;
    };
    let db = lab_with_users(&env, &[("ada", "admin")]);
    let admin = login(&env, "ada");
    let token = csrf(&text(&get(&env, "/console/", &admin)));
    // A configuration of 300 KiB (comment lines: a large text, well over the 64 KiB
    // of other forms) is published.
    let padding: String = (0..6000)
        .map(|i| format!("# {i:05} a long explanation of what this group's hosts are for\n"))
        .collect();
    let big = format!("{padding}{}", with_rules());
    assert!(big.len() > 300 << 10);
    let a = post_form(
        &env,
        "/console/groups/lab/publish",
        &admin,
        &[
            ("csrf", &token),
            ("config", &with_rules()),
            ("comment", "small"),
        ],
    );
    // Refused: the rule folder is missing (no files yet); then a big rule set.
    assert_eq!(a.status, 422, "{}", text(&a));
    let mut rules = String::new();
    for i in 0..400 {
        rules.push_str(&format!("# {i:04} {}\n", "x".repeat(4000)));
    }
    rules.push_str(RULE);
    publish_with_rules(&env, &db, &rules);
    let a = post_form(
        &env,
        "/console/groups/lab/publish",
        &admin,
        &[
            ("csrf", &token),
            ("base", "1"),
            ("config", &big),
            ("comment", "big"),
        ],
    );
    assert_eq!(a.status, 303, "{}", text(&a));
    assert_eq!(
        env.pg
            .psql("SELECT length(config) FROM config_versions WHERE version = 2"),
        big.len().to_string()
    );
    // A rule file of 1.6 MB edited in the console.
    let a = post_form(
        &env,
        "/console/groups/lab/files",
        &admin,
        &[
            ("csrf", &token),
            ("op", "save"),
            ("base", "2"),
            ("name", "rules/failed_logon.yml"),
            ("content", &rules.replace("4625", "4624")),
        ],
    );
    assert_eq!(a.status, 303, "{}", text(&a));
    assert_eq!(env.pg.psql("SELECT count(*) FROM config_versions"), "3");

    // group.toml over what a version holds: 413 saying so.
    let huge = format!(
        "{}{}",
        "#".repeat(watchpost_fleet_protocol::MAX_CONFIG_BYTES),
        GOOD
    );
    let a = post_form(
        &env,
        "/console/groups/lab/publish",
        &admin,
        &[("csrf", &token), ("base", "3"), ("config", &huge)],
    );
    assert_eq!(a.status, 413, "{}", text(&a));
    assert!(
        text(&a).contains("a version holds at most 1 MiB of it"),
        "{}",
        text(&a)
    );

    // A body over the publication limit: refused from its declared length, unread.
    let over = watchpost_console::http::MAX_PUBLISH_BODY + 1;
    let a = common::raw(
        env.addr,
        format!(
            "POST /console/groups/lab/publish HTTP/1.1\r\nHost: {}\r\nCookie: {admin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {over}\r\nConnection: close\r\n\r\ncsrf={token}",
            env.addr
        )
        .as_bytes(),
    );
    assert_eq!(a.status, 413, "{}", text(&a));
    assert!(
        text(&a).contains("The publication is larger than the console takes: at most 51.1 MiB"),
        "{}",
        text(&a)
    );
    // Without a session only 64 KiB are read, also from a chunked body of no declared
    // length; other forms keep 64 KiB.
    let chunk = "a".repeat(70 << 10);
    for (path, cookie) in [
        ("/console/groups/lab/publish", ""),
        ("/console/ack", admin.as_str()),
    ] {
        let a = common::raw(
            env.addr,
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
                env.addr,
                chunk.len()
            )
            .as_bytes(),
        );
        assert_eq!(a.status, 413, "{path}: {}", text(&a));
        assert!(text(&a).contains("64 KiB"), "{}", text(&a));
    }
    // Hostile lengths: 4xx, never 5xx.
    for length in ["99999999999999999999999", "-1", "12, 13", "abc"] {
        let a = common::raw(
            env.addr,
            format!(
                "POST /console/groups/lab/publish HTTP/1.1\r\nHost: {}\r\nCookie: {admin}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
                env.addr
            )
            .as_bytes(),
        );
        assert!((400..500).contains(&a.status), "{length}: {}", a.status);
    }
    assert_eq!(env.pg.psql("SELECT count(*) FROM config_versions"), "3");
    env.stop();
}
