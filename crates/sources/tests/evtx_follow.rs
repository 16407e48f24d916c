//! Following `.evtx` files: records arrive once in id order, a checkpoint resumes, files
//! appear and grow, start at end, corrupt chunks are skipped, replaced files are re-read.
//! Every wait is bounded and ends on an observed outcome, not on a fixed sleep.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use watchpost_sources::ParseCtx;
use watchpost_sources::evtx_follow::{EvtxFollowOptions, EvtxFollower, EvtxRecord};
use watchpost_sources::tail::StartAt;
use watchpost_sources::winevent::parse_event_xml;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/evtx/attack-samples"
);
/// 101 records, one chunk.
const TUNNEL: &str = "command-and-control/DE_RDP_Tunnel_5156.evtx";
/// 18 records, one chunk, same size as [`TUNNEL`].
const TUNNELING: &str = "command-and-control/DE_RDP_Tunneling_4624.evtx";
/// 869 records in 10 chunks (ids 1..=98, 99..=197, 198..=287, 288..=369, 370..=451, …).
const COPY: &str = "lateral-movement/LM_5145_Remote_FileCopy.evtx";
const FILE_HEADER: usize = 4096;
const CHUNK: usize = 65536;
const WAIT: Duration = Duration::from_secs(30);

fn fixture(rel: &str) -> Vec<u8> {
    fs::read(Path::new(DIR).join(rel)).unwrap()
}

/// The record count MANIFEST.tsv gives for `rel`.
fn manifest_records(rel: &str) -> usize {
    let manifest = fs::read_to_string(Path::new(DIR).join("MANIFEST.tsv")).unwrap();
    manifest
        .lines()
        .find_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[0] == rel).then(|| cols[3].parse().unwrap())
        })
        .unwrap()
}

struct Fx {
    dir: tempfile::TempDir,
    cp: PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let cp = dir.path().join("state").join("evtx.json");
        fs::create_dir(dir.path().join("logs")).unwrap();
        Fx { dir, cp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(name)
    }

    fn start(&self, start_at: StartAt) -> (EvtxFollower, Receiver<EvtxRecord>) {
        let pattern = self.dir.path().join("logs").join("*.evtx");
        let mut opts =
            EvtxFollowOptions::new(vec![pattern.to_string_lossy().into_owned()], &self.cp);
        opts.start_at = start_at;
        opts.poll_interval = Duration::from_millis(300);
        opts.queue = 64;
        EvtxFollower::start(opts).unwrap()
    }
}

/// Receives `n` records (committing each), failing after [`WAIT`].
fn take(f: &EvtxFollower, rx: &Receiver<EvtxRecord>, n: usize) -> Vec<EvtxRecord> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => {
                f.commit(&r.path, r.record_id);
                out.push(r);
            }
            Err(e) => panic!(
                "got {} of {n} records: {e}; stats {:?}",
                out.len(),
                f.stats()
            ),
        }
    }
    out
}

/// Path and record id of each record, for failure messages (the XML would drown them).
fn where_from(records: &[EvtxRecord]) -> Vec<(String, u64)> {
    records
        .iter()
        .map(|r| (r.path.display().to_string(), r.record_id))
        .collect()
}

fn ids(records: &[EvtxRecord]) -> Vec<u64> {
    records.iter().map(|r| r.record_id).collect()
}

fn range(a: u64, b: u64) -> Vec<u64> {
    (a..=b).collect()
}

/// Waits until `cond` holds on the stats, failing after [`WAIT`].
fn wait_stats(
    f: &EvtxFollower,
    what: &str,
    cond: impl Fn(&watchpost_sources::evtx_follow::EvtxFollowStats) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !cond(&f.stats()) {
        assert!(Instant::now() < deadline, "{what}: {:?}", f.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn copied_file_arrives_once_restart_resumes_and_a_second_file_arrives() {
    let fx = Fx::new();
    let (f, rx) = fx.start(StartAt::Beginning);
    fs::copy(Path::new(DIR).join(TUNNEL), fx.path("a.evtx")).unwrap();
    let n = manifest_records(TUNNEL);
    let got = take(&f, &rx, n);
    assert_eq!(ids(&got), range(1, n as u64));
    assert!(got.iter().all(|r| r.path == fx.path("a.evtx")));
    let ctx = ParseCtx::new("evtx", "local");
    for r in &got {
        parse_event_xml(&ctx, &r.xml).unwrap();
    }
    f.checkpoint().unwrap();
    // Every record was committed as it arrived, the last one too: a commit that reaches the
    // follower before its own thread noted the record as handed must still count.
    let cp: serde_json::Value = serde_json::from_slice(&fs::read(&fx.cp).unwrap()).unwrap();
    assert_eq!(cp["files"][0]["record_id"], n as u64, "{cp}");
    f.shutdown();
    assert!(rx.try_recv().is_err());

    // Restart: nothing of a.evtx again; a second file's records arrive, and only they.
    let (f, rx) = fx.start(StartAt::Beginning);
    fs::copy(Path::new(DIR).join(TUNNELING), fx.path("b.evtx")).unwrap();
    let m = manifest_records(TUNNELING);
    let got = take(&f, &rx, m);
    assert!(
        got.iter().all(|r| r.path == fx.path("b.evtx")),
        "{:?}",
        where_from(&got)
    );
    assert_eq!(ids(&got), range(1, m as u64));
    f.checkpoint().unwrap();
    let cp: serde_json::Value = serde_json::from_slice(&fs::read(&fx.cp).unwrap()).unwrap();
    assert_eq!(cp["version"], 1);
    assert_eq!(cp["files"].as_array().unwrap().len(), 2, "{cp}");
    let stats = f.stats();
    assert_eq!(
        (stats.files, stats.errors, stats.rereads),
        (2, 0, 0),
        "{stats:?}"
    );
    f.shutdown();
    assert!(rx.try_recv().is_err());
}

/// Writes the file header and the first `chunks` chunks of `bytes` to `path`.
fn write_prefix(path: &Path, bytes: &[u8], chunks: usize) {
    fs::write(path, &bytes[..FILE_HEADER + chunks * CHUNK]).unwrap();
}

/// Appends the rest of `bytes` to `path` (same file, grown).
fn append_rest(path: &Path, bytes: &[u8]) {
    let have = fs::metadata(path).unwrap().len() as usize;
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(&bytes[have..]).unwrap();
}

#[test]
fn a_growing_file_delivers_only_its_new_records() {
    let fx = Fx::new();
    let bytes = fixture(COPY);
    let (f, rx) = fx.start(StartAt::Beginning);
    let path = fx.path("live.evtx");
    write_prefix(&path, &bytes, 4);
    assert_eq!(ids(&take(&f, &rx, 369)), range(1, 369));
    let parsed = f.stats().chunks_parsed;
    assert_eq!(parsed, 4);
    append_rest(&path, &bytes);
    assert_eq!(ids(&take(&f, &rx, 500)), range(370, 869));
    // Only the six new chunks were parsed, the first four skipped by their headers.
    assert_eq!(f.stats().chunks_parsed, parsed + 6);
    // A change without new records parses nothing; a sync point proves the pass ran.
    fs::copy(Path::new(DIR).join(TUNNELING), fx.path("sync.evtx")).unwrap();
    let got = take(&f, &rx, manifest_records(TUNNELING));
    assert!(got.iter().all(|r| r.path == fx.path("sync.evtx")));
    assert_eq!(f.stats().chunks_parsed, parsed + 7);
    assert_eq!(f.stats().errors, 0);
    f.shutdown();
}

#[test]
fn start_at_end_skips_existing_records() {
    let fx = Fx::new();
    let bytes = fixture(COPY);
    let path = fx.path("live.evtx");
    write_prefix(&path, &bytes, 4);
    fs::copy(Path::new(DIR).join(TUNNEL), fx.path("old.evtx")).unwrap();
    let (f, rx) = fx.start(StartAt::End);
    assert!(
        fx.cp.exists(),
        "a first start writes its checkpoint at once"
    );
    append_rest(&path, &bytes);
    let got = take(&f, &rx, 500);
    assert_eq!(ids(&got), range(370, 869));
    assert!(got.iter().all(|r| r.path == path));
    // A file appearing later is read from its start.
    fs::copy(Path::new(DIR).join(TUNNELING), fx.path("new.evtx")).unwrap();
    let got = take(&f, &rx, 18);
    assert!(got.iter().all(|r| r.path == fx.path("new.evtx")));
    assert_eq!(ids(&got), range(1, 18));
    f.shutdown();
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_corrupt_chunk_is_reported_and_the_others_arrive() {
    let fx = Fx::new();
    let mut bytes = fixture(COPY);
    // Chunk 4 (ids 370..=451): damage its records, not its header.
    let at = FILE_HEADER + 4 * CHUNK + 4096;
    for b in &mut bytes[at..at + 64] {
        *b ^= 0x5a;
    }
    let (f, rx) = fx.start(StartAt::Beginning);
    fs::write(fx.path("bad.evtx"), &bytes).unwrap();
    let want: Vec<u64> = range(1, 369).into_iter().chain(range(452, 869)).collect();
    assert_eq!(ids(&take(&f, &rx, want.len())), want);
    wait_stats(&f, "corrupt chunk counted", |s| s.errors == 1);
    // Reported once, not on every pass: a later file still arrives and errors stay at 1.
    fs::copy(Path::new(DIR).join(TUNNELING), fx.path("sync.evtx")).unwrap();
    assert_eq!(take(&f, &rx, 18).len(), 18);
    assert_eq!(f.stats().errors, 1);
    f.shutdown();
    assert!(rx.try_recv().is_err());
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Wine 8: renaming over a file another thread has open fails with Access denied at times (std opens with FILE_SHARE_DELETE; real Windows allows it)"
)]
fn a_replaced_file_is_read_from_its_start() {
    let fx = Fx::new();
    let (f, rx) = fx.start(StartAt::Beginning);
    let path = fx.path("a.evtx");
    fs::copy(Path::new(DIR).join(TUNNEL), &path).unwrap();
    assert_eq!(ids(&take(&f, &rx, 101)), range(1, 101));
    // Rewritten in place (same inode, same size, other content).
    fs::write(&path, fixture(TUNNELING)).unwrap();
    let got = take(&f, &rx, 18);
    assert_eq!(ids(&got), range(1, 18));
    wait_stats(&f, "reread counted", |s| s.rereads >= 1);
    // Replaced by rename (new inode): read from its start again.
    let tmp = fx.dir.path().join("next.tmp");
    fs::copy(Path::new(DIR).join(TUNNEL), &tmp).unwrap();
    fs::rename(&tmp, &path).unwrap();
    assert_eq!(ids(&take(&f, &rx, 101)), range(1, 101));
    f.checkpoint().unwrap();
    f.shutdown();
    assert!(rx.try_recv().is_err());
    // And the checkpoint holds the new file at its last record: nothing after a restart.
    let (f, rx) = fx.start(StartAt::Beginning);
    fs::copy(Path::new(DIR).join(TUNNELING), fx.path("sync.evtx")).unwrap();
    let got = take(&f, &rx, 18);
    assert!(
        got.iter().all(|r| r.path == fx.path("sync.evtx")),
        "{:?}",
        where_from(&got)
    );
    f.shutdown();
}
