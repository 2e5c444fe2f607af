//! The content-addressed media store: PNG encoding and crash-safe placement
//! of files under `media/<sha256[..2]>/<sha256>.png`.
//!
//! A file is written to a temporary name, made durable (by an fsync of its
//! own, or with the others of its group, [`super::durable`]), renamed into
//! place and the rename made durable — only then may an event reference
//! it. A final name only ever holds complete bytes. The same image
//! twice is stored once: a name that already exists is trusted only after its
//! size and digest are checked, and replaced (atomically, by rename) when
//! they differ.

use super::durable::SyncMode;
use crate::error::{Error, IoContext, Result};
use crate::format::{media_rel_path, MEDIA_DIR, TMP_PREFIX};
use image::RgbImage;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// RGB pixels as the recorder takes them: 8 bits a channel, rows top to
/// bottom, no padding. An [`RgbImage`] is one; the Python binding hands
/// over Python's own bytes without copying them (the copy is then the
/// encoder thread's, not the caller's).
pub trait Pixels: Send + Sync {
    /// Width and height in pixels.
    fn dimensions(&self) -> (u32, u32);
    /// The `width * height * 3` bytes.
    fn rgb(&self) -> &[u8];
}

impl Pixels for RgbImage {
    fn dimensions(&self) -> (u32, u32) {
        image::ImageBuffer::dimensions(self)
    }

    fn rgb(&self) -> &[u8] {
        self.as_raw()
    }
}

/// A media file in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMedia {
    /// SHA-256 of the file, lower-case hex.
    pub digest: String,
    /// Path relative to the run directory.
    pub path: String,
    /// The file's format, its extension: one of [`crate::event::MEDIA_FORMATS`].
    pub format: &'static str,
    /// Size in bytes.
    pub bytes: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The provenance marks the file was given (a generated image).
    pub marks: Option<crate::event::Marks>,
    /// What the file plays, when it is a video.
    pub video: Option<crate::event::Video>,
}

/// How difflog compresses the image data of a PNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PngEncoding {
    /// The `png` crate's fast setting (fdeflate, least-sum filters): what
    /// difflog wrote before the compact encoding (`DIFFLOG_PNG=fast`).
    Fast,
    /// Rows filtered by least entropy, dynamic Huffman codes, matches only
    /// for runs ([`super::idat`]): ~19 % smaller than [`PngEncoding::Fast`]
    /// on natural images and no larger than PIL's default, in about the
    /// same time (issue 38). The default; `replay` accepts either.
    #[default]
    Compact,
}

impl PngEncoding {
    /// Every encoding.
    pub const ALL: [PngEncoding; 2] = [PngEncoding::Fast, PngEncoding::Compact];

    /// Reads `DIFFLOG_PNG` (`compact` or unset, or `fast`).
    pub fn from_env() -> Result<PngEncoding> {
        crate::error::env_choice(
            "DIFFLOG_PNG",
            PngEncoding::default(),
            &[
                ("fast", PngEncoding::Fast),
                ("compact", PngEncoding::Compact),
            ],
        )
    }
}

/// Encodes an RGB image as PNG the way difflog records it by default.
pub fn encode_png(img: &dyn Pixels) -> Result<Vec<u8>> {
    encode_png_with_text(img, &[])
}

/// [`encode_png`] with text chunks before the image data (the recipe of a
/// generated image, see [`crate::recipe`]): each `(keyword, text, utf8)` as
/// iTXt when `utf8`, else tEXt.
pub fn encode_png_with_text(
    img: &dyn Pixels,
    text: &[crate::recipe::TextChunk],
) -> Result<Vec<u8>> {
    encode_png_using(img, text, PngEncoding::default())
}

/// [`encode_png_with_text`] with the image data compressed by `encoding`.
/// The `png` crate writes the signature, header, text chunks and end; the
/// image data is ours with [`PngEncoding::Compact`].
pub fn encode_png_using(
    img: &dyn Pixels,
    text: &[crate::recipe::TextChunk],
    encoding: PngEncoding,
) -> Result<Vec<u8>> {
    let (width, height) = img.dimensions();
    let pixels = img.rgb();
    let expected = width as usize * height as usize * 3;
    if pixels.len() != expected {
        return Err(Error::Media {
            key: "png".into(),
            why: format!(
                "PNG encoding failed: {width}x{height} RGB needs {expected} bytes, got {}",
                pixels.len()
            ),
        });
    }
    match encoding {
        PngEncoding::Fast => write_png(width, height, text, ImageData::Pixels(pixels)),
        PngEncoding::Compact => {
            let data = super::idat::image_data(pixels, width as usize, height as usize, 3);
            write_png(width, height, text, ImageData::Zlib(&data))
        }
    }
}

/// A PNG (RGB, 8 bits a channel, no text) whose image data is `zlib`, a
/// zlib stream of filtered rows made elsewhere: the benchmarks' other
/// compressors.
pub fn png_around(width: u32, height: u32, zlib: &[u8]) -> Result<Vec<u8>> {
    png_with_image_data(width, height, &[], zlib)
}

/// A PNG (RGB, 8 bits a channel) with `text` chunks as
/// [`encode_png_using`] writes them, whose image data is `zlib`: the
/// compact encoding of pixels made as they were filtered (a watermark's).
pub(crate) fn png_with_image_data(
    width: u32,
    height: u32,
    text: &[crate::recipe::TextChunk],
    zlib: &[u8],
) -> Result<Vec<u8>> {
    write_png(width, height, text, ImageData::Zlib(zlib))
}

/// What goes into a PNG's image data.
enum ImageData<'a> {
    /// Pixels the `png` crate filters and compresses (fast).
    Pixels(&'a [u8]),
    /// A finished zlib stream, written as it is.
    Zlib(&'a [u8]),
}

fn write_png(
    width: u32,
    height: u32,
    text: &[crate::recipe::TextChunk],
    data: ImageData<'_>,
) -> Result<Vec<u8>> {
    let fail = |e: png::EncodingError| Error::Media {
        key: "png".into(),
        why: format!("PNG encoding failed: {e}"),
    };
    let mut out = Vec::with_capacity(width as usize * height as usize * 3 / 2 + 1024);
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    enc.set_filter(png::Filter::Adaptive);
    add_text(&mut enc, text).map_err(fail)?;
    let mut w = enc.write_header().map_err(fail)?;
    match data {
        ImageData::Pixels(pixels) => w.write_image_data(pixels).map_err(fail)?,
        ImageData::Zlib(z) => {
            // Chunks of at most 1 MiB (a chunk's length must stay below 2³¹).
            for part in z.chunks(1 << 20) {
                w.write_chunk(png::chunk::IDAT, part).map_err(fail)?;
            }
        }
    }
    w.finish().map_err(fail)?;
    Ok(out)
}

/// Adds PNG text chunks to an encoder before its header is written:
/// `iTXt` for those marked UTF-8 (the XMP packet, a recipe), `tEXt` else.
pub(crate) fn add_text<W: std::io::Write>(
    enc: &mut png::Encoder<'_, W>,
    text: &[crate::recipe::TextChunk],
) -> std::result::Result<(), png::EncodingError> {
    for (keyword, value, utf8) in text {
        if *utf8 {
            enc.add_itxt_chunk(keyword.clone(), value.clone())?;
        } else {
            enc.add_text_chunk(keyword.clone(), value.clone())?;
        }
    }
    Ok(())
}

pub use crate::format::{hex, sha256_hex};

/// Stores PNG bytes whose SHA-256 is `digest` in the run's media store,
/// durably: the file is synced, renamed into place and its folder synced
/// before this returns ([`SyncMode::File`]).
pub fn store_png(
    run_dir: &Path,
    digest: &str,
    png: &[u8],
    width: u32,
    height: u32,
) -> Result<StoredMedia> {
    store_file(run_dir, digest, (png, "png"), (width, height))
}

/// [`store_png`] for a file of any of [`crate::event::MEDIA_FORMATS`]
/// (`format`, its extension): an imported JPEG or WebP is kept as it is.
pub fn store_file(
    run_dir: &Path,
    digest: &str,
    (bytes, format): (&[u8], &'static str),
    (width, height): (u32, u32),
) -> Result<StoredMedia> {
    let staged = stage_file(
        run_dir,
        digest,
        (bytes, format),
        (width, height),
        SyncMode::File,
    )?;
    // The folder holds a new name only when a file was written.
    let shard = staged
        .tmp_path()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let media = staged.place()?;
    if let Some(shard) = shard {
        File::open(&shard)
            .and_then(|d| d.sync_all())
            .ctx(&shard, "sync media directory")?;
    }
    Ok(media)
}

/// A media file written under a temporary name, waiting to be renamed to
/// its final one — or already there.
pub(crate) struct Staged {
    /// Where the file will be, once placed.
    pub(crate) media: StoredMedia,
    /// The temporary file; `None` when the final name already holds these
    /// bytes.
    tmp: Option<PathBuf>,
    final_path: PathBuf,
}

impl Staged {
    /// Renames the file to its final name (nothing to do when it was
    /// there already); the temporary file is removed if that fails.
    pub(crate) fn place(self) -> Result<StoredMedia> {
        if let Some(tmp) = &self.tmp {
            if let Err(e) = std::fs::rename(tmp, &self.final_path) {
                let _ = std::fs::remove_file(tmp);
                return Err(Error::io(&self.final_path, "move media file into place", e));
            }
        }
        Ok(self.media)
    }

    /// The temporary file, when a new file was written (else the final
    /// name held the bytes already).
    pub(crate) fn tmp_path(&self) -> Option<&Path> {
        self.tmp.as_deref()
    }

    /// Removes the temporary file (the file will not be placed).
    pub(crate) fn discard(self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Writes a media file (PNG, or `format` given) whose SHA-256 is `digest`
/// to a temporary name in the run's media store, synced with [`SyncMode::File`] only (with group syncs
/// the caller makes a batch durable before placing it: a final name only
/// ever holds complete, durable bytes). Nothing is written when the final
/// name holds these bytes already.
pub(crate) fn stage_file(
    run_dir: &Path,
    digest: &str,
    (bytes, format): (&[u8], &'static str),
    (width, height): (u32, u32),
    sync: SyncMode,
) -> Result<Staged> {
    let digest = digest.to_string();
    let rel = media_rel_path(&digest, format);
    let final_path = run_dir.join(&rel);
    let shard = run_dir.join(MEDIA_DIR).join(&digest[..2]);
    let mut tmp = None;
    if !holds_exactly(&final_path, &digest, bytes.len()) {
        std::fs::create_dir_all(&shard).ctx(&shard, "create media directory")?;
        let path = shard.join(format!(
            "{TMP_PREFIX}{digest}-{:08x}",
            rand::random::<u32>()
        ));
        if let Err(e) = write_new(&path, bytes, sync.per_file()) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        tmp = Some(path);
    }
    Ok(Staged {
        media: StoredMedia {
            digest,
            path: rel,
            format,
            bytes: bytes.len() as u64,
            width,
            height,
            marks: None,
            video: None,
        },
        tmp,
        final_path,
    })
}

/// Whether `path` is a regular file of `len` bytes whose SHA-256 is `digest`.
/// A file under a final name got there by rename, so normally it does; but
/// a writer of another make, a full disk or a hand edit can leave other
/// bytes, which a new record must not point at: such a file is replaced.
fn holds_exactly(path: &Path, digest: &str, len: usize) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_file() && md.len() == len as u64 => {
            std::fs::read(path).is_ok_and(|b| sha256_hex(&b) == digest)
        }
        _ => false,
    }
}

fn write_new(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .ctx(path, "create media file")?;
    f.write_all(bytes).ctx(path, "write media file")?;
    if sync {
        f.sync_all().ctx(path, "sync media file")?;
    }
    Ok(())
}

/// Removes temporary files a crashed writer left in the media store.
pub(crate) fn remove_leftovers(run_dir: &Path) {
    let Ok(shards) = std::fs::read_dir(run_dir.join(MEDIA_DIR)) else {
        return;
    };
    for shard in shards.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for f in files.flatten() {
            if f.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact PNG is a PNG every reader takes: the `png` crate decodes
    /// it to the same pixels, with the text chunks kept, for a smooth image
    /// with grain (where it is smaller than the fast encoding), a flat one,
    /// an odd size and a one-pixel image.
    #[test]
    fn compact_pngs_decode_to_their_pixels() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let smooth = RgbImage::from_fn(96, 64, |x, y| {
            let g: u8 = rng.random_range(0..3);
            image::Rgb([
                (x * 2) as u8 + g,
                (y * 3) as u8 + g,
                ((x + y) as u8) / 2 + g,
            ])
        });
        let flat = RgbImage::from_fn(80, 80, |x, _| {
            image::Rgb(if x < 30 { [200, 40, 40] } else { [30, 60, 150] })
        });
        let odd = RgbImage::from_fn(13, 7, |x, y| image::Rgb([x as u8 * 19, y as u8 * 31, 255]));
        let one = RgbImage::from_pixel(1, 1, image::Rgb([1, 2, 3]));
        let text = vec![("parameters".to_string(), "a cat".to_string(), false)];
        for img in [&smooth, &flat, &odd, &one] {
            let png = encode_png_using(img, &text, PngEncoding::Compact).unwrap();
            let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
            assert_eq!(&decoded, img, "{:?}", img.dimensions());
            let d = png::Decoder::new(std::io::Cursor::new(&png))
                .read_info()
                .unwrap();
            assert_eq!(d.info().uncompressed_latin1_text[0].text, "a cat");
        }
        let compact = encode_png_using(&smooth, &[], PngEncoding::Compact).unwrap();
        let fast = encode_png_using(&smooth, &[], PngEncoding::Fast).unwrap();
        assert!(
            compact.len() < fast.len(),
            "{} vs {}",
            compact.len(),
            fast.len()
        );
    }

    #[test]
    fn same_bytes_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8 * 9, y as u8 * 20, 7]));
        let png = encode_png(&img).unwrap();
        let d = sha256_hex(&png);
        let a = store_png(dir.path(), &d, &png, 16, 8).unwrap();
        let b = store_png(dir.path(), &d, &png, 16, 8).unwrap();
        assert_eq!(a, b);
        assert_eq!(std::fs::read(dir.path().join(&a.path)).unwrap(), png);
        let files: Vec<_> = std::fs::read_dir(dir.path().join(MEDIA_DIR).join(&a.digest[..2]))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1);
        let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(decoded, img);
    }

    /// Issue 21 (5): a partial file under the final name (left by a kill
    /// mid-write of a writer that wrote in place, or by a hand edit) is not
    /// trusted when the same image is stored again: it is replaced.
    #[test]
    fn a_partial_file_under_the_final_name_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 7, y as u8 * 5, 3]));
        let png = encode_png(&img).unwrap();
        let d = sha256_hex(&png);
        let rel = media_rel_path(&d, "png");
        let path = dir.path().join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for bad in [&png[..png.len() / 2], &vec![0u8; png.len()][..]] {
            std::fs::write(&path, bad).unwrap();
            store_png(dir.path(), &d, &png, 32, 32).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), png);
        }
    }
}
