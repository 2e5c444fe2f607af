//! The Debian package and the tarball `scripts/dist` makes (issue 20),
//! installed on this machine for real: `dpkg -i`, the binaries run,
//! `systemd-analyze verify` accepts the unit, the config file's mode and
//! owner are right, the service is not enabled, and `dpkg --purge` removes
//! everything but the runs. Needs root (CI runs as root) and dpkg; packages
//! the test build's binaries (stripped), not a release build.

mod common;

use common::{Req, TestPipeline};
use difflog::{Init, Run};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sh(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Purges the package (and the runs folder this test made) however the
/// test ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = sh("dpkg --purge difflog >/dev/null 2>&1; rm -rf /var/lib/difflog");
    }
}

#[test]
fn the_deb_installs_runs_and_purges_to_nothing_but_the_runs() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test installs a Debian package: run the suite as root (CI does)"
    );
    assert!(
        sh("command -v dpkg-deb && command -v systemd-analyze")
            .status
            .success(),
        "dpkg-deb and systemd-analyze are needed (Debian's dpkg and systemd packages)"
    );
    assert!(
        !sh("dpkg -s difflog").status.success(),
        "a difflog package is installed on this machine already; this test will not replace it"
    );
    assert!(
        !Path::new("/var/lib/difflog").exists(),
        "/var/lib/difflog exists already; this test will not touch it"
    );
    let out = tempfile::tempdir().unwrap();
    let bins = PathBuf::from(env!("CARGO_BIN_EXE_difflog"))
        .parent()
        .unwrap()
        .to_path_buf();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dist");
    let o = Command::new(&script)
        .args(["--bins", bins.to_str().unwrap(), "--out"])
        .arg(out.path())
        .arg("--fast")
        .output()
        .unwrap();
    assert!(o.status.success(), "scripts/dist failed: {}", text(&o));
    let made: Vec<PathBuf> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let deb = made
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "deb"));
    let tarball = made
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".tar.zst"));
    let (deb, tarball) = (
        deb.expect("no .deb made"),
        tarball.expect("no tarball made"),
    );

    // The tarball: both binaries, the unit, the config template (0600).
    let o = sh(&format!("zstd -dc {} | tar -tvf -", tarball.display()));
    let listing = text(&o);
    for f in ["bin/difflog", "bin/difflog-sync", "difflog-sync.service"] {
        assert!(
            listing.contains(f),
            "{f} missing from the tarball:\n{listing}"
        );
    }
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rw-------") && l.ends_with("/sync.toml")),
        "{listing}"
    );

    let _guard = Installed;
    let o = sh(&format!("dpkg -i {}", deb.display()));
    assert!(o.status.success(), "dpkg -i: {}", text(&o));
    let o = sh("/usr/bin/difflog --version && /usr/bin/difflog-sync --version");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("(commit "), "{}", text(&o));
    let o = sh("systemd-analyze verify /lib/systemd/system/difflog-sync.service");
    assert!(o.status.success(), "systemd-analyze verify: {}", text(&o));
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/difflog-sync.service").exists(),
        "the service must be installed disabled"
    );
    let conf = std::fs::metadata("/etc/difflog/sync.toml").unwrap();
    assert_eq!(conf.permissions().mode() & 0o777, 0o600);
    let uid = text(&sh("id -u difflog")).trim().parse::<u32>().unwrap();
    assert_eq!(conf.uid(), uid, "sync.toml must belong to user difflog");
    let o = sh("dpkg-query -W -f='${Conffiles}' difflog");
    assert!(
        text(&o).contains("/etc/difflog/sync.toml"),
        "not a conffile: {}",
        text(&o)
    );
    // The service's user reads its config; the template names no target yet.
    let o = sh("su -s /bin/sh difflog -c \
        '/usr/bin/difflog-sync watch /var/lib/difflog/runs --config /etc/difflog/sync.toml'");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no `to"), "{}", text(&o));

    // A run recorded into the watched folder survives the purge.
    let run = Run::create(Init::project("dist").root("/var/lib/difflog/runs")).unwrap();
    run.record(&mut TestPipeline::new(), &Req::new(&["kept"], 1))
        .unwrap();
    let id = run.id().unwrap().to_string();
    run.finish().unwrap();
    let o = sh("dpkg --purge difflog");
    assert!(o.status.success(), "dpkg --purge: {}", text(&o));
    for gone in ["/usr/bin/difflog", "/usr/bin/difflog-sync", "/etc/difflog"] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    assert!(
        !sh("getent passwd difflog").status.success(),
        "user difflog left"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_difflog"))
        .args(["verify", &format!("/var/lib/difflog/runs/{id}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "the run did not survive: {}", text(&o));
}
