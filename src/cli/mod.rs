//! What the `difflog` inspection commands print: `ls`, `show` and `verify`,
//! as text for people or JSON for scripts. The binary only parses arguments
//! and calls these.

pub mod actions;
pub mod inspect;

use crate::error::{Error, Result};
use crate::event::Cell;
use crate::read::{dir_size, find_runs, RunDir, RunView};
use crate::verify::{verify_path, Severity};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

fn out_err(e: std::io::Error) -> Error {
    Error::io("<stdout>", "write output", e)
}

/// Resolves a run argument: a path if it exists, else a run id under `root`.
/// Paths are taken as the OS gives them (a folder name need not be UTF-8).
pub fn resolve_run(arg: &Path, root: &Path) -> PathBuf {
    let id = arg.to_str().filter(|a| crate::format::is_run_id(a));
    match id {
        Some(id) if !arg.exists() => root.join(id),
        _ => arg.to_path_buf(),
    }
}

/// Human output passes through the one escaping rule ([`crate::terminal`]).
pub use crate::terminal::Escaping;
/// `difflog ls`: one line per run under `root`.
pub fn ls(out: &mut dyn Write, root: &Path, as_json: bool) -> Result<()> {
    let runs = find_runs(root)?;
    let rows = crate::read::par_map(&runs, |dir| match RunDir::open(dir) {
        Ok(run) => {
            let view = run.view();
            json!({
                "id": run.meta.id,
                "project": run.meta.project,
                "name": run.meta.name,
                "state": run.state().as_str(),
                "calls": view.calls.len(),
                "images": view.image_count(),
                "videos": view.video_count(),
                "bytes": dir_size(dir),
                "created": run.meta.created,
                "path": dir,
            })
        }
        Err(e) => json!({ "path": dir, "error": e.to_string(), "error_code": e.code() }),
    });
    if as_json {
        writeln!(out, "{}", Value::Array(rows)).map_err(out_err)?;
        return Ok(());
    }
    let mut esc = Escaping::text(out);
    let out: &mut dyn Write = &mut esc;
    if rows.is_empty() {
        writeln!(out, "no runs under {}", root.display()).map_err(out_err)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<30} {:<20} {:<24} {:<9} {:>6} {:>7} {:>10}",
        "ID", "PROJECT", "NAME", "STATE", "CALLS", "IMAGES", "SIZE"
    )
    .map_err(out_err)?;
    for r in &rows {
        if let Some(e) = r.get("error") {
            writeln!(
                out,
                "{:<30} unreadable: {}",
                short(&r["path"].to_string(), 30),
                e.as_str().unwrap_or("")
            )
            .map_err(out_err)?;
            continue;
        }
        writeln!(
            out,
            "{:<30} {:<20} {:<24} {:<9} {:>6} {:>7} {:>10}",
            r["id"].as_str().unwrap_or(""),
            short(r["project"].as_str().unwrap_or(""), 20),
            short(r["name"].as_str().unwrap_or(""), 24),
            r["state"].as_str().unwrap_or(""),
            r["calls"].as_u64().unwrap_or(0),
            // Videos, when a run has any, beside its images: `3+2v`.
            match r["videos"].as_u64().unwrap_or(0) {
                0 => r["images"].as_u64().unwrap_or(0).to_string(),
                v => format!("{}+{v}v", r["images"].as_u64().unwrap_or(0)),
            },
            human_bytes(r["bytes"].as_u64().unwrap_or(0)),
        )
        .map_err(out_err)?;
    }
    Ok(())
}

/// `difflog show`: a run's identity, config, pipelines, workflow and tables.
pub fn show(out: &mut dyn Write, dir: &Path, as_json: bool) -> Result<()> {
    let run = RunDir::open(dir)?;
    let view = run.view();
    let state = run.state();
    if as_json {
        let v = json!({
            "run": run.meta,
            "path": run.path,
            "state": state,
            "config": view.config,
            "workflow": view.workflow(),
            "pipelines": view.pipelines.values().collect::<Vec<_>>(),
            "calls": view.calls.values().collect::<Vec<_>>(),
            "metrics": view.metrics,
            "finished": view.finished,
            "log_problem": run.log.problem.as_ref().map(|p| json!({"offset": p.offset, "why": p.why})),
        });
        writeln!(Escaping::json(out), "{v}").map_err(out_err)?;
        return Ok(());
    }
    let mut esc = Escaping::text(out);
    let out: &mut dyn Write = &mut esc;
    let m = &run.meta;
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(out_err);
    w(out, format!("run      {}  ({})", m.id, state.as_str()))?;
    w(out, format!("project  {}", m.project))?;
    w(out, format!("name     {}", m.name))?;
    if !m.tags.is_empty() {
        w(out, format!("tags     {}", m.tags.join(", ")))?;
    }
    w(
        out,
        format!(
            "created  {} on {} (difflog {})",
            m.created, m.host, m.difflog_version
        ),
    )?;
    w(out, format!("path     {}", run.path.display()))?;
    if let Some(p) = &run.log.problem {
        w(
            out,
            format!("log      damaged or torn at byte {}: {}", p.offset, p.why),
        )?;
    }
    if !view.config.is_empty() {
        w(out, "\nconfig".into())?;
        for (k, v) in &view.config {
            w(out, format!("  {k}: {}", short(&v.to_string(), 200)))?;
        }
    }
    for p in view.pipelines.values() {
        w(
            out,
            format!(
                "\npipeline {}  {} ({}, {}, {})",
                p.pipeline, p.class, p.model_id, p.dtype, p.device
            ),
        )?;
        if let Some(d) = &p.weights_digest {
            w(out, format!("  weights  {d}"))?;
        }
        w(
            out,
            format!("  scheduler {}", short(&p.scheduler.to_string(), 400)),
        )?;
    }
    if !view.calls.is_empty() {
        w(out, "\nworkflow".into())?;
        for entry in view.workflow() {
            w(
                out,
                format!(
                    "  {}  {}  params {}",
                    entry["stage"].as_str().unwrap_or(""),
                    entry["pipeline"]["class"].as_str().unwrap_or("?"),
                    short(&entry["params"].to_string(), 300)
                ),
            )?;
        }
    }
    for call in view.calls.values() {
        show_call(out, call)?;
    }
    if !view.metrics.is_empty() {
        w(out, "\nmetrics".into())?;
        for mtr in &view.metrics {
            let step = mtr.step.map(|s| format!(" @ step {s}")).unwrap_or_default();
            w(out, format!("  {} = {}{step}", mtr.name, mtr.value))?;
        }
    }
    Ok(())
}

fn show_call(out: &mut dyn Write, call: &crate::read::CallView) -> Result<()> {
    let s = &call.started;
    let status = match &call.finished {
        None => "unfinished".to_string(),
        Some(f) if f.status == crate::event::CallStatus::Ok => format!("ok, {} image(s)", f.images),
        Some(_) => "FAILED".to_string(),
    };
    writeln!(out, "\nResult-Table/{}  ({status})", s.stage).map_err(out_err)?;
    if let Some(f) = &call.finished {
        if let Some(e) = &f.error {
            writeln!(out, "  error: {e}").map_err(out_err)?;
        }
        writeln!(out, "  timings: {}", f.timings_text()).map_err(out_err)?;
    }
    writeln!(out, "  # | {}", s.columns.join(" | ")).map_err(out_err)?;
    for row in &call.rows {
        let cells: Vec<String> = row.cells.iter().map(cell_text).collect();
        writeln!(out, "  {} | {}", row.index, cells.join(" | ")).map_err(out_err)?;
    }
    Ok(())
}

fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Text { value, .. } => short(value, 60),
        Cell::Number { value, .. } => value.to_string(),
        Cell::Image {
            path,
            video: Some(v),
            ..
        } => format!("{path} (video: {} frames, {} fps)", v.frames, v.fps),
        Cell::Image { path, .. } => path.clone(),
        Cell::Null { .. } => "-".into(),
    }
}

/// `difflog verify`: prints findings; returns whether any run is damaged.
pub fn verify(
    out: &mut dyn Write,
    path: &Path,
    provenance: Option<Option<&Path>>,
    as_json: bool,
) -> Result<bool> {
    let reports = verify_path(path)?;
    let damaged = reports.iter().any(|r| r.damaged());
    // --provenance: every run's generated images, their marks checked.
    let mut marks = Vec::new();
    if let Some(trust) = provenance {
        let anchors = inspect::trust_anchors(trust)?;
        for r in &reports {
            // A run that cannot be read is one problem of its own (the
            // integrity report above says why), never the end of the rest.
            let checked = crate::provenance::check::check_run(&r.path, anchors.as_deref())
                .unwrap_or_else(|e| vec![crate::provenance::check::ImageCheck::unreadable(&e)]);
            marks.push(checked);
        }
    }
    let broken = marks.iter().flatten().any(|c| !c.problems.is_empty());
    if as_json {
        let mut v = json!({ "damaged": damaged, "runs": reports });
        if provenance.is_some() {
            v["provenance_problems"] = json!(broken);
            v["provenance"] = json!(marks);
        }
        writeln!(Escaping::json(out), "{v}").map_err(out_err)?;
        return Ok(damaged || broken);
    }
    let mut esc = Escaping::text(out);
    let out: &mut dyn Write = &mut esc;
    for (n, r) in reports.iter().enumerate() {
        let verdict = if r.damaged() { "DAMAGED" } else { "ok" };
        writeln!(
            out,
            "{}: {verdict} ({} records, {} media files checked{})",
            r.path.display(),
            r.records,
            r.media_checked,
            r.state
                .map(|s| format!(", {}", s.as_str()))
                .unwrap_or_default()
        )
        .map_err(out_err)?;
        for f in &r.findings {
            let tag = match f.severity {
                Severity::Damage => "damage",
                Severity::Warning => "warning",
                Severity::Note => "note",
            };
            writeln!(out, "  {tag}: {}", f.message).map_err(out_err)?;
        }
        if let Some(images) = marks.get(n) {
            write_marks(out, images).map_err(out_err)?;
        }
    }
    Ok(damaged || broken)
}

/// `verify --provenance`'s lines for one run.
fn write_marks(
    out: &mut dyn Write,
    images: &[crate::provenance::check::ImageCheck],
) -> std::io::Result<()> {
    if let [only] = images {
        if only.path.is_empty() {
            for p in &only.problems {
                writeln!(out, "  provenance: PROBLEM: {p}")?;
            }
            return Ok(());
        }
    }
    let signed = images.iter().filter(|c| c.c2pa.is_some()).count();
    let watermarked = images
        .iter()
        .filter(|c| c.watermark.as_ref().is_some_and(|w| w.found))
        .count();
    let broken = images.iter().filter(|c| !c.problems.is_empty()).count();
    writeln!(
        out,
        "  provenance: {} generated image(s): {signed} with a C2PA manifest, {watermarked} with \
         their watermark, {}",
        images.len(),
        if broken == 0 {
            "every recorded mark intact".to_string()
        } else {
            format!("{broken} with a mark missing or broken")
        }
    )?;
    for c in images {
        writeln!(out, "    {} {}: {}", c.key, short(&c.path, 24), c.summary())?;
        for p in &c.problems {
            writeln!(out, "      PROBLEM: {p}")?;
        }
    }
    Ok(())
}

/// Shortens text for display, on a character boundary, marking the cut.
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.replace('\n', " ");
    }
    let cut: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.replace('\n', " "))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The view of a run, for callers that want it without printing.
pub fn view(dir: &Path) -> Result<RunView> {
    Ok(RunDir::open(dir)?.view())
}

/// How the binaries report a command that failed: the message on stderr
/// (`program: message`) and, when the command was asked for `--json`, an
/// object on stdout too — `{"error": message, "error_code": code}`, the
/// code stable across releases ([`crate::Error::code`]) — so a script reading
/// the JSON sees the failure.
pub fn report_failure(program: &str, error: &crate::Error, json: bool) {
    // Errors quote what came from elsewhere (a run's names, a server's
    // answer): printed by the one escaping rule.
    eprintln!("{program}: {}", crate::terminal::escape(&error.to_string()));
    if json {
        let v = serde_json::json!({"error": error.to_string(), "error_code": error.code()});
        let mut out = std::io::stdout().lock();
        let _ = writeln!(Escaping::json(&mut out), "{v}");
    }
}

/// Logging for the binaries: to stderr, level from `DIFFLOG_LOG` (default `warn`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DIFFLOG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(|| LogWriter)
        .with_ansi(false)
        .init();
}

/// Log lines to stderr through the one escaping rule (no colours: their
/// escape sequences would be escaped too).
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        Escaping::text(&mut err).write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
