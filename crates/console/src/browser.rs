//! For the browser tests of both homes: runs the review flow
//! (`tests/browser/console_flow.py`) and, on the fleet, the groups, configuration and
//! commands flow (`tests/browser/fleet_admin_flow.py`) in headless Chromium against a
//! console a test started. Needs Debian's `chromium`, `chromium-driver` and `python3-selenium`
//! (`scripts/test.sh` installs them); without them the caller is told why, and under
//! `CI=true` that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a run saves its screenshots: `target/console-screenshots/<name>/`.
pub fn screenshot_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("console-screenshots").join(name)
}

/// Why the browser flow cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing (apt-get install chromium chromium-driver)"
            ));
        }
    }
    let selenium = Command::new("/usr/bin/python3")
        .args(["-c", "import selenium"])
        .output();
    if !selenium.is_ok_and(|o| o.status.success()) {
        return Some("python3-selenium is missing (apt-get install python3-selenium)".into());
    }
    None
}

/// Runs the review flow with `args` (see the script's options); `Ok(false)`: skipped (the
/// reason printed), `Err`: the flow failed, with its output.
pub fn run_flow(args: &[&str]) -> Result<bool, String> {
    run_script("console_flow.py", args)
}

/// Runs one of the flows in `tests/browser/` (`console_flow.py`, `fleet_admin_flow.py`)
/// with `args`, as [`run_flow`] does.
pub fn run_script(name: &str, args: &[&str]) -> Result<bool, String> {
    if let Some(why) = missing() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            return Err(format!("the browser test cannot run: {why}"));
        }
        eprintln!("skipping the browser flow: {why}");
        return Ok(false);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(name);
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| format!("running python3: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    if out.status.success() {
        Ok(true)
    } else {
        Err(text)
    }
}
