//! Thumbnails for the report and the comparison page: made once from a
//! run's image, cached beside the page under `thumbs/<digest>.png`, never
//! written into the run. Images no larger than a thumbnail are linked as
//! they are (nothing to shrink).
//!
//! Images come from run directories that may come from anyone, so reading
//! one is bounded (see [`crate::read::decode_image`]).

use crate::error::{IoContext, Result};
use crate::format::is_digest;
use image::RgbImage;
use std::path::{Path, PathBuf};

/// Longest side of a thumbnail, in pixels.
pub const THUMB: u32 = 128;
pub use crate::read::{decode_image as decode, MAX_IMAGE_BYTES, MAX_SIDE};

/// Decodes images one after another into reused buffers: decoding ten
/// thousand images allocating two fresh buffers each spent more time in the
/// kernel (fresh pages, zeroed) than in decoding.
#[derive(Default)]
pub struct Decoder {
    file: Vec<u8>,
}

impl Decoder {
    /// Decodes the image at `path` (bounded as [`decode`]) into `pixels`'
    /// allocation; give the buffer back with `RgbImage::into_raw` for the next.
    /// `recorded`: the size its media record gives; an image whose header
    /// says another size is refused before anything is allocated for it
    /// (a record saying 64×64 for a 16384² PNG with the right digest).
    pub fn decode_into(
        &mut self,
        path: &Path,
        mut pixels: Vec<u8>,
        recorded: (u32, u32),
    ) -> std::result::Result<RgbImage, String> {
        use image::ImageDecoder;
        crate::read::read_regular_into(path, MAX_IMAGE_BYTES, &mut self.file)
            .map_err(|e| e.to_string())?;
        let fail = |e: image::ImageError| format!("not a readable image: {e}");
        let png = image::codecs::png::PngDecoder::with_limits(
            std::io::Cursor::new(&self.file),
            crate::read::image_limits(),
        );
        if let Ok(d) = &png {
            let (w, h) = d.dimensions();
            if (w, h) != recorded {
                return Err(format!(
                    "its pixels are {w}×{h}, not the {}×{} its media record says",
                    recorded.0, recorded.1
                ));
            }
            if d.total_bytes() > MAX_DECODED_BYTES {
                return Err(format!(
                    "{w}×{h} pixels decode to more than the {} MiB an image may take",
                    MAX_DECODED_BYTES >> 20
                ));
            }
        }
        match png {
            Ok(d) if d.color_type() == image::ColorType::Rgb8 => {
                let (w, h) = d.dimensions();
                pixels.resize(d.total_bytes() as usize, 0);
                d.read_image(&mut pixels).map_err(fail)?;
                RgbImage::from_raw(w, h, pixels).ok_or_else(|| "not a readable image".to_string())
            }
            // Any other kind of image: the general path.
            _ => decode(path),
        }
    }
}

/// The most a decoded image may take (`image`'s own default cap, which
/// the RGB fast path above would otherwise skip).
pub const MAX_DECODED_BYTES: u64 = 512 << 20;

/// Whether an image of this size gets a thumbnail of its own.
pub fn needs_thumb(width: u32, height: u32) -> bool {
    width > THUMB || height > THUMB
}

/// The size a `width`×`height` image is shown at in a grid cell.
pub fn shown_size(width: u32, height: u32) -> (u32, u32) {
    let (w, h) = (width.max(1), height.max(1));
    if w >= h {
        (
            THUMB,
            (u64::from(THUMB) * u64::from(h) / u64::from(w)).max(1) as u32,
        )
    } else {
        (
            (u64::from(THUMB) * u64::from(w) / u64::from(h)).max(1) as u32,
            THUMB,
        )
    }
}

/// The thumbnail folder beside a page.
#[derive(Debug, Clone)]
pub struct Thumbs {
    dir: PathBuf,
}

impl Thumbs {
    /// Thumbnails of the page in `page_dir`, under `page_dir/thumbs`.
    pub fn new(page_dir: &Path) -> Thumbs {
        Thumbs {
            dir: page_dir.join("thumbs"),
        }
    }

    /// The thumbnail's link from the page, if `digest` can name one.
    pub fn href(digest: &str) -> Option<String> {
        is_digest(digest).then(|| format!("thumbs/{}/{digest}.png", &digest[..2]))
    }

    /// Whether the thumbnail of `digest` is already made.
    pub fn cached(&self, digest: &str) -> bool {
        is_digest(digest)
            && std::fs::metadata(self.dir.join(&digest[..2]).join(format!("{digest}.png")))
                .is_ok_and(|m| m.is_file() && m.len() > 0)
    }

    /// Shrinks `img` to at most [`THUMB`] a side and writes it as the
    /// thumbnail of `digest` (complete or not at all: written aside, then
    /// renamed into place).
    pub fn write(&self, digest: &str, img: &RgbImage) -> Result<()> {
        if !is_digest(digest) {
            return Ok(());
        }
        let (w, h) = shown_size(img.width(), img.height());
        let small = shrink(img, w, h);
        let png = encode_rgb(&small)?;
        // One folder per first two hex digits, as in a run's media store:
        // no single folder holds tens of thousands of files.
        let dir = self.dir.join(&digest[..2]);
        std::fs::create_dir_all(&dir).ctx(&dir, "create thumbnail folder")?;
        let path = dir.join(format!("{digest}.png"));
        write_atomic(&path, &png)
    }
}

/// Shrinks `img` to `w`×`h` by averaging the source pixels each target
/// pixel covers (a box filter: every source pixel read once, integer sums),
/// several times faster than `image`'s general resampling for the same
/// result on a thumbnail.
pub fn shrink(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (sw, sh) = img.dimensions();
    let (w, h) = (w.clamp(1, sw.max(1)), h.clamp(1, sh.max(1)));
    let span = |o: u32, n: u32, s: u32| {
        let a = (u64::from(o) * u64::from(s) / u64::from(n)) as usize;
        let b = ((u64::from(o) + 1) * u64::from(s) / u64::from(n)) as usize;
        (a, b.max(a + 1).min(s as usize))
    };
    let xs: Vec<(usize, usize)> = (0..w).map(|ox| span(ox, w, sw)).collect();
    let src = img.as_raw();
    let row_len = sw as usize * 3;
    let mut acc = vec![0u32; row_len];
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for oy in 0..h {
        let (y0, y1) = span(oy, h, sh);
        // Sum the source rows this output row covers, then each output
        // pixel's columns of that sum.
        acc.iter_mut().for_each(|v| *v = 0);
        for y in y0..y1 {
            let row = &src[y * row_len..(y + 1) * row_len];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += u32::from(v);
            }
        }
        for &(x0, x1) in &xs {
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            let mut sum = [0u32; 3];
            for px in acc[x0 * 3..x1 * 3].chunks_exact(3) {
                sum[0] += px[0];
                sum[1] += px[1];
                sum[2] += px[2];
            }
            out.extend(sum.map(|v| ((v + n / 2) / n) as u8));
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename,
/// so a reader (or a later cached run) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).ctx(&tmp, "write")?;
    std::fs::rename(&tmp, path).ctx(path, "rename into place")
}

/// PNG-encodes an RGB image quickly (thumbnails are small and disposable).
pub fn encode_rgb(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_rgb_into(img, &mut out)?;
    Ok(out)
}

/// [`encode_rgb`] into `out` (cleared first, its allocation kept).
pub fn encode_rgb_into(img: &RgbImage, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let mut enc = png::Encoder::new(&mut *out, img.width(), img.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    enc.set_filter(png::Filter::Paeth);
    let fail = |e: png::EncodingError| crate::Error::encode("a PNG", e);
    let mut w = enc.write_header().map_err(fail)?;
    w.write_image_data(img.as_raw()).map_err(fail)?;
    w.finish().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_and_are_cached_by_digest() {
        assert_eq!(shown_size(512, 256), (128, 64));
        assert_eq!(shown_size(100, 400), (32, 128));
        assert!(!needs_thumb(128, 64) && needs_thumb(129, 10));
        let tmp = tempfile::tempdir().unwrap();
        let t = Thumbs::new(tmp.path());
        let d = "a".repeat(64);
        assert!(!t.cached(&d));
        t.write(&d, &RgbImage::from_pixel(300, 150, image::Rgb([9, 8, 7])))
            .unwrap();
        assert!(t.cached(&d));
        let back = decode(&tmp.path().join(Thumbs::href(&d).unwrap())).unwrap();
        assert_eq!(back.dimensions(), (128, 64));
        assert_eq!(back.get_pixel(5, 5).0, [9, 8, 7]);
        assert!(Thumbs::href("../../etc/passwd").is_none());
        // A box average: a 2×2 checkerboard shrinks to its mean grey.
        let board = RgbImage::from_fn(4, 4, |x, y| {
            image::Rgb([if (x + y) % 2 == 0 { 0 } else { 200 }; 3])
        });
        assert!(shrink(&board, 2, 2)
            .pixels()
            .all(|p| p.0 == [100, 100, 100]));
        assert_eq!(shrink(&board, 3, 1).dimensions(), (3, 1));
    }

    #[test]
    fn a_damaged_or_linked_image_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = tmp.path().join("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        assert!(decode(&bad).unwrap_err().contains("not a readable image"));
        let link = tmp.path().join("link.png");
        std::os::unix::fs::symlink(&bad, &link).unwrap();
        assert!(decode(&link).unwrap_err().contains("symbolic link"));
    }
}
