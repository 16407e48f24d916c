//! Shared by the benchmark binaries: a 100-filter configuration in the shape of a real one.
#![allow(dead_code)]

/// 99 filters that do not fire on an Auto-Protect detection line (spread over fields,
/// operators and sources like a real rule set) plus one that does.
pub fn hundred_filters() -> String {
    let mut s = String::new();
    for i in 0..99 {
        let m = match i % 6 {
            0 => format!("source = \"sep-av\", risk_name = {{ prefix = \"Trojan.Fake{i}\" }}"),
            1 => format!("source = \"sep-av\", file_path = {{ suffix = \".never{i}\" }}"),
            2 => format!(
                "source = \"sep-av\", event_code = {}, user = \"nobody{i}\"",
                100 + i
            ),
            3 => {
                format!("source = \"sep-av\", description = {{ contains = \"no-such-text-{i}\" }}")
            }
            4 => format!("source = \"sep-ips\", signature_name = {{ prefix = \"Audit: {i}\" }}"),
            _ => format!(
                "source = \"sep-av\", computer = {{ in = [\"host-a{i}\", \"host-b{i}\", \"host-c{i}\"] }}"
            ),
        };
        s.push_str(&format!(
            "[[filter]]\nname = \"f{i}\"\nmatch = {{ {m} }}\nactions = [\"out\"]\n\n"
        ));
    }
    s.push_str("[[filter]]\nname = \"virus-found\"\nmatch = { source = \"sep-av\", event_code = 5, logger_name = { in = [\"Real_Time\", \"Bash\"] } }\nactions = [\"out\"]\n");
    s
}

/// The columns of an Auto-Protect "virus found" line of the SEP AV log fixture (with
/// `logger_name` Real_Time), for benches to fill in their own file path (column 7).
pub fn sep_detection_template() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/sep/client-av/05292019.Log"
    ))
    .expect("fixture");
    let line = text
        .lines()
        .find(|l| l.split(',').nth(1) == Some("5"))
        .expect("virus line")
        .to_owned();
    let mut cols: Vec<String> = line.split(',').map(str::to_owned).collect();
    cols[3] = "2".into();
    cols
}
