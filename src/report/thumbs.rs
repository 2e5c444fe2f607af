//! Thumbnails for the report and the comparison page: made once from a
//! run's image, cached beside the page under `thumbs/<digest>.png`, never
//! written into the run. Images no larger than a thumbnail are linked as
//! they are (nothing to shrink).
//!
//! Images come from run directories that may come from anyone, so reading
//! one is bounded: at most [`MAX_IMAGE_BYTES`] read, at most
//! [`MAX_SIDE`] pixels a side decoded.

use crate::error::{IoContext, Result};
use crate::format::is_digest;
use image::RgbaImage;
use std::path::{Path, PathBuf};

/// Longest side of a thumbnail, in pixels.
pub const THUMB: u32 = 128;
/// Largest image file decoded.
pub const MAX_IMAGE_BYTES: u64 = 256 * 1024 * 1024;
/// Largest width or height decoded.
pub const MAX_SIDE: u32 = 16384;

/// Decodes the image at `path` (a regular file, never through a link),
/// within the bounds above; the error says what is wrong with it.
pub fn decode(path: &Path) -> std::result::Result<RgbaImage, String> {
    let bytes = crate::read::read_regular(path, MAX_IMAGE_BYTES).map_err(|e| e.to_string())?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("not a readable image: {e}"))?;
    Ok(img.to_rgba8())
}

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
        is_digest(digest).then(|| format!("thumbs/{digest}.png"))
    }

    /// Whether the thumbnail of `digest` is already made.
    pub fn cached(&self, digest: &str) -> bool {
        is_digest(digest)
            && std::fs::metadata(self.dir.join(format!("{digest}.png")))
                .is_ok_and(|m| m.is_file() && m.len() > 0)
    }

    /// Shrinks `img` to at most [`THUMB`] a side and writes it as the
    /// thumbnail of `digest` (complete or not at all: written aside, then
    /// renamed into place).
    pub fn write(&self, digest: &str, img: &RgbaImage) -> Result<()> {
        if !is_digest(digest) {
            return Ok(());
        }
        let (w, h) = shown_size(img.width(), img.height());
        let small = image::imageops::thumbnail(img, w, h);
        let png = encode_rgba(&small)?;
        std::fs::create_dir_all(&self.dir).ctx(&self.dir, "create thumbnail folder")?;
        let path = self.dir.join(format!("{digest}.png"));
        write_atomic(&path, &png)
    }
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename,
/// so a reader (or a later cached run) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).ctx(&tmp, "write")?;
    std::fs::rename(&tmp, path).ctx(path, "rename into place")
}

/// PNG-encodes an RGBA image quickly (thumbnails are small and disposable).
pub fn encode_rgba(img: &RgbaImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let fail = |e: png::EncodingError| crate::Error::Invalid(format!("PNG encoding failed: {e}"));
    let mut w = enc.write_header().map_err(fail)?;
    w.write_image_data(img.as_raw()).map_err(fail)?;
    w.finish().map_err(fail)?;
    Ok(out)
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
        t.write(
            &d,
            &RgbaImage::from_pixel(300, 150, image::Rgba([9, 8, 7, 255])),
        )
        .unwrap();
        assert!(t.cached(&d));
        let back = decode(&tmp.path().join(Thumbs::href(&d).unwrap())).unwrap();
        assert_eq!(back.dimensions(), (128, 64));
        assert_eq!(back.get_pixel(5, 5).0, [9, 8, 7, 255]);
        assert!(Thumbs::href("../../etc/passwd").is_none());
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
