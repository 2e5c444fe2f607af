//! `difflog report`: a static HTML report checked in a real browser
//! (headless Chromium): every image loads, one table row per recorded image,
//! prompts with markup are shown as text and never run, the page is not blank.

mod common;

use common::browser::{probe, screenshot_pixels};
use common::{Req, TestPipeline};
use difflog::{Init, Run};
use std::path::{Path, PathBuf};
use std::process::Command;

fn record(root: &Path) -> PathBuf {
    let run = Run::create(
        Init::project("report")
            .name("a <b>bold</b> name")
            .root(root),
    )
    .unwrap();
    let mut p = TestPipeline::new();
    p.size = 48;
    let mut r = Req::new(
        &["<script>window.__pwned=1</script>", "say \"hi\" & 'bye'"],
        1,
    );
    r.per_prompt = 2;
    run.record(&mut p, &r).unwrap();
    p.fail_after = Some(1);
    let _ = run.record(&mut p, &Req::new(&["doomed", "too"], 9));
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    dir
}

const CHECK: &str = r#"<script>
window.addEventListener('load', () => {
  const imgs = [...document.querySelectorAll('img.thumb')];
  imgs.forEach(i => { i.loading = 'eager'; });
  Promise.all(imgs.map(i => i.complete ? Promise.resolve() : new Promise(r => { i.onload = i.onerror = r; })))
    .then(() => {
      const loaded = imgs.filter(i => i.naturalWidth > 0).length;
      const rows = document.querySelectorAll('tr.row').length;
      const tiles = document.querySelectorAll('figure.tile a[data-item]').length;
      document.body.setAttribute('data-check', [imgs.length, loaded, rows, window.__pwned ? 1 : 0, tiles].join(','));
    });
});
</script>"#;

/// Opens `page` in Chromium with the checking script; returns
/// (images, loaded, rows, script-ran, gallery tiles).
fn check_in_browser(page: &Path, profile: &Path) -> (usize, usize, usize, usize, usize) {
    let v: Vec<usize> = probe(page, CHECK, profile)
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1], v[2], v[3], v[4])
}

#[test]
fn the_report_opens_in_a_browser_with_every_image_and_row() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let dir = record(&root);
    record(&root);
    let out = tmp.path().join("report");
    let o = Command::new(common::difflog_bin())
        .args([
            "report",
            root.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index = out.join("index.html");
    let run_page = out.join(dir.file_name().unwrap()).join("index.html");
    let html = std::fs::read_to_string(&run_page).unwrap();
    assert!(
        html.contains("&lt;script&gt;window.__pwned=1&lt;/script&gt;"),
        "prompt not escaped"
    );
    assert!(
        !html.contains("<script>window.__pwned"),
        "a prompt became markup"
    );
    assert!(html.contains("say &quot;hi&quot; &amp; &#39;bye&#39;"));
    assert!(
        html.contains("Error: out of memory after 1 image(s)"),
        "the failed call's error is missing"
    );
    assert!(std::fs::read_to_string(&index).unwrap().contains(&format!(
        "{}/index.html",
        dir.file_name().unwrap().to_string_lossy()
    )));

    let profile = tmp.path().join("profile");
    let (imgs, loaded, rows, pwned, tiles) = check_in_browser(&run_page, &profile);
    // 4 rows of the first call, 1 of the failed one: 5 generated images.
    assert_eq!(rows, 5, "table rows != recorded images");
    // Issue 35: each generated image in its call's gallery too, opening the
    // same viewer item as its table cell, captioned with prompt and seed.
    assert_eq!(tiles, 5, "gallery tiles != generated images");
    for k in 0..5 {
        let needle = format!("data-item=\"{k}\"");
        assert_eq!(
            html.matches(&needle).count(),
            2,
            "viewer item {k}: table and gallery"
        );
    }
    assert!(
        html.contains("&lt;script&gt;window.__pwned=1&lt;/script&gt; · seed "),
        "a caption with the prompt (escaped) and seed"
    );
    assert_eq!(imgs, 5);
    assert_eq!(
        loaded,
        imgs,
        "{} of {imgs} images did not load",
        imgs - loaded
    );
    assert_eq!(pwned, 0, "a prompt's script ran");

    // Self-contained: the images are copied, the report stands alone.
    let alone = tmp.path().join("alone");
    difflog::report::report(&dir, &alone, true).unwrap();
    std::fs::rename(&root, tmp.path().join("moved-away")).unwrap();
    let (imgs, loaded, _, _, _) = check_in_browser(&alone.join("index.html"), &profile);
    assert_eq!((imgs, loaded), (5, 5));

    // A screenshot that is not blank.
    let differing = screenshot_pixels(
        &alone.join("index.html"),
        &tmp.path().join("shot.png"),
        &profile,
    );
    assert!(
        differing > 10_000,
        "the screenshot is blank ({differing} pixels differ)"
    );
}

/// Issue 37: a video kept as an MP4 plays in the report's table, in a real
/// browser: Chromium decodes its frames at its size and length.
#[test]
fn a_video_kept_as_an_mp4_plays_in_the_browser() {
    const PLAYS: &str = r#"<script>
window.addEventListener('load', () => {
  const v = document.querySelector('video.thumb');
  const done = what => document.body.setAttribute('data-check', what);
  if (!v) { done('no video'); return; }
  if (v.readyState >= 2) { done([v.videoWidth, v.videoHeight, Math.round(v.duration * 1000)].join(',')); return; }
  v.addEventListener('loadeddata', () => done([v.videoWidth, v.videoHeight, Math.round(v.duration * 1000)].join(',')));
  v.addEventListener('error', () => done('error ' + (v.error ? v.error.code : '?')));
});
</script>"#;
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("report-video").root(tmp.path().join("runs"))).unwrap();
    let clip = common::ClipRequest {
        frames: 6,
        fps: 12.0,
        size: (64, 48),
    };
    run.record(&mut common::ClipPipeline, &clip).unwrap();
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    let out = tmp.path().join("report");
    difflog::report::report(&dir, &out, true).unwrap();
    let got = probe(&out.join("index.html"), PLAYS, &tmp.path().join("profile"));
    // 64×48, six frames at 12 fps: half a second.
    assert_eq!(got, "64,48,500", "the MP4 in the report: {got}");
}
