//! `difflog bench png`: the PNG encodings compared on the same images —
//! bytes (what a thin link carries) and encoding time (what recording
//! pays) — beside zlib's default level and, given a Python with Pillow,
//! PIL's default (what W&B's client and diffusers users write), measured
//! in the same process so a noisy machine shows in every figure alike
//! (issue 38).

use crate::error::{Error, Result};
use crate::run::idat::{self, RowFilter};
use crate::run::media::{encode_png_using, png_around, PngEncoding};
use image::RgbImage;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of `bench png`.
#[derive(Debug, Clone)]
pub struct PngBench {
    /// Images to encode.
    pub count: usize,
    /// Width and height in pixels.
    pub size: u32,
    /// `natural` (smooth structure, shapes, fine grain) or `grain` (the
    /// gradients with strong noise of `bench record`).
    pub images: String,
    /// A Python with Pillow: its default PNG bytes for the same pixels, and
    /// a check that it decodes every compact PNG to its pixels.
    pub python: Option<PathBuf>,
    /// Also measure the other compressors at several levels, with each way
    /// of choosing the rows' filters.
    pub candidates: bool,
    /// PNG files to take the images from instead (a run's `media`, say):
    /// the first `count` under this folder, in name order.
    pub from: Option<PathBuf>,
}

/// The first `count` PNG files under `dir` (in name order, never through a
/// link), decoded to RGB; an unreadable one is an error naming it.
fn images_from(dir: &Path, count: usize) -> Result<Vec<RgbImage>> {
    let mut files = crate::read::files_under(dir, &["png"], usize::MAX)?;
    files.sort();
    files.truncate(count);
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "--from {}: no PNG files there",
            dir.display()
        )));
    }
    files
        .iter()
        .map(|p| {
            crate::read::decode_image(p).map_err(|why| {
                Error::Invalid(format!(
                    "{}: {why}",
                    crate::terminal::escape(&p.display().to_string())
                ))
            })
        })
        .collect()
}

/// One encoding's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Encoded {
    /// Which encoding.
    pub name: String,
    /// Bytes of all the PNG files.
    pub bytes: u64,
    /// Milliseconds per image, one thread, best of three rounds.
    pub ms_per_image: f64,
}

/// Figures of `bench png`.
#[derive(Debug, Clone, Serialize)]
pub struct PngFigures {
    /// Images and their size.
    pub count: usize,
    /// Width and height.
    pub size: u32,
    /// Which images.
    pub images: String,
    /// difflog's fast encoding (fdeflate), the compact one, zlib level 6.
    pub encodings: Vec<Encoded>,
    /// PIL's default PNG bytes for the same pixels, when measured.
    pub pil_bytes: Option<u64>,
    /// Compact bytes / PIL bytes (the goal: ≤ 1).
    pub compact_over_pil: Option<f64>,
    /// Compact bytes / fast bytes.
    pub compact_over_fast: f64,
    /// Compact time / fast time (the goal: close to 1).
    pub compact_time_over_fast: f64,
    /// The other compressors with each filter choice (`--candidates`).
    pub candidates: Vec<Candidate>,
}

/// A compressor at a level, with a way of choosing the rows' filters.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// How the rows' filters were chosen.
    pub filter: String,
    /// Which compressor, at which level.
    pub compressor: String,
    /// Bytes of all the PNG files.
    pub bytes: u64,
    /// Milliseconds per image (filtering included), one thread.
    pub ms_per_image: f64,
    /// Time / the fast encoding's time.
    pub time_over_fast: f64,
    /// Bytes / PIL's bytes, when measured.
    pub bytes_over_pil: Option<f64>,
}

/// A deflate compressor the candidates use.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Compressor {
    /// fdeflate (what the `png` crate's fast setting runs).
    Fdeflate,
    /// miniz_oxide at a level (the `png` crate's other settings).
    Miniz(u8),
    /// zlib-rs (zlib's algorithms in Rust) at a level.
    ZlibRs(i32),
    /// libdeflate (vendored C) at a level.
    Libdeflate(i32),
    /// difflog's own ([`idat::deflate`]): Huffman codes and runs only.
    Difflog,
}

impl Compressor {
    /// Every compressor and level measured.
    const ALL: [Compressor; 11] = [
        Compressor::Fdeflate,
        Compressor::Miniz(1),
        Compressor::Miniz(6),
        Compressor::ZlibRs(1),
        Compressor::ZlibRs(3),
        Compressor::ZlibRs(6),
        Compressor::Libdeflate(1),
        Compressor::Libdeflate(3),
        Compressor::Libdeflate(6),
        Compressor::Libdeflate(9),
        Compressor::Difflog,
    ];

    /// Its name and level, as the tables print them.
    pub(crate) fn name(self) -> String {
        match self {
            Compressor::Fdeflate => "fdeflate".into(),
            Compressor::Miniz(l) => format!("miniz_oxide level {l}"),
            Compressor::ZlibRs(l) => format!("zlib-rs level {l}"),
            Compressor::Libdeflate(l) => format!("libdeflate level {l}"),
            Compressor::Difflog => "difflog (Huffman + runs)".into(),
        }
    }

    /// The zlib stream of `filtered`.
    fn zlib(self, filtered: &[u8]) -> Result<Vec<u8>> {
        let fail = |why: String| Error::encode("a benchmark image", why);
        Ok(match self {
            Compressor::Fdeflate => fdeflate::compress_to_vec(filtered),
            Compressor::Miniz(l) => miniz_oxide::deflate::compress_to_vec_zlib(filtered, l),
            Compressor::ZlibRs(l) => {
                let mut out = vec![0u8; zlib_rs::compress_bound(filtered.len())];
                let config = zlib_rs::DeflateConfig {
                    level: l,
                    ..zlib_rs::DeflateConfig::default()
                };
                let (z, rc) = zlib_rs::compress_slice(&mut out, filtered, config);
                if rc != zlib_rs::ReturnCode::Ok {
                    return Err(fail(format!("zlib-rs failed: {rc:?}")));
                }
                z.to_vec()
            }
            Compressor::Libdeflate(l) => {
                let level = libdeflater::CompressionLvl::new(l)
                    .map_err(|e| fail(format!("libdeflate level {l}: {e:?}")))?;
                let mut c = libdeflater::Compressor::new(level);
                let mut out = vec![0u8; c.zlib_compress_bound(filtered.len())];
                let n = c
                    .zlib_compress(filtered, &mut out)
                    .map_err(|e| fail(format!("libdeflate failed: {e:?}")))?;
                out.truncate(n);
                out
            }
            Compressor::Difflog => idat::deflate(filtered),
        })
    }
}

/// The ways of choosing the rows' filters, with their names.
const FILTERS: [(&str, RowFilter); 3] = [
    ("Paeth, every row", RowFilter::Fixed(4)),
    ("least sum per row", RowFilter::MinSum),
    ("least entropy per row", RowFilter::Entropy),
];

/// Every candidate: each way of choosing the filters with each compressor.
pub(crate) fn candidate_list() -> Vec<(&'static str, RowFilter, Compressor)> {
    FILTERS
        .iter()
        .flat_map(|(name, f)| Compressor::ALL.iter().map(move |c| (*name, *f, *c)))
        .collect()
}

/// A PNG of `img`: rows filtered as `filter` says, compressed by `c`.
pub(crate) fn candidate_png(img: &RgbImage, filter: RowFilter, c: Compressor) -> Result<Vec<u8>> {
    let (w, h) = img.dimensions();
    let rows = idat::filter_rows(img.as_raw(), w as usize * 3, h as usize, 3, filter);
    png_around(w, h, &c.zlib(&rows)?)
}

/// Whether `png` decodes to the pixels of `img`.
fn decodes_to(png: &[u8], img: &RgbImage) -> bool {
    image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .map(|d| d.to_rgb8().as_raw() == img.as_raw())
        .unwrap_or(false)
}

/// Encodes every image with `f`, best of three rounds (fewer when a round
/// takes over a second): (bytes, ms each).
fn measure(images: &[RgbImage], f: impl Fn(&RgbImage) -> Result<Vec<u8>>) -> Result<(u64, f64)> {
    let mut best = f64::MAX;
    let mut bytes = 0;
    let start = Instant::now();
    for _ in 0..3 {
        if best < f64::MAX && start.elapsed().as_secs_f64() > 1.0 {
            break;
        }
        let t = Instant::now();
        bytes = 0;
        for img in images {
            bytes += f(img)?.len() as u64;
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((bytes, best * 1000.0 / images.len().max(1) as f64))
}

/// What the Python side runs: PIL's default bytes for each raw image, and
/// whether it decodes each compact PNG to the same pixels.
const PIL_SCRIPT: &str = r#"
import io, sys
from PIL import Image
folder = sys.argv[1]
sizes = [tuple(map(int, line.split())) for line in open(f"{folder}/sizes.txt")]
total = 0
for i, size in enumerate(sizes):
    raw = open(f"{folder}/{i}.rgb", "rb").read()
    im = Image.frombytes("RGB", size, raw)
    b = io.BytesIO()
    im.save(b, "PNG")
    total += len(b.getvalue())
    back = Image.open(f"{folder}/{i}.png")
    back.load()
    if back.mode != "RGB" or back.tobytes() != raw:
        sys.exit(f"PIL decodes {i}.png to other pixels")
print(total)
"#;

/// PIL's default bytes for `images` (and its check of the compact PNGs).
pub(crate) fn pil_bytes(python: &Path, images: &[RgbImage]) -> Result<u64> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("<temp>", "create a folder", e))?;
    let sizes: String = images
        .iter()
        .map(|i| format!("{} {}\n", i.width(), i.height()))
        .collect();
    let list = dir.path().join("sizes.txt");
    std::fs::write(&list, sizes).map_err(|e| Error::io(&list, "write", e))?;
    for (i, img) in images.iter().enumerate() {
        let raw = dir.path().join(format!("{i}.rgb"));
        std::fs::write(&raw, img.as_raw()).map_err(|e| Error::io(&raw, "write", e))?;
        let png = dir.path().join(format!("{i}.png"));
        let bytes = encode_png_using(img, &[], PngEncoding::Compact)?;
        std::fs::write(&png, bytes).map_err(|e| Error::io(&png, "write", e))?;
    }
    let o = std::process::Command::new(python)
        .args(["-c", PIL_SCRIPT])
        .arg(dir.path())
        .output()
        .map_err(|e| Error::io(python, "run", e))?;
    let out = String::from_utf8_lossy(&o.stdout);
    match (o.status.success(), out.trim().parse::<u64>()) {
        (true, Ok(n)) => Ok(n),
        _ => Err(Error::System {
            what: "measure PIL's PNG bytes",
            why: format!(
                "{} failed: {}",
                python.display(),
                crate::terminal::escape(String::from_utf8_lossy(&o.stderr).trim())
            ),
        }),
    }
}

/// The images `--images` names.
fn generated(opts: &PngBench) -> Result<Vec<RgbImage>> {
    let make = super::image_maker(&opts.images)?;
    Ok((0..opts.count as u64).map(|i| make(i, opts.size)).collect())
}

/// Runs `bench png`.
pub fn run(opts: &PngBench) -> Result<PngFigures> {
    if opts.count == 0 || opts.size == 0 {
        return Err(Error::Invalid(
            "--count and --size must be at least 1".into(),
        ));
    }
    let (images, label, size) = match &opts.from {
        Some(dir) => {
            let images = images_from(dir, opts.count)?;
            let size = images.first().map_or(0, |i| i.width());
            (images, format!("PNGs under {}", dir.display()), size)
        }
        None => (generated(opts)?, opts.images.clone(), opts.size),
    };
    let mut encodings = Vec::new();
    for (name, encoding) in [
        ("fast", PngEncoding::Fast),
        ("compact", PngEncoding::Compact),
    ] {
        let (bytes, ms) = measure(&images, |img| encode_png_using(img, &[], encoding))?;
        encodings.push(Encoded {
            name: name.into(),
            bytes,
            ms_per_image: ms,
        });
    }
    // zlib's default level with the usual filter choice: what "default"
    // means to most PNG writers.
    let (bytes, ms) = measure(&images, |img| {
        candidate_png(img, RowFilter::MinSum, Compressor::Miniz(6))
    })?;
    encodings.push(Encoded {
        name: "zlib level 6 (miniz_oxide, least-sum filters)".into(),
        bytes,
        ms_per_image: ms,
    });
    let pil = match &opts.python {
        Some(p) => Some(pil_bytes(p, &images)?),
        None => None,
    };
    let (fast, compact) = (&encodings[0], &encodings[1]);
    let mut candidates = Vec::new();
    if opts.candidates {
        for (filter_name, filter, c) in candidate_list() {
            if let Some(first) = images.first() {
                if !decodes_to(&candidate_png(first, filter, c)?, first) {
                    return Err(Error::encode(
                        "a benchmark image",
                        format!("{} with {filter_name} decodes to other pixels", c.name()),
                    ));
                }
            }
            let (bytes, ms) = measure(&images, |img| candidate_png(img, filter, c))?;
            candidates.push(Candidate {
                filter: filter_name.into(),
                compressor: c.name(),
                bytes,
                ms_per_image: ms,
                time_over_fast: ms / fast.ms_per_image.max(1e-9),
                bytes_over_pil: pil.map(|p| bytes as f64 / p.max(1) as f64),
            });
        }
    }
    Ok(PngFigures {
        count: images.len(),
        size,
        images: label,
        compact_over_pil: pil.map(|p| compact.bytes as f64 / p.max(1) as f64),
        compact_over_fast: compact.bytes as f64 / fast.bytes.max(1) as f64,
        compact_time_over_fast: compact.ms_per_image / fast.ms_per_image.max(1e-9),
        encodings,
        pil_bytes: pil,
        candidates,
    })
}

/// One line of a candidates table.
pub(crate) struct CandidateRow<'a> {
    /// How the rows' filters were chosen.
    pub filter: &'a str,
    /// The compressor and level.
    pub compressor: &'a str,
    /// Bytes of its PNGs.
    pub bytes: u64,
    /// Bytes / PIL's, when measured.
    pub over_pil: Option<f64>,
    /// Its speed, as the table's unit says.
    pub speed: String,
    /// Its time / the fast encoding's.
    pub over_fast: f64,
}

/// A table of candidates under `title`, their speed in `unit`.
pub(crate) fn candidate_table(title: &str, unit: &str, rows: &[CandidateRow<'_>]) -> String {
    let mut s = format!(
        "\n{title}:\n| rows' filters | compressor | bytes | / PIL | {unit} | time / fast |\n|---|---|---|---|---|---|\n"
    );
    for c in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} |\n",
            c.filter,
            c.compressor,
            c.bytes,
            c.over_pil.map_or("-".to_string(), |r| format!("{r:.3}")),
            c.speed,
            c.over_fast
        ));
    }
    s
}

/// The text `bench png` prints.
pub fn render(f: &PngFigures) -> String {
    let mut s = format!(
        "difflog bench png: {} {} images of {}x{} px, one thread\n\
         | encoding | bytes | ms an image |\n|---|---|---|\n",
        f.count, f.images, f.size, f.size
    );
    for e in &f.encodings {
        s.push_str(&format!(
            "| {} | {} | {:.2} |\n",
            e.name, e.bytes, e.ms_per_image
        ));
    }
    match f.pil_bytes {
        Some(p) => s.push_str(&format!("| PIL's default (Python) | {p} | |\n")),
        None => s.push_str("| PIL's default | not measured (--python) | |\n"),
    }
    s.push_str(&format!(
        "compact / fast bytes {:.3}; compact / PIL bytes {} (goal ≤ 1); compact / fast time {:.2} (goal ≤ 1.1)\n",
        f.compact_over_fast,
        f.compact_over_pil
            .map_or("-".to_string(), |r| format!("{r:.3}")),
        f.compact_time_over_fast
    ));
    if !f.candidates.is_empty() {
        let rows: Vec<CandidateRow> = f
            .candidates
            .iter()
            .map(|c| CandidateRow {
                filter: &c.filter,
                compressor: &c.compressor,
                bytes: c.bytes,
                over_pil: c.bytes_over_pil,
                speed: format!("{:.2}", c.ms_per_image),
                over_fast: c.time_over_fast,
            })
            .collect();
        s.push_str(&candidate_table(
            "candidates (filtering included)",
            "ms an image",
            &rows,
        ));
        // The choice: the fastest no larger than PIL's (or than zlib's
        // default level, without a Python).
        let limit = f.pil_bytes.or_else(|| f.encodings.get(2).map(|e| e.bytes));
        let best = f
            .candidates
            .iter()
            .filter(|c| limit.is_some_and(|l| c.bytes <= l))
            .min_by(|a, b| a.ms_per_image.total_cmp(&b.ms_per_image));
        match best {
            Some(c) => s.push_str(&format!(
                "fastest no larger than {}: {} with {} ({:.2} ms an image, {:.2}× the fast encoding's time)\n",
                if f.pil_bytes.is_some() { "PIL's" } else { "zlib level 6's" },
                c.compressor,
                c.filter,
                c.ms_per_image,
                c.time_over_fast
            )),
            None => s.push_str("no candidate is as small as the reference\n"),
        }
    }
    s
}
