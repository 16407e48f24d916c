//! Parser tests against the shared fixtures: SEP client AV logs, the four client binary
//! logs, format detection and schemas. (SEPM syslog: `parsers_manager.rs`; malformed
//! input: `parsers_malformed.rs`.)

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use watchpost_event::{Event, FieldRef, Sym};
use watchpost_sources::sep::binary::{LogKind, parse_log};
use watchpost_sources::{Format, ParseCtx, Schema, format};

fn fixtures(sub: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data")).join(sub)
}

fn ctx() -> ParseCtx {
    let mut c = ParseCtx::new("test", "localbox");
    c.tz = TimeZone::UTC;
    c
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn s(ev: &Event, name: &str) -> Option<String> {
    ev.get_str(Sym::new(name)).map(|c| c.into_owned())
}

fn int(ev: &Event, name: &str) -> Option<i64> {
    match ev.get(Sym::new(name)) {
        Some(FieldRef::Int(i)) => Some(i),
        other => panic!("{name} is not an integer: {other:?}"),
    }
}

fn time(ev: &Event) -> String {
    watchpost_event::format_time(ev.time.expect("event has a time"))
}

/// Every field an event has must be in its format's fixed schema.
fn assert_in_schema(format: Format, ev: &Event) {
    let Schema::Fixed(names) = format.schema() else {
        return;
    };
    for (sym, _) in ev.fields() {
        assert!(
            names.contains(&sym.as_str()),
            "{}: field {sym} not in the schema",
            format.name()
        );
    }
}

#[test]
fn every_av_fixture_line_parses() {
    let mut total = 0;
    for path in files(&fixtures("sep/client-av")) {
        let bytes = std::fs::read(&path).unwrap();
        let lines = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .count();
        let (events, errors) = format::parse_file(Format::SepAvLog, &ctx(), &bytes);
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        assert_eq!(events.len(), lines, "{}", path.display());
        for ev in &events {
            assert!(ev.time.is_some());
            assert!(s(ev, "event_code").is_some());
            assert_in_schema(Format::SepAvLog, ev);
        }
        total += events.len();
    }
    assert_eq!(
        total, 321,
        "44 SEPparser files (313 lines) + plaso (8 lines)"
    );
}

#[test]
fn av_worked_example_decodes_exactly() {
    let bytes = std::fs::read(fixtures("sep/client-av/05292019.Log")).unwrap();
    let (events, _) = format::parse_file(Format::SepAvLog, &ctx(), &bytes);
    let ev = events
        .iter()
        .find(|e| e.raw.starts_with("31041D081739,5,"))
        .expect("the virus-found line of §1.8");
    assert_eq!(time(ev), "2019-05-29T08:23:57.000Z");
    assert_eq!(&*ev.host, "computer1");
    assert_eq!(int(ev, "event_code"), Some(5));
    assert_eq!(s(ev, "event_name").as_deref(), Some("INFECTION"));
    assert_eq!(s(ev, "category_name").as_deref(), Some("Infection"));
    assert_eq!(int(ev, "logger"), Some(0));
    assert_eq!(s(ev, "logger_name").as_deref(), Some("Scheduled"));
    assert_eq!(s(ev, "computer").as_deref(), Some("computer1"));
    assert_eq!(s(ev, "user").as_deref(), Some("SYSTEM"));
    assert_eq!(s(ev, "risk_name").as_deref(), Some("Heur.AdvML.C"));
    assert_eq!(s(ev, "file_path").as_deref(), Some(">>_________"));
    assert_eq!(s(ev, "action1_name").as_deref(), Some("Clean"));
    assert_eq!(s(ev, "action2_name").as_deref(), Some("Quarantine"));
    assert_eq!(int(ev, "action_taken"), Some(1));
    assert_eq!(s(ev, "action_taken_name").as_deref(), Some("Quarantine"));
    assert_eq!(int(ev, "virus_type"), Some(2_147_483_952));
    assert_eq!(s(ev, "virus_type_name"), None, "unknown code: number only");
    assert_eq!(int(ev, "flags"), Some(33_570_852));
    assert_eq!(int(ev, "compressed"), Some(1));
    assert_eq!(int(ev, "depth"), Some(1));
    assert_eq!(s(ev, "def_info").as_deref(), Some("20190528.021"));
    assert_eq!(int(ev, "def_sequence"), Some(200_387));
    assert_eq!(s(ev, "clean_info_name").as_deref(), Some("NOT CLEANABLE"));
    assert_eq!(s(ev, "delete_info_name").as_deref(), Some("DELETABLE"));
    assert_eq!(
        s(ev, "machine_guid").as_deref(),
        Some("{86ECAC14-384D-4D77-9A9D-9DE4E01D106A}")
    );
    assert_eq!(s(ev, "mac_address").as_deref(), Some("10:E7:C6:D9:93:E4"));
    assert_eq!(s(ev, "client_version").as_deref(), Some("14.2.1031.64"));
    assert_eq!(int(ev, "event_data2_type"), Some(502));
    assert_eq!(int(ev, "hash_type"), Some(2));
    assert_eq!(s(ev, "hash_type_name").as_deref(), Some("SHA-256"));
    let sha = "A3ED6A40B6A5EA08B9EBB5244C996B44FC84767C91575ECAD7C36A08ABC9063A";
    assert_eq!(s(ev, "sha256").as_deref(), Some(sha));
    assert_eq!(s(ev, "hash").as_deref(), Some(sha));
    assert_eq!(s(ev, "category_set_name").as_deref(), Some("MALWARE"));
    assert_eq!(int(ev, "subcategory_set"), Some(3));
    assert_eq!(
        s(ev, "scan_start_time").as_deref(),
        Some("2019-05-29T08:23:57.000Z")
    );
    assert_eq!(s(ev, "location").as_deref(), Some("Default"));
    assert_eq!(s(ev, "detection").as_deref(), Some("scheduled_scan"));
    assert_eq!(s(ev, "description"), None, "empty quoted field is absent");
    // A detection writes 46, 5 and 51 (twice at this second): only event 5 carries `detection`.
    let same: Vec<&Event> = events
        .iter()
        .filter(|e| e.raw.starts_with("31041D081739,"))
        .collect();
    let flagged: Vec<i64> = same
        .iter()
        .filter(|e| s(e, "detection").is_some())
        .map(|e| int(e, "event_code").unwrap())
        .collect();
    assert_eq!(flagged, [5, 5]);
    assert_eq!(
        same.iter()
            .filter(|e| matches!(int(e, "event_code"), Some(46 | 51)))
            .count(),
        4
    );
    // Local time follows ParseCtx::tz.
    let mut berlin = ctx();
    berlin.tz = TimeZone::get("Europe/Berlin").unwrap_or(TimeZone::fixed(jiff::tz::offset(2)));
    let (again, _) = format::parse_file(Format::SepAvLog, &berlin, ev.raw.as_bytes());
    assert_eq!(time(&again[0]), "2019-05-29T06:23:57.000Z");
}

#[test]
fn av_sub_fields_and_other_events() {
    let all: Vec<Event> = files(&fixtures("sep/client-av"))
        .iter()
        .flat_map(|p| format::parse_file(Format::SepAvLog, &ctx(), &std::fs::read(p).unwrap()).0)
        .collect();
    let load = all
        .iter()
        .find(|e| int(e, "event_code") == Some(7))
        .unwrap();
    assert_eq!(s(load, "event_name").as_deref(), Some("LOAD_PATTERN"));
    assert!(
        s(load, "description")
            .unwrap()
            .starts_with("New virus definition file loaded. Version: ")
    );
    let start = all
        .iter()
        .find(|e| int(e, "event_code") == Some(46))
        .unwrap();
    assert_eq!(s(start, "event_name").as_deref(), Some("ANOMALY_START"));
    assert_eq!(int(start, "event_data_type"), Some(101));
    let sonar = all.iter().find(|e| int(e, "logger") == Some(16)).unwrap();
    assert_eq!(s(sonar, "logger_name").as_deref(), Some("Bash"));
    // Event 51 of the NTFS Log Tracker detection: Event Data 101 and Event Data 2 (502).
    let fin = all
        .iter()
        .find(|e| int(e, "event_code") == Some(51) && s(e, "product_name").is_some())
        .unwrap();
    assert_eq!(s(fin, "anomaly_name").as_deref(), Some("WS.Reputation.1"));
    assert_eq!(s(fin, "anomaly_categories").as_deref(), Some("1;18"));
    assert_eq!(s(fin, "company").as_deref(), Some("blueangel"));
    assert_eq!(int(fin, "file_size"), Some(2_064_896));
    assert_eq!(s(fin, "product_version").as_deref(), Some("1.5.0.0"));
    assert_eq!(s(fin, "product_name").as_deref(), Some("NTFS Log Tracker"));
    assert_eq!(s(fin, "virus_type_name").as_deref(), Some("Reputation"));
    // Remediation (50): the target path with its doubled backslashes undone.
    let rem = all
        .iter()
        .find(|e| s(e, "anomaly_action_type").as_deref() == Some("File Remediation"))
        .unwrap();
    assert!(
        s(rem, "remediation_target")
            .unwrap()
            .starts_with("c:\\Users\\Usernam\\downloads\\")
    );
    // Tamper protection (45): Event Data 301.
    let tamper = all
        .iter()
        .find(|e| int(e, "event_code") == Some(45))
        .unwrap();
    assert_eq!(int(tamper, "event_data_type"), Some(301));
    assert!(s(tamper, "actor_process").is_some());
    assert!(s(tamper, "tamper_operation_name").is_some());
    assert!(s(tamper, "cert_signer").is_some());
    // Scan summary.
    let scan = all.iter().find(|e| s(e, "scan_scanned").is_some()).unwrap();
    assert_eq!(int(scan, "event_code"), Some(2));
    // Event 20 has a name in the full table; unknown codes keep just the number.
    let backup = all
        .iter()
        .find(|e| int(e, "event_code") == Some(20))
        .unwrap();
    assert_eq!(s(backup, "event_name").as_deref(), Some("BACKUP"));
}

#[test]
fn plaso_sep11_file_parses() {
    let bytes = std::fs::read(fixtures("sep/client-av/plaso-Symantec.Log")).unwrap();
    assert!(!bytes.contains(&b'\r'), "LF line endings");
    let (events, errors) = format::parse_file(Format::SepAvLog, &ctx(), &bytes);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(events.len(), 8);
    let ev = events
        .iter()
        .find(|e| e.raw.starts_with("2A0A1E0A2F1D,"))
        .unwrap();
    assert_eq!(time(ev), "2012-11-30T10:47:29.000Z");
    assert_eq!(int(ev, "event_code"), Some(5));
    assert_eq!(s(ev, "logger_name").as_deref(), Some("Real_Time"));
    assert_eq!(s(ev, "detection").as_deref(), Some("auto_protect"));
    assert_eq!(s(ev, "risk_name").as_deref(), Some("W32.Changeup!gen33"));
    assert_eq!(
        s(ev, "file_path").as_deref(),
        Some("D:\\Twinkle_Prod$\\VM11 XXX\\outside\\test.exe.txt")
    );
    assert_eq!(
        s(ev, "action_taken_name").as_deref(),
        Some("Pending Analysis")
    );
    assert_eq!(int(ev, "virus_type"), Some(256));
    assert_eq!(s(ev, "virus_type_name"), None);
    assert_eq!(&*ev.host, "SQLZZSERVEDD");
    assert_eq!(s(ev, "user").as_deref(), Some("davnads"));
}

fn binary(name: &str, kind: LogKind) -> (watchpost_sources::sep::LogHeader, Vec<Event>) {
    let bytes = std::fs::read(fixtures(&format!("sep/client-binary/{name}"))).unwrap();
    let log = parse_log(kind, &ctx(), &bytes);
    assert!(log.errors.is_empty(), "{name}: {:?}", log.errors);
    let header = log.header.expect("header");
    assert_eq!(
        log.events.len() as u64,
        header.entry_count,
        "{name}: records == header entry count"
    );
    let events: Vec<Event> = log.events.into_iter().map(|(_, e)| e).collect();
    let format = Format::of_sep_log(header.kind().expect("known log type"));
    assert_eq!(
        format::parse_file(format, &ctx(), &bytes).0.len(),
        events.len()
    );
    for ev in &events {
        assert!(ev.time.is_some(), "{name}: every record has a time");
        assert_in_schema(format, ev);
    }
    (header, events)
}

#[test]
fn seclog_records_match_the_reference() {
    let (h, events) = binary("seclog3.log", LogKind::Security);
    assert_eq!(
        (h.log_type, h.entry_count, h.running_total, h.max_days),
        (1, 5, 5, 14)
    );
    assert_eq!(h.max_size, 0x80000);
    let ev = &events[0];
    assert_eq!(time(ev), "2019-05-15T14:21:05.860Z");
    assert_eq!(int(ev, "event_id"), Some(206));
    assert_eq!(
        s(ev, "event_name").as_deref(),
        Some("IPS intrusion detected")
    );
    assert_eq!(int(ev, "severity"), Some(3));
    assert_eq!(s(ev, "severity_name").as_deref(), Some("Critical"));
    assert_eq!(s(ev, "local_ip").as_deref(), Some("10.80.116.65"));
    assert_eq!(s(ev, "remote_ip").as_deref(), Some("10.80.116.20"));
    assert_eq!(s(ev, "protocol_name").as_deref(), Some("TCP"));
    assert_eq!(s(ev, "direction_name").as_deref(), Some("inbound"));
    assert_eq!(int(ev, "occurrences"), Some(1));
    assert_eq!(int(ev, "signature_id"), Some(30628));
    assert_eq!(int(ev, "signature_subid"), Some(72299));
    assert_eq!(
        s(ev, "signature_name").as_deref(),
        Some("Web Attack: Malicious Payload Upload 2")
    );
    assert_eq!(s(ev, "signature_category").as_deref(), Some("Web Attack"));
    assert_eq!(ev.get(Sym::new("blocked")), Some(FieldRef::Bool(true)));
    assert_eq!(int(ev, "remote_port"), Some(38423));
    assert_eq!(int(ev, "local_port"), Some(5357));
    assert_eq!(s(ev, "application").as_deref(), Some("SYSTEM"));
    assert_eq!(s(ev, "location").as_deref(), Some("Default"));
    assert_eq!(s(ev, "user").as_deref(), Some("Usernam"));
    assert_eq!(s(ev, "user_domain").as_deref(), Some("doma"));
    assert_eq!(s(ev, "client_version").as_deref(), Some("14.2.758.0000"));
    assert_eq!(
        s(ev, "policy_serial").as_deref(),
        Some("4B78-03/29/2019 03:23:43 714")
    );
    assert!(
        s(ev, "description")
            .unwrap()
            .starts_with("[SID: 30628] Web Attack")
    );
    assert_eq!(s(ev, "local_mac"), None, "all-zero MAC is absent");
    assert_eq!(s(ev, "sha256"), None, "all-zero hash is absent");
    assert_eq!(&*ev.host, "localbox");
}

#[test]
fn seclog_system_infected_record() {
    // The reference's advice: a seclog record with a `System Infected:` name substituted.
    let bytes = std::fs::read(fixtures("sep/client-binary/seclog3.log")).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let start = text.find("\r\n").unwrap() + 2;
    let rec = &bytes[start..start + 0x290];
    let old = b"Web Attack: Malicious Payload Upload 2";
    let new = b"System Infected: Tidserv Activity 012";
    assert_eq!(old.len(), new.len() + 1);
    let mut patched = Vec::new();
    let mut i = 0;
    while i < rec.len() {
        if rec[i..].starts_with(old) {
            patched.extend_from_slice(new);
            patched.push(b' ');
            i += old.len();
        } else {
            patched.push(rec[i]);
            i += 1;
        }
    }
    let parser = Format::SepSecurityLog.parser();
    let ev = parser.parse(&ctx(), &patched).unwrap();
    assert_eq!(
        s(&ev, "signature_name").as_deref(),
        Some("System Infected: Tidserv Activity 012")
    );
    assert_eq!(
        s(&ev, "signature_category").as_deref(),
        Some("System Infected")
    );
    assert_eq!(int(&ev, "signature_id"), Some(30628));
}

#[test]
fn tralog_records_match_the_reference() {
    let (h, events) = binary("tralog.log", LogKind::Traffic);
    assert_eq!(
        (h.log_type, h.entry_count, h.running_total),
        (2, 346, 0x269ca)
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| int(e, "event_id") == Some(302))
            .count(),
        345
    );
    assert!(events.iter().all(|e| s(e, "rule").is_some()));
    let first = &events[0];
    assert_eq!(s(first, "event_name").as_deref(), Some("UDP datagram"));
    assert_eq!(s(first, "local_ip").as_deref(), Some("255.255.255.255"));
    assert_eq!(s(first, "remote_ip").as_deref(), Some("0.0.0.0"));
    assert_eq!(
        (int(first, "local_port"), int(first, "remote_port")),
        (Some(67), Some(68))
    );
    assert_eq!(
        s(first, "rule").as_deref(),
        Some("Block Inbound Malicious Hosts")
    );
    assert_eq!(s(first, "action").as_deref(), Some("blocked"));
    assert_eq!(first.get(Sym::new("blocked")), Some(FieldRef::Bool(true)));
    assert_eq!(s(first, "local_mac").as_deref(), Some("ff:ff:ff:ff:ff:ff"));
    // A MAC containing a TAB byte (0x09) is read as 16 raw bytes, not split.
    assert!(
        events
            .iter()
            .any(|e| s(e, "remote_mac").is_some_and(|m| m.contains(":09:")))
    );
    let rdp = events
        .iter()
        .find(|e| int(e, "event_id") == Some(301))
        .unwrap();
    assert_eq!(s(rdp, "rule").as_deref(), Some("Allow RDP From company1"));
    assert_eq!(s(rdp, "action").as_deref(), Some("allowed"));
    assert_eq!(s(rdp, "local_ip").as_deref(), Some("10.80.2.73"));
    assert_eq!(int(rdp, "local_port"), Some(3389));
    assert_eq!(
        s(rdp, "application").as_deref(),
        Some("C:\\Windows\\System32\\svchost.exe")
    );
    assert_eq!(
        s(rdp, "md5").as_deref(),
        Some("440684C4F823AAE2CC587363F9C477A6")
    );
    assert_eq!(s(rdp, "user").as_deref(), Some("NETWORK SERVICE"));
}

#[test]
fn syslog_records_match_the_reference() {
    let (h, events) = binary("syslog.log", LogKind::System);
    assert_eq!(
        (h.log_type, h.entry_count, h.running_total),
        (0, 829, 0x2a70)
    );
    let first = &events[0];
    assert_eq!(s(first, "event_id").as_deref(), Some("0x1207030C"));
    assert_eq!(
        s(first, "event_name").as_deref(),
        Some("Content Update Server")
    );
    assert_eq!(s(first, "event_source").as_deref(), Some("CVE"));
    let desc = s(first, "description").unwrap();
    assert!(
        desc.contains("\r\n\r\nRemote file path: /content/{810D5A61"),
        "multi-line description kept"
    );
    let lu = &events[1];
    assert_eq!(
        s(lu, "event_name").as_deref(),
        Some("System message from LiveUpdate")
    );
    assert!(
        s(lu, "description")
            .unwrap()
            .ends_with("The new sequence number is 181008032.")
    );
    let sub = events
        .iter()
        .find(|e| s(e, "event_id").as_deref() == Some("0x12130009"))
        .unwrap();
    assert_eq!(s(sub, "data").as_deref(), Some("0x00000BDF"));
    assert_eq!(int(sub, "data_size"), Some(11));
    // A record whose data is an embedded AV log line.
    let av = events
        .iter()
        .find(|e| s(e, "event_id").as_deref() == Some("0x12071042"))
        .unwrap();
    assert!(
        s(av, "data")
            .unwrap()
            .starts_with("300909112503,66,2,0,computer2,")
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| s(e, "event_source").as_deref() == Some("Smc"))
            .count(),
        39
    );
}

#[test]
fn processlog_records_and_the_missing_padding() {
    let (h, events) = binary("processlog.log", LogKind::Process);
    assert_eq!((h.log_type, h.entry_count, h.max_size), (4, 7, 0x100000));
    for ev in &events {
        assert_eq!(int(ev, "event_id"), Some(501));
        assert_eq!(
            s(ev, "event_name").as_deref(),
            Some("Application Control Driver")
        );
        assert_eq!(
            s(ev, "description").as_deref(),
            Some("Application and Device Control is ready")
        );
        assert_eq!(s(ev, "rule_name").as_deref(), Some("Built-in rule"));
        assert_eq!(s(ev, "action").as_deref(), Some("continue"));
        assert_eq!(s(ev, "user_domain").as_deref(), Some("doma"));
    }
    assert_eq!(
        s(&events[0], "ip_address").as_deref(),
        Some("169.254.86.239")
    );
    // The last record is 244 of its declared 318 bytes (no NUL padding at EOF).
    let bytes = std::fs::read(fixtures("sep/client-binary/processlog.log")).unwrap();
    let last_start = bytes.len() - 244;
    assert!(bytes[last_start..].starts_with(b"13e\t"));
    use watchpost_sources::sep::{Frame, frame};
    assert_eq!(frame(&bytes[last_start..], false, true), Frame::Record(244));
    assert_eq!(frame(&bytes[last_start..], false, false), Frame::NeedMore);
}

#[test]
fn detect_recognises_every_fixture() {
    let cases = [
        ("sep/client-av", Some(Format::SepAvLog)),
        (
            "sep/client-binary/seclog3.log",
            Some(Format::SepSecurityLog),
        ),
        ("sep/client-binary/tralog.log", Some(Format::SepTrafficLog)),
        ("sep/client-binary/syslog.log", Some(Format::SepSystemLog)),
        (
            "sep/client-binary/processlog.log",
            Some(Format::SepProcessLog),
        ),
        ("sep/syslog/elastic", Some(Format::SepManagerSyslog)),
        ("evtx/attack-samples/defense-evasion", None),
    ];
    for (sub, want) in cases {
        let path = fixtures(sub);
        let paths = if path.is_dir() {
            files(&path)
        } else {
            vec![path]
        };
        for p in paths
            .iter()
            .filter(|p| !p.to_string_lossy().ends_with(".json"))
        {
            let bytes = std::fs::read(p).unwrap();
            let head = &bytes[..bytes.len().min(4096)];
            assert_eq!(Format::detect(p, head), want, "{}", p.display());
            if sub.starts_with("evtx") {
                assert!(format::is_evtx(head));
            }
        }
    }
}

#[test]
fn fixed_schemas_list_names_once() {
    for f in Format::ALL {
        match f.schema() {
            Schema::Fixed(names) => {
                let mut v = names.to_vec();
                v.sort_unstable();
                v.dedup();
                assert_eq!(v.len(), names.len(), "{}", f.name());
                assert!(
                    !names.iter().any(|n| Sym::new(n).is_metadata()),
                    "{}",
                    f.name()
                );
            }
            Schema::Open => assert!(matches!(
                f,
                Format::SepManagerSyslog
                    | Format::JsonLines
                    | Format::Journald
                    | Format::Evtx
                    | Format::WindowsEventLog
            )),
        }
    }
    assert!(Format::SepAvLog.schema().allows("risk_name"));
    assert!(!Format::SepAvLog.schema().allows("rsik_name"));
    assert!(Format::SepSecurityLog.schema().allows("signature_category"));
}

#[test]
fn docs_list_every_field() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/formats.md"
    ))
    .expect("docs/formats.md");
    let mut names: Vec<&str> = Vec::new();
    for f in Format::ALL {
        if let Schema::Fixed(list) = f.schema() {
            names.extend(list);
        }
    }
    names.extend(watchpost_sources::sep::manager::known_fields());
    for n in names {
        assert!(
            docs.contains(&format!("`{n}`")),
            "docs/formats.md does not mention `{n}`"
        );
    }
}
