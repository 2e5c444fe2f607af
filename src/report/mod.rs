//! `difflog report`: a static HTML report of a run (or an index of every run
//! under a root) that opens from disk with no server and no network.
//!
//! Images are never re-encoded: the report links the run's own PNGs by
//! relative path, or copies them beside the report with `self_contained`.
//! Thumbnails load lazily (`loading="lazy"`), so a run with 10,000 images
//! opens quickly. Every recorded string is HTML-escaped: a prompt holding
//! `<script>` is shown, never executed.

pub mod compare;
pub mod diff;
pub mod html;
pub mod thumbs;

pub use html::escape;

use crate::error::{Error, IoContext, Result};
use crate::event::Cell;
use crate::format::names;
use crate::format::percent_encode;
use crate::read::{find_runs, par_map, CallView, RunDir, RunView};
use html::{href, page, relative, viewer, ViewerItem};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use thumbs::{decode, needs_thumb, shown_size, Thumbs};

/// What `report` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportSummary {
    /// The page to open.
    pub index: PathBuf,
    /// Run pages written.
    pub runs: usize,
    /// Image rows shown.
    pub images: usize,
}

/// Writes the report of `path` (a run or a root of runs) into `out`.
pub fn report(path: &Path, out: &Path, self_contained: bool) -> Result<ReportSummary> {
    std::fs::create_dir_all(out).ctx(out, "create report folder")?;
    let out = out.canonicalize().ctx(out, "resolve report folder")?;
    if path.join(crate::format::RUN_JSON).is_file() {
        let run = RunDir::open(path)?;
        let images = write_run(&run, &out, self_contained, None)?;
        return Ok(ReportSummary {
            index: out.join("index.html"),
            runs: 1,
            images,
        });
    }
    let runs = find_runs(path)?;
    if runs.is_empty() {
        return Err(Error::NotARun {
            path: path.to_path_buf(),
            why: "it has no run.json and no run directories under it".into(),
        });
    }
    let mut rows = String::new();
    let mut total = 0;
    for r in &runs {
        let run = match RunDir::open(r) {
            Ok(run) => run,
            Err(e) => {
                let _ = write!(
                    rows,
                    "<tr><td colspan=\"7\" class=\"error\">{}</td></tr>",
                    escape(&e.to_string())
                );
                continue;
            }
        };
        let sub = out.join(&run.meta.id);
        std::fs::create_dir_all(&sub).ctx(&sub, "create report folder")?;
        let images = write_run(&run, &sub, self_contained, Some("../index.html"))?;
        total += images;
        let view = run.view();
        let _ = writeln!(
            rows,
            "<tr><td><a href=\"{}/index.html\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            percent_encode(&run.meta.id),
            escape(&run.meta.id),
            escape(&run.meta.project),
            escape(&run.meta.name),
            run.state().as_str(),
            view.calls.len(),
            images,
            escape(&run.meta.created)
        );
    }
    let body = format!(
        "<h1>difflog runs</h1><p>{} run(s) under {}</p>\n<table id=\"runs\"><tr><th>Run</th><th>Project</th><th>Name</th>\
         <th>State</th><th>Calls</th><th>Images</th><th>Created</th></tr>\n{rows}</table>\n",
        runs.len(),
        escape(&path.display().to_string())
    );
    let index = out.join("index.html");
    std::fs::write(&index, page("difflog runs", &body)).ctx(&index, "write report")?;
    Ok(ReportSummary {
        index,
        runs: runs.len(),
        images: total,
    })
}

/// Makes the thumbnails of the run's images that are larger than one and
/// not made yet (in parallel); returns the digests that have one. An image
/// that cannot be read keeps its full-size link.
fn make_thumbs(run_abs: &Path, view: &RunView, dir: &Path) -> std::collections::HashSet<String> {
    let thumbs = Thumbs::new(dir);
    let mut todo: Vec<(&str, &str)> = Vec::new();
    let mut have = std::collections::HashSet::new();
    for cell in view
        .calls
        .values()
        .flat_map(|c| &c.rows)
        .flat_map(|r| &r.cells)
    {
        if let Cell::Image {
            digest,
            path,
            width,
            height,
            ..
        } = cell
        {
            // An MP4 plays in the page itself: no thumbnail is made of it.
            if !needs_thumb(*width, *height) || have.contains(digest) || is_mp4(path) {
                continue;
            }
            if thumbs.cached(digest) {
                have.insert(digest.clone());
            } else if !todo.iter().any(|(d, _)| d == digest) {
                todo.push((digest, path));
            }
        }
    }
    let made = par_map(&todo, |(digest, rel)| {
        let img = crate::read::run_file(run_abs, rel)
            .map_err(|e| e.to_string())
            .and_then(|p| decode(&p));
        img.ok()
            .and_then(|img| thumbs.write(digest, &img).ok())
            .map(|()| digest.to_string())
    });
    have.extend(made.into_iter().flatten());
    have
}

/// Writes one run's page into `dir`; returns the number of image rows.
fn write_run(run: &RunDir, dir: &Path, self_contained: bool, up: Option<&str>) -> Result<usize> {
    let view = run.view();
    let run_abs = run
        .path
        .canonicalize()
        .ctx(&run.path, "resolve run directory")?;
    let media_href = |rel: &str| -> Result<String> {
        if self_contained {
            // Only a regular file really inside the run is copied (never
            // through a linked folder, never a FIFO).
            let src = crate::read::run_file(&run_abs, rel)?;
            let dst = dir.join(rel);
            if !dst.exists() {
                if let Some(p) = dst.parent() {
                    std::fs::create_dir_all(p).ctx(p, "create report media folder")?;
                }
                std::fs::copy(&src, &dst).ctx(&src, "copy image into the report")?;
            }
            Ok(href(rel))
        } else {
            Ok(relative(dir, &run_abs.join(rel)))
        }
    };
    let m = &run.meta;
    let mut b = String::new();
    if let Some(up) = up {
        let _ = write!(b, "<p><a href=\"{up}\">← all runs</a></p>");
    }
    let _ = write!(
        b,
        "<h1>{}</h1>\n<table class=\"meta\"><tr><td>Run</td><td>{}</td></tr><tr><td>Project</td><td>{}</td></tr>\
         <tr><td>State</td><td>{}</td></tr><tr><td>Created</td><td>{} on {}</td></tr><tr><td>Tags</td><td>{}</td></tr>\
         <tr><td>Calls / images</td><td>{} / {}</td></tr></table>\n",
        escape(&m.name),
        escape(&m.id),
        escape(&m.project),
        run.state().as_str(),
        escape(&m.created),
        escape(&m.host),
        escape(&m.tags.join(", ")),
        view.calls.len(),
        view.image_count()
    );
    if let Some(p) = &run.log.problem {
        let _ = write!(
            b,
            "<p class=\"error\">Event log damaged or torn at byte {}: {}</p>",
            p.offset,
            escape(&p.why)
        );
    }
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = write!(
        b,
        "<section><details><summary>Config</summary><pre>{}</pre></details>\n\
         <details><summary>Workflow (pipeline, params, stage of every call)</summary><pre>{}</pre></details></section>\n",
        escape(&pretty(&serde_json::Value::Object(view.config.clone()))),
        escape(&pretty(&serde_json::Value::Array(view.workflow())))
    );
    let thumbs = make_thumbs(&run_abs, &view, dir);
    b.push_str(
        "<p><input id=\"filter\" type=\"search\" placeholder=\"filter rows by prompt text\" aria-label=\"filter by prompt\"> \
         Click an image for its record; \u{201c}pick as A\u{201d} there, then click another for the slider between the two.</p>\n",
    );
    let mut images = 0;
    let mut items = Vec::new();
    for call in view.calls.values() {
        images += write_call(&mut b, &view, call, &media_href, &thumbs, &mut items)?;
    }
    b.push_str(&viewer(&items));
    let index = dir.join("index.html");
    std::fs::write(&index, page(&format!("{} — difflog", m.name), &b))
        .ctx(&index, "write report")?;
    Ok(images)
}

fn write_call(
    b: &mut String,
    view: &RunView,
    call: &CallView,
    media_href: &dyn Fn(&str) -> Result<String>,
    thumbs: &std::collections::HashSet<String>,
    items: &mut Vec<ViewerItem>,
) -> Result<usize> {
    let s = &call.started;
    let status = match &call.finished {
        None => "unfinished".to_string(),
        Some(f) if f.status == crate::event::CallStatus::Ok => "ok".into(),
        Some(_) => "FAILED".into(),
    };
    let class = view
        .pipelines
        .get(&s.pipeline)
        .map(|p| p.class.as_str())
        .unwrap_or("?");
    let _ = writeln!(
        b,
        "<section id=\"{}\"><h2>Result-Table/{} <small>({}, {})</small></h2>",
        escape(&s.stage),
        escape(&s.stage),
        escape(class),
        status
    );
    let param = |k: &str| {
        s.params
            .get(k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let size = call
        .size()
        .map(|(w, h)| format!("{w}×{h}"))
        .unwrap_or_else(|| "-×-".into());
    let _ = write!(
        b,
        "<p>size {}, steps {}, guidance {}, scheduler {}</p>",
        escape(&size),
        escape(&param("num_inference_steps")),
        escape(&param("guidance_scale")),
        escape(&view.scheduler_name(call).unwrap_or_else(|| "-".into()))
    );
    if let Some(p) = view.pipelines.get(&s.pipeline) {
        if p.scheduler.is_object() {
            let _ = write!(
                b,
                "<details class=\"scheduler\"><summary>scheduler config</summary><pre>{}</pre></details>",
                escape(&serde_json::to_string_pretty(&p.scheduler).unwrap_or_default())
            );
        }
    }
    if let Some(f) = &call.finished {
        if let Some(e) = &f.error {
            let _ = write!(b, "<p class=\"error\">Error: {}</p>", escape(e));
        }
        let _ = write!(b, "<p>Timings: {}</p>", escape(&f.timings_text()));
    }
    // The table is written aside: the gallery, made from the same cells,
    // comes before it.
    let before = std::mem::take(b);
    let mut tiles = String::new();
    let mut n_tiles = 0;
    let _ = write!(b, "<table class=\"rows\"><tr><th>#</th>");
    for c in &s.columns {
        let _ = write!(b, "<th>{}</th>", escape(c));
    }
    b.push_str("</tr>\n");
    for row in &call.rows {
        let prompt = row.cells.iter().find_map(|c| match c {
            Cell::Text { column, value } if column == names::PROMPT => Some(value.as_str()),
            _ => None,
        });
        let seed = row.cells.iter().find_map(|c| match c {
            Cell::Number { column, value } if column == names::SEED => Some(value.to_string()),
            _ => None,
        });
        let _ = write!(
            b,
            "<tr class=\"row\" data-prompt=\"{}\"><td>{}</td>",
            escape(prompt.unwrap_or("")),
            row.index
        );
        for col in &s.columns {
            match row.cells.iter().find(|c| c.column() == col) {
                Some(Cell::Text { value, .. }) => {
                    let _ = write!(b, "<td>{}</td>", escape(value));
                }
                Some(Cell::Number { value, .. }) => {
                    let _ = write!(b, "<td>{value}</td>");
                }
                Some(Cell::Image {
                    path,
                    digest,
                    width,
                    height,
                    video,
                    ..
                }) => {
                    let full = media_href(path)?;
                    let src = match Thumbs::href(digest) {
                        Some(t) if thumbs.contains(digest) => t,
                        _ => full.clone(),
                    };
                    let (w, h) = shown_size(*width, *height);
                    let k = items.len();
                    items.push(ViewerItem {
                        full: full.clone(),
                        label: format!("{} · row {} · {}", s.stage, row.index, col),
                        record: row_record(view, call, row, col, digest),
                        baseline: None,
                        diff: None,
                    });
                    // A video: an animated PNG's first frame (the poster)
                    // in the table, the viewer and the link play the file;
                    // an MP4 plays, muted, in the table itself.
                    let playing = video.as_ref().map_or(String::new(), video_badge);
                    let shown = picture(&full, &src, col, (w, h), "thumb");
                    let _ = write!(
                        b,
                        "<td><a href=\"{full}\" data-item=\"{k}\">{shown}</a>{playing}</td>"
                    );
                    if names::is_generated(col) {
                        let caption = match &seed {
                            Some(seed) => format!("{} · seed {seed}", prompt.unwrap_or("")),
                            None => prompt.unwrap_or("").to_string(),
                        };
                        let _ = write!(
                            tiles,
                            "<figure class=\"tile\" data-prompt=\"{}\"><a href=\"{full}\" data-item=\"{k}\">{}</a><figcaption title=\"{}\">{}</figcaption></figure>",
                            escape(prompt.unwrap_or("")),
                            picture(&full, &src, col, (w, h), "tile"),
                            escape(&caption),
                            escape(&caption)
                        );
                        n_tiles += 1;
                    }
                }
                Some(Cell::Null { .. }) | None => b.push_str("<td>-</td>"),
            }
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</table></section>\n");
    // A call's generated images as a grid too (open for a big batch, an
    // imported folder): captions with prompt and seed, the viewer on click.
    let rows = std::mem::replace(b, before);
    if n_tiles > 0 {
        let _ = writeln!(
            b,
            "<details class=\"gallery\"{}><summary>gallery: {n_tiles} image(s)</summary><div class=\"tiles\">{tiles}</div></details>",
            if n_tiles >= GALLERY_OPEN { " open" } else { "" }
        );
    }
    b.push_str(&rows);
    Ok(call.rows.len())
}

/// Whether a media path is an MP4 (a video kept as H.264).
pub(crate) fn is_mp4(path: &str) -> bool {
    path.ends_with(".mp4")
}

/// How a table or grid shows a media file: an image (or an animated PNG)
/// from `src`, its thumbnail where it has one; an MP4 as a muted video
/// playing in a loop. `full` and `src` are links made by [`media_href`].
pub(crate) fn picture(full: &str, src: &str, alt: &str, (w, h): (u32, u32), class: &str) -> String {
    if is_mp4(full) {
        format!(
            "<video class=\"{class}\" src=\"{full}\" muted loop autoplay playsinline preload=\"metadata\" width=\"{w}\" height=\"{h}\" title=\"{}\"></video>",
            escape(alt)
        )
    } else {
        format!(
            "<img class=\"{class}\" loading=\"lazy\" src=\"{src}\" alt=\"{}\" width=\"{w}\" height=\"{h}\">",
            escape(alt)
        )
    }
}

/// What a video plays, as a badge under its poster frame: `▶ 16 frames
/// · 8 fps · 2 s`.
pub(crate) fn video_badge(v: &crate::event::Video) -> String {
    format!(
        "<div class=\"video\" title=\"frame rate: {}\">▶ {} frames · {} fps · {} s</div>",
        escape(v.fps_from.as_deref().unwrap_or("as recorded")),
        v.frames,
        v.fps,
        v.duration_s
    )
}

/// A call with this many images or more shows its gallery open.
const GALLERY_OPEN: usize = 8;

/// The viewer's record of one image of a call's table: its row's cells and
/// the call's settings.
fn row_record(
    view: &RunView,
    call: &CallView,
    row: &crate::event::RowEvent,
    col: &str,
    digest: &str,
) -> Vec<(String, String)> {
    let s = &call.started;
    let mut rec = vec![("Image".to_string(), format!("{col}, SHA-256 {digest}"))];
    for c in &row.cells {
        match c {
            Cell::Text { column, value } => rec.push((column.clone(), value.clone())),
            Cell::Number { column, value } => rec.push((column.clone(), value.to_string())),
            _ => {}
        }
    }
    if let Some(p) = view.pipelines.get(&s.pipeline) {
        rec.push(("Model".into(), p.model_id.clone()));
        if let Some(d) = &p.weights_digest {
            rec.push(("Model digest".into(), d.clone()));
        }
        rec.push(("Scheduler config".into(), p.scheduler.to_string()));
    }
    rec.push((
        "Call parameters".into(),
        serde_json::Value::Object(s.params.clone()).to_string(),
    ));
    if let Some(f) = &call.finished {
        rec.push(("Timings".into(), f.timings_text()));
    }
    rec
}
