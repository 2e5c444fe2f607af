//! Headless Chromium for the page tests (`report`, `compare`): Debian's
//! `chromium`, which `scripts/test` installs; a test needing it fails, never
//! skips, when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Chromium binary.
pub fn chromium() -> PathBuf {
    for c in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    panic!("this test needs Chromium: scripts/test installs Debian's `chromium` package (apt-get install chromium)");
}

/// Runs headless Chromium with `args` and its own profile folder, every
/// network path closed: no background traffic, and a proxy that does not
/// exist for anything that is not a file.
pub fn browser(args: &[&str], profile: &Path) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--proxy-server=http://127.0.0.1:9",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap()
}

/// Opens `page` with `script` inserted before `</body>` (in a copy beside
/// it, so relative links resolve the same) and returns the value the script
/// left in `document.body`'s `data-check` attribute.
pub fn probe(page: &Path, script: &str, profile: &Path) -> String {
    let html = std::fs::read_to_string(page).unwrap();
    let copy = page.with_file_name("probe.html");
    std::fs::write(&copy, html.replace("</body>", &format!("{script}</body>"))).unwrap();
    let o = browser(
        &[
            "--virtual-time-budget=20000",
            "--dump-dom",
            &format!("file://{}", copy.display()),
        ],
        profile,
    );
    std::fs::remove_file(&copy).unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let at = dom.find("data-check=\"").unwrap_or_else(|| {
        panic!(
            "the check did not run: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let raw = dom[at + 12..].split('"').next().unwrap();
    raw.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Takes a screenshot of `page` and says how many pixels differ from the
/// top-left one (a blank page: none).
pub fn screenshot_pixels(page: &Path, shot: &Path, profile: &Path) -> usize {
    let o = browser(
        &[
            "--window-size=1200,1600",
            "--virtual-time-budget=5000",
            &format!("--screenshot={}", shot.display()),
            &format!("file://{}", page.display()),
        ],
        profile,
    );
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let img = image::open(shot).unwrap().to_rgb8();
    let first = *img.get_pixel(0, 0);
    img.pixels().filter(|p| **p != first).count()
}
