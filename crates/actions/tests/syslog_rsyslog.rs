//! Sends every syslog format over UDP and TCP (octet counting and LF) to a real rsyslog
//! and checks what rsyslog parsed out of each message.
//!
//! Needs `/usr/sbin/rsyslogd` (Debian: `apt-get install rsyslog`). Without it the test
//! fails with a message, unless `WATCHPOST_SKIP_RSYSLOG=1` is set.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)] // needs /usr/sbin/rsyslogd, a Linux daemon

mod common;

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{event, job, specs, wait_for};
use watchpost_actions::Dispatcher;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

struct Rsyslog {
    child: Child,
    dir: tempfile::TempDir,
    out: PathBuf,
    udp: u16,
    tcp: u16,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rsyslog_config(dir: &Path, out: &Path, udp: u16, tcp: u16) -> String {
    format!(
        r#"global(workDirectory="{dir}")
module(load="imudp")
module(load="imtcp")
template(name="fields" type="string"
         string="T=%timereported:::date-rfc3339%|H=%hostname%|A=%app-name%|SD=%structured-data%|M=%msg%\n")
ruleset(name="watchpost") {{
  action(type="omfile" file="{out}" template="fields")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="watchpost")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="watchpost")
"#,
        dir = dir.display(),
        out = out.display(),
    )
}

/// Starts rsyslog on free ports; `None` only when skipping was asked for.
fn start_rsyslog() -> Option<Rsyslog> {
    if !Path::new(RSYSLOGD).exists() {
        if std::env::var("WATCHPOST_SKIP_RSYSLOG").as_deref() == Ok("1") {
            eprintln!("skipping: {RSYSLOGD} is missing and WATCHPOST_SKIP_RSYSLOG=1");
            return None;
        }
        panic!(
            "{RSYSLOGD} is missing: install rsyslog (Debian: apt-get install -y rsyslog) \
             or set WATCHPOST_SKIP_RSYSLOG=1 to skip this test"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.log");
    let (udp, tcp) = (free_udp_port(), free_tcp_port());
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(&conf, rsyslog_config(dir.path(), &out, udp, tcp)).unwrap();
    let stderr = std::fs::File::create(dir.path().join("rsyslogd.stderr")).unwrap();
    let child = Command::new(RSYSLOGD)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.path().join("rsyslogd.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start rsyslogd");
    let r = Rsyslog {
        child,
        dir,
        out,
        udp,
        tcp,
    };
    let up = wait_for(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", r.tcp)).ok()
    });
    assert!(
        up.is_some(),
        "rsyslogd did not listen on tcp/{}: {}",
        r.tcp,
        r.stderr()
    );
    // UDP has no handshake: send probes until one arrives in the output file.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let seen = wait_for(Duration::from_secs(10), || {
        let _ = probe.send_to(b"<14>1 - probehost probe - - - ready", ("127.0.0.1", r.udp));
        r.lines().into_iter().find(|l| l.contains("A=probe|"))
    });
    assert!(
        seen.is_some(),
        "rsyslogd did not receive on udp/{}: {}",
        r.udp,
        r.stderr()
    );
    Some(r)
}

impl Rsyslog {
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.stderr")).unwrap_or_default()
    }

    /// The parsed fields of the line whose app-name is `app`, waiting up to 10 s.
    fn record(&self, app: &str) -> Record {
        let needle = format!("|A={app}|");
        let line = wait_for(Duration::from_secs(10), || {
            self.lines().into_iter().find(|l| l.contains(&needle))
        });
        let line = line.unwrap_or_else(|| {
            panic!(
                "no message from {app} arrived; got:\n{}\nrsyslogd: {}",
                self.lines().join("\n"),
                self.stderr()
            )
        });
        Record::parse(&line)
    }
}

#[derive(Debug)]
struct Record {
    time: String,
    host: String,
    sd: String,
    msg: String,
}

impl Record {
    fn parse(line: &str) -> Record {
        let field = |key: &str, next: Option<&str>| {
            let start = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
            let end = next.map_or(line.len(), |n| {
                line[start..].find(n).map_or(line.len(), |i| start + i)
            });
            line[start..end].to_owned()
        };
        Record {
            time: field("T=", Some("|H=")),
            host: field("|H=", Some("|A=")),
            sd: field("|SD=", Some("|M=")),
            msg: field("|M=", None).trim_start().to_owned(),
        }
    }
}

fn config(r: &Rsyslog) -> String {
    let (udp, tcp) = (r.udp, r.tcp);
    let message = "{{ filter }}: {{ risk_name }} on {{ host }}";
    format!(
        r#"
[[action]]
name = "u5424"
type = "syslog"
target = "udp://127.0.0.1:{udp}"
app_name = "wp5424u"
message = "{message}"
facility = "local4"
severity = "warning"

[[action]]
name = "t5424"
type = "syslog"
target = "tcp://127.0.0.1:{tcp}"
framing = "octet-counting"
app_name = "wp5424t"
hostname = "{{{{ host | upper }}}}"
message = "{message} (line\nbreak)"

[[action]]
name = "t3164"
type = "syslog"
target = "tcp://127.0.0.1:{tcp}"
framing = "lf"
format = "rfc3164"
app_name = "wp3164t"
message = "{message} (line\nbreak)"

[[action]]
name = "u3164"
type = "syslog"
target = "udp://127.0.0.1:{udp}"
format = "rfc3164"
app_name = "wp3164u"
time_zone = "UTC"
message = "{message}"

[[action]]
name = "ucef"
type = "syslog"
target = "udp://127.0.0.1:{udp}"
format = "cef"
app_name = "wpcef"
cef = {{ vendor = "watchpost", product = "watchpost", version = "0.1", signature_id = "{{{{ filter }}}}", name = "{{{{ risk_name }}}}", severity = "7", extensions = {{ src = "{{{{ ip_address }}}}", fname = "{{{{ file_path }}}}" }} }}

[[action]]
name = "tcef"
type = "syslog"
target = "tcp://127.0.0.1:{tcp}"
format = "cef"
cef_header = "rfc5424"
app_name = "wpcef5424"

[[action]]
name = "tjson"
type = "syslog"
target = "tcp://127.0.0.1:{tcp}"
format = "json"
app_name = "wpjson"
message = "{message}"

[[action]]
name = "ujson"
type = "syslog"
target = "udp://127.0.0.1:{udp}"
format = "json"
json_header = "rfc3164"
app_name = "wpjsonu"
"#
    )
}

#[test]
fn every_format_over_udp_and_tcp_reaches_rsyslog() {
    let Some(r) = start_rsyslog() else { return };
    let dispatcher = Dispatcher::start(specs(&config(&r))).expect("start");
    for name in [
        "u5424", "t5424", "t3164", "u3164", "ucef", "tcef", "tjson", "ujson",
    ] {
        let index = dispatcher.index_of(name).expect(name);
        assert!(dispatcher.submit(index, job(event("pc1"), "virus-found")));
    }
    let expected_msg = "virus-found: EICAR Test String on pc1";
    let sd = "[watchpost@32473 filter=\"virus-found\" source=\"sep-av\"]";

    let rec = r.record("wp5424u");
    assert_eq!(
        (rec.host.as_str(), rec.sd.as_str(), rec.msg.as_str()),
        ("pc1", sd, expected_msg)
    );
    assert!(rec.time.starts_with("2019-05-29T08:23:57.123"), "{rec:?}");

    let rec = r.record("wp5424t");
    assert_eq!(rec.host, "PC1");
    assert_eq!(rec.sd, sd);
    assert!(rec.msg.starts_with(expected_msg), "{rec:?}");
    assert!(
        rec.msg.ends_with("break)"),
        "octet counting keeps the message whole: {rec:?}"
    );

    let rec = r.record("wp3164t");
    assert_eq!(rec.host, "pc1");
    assert_eq!(
        rec.msg,
        format!("{expected_msg} (line break)"),
        "LF framing turns line breaks into spaces"
    );
    let rec = r.record("wp3164u");
    assert_eq!((rec.host.as_str(), rec.msg.as_str()), ("pc1", expected_msg));
    assert!(
        rec.time.contains("-05-29T08:23:57"),
        "RFC 3164 has no year: {rec:?}"
    );

    let rec = r.record("wpcef");
    assert_eq!(rec.host, "pc1");
    assert_eq!(
        rec.msg,
        r"CEF:0|watchpost|watchpost|0.1|virus-found|EICAR Test String|7|fname=C:\\Users\\a\\eicar.com src=10.0.0.5"
    );
    let rec = r.record("wpcef5424");
    assert_eq!(rec.sd, sd);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        rec.msg,
        format!(
            "CEF:0|watchpost|watchpost|{version}|virus-found|virus-found|5|\
             dvchost=pc1 cs1Label=filter cs1=virus-found cs2Label=source cs2=sep-av"
        )
    );

    for (app, message) in [("wpjson", expected_msg), ("wpjsonu", "virus-found on pc1")] {
        let rec = r.record(app);
        assert_eq!(rec.host, "pc1");
        let json: serde_json::Value =
            serde_json::from_str(&rec.msg).unwrap_or_else(|e| panic!("{e}: {rec:?}"));
        assert_eq!(json["risk_name"], "EICAR Test String");
        assert_eq!(json["filter"], "virus-found");
        assert_eq!(json["actions"], "a,b");
        assert_eq!(json["message"], message);
        assert_eq!(json["time"], "2019-05-29T08:23:57.123Z");
    }

    let stats = dispatcher.shutdown(Duration::from_secs(5));
    for s in &stats {
        assert_eq!((s.ok, s.failed, s.dropped), (1, 0, 0), "{s:?}");
    }
}
