//! Test support: real peers (Python scripts in `tests/helpers/`, run as their own
//! processes on 127.0.0.1 with ports chosen at run time) and a test CA made by `openssl`.

// Test code: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A peer process, killed when dropped.
pub(crate) struct Peer {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The helper script `name` from `tests/helpers/`.
pub(crate) fn helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(name)
}

/// Starts `/usr/bin/python3 <script> --port-file F args…` and waits for its port.
pub(crate) fn start(script: &str, dir: &Path, args: &[&str]) -> Peer {
    let port_file = dir.join(format!("{script}.port"));
    let _ = std::fs::remove_file(&port_file);
    let child = Command::new("/usr/bin/python3")
        .arg(helper(script))
        .arg("--port-file")
        .arg(&port_file)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {script} with /usr/bin/python3: {e}"));
    let mut peer = Peer { child, port: 0 };
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            peer.port = port;
            return peer;
        }
        if let Ok(Some(status)) = peer.child.try_wait() {
            panic!("{script} exited with {status} before listening");
        }
        assert!(Instant::now() < until, "{script} did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files of a test CA and a server certificate it signed.
pub(crate) struct Certs {
    pub(crate) ca: PathBuf,
    pub(crate) other_ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for `localhost` and 127.0.0.1 signed by it, and a second,
/// unrelated CA; EC P-256 keys (fast to make).
pub(crate) fn make_certs(dir: &Path) -> Certs {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        let (key, pem, subj) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN=watchpost test {ca}"),
        );
        a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        openssl(dir, &a);
    }
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &a);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
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
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    Certs {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// Waits (up to 10 s) until the peer's JSON-lines `log` holds at least `n` records; returns
/// them all.
pub(crate) fn received(log: &Path, n: usize) -> Vec<serde_json::Value> {
    wait_for(|| {
        let text = std::fs::read_to_string(log).ok()?;
        let v: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (v.len() >= n).then_some(v)
    })
}

/// Waits up to 10 s for `f` to return `Some`.
pub(crate) fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting");
        std::thread::sleep(Duration::from_millis(20));
    }
}
