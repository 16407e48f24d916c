//! Every modifier and condition form on hand-made events.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use watchpost_event::{Event, Sym, Value};
use watchpost_sigma::{
    CorrelationMatch, Correlator, Level, LoadOptions, Match, Placeholders, Ruleset,
};

/// A Sysmon-like process creation event (channel and event id set) with extra fields.
fn ev(fields: &[(&str, &str)]) -> Event {
    let mut e = Event::new(Arc::from("evtx"), Arc::from("pc"), String::new());
    for (k, v) in fields {
        e.push(Sym::new(k), Value::Str((*v).into()));
    }
    e.finish();
    e
}

fn sysmon1(fields: &[(&str, &str)]) -> Event {
    let mut all = vec![
        ("channel", "Microsoft-Windows-Sysmon/Operational"),
        ("event_id", "1"),
    ];
    all.extend_from_slice(fields);
    ev(&all)
}

/// A process_creation rule with the given detection body (YAML, indented by 4).
fn rule(detection: &str) -> Ruleset {
    let yaml = format!(
        "title: t\nid: 1\nlevel: high\nlogsource:\n    product: windows\n    category: process_creation\ndetection:\n{detection}\n"
    );
    let (rs, errors) = Ruleset::from_yaml(Path::new("t.yml"), &yaml);
    assert!(errors.is_empty(), "{errors:?}\n{yaml}");
    rs
}

fn rejects(detection: &str) -> String {
    let yaml = format!(
        "title: t\nlogsource:\n    product: windows\n    category: process_creation\ndetection:\n{detection}\n"
    );
    let (rs, errors) = Ruleset::from_yaml(Path::new("t.yml"), &yaml);
    assert_eq!(rs.len(), 0, "{detection}");
    assert_eq!(errors.len(), 1);
    errors[0].reason.clone()
}

fn hit(rs: &Ruleset, e: &Event) -> bool {
    let mut out = Vec::new();
    rs.matches(e, &mut out) > 0
}

fn cl(s: &str) -> Event {
    sysmon1(&[("CommandLine", s)])
}

#[test]
fn plain_values_are_case_insensitive_with_wildcards() {
    let rs = rule("    sel:\n        CommandLine: 'C:\\Windows\\\\*.exe /?'\n    condition: sel");
    assert!(hit(&rs, &cl("c:\\windows\\system32\\CMD.EXE /x")));
    assert!(!hit(&rs, &cl("c:\\windows\\cmd.exe /xx")));
    let rs = rule("    sel:\n        CommandLine: 'a\\*b'\n    condition: sel");
    assert!(hit(&rs, &cl("A*B")) && !hit(&rs, &cl("axb")));
}

#[test]
fn contains_startswith_endswith_all_cased() {
    let rs = rule("    sel:\n        CommandLine|contains: mimikatz\n    condition: sel");
    assert!(hit(&rs, &cl("run MimiKatz.exe")) && !hit(&rs, &cl("mimi")));
    let rs = rule("    sel:\n        CommandLine|startswith: 'cmd'\n    condition: sel");
    assert!(hit(&rs, &cl("CMD /c")) && !hit(&rs, &cl("x cmd")));
    let rs = rule("    sel:\n        CommandLine|endswith: '.ps1'\n    condition: sel");
    assert!(hit(&rs, &cl("a.PS1")) && !hit(&rs, &cl("a.ps1x")));
    let rs = rule(
        "    sel:\n        CommandLine|contains|all:\n            - '-enc'\n            - 'hidden'\n    condition: sel",
    );
    assert!(hit(&rs, &cl("ps -ENC x -w hidden")) && !hit(&rs, &cl("ps -enc x")));
    let rs = rule(
        "    sel:\n        CommandLine|contains:\n            - '-enc'\n            - 'hidden'\n    condition: sel",
    );
    assert!(hit(&rs, &cl("ps -enc x")));
    let rs = rule("    sel:\n        CommandLine|contains|cased: 'Secret'\n    condition: sel");
    assert!(hit(&rs, &cl("a Secret b")) && !hit(&rs, &cl("a secret b")));
}

#[test]
fn regular_expressions() {
    let rs = rule("    sel:\n        CommandLine|re: 'ab+c$'\n    condition: sel");
    assert!(
        hit(&rs, &cl("xabbc")) && !hit(&rs, &cl("xABBC")),
        "re is case-sensitive"
    );
    let rs = rule("    sel:\n        CommandLine|re|i: 'ab+c$'\n    condition: sel");
    assert!(hit(&rs, &cl("xABBC")));
    let rs = rule("    sel:\n        CommandLine|re|m: '^b$'\n    condition: sel");
    assert!(hit(&rs, &cl("a\nb\nc")));
    let rs = rule("    sel:\n        CommandLine|re|s: 'a.b'\n    condition: sel");
    assert!(hit(&rs, &cl("a\nb")));
    let rs = rule("    sel:\n        CommandLine|re: 'a.b'\n    condition: sel");
    assert!(!hit(&rs, &cl("a\nb")));
    assert!(
        rejects("    sel:\n        CommandLine|re: '(?<=a)b'\n    condition: sel")
            .starts_with("sel: regex")
    );
}

#[test]
fn base64_and_utf16() {
    // base64("whoami") = d2hvYW1p
    let rs = rule("    sel:\n        CommandLine|base64: 'whoami'\n    condition: sel");
    assert!(
        hit(&rs, &cl("d2hvYW1p")) && !hit(&rs, &cl("D2HVYW1P")),
        "base64 is cased"
    );
    let rs =
        rule("    sel:\n        CommandLine|base64offset|contains: '/c ping'\n    condition: sel");
    assert!(hit(&rs, &cl("xx L2MgcGluZ yy")));
    assert!(hit(&rs, &cl("9jIHBpbm")));
    assert!(hit(&rs, &cl("-e vYyBwaW5n")));
    // "ab" as UTF-16LE = 61 00 62 00 → YQBiAA==; UTF-16BE 00 61 00 62 → AGEAYg==;
    // utf16 (BOM FF FE + LE) → //5hAGIA
    let rs = rule("    sel:\n        CommandLine|wide|base64: 'ab'\n    condition: sel");
    assert!(hit(&rs, &cl("YQBiAA==")));
    let rs = rule("    sel:\n        CommandLine|utf16le|base64: 'ab'\n    condition: sel");
    assert!(hit(&rs, &cl("YQBiAA==")));
    let rs = rule("    sel:\n        CommandLine|utf16be|base64: 'ab'\n    condition: sel");
    assert!(hit(&rs, &cl("AGEAYg==")));
    let rs = rule("    sel:\n        CommandLine|utf16|base64: 'ab'\n    condition: sel");
    assert!(hit(&rs, &cl("//5hAGIA")));
    let rs =
        rule("    sel:\n        CommandLine|wide|base64offset|contains: 'ab'\n    condition: sel");
    assert!(hit(&rs, &cl("powershell -enc xYQBiAAx")));
    // wide alone: the value with NULs between characters.
    let rs = rule("    sel:\n        CommandLine|wide|contains: 'ab'\n    condition: sel");
    assert!(hit(&rs, &cl("xa\0b\0y")) && !hit(&rs, &cl("xaby")));
}

#[test]
fn windash() {
    let rs =
        rule("    sel:\n        CommandLine|windash|contains: ' -exec bypass'\n    condition: sel");
    for v in [
        "a -exec bypass",
        "a /exec bypass",
        "a \u{2013}exec bypass",
        "a \u{2014}exec bypass",
        "a \u{2015}exec bypass",
    ] {
        assert!(hit(&rs, &cl(v)), "{v}");
    }
    assert!(!hit(&rs, &cl("a +exec bypass")));
}

#[test]
fn cidr_exists_fieldref_numbers_null() {
    let rs = rule(
        "    sel:\n        DestinationIp|cidr:\n            - '10.0.0.0/8'\n            - 'fe80::/10'\n    condition: sel",
    );
    assert!(hit(&rs, &sysmon1(&[("DestinationIp", "10.2.3.4")])));
    assert!(hit(&rs, &sysmon1(&[("DestinationIp", "fe80::1")])));
    assert!(!hit(&rs, &sysmon1(&[("DestinationIp", "8.8.8.8")])));

    let rs = rule("    sel:\n        Hashes|exists: true\n    condition: sel");
    assert!(hit(&rs, &sysmon1(&[("Hashes", "")])) && !hit(&rs, &sysmon1(&[])));
    let rs = rule("    sel:\n        Hashes|exists: false\n    condition: sel");
    assert!(!hit(&rs, &sysmon1(&[("Hashes", "x")])) && hit(&rs, &sysmon1(&[])));

    let rs = rule("    sel:\n        Image|fieldref: ParentImage\n    condition: sel");
    assert!(hit(
        &rs,
        &sysmon1(&[("Image", "C:\\a.exe"), ("ParentImage", "c:\\A.exe")])
    ));
    assert!(!hit(
        &rs,
        &sysmon1(&[("Image", "C:\\a.exe"), ("ParentImage", "c:\\b.exe")])
    ));
    let rs = rule("    sel:\n        CommandLine|fieldref|contains: Image\n    condition: sel");
    assert!(hit(
        &rs,
        &sysmon1(&[("Image", "a.exe"), ("CommandLine", "run a.exe now")])
    ));

    for (m, yes, no) in [
        ("lt", "4", "5"),
        ("lte", "5", "6"),
        ("gt", "6", "5"),
        ("gte", "5", "4"),
    ] {
        let rs = rule(&format!(
            "    sel:\n        Count|{m}: 5\n    condition: sel"
        ));
        assert!(hit(&rs, &sysmon1(&[("Count", yes)])), "{m} {yes}");
        assert!(!hit(&rs, &sysmon1(&[("Count", no)])), "{m} {no}");
        assert!(!hit(&rs, &sysmon1(&[("Count", "x")])));
    }

    let rs = rule("    sel:\n        ParentImage: null\n    condition: sel");
    assert!(hit(&rs, &sysmon1(&[])) && hit(&rs, &sysmon1(&[("ParentImage", "")])));
    assert!(!hit(&rs, &sysmon1(&[("ParentImage", "x")])));
    let rs = rule("    sel:\n        ParentImage: ''\n    condition: sel");
    assert!(hit(&rs, &sysmon1(&[("ParentImage", "")])) && !hit(&rs, &sysmon1(&[])));
}

#[test]
fn unsupported_and_broken_rules_are_reported() {
    assert!(
        rejects("    sel:\n        CommandLine|expand: '%x%'\n    condition: sel")
            .contains("`expand`: placeholder `%x%` has no values")
    );
    assert!(
        rejects("    sel:\n        CommandLine|bogus: 'x'\n    condition: sel")
            .contains("unknown modifier")
    );
    assert!(
        rejects("    sel:\n        CommandLine: 'x'\n    condition: sel and other")
            .contains("unknown identifier")
    );
    assert!(
        rejects("    sel:\n        CommandLine: 'x'\n    condition: sel | min(Size) > 3")
            .contains("aggregation function `min` is not supported")
    );
    assert!(
        rejects("    sel:\n        CommandLine: 'x'\n    other:\n        CommandLine: 'y'")
            .contains("no condition")
    );
    // One identifier and no condition: that identifier (as Hayabusa reads it).
    assert!(hit(&rule("    sel:\n        CommandLine: 'x'"), &cl("x")));
    let (rs, errors) = Ruleset::from_yaml(Path::new("x.yml"), "title: [unclosed\n");
    assert_eq!((rs.len(), errors.len()), (0, 1));
    assert!(errors[0].reason.starts_with("YAML"));
    let (_, errors) = Ruleset::from_yaml(
        Path::new("x.yml"),
        "title: t\nlogsource:\n    product: windows\n    service: nonesuch\ndetection:\n    s:\n        a: b\n    condition: s\n",
    );
    assert!(errors[0].reason.contains("not mapped"), "{errors:?}");
}

#[test]
fn conditions() {
    let d = "    sel_a:\n        CommandLine|contains: aaa\n    sel_b:\n        CommandLine|contains: bbb\n    filter:\n        CommandLine|contains: fff\n    _aux:\n        CommandLine|contains: zzz\n";
    let check = |cond: &str, cases: &[(&str, bool)]| {
        let rs = rule(&format!("{d}    condition: {cond}"));
        for (v, want) in cases {
            assert_eq!(hit(&rs, &cl(v)), *want, "{cond} on {v}");
        }
    };
    check("sel_a and sel_b", &[("aaa bbb", true), ("aaa", false)]);
    check("sel_a or sel_b", &[("bbb", true), ("ccc", false)]);
    check("sel_a and not filter", &[("aaa", true), ("aaa fff", false)]);
    check(
        "(sel_a or sel_b) and not filter",
        &[("bbb", true), ("bbb fff", false)],
    );
    check("not (sel_a or sel_b)", &[("ccc", true), ("aaa", false)]);
    check("1 of sel_*", &[("bbb", true), ("fff", false)]);
    check("all of sel_*", &[("aaa bbb", true), ("aaa", false)]);
    check("1 of them", &[("fff", true), ("zzz", false)]);
    check("all of them", &[("aaa bbb fff", true), ("aaa bbb", false)]);
    check("any of sel*", &[("aaa", true)]);
    check(
        "1 of sel_* and not 1 of filter*",
        &[("aaa", true), ("aaa fff", false)],
    );
    // A condition list is an or.
    let rs = rule(&format!(
        "{d}    condition:\n        - sel_a\n        - sel_b"
    ));
    assert!(hit(&rs, &cl("bbb")));
}

#[test]
fn lists_of_maps_and_keywords() {
    let rs = rule(
        "    sel:\n        - Image|endswith: '\\a.exe'\n          CommandLine|contains: x\n        - Image|endswith: '\\b.exe'\n    condition: sel",
    );
    assert!(hit(
        &rs,
        &sysmon1(&[("Image", "c:\\a.exe"), ("CommandLine", "x")])
    ));
    assert!(!hit(
        &rs,
        &sysmon1(&[("Image", "c:\\a.exe"), ("CommandLine", "y")])
    ));
    assert!(hit(&rs, &sysmon1(&[("Image", "c:\\b.exe")])));
    let rs =
        rule("    keywords:\n        - 'evil*thing'\n        - 'other'\n    condition: keywords");
    assert!(hit(&rs, &sysmon1(&[("Whatever", "an EVIL little thing")])));
    assert!(!hit(&rs, &sysmon1(&[("Whatever", "nothing")])));
}

#[test]
fn process_creation_on_security_4688_and_match_metadata() {
    let yaml = "title: Whoami\nid: abc\nlevel: high\ntags:\n    - attack.discovery\nlogsource:\n    product: windows\n    category: process_creation\ndetection:\n    sel:\n        Image|endswith: '\\whoami.exe'\n    condition: sel\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("w.yml"), yaml);
    assert!(errors.is_empty());
    let sec = ev(&[
        ("channel", "Security"),
        ("event_id", "4688"),
        ("NewProcessName", "C:\\Windows\\System32\\whoami.exe"),
    ]);
    let mut out: Vec<Match> = Vec::new();
    assert_eq!(rs.matches(&sec, &mut out), 1);
    let m = &out[0];
    assert_eq!(
        (m.rule, &*m.title, m.id.as_deref(), m.level),
        (0, "Whoami", Some("abc"), Level::High)
    );
    assert_eq!(&*m.tags[0], "attack.discovery");
    assert_eq!(m.fields, vec![Sym::new("NewProcessName")]);
    // Same values on another event id or channel: not even a candidate.
    let other = ev(&[
        ("channel", "Security"),
        ("event_id", "4689"),
        ("NewProcessName", "x\\whoami.exe"),
    ]);
    assert!(!hit(&rs, &other));
    assert_eq!(rs.candidates("Security", Some(4689)), 0);
    assert_eq!(rs.candidates("Security", Some(4688)), 1);
    assert_eq!(
        rs.candidates("Microsoft-Windows-Sysmon/Operational", Some(1)),
        1
    );
    let sysmon = sysmon1(&[("Image", "C:\\Windows\\System32\\WHOAMI.EXE")]);
    assert!(hit(&rs, &sysmon));
}

#[test]
fn security_rules_are_indexed_by_pinned_event_id() {
    let yaml = "title: Logon\nlogsource:\n    product: windows\n    service: security\ndetection:\n    sel:\n        EventID: 4624\n        LogonType: 9\n    condition: sel\n";
    let (rs, _) = Ruleset::from_yaml(Path::new("l.yml"), yaml);
    assert_eq!(rs.candidates("Security", Some(4624)), 1);
    assert_eq!(rs.candidates("Security", Some(4625)), 0);
    assert!(hit(
        &rs,
        &ev(&[
            ("channel", "Security"),
            ("event_id", "4624"),
            ("LogonType", "9")
        ])
    ));
    assert!(!hit(
        &rs,
        &ev(&[
            ("channel", "System"),
            ("event_id", "4624"),
            ("LogonType", "9")
        ])
    ));
    assert!(rs.wants("Security", Some(4624)) && !rs.wants("Security", Some(4688)));
    assert!(rs.wants("security", Some(4624)));
    let k = &rs.rules()[0].keys;
    assert_eq!(k.len(), 1);
    assert_eq!(
        (k[0].channels.as_deref(), k[0].event_ids.as_deref()),
        (Some(&["Security".to_string()][..]), Some(&[4624][..]))
    );

    let yaml = "title: Svc\nlogsource:\n    product: windows\n    service: system\ndetection:\n    a:\n        Provider_Name: 'Service Control Manager'\n        EventID: 7045\n    b:\n        Provider_Name: 'Service Control Manager'\n        EventID: 7036\n    condition: a or b\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("s.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    let k = &rs.rules()[0].keys[0];
    assert_eq!(k.channels, Some(vec!["System".to_string()]));
    assert_eq!(k.event_ids, Some(vec![7036, 7045]));
    assert_eq!(
        k.providers,
        Some(vec!["service control manager".to_string()])
    );
    assert_eq!(rs.channels().filter(|c| *c == "System").count(), 1);
    assert!(rs.wants("System", Some(7036)) && !rs.wants("System", Some(7040)));
}

#[test]
fn level_order() {
    assert!(Level::Informational < Level::Low && Level::Low < Level::Medium);
    assert!(Level::Medium < Level::High && Level::High < Level::Critical);
    assert_eq!("HIGH".parse::<Level>(), Ok(Level::High));
    assert!("severe".parse::<Level>().is_err());
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("time")
}

#[test]
fn correlations() {
    let yaml = r#"title: Failed logon
id: failed
name: failed_logon
logsource:
    product: windows
    service: security
detection:
    sel:
        EventID: 4625
    condition: sel
---
title: Logon
id: ok
logsource:
    product: windows
    service: security
detection:
    sel:
        EventID: 4624
    condition: sel
---
title: Brute force
correlation:
    type: event_count
    rules: failed_logon
    group-by:
        - TargetUserName
    timespan: 1m
    condition:
        gte: 3
level: high
---
title: Spray
correlation:
    type: value_count
    rules: failed
    group-by: IpAddress
    timespan: 5m
    condition:
        field: TargetUserName
        gt: 2
---
title: Fail then success
correlation:
    type: temporal_ordered
    rules:
        - failed
        - ok
    group-by: TargetUserName
    timespan: 10m
"#;
    let (rs, errors) = Ruleset::from_yaml(Path::new("c.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((rs.len(), rs.correlations().len()), (2, 3));
    let (mut c, missing) = Correlator::new(&rs);
    assert!(missing.is_empty(), "{missing:?}");
    let mut fired = Vec::new();
    let mut feed = |id: &str, user: &str, ip: &str, t: i64, fired: &mut Vec<String>| {
        let e = ev(&[
            ("channel", "Security"),
            ("event_id", id),
            ("TargetUserName", user),
            ("IpAddress", ip),
        ]);
        let mut ms = Vec::new();
        rs.matches(&e, &mut ms);
        let mut out = Vec::new();
        for m in &ms {
            c.feed(m, &e, at(t), &mut out);
        }
        fired.extend(
            out.iter()
                .map(|o| format!("{} {:?} {}", o.title, o.group, o.value)),
        );
    };
    feed("4625", "bob", "1.1.1.1", 0, &mut fired);
    feed("4625", "bob", "1.1.1.1", 10, &mut fired);
    feed("4625", "alice", "1.1.1.1", 20, &mut fired);
    assert!(fired.is_empty(), "{fired:?}");
    // Third failure of bob inside a minute; the spray sees a third user from 1.1.1.1.
    feed("4625", "carol", "1.1.1.1", 25, &mut fired);
    assert_eq!(fired, vec!["Spray [\"1.1.1.1\"] 3"]);
    fired.clear();
    feed("4625", "bob", "2.2.2.2", 30, &mut fired);
    assert_eq!(fired, vec!["Brute force [\"bob\"] 3"]);
    fired.clear();
    // Outside the minute: the window starts again.
    feed("4625", "bob", "2.2.2.2", 200, &mut fired);
    feed("4625", "bob", "2.2.2.2", 300, &mut fired);
    assert!(fired.iter().all(|f| !f.starts_with("Brute")), "{fired:?}");
    fired.clear();
    feed("4624", "bob", "2.2.2.2", 310, &mut fired);
    assert_eq!(fired, vec!["Fail then success [\"bob\"] 2"]);
    fired.clear();
    // Success before failure does not fire the ordered correlation.
    feed("4624", "dave", "3.3.3.3", 400, &mut fired);
    feed("4625", "dave", "3.3.3.3", 410, &mut fired);
    assert!(fired.is_empty(), "{fired:?}");
}

#[test]
fn neq_and_time_parts() {
    let rs = rule(
        "    sel:\n        Image|endswith: '.exe'\n        User|neq: 'NT AUTHORITY\\SYSTEM'\n    condition: sel",
    );
    assert!(hit(
        &rs,
        &sysmon1(&[("Image", "a.exe"), ("User", "CORP\\bob")])
    ));
    assert!(!hit(
        &rs,
        &sysmon1(&[("Image", "a.exe"), ("User", "nt authority\\system")])
    ));
    assert!(
        !hit(&rs, &sysmon1(&[("Image", "a.exe")])),
        "neq needs the field"
    );

    let t = |v: &str| sysmon1(&[("UtcTime", v)]);
    let rs = rule("    sel:\n        UtcTime|hour|gte: 22\n    condition: sel");
    assert!(hit(&rs, &t("2024-03-05T23:10:00Z")) && !hit(&rs, &t("2024-03-05T08:10:00Z")));
    let rs = rule("    sel:\n        UtcTime|minute: 10\n    condition: sel");
    assert!(hit(&rs, &t("2024-03-05T23:10:59Z")) && !hit(&rs, &t("2024-03-05T23:11:00Z")));
    for (m, n) in [("day", 5), ("week", 10), ("month", 3), ("year", 2024)] {
        let rs = rule(&format!(
            "    sel:\n        UtcTime|{m}: {n}\n    condition: sel"
        ));
        assert!(hit(&rs, &t("2024-03-05T23:10:00Z")), "{m}");
        assert!(!hit(&rs, &t("2023-01-01T00:00:00Z")), "{m}");
        assert!(!hit(&rs, &t("not a time")), "{m}");
    }
}

#[test]
fn filter_documents_narrow_the_rules_they_name() {
    let yaml = r#"title: Whoami
id: 11111111-2222-3333-4444-555555555555
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\whoami.exe'
    condition: sel
---
title: Not from the admin jump host
logsource:
    product: windows
filter:
    rules:
        - 11111111-2222-3333-4444-555555555555
    jump:
        Computer|startswith: 'JUMP'
    condition: not jump
---
title: Broken filter
filter:
    rules: nonesuch
    x:
        a: b
    condition: x
"#;
    let (rs, errors) = Ruleset::from_yaml(Path::new("f.yml"), yaml);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs.filters(), ["Not from the admin jump host"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].reason.contains("unknown rule `nonesuch`"));
    let on = |host: &str| {
        sysmon1(&[
            ("Image", "C:\\Windows\\System32\\whoami.exe"),
            ("computer", host),
        ])
    };
    assert!(hit(&rs, &on("WS-17")));
    assert!(!hit(&rs, &on("jump01.corp")));
    // On the 4688 form too.
    let sec = ev(&[
        ("channel", "Security"),
        ("event_id", "4688"),
        ("NewProcessName", "C:\\Windows\\System32\\whoami.exe"),
        ("computer", "JUMP02"),
    ]);
    assert!(!hit(&rs, &sec));
}

fn with_placeholders(yaml: &str, vars: &str) -> (Ruleset, Vec<watchpost_sigma::LoadError>) {
    let opts = LoadOptions {
        placeholders: Placeholders::from_yaml(vars).expect("placeholders"),
        ..LoadOptions::default()
    };
    Ruleset::from_yaml_with(Path::new("p.yml"), yaml, &opts)
}

#[test]
fn expand_placeholders() {
    // In the style of SigmaHQ's rules-placeholder/: a logon of an admin account on a
    // domain controller, values from a pySigma pipeline's `vars`.
    let vars = "name: site\nvars:\n    Administrators: [Administrator, 'Admin*']\n    DomainControllers: DC01\n    Tools: [psexec, 'paexec']\ntransformations: []\n";
    let yaml = r"title: Admin logon on a DC
level: high
logsource: { product: windows, service: security }
detection:
    sel:
        EventID: 4624
        TargetUserName|expand: '%Administrators%'
        Computer|expand: '%DomainControllers%'
    condition: sel
---
title: Remote tool
logsource: { product: windows, category: process_creation }
detection:
    sel:
        CommandLine|expand|contains: '\%Tools%.exe'
    condition: sel
---
title: Unknown placeholder
logsource: { product: windows, category: process_creation }
detection:
    sel:
        User|expand: '%ServiceAccounts%'
    condition: sel
";
    let (rs, errors) = with_placeholders(yaml, vars);
    assert_eq!(rs.len(), 2);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].title.as_deref(), Some("Unknown placeholder"));
    assert!(
        errors[0].reason.contains("%ServiceAccounts%"),
        "{}",
        errors[0]
    );
    let logon = |user: &str, computer: &str| {
        ev(&[
            ("channel", "Security"),
            ("event_id", "4624"),
            ("TargetUserName", user),
            ("computer", computer),
        ])
    };
    assert!(hit(&rs, &logon("administrator", "DC01")));
    assert!(
        hit(&rs, &logon("Admin-backup", "dc01")),
        "wildcards in values count"
    );
    assert!(!hit(&rs, &logon("bob", "DC01")));
    assert!(!hit(&rs, &logon("Administrator", "WS7")));
    assert!(hit(&rs, &cl(r"C:\t\PsExec.exe \\host cmd")));
    assert!(hit(&rs, &cl(r"x\paexec.exe")));
    assert!(!hit(&rs, &cl("psexec")));

    // `all` over expanded values: each listed value needs one of its expansions.
    let (rs, errors) = with_placeholders(
        "title: t\nlogsource: { product: windows, category: process_creation }\ndetection:\n    sel:\n        CommandLine|expand|contains|all: ['%A%', '%B%']\n    condition: sel\n",
        "A: [x1, x2]\nB: why\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(hit(&rs, &cl("x2 why")), "x2 why");
    assert!(!hit(&rs, &cl("x1 x2")), "x1 x2");
    // Keywords (no field name) expand too.
    let (rs, errors) = with_placeholders(
        "title: t\nlogsource: { product: windows, category: process_creation }\ndetection:\n    kw:\n        '|expand': '%A%'\n    condition: kw\n",
        "A: [x1, x2]\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(hit(&rs, &cl("run X2 now")) && !hit(&rs, &cl("x3")));
    // No placeholders given at all: not loaded, with the reason.
    let (rs, errors) = Ruleset::from_yaml(Path::new("p.yml"), yaml);
    assert_eq!((rs.len(), errors.len()), (0, 3));
}

fn feed_one(
    rs: &Ruleset,
    c: &mut Correlator,
    fields: &[(&str, &str)],
    t: i64,
) -> Vec<CorrelationMatch> {
    let e = ev(fields);
    let mut ms = Vec::new();
    rs.matches(&e, &mut ms);
    let mut out = Vec::new();
    c.advance(at(t), &mut out);
    for m in &ms {
        c.feed(m, &e, at(t), &mut out);
    }
    out
}

const SHARE: &str = r"title: Share read
id: share
logsource: { product: windows, service: security }
detection:
    sel:
        EventID: 5145
    condition: sel
";

fn share(user: &str, bytes: &str) -> Vec<(&'static str, String)> {
    vec![
        ("channel", "Security".into()),
        ("event_id", "5145".into()),
        ("SubjectUserName", user.into()),
        ("Bytes", bytes.into()),
    ]
}

fn correlated(extra: &str) -> (Ruleset, Correlator) {
    let (rs, errors) = Ruleset::from_yaml(Path::new("c.yml"), &format!("{SHARE}---\n{extra}"));
    assert!(errors.is_empty(), "{errors:?}");
    let (c, missing) = Correlator::new(&rs);
    assert!(missing.is_empty(), "{missing:?}");
    (rs, c)
}

fn fire(rs: &Ruleset, c: &mut Correlator, user: &str, bytes: &str, t: i64) -> Vec<String> {
    let f = share(user, bytes);
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    feed_one(rs, c, &f, t)
        .iter()
        .map(|o| {
            format!(
                "{} {:?} n={} v={} t={}",
                o.title,
                o.group,
                o.count,
                (o.value * 1000.0).round() / 1000.0,
                o.time.as_second() - 1_700_000_000
            )
        })
        .collect()
}

#[test]
fn value_sum_avg_percentile() {
    let (rs, mut c) = correlated(
        "title: Exfil\ncorrelation:\n    type: value_sum\n    rules: share\n    group-by: SubjectUserName\n    timespan: 1m\n    condition:\n        field: Bytes\n        gt: 1000\n",
    );
    assert!(fire(&rs, &mut c, "bob", "400", 0).is_empty());
    assert!(
        fire(&rs, &mut c, "bob", "x", 5).is_empty(),
        "not a number: skipped"
    );
    assert!(
        fire(&rs, &mut c, "eve", "900", 6).is_empty(),
        "another group"
    );
    assert!(fire(&rs, &mut c, "bob", "500", 10).is_empty());
    assert_eq!(
        fire(&rs, &mut c, "bob", "200", 20),
        ["Exfil [\"bob\"] n=4 v=1100 t=20"]
    );
    // Sliding: 400 left the window by t=70; 500+200+350 > 1000 does not hold after the
    // reset (the window was cleared when it fired).
    assert!(fire(&rs, &mut c, "bob", "350", 70).is_empty());

    let (rs, mut c) = correlated(
        "title: Big reads\ncorrelation:\n    type: value_avg\n    rules: share\n    group-by: SubjectUserName\n    timespan: 1m\n    condition:\n        field: Bytes\n        gte: 100\n",
    );
    assert!(fire(&rs, &mut c, "bob", "10", 0).is_empty());
    assert!(fire(&rs, &mut c, "bob", "150", 1).is_empty());
    assert_eq!(
        fire(&rs, &mut c, "bob", "200", 2),
        ["Big reads [\"bob\"] n=3 v=120 t=2"]
    );

    let (rs, mut c) = correlated(
        "title: P90\ncorrelation:\n    type: value_percentile\n    rules: share\n    group-by: SubjectUserName\n    timespan: 1h\n    condition:\n        field: Bytes\n        percentile: 90\n        gt: 500\n",
    );
    for (i, b) in ["10", "20", "30", "40"].iter().enumerate() {
        assert!(fire(&rs, &mut c, "bob", b, i as i64).is_empty());
    }
    // 10,20,30,40,5000: rank 0.9*4 = 3.6 → 40 + 0.6*(4960) = 3016
    assert_eq!(
        fire(&rs, &mut c, "bob", "5000", 9),
        ["P90 [\"bob\"] n=5 v=3016 t=9"]
    );

    let (_, errors) = Ruleset::from_yaml(
        Path::new("c.yml"),
        &format!(
            "{SHARE}---\ntitle: x\ncorrelation:\n    type: value_sum\n    rules: share\n    timespan: 1m\n    condition:\n        gt: 1\n"
        ),
    );
    assert!(
        errors[0].reason.contains("value_sum needs condition.field"),
        "{errors:?}"
    );
}

#[test]
fn too_few_exactly_and_ranges_fire_when_the_window_closes() {
    let (rs, mut c) = correlated(
        "title: Quiet\nlevel: low\ncorrelation:\n    type: event_count\n    rules: share\n    group-by: SubjectUserName\n    timespan: 1m\n    condition:\n        lt: 3\n",
    );
    assert!(c.has_timed());
    assert!(fire(&rs, &mut c, "bob", "1", 0).is_empty());
    assert!(
        fire(&rs, &mut c, "bob", "1", 10).is_empty(),
        "not before the window closes"
    );
    for t in [5, 6, 7] {
        assert!(fire(&rs, &mut c, "eve", "1", t).is_empty());
    }
    // At exactly t0 + timespan the window is still open (inclusive end).
    let mut out = Vec::new();
    c.advance(at(60), &mut out);
    assert!(out.is_empty());
    // Any later event closes bob's window (opened at 0, 2 events) and eve's (opened at
    // 5, 3 events: not fewer than 3).
    c.advance(at(66), &mut out);
    let got: Vec<String> = out
        .iter()
        .map(|o| {
            format!(
                "{:?} n={} t={} last={}",
                o.group,
                o.count,
                o.time.as_second() - 1_700_000_000,
                o.event.is_some()
            )
        })
        .collect();
    assert_eq!(got, ["[\"bob\"] n=2 t=60 last=true"]);
    // A window still open at the end of a hunt is decided by finish().
    assert!(fire(&rs, &mut c, "bob", "1", 100).is_empty());
    let mut out = Vec::new();
    c.finish(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].count, out[0].time), (1, at(160)));

    let (rs, mut c) = correlated(
        "title: Pair\ncorrelation:\n    type: event_count\n    rules: share\n    group-by: SubjectUserName\n    timespan: 1m\n    condition:\n        eq: 2\n",
    );
    assert!(fire(&rs, &mut c, "bob", "1", 0).is_empty());
    assert!(
        fire(&rs, &mut c, "bob", "1", 1).is_empty(),
        "eq waits for the close"
    );
    assert!(fire(&rs, &mut c, "eve", "1", 2).is_empty());
    assert!(fire(&rs, &mut c, "eve", "1", 3).is_empty());
    assert!(fire(&rs, &mut c, "eve", "1", 4).is_empty());
    assert_eq!(
        fire(&rs, &mut c, "zed", "1", 90),
        ["Pair [\"bob\"] n=2 v=2 t=60"]
    );

    let (rs, mut c) = correlated(
        "title: Range\ncorrelation:\n    type: value_count\n    rules: share\n    timespan: 1m\n    condition:\n        field: SubjectUserName\n        gt: 1\n        lte: 2\n",
    );
    assert!(fire(&rs, &mut c, "a", "1", 0).is_empty());
    assert!(fire(&rs, &mut c, "b", "1", 1).is_empty());
    assert!(fire(&rs, &mut c, "a", "1", 2).is_empty());
    assert_eq!(fire(&rs, &mut c, "c", "1", 61), ["Range [] n=3 v=2 t=60"]);
    // The event at 61 opened the next window: a, b, c → 3 values, outside the range.
    assert!(fire(&rs, &mut c, "a", "1", 62).is_empty());
    assert!(fire(&rs, &mut c, "b", "1", 63).is_empty());
    let mut out = Vec::new();
    c.finish(&mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn deprecated_count_aggregations_become_correlations() {
    // Hayabusa's password-guessing rule: 4625 with a wrong password, five per source
    // address within five minutes.
    let yaml = r#"title: PW Guessing
id: pwg
level: medium
logsource: { product: windows, service: security }
detection:
    selection:
        Channel: Security
        EventID: 4625
        SubStatus: "0xc000006a"
    filter:
        IpAddress: "-"
    condition: selection and not filter | count() by IpAddress >= 3
    timeframe: 5m
"#;
    let (rs, errors) = Ruleset::from_yaml(Path::new("a.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((rs.len(), rs.correlations().len()), (1, 1));
    assert!(rs.rules()[0].correlation_only);
    let corr = &rs.correlations()[0];
    assert_eq!(
        (
            &*corr.title,
            corr.id.as_deref(),
            corr.level,
            corr.timespan_secs
        ),
        ("PW Guessing", Some("pwg"), Level::Medium, 300)
    );
    assert_eq!(corr.group_by, vec!["IpAddress".to_string()]);
    let (mut c, missing) = Correlator::new(&rs);
    assert!(missing.is_empty(), "{missing:?}");
    let fail = |ip: &str| {
        vec![
            ("channel", "Security"),
            ("event_id", "4625"),
            ("SubStatus", "0xC000006A"),
            ("IpAddress", ip),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect::<Vec<_>>()
    };
    let mut fired = Vec::new();
    for (i, ip) in ["10.0.0.1", "10.0.0.1", "10.0.0.2", "-", "10.0.0.1"]
        .iter()
        .enumerate()
    {
        let f = fail(ip);
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let e = ev(&f);
        let mut ms = Vec::new();
        rs.matches(&e, &mut ms);
        assert!(ms.iter().all(|m| m.correlation_only));
        for o in feed_one(&rs, &mut c, &f, i as i64 * 10) {
            fired.push((o.group.clone(), o.count));
        }
    }
    assert_eq!(fired, vec![(vec!["10.0.0.1".to_string()], 3)]);
    // count(field) is a value_count; no timeframe is the whole stream.
    let yaml = "title: Spray\nlogsource: { product: windows, service: security }\ndetection:\n    sel:\n        EventID: 4625\n    condition: sel | count(TargetUserName) by IpAddress > 10\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("b.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        rs.correlations()[0].kind,
        watchpost_sigma::Kind::ValueCount {
            field: "TargetUserName".into()
        }
    );
    assert!(rs.correlations()[0].timespan_secs > 50 * 365 * 86_400);
}

#[test]
fn system_fields_by_their_sigma_names() {
    // Hayabusa's PowerShell rule tests the System `Level`; Sysmon 4's EventData has its
    // own `Version`, which wins over the System one.
    let yaml = "title: Warn\nlogsource: { product: windows, service: powershell }\ndetection:\n    sel:\n        EventID: 4104\n        Level: 3\n        Security_UserID: S-1-5-18\n        Correlation_ActivityID: '{ABC}'\n    condition: sel\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("l.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    let mut f = vec![
        ("channel", "Microsoft-Windows-PowerShell/Operational"),
        ("event_id", "4104"),
        ("level", "3"),
        ("user_sid", "S-1-5-18"),
        ("activity_id", "{abc}"),
    ];
    assert!(hit(&rs, &ev(&f)));
    f[2] = ("level", "5");
    assert!(!hit(&rs, &ev(&f)));
    let yaml = "title: Ver\nlogsource: { product: windows, category: sysmon_status }\ndetection:\n    sel:\n        Version|startswith: '15.'\n        Keywords: '0x8000000000000000'\n    condition: sel\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("v.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    let base = [
        ("channel", "Microsoft-Windows-Sysmon/Operational"),
        ("event_id", "4"),
        ("version", "3"),
        ("keywords", "0x8000000000000000"),
    ];
    let mut f = base.to_vec();
    f.push(("Version", "15.0"));
    assert!(hit(&rs, &ev(&f)));
    let mut f = base.to_vec();
    f.push(("Version", "14.1"));
    assert!(!hit(&rs, &ev(&f)));
    // Without an EventData `Version` the System one (3) is read.
    assert!(!hit(&rs, &ev(&base)));
}

#[test]
fn channels_event_ids_and_providers_in_the_detection_are_indexed() {
    // No service or category: the channel and event id come from the detection only.
    let yaml = "title: Cleared\nlogsource: { product: windows }\ndetection:\n    sel:\n        Channel: System\n        EventID: 104\n    condition: sel\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("c.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rs.candidates("System", Some(104)), 1);
    assert_eq!(rs.candidates("system", Some(104)), 1);
    assert_eq!(rs.candidates("System", Some(7045)), 0);
    assert_eq!(rs.candidates("Security", Some(104)), 0);
    assert!(hit(&rs, &ev(&[("channel", "System"), ("event_id", "104")])));
    // Hayabusa's process_creation rules name `Channel: Security` + 4688: the Sysmon form
    // of the category is dropped, not tried on every Sysmon 1.
    let yaml = "title: P\nlogsource: { product: windows, category: process_creation }\ndetection:\n    process_creation:\n        EventID: 4688\n        Channel: Security\n    sel:\n        NewProcessName|endswith: '\\7z.exe'\n    condition: process_creation and sel\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("p.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rs.rules()[0].keys.len(), 1);
    assert_eq!(
        rs.candidates("Microsoft-Windows-Sysmon/Operational", Some(1)),
        0
    );
    assert_eq!(rs.candidates("Security", Some(4688)), 1);
    // Only a provider pinned (any channel): filed under the provider.
    let yaml = "title: Bsod\nlogsource: { product: windows }\ndetection:\n    sel:\n        ProviderName: Microsoft-Windows-WER-SystemErrorReporting\n        EventID: 1001\n    condition: sel\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("b.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    let mut out = Vec::new();
    let other = ev(&[
        ("channel", "System"),
        ("event_id", "1001"),
        ("provider", "Other"),
    ]);
    assert_eq!(rs.matches(&other, &mut out), 0);
    let wer = ev(&[
        ("channel", "System"),
        ("event_id", "1001"),
        ("provider", "Microsoft-Windows-WER-SystemErrorReporting"),
    ]);
    assert_eq!(rs.matches(&wer, &mut out), 1);
    // A rule that pins a channel its logsource does not map keeps the detection's.
    let yaml = "title: X\nlogsource: { product: windows, service: security }\ndetection:\n    sel:\n        Channel: 'Microsoft-Windows-Ntfs/Operational'\n        EventID: 4\n    condition: sel\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("x.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        rs.candidates("Microsoft-Windows-Ntfs/Operational", Some(4)),
        1
    );
    assert_eq!(rs.candidates("Security", Some(4)), 0);
    // Not pinned on every branch: not indexed by it.
    let yaml = "title: Either\nlogsource: { product: windows }\ndetection:\n    a:\n        Channel: System\n    b:\n        EventID: 1\n    condition: a or b\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("y.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rs.candidates("Application", Some(1)), 1);
    assert_eq!(rs.candidates("Application", Some(2)), 1);
}

#[test]
fn status_exclusion_lists_and_missing_titles() {
    let yaml = "title: Old\nid: old-1\nstatus: deprecated\nlogsource: { product: windows, service: security }\ndetection:\n    sel:\n        EventID: 1\n    condition: sel\n---\ntitle: Noisy\nid: noisy-1\nlogsource: { product: windows, service: security }\ndetection:\n    sel:\n        EventID: 2\n    condition: sel\n---\nid: untitled\nlogsource: { product: windows, service: security }\ndetection:\n    sel:\n        EventID: 3\n    condition: sel\n";
    let opts = LoadOptions {
        skip_status: vec!["deprecated".into(), "unsupported".into()],
        exclude: watchpost_sigma::parse_exclude_list("# noisy\nnoisy-1 # \"Noisy\"\n\n")
            .into_iter()
            .map(|id| (id, "noisy.txt".to_string()))
            .collect(),
        ..LoadOptions::default()
    };
    let (rs, errors) = Ruleset::from_yaml_with(Path::new("s.yml"), yaml, &opts);
    assert_eq!(rs.len(), 0);
    let kinds: Vec<&str> = errors.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds, vec!["status deprecated", "excluded", "no title"]);
    assert!(errors[1].reason.contains("noisy.txt"));
    // By default everything with a title loads.
    let (rs, errors) = Ruleset::from_yaml(Path::new("s.yml"), yaml);
    assert_eq!((rs.len(), errors.len()), (2, 1));
}

#[test]
fn builtin_services_map_to_their_channels() {
    for (service, channel, id) in [
        ("applocker", "Microsoft-Windows-AppLocker/EXE and DLL", 8004),
        (
            "applocker",
            "Microsoft-Windows-AppLocker/MSI and Script",
            8004,
        ),
        (
            "dns-client",
            "Microsoft-Windows-DNS Client Events/Operational",
            3008,
        ),
        ("ldap", "Microsoft-Windows-LDAP-Client/Debug", 30),
        (
            "smbserver-connectivity",
            "Microsoft-Windows-SmbServer/Connectivity",
            4000,
        ),
        (
            "smbclient-connectivity",
            "Microsoft-Windows-SmbClient/Connectivity",
            31001,
        ),
        ("ntfs", "Microsoft-Windows-Ntfs/Operational", 4),
        ("powershell", "PowerShellCore/Operational", 4104),
        (
            "bitlocker",
            "Microsoft-Windows-BitLocker/BitLocker Management",
            775,
        ),
    ] {
        let yaml = format!(
            "title: t\nlogsource: {{ product: windows, service: {service} }}\ndetection:\n    sel:\n        EventID: {id}\n    condition: sel\n"
        );
        let (rs, errors) = Ruleset::from_yaml(Path::new("s.yml"), &yaml);
        assert!(errors.is_empty(), "{service}: {errors:?}");
        assert!(
            hit(
                &rs,
                &ev(&[("channel", channel), ("event_id", &id.to_string())])
            ),
            "{service} on {channel}"
        );
    }
}

#[test]
fn exact_values_match_windows_trailing_blanks_and_hayabusa_aliases() {
    let yaml = "title: Pth\nlogsource: { product: windows, service: security }\ndetection:\n    sel:\n        EventID: 4624\n        LogonProcessName: NtLmSsp\n    condition: sel\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("p.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    let e = |v: &str| {
        ev(&[
            ("channel", "Security"),
            ("event_id", "4624"),
            ("LogonProcessName", v),
        ])
    };
    assert!(hit(&rs, &e("NtLmSsp ")) && hit(&rs, &e("NtLmSsp")));
    assert!(!hit(&rs, &e("NtLmSspX")) && !hit(&rs, &e(" NtLmSsp")));
    // Hayabusa's alias for System 104's UserData `Channel`.
    let yaml = "title: Cleared\nlogsource: { product: windows, service: system }\ndetection:\n    sel:\n        EventID: 104\n        LogFileClearedChannel: Security\n    condition: sel\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("c.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(hit(
        &rs,
        &ev(&[
            ("channel", "System"),
            ("event_id", "104"),
            ("Channel", "Security")
        ])
    ));
}

#[test]
fn rules_a_correlation_references_only_feed_it_unless_it_generates() {
    let (rs, _) = correlated(
        "title: Many reads\ncorrelation:\n    type: event_count\n    rules: share\n    timespan: 1h\n    condition:\n        gte: 2\n",
    );
    assert!(rs.rules()[0].correlation_only);
    let (rs, _) = correlated(
        "title: Many reads\ncorrelation:\n    type: event_count\n    rules: share\n    generate: true\n    timespan: 1h\n    condition:\n        gte: 2\n",
    );
    assert!(!rs.rules()[0].correlation_only);
    // One correlation that generates is enough.
    let (rs, _) = correlated(
        "title: Many reads\ncorrelation:\n    type: event_count\n    rules: share\n    timespan: 1h\n    condition:\n        gte: 2\n---\ntitle: Loud\ncorrelation:\n    type: event_count\n    rules: share\n    generate: true\n    timespan: 1h\n    condition:\n        gte: 3\n",
    );
    assert!(!rs.rules()[0].correlation_only);
}

#[test]
fn data_reads_unnamed_data_values_as_hayabusa_does() {
    // MSSQL/ESENT/MsiInstaller events carry unnamed `<Data>` values (str1 … strN).
    let yaml = "title: Ntds\nlogsource: { product: windows, service: application }\ndetection:\n    sel:\n        EventID: 216\n        Data|contains: ntds.dit\n    condition: sel\n";
    let (rs, errors) = Ruleset::from_yaml(Path::new("d.yml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    let base = [("channel", "Application"), ("event_id", "216")];
    let mut f = base.to_vec();
    f.extend([("str1", "ESENT"), ("str2", "C:\\Windows\\NTDS\\NTDS.DIT")]);
    assert!(hit(&rs, &ev(&f)));
    let mut f = base.to_vec();
    f.extend([("str1", "ESENT"), ("str2", "other.edb")]);
    assert!(!hit(&rs, &ev(&f)));
    // A named `Data` field is read as it is.
    let mut f = base.to_vec();
    f.push(("Data", "x ntds.dit"));
    assert!(hit(&rs, &ev(&f)));
}
