//! A private PostgreSQL cluster for tests and benchmarks, from Debian's `postgresql`
//! package: `initdb` in a temporary directory, started with `pg_ctl`, reachable only
//! through a Unix socket in that directory (no TCP port, nothing shared with other
//! clusters on the machine), stopped and removed on drop.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then every PostgreSQL program
//! runs as `nobody` (through `setpriv`), and the directory belongs to it.
//!
//! [`Cluster::start`] returns [`Missing`] when PostgreSQL is not installed: tests skip
//! with that reason, except under `CI=true`, where they fail ([`Cluster::start_or_skip`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// PostgreSQL is not installed (the reason to skip).
#[derive(Debug)]
pub struct Missing(pub String);

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Settings of the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// `postgresql.conf` lines added (e.g. `shared_buffers = 256MB`).
    pub settings: Vec<String>,
    /// The database made for the test.
    pub database: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            settings: vec![
                "max_connections = 200".into(),
                "shared_buffers = 128MB".into(),
            ],
            database: "watchpost".into(),
        }
    }
}

/// A running private cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_nobody: bool,
    port: u16,
    database: String,
}

fn bin_dir() -> Result<PathBuf, Missing> {
    if let Ok(b) = std::env::var("WATCHPOST_PG_BIN") {
        return Ok(PathBuf::from(b));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            Missing(
                "PostgreSQL is not installed (no /usr/lib/postgresql; apt-get install postgresql)"
                    .into(),
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| Missing("no initdb under /usr/lib/postgresql/*/bin".into()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Cluster {
    /// Starts a cluster; [`Missing`] when PostgreSQL is not installed.
    pub fn start(options: Options) -> Result<Cluster, Missing> {
        let bin = bin_dir()?;
        let as_nobody = is_root();
        let dir = tempfile::Builder::new()
            .prefix("wp-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| Missing(format!("no temporary directory: {e}")))?;
        let cluster = Cluster {
            dir,
            bin,
            as_nobody,
            port: 5432,
            database: options.database.clone(),
        };
        if as_nobody {
            let ok = Command::new("chown")
                .args(["65534:65534"])
                .arg(cluster.dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the cluster directory to nobody failed");
        }
        let data = cluster.data();
        let out = cluster.pg(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conf = String::from(
            "\n# watchpost test cluster\nlisten_addresses = ''\nunix_socket_permissions = 0777\n",
        );
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\nport = {}\n",
            cluster.dir.path().display(),
            cluster.port
        ));
        for s in &options.settings {
            conf.push_str(s);
            conf.push('\n');
        }
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
        cluster.pg_ctl_start();
        let out = cluster.pg(
            "createdb",
            &[
                "-h",
                path_str(cluster.dir.path()),
                "-p",
                &cluster.port.to_string(),
                "-U",
                "postgres",
                &cluster.database,
            ],
        );
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(cluster)
    }

    /// [`Cluster::start`], or `None` after printing why the test is skipped; under
    /// `CI=true` a missing PostgreSQL fails the test instead.
    pub fn start_or_skip(options: Options) -> Option<Cluster> {
        match Cluster::start(options) {
            Ok(c) => Some(c),
            Err(Missing(why)) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("PostgreSQL is needed under CI: {why}");
                }
                eprintln!("skipped: {why}");
                None
            }
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg(&self, program: &str, args: &[&str]) -> Output {
        let prog = self.bin.join(program);
        let mut cmd = if self.as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
            c.arg(&prog);
            c
        } else {
            Command::new(&prog)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", prog.display()))
    }

    fn pg_ctl_start(&self) {
        let data = self.data();
        let log = self.dir.path().join("postgres.log");
        let out = self.pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// The libpq connection string of the test database.
    pub fn url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname={}",
            self.dir.path().display(),
            self.port,
            self.database
        )
    }

    /// The directory holding the socket and the data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the cluster (`-m fast`, or `immediate`: like a crash) and starts it again.
    pub fn restart(&self, immediate: bool) {
        self.stop_with(if immediate { "immediate" } else { "fast" });
        self.pg_ctl_start();
    }

    /// Stops the cluster, waiting for it.
    pub fn stop_with(&self, mode: &str) {
        let out = self.pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data()),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs SQL with `psql` and returns its unaligned output (tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let out = self.pg(
            "psql",
            &[
                "-h",
                path_str(self.dir.path()),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                &self.database,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
        assert!(
            out.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The process id of the postmaster (for CPU and memory readings).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Waits until the server accepts connections again (after a restart).
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            let out = self.pg(
                "pg_isready",
                &[
                    "-h",
                    path_str(self.dir.path()),
                    "-p",
                    &self.port.to_string(),
                ],
            );
            if out.status.success() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data()),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}
