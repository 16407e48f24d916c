//! Checks observing real files, programs and (under Wine) the registry.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use toml::de::DeTable;
use watchpost_checks::{CheckSpec, CheckToml, SourceClock, observe, parse_check};

fn spec(text: &str) -> CheckSpec {
    let doc = DeTable::parse(text).expect("toml");
    let v = doc.get_ref()["check"].get_ref().as_array().unwrap()[0].clone();
    let raw: CheckToml = serde::Deserialize::deserialize(toml::de::ValueDeserializer::from(v))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut errors = Vec::new();
    parse_check(&raw, &mut errors).unwrap_or_else(|| panic!("{errors:?}"))
}

fn errors(text: &str) -> Vec<String> {
    let doc = DeTable::parse(text).expect("toml");
    let v = doc.get_ref()["check"].get_ref().as_array().unwrap()[0].clone();
    let raw: CheckToml = match serde::Deserialize::deserialize(toml::de::ValueDeserializer::from(v))
    {
        Ok(r) => r,
        Err(e) => return vec![e.to_string()],
    };
    let mut errors = Vec::new();
    parse_check(&raw, &mut errors);
    errors.into_iter().map(|e| e.message).collect()
}

fn no_clock() -> SourceClock {
    Arc::new(|_| None)
}

fn toml_path(p: &std::path::Path) -> String {
    p.display().to_string().replace('\\', "\\\\")
}

#[test]
fn definitions_from_a_file_time_and_from_a_date_inside() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("daily.cld");
    std::fs::write(
        &db,
        "ClamAV-VDB:22 Nov 2020 08-27 +0000:26000:4000000:90:sig\n",
    )
    .unwrap();
    let f = std::fs::File::options().write(true).open(&db).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(5 * 86_400))
        .unwrap();
    drop(f);
    let by_time = spec(&format!(
        "[[check]]\nname = \"clamav\"\ntype = \"definitions_age\"\nmax_age = \"3d\"\nfile = \"{}\"\n",
        toml_path(&db)
    ));
    let o = observe(&by_time, &no_clock());
    assert_eq!(o.status, "stale", "{o:?}");
    assert!(o.detail.contains("5.0 days old"), "{o:?}");
    let by_date = spec(&format!(
        "[[check]]\nname = \"clamav\"\ntype = \"definitions_age\"\nmax_age = \"3d\"\nfile = \"{}\"\ndate_regex = 'ClamAV-VDB:(?P<date>[^:]+):'\ndate_format = \"%d %b %Y %H-%M %z\"\n",
        toml_path(&db)
    ));
    let o = observe(&by_date, &no_clock());
    assert_eq!(o.status, "stale");
    assert!(
        o.fields
            .contains(&("definitions_date".into(), "2020-11-22T08:27:00Z".into())),
        "{o:?}"
    );
    // Fresh definitions are ok.
    std::fs::write(
        &db,
        format!(
            "ClamAV-VDB:{}:1:2:3\n",
            jiff::Timestamp::now().strftime("%d %b %Y %H-%M +0000")
        ),
    )
    .unwrap();
    assert_eq!(observe(&by_date, &no_clock()).status, "ok");
    // An unreadable date is an error status, not a crash.
    std::fs::write(&db, "garbage").unwrap();
    let o = observe(&by_date, &no_clock());
    assert_eq!(o.status, "error");
    assert!(o.detail.contains("does not match"), "{o:?}");
}

#[test]
fn definitions_from_a_sep_av_log() {
    let dir = tempfile::tempdir().unwrap();
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/sep/client-av/05292019.Log"
    );
    std::fs::copy(src, dir.path().join("05292019.Log")).unwrap();
    let s = spec(&format!(
        "[[check]]\nname = \"sep-defs\"\ntype = \"definitions_age\"\nmax_age = \"3d\"\nsep_log = \"{}\"\n",
        toml_path(&dir.path().join("*.Log"))
    ));
    let o = observe(&s, &no_clock());
    // The fixture is from 2019: its newest def_info is far too old.
    assert_eq!(o.status, "stale", "{o:?}");
    let date = o.fields.iter().find(|f| f.0 == "definitions_date").unwrap();
    assert!(date.1.starts_with("2019-05-2"), "{o:?}");
    assert!(
        o.fields.iter().any(|f| f.0 == "definitions_revision"),
        "{o:?}"
    );
}

#[cfg(unix)]
#[test]
fn definitions_from_a_command_and_a_hung_command() {
    let s = spec(
        "[[check]]\nname = \"c\"\ntype = \"definitions_age\"\nmax_age = \"3d\"\ncommand = [\"echo\", \"Build time: 01 Jan 2001\"]\ndate_regex = 'Build time: (?P<date>.+)'\ndate_format = \"%d %b %Y\"\n",
    );
    let o = observe(&s, &no_clock());
    assert_eq!(o.status, "stale");
    assert!(
        o.fields
            .contains(&("definitions_date".into(), "2001-01-01T00:00:00Z".into())),
        "{o:?}"
    );
}

#[test]
fn files_exist_and_keep_their_hash() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hosts");
    std::fs::write(&f, "abc").unwrap();
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let s = spec(&format!(
        "[[check]]\nname = \"hosts\"\ntype = \"file\"\npath = \"{}\"\nsha256 = \"{abc}\"\n",
        toml_path(&f)
    ));
    assert_eq!(observe(&s, &no_clock()).status, "ok");
    std::fs::write(&f, "abd").unwrap();
    let o = observe(&s, &no_clock());
    assert_eq!(o.status, "changed");
    assert!(
        o.fields.iter().any(|(k, v)| k == "sha256" && v != abc),
        "{o:?}"
    );
    std::fs::remove_file(&f).unwrap();
    assert_eq!(observe(&s, &no_clock()).status, "missing");
    let absent = spec(&format!(
        "[[check]]\nname = \"no-flag\"\ntype = \"file\"\npath = \"{}\"\nexists = false\n",
        toml_path(&f)
    ));
    assert_eq!(observe(&absent, &no_clock()).status, "ok");
    std::fs::write(&f, "x").unwrap();
    assert_eq!(observe(&absent, &no_clock()).status, "present");
}

#[test]
fn silent_sources() {
    let s = spec(
        "[[check]]\nname = \"quiet\"\ntype = \"source_silence\"\nsource = \"sep-av\"\nafter = \"1m\"\n",
    );
    let now = jiff::Timestamp::now().as_millisecond();
    let recent: SourceClock = Arc::new(move |n| (n == "sep-av").then_some(now - 1_000));
    assert_eq!(observe(&s, &recent).status, "ok");
    let old: SourceClock = Arc::new(move |n| (n == "sep-av").then_some(now - 120_000));
    let o = observe(&s, &old);
    assert_eq!(o.status, "silent");
    assert!(o.detail.contains("delivered nothing for 2 min"), "{o:?}");
    assert_eq!(observe(&s, &no_clock()).status, "error");
}

#[test]
fn mistakes_are_reported() {
    for (text, want) in [
        (
            "[[check]]\nname = \"a\"\ntype = \"definitions_age\"\nfile = \"x\"\n",
            "needs `max_age`",
        ),
        (
            "[[check]]\nname = \"a\"\ntype = \"definitions_age\"\nmax_age = \"3d\"\nfile = \"x\"\nsep_log = \"y\"\n",
            "exactly one of",
        ),
        (
            "[[check]]\nname = \"a\"\ntype = \"definitions_age\"\nmax_age = \"3d\"\ncommand = [\"x\"]\n",
            "needs `date_regex`",
        ),
        (
            "[[check]]\nname = \"a\"\ntype = \"definitions_age\"\nmax_age = \"3d\"\nfile = \"x\"\ndate_regex = 'x'\n",
            "named `date`",
        ),
        (
            "[[check]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\nsha256 = \"abc\"\n",
            "64 hexadecimal",
        ),
        (
            "[[check]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\nmax_age = \"1d\"\n",
            "does not apply",
        ),
        (
            "[[check]]\nname = \"a\"\ntype = \"service\"\nservices = []\n",
            "at least one",
        ),
        (
            "[[check]]\nname = \"a\"\ntype = \"source_silence\"\nsource = \"x\"\n",
            "needs `source` and `after`",
        ),
        (
            "[[check]]\nname = \"a\"\ntype = \"nope\"\n",
            "unknown check type",
        ),
        (
            "[[check]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\ninterval = \"soon\"\n",
            "not a duration",
        ),
        (
            "[[check]]\nname = \"a\"\ntype = \"file\"\npaht = \"x\"\n",
            "unknown field `paht`",
        ),
    ] {
        let e = errors(text);
        assert!(e.iter().any(|m| m.contains(want)), "{text}: {e:?}");
    }
}

/// SEP's registry values, written under Wine (or on Windows) and read back by the check.
#[cfg(windows)]
#[test]
fn definitions_from_seps_registry_values() {
    use winreg::RegKey;
    use winreg::enums::{HKEY_LOCAL_MACHINE, KEY_ALL_ACCESS, KEY_WOW64_64KEY};
    const KEY: &str =
        r"SOFTWARE\Symantec\Symantec Endpoint Protection\CurrentVersion\public-opstate";
    let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
    let (key, _) = hklm
        .create_subkey_with_flags(KEY, KEY_ALL_ACCESS | KEY_WOW64_64KEY)
        .unwrap();
    key.set_value("LatestVirusDefsDate", &"2020-01-02").unwrap();
    key.set_value("LatestVirusDefsRevision", &"17").unwrap();
    let s = spec(
        "[[check]]\nname = \"sep\"\ntype = \"definitions_age\"\nmax_age = \"3d\"\nregistry = true\n",
    );
    let o = observe(&s, &no_clock());
    assert_eq!(o.status, "stale", "{o:?}");
    assert!(
        o.fields
            .contains(&("definitions_revision".into(), "17".into())),
        "{o:?}"
    );
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    key.set_value("LatestVirusDefsDate", &today).unwrap();
    assert_eq!(observe(&s, &no_clock()).status, "ok");
    let _ = hklm.delete_subkey_all(r"SOFTWARE\Symantec");
}
