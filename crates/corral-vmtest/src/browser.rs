//! What the browser tests need: Debian's chromium, node >= 20 and
//! playwright-core (scripts/deps.sh `corral_ui_browser_deps`). Shared by
//! corral-server's UI tests and corral-cli's end-to-end UI test, which
//! record a skip naming what is missing.

use std::path::PathBuf;
use std::process::Command;

/// The browser the tests drive.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where `corral_ui_browser_deps` installs playwright-core.
pub const DEFAULT_NODE_DIR: &str = "/var/cache/corral/ui-test/node";

/// The directory holding playwright-core (`$CORRAL_UI_TEST_NODE`, else
/// [`DEFAULT_NODE_DIR`]), or why the browser tests cannot run here.
pub fn deps() -> Result<PathBuf, String> {
    if !std::path::Path::new(CHROMIUM).exists() {
        return Err(format!("no {CHROMIUM} (apt-get install chromium)"));
    }
    let version = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let Some(version) = version else {
        return Err("no node on PATH (apt-get install nodejs)".into());
    };
    // playwright-core 1.65 declares node >= 20 (1.61 was the last for 18,
    // Debian 12's own node).
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!("node {version}: playwright-core 1.65 needs node >= 20"));
    }
    let dir = std::env::var_os("CORRAL_UI_TEST_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_NODE_DIR));
    if !dir.join("node_modules/playwright-core/package.json").exists() {
        return Err(format!(
            "no playwright-core under {} (scripts/deps.sh corral_ui_browser_deps)",
            dir.display()
        ));
    }
    Ok(dir)
}
