//! The fleet task across reloads: kept running when `[fleet]` did not change, restarted
//! with the new settings when it did, stopped (and the store's queue turned off) when it
//! was removed, started again (queue on) when it came back. Two stand-in fleet servers on
//! 127.0.0.1 record every request the agent sends them.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use watchpost_config::{ConfigSource, Purpose};
use watchpost_fleet_protocol::{Encoding, Limits, decode_json};
use watchpost_runtime::{Outcome, ReloadHandle, Runtime, reload};

/// One request a stand-in server received: its path and its body as JSON.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A stand-in fleet server: answers heartbeats (next one in an hour) and commits every
/// batch; returns its URL and what it received.
fn server() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = answer(conn, &log);
        }
    });
    (url, seen)
}

fn answer(conn: TcpStream, log: &Seen) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
    let mut length = 0;
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().unwrap_or(0);
        } else if k.eq_ignore_ascii_case("authorization") {
            auth = v.trim().to_owned();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    assert_eq!(auth, "Bearer wpa_test", "the stored credential is sent");
    let value: Value = decode_json(&body, Encoding::Gzip, &Limits::default()).unwrap();
    let reply = if path.ends_with("/heartbeat") {
        json!({ "heartbeat_secs": 3600, "server_time_ms": 0 })
    } else {
        json!({ "committed_seq": value["last_seq"], "stored": 0, "duplicates": 0, "orphans": 0 })
    };
    log.lock().unwrap().push((path, value));
    let reply = reply.to_string();
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )
}

/// How many heartbeats a server received.
fn heartbeats(seen: &Seen) -> Vec<Value> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .filter(|(p, _)| p.ends_with("/heartbeat"))
        .map(|(_, v)| v.clone())
        .collect()
}

/// The `seq` field of every event a server received in batches.
fn shipped(seen: &Seen) -> Vec<u64> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .filter(|(p, _)| p.ends_with("/batches"))
        .flat_map(|(_, b)| b["records"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["kind"] == "event")
        .filter_map(|r| {
            let raw: Value = serde_json::from_str(r["raw"].as_str()?).ok()?;
            raw["seq"].as_u64()
        })
        .collect()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(dir: &Path, fleet: Option<&str>, extra: &str) -> ConfigSource {
    let fleet = fleet.map_or(String::new(), |url| {
        format!("\n[fleet]\nserver = \"{url}\"\nhost_id = \"test-host\"\n")
    });
    ConfigSource::Text {
        name: "agent.toml".into(),
        text: format!(
            "[agent]\nstate_dir = '{d}/state'\ncheckpoint_interval_ms = 100\nlog_fired = false\n\n[[source]]\nname = \"app\"\ntype = \"jsonl\"\npath = '{d}/logs/*.jsonl'\n\n[[filter]]\nname = \"all\"\nmatch = {{ source = \"app\" }}\n{fleet}{extra}",
            d = dir.display()
        ),
    }
}

fn append(dir: &Path, seq: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("logs/a.jsonl"))
        .unwrap();
    writeln!(f, "{}", json!({ "seq": seq, "host": "h1" })).unwrap();
}

fn applied(handle: &ReloadHandle, source: ConfigSource) -> String {
    match handle
        .reload(Some(source), Duration::from_secs(60))
        .unwrap()
    {
        Outcome::Applied { changes, .. } => changes,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_fleet_task_is_kept_restarted_stopped_and_started_by_reloads() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_owned();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    // Enrolled already: the credential is in the state directory.
    std::fs::write(dir.join("state/fleet.credential"), "wpa_test\n").unwrap();
    let (url_a, a) = server();
    let (url_b, b) = server();
    let first = config(&dir, Some(&url_a), "");
    let loaded = watchpost_config::load(&first, Purpose::Run).unwrap();
    let (handle, requests) = reload::channel();
    let rt = Runtime::start(first, loaded, handle.clone()).unwrap();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let driver = std::thread::spawn(move || {
        append(&dir, 1);
        wait_for("event 1 at server A", || shipped(&a) == [1]);
        assert_eq!(heartbeats(&a).len(), 1);
        let digest_1 = heartbeats(&a)[0]["config_generation"].clone();
        assert!(digest_1.is_string(), "{digest_1}");

        // Another filter: [fleet] is unchanged, the task keeps running (a new one would
        // heart-beat at once).
        let extra = "\n[[filter]]\nname = \"more\"\nmatch = { source = \"app\" }\n";
        let changes = applied(&handle, config(&dir, Some(&url_a), extra));
        assert_eq!(changes, "filters: added more");
        append(&dir, 2);
        wait_for("event 2 at server A", || shipped(&a) == [1, 2]);
        assert_eq!(heartbeats(&a).len(), 1, "the kept task did not restart");

        // Another server: the task restarts with it, reporting the new configuration.
        let changes = applied(&handle, config(&dir, Some(&url_b), extra));
        assert_eq!(changes, "fleet: changed fleet");
        append(&dir, 3);
        wait_for("event 3 at server B", || shipped(&b) == [3]);
        let hb = heartbeats(&b);
        assert_eq!(hb.len(), 1);
        assert_ne!(hb[0]["config_generation"], digest_1);
        let sources: Vec<&str> = hb[0]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(sources, ["app"]);
        assert_eq!(shipped(&a), [1, 2], "server A hears nothing more");
        assert_eq!(heartbeats(&a).len(), 1);

        // [fleet] removed: the task stops and the store stops queueing.
        let changes = applied(&handle, config(&dir, None, extra));
        assert_eq!(changes, "fleet: removed fleet");
        let store = dir.join("state/events.db");
        let queued_before = watchpost_store::Outbox::open(&store)
            .unwrap()
            .state()
            .unwrap()
            .last;
        append(&dir, 4);
        wait_for("event 4 stored", || {
            let s = watchpost_store::Store::open_read_only(&store).unwrap();
            s.query(&watchpost_store::Query::default(), 100)
                .unwrap()
                .len()
                == 4
        });
        std::thread::sleep(Duration::from_millis(1500));
        let state = watchpost_store::Outbox::open(&store)
            .unwrap()
            .state()
            .unwrap();
        assert_eq!(state.last, queued_before, "event 4 is not queued");
        assert_eq!(shipped(&b), [3]);
        assert_eq!(heartbeats(&b).len(), 1);

        // [fleet] back: queueing on, a new task heart-beats and ships what follows.
        let changes = applied(&handle, config(&dir, Some(&url_a), extra));
        assert_eq!(changes, "fleet: added fleet");
        append(&dir, 5);
        wait_for("event 5 at server A", || shipped(&a) == [1, 2, 5]);
        assert_eq!(heartbeats(&a).len(), 2);
        stop_tx.send(()).unwrap();
    });
    rt.serve_until(&stop_rx, &requests);
    driver.join().unwrap();
}
