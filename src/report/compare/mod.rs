//! `difflog compare`: one static page that lays the images of several runs
//! out on a grid along recorded axes (rows = prompt, columns = run by
//! default), with thumbnails, each image's record, a slider between two
//! images and a difference view against each grid row's baseline.
//!
//! Cells line up by what the user aligns on (prompt, seed and row index by
//! default, less whatever is an axis): an image with no partner in another
//! column leaves that cell marked missing, it never shifts the row. The page
//! opens from disk with no server and no network; thumbnails and differences
//! are computed once here and cached beside the page.

mod grid;
mod page;
mod work;

pub use grid::AXES;

use crate::error::{Error, IoContext, Result};
use crate::event::{Cell, PipelineEvent};
use crate::format::names;
use crate::read::{find_runs, RunDir};
use grid::{check_axis, Grid};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use work::Work;

/// How the grid is laid out.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The axis along the rows.
    pub rows: String,
    /// The axis along the columns.
    pub cols: String,
    /// What cells line up by, besides the two axes.
    pub align: Vec<String>,
    /// The column each grid row's images are compared against (default:
    /// the row's first image).
    pub baseline: Option<String>,
    /// Copy the full-size images beside the page.
    pub self_contained: bool,
}

impl Default for CompareOptions {
    fn default() -> CompareOptions {
        CompareOptions {
            rows: "prompt".into(),
            cols: "run".into(),
            align: vec!["prompt".into(), "seed".into(), "row".into()],
            baseline: None,
            self_contained: false,
        }
    }
}

/// What `compare` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct CompareSummary {
    /// The page to open.
    pub index: PathBuf,
    /// Runs compared.
    pub runs: usize,
    /// Images placed on the grid.
    pub images: usize,
    /// Grid rows.
    pub rows: usize,
    /// Grid columns.
    pub cols: usize,
    /// Grid cells with no image for their combination.
    pub missing: usize,
    /// Thumbnails made now (the others were cached).
    pub thumbs_made: usize,
    /// Differences computed now (the others were cached).
    pub diffs_made: usize,
    /// Runs or images that could not be read, each naming what and why.
    pub problems: Vec<String>,
}

/// One image of one run, with what the grid and the viewer need.
pub(super) struct Item {
    pub(super) run: usize,
    pub(super) stage: String,
    pub(super) row: u32,
    pub(super) prompt: Option<String>,
    pub(super) negative: Option<String>,
    pub(super) seed: Option<String>,
    pub(super) digest: String,
    pub(super) rel: String,
    pub(super) width: u32,
    pub(super) height: u32,
    /// What the file plays, when the row's media is a video.
    pub(super) video: Option<crate::event::Video>,
    pub(super) params: Map<String, Value>,
    pub(super) pipeline: Option<PipelineEvent>,
    pub(super) timings: String,
}

/// The runs compared, with the name each is shown by.
pub(super) struct Runs {
    pub(super) dirs: Vec<RunDir>,
    pub(super) labels: Vec<String>,
}

/// Writes the comparison page of the runs in `paths` (runs or roots of
/// runs) into `out`.
pub fn compare(paths: &[PathBuf], out: &Path, opts: &CompareOptions) -> Result<CompareSummary> {
    let mut problems = Vec::new();
    let runs = load_runs(paths, &mut problems)?;
    let items = items_of(&runs);
    for axis in [&opts.rows, &opts.cols].into_iter().chain(&opts.align) {
        check_axis(axis, &items)?;
    }
    if let Some(r) = crate::read::run_containing(out, runs.dirs.iter().map(|d| d.path.as_path())) {
        return Err(Error::file(
            out,
            format!(
                "the comparison would be written inside run {}; choose a folder outside the runs",
                r.display()
            ),
        ));
    }
    std::fs::create_dir_all(out).ctx(out, "create comparison folder")?;
    let out = out.canonicalize().ctx(out, "resolve comparison folder")?;
    let grid = Grid::build(&items, &runs, opts);
    let work = Work::plan(&items, &runs, &grid, &out, opts)?;
    let done = work.run(&mut problems);
    let html = page::render(&items, &runs, &grid, &work, &done, opts);
    let index = out.join("index.html");
    std::fs::write(&index, html).ctx(&index, "write comparison page")?;
    work.save_cache(&done)?;
    Ok(CompareSummary {
        index,
        runs: runs.dirs.len(),
        images: items.len(),
        rows: grid.rows.len(),
        cols: grid.cols.len(),
        missing: grid
            .rows
            .iter()
            .map(|r| r.cells.iter().filter(|c| c.is_none()).count())
            .sum(),
        thumbs_made: done.thumbs_made,
        diffs_made: done.diffs_made,
        problems,
    })
}

fn load_runs(paths: &[PathBuf], problems: &mut Vec<String>) -> Result<Runs> {
    let mut dirs: Vec<RunDir> = Vec::new();
    let mut seen = HashSet::new();
    for p in paths {
        let found = if p.join(crate::format::RUN_JSON).is_file() {
            vec![p.clone()]
        } else {
            let found = find_runs(p)?;
            if found.is_empty() {
                return Err(Error::NotARun {
                    path: p.clone(),
                    why: "it has no run.json and no run directories under it".into(),
                });
            }
            found
        };
        for dir in found {
            match RunDir::open(&dir) {
                Ok(run) => {
                    if let Some(p) = &run.log.problem {
                        // Compared all the same, but not silently.
                        problems.push(format!(
                            "{}: events.log is damaged at byte {} ({}): only the records before it are compared",
                            dir.display(),
                            p.offset,
                            p.why
                        ));
                    }
                    if seen.insert(run.meta.id.clone()) {
                        dirs.push(run);
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    if dirs.is_empty() {
        return Err(Error::Invalid(format!(
            "no run to compare could be read: {}",
            problems.join("; ")
        )));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for d in &dirs {
        *names.entry(d.meta.name.as_str()).or_default() += 1;
    }
    let labels = dirs
        .iter()
        .map(|d| {
            if names.get(d.meta.name.as_str()) == Some(&1) {
                d.meta.name.clone()
            } else {
                format!("{} ({})", d.meta.name, d.meta.id)
            }
        })
        .collect();
    Ok(Runs { dirs, labels })
}

fn text_cell(cells: &[Cell], column: &str) -> Option<String> {
    cells.iter().find_map(|c| match c {
        Cell::Text { column: k, value } if k == column => Some(value.clone()),
        Cell::Number { column: k, value } if k == column => Some(value.to_string()),
        _ => None,
    })
}

fn items_of(runs: &Runs) -> Vec<Item> {
    let mut items = Vec::new();
    for (r, run) in runs.dirs.iter().enumerate() {
        let view = run.view();
        for call in view.calls.values() {
            let s = &call.started;
            let timings = call
                .finished
                .as_ref()
                .map(|f| f.timings_text())
                .unwrap_or_else(|| "unfinished".into());
            for row in &call.rows {
                let Some((digest, rel, width, height, video)) =
                    row.cells.iter().find_map(|c| match c {
                        Cell::Image {
                            column,
                            digest,
                            path,
                            width,
                            height,
                            video,
                        } if names::is_generated(column) => {
                            Some((digest.clone(), path.clone(), *width, *height, video.clone()))
                        }
                        _ => None,
                    })
                else {
                    continue;
                };
                let seed = text_cell(&row.cells, names::SEED)
                    .or_else(|| s.seeds.get(row.index as usize).map(|v| v.to_string()));
                items.push(Item {
                    run: r,
                    stage: s.stage.clone(),
                    row: row.index,
                    prompt: text_cell(&row.cells, names::PROMPT),
                    negative: text_cell(&row.cells, names::NEGATIVE_PROMPT),
                    seed,
                    digest,
                    rel,
                    width,
                    height,
                    video,
                    params: s.params.clone(),
                    pipeline: view.pipelines.get(&s.pipeline).cloned(),
                    timings: timings.clone(),
                });
            }
        }
    }
    items
}

pub(super) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn scheduler_of(it: &Item) -> Option<String> {
    crate::read::scheduler_name(&it.params, it.pipeline.as_ref())
}
