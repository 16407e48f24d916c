//! The formats watchpost parses, by name, and recognising them from a file's first bytes.

/// A log format with a parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// SEP client daily AV log (`MMDDYYYY.Log`, CSV with hex time). Config name `sep_av_log`.
    SepAvLog,
    /// SEP client security/IPS log (`seclog.log`). Config name `sep_security_log`.
    SepSecurityLog,
    /// SEP client traffic log (`tralog.log`). Config name `sep_traffic_log`.
    SepTrafficLog,
    /// SEP client system log (`syslog.log`). Config name `sep_system_log`.
    SepSystemLog,
    /// SEP client application/device control log (`processlog.log`). Config name `sep_process_log`.
    SepProcessLog,
    /// SEPM syslog export lines (with or without an RFC 3164/5424 header). Config name `sep_manager_syslog`.
    SepManagerSyslog,
    /// One JSON object per line. Config name `jsonl`.
    JsonLines,
}

impl Format {
    /// Every format, in documentation order.
    pub const ALL: [Format; 7] = [
        Format::SepAvLog,
        Format::SepSecurityLog,
        Format::SepTrafficLog,
        Format::SepSystemLog,
        Format::SepProcessLog,
        Format::SepManagerSyslog,
        Format::JsonLines,
    ];

    /// The name used in `type = "…"` of a `[[source]]`.
    pub fn name(self) -> &'static str {
        match self {
            Format::SepAvLog => "sep_av_log",
            Format::SepSecurityLog => "sep_security_log",
            Format::SepTrafficLog => "sep_traffic_log",
            Format::SepSystemLog => "sep_system_log",
            Format::SepProcessLog => "sep_process_log",
            Format::SepManagerSyslog => "sep_manager_syslog",
            Format::JsonLines => "jsonl",
        }
    }

    /// The format with config name `name`.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether records are SEP binary-log records (framed by Entry Length) instead of lines.
    pub fn is_sep_binary(self) -> bool {
        matches!(
            self,
            Format::SepSecurityLog | Format::SepTrafficLog | Format::SepSystemLog | Format::SepProcessLog
        )
    }
}
