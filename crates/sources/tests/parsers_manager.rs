//! SEPM syslog export: every fixture line parses, and the fields Elastic's ingest pipeline
//! derives from each `test-*.log` line (its `-expected.json`) agree with ours where both
//! have them.
//!
//! How an expected key is compared is decided by [`ours`] (the mapping table); keys the
//! comparison leaves out are listed with the reason in [`EXCLUDED`]. A key that is in
//! neither fails the test, so the table stays complete.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::Value as Json;
use watchpost_event::{Event, FieldRef, Sym, format_time};
use watchpost_sources::sep::manager::parse_line;
use watchpost_sources::{Format, ParseCtx, format};

fn dir() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/sep/syslog/elastic"
    ))
    .to_path_buf()
}

fn ctx() -> ParseCtx {
    let mut c = ParseCtx::new("sepm", "localbox");
    c.tz = TimeZone::UTC;
    c
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .filter(|l| !l.trim_ascii().is_empty())
        .collect()
}

fn s(ev: &Event, name: &str) -> Option<String> {
    ev.get_str(Sym::new(name)).map(|c| c.into_owned())
}

fn first(ev: &Event, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| s(ev, n))
}

#[test]
fn every_fixture_line_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let (events, errors) = format::parse_file(Format::SepManagerSyslog, &ctx(), &bytes);
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        assert_eq!(events.len(), lines(&path).len(), "{}", path.display());
        for ev in &events {
            let family = s(ev, "family").unwrap();
            assert_ne!(family, "unknown", "{}: {}", path.display(), ev.raw);
        }
        n += events.len();
    }
    assert_eq!(
        n,
        27 + 32,
        "symantec_endpoint.log (27) and the test-*.log lines (32)"
    );
}

/// Expected keys not compared, and why.
const EXCLUDED: &[(&str, &str)] = &[
    ("ecs.version", "ECS version of the pipeline"),
    ("tags", "pipeline configuration"),
    ("event.kind", "pipeline constant"),
    ("event.category", "ECS categories chosen by the pipeline"),
    ("event.type", "ECS types chosen by the pipeline"),
    (
        "event.outcome",
        "success/failure guessed by the pipeline from the message text",
    ),
    ("related.", "aggregates of fields compared on their own"),
    ("network.community_id", "flow hash computed by the pipeline"),
    ("network.type", "ipv4/ipv6 classification by the pipeline"),
    (
        ".geo.",
        "GeoIP enrichment from Elastic's test database (`geo.name` is a copy of Location)",
    ),
    (".as.", "ASN enrichment from Elastic's test database"),
    (
        "source.domain",
        "pipeline copy of the computer / source computer name",
    ),
    (
        "url.domain",
        "URL decomposition by the pipeline (url.original is compared)",
    ),
    ("url.path", "URL decomposition by the pipeline"),
    ("url.scheme", "URL decomposition by the pipeline"),
    (
        "file.hash.sha1",
        "the pipeline files the certificate thumbprint as a file hash",
    ),
    (
        "file.x509.not_before",
        "pipeline conversion of Signing timestamp (compared as symantec_endpoint.log.signing_timestamp)",
    ),
    ("log.syslog.version", "the RFC 5424 version is not kept"),
];

/// `@timestamp` depends on the pipeline's test configuration for these files.
const TIMESTAMP_EXCLUDED: &[(&str, &str)] = &[
    (
        "test-rfc3164.log",
        "RFC 3164 has no year; the pipeline used its test clock's year",
    ),
    (
        "test-text-log-dump.log",
        "the pipeline's `YYYY-dd-MM` date pattern misreads 2020-01-16",
    ),
];

/// Elastic's provider names and our families.
const PROVIDERS: &[(&str, &str)] = &[
    ("Agent Security Log", "security"),
    ("Agent Traffic Log", "traffic"),
    ("Agent Packet Log", "packet"),
    ("Agent Behavior Log", "behavior"),
    ("Agent Risk Log", "risk"),
    ("Agent Proactive Detection Log", "proactive_threat"),
    ("Agent Scan Log", "scan"),
    ("Agent System Log", "agent_system"),
    ("Agent Activity Log", "agent_activity"),
    ("System Log", "server_system"),
    ("Administrative Log", "administrative"),
    ("Policy Log", "policy"),
];

/// How a value is normalised before comparing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Norm {
    /// Trimmed text.
    Exact,
    /// Case-insensitive.
    Caseless,
    /// A time: ours `YYYY-MM-DD hh:mm:ss` (UTC), epoch seconds or RFC 3339.
    Time,
    /// A MAC address: separators dropped, upper case.
    Mac,
    /// Expected holds an array; ours must be one of its members.
    Member,
    /// Expected holds an array of MACs; ours must be one of them.
    MacMember,
}

/// Our value for an Elastic key, or `None` when we have no counterpart for this line.
/// `Err` when the key has no mapping at all.
fn ours(key: &str, ev: &Event, file: &str) -> Result<Option<(String, Norm)>, ()> {
    use Norm::*;
    let family = s(ev, "family").unwrap_or_default();
    let inbound = s(ev, "traffic_direction").is_some_and(|d| d == "Inbound");
    let network = matches!(family.as_str(), "security" | "traffic" | "packet");
    let side = |src: bool| -> &'static str {
        match (src, inbound) {
            (true, true) | (false, false) => "remote",
            _ => "local",
        }
    };
    let v = |names: &[&str], n: Norm| Ok(first(ev, names).map(|x| (x, n)));
    if let Some(k) = key.strip_prefix("symantec_endpoint.log.") {
        let name = match k {
            "sha-256" => "sha256",
            "md-5" => "md5",
            "local_host_name" => "computer_name",
            "source" => "scan_source",
            "submission_recommended" => "detection_submissions",
            "domain_name" if file == "test-agent-activity.log" => "user_domain",
            other => other,
        };
        let norm = match k {
            "event_time" | "inserted" | "last_update_time" | "signing_timestamp" => Time,
            "action" => Caseless,
            _ => Exact,
        };
        return v(&[name], norm);
    }
    match key {
        "@timestamp" => Ok(ev.time.map(|t| (format_time(t), Time))),
        "host.name" | "host.hostname" => Ok(Some((ev.host.to_string(), Exact))),
        "message" => v(&["event_description"], Exact),
        "user.name" => v(&["user_name", "admin", "user1"], Exact),
        "user.domain" => v(&["user_domain", "domain_name"], Exact),
        "host.ip" => v(&["local_host_ip", "ip_address"], Member),
        "host.mac" => v(&["local_host_mac"], MacMember),
        "source.ip" | "source.address" | "destination.ip" | "destination.address" if network => {
            let src = key.starts_with("source");
            Ok(s(ev, &format!("{}_host_ip", side(src))).map(|x| (x, Exact)))
        }
        "source.port" | "destination.port" if network => {
            Ok(s(ev, &format!("{}_port", side(key.starts_with("source")))).map(|x| (x, Exact)))
        }
        "source.mac" | "destination.mac" if network => {
            Ok(s(ev, &format!("{}_host_mac", side(key.starts_with("source")))).map(|x| (x, Mac)))
        }
        "source.ip" | "source.address" if family == "behavior" => v(&["local_host_ip"], Exact),
        "source.ip" | "source.address"
            if matches!(family.as_str(), "risk" | "proactive_threat") =>
        {
            v(&["source_ip"], Exact)
        }
        "process.executable" => v(
            &["application", "caller_process_name", "downloaded_by"],
            Exact,
        ),
        "process.pid" => v(&["caller_process_id"], Exact),
        "process.hash.sha256" => v(&["sha256"], Caseless),
        "process.hash.md5" => v(&["md5"], Caseless),
        "file.path" => v(&["file_path"], Exact),
        "file.size" => v(&["file_size_bytes"], Exact),
        "file.pe.company" => v(&["company_name"], Exact),
        "file.pe.product" => v(&["application_name"], Exact),
        "file.pe.file_version" => v(&["application_version"], Exact),
        "file.x509.serial_number" => v(&["certificate_serial_number"], Exact),
        "file.x509.issuer.common_name" => v(&["certificate_issuer"], Member),
        "rule.name" => v(&["rule"], Exact),
        "rule.id" => v(&["intrusion_id"], Exact),
        "event.count" => v(&["occurrences"], Exact),
        "event.start" => v(&["begin"], Time),
        "event.end" => v(&["end"], Time),
        "event.action" => v(&["action", "actual_action"], Caseless),
        "event.provider" => Ok(Some((family, Exact))),
        "event.duration" => Ok(s(ev, "duration_seconds")
            .and_then(|d| d.parse::<f64>().ok())
            .map(|d| (format!("{}", d * 1e9), Exact))),
        "network.direction" => Ok(s(ev, "traffic_direction").map(|d| {
            let ecs = if d == "Inbound" { "ingress" } else { "egress" };
            (ecs.to_owned(), Exact)
        })),
        "network.transport" => v(&["network_protocol"], Caseless),
        "log.syslog.hostname" => v(&["syslog_hostname"], Exact),
        "log.syslog.priority" => v(&["syslog_priority"], Exact),
        "log.syslog.appname" | "log.syslog.process.name" => v(&["syslog_appname"], Exact),
        "log.syslog.process.pid" => v(&["syslog_procid"], Exact),
        "log.level" => v(&["severity"], Exact),
        "url.original" => v(&["intrusion_url", "download_site"], Exact),
        _ => Err(()),
    }
}

fn flatten(prefix: &str, v: &Json, out: &mut Vec<(String, Json)>) {
    match v {
        Json::Object(m) => {
            for (k, inner) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, inner, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

fn scalar(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Bool(false) => "No".into(),
        Json::Bool(true) => "Yes".into(),
        Json::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && n.is_f64() => format!("{f}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn norm_time(s: &str) -> String {
    let s = s.trim();
    if let Ok(t) = s.parse::<Timestamp>() {
        return format_time(t);
    }
    if s.len() == 19
        && let Ok(t) = format!("{}T{}Z", &s[..10], &s[11..]).parse::<Timestamp>()
    {
        return format_time(t);
    }
    match s
        .parse::<i64>()
        .ok()
        .and_then(|x| Timestamp::from_second(x).ok())
    {
        Some(t) => format_time(t),
        None => s.to_owned(),
    }
}

fn norm_mac(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Compares one expected value with ours; `Err` explains a mismatch.
fn compare(expected: &Json, ours: &str, norm: Norm) -> Result<(), String> {
    let members = || -> Vec<String> {
        match expected {
            Json::Array(a) => a.iter().map(scalar).collect(),
            other => vec![scalar(other)],
        }
    };
    let ok = match norm {
        Norm::Exact => scalar(expected).trim() == ours.trim(),
        Norm::Caseless => scalar(expected).trim().eq_ignore_ascii_case(ours.trim()),
        Norm::Time => norm_time(&scalar(expected)) == norm_time(ours),
        Norm::Mac => norm_mac(&scalar(expected)) == norm_mac(ours),
        Norm::Member => members().iter().any(|m| m.trim() == ours.trim()),
        Norm::MacMember => members().iter().any(|m| norm_mac(m) == norm_mac(ours)),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected {expected}, ours {ours:?} ({norm:?})"))
    }
}

#[test]
fn fields_agree_with_elastics_expected_output() {
    let mut compared = 0;
    let mut failures = Vec::new();
    let mut unmapped = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".log-expected.json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 17);
    for exp_path in files {
        let log_path = PathBuf::from(
            exp_path
                .to_string_lossy()
                .trim_end_matches("-expected.json"),
        );
        let file = log_path.file_name().unwrap().to_string_lossy().into_owned();
        let expected: Json = serde_json::from_slice(&std::fs::read(&exp_path).unwrap()).unwrap();
        let docs = expected["expected"].as_array().unwrap();
        let lines = lines(&log_path);
        assert_eq!(docs.len(), lines.len(), "{file}");
        for (i, (doc, line)) in docs.iter().zip(&lines).enumerate() {
            assert_eq!(
                doc["event"]["original"].as_str().unwrap().as_bytes(),
                line.as_slice()
            );
            let ev = parse_line(&ctx(), line).unwrap_or_else(|e| panic!("{file}:{}: {e}", i + 1));
            let mut flat = Vec::new();
            flatten("", doc, &mut flat);
            for (key, value) in flat {
                if key == "event.original"
                    || EXCLUDED
                        .iter()
                        .any(|(k, _)| key.starts_with(k) || (k.starts_with('.') && key.contains(k)))
                    || (key == "@timestamp" && TIMESTAMP_EXCLUDED.iter().any(|(f, _)| *f == file))
                {
                    continue;
                }
                let value = if key == "event.provider" {
                    let p = value.as_str().unwrap_or_default();
                    let fam = PROVIDERS.iter().find(|(n, _)| *n == p).map(|(_, f)| *f);
                    Json::String(fam.unwrap_or(p).to_owned())
                } else {
                    value
                };
                match ours(&key, &ev, &file) {
                    Err(()) => unmapped.push(format!("{file}:{}: {key}", i + 1)),
                    Ok(None) => {}
                    Ok(Some((mine, norm))) => {
                        compared += 1;
                        if let Err(why) = compare(&value, &mine, norm) {
                            failures.push(format!("{file}:{}: {key}: {why}", i + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(
        unmapped.is_empty(),
        "expected keys with no mapping or exclusion:\n{}",
        unmapped.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared > 600, "only {compared} values compared");
}

/// The `server04` line of test-agent-security.log with a `System Infected:` name.
#[test]
fn system_infected_ips_line() {
    let original = &lines(&dir().join("test-agent-security.log"))[3];
    let text = String::from_utf8(original.clone()).unwrap();
    assert!(text.starts_with("server04,"));
    let name = "Audit: Nessus Vulnerability Scanner Activity 3";
    let line = text
        .replace(name, "System Infected: Tidserv Activity")
        .replace(" detected but not blocked", " blocked");
    let ev = parse_line(&ctx(), line.as_bytes()).unwrap();
    assert_eq!(s(&ev, "family").as_deref(), Some("security"));
    assert_eq!(
        s(&ev, "signature_name").as_deref(),
        Some("System Infected: Tidserv Activity")
    );
    assert_eq!(
        s(&ev, "signature_category").as_deref(),
        Some("System Infected")
    );
    assert_eq!(ev.get(Sym::new("signature_id")), Some(FieldRef::Int(30369)));
    assert_eq!(ev.get(Sym::new("blocked")), Some(FieldRef::Bool(true)));
    assert_eq!(&*ev.host, "server04");
    // Without the CIDS fields the name comes from the event description.
    let cut = line.find(",CIDS Signature ID").unwrap();
    let ev = parse_line(&ctx(), &line.as_bytes()[..cut]).unwrap();
    assert_eq!(
        s(&ev, "signature_name").as_deref(),
        Some("System Infected: Tidserv Activity")
    );
    assert_eq!(
        s(&ev, "signature_category").as_deref(),
        Some("System Infected")
    );
    assert_eq!(ev.get(Sym::new("signature_id")), Some(FieldRef::Int(30369)));
    // The original line: detected, not blocked.
    let ev = parse_line(&ctx(), original).unwrap();
    assert_eq!(ev.get(Sym::new("blocked")), Some(FieldRef::Bool(false)));
    assert_eq!(s(&ev, "signature_category").as_deref(), Some("Audit"));
}

#[test]
fn quirks_of_the_sample_file() {
    let all = lines(&dir().join("symantec_endpoint.log"));
    let sonar = all
        .iter()
        .find(|l| l.starts_with(b"Potential risk found"))
        .unwrap();
    let ev = parse_line(&ctx(), sonar).unwrap();
    // "Application version: ""3",0,6,"0""" is one value split over four CSV cells.
    assert_eq!(s(&ev, "application_version").as_deref(), Some("3,0,6,0"));
    assert_eq!(
        s(&ev, "file_path").as_deref(),
        Some("f:\\user\\workspace\\baseline package creator\\release\\Host214")
    );
    assert_eq!(s(&ev, "detection_submissions").as_deref(), Some("No"));
    assert_eq!(s(&ev, "scan_source").as_deref(), Some("Heuristic Scan"));
    // A SONAR detection (`Detection type:`): the proactive detection log, not the risk log.
    assert_eq!(s(&ev, "family").as_deref(), Some("proactive_threat"));
    let scan = all
        .iter()
        .find(|l| l.starts_with(b"Scan ID: 1448882755"))
        .unwrap();
    let ev = parse_line(&ctx(), scan).unwrap();
    assert_eq!(
        s(&ev, "event_description").as_deref(),
        Some("Scan started on selected drives and folders and all extensions."),
        "single quotes stripped"
    );
    assert_eq!(
        s(&ev, "group").as_deref(),
        Some("My Company\\Workstations\\Information Technology\\")
    );
    assert_eq!(&*ev.host, "IBV-HQ-L12");
    let packet = all
        .iter()
        .find(|l| l.windows(11).any(|w| w == b",Local Host"))
        .unwrap();
    let ev = parse_line(&ctx(), packet).unwrap();
    assert_eq!(s(&ev, "family").as_deref(), Some("packet"));
    assert_eq!(
        s(&ev, "remote_host_ip").as_deref(),
        Some("81.2.69.144."),
        "trailing dot kept verbatim"
    );
    // Unknown labels are kept; bare values beyond the family's list are numbered.
    let ev = parse_line(
        &ctx(),
        b"Site: S,Server: x,Something odd: 1,LiveUpdate started.,extra",
    )
    .unwrap();
    assert_eq!(
        s(&ev, "event_description").as_deref(),
        Some("Something odd: 1")
    );
    assert_eq!(s(&ev, "bare_1").as_deref(), Some("LiveUpdate started."));
    let ev = parse_line(
        &ctx(),
        b"host1,Event Description: x,Brand New Label: 42,Host: y",
    )
    .unwrap();
    assert_eq!(s(&ev, "brand_new_label").as_deref(), Some("42"));
    assert_eq!(s(&ev, "host_label").as_deref(), Some("y"));
    assert_eq!(&*ev.host, "host1");
}

#[test]
fn header_host_and_time_rules() {
    // A server-family line names no computer: the SEPM server is the host.
    let ev = parse_line(&ctx(), b"Site: S,Server: sepm01,LiveUpdate started.").unwrap();
    assert_eq!(&*ev.host, "sepm01");
    assert_eq!(ev.time, None);
    // Behind an RFC 5424 header without payload computer: the header host.
    let line =
        b"<14>1 2024-03-01T10:00:00Z sepm02 SymantecServer - - - Site: S,LiveUpdate started.";
    let ev = parse_line(&ctx(), line).unwrap();
    assert_eq!(format_time(ev.time.unwrap()), "2024-03-01T10:00:00.000Z");
    assert_eq!(s(&ev, "syslog_hostname").as_deref(), Some("sepm02"));
    // Payload Event time wins over the header time.
    let line = b"<54>Jun 7 09:16:10 SERVER SymantecServer: DESKTOP,Category: 0,Smc,Event Description: x,Event time: 2023-06-07 09:09:54";
    let ev = parse_line(&ctx(), line).unwrap();
    assert_eq!(format_time(ev.time.unwrap()), "2023-06-07T09:09:54.000Z");
    assert_eq!(&*ev.host, "DESKTOP");
}

/// One message of each log type the manager exports, in each shape it is written in,
/// classified into the manager's own log types. Lines from Elastic's pipeline tests
/// (tests/data) where they exist; the others are written after the formats that
/// Broadcom's External Logging reference and Splunk Connect for Syslog's and SEKOIA's
/// SEP parsers document (a labelled `Event Description:` in administrative and policy
/// lines, `Server Name:` in the server's system log, SONAR's own opening).
#[test]
fn every_family_of_the_managers_logs() {
    let elastic = |file: &str, n: usize| -> String {
        String::from_utf8(lines(&dir().join(file))[n].clone()).unwrap()
    };
    /// (family, line, fields it must have)
    type Case = (
        &'static str,
        String,
        &'static [(&'static str, &'static str)],
    );
    let cases: Vec<Case> = vec![
        (
            "administrative",
            elastic("test-administrative.log", 0),
            &[("admin", "_originUser"), ("event_description", "Administrator log on succeeded")],
        ),
        (
            "administrative",
            elastic("test-administrative.log", 1),
            &[("event_description", "Administrator  log on failed")],
        ),
        (
            "administrative",
            "Site: HQ,Server Name: SEPM01,Domain Name: Default,Admin: jdoe,Event Description: Administrator log on failed".into(),
            &[("admin", "jdoe"), ("event_description", "Administrator log on failed")],
        ),
        (
            "administrative",
            "Site: HQ,Server: SEPM01,Domain: Default,Admin: admin,Administrator jdoe was added".into(),
            &[("event_description", "Administrator jdoe was added")],
        ),
        (
            "policy",
            elastic("test-policy.log", 0),
            &[("policy_name", "SEPPolicyName")],
        ),
        (
            "policy",
            "Site: HQ,Server Name: SEPM01,Domain Name: Default,Admin: admin,\"Event Description: Policy has been edited: Edited shared Firewall policy: Office\",Office".into(),
            &[
                ("event_description", "Policy has been edited: Edited shared Firewall policy: Office"),
                ("policy_name", "Office"),
            ],
        ),
        (
            "server_system",
            elastic("test-system.log", 2),
            &[("event_description", "LiveUpdate started.")],
        ),
        (
            "server_system",
            "Site: HQ,Server Name: SEPM01,Event Description: No updates found for Application Control Data 14.3.".into(),
            &[("server", "SEPM01")],
        ),
        (
            "agent_activity",
            elastic("test-agent-activity.log", 0),
            &[("computer_name", "TESTHOST01"), ("user_name", "sampleuser01")],
        ),
        (
            "agent_system",
            elastic("test-agent-system.log", 0),
            &[("event_source", "CVE")],
        ),
        (
            "agent_system",
            elastic("test-policy-rfc3164-sep14-3ru7.log", 0),
            &[("event_source", "Smc")],
        ),
        (
            "risk",
            elastic("test-agent-risk.log", 0),
            &[("risk_name", "WS.Reputation.1")],
        ),
        (
            "proactive_threat",
            elastic("test-agent-proactive-detection-sonar.log", 0),
            &[("detection_type", "Heuristic")],
        ),
        (
            "proactive_threat",
            "SONAR detection now allowed,Computer name: PC7,IP Address: 10.0.0.7,Detection type: Heuristic,First Seen: Symantec has known about this file for more than 1 year.,Application name: Tool,Application type: 127,Application version: 1.2,Hash type: SHA-256,Application hash: 00ff,Company name: Example,File size (bytes): 1024,Sensitivity: 2,Detection score: 3,COH Engine Version: 8.1.1.1,Detection Submissions No,Permitted application reason: MDS,Disposition: Good,Download site: ,Web domain: ,Downloaded by: ,Prevalence: Unknown,Confidence: There is not enough information about this file to recommend it.,URL Tracking Status: Off,Risk Level: Low,Detection Source: N/A,Source: Heuristic Scan,Risk name: ,Occurrences: 1,c:/tools/tool.exe,,Actual action: Allowed,Requested action: Allowed,Secondary action: Left alone,Event time: 2024-03-04 10:11:12,Inserted: 2024-03-04 10:11:30,End: 2024-03-04 10:11:12,Domain: Default,Group: My Company\\Workstations,Server: SEPM01,User: jdoe,Source computer: ,Source IP: ".into(),
            &[("computer_name", "PC7"), ("file_path", "c:/tools/tool.exe")],
        ),
        (
            "scan",
            elastic("test-agent-scan.log", 0),
            &[("action", "Started")],
        ),
        (
            "behavior",
            elastic("test-agent-behavior.log", 0),
            &[("action", "Blocked"), ("local_host_ip", "216.160.83.57")],
        ),
        (
            "packet",
            elastic("test-agent-packet.log", 0),
            &[("traffic_direction", "Outbound")],
        ),
        (
            "security",
            elastic("test-agent-security.log", 1),
            &[("signature_name", "Portscan")],
        ),
        (
            "traffic",
            elastic("test-agent-traffic.log", 0),
            &[("rule", "Drop all IPv4")],
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (family, line, fields) in &cases {
        let ev = parse_line(&ctx(), line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(s(&ev, "family").as_deref(), Some(*family), "{line}");
        for (name, value) in *fields {
            assert_eq!(s(&ev, name).as_deref(), Some(*value), "{name} in {line}");
        }
        assert!(
            watchpost_sources::sep::manager::recognises(line.as_bytes()),
            "recognised as the manager's: {line}"
        );
        seen.insert(*family);
    }
    let all: std::collections::BTreeSet<&str> = watchpost_sources::sep::manager::ALL_FAMILIES
        .iter()
        .map(|f| f.name())
        .filter(|n| *n != "unknown")
        .collect();
    assert_eq!(seen, all, "one message of each family");
    // Comma-separated text that is none of them is not taken for the manager's export.
    for other in [
        "alpha,beta,gamma,delta",
        "host1,10.0.0.1,Blocked,something else",
    ] {
        assert!(
            !watchpost_sources::sep::manager::recognises(other.as_bytes()),
            "{other}"
        );
    }
}
