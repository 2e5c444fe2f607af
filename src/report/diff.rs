//! The difference between two images, computed by difflog (not by the
//! browser): per-pixel absolute difference, its mean and maximum, how many
//! pixels differ, and a heat map of it as an indexed PNG.
//!
//! Two runs asked for the same image seldom hold the same bytes (each PNG
//! carries its run's recipe), so "pixel-identical" is told apart from
//! "byte-identical".

use crate::error::Result;
use image::RgbaImage;
use serde::{Deserialize, Serialize};

/// What the difference of two same-sized images measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Mean absolute difference over every channel of every pixel (0–255).
    pub mean: f64,
    /// Largest absolute difference of any channel (0–255).
    pub max: u8,
    /// Pixels with any channel different.
    pub differing: u64,
    /// Pixels compared.
    pub pixels: u64,
}

/// The difference of `a` and `b`: the figures and, per pixel, the largest
/// channel difference (row-major). `None` when their sizes differ.
pub fn difference(a: &RgbaImage, b: &RgbaImage) -> Option<(Figures, Vec<u8>)> {
    if a.dimensions() != b.dimensions() {
        return None;
    }
    let pixels = u64::from(a.width()) * u64::from(a.height());
    let mut heat = Vec::with_capacity(pixels as usize);
    let (mut sum, mut max, mut differing) = (0u64, 0u8, 0u64);
    for (pa, pb) in a.as_raw().chunks_exact(4).zip(b.as_raw().chunks_exact(4)) {
        let mut m = 0u8;
        for (x, y) in pa.iter().zip(pb) {
            let d = x.abs_diff(*y);
            sum += u64::from(d);
            m = m.max(d);
        }
        if m > 0 {
            differing += 1;
        }
        max = max.max(m);
        heat.push(m);
    }
    let mean = if pixels == 0 {
        0.0
    } else {
        sum as f64 / (pixels * 4) as f64
    };
    Some((
        Figures {
            mean,
            max,
            differing,
            pixels,
        },
        heat,
    ))
}

/// The heat map's colour for a difference of `v`: black for none, then
/// from dark red through orange and yellow to white. The scale is a square
/// root, so a difference of 1 is already visible.
fn colour(v: u8) -> [u8; 3] {
    if v == 0 {
        return [0, 0, 0];
    }
    let t = 0.2 + 0.8 * (f64::from(v) / 255.0).sqrt();
    let c = |x: f64| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(t * 2.0), c(t * 2.0 - 0.8), c(t * 3.0 - 2.0)]
}

/// The heat map of a difference (`heat` from [`difference`]) as an indexed
/// PNG: the palette index of each pixel is its difference.
pub fn heat_png(heat: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let palette: Vec<u8> = (0..=255u8).flat_map(colour).collect();
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(palette);
    enc.set_compression(png::Compression::Fast);
    let fail = |e: png::EncodingError| crate::Error::Invalid(format!("PNG encoding failed: {e}"));
    let mut w = enc.write_header().map_err(fail)?;
    w.write_image_data(heat).map_err(fail)?;
    w.finish().map_err(fail)?;
    Ok(out)
}

/// One line for the page: byte-identical, pixel-identical, or how much
/// they differ.
pub fn describe(f: &Figures, same_bytes: bool) -> String {
    if same_bytes {
        "byte-identical (mean 0, max 0)".into()
    } else if f.max == 0 {
        "pixel-identical; the files differ (their text chunks) — mean 0, max 0".into()
    } else {
        format!(
            "mean {:.2}, max {} of 255; {} of {} pixels differ",
            f.mean, f.max, f.differing, f.pixels
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    fn gradient() -> RgbaImage {
        RgbaImage::from_fn(16, 8, |x, y| Rgba([x as u8 * 10, y as u8 * 20, 77, 255]))
    }

    #[test]
    fn identical_images_differ_by_nothing() {
        let (f, heat) = difference(&gradient(), &gradient()).unwrap();
        assert_eq!((f.mean, f.max, f.differing, f.pixels), (0.0, 0, 0, 128));
        assert!(heat.iter().all(|&v| v == 0));
        assert!(describe(&f, true).starts_with("byte-identical"));
        assert!(describe(&f, false).starts_with("pixel-identical"));
    }

    #[test]
    fn one_edited_pixel_is_that_pixels_difference() {
        let a = gradient();
        let mut b = gradient();
        b.put_pixel(3, 5, Rgba([a.get_pixel(3, 5)[0] + 40, 100, 77, 255]));
        let (f, heat) = difference(&a, &b).unwrap();
        assert_eq!(f.max, 40);
        assert_eq!(f.differing, 1);
        assert!((f.mean - 40.0 / (128.0 * 4.0)).abs() < 1e-12);
        assert_eq!(heat[5 * 16 + 3], 40);
        assert_eq!(heat.iter().filter(|&&v| v > 0).count(), 1);
        assert_eq!(
            describe(&f, false),
            "mean 0.08, max 40 of 255; 1 of 128 pixels differ"
        );
        // The heat map PNG holds the difference as each pixel's palette index.
        let png = heat_png(&heat, 16, 8).unwrap();
        let mut dec = png::Decoder::new(std::io::Cursor::new(png));
        dec.set_transformations(png::Transformations::IDENTITY);
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        r.next_frame(&mut buf).unwrap();
        assert_eq!(buf[5 * 16 + 3], 40);
        assert_eq!(buf[0], 0);
        assert_eq!(colour(0), [0, 0, 0]);
        assert_ne!(colour(1), [0, 0, 0]);
        assert_eq!(colour(255), [255, 255, 255]);
    }

    #[test]
    fn different_sizes_are_not_compared() {
        assert!(difference(&gradient(), &RgbaImage::new(8, 16)).is_none());
    }
}
