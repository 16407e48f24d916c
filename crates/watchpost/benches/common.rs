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
