//! `difflog bench record`: the recorder's throughput measured against the
//! limit it cannot beat — PNG-encoding the same images on all cores — in the
//! same process, so a noisy machine shows in both figures alike.
//!
//! The calls go through the public API (a [`Pipeline`] whose "generation"
//! hands over a pre-made image), so the figure is what a user's pipeline pays.

pub mod compare;
pub mod png;
pub mod provenance;
pub mod scale;
pub mod sync;
pub mod video;

use crate::error::Result;
use crate::event::Event;
use crate::format::MEDIA_DIR;
use crate::pipeline::{CallContext, CallSpec, ImageRow, Pipeline, PipelineError, PipelineInfo};
use crate::read::{dir_size, RunDir};
use crate::run::durable::SyncMode;
use crate::run::media::{encode_png_using, PngEncoding};
use crate::run::{Init, Run};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Map};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Settings of `bench record`.
#[derive(Debug, Clone)]
pub struct RecordBench {
    /// Number of calls.
    pub calls: usize,
    /// Image width and height in pixels.
    pub size: u32,
    /// Images per call.
    pub images_per_call: usize,
    /// Root directory the run is created in.
    pub root: PathBuf,
    /// Writer queue capacity (raw images).
    pub queue: usize,
    /// Skip the baselines (for load generation, e.g. the crash tests).
    pub no_baseline: bool,
    /// Sleep this long between calls (load generation for live-run tests).
    pub pace_ms: u64,
    /// `grain` (gradients with strong noise, the default) or `natural`
    /// (see [`natural_image`]).
    pub images: String,
    /// The PNG encoding recorded with; `None`: `DIFFLOG_PNG`'s.
    pub png: Option<PngEncoding>,
    /// How stored media are made durable; `None`: `DIFFLOG_SYNC`'s.
    pub sync: Option<SyncMode>,
    /// A provenance configuration to mark the images with; `None`:
    /// `DIFFLOG_PROVENANCE`'s.
    pub provenance: Option<PathBuf>,
}

impl RecordBench {
    /// The benchmark's settings with their defaults, `calls` calls of one
    /// `size`² image recorded under `root`.
    pub fn new(calls: usize, size: u32, root: PathBuf) -> RecordBench {
        RecordBench {
            calls,
            size,
            images_per_call: 1,
            root,
            queue: crate::run::DEFAULT_QUEUE_CAPACITY,
            no_baseline: false,
            pace_ms: 0,
            images: "grain".into(),
            png: None,
            sync: None,
            provenance: None,
        }
    }

    /// The encoding and the sync mode to record with: the settings', else
    /// the environment's.
    fn recording(&self) -> Result<(PngEncoding, SyncMode)> {
        Ok((self.recording_png()?, SyncMode::given_or_env(self.sync)?))
    }

    /// The encoding to record with: the settings', else `DIFFLOG_PNG`'s.
    fn recording_png(&self) -> Result<PngEncoding> {
        match self.png {
            Some(e) => Ok(e),
            None => PngEncoding::from_env(),
        }
    }
}

/// Figures measured by `bench record`.
#[derive(Debug, Clone, Serialize)]
pub struct RecordFigures {
    /// Images recorded per second, first call to `finish()` returned.
    pub images_per_s: f64,
    /// Milliseconds per call, same span.
    pub ms_per_call: f64,
    /// Median time a call was blocked by recording, over calls that found room in the queue.
    pub blocked_p50_ms: f64,
    /// 99th percentile of the same.
    pub blocked_p99_ms: f64,
    /// Calls that had to wait for room in the queue (back-pressure).
    pub backpressure_calls: usize,
    /// Longest wait of those, milliseconds.
    pub backpressure_max_ms: f64,
    /// Run directory bytes divided by the bytes of the PNG files alone.
    pub disk_over_png: f64,
    /// Media files per recorded image.
    pub files_per_image: f64,
    /// All files in the run directory (media, `run.json`, `events.log`).
    pub total_files: usize,
    /// Total recording time divided by the encode-only baseline.
    pub ratio_to_encode_only: f64,
    /// Recording time divided by the encode-and-write baseline.
    pub ratio_to_encode_and_write: f64,
    /// Seconds to PNG-encode the same images on all cores and write each to a
    /// plain file (no hashing, fsync or log): the floor set by this disk.
    pub encode_write_s: f64,
    /// Seconds for the recording, first call to durable finish.
    pub record_s: f64,
    /// CPU seconds the process used over the same span (every thread, user
    /// and system; NaN where unknown): steadier than `record_s` where other
    /// work shares the machine.
    pub record_cpu_s: f64,
    /// Seconds for the baseline: PNG-encode the same images on all cores.
    pub encode_only_s: f64,
    /// Threads used by the baseline and by the recorder's encoder pool.
    pub threads: usize,
    /// The PNG encoding recorded with.
    pub png: PngEncoding,
    /// How the media were made durable.
    pub sync: SyncMode,
    /// Bytes of the distinct PNG files recorded.
    pub png_bytes: u64,
    /// Images recorded.
    pub images: usize,
    /// The run directory written.
    pub run_dir: PathBuf,
}

/// The median of `v` (the upper of the two middle values of an even count;
/// NaN when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// CPU seconds this process has used, user and system, all its threads
/// (NaN where unknown).
fn cpu_s() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: getrusage fills the struct it is given, which is plain
        // integers (all zero is a valid value).
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
            return s(usage.ru_utime) + s(usage.ru_stime);
        }
    }
    f64::NAN
}

/// A deterministic test image: smooth gradients plus seeded noise.
pub fn synthetic_image(index: u64, size: u32) -> RgbImage {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(index);
    let s = size.max(1) as f32;
    let phase = (index % 251) as f32;
    let mut img = RgbImage::new(size, size);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32 / s, y as f32 / s);
        let n: i16 = rng.random_range(-12..=12);
        let c = |v: f32| (v * 255.0 + n as f32).clamp(0.0, 255.0) as u8;
        *px = Rgb([c(fx), c(fy), c(0.5 + 0.5 * ((fx + fy) * 6.0 + phase).sin())]);
    }
    img
}

/// A deterministic natural-looking image: structure at every scale (value
/// noise whose amplitude halves with each octave, as in photographs), the
/// channels correlated as colours are, a few shaded shapes with hard
/// edges, and a fine grain of ±1.5 levels (what a diffusion model's output
/// has, unlike the strong noise of [`synthetic_image`]).
pub fn natural_image(index: u64, size: u32) -> RgbImage {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(index);
    let n = size.max(1) as usize;
    let mut field = vec![[0f32; 3]; n * n];
    let (mut cell, mut amp) = (n as f32 / 2.0, 0.5f32);
    while cell >= 1.0 {
        let g = (n as f32 / cell).ceil() as usize + 2;
        let grid: Vec<[f32; 3]> = (0..g * g)
            .map(|_| std::array::from_fn(|_| rng.random::<f32>() - 0.5))
            .collect();
        for y in 0..n {
            for x in 0..n {
                let (fx, fy) = (x as f32 / cell, y as f32 / cell);
                let (ix, iy) = (fx as usize, fy as usize);
                let (tx, ty) = (fx - ix as f32, fy - iy as f32);
                let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
                for c in 0..3 {
                    let top = grid[iy * g + ix][c] * (1.0 - sx) + grid[iy * g + ix + 1][c] * sx;
                    let bottom = grid[(iy + 1) * g + ix][c] * (1.0 - sx)
                        + grid[(iy + 1) * g + ix + 1][c] * sx;
                    field[y * n + x][c] += amp * (top * (1.0 - sy) + bottom * sy);
                }
            }
        }
        cell /= 2.0;
        amp *= 0.5;
    }
    let base: [f32; 3] = std::array::from_fn(|_| rng.random());
    let mix: [[f32; 3]; 3] =
        std::array::from_fn(|_| std::array::from_fn(|_| rng.random::<f32>() * 0.8 + 0.2));
    let shapes: Vec<(f32, f32, f32, [f32; 3])> = (0..4)
        .map(|_| {
            (
                rng.random::<f32>() * n as f32,
                rng.random::<f32>() * n as f32,
                (0.08 + rng.random::<f32>() * 0.2) * n as f32,
                std::array::from_fn(|_| rng.random()),
            )
        })
        .collect();
    let mut img = RgbImage::new(size, size);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let v = field[y as usize * n + x as usize];
        let mut c: [f32; 3] = std::array::from_fn(|k| {
            base[k] + mix[k][0] * v[0] + mix[k][1] * v[1] + mix[k][2] * v[2]
        });
        for (cx, cy, r, colour) in &shapes {
            let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
            if d < *r {
                let shade = 1.0 - 0.4 * d / r;
                c = std::array::from_fn(|k| colour[k] * shade + 0.3 * v[k]);
            }
        }
        let grain = (rng.random::<f32>() - 0.5) * 3.0;
        *px = Rgb(c.map(|v| (v * 255.0 + grain).clamp(0.0, 255.0) as u8));
    }
    img
}

/// A pipeline that "generates" pre-made images, for benchmarks and tests.
pub struct SyntheticPipeline {
    images: Vec<RgbImage>,
    per_call: usize,
    size: u32,
}

impl SyntheticPipeline {
    /// A pipeline holding `images`, handing out `per_call` of them per call.
    pub fn new(images: Vec<RgbImage>, per_call: usize) -> SyntheticPipeline {
        let size = images.first().map_or(0, |i| i.width());
        SyntheticPipeline {
            images,
            per_call: per_call.max(1),
            size,
        }
    }
}

impl Pipeline for SyntheticPipeline {
    type Request = u64;
    type Output = usize;

    fn describe(&self) -> PipelineInfo {
        PipelineInfo {
            class: "SyntheticPipeline".into(),
            model_id: "synthetic".into(),
            revision: None,
            weights_digest: None,
            dtype: "u8".into(),
            device: "cpu".into(),
            components: Map::new(),
            scheduler: json!({"name": "none"}),
        }
    }

    fn prepare(&self, call: &u64) -> Result<CallSpec, PipelineError> {
        let seeds: Vec<u64> = (0..self.per_call as u64).map(|i| call * 1000 + i).collect();
        let params = json!({
            "prompt": format!("synthetic image {call}"),
            "negative_prompt": null,
            "width": self.size,
            "height": self.size,
            "num_images_per_prompt": self.per_call,
        });
        Ok(CallSpec {
            params: params.as_object().cloned().unwrap_or_default(),
            seeds,
            ..CallSpec::default()
        })
    }

    fn run(&mut self, call: &u64, ctx: &mut CallContext<'_>) -> Result<usize, PipelineError> {
        ctx.phase("denoising");
        let mut n = 0;
        for i in 0..self.per_call {
            let Some(image) = self.images.pop() else {
                return Err("synthetic pipeline ran out of images".into());
            };
            ctx.image(ImageRow {
                image,
                prompt: format!("synthetic image {call}"),
                negative_prompt: None,
                prompt_2: None,
                negative_prompt_2: None,
                prompt_3: None,
                negative_prompt_3: None,
                input_image: None,
                mask_image: None,
                seed: call * 1000 + i as u64,
            });
            n += 1;
        }
        Ok(n)
    }
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// What encodes one image for a baseline.
type Encode<'a> = &'a (dyn Fn(&RgbImage) -> Result<Vec<u8>> + Sync);

/// Baseline: PNG-encode `images` with `encode` on `threads` threads, and if
/// `write_to` is given also write each PNG to a plain file there (no
/// hashing, no fsync, no log); returns seconds and the PNGs' bytes.
fn baseline(
    images: &[RgbImage],
    threads: usize,
    write_to: Option<&Path>,
    encode: Encode<'_>,
) -> Result<(f64, u64)> {
    let start = Instant::now();
    let chunk = images.len().div_ceil(threads.max(1)).max(1);
    let encode_one = |(n, img): (usize, &RgbImage)| -> Result<u64> {
        let png = encode(img)?;
        if let Some(dir) = write_to {
            let path = dir.join(format!("{n}.png"));
            std::fs::write(&path, &png)
                .map_err(|e| crate::Error::io(&path, "write baseline file", e))?;
        }
        Ok(png.len() as u64)
    };
    let results: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                s.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, img)| encode_one((c * chunk + i, img)))
                        .sum()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(crate::Error::encode(
                        "a synthetic image",
                        "the encoder thread panicked",
                    ))
                })
            })
            .collect()
    });
    let mut bytes = 0;
    for r in results {
        bytes += r?;
    }
    Ok((start.elapsed().as_secs_f64(), bytes))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// What makes the images `--images NAME` names: `grain`
/// ([`synthetic_image`]) or `natural` ([`natural_image`]).
pub fn image_maker(name: &str) -> Result<fn(u64, u32) -> RgbImage> {
    match name {
        "grain" => Ok(synthetic_image),
        "natural" => Ok(natural_image),
        other => Err(crate::Error::Invalid(format!(
            "--images {}: expected grain or natural",
            crate::terminal::escape(other)
        ))),
    }
}

/// The images `opts` asks for (made on all cores).
pub(crate) fn bench_images(opts: &RecordBench) -> Result<Vec<RgbImage>> {
    if opts.calls == 0 || opts.size == 0 {
        return Err(crate::Error::Invalid(
            "--calls and --size must be at least 1".into(),
        ));
    }
    let make = image_maker(&opts.images)?;
    let n = (opts.calls * opts.images_per_call.max(1)) as u64;
    let threads = threads() as u64;
    let size = opts.size;
    Ok(std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads as usize)
                        .map(|i| (i, make(i, size)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(u64, RgbImage)> = parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, img)| img).collect()
    }))
}

/// Runs `bench record` and returns its figures.
pub fn record(opts: &RecordBench) -> Result<RecordFigures> {
    record_images(opts, bench_images(opts)?, opts.recording()?)
}

/// Records `images` as `bench record` does, with PNGs encoded as
/// `encoding` and media made durable as `sync` says.
pub(crate) fn record_images(
    opts: &RecordBench,
    images: Vec<RgbImage>,
    (encoding, sync): (PngEncoding, SyncMode),
) -> Result<RecordFigures> {
    let n = images.len();
    let threads = threads();
    let (encode_only_s, encode_write_s) = if opts.no_baseline {
        (f64::NAN, f64::NAN)
    } else {
        // The recorder's encoding, so that the ratios compare like with like.
        let encode = |img: &RgbImage| encode_png_using(img, &[], encoding);
        let encode_only_s = baseline(&images, threads, None, &encode)?.0;
        std::fs::create_dir_all(&opts.root)
            .map_err(|e| crate::Error::io(&opts.root, "create root", e))?;
        let scratch = tempfile::Builder::new()
            .prefix(".bench-baseline-")
            .tempdir_in(&opts.root)
            .map_err(|e| crate::Error::io(&opts.root, "create baseline directory", e))?;
        (
            encode_only_s,
            baseline(&images, threads, Some(scratch.path()), &encode)?.0,
        )
    };

    let mut pipeline = SyntheticPipeline::new(images, opts.images_per_call);
    let mut init = Init::project("difflog-bench")
        .name(format!("bench record {}x{}px", opts.calls, opts.size))
        .root(&opts.root)
        .queue_capacity(opts.queue)
        .png(encoding)
        .sync(sync);
    if let Some(p) = &opts.provenance {
        init = init.provenance(p);
    }
    let run = Run::create(init)?;
    let run_dir = run
        .dir()
        .map(PathBuf::from)
        .ok_or_else(|| crate::Error::Invalid("recording is disabled (DIFFLOG_MODE)".into()))?;
    let mut room = Vec::with_capacity(opts.calls);
    let mut waited = Vec::new();
    let (start, cpu_start) = (Instant::now(), cpu_s());
    for call in 0..opts.calls as u64 {
        if opts.pace_ms > 0 && call > 0 {
            run.flush()?;
            std::thread::sleep(Duration::from_millis(opts.pace_ms));
        }
        let waits_before = run.backpressure_waits();
        let t = Instant::now();
        run.record(&mut pipeline, &call)
            .map_err(|e| crate::Error::pipeline("synthetic", e))?;
        let d = t.elapsed();
        if run.backpressure_waits() == waits_before {
            room.push(d);
        } else {
            waited.push(d);
        }
    }
    run.finish()?;
    let record_s = start.elapsed().as_secs_f64();
    let record_cpu_s = cpu_s() - cpu_start;
    room.sort();

    let read = RunDir::open(&run_dir)?;
    let mut digests = HashSet::new();
    let mut png_bytes = 0u64;
    for rec in read.records() {
        if let Event::Media(m) = &rec.event {
            if digests.insert(m.digest.clone()) {
                png_bytes += m.bytes;
            }
        }
    }
    let media_files = count_files(&run_dir.join(MEDIA_DIR));
    let total_files = count_files(&run_dir);
    Ok(RecordFigures {
        images_per_s: n as f64 / record_s,
        ms_per_call: record_s * 1000.0 / opts.calls as f64,
        blocked_p50_ms: percentile(&room, 0.50),
        blocked_p99_ms: percentile(&room, 0.99),
        backpressure_calls: waited.len(),
        backpressure_max_ms: waited
            .iter()
            .max()
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        disk_over_png: dir_size(&run_dir) as f64 / png_bytes.max(1) as f64,
        files_per_image: media_files as f64 / n as f64,
        total_files,
        ratio_to_encode_only: record_s / encode_only_s,
        ratio_to_encode_and_write: record_s / encode_write_s,
        encode_write_s,
        record_s,
        record_cpu_s,
        encode_only_s,
        threads,
        png: encoding,
        sync,
        png_bytes,
        images: n,
        run_dir,
    })
}

/// Figures of `bench record --compare-png`: the same images recorded with
/// each PNG encoding, side by side (issue 38).
#[derive(Debug, Clone, Serialize)]
pub struct PngRecordFigures {
    /// The recording with each encoding (the faster of two rounds).
    pub runs: Vec<RecordFigures>,
    /// PIL's default PNG bytes for the same pixels, when measured.
    pub pil_bytes: Option<u64>,
    /// Compact PNG bytes / PIL's (the goal: ≤ 1).
    pub compact_over_pil: Option<f64>,
    /// Images a second with compact / with fast (the goal: ≥ 0.9).
    pub compact_throughput_over_fast: f64,
    /// The other compressors on the same images, encoded and written on all
    /// cores as the encode + write baseline is (`--candidates`).
    pub candidates: Vec<RecordCandidate>,
}

/// A candidate compressor in `bench record --compare-png --candidates`.
#[derive(Debug, Clone, Serialize)]
pub struct RecordCandidate {
    /// How the rows' filters were chosen.
    pub filter: String,
    /// Which compressor, at which level.
    pub compressor: String,
    /// Bytes of its PNGs.
    pub bytes: u64,
    /// Bytes / PIL's, when measured.
    pub bytes_over_pil: Option<f64>,
    /// Seconds to encode the images and write each to a plain file, all
    /// cores.
    pub encode_write_s: f64,
    /// Images a second of that.
    pub images_per_s: f64,
    /// The same with the fast encoding (its run's baseline) / this: how
    /// much slower than the fast encoding's floor.
    pub time_over_fast: f64,
}

/// Records the same images with the fast and the compact PNG encodings,
/// twice each in turns (a noisy machine hits both alike), keeps each
/// encoding's faster round, and measures PIL's bytes for the same pixels
/// with `python` when given; with `candidates`, the other compressors'
/// encode + plain write baselines on the same images.
pub fn record_png_compare(
    opts: &RecordBench,
    python: Option<&Path>,
    candidates: bool,
) -> Result<PngRecordFigures> {
    let images = bench_images(opts)?;
    let sync = opts.recording()?.1;
    let mut best: Vec<Option<RecordFigures>> = vec![None; PngEncoding::ALL.len()];
    for _ in 0..2 {
        for (k, encoding) in PngEncoding::ALL.iter().enumerate() {
            let f = record_images(opts, images.clone(), (*encoding, sync))?;
            // The run is measured; its directory is not needed again.
            let _ = std::fs::remove_dir_all(&f.run_dir);
            if best[k]
                .as_ref()
                .is_none_or(|b| f.images_per_s > b.images_per_s)
            {
                best[k] = Some(f);
            }
        }
    }
    let runs: Vec<RecordFigures> = best.into_iter().flatten().collect();
    let of = |e: PngEncoding| runs.iter().find(|f| f.png == e);
    let (Some(fast), Some(compact)) = (of(PngEncoding::Fast), of(PngEncoding::Compact)) else {
        return Err(crate::Error::Invalid("no recording was measured".into()));
    };
    let pil_bytes = match python {
        Some(py) => Some(png::pil_bytes(py, &images)?),
        None => None,
    };
    let mut measured = Vec::new();
    if candidates {
        let scratch = tempfile::Builder::new()
            .prefix(".bench-candidates-")
            .tempdir_in(&opts.root)
            .map_err(|e| crate::Error::io(&opts.root, "create baseline directory", e))?;
        for (filter_name, filter, c) in png::candidate_list() {
            let encode = |img: &RgbImage| png::candidate_png(img, filter, c);
            let (s, bytes) = baseline(&images, threads(), Some(scratch.path()), &encode)?;
            measured.push(RecordCandidate {
                filter: filter_name.into(),
                compressor: c.name(),
                bytes,
                bytes_over_pil: pil_bytes.map(|p| bytes as f64 / p.max(1) as f64),
                encode_write_s: s,
                images_per_s: images.len() as f64 / s,
                time_over_fast: s / fast.encode_write_s,
            });
        }
    }
    Ok(PngRecordFigures {
        compact_over_pil: pil_bytes.map(|p| compact.png_bytes as f64 / p.max(1) as f64),
        compact_throughput_over_fast: compact.images_per_s / fast.images_per_s.max(1e-9),
        pil_bytes,
        runs,
        candidates: measured,
    })
}

/// The text `bench record --compare-png` prints.
pub fn render_png_compare(f: &PngRecordFigures, calls: usize, size: u32) -> String {
    let mut s = String::new();
    for r in &f.runs {
        s.push_str(&format!("PNG encoding: {:?}\n", r.png).to_lowercase());
        // Each run was removed once measured: no path to show.
        for line in render(r, calls, size).lines() {
            if !line.starts_with("  run: ") {
                s.push_str(line);
                s.push('\n');
            }
        }
        s.push_str(&format!("  PNG bytes {:>57}\n\n", r.png_bytes));
    }
    s.push_str(&format!(
        "compact / fast images a second {:.3} (goal ≥ 0.9)\n",
        f.compact_throughput_over_fast
    ));
    match (f.pil_bytes, f.compact_over_pil) {
        (Some(p), Some(r)) => s.push_str(&format!(
            "PIL's default bytes {p}; compact / PIL {r:.3} (goal ≤ 1)\n"
        )),
        _ => s.push_str("PIL's default bytes: not measured (--python)\n"),
    }
    let rows: Vec<png::CandidateRow> = f
        .candidates
        .iter()
        .map(|c| png::CandidateRow {
            filter: &c.filter,
            compressor: &c.compressor,
            bytes: c.bytes,
            over_pil: c.bytes_over_pil,
            speed: format!("{:.1}", c.images_per_s),
            over_fast: c.time_over_fast,
        })
        .collect();
    if !rows.is_empty() {
        s.push_str(&png::candidate_table(
            "candidates, encoded and written on all cores (the encode + plain write baseline)",
            "images/s",
            &rows,
        ));
    }
    s
}

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// Renders the figures as the text table `bench record` prints.
pub fn render(f: &RecordFigures, calls: usize, size: u32) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "difflog bench record: {calls} calls, {} images of {size}x{size} px, {} threads\n",
        f.images, f.threads
    ));
    let rows = [
        (
            "images per second",
            format!("{:.1}", f.images_per_s),
            "≥ 300",
        ),
        ("ms per call", format!("{:.2}", f.ms_per_call), ""),
        (
            "blocked p50 (queue had room), ms",
            format!("{:.3}", f.blocked_p50_ms),
            "",
        ),
        (
            "blocked p99 (queue had room), ms",
            format!("{:.3}", f.blocked_p99_ms),
            "≤ 1",
        ),
        (
            "calls that waited for room (back-pressure)",
            format!(
                "{} (max {:.1} ms)",
                f.backpressure_calls, f.backpressure_max_ms
            ),
            "",
        ),
        (
            "disk bytes / PNG bytes",
            format!("{:.4}", f.disk_over_png),
            "≤ 1.05",
        ),
        (
            "media files per image",
            format!(
                "{:.3} ({} files in the run)",
                f.files_per_image, f.total_files
            ),
            "≤ 1",
        ),
        (
            "PNG encoding, media synced",
            format!("{:?}, {:?}", f.png, f.sync).to_lowercase(),
            "",
        ),
        ("recording time, s", format!("{:.3}", f.record_s), ""),
        (
            "encode-only baseline, all cores, s",
            format!("{:.3}", f.encode_only_s),
            "",
        ),
        (
            "recording / encode-only",
            format!("{:.3}", f.ratio_to_encode_only),
            "≤ 1.4",
        ),
        (
            "encode + plain write baseline, all cores, s",
            format!("{:.3}", f.encode_write_s),
            "",
        ),
        (
            "recording / (encode + plain write)",
            format!("{:.3}", f.ratio_to_encode_and_write),
            "",
        ),
    ];
    for (name, value, target) in rows {
        s.push_str(&format!("  {name:<44} {value:>24}  {target}\n"));
    }
    s.push_str(&format!("  run: {}\n", f.run_dir.display()));
    s
}

/// Settings of `bench generate`.
#[derive(Debug, Clone)]
pub struct GenerateBench {
    /// Model (`tiny` by default).
    pub model: String,
    /// Calls per mode.
    pub calls: usize,
    /// Inference steps per call.
    pub steps: usize,
    /// Image size in pixels.
    pub size: usize,
    /// Root directory for the recorded run.
    pub root: PathBuf,
    /// Device: `cpu` or `cuda:N`.
    pub device: String,
    /// Images per call (`num_images_per_prompt`).
    pub batch: usize,
}

/// Figures measured by `bench generate`.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateFigures {
    /// Median ms per call with recording on.
    pub recorded_ms_median: f64,
    /// Median ms per call with recording disabled.
    pub disabled_ms_median: f64,
    /// Total time with recording on divided by total time with it disabled.
    pub ratio_recorded_to_disabled: f64,
    /// Calls per mode.
    pub calls: usize,
    /// Images per call.
    pub images_per_call: usize,
    /// The device generated on.
    pub device: String,
    /// Images per second with recording on (total over the calls).
    pub recorded_images_per_s: f64,
    /// Images per second with recording disabled.
    pub disabled_images_per_s: f64,
    /// The run directory written.
    pub run_dir: PathBuf,
}

/// The text `difflog bench generate` prints.
pub fn render_generate(f: &GenerateFigures) -> String {
    format!(
        "difflog bench generate: {} calls per mode, {} image(s) per call on {}\n  recorded, median ms per call   {:>10.2}\n  disabled, median ms per call   {:>10.2}\n  recorded, images/s             {:>10.2}\n  disabled, images/s             {:>10.2}\n  recorded / disabled (total)    {:>10.3}  target ≤ 1.05\n  run: {}\n",
        f.calls,
        f.images_per_call,
        f.device,
        f.recorded_ms_median,
        f.disabled_ms_median,
        f.recorded_images_per_s,
        f.disabled_images_per_s,
        f.ratio_recorded_to_disabled,
        f.run_dir.display()
    )
}

/// Runs the same generation calls with recording on and off, interleaved,
/// and compares their times.
pub fn generate_overhead(opts: &GenerateBench) -> Result<GenerateFigures> {
    use crate::pipelines::{Generator, InitImage, Request};
    let invalid = |e: PipelineError| crate::Error::pipeline(&opts.model, e);
    let mut p = Generator::load(&opts.model, &opts.device)?;
    let recorded = Run::create(
        Init::project("difflog-bench")
            .name("bench generate")
            .root(&opts.root),
    )?;
    let disabled = Run::create(Init::project("difflog-bench").mode(crate::Mode::Disabled))?;
    let run_dir = recorded
        .dir()
        .map(PathBuf::from)
        .ok_or_else(|| crate::Error::Invalid("recording is disabled (DIFFLOG_MODE)".into()))?;
    // An inpainting model gets an image and a mask (its left half repainted).
    let side = u32::try_from(opts.size).unwrap_or(64);
    let is_inpaint = matches!(&p, Generator::Sd(sd) if sd.config().inpaint);
    let inpaint = is_inpaint.then(|| {
        let mask = RgbImage::from_fn(side, side, |x, _| {
            Rgb(if x < side / 2 { [255; 3] } else { [0; 3] })
        });
        (
            InitImage::Image(std::sync::Arc::new(synthetic_image(1, side))),
            std::sync::Arc::new(mask),
        )
    });
    let request = |seed: u64| Request {
        prompt: vec!["a benchmark of a lighthouse at dusk".into()],
        steps: Some(opts.steps),
        width: Some(opts.size),
        height: Some(opts.size),
        init: inpaint.as_ref().map(|i| i.0.clone()),
        mask: inpaint.as_ref().map(|i| i.1.clone()),
        seed,
        num_images_per_prompt: Some(opts.batch.max(1)),
        ..Request::default()
    };
    // Warm-up outside the figures.
    disabled.record(&mut p, &request(0)).map_err(invalid)?;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for i in 0..opts.calls as u64 {
        // Alternate which goes first, so drift hits both alike.
        for first in [i % 2 == 0, i % 2 != 0] {
            let run = if first { &recorded } else { &disabled };
            let t = Instant::now();
            run.record(&mut p, &request(i + 1)).map_err(invalid)?;
            if first { &mut on } else { &mut off }.push(t.elapsed());
        }
    }
    let t = Instant::now();
    recorded.finish()?;
    // The recorded side pays for its durable finish too.
    let finish = t.elapsed();
    on.sort();
    off.sort();
    let total = |v: &[Duration]| v.iter().map(|d| d.as_secs_f64()).sum::<f64>();
    Ok(GenerateFigures {
        recorded_ms_median: percentile(&on, 0.5),
        disabled_ms_median: percentile(&off, 0.5),
        ratio_recorded_to_disabled: (total(&on) + finish.as_secs_f64()) / total(&off),
        calls: opts.calls,
        images_per_call: opts.batch.max(1),
        device: opts.device.clone(),
        recorded_images_per_s: (opts.calls * opts.batch.max(1)) as f64
            / (total(&on) + finish.as_secs_f64()),
        disabled_images_per_s: (opts.calls * opts.batch.max(1)) as f64 / total(&off),
        run_dir,
    })
}
