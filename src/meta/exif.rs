//! Generation metadata in JPEG and WebP files: A1111, Forge, Fooocus and
//! SwarmUI write their text into EXIF's `UserComment` (Fooocus its scheme
//! into `MakerNote` and its name into `Software`), some tools a JPEG
//! comment. This reads those into the (keyword, text) pairs the PNG readers
//! take, so one set of readers serves every format. Bounded: a file is
//! walked segment by segment (chunk by chunk), an IFD's entries are
//! capped, and every offset is checked against the data it points into.

/// The most entries read from one IFD.
const MAX_ENTRIES: usize = 512;

/// The image formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PNG (text chunks).
    Png,
    /// JPEG (EXIF in APP1, comments).
    Jpeg,
    /// WebP (an `EXIF` chunk).
    Webp,
}

/// The format of `bytes`, by its signature.
pub fn format_of(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(Format::Jpeg)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(Format::Webp)
    } else {
        None
    }
}

/// The text a JPEG or WebP file carries, as (keyword, text) pairs:
/// `parameters` (EXIF `UserComment`), `fooocus_scheme` (Fooocus's
/// `MakerNote`), `Software`, `ImageDescription`, `Comment` (JPEG COM), and
/// its XMP packet under PNG's keyword for it, `XML:com.adobe.xmp` (JPEG's
/// APP1 segment, WebP's `XMP ` chunk).
pub fn texts(bytes: &[u8], format: Format) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let tiffs: Vec<&[u8]> = match format {
        Format::Jpeg => jpeg_segments(bytes, &mut out),
        Format::Webp => webp_exif(bytes, &mut out),
        Format::Png => Vec::new(),
    };
    for tiff in tiffs {
        read_tiff(tiff, &mut out);
    }
    out
}

/// The EXIF blocks (TIFF data) of a JPEG, its comments added to `out`.
fn jpeg_segments<'a>(b: &'a [u8], out: &mut Vec<(String, String)>) -> Vec<&'a [u8]> {
    let mut tiffs = Vec::new();
    let mut i = 2;
    while i + 4 <= b.len() && b[i] == 0xff {
        let marker = b[i + 1];
        // Start of scan, end of image: no metadata after them.
        if marker == 0xda || marker == 0xd9 {
            break;
        }
        // Markers without a length (fill bytes, restart markers).
        if marker == 0xff || (0xd0..=0xd7).contains(&marker) || marker == 0x01 {
            i += if marker == 0xff { 1 } else { 2 };
            continue;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        let Some(body) = b.get(i + 4..i + 2 + len).filter(|_| len >= 2) else {
            break;
        };
        match marker {
            0xe1 if body.starts_with(b"Exif\0\0") => tiffs.push(&body[6..]),
            0xe1 if body.starts_with(JPEG_XMP) => out.push((
                super::xmp::KEYWORD.into(),
                String::from_utf8_lossy(&body[JPEG_XMP.len()..]).into_owned(),
            )),
            0xfe => out.push(("Comment".into(), latin1_or_utf8(body))),
            _ => {}
        }
        i += 2 + len;
    }
    tiffs
}

/// The signature of a JPEG's XMP segment (APP1).
const JPEG_XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

/// The EXIF chunk of a WebP file (some writers prefix it with `Exif\0\0`);
/// its XMP chunk is added to `out`.
fn webp_exif<'a>(b: &'a [u8], out_texts: &mut Vec<(String, String)>) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut i = 12;
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let len = u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
        let Some(body) = b.get(i + 8..(i + 8).saturating_add(len)) else {
            break;
        };
        if id == b"EXIF" {
            out.push(body.strip_prefix(b"Exif\0\0").unwrap_or(body));
        } else if id == b"XMP " {
            out_texts.push((
                super::xmp::KEYWORD.into(),
                String::from_utf8_lossy(body).into_owned(),
            ));
        }
        // Chunks are padded to an even length.
        i += 8 + len + (len & 1);
    }
    out
}

/// A TIFF block's byte order, for reading its numbers.
#[derive(Clone, Copy)]
struct Tiff<'a> {
    b: &'a [u8],
    little: bool,
}

impl Tiff<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        let s: [u8; 2] = self.b.get(at..at + 2)?.try_into().ok()?;
        Some(if self.little {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let s: [u8; 4] = self.b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.little {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    }

    /// The entries of the IFD at `at`: (tag, type, the value's bytes).
    fn ifd(&self, at: usize) -> Vec<(u16, u16, &[u8])> {
        let mut out = Vec::new();
        let Some(n) = self.u16(at) else { return out };
        for k in 0..usize::from(n).min(MAX_ENTRIES) {
            let e = at + 2 + 12 * k;
            let (Some(tag), Some(kind), Some(count)) =
                (self.u16(e), self.u16(e + 2), self.u32(e + 4))
            else {
                break;
            };
            // Bytes a value of this type takes (BYTE, ASCII, SHORT, LONG,
            // RATIONAL, UNDEFINED…).
            let size = match kind {
                1 | 2 | 6 | 7 => 1,
                3 | 8 => 2,
                4 | 9 | 11 => 4,
                5 | 10 | 12 => 8,
                _ => continue,
            };
            let Some(total) = (count as usize).checked_mul(size) else {
                continue;
            };
            let value = if total <= 4 {
                self.b.get(e + 8..e + 8 + total)
            } else {
                self.u32(e + 8)
                    .and_then(|off| self.b.get(off as usize..(off as usize).checked_add(total)?))
            };
            if let Some(v) = value {
                out.push((tag, kind, v));
            }
        }
        out
    }
}

/// The texts of a TIFF block: IFD0's `ImageDescription` and `Software`,
/// `UserComment` and `MakerNote` from the EXIF IFD — or from IFD0, where
/// Fooocus's `image.getexif()` puts them.
fn read_tiff(b: &[u8], out: &mut Vec<(String, String)>) {
    let little = match b.get(..4) {
        Some(b"II*\0") => true,
        Some(b"MM\0*") => false,
        _ => return,
    };
    let t = Tiff { b, little };
    let Some(ifd0) = t.u32(4) else { return };
    let mut entries = t.ifd(ifd0 as usize);
    let software = entries.iter().find(|e| e.0 == 0x0131).map(|e| ascii(e.2));
    if let Some(exif) = entries
        .iter()
        .find(|e| e.0 == 0x8769 && e.2.len() == 4)
        .and_then(|e| t.u32_of(e.2))
    {
        entries.extend(t.ifd(exif as usize));
    }
    let fooocus = software
        .as_deref()
        .is_some_and(|s| s.starts_with("Fooocus"));
    for (tag, kind, v) in entries {
        match tag {
            0x010e => out.push(("ImageDescription".into(), ascii(v))),
            0x0131 => out.push(("Software".into(), ascii(v))),
            // UNDEFINED carries a character code first; ASCII does not.
            0x9286 if kind == 7 => out.push(("parameters".into(), user_comment(v))),
            0x9286 => out.push(("parameters".into(), ascii(v))),
            0x927c if fooocus => out.push(("fooocus_scheme".into(), ascii(v))),
            _ => {}
        }
    }
}

impl Tiff<'_> {
    /// A LONG held in an entry's own four bytes.
    fn u32_of(&self, v: &[u8]) -> Option<u32> {
        Tiff {
            b: v,
            little: self.little,
        }
        .u32(0)
    }
}

/// An ASCII (or UTF-8) value without its NUL terminator.
fn ascii(v: &[u8]) -> String {
    let end = v.iter().position(|c| *c == 0).unwrap_or(v.len());
    latin1_or_utf8(&v[..end])
}

/// UTF-8 where the bytes are, else Latin-1.
fn latin1_or_utf8(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_string(),
        Err(_) => v.iter().map(|b| char::from(*b)).collect(),
    }
}

/// EXIF's `UserComment`: an 8-byte character code, then the text —
/// `UNICODE\0` is UTF-16 (big-endian, as piexif writes it, which A1111
/// uses; little-endian when that is what reads as text), `ASCII\0\0\0`,
/// or undefined (read as UTF-8).
fn user_comment(v: &[u8]) -> String {
    let (code, text) = v.split_at(v.len().min(8));
    match code {
        b"UNICODE\0" => {
            let units = |little: bool| -> Vec<u16> {
                text.chunks_exact(2)
                    .map(|c| {
                        if little {
                            u16::from_le_bytes([c[0], c[1]])
                        } else {
                            u16::from_be_bytes([c[0], c[1]])
                        }
                    })
                    .collect()
            };
            let be = String::from_utf16(&units(false)).ok();
            // Text written little-endian reads big-endian as unpaired
            // surrogates or CJK where ASCII was: prefer the one with ASCII.
            let le = String::from_utf16(&units(true)).ok();
            let ascii_share = |s: &Option<String>| {
                s.as_ref()
                    .map_or(0, |s| s.chars().filter(char::is_ascii).count())
            };
            let best = if ascii_share(&le) > ascii_share(&be) {
                le
            } else {
                be
            };
            best.unwrap_or_default().trim_end_matches('\0').to_string()
        }
        _ => ascii(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_offsets_and_lengths_read_nothing() {
        // An IFD claiming 65535 entries and offsets past the end.
        let mut t = b"II*\0\x08\0\0\0\xff\xff".to_vec();
        t.extend_from_slice(&[0x69, 0x87, 4, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]);
        let mut out = Vec::new();
        read_tiff(&t, &mut out);
        assert!(out.is_empty());
        // A JPEG whose segment length runs past the end.
        assert!(texts(&[0xff, 0xd8, 0xff, 0xe1, 0xff, 0xff, b'E'], Format::Jpeg).is_empty());
        // A WebP chunk claiming 4 GiB.
        let w = b"RIFF\0\0\0\0WEBPEXIF\xff\xff\xff\xffII*\0";
        assert!(texts(w, Format::Webp).is_empty());
    }

    #[test]
    fn a_user_comment_in_either_utf16_order_is_read() {
        let text = "a cat\nSteps: 20";
        let be: Vec<u8> = b"UNICODE\0"
            .iter()
            .copied()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        let le: Vec<u8> = b"UNICODE\0"
            .iter()
            .copied()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(user_comment(&be), text);
        assert_eq!(user_comment(&le), text);
        assert_eq!(user_comment(b"ASCII\0\0\0plain"), "plain");
    }
}
