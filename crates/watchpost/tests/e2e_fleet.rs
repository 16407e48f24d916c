//! The fleet end to end with real parts: a private PostgreSQL, `watchpost-server` over TLS
//! on 127.0.0.1 (in a child process, so it can be killed with SIGKILL), and two real
//! `watchpost` agents following SEP AV logs.
//!
//! * a detection on agent A reaches the server with its anomaly reason and the action's
//!   outcome, and the query `isanomaly:true host:A` finds it;
//! * A offline (its connection goes through a proxy the test cuts) while detections
//!   accumulate, then back: every one arrives, once, in order;
//! * the server killed mid-shipping and started again: nothing lost, nothing doubled
//!   (the server holds exactly what each agent's store holds);
//! * a revoked agent is refused and says so in its log;
//! * heartbeats keep their connection open from one to the next, and an agent's further
//!   connections resume its TLS session (the server's metrics count the handshakes).

#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use watchpost_pgtest::{Cluster, Options};

/// Set in the child that runs the server: the configuration file.
const SERVE_ENV: &str = "WATCHPOST_E2E_FLEET_SERVE";

/// The server, when this test binary is started as its child (see `Server::start`).
#[test]
#[ignore = "the fleet server of e2e_fleet, run in a child process of that test"]
fn fleet_server_child() {
    let Ok(path) = std::env::var(SERVE_ENV) else {
        return;
    };
    let (config, _) =
        watchpost_server::config::load(Path::new(&path)).expect("server configuration");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let running = watchpost_server::start(config)
            .await
            .expect("server starts");
        eprintln!("fleet server listening on {}", running.addr);
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

struct Server {
    child: Child,
    config: PathBuf,
    log: PathBuf,
}

impl Server {
    fn start(config: &Path, log: &Path, port: u16) -> Server {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "fleet_server_child", "--nocapture"])
            .env(SERVE_ENV, config)
            .env("WATCHPOST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        wait_for("the fleet server", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Server {
            child,
            config: config.to_owned(),
            log: log.to_owned(),
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A TCP proxy to the server that the test can cut (agent A "offline"): refusing new
/// connections and breaking those open (the agent keeps its connection between batches).
struct Proxy {
    port: u16,
    online: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(to: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let online = Arc::new(AtomicBool::new(true));
        let on = online.clone();
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !on.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                kept.lock().unwrap().push(client.try_clone().unwrap());
                if !on.load(Ordering::SeqCst) {
                    // Cut while this one was being made.
                    let _ = client.shutdown(std::net::Shutdown::Both);
                }
                for (mut a, mut b) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = a.read(&mut buf) {
                            if n == 0 || b.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = b.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, online, open }
    }

    /// Cuts the link (or restores it).
    fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::SeqCst);
        if !online {
            for c in self.open.lock().unwrap().drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn agent_config(dir: &Path, name: &str, server: &str, ca: &Path, secret: &str) -> PathBuf {
    let config = dir.join(format!("{name}.toml"));
    std::fs::create_dir_all(dir.join(format!("{name}-logs"))).unwrap();
    // Antivirus definitions, written now: a `definitions_age` check reads their age.
    std::fs::write(dir.join(format!("{name}-defs.dat")), "definitions").unwrap();
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
state_dir = "{state}"
host = "{name}"
checkpoint_interval_ms = 200

[[source]]
name = "sep-av"
type = "sep_av_log"
path = "{logs}/*.Log"
start_at = "beginning"

[[filter]]
name = "new-risk"
match = {{ source = "sep-av", event_code = 5 }}
anomaly = {{ key = [], value = ["risk_name"], learning = "0s" }}

[[filter]]
name = "virus-found"
match = {{ source = "sep-av", event_code = 5 }}
actions = ["log"]
require_ack = true

[[action]]
name = "log"
type = "jsonl_file"
path = "{state}/detections.jsonl"

[[check]]
name = "definitions"
type = "definitions_age"
max_age = "3d"
file = "{defs}"

[fleet]
server = "{server}"
ca_file = "{ca}"
enroll_secret = "{secret}"
host_id = "host-{name}"
batch = 40
"#,
            state = dir.join(format!("{name}-state")).display(),
            logs = dir.join(format!("{name}-logs")).display(),
            defs = dir.join(format!("{name}-defs.dat")).display(),
            ca = ca.display(),
        ),
    )
    .unwrap();
    config
}

fn detect(dir: &Path, agent: &str, from: usize, n: usize) {
    let mut text = String::new();
    for i in from..from + n {
        text.push_str(&av_virus_found(
            agent,
            &format!("Risk.{i}"),
            &format!("C:\\temp\\f{i}.exe"),
        ));
        text.push_str("\r\n");
    }
    append(
        &dir.join(format!("{agent}-logs/05292019.Log")),
        text.as_bytes(),
    );
}

/// The server's connections accepted so far by TLS handshake: full, resumed, failed
/// (`watchpost_server_connections_accepted_total` on its metrics listener).
fn accepted(metrics_port: u16) -> [u64; 3] {
    let mut s = TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    ["full", "resumed", "failed"].map(|kind| {
        let key = format!("watchpost_server_connections_accepted_total{{tls=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} not in the metrics:\n{text}"))
    })
}

fn count(pg: &Cluster, agent: &str) -> i64 {
    pg.psql(&format!(
        "SELECT count(*) FROM events e JOIN agents a ON a.id = e.agent_id WHERE a.hostname = '{agent}'"
    ))
    .parse()
    .unwrap()
}

fn local_count(dir: &Path, agent: &str) -> i64 {
    let store =
        watchpost_store::Store::open_read_only(&dir.join(format!("{agent}-state/events.db")))
            .unwrap();
    store.counts().unwrap().0 as i64
}

#[test]
fn two_agents_ship_to_the_server_exactly_once_through_outages_and_kills() {
    let Some(pg) = Cluster::start_or_skip(Options::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CA and a certificate for 127.0.0.1.
    tls_for_loopback(d);
    let free_port = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let port = free_port();
    let metrics_port = free_port();
    let server_config = d.join("server.toml");
    std::fs::write(
        &server_config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nmetrics = \"127.0.0.1:{metrics_port}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\nheartbeat = \"2s\"\n[database]\nurl = \"{url}\"\n",
            cert = d.join("server.pem").display(),
            key = d.join("server.key").display(),
            url = pg.url()
        ),
    )
    .unwrap();
    let mut server = Server::start(&server_config, &d.join("server.log"), port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    });
    let secret = rt.block_on(async {
        watchpost_server::admin::group_add(&db, "e2e", "lab", "")
            .await
            .unwrap();
        watchpost_server::admin::secret_create(&db, "e2e", "lab", "s", None)
            .await
            .unwrap()
    });
    let proxy = Proxy::start(([127, 0, 0, 1], port).into());
    let ca = d.join("ca.pem");
    let config_a = agent_config(
        d,
        "A",
        &format!("https://127.0.0.1:{}", proxy.port),
        &ca,
        &secret,
    );
    let config_b = agent_config(d, "B", &format!("https://127.0.0.1:{port}"), &ca, &secret);
    // check-config accepts the [fleet] section and never prints the secret.
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["check-config", "-c"])
        .arg(&config_a)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&secret)
            && !String::from_utf8_lossy(&out.stdout).contains(&secret)
    );

    detect(d, "A", 0, 3);
    detect(d, "B", 100, 2);
    let a = Watchpost::start(&config_a, &d.join("A.log"));
    let b = Watchpost::start(&config_b, &d.join("B.log"));
    wait_for("both agents' detections", Duration::from_secs(60), || {
        (count(&pg, "A") == 3 && count(&pg, "B") == 2).then_some(())
    });
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("A-state/fleet.credential"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the credential is the agent's alone");
    }
    // The anomaly (a risk name not seen before) with its reason and the action's outcome.
    wait_for("the outcomes", Duration::from_secs(30), || {
        (pg.psql("SELECT count(*) FROM outcomes o JOIN agents a ON a.id = o.agent_id WHERE a.hostname = 'A' AND o.ok AND o.action = 'log'") == "3").then_some(())
    });
    // The heartbeat carries the definitions' age the check found, and the check's status
    // with its detail.
    wait_for(
        "A's heartbeat with the definitions' age",
        Duration::from_secs(30),
        || {
            let age = pg.psql(
                "SELECT heartbeat->>'definitions_age_hours' FROM agents WHERE hostname = 'A'",
            );
            age.parse::<f64>().ok().filter(|h| (0.0..1.0).contains(h))
        },
    );
    // Heartbeats every 2 s keep their connection: over at least four heartbeats of each
    // agent, hardly a connection is accepted (one made again at most, should a kept one
    // have been closed), where a connection per heartbeat would be eight. The agents'
    // connections after their first resumed its TLS session from a ticket.
    let uptime = |host: &str| {
        pg.psql(&format!(
            "SELECT heartbeat->>'uptime_secs' FROM agents WHERE hostname = '{host}'"
        ))
        .parse::<u64>()
        .unwrap_or(0)
    };
    let (a0, b0) = (uptime("A"), uptime("B"));
    let before = accepted(metrics_port);
    wait_for(
        "four heartbeats of each agent",
        Duration::from_secs(60),
        || (uptime("A") >= a0 + 8 && uptime("B") >= b0 + 8).then_some(()),
    );
    let after = accepted(metrics_port);
    let made: u64 = after.iter().sum::<u64>() - before.iter().sum::<u64>();
    assert!(
        made <= 2,
        "{made} connections accepted over eight heartbeats ({before:?} → {after:?}: full, resumed, failed)"
    );
    assert!(after[1] >= 1, "no TLS session resumed: {after:?}");
    let check = pg.psql(
        "SELECT status || '|' || detail FROM check_states s JOIN agents a ON a.id = s.agent_id WHERE a.hostname = 'A' AND s.name = 'definitions'",
    );
    assert!(
        check.starts_with("ok|definitions of ") && check.contains("days old"),
        "{check}"
    );
    let q = watchpost_server::events::parse_query("isanomaly:true host:A", None).unwrap();
    let found = rt
        .block_on(watchpost_server::events::find(&db, &q, 100))
        .unwrap();
    assert!(
        !found.is_empty(),
        "isanomaly:true host:A finds A's anomalies"
    );
    let e = &found[0];
    assert!(
        e.anomaly_why
            .as_deref()
            .is_some_and(|w| w.contains("new-risk")),
        "{:?}",
        e.anomaly_why
    );
    assert_eq!(e.outcomes[0].action, "log");
    assert!(e.needs_ack && e.filters.contains(&"virus-found".to_owned()));
    let mut shown = Vec::new();
    watchpost_server::events::print(&mut shown, e).unwrap();
    let shown = String::from_utf8(shown).unwrap();
    assert!(
        shown.contains("ANOMALY")
            && shown.contains("why: new-risk")
            && shown.contains("action log"),
        "{shown}"
    );

    // A offline while detections accumulate, then back.
    proxy.set_online(false);
    std::thread::sleep(Duration::from_secs(2));
    detect(d, "A", 3, 60);
    wait_for("A to store them", Duration::from_secs(30), || {
        (local_count(d, "A") == 63).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(&pg, "A"), 3, "A is offline");
    proxy.set_online(true);
    wait_for("A's catch-up", Duration::from_secs(120), || {
        (count(&pg, "A") == 63).then_some(())
    });
    // In order: in shipping order (the sequence numbers the server accepted one after
    // the other), the events follow the order the agent stored them in. (The server's
    // own `id`s are no witness: its sequence hands each connection a block of 1,000, so
    // two batches on two pooled connections get ids in either order.)
    assert_eq!(
        pg.psql("SELECT count(*) FROM (SELECT local_id, lag(local_id) OVER (PARTITION BY agent_id ORDER BY seq) AS prev FROM events) t WHERE prev >= local_id"),
        "0"
    );

    // The server killed while both ship, then started again.
    detect(d, "A", 1000, 300);
    detect(d, "B", 2000, 300);
    wait_for("shipping under way", Duration::from_secs(60), || {
        (count(&pg, "A") > 63 || count(&pg, "B") > 2).then_some(())
    });
    server.kill9();
    std::thread::sleep(Duration::from_secs(2));
    server = Server::start(&server.config.clone(), &server.log.clone(), port);
    wait_for(
        "everything after the kill",
        Duration::from_secs(180),
        || {
            (local_count(d, "A") == 363
                && local_count(d, "B") == 302
                && count(&pg, "A") == 363
                && count(&pg, "B") == 302)
                .then_some(())
        },
    );
    assert_eq!(
        pg.psql("SELECT count(*) - count(DISTINCT (agent_id, seq)) FROM events"),
        "0",
        "nothing doubled"
    );

    // B revoked: refused, and its log says so.
    rt.block_on(watchpost_server::admin::agent_revoke(
        &db,
        "e2e",
        "B",
        "decommissioned",
    ))
    .unwrap();
    detect(d, "B", 5000, 1);
    wait_for(
        "B's log to say it is refused",
        Duration::from_secs(60),
        || {
            let log = b.log_text();
            (log.contains("refuses this agent") && log.contains("decommissioned")).then_some(())
        },
    );
    assert_eq!(count(&pg, "B"), 302);
    assert!(a.terminate());
    assert!(b.terminate());
    drop(server);
}
