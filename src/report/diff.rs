//! The difference between two images, computed by difflog (not by the
//! browser): per-pixel absolute difference, its mean and maximum, how many
//! pixels differ, and a heat map of it as an indexed PNG.
//!
//! Two runs asked for the same image seldom hold the same bytes (each PNG
//! carries its run's recipe), so "pixel-identical" is told apart from
//! "byte-identical".

use crate::error::Result;
use image::RgbImage;
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
pub fn difference(a: &RgbImage, b: &RgbImage) -> Option<(Figures, Vec<u8>)> {
    let mut heat = vec![0u8; a.width() as usize * a.height() as usize];
    difference_into(a, b, &mut heat).map(|f| (f, heat))
}

/// [`difference`] writing the per-pixel differences into `heat` (one byte
/// per pixel of `a`; a strip of a grid row's heat maps), allocating nothing.
pub fn difference_into(a: &RgbImage, b: &RgbImage, heat: &mut [u8]) -> Option<Figures> {
    if a.dimensions() != b.dimensions() || heat.len() != a.width() as usize * a.height() as usize {
        return None;
    }
    let pixels = u64::from(a.width()) * u64::from(a.height());
    let (mut sum, mut max, mut differing) = (0u64, 0u8, 0u64);
    for ((pa, pb), out) in a
        .as_raw()
        .chunks_exact(3)
        .zip(b.as_raw().chunks_exact(3))
        .zip(heat.iter_mut())
    {
        let (d0, d1, d2) = (
            pa[0].abs_diff(pb[0]),
            pa[1].abs_diff(pb[1]),
            pa[2].abs_diff(pb[2]),
        );
        sum += u64::from(u16::from(d0) + u16::from(d1) + u16::from(d2));
        let m = d0.max(d1).max(d2);
        differing += u64::from(m > 0);
        max = max.max(m);
        *out = m;
    }
    let mean = if pixels == 0 {
        0.0
    } else {
        sum as f64 / (pixels * 3) as f64
    };
    Some(Figures {
        mean,
        max,
        differing,
        pixels,
    })
}

/// Levels of the heat map: 16, so that a pixel takes half a byte (a strip
/// of differences is written for every grid row; at 8 bits the heat maps
/// of a large comparison were the largest part of what it wrote). The
/// figures stay exact; the map shows where and roughly how much.
pub const LEVELS: u8 = 16;

/// The heat map's level of a difference `v`: 0 for none, then a square-root
/// scale (1 is already level 1, visible; 255 is level 15).
pub fn level(v: u8) -> u8 {
    if v == 0 {
        return 0;
    }
    let top = f64::from(LEVELS - 2);
    1 + ((f64::from(v - 1) / 254.0).sqrt() * top).round() as u8
}

/// The colour of a level: black for none, then from dark red through
/// orange and yellow to white.
fn colour(l: u8) -> [u8; 3] {
    if l == 0 {
        return [0, 0, 0];
    }
    let t = 0.2 + 0.8 * f64::from(l - 1) / f64::from(LEVELS - 2);
    let c = |x: f64| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(t * 2.0), c(t * 2.0 - 0.8), c(t * 3.0 - 2.0)]
}

/// The heat map of a difference (`heat` from [`difference`], one byte per
/// pixel) as a 4-bit indexed PNG: the palette index of each pixel is the
/// [`level`] of its difference.
pub fn heat_png(heat: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let (mut packed, mut out) = (Vec::new(), Vec::new());
    heat_png_into(heat, width, height, &mut packed, &mut out)?;
    Ok(out)
}

/// [`heat_png`] into `out`, with `packed` as the work buffer (both cleared
/// first, their allocations kept).
pub fn heat_png_into(
    heat: &[u8],
    width: u32,
    height: u32,
    packed: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let palette: Vec<u8> = (0..LEVELS).flat_map(colour).collect();
    let levels: Vec<u8> = (0..=255u8).map(level).collect();
    let w = width as usize;
    let row_bytes = w.div_ceil(2);
    packed.clear();
    packed.resize(row_bytes * height as usize, 0);
    for (src, dst) in heat
        .chunks(w.max(1))
        .zip(packed.chunks_mut(row_bytes.max(1)))
    {
        for (pair, o) in src.chunks(2).zip(dst.iter_mut()) {
            let hi = levels[usize::from(pair[0])] << 4;
            *o = hi | pair.get(1).map_or(0, |&v| levels[usize::from(v)]);
        }
    }
    out.clear();
    let mut enc = png::Encoder::new(&mut *out, width, height);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Four);
    enc.set_palette(palette);
    enc.set_compression(png::Compression::Fast);
    enc.set_filter(png::Filter::NoFilter);
    let fail = |e: png::EncodingError| crate::Error::encode("a PNG", e);
    let mut wr = enc.write_header().map_err(fail)?;
    wr.write_image_data(packed).map_err(fail)?;
    wr.finish().map_err(fail)
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
    use image::Rgb;

    fn gradient() -> RgbImage {
        RgbImage::from_fn(16, 8, |x, y| Rgb([x as u8 * 10, y as u8 * 20, 77]))
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
        b.put_pixel(3, 5, Rgb([a.get_pixel(3, 5)[0] + 40, 100, 77]));
        let (f, heat) = difference(&a, &b).unwrap();
        assert_eq!(f.max, 40);
        assert_eq!(f.differing, 1);
        assert!((f.mean - 40.0 / (128.0 * 3.0)).abs() < 1e-12);
        assert_eq!(heat[5 * 16 + 3], 40);
        assert_eq!(heat.iter().filter(|&&v| v > 0).count(), 1);
        assert_eq!(
            describe(&f, false),
            "mean 0.10, max 40 of 255; 1 of 128 pixels differ"
        );
        // The heat map PNG holds the level of the difference as each
        // pixel's palette index, 4 bits a pixel.
        let png = heat_png(&heat, 16, 8).unwrap();
        let mut dec = png::Decoder::new(std::io::Cursor::new(png));
        dec.set_transformations(png::Transformations::IDENTITY);
        let mut r = dec.read_info().unwrap();
        assert_eq!(r.info().bit_depth, png::BitDepth::Four);
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        r.next_frame(&mut buf).unwrap();
        let at = |x: usize, y: usize| {
            (buf[y * 8 + x / 2] >> if x.is_multiple_of(2) { 4 } else { 0 }) & 15
        };
        assert_eq!(at(3, 5), level(40));
        assert_eq!(
            (0..16)
                .flat_map(|x| (0..8).map(move |y| (x, y)))
                .filter(|&(x, y)| at(x, y) != 0)
                .count(),
            1
        );
        assert_eq!((level(0), level(1), level(40), level(255)), (0, 1, 6, 15));
        assert_eq!(colour(0), [0, 0, 0]);
        assert_ne!(colour(1), [0, 0, 0]);
        assert_eq!(colour(15), [255, 255, 255]);
    }

    #[test]
    fn different_sizes_are_not_compared() {
        assert!(difference(&gradient(), &RgbImage::new(8, 16)).is_none());
    }
}
