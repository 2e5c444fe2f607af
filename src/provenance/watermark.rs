//! An invisible watermark that the `invisible-watermark` package reads: its
//! `dwtDct` method, the one diffusers' SDXL pipelines apply by default. The
//! message's bits are hidden in the image's own pixels, so they survive
//! what strips a file's metadata (a screenshot of the PNG's pixels, a
//! re-encode to another lossless format), though not a resize or a crop.
//!
//! The method (the package's facts, re-implemented): the image goes to YUV
//! (BT.601, as OpenCV converts 8-bit BGR to YUV); the U channel gets one
//! Haar wavelet level (the package's loop stops before V); the low band is
//! cut into 4×4 blocks, row by row, and block *n* carries bit *n mod len*
//! in its largest coefficient but the first (despite the method's name, no
//! DCT is taken): moved into the upper quarter of its 36-wide step for a 1,
//! the lower for a 0. Reading takes the bit each block says and lets the
//! blocks of each bit vote. Images under 256×256 pixels get no watermark,
//! as with diffusers (the package refuses them).

/// diffusers' SDXL watermark (`WATERMARK_MESSAGE`), the default message.
pub const SDXL_BITS: &str = "101100111110110010010000011110111011000110011110";
/// The most bits a message may have.
pub const MAX_BITS: usize = 256;
/// The method's name, as the package names it.
pub const METHOD: &str = "dwtDct";

/// The bits a watermark carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    bits: Vec<bool>,
}

impl Message {
    /// The message of a `[watermark]` table: `text` (its UTF-8 bytes, as
    /// the package's `bytes` type takes them) or `bits` (`0` and `1`),
    /// else diffusers' SDXL mark.
    pub(crate) fn from_table(t: &toml::Table) -> Result<Message, String> {
        for key in t.keys() {
            if key != "text" && key != "bits" {
                return Err(format!("[watermark] has no setting {key:?}: text, bits"));
            }
        }
        match (t.get("text"), t.get("bits")) {
            (Some(_), Some(_)) => Err("[watermark] takes text or bits, not both".into()),
            (Some(toml::Value::String(s)), None) => Message::from_text(s),
            (None, Some(toml::Value::String(s))) => Message::from_bits(s),
            (None, None) => Message::from_bits(SDXL_BITS),
            _ => Err("[watermark] text and bits are strings".into()),
        }
    }

    /// A message of a text's UTF-8 bytes, each byte's bits high first.
    pub fn from_text(text: &str) -> Result<Message, String> {
        let bits: String = text.bytes().map(|b| format!("{b:08b}")).collect();
        Message::from_bits(&bits).map_err(|e| format!("watermark text {text:?}: {e}"))
    }

    /// A message of `0`s and `1`s.
    pub fn from_bits(s: &str) -> Result<Message, String> {
        if s.is_empty() || s.len() > MAX_BITS {
            return Err(format!("a watermark has 1 to {MAX_BITS} bits"));
        }
        let bits = s
            .chars()
            .map(|c| match c {
                '0' => Ok(false),
                '1' => Ok(true),
                _ => Err(format!("watermark bits are 0 and 1, not {c:?}")),
            })
            .collect::<Result<Vec<bool>, String>>()?;
        Ok(Message { bits })
    }

    /// The bits, as `0`s and `1`s.
    pub fn as_bits(&self) -> String {
        self.bits
            .iter()
            .map(|&b| if b { '1' } else { '0' })
            .collect()
    }

    /// The number of bits.
    pub fn len(&self) -> usize {
        self.bits.len()
    }

    /// Whether there are none (never, for a message made here).
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }
}

/// The quantisation step of the method (the package's scale for U).
const SCALE: f64 = 36.0;
/// The block side in the wavelet's low band.
const BLOCK: usize = 4;
/// Haar's coefficient, as PyWavelets has it.
const S: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// Why an image of this size gets no watermark, if it gets none.
pub fn too_small(width: u32, height: u32) -> Option<String> {
    if u64::from(width) * u64::from(height) < 256 * 256 || width < 8 || height < 8 {
        Some(format!(
            "a {width}×{height} image is smaller than the method's 256×256 pixels"
        ))
    } else {
        None
    }
}

/// OpenCV's 8-bit BGR → YUV (BT.601, 14-bit fixed point): Y, U, V of
/// components 0 – 255.
#[inline(always)]
fn yuv(r: i32, g: i32, b: i32) -> (i32, i32, i32) {
    let y = (b * 1868 + g * 9617 + r * 4899 + 8192) >> 14;
    let u = (((b - y) * 8061 + (128 << 14) + 8192) >> 14).clamp(0, 255);
    let v = (((r - y) * 14369 + (128 << 14) + 8192) >> 14).clamp(0, 255);
    (y, u, v)
}

/// OpenCV's 8-bit YUV → BGR, as R, G, B (each 0 – 255).
#[inline(always)]
fn rgb(y: i32, u: i32, v: i32) -> [i32; 3] {
    let b = y + (((u - 128) * 33292 + 8192) >> 14);
    let g = y + (((u - 128) * -6472 + (v - 128) * -9519 + 8192) >> 14);
    let r = y + (((v - 128) * 18678 + 8192) >> 14);
    [r.clamp(0, 255), g.clamp(0, 255), b.clamp(0, 255)]
}

/// OpenCV's U of one RGB pixel (see [`yuv`]).
#[inline]
fn u_of(p: &[u8]) -> usize {
    yuv(i32::from(p[0]), i32::from(p[1]), i32::from(p[2])).1 as usize
}

/// `S · u` for every U value: the products PyWavelets computes, looked up.
const S_TIMES: [f64; 256] = {
    let mut t = [0.0; 256];
    let mut u = 0;
    while u < 256 {
        t[u] = S * u as f64;
        u += 1;
    }
    t
};

/// The Haar low band (`w4/2 × h4/2`) of the U channel of the image's
/// top-left `w4 × h4` pixels (multiples of 4), as PyWavelets computes it
/// in double precision: rows first (axis 0), then columns, low = s·odd +
/// s·even.
fn low_band(rgb_bytes: &[u8], width: usize, (w4, h4): (usize, usize)) -> Vec<f64> {
    let stride = width * 3;
    let mut band = Vec::with_capacity(w4 / 2 * h4 / 2);
    for i in 0..h4 / 2 {
        let top = &rgb_bytes[2 * i * stride..][..w4 * 3];
        let bottom = &rgb_bytes[(2 * i + 1) * stride..][..w4 * 3];
        for (a, b) in top.chunks_exact(6).zip(bottom.chunks_exact(6)) {
            let even_col = S_TIMES[u_of(&b[..3])] + S_TIMES[u_of(&a[..3])];
            let odd_col = S_TIMES[u_of(&b[3..])] + S_TIMES[u_of(&a[3..])];
            band.push(S * odd_col + S * even_col);
        }
    }
    band
}

/// Why these bytes cannot be watermarked or read: too small an image, or
/// not as many bytes as its size.
fn check_pixels(rgb_bytes: &[u8], width: u32, height: u32) -> Result<(), String> {
    if let Some(why) = too_small(width, height) {
        return Err(why);
    }
    let (w, h) = (width as usize, height as usize);
    if rgb_bytes.len() != w * h * 3 {
        return Err(format!(
            "{} bytes are not {w}×{h} RGB pixels",
            rgb_bytes.len()
        ));
    }
    Ok(())
}

/// An image's exact low band, checked (see [`check_pixels`]).
struct Band {
    band: Vec<f64>,
    /// The band's width and height.
    bw: usize,
    bh: usize,
}

impl Band {
    fn of(rgb_bytes: &[u8], width: u32, height: u32) -> Result<Band, String> {
        check_pixels(rgb_bytes, width, height)?;
        let (w, h) = (width as usize, height as usize);
        let (w4, h4) = (w / 4 * 4, h / 4 * 4);
        Ok(Band {
            band: low_band(rgb_bytes, w, (w4, h4)),
            bw: w4 / 2,
            bh: h4 / 2,
        })
    }
}

/// The coefficient a 4×4 block of the low band carries its bit in — the
/// largest in magnitude but the first (the first of equals) — and the
/// magnitude of the next largest (the first never counts).
fn carrier(band: &[f64], bw: usize, bi: usize, bj: usize) -> ((usize, usize), f64) {
    let (mut best, mut at, mut second) = (-1.0f64, (0, 0), 0.0f64);
    for k in 1..BLOCK * BLOCK {
        let (y, x) = (bi * BLOCK + k / BLOCK, bj * BLOCK + k % BLOCK);
        let m = band[y * bw + x].abs();
        if m > best {
            second = second.max(best);
            (best, at) = (m, (y, x));
        } else {
            second = second.max(m);
        }
    }
    (at, second)
}

/// Where a carrier whose coefficient is `sum / 2` goes to say `bit`, as
/// twice the coefficient: the nearest level a quarter (0) or three
/// quarters (1) into a step, as the package's reader reads it — the
/// package always takes the level of the coefficient's own step, up to 27
/// away where the level below is 9 away — but not below the block's next
/// largest coefficient (`runner_up`, an [`approx_cell_sums`] entry, within
/// [`APPROX_ERROR`] of it), which a reader would then take instead (in a
/// smooth region the 16 are nearly equal, and the package's own marks lose
/// bits so), with room for the rounding of pixels. All in integers: a
/// division by a constant is a multiplication, where a floating-point one
/// took a tenth of the writer's time.
#[inline(always)]
fn target(sum: i32, bit: bool, runner_up: f32) -> i32 {
    // The levels are (n + offset)·SCALE: 36n + 9 for a 0, 36n + 27 for a 1.
    let at = if bit { 27 } else { 9 };
    // The nearest to sum/2 (the lower of two as near):
    // ⌈(sum/2 − at − 18) / 36⌉ = ⌈(sum − 2·at − 36) / 72⌉.
    let nearest = (sum - 2 * at - 36 + 71).div_euclid(72);
    // Unless it is below the floor; then the lowest above it (were the
    // coefficient above that one, the nearest level would not be below
    // it). The floor is the runner-up's coefficient, its error and ROOM
    // above it, at least 0: with r the runner-up's sum, in units of 2⁻³⁰,
    // floor − at = 16122·r + 2³⁰·(256 + APPROX_ERROR + ROOM − at) (see
    // `approx_coefficient`), so the lowest level is ⌈that / (36·2³⁰)⌉.
    let over = 2 * 8061 * i64::from(runner_up as i32) + (1 << 29) * (LIFT - 2 * i64::from(at));
    const STEP: i64 = 36 << 30;
    let lowest = (over + STEP - 1).div_euclid(STEP).max(0) as i32;
    2 * (36 * nearest.max(lowest) + at)
}

/// How far above the runner-up's near coefficient a carrier must stay for
/// the rounding of pixels (see [`target`]).
const ROOM: f64 = 3.0;

/// Twice what [`target`]'s floor adds to a runner-up's sum ·8061/2²⁹:
/// `approx_coefficient`'s 256, [`APPROX_ERROR`] and [`ROOM`] (a whole
/// number, checked when compiled).
const LIFT: i64 = {
    let twice = 2.0 * (256.0 + APPROX_ERROR + ROOM);
    assert!(twice == twice as i64 as f64);
    twice as i64
};

/// `|v| mod SCALE` as NumPy's `fmod`.
fn rem(v: f64) -> f64 {
    v.abs() % SCALE
}

/// OpenCV's U of each 2×2 cell, summed (twice the cell's low-band
/// coefficient) in the cell rows from `first_row` on of an image `w4`
/// pixels wide, as many as `sums` holds, nearly: the linear part of
/// [`yuv`] without its roundings, in units of 2⁻²⁸ U less the constant
/// 4 × 128 (see `approx_coefficient`). Each pixel's U is off by at most
/// 0.75, a coefficient by at most [`APPROX_ERROR`] — enough to choose a
/// block's carrier and bound its runner-up, which is all a writer needs
/// them for, at a fraction of the exact conversion's cost. Each sum is an
/// integer under 2²⁴ in magnitude, so exact in `f32`.
fn approx_cell_sums(
    rgb_bytes: &[u8],
    stride: usize,
    w4: usize,
    first_row: usize,
    sums: &mut [f32],
) {
    for (i, out) in sums.chunks_exact_mut(w4 / 2).enumerate() {
        let i = first_row + i;
        let top = &rgb_bytes[2 * i * stride..][..w4 * 3];
        let bottom = &rgb_bytes[(2 * i + 1) * stride..][..w4 * 3];
        let done = vector_cell_sums(top, bottom, out);
        let (top, bottom) = (&top[done * 6..], &bottom[done * 6..]);
        for ((o, t), b) in out[done..]
            .iter_mut()
            .zip(top.chunks_exact(6))
            .zip(bottom.chunks_exact(6))
        {
            *o = cell_sum(t, b) as f32;
        }
    }
}

/// The weights of [`approx_cell_sums`]: U ≈ (b − y)·8061/2¹⁴ + 128,
/// y = (1868 b + 9617 g + 4899 r)/2¹⁴, so per byte R −4899, G −9617,
/// B 2¹⁴ − 1868 (then × 8061/2²⁸).
const CELL_WEIGHTS: [i32; 3] = [-4899, -9617, 14516];

/// One cell's [`approx_cell_sums`] entry from its six bytes in each of its
/// two rows.
fn cell_sum(top: &[u8], bottom: &[u8]) -> i32 {
    let s = |c: usize| {
        i32::from(top[c]) + i32::from(top[c + 3]) + i32::from(bottom[c]) + i32::from(bottom[c + 3])
    };
    CELL_WEIGHTS[0] * s(0) + CELL_WEIGHTS[1] * s(1) + CELL_WEIGHTS[2] * s(2)
}

/// [`approx_cell_sums`] of a row of cells, eight at a time (48 bytes of
/// each row) with SSE2, which every x86-64 CPU has: the two rows' bytes
/// added as 16-bit lanes, weighted and added in pairs (`pmaddwd`), a
/// cell's three pairs then added. Returns how many cells it did (the rest,
/// fewer than eight, are [`cell_sum`]'s).
#[cfg(target_arch = "x86_64")]
fn vector_cell_sums(top: &[u8], bottom: &[u8], out: &mut [f32]) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi16, _mm_loadu_si128, _mm_madd_epi16, _mm_setzero_si128,
        _mm_storeu_si128, _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };
    // The weights of eight bytes that start at a multiple of 3 plus `o`.
    let lanes =
        |o: usize| -> [i16; 8] { std::array::from_fn(|l| CELL_WEIGHTS[(o + l) % 3] as i16) };
    let mut done = 0;
    // SAFETY: SSE2 is part of every x86-64 CPU; every load and store is of
    // 16 bytes within the slice or array it names (see each).
    unsafe {
        let lanes = [lanes(0), lanes(1), lanes(2)];
        // Each array is 16 bytes; an unaligned load reads them.
        let weights: [__m128i; 3] =
            std::array::from_fn(|o| _mm_loadu_si128(lanes[o].as_ptr().cast()));
        let zero = _mm_setzero_si128();
        for ((t, b), o) in top
            .chunks_exact(48)
            .zip(bottom.chunks_exact(48))
            .zip(out.chunks_exact_mut(8))
        {
            let mut pairs = [0i32; 24];
            for q in 0..3 {
                // `t` and `b` are 48 bytes long; these 16 are in them.
                let tv = _mm_loadu_si128(t[16 * q..].as_ptr().cast());
                let bv = _mm_loadu_si128(b[16 * q..].as_ptr().cast());
                let lo = _mm_add_epi16(_mm_unpacklo_epi8(tv, zero), _mm_unpacklo_epi8(bv, zero));
                let hi = _mm_add_epi16(_mm_unpackhi_epi8(tv, zero), _mm_unpackhi_epi8(bv, zero));
                let lo = _mm_madd_epi16(lo, weights[(16 * q) % 3]);
                let hi = _mm_madd_epi16(hi, weights[(16 * q + 8) % 3]);
                // `pairs` has 24 lanes; these are 8 of them.
                _mm_storeu_si128(pairs[8 * q..].as_mut_ptr().cast(), lo);
                _mm_storeu_si128(pairs[8 * q + 4..].as_mut_ptr().cast(), hi);
            }
            for (o, p) in o.iter_mut().zip(pairs.chunks_exact(3)) {
                *o = (p[0] + p[1] + p[2]) as f32;
            }
            done += 8;
        }
    }
    done
}

/// [`approx_cell_sums`] without vector code on other CPUs: none done here.
#[cfg(not(target_arch = "x86_64"))]
fn vector_cell_sums(_: &[u8], _: &[u8], _: &mut [f32]) -> usize {
    0
}

/// A cell's low-band coefficient from its [`approx_cell_sums`] entry (what
/// [`target`] computes in integers; the tests check it against this).
#[cfg(test)]
fn approx_coefficient(sum: f32) -> f64 {
    // Half of: the U sum (× 8061 / 2²⁸) plus four times 128.
    (f64::from(sum) * (8061.0 / f64::from(1u32 << 28)) + 512.0) / 2.0
}

/// How far a coefficient from [`approx_cell_sums`] may be from the exact
/// one (3 for a sum of four U values, halved).
const APPROX_ERROR: f64 = 1.5;

/// The cell of block `bj` of a row of 4×4 blocks of [`approx_cell_sums`]
/// (`bw` cells wide) a writer moves — the largest but the first (the first
/// of equals), as a reader would choose if they were exact — as (row in
/// the block row, column), and the largest of the others. Four lanes (the
/// block's columns) at a time, without branches: on a natural image which
/// cell is largest is a coin toss, and the compiler keeps the lanes in one
/// vector register.
fn approx_carrier(sums: &[f32], bw: usize, bj: usize) -> ((usize, usize), f32) {
    let max = |a: f32, b: f32| if a > b { a } else { b };
    let min = |a: f32, b: f32| if a > b { b } else { a };
    let mut rows = [[0f32; BLOCK]; BLOCK];
    for (r, row) in rows.iter_mut().enumerate() {
        row.copy_from_slice(&sums[r * bw + bj * BLOCK..][..BLOCK]);
    }
    // The first cell never counts.
    rows[0][0] = f32::NEG_INFINITY;
    // Each lane's largest and next largest (equals count twice).
    let (mut hi, mut lo) = (rows[0], [f32::NEG_INFINITY; BLOCK]);
    for row in &rows[1..] {
        for l in 0..BLOCK {
            lo[l] = max(lo[l], min(hi[l], row[l]));
            hi[l] = max(hi[l], row[l]);
        }
    }
    // Then across the lanes: the largest, and the largest of the rest.
    let (a, b) = (max(hi[0], hi[1]), max(hi[2], hi[3]));
    let best = max(a, b);
    let lanes_second = max(min(a, b), max(min(hi[0], hi[1]), min(hi[2], hi[3])));
    let second = max(lanes_second, max(max(lo[0], lo[1]), max(lo[2], lo[3])));
    // The first cell (row by row) that holds the largest.
    let mut mask = 0u32;
    for (r, row) in rows.iter().enumerate() {
        for (l, &x) in row.iter().enumerate() {
            mask |= u32::from(x == best) << (r * BLOCK + l);
        }
    }
    let at = mask.trailing_zeros() as usize % (BLOCK * BLOCK);
    ((at / BLOCK, bj * BLOCK + at % BLOCK), second)
}

/// The image's pixels with `message` hidden in them, or why it gets none
/// (too small). The blocks' carriers are moved as the package moves them;
/// only the pixels of the 2×2 cells whose low-band coefficient moved are
/// changed (the package converts every pixel to YUV and back, and also
/// swaps two detail bands on its way back; both only cost quality, and its
/// decoder reads this the same).
///
/// The carrier is chosen from nearly computed coefficients
/// ([`approx_cell_sums`]); its own is then computed exactly from its four
/// pixels, and it is moved clear of the runner-up by that error more than
/// an exact writer would, so a reader still takes it and reads the bit.
pub fn embed(
    rgb_bytes: &[u8],
    width: u32,
    height: u32,
    message: &Message,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(rgb_bytes.len());
    embed_rows(rgb_bytes, width, height, message, &mut |rows| {
        out.extend_from_slice(rows)
    })?;
    Ok(out)
}

/// [`embed`], its pixels given to `rows` a few whole rows at a time, top
/// to bottom, each strip marked just before it is given (still in the
/// cache for an encoder that filters it then; issue 36's cost). Nothing is
/// given when the image gets no watermark.
pub fn embed_rows(
    rgb_bytes: &[u8],
    width: u32,
    height: u32,
    message: &Message,
    rows: &mut dyn FnMut(&[u8]),
) -> Result<(), String> {
    embed_rows_using(rgb_bytes, (width, height), message, rows, has_avx2())
}

/// [`embed_rows`], with AVX2's instructions for the colour conversions or
/// not (the same pixels either way; the tests check both).
fn embed_rows_using(
    rgb_bytes: &[u8],
    (width, height): (u32, u32),
    message: &Message,
    rows: &mut dyn FnMut(&[u8]),
    avx2: bool,
) -> Result<(), String> {
    check_pixels(rgb_bytes, width, height)?;
    let (w, h) = (width as usize, height as usize);
    let (w4, h4) = (w / 4 * 4, h / 4 * 4);
    let (bw, bh) = (w4 / 2, h4 / 2);
    let stride = w * 3;
    // A row of blocks at a time (4 rows of cells, 8 of pixels), while its
    // pixels are in the cache: reading them, copying them and moving the
    // carriers, each block's in its 2×2 cell.
    let strip_len = 2 * BLOCK * stride;
    let mut sums = vec![0f32; bw * BLOCK];
    let mut strip = vec![0u8; strip_len];
    let mut num = 0usize;
    let blocks = bw / BLOCK;
    // The next strip's share each block asks the memory for (see
    // [`prefetch`]), in whole cache lines.
    let share = strip_len.div_ceil(blocks.max(1)).next_multiple_of(64);
    // Each carrier cell's four pixels, a row of blocks at a time, by
    // phases over all of them (where the compiler can use vectors): where
    // they are and their colour, then Y, U and V, then the moved colour.
    let mut cells = Cells::new(blocks);
    for bi in 0..bh / BLOCK {
        approx_cell_sums(rgb_bytes, stride, w4, bi * BLOCK, &mut sums);
        let first = bi * strip_len;
        strip.copy_from_slice(&rgb_bytes[first..first + strip_len]);
        let next = first + strip_len;
        for bj in 0..blocks {
            prefetch(rgb_bytes, next + bj * share, share);
            let ((cy, cx), runner_up) = approx_carrier(&sums, bw, bj);
            let cy = bi * BLOCK + cy;
            cells.runner_up[bj] = runner_up;
            let at = (2 * cy * w + 2 * cx) * 3;
            for (q, p) in [at, at + 3, at + stride, at + stride + 3]
                .into_iter()
                .enumerate()
            {
                let k = 4 * bj + q;
                cells.at[k] = p - first;
                cells.r[k] = i32::from(rgb_bytes[p]);
                cells.g[k] = i32::from(rgb_bytes[p + 1]);
                cells.b[k] = i32::from(rgb_bytes[p + 2]);
            }
        }
        num = cells.move_carriers(&message.bits, num, avx2);
        for k in 0..4 * blocks {
            let p = cells.at[k];
            strip[p..p + 3].copy_from_slice(&[
                cells.r[k] as u8,
                cells.g[k] as u8,
                cells.b[k] as u8,
            ]);
        }
        rows(&strip);
    }
    let rest = bh / BLOCK * strip_len;
    if rest < rgb_bytes.len() {
        rows(&rgb_bytes[rest..]);
    }
    Ok(())
}

/// The carrier cells' pixels of a row of blocks (four a block), by
/// component: where each is in the strip, its colour (then its moved
/// colour), its Y, U and V, and its block's move and runner-up.
struct Cells {
    at: Vec<usize>,
    r: Vec<i32>,
    g: Vec<i32>,
    b: Vec<i32>,
    y: Vec<i32>,
    u: Vec<i32>,
    v: Vec<i32>,
    moved: Vec<i32>,
    runner_up: Vec<f32>,
}

impl Cells {
    fn new(blocks: usize) -> Cells {
        let n = 4 * blocks;
        Cells {
            at: vec![0; n],
            r: vec![0; n],
            g: vec![0; n],
            b: vec![0; n],
            y: vec![0; n],
            u: vec![0; n],
            v: vec![0; n],
            moved: vec![0; n],
            runner_up: vec![0.0; blocks],
        }
    }

    /// Moves every block's carrier cell to say its bit, the bits taken in
    /// turn from `bits` at `num` (returned: where the next row of blocks
    /// starts): Y, U and V of every pixel ([`yuv`]), each block's move
    /// ([`target`]), then every pixel's colour with its U moved ([`rgb`])
    /// into `r`, `g` and `b`. With AVX2 when `avx2` (the caller has
    /// checked that the CPU has it).
    fn move_carriers(&mut self, bits: &[bool], num: usize, avx2: bool) -> usize {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: `avx2` is only true where `has_avx2` said so.
            return unsafe { self.move_carriers_avx2(bits, num) };
        }
        let _ = avx2;
        self.move_carriers_here(bits, num)
    }

    /// [`Cells::move_carriers_here`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn move_carriers_avx2(&mut self, bits: &[bool], num: usize) -> usize {
        self.move_carriers_here(bits, num)
    }

    /// [`Cells::move_carriers`] for whichever instructions its caller was
    /// compiled with: two loops over all the pixels (vectors) around one
    /// over the blocks.
    #[inline(always)]
    fn move_carriers_here(&mut self, bits: &[bool], mut num: usize) -> usize {
        let n = self.r.len();
        {
            let (r, g, b) = (&self.r[..n], &self.g[..n], &self.b[..n]);
            let (y, u, v) = (&mut self.y[..n], &mut self.u[..n], &mut self.v[..n]);
            for k in 0..n {
                (y[k], u[k], v[k]) = yuv(r[k], g[k], b[k]);
            }
        }
        for (bj, runner_up) in self.runner_up.iter().enumerate() {
            // The exact coefficient, as the reader computes it: half the
            // sum of the cell's four U values.
            let sum: i32 = self.u[4 * bj..4 * bj + 4].iter().sum();
            let bit = bits[num];
            num = if num + 1 == bits.len() { 0 } else { num + 1 };
            // Each U moves by half the coefficient's change: a quarter of
            // `moved` (twice the change), rounded half up by the shift.
            let moved = target(sum, bit, *runner_up) - sum;
            self.moved[4 * bj..4 * bj + 4].fill(moved);
        }
        let (y, u, v, moved) = (&self.y[..n], &self.u[..n], &self.v[..n], &self.moved[..n]);
        let (r, g, b) = (&mut self.r[..n], &mut self.g[..n], &mut self.b[..n]);
        for k in 0..n {
            let uu = ((4 * u[k] + moved[k] + 2) >> 2).clamp(0, 255);
            [r[k], g[k], b[k]] = rgb(y[k], uu, v[k]);
        }
        num
    }
}

/// Whether the CPU has AVX2 (most x86-64 ones since 2013).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Asks for the cache lines of `bytes[from..from + len]` (those in
/// `bytes`) to be brought into the cache, without waiting for them: while
/// a row of blocks is marked, the next row's pixels come from memory, so
/// [`approx_cell_sums`] does not wait for them (issue 36's cost: that pass
/// is the image's first read, and waited on memory). Changes nothing else.
#[inline(always)]
fn prefetch(bytes: &[u8], from: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let end = from.saturating_add(len).min(bytes.len());
        for at in (from..end).step_by(64) {
            // SAFETY: SSE is part of every x86-64 CPU, and `at` is within
            // `bytes` (a prefetch reads nothing and cannot fault anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(at).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, from, len);
}

/// What a watermark reader finds.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The bits, as the package's decoder returns them.
    pub bits: String,
    /// How much the blocks agree, from 0.5 (as in an unmarked image:
    /// each bit a coin toss) to 1 (every block of every bit agrees).
    pub agreement: f64,
}

/// Reads a `len`-bit message from an image as the package's decoder does:
/// each block votes for its bit, a bit is 1 when more than half vote so.
pub fn read(rgb_bytes: &[u8], width: u32, height: u32, len: usize) -> Result<Reading, String> {
    if len == 0 || len > MAX_BITS {
        return Err(format!("a watermark has 1 to {MAX_BITS} bits"));
    }
    let Band { band, bw, bh, .. } = Band::of(rgb_bytes, width, height)?;
    let mut ones = vec![0u64; len];
    let mut votes = vec![0u64; len];
    let mut num = 0usize;
    for bi in 0..bh / BLOCK {
        for bj in 0..bw / BLOCK {
            let ((cy, cx), _) = carrier(&band, bw, bi, bj);
            if rem(band[cy * bw + cx]) > 0.5 * SCALE {
                ones[num % len] += 1;
            }
            votes[num % len] += 1;
            num += 1;
        }
    }
    let mut bits = String::with_capacity(len);
    let mut agreement = 0.0;
    for (o, n) in ones.iter().zip(&votes) {
        // The package: mean vote × 255 > 127; no votes at all reads 0.
        let one = *n > 0 && o * 255 > 127 * n;
        bits.push(if one { '1' } else { '0' });
        let share = if *n == 0 { 0.5 } else { *o as f64 / *n as f64 };
        agreement += share.max(1.0 - share);
    }
    Ok(Reading {
        bits,
        agreement: agreement / len as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth picture with some texture, like a generated one.
    fn picture(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
                let t = ((fx * 13.0).sin() * (fy * 7.0).cos() * 40.0) as i32;
                v.push((90 + (fx * 120.0) as i32 + t).clamp(0, 255) as u8);
                v.push((60 + (fy * 150.0) as i32 - t).clamp(0, 255) as u8);
                v.push((140 + ((fx + fy) * 50.0) as i32 + t / 2).clamp(0, 255) as u8);
            }
        }
        v
    }

    #[test]
    fn a_message_is_read_back_and_an_unmarked_image_does_not_carry_it() {
        let m = Message::from_bits(SDXL_BITS).unwrap();
        let img = picture(320, 256);
        let marked = embed(&img, 320, 256, &m).unwrap();
        let r = read(&marked, 320, 256, m.len()).unwrap();
        assert_eq!(r.bits, SDXL_BITS);
        assert!(r.agreement > 0.95, "{r:?}");
        let plain = read(&img, 320, 256, m.len()).unwrap();
        assert_ne!(plain.bits, SDXL_BITS);
        assert!(plain.agreement < 0.8, "{plain:?}");
        // Invisible: a little colour moved in a few pixels (the package
        // moves up to 27 of the U channel's steps, ~55 of blue's; difflog
        // a step or two more where a block's two largest are close).
        let diffs: Vec<u8> = img
            .iter()
            .zip(&marked)
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let most = diffs.iter().max().copied().unwrap_or(0);
        let mean = diffs.iter().map(|d| f64::from(*d)).sum::<f64>() / diffs.len() as f64;
        assert!(most <= 55 && mean < 1.5, "most {most}, mean {mean}");
        let text = Message::from_text("acme").unwrap();
        assert_eq!(text.as_bits(), "01100001011000110110110101100101");
        let r = read(&embed(&img, 320, 256, &text).unwrap(), 320, 256, 32).unwrap();
        assert_eq!(r.bits, text.as_bits());
    }

    #[test]
    fn the_low_band_is_pywavelets_products_in_its_order() {
        let img = picture(16, 8);
        let u = |x: usize, y: usize| {
            f64::from(
                yuv(
                    i32::from(img[(y * 16 + x) * 3]),
                    i32::from(img[(y * 16 + x) * 3 + 1]),
                    i32::from(img[(y * 16 + x) * 3 + 2]),
                )
                .1,
            )
        };
        let band = low_band(&img, 16, (16, 8));
        for i in 0..4 {
            for j in 0..8 {
                let even = S * u(2 * j, 2 * i + 1) + S * u(2 * j, 2 * i);
                let odd = S * u(2 * j + 1, 2 * i + 1) + S * u(2 * j + 1, 2 * i);
                assert_eq!(band[i * 8 + j].to_bits(), (S * odd + S * even).to_bits());
            }
        }
    }

    /// Pixels from a small xorshift generator: every colour, no structure.
    fn noise(w: u32, h: u32, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..w * h * 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn the_writers_near_coefficients_are_within_their_bound_of_the_exact_ones() {
        for (img, w, h) in [
            (noise(64, 48, 7), 64, 48),
            // 76 pixels: four runs of eight cells, and six cells more.
            (noise(76, 20, 5), 76, 20),
            (picture(64, 48), 64, 48),
            (vec![255u8; 8 * 8 * 3], 8, 8),
            (vec![0u8; 8 * 8 * 3], 8, 8),
        ] {
            let (w, h) = (w as usize, h as usize);
            let exact = low_band(&img, w, (w, h));
            let mut near = vec![0f32; w / 2 * h / 2];
            approx_cell_sums(&img, w * 3, w, 0, &mut near);
            // The vector code's sums are the cell-by-cell ones.
            let by_cell: Vec<f32> = (0..h / 2)
                .flat_map(|i| {
                    let img = &img;
                    (0..w / 2).map(move |k| {
                        let at = |row: usize| &img[row * w * 3 + k * 6..][..6];
                        cell_sum(at(2 * i), at(2 * i + 1)) as f32
                    })
                })
                .collect();
            assert_eq!(near, by_cell);
            assert_eq!(exact.len(), near.len());
            let worst = exact
                .iter()
                .zip(&near)
                .map(|(e, n)| (e - approx_coefficient(*n)).abs())
                .fold(0.0f64, f64::max);
            assert!(worst <= APPROX_ERROR, "off by {worst}");
        }
    }

    /// [`approx_carrier`] as it was written first, one cell after another: the
    /// reference it must agree with.
    /// The cell of block `bj` of a row of 4×4 blocks of [`approx_cell_sums`]
    /// (`bw` cells wide) a writer moves — the largest but the first (the first
    /// of equals), as a reader would choose if they were exact — as (row in
    /// the block row, column), and the largest of the others. Without
    /// branches: on a natural image which cell is largest is a coin toss.
    fn serial_carrier(sums: &[f32], bw: usize, bj: usize) -> ((usize, usize), f32) {
        let mut v = [0f32; BLOCK * BLOCK];
        for (r, row) in v.chunks_exact_mut(BLOCK).enumerate() {
            row.copy_from_slice(&sums[r * bw + bj * BLOCK..][..BLOCK]);
        }
        let (mut best, mut at) = (v[1], 1);
        for (k, &x) in v.iter().enumerate().skip(2) {
            // Strictly greater: the first of equals stays.
            let gt = x > best;
            best = if gt { x } else { best };
            at = if gt { k } else { at };
        }
        v[at] = f32::NEG_INFINITY;
        let second = v[1..]
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        ((at / BLOCK, bj * BLOCK + at % BLOCK), second)
    }

    #[test]
    fn the_carrier_found_lane_by_lane_is_the_one_found_cell_by_cell() {
        // Natural-looking, noisy and tied blocks (flat, two equal largest).
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for case in 0..4000 {
            let bw = 16;
            let sums: Vec<f32> = (0..bw * BLOCK)
                .map(|_| match case % 4 {
                    0 => (next() % 2000) as f32 - 1000.0,
                    1 => (next() % 3) as f32,
                    2 => 5.0,
                    _ => (next() % 8) as f32 * 0.5,
                })
                .collect();
            for bj in 0..bw / BLOCK {
                assert_eq!(
                    approx_carrier(&sums, bw, bj),
                    serial_carrier(&sums, bw, bj),
                    "case {case}, block {bj}: {sums:?}"
                );
            }
        }
    }

    /// [`target`] as it was first written, in floating point: the reference
    /// it must agree with. Where a carrier of magnitude `a` goes to say `bit`: the nearest level a
    /// quarter (0) or three quarters (1) into a step, as the package's reader
    /// reads it — the package always takes the level of `a`'s own step, up to
    /// 27 away where the level below is 9 away — but not below the block's
    /// next largest coefficient, which a reader would then take instead (in a
    /// smooth region the 16 are nearly equal, and the package's own marks lose
    /// bits so), with room for the rounding of pixels.
    fn float_target(a: f64, bit: bool, runner_up: f64) -> f64 {
        let offset = if bit { 0.75 } else { 0.25 };
        // The levels are (n + offset)·SCALE. The nearest to `a` (the lower of
        // two as near) unless it is below the floor; then the lowest above it:
        // were `a` above that one, the nearest level would not be below it.
        let lo = (runner_up + ROOM).max(0.0);
        let nearest = (a / SCALE - offset - 0.5).ceil();
        let lowest = (lo / SCALE - offset).ceil();
        (nearest.max(lowest) + offset) * SCALE
    }

    #[test]
    fn the_integer_target_is_the_floating_point_one() {
        // Runner-up sums across their whole range (four pixels' bytes,
        // each weighted by `CELL_WEIGHTS`), and on each side of every
        // floor that meets a level exactly.
        let (low, high) = (-(4899 + 9617) * 1020, 14516 * 1020);
        let mut runner_ups: Vec<i32> = (low..=high).step_by(10_007).collect();
        for level in 0..20 {
            for at in [9.0, 27.0] {
                let floor = 36.0 * f64::from(level) + at;
                let r = (floor - 256.0 - APPROX_ERROR - ROOM) * f64::from(1u32 << 29) / 8061.0;
                runner_ups.extend((-2..=2).map(|d| r.floor() as i32 + d));
            }
        }
        for runner_up in runner_ups {
            let exact = approx_coefficient(runner_up as f32) + APPROX_ERROR;
            for sum in 0..=1020 {
                for bit in [false, true] {
                    let float = float_target(f64::from(sum) / 2.0, bit, exact);
                    assert_eq!(
                        f64::from(target(sum, bit, runner_up as f32)),
                        2.0 * float,
                        "sum {sum}, bit {bit}, runner-up {runner_up}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_block_of_a_noisy_or_flat_image_says_its_bit() {
        let m = Message::from_bits(SDXL_BITS).unwrap();
        for (img, w, h) in [
            (noise(256, 256, 3), 256, 256),
            (noise(300, 260, 11), 300, 260),
            (vec![128u8; 256 * 256 * 3], 256, 256),
        ] {
            let marked = embed(&img, w, h, &m).unwrap();
            let r = read(&marked, w, h, m.len()).unwrap();
            assert_eq!(r.bits, SDXL_BITS);
            // A few blocks of noise cannot take their move: the colour it
            // asks for is outside RGB's cube.
            assert!(r.agreement > 0.98, "{r:?}");
        }
    }

    /// A picture made in integers only (the same bytes on every machine):
    /// gradients, hard-edged shapes and a fine grain.
    fn integer_picture(w: u32, h: u32, seed: u64) -> Vec<u8> {
        let grain = noise(w, h, seed);
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let shape = if (x / 37 + y / 29) % 3 == 0 { 60 } else { 0 };
                for (c, base) in [
                    (0, x * 160 / w),
                    (1, y * 180 / h),
                    (2, (x + y) * 90 / (w + h)),
                ] {
                    let g = i32::from(grain[((y * w + x) * 3 + c) as usize] % 5) - 2;
                    v.push((40 + base as i32 + shape + g).clamp(0, 255) as u8);
                }
            }
        }
        v
    }

    /// The writer's pixels are pinned: `replay` makes an old run's
    /// watermark again and compares it byte for byte with what was
    /// recorded, so a faster writer must give exactly these (a digest per
    /// shape and message).
    #[test]
    fn the_writer_gives_the_same_bytes_it_always_gave() {
        let sdxl = Message::from_bits(SDXL_BITS).unwrap();
        let text = Message::from_text("difflog").unwrap();
        // As `embed` makes them, and with the colour conversions' AVX2
        // instructions and without (where the CPU has them).
        let mut ways = vec![None, Some(false)];
        if has_avx2() {
            ways.push(Some(true));
        }
        for avx2 in ways {
            let digest = |w: u32, h: u32, seed: u64, m: &Message| {
                let img = integer_picture(w, h, seed);
                let marked = match avx2 {
                    None => embed(&img, w, h, m).unwrap(),
                    Some(avx2) => {
                        let mut out = Vec::new();
                        let rows = &mut |r: &[u8]| out.extend_from_slice(r);
                        embed_rows_using(&img, (w, h), m, rows, avx2).unwrap();
                        out
                    }
                };
                crate::format::sha256_hex(&marked)
            };
            let got = [
                digest(512, 512, 5, &sdxl),
                digest(333, 270, 7, &text),
                digest(270, 333, 9, &sdxl),
            ];
            assert_eq!(
                got,
                [
                    "3c55966d8943851271011c8dac7fb748e90919c2af12e38ae7ed2f732a2450b9",
                    "3b3169bb54cd325caf612f913d3bc010cddd034ebbd64bac01d66808fb3c7fb0",
                    "f40539d88dbfd3d955c9c0f37522461c784ff374678c3f3930386ecca27589a1"
                ]
            );
        }
    }

    #[test]
    fn small_images_and_bad_messages_are_refused_by_name() {
        let m = Message::from_bits("1").unwrap();
        assert!(embed(&picture(64, 64), 64, 64, &m)
            .unwrap_err()
            .contains("256×256"));
        assert!(Message::from_bits("").is_err());
        assert!(Message::from_bits("012").unwrap_err().contains("'2'"));
        assert!(Message::from_bits(&"1".repeat(MAX_BITS + 1)).is_err());
        assert!(read(&picture(256, 256), 256, 256, 0).is_err());
        assert!(read(&[0u8; 10], 256, 256, 8).unwrap_err().contains("bytes"));
    }
}
