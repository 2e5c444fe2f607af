//! `difflog bench png`: the PNG encodings compared on the same images —
//! bytes (what a thin link carries) and encoding time (what recording
//! pays) — beside zlib's default level and, given a Python with Pillow,
//! PIL's default (what W&B's client and diffusers users write), measured
//! in the same process so a noisy machine shows in every figure alike
//! (issue 38).

use super::{natural_image, synthetic_image};
use crate::error::{Error, Result};
use crate::run::media::{encode_png_using, PngEncoding};
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
}

/// The `png` crate at zlib's default level: the reference for "default".
fn zlib_default(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Balanced);
    enc.set_filter(png::Filter::Adaptive);
    let fail = |e: png::EncodingError| Error::encode("a benchmark image", e.to_string());
    let mut w = enc.write_header().map_err(fail)?;
    w.write_image_data(img.as_raw()).map_err(fail)?;
    w.finish().map_err(fail)?;
    Ok(out)
}

/// Encodes every image with `f`, best of three rounds: (bytes, ms each).
fn measure(images: &[RgbImage], f: impl Fn(&RgbImage) -> Result<Vec<u8>>) -> Result<(u64, f64)> {
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..3 {
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
size, n, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
total = 0
for i in range(n):
    raw = open(f"{folder}/{i}.rgb", "rb").read()
    im = Image.frombytes("RGB", (size, size), raw)
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
fn pil_bytes(python: &Path, images: &[RgbImage], size: u32) -> Result<u64> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("<temp>", "create a folder", e))?;
    for (i, img) in images.iter().enumerate() {
        let raw = dir.path().join(format!("{i}.rgb"));
        std::fs::write(&raw, img.as_raw()).map_err(|e| Error::io(&raw, "write", e))?;
        let png = dir.path().join(format!("{i}.png"));
        let bytes = encode_png_using(img, &[], PngEncoding::Compact)?;
        std::fs::write(&png, bytes).map_err(|e| Error::io(&png, "write", e))?;
    }
    let o = std::process::Command::new(python)
        .args(["-c", PIL_SCRIPT])
        .arg(size.to_string())
        .arg(images.len().to_string())
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

/// Runs `bench png`.
pub fn run(opts: &PngBench) -> Result<PngFigures> {
    if opts.count == 0 || opts.size == 0 {
        return Err(Error::Invalid(
            "--count and --size must be at least 1".into(),
        ));
    }
    let images: Vec<RgbImage> = match opts.images.as_str() {
        "natural" => (0..opts.count as u64)
            .map(|i| natural_image(i, opts.size))
            .collect(),
        "grain" => (0..opts.count as u64)
            .map(|i| synthetic_image(i, opts.size))
            .collect(),
        other => {
            return Err(Error::Invalid(format!(
                "--images {other}: expected natural or grain"
            )))
        }
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
    let (bytes, ms) = measure(&images, zlib_default)?;
    encodings.push(Encoded {
        name: "zlib level 6 (png crate)".into(),
        bytes,
        ms_per_image: ms,
    });
    let pil = match &opts.python {
        Some(p) => Some(pil_bytes(p, &images, opts.size)?),
        None => None,
    };
    let (fast, compact) = (&encodings[0], &encodings[1]);
    Ok(PngFigures {
        count: opts.count,
        size: opts.size,
        images: opts.images.clone(),
        compact_over_pil: pil.map(|p| compact.bytes as f64 / p.max(1) as f64),
        compact_over_fast: compact.bytes as f64 / fast.bytes.max(1) as f64,
        compact_time_over_fast: compact.ms_per_image / fast.ms_per_image.max(1e-9),
        encodings,
        pil_bytes: pil,
    })
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
    s
}
