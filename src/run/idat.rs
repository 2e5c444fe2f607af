//! Compact PNG image data, the recorder's default (issue 38): every byte
//! a run stores is a byte a thin link has to carry, and the fast encoder
//! difflog used before (fdeflate) writes ~20 % more than PIL's default.
//!
//! After PNG's per-row filters, natural images are small residuals whose
//! size is set by entropy coding, while LZ77 string matching costs most of
//! a deflate encoder's time and gains little. So each row gets the filter
//! whose residuals, sampled, have the least entropy, and the rows are
//! deflated with a dynamic Huffman code per block, matches only for runs
//! of one byte (distance 1: flat areas). Measured on natural-looking
//! 512² images: 1.8 % smaller than PIL's default (zlib level 6), 19 %
//! smaller than the fast encoder, in about its time; every library tried
//! at PIL's size took 4× or more (`difflog bench png --candidates`). The
//! stream is standard zlib: every PNG reader reads it.

/// Every this-many bytes of a row (a stride that is not a multiple of 3 or
/// 4, so every channel is sampled) decide its filter.
const SAMPLE_STEP: usize = 8;
/// Rows are coded in blocks of about this many bytes, each with its own
/// Huffman code (the statistics of an image change from top to bottom).
const BLOCK: usize = 128 * 1024;

/// The zlib stream of `pixels` (`height` rows of `width × bpp` bytes)
/// filtered as PNG filters them.
pub fn image_data(pixels: &[u8], width: usize, height: usize, bpp: usize) -> Vec<u8> {
    let filtered = filter_rows(pixels, width * bpp, height, bpp, RowFilter::Entropy);
    zlib(&filtered)
}

/// How each row's PNG filter is chosen (the others than the recorder's
/// are `bench png`'s candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "models"), allow(dead_code))]
pub enum RowFilter {
    /// The least entropy of sampled residuals (the compact encoding's).
    Entropy,
    /// The least sum of absolute residuals (libpng's, PIL's and the png
    /// crate's adaptive filtering).
    MinSum,
    /// The same filter for every row (0 none … 4 Paeth): no choice.
    Fixed(u8),
}

/// The zlib stream difflog's own deflater makes of `filtered` (rows as
/// [`filter_rows`] gives them).
#[cfg_attr(not(feature = "models"), allow(dead_code))]
pub fn deflate(filtered: &[u8]) -> Vec<u8> {
    zlib(filtered)
}

/// PNG's Paeth predictor (without branches, so loops over it vectorise).
#[inline(always)]
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (ia, ib, ic) = (i16::from(a), i16::from(b), i16::from(c));
    let pa = (ib - ic).abs();
    let pb = (ia - ic).abs();
    let pc = (ia + ib - 2 * ic).abs();
    let bc = if pb <= pc { b } else { c };
    if pa <= pb && pa <= pc {
        a
    } else {
        bc
    }
}

/// Each row of `pixels` (`height` rows of `stride` bytes, `bpp` bytes a
/// pixel) as its filter type byte and the filtered bytes.
pub fn filter_rows(
    pixels: &[u8],
    stride: usize,
    height: usize,
    bpp: usize,
    how: RowFilter,
) -> Vec<u8> {
    let mut rows = Rows::new(stride, height, bpp, how);
    rows.push(pixels);
    rows.finish()
}

/// The zlib stream of an image whose rows come a few at a time, as
/// [`image_data`] makes it of them all: for rows made just before they
/// are filtered (a watermarked strip, issue 36), filtered while they are
/// still in the cache, the image never whole in memory.
pub(crate) fn image_data_of_rows(
    width: usize,
    height: usize,
    bpp: usize,
    make: impl FnOnce(&mut dyn FnMut(&[u8])),
) -> Vec<u8> {
    let mut rows = Rows::new(width * bpp, height, bpp, RowFilter::Entropy);
    make(&mut |strip| rows.push(strip));
    zlib(&rows.finish())
}

/// Rows filtered as they come ([`filter_rows`] of them all at once): the
/// last row given is kept for the next one's filters.
pub(crate) struct Rows {
    stride: usize,
    bpp: usize,
    how: RowFilter,
    /// (c+1)·log2(c+1) − c·log2(c) for every count a row's samples reach.
    gain: Vec<f32>,
    h: [[u16; 256]; 5],
    line: Vec<u8>,
    /// The row above the next one (zeros above the first).
    prev: Vec<u8>,
    /// Rows filtered so far.
    y: usize,
    /// The image's rows.
    height: usize,
    out: Vec<u8>,
}

impl Rows {
    /// No rows yet of an image of `height` rows of `stride` bytes.
    pub(crate) fn new(stride: usize, height: usize, bpp: usize, how: RowFilter) -> Rows {
        let samples = stride.div_ceil(SAMPLE_STEP);
        let nlogn = |c: usize| {
            let c = c as f32;
            if c > 0.0 {
                c * c.log2()
            } else {
                0.0
            }
        };
        Rows {
            stride,
            bpp,
            how,
            gain: (0..=samples).map(|c| nlogn(c + 1) - nlogn(c)).collect(),
            h: [[0u16; 256]; 5],
            line: vec![0u8; stride],
            prev: vec![0u8; stride],
            y: 0,
            height,
            out: Vec::with_capacity((stride + 1) * height),
        }
    }

    /// Filters `pixels`, whole rows that follow those given before.
    pub(crate) fn push(&mut self, pixels: &[u8]) {
        let stride = self.stride;
        if stride == 0 {
            return;
        }
        debug_assert_eq!(pixels.len() % stride, 0);
        let n = pixels.len() / stride;
        for i in 0..n {
            let row = &pixels[i * stride..(i + 1) * stride];
            let prev = if i == 0 {
                &self.prev[..]
            } else {
                &pixels[(i - 1) * stride..i * stride]
            };
            let kind = match self.how {
                // A row like the one above (flat areas, a plain background):
                // "up" leaves nothing but zeros.
                RowFilter::Entropy if self.y > 0 && row == prev => 2,
                RowFilter::Entropy => choose(row, prev, self.bpp, &self.gain, &mut self.h),
                RowFilter::MinSum => least_sum(row, prev, self.bpp, &mut self.line),
                RowFilter::Fixed(k) => k.min(4),
            };
            apply(kind, row, prev, self.bpp, &mut self.line);
            self.out.push(kind);
            self.out.extend_from_slice(&self.line);
            self.y += 1;
        }
        if n > 0 {
            self.prev
                .copy_from_slice(&pixels[(n - 1) * stride..n * stride]);
        }
    }

    /// The filtered rows (each its filter type byte, then its bytes); an
    /// image of rows of no bytes has only the type bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.stride == 0 {
            self.out.resize(self.height, 0);
        }
        self.out
    }
}

/// The filter (0 none, 1 sub, 2 up, 3 average, 4 Paeth) whose sampled
/// residuals have the least entropy. The bits to code n samples are
/// n·log2(n) − Σ c·log2(c) over their counts c, so the filter with the
/// largest Σ c·log2(c) wins; the sum grows by `gain[c]` as a count goes
/// from c to c + 1, so it is kept as the samples are counted.
fn choose(row: &[u8], prev: &[u8], bpp: usize, gain: &[f32], h: &mut [[u16; 256]; 5]) -> u8 {
    for hk in h.iter_mut() {
        hk.fill(0);
    }
    let mut sum = [0f32; 5];
    let mut count = |k: usize, v: u8| {
        let c = &mut h[k][usize::from(v)];
        sum[k] += gain[usize::from(*c)];
        *c += 1;
    };
    for i in (0..row.len()).step_by(SAMPLE_STEP) {
        let x = row[i];
        let (a, c) = if i >= bpp {
            (row[i - bpp], prev[i - bpp])
        } else {
            (0, 0)
        };
        let b = prev[i];
        count(0, x);
        count(1, x.wrapping_sub(a));
        count(2, x.wrapping_sub(b));
        count(
            3,
            x.wrapping_sub(((u16::from(a) + u16::from(b)) >> 1) as u8),
        );
        count(4, x.wrapping_sub(paeth(a, b, c)));
    }
    let mut best = (f32::MIN, 0u8);
    for (k, s) in sum.iter().enumerate() {
        if *s > best.0 {
            best = (*s, k as u8);
        }
    }
    best.1
}

/// The filter whose residuals, as signed bytes, have the least sum of
/// absolute values (`line` is scratch space).
fn least_sum(row: &[u8], prev: &[u8], bpp: usize, line: &mut [u8]) -> u8 {
    let mut best = (u64::MAX, 0u8);
    for k in 0..5u8 {
        apply(k, row, prev, bpp, line);
        let sum: u64 = line
            .iter()
            .map(|v| u64::from((*v as i8).unsigned_abs()))
            .sum();
        if sum < best.0 {
            best = (sum, k);
        }
    }
    best.1
}

/// Filters `row` with filter `kind` into `line`.
fn apply(kind: u8, row: &[u8], prev: &[u8], bpp: usize, line: &mut [u8]) {
    let first = bpp.min(row.len());
    for i in 0..first {
        let b = prev[i];
        line[i] = match kind {
            0 | 1 => row[i],
            2 | 4 => row[i].wrapping_sub(b),
            _ => row[i].wrapping_sub(b >> 1),
        };
    }
    let n = row.len() - first;
    let (x, a, b, c) = (&row[first..], &row[..n], &prev[first..], &prev[..n]);
    let o = &mut line[first..];
    match kind {
        0 => o.copy_from_slice(x),
        1 => {
            for i in 0..n {
                o[i] = x[i].wrapping_sub(a[i]);
            }
        }
        2 => {
            for i in 0..n {
                o[i] = x[i].wrapping_sub(b[i]);
            }
        }
        3 => {
            for i in 0..n {
                o[i] = x[i].wrapping_sub(((u16::from(a[i]) + u16::from(b[i])) >> 1) as u8);
            }
        }
        _ => {
            for i in 0..n {
                o[i] = x[i].wrapping_sub(paeth(a[i], b[i], c[i]));
            }
        }
    }
}

/// A little-endian bit writer with a 64-bit accumulator.
struct Bits {
    out: Vec<u8>,
    pos: usize,
    acc: u64,
    n: u32,
}

impl Bits {
    /// Adds `len` bits; at most 56 bits may wait before [`Bits::spill`].
    #[inline(always)]
    fn add(&mut self, v: u32, len: u32) {
        self.acc |= u64::from(v) << self.n;
        self.n += len;
    }

    /// Moves the whole bytes of the accumulator to the output.
    #[inline(always)]
    fn spill(&mut self) {
        if self.pos + 8 > self.out.len() {
            self.out.resize(self.out.len() * 2 + 64, 0);
        }
        self.out[self.pos..self.pos + 8].copy_from_slice(&self.acc.to_le_bytes());
        let bytes = self.n / 8;
        self.pos += bytes as usize;
        self.acc = if bytes == 8 {
            0
        } else {
            self.acc >> (bytes * 8)
        };
        self.n -= bytes * 8;
    }

    fn put(&mut self, v: u32, len: u32) {
        self.add(v, len);
        self.spill();
    }

    /// The bytes written, the last one padded with zero bits.
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.n = self.n.div_ceil(8) * 8;
            self.spill();
        }
        self.out.truncate(self.pos);
        self.out
    }
}

/// Huffman code lengths for `freq`, none longer than `limit` (frequencies
/// are halved until the tree fits; a symbol that occurs keeps a code).
fn lengths(freq: &[u32], limit: u8) -> Vec<u8> {
    let mut f = freq.to_vec();
    loop {
        let mut syms: Vec<(u32, usize)> = f
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (*c, i))
            .collect();
        let mut len = vec![0u8; f.len()];
        match syms.len() {
            0 => return len,
            1 => {
                len[syms[0].1] = 1;
                return len;
            }
            _ => {}
        }
        syms.sort_unstable();
        // Two queues: the leaves by weight, the inner nodes as made (their
        // weights never decrease), so no heap is needed.
        let n = syms.len();
        let mut parent = vec![0usize; 2 * n - 1];
        let mut weight: Vec<u64> = syms.iter().map(|s| u64::from(s.0)).collect();
        weight.resize(2 * n - 1, 0);
        let (mut leaf, mut inner) = (0usize, n);
        for next in n..2 * n - 1 {
            let mut lightest = || {
                if leaf < n && (inner >= next || weight[leaf] <= weight[inner]) {
                    leaf += 1;
                    leaf - 1
                } else {
                    inner += 1;
                    inner - 1
                }
            };
            let (a, b) = (lightest(), lightest());
            weight[next] = weight[a] + weight[b];
            parent[a] = next;
            parent[b] = next;
        }
        let mut depth = vec![0u8; 2 * n - 1];
        for i in (0..2 * n - 2).rev() {
            depth[i] = depth[parent[i]] + 1;
        }
        if depth[..n].iter().all(|d| *d <= limit) {
            for (i, s) in syms.iter().enumerate() {
                len[s.1] = depth[i];
            }
            return len;
        }
        for c in f.iter_mut().filter(|c| **c > 0) {
            *c = (*c >> 1).max(1);
        }
    }
}

/// Deflate's canonical codes for `len`, bit-reversed (codes are sent from
/// their most significant bit, into a stream written from the least).
fn codes(len: &[u8]) -> Vec<u32> {
    let mut count = [0u32; 16];
    for l in len {
        count[usize::from(*l)] += 1;
    }
    count[0] = 0;
    let mut next = [0u32; 16];
    let mut code = 0;
    for b in 1..16 {
        code = (code + count[b - 1]) << 1;
        next[b] = code;
    }
    len.iter()
        .map(|l| match *l {
            0 => 0,
            l => {
                let c = next[usize::from(l)];
                next[usize::from(l)] += 1;
                c.reverse_bits() >> (32 - u32::from(l))
            }
        })
        .collect()
}

/// The order code-length code lengths are sent in (RFC 1951, 3.2.7).
const CL_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Run-length codes of the code lengths: (symbol, extra value, extra bits).
fn length_runs(all: &[u8]) -> Vec<(u8, u32, u32)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let v = all[i];
        let run = all[i..].iter().take_while(|x| **x == v).count();
        let mut left = run;
        if v == 0 {
            while left >= 11 {
                let r = left.min(138);
                out.push((18, (r - 11) as u32, 7));
                left -= r;
            }
            if left >= 3 {
                out.push((17, (left - 3) as u32, 3));
                left = 0;
            }
        } else {
            out.push((v, 0, 0));
            left -= 1;
            while left >= 3 {
                let r = left.min(6);
                out.push((16, (r - 3) as u32, 2));
                left -= r;
            }
        }
        out.extend(std::iter::repeat_n((v, 0, 0), left));
        i += run;
    }
    out
}

/// Deflate's length code for a match of `len` (3..=258) bytes: the
/// symbol, its extra bits' count and value (RFC 1951, 3.2.5).
fn length_code(len: usize) -> (usize, u32, u32) {
    let k = usize::from(LENGTH_SLOT[len]);
    (
        257 + k,
        u32::from(LENGTH_EXTRA[k]),
        (len - usize::from(LENGTH_BASE[k])) as u32,
    )
}

/// The first match length of each length code.
const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
/// The extra bits of each length code.
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// The length code (less 257) of every match length 0..=258 (0 below 3).
const LENGTH_SLOT: [u8; 259] = {
    let mut t = [0u8; 259];
    let mut len = 3;
    while len <= 258 {
        let mut k = 28;
        while LENGTH_BASE[k] as usize > len {
            k -= 1;
        }
        t[len] = k as u8;
        len += 1;
    }
    t
};

/// The shortest run of one byte coded as a match (distance 1) instead of
/// literals: flat areas (a plain background) filter to long runs of one
/// value, which literals alone would code at a bit a byte or more.
const MIN_RUN: usize = 8;
// [`runs`] finds no run between two differing bytes of one word.
const _: () = assert!(MIN_RUN > 6);

/// The 8 bytes at `i`, little-endian.
#[inline(always)]
fn word(data: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&data[i..i + 8]);
    u64::from_le_bytes(w)
}

/// 0x80 in each byte of `v` that is zero, 0 elsewhere (exact).
#[inline(always)]
fn zero_bytes(v: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((v & LOW7) + LOW7) | v | LOW7)
}

/// Calls `run(start, len)` for each run of `data`, in order: `len` ≥
/// [`MIN_RUN`] bytes from `start` that repeat the byte before them. Eight
/// bytes at a time: which of them equal the byte before, as one word.
#[inline(always)]
fn runs(data: &[u8], mut run: impl FnMut(usize, usize)) {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = data.len();
    // Bytes equal to the one before them, ending just before `i`.
    let mut cur = 0usize;
    let mut i = 1;
    while i + 8 <= n {
        // 0x80 in each of the eight bytes that differs from the one before.
        let differ = !zero_bytes(word(data, i) ^ word(data, i - 1)) & HIGH;
        if differ == 0 {
            cur += 8;
        } else {
            // A run that ends here: the equal bytes before, and those at the
            // start of this word. None fits between two differing bytes of
            // one word (MIN_RUN > 6).
            let head = (differ.trailing_zeros() / 8) as usize;
            if cur + head >= MIN_RUN {
                run(i + head - (cur + head), cur + head);
            }
            cur = (differ.leading_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n {
        if data[i] == data[i - 1] {
            cur += 1;
        } else {
            if cur >= MIN_RUN {
                run(i - cur, cur);
            }
            cur = 0;
        }
        i += 1;
    }
    if cur >= MIN_RUN {
        run(n - cur, cur);
    }
}

/// The match lengths (each 3..=258) a run of `r` bytes is coded as, and
/// the bytes left over (0..=2), coded as literals.
#[inline]
fn run_matches(mut r: usize, mut each: impl FnMut(usize)) -> usize {
    while r >= 3 {
        // Never leave 1 or 2 bytes, which no match can take.
        let m = if r > 258 && r - 258 < 3 {
            r - 3
        } else {
            r.min(258)
        };
        each(m);
        r -= m;
    }
    r
}

/// Literal codes and lengths (`code | len << 16`) for the bytes.
type Table = [u32; 256];

/// Codes `bytes` as literals. The accumulator lives in locals here (the
/// compiler cannot keep it in registers through `bits`, whose buffer it
/// cannot tell apart from the fields).
#[inline(always)]
fn literals(bits: &mut Bits, table: &Table, bytes: &[u8]) {
    // Codes are at most 14 bits: at most 2 bytes each, and a word of slack.
    let need = bits.pos + bytes.len() * 2 + 16;
    if need > bits.out.len() {
        bits.out.resize(need + bits.out.len(), 0);
    }
    let (mut acc, mut n, mut pos) = (bits.acc, bits.n, bits.pos);
    let out = &mut bits.out[..];
    // Four codes of ≤ 14 bits (the literal code's limit) fit the
    // accumulator between spills.
    let mut quads = bytes.chunks_exact(4);
    for q in &mut quads {
        for b in q {
            let e = table[usize::from(*b)];
            acc |= u64::from(e & 0xffff) << n;
            n += e >> 16;
        }
        out[pos..pos + 8].copy_from_slice(&acc.to_le_bytes());
        let whole = n / 8;
        pos += whole as usize;
        acc >>= whole * 8;
        n -= whole * 8;
    }
    (bits.acc, bits.n, bits.pos) = (acc, n, pos);
    for b in quads.remainder() {
        let e = table[usize::from(*b)];
        bits.add(e & 0xffff, e >> 16);
    }
    bits.spill();
}

/// Counts `bytes` into four histograms (so that repeats of a byte do not
/// wait on each other).
#[inline(always)]
fn count(f4: &mut [[u32; 256]; 4], bytes: &[u8]) {
    let mut quads = bytes.chunks_exact(4);
    for q in &mut quads {
        f4[0][usize::from(q[0])] += 1;
        f4[1][usize::from(q[1])] += 1;
        f4[2][usize::from(q[2])] += 1;
        f4[3][usize::from(q[3])] += 1;
    }
    for b in quads.remainder() {
        f4[0][usize::from(*b)] += 1;
    }
}

/// One dynamic-Huffman block: literals, and runs as matches at distance 1.
fn block(bits: &mut Bits, data: &[u8], last: bool) {
    // The runs first, then the bytes between them counted as literals (a
    // flat image is mostly runs: little left to count).
    let mut found = Vec::new();
    runs(data, |start, r| found.push((start, r)));
    let mut f4 = [[0u32; 256]; 4];
    let mut freq = [0u32; 286];
    let mut done = 0;
    for &(start, r) in &found {
        count(&mut f4, &data[done..start]);
        let left = run_matches(r, |m| freq[length_code(m).0] += 1);
        // The bytes no match takes are literals.
        freq[usize::from(data[start])] += left as u32;
        done = start + r;
    }
    count(&mut f4, &data[done..]);
    for (i, f) in freq.iter_mut().take(256).enumerate() {
        *f += f4[0][i] + f4[1][i] + f4[2][i] + f4[3][i];
    }
    let runs_used = !found.is_empty();
    freq[256] = 1; // end of block

    // 14 bits at most, so that four codes fit between spills ([`literals`]).
    let ll = lengths(&freq, 14);
    let lc = codes(&ll);
    let hlit = (257..=286).rev().find(|n| ll[n - 1] != 0).unwrap_or(257);
    // One distance code (distance 1) when there are runs; else one of
    // length zero: "no distance codes", as RFC 1951 allows.
    let mut all = ll[..hlit].to_vec();
    all.push(u8::from(runs_used));
    let cl_runs = length_runs(&all);
    let mut cf = [0u32; 19];
    for (s, _, _) in &cl_runs {
        cf[usize::from(*s)] += 1;
    }
    let cl = lengths(&cf, 7);
    let cc = codes(&cl);
    let hclen = (4..=19)
        .rev()
        .find(|n| cl[CL_ORDER[n - 1]] != 0)
        .unwrap_or(4);
    bits.put(u32::from(last), 1);
    bits.put(2, 2); // dynamic Huffman
    bits.put((hlit - 257) as u32, 5);
    bits.put(0, 5); // HDIST: 1 code
    bits.put((hclen - 4) as u32, 4);
    for k in &CL_ORDER[..hclen] {
        bits.put(u32::from(cl[*k]), 3);
    }
    for (s, extra, n) in &cl_runs {
        bits.add(cc[usize::from(*s)], u32::from(cl[usize::from(*s)]));
        bits.put(*extra, *n);
    }
    let mut table: Table = [0; 256];
    for (s, t) in table.iter_mut().enumerate() {
        *t = lc[s] | (u32::from(ll[s]) << 16);
    }
    let mut done = 0;
    for (start, r) in found {
        literals(bits, &table, &data[done..start]);
        let left = run_matches(r, |m| {
            let (sym, extra_bits, extra) = length_code(m);
            bits.add(lc[sym], u32::from(ll[sym]));
            bits.add(extra, extra_bits);
            // The distance code, the only one: a single 0 bit.
            bits.add(0, 1);
            bits.spill();
        });
        literals(bits, &table, &data[start + r - left..start + r]);
        done = start + r;
    }
    literals(bits, &table, &data[done..]);
    bits.put(lc[256], u32::from(ll[256]));
}

/// The zlib stream of `data`: header, blocks of literals and runs, Adler-32.
fn zlib(data: &[u8]) -> Vec<u8> {
    let mut bits = Bits {
        out: vec![0u8; data.len() * 3 / 4 + 1024],
        pos: 0,
        acc: 0,
        n: 0,
    };
    // CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (fastest, check bits).
    bits.put(0x78, 8);
    bits.put(0x01, 8);
    let blocks = data.len().div_ceil(BLOCK).max(1);
    for (i, c) in data.chunks(BLOCK).enumerate() {
        block(&mut bits, c, i + 1 == blocks);
    }
    if data.is_empty() {
        block(&mut bits, &[], true);
    }
    let mut out = bits.finish();
    out.extend_from_slice(&simd_adler32::adler32(&data).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn inflate(z: &[u8]) -> Vec<u8> {
        let mut d = flate2::read::ZlibDecoder::new(z);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut out).expect("a valid zlib stream");
        out
    }

    /// Every shape of data comes back exactly through an independent
    /// inflater: empty, one byte, one symbol repeated, runs of every length
    /// near the matches' limits, all 256 bytes, skewed data whose Huffman
    /// tree is deeper than 15 bits, noise, and more than one block.
    #[test]
    fn the_stream_inflates_to_its_input() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut skewed = Vec::new();
        for k in 0..24u32 {
            // Fibonacci-like counts make the deepest trees.
            let n = [
                1u32, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181,
                6765, 10946, 17711, 28657, 46368,
            ][k as usize];
            skewed.extend(std::iter::repeat_n(k as u8, n as usize));
        }
        let noise: Vec<u8> = (0..300_000).map(|_| rng.random()).collect();
        // Runs of every length around the matches' limits (3, 258).
        let mut runs = Vec::new();
        for (k, n) in (1..=12)
            .chain(255..=262)
            .chain([516, 517, 518, 1000])
            .enumerate()
        {
            runs.extend(std::iter::repeat_n(k as u8, n));
        }
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![7],
            vec![0; 1000],
            runs,
            (0..=255).collect(),
            skewed,
            noise,
        ];
        for data in cases {
            assert_eq!(inflate(&zlib(&data)), data, "{} bytes", data.len());
        }
    }

    /// The word-at-a-time scan finds exactly the runs a byte-by-byte scan
    /// finds: every length around [`MIN_RUN`] and the word size, at every
    /// offset in a word, touching the start and the end of the data.
    #[test]
    fn runs_are_those_a_byte_by_byte_scan_finds() {
        fn slow(data: &[u8]) -> Vec<(usize, usize)> {
            let mut out = Vec::new();
            let mut i = 1;
            while i < data.len() {
                let r = data[i..].iter().take_while(|x| **x == data[i - 1]).count();
                if r >= MIN_RUN {
                    out.push((i, r));
                }
                i += r.max(1);
            }
            out
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for case in 0..400 {
            let mut data = Vec::new();
            while data.len() < 200 + case {
                // A run of one byte, then a few bytes that differ.
                let len = rng.random_range(1..=2 * MIN_RUN + 9);
                let v = rng.random_range(0..4u8);
                data.extend(std::iter::repeat_n(v, len));
                for _ in 0..rng.random_range(0..4) {
                    data.push(rng.random());
                }
            }
            let mut fast = Vec::new();
            runs(&data, |start, len| fast.push((start, len)));
            assert_eq!(fast, slow(&data), "case {case}");
        }
        let flat = vec![7u8; 1000];
        let mut fast = Vec::new();
        runs(&flat, |start, len| fast.push((start, len)));
        assert_eq!(fast, vec![(1, 999)]);
    }

    /// The code lengths respect their limit and form a complete prefix
    /// code (Kraft sum exactly 1 when two or more symbols occur).
    #[test]
    fn code_lengths_are_limited_and_complete() {
        let fib: Vec<u32> = (0..30)
            .scan((1u32, 1u32), |s, _| {
                let v = s.0;
                *s = (s.1, s.0 + s.1);
                Some(v)
            })
            .collect();
        for limit in [7u8, 15] {
            let len = lengths(&fib, limit);
            assert!(len.iter().all(|l| *l >= 1 && *l <= limit), "{len:?}");
            let kraft: f64 = len.iter().map(|l| 0.5f64.powi(i32::from(*l))).sum();
            assert!((kraft - 1.0).abs() < 1e-12, "Kraft sum {kraft}");
        }
    }

    #[test]
    fn rows_given_a_few_at_a_time_are_filtered_as_all_at_once() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (w, h, bpp) = (23usize, 40usize, 3usize);
        let stride = w * bpp;
        let mut px: Vec<u8> = (0..stride * h)
            .map(|i| (i as u32 / 5 + rng.random_range(0..4)) as u8)
            .collect();
        // Rows equal to the one above, also across a strip's edge.
        for y in [8usize, 9, 17, 24] {
            let (above, row) = px.split_at_mut(y * stride);
            row[..stride].copy_from_slice(&above[(y - 1) * stride..]);
        }
        for how in [RowFilter::Entropy, RowFilter::MinSum, RowFilter::Fixed(4)] {
            let all = filter_rows(&px, stride, h, bpp, how);
            for strip in [1usize, 3, 8, 40] {
                let mut rows = Rows::new(stride, h, bpp, how);
                for part in px.chunks(strip * stride) {
                    rows.push(part);
                }
                assert!(rows.finish() == all, "{how:?} in strips of {strip}");
            }
        }
        let mut streamed = Vec::new();
        let data = image_data_of_rows(w, h, bpp, |give| {
            for part in px.chunks(8 * stride) {
                give(part);
                streamed.push(part.len());
            }
        });
        assert_eq!(data, image_data(&px, w, h, bpp));
        assert_eq!(streamed.len(), 5);
        // No bytes a row: only the type bytes, as before.
        assert_eq!(filter_rows(&[], 0, 3, 3, RowFilter::Entropy), vec![0; 3]);
    }

    /// Filtering is what PNG's decoders undo: a PNG made with this image
    /// data decodes to the same pixels (odd widths, 1 to 4 bytes a pixel),
    /// whichever way the rows' filters are chosen.
    #[test]
    fn filtered_rows_decode_to_the_pixels() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let hows = [RowFilter::Entropy, RowFilter::MinSum]
            .into_iter()
            .chain((0..5).map(RowFilter::Fixed));
        for (how, (w, h, bpp)) in hows.flat_map(|how| {
            [
                (1usize, 1usize, 3usize),
                (5, 3, 3),
                (17, 9, 4),
                (33, 20, 1),
                (64, 64, 3),
            ]
            .map(|shape| (how, shape))
        }) {
            let px: Vec<u8> = (0..w * h * bpp)
                .map(|i| (i as u32 / 7 + rng.random_range(0..3)) as u8)
                .collect();
            let f = filter_rows(&px, w * bpp, h, bpp, how);
            assert_eq!(f.len(), (w * bpp + 1) * h);
            // Undo the filters as a decoder does.
            let stride = w * bpp;
            let mut back = vec![0u8; stride * h];
            for y in 0..h {
                let kind = f[y * (stride + 1)];
                for i in 0..stride {
                    let v = f[y * (stride + 1) + 1 + i];
                    let a = if i >= bpp {
                        back[y * stride + i - bpp]
                    } else {
                        0
                    };
                    let b = if y > 0 { back[(y - 1) * stride + i] } else { 0 };
                    let c = if y > 0 && i >= bpp {
                        back[(y - 1) * stride + i - bpp]
                    } else {
                        0
                    };
                    let p = match kind {
                        0 => 0,
                        1 => a,
                        2 => b,
                        3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                        _ => paeth(a, b, c),
                    };
                    back[y * stride + i] = v.wrapping_add(p);
                }
            }
            assert_eq!(back, px, "{how:?} {w}x{h}x{bpp}");
        }
    }
}
