//! The copy of an image's metadata hidden in its pixels' lowest bits
//! ("stealth pnginfo"): NovelAI writes its text chunks, as gzipped JSON,
//! into the alpha channel too, and that copy survives what strips text
//! chunks (an upload that re-saves the pixels, a chat app); the A1111 and
//! ComfyUI "stealth" extensions write A1111's `parameters` text the same
//! way, or into the red, green and blue channels' lowest bits. A file whose
//! text chunks say nothing can still say how it was made.
//!
//! The layout (NovelAI's `nai_meta_writer.py`, 2026-02, and the A1111
//! extension): one bit per pixel (three in the RGB variants: red, green,
//! blue), pixels column by column (x outer, y inner), bits most significant
//! first; a 15-byte signature (`stealth_pngcomp` NovelAI's; `…info`
//! uncompressed, `stealth_rgb…` in the colour channels), the payload's
//! length in bits (32-bit big-endian), the payload (gzip for `…comp`).
//!
//! Bounded like every reader here: the image's size is capped before its
//! pixels are decoded, a file without the signature is left after its first
//! 120 rows, the payload must fit the pixels and a cap, and its inflated
//! text another.

use std::io::Read;

/// The most pixels of an image whose hidden copy is looked for.
pub const MAX_PIXELS: u64 = 1 << 26;
/// The most bytes a hidden payload may have.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The most bytes its text may inflate to.
pub const MAX_TEXT: usize = 4 << 20;

/// A hidden copy found in an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Hidden {
    /// Its signature: `stealth_pngcomp` (NovelAI's), `stealth_pnginfo`,
    /// `stealth_rgbcomp` or `stealth_rgbinfo`.
    pub signature: String,
    /// What it holds as (keyword, text) pairs, as the text chunks would
    /// give them: a JSON object's members (NovelAI: `Description`,
    /// `Software`, `Source`, `Comment`, …), else the text as `parameters`.
    pub texts: Vec<(String, String)>,
}

/// The signature's length, in bytes.
const SIGNATURE_LEN: usize = 15;
/// Rows read before the signature is checked: it lies in the first
/// column's first 120 pixels (40 in the colour variants).
const SIGNATURE_ROWS: usize = SIGNATURE_LEN * 8;

/// Where a pixel's samples are: bytes per pixel, a row's length in bytes,
/// rows.
#[derive(Clone, Copy)]
struct Layout {
    channels: usize,
    stride: usize,
    height: usize,
}

/// The bits one channel set holds, in reading order.
struct Bits<'a> {
    pixels: &'a [u8],
    layout: Layout,
    /// The channels read, in order, and the next bit.
    read: &'a [usize],
    next: usize,
    /// How many bits there are (of the rows decoded).
    len: usize,
}

impl<'a> Bits<'a> {
    /// The bits of `read` in `pixels`, from bit `next` to `len`.
    fn new(
        pixels: &'a [u8],
        layout: Layout,
        read: &'a [usize],
        (next, len): (usize, usize),
    ) -> Self {
        Bits {
            pixels,
            layout,
            read,
            next,
            len,
        }
    }

    fn bit(&mut self) -> Option<u8> {
        if self.next >= self.len {
            return None;
        }
        let per = self.read.len();
        let (pixel, channel) = (self.next / per, self.read[self.next % per]);
        let Layout {
            channels,
            stride,
            height,
        } = self.layout;
        let (x, y) = (pixel / height, pixel % height);
        self.next += 1;
        self.pixels
            .get(y * stride + x * channels + channel)
            .map(|v| v & 1)
    }

    fn byte(&mut self) -> Option<u8> {
        (0..8).try_fold(0u8, |b, _| Some(b << 1 | self.bit()?))
    }

    fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// Bytes left.
    fn left(&self) -> usize {
        (self.len - self.next) / 8
    }
}

/// The channel sets a hidden copy may be in: the signature's prefix and
/// the channels, for the decoded colour type's `channels`.
fn sets(channels: usize) -> Vec<(&'static str, Vec<usize>)> {
    let mut out = Vec::new();
    if channels == 4 || channels == 2 {
        out.push(("stealth_png", vec![channels - 1]));
    }
    if channels >= 3 {
        out.push(("stealth_rgb", vec![0, 1, 2]));
    }
    out
}

/// The hidden copy in a PNG's pixels, if there is one (`None` for a file
/// that is not a PNG). `Err` says why a copy whose signature is there
/// cannot be read (cut short, too large, not gzip, not UTF-8) or why the
/// PNG cannot be decoded.
pub fn read_hidden(png: &[u8]) -> Result<Option<Hidden>, String> {
    if super::exif::format_of(png) != Some(super::exif::Format::Png) {
        return Ok(None);
    }
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let (width, height) = (reader.info().width, reader.info().height);
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Ok(None);
    }
    let (color, depth) = reader.output_color_type();
    if depth != png::BitDepth::Eight {
        return Ok(None);
    }
    let channels = color.samples();
    let sets = sets(channels);
    if sets.is_empty() {
        return Ok(None);
    }
    let (width, height) = (width as usize, height as usize);
    let stride = width * channels;
    let interlaced = reader.info().interlaced;
    let mut pixels = Vec::new();
    if interlaced {
        let size = reader
            .output_buffer_size()
            .ok_or("the image is too large to decode")?;
        pixels.resize(size, 0);
        reader
            .next_frame(&mut pixels)
            .map_err(|e| format!("its pixels cannot be decoded: {e}"))?;
    }
    let mut rows = if interlaced { height } else { 0 };
    let mut read_rows = |pixels: &mut Vec<u8>, rows: &mut usize, until: usize| {
        while *rows < until {
            match reader.next_row() {
                Ok(Some(row)) => pixels.extend_from_slice(row.data()),
                Ok(None) => break,
                Err(e) => return Err(format!("its pixels cannot be decoded: {e}")),
            }
            *rows += 1;
        }
        Ok(())
    };
    read_rows(&mut pixels, &mut rows, SIGNATURE_ROWS.min(height))?;
    for (prefix, read) in &sets {
        let per = read.len();
        // What the decoded rows hold of the first column (or the whole
        // image, once every row is read).
        let len = if rows < height {
            rows * per
        } else {
            width * height * per
        };
        let layout = Layout {
            channels,
            stride,
            height,
        };
        let mut b = Bits::new(&pixels, layout, read, (0, len));
        let Some(signature) = b.bytes(SIGNATURE_LEN) else {
            continue;
        };
        if !signature.starts_with(prefix.as_bytes()) {
            continue;
        }
        let signature = String::from_utf8_lossy(&signature).into_owned();
        let compressed = match &signature[prefix.len()..] {
            "comp" => true,
            "info" => false,
            _ => continue,
        };
        read_rows(&mut pixels, &mut rows, height)?;
        let mut b = Bits::new(
            &pixels,
            layout,
            read,
            (SIGNATURE_LEN * 8, width * height * per),
        );
        return payload(&mut b, compressed).map(|texts| Some(Hidden { signature, texts }));
    }
    Ok(None)
}

/// The payload after the signature: its length, its bytes, inflated and
/// read as text.
fn payload(b: &mut Bits<'_>, compressed: bool) -> Result<Vec<(String, String)>, String> {
    let len = b
        .bytes(4)
        .and_then(|l| l.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or("it is cut short before its length")? as usize
        / 8;
    if len == 0 || len > b.left() || len > MAX_PAYLOAD {
        return Err(format!(
            "its length, {len} bytes, is not within what the image holds ({} bytes) and {} MiB",
            b.left(),
            MAX_PAYLOAD >> 20
        ));
    }
    let data = b.bytes(len).ok_or("it is cut short")?;
    let data = if compressed {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&data[..])
            .take(MAX_TEXT as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("its gzip data cannot be inflated: {e}"))?;
        if out.len() > MAX_TEXT {
            return Err(format!(
                "it inflates past {} MiB (a compression bomb?)",
                MAX_TEXT >> 20
            ));
        }
        out
    } else {
        data
    };
    let text = String::from_utf8(data).map_err(|_| "its text is not UTF-8".to_string())?;
    Ok(match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                v => (k, v.to_string()),
            })
            .collect(),
        _ => vec![(crate::recipe::PARAMETERS.to_string(), text)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An RGBA PNG (`w` × `h`) whose alpha hides `stream` as NovelAI's
    /// writer lays it out; alpha 255 elsewhere.
    fn hide(stream: &[u8], (w, h): (usize, usize), rgb: bool) -> Vec<u8> {
        let mut px = vec![200u8; w * h * 4];
        for p in px.chunks_mut(4) {
            p[3] = 255;
        }
        let per = if rgb { 3 } else { 1 };
        for (i, bit) in stream
            .iter()
            .flat_map(|b| (0..8).rev().map(move |k| (b >> k) & 1))
            .enumerate()
        {
            let (pixel, c) = (i / per, if rgb { i % 3 } else { 3 });
            let (x, y) = (pixel / h, pixel % h);
            let at = (y * w + x) * 4 + c;
            px[at] = (px[at] & 0xfe) | bit;
        }
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&px).unwrap();
        drop(wr);
        out
    }

    fn gz(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    fn stream(sig: &str, payload: &[u8]) -> Vec<u8> {
        let mut s = sig.as_bytes().to_vec();
        s.extend_from_slice(&((payload.len() * 8) as u32).to_be_bytes());
        s.extend_from_slice(payload);
        s
    }

    #[test]
    fn every_variant_is_read_and_the_rest_is_refused_by_reason() {
        let json = r#"{"Software": "NovelAI", "Comment": "{\"seed\": 1}"}"#;
        // Taller than the signature's rows, and shorter (several columns).
        for size in [(40, 200), (200, 40)] {
            let got = read_hidden(&hide(&stream("stealth_pngcomp", &gz(json)), size, false))
                .unwrap()
                .unwrap();
            assert_eq!(got.signature, "stealth_pngcomp");
            assert_eq!(
                got.texts,
                [
                    ("Software".to_string(), "NovelAI".to_string()),
                    ("Comment".to_string(), "{\"seed\": 1}".to_string())
                ]
            );
        }
        let a1111 = "a cat\nSteps: 20, Seed: 5";
        let got = read_hidden(&hide(
            &stream("stealth_rgbinfo", a1111.as_bytes()),
            (60, 60),
            true,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(got.signature, "stealth_rgbinfo");
        assert_eq!(got.texts, [("parameters".to_string(), a1111.to_string())]);
        // None: no signature.
        assert_eq!(read_hidden(&hide(b"", (64, 64), false)).unwrap(), None);
        // Refused, saying why.
        let mut long = stream("stealth_pngcomp", &gz(json));
        long[15..19].copy_from_slice(&0x00ff_ff00u32.to_be_bytes());
        let e = read_hidden(&hide(&long, (64, 64), false)).unwrap_err();
        assert!(e.contains("not within what the image holds"), "{e}");
        let e = read_hidden(&hide(
            &stream("stealth_pngcomp", b"not gzip"),
            (64, 64),
            false,
        ))
        .unwrap_err();
        assert!(e.contains("cannot be inflated"), "{e}");
        let bomb = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&vec![b'a'; MAX_TEXT + 10]).unwrap();
            e.finish().unwrap()
        };
        let e =
            read_hidden(&hide(&stream("stealth_pngcomp", &bomb), (512, 512), false)).unwrap_err();
        assert!(e.contains("compression bomb"), "{e}");
        let e = read_hidden(&hide(
            &stream("stealth_pnginfo", &[0xff, 0xfe]),
            (64, 64),
            false,
        ))
        .unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
    }
}
