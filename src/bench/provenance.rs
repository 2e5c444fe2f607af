//! `bench record --compare-provenance FILE`: the same images recorded
//! without marks and with the provenance configuration FILE (a signed C2PA
//! manifest, a watermark), in turns, so that a noisy machine hits both
//! alike (issue 36's goal: recording with provenance ≤ 1.2× without, at
//! 512²; the marks are made on the encoder threads, not the caller's).

use super::{bench_images, median, record_images, RecordBench, RecordFigures};
use crate::error::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// Figures of `bench record --compare-provenance`.
#[derive(Debug, Clone, Serialize)]
pub struct ProvenanceCompareFigures {
    /// Rounds, each recording once without and once with marks.
    pub rounds: usize,
    /// Seconds recording took without marks, each round.
    pub plain_s: Vec<f64>,
    /// Seconds recording took with marks, each round.
    pub marked_s: Vec<f64>,
    /// Median with / median without (the goal: ≤ 1.2).
    pub ratio: f64,
    /// CPU seconds recording took without marks, each round.
    pub plain_cpu_s: Vec<f64>,
    /// CPU seconds recording took with marks, each round.
    pub marked_cpu_s: Vec<f64>,
    /// The same ratio of the CPU time used (median with / median without):
    /// what the marks cost, less shaken by other work on the machine.
    pub cpu_ratio: f64,
    /// Median time a call was held by recording without marks, ms.
    pub plain_blocked_p50_ms: f64,
    /// The same with marks (the marks are made off the caller's thread).
    pub marked_blocked_p50_ms: f64,
    /// What the first marked image's record says it carries.
    pub marks: crate::event::Marks,
    /// The median rounds' full figures: without, with.
    pub median_runs: (RecordFigures, RecordFigures),
    /// What each step costs on one thread (less noisy than the ratio).
    pub steps: StepFigures,
}

/// What encoding an image and each of its marks cost on one thread:
/// milliseconds an image, the best of five rounds over the same images, each
/// step of an image timed in turn with the others.
#[derive(Debug, Clone, Serialize)]
pub struct StepFigures {
    /// The images timed.
    pub images: usize,
    /// Encoding the PNG with the encoding recorded with (no text chunks).
    pub encode_ms: f64,
    /// Watermarking the pixels, when configured.
    pub watermark_ms: Option<f64>,
    /// Encoding the watermarked pixels, when a watermark is configured
    /// (the mark makes the pixels less predictable: the encoder pays).
    pub encode_marked_ms: Option<f64>,
    /// Encoding with the watermark as the recorder does, when one is
    /// configured: with the compact encoding, each strip of rows marked
    /// just before it is filtered (the marked image never whole in memory).
    pub encode_watermarked_ms: Option<f64>,
    /// Bytes of the watermarked pixels' PNGs / the plain ones', when a
    /// watermark is configured.
    pub marked_bytes_ratio: Option<f64>,
    /// Signing the encoded file in place as the recorder does (its copy
    /// made before the timing), when configured, less the SHA-256 of the
    /// file that recording without marks computes too (signing finds the
    /// signed file's in the same pass as its hash binding).
    pub sign_ms: Option<f64>,
}

/// Times [`StepFigures`] over the first 24 of `images`: five rounds, in
/// each every step of an image timed in turn before the next image, so
/// that a machine whose speed drifts (this one's does, by a third) slows
/// every step alike; each step's best round is kept.
fn steps(
    images: &[image::RgbImage],
    config: &Path,
    png: crate::run::media::PngEncoding,
) -> Result<StepFigures> {
    use crate::provenance::watermark;
    use crate::run::media::encode_png_using;
    use std::time::Instant;
    let p = crate::provenance::Provenance::load(config)?;
    let images = &images[..images.len().min(24)];
    let invalid = |e: String| Error::Invalid(e);
    let embed = |img: &image::RgbImage, m: &watermark::Message| -> Result<image::RgbImage> {
        let px = watermark::embed(img.as_raw(), img.width(), img.height(), m).map_err(invalid)?;
        image::RgbImage::from_raw(img.width(), img.height(), px)
            .ok_or_else(|| Error::Invalid("the watermarked pixels lost their size".into()))
    };
    let plain = images
        .iter()
        .map(|img| encode_png_using(img, &[], png))
        .collect::<Result<Vec<_>>>()?;
    let marked = match &p.watermark {
        Some(m) => images
            .iter()
            .map(|img| embed(img, m))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let marked_bytes_ratio = match marked.is_empty() {
        true => None,
        false => {
            let bytes = marked.iter().try_fold(0, |n, img| {
                Ok::<_, Error>(n + encode_png_using(img, &[], png)?.len())
            })?;
            let before: usize = plain.iter().map(Vec::len).sum();
            Some(bytes as f64 / before.max(1) as f64)
        }
    };
    let facts = crate::provenance::sign::Facts {
        model_id: "bench".into(),
        weights_digest: None,
        recipe_sha256: Some(crate::format::sha256_hex(b"")),
        run_id: "bench".into(),
        call: 1,
        row: 0,
        source_type: crate::recipe::TRAINED_ALGORITHMIC_MEDIA.into(),
    };
    // The steps: encode; watermark; encode the watermarked pixels; encode
    // with the watermark as recorded; sign; hash (what signing saves).
    const STEPS: usize = 6;
    let mut best = [f64::INFINITY; STEPS];
    for _ in 0..5 {
        let mut round = [0f64; STEPS];
        for (i, img) in images.iter().enumerate() {
            let mut time = |k: usize, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
                let t = Instant::now();
                f()?;
                round[k] += t.elapsed().as_secs_f64();
                Ok(())
            };
            time(0, &mut || encode_png_using(img, &[], png).map(drop))?;
            if let Some(m) = &p.watermark {
                time(1, &mut || embed(img, m).map(drop))?;
                time(2, &mut || encode_png_using(&marked[i], &[], png).map(drop))?;
                time(3, &mut || {
                    crate::run::marks::encode_watermarked(img, &[], png, m)?
                        .map(drop)
                        .map_err(invalid)
                })?;
            }
            if let Some(signing) = &p.signing {
                // Signed in place, as the recorder signs the encoder's
                // file (which has room to spare): the copy is not timed.
                let mut file = Vec::with_capacity(plain[i].len() + (64 << 10));
                file.extend_from_slice(&plain[i]);
                time(4, &mut || {
                    signing
                        .sign_png_in(&mut file, &facts, &[])
                        .map(drop)
                        .map_err(invalid)
                })?;
                time(5, &mut || {
                    std::hint::black_box(crate::format::sha256_hex(&plain[i]));
                    Ok(())
                })?;
            }
        }
        for (b, r) in best.iter_mut().zip(round) {
            *b = b.min(r * 1e3 / images.len().max(1) as f64);
        }
    }
    let watermarked = |k: usize| p.watermark.as_ref().map(|_| best[k]);
    Ok(StepFigures {
        images: images.len(),
        encode_ms: best[0],
        watermark_ms: watermarked(1),
        encode_marked_ms: watermarked(2),
        encode_watermarked_ms: watermarked(3),
        marked_bytes_ratio,
        // Signing finds the signed file's SHA-256 (its content address)
        // on its way; a file without marks is hashed by the recorder.
        sign_ms: p.signing.as_ref().map(|_| (best[4] - best[5]).max(0.0)),
    })
}

/// Records the same images `rounds` times without marks and with the
/// provenance configuration at `config`, in turns, removing each run once
/// measured (and read for its marks).
pub fn compare(
    opts: &RecordBench,
    config: &Path,
    rounds: usize,
) -> Result<ProvenanceCompareFigures> {
    if std::env::var_os("DIFFLOG_PROVENANCE").is_some_and(|v| !v.is_empty()) {
        return Err(Error::Invalid(
            "DIFFLOG_PROVENANCE is set, so nothing would be recorded without marks: unset it \
             (the configuration to compare is --compare-provenance's)"
                .into(),
        ));
    }
    let rounds = rounds.max(1);
    let images = bench_images(opts)?;
    let recording = opts.recording()?;
    let mut plain = Vec::new();
    let mut marked = Vec::new();
    let mut marks = None;
    for _ in 0..rounds {
        let without = RecordBench {
            provenance: None,
            ..opts.clone()
        };
        let f = record_images(&without, images.clone(), recording)?;
        let _ = std::fs::remove_dir_all(&f.run_dir);
        plain.push(f);
        let with = RecordBench {
            provenance: Some(config.to_path_buf()),
            ..opts.clone()
        };
        let f = record_images(&with, images.clone(), recording)?;
        if marks.is_none() {
            let view = crate::read::RunDir::open(&f.run_dir)?.view();
            marks = view.media.first().and_then(|m| m.provenance.clone());
        }
        let _ = std::fs::remove_dir_all(&f.run_dir);
        marked.push(f);
    }
    let marks = marks.ok_or_else(|| {
        Error::Invalid(format!(
            "{}: the images recorded with it carry no marks",
            config.display()
        ))
    })?;
    let (p, m) = (median_run(&plain), median_run(&marked));
    let plain_cpu_s: Vec<f64> = plain.iter().map(|f| f.record_cpu_s).collect();
    let marked_cpu_s: Vec<f64> = marked.iter().map(|f| f.record_cpu_s).collect();
    let steps = steps(&images, config, recording.0)?;
    Ok(ProvenanceCompareFigures {
        rounds,
        plain_s: plain.iter().map(|f| f.record_s).collect(),
        marked_s: marked.iter().map(|f| f.record_s).collect(),
        ratio: m.record_s / p.record_s.max(1e-9),
        cpu_ratio: median(&marked_cpu_s) / median(&plain_cpu_s).max(1e-9),
        plain_cpu_s,
        marked_cpu_s,
        plain_blocked_p50_ms: p.blocked_p50_ms,
        marked_blocked_p50_ms: m.blocked_p50_ms,
        marks,
        median_runs: (p, m),
        steps,
    })
}

/// The round whose recording time is the median.
fn median_run(runs: &[RecordFigures]) -> RecordFigures {
    let mut order: Vec<&RecordFigures> = runs.iter().collect();
    order.sort_by(|a, b| a.record_s.total_cmp(&b.record_s));
    order[order.len() / 2].clone()
}

/// The marks' steps of [`StepFigures`], each with its share of an encode.
fn step(s: &StepFigures) -> String {
    let mut out = String::new();
    for (name, ms) in [("watermark", s.watermark_ms), ("sign", s.sign_ms)] {
        if let Some(ms) = ms {
            out.push_str(&format!(
                ", {name} {ms:.2} ({:.2}× the encode)",
                ms / s.encode_ms.max(1e-9)
            ));
        }
    }
    if let (Some(ms), Some(bytes)) = (s.encode_marked_ms, s.marked_bytes_ratio) {
        out.push_str(&format!(
            "; encoding the watermarked pixels {ms:.2} ({:.2}× the encode, {bytes:.3}× the bytes)",
            ms / s.encode_ms.max(1e-9)
        ));
    }
    if let Some(ms) = s.encode_watermarked_ms {
        out.push_str(&format!(
            "; encoding with the watermark as recorded (each strip marked as it is filtered) \
             {ms:.2} ({:.2}× the encode)",
            ms / s.encode_ms.max(1e-9)
        ));
    }
    out
}

/// The text `bench record --compare-provenance` prints.
pub fn render(f: &ProvenanceCompareFigures, calls: usize, size: u32) -> String {
    let secs = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut what = Vec::new();
    if let Some(signer) = &f.marks.c2pa {
        what.push(format!("C2PA manifest signed by {signer}"));
    }
    if let Some(w) = &f.marks.watermark {
        what.push(format!("{} watermark of {} bits", w.method, w.bits.len()));
    }
    if let Some(why) = &f.marks.watermark_skipped {
        what.push(format!("no watermark ({why})"));
    }
    format!(
        "difflog bench record --compare-provenance: {calls} calls, {} images of {size}x{size} px, {} rounds in turns\n\
         marks: {}\n\
         \x20 without marks, s per round   {}\n\
         \x20 with marks, s per round      {}\n\
         \x20 caller held per call (p50)   {:.2} ms without, {:.2} ms with\n\
         \x20 CPU s per round without      {}\n\
         \x20 CPU s per round with         {}\n\
         with / without (medians) {:.3} in time, {:.3} in CPU time; goal ≤ 1.2\n\
         one thread, ms an image (best of 5 rounds over {}, steps in turn): encode {:.2}{}\n",
        f.median_runs.0.images,
        f.rounds,
        what.join(", "),
        secs(&f.plain_s),
        secs(&f.marked_s),
        f.plain_blocked_p50_ms,
        f.marked_blocked_p50_ms,
        secs(&f.plain_cpu_s),
        secs(&f.marked_cpu_s),
        f.ratio,
        f.cpu_ratio,
        f.steps.images,
        f.steps.encode_ms,
        step(&f.steps)
    )
}
