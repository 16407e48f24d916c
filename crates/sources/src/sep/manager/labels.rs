//! The labels SEPM writes and the field names they become.

use watchpost_event::Sym;

/// Known labels (as SEPM writes them) and their field names. Other labels are snake_cased
/// (lower case, runs of other characters → `_`); a name equal to a metadata name gets
/// `_label` appended.
pub const LABELS: &[(&str, &str)] = &[
    ("Action", "action"),
    ("Action Type", "action_type"),
    ("Actual action", "actual_action"),
    ("Admin", "admin"),
    ("Application", "application"),
    ("Application hash", "application_hash"),
    ("Application name", "application_name"),
    ("Application type", "application_type"),
    ("Application version", "application_version"),
    ("Begin", "begin"),
    ("CIDS Signature ID", "cids_signature_id"),
    ("CIDS Signature SubID", "cids_signature_subid"),
    ("CIDS Signature string", "cids_signature_string"),
    ("COH Engine Version", "coh_engine_version"),
    ("Category", "category"),
    ("Category set", "category_set"),
    ("Category type", "category_type"),
    ("Certificate issuer", "certificate_issuer"),
    ("Certificate serial number", "certificate_serial_number"),
    ("Certificate signer", "certificate_signer"),
    ("Certificate thumbprint", "certificate_thumbprint"),
    ("Command", "command"),
    ("Company name", "company_name"),
    ("Computer", "computer_name"),
    ("Computer name", "computer_name"),
    ("Confidence", "confidence"),
    ("Description", "description"),
    ("Detection Source", "detection_source"),
    ("Detection score", "detection_score"),
    ("Detection type", "detection_type"),
    ("Device ID", "device_id"),
    ("Disposition", "disposition"),
    ("Domain", "domain_name"),
    ("Domain Name", "domain_name"),
    ("Download site", "download_site"),
    ("Downloaded by", "downloaded_by"),
    ("Duration (seconds)", "duration_seconds"),
    ("End", "end"),
    ("End Time", "end"),
    ("Event Description", "event_description"),
    ("Event Insert Time", "inserted"),
    ("Event time", "event_time"),
    ("File path", "file_path"),
    ("File size (bytes)", "file_size_bytes"),
    ("First Seen", "first_seen"),
    ("Group", "group"),
    ("Group Name", "group"),
    ("Hash type", "hash_type"),
    ("IP Address", "ip_address"),
    ("Infected", "infected"),
    ("Inserted", "inserted"),
    ("Intensive Protection Level", "intensive_protection_level"),
    ("Intrusion ID", "intrusion_id"),
    ("Intrusion Payload URL", "intrusion_payload_url"),
    ("Intrusion URL", "intrusion_url"),
    ("Last update time", "last_update_time"),
    ("Local", "local_host_ip"),
    ("Local Host", "local_host_ip"),
    ("Local Host IP", "local_host_ip"),
    ("Local Host MAC", "local_host_mac"),
    ("Local Port", "local_port"),
    ("Location", "location"),
    ("MD-5", "md5"),
    ("Occurrences", "occurrences"),
    ("Omitted", "omitted"),
    (
        "Permitted application reason",
        "permitted_application_reason",
    ),
    ("Prevalence", "prevalence"),
    ("Remote Host IP", "remote_host_ip"),
    ("Remote Host MAC", "remote_host_mac"),
    ("Remote Host Name", "remote_host_name"),
    ("Remote Port", "remote_port"),
    ("Requested action", "requested_action"),
    ("Risk Level", "risk_level"),
    ("Risk name", "risk_name"),
    ("Risk type", "risk_type"),
    ("Rule", "rule"),
    ("SHA-256", "sha256"),
    ("Scan Complete", "scan_complete"),
    ("Scan ID", "scan_id"),
    ("Secondary action", "secondary_action"),
    ("Sensitivity", "sensitivity"),
    ("Server", "server"),
    ("Server Name", "server"),
    ("Signing timestamp", "signing_timestamp"),
    ("Site", "site"),
    ("Source", "scan_source"),
    ("Source IP", "source_ip"),
    ("Source computer", "source_computer"),
    ("Threats", "threats"),
    ("Total files", "total_files"),
    ("URL Tracking Status", "url_tracking_status"),
    ("User", "user_name"),
    ("User Name", "user_name"),
    ("User1", "user1"),
    ("User2", "user2"),
    ("Web domain", "web_domain"),
];

/// Fields derived from the line rather than read from one cell.
pub const DERIVED: [&str; 11] = [
    "family",
    "signature_id",
    "signature_name",
    "signature_category",
    "blocked",
    "detection_submissions",
    "syslog_priority",
    "syslog_hostname",
    "syslog_appname",
    "syslog_procid",
    "severity",
];

/// Normalised names of snake_cased labels that differ from the plain rule.
pub(crate) const ALIASES: [(&str, &str); 12] = [
    ("end_time", "end"),
    ("event_insert_time", "inserted"),
    ("domain", "domain_name"),
    ("server_name", "server"),
    ("user", "user_name"),
    ("local", "local_host_ip"),
    ("local_host", "local_host_ip"),
    ("computer", "computer_name"),
    ("group_name", "group"),
    ("sha_256", "sha256"),
    ("md_5", "md5"),
    ("source", "scan_source"),
];

/// The field name for a label.
pub fn field_name(label: &str) -> String {
    if let Some((_, n)) = LABELS.iter().find(|(l, _)| *l == label) {
        return (*n).to_owned();
    }
    let mut out = String::with_capacity(label.len());
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if let Some((_, n)) = ALIASES.iter().find(|(a, _)| *a == out) {
        return (*n).to_owned();
    }
    if Sym::get(&out).is_some_and(Sym::is_metadata) {
        out.push_str("_label");
    }
    out
}
