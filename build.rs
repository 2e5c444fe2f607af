//! Build script: records the git commit the binaries are built from, for
//! `--version` (`difflog 0.1.0 (commit 1a2b3c4d5e6f)`): from a `GIT_COMMIT`
//! file beside Cargo.toml (the offline source kit has one), else from git,
//! else "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    // A source kit names its commit in GIT_COMMIT (and may be unpacked
    // inside some other git checkout, whose HEAD is not ours).
    let commit = std::fs::read_to_string("GIT_COMMIT")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|c| !c.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DIFFLOG_GIT_COMMIT={commit}");
    // Built again when HEAD moves (a commit, a checkout).
    for f in [".git/HEAD", ".git/packed-refs", "GIT_COMMIT"] {
        if Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(r) = head.strip_prefix("ref: ") {
            let p = format!(".git/{}", r.trim());
            if Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
}
