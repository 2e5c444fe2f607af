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
        let _ = sh(
            "dpkg --purge difflog >/dev/null 2>&1; rm -rf /var/lib/difflog /var/lib/difflog-sync",
        );
    }
}

/// A member of group difflog with no other rights, for the attacks; removed
/// however the test ends.
const MALLORY: &str = "difflog-test-mallory";

struct Mallory;

impl Mallory {
    fn add() -> Mallory {
        let o = sh(&format!("useradd -M -s /bin/sh -G difflog {MALLORY}"));
        assert!(o.status.success(), "useradd: {}", text(&o));
        Mallory
    }
}

impl Drop for Mallory {
    fn drop(&mut self) {
        let _ = sh(&format!("userdel {MALLORY} >/dev/null 2>&1"));
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
    // Issue 32, item 4: the daemon's home private, the runs folder sticky,
    // its parent root's, the unit tightened; then the attacks a member of
    // group difflog could make, made.
    let mode = |p: &str| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode("/var/lib/difflog/runs"),
        0o3775,
        "runs: setgid and sticky"
    );
    assert_eq!(
        mode("/var/lib/difflog-sync"),
        0o700,
        "the daemon's home is its own"
    );
    assert_eq!(std::fs::metadata("/var/lib/difflog").unwrap().uid(), 0);
    assert_eq!(mode("/var/lib/difflog") & 0o022, 0);
    assert!(text(&sh("getent passwd difflog")).contains(":/var/lib/difflog-sync:"));
    let unit = std::fs::read_to_string("/lib/systemd/system/difflog-sync.service").unwrap();
    for d in [
        "StateDirectory=difflog-sync",
        "StateDirectoryMode=0700",
        "UMask=0027",
        "ProtectHome=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "SystemCallFilter=@system-service",
        "ReadWritePaths=/var/lib/difflog/runs",
    ] {
        assert!(unit.contains(d), "{d} missing from the unit");
    }
    let _mallory = Mallory::add();
    let as_mallory = |cmd: &str| sh(&format!("su -s /bin/sh {MALLORY} -c '{cmd}'"));
    let o = sh("su -s /bin/sh difflog -c 'mkdir /var/lib/difflog/runs/victim'");
    assert!(o.status.success(), "{}", text(&o));
    as_mallory("rm -rf /var/lib/difflog/runs/victim; mv /var/lib/difflog/runs/victim /var/lib/difflog/runs/v2");
    assert!(
        Path::new("/var/lib/difflog/runs/victim").is_dir(),
        "a member removed or renamed another's run"
    );
    let o = as_mallory(
        "mkdir -p /var/lib/difflog-sync/.aws && echo x > /var/lib/difflog-sync/.aws/config",
    );
    assert!(!o.status.success(), "a member wrote into the daemon's home");
    let o = as_mallory(
        "mv /var/lib/difflog/runs /var/lib/difflog/x || ln -s /tmp /var/lib/difflog/runs2",
    );
    assert!(!o.status.success(), "a member changed /var/lib/difflog");
    assert!(Path::new("/var/lib/difflog/runs").is_dir());
    // A state folder planted by a member: the daemon refuses it.
    let o = as_mallory("mkdir -m 0777 /var/lib/difflog/runs/.difflog-sync");
    assert!(o.status.success(), "{}", text(&o));
    let o = sh("su -s /bin/sh difflog -c \
        '/usr/bin/difflog-sync upload /var/lib/difflog/runs --to mlflow+http://127.0.0.1:9'");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the sync state folder is refused"),
        "{}",
        text(&o)
    );
    std::fs::remove_dir("/var/lib/difflog/runs/.difflog-sync").unwrap();
    std::fs::remove_dir("/var/lib/difflog/runs/victim").unwrap();

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
    for gone in [
        "/usr/bin/difflog",
        "/usr/bin/difflog-sync",
        "/etc/difflog",
        "/var/lib/difflog-sync",
    ] {
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
