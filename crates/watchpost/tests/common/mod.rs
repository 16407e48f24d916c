//! Helpers for end-to-end tests of the `watchpost` binary.
#![allow(dead_code, missing_docs)]

use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data");

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(FIXTURES).join(rel)
}

/// Polls `f` every 20 ms until it returns `Some`, or fails after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
}

/// A running `watchpost run`, killed on drop.
pub struct Watchpost {
    pub child: Child,
    pub log: PathBuf,
}

impl Watchpost {
    pub fn start(config: &Path, log: &Path) -> Watchpost {
        Self::start_env(config, log, &[])
    }

    /// Starts `watchpost run` with extra environment variables.
    pub fn start_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Watchpost {
        Self::start_bin(Path::new(env!("CARGO_BIN_EXE_watchpost")), config, log, env)
    }

    /// Starts `bin run` (this build's binary, or another one to compare with).
    pub fn start_bin(bin: &Path, config: &Path, log: &Path, env: &[(&str, &str)]) -> Watchpost {
        let starts_before = std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("watchpost running")
            .count();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(bin)
            .args(["run", "-c"])
            .arg(config)
            .env("WATCHPOST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start watchpost");
        let wp = Watchpost {
            child,
            log: log.to_owned(),
        };
        let log = log.to_owned();
        wait_for("watchpost to start", Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.matches("watchpost running").count() > starts_before).then_some(())
        });
        wp
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = wait_for("watchpost to exit", Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten()
        });
        std::mem::forget(self);
        status.success()
    }

    /// SIGKILL (a crash).
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for Watchpost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real rsyslogd on a loopback UDP port writing `hostname|app-name|msg` lines to a file.
pub struct Rsyslog {
    child: Child,
    pub port: u16,
    pub out: PathBuf,
}

impl Rsyslog {
    pub fn start(dir: &Path) -> Rsyslog {
        let rsyslogd = Path::new("/usr/sbin/rsyslogd");
        assert!(
            rsyslogd.exists(),
            "rsyslogd is not installed: run scripts/test.sh (it installs rsyslog) or apt-get install rsyslog"
        );
        let port = free_udp_port();
        let work = dir.join("rsyslog");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.join("received.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}")
module(load="imudp")
template(name="wp" type="string" string="%hostname%|%app-name%|%msg%\n")
ruleset(name="in") {{ action(type="omfile" file="{out}" template="wp") }}
input(type="imudp" address="127.0.0.1" port="{port}" ruleset="in")
"#,
                work = work.display(),
                out = out.display()
            ),
        )
        .unwrap();
        let child = Command::new(rsyslogd)
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd");
        let r = Rsyslog { child, port, out };
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        wait_for(
            "rsyslog to receive a probe",
            Duration::from_secs(20),
            || {
                let _ = sock.send_to(b"<14>1 - probe probe - - - ready", ("127.0.0.1", port));
                r.text().contains("ready").then_some(())
            },
        );
        r
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of the SEP client AV log fixture.
pub fn av_fixture_lines() -> Vec<String> {
    let text = std::fs::read_to_string(fixture("sep/client-av/05292019.Log")).unwrap();
    text.lines().map(str::to_owned).collect()
}

/// The first virus-found (event 5, Auto-Protect) line of the fixture with `computer` set.
pub fn av_virus_found(computer: &str, risk: &str, file: &str) -> String {
    let line = av_fixture_lines()
        .into_iter()
        .find(|l| l.split(',').nth(1) == Some("5"))
        .expect("a virus-found line in the fixture");
    let mut cols: Vec<String> = line.split(',').map(str::to_owned).collect();
    cols[3] = "2".into(); // logger: Real_Time (Auto-Protect)
    cols[4] = computer.into();
    cols[6] = risk.into();
    cols[7] = file.into();
    cols.join(",")
}

/// A seclog (IPS) file: the fixture's header and first record with `name` as signature name.
pub fn seclog_with_signature(name: &str) -> Vec<u8> {
    let bytes = std::fs::read(fixture("sep/client-binary/seclog3.log")).unwrap();
    let header_end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap();
    let mut header_len = header_end;
    while header_len < bytes.len() && (bytes[header_len] == b'\r' || bytes[header_len] == b'\n') {
        header_len += 1;
    }
    let rec = &bytes[header_len..];
    let tab = rec.iter().position(|&b| b == b'\t').unwrap();
    let width = tab;
    let len = usize::from_str_radix(std::str::from_utf8(&rec[..tab]).unwrap(), 16).unwrap();
    let old = b"Web Attack: Malicious Payload Upload 2";
    let mut body = replace_all(&rec[tab..len], old, name.as_bytes());
    let new_len = width + body.len();
    let mut out = bytes[..header_len].to_vec();
    out.extend_from_slice(format!("{new_len:0width$x}").as_bytes());
    out.append(&mut body);
    out
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn openssl(args: &[&str], dir: &Path) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl {args:?}");
}

/// A test CA (`ca.pem`) and a server certificate for 127.0.0.1 (`server.pem`,
/// `server.key`) in `dir`, made with `openssl`.
pub fn tls_for_loopback(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "2",
        "-subj",
        "/CN=e2e-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&ca, dir);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&csr, dir);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
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
            "san.ext",
            "-out",
            "server.pem",
        ],
        dir,
    );
}
