//! Records the git commit for the version line the filter logs at VM start.

use std::process::Command;

fn main() {
    let hash = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SMS_FILTER_GIT_HASH={hash}");
    // A new commit moves HEAD's reflog; watching it keeps the hash current
    // without rebuilding on every index change.
    println!("cargo:rerun-if-changed=../.git/logs/HEAD");
}
