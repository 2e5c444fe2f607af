//! The comparison page: the grid as HTML (thumbnail, badge with the
//! difference against the row's baseline, missing cells), and what the
//! viewer shows of each image (its record, its difference).

use super::grid::{Grid, GridRow};
use super::work::{pair_key, Done, Work};
use super::{plain, scheduler_of, CompareOptions, Item, Runs};
use crate::format::names;
use crate::report::diff::{describe, Figures};
use crate::report::html::{escape, page, viewer, DiffView, ViewerItem};
use crate::report::thumbs::{shown_size, THUMB};
use std::fmt::Write as _;

fn record_of(it: &Item, runs: &Runs) -> Vec<(String, String)> {
    let run = &runs.dirs[it.run];
    let p = it.pipeline.as_ref();
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut rec = vec![
        (
            "Run".to_string(),
            format!("{} ({})", run.meta.name, run.meta.id),
        ),
        ("Call, row".into(), format!("{}, row {}", it.stage, it.row)),
        (names::PROMPT.into(), opt(it.prompt.clone())),
        ("Negative prompt".into(), opt(it.negative.clone())),
        (names::SEED.into(), opt(it.seed.clone())),
        ("Model".into(), opt(p.map(|p| p.model_id.clone()))),
        (
            "Model digest".into(),
            opt(p.and_then(|p| p.weights_digest.clone())),
        ),
        (
            "Pipeline".into(),
            opt(p.map(|p| format!("{} ({}, {})", p.class, p.dtype, p.device))),
        ),
        ("Scheduler".into(), opt(scheduler_of(it))),
        (
            "Scheduler config".into(),
            opt(p.map(|p| p.scheduler.to_string())),
        ),
        (
            "Steps".into(),
            opt(it.params.get("num_inference_steps").map(plain)),
        ),
        (
            "Guidance".into(),
            opt(it.params.get("guidance_scale").map(plain)),
        ),
        ("Size".into(), format!("{}×{}", it.width, it.height)),
        ("Timings".into(), it.timings.clone()),
        ("Image SHA-256".into(), it.digest.clone()),
    ];
    rec.retain(|(_, v)| !v.is_empty());
    rec
}

/// What the viewer shows of each item (its record, its difference against
/// its row's baseline) and the badge under each thumbnail.
fn viewer_items(
    items: &[Item],
    runs: &Runs,
    work: &Work,
    done: &Done,
) -> (Vec<ViewerItem>, Vec<String>) {
    let mut viewer_items: Vec<ViewerItem> = items
        .iter()
        .enumerate()
        .map(|(k, it)| ViewerItem {
            full: work.full[k].clone(),
            label: format!("{} · {} · row {}", runs.labels[it.run], it.stage, it.row),
            record: record_of(it, runs),
            baseline: None,
            diff: None,
        })
        .collect();
    let mut badges: Vec<String> = vec![String::new(); items.len()];
    for (k, it) in items.iter().enumerate() {
        let Some(b) = work.baseline_of[k] else {
            continue;
        };
        let base = &items[b];
        let same_bytes = base.digest == it.digest;
        let key = pair_key(&base.digest, &it.digest);
        let view = if same_bytes {
            let f = Figures {
                mean: 0.0,
                max: 0,
                differing: 0,
                pixels: u64::from(it.width) * u64::from(it.height),
            };
            badges[k] = "= bytes".into();
            Some(DiffView::text(describe(&f, true)))
        } else {
            match done.diffs.get(&key) {
                Some(Some(f)) => {
                    badges[k] = if f.max == 0 {
                        "= pixels".into()
                    } else {
                        format!("Δ mean {:.2} max {}", f.mean, f.max)
                    };
                    let place = work.strip_place(k);
                    Some(DiffView {
                        heat: place.as_ref().map(|p| p.0.clone()),
                        index: place.as_ref().map_or(0, |p| p.1),
                        count: place.as_ref().map_or(1, |p| p.2),
                        aspect: format!("{} / {}", it.width.max(1), it.height.max(1)),
                        text: describe(f, false),
                    })
                }
                Some(None) => {
                    badges[k] = "size differs".into();
                    Some(DiffView::text(format!(
                        "sizes differ ({}×{} and {}×{}): not compared pixel by pixel",
                        base.width, base.height, it.width, it.height
                    )))
                }
                None => None,
            }
        };
        viewer_items[k].baseline = Some(b);
        viewer_items[k].diff = view;
    }
    (viewer_items, badges)
}

/// The whole page.
pub(super) fn render(
    items: &[Item],
    runs: &Runs,
    grid: &Grid,
    work: &Work,
    done: &Done,
    opts: &CompareOptions,
) -> String {
    let (viewer_items, badges) = viewer_items(items, runs, work, done);
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>difflog compare</h1><p id=\"summary\">{} run(s), {} image(s); rows: <b>{}</b>, columns: <b>{}</b>; cells aligned by {}; \
         each row's images are compared with {}. Click an image for its record, the slider and the difference.</p>\n\
         <p><input id=\"filter\" type=\"search\" placeholder=\"filter rows by prompt text\" aria-label=\"filter by prompt\"></p>\n",
        runs.dirs.len(),
        items.len(),
        escape(&opts.rows),
        escape(&opts.cols),
        escape(&opts.align.join(", ")),
        match &opts.baseline {
            Some(c) => format!("column {}", escape(c)),
            None => "the row's first image".into(),
        }
    );
    let _ = write!(
        b,
        "<table id=\"grid\"><thead><tr><th>{} \\ {}</th>",
        escape(&opts.rows),
        escape(&opts.cols)
    );
    for c in &grid.cols {
        let _ = write!(b, "<th class=\"colhead\">{}</th>", escape(c));
    }
    b.push_str("</tr></thead><tbody>\n");
    for row in &grid.rows {
        grid_row(&mut b, row, items, grid, work, done, &badges);
    }
    b.push_str("</tbody></table>\n");
    b.push_str(&viewer(&viewer_items));
    page("difflog compare", &b)
}

/// One grid row: its head, then each column's thumbnail with its badge, or
/// the cell marked missing or unreadable.
fn grid_row(
    b: &mut String,
    row: &GridRow,
    items: &[Item],
    grid: &Grid,
    work: &Work,
    done: &Done,
    badges: &[String],
) {
    let mut prompts: Vec<&str> = row
        .cells
        .iter()
        .flatten()
        .filter_map(|&k| items[k].prompt.as_deref())
        .collect();
    prompts.dedup();
    let _ = write!(
        b,
        "<tr class=\"grow\" data-prompt=\"{}\"><th class=\"rowhead\">{}<small>{}</small></th>",
        escape(&prompts.join("\n")),
        escape(&grid.row_values[row.value]),
        escape(&row.sub)
    );
    for cell in &row.cells {
        let Some(k) = *cell else {
            b.push_str("<td class=\"missing\">missing</td>");
            continue;
        };
        let it = &items[k];
        if let Some(why) = done.unreadable.get(&k) {
            let _ = write!(
                b,
                "<td class=\"cell unreadable\"><div class=\"badge error\">{}</div></td>",
                escape(why)
            );
            continue;
        }
        let (w, h) = shown_size(it.width, it.height);
        let alt = escape(it.prompt.as_deref().unwrap_or("image"));
        let img = match work.thumb_place(k) {
            Some((href, t, c)) if done.thumb_rows.contains(&t) => format!(
                // One slot of the row's thumbnail strip, at its natural size.
                "<img class=\"thumb sprite\" loading=\"lazy\" src=\"{}\" width=\"{w}\" height=\"{h}\" \
                 style=\"width:{w}px;height:{h}px;object-fit:none;object-position:-{}px 0\" alt=\"{alt}\">",
                escape(&href),
                c as u32 * THUMB
            ),
            // An MP4 plays in the grid, muted.
            _ => crate::report::picture(
                &escape(&work.full[k]),
                &escape(&work.full[k]),
                it.prompt.as_deref().unwrap_or("image"),
                (w, h),
                "thumb",
            ),
        };
        let badge = match () {
            () if row.baseline == Some(k) && row.cells.iter().flatten().count() > 1 => {
                "<div class=\"badge\">baseline</div>".into()
            }
            () if badges[k].starts_with('=') => {
                format!("<div class=\"badge same\">{}</div>", escape(&badges[k]))
            }
            () => format!("<div class=\"badge\">{}</div>", escape(&badges[k])),
        };
        let playing = it
            .video
            .as_ref()
            .map_or(String::new(), crate::report::video_badge);
        let _ = write!(
            b,
            "<td class=\"cell\" data-item=\"{k}\">{img}{badge}{playing}</td>"
        );
    }
    b.push_str("</tr>\n");
}
