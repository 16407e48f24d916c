//! Every shared EVTX fixture loads with the record and per-channel/event-id counts that
//! MANIFEST.tsv records, and known field values come out by name and by position.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use watchpost_event::Sym;
use watchpost_sources::ParseCtx;
use watchpost_sources::evtx::{is_evtx, read_evtx};

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/evtx/attack-samples"
);

fn load(rel: &str) -> Vec<watchpost_event::Event> {
    let bytes = std::fs::read(Path::new(DIR).join(rel)).unwrap();
    assert!(is_evtx(&bytes));
    let (events, errors) = read_evtx(&ParseCtx::new("evtx", "local"), bytes, rel);
    assert!(errors.is_empty(), "{rel}: {errors:?}");
    events
}

#[test]
fn every_fixture_matches_the_manifest() {
    let manifest = std::fs::read_to_string(Path::new(DIR).join("MANIFEST.tsv")).unwrap();
    let mut files = 0;
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (rel, records, counts) = (cols[0], cols[3].parse::<usize>().unwrap(), cols[5]);
        let events = load(rel);
        assert_eq!(events.len(), records, "{rel}");
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        for e in &events {
            let ch = e
                .get_str(Sym::new("channel"))
                .unwrap_or_default()
                .into_owned();
            let id = e
                .get_str(Sym::new("event_id"))
                .unwrap_or_default()
                .into_owned();
            *got.entry(format!("{ch}:{id}")).or_default() += 1;
        }
        let want: BTreeMap<String, usize> = counts
            .split(';')
            .map(|kv| {
                let (k, v) = kv.rsplit_once('=').unwrap();
                (k.to_owned(), v.parse().unwrap())
            })
            .collect();
        assert_eq!(got, want, "{rel}");
        files += 1;
    }
    assert_eq!(files, 60);
}

#[test]
fn rdp_logon_fields_by_name_and_position() {
    let events = load("command-and-control/DE_RDP_Tunneling_4624.evtx");
    let e = &events[0];
    let g = |n: &str| e.get_str(Sym::new(n)).unwrap_or_default().into_owned();
    assert_eq!(g("event_id"), "4624");
    assert_eq!(g("provider"), "Microsoft-Windows-Security-Auditing");
    assert_eq!(g("channel"), "Security");
    assert!(e.time.is_some());
    assert_eq!(&*e.host, g("computer"));
    // 4624 v0: TargetUserName is insertion string 6, LogonType 9, IpAddress 19.
    assert_eq!(g("TargetUserName"), g("str6"));
    assert_eq!(g("LogonType"), g("str9"));
    assert_eq!(g("IpAddress"), g("str19"));
    assert!(events.iter().any(|e| {
        e.get_str(Sym::new("IpAddress"))
            .is_some_and(|ip| ip == "127.0.0.1")
    }));
}

#[test]
fn a_corrupt_file_is_reported_and_the_rest_still_read() {
    // 869 records in several 64 KiB chunks (file header 0..4096, chunk n at 4096 + n * 65536).
    let rel = "lateral-movement/LM_5145_Remote_FileCopy.evtx";
    let mut bytes = std::fs::read(Path::new(DIR).join(rel)).unwrap();
    let second_chunk = 4096 + 65536;
    for b in &mut bytes[second_chunk + 512..second_chunk + 4096] {
        *b = 0xAB;
    }
    let (events, errors) = read_evtx(&ParseCtx::new("evtx", "local"), bytes, rel);
    assert!(!errors.is_empty(), "the damage is reported");
    assert!(
        events.len() > 700 && events.len() < 869,
        "the other chunks still load: {}",
        events.len()
    );
    let (events, errors) = read_evtx(
        &ParseCtx::new("evtx", "local"),
        b"ElfFile\0garbage".to_vec(),
        "x",
    );
    assert!(events.is_empty() && !errors.is_empty());
}
