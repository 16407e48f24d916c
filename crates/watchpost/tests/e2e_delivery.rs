//! Delivery survives failures (issue 5): syslog over TLS to a real rsyslog (and a wrong CA
//! refused), a receiver outage of 30 s and a `kill -9` of the daemon with jobs queued (every
//! event arrives once, in order), a receiver that never answers (retried; other actions
//! unaffected), an unusable queue directory (memory fallback, reported), throttle/dedupe
//! across a restart, a `run` script retried on exit 75.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)] // rsyslogd, openssl, a shell script as the `run` program, SIGTERM

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn watchpost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(args)
        .output()
        .expect("run watchpost")
}

/// `GET /metrics` over a plain TCP stream: the body.
fn scrape(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon config: a JSON-lines source, one filter firing `actions` on event 4625.
fn config(d: &Path, actions: &[&str], action_tables: &str) -> PathBuf {
    let cfg = d.join("watchpost.toml");
    let list: Vec<String> = actions.iter().map(|a| format!("\"{a}\"")).collect();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{d}/state'
checkpoint_interval_ms = 100
log_fired = false

[[source]]
name = "security"
type = "jsonl"
path = '{d}/logs/*.jsonl'
start_at = "beginning"

[[filter]]
name = "failed-logon"
match = {{ event_id = "4625" }}
actions = [{list}]

{action_tables}
"#,
            d = d.display(),
            list = list.join(", "),
        ),
    )
    .unwrap();
    cfg
}

fn events(d: &Path, from: u32, to: u32, user: &str) {
    let mut text = String::new();
    for i in from..=to {
        text.push_str(&format!(
            "{{\"event_id\":\"4625\",\"seq\":{i},\"user\":\"{user}\"}}\n"
        ));
    }
    append(&d.join("logs/security.jsonl"), text.as_bytes());
}

/// A test CA and a server certificate for 127.0.0.1 / localhost, made with openssl.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// A client certificate signed by `ca` (for a receiver that wants one).
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pki(dir: &Path) -> Pki {
    let p = dir.join("pki");
    std::fs::create_dir_all(&p).unwrap();
    for ca in ["ca", "other-ca"] {
        openssl(
            &p,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=watchpost test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    openssl(
        &p,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        p.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &p,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    openssl(
        &p,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=watchpost-agent",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
        ],
    );
    std::fs::write(
        p.join("client.cnf"),
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &p,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "client.cnf",
            "-out",
            "client.pem",
        ],
    );
    Pki {
        client_cert: p.join("client.pem"),
        client_key: p.join("client.key"),
        ca: p.join("ca.pem"),
        other_ca: p.join("other-ca.pem"),
        cert: p.join("server.pem"),
        key: p.join("server.key"),
    }
}

/// rsyslogd receiving over TCP (plain or TLS) on a loopback port, writing `%msg%` lines.
struct Receiver {
    child: Option<Child>,
    dir: PathBuf,
    conf: PathBuf,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, port: u16, tls: Option<&Pki>) -> Receiver {
        Self::start_auth(dir, port, tls, "anon")
    }

    /// `auth`: rsyslog's `streamDriver.authMode` (`anon`, or `x509/certvalid` to demand a
    /// client certificate signed by the CA).
    fn start_auth(dir: &Path, port: u16, tls: Option<&Pki>, auth: &str) -> Receiver {
        let rsyslogd = Path::new("/usr/sbin/rsyslogd");
        assert!(
            rsyslogd.exists(),
            "rsyslogd is not installed: apt-get install rsyslog rsyslog-gnutls"
        );
        let dir = dir.join(format!("rsyslog-{port}"));
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.join("received.log");
        let (global, module) = match tls {
            Some(p) => (
                format!(
                    "global(workDirectory=\"{}\" defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\")",
                    work.display(),
                    p.ca.display(),
                    p.cert.display(),
                    p.key.display()
                ),
                format!(
                    "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"{auth}\")"
                ),
            ),
            None => (
                format!("global(workDirectory=\"{}\")", work.display()),
                "module(load=\"imtcp\")".to_owned(),
            ),
        };
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "{global}\n{module}\ntemplate(name=\"wp\" type=\"string\" string=\"%msg%\\n\")\n\
                 ruleset(name=\"in\") {{ action(type=\"omfile\" file=\"{out}\" template=\"wp\") }}\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\")\n",
                out = out.display()
            ),
        )
        .unwrap();
        let mut r = Receiver {
            child: None,
            dir,
            conf,
            port,
            out,
        };
        r.up();
        r
    }

    fn up(&mut self) {
        let child = Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-f"])
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        let port = self.port;
        wait_for("rsyslog to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        });
    }

    /// Stops rsyslogd (SIGTERM: it writes out what it received).
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            wait_for("rsyslog to stop", Duration::from_secs(20), || {
                c.try_wait().ok().flatten()
            });
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn wait_lines(&self, n: usize, limit: Duration) -> Vec<String> {
        wait_for(&format!("{n} lines at rsyslog"), limit, || {
            let l = self.lines();
            (l.len() >= n).then_some(l)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn seqs(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .map(|l| {
            l.trim()
                .rsplit('|')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
        })
        .collect()
}

fn syslog_action(name: &str, target: &str, extra: &str) -> String {
    format!(
        r#"[[action]]
name = "{name}"
type = "syslog"
target = "{target}"
message = "{{{{ filter }}}}|{{{{ seq }}}}"
connect_timeout_secs = 1
write_timeout_secs = 1
retry = {{ initial_backoff = "100ms", max_backoff = "1s" }}
{extra}
"#
    )
}

#[test]
fn syslog_over_tls_reaches_rsyslog_and_a_wrong_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = pki(d);
    let port = free_tcp_port();
    let rsyslog = Receiver::start(d, port, Some(&pki));
    let mtls_port = free_tcp_port();
    let mtls = Receiver::start_auth(d, mtls_port, Some(&pki), "x509/certvalid");
    let tables = format!(
        "{}\n{}\n{}",
        syslog_action(
            "siem",
            &format!("tls://127.0.0.1:{port}"),
            &format!("tls = {{ ca_file = '{}' }}", pki.ca.display())
        ),
        syslog_action(
            "wrong-ca",
            &format!("tls://127.0.0.1:{port}"),
            &format!("tls = {{ ca_file = '{}' }}", pki.other_ca.display())
        ),
        syslog_action(
            "mutual",
            &format!("tls://localhost:{mtls_port}"),
            &format!(
                "tls = {{ ca_file = '{}', cert_file = '{}', key_file = '{}' }}",
                pki.ca.display(),
                pki.client_cert.display(),
                pki.client_key.display()
            )
        ),
    );
    let cfg = config(d, &["siem", "wrong-ca", "mutual"], &tables);
    let check = watchpost(&["check-config", "-c", cfg.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
    let wp = Watchpost::start(&cfg, &d.join("watchpost.log"));
    events(d, 1, 5, "ann");
    let lines = rsyslog.wait_lines(5, Duration::from_secs(20));
    assert_eq!(seqs(&lines), [1, 2, 3, 4, 5]);
    assert!(lines[0].starts_with("failed-logon|"), "{lines:?}");
    // With a client certificate, to a receiver that demands one (and a host name).
    assert_eq!(
        seqs(&mtls.wait_lines(5, Duration::from_secs(20))),
        [1, 2, 3, 4, 5]
    );
    let log = wait_for(
        "the wrong CA's failure in the log",
        Duration::from_secs(10),
        || {
            let t = wp.log_text();
            t.contains("wrong-ca").then_some(t)
        },
    );
    assert!(
        log.contains("TLS handshake failed") && log.contains("UnknownIssuer"),
        "{log}"
    );
    // The store shows each attempt: the refused action's second one too.
    let text = wait_for(
        "a second attempt in the store",
        Duration::from_secs(10),
        || {
            let out = watchpost(&["events", "-c", cfg.to_str().unwrap(), "--limit", "100"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("action wrong-ca for filter failed-logon (attempt 2): FAILED")
                .then_some(text)
        },
    );
    assert!(
        text.contains("action siem for filter failed-logon (attempt 1): ok"),
        "{text}"
    );
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(wp.terminate());
    // What the wrong-CA action could not deliver waits on disk.
    let q = d.join("state/queue/wrong-ca");
    assert!(q.is_dir(), "queue directory of wrong-ca");
}

/// The only long test (~40 s): the receiver is down for 30 s while events keep coming.
#[test]
fn an_outage_of_the_receiver_loses_nothing_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_tcp_port();
    let mut rsyslog = Receiver::start(d, port, None);
    let tables = syslog_action("siem", &format!("tcp://127.0.0.1:{port}"), "");
    let cfg = config(d, &["siem"], &tables);
    let wp = Watchpost::start(&cfg, &d.join("watchpost.log"));
    events(d, 1, 10, "ann");
    rsyslog.wait_lines(10, Duration::from_secs(20));
    rsyslog.down();
    let outage = Instant::now();
    // Events trickle in during the outage.
    let mut next = 11;
    while outage.elapsed() < Duration::from_secs(30) {
        events(d, next, next + 4, "ann");
        next += 5;
        std::thread::sleep(Duration::from_secs(3));
    }
    rsyslog.up();
    let last = next - 1;
    let lines = rsyslog.wait_lines(last as usize, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let lines = if rsyslog.lines().len() > lines.len() {
        rsyslog.lines()
    } else {
        lines
    };
    assert_eq!(
        seqs(&lines),
        (1..=last).collect::<Vec<_>>(),
        "exactly once, in order"
    );
    assert!(wp.terminate());
}

#[test]
fn jobs_queued_at_a_kill_9_are_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_tcp_port();
    let mut rsyslog = Receiver::start(d, port, None);
    rsyslog.down();
    let tables = syslog_action("siem", &format!("tcp://127.0.0.1:{port}"), "");
    let cfg = config(d, &["siem"], &tables);
    let log = d.join("watchpost.log");
    let wp = Watchpost::start(&cfg, &log);
    events(d, 1, 20, "ann");
    // The receiver is down: the jobs wait in the queue on disk.
    let queue = d.join("state/queue/siem");
    wait_for("jobs on disk", Duration::from_secs(10), || {
        let n: u64 = std::fs::read_dir(&queue)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        (n > 0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1)); // all 20 read, queued and checkpointed
    wp.kill9();
    rsyslog.up();
    let wp = Watchpost::start(&cfg, &log);
    let lines = rsyslog.wait_lines(20, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let lines = if rsyslog.lines().len() > lines.len() {
        rsyslog.lines()
    } else {
        lines
    };
    // A crash may repeat records read since the last checkpoint (100 ms), never lose one;
    // first arrivals are in order.
    let got = seqs(&lines);
    let mut first = Vec::new();
    for s in &got {
        if !first.contains(s) {
            first.push(*s);
        }
    }
    assert_eq!(first, (1..=20).collect::<Vec<_>>(), "{got:?}");
    assert!(wp.terminate());
}

#[test]
fn a_receiver_that_never_answers_is_retried_and_holds_up_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Accepts (the kernel does) and never reads or answers: the TLS handshake times out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let tables = format!(
        "{}\n[[action]]\nname = \"file\"\ntype = \"jsonl_file\"\npath = '{}/out.jsonl'\n",
        syslog_action(
            "stuck",
            &format!("tls://127.0.0.1:{port}"),
            "tls = { verify = false }"
        ),
        d.display()
    );
    let cfg = config(d, &["stuck", "file"], &tables);
    let wp = Watchpost::start(&cfg, &d.join("watchpost.log"));
    let start = Instant::now();
    events(d, 1, 50, "ann");
    wait_for(
        "the file action to write all",
        Duration::from_secs(10),
        || {
            let t = std::fs::read_to_string(d.join("out.jsonl")).unwrap_or_default();
            (t.lines().count() == 50).then_some(())
        },
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    wait_for(
        "a retried handshake timeout",
        Duration::from_secs(10),
        || {
            let t = wp.log_text();
            (t.contains("TLS handshake timed out") && t.contains("will retry")).then_some(())
        },
    );
    assert!(wp.terminate());
    drop(silent);
}

#[test]
fn an_unusable_queue_directory_falls_back_to_memory_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_tcp_port();
    let rsyslog = Receiver::start(d, port, None);
    // `queue` is a file: the directory cannot be made (also as root).
    std::fs::create_dir_all(d.join("state")).unwrap();
    std::fs::write(d.join("state/queue"), b"").unwrap();
    let tables = syslog_action("siem", &format!("tcp://127.0.0.1:{port}"), "");
    let cfg = config(d, &["siem"], &tables);
    let metrics = free_tcp_port();
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[agent]\n",
        &format!("[agent]\nmetrics = \"{metrics}\"\n"),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let check = watchpost(&["check-config", "-c", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&check.stderr).to_string()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "a warning only: {text}");
    assert!(text.contains("kept in memory only"), "{text}");
    let wp = Watchpost::start(&cfg, &d.join("watchpost.log"));
    events(d, 1, 3, "ann");
    assert_eq!(
        seqs(&rsyslog.wait_lines(3, Duration::from_secs(10))),
        [1, 2, 3]
    );
    let log = wp.log_text();
    assert_eq!(
        log.matches("durable queue unavailable").count(),
        1,
        "logged once: {log}"
    );
    let body = scrape(metrics);
    for line in [
        "watchpost_action_queue_error{action=\"siem\"} 1",
        "watchpost_action_attempts_total{action=\"siem\"} 3",
        "watchpost_action_retries_total{action=\"siem\"} 0",
        "watchpost_action_durable_queue_depth{action=\"siem\"} 0",
        "watchpost_action_jobs_total{action=\"siem\",outcome=\"ok\"} 3",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} in {body}");
    }
    assert!(wp.terminate());
}

#[test]
fn throttle_and_dedupe_hold_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tables = format!(
        r#"[[action]]
name = "once"
type = "jsonl_file"
path = '{d}/once.jsonl'
dedupe = {{ key = "{{{{ user }}}}", within = "1h" }}

[[action]]
name = "two"
type = "jsonl_file"
path = '{d}/two.jsonl'
throttle = {{ key = "{{{{ host }}}}", count = 2, per = "1h" }}
"#,
        d = d.display()
    );
    let cfg = config(d, &["once", "two"], &tables);
    let log = d.join("watchpost.log");
    let count = |f: &str| {
        std::fs::read_to_string(d.join(f))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let wp = Watchpost::start(&cfg, &log);
    events(d, 1, 3, "ann");
    wait_for("two lines", Duration::from_secs(10), || {
        (count("two.jsonl") == 2 && count("once.jsonl") == 1).then_some(())
    });
    assert!(wp.terminate());
    let wp = Watchpost::start(&cfg, &log);
    events(d, 4, 5, "ann");
    events(d, 6, 6, "bob");
    wait_for("bob once", Duration::from_secs(10), || {
        (count("once.jsonl") == 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count("two.jsonl"), 2, "the throttle window carried over");
    assert!(wp.terminate());
    let out = watchpost(&["events", "-c", cfg.to_str().unwrap(), "--limit", "100"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("action two for filter failed-logon: not sent (throttled)"),
        "{text}"
    );
}

#[test]
fn a_run_script_is_retried_on_exit_75() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = d.join("flaky.sh");
    // Fails with 75 (EX_TEMPFAIL) twice per event, then records it.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat {d}/tries-$1 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > {d}/tries-$1\n\
             [ $n -lt 3 ] && exit 75\necho $1 >> {d}/done\n",
            d = d.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tables = format!(
        r#"[[action]]
name = "flaky"
type = "run"
program = '{}'
args = ["{{{{ seq }}}}"]
retry_exit_codes = [75]
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
"#,
        script.display()
    );
    let cfg = config(d, &["flaky"], &tables);
    let wp = Watchpost::start(&cfg, &d.join("watchpost.log"));
    events(d, 1, 3, "ann");
    let done = wait_for("three runs done", Duration::from_secs(20), || {
        let t = std::fs::read_to_string(d.join("done")).unwrap_or_default();
        (t.lines().count() == 3).then_some(t)
    });
    assert_eq!(done, "1\n2\n3\n", "in order");
    assert!(wp.terminate());
    let out = watchpost(&["events", "-c", cfg.to_str().unwrap(), "--limit", "100"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("action flaky for filter failed-logon (attempt 1): FAILED")
            && text.contains("action flaky for filter failed-logon (attempt 3): ok"),
        "{text}"
    );
}
