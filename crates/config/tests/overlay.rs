#![allow(clippy::unwrap_used)]
//! The rule of what a host's own file keeps when a fleet group's configuration is pushed:
//! the group's is the base, the local file wins where it speaks.

use watchpost_config::{ConfigSource, GroupText, Purpose, load};

const GROUP: &str = r#"
[agent]
checkpoint_interval_ms = 700
host = "from-group"

[[source]]
name = "auth"
type = "text"
path = "/group/auth.log"

[[filter]]
name = "first"
match = { source = "auth", message = "a" }
actions = ["siem"]

[[filter]]
name = "second"
match = { source = "auth", message = "b" }
actions = ["siem"]

[[action]]
name = "siem"
type = "syslog"
target = "udp://127.0.0.1:514"
"#;

fn source(dir: &std::path::Path, local: &str, group: &str) -> ConfigSource {
    let l = dir.join("local.toml");
    std::fs::write(&l, local).unwrap();
    ConfigSource::Fleet {
        local: Some(l),
        group: GroupText::Text {
            name: "group.toml".into(),
            text: group.into(),
        },
        files: dir.join("files"),
    }
}

#[test]
fn the_local_file_wins_where_it_speaks() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let local = format!(
        r#"
[agent]
state_dir = '{}'

[[source]]
name = "auth"
type = "text"
path = "/host/secure"

[[filter]]
name = "first"
match = {{ source = "auth", message = "local" }}
actions = ["siem"]

[[filter]]
name = "mine"
match = {{ source = "auth", message = "c" }}
actions = ["siem"]
"#,
        state.display()
    );
    let loaded = load(&source(dir.path(), &local, GROUP), Purpose::Offline).unwrap();
    let c = &loaded.config;
    // [agent]: the local key replaces the group's, the others stay.
    assert_eq!(c.state_dir, state);
    assert_eq!(c.agent.checkpoint_interval_ms, 700);
    assert_eq!(c.agent.host.as_deref(), Some("from-group"));
    // A source of the same name: the host's path.
    assert_eq!(c.sources.len(), 1);
    assert_eq!(c.sources[0].paths, ["/host/secure"]);
    // Filters: the replaced one keeps its rank, the new one comes last.
    let names: Vec<&str> = c.filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["first", "second", "mine"]);
    // The digest covers both texts.
    let alone = load(
        &ConfigSource::Text {
            name: "g".into(),
            text: GROUP.into(),
        },
        Purpose::Offline,
    )
    .unwrap();
    assert_ne!(alone.config.digest, c.digest);
}

#[test]
fn diagnostics_name_the_text_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    // An error in the group's text and one in the local file's.
    let group = GROUP.replace(
        "actions = [\"siem\"]\n\n[[filter]]\nname = \"second\"",
        "actions = [\"nope\"]\n\n[[filter]]\nname = \"second\"",
    );
    let local = "[agent]\nstate_dir = \"/tmp/x\"\n\n[[filter]]\nname = \"mine\"\nmatch = { source = \"auth\" }\nactions = [\"gone\"]\n";
    let r = load(&source(dir.path(), local, &group), Purpose::Offline).unwrap_err();
    let text = r.rendered();
    assert!(
        text.contains("group.toml:14:12: error: unknown action `nope`"),
        "{text}"
    );
    assert!(
        text.contains("local.toml:7:12: error: unknown action `gone`"),
        "{text}"
    );
}

#[test]
fn a_group_cannot_carry_fleet_and_its_rule_paths_are_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let group = format!("{GROUP}\n[fleet]\nserver = \"https://x.example:8443\"\n");
    let r = load(
        &ConfigSource::Fleet {
            local: None,
            group: GroupText::Text {
                name: "group.toml".into(),
                text: group,
            },
            files: dir.path().to_owned(),
        },
        Purpose::Offline,
    )
    .unwrap_err();
    assert!(
        r.rendered()
            .contains("group.toml:26:2: error: a group configuration cannot contain [fleet]"),
        "{}",
        r.rendered()
    );
    // `sigma = "rules/"` in the group names the group's files folder.
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/r.yml"),
        "title: t\nid: 5f2a2b3c-1d4e-4f60-8a9b-0c1d2e3f4a5b\nlogsource: { product: windows, service: security }\ndetection:\n  sel: { EventID: 4625 }\n  condition: sel\nlevel: high\n",
    )
    .unwrap();
    let group =
        format!("{GROUP}\n[[rules]]\nname = \"sigma\"\nsigma = \"rules/\"\nactions = [\"siem\"]\n");
    let loaded = load(
        &ConfigSource::Fleet {
            local: None,
            group: GroupText::Text {
                name: "group.toml".into(),
                text: group,
            },
            files: dir.path().to_owned(),
        },
        Purpose::Offline,
    )
    .unwrap_or_else(|r| panic!("{}", r.rendered()));
    assert_eq!(loaded.config.rules.len(), 1);
    assert_eq!(loaded.config.rules[0].ruleset.len(), 1);
}

/// A quarantined host stays reachable from its fleet server: the server's address and
/// port join every quarantine's allow-list.
#[cfg(target_os = "linux")]
#[test]
fn the_fleet_server_is_always_in_the_quarantine_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[agent]
state_dir = '{}'

[[action]]
name = "isolate"
type = "quarantine"
allow = ["192.0.2.10:514"]

[fleet]
server = "https://127.0.0.1:8443"
"#,
        dir.path().display()
    );
    let loaded = load(
        &ConfigSource::Text {
            name: "a.toml".into(),
            text,
        },
        Purpose::Offline,
    )
    .unwrap_or_else(|r| panic!("{}", r.rendered()));
    let q = loaded.config.actions[0].as_quarantine().unwrap();
    let script = q.script().unwrap();
    assert!(script.contains("192.0.2.10"), "{script}");
    assert!(
        script.contains("127.0.0.1") && script.contains("8443"),
        "{script}"
    );
}
