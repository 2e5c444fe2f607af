//! A PIL image's pixels read through its Arrow export (Pillow ≥ 11.2).
//!
//! `Image.tobytes()` packs every pixel in Python's thread (about 0.3 ms for
//! a 512² RGB image); Pillow also exports an image as an Arrow array that
//! points at its own memory. Copying that memory is one `memcpy`, and the
//! padding byte Pillow keeps after each RGB pixel is dropped later, on the
//! encoder's thread. This module holds the one `unsafe` of the extension:
//! reading the Arrow C data interface's structs behind Pillow's capsules,
//! each field checked against the image's size before a byte is read.
//! Anything other than what is expected answers `None`, and the caller
//! falls back to `tobytes()`.

use difflog::run::media::Pixels;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyCapsuleMethods, PyTuple};
use std::ffi::{c_char, c_void, CStr};
use std::sync::{Mutex, OnceLock};

/// The Arrow C data interface's schema (arrow.apache.org/docs/format/CDataInterface.html).
#[repr(C)]
struct ArrowSchema {
    format: *const c_char,
    name: *const c_char,
    metadata: *const c_char,
    flags: i64,
    n_children: i64,
    children: *mut *mut ArrowSchema,
    dictionary: *mut ArrowSchema,
    release: Option<unsafe extern "C" fn(*mut ArrowSchema)>,
    private_data: *mut c_void,
}

/// The Arrow C data interface's array.
#[repr(C)]
struct ArrowArray {
    length: i64,
    null_count: i64,
    offset: i64,
    n_buffers: i64,
    n_children: i64,
    buffers: *mut *const c_void,
    children: *mut *mut ArrowArray,
    dictionary: *mut ArrowArray,
    release: Option<unsafe extern "C" fn(*mut ArrowArray)>,
    private_data: *mut c_void,
}

/// RGB pixels kept as Pillow keeps them (four bytes a pixel, the fourth
/// padding); the padding is dropped on first read, by the encoder.
pub struct RgbxPixels {
    width: u32,
    height: u32,
    rgbx: Vec<u8>,
    rgb: OnceLock<Vec<u8>>,
}

impl Pixels for RgbxPixels {
    fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn rgb(&self) -> &[u8] {
        self.rgb.get_or_init(|| {
            let mut out = Vec::with_capacity(self.rgbx.len() / 4 * 3);
            for px in self.rgbx.chunks_exact(4) {
                out.extend_from_slice(&px[..3]);
            }
            out
        })
    }
}

impl Drop for RgbxPixels {
    /// The buffer goes to [`SPARE`] for the next copy, within its bound.
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.rgbx);
        let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
        let kept: usize = spare.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= SPARE_BYTES {
            spare.push(buf);
        }
    }
}

/// Buffers of images the encoder is done with, for the next copies: a
/// fresh buffer costs the caller's thread its page faults (1.16 ms for a
/// 512² image here, against 0.17 ms for the copy into memory used before),
/// and a video hands over dozens of frames at once.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Most bytes kept in [`SPARE`] (four 16-frame 512² videos).
const SPARE_BYTES: usize = 64 << 20;

/// A copy of `data`, in a spare buffer of about its size when there is one.
fn copied(data: &[u8]) -> Vec<u8> {
    let reused = {
        let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
        spare
            .iter()
            .position(|b| {
                b.capacity() >= data.len() && b.capacity() <= data.len().saturating_mul(2)
            })
            .map(|i| spare.swap_remove(i))
    };
    let mut out = reused.unwrap_or_else(|| Vec::with_capacity(data.len()));
    out.clear();
    out.extend_from_slice(data);
    out
}

fn pointer(capsule: &Bound<'_, PyAny>, name: &CStr) -> Option<*mut c_void> {
    // The name is checked by Python (a capsule of another name fails).
    let c = capsule.cast::<PyCapsule>().ok()?;
    Some(c.pointer_checked(Some(name)).ok()?.as_ptr())
}

/// The pixels of `image` (a PIL image in mode `RGB`, `width` × `height`)
/// copied from its Arrow export; `None` when there is none (older Pillow,
/// an image in several blocks of memory) or it is not laid out as an RGB
/// image of that size.
pub fn rgb_from_pil(image: &Bound<'_, PyAny>, width: u32, height: u32) -> Option<RgbxPixels> {
    let pixels = (width as usize).checked_mul(height as usize)?;
    if pixels == 0 {
        return None;
    }
    let bytes = pixels.checked_mul(4)?;
    let pair = image.call_method0("__arrow_c_array__").ok()?;
    let pair = pair.cast::<PyTuple>().ok()?;
    if pair.len() != 2 {
        return None;
    }
    let schema = pair.get_item(0).ok()?;
    let array = pair.get_item(1).ok()?;
    let schema = pointer(&schema, c"arrow_schema")? as *const ArrowSchema;
    let array = pointer(&array, c"arrow_array")? as *const ArrowArray;
    // SAFETY: the capsules are Pillow's, named as the Arrow PyCapsule
    // interface names them, so they hold these structs; `pair` keeps them
    // (and so the image's memory) alive until this function returns. Every
    // pointer is checked for null and every length against the image's
    // size before it is followed; nothing is written and nothing is kept.
    unsafe {
        let s = &*schema;
        let a = &*array;
        if s.release.is_none() || a.release.is_none() {
            return None; // already released: moved out by someone else
        }
        if s.format.is_null() || CStr::from_ptr(s.format).to_bytes() != b"+w:4" {
            return None;
        }
        if s.n_children != 1 || s.children.is_null() || (*s.children).is_null() {
            return None;
        }
        let child_schema = &**s.children;
        if child_schema.format.is_null() || CStr::from_ptr(child_schema.format).to_bytes() != b"C" {
            return None;
        }
        if a.length != pixels as i64 || a.offset != 0 || a.null_count > 0 {
            return None;
        }
        if a.n_children != 1 || a.children.is_null() || (*a.children).is_null() {
            return None;
        }
        let c = &**a.children;
        if c.n_buffers != 2 || c.buffers.is_null() || c.null_count > 0 || c.offset != 0 {
            return None;
        }
        if c.length != bytes as i64 {
            return None;
        }
        let data = *c.buffers.add(1) as *const u8;
        if data.is_null() {
            return None;
        }
        let rgbx = copied(std::slice::from_raw_parts(data, bytes));
        Some(RgbxPixels {
            width,
            height,
            rgbx,
            rgb: OnceLock::new(),
        })
    }
}
