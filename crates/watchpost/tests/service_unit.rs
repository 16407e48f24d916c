//! The systemd unit `watchpost service install` writes passes `systemd-analyze verify`,
//! and its `ExecReload` reloads the running daemon (`systemctl reload`).

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

use std::process::Command;

#[test]
fn the_unit_verifies_and_reloads_through_watchpost_reload() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing (scripts/test.sh installs systemd)"
        );
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("watchpost.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nstate_dir = '{}'\n",
            d.path().join("state").display()
        ),
    )
    .unwrap();
    let units = d.path().join("units");
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args([
            "service",
            "install",
            "--no-systemctl",
            "--name",
            "wp-test",
            "-c",
        ])
        .arg(&cfg)
        .arg("--unit-dir")
        .arg(&units)
        .env("WATCHPOST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = units.join("wp-test.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let exe = env!("CARGO_BIN_EXE_watchpost");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ExecReload=") && l.contains(exe) && l.contains(" reload -c ")),
        "{text}"
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (the host's own units may have some).
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("wp-test")).collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}
