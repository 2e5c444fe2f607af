//! What the `difflog` commands that make something print: `report`, `pack`,
//! `unpack`, `replay` and `bench`. Each runs its library function and
//! writes the outcome for people (or JSON for scripts), so the binary only
//! parses arguments and calls these. `Ok(false)`: done, but the outcome is
//! a failure the exit code must show (a replay that differs).

use crate::bench::scale::ScaleRoot;
use crate::bench::{GenerateBench, RecordBench};
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of output, by the one escaping rule (JSON lines as JSON).
fn line(out: &mut dyn Write, s: &str) -> Result<()> {
    let json = s.starts_with(['{', '[']);
    writeln!(crate::terminal::Escaping::new(out, json), "{s}")
        .map_err(|e| Error::io("<stdout>", "write", e))
}

/// `difflog report`: writes the pages, then says where.
pub fn report(out: &mut dyn Write, dir: &Path, output: &Path, self_contained: bool) -> Result<()> {
    let s = crate::report::report(dir, output, self_contained)?;
    line(
        out,
        &format!(
            "report of {} run(s), {} image(s): {}",
            s.runs,
            s.images,
            s.index.display()
        ),
    )
}

/// `difflog compare`: writes the page, then says where and what it holds;
/// images that could not be read are listed on stderr (the page marks them).
pub fn compare(
    out: &mut dyn Write,
    paths: &[PathBuf],
    output: &Path,
    opts: &crate::report::compare::CompareOptions,
    json: bool,
) -> Result<()> {
    let s = crate::report::compare::compare(paths, output, opts)?;
    for p in &s.problems {
        eprintln!("warning: {p}");
    }
    if json {
        let v = serde_json::to_string_pretty(&s).map_err(|e| Error::encode("the status", e))?;
        return line(out, &v);
    }
    line(
        out,
        &format!(
            "compared {} run(s), {} image(s) on a {}×{} grid ({} missing); {} thumbnail(s) and {} difference(s) made now: {}",
            s.runs,
            s.images,
            s.rows,
            s.cols,
            s.missing,
            s.thumbs_made,
            s.diffs_made,
            s.index.display()
        ),
    )
}

/// `difflog pack`: packs, then says what went in.
pub fn pack(out: &mut dyn Write, paths: &[PathBuf], output: &Path) -> Result<()> {
    let s = crate::pack::pack(paths, output)?;
    line(
        out,
        &format!(
            "packed {} run(s), {} files, {} bytes into {} ({} bytes)",
            s.runs.len(),
            s.files,
            s.bytes,
            output.display(),
            s.archive_bytes
        ),
    )
}

/// `difflog unpack`: unpacks, then lists the runs.
pub fn unpack(out: &mut dyn Write, archive: &Path, dest: &Path) -> Result<()> {
    let runs = crate::pack::unpack(archive, dest)?;
    for r in &runs {
        line(out, &r.display().to_string())?;
    }
    line(out, &format!("unpacked {} run(s)", runs.len()))
}

/// `difflog replay`: regenerates and compares; `Ok(false)` when an image
/// differs.
pub fn replay(
    out: &mut dyn Write,
    dir: &Path,
    call: u32,
    row: Option<u32>,
    device: &str,
    json: bool,
) -> Result<bool> {
    let results = crate::replay::replay(dir, call, row, device)?;
    let all = results.iter().all(|x| x.identical);
    let matching = results.iter().all(|x| x.matches);
    if json {
        line(
            out,
            &serde_json::json!({"identical": all, "matches": matching, "rows": results})
                .to_string(),
        )?;
        return Ok(matching);
    }
    for x in &results {
        let verdict = match (x.identical, x.matches) {
            (true, _) if x.without_manifest => {
                "identical but for its C2PA manifest (a signature is never made twice alike)"
                    .to_string()
            }
            (true, _) => "identical".to_string(),
            (false, true) => format!(
                "pixels match (largest difference {} of 255; made by diffusers, so not byte-identical)",
                x.max_difference
            ),
            (false, false) => format!("DIFFERS (largest pixel difference {} of 255)", x.max_difference),
        };
        line(
            out,
            &format!(
                "row {} (seed {}): {verdict}  recorded {}  replayed {}",
                x.row, x.seed, x.recorded, x.replayed
            ),
        )?;
    }
    let same = results.iter().filter(|x| x.identical).count();
    let close = results.iter().filter(|x| x.matches && !x.identical).count();
    let mut summary = format!("{same}/{} image(s) byte-identical", results.len());
    if close > 0 {
        summary.push_str(&format!(", {close} with matching pixels"));
    }
    line(out, &summary)?;
    Ok(matching)
}

fn json_or(out: &mut dyn Write, value: &impl serde::Serialize, text: Option<String>) -> Result<()> {
    let s = match text {
        Some(t) => t,
        None => serde_json::to_string(value).unwrap_or_default() + "\n",
    };
    out.write_all(s.as_bytes())
        .map_err(|e| Error::io("<stdout>", "write", e))
}

/// `difflog import`: what was imported, as text or JSON.
pub fn import(out: &mut dyn Write, opts: &crate::import::ImportOpts, json: bool) -> Result<()> {
    let r = crate::import::import(opts)?;
    let text = (!json).then(|| {
        let mut s = match &r.run_dir {
            Some(dir) => format!(
                "imported {} image(s) in {} call(s) into {}\n",
                r.imported,
                r.calls,
                dir.display()
            ),
            None => "nothing new to import: no run made\n".to_string(),
        };
        for (n, what) in [
            (
                r.already_imported,
                "already imported (an earlier import of this folder holds them)",
            ),
            (r.other_tool, "with another tool's metadata: skipped"),
            (
                r.without_metadata,
                if opts.from == "auto" {
                    "without any tool's metadata: imported with the image only"
                } else {
                    "without any tool's metadata: skipped"
                },
            ),
        ] {
            if n > 0 {
                s.push_str(&format!("  {n} file(s) {what}\n"));
            }
        }
        for (path, why) in &r.unreadable {
            s.push_str(&format!(
                "  not read: {}: {}\n",
                crate::terminal::escape(&path.display().to_string()),
                crate::terminal::escape(why)
            ));
        }
        s
    });
    json_or(out, &r, text)
}

/// `difflog-sync watch`: the sync daemon, with the output folders named by
/// `--import` followed into runs under the first root while it runs (their
/// runs finished when it stops).
#[cfg(feature = "sync")]
pub fn watch(
    roots: &[PathBuf],
    specs: &[crate::sync::TargetSpec],
    imports: &[crate::import::ImportSpec],
    (concurrency, metadata_first): (usize, bool),
    out: &mut dyn Write,
) -> Result<crate::sync::watch::Stop> {
    let following = match (imports.is_empty(), roots.first()) {
        (true, _) => None,
        (false, None) => return Err(Error::Invalid("--import needs a runs root".into())),
        (false, Some(root)) => {
            std::fs::create_dir_all(root).map_err(|e| Error::io(root, "create watched root", e))?;
            Some(crate::import::follow(imports, root)?)
        }
    };
    let stop = crate::sync::watch::watch(roots, specs, concurrency, metadata_first, out);
    let stopped = following.map_or(Ok(()), crate::import::Following::stop);
    let stop = stop?;
    stopped?;
    Ok(stop)
}

/// `difflog bench generate`: the figures as a table, or JSON.
pub fn bench_generate(out: &mut dyn Write, opts: &GenerateBench, json: bool) -> Result<()> {
    let f = crate::bench::generate_overhead(opts)?;
    let text = (!json).then(|| crate::bench::render_generate(&f));
    json_or(out, &f, text)
}

/// `difflog bench png`: the figures as a table, or JSON.
pub fn bench_png(
    out: &mut dyn Write,
    opts: &crate::bench::png::PngBench,
    json: bool,
) -> Result<()> {
    let f = crate::bench::png::run(opts)?;
    let text = (!json).then(|| crate::bench::png::render(&f));
    json_or(out, &f, text)
}

/// `difflog bench video`: the figures as a table, or JSON.
pub fn bench_video(
    out: &mut dyn Write,
    opts: &crate::bench::video::VideoBench,
    json: bool,
) -> Result<()> {
    let f = crate::bench::video::run(opts)?;
    let text = (!json).then(|| crate::bench::video::render(&f));
    json_or(out, &f, text)
}

/// `difflog bench record`: the figures as a table, or JSON.
pub fn bench_record(out: &mut dyn Write, opts: &RecordBench, json: bool) -> Result<()> {
    let f = crate::bench::record(opts)?;
    let text = (!json).then(|| crate::bench::render(&f, opts.calls, opts.size));
    json_or(out, &f, text)
}

/// `difflog bench record --compare-png`: the figures as a table, or JSON.
pub fn bench_record_png(
    out: &mut dyn Write,
    opts: &RecordBench,
    python: Option<&std::path::Path>,
    candidates: bool,
    json: bool,
) -> Result<()> {
    let f = crate::bench::record_png_compare(opts, python, candidates)?;
    let text = (!json).then(|| crate::bench::render_png_compare(&f, opts.calls, opts.size));
    json_or(out, &f, text)
}

/// `difflog bench record --compare-sync`: the figures as a table, or JSON.
pub fn bench_record_sync(
    out: &mut dyn Write,
    opts: &RecordBench,
    rounds: usize,
    json: bool,
) -> Result<()> {
    let f = crate::bench::sync::compare(opts, rounds)?;
    let text = (!json).then(|| crate::bench::sync::render(&f, opts.calls, opts.size));
    json_or(out, &f, text)
}

/// `difflog bench record --compare-provenance`: the same images recorded
/// without and with marks, in turns.
pub fn bench_record_provenance(
    out: &mut dyn Write,
    opts: &RecordBench,
    config: &Path,
    rounds: usize,
    json: bool,
) -> Result<()> {
    let f = crate::bench::provenance::compare(opts, config, rounds)?;
    let text = (!json).then(|| crate::bench::provenance::render(&f, opts.calls, opts.size));
    json_or(out, &f, text)
}

/// `difflog bench compare`: records the runs (once), compares, prints the
/// figures against the targets (≤ 10 s uncached, ≤ 1 s cached).
pub fn bench_compare(
    out: &mut dyn Write,
    opts: &crate::bench::compare::CompareBench,
    json: bool,
) -> Result<()> {
    let f = crate::bench::compare::run(opts)?;
    let text = (!json).then(|| {
        format!(
            "| figure | measured | target |\n|---|---|---|\n\
             | compare {} runs × {} images of {}², grid {}, nothing cached, s | {:.2} | ≤ 10 |\n\
             | same, cached, s | {:.3} | ≤ 1 |\n\
             | baseline: decode every image once on all cores, s | {:.2} | |\n\
             | uncached compare / decode baseline | {:.2} | |\n\
             | thumbnails / differences made | {} / {} | |\n\
             | page size, bytes | {} | |",
            f.runs,
            f.images / f.runs.max(1),
            f.size,
            f.grid,
            f.uncached_s,
            f.cached_s,
            f.decode_all_s,
            f.uncached_over_decode,
            f.thumbs_made,
            f.diffs_made,
            f.page_bytes
        )
    });
    json_or(out, &f, text)
}

/// `difflog bench scale`: writes the root, prints its figures as JSON.
pub fn bench_scale(out: &mut dyn Write, opts: &ScaleRoot) -> Result<()> {
    let f = crate::bench::scale::generate(opts)?;
    json_or(out, &f, None)
}
