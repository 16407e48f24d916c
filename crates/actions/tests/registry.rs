//! The `registry` action on Windows (under Wine in CI): set values of every kind through
//! the dispatcher with templated data, read them back with `winreg`, delete a value and the
//! key, and count a dword that is not a number as a failure.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(windows)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{job, specs, wait_for};
use watchpost_actions::Dispatcher;
use watchpost_event::{Event, Sym, Value};
use winreg::RegKey;
use winreg::enums::{HKEY_CURRENT_USER, REG_DWORD, REG_EXPAND_SZ, REG_QWORD, REG_SZ};

const CONFIG: &str = r#"
[[action]]
name = "set-sz"
type = "registry"
key = 'HKCU\Software\WatchpostTest\{{ host }}'
value = "Infected"
data = "{{ risk_name }} from {{ ip_address }}"

[[action]]
name = "set-expand"
type = "registry"
key = 'HKEY_CURRENT_USER\Software\WatchpostTest\{{ host }}'
value = "Where"
kind = "expand_sz"
data = '%SystemRoot%\{{ file_name }}'

[[action]]
name = "set-dword"
type = "registry"
key = 'HKCU\Software\WatchpostTest\{{ host }}'
value = "Count"
kind = "dword"
data = "{{ count }}"

[[action]]
name = "set-qword"
type = "registry"
key = 'HKCU\Software\WatchpostTest\{{ host }}'
value = "Big"
kind = "qword"
data = "{{ big }}"

[[action]]
name = "set-default-in-subkey"
type = "registry"
key = 'HKCU\Software\WatchpostTest\{{ host }}\Sub'
data = "by {{ filter }}"

[[action]]
name = "delete-value"
type = "registry"
key = 'HKCU\Software\WatchpostTest\{{ host }}'
mode = "delete_value"
value = "Infected"

[[action]]
name = "delete-key"
type = "registry"
key = 'HKCU\Software\WatchpostTest\{{ host }}'
mode = "delete_key"
"#;

fn event(host: &str, count: &str) -> Event {
    let mut e = Event::new(Arc::from("sep-ips"), Arc::from(host), "raw".into());
    e.push(Sym::new("risk_name"), Value::Static("EICAR Test String"));
    e.push(Sym::new("ip_address"), Value::Static("10.0.0.5"));
    e.push(Sym::new("file_name"), Value::Static("eicar.com"));
    e.push(Sym::new("count"), Value::Str(count.into()));
    e.push(Sym::new("big"), Value::Static("0x1122334455667788"));
    e.finish();
    e
}

fn key_path(unique: &str) -> String {
    format!(r"Software\WatchpostTest\{unique}")
}

#[test]
fn set_read_back_and_delete() {
    let unique = format!(
        "t{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let hkcu = RegKey::predef(HKEY_CURRENT_USER);
    let path = key_path(&unique);
    let d = Dispatcher::start(specs(CONFIG)).unwrap();
    let submit = |action: &str, count: &str| {
        let i = d.index_of(action).unwrap();
        assert!(d.submit(i, job(event(&unique, count), "sep-infected")));
    };
    for action in [
        "set-sz",
        "set-expand",
        "set-dword",
        "set-qword",
        "set-default-in-subkey",
    ] {
        submit(action, "42");
    }
    // Not a number: the job fails and is counted.
    submit("set-dword", "many");

    let key = wait_for(Duration::from_secs(20), || {
        let key = hkcu.open_subkey(&path).ok()?;
        let all = ["Infected", "Where", "Count", "Big"]
            .iter()
            .all(|v| key.get_raw_value(v).is_ok());
        let sub = hkcu.open_subkey(format!(r"{path}\Sub")).ok()?;
        (all && sub.get_raw_value("").is_ok()).then_some(key)
    })
    .expect("all values are written");

    let sz = key.get_raw_value("Infected").unwrap();
    assert_eq!(sz.vtype, REG_SZ);
    let text: String = key.get_value("Infected").unwrap();
    assert_eq!(text, "EICAR Test String from 10.0.0.5");
    let expand = key.get_raw_value("Where").unwrap();
    assert_eq!(expand.vtype, REG_EXPAND_SZ);
    let text: String = key.get_value("Where").unwrap();
    assert_eq!(text, r"%SystemRoot%\eicar.com");
    assert_eq!(key.get_raw_value("Count").unwrap().vtype, REG_DWORD);
    assert_eq!(key.get_value::<u32, _>("Count").unwrap(), 42);
    assert_eq!(key.get_raw_value("Big").unwrap().vtype, REG_QWORD);
    assert_eq!(
        key.get_value::<u64, _>("Big").unwrap(),
        0x1122_3344_5566_7788
    );
    let sub = hkcu.open_subkey(format!(r"{path}\Sub")).unwrap();
    let default: String = sub.get_value("").unwrap();
    assert_eq!(default, "by sep-infected");
    drop(sub);

    submit("delete-value", "42");
    let gone = wait_for(Duration::from_secs(20), || {
        key.get_raw_value("Infected").is_err().then_some(())
    });
    assert!(gone.is_some(), "the value is deleted");
    assert_eq!(key.get_value::<u32, _>("Count").unwrap(), 42, "others stay");
    // Deleting it again is fine, also when the key goes meanwhile: the next action
    // (another worker) may delete the key before this one runs.
    submit("delete-value", "42");
    drop(key);

    submit("delete-key", "42");
    let gone = wait_for(Duration::from_secs(20), || {
        hkcu.open_subkey(&path).is_err().then_some(())
    });
    assert!(gone.is_some(), "the key and its subkey are deleted");
    // Deleting a missing key is fine.
    submit("delete-key", "42");

    let stats = d.shutdown(Duration::from_secs(10));
    let counts: Vec<(&str, u64, u64)> = stats
        .iter()
        .map(|s| (s.name.as_str(), s.ok, s.failed))
        .collect();
    assert_eq!(
        counts,
        [
            ("set-sz", 1, 0),
            ("set-expand", 1, 0),
            ("set-dword", 1, 1),
            ("set-qword", 1, 0),
            ("set-default-in-subkey", 1, 0),
            ("delete-value", 2, 0),
            ("delete-key", 2, 0),
        ],
        "{stats:?}"
    );
    let error = stats[2].last_error.as_deref().unwrap_or("");
    assert!(
        error.contains("\"many\"") && error.contains("not a dword number"),
        "{error}"
    );
    let _ = hkcu.delete_subkey_all(&path);
}
