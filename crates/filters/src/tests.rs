//! Chain tests driven by TOML text, as users write it.

use toml::de::DeTable;
use watchpost_event::{ConfigError, Event, Sym, Value};

use crate::{Chain, FilterSpec, parse_filter};

fn specs(text: &str) -> Result<Vec<FilterSpec>, Vec<ConfigError>> {
    let doc = DeTable::parse(text).expect("toml");
    let filters = doc.get_ref().get("filter").expect("filter key");
    let arr = filters.get_ref().as_array().expect("array");
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for f in arr.iter() {
        let (spec, e) = parse_filter(f);
        out.push(spec);
        errs.extend(e);
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

const ACTIONS: [&str; 3] = ["siem", "quarantine", "tell-user"];

fn chain(text: &str) -> Chain {
    let resolve = |n: &str| ACTIONS.iter().position(|a| *a == n);
    Chain::build(specs(text).expect("specs"), &resolve, &ACTIONS).expect("chain")
}

fn event(source: &str, fields: &[(&str, &str)]) -> Event {
    let mut e = Event::new(source.into(), "pc1".into(), String::new());
    for (k, v) in fields {
        e.push(Sym::new(k), Value::Str((*v).into()));
    }
    e.finish();
    e
}

fn fired(c: &Chain, e: &mut Event) -> Vec<String> {
    let v = c.evaluate_once(e);
    v.fired
        .iter()
        .map(|i| c.filter(*i).name.to_string())
        .collect()
}

const SEP: &str = r#"
[[filter]]
name = "ignore-test-host"
exclude = true
match = { host = "lab-pc" }

[[filter]]
name = "ips-system-infected"
match = { source = "sep-ips", signature_name = { prefix = "System Infected:" } }
actions = ["siem", "quarantine"]

[[filter]]
name = "ap-or-sonar"
match = { source = "sep-av", event_code = 5, any = [{ logger_name = "Real_Time" }, { logger_name = "Bash" }] }
actions = ["siem", "tell-user"]
stop = true

[[filter]]
name = "never-after-stop"
match = { source = "sep-av" }
actions = ["siem"]
"#;

#[test]
fn ips_prefix_fires_only_for_system_infected() {
    let c = chain(SEP);
    let mut e = event(
        "sep-ips",
        &[("signature_name", "System Infected: Tidserv Activity")],
    );
    assert_eq!(fired(&c, &mut e), ["ips-system-infected"]);
    let mut e = event(
        "sep-ips",
        &[("signature_name", "Web Attack: Malicious Payload Upload 2")],
    );
    assert!(fired(&c, &mut e).is_empty());
}

#[test]
fn auto_protect_or_sonar_fires_and_stops() {
    let c = chain(SEP);
    let mut e = event(
        "sep-av",
        &[("event_code", "5"), ("logger_name", "Real_Time")],
    );
    assert_eq!(fired(&c, &mut e), ["ap-or-sonar"]);
    let mut e = event(
        "sep-av",
        &[("event_code", "5"), ("logger_name", "Scheduled")],
    );
    assert_eq!(fired(&c, &mut e), ["never-after-stop"]);
}

#[test]
fn excludes_run_first_wherever_they_stand() {
    let text = format!(
        "{SEP}\n[[filter]]\nname = \"late-exclude\"\nexclude = true\nmatch = {{ event_code = 5 }}\n"
    );
    let c = chain(&text);
    let mut e = event(
        "sep-av",
        &[("event_code", "5"), ("logger_name", "Real_Time")],
    );
    let v = c.evaluate_once(&mut e);
    assert!(v.fired.is_empty());
    assert_eq!(
        c.filter(v.excluded_by.unwrap()).name.as_ref(),
        "late-exclude"
    );
}

#[test]
fn exclude_with_actions_withholds_only_those() {
    let c = chain(
        r#"
[[filter]]
name = "no-siem-for-lab"
exclude = true
match = { host = "pc1" }
actions = ["siem"]

[[filter]]
name = "all"
actions = ["siem", "tell-user"]
"#,
    );
    let mut e = event("x", &[]);
    let v = c.evaluate_once(&mut e);
    assert_eq!(v.fired, [1]);
    assert_eq!(v.withheld, [0]);
}

#[test]
fn regex_captures_feed_later_filters() {
    let c = chain(
        r#"
[[filter]]
name = "parse-sshd"
match = { message = { regex = 'Accepted (?P<method>\w+) for (?P<user>\S+) from (?P<ip>[0-9.]+)' } }

[[filter]]
name = "root-login"
match = { user = "root", method = { in = ["password", "keyboard-interactive"] } }
actions = ["siem"]
"#,
    );
    let mut e = event(
        "auth",
        &[(
            "message",
            "Accepted password for root from 10.0.0.9 port 22 ssh2",
        )],
    );
    assert_eq!(fired(&c, &mut e), ["parse-sshd", "root-login"]);
    assert_eq!(e.get_str(Sym::new("ip")).unwrap(), "10.0.0.9");
}

#[test]
fn operators_cover_the_documented_set() {
    let c = chain(
        r#"
[[filter]]
name = "f"
match = { a = { suffix = ".exe", ignore_case = true }, b = { gte = 10, lt = 20 }, c = { exists = false }, d = { contains = "mid" }, not = { e = "x" }, time = { gte = "2020-01-01T00:00:00Z" } }
"#,
    );
    let mut e = event(
        "s",
        &[
            ("a", "C:\\EVIL.EXE"),
            ("b", "0x0f"),
            ("d", "a mid b"),
            ("e", "y"),
        ],
    );
    e.time = Some("2021-01-01T00:00:00Z".parse().unwrap());
    assert_eq!(fired(&c, &mut e), ["f"]);
    let mut e = event("s", &[("a", "x.exe"), ("b", "25"), ("d", "mid")]);
    assert!(fired(&c, &mut e).is_empty());
}

#[test]
fn plan_skips_filters_of_other_sources() {
    let c = chain(SEP);
    assert_eq!(c.plan("sep-ips").len(), 2);
    assert_eq!(c.plan("sep-av").len(), 3);
    assert_eq!(c.plan("other").len(), 1);
}

#[test]
fn errors_carry_places() {
    let text = r#"
[[filter]]
name = "bad"
match = { a = { regex = "(unclosed" }, b = { startswith = "x" } }
actions = ["nope"]
colour = "red"
"#;
    let errs = specs(text).unwrap_err();
    let at = |e: &ConfigError| &text[e.span.clone()];
    assert!(
        errs.iter()
            .any(|e| e.message.contains("bad regular expression") && at(e) == "\"(unclosed\"")
    );
    assert!(
        errs.iter()
            .any(|e| e.message.contains("unknown operator `startswith`") && at(e) == "startswith")
    );
    assert!(
        errs.iter()
            .any(|e| e.message.contains("unknown key `colour`"))
    );
    let ok = "[[filter]]\nname = \"x\"\nactions = [\"nope\"]\n";
    let resolve = |n: &str| ACTIONS.iter().position(|a| *a == n);
    let errs = Chain::build(specs(ok).unwrap(), &resolve, &ACTIONS).unwrap_err();
    assert!(errs[0].message.contains("unknown action `nope`"));
    assert_eq!(&ok[errs[0].span.clone()], "\"nope\"");
}

#[test]
fn duplicate_names_and_disabled_filters() {
    let text = "[[filter]]\nname = \"a\"\n[[filter]]\nname = \"a\"\n";
    let resolve = |_: &str| None;
    assert!(Chain::build(specs(text).unwrap(), &resolve, &[]).is_err());
    let c = chain("[[filter]]\nname = \"off\"\nenabled = false\n[[filter]]\nname = \"on\"\n");
    assert_eq!(c.len(), 1);
}

#[test]
fn source_test_is_stripped_only_when_the_plan_guarantees_it() {
    let c = chain(
        r#"
[[filter]]
name = "two-sources"
match = { source = { in = ["a", "b"] }, x = "1" }

[[filter]]
name = "double"
match = { source = "a", all = [{ source = { in = ["a", "b"] } }] }
"#,
    );
    let mut e = event("b", &[("x", "1")]);
    assert_eq!(fired(&c, &mut e), ["two-sources"]);
    let mut e = event("a", &[("x", "1")]);
    assert_eq!(fired(&c, &mut e), ["two-sources", "double"]);
    let mut e = event("c", &[("x", "1")]);
    assert!(fired(&c, &mut e).is_empty());
}

#[test]
fn prefilter_never_changes_what_fires() {
    let mut text = String::new();
    let ops = [
        "= 5",
        "= \"5\"",
        "= [1, 2, 3]",
        "= { in = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", \"i\"] }",
        "= { prefix = \"a\" }",
        "= { exists = true }",
    ];
    for i in 0..60 {
        let field = ["code", "user", "host", "kind"][i % 4];
        let op = ops[(i * 7) % ops.len()];
        let extra = if i % 5 == 0 {
            ", other = { exists = false }"
        } else {
            ""
        };
        let stop = if i % 13 == 12 { "stop = true\n" } else { "" };
        let exclude = if i % 17 == 16 { "exclude = true\n" } else { "" };
        let capture = if i == 3 {
            ", note = { regex = '(?P<user>[a-z])' }"
        } else {
            ""
        };
        text.push_str(&format!("[[filter]]\nname = \"f{i}\"\n{stop}{exclude}match = {{ {field} {op}{extra}{capture} }}\n\n"));
    }
    let c = chain(&text);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let values = ["5", "1", "2", "a", "b", "ab", "i", "z", "true"];
    for _ in 0..5000 {
        let mut e = Event::new("s".into(), "pc1".into(), String::new());
        for f in ["code", "user", "host", "kind", "other", "note"] {
            match next(4) {
                0 => {}
                1 => e.push(Sym::new(f), Value::Int(next(6) as i64)),
                _ => e.push(
                    Sym::new(f),
                    Value::Str(values[next(values.len() as u64) as usize].into()),
                ),
            }
        }
        e.finish();
        let mut naive = e.clone();
        assert_eq!(
            c.evaluate_once(&mut e),
            c.evaluate_naive(&mut naive),
            "{:?}",
            e.to_json()
        );
    }
}
