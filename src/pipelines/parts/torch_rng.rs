//! PyTorch's CPU random generator and its `torch.randn`, bit for bit, so
//! that a seed means in difflog what it means in PyTorch (issue 33):
//! `TorchGenerator::new(s).randn(n)` gives the values of
//! `torch.randn(n, generator=torch.Generator("cpu").manual_seed(s))`.
//!
//! The algorithm, as PyTorch's sources have it (ATen's MT19937 engine, the
//! CPU generator, the uniform and normal transformations and the CPU
//! kernel of `normal_`): MT19937 seeded from the seed's low 32 bits;
//! float uniforms from 24 bits of one draw, double uniforms from 53 bits of
//! two; from 16 values on, Box-Muller over blocks of 16 (the first 8
//! uniforms give the radius, the last 8 the angle) with cephes' single
//! precision log and sincos computed as the AVX2 kernel computes them,
//! fused multiply-adds where the compiler fuses them, the last 16 values
//! redrawn when the count is no multiple of 16; below 16 values, the double
//! Box-Muller of the scalar path with its cached second value. Float16 and
//! bfloat16 go through a float buffer a block at a time. The generator's
//! state is the 5056 bytes `torch.Generator.get_state()` returns.
//!
//! Exact where torch runs that AVX2 kernel (x86 CPUs with AVX2 or AVX-512,
//! every machine difflog's suite runs on); on other CPUs torch's vectorized
//! path uses the platform's libm and may differ in the last bit. The scalar
//! path calls the platform's libm (log1p, sin, cos) as torch does.
//! `tests/python.rs` holds this module against torch itself, and
//! `tests/python/torch_randn.py` is the same algorithm in Python.

use half::{bf16, f16};

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_B0DF;
/// The size of a state as `torch.Generator.get_state()` returns it.
pub const STATE_BYTES: usize = 5056;

/// PyTorch's CPU generator (`torch.Generator("cpu")`): MT19937 and the
/// cached values of its normal samplers.
#[derive(Clone)]
pub struct TorchGenerator {
    seed: u64,
    state: [u32; N],
    left: u32,
    next: usize,
    /// The scalar sampler's second value, kept for its next call.
    normal_double: Option<f64>,
    /// The float sampler's (kept in the state; `randn` never uses it).
    normal_float: Option<f32>,
}

impl std::fmt::Debug for TorchGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchGenerator")
            .field("seed", &self.seed)
            .field("left", &self.left)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// The element type `torch.randn` is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `torch.float32`.
    F32,
    /// `torch.float16`.
    F16,
    /// `torch.bfloat16`.
    Bf16,
}

impl TorchGenerator {
    /// `torch.Generator("cpu").manual_seed(seed)`.
    pub fn new(seed: u64) -> TorchGenerator {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        TorchGenerator {
            seed,
            state,
            left: 1,
            next: 0,
            normal_double: None,
            normal_float: None,
        }
    }

    /// The seed it was made with (`initial_seed()`).
    pub fn initial_seed(&self) -> u64 {
        self.seed
    }

    fn twist(u: u32, v: u32) -> u32 {
        let mix = (u & 0x8000_0000) | (v & 0x7FFF_FFFF);
        (mix >> 1) ^ if v & 1 != 0 { MATRIX_A } else { 0 }
    }

    fn next_state(&mut self) {
        let s = &mut self.state;
        self.left = N as u32;
        self.next = 0;
        for i in 0..N - M {
            s[i] = s[i + M] ^ Self::twist(s[i], s[i + 1]);
        }
        for i in N - M..N - 1 {
            s[i] = s[i + M - N] ^ Self::twist(s[i], s[i + 1]);
        }
        s[N - 1] = s[M - 1] ^ Self::twist(s[N - 1], s[0]);
    }

    /// The next 32 random bits.
    pub fn random(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.next_state();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9D2C_5680;
        y ^= (y << 15) & 0xEFC6_0000;
        y ^ (y >> 18)
    }

    /// The next 64 random bits (two draws, the first the high word).
    pub fn random64(&mut self) -> u64 {
        let hi = self.random() as u64;
        let lo = self.random() as u64;
        (hi << 32) | lo
    }

    fn uniform_f32(&mut self) -> f32 {
        (self.random() & 0x00FF_FFFF) as f32 * (1.0 / 16_777_216.0)
    }

    fn uniform_f64(&mut self) -> f64 {
        (self.random64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One value of the scalar (double) normal sampler.
    fn normal_scalar(&mut self) -> f64 {
        if let Some(v) = self.normal_double.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.normal_double = Some(r * theta.sin());
        r * theta.cos()
    }

    fn fill_block(&mut self) -> [f32; 16] {
        let mut d = [0f32; 16];
        for v in d.iter_mut() {
            *v = self.uniform_f32();
        }
        normal_block(&d)
    }

    /// `torch.randn(n, generator=self)` in float32.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_scalar() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for chunk in data.chunks_exact_mut(16) {
            let mut block = [0f32; 16];
            block.copy_from_slice(chunk);
            chunk.copy_from_slice(&normal_block(&block));
        }
        if !n.is_multiple_of(16) {
            let tail = self.fill_block();
            data[n - 16..].copy_from_slice(&tail);
        }
        data
    }

    /// `torch.randn(n, generator=self, dtype=…)` for float16 or bfloat16
    /// (as float32 bit patterns widened back: the values are exact halves),
    /// or float32.
    pub fn randn_as(&mut self, n: usize, dtype: Dtype) -> Vec<f32> {
        let narrow = |v: f32| match dtype {
            Dtype::F32 => v,
            Dtype::F16 => f16::from_f32(v).to_f32(),
            Dtype::Bf16 => bf16::from_f32(v).to_f32(),
        };
        if dtype == Dtype::F32 {
            return self.randn(n);
        }
        if n < 16 {
            return (0..n)
                .map(|_| narrow(self.normal_scalar() as f32))
                .collect();
        }
        let mut out = vec![0f32; n];
        for chunk in out.chunks_exact_mut(16) {
            chunk.copy_from_slice(&self.fill_block());
        }
        if !n.is_multiple_of(16) {
            let tail = self.fill_block();
            out[n - 16..].copy_from_slice(&tail);
        }
        out.into_iter().map(narrow).collect()
    }

    /// The state as `torch.Generator.get_state()` returns it (5056 bytes).
    pub fn state(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(STATE_BYTES);
        b.extend_from_slice(&self.seed.to_le_bytes());
        b.extend_from_slice(&(self.left as i32).to_le_bytes());
        b.extend_from_slice(&1i32.to_le_bytes()); // seeded
        b.extend_from_slice(&(self.next as u64).to_le_bytes());
        for v in self.state {
            b.extend_from_slice(&(v as u64).to_le_bytes());
        }
        b.extend_from_slice(&0f64.to_le_bytes());
        b.extend_from_slice(&self.normal_double.unwrap_or(0.0).to_le_bytes());
        b.extend_from_slice(&0f64.to_le_bytes());
        b.extend_from_slice(&(self.normal_double.is_some() as i32).to_le_bytes());
        b.extend_from_slice(&[0u8; 4]);
        b.extend_from_slice(&self.normal_float.unwrap_or(0.0).to_le_bytes());
        b.push(self.normal_float.is_some() as u8);
        b.resize(STATE_BYTES, 0);
        b
    }

    /// A generator restored from a state `get_state()` returned; refuses
    /// one that is not (wrong size, a position outside the state).
    pub fn from_state(b: &[u8]) -> Result<TorchGenerator, String> {
        if b.len() != STATE_BYTES {
            return Err(format!(
                "a torch CPU generator state is {STATE_BYTES} bytes, not {}",
                b.len()
            ));
        }
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let i32_at = |o: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[o..o + 4]);
            i32::from_le_bytes(a)
        };
        let (seed, left, next) = (u64_at(0), i32_at(8), u64_at(16));
        // Every draw before the next regeneration reads state[next..next+left-1].
        if !(1..=N as i32).contains(&left) || next + left as u64 > N as u64 + 1 {
            return Err(format!(
                "the generator state's position is impossible (left {left}, next {next})"
            ));
        }
        let mut state = [0u32; N];
        for (i, s) in state.iter_mut().enumerate() {
            let v = u64_at(24 + 8 * i);
            *s = u32::try_from(v)
                .map_err(|_| format!("the generator state's word {i} is no 32-bit value"))?;
        }
        let y = f64::from_le_bytes(b[5024..5032].try_into().map_err(|_| "short state")?);
        let float = f32::from_le_bytes(b[5048..5052].try_into().map_err(|_| "short state")?);
        Ok(TorchGenerator {
            seed,
            state,
            left: left as u32,
            next: next as usize,
            normal_double: (i32_at(5040) != 0).then_some(y),
            normal_float: (b[5052] != 0).then_some(float),
        })
    }
}

/// A float constant as the C sources write it: a double literal stored in
/// a float.
const fn c(x: f64) -> f32 {
    x as f32
}

const LOG_P: [f32; 9] = [
    c(7.0376836292E-2),
    c(-1.1514610310E-1),
    c(1.1676998740E-1),
    c(-1.2420140846E-1),
    c(1.4249322787E-1),
    c(-1.6668057665E-1),
    c(2.0000714765E-1),
    c(-2.4999993993E-1),
    c(3.3333331174E-1),
];

/// cephes' single-precision natural log, as the AVX2 kernel computes it.
fn log_ps(x: f32) -> f32 {
    if x.is_nan() || x <= 0.0 {
        return f32::NAN;
    }
    let x = x.max(f32::from_bits(0x0080_0000));
    let imm0 = (x.to_bits() >> 23) as i32;
    let mut x = f32::from_bits((x.to_bits() & !0x7F80_0000) | 0.5f32.to_bits());
    let mut e = (imm0 - 0x7F) as f32 + 1.0;
    let mask = x < c(std::f64::consts::FRAC_1_SQRT_2);
    let tmp = if mask { x } else { 0.0 };
    x -= 1.0;
    e -= if mask { 1.0 } else { 0.0 };
    x += tmp;
    let z = x * x;
    let mut y = LOG_P[0];
    for p in &LOG_P[1..] {
        y = y.mul_add(x, *p);
    }
    y *= x;
    y = y.mul_add(z, e * c(-2.12194440e-4));
    y = (-z).mul_add(0.5, y);
    e.mul_add(c(0.693359375), x + y)
}

/// cephes' single-precision sine and cosine, as the AVX2 kernel computes them.
// The constants are written as the C sources write them.
#[allow(clippy::excessive_precision)]
fn sincos_ps(x: f32) -> (f32, f32) {
    let mut sign_sin = x.to_bits() & 0x8000_0000;
    let mut x = f32::from_bits(x.to_bits() & 0x7FFF_FFFF);
    let y = x * c(1.27323954473516);
    let mut j = y as i32;
    j = (j + 1) & !1;
    let y = j as f32;
    let swap_sin = ((j & 4) as u32) << 29;
    let poly = j & 2 == 0;
    x = y.mul_add(c(-0.78515625), x);
    x = y.mul_add(c(-2.4187564849853515625e-4), x);
    x = y.mul_add(c(-3.77489497744594108e-8), x);
    let sign_cos = ((!(j - 2) & 4) as u32) << 29;
    sign_sin ^= swap_sin;
    let z = x * x;
    let mut yc = c(2.443315711809948E-005).mul_add(z, c(-1.388731625493765E-003));
    yc = yc.mul_add(z, c(4.166664568298827E-002));
    yc *= z;
    yc = yc.mul_add(z, -(z * 0.5));
    yc += 1.0;
    let mut ys = c(-1.9515295891E-4).mul_add(z, c(8.3321608736E-3));
    ys = ys.mul_add(z, c(-1.6666654611E-1));
    ys *= z;
    ys = ys.mul_add(x, x);
    let (ysin2, ysin1) = if poly { (ys, 0.0) } else { (0.0, yc) };
    let (ys2, yc2) = (ys - ysin2, yc - ysin1);
    let s = f32::from_bits((ysin1 + ysin2).to_bits() ^ sign_sin);
    let c = f32::from_bits((yc2 + ys2).to_bits() ^ sign_cos);
    (s, c)
}

/// Box-Muller over one block of 16 uniforms (mean 0, standard deviation 1).
fn normal_block(d: &[f32; 16]) -> [f32; 16] {
    let two_pi = c(2.0 * std::f64::consts::PI);
    let mut out = [0f32; 16];
    for k in 0..8 {
        let radius = (-2.0 * log_ps(1.0 - d[k])).sqrt();
        let (s, co) = sincos_ps(two_pi * d[8 + k]);
        out[k] = (radius * co).mul_add(1.0, 0.0);
        out[8 + k] = (radius * s).mul_add(1.0, 0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_seed_0_gives_torchs_first_values() {
        // torch.randn(4, generator=torch.Generator().manual_seed(0)), as
        // float32 bit patterns (the scalar path).
        let bits: Vec<u32> = TorchGenerator::new(0)
            .randn(4)
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(bits, [0x3FC5_3F5C, 0xBE96_3C50, 0xC00B_7149, 0x3F11_84B6]);
    }

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // MT19937 seeded with 5489 (its reference seed): the 10000th output.
        let mut g = TorchGenerator::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = g.random();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn a_state_round_trips_and_a_bad_one_is_refused() {
        let mut g = TorchGenerator::new(7);
        g.randn(3);
        let s = g.state();
        assert_eq!(s.len(), STATE_BYTES);
        let mut h = TorchGenerator::from_state(&s).unwrap();
        assert_eq!(h.state(), s);
        assert_eq!(g.randn(40), h.randn(40));
        assert!(TorchGenerator::from_state(&s[..100]).is_err());
        let mut bad = s.clone();
        bad[16..24].copy_from_slice(&5000u64.to_le_bytes());
        assert!(TorchGenerator::from_state(&bad).is_err());
        let mut bad = s;
        bad[24 + 7..24 + 8].copy_from_slice(&[1]);
        assert!(TorchGenerator::from_state(&bad).is_err());
    }
}
