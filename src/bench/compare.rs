//! `difflog bench compare`: `difflog compare` over many runs × many images
//! (issue 18: 50 runs × 200 images, ≤ 10 s with nothing cached, ≤ 1 s
//! cached), beside a baseline measured in the same process: decoding every
//! image once on all cores, which no comparison that looks at the pixels
//! can beat.
//!
//! The runs are recorded through the public API with synthetic images (the
//! same prompts and seeds in every run, other pixels), once per root: a
//! second bench over the same root reuses them.

use crate::bench::{synthetic_image, SyntheticPipeline};
use crate::error::{Error, Result};
use crate::read::{find_runs, par_map, RunDir};
use crate::report::compare::{compare, CompareOptions};
use crate::run::{Init, Run};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Settings of `bench compare`.
#[derive(Debug, Clone)]
pub struct CompareBench {
    /// Root the runs are recorded in (reused when it already holds them).
    pub root: PathBuf,
    /// Number of runs.
    pub runs: usize,
    /// Images per run (4 per call).
    pub images: usize,
    /// Image width and height in pixels.
    pub size: u32,
}

/// What `bench compare` measured.
#[derive(Debug, Clone, Serialize)]
pub struct CompareFigures {
    /// Runs compared.
    pub runs: usize,
    /// Images on the grid.
    pub images: usize,
    /// Image side in pixels.
    pub size: u32,
    /// Grid rows × columns.
    pub grid: String,
    /// Seconds to record the runs (setup, not a target; 0 when reused).
    pub setup_s: f64,
    /// Seconds for `compare` with nothing cached (thumbnails and differences made).
    pub uncached_s: f64,
    /// Seconds for the same `compare` again (everything cached).
    pub cached_s: f64,
    /// Baseline: seconds to decode every image once on all cores.
    pub decode_all_s: f64,
    /// `uncached_s / decode_all_s`.
    pub uncached_over_decode: f64,
    /// Thumbnails made by the uncached run.
    pub thumbs_made: usize,
    /// Differences computed by the uncached run.
    pub diffs_made: usize,
    /// Size of the page, bytes.
    pub page_bytes: u64,
}

/// Records the runs if the root does not hold them yet; returns the seconds
/// spent.
fn setup(opts: &CompareBench) -> Result<f64> {
    let have = find_runs(&opts.root).map(|r| r.len()).unwrap_or(0);
    if have == opts.runs {
        return Ok(0.0);
    }
    if have != 0 {
        return Err(Error::Invalid(format!(
            "{} holds {have} runs, not {}: give an empty or new --root",
            opts.root.display(),
            opts.runs
        )));
    }
    let start = Instant::now();
    let per_call = 4;
    let calls = opts.images.div_ceil(per_call);
    for r in 0..opts.runs {
        let images = (0..calls * per_call)
            .map(|i| synthetic_image((r * 100_003 + i) as u64, opts.size))
            .collect();
        let mut p = SyntheticPipeline::new(images, per_call);
        let run = Run::create(
            Init::project("bench-compare")
                .name(format!("run-{r:03}"))
                .root(&opts.root),
        )?;
        for c in 0..calls as u64 {
            run.record(&mut p, &c)
                .map_err(|e| Error::pipeline("synthetic", e))?;
        }
        run.finish()?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Records (once) and compares, uncached then cached, beside the baseline.
pub fn run(opts: &CompareBench) -> Result<CompareFigures> {
    let setup_s = setup(opts)?;
    let out = opts.root.with_extension("compare");
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| Error::io(&out, "clear the page folder", e))?;
    }
    let runs = find_runs(&opts.root)?;
    let copts = CompareOptions::default();
    let start = Instant::now();
    let first = compare(std::slice::from_ref(&opts.root), &out, &copts)?;
    let uncached_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let again = compare(std::slice::from_ref(&opts.root), &out, &copts)?;
    let cached_s = start.elapsed().as_secs_f64();
    if again.thumbs_made + again.diffs_made != 0 {
        return Err(Error::Invalid(
            "the second compare was not served from its cache".into(),
        ));
    }
    // Baseline: every image file of every run, decoded once on all cores.
    let mut files = Vec::new();
    for r in &runs {
        let run = RunDir::open(r)?;
        for m in run.view().media {
            files.push(crate::read::run_file(&run.path, &m.path)?);
        }
    }
    let start = Instant::now();
    let decoded = par_map(&files, |f| crate::report::thumbs::decode(f).is_ok());
    let decode_all_s = start.elapsed().as_secs_f64();
    if decoded.iter().any(|ok| !ok) {
        return Err(Error::Invalid(
            "an image of the benchmark runs did not decode".into(),
        ));
    }
    Ok(CompareFigures {
        runs: first.runs,
        images: first.images,
        size: opts.size,
        grid: format!("{}×{}", first.rows, first.cols),
        setup_s,
        uncached_s,
        cached_s,
        decode_all_s,
        uncached_over_decode: uncached_s / decode_all_s.max(1e-9),
        thumbs_made: first.thumbs_made,
        diffs_made: first.diffs_made,
        page_bytes: std::fs::metadata(&first.index)
            .map(|m| m.len())
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_bench_compares_every_image_and_reuses_its_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = CompareBench {
            root: tmp.path().join("runs"),
            runs: 3,
            images: 8,
            size: 160,
        };
        let f = run(&opts).unwrap();
        assert_eq!((f.runs, f.images, f.grid.as_str()), (3, 24, "8×3"));
        assert_eq!((f.thumbs_made, f.diffs_made), (24, 16));
        let again = run(&opts).unwrap();
        assert_eq!(again.setup_s, 0.0, "the runs are reused");
        assert_eq!(again.thumbs_made, 24, "a fresh page folder each time");
    }
}
