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
            c.evaluate_naive(&mut naive, &mut crate::chain::NoBaselines),
            "{:?}",
            e.to_json()
        );
    }
}

/// A judge that flags the values it is told are new, and records what it was asked.
struct Scripted {
    new_values: Vec<&'static str>,
    asked: Vec<(String, Vec<String>, Vec<String>)>,
}

impl crate::Judge for Scripted {
    fn judge(&mut self, filter: usize, b: &crate::BaselineSpec, e: &Event) -> bool {
        let text = |syms: &[Sym]| -> Vec<String> {
            syms.iter()
                .map(|s| e.get_str(*s).map(|c| c.into_owned()).unwrap_or_default())
                .collect()
        };
        let (key, value) = (text(&b.key), text(&b.value));
        let flag = value.iter().any(|v| self.new_values.contains(&v.as_str()));
        self.asked.push((filter.to_string(), key, value));
        flag
    }

    fn threshold(&mut self, _: usize, _: &crate::ThresholdSpec, _: &Event) -> bool {
        true
    }
}

const ANOMALY: &str = r#"
[[filter]]
name = "rdp-baseline"
match = { source = "security", event_id = "4624", LogonType = "10" }
anomaly = { key = ["TargetUserName"], value = ["IpAddress"], learning = "14d", learn_per_key = true }

[[filter]]
name = "process-baseline"
match = { source = "security", event_id = "4688" }
anomaly = { key = [6], value = "NewProcessName" }

[[filter]]
name = "alert-anomaly"
match = { source = "security" }
anomaly = "only"
actions = ["siem"]
require_ack = true

[[filter]]
name = "normal"
match = { source = "security" }
anomaly = "none"
actions = ["tell-user"]
"#;

#[test]
fn anomaly_filters_flag_through_the_judge_and_later_filters_select() {
    let c = chain(ANOMALY);
    assert!(c.has_baselines());
    assert!(c.filter(2).require_ack);
    let b = c.filter(0).baseline.as_ref().unwrap();
    assert_eq!(b.learning, std::time::Duration::from_secs(14 * 86_400));
    assert!(b.learn_per_key);
    assert_eq!(
        c.filter(1).baseline.as_ref().unwrap().key,
        [Sym::new("str6")]
    );
    let mut judge = Scripted {
        new_values: vec!["10.9.9.9", r"C:\Temp\evil.exe"],
        asked: Vec::new(),
    };
    let plan = c.plan("security");
    let mut v = crate::Verdict::default();

    let mut known = event(
        "security",
        &[
            ("event_id", "4624"),
            ("LogonType", "10"),
            ("TargetUserName", "alice"),
            ("IpAddress", "10.0.0.1"),
        ],
    );
    c.evaluate_with(&plan, &mut known, &mut v, &mut judge);
    assert!(!known.anomaly);
    assert_eq!(
        (v.judged.clone(), v.flagged.clone(), v.fired.clone()),
        (vec![0], vec![], vec![3])
    );

    let mut new_ip = event(
        "security",
        &[
            ("event_id", "4624"),
            ("LogonType", "10"),
            ("TargetUserName", "alice"),
            ("IpAddress", "10.9.9.9"),
        ],
    );
    c.evaluate_with(&plan, &mut new_ip, &mut v, &mut judge);
    assert!(new_ip.anomaly);
    assert_eq!(
        (v.judged.clone(), v.flagged.clone(), v.fired.clone()),
        (vec![0], vec![0], vec![2])
    );

    // Insertion string 6 is the key of the process baseline.
    let mut proc = event(
        "security",
        &[
            ("event_id", "4688"),
            ("str6", "bob"),
            ("NewProcessName", r"C:\Temp\evil.exe"),
        ],
    );
    c.evaluate_with(&plan, &mut proc, &mut v, &mut judge);
    assert!(proc.anomaly);
    assert_eq!(v.flagged, [1]);
    assert_eq!(
        judge.asked.last().unwrap(),
        &(
            "1".to_string(),
            vec!["bob".to_string()],
            vec![r"C:\Temp\evil.exe".to_string()]
        )
    );
    // A logon that is not RDP is not judged at all.
    let mut console = event(
        "security",
        &[
            ("event_id", "4624"),
            ("LogonType", "2"),
            ("TargetUserName", "alice"),
            ("IpAddress", "10.9.9.9"),
        ],
    );
    let asked = judge.asked.len();
    c.evaluate_with(&plan, &mut console, &mut v, &mut judge);
    assert_eq!(judge.asked.len(), asked);
    assert!(!console.anomaly);
    // Without baselines nothing is flagged.
    let mut again = event(
        "security",
        &[
            ("event_id", "4624"),
            ("LogonType", "10"),
            ("TargetUserName", "alice"),
            ("IpAddress", "10.9.9.9"),
        ],
    );
    assert_eq!(fired(&c, &mut again), ["normal"]);
    // The prefilter and the naive evaluation agree with a judge too.
    let mut a = event(
        "security",
        &[
            ("event_id", "4624"),
            ("LogonType", "10"),
            ("TargetUserName", "alice"),
            ("IpAddress", "10.9.9.9"),
        ],
    );
    let mut b2 = a.clone();
    c.evaluate_with(&plan, &mut a, &mut v, &mut judge);
    assert_eq!(v, c.evaluate_naive(&mut b2, &mut judge));
}

#[test]
fn anomaly_filter_mistakes_are_reported_at_their_place() {
    let cases: &[(&str, &str)] = &[
        (
            r#"[[filter]]
name = "a"
anomaly = { key = ["user"] }
"#,
            "needs `value",
        ),
        (
            r#"[[filter]]
name = "a"
anomaly = { value = ["ip"], learning = "2 weeks" }
"#,
            "not a duration",
        ),
        (
            r#"[[filter]]
name = "a"
anomaly = { value = [0] }
"#,
            "from 1 to 512",
        ),
        (
            r#"[[filter]]
name = "a"
anomaly = { value = ["ip"], learn_by_key = true }
"#,
            "unknown key `learn_by_key`",
        ),
        (
            r#"[[filter]]
name = "a"
anomaly = { value = ["ip"] }
actions = ["siem"]
"#,
            "only flags events",
        ),
        (
            r#"[[filter]]
name = "a"
exclude = true
anomaly = { value = ["ip"] }
"#,
            "exclude filter",
        ),
        (
            r#"[[filter]]
name = "a"
anomaly = { value = ["ip"], max_values_per_key = 0 }
"#,
            "max_values_per_key",
        ),
    ];
    for (text, want) in cases {
        let errs = specs(text).unwrap_err();
        assert!(
            errs.iter().any(|e| e.message.contains(want)),
            "{text}: {errs:?}"
        );
    }
    // `anomaly = "only"` above every anomaly filter has nothing to select.
    let text = r#"[[filter]]
name = "early"
anomaly = "only"

[[filter]]
name = "baseline"
anomaly = { value = ["ip"] }
"#;
    let resolve = |_: &str| None;
    let errs = Chain::build(specs(text).unwrap(), &resolve, &[]).unwrap_err();
    assert!(errs[0].message.contains("above it"), "{errs:?}");
}
