//! Build script: records the git commit the binaries are built from, for
//! `--version` (`difflog 0.1.0 (commit 1a2b3c4d5e6f)`). Outside a git
//! checkout (an unpacked source archive) the commit is read from a
//! `GIT_COMMIT` file beside Cargo.toml if there is one, else "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
        .or_else(|| {
            std::fs::read_to_string("GIT_COMMIT")
                .ok()
                .map(|s| s.trim().to_string())
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
