//! Agreement with the peers hunters compare watchpost with: Hayabusa (its own rule set)
//! and Chainsaw (SigmaHQ's rules with its Sigma mapping), run over the repository's EVTX
//! samples beside `watchpost hunt` with the same rules, compared per (rule id, file,
//! EventRecordID).
//!
//! Every detection a peer makes with a rule watchpost loads must be watchpost's too, and
//! every detection only watchpost makes must come from a rule the peer did not run, or
//! be listed with its reason in `crates/watchpost/tests/data/peer_agreement.tsv` (per peer, direction and
//! rule, with the count). A listed difference that no longer occurs fails the test as
//! well, so the table stays true.
//!
//! The peers are benchmarks, not dependencies: their binaries (built from their public
//! sources, see `../shared/peers/README.md`) are looked for in `$WATCHPOST_PEERS` or
//! `../shared/peers` beside the repository. Where they are absent, the tests say so and
//! pass without comparing.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// (rule id, file relative to the EVTX folder, EventRecordID).
type Key = (String, String, u64);

fn peers() -> Option<PathBuf> {
    let dir = std::env::var_os("WATCHPOST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(common::FIXTURES).join("../../../shared/peers"));
    dir.join("bin").is_dir().then_some(dir)
}

/// The peer's binary, or why the comparison is skipped.
fn peer(bin: &str) -> Result<(PathBuf, PathBuf), String> {
    if cfg!(windows) {
        return Err("skipped: the peer binaries are Linux builds".into());
    }
    let dir = peers().ok_or(
        "skipped: no peer binaries (../shared/peers or $WATCHPOST_PEERS); the comparison needs them",
    )?;
    let b = dir.join("bin").join(bin);
    if !b.is_file() {
        return Err(format!("skipped: {} is absent", b.display()));
    }
    Ok((dir, b))
}

fn evtx_dir() -> PathBuf {
    common::fixture("evtx")
}

/// `path` relative to the EVTX folder, with `/`.
fn rel(path: &str) -> String {
    let base = evtx_dir();
    let p = Path::new(path);
    let p = p.strip_prefix(&base).unwrap_or(p);
    p.to_string_lossy().replace('\\', "/")
}

/// Minimal CSV reader (RFC 4180: quoted fields, doubled quotes, newlines in quotes).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// watchpost's detections (and the ids of the rules it loaded) with `args` after `hunt`.
fn watchpost(
    args: &[&str],
    rules: &Path,
    titles: &mut BTreeMap<String, String>,
) -> (BTreeSet<Key>, HashSet<String>) {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .env("XDG_CACHE_HOME", cache.path())
        .arg("hunt")
        .arg("-r")
        .arg(rules)
        .args(args)
        .args(["--format", "jsonl", "--verbose"])
        .arg(evtx_dir())
        .output()
        .expect("run watchpost hunt");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let mut keys = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let d: Value = serde_json::from_str(line).unwrap();
        titles
            .entry(d["id"].as_str().unwrap_or_default().to_string())
            .or_insert_with(|| d["rule"].as_str().unwrap_or_default().to_string());
        keys.insert((
            d["id"].as_str().unwrap_or_default().to_string(),
            rel(d["file"].as_str().unwrap_or_default()),
            d["record_id"].as_u64().unwrap_or_default(),
        ));
    }
    // The rules not loaded are listed by --verbose; the rest loaded.
    let not_loaded: HashSet<String> = err
        .lines()
        .filter_map(|l| l.strip_prefix("rule not loaded: "))
        .filter_map(|l| l.split(": ").next())
        .map(str::to_string)
        .collect();
    let mut loaded = HashSet::new();
    for f in walk(rules) {
        if not_loaded.contains(&f.display().to_string()) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("id: ") {
                loaded.insert(id.trim().trim_matches(['\'', '"']).to_string());
            }
        }
    }
    (keys, loaded)
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            out.extend(walk(&e.path()));
        }
    } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
        out.push(p.to_path_buf());
    }
    out
}

/// The listed differences of `peer`: (direction, rule id) → count.
fn listed(peer: &str) -> BTreeMap<(String, String), usize> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/peer_agreement.tsv"),
    )
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|c| c[0] == peer)
        .map(|c| ((c[1].to_string(), c[2].to_string()), c[4].parse().unwrap()))
        .collect()
}

/// Compares and fails with every difference not listed (and every listed one that is
/// gone), as lines to paste into the table.
fn compare(
    peer: &str,
    theirs: &BTreeSet<Key>,
    ours: &BTreeSet<Key>,
    loaded: &HashSet<String>,
    they_ran: &dyn Fn(&str) -> bool,
    titles: &BTreeMap<String, String>,
) {
    let mut diff: BTreeMap<(String, String), usize> = BTreeMap::new();
    for k in theirs.difference(ours) {
        if loaded.contains(&k.0) {
            *diff.entry(("missing".into(), k.0.clone())).or_default() += 1;
        }
    }
    for k in ours.difference(theirs) {
        if they_ran(&k.0) {
            *diff.entry(("extra".into(), k.0.clone())).or_default() += 1;
        }
    }
    let want = listed(peer);
    let mut problems = Vec::new();
    for ((dir, id), n) in &diff {
        if want.get(&(dir.clone(), id.clone())) != Some(n) {
            let title = titles.get(id).map_or("", String::as_str);
            problems.push(format!("{peer}\t{dir}\t{id}\t{title}\t{n}\t(reason)"));
        }
    }
    for ((dir, id), n) in &want {
        if !diff.contains_key(&(dir.clone(), id.clone())) {
            problems.push(format!(
                "listed but no longer differs: {peer}\t{dir}\t{id}\t{n}"
            ));
        }
    }
    let agreed = theirs.intersection(ours).count();
    eprintln!(
        "{peer}: {} detections, watchpost {}, {agreed} agree",
        theirs.len(),
        ours.len()
    );
    assert!(
        problems.is_empty(),
        "{peer}: differences not in tests/data/peer_agreement.tsv:\n{}",
        problems.join("\n")
    );
}

#[test]
fn hayabusa_on_its_own_rules() {
    let (dir, bin) = match peer("hayabusa") {
        Ok(x) => x,
        Err(why) => return eprintln!("{why}"),
    };
    let rules = dir.join("hayabusa-rules");
    let config = rules.join("config");
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("hayabusa.csv");
    let out = Command::new(&bin)
        .current_dir(tmp.path())
        .args(["dfir-timeline", "-d"])
        .arg(evtx_dir())
        .args(["-w", "-r"])
        .arg(&rules)
        .arg("-c")
        .arg(&config)
        .args(["-p", "verbose", "-o"])
        .arg(&csv)
        .args(["-C", "-K", "-Q", "-q", "-U"])
        .output()
        .expect("run hayabusa");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = csv_rows(&std::fs::read_to_string(&csv).unwrap());
    let head = &rows[0];
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    let (rid, rec, file, title) = (
        col("RuleID"),
        col("RecordID"),
        col("EvtxFile"),
        col("RuleTitle"),
    );
    let mut theirs = BTreeSet::new();
    let mut titles = BTreeMap::new();
    for r in &rows[1..] {
        let Ok(record) = r[rec].parse() else { continue };
        theirs.insert((r[rid].clone(), rel(&r[file]), record));
        titles.insert(r[rid].clone(), r[title].clone());
    }
    let excl = |f: &str| config.join(f).display().to_string();
    let (ours, loaded) = watchpost(
        &[
            "--exclude-list",
            &excl("exclude_rules.txt"),
            "--exclude-list",
            &excl("noisy_rules.txt"),
        ],
        &rules,
        &mut titles,
    );
    // Hayabusa runs the rules watchpost loads with the same lists, except those it
    // cannot read: those are listed as "extra" with the reason.
    compare("hayabusa", &theirs, &ours, &loaded, &|_| true, &titles);
}

#[test]
fn chainsaw_on_sigmahq_rules() {
    let (dir, bin) = match peer("chainsaw") {
        Ok(x) => x,
        Err(why) => return eprintln!("{why}"),
    };
    let rules = common::fixture("sigma/rules");
    let tmp = tempfile::tempdir().unwrap();
    let jsonl = tmp.path().join("chainsaw.jsonl");
    // Never `-q` with `-o`: Chainsaw then loses its last output buffer.
    let out = Command::new(&bin)
        .arg("hunt")
        .arg(evtx_dir())
        .arg("-s")
        .arg(&rules)
        .arg("--mapping")
        .arg(dir.join("chainsaw/mappings/sigma-event-logs-all.yml"))
        .args(["--jsonl", "-o"])
        .arg(&jsonl)
        .arg("--skip-errors")
        .stderr(std::process::Stdio::null())
        .output()
        .expect("run chainsaw");
    assert!(out.status.success());
    let mut theirs = BTreeSet::new();
    let mut titles = BTreeMap::new();
    let mut ran = HashSet::new();
    for line in std::fs::read_to_string(&jsonl).unwrap().lines() {
        let d: Value = serde_json::from_str(line).unwrap();
        let id = d["id"].as_str().unwrap_or_default().to_string();
        let doc = &d["document"];
        let record = &doc["data"]["Event"]["System"]["EventRecordID"];
        let record = record
            .as_u64()
            .or_else(|| record.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_default();
        theirs.insert((
            id.clone(),
            rel(doc["path"].as_str().unwrap_or_default()),
            record,
        ));
        titles.insert(
            id.clone(),
            d["name"].as_str().unwrap_or_default().to_string(),
        );
        ran.insert(id);
    }
    let (ours, loaded) = watchpost(&[], &rules, &mut titles);
    // Chainsaw's mapping names the logsources it reads: a rule of another logsource
    // (Security 4688 process creation, Provider_Name rules) is one it cannot read; those
    // extra detections are listed with that reason like any other.
    compare("chainsaw", &theirs, &ours, &loaded, &|_| true, &titles);
    let _ = ran;
}
