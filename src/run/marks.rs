//! A generated image's file, made on an encoder thread: its pixels
//! watermarked, encoded with its recipe chunks, then signed — each when the
//! run is configured to ([`crate::provenance`]; issue 36). The caller's
//! pixels are never changed: a watermark goes into a copy.

use super::media::{encode_png_using, png_with_image_data, Pixels, PngEncoding};
use crate::error::Result;
use crate::event::Marks;
use crate::recipe::TextChunk;
use std::sync::Arc;

/// What marks a run's generated images: its provenance configuration
/// (none in a build without the `provenance` feature).
#[cfg(feature = "watermark")]
pub(crate) type Marker = Option<Arc<crate::provenance::Provenance>>;
/// What marks a run's generated images: nothing in this build.
#[cfg(not(feature = "watermark"))]
pub(crate) type Marker = Option<Arc<()>>;

/// A generated image to encode: its pixels, recipe chunks, where it was
/// made and the inputs it was made from (image to image, inpainting).
pub(crate) struct Generated {
    /// The pixels.
    pub image: Arc<dyn Pixels>,
    /// The recipe chunks.
    pub text: Vec<TextChunk>,
    /// The call that made it.
    #[cfg_attr(not(feature = "provenance"), allow(dead_code))]
    pub origin: Arc<Origin>,
    /// Its row in the call's table.
    #[cfg_attr(not(feature = "provenance"), allow(dead_code))]
    pub row: u32,
    /// The call's input image, if any.
    #[cfg_attr(not(feature = "provenance"), allow(dead_code))]
    pub parent: Option<Parent>,
    /// The call's mask (inpainting), if any.
    #[cfg_attr(not(feature = "provenance"), allow(dead_code))]
    pub mask: Option<Arc<InputPixels>>,
}

/// The call a generated image was made by, as the recorder knows it: what
/// its manifest states whether or not the image carries a recipe (a call
/// from Python given no seed has none).
#[cfg_attr(not(feature = "provenance"), allow(dead_code))]
pub(crate) struct Origin {
    /// The run's id.
    pub run_id: String,
    /// The call's number.
    pub call: u32,
    /// The model's id.
    pub model_id: String,
    /// The weights' digest, when known.
    pub weights_digest: Option<String>,
    /// IPTC's digital source type of the call's images.
    pub source_type: &'static str,
}

/// What a generated image was made from.
#[derive(Clone)]
#[cfg_attr(not(feature = "provenance"), allow(dead_code))]
pub(crate) enum Parent {
    /// The input's pixels (stored in the run as a PNG of this encoding),
    /// shared by the call's images that were made from them.
    Pixels(Arc<InputPixels>),
    /// The file the input was read from, as it is (its own credentials in
    /// it): see [`super::Run::set_input_file`].
    File(Arc<InputFile>),
}

/// A call's input image as pixels, and its PNG once a signer needed it:
/// encoded once for all the images of the call made from it, by whichever
/// of their encoder threads gets there first.
#[cfg_attr(not(feature = "provenance"), allow(dead_code))]
pub(crate) struct InputPixels {
    /// The pixels.
    pub image: Arc<dyn Pixels>,
    /// Their PNG, or why they could not be encoded.
    png: std::sync::OnceLock<std::result::Result<Vec<u8>, String>>,
}

#[cfg_attr(not(feature = "provenance"), allow(dead_code))]
impl InputPixels {
    /// Pixels whose PNG is not made yet.
    pub fn new(image: Arc<dyn Pixels>) -> InputPixels {
        InputPixels {
            image,
            png: std::sync::OnceLock::new(),
        }
    }

    /// Their PNG in `encoding` (the run's: the same file the run stores).
    pub fn png(&self, encoding: PngEncoding) -> std::result::Result<&[u8], String> {
        self.png
            .get_or_init(|| {
                encode_png_using(self.image.as_ref(), &[], encoding).map_err(|e| e.to_string())
            })
            .as_deref()
            .map_err(Clone::clone)
    }
}

/// A video a call was given (video to video), shared by the job that
/// stores it and the manifests of the videos the call made from it: its
/// animated PNG is made once, by whichever thread needs it first, so the
/// manifests' ingredient is the very file the run stores.
pub(crate) struct InputVideo {
    /// The frames, in order.
    pub frames: Vec<Arc<dyn Pixels>>,
    /// Frames a second, as the call stated it.
    fps: f64,
    /// The file's text chunks.
    text: Vec<TextChunk>,
    /// Its animated PNG, or why it could not be made.
    apng: std::sync::OnceLock<std::result::Result<Vec<u8>, String>>,
}

impl InputVideo {
    /// Frames not encoded yet.
    pub fn new(frames: Vec<Arc<dyn Pixels>>, fps: f64, text: Vec<TextChunk>) -> InputVideo {
        InputVideo {
            frames,
            fps,
            text,
            apng: std::sync::OnceLock::new(),
        }
    }

    /// Whether these are the very `frames` (the same pixels, shared).
    pub fn is(&self, frames: &[Arc<dyn Pixels>]) -> bool {
        self.frames.len() == frames.len()
            && self
                .frames
                .iter()
                .zip(frames)
                .all(|(a, b)| std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)))
    }

    /// Its animated PNG in `encoding` (the run's), as the run stores it.
    pub fn apng(&self, encoding: PngEncoding) -> std::result::Result<&[u8], String> {
        self.apng
            .get_or_init(|| {
                let rate = super::video::FrameRate::from_fps(self.fps)?;
                let refs: Vec<&dyn Pixels> = self.frames.iter().map(|f| f.as_ref()).collect();
                super::video::encode_apng(&refs, rate, encoding, &self.text)
                    .map_err(|e| e.to_string())
            })
            .as_deref()
            .map_err(Clone::clone)
    }
}

/// A file a call's input image was read from.
#[derive(Debug)]
#[cfg_attr(not(feature = "provenance"), allow(dead_code))]
pub struct InputFile {
    /// Its name (the manifest's ingredient title).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A generated image's file as it is stored.
pub(crate) struct Encoded {
    /// The PNG.
    pub file: Vec<u8>,
    /// The marks it was given (`None` when the run marks nothing).
    pub marks: Option<Marks>,
    /// The file's SHA-256, when signing found it already.
    pub sha256: Option<[u8; 32]>,
}

impl Encoded {
    /// A file without marks.
    pub fn plain(file: Vec<u8>) -> Encoded {
        Encoded {
            file,
            marks: None,
            sha256: None,
        }
    }
}

/// The PNG of a generated image, marked as `marker` says.
pub(crate) fn encode_generated(
    g: &Generated,
    png: PngEncoding,
    marker: &Marker,
) -> Result<Encoded> {
    let Some(p) = marker else {
        return Ok(Encoded::plain(encode_png_using(
            g.image.as_ref(),
            &g.text,
            png,
        )?));
    };
    marked(g, png, p)
}

#[cfg(not(feature = "watermark"))]
fn marked(g: &Generated, png: PngEncoding, _: &Arc<()>) -> Result<Encoded> {
    Ok(Encoded::plain(encode_png_using(
        g.image.as_ref(),
        &g.text,
        png,
    )?))
}

#[cfg(feature = "watermark")]
fn marked(g: &Generated, png: PngEncoding, p: &crate::provenance::Provenance) -> Result<Encoded> {
    use crate::provenance::watermark;
    let mut marks = Marks::default();
    let file = match &p.watermark {
        Some(message) => match encode_watermarked(g.image.as_ref(), &g.text, png, message)? {
            Ok(file) => {
                marks.watermark = Some(crate::event::WatermarkMark {
                    method: watermark::METHOD.into(),
                    bits: message.as_bits(),
                });
                file
            }
            Err(why) => {
                marks.watermark_skipped = Some(why);
                encode_png_using(g.image.as_ref(), &g.text, png)?
            }
        },
        None => encode_png_using(g.image.as_ref(), &g.text, png)?,
    };
    #[allow(unused_mut)]
    let mut out = Encoded::plain(file);
    #[cfg(feature = "provenance")]
    if let Some(signing) = &p.signing {
        out = signed(signing, out.file, g, png, &mut marks);
    }
    out.marks = Some(marks);
    Ok(out)
}

/// The PNG of a generated image's pixels with `message` hidden in them,
/// with its `text` chunks, or why it gets no watermark (too small). With
/// the compact encoding each strip of rows is marked just before it is
/// filtered, so the marked image is never whole in memory: the file is
/// the same as encoding the image [`crate::provenance::watermark::embed`]
/// returns (issue 36's cost: one pass over the pixels, not three).
#[cfg(feature = "watermark")]
pub(crate) fn encode_watermarked(
    image: &dyn Pixels,
    text: &[TextChunk],
    png: PngEncoding,
    message: &crate::provenance::watermark::Message,
) -> Result<std::result::Result<Vec<u8>, String>> {
    use crate::provenance::watermark;
    let (width, height) = image.dimensions();
    let pixels = image.rgb();
    if png == PngEncoding::Fast {
        return match watermark::embed(pixels, width, height, message) {
            Ok(marked) => match image::RgbImage::from_raw(width, height, marked) {
                Some(o) => Ok(Ok(encode_png_using(&o, text, png)?)),
                None => Ok(Err(format!("{width}×{height} pixels do not fit"))),
            },
            Err(why) => Ok(Err(why)),
        };
    }
    let mut failed = None;
    let data = super::idat::image_data_of_rows(width as usize, height as usize, 3, |rows| {
        failed = watermark::embed_rows(pixels, width, height, message, rows).err();
    });
    match failed {
        Some(why) => Ok(Err(why)),
        None => Ok(Ok(png_with_image_data(width, height, text, &data)?)),
    }
}

/// The call and row a generated video was made by (what its manifest
/// states).
#[cfg_attr(not(feature = "provenance"), allow(dead_code))]
pub(crate) struct MadeBy {
    /// The call.
    pub origin: Arc<Origin>,
    /// Its row in the call's table.
    pub row: u32,
    /// The video the call made it from (video to video), if any.
    pub parent: Option<Arc<InputVideo>>,
}

/// A generated video's file (`format`: `mp4`, or `png` for an animated
/// PNG), marked as `marker` says: signed (the MP4 with C2PA's BMFF
/// binding, the animated PNG as any PNG), never watermarked — the mark is
/// made for still pictures and H.264 would not keep it — which its marks
/// say when a watermark is configured.
pub(crate) fn mark_video(
    file: Vec<u8>,
    format: &str,
    made_by: &MadeBy,
    text: &[TextChunk],
    png: PngEncoding,
    marker: &Marker,
) -> Encoded {
    match marker {
        Some(p) => marked_video(file, format, made_by, text, png, p),
        None => Encoded::plain(file),
    }
}

#[cfg(not(feature = "watermark"))]
fn marked_video(
    file: Vec<u8>,
    _: &str,
    _: &MadeBy,
    _: &[TextChunk],
    _: PngEncoding,
    _: &Arc<()>,
) -> Encoded {
    Encoded::plain(file)
}

#[cfg(feature = "watermark")]
fn marked_video(
    file: Vec<u8>,
    format: &str,
    made_by: &MadeBy,
    text: &[TextChunk],
    png: PngEncoding,
    p: &crate::provenance::Provenance,
) -> Encoded {
    let mut marks = Marks::default();
    if p.watermark.is_some() {
        marks.watermark_skipped =
            Some("a video is not watermarked (the mark is made for still pictures)".into());
    }
    #[allow(unused_mut)]
    let mut out = Encoded::plain(file);
    #[cfg(feature = "provenance")]
    if let Some(signing) = &p.signing {
        out = signed_video(signing, out.file, format, made_by, text, png, &mut marks);
    }
    #[cfg(not(feature = "provenance"))]
    let _ = (format, made_by, text, png);
    out.marks = Some(marks);
    out
}

/// A generated video signed as `signing` signs, the video it was made
/// from (as the run stores it, in `png`) its ingredient, its marks noted;
/// a failure stores it unsigned and says why.
#[cfg(feature = "provenance")]
fn signed_video(
    signing: &crate::provenance::sign::Signing,
    file: Vec<u8>,
    format: &str,
    made_by: &MadeBy,
    text: &[TextChunk],
    png: PngEncoding,
    marks: &mut Marks,
) -> Encoded {
    use crate::provenance::sign::Ingredient;
    let facts = facts(&made_by.origin, made_by.row, text);
    let mut file = file;
    let signed = (|| {
        let mut ingredients = Vec::with_capacity(1);
        if let Some(input) = &made_by.parent {
            let apng = input
                .apng(png)
                .map_err(|e| format!("the input video: {e}"))?;
            ingredients.push(Ingredient::parent("input video", apng));
        }
        if format == "mp4" {
            let signed = signing.sign_mp4(&file, &facts, &ingredients)?;
            file = signed.bytes;
            Ok(signed.sha256)
        } else {
            signing.sign_png_in(&mut file, &facts, &ingredients)
        }
    })();
    outcome(signing, file, signed, marks, "a video")
}

/// What a generated file's manifest states about the call that made it.
#[cfg(feature = "provenance")]
fn facts(o: &Origin, row: u32, text: &[TextChunk]) -> crate::provenance::sign::Facts {
    crate::provenance::sign::Facts {
        model_id: o.model_id.clone(),
        weights_digest: o.weights_digest.clone(),
        recipe_sha256: crate::provenance::sign::Facts::recipe_digest(text),
        run_id: o.run_id.clone(),
        call: o.call.into(),
        row: row.into(),
        source_type: o.source_type.to_string(),
    }
}

/// `file`, signed when `signed` holds its SHA-256, else as it was when
/// signing failed (`what` it is named in the warning), its marks noted.
#[cfg(feature = "provenance")]
fn outcome(
    signing: &crate::provenance::sign::Signing,
    file: Vec<u8>,
    signed: std::result::Result<[u8; 32], String>,
    marks: &mut Marks,
    what: &str,
) -> Encoded {
    match signed {
        Ok(sha256) => {
            marks.c2pa = Some(signing.signer_name().to_string());
            Encoded {
                file,
                marks: None,
                sha256: Some(sha256),
            }
        }
        Err(why) => {
            tracing::warn!("{what} is stored unsigned: {why}");
            marks.c2pa_error = Some(why);
            Encoded::plain(file)
        }
    }
}

/// `file` signed as `signing` signs, its marks noted; a failure stores the
/// file unsigned and says why.
#[cfg(feature = "provenance")]
fn signed(
    signing: &crate::provenance::sign::Signing,
    file: Vec<u8>,
    g: &Generated,
    png: PngEncoding,
    marks: &mut Marks,
) -> Encoded {
    use crate::provenance::sign::Ingredient;
    let facts = facts(&g.origin, g.row, &g.text);
    // The input's own file when known (its credentials kept); else the
    // input as the run stores it: the same encoding of the same pixels,
    // so the ingredient's hash is the stored file's. The same for a mask.
    let mut file = file;
    let signed = (|| {
        let mut ingredients = Vec::with_capacity(2);
        match &g.parent {
            Some(Parent::File(f)) => ingredients.push(Ingredient::parent(&f.name, &f.bytes)),
            Some(Parent::Pixels(i)) => ingredients.push(Ingredient::parent(
                "input image",
                stored("input image", i, png)?,
            )),
            None => {}
        }
        if let Some(m) = &g.mask {
            ingredients.push(Ingredient::mask(
                "mask image",
                stored("mask image", m, png)?,
            ));
        }
        signing.sign_png_in(&mut file, &facts, &ingredients)
    })();
    outcome(signing, file, signed, marks, "an image")
}

/// The PNG of a call's input (`what`) as the run stores it.
#[cfg(feature = "provenance")]
fn stored<'a>(
    what: &str,
    input: &'a InputPixels,
    png: PngEncoding,
) -> std::result::Result<&'a [u8], String> {
    input.png(png).map_err(|e| format!("the {what}: {e}"))
}

/// The marker of a run: the provenance configuration at `path`, else
/// `DIFFLOG_PROVENANCE`'s, else none.
#[cfg(feature = "watermark")]
pub(crate) fn marker(path: Option<&std::path::Path>) -> Result<Marker> {
    use crate::provenance::Provenance;
    match path {
        Some(p) => Ok(Some(Arc::new(Provenance::load(p)?))),
        None => Provenance::from_env(),
    }
}

/// The marker of a run: in a build without the `watermark` feature, a
/// configuration given (or `DIFFLOG_PROVENANCE`) is an error, never ignored.
#[cfg(not(feature = "watermark"))]
pub(crate) fn marker(path: Option<&std::path::Path>) -> Result<Marker> {
    let given = path.map(|p| p.display().to_string()).or_else(|| {
        std::env::var("DIFFLOG_PROVENANCE")
            .ok()
            .filter(|v| !v.is_empty())
    });
    match given {
        Some(value) => Err(crate::error::Error::Setting {
            name: "DIFFLOG_PROVENANCE".into(),
            value,
            why: "this build of difflog cannot sign or watermark images (its `watermark` \
                  feature is off); record with the difflog command-line tools' build"
                .into(),
        }),
        None => Ok(None),
    }
}

#[cfg(all(test, feature = "watermark"))]
mod tests {
    use super::*;
    use crate::provenance::watermark::{embed, Message};

    /// A generated image of these pixels, with a recipe chunk.
    fn generated(image: image::RgbImage) -> Generated {
        Generated {
            image: Arc::new(image),
            text: vec![("parameters".into(), "a test".into(), false)],
            origin: Arc::new(Origin {
                run_id: "run".into(),
                call: 0,
                model_id: "model".into(),
                weights_digest: None,
                source_type: crate::recipe::TRAINED_ALGORITHMIC_MEDIA,
            }),
            row: 0,
            parent: None,
            mask: None,
        }
    }

    /// Smooth structure with grain: what the mark's carriers are chosen in.
    fn natural(w: u32, h: u32, seed: u64) -> image::RgbImage {
        let mut x = seed | 1;
        image::RgbImage::from_fn(w, h, |i, j| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let grain = (x >> 60) as i32 - 8;
            let t = ((i as f64 / 17.0).sin() * (j as f64 / 11.0).cos() * 60.0) as i32;
            let c = |base: i32| (base + t + grain).clamp(0, 255) as u8;
            image::Rgb([c(100 + i as i32 / 4), c(80 + j as i32 / 5), c(140)])
        })
    }

    #[test]
    fn a_watermark_made_strip_by_strip_encodes_as_the_whole_marked_image() {
        let m = Message::from_text("difflog").unwrap();
        // Square, sides not multiples of the 8-pixel strips or the 4-pixel
        // cells' blocks, one just the method's least.
        for (w, h, seed) in [(512, 512, 1), (333, 270, 2), (270, 333, 3), (256, 256, 4)] {
            let img = natural(w, h, seed);
            let g = generated(img.clone());
            let marked = embed(img.as_raw(), w, h, &m).unwrap();
            assert_ne!(&marked, img.as_raw(), "{w}×{h}: nothing was marked");
            let marked = image::RgbImage::from_raw(w, h, marked).unwrap();
            for png in PngEncoding::ALL {
                let whole = encode_png_using(&marked, &g.text, png).unwrap();
                let file = encode_watermarked(g.image.as_ref(), &g.text, png, &m)
                    .unwrap()
                    .unwrap();
                assert!(file == whole, "{w}×{h} {png:?}: the files differ");
            }
        }
    }

    #[test]
    fn an_image_too_small_for_the_mark_says_why_and_is_not_encoded_marked() {
        let m = Message::from_text("difflog").unwrap();
        let g = generated(natural(64, 64, 5));
        for png in PngEncoding::ALL {
            let why = encode_watermarked(g.image.as_ref(), &g.text, png, &m)
                .unwrap()
                .unwrap_err();
            assert!(why.contains("smaller than"), "{why}");
        }
    }
}
