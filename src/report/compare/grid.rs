//! The grid of a comparison: the value of an axis for each image, the rows
//! and columns those values make, and where each image lands, lined up so
//! that an image with no partner leaves a missing cell instead of shifting
//! its row.

use super::{plain, scheduler_of, CompareOptions, Item, Runs};
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};

/// The axes every run has; any recorded call parameter is an axis too.
pub const AXES: &[&str] = &[
    "prompt",
    "negative_prompt",
    "seed",
    "run",
    "run_id",
    "model",
    "model_digest",
    "pipeline",
    "scheduler",
    "steps",
    "guidance",
    "size",
    "call",
    "row",
];

/// The value of `axis` for an item (None: not recorded for it).
pub(super) fn axis_value(it: &Item, runs: &Runs, axis: &str) -> Option<String> {
    let param = |k: &str| it.params.get(k).filter(|v| !v.is_null()).map(plain);
    match axis {
        "prompt" => it.prompt.clone(),
        "negative_prompt" => it.negative.clone(),
        "seed" => it.seed.clone(),
        "run" => runs.labels.get(it.run).cloned(),
        "run_id" => runs.dirs.get(it.run).map(|d| d.meta.id.clone()),
        "model" => it.pipeline.as_ref().map(|p| p.model_id.clone()),
        "model_digest" => it.pipeline.as_ref().and_then(|p| p.weights_digest.clone()),
        "pipeline" => it.pipeline.as_ref().map(|p| p.class.clone()),
        "scheduler" => scheduler_of(it),
        "steps" => param("num_inference_steps"),
        "guidance" => param("guidance_scale"),
        "size" => Some(format!("{}×{}", it.width, it.height)),
        "call" => Some(it.stage.clone()),
        "row" => Some(it.row.to_string()),
        other => param(other),
    }
}

pub(super) fn check_axis(axis: &str, items: &[Item]) -> Result<()> {
    if AXES.contains(&axis) || items.iter().any(|it| it.params.contains_key(axis)) {
        return Ok(());
    }
    let mut params: Vec<&str> = items
        .iter()
        .flat_map(|it| it.params.keys().map(String::as_str))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    params.sort_unstable();
    Err(Error::Invalid(format!(
        "unknown axis {axis:?}: choose one of {} or a recorded call parameter ({})",
        AXES.join(", "),
        if params.is_empty() {
            "none recorded".into()
        } else {
            params.join(", ")
        }
    )))
}

/// Distinct values in first-seen order, or in numeric order when every one
/// is a number (steps, guidance, seeds).
fn ordered(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out: Vec<String> = values.filter(|v| seen.insert(v.clone())).collect();
    let nums: Option<Vec<f64>> = out.iter().map(|v| v.parse::<f64>().ok()).collect();
    if let Some(nums) = nums {
        let mut paired: Vec<(f64, String)> = nums.into_iter().zip(out).collect();
        paired.sort_by(|a, b| a.0.total_cmp(&b.0));
        out = paired.into_iter().map(|(_, v)| v).collect();
    }
    out
}

const NONE: &str = "(none)";

/// One row of the grid: its row-axis value, what its images are aligned on,
/// the image of each column, and the image the others are compared with.
pub(super) struct GridRow {
    pub(super) value: usize,
    pub(super) sub: String,
    pub(super) cells: Vec<Option<usize>>,
    pub(super) baseline: Option<usize>,
}

/// The laid-out grid.
pub(super) struct Grid {
    pub(super) row_values: Vec<String>,
    pub(super) cols: Vec<String>,
    pub(super) rows: Vec<GridRow>,
}

impl Grid {
    /// Places every item.
    pub(super) fn build(items: &[Item], runs: &Runs, opts: &CompareOptions) -> Grid {
        let value =
            |it: &Item, axis: &str| axis_value(it, runs, axis).unwrap_or_else(|| NONE.into());
        let row_values = ordered(items.iter().map(|it| value(it, &opts.rows)));
        let cols = ordered(items.iter().map(|it| value(it, &opts.cols)));
        let ri: HashMap<&str, usize> = row_values
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_str(), i))
            .collect();
        let ci: HashMap<&str, usize> = cols
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_str(), i))
            .collect();
        let align: Vec<&String> = opts
            .align
            .iter()
            .filter(|a| **a != opts.rows && **a != opts.cols)
            .collect();
        let mut rows: Vec<GridRow> = Vec::new();
        let mut by_key: HashMap<(usize, Vec<String>), Vec<usize>> = HashMap::new();
        for (k, it) in items.iter().enumerate() {
            let r = ri[value(it, &opts.rows).as_str()];
            let c = ci[value(it, &opts.cols).as_str()];
            let key: Vec<String> = align.iter().map(|a| value(it, a)).collect();
            let slots = by_key.entry((r, key.clone())).or_default();
            // The first grid row of this key with the column free; a second
            // image of the same combination opens a row of its own.
            let free = slots.iter().copied().find(|&g| rows[g].cells[c].is_none());
            let g = match free {
                Some(g) => g,
                None => {
                    let sub = align
                        .iter()
                        .zip(&key)
                        .map(|(a, v)| format!("{a} {v}"))
                        .chain((!slots.is_empty()).then(|| format!("repeat {}", slots.len() + 1)))
                        .collect::<Vec<_>>()
                        .join(" · ");
                    rows.push(GridRow {
                        value: r,
                        sub,
                        cells: vec![None; cols.len()],
                        baseline: None,
                    });
                    slots.push(rows.len() - 1);
                    rows.len() - 1
                }
            };
            rows[g].cells[c] = Some(k);
        }
        rows.sort_by_key(|r| r.value);
        let base_col = opts
            .baseline
            .as_ref()
            .and_then(|b| cols.iter().position(|c| c == b));
        for row in &mut rows {
            row.baseline = base_col
                .and_then(|c| row.cells[c])
                .or_else(|| row.cells.iter().flatten().next().copied());
        }
        Grid {
            row_values,
            cols,
            rows,
        }
    }
}
