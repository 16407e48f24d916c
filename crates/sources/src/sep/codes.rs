//! Code tables for the SEP logs: numbers to names.
//!
//! Sources: `docs/formats.md`, which restates the reference (`sep-logs.md` §1.4–1.7, §2.4–2.7)
//! and Beercow/SEPparser's format notes. A code that is not in a table has no name: parsers keep
//! the number and leave the `…_name` field out.

/// A code table. Each variant decodes one kind of coded field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// AV log field 1: event number (`INFECTION`, `LOAD_PATTERN`, …).
    AvEvent,
    /// AV log field 2: category.
    AvCategory,
    /// AV log field 3: the engine that wrote the line (`Real_Time`, `Bash`, …).
    AvLogger,
    /// AV log fields 8, 9, 10: wanted and taken actions.
    AvAction,
    /// AV log field 11: virus type.
    VirusType,
    /// AV log field 20: quarantine forward status.
    ForwardStatus,
    /// AV log field 28: clean info.
    CleanInfo,
    /// AV log field 29: delete info.
    DeleteInfo,
    /// AV log field 54: eraser status.
    EraserStatus,
    /// AV log field 60: eraser category.
    EraserCategory,
    /// AV log field 61: dynamic category set.
    CategorySet,
    /// AV log field 64: reputation disposition.
    Disposition,
    /// AV log field 70: network intrusion prevention state.
    CidsState,
    /// AV log field 71: behaviour risk level.
    RiskLevel,
    /// AV log field 72: detection type.
    DetectionType,
    /// AV log field 74: VSIC state.
    VsicState,
    /// AV log field 78: target application type.
    TargetAppType,
    /// AV log Event Data 2 hash type.
    HashType,
    /// AV log Event Data type 301 (tamper protection): the operation.
    TamperOperation,
    /// seclog.log event id.
    SeclogEvent,
    /// seclog.log / tralog.log severity (0–15 in four bands).
    Severity,
    /// seclog.log protocol.
    Protocol,
    /// seclog.log / tralog.log direction.
    Direction,
    /// tralog.log event id.
    TralogEvent,
    /// syslog.log event id (`0x1207xxxx`).
    SyslogEvent,
    /// syslog.log severity.
    SyslogSeverity,
    /// processlog.log event id.
    ProcessEvent,
    /// processlog.log action.
    ProcessAction,
}

impl Table {
    /// The name of `code`, if the table has one.
    pub fn name(self, code: i64) -> Option<&'static str> {
        match self {
            Table::AvEvent => av_event(code),
            Table::AvCategory => av_category(code),
            Table::AvLogger => av_logger(code),
            Table::AvAction => av_action(code),
            Table::VirusType => virus_type(code),
            Table::ForwardStatus => pick(code, &[(0, "NONE"), (1, "FAILED"), (2, "OK")]),
            Table::CleanInfo => pick(
                code,
                &[
                    (0, "CLEANABLE"),
                    (1, "NO CLEAN PATTERN"),
                    (2, "NOT CLEANABLE"),
                ],
            ),
            Table::DeleteInfo => pick(code, &[(4, "DELETABLE"), (5, "NOT DELETABLE")]),
            Table::EraserStatus => eraser_status(code),
            Table::EraserCategory => eraser_category(code),
            Table::CategorySet => category_set(code),
            Table::Disposition => pick(code, &[(0, "Good"), (1, "Bad"), (127, "Unknown")]),
            Table::CidsState => cids_state(code),
            Table::RiskLevel => match code {
                0 => Some("Unknown"),
                1 | 2 => Some("Low"),
                3 => Some("Medium"),
                4 => Some("High"),
                _ => None,
            },
            Table::DetectionType => pick(code, &[(0, "Traditional"), (1, "Heuristic")]),
            Table::VsicState => pick(code, &[(0, "Off"), (1, "On"), (2, "Failed")]),
            Table::TargetAppType => pick(code, &[(0, "Normal"), (1, "Modern")]),
            Table::HashType => pick(code, &[(0, "MD5"), (1, "SHA-1"), (2, "SHA-256")]),
            Table::TamperOperation => tamper_operation(code),
            Table::SeclogEvent => seclog_event(code),
            Table::Severity => severity(code),
            Table::Protocol => pick(code, &[(1, "OTHERS"), (2, "TCP"), (3, "UDP"), (4, "ICMP")]),
            Table::Direction => pick(code, &[(0, "unknown"), (1, "inbound"), (2, "outbound")]),
            Table::TralogEvent => tralog_event(code),
            Table::SyslogEvent => syslog_event(code),
            Table::SyslogSeverity => pick(
                code,
                &[(0, "Info"), (1, "Warning"), (2, "Error"), (3, "Fatal")],
            ),
            Table::ProcessEvent => pick(
                code,
                &[
                    (501, "Application Control Driver"),
                    (502, "Application Control Rules"),
                    (999, "Tamper Protection"),
                ],
            ),
            Table::ProcessAction => pick(
                code,
                &[
                    (0, "allow"),
                    (1, "block"),
                    (2, "ask"),
                    (3, "continue"),
                    (4, "terminate"),
                ],
            ),
        }
    }
}

fn pick(code: i64, table: &[(i64, &'static str)]) -> Option<&'static str> {
    table.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// AV log event names by number (0 and unused numbers are empty).
const AV_EVENTS: [&str; 95] = [
    "",
    "IS_ALERT",
    "SCAN_STOP",
    "SCAN_START",
    "PATTERN_UPDATE",
    "INFECTION",
    "FILE_NOT_OPEN",
    "LOAD_PATTERN",
    "MESSAGE_INFO",
    "MESSAGE_ERROR",
    "CHECKSUM",
    "TRAP",
    "CONFIG_CHANGE",
    "SHUTDOWN",
    "STARTUP",
    "",
    "PATTERN_DOWNLOAD",
    "TOO_MANY_VIRUSES",
    "FWD_TO_QSERVER",
    "SCANDLVR",
    "BACKUP",
    "SCAN_ABORT",
    "RTS_LOAD_ERROR",
    "RTS_LOAD",
    "RTS_UNLOAD",
    "",
    "SCAN_DELAYED",
    "SCAN_RESTART",
    "ADD_SAVROAMCLIENT_TOSERVER",
    "REMOVE_SAVROAMCLIENT_FROMSERVER",
    "LICENSE_WARNING",
    "LICENSE_ERROR",
    "LICENSE_GRACE",
    "UNAUTHORIZED_COMM",
    "LOG_FWD_THRD_ERR",
    "LICENSE_INSTALLED",
    "LICENSE_ALLOCATED",
    "LICENSE_OK",
    "LICENSE_DEALLOCATED",
    "BAD_DEFS_ROLLBACK",
    "BAD_DEFS_UNPROTECTED",
    "SAV_PROVIDER_PARSING_ERROR",
    "RTS_ERROR",
    "COMPLIANCE_FAIL",
    "COMPLIANCE_SUCCESS",
    "SECURITY_SYMPROTECT_POLICYVIOLATION",
    "ANOMALY_START",
    "DETECTION_ACTION_TAKEN",
    "REMEDIATION_ACTION_PENDING",
    "REMEDIATION_ACTION_FAILED",
    "REMEDIATION_ACTION_SUCCESSFUL",
    "ANOMALY_FINISH",
    "COMMS_LOGIN_FAILED",
    "COMMS_LOGIN_SUCCESS",
    "COMMS_UNAUTHORIZED_COMM",
    "CLIENT_INSTALL_AV",
    "CLIENT_INSTALL_FW",
    "CLIENT_UNINSTALL",
    "CLIENT_UNINSTALL_ROLLBACK",
    "COMMS_SERVER_GROUP_ROOT_CERT_ISSUE",
    "COMMS_SERVER_CERT_ISSUE",
    "COMMS_TRUSTED_ROOT_CHANGE",
    "COMMS_SERVER_CERT_STARTUP_FAILED",
    "CLIENT_CHECKIN",
    "CLIENT_NO_CHECKIN",
    "SCAN_SUSPENDED",
    "SCAN_RESUMED",
    "SCAN_DURATION_INSUFFICIENT",
    "CLIENT_MOVE",
    "SCAN_FAILED_ENHANCED",
    "COMPLIANCE_FAILEDAUDIT",
    "HEUR_THREAT_NOW_WHITELISTED",
    "INTERESTING_PROCESS_DETECTED_START",
    "LOAD_ERROR_BASH",
    "LOAD_ERROR_BASH_DEFINITIONS",
    "INTERESTING_PROCESS_DETECTED_FINISH",
    "HPP_SCAN_NOT_SUPPORTED_FOR_OS",
    "HEUR_THREAT_NOW_KNOWN",
    "DISABLE_BASH",
    "ENABLE_BASH",
    "DEFS_LOAD_FAILED",
    "LOCALREP_CACHE_SERVER_ERROR",
    "REPUTATION_CHECK_TIMEOUT",
    "SYMEPSECFILTER_DRIVER_ERROR",
    "VSIC_COMMUNICATION_WARNING",
    "VSIC_COMMUNICATION_RESTORED",
    "ELAM_LOAD_FAILED",
    "ELAM_INVALID_OS",
    "ELAM_ENABLE",
    "ELAM_DISABLE",
    "ELAM_BAD",
    "ELAM_BAD_REPORTED_AS_UNKNOWN",
    "DISABLE_SYMPROTECT",
    "ENABLE_SYMPROTECT",
    "NETSEC_EOC_PARSE_FAILED",
];

fn av_event(code: i64) -> Option<&'static str> {
    usize::try_from(code)
        .ok()
        .and_then(|i| AV_EVENTS.get(i))
        .copied()
        .filter(|n| !n.is_empty())
}

fn av_category(code: i64) -> Option<&'static str> {
    pick(
        code,
        &[
            (1, "Infection"),
            (2, "Summary"),
            (3, "Pattern"),
            (4, "Security"),
        ],
    )
}

fn av_logger(code: i64) -> Option<&'static str> {
    pick(
        code,
        &[
            (0, "Scheduled"),
            (1, "Manual"),
            (2, "Real_Time"),
            (3, "Integrity_Shield"),
            (6, "Console"),
            (7, "VPDOWN"),
            (8, "System"),
            (9, "Startup"),
            (10, "Idle"),
            (11, "DefWatch"),
            (12, "Licensing"),
            (13, "Manual_Quarantine"),
            (14, "SymProtect"),
            (15, "Reboot_Processing"),
            (16, "Bash"),
            (17, "SymElam"),
            (18, "PowerEraser"),
            (19, "EOCScan"),
            (100, "LOCAL_END"),
            (101, "Client"),
            (102, "Forwarded"),
            (256, "Transport_Client"),
            (131_173, "Realtime"),
            (524_389, "System"),
            (720_997, "Defwatch"),
            (6_619_237, "Client"),
        ],
    )
}

fn av_action(code: i64) -> Option<&'static str> {
    pick(
        code,
        &[
            (1, "Quarantine"),
            (2, "Rename"),
            (3, "Delete"),
            (4, "Leave Alone"),
            (5, "Clean"),
            (6, "Remove Macros"),
            (7, "Save file as"),
            (8, "Sent to backend"),
            (9, "Restore from Quarantine"),
            (10, "Rename Back"),
            (11, "Undo Action"),
            (12, "Error"),
            (13, "Backup to quarantine"),
            (14, "Pending Analysis"),
            (15, "Partially Fixed"),
            (16, "Terminate Process Required"),
            (17, "Exclude from Scanning"),
            (18, "Reboot Processing"),
            (19, "Clean by Deletion"),
            (20, "Access Denied"),
            (21, "Terminate process only"),
            (22, "No repair"),
            (23, "Fail"),
            (24, "Run PowerTool"),
            (25, "No repair PowerTool"),
            (110, "Interesting process cal"),
            (111, "Interesting process detected"),
            (1000, "Interesting process hashed detected"),
            (1001, "DNS host file exception"),
            (4_294_967_295, "Invalid"),
        ],
    )
}

fn virus_type(code: i64) -> Option<&'static str> {
    pick(
        code,
        &[
            (48, "Heuristic"),
            (64, "Reputation"),
            (80, "Hack Tools"),
            (96, "Spyware"),
            (112, "Trackware"),
            (128, "Dialers"),
            (144, "Remote Access"),
            (160, "Adware"),
            (176, "Joke Programs"),
            (224, "Heuristic Application"),
        ],
    )
}

fn eraser_status(code: i64) -> Option<&'static str> {
    const LOW: [&str; 13] = [
        "Success",
        "Reboot Required",
        "Nothing To Do",
        "Repaired",
        "Deleted",
        "False",
        "Abort",
        "Continue",
        "Service Not Stopped",
        "Application Heuristic Scan Failure",
        "Cannot Remediate",
        "Whitelist Failure",
        "Driver Failure",
    ];
    const HIGH: [&str; 33] = [
        "Generic Failure",
        "Out Of Memory",
        "Not Initialized",
        "Invalid Argument",
        "Insufficient Buffer",
        "Decryption Error",
        "File Not Found",
        "Out Of Range",
        "COM Error",
        "Partial Failure",
        "Bad Definitions",
        "Invalid Command",
        "No Interface",
        "RSA Error",
        "Path Not Empty",
        "Invalid Path",
        "Path Not Empty",
        "File Still Present",
        "Invalid OS",
        "Not Implemented",
        "Access Denied",
        "Directory Still Present",
        "Inconsistent State",
        "Timeout",
        "Action Pending",
        "Volume Write Protected",
        "Not Reparse Point",
        "File Exists",
        "Target Protected",
        "Disk Full",
        "Shutdown In Progress",
        "Media Error",
        "Network Defs Error",
    ];
    match code {
        0..=12 => LOW.get(code as usize).copied(),
        999 => Some("Leave Alone"),
        1000..=1032 => HIGH.get((code - 1000) as usize).copied(),
        _ => None,
    }
}

fn eraser_category(code: i64) -> Option<&'static str> {
    pick(
        code,
        &[
            (1, "HeuristicTrojanWorm"),
            (2, "HeuristicKeyLogger"),
            (100, "CommercialRemoteControl"),
            (101, "CommercialKeyLogger"),
            (200, "Cookie"),
            (300, "Shields"),
        ],
    )
}

fn category_set(code: i64) -> Option<&'static str> {
    pick(
        code,
        &[
            (1, "MALWARE"),
            (2, "SECURITY_RISK"),
            (3, "POTENTIALLY_UNWANTED_APPLICATIONS"),
            (4, "EXPERIMENTAL_HEURISTIC"),
            (5, "LEGACY_VIRAL"),
            (6, "LEGACY_NON_VIRAL"),
            (7, "CATEGORY_CRIMEWARE"),
            (8, "ADVANCED_HEURISTICS"),
            (9, "REPUTATION_BACKED_ADVANCED_HEURISTICS"),
            (10, "PREVALENCE_BACKED_ADVANCED_HEURISTICS"),
        ],
    )
}

fn cids_state(code: i64) -> Option<&'static str> {
    pick(
        code,
        &[
            (0, "Off"),
            (1, "On"),
            (2, "Not installed"),
            (3, "Off by administrator policy"),
            (127, "Unknown"),
        ],
    )
}

fn tamper_operation(code: i64) -> Option<&'static str> {
    pick(
        code,
        &[
            (1, "File Create"),
            (2, "File Delete"),
            (3, "File Open"),
            (6, "Directory Create"),
            (7, "Directory Delete"),
            (14, "Registry Key Create"),
            (15, "Registry Key Delete"),
            (16, "Registry Value Delete"),
            (17, "Registry Value Set"),
            (18, "Registry Key Rename"),
            (19, "Registry Key Set Security"),
            (45, "File Set Security"),
            (46, "Directory Set Security"),
            (55, "Process Open"),
            (56, "Process Duplicate"),
        ],
    )
}

fn seclog_event(code: i64) -> Option<&'static str> {
    pick(
        code,
        &[
            (201, "Invalid traffic by rule"),
            (202, "Port scan"),
            (203, "Denial of service"),
            (204, "Trojan"),
            (205, "Executable file changed"),
            (206, "IPS intrusion detected"),
            (207, "Active Response"),
            (208, "MAC spoofing"),
            (209, "Host Integrity failed"),
            (210, "Host Integrity passed"),
            (211, "Active Response disengaged"),
            (216, "Executable file change detected"),
            (217, "Executable file change accepted"),
            (218, "Executable file change denied"),
            (219, "Active Response cancelled"),
            (220, "Application hijacking"),
            (221, "Host Integrity failed but reported passed"),
            (237, "Host Integrity custom entry"),
            (238, "Device control disabled device"),
            (239, "Buffer overflow"),
            (240, "Software protection exception"),
            (241, "Not used"),
            (242, "Device control enabled device"),
            (249, "Browser Protection"),
            (250, "Memory Exploit Mitigation blocked"),
            (251, "Memory Exploit Mitigation allowed"),
        ],
    )
}

fn severity(code: i64) -> Option<&'static str> {
    match code {
        0..=3 => Some("Critical"),
        4..=7 => Some("Major"),
        8..=11 => Some("Minor"),
        12..=15 => Some("Info"),
        _ => None,
    }
}

fn tralog_event(code: i64) -> Option<&'static str> {
    pick(
        code,
        &[
            (301, "TCP initiated"),
            (302, "UDP datagram"),
            (303, "Ping request"),
            (304, "TCP completed"),
            (305, "Traffic (other)"),
            (306, "ICMPv4 packet"),
            (307, "Ethernet packet"),
            (308, "IP packet"),
            (309, "ICMPv6 packet"),
        ],
    )
}

/// syslog.log event ids, sorted by code for a binary search.
const SYSLOG_EVENTS: &[(i64, &str)] = &[
    (0x1207_0001, "Internal error"),
    (0x1207_0101, "Install complete"),
    (0x1207_0102, "Restart recommended"),
    (0x1207_0103, "Restart required"),
    (0x1207_0104, "Installation failed"),
    (0x1207_0105, "Uninstallation complete"),
    (0x1207_0106, "Uninstallation failed"),
    (0x1207_0201, "Service starting"),
    (0x1207_0202, "Service started"),
    (0x1207_0203, "Service start failure"),
    (0x1207_0204, "Service stopped"),
    (0x1207_0205, "Service stop failure"),
    (0x1207_0206, "Config import complete"),
    (0x1207_0207, "Config import error"),
    (0x1207_0208, "Config export complete"),
    (0x1207_0209, "Config export error"),
    (0x1207_020A, "Email post OK"),
    (0x1207_020B, "Email post failure"),
    (0x1207_020C, "Update complete"),
    (0x1207_020D, "Update failure"),
    (0x1207_020E, "Manual location change"),
    (0x1207_020F, "Location changed"),
    (0x1207_0210, "Host Integrity disabled"),
    (0x1207_0211, "Host Integrity enabled"),
    (0x1207_0212, "Old rasdll version detected"),
    (0x1207_0213, "Auto-update postponed"),
    (0x1207_0214, "Imported advanced rule"),
    (0x1207_0215, "Failed to import advanced rule"),
    (0x1207_0216, "Exported advanced rule"),
    (0x1207_0217, "Failed to export advanced rule"),
    (0x1207_0218, "Client Engine enabled"),
    (0x1207_0219, "Client Engine disabled"),
    (0x1207_021A, "Attempt to stop service"),
    (0x1207_021B, "Imported sylink"),
    (0x1207_0220, "NAP integration enabled"),
    (0x1207_0301, "Server connected"),
    (0x1207_0302, "No server response"),
    (0x1207_0303, "Server connection failed"),
    (0x1207_0304, "Server disconnected"),
    (0x1207_0305, "Mode changed"),
    (0x1207_0306, "New policy received"),
    (0x1207_0307, "New policy applied"),
    (0x1207_0308, "New policy failed"),
    (0x1207_0309, "Cannot download policy"),
    (0x1207_030A, "Have latest policy"),
    (0x1207_030B, "Cannot apply HI script"),
    (0x1207_030C, "Content Update Server"),
    (0x1207_030D, "Content Update Packet"),
    (0x1207_0500, "System message from device control"),
    (
        0x1207_0600,
        "System message from anti-buffer overflow driver",
    ),
    (0x1207_0700, "System message from network access component"),
    (0x1207_0800, "System message from LiveUpdate"),
    (0x1207_0900, "System message from GUP"),
    (0x1207_1000, "Message from Intrusion Prevention"),
    (0x1207_1006, "Scan omission"),
    (0x1207_1007, "Definition file loaded"),
    (0x1207_100B, "Virus behavior detected"),
    (0x1207_100C, "Configuration changed"),
    (0x1207_1010, "Definition file download"),
    (0x1207_1012, "Sent to quarantine server"),
    (0x1207_1013, "Delivered to Symantec"),
    (0x1207_1014, "Security Response backup"),
    (0x1207_1015, "Scan aborted"),
    (0x1207_1016, "Auto-Protect load error"),
    (0x1207_1017, "Auto-Protect enabled"),
    (0x1207_1018, "Auto-Protect disabled"),
    (0x1207_101A, "Scan delayed"),
    (0x1207_101B, "Scan restarted"),
    (0x1207_101E, "License warning"),
    (0x1207_101F, "License error"),
    (0x1207_1020, "License in grace period"),
    (0x1207_1021, "Access denied warning"),
    (0x1207_1022, "Log forwarding error"),
    (0x1207_1023, "License installed"),
    (0x1207_1025, "License up-to-date"),
    (0x1207_1027, "Using old virus definitions"),
    (0x1207_102B, "Computer not compliant with security policy"),
    (0x1207_102C, "Computer compliant with security policy"),
    (0x1207_102D, "Tamper attempt"),
    (0x1207_1034, "Login failed"),
    (0x1207_1035, "Login succeeded"),
    (0x1207_1036, "Access denied warning"),
    (0x1207_1037, "Symantec Endpoint Protection installed"),
    (0x1207_1038, "Symantec Firewall installed"),
    (0x1207_1039, "Uninstall"),
    (0x1207_103A, "Uninstall rolled back"),
    (0x1207_1041, "Scan suspended"),
    (0x1207_1042, "Scan resumed"),
    (0x1207_1043, "Scan duration too short"),
    (0x1207_1044, "Client moved"),
    (0x1207_1045, "Scan enhancements failed"),
    (0x1207_1046, "Proactive Threat Scanning not supported"),
    (0x1207_1047, "Proactive Threat Scanning load error"),
    (0x1207_1048, "SONAR content load error"),
    (0x1207_1049, "Allow application"),
    (0x1207_1050, "SONAR disabled"),
    (0x1207_1051, "SONAR enabled"),
    (0x1207_2000, "System message from Memory Exploit Mitigation"),
    (0x1207_2009, "Intensive Protection disabled"),
    (0x1207_200A, "Intensive Protection enabled"),
    (0x120B_0001, "Cannot reach server"),
    (0x120B_0002, "Reconnected to the server"),
    (0x120B_0003, "Automatic upgrade complete"),
    (0x120B_0004, "Have latest policy"),
    (0x120B_0005, "Cannot download policy"),
    (0x1212_0001, "System message from centralized reputation"),
    (0x1212_0002, "Authentication token failure"),
    (0x1212_0003, "Reputation failure"),
    (0x1212_0004, "Reputation network failure"),
    (0x1213_0001, "System message from Submissions"),
    (0x1213_0002, "Submissions failure"),
    (0x1213_0003, "Intrusion prevention submission"),
    (0x1213_0004, "Antivirus detection submission"),
    (
        0x1213_0005,
        "Antivirus advanced heuristic detection submission",
    ),
    (0x1213_0006, "Manual user submission"),
    (0x1213_0007, "SONAR heuristic submission"),
    (0x1213_0008, "SONAR detection submission"),
    (0x1213_0009, "File Reputation submission"),
    (0x1213_000A, "Client authentication token request"),
    (0x1213_000B, "LiveUpdate error submission"),
    (0x1213_000C, "Process data submission"),
    (0x1213_000D, "Configuration data submission"),
    (0x1213_000E, "Network data submission"),
];

fn syslog_event(code: i64) -> Option<&'static str> {
    SYSLOG_EVENTS
        .binary_search_by_key(&code, |(c, _)| *c)
        .ok()
        .map(|i| SYSLOG_EVENTS[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_decode_and_unknown_codes_have_none() {
        assert_eq!(Table::AvEvent.name(5), Some("INFECTION"));
        assert_eq!(Table::AvEvent.name(7), Some("LOAD_PATTERN"));
        assert_eq!(Table::AvEvent.name(46), Some("ANOMALY_START"));
        assert_eq!(Table::AvEvent.name(94), Some("NETSEC_EOC_PARSE_FAILED"));
        assert_eq!(Table::AvEvent.name(15), None);
        assert_eq!(Table::AvEvent.name(-1), None);
        assert_eq!(Table::AvEvent.name(1_000), None);
        assert_eq!(Table::AvLogger.name(16), Some("Bash"));
        assert_eq!(Table::AvAction.name(4_294_967_295), Some("Invalid"));
        assert_eq!(Table::EraserStatus.name(1032), Some("Network Defs Error"));
        assert_eq!(Table::EraserStatus.name(13), None);
        assert_eq!(Table::Severity.name(3), Some("Critical"));
        assert_eq!(Table::Severity.name(16), None);
        assert_eq!(
            Table::SyslogEvent.name(0x1207_1027),
            Some("Using old virus definitions")
        );
        assert_eq!(Table::SyslogEvent.name(0x1207_1028), None);
    }

    #[test]
    fn syslog_table_is_sorted() {
        assert!(SYSLOG_EVENTS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
