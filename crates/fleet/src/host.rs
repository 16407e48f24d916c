//! This host: its stable id, operating system, and (Windows) the credential file's ACL.

/// The stable host id: `/etc/machine-id` (or D-Bus's copy) on Linux, the `MachineGuid`
/// of `HKLM\SOFTWARE\Microsoft\Cryptography` on Windows. `None` when there is none.
pub fn host_id() -> Option<String> {
    #[cfg(windows)]
    {
        let key = winreg::RegKey::predef(winreg::enums::HKEY_LOCAL_MACHINE)
            .open_subkey_with_flags(
                r"SOFTWARE\Microsoft\Cryptography",
                winreg::enums::KEY_READ | winreg::enums::KEY_WOW64_64KEY,
            )
            .ok()?;
        let guid: String = key.get_value("MachineGuid").ok()?;
        let guid = guid.trim().to_owned();
        (!guid.is_empty()).then_some(guid)
    }
    #[cfg(not(windows))]
    {
        ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .iter()
            .find_map(|p| {
                let id = std::fs::read_to_string(p).ok()?;
                let id = id.trim();
                (!id.is_empty() && id.len() <= 256).then(|| id.to_owned())
            })
    }
}

/// `linux`, `windows`, … with the release where it is known.
pub(crate) fn os() -> String {
    let release = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        });
    match release {
        Some(r) => format!("{} ({r})", std::env::consts::OS),
        None => std::env::consts::OS.to_owned(),
    }
}

/// Windows: the file readable by SYSTEM and Administrators only (inheritance removed),
/// through `icacls` with an argv (no shell).
#[cfg(windows)]
pub(crate) fn restrict_to_admins(path: &std::path::Path) -> Result<(), String> {
    let status = std::process::Command::new("icacls")
        .arg(path)
        .args([
            "/inheritance:r",
            "/grant:r",
            "*S-1-5-18:F",
            "*S-1-5-32-544:F",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run icacls on {}: {e}", path.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("icacls could not restrict {}", path.display()))
    }
}
