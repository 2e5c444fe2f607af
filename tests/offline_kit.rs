//! The offline build kit (issue 20): `scripts/dist --source` makes one
//! archive of the sources with every dependency vendored, and it builds
//! with the network really off — inside a network namespace with only a
//! loopback (`unshare -n`, as root), with an empty cargo home, so neither
//! the registry nor its local cache can help — and the built `difflog`
//! generates with the tiny model there. Prints the kit's size and the
//! build time. The build is cargo's dev profile with every crate
//! unoptimised (the numeric ones too, which Cargo.toml keeps at opt-level
//! 3 in that profile): the same sources, lock file and features as the
//! release build the kit's instructions give, which differs only in
//! optimisation and took ~14 minutes on 2 cores once C2PA's crates came in
//! — too long for the suite's hour. Optimised candle alone took over 5 of
//! the dev build's 9.5 minutes (`cargo build --timings`, 2026-12-07).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[test]
fn the_source_kit_builds_and_generates_without_network() {
    assert!(
        Command::new("unshare")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success()),
        "this test needs a network namespace (root and unshare -n): run the suite as root (CI does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dist");
    let o = Command::new(&script)
        .args(["--source", "--fast", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "scripts/dist --source: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let kit = Path::new(out.trim());
    let size_mb = std::fs::metadata(kit).unwrap().len() as f64 / 1e6;
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc '{}' | tar -xf - -C '{}'",
            kit.display(),
            tmp.path().display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "cannot unpack the kit");
    // Disk is what a CI machine may lack (a run here once ended with
    // "No space left on device" in this build): the archive goes once
    // unpacked, and the build below keeps no debug information and no
    // incremental cache (neither is what this test checks).
    std::fs::remove_file(kit).unwrap();
    let src = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.to_string_lossy().ends_with("-src"))
        .expect("the kit holds no difflog-<version>-src folder");
    let commit = std::fs::read_to_string(src.join("GIT_COMMIT")).unwrap();

    // Nothing of this machine's cargo setup but the toolchain itself.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let rustup = std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{home}/.rustup"));
    let offline = |args: &[&str]| {
        let mut c = Command::new("unshare");
        c.arg("-n")
            .args(args)
            .current_dir(&src)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("RUSTUP_HOME", &rustup)
            .env("CARGO_HOME", tmp.path().join("cargo-home"))
            .env("CARGO_TARGET_DIR", tmp.path().join("target"))
            .env("CARGO_PROFILE_DEV_DEBUG", "false")
            .env("CARGO_INCREMENTAL", "0")
            .env("DIFFLOG_DIR", tmp.path().join("runs"));
        c.output().unwrap()
    };
    // Every crate at opt-level 0, the numeric ones too (Cargo.toml keeps
    // them at 3 in the dev profile): candle alone took over 5 of this
    // build's 9.5 minutes optimised, and generating one 64² image with
    // the tiny model unoptimised takes seconds.
    let manifest = std::fs::read_to_string(src.join("Cargo.toml")).unwrap();
    let mut build = vec![
        "cargo".to_string(),
        "build".into(),
        "--offline".into(),
        "--locked".into(),
    ];
    for name in optimised_packages(&manifest) {
        build.push("--config".into());
        build.push(format!("profile.dev.package.{name}.opt-level=0"));
    }
    assert!(
        build.len() > 4,
        "Cargo.toml optimises no package in the dev profile: this test's unoptimised build assumed it does"
    );
    let t = Instant::now();
    let o = offline(&build.iter().map(String::as_str).collect::<Vec<_>>());
    let build_s = t.elapsed().as_secs_f64();
    let tail = |o: &std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        e[e.len().saturating_sub(3000)..].to_string()
    };
    assert!(o.status.success(), "offline build failed:\n{}", tail(&o));
    let bin = tmp.path().join("target/debug/difflog");
    let o = offline(&[bin.to_str().unwrap(), "--version"]);
    let version = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        version.contains(&format!("(commit {})", commit.trim())),
        "{version}"
    );
    let o = offline(&[
        bin.to_str().unwrap(),
        "generate",
        "--prompt",
        "a lighthouse at dusk",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
    ]);
    assert!(o.status.success(), "generate offline failed:\n{}", tail(&o));
    eprintln!(
        "offline kit: {size_mb:.1} MB (zstd -1 in this test; scripts/dist uses -19), \
         offline build (dev profile) {build_s:.0} s"
    );
}

/// The packages the manifest's dev profile gives an opt-level of their own
/// (`[profile.dev.package.<name>]` with `opt-level`).
fn optimised_packages(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = None;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line
                .strip_prefix("[profile.dev.package.")
                .and_then(|l| l.strip_suffix(']'))
                .filter(|n| *n != "\"*\"")
                .map(str::to_string);
        } else if line.starts_with("opt-level") {
            names.extend(current.take());
        }
    }
    names
}
