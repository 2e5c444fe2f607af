//! `bench record --compare-sync`: the same images recorded with each way of
//! making media durable, in turns, so that a noisy disk hits both alike
//! (issue 38: a sync per file was the largest part of what recording costs
//! over encoding and writing the files).

use super::{bench_images, median, record_images, RecordBench, RecordFigures};
use crate::error::Result;
use crate::run::durable::SyncMode;
use serde::Serialize;

/// One sync mode's figures over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct SyncRuns {
    /// The mode.
    pub sync: SyncMode,
    /// Recording / (encode + plain write) of each round, in order.
    pub ratios: Vec<f64>,
    /// Images a second of each round.
    pub images_per_s: Vec<f64>,
    /// The median of `ratios`.
    pub median_ratio: f64,
    /// The median of `images_per_s`.
    pub median_images_per_s: f64,
    /// The median round's full figures.
    pub median_run: RecordFigures,
}

/// Figures of `bench record --compare-sync`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncCompareFigures {
    /// Rounds, each recording once with every mode.
    pub rounds: usize,
    /// Each mode's figures.
    pub modes: Vec<SyncRuns>,
    /// Median images a second with group syncs / with a sync per file.
    pub group_throughput_over_file: f64,
}

/// Records the same images `rounds` times with each sync mode, in turns,
/// removing each run once measured.
pub fn compare(opts: &RecordBench, rounds: usize) -> Result<SyncCompareFigures> {
    let rounds = rounds.max(1);
    let images = bench_images(opts)?;
    let encoding = opts.recording_png()?;
    let mut all: Vec<Vec<RecordFigures>> = vec![Vec::new(); SyncMode::ALL.len()];
    for _ in 0..rounds {
        for (k, mode) in SyncMode::ALL.iter().enumerate() {
            let f = record_images(opts, images.clone(), (encoding, mode.check()?))?;
            // The run is measured; its directory is not needed again.
            let _ = std::fs::remove_dir_all(&f.run_dir);
            all[k].push(f);
        }
    }
    let mut modes = Vec::new();
    for (mode, runs) in SyncMode::ALL.iter().zip(all) {
        let ratios: Vec<f64> = runs.iter().map(|f| f.ratio_to_encode_and_write).collect();
        let speeds: Vec<f64> = runs.iter().map(|f| f.images_per_s).collect();
        let mut order: Vec<usize> = (0..runs.len()).collect();
        order.sort_by(|a, b| ratios[*a].total_cmp(&ratios[*b]));
        let mid = order[order.len() / 2];
        modes.push(SyncRuns {
            sync: *mode,
            median_ratio: ratios[mid],
            median_images_per_s: median(&speeds),
            ratios,
            images_per_s: speeds,
            median_run: runs[mid].clone(),
        });
    }
    let speed = |m: SyncMode| {
        modes
            .iter()
            .find(|r| r.sync == m)
            .map_or(f64::NAN, |r| r.median_images_per_s)
    };
    Ok(SyncCompareFigures {
        rounds,
        group_throughput_over_file: speed(SyncMode::Group) / speed(SyncMode::File).max(1e-9),
        modes,
    })
}

/// The text `bench record --compare-sync` prints.
pub fn render(f: &SyncCompareFigures, calls: usize, size: u32) -> String {
    let first = f.modes.first().map(|m| &m.median_run);
    let mut s = format!(
        "difflog bench record --compare-sync: {calls} calls, {} images of {size}x{size} px, {} PNGs, {} rounds in turns\n",
        first.map_or(0, |r| r.images),
        first.map_or("?".into(), |r| format!("{:?}", r.png).to_lowercase()),
        f.rounds
    );
    s.push_str(&format!(
        "  {:<28} {:>14}  {:<36} {:>7}\n",
        "media made durable", "images/s", "recording / (encode + plain write)", "median"
    ));
    for m in &f.modes {
        let how = match m.sync {
            SyncMode::File => "file: fsync per file",
            SyncMode::Group => "group: one syncfs per commit",
        };
        let each: Vec<String> = m.ratios.iter().map(|r| format!("{r:.3}")).collect();
        s.push_str(&format!(
            "  {how:<28} {:>14.1}  {:<36} {:>7.3}\n",
            m.median_images_per_s,
            each.join(" "),
            m.median_ratio
        ));
    }
    s.push_str(&format!(
        "group / file images a second {:.3}; goal: recording / (encode + plain write) ≤ 1.3\n",
        f.group_throughput_over_file
    ));
    s
}
