//! Sigma `logsource` → where the rule applies: Windows channels (and event ids the
//! logsource implies), plus the field renames a target needs.
//!
//! The table follows pySigma's `windows` pipelines: services map to channels
//! (`windows_logsource_pipeline`), Sysmon categories to Sysmon event ids, and
//! `process_creation` additionally to Security 4688 with the `windows_audit_pipeline`
//! field names (`Image` → `NewProcessName`, `ParentImage` → `ParentProcessName`,
//! `ProcessId` → `NewProcessId`, `ParentProcessId` → `ProcessId`, `User` →
//! `SubjectUserName`, `LogonId` → `SubjectLogonId`). Fields that 4688 does not have
//! (`OriginalFileName`, `Hashes`, `ParentCommandLine`, `CurrentDirectory`, …) are
//! absent there, so a selection on them does not match a 4688 event.

/// The Sysmon channel.
pub const SYSMON: &str = "Microsoft-Windows-Sysmon/Operational";

/// Where one compiled form of a rule applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The channel (`None`: any Windows event, or for non-Windows rules, see
    /// [`Target::windows`]).
    pub channel: Option<&'static str>,
    /// Event ids the logsource implies (`None`: any, unless the detection pins some).
    pub event_ids: Option<Vec<i64>>,
    /// Whether the rule is for Windows events (events with a `channel` field).
    pub windows: bool,
    /// Field renames (Sigma name → event field) applied on top of the common ones.
    pub renames: &'static [(&'static str, &'static str)],
}

/// Renames for every Windows event: Sigma's System names (as SigmaHQ's and Hayabusa's
/// rules write them, `Provider_Name`, `Security_UserID`, `Execution_ProcessID`, and
/// Hayabusa's aliases `ProviderName`, `SecurityUserID`, `ExecutionProcessID`,
/// `ComputerName`) → our event fields.
pub const WINDOWS_COMMON: &[(&str, &str)] = &[
    ("EventID", "event_id"),
    ("Provider_Name", "provider"),
    ("ProviderName", "provider"),
    ("Channel", "channel"),
    ("Computer", "computer"),
    ("ComputerName", "computer"),
    ("EventRecordID", "record_id"),
    ("Security_UserID", "user_sid"),
    ("SecurityUserID", "user_sid"),
    ("Correlation_ActivityID", "activity_id"),
    ("Execution_ProcessID", "process_id"),
    ("ExecutionProcessID", "process_id"),
    ("Execution_ThreadID", "thread_id"),
];

/// Names a test reads from the event's field of that name when it has one, else from
/// another field:
///
/// * Sigma System names that EventData also uses (Sysmon 4 has a `Version`, some
///   providers a `Level`) → the System field;
/// * Hayabusa's field aliases (its `eventkey_alias.txt`) for UserData leaves and
///   EventData names with spaces: `LogFileClearedChannel` is the `Channel` of System
///   104's `<UserData><LogFileCleared>`, `ThreatName` Defender's `Threat Name`, ….
pub const WINDOWS_SYSTEM_FALLBACK: &[(&str, &str)] = &[
    ("Level", "level"),
    ("Task", "task"),
    ("Opcode", "opcode"),
    ("Keywords", "keywords"),
    ("Version", "version"),
    ("UserID", "user_sid"),
    ("ActivityID", "activity_id"),
    ("Qualifiers", "qualifiers"),
    ("LogFileClearedChannel", "Channel"),
    ("LogFileClearedSubjectUserName", "SubjectUserName"),
    ("DvrFmwk2003InstanceId", "InstanceId"),
    ("DvrFmwkInstanceId", "InstanceId"),
    ("InstanceID", "InstanceId"),
    ("OperationEssStartedNamespaceName", "NamespaceName"),
    ("OperationEssStartedPossibleCause", "PossibleCause"),
    ("OperationEssStartedProcessid", "Processid"),
    ("OperationEssStartedProvider", "Provider"),
    ("OperationEssStartedQuery", "Query"),
    ("OperationEssStartedUser", "User"),
    ("RdsGtwErrorCode", "ErrorCode"),
    ("RdsGtwUsername", "Username"),
    ("RdsGtwIpAddress", "IpAddress"),
    ("RdsGtwAuthType", "AuthType"),
    ("RdsGtwResource", "Resource"),
    ("RdsGtwConnectionProtocol", "ConnectionProtocol"),
    ("RdsGtwBytesReceived", "BytesReceived"),
    ("RdsGtwBytesTransfered", "BytesTransfered"),
    ("RdsGtwSessionDuration", "SessionDuration"),
    ("UserDataAddress", "Address"),
    ("UserDataCode", "Code"),
    ("UserDataConsumer", "CONSUMER"),
    ("UserDataESS", "ESS"),
    ("UserDataHostProcess", "HostProcess"),
    ("UserDataNamespace", "Namespace"),
    ("UserDataNamespaceName", "NamespaceName"),
    ("UserDataParam1", "Param1"),
    ("UserDataParam2", "Param2"),
    ("UserDataParam3", "Param3"),
    ("UserDataPossibleCause", "PossibleCause"),
    ("UserDataProcessID", "ProcessID"),
    ("UserDataProcessid", "Processid"),
    ("UserDataProviderName", "ProviderName"),
    ("UserDataProviderPath", "ProviderPath"),
    ("UserDataQuery", "Query"),
    ("UserDataSessionID", "SessionID"),
    ("UserDataUser", "User"),
    ("WMI-UserDataUser", "User"),
    ("CategoryName", "Category Name"),
    ("DetectionUser", "Detection User"),
    ("New_Value", "New Value"),
    ("OriginalFilename", "OriginalFileName"),
    ("SAMAccountName", "SamAccountName"),
    ("SeverityID", "Severity ID"),
    ("SeverityName", "Severity Name"),
    ("Source_Name", "Source Name"),
    ("ThreatName", "Threat Name"),
    ("WindowsDefenderProcessName", "Process Name"),
    ("DomainName", "SubjectDomainName"),
    ("TaskDate", "TaskContent"),
];

/// `process_creation` on Security 4688 (pySigma `windows_audit_pipeline`).
pub const AUDIT_4688: &[(&str, &str)] = &[
    ("Image", "NewProcessName"),
    ("ParentImage", "ParentProcessName"),
    ("ProcessId", "NewProcessId"),
    ("ParentProcessId", "ProcessId"),
    ("User", "SubjectUserName"),
    ("LogonId", "SubjectLogonId"),
];

fn win(channel: &'static str, ids: &[i64]) -> Target {
    Target {
        channel: Some(channel),
        event_ids: if ids.is_empty() {
            None
        } else {
            Some(ids.to_vec())
        },
        windows: true,
        renames: &[],
    }
}

/// Sigma `service` → Windows channels. pySigma's `windows_logsource_mapping` (its common
/// pipeline), plus the services SigmaHQ's `windows/builtin` tree uses that pySigma does
/// not list yet (`ldap`, `smbserver-connectivity`, `smbclient-connectivity`, `ntfs`,
/// `hyper-v-worker`, `kernel-shimengine`, `iis-configuration`, …), with the channel
/// named in the rule's `definition` or in Microsoft's channel list. Where Windows has
/// written a channel name two ways (`Security-Mitigations/KernelMode` and `Kernel Mode`),
/// both are listed.
const SERVICES: &[(&str, &[&str])] = &[
    ("security", &["Security"]),
    ("system", &["System"]),
    ("application", &["Application"]),
    ("sysmon", &[SYSMON]),
    ("sysmon-operational", &[SYSMON]),
    (
        "powershell",
        &[
            "Microsoft-Windows-PowerShell/Operational",
            "PowerShellCore/Operational",
        ],
    ),
    ("powershell-classic", &["Windows PowerShell"]),
    (
        "taskscheduler",
        &["Microsoft-Windows-TaskScheduler/Operational"],
    ),
    ("wmi", &["Microsoft-Windows-WMI-Activity/Operational"]),
    (
        "windefend",
        &["Microsoft-Windows-Windows Defender/Operational"],
    ),
    ("dns-server", &["DNS Server"]),
    ("dns-server-audit", &["Microsoft-Windows-DNS-Server/Audit"]),
    (
        "dns-server-analytic",
        &["Microsoft-Windows-DNS-Server/Analytical"],
    ),
    (
        "dns-client",
        &["Microsoft-Windows-DNS Client Events/Operational"],
    ),
    (
        "driver-framework",
        &["Microsoft-Windows-DriverFrameworks-UserMode/Operational"],
    ),
    ("ntlm", &["Microsoft-Windows-NTLM/Operational"]),
    (
        "bits-client",
        &["Microsoft-Windows-Bits-Client/Operational"],
    ),
    (
        "codeintegrity-operational",
        &["Microsoft-Windows-CodeIntegrity/Operational"],
    ),
    (
        "firewall-as",
        &["Microsoft-Windows-Windows Firewall With Advanced Security/Firewall"],
    ),
    ("msexchange-management", &["MSExchange Management"]),
    (
        "applocker",
        &[
            "Microsoft-Windows-AppLocker/MSI and Script",
            "Microsoft-Windows-AppLocker/EXE and DLL",
            "Microsoft-Windows-AppLocker/Packaged app-Deployment",
            "Microsoft-Windows-AppLocker/Packaged app-Execution",
        ],
    ),
    (
        "printservice-admin",
        &["Microsoft-Windows-PrintService/Admin"],
    ),
    (
        "printservice-operational",
        &["Microsoft-Windows-PrintService/Operational"],
    ),
    (
        "smbclient-security",
        &["Microsoft-Windows-SmbClient/Security"],
    ),
    (
        "smbclient-connectivity",
        &["Microsoft-Windows-SmbClient/Connectivity"],
    ),
    (
        "smbserver-connectivity",
        &["Microsoft-Windows-SmbServer/Connectivity"],
    ),
    (
        "smbserver-security",
        &["Microsoft-Windows-SmbServer/Security"],
    ),
    (
        "terminalservices-localsessionmanager",
        &["Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"],
    ),
    (
        "security-mitigations",
        &[
            "Microsoft-Windows-Security-Mitigations/KernelMode",
            "Microsoft-Windows-Security-Mitigations/UserMode",
            "Microsoft-Windows-Security-Mitigations/Kernel Mode",
            "Microsoft-Windows-Security-Mitigations/User Mode",
        ],
    ),
    ("shell-core", &["Microsoft-Windows-Shell-Core/Operational"]),
    ("openssh", &["OpenSSH/Operational"]),
    ("ldap", &["Microsoft-Windows-LDAP-Client/Debug"]),
    ("ldap_debug", &["Microsoft-Windows-LDAP-Client/Debug"]),
    ("lsa-server", &["Microsoft-Windows-LSA/Operational"]),
    (
        "appxdeployment-server",
        &["Microsoft-Windows-AppXDeploymentServer/Operational"],
    ),
    (
        "appxpackaging-om",
        &["Microsoft-Windows-AppxPackaging/Operational"],
    ),
    ("capi2", &["Microsoft-Windows-CAPI2/Operational"]),
    (
        "certificateservicesclient-lifecycle-system",
        &["Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational"],
    ),
    ("dhcp", &["Microsoft-Windows-DHCP-Server/Operational"]),
    (
        "diagnosis-scripted",
        &["Microsoft-Windows-Diagnosis-Scripted/Operational"],
    ),
    (
        "hyper-v-worker",
        &[
            "Microsoft-Windows-Hyper-V-Worker-Admin",
            "Microsoft-Windows-Hyper-V-Worker",
        ],
    ),
    (
        "kernel-shimengine",
        &["Microsoft-Windows-Kernel-ShimEngine/Operational"],
    ),
    (
        "microsoft-servicebus-client",
        &["Microsoft-ServiceBus-Client"],
    ),
    (
        "vhdmp",
        &[
            "Microsoft-Windows-VHDMP-Operational",
            "Microsoft-Windows-VHDMP/Operational",
        ],
    ),
    (
        "appmodel-runtime",
        &["Microsoft-Windows-AppModel-Runtime/Admin"],
    ),
    (
        "iis-configuration",
        &["Microsoft-IIS-Configuration/Operational"],
    ),
    (
        "bitlocker",
        &["Microsoft-Windows-BitLocker/BitLocker Management"],
    ),
    ("ntfs", &["Microsoft-Windows-Ntfs/Operational"]),
];

const SYSMON_CATEGORIES: &[(&str, &[i64])] = &[
    ("process_creation", &[1]),
    ("file_change", &[2]),
    ("network_connection", &[3]),
    ("sysmon_status", &[4, 16]),
    ("process_termination", &[5]),
    ("driver_load", &[6]),
    ("image_load", &[7]),
    ("create_remote_thread", &[8]),
    ("raw_access_thread", &[9]),
    ("process_access", &[10]),
    ("file_event", &[11]),
    ("registry_add", &[12]),
    ("registry_delete", &[12]),
    ("registry_set", &[13]),
    ("registry_rename", &[14]),
    ("registry_event", &[12, 13, 14]),
    ("create_stream_hash", &[15]),
    ("pipe_created", &[17, 18]),
    ("wmi_event", &[19, 20, 21]),
    ("dns_query", &[22]),
    ("file_delete", &[23, 26]),
    ("clipboard_capture", &[24]),
    ("process_tampering", &[25]),
    ("file_delete_detected", &[26]),
    ("file_block_executable", &[27]),
    ("file_block_shredding", &[28]),
    ("file_executable_detected", &[29]),
    ("sysmon_error", &[255]),
];

/// The targets of a logsource, or why it cannot be mapped.
pub fn targets(
    product: Option<&str>,
    category: Option<&str>,
    service: Option<&str>,
) -> Result<Vec<Target>, String> {
    let lower = |s: Option<&str>| s.map(|s| s.to_ascii_lowercase());
    let (product, category, service) = (lower(product), lower(category), lower(service));
    if product.as_deref() != Some("windows") {
        if service.is_none() && category.is_none() && product.is_none() {
            return Err("logsource names no product, category or service".into());
        }
        // Non-Windows rules apply to events without a channel (journald, syslog, text
        // and JSON sources), matched by field name as written.
        return Ok(vec![Target {
            channel: None,
            event_ids: None,
            windows: false,
            renames: &[],
        }]);
    }
    let mut out = Vec::new();
    if let Some(s) = service.as_deref() {
        let chans = SERVICES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, c)| *c)
            .ok_or_else(|| format!("logsource service `{s}` is not mapped to a channel"))?;
        out.extend(chans.iter().map(|ch| win(ch, &[])));
    }
    if let Some(c) = category.as_deref() {
        let mut cat = Vec::new();
        if let Some((_, ids)) = SYSMON_CATEGORIES.iter().find(|(n, _)| *n == c) {
            cat.push(win(SYSMON, ids));
        }
        match c {
            "process_creation" => cat.push(Target {
                renames: AUDIT_4688,
                ..win("Security", &[4688])
            }),
            "ps_module" => cat.push(win("Microsoft-Windows-PowerShell/Operational", &[4103])),
            "ps_script" => cat.push(win("Microsoft-Windows-PowerShell/Operational", &[4104])),
            "ps_classic_start" => cat.push(win("Windows PowerShell", &[400])),
            "ps_classic_provider_start" => cat.push(win("Windows PowerShell", &[600])),
            "ps_classic_script" => cat.push(win("Windows PowerShell", &[800])),
            "antivirus" => cat.push(win(
                "Microsoft-Windows-Windows Defender/Operational",
                &[
                    1006, 1007, 1008, 1009, 1010, 1011, 1012, 1017, 1018, 1019, 1115, 1116,
                ],
            )),
            _ => {}
        }
        if cat.is_empty() {
            return Err(format!(
                "logsource category `{c}` is not mapped to a channel"
            ));
        }
        if out.is_empty() {
            out = cat;
        } else {
            // Service and category both given: keep the category targets on the
            // service's channels.
            let chans: Vec<_> = out.iter().map(|t| t.channel).collect();
            out = cat
                .into_iter()
                .filter(|t| chans.contains(&t.channel))
                .collect();
            if out.is_empty() {
                return Err("logsource service and category name different channels".into());
            }
        }
    }
    if out.is_empty() {
        out.push(Target {
            channel: None,
            event_ids: None,
            windows: true,
            renames: &[],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let t = targets(Some("windows"), Some("process_creation"), None).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].channel, Some(SYSMON));
        assert_eq!(t[0].event_ids, Some(vec![1]));
        assert_eq!(t[1].channel, Some("Security"));
        assert_eq!(t[1].event_ids, Some(vec![4688]));
        let t = targets(Some("windows"), None, Some("system")).unwrap();
        assert_eq!(t[0].channel, Some("System"));
        assert!(targets(Some("windows"), None, Some("nope")).is_err());
        assert!(targets(Some("windows"), Some("nope"), None).is_err());
        let t = targets(Some("linux"), None, Some("auditd")).unwrap();
        assert!(!t[0].windows);
        let t = targets(Some("windows"), Some("process_creation"), Some("sysmon")).unwrap();
        assert_eq!(t.len(), 1);
    }
}
