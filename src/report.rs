//! `difflog report`: a static HTML report of a run (or an index of every run
//! under a root) that opens from disk with no server and no network.
//!
//! Images are never re-encoded: the report links the run's own PNGs by
//! relative path, or copies them beside the report with `self_contained`.
//! Thumbnails load lazily (`loading="lazy"`), so a run with 10,000 images
//! opens quickly. Every recorded string is HTML-escaped: a prompt holding
//! `<script>` is shown, never executed.

use crate::error::{Error, IoContext, Result};
use crate::event::Cell;
use crate::format::percent_encode;
use crate::read::{find_runs, CallView, RunDir, RunView};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

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

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Relative path from directory `from` to `to` (both absolute), with `/`.
fn relative(from: &Path, to: &Path) -> String {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts
        .iter()
        .map(|p| {
            p.split('/')
                .map(percent_encode)
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect::<Vec<_>>()
        .join("/")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}\
th{background:#f3f3f3}img.thumb{width:128px;height:auto;image-rendering:pixelated;background:#eee}\
pre{background:#f7f7f7;padding:.5em;overflow:auto;max-height:24em}.error{color:#b00020}.meta td:first-child{font-weight:600}\
section{margin-top:1.5em}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        escape(title)
    )
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
            Ok(rel
                .split('/')
                .map(percent_encode)
                .collect::<Vec<_>>()
                .join("/"))
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
    let mut images = 0;
    for call in view.calls.values() {
        images += write_call(&mut b, &view, call, &media_href)?;
    }
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
    let _ = write!(
        b,
        "<p>size {}×{}, steps {}, guidance {}, scheduler {}</p>",
        escape(&param("width")),
        escape(&param("height")),
        escape(&param("num_inference_steps")),
        escape(&param("guidance_scale")),
        escape(&param("scheduler"))
    );
    if let Some(f) = &call.finished {
        if let Some(e) = &f.error {
            let _ = write!(b, "<p class=\"error\">Error: {}</p>", escape(e));
        }
        let t: Vec<String> = f
            .timings_ms
            .iter()
            .map(|(k, v)| format!("{} {} ms", escape(k), v))
            .collect();
        let _ = write!(b, "<p>Timings: {}</p>", t.join(", "));
    }
    let _ = write!(b, "<table class=\"rows\"><tr><th>#</th>");
    for c in &s.columns {
        let _ = write!(b, "<th>{}</th>", escape(c));
    }
    b.push_str("</tr>\n");
    for row in &call.rows {
        let _ = write!(b, "<tr class=\"row\"><td>{}</td>", row.index);
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
                    width,
                    height,
                    ..
                }) => {
                    let href = media_href(path)?;
                    let _ = write!(
                        b,
                        "<td><a href=\"{href}\"><img class=\"thumb\" loading=\"lazy\" src=\"{href}\" alt=\"{}\" width=\"128\" data-size=\"{width}x{height}\"></a></td>",
                        escape(col)
                    );
                }
                Some(Cell::Null { .. }) | None => b.push_str("<td>-</td>"),
            }
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</table></section>\n");
    Ok(call.rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_paths_are_relative() {
        assert_eq!(
            escape("<script>alert('x')</script> & \""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;"
        );
        assert_eq!(
            relative(
                Path::new("/a/report"),
                Path::new("/a/runs/r1/media/ab/x.png")
            ),
            "../runs/r1/media/ab/x.png"
        );
        assert_eq!(relative(Path::new("/a"), Path::new("/a/b c/d")), "b%20c/d");
    }
}
