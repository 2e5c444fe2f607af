//! `difflog compare` (and the report's viewer) checked in a real browser,
//! headless Chromium: the grid has one cell per recorded combination and
//! marks the missing ones; clicking a cell opens that image with its record;
//! the slider and the difference view show the right two images and
//! difflog's figures; the filter hides rows; every image loads from disk and
//! nothing from the network; a prompt holding `<script>` is shown, not run;
//! thumbnails are made once and cached; the page is not blank.

mod common;

use common::browser::{probe, screenshot_pixels};
use common::{difflog_bin, Req, TestPipeline};
use difflog::event::Cell;
use difflog::read::RunDir;
use difflog::{Init, Run};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const PWN: &str = "<script>window.__pwned=1</script>";

/// Records a run named `name`: prompts × 2 images, seeds from 1, 160 px (so
/// thumbnails are made), every image with `edit` applied.
fn record(root: &Path, name: &str, prompts: &[&str], edit: Option<(u32, u32, u8)>) -> PathBuf {
    let run = Run::create(Init::project("compare").name(name).root(root)).unwrap();
    let mut p = TestPipeline::new();
    p.size = 160;
    p.edit = edit;
    let mut r = Req::new(prompts, 1);
    r.per_prompt = 2;
    run.record(&mut p, &r).unwrap();
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    dir
}

/// The digests of a run's generated images, in row order.
fn digests(run: &Path) -> Vec<String> {
    let view = RunDir::open(run).unwrap().view();
    view.calls
        .values()
        .flat_map(|c| &c.rows)
        .flat_map(|r| &r.cells)
        .filter_map(|c| match c {
            Cell::Image { column, digest, .. } if column == "Generated-Image" => {
                Some(digest.clone())
            }
            _ => None,
        })
        .collect()
}

fn compare(args: &[&str]) -> std::process::Output {
    Command::new(difflog_bin())
        .arg("compare")
        .args(args)
        .output()
        .unwrap()
}

/// `difflog compare PATHS -o OUT --json [EXTRA]`, which must succeed; its summary.
fn compare_ok(paths: &[&Path], out: &Path, extra: &[&str]) -> Value {
    let mut args: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    args.extend(["-o", out.to_str().unwrap(), "--json"]);
    args.extend(extra);
    summary(&compare(&args))
}

fn summary(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Waits for every image, then drives the page as a user would and leaves
/// what it saw in `data-check` as JSON.
const PROBE: &str = r#"<script>
window.addEventListener('load', async () => {
  const $ = id => document.getElementById(id);
  const out = {};
  const settle = () => Promise.all([...document.images].filter(i => i.getAttribute('src'))
    .map(i => i.complete ? Promise.resolve() : new Promise(r => { i.onload = i.onerror = r; })));
  const pause = () => new Promise(r => setTimeout(r, 50));
  document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; });
  await settle();
  const grid = [...document.querySelectorAll('#grid img')];
  out.grid_imgs = grid.length;
  out.grid_loaded = grid.filter(i => i.naturalWidth > 0).length;
  out.thumb_srcs = grid.filter(i => i.getAttribute('src').startsWith('thumbs/')).length;
  const rows = [...document.querySelectorAll('#grid tr.grow')];
  out.cols = [...document.querySelectorAll('#grid th.colhead')].map(t => t.textContent);
  out.layout = rows.map(r => [...r.querySelectorAll('td')].map(td => td.classList.contains('missing') ? '-' : 'x').join(''));
  out.row_prompts = rows.map(r => r.dataset.prompt);
  out.row_heads = rows.map(r => r.querySelector('th').textContent);
  const name = s => decodeURIComponent((s || '').split('/').pop());
  const open = async (row, col) => { rows[row].querySelectorAll('td')[col].querySelector('img').click(); await pause(); await settle(); };
  const seen = () => ({
    open: !$('viewer').hidden, full: name($('v-full').src), title: $('v-title').textContent,
    record: Object.fromEntries([...$('v-record').rows].map(tr => [tr.cells[0].textContent, tr.cells[1].textContent])),
    compare: !$('v-compare').hidden, a: name($('v-a').src), b: name($('v-b').src),
    figures: $('v-figures').textContent, heat: $('v-diffbox').hidden ? '' : name($('v-diff').src),
    heat_w: $('v-diffbox').hidden ? 0 : $('v-diff').naturalWidth, full_w: $('v-full').naturalWidth,
    heat_h: $('v-diffbox').hidden ? 0 : $('v-diff').naturalHeight, shift: $('v-diff').style.transform,
  });
  await open(1, 1); out.after_row1 = seen();
  $('v-slider').value = 30; $('v-slider').dispatchEvent(new Event('input'));
  out.clip = $('v-a').style.clipPath;
  await open(0, 2); out.partial_row0 = seen();
  await open(0, 0); out.base_row0 = seen();
  await open(0, 1); $('v-pick').click(); await pause();
  out.closed_by_pick = $('viewer').hidden;
  await open(0, 2); out.picked = seen();
  $('v-close').click(); out.closed = $('viewer').hidden;
  const f = $('filter');
  f.value = 'FOX'; f.dispatchEvent(new Event('input'));
  out.visible_fox = rows.filter(r => !r.hidden).length;
  f.value = 'pwned'; f.dispatchEvent(new Event('input'));
  out.visible_pwned = rows.filter(r => !r.hidden).length;
  f.value = ''; f.dispatchEvent(new Event('input'));
  out.visible_all = rows.filter(r => !r.hidden).length;
  out.pwned = window.__pwned ? 1 : 0;
  out.remote = performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('file:'));
  out.all_imgs = [...document.images].filter(i => i.getAttribute('src')).length;
  out.all_loaded = [...document.images].filter(i => i.getAttribute('src') && i.naturalWidth > 0).length;
  document.body.setAttribute('data-check', JSON.stringify(out));
});
</script>"#;

#[test]
fn the_comparison_grid_lines_images_up_and_compares_them_in_a_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let prompts = ["a red fox", PWN];
    let before = record(&root, "before", &prompts, None);
    // Every image of "after" differs from "before" in one pixel, by 40.
    let after = record(&root, "after", &prompts, Some((3, 5, 40)));
    // "partial" has the same pixels as "before" for the fox only.
    let partial = record(&root, "partial", &prompts[..1], None);
    let (b, a, p) = (digests(&before), digests(&after), digests(&partial));
    let out = tmp.path().join("cmp");
    let s = compare_ok(&[&root], &out, &[]);
    assert_eq!(
        (
            &s["runs"],
            &s["images"],
            &s["rows"],
            &s["cols"],
            &s["missing"]
        ),
        (
            &Value::from(3),
            &Value::from(10),
            &Value::from(4),
            &Value::from(3),
            &Value::from(2)
        )
    );
    assert_eq!(s["thumbs_made"], 10, "one thumbnail per distinct image");
    // after vs before on 4 rows, partial vs before on 2.
    assert_eq!(s["diffs_made"], 6);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(!html.contains(PWN), "a prompt became markup");
    assert!(!html.contains("http://") && !html.contains("https://"));

    let profile = tmp.path().join("profile");
    let v: Value = serde_json::from_str(&probe(&out.join("index.html"), PROBE, &profile)).unwrap();
    assert_eq!(v["grid_imgs"], 10);
    assert_eq!(v["grid_loaded"], 10, "a grid image did not load: {v}");
    assert_eq!(v["thumb_srcs"], 10, "the grid shows thumbnails");
    assert_eq!(v["cols"], serde_json::json!(["before", "after", "partial"]));
    // Rows: fox seed 1, fox seed 2, pwn seed 3, pwn seed 4; partial has no pwn.
    assert_eq!(v["layout"], serde_json::json!(["xxx", "xxx", "xx-", "xx-"]));
    assert_eq!(v["row_prompts"][0], "a red fox");
    assert_eq!(v["row_prompts"][3], PWN);
    assert!(v["row_heads"][2].as_str().unwrap().starts_with(PWN), "{v}");
    assert_eq!(v["pwned"], 0, "a prompt's script ran");
    assert_eq!(
        v["remote"],
        serde_json::json!([]),
        "something loaded from the network"
    );
    assert_eq!(v["all_imgs"], v["all_loaded"], "an image did not load: {v}");

    // The cell of "after", row 1: its own image and record, compared with
    // the row's baseline ("before", row 1); one pixel differs by 40.
    let s1 = &v["after_row1"];
    assert_eq!(s1["open"], true);
    assert_eq!(s1["full"], format!("{}.png", a[1]));
    assert_eq!(
        s1["full_w"], 160,
        "the full image is shown, not the thumbnail"
    );
    assert_eq!(s1["record"]["Seed"], "2");
    assert_eq!(s1["record"]["Prompt"], "a red fox");
    assert_eq!(s1["record"]["Model digest"], "sha256:00ff");
    assert_eq!(s1["record"]["Steps"], "10");
    assert!(s1["record"]["Run"].as_str().unwrap().starts_with("after ("));
    assert!(s1["record"]["Timings"]
        .as_str()
        .unwrap()
        .contains("denoising"));
    assert_eq!(
        (&s1["a"], &s1["b"]),
        (
            &Value::from(format!("{}.png", b[1])),
            &Value::from(format!("{}.png", a[1]))
        )
    );
    assert_eq!(
        s1["figures"],
        "mean 0.00, max 40 of 255; 1 of 25600 pixels differ"
    );
    // The row's heat maps are one strip (after, partial): this one is the first.
    assert_eq!(
        (&s1["heat_w"], &s1["heat_h"]),
        (&Value::from(160), &Value::from(320)),
        "the heat map did not load"
    );
    assert_eq!(s1["shift"], "translateY(0%)");
    assert_eq!(
        v["clip"], "inset(0px 70% 0px 0px)",
        "the slider does not move the line"
    );
    // The heat map strip lights that one pixel and nothing in the
    // pixel-identical second slot.
    let strip = s1["heat"].as_str().unwrap();
    let heat = image::open(out.join("diffs").join(&strip[..2]).join(strip))
        .unwrap()
        .to_rgb8();
    let lit: Vec<(u32, u32)> = heat
        .enumerate_pixels()
        .filter(|(_, _, px)| px.0 != [0, 0, 0])
        .map(|(x, y, _)| (x, y))
        .collect();
    assert_eq!(lit, vec![(3, 5)]);

    // "partial" row 0: the same pixels as "before", other bytes (its recipe).
    let s2 = &v["partial_row0"];
    assert_eq!(s2["full"], format!("{}.png", p[0]));
    assert_eq!(
        (&s2["a"], &s2["b"]),
        (
            &Value::from(format!("{}.png", b[0])),
            &Value::from(format!("{}.png", p[0]))
        )
    );
    assert!(
        s2["figures"]
            .as_str()
            .unwrap()
            .starts_with("pixel-identical"),
        "{s2}"
    );
    assert_eq!(
        s2["shift"], "translateY(-50%)",
        "the second heat map of its row's strip"
    );
    // The baseline itself has nothing to compare with.
    assert_eq!(v["base_row0"]["compare"], false);
    assert_eq!(v["base_row0"]["full"], format!("{}.png", b[0]));
    // Any two images: A picked, then B clicked.
    assert_eq!(v["closed_by_pick"], true);
    let s3 = &v["picked"];
    assert_eq!(
        (&s3["a"], &s3["b"]),
        (
            &Value::from(format!("{}.png", a[0])),
            &Value::from(format!("{}.png", p[0]))
        )
    );
    assert_eq!(v["closed"], true);
    // The filter, case-insensitive, on the prompt text.
    assert_eq!(
        (&v["visible_fox"], &v["visible_pwned"], &v["visible_all"]),
        (&Value::from(2), &Value::from(2), &Value::from(4))
    );

    // Not blank: a screenshot has content.
    let differing = screenshot_pixels(
        &out.join("index.html"),
        &tmp.path().join("shot.png"),
        &profile,
    );
    assert!(
        differing > 10_000,
        "the screenshot is blank ({differing} pixels differ)"
    );

    // Cached: a second compare makes nothing new, and the runs are unchanged.
    let s = compare_ok(&[&root], &out, &[]);
    assert_eq!(
        (&s["thumbs_made"], &s["diffs_made"]),
        (&Value::from(0), &Value::from(0))
    );
    for run in [&before, &after, &partial] {
        let o = Command::new(difflog_bin())
            .arg("verify")
            .arg(run)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }

    // --baseline: every row's images are compared with the "after" column.
    let by_after = tmp.path().join("by-after");
    let s = compare_ok(&[&root], &by_after, &["--baseline", "after"]);
    assert_eq!(s["diffs_made"], 6, "before and partial against after");
    let page = std::fs::read_to_string(by_after.join("index.html")).unwrap();
    for (i, row) in page.split("<tr class=\"grow\"").skip(1).enumerate() {
        let cells: Vec<&str> = row.split("<td").skip(1).collect();
        assert!(cells[1].contains(">baseline<"), "row {i}: {}", cells[1]);
        assert!(!cells[0].contains(">baseline<"), "row {i}");
        assert!(cells[0].contains("max 40"), "row {i}: {}", cells[0]);
    }

    // Rows by seed, columns by run: no alignment left but the row index.
    let s = compare_ok(
        &[&before, &after],
        &tmp.path().join("by-seed"),
        &["--rows", "seed", "--cols", "run"],
    );
    assert_eq!(
        (&s["rows"], &s["cols"], &s["missing"]),
        (&Value::from(4), &Value::from(2), &Value::from(0))
    );

    // Self-contained: the page stands alone once the runs are gone.
    let alone = tmp.path().join("alone");
    compare_ok(&[&root], &alone, &["--self-contained"]);
    std::fs::rename(&root, tmp.path().join("moved-away")).unwrap();
    let v: Value =
        serde_json::from_str(&probe(&alone.join("index.html"), PROBE, &profile)).unwrap();
    assert_eq!(
        (&v["grid_imgs"], &v["grid_loaded"]),
        (&Value::from(10), &Value::from(10))
    );
    assert_eq!(v["after_row1"]["full_w"], 160);
}

#[test]
fn bad_axes_and_damaged_images_get_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let one = record(&root, "one", &["a cat"], None);
    let two = record(&root, "two", &["a cat"], Some((0, 0, 9)));
    let out = tmp.path().join("cmp");
    let o = compare(&[
        root.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--cols",
        "colour",
    ]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown axis \"colour\"") && err.contains("num_inference_steps"),
        "{err}"
    );
    let o = compare(&[
        tmp.path().join("nothing").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());

    // One image of "two" damaged: the page is still written, the cell says
    // what is wrong, the warning names the file; the run's data is untouched.
    let d = digests(&two)[1].clone();
    let file = two.join("media").join(&d[..2]).join(format!("{d}.png"));
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&file, perms).unwrap();
    std::fs::write(&file, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let o = compare(&[
        one.to_str().unwrap(),
        two.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    let s = summary(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{d}.png")) && err.contains("not a readable image"),
        "{err}"
    );
    assert_eq!(s["problems"].as_array().unwrap().len(), 1);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("badge error"));
    assert_eq!(s["images"], 4);

    // A link where an image should be is refused, never followed.
    let d0 = digests(&two)[0].clone();
    let file0 = two.join("media").join(&d0[..2]).join(format!("{d0}.png"));
    std::fs::remove_file(&file0).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &file0).unwrap();
    let o = compare(&[
        one.to_str().unwrap(),
        two.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("symbolic link"), "{err}");
    summary(&o);
}

#[test]
fn the_report_has_thumbnails_and_a_slider_between_any_two_images() {
    let tmp = tempfile::tempdir().unwrap();
    let run = record(&tmp.path().join("runs"), "one", &["a cat", "a dog"], None);
    let d = digests(&run);
    let out = tmp.path().join("report");
    let o = Command::new(difflog_bin())
        .args(["report", run.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for digest in &d {
        assert!(out
            .join("thumbs")
            .join(&digest[..2])
            .join(format!("{digest}.png"))
            .is_file());
    }
    const REPORT_PROBE: &str = r#"<script>
window.addEventListener('load', async () => {
  const $ = id => document.getElementById(id);
  const pause = () => new Promise(r => setTimeout(r, 50));
  const name = s => decodeURIComponent((s || '').split('/').pop());
  const thumbs = [...document.querySelectorAll('img.thumb')];
  thumbs[0].click(); await pause();
  const first = name($('v-full').src);
  $('v-pick').click(); await pause();
  thumbs[3].click(); await pause();
  document.body.setAttribute('data-check', JSON.stringify({
    srcs: thumbs.map(i => i.getAttribute('src').split('/')[0]), first,
    a: name($('v-a').src), b: name($('v-b').src), compare: !$('v-compare').hidden,
    seed: [...$('v-record').rows].filter(r => r.cells[0].textContent === 'Seed').map(r => r.cells[1].textContent)[0],
  }));
});
</script>"#;
    let v: Value = serde_json::from_str(&probe(
        &out.join("index.html"),
        REPORT_PROBE,
        &tmp.path().join("profile"),
    ))
    .unwrap();
    assert_eq!(
        v["srcs"],
        serde_json::json!(["thumbs", "thumbs", "thumbs", "thumbs"])
    );
    assert_eq!(v["first"], format!("{}.png", d[0]));
    assert_eq!(v["compare"], true);
    assert_eq!(
        (&v["a"], &v["b"]),
        (
            &Value::from(format!("{}.png", d[0])),
            &Value::from(format!("{}.png", d[3]))
        )
    );
    assert_eq!(v["seed"], "4");
}
