"""PyTorch's CPU `torch.randn`, reimplemented bit for bit in Python (issue 33).

A seed means other noise in difflog than in PyTorch today; making them
mean the same needs the algorithm, exactly: the CPU generator (MT19937
seeded from the seed's low 32 bits; 64-bit draws high word first), the
uniforms (24 bits for float32, 53 for the scalar double path), the normal
transform (16 values a block, Box-Muller with cephes' log/sincos as
PyTorch's AVX2 kernel computes them, fused multiply-adds where the
compiler fuses them; the scalar double path below 16 values, with its
cached second value), the tail (the last 16 redrawn), float16/bfloat16
(a float buffer per block), and the 5056-byte state `get_state()` holds.
This module is that algorithm as read from PyTorch's sources (ATen's
MT19937RNGEngine.h, CPUGeneratorImpl.cpp, TransformationHelper.h,
DistributionsHelper.h, native/cpu/DistributionTemplates.h, avx_mathfun.h);
tests/python/test_torch_randn.py holds it against torch itself, so a Rust
port can be checked against both.
"""
import math
import struct
import numpy as np

F = np.float32
N, M = 624, 397
MATRIX_A = 0x9908B0DF


class MT19937:
    def __init__(self, seed=5489):
        self.seed = seed & 0xFFFFFFFFFFFFFFFF
        st = [0] * N
        st[0] = seed & 0xFFFFFFFF                      # low 32 bits of the 64-bit seed
        for j in range(1, N):
            st[j] = (1812433253 * (st[j - 1] ^ (st[j - 1] >> 30)) + j) & 0xFFFFFFFF
        self.state = np.array(st, dtype=np.uint32)
        self.left = 1
        self.next = 0
        self.normal_double = None   # CPUGeneratorImpl::next_double_normal_sample_
        self.normal_float = None    # CPUGeneratorImpl::next_float_normal_sample_ (unused by randn)

    @staticmethod
    def _twist(u, v):
        mix = (u & np.uint32(0x80000000)) | (v & np.uint32(0x7FFFFFFF))
        return (mix >> np.uint32(1)) ^ np.where((v & np.uint32(1)) != 0, np.uint32(MATRIX_A), np.uint32(0))

    def _next_state(self):
        s = self.state
        self.left, self.next = N, 0
        # i in [0, 227): s[i] = s[i+397] ^ twist(s[i], s[i+1])
        i = np.arange(0, N - M)
        s[i] = s[i + M] ^ self._twist(s[i], s[i + 1])
        # i in [227, 623): s[i] = s[i-227] ^ twist(s[i], s[i+1]) (uses freshly updated values)
        for a, b in ((N - M, 2 * (N - M)), (2 * (N - M), N - 1)):
            i = np.arange(a, b)
            s[i] = s[i - (N - M)] ^ self._twist(s[i], s[i + 1])
        s[N - 1] = s[M - 1] ^ self._twist(s[N - 1:N], s[0:1])[0]

    def random(self):
        self.left -= 1
        if self.left == 0:
            self._next_state()
        y = int(self.state[self.next]); self.next += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        return y & 0xFFFFFFFF

    def random64(self):
        hi = self.random(); lo = self.random()
        return (hi << 32) | lo

    # ---- torch.Generator.get_state() / set_state() byte layout (5056 bytes, little endian)
    def get_state(self):
        b = bytearray(5056)
        struct.pack_into('<QiiQ', b, 0, self.seed, self.left, 1, self.next)
        struct.pack_into('<624Q', b, 24, *[int(x) for x in self.state])
        struct.pack_into('<dddi', b, 5016, 0.0, self.normal_double or 0.0, 0.0, self.normal_double is not None)
        struct.pack_into('<f?', b, 5048, self.normal_float or 0.0, self.normal_float is not None)
        return bytes(b)

    @classmethod
    def from_state(cls, b):
        g = cls.__new__(cls)
        g.seed, g.left, _seeded, g.next = struct.unpack_from('<QiiQ', b, 0)
        g.state = np.array(struct.unpack_from('<624Q', b, 24), dtype=np.uint64).astype(np.uint32)
        _x, y, _rho, valid = struct.unpack_from('<dddi', b, 5016)
        g.normal_double = y if valid else None
        fv, fvalid = struct.unpack_from('<f?', b, 5048)
        g.normal_float = fv if fvalid else None
        return g


def uniform_f32(g):   # uniform_real<float>: (r & 0xFFFFFF) * 2^-24, float arithmetic (exact)
    return F((g.random() & 0xFFFFFF) * (1.0 / 16777216.0))


def uniform_f64(g):   # uniform_real<double>: (random64 & (2^53-1)) * 2^-53
    return (g.random64() & ((1 << 53) - 1)) * (1.0 / 9007199254740992.0)


# ---------------- exact float32 FMA (GCC contracts mul+add in avx_mathfun.h into vfmadd) ----------
def fma32(a, b, c):
    a = np.asarray(a, F).astype(np.float64); b = np.asarray(b, F).astype(np.float64)
    c = np.asarray(c, F).astype(np.float64)
    p = a * b                                  # exact (48-bit product)
    s = p + c
    bp = s - p
    err = (p - (s - bp)) + (c - bp)            # TwoSum: p + c == s + err exactly
    r = s.astype(F)
    r64 = r.astype(np.float64)
    toward = np.nextafter(r, np.where(s > r64, F(np.inf), F(-np.inf)).astype(F))
    mid = (s != r64) & ((r64 + toward.astype(np.float64)) == 2 * s) & (err != 0)
    # exact value lies strictly on err's side of the midpoint s
    pick_toward = mid & (np.sign(err) == np.sign(toward.astype(np.float64) - r64))
    return np.where(pick_toward, toward, r).astype(F)


def madd(a, b, c, fused):
    if fused:
        return fma32(a, b, c)
    return ((np.asarray(a, F) * np.asarray(b, F)).astype(F) + np.asarray(c, F)).astype(F)


def _bits(x): return np.asarray(x, F).view(np.int32)
def _fl(i): return np.asarray(i, np.int32).view(F)


LOG_P = [7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1, 1.4249322787E-1,
         -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1]


def log256_ps(x, fused=True):
    x = np.asarray(x, F)
    one = F(1)
    invalid = x <= 0
    x = np.maximum(x, _fl(np.int32(0x00800000)))
    imm0 = (_bits(x).view(np.uint32) >> 23).astype(np.int32)
    x = _fl((_bits(x) & np.int32(~0x7F800000)) | _bits(F(0.5)))
    e = (imm0 - 0x7F).astype(F) + one
    mask = x < F(0.707106781186547524)
    tmp = np.where(mask, x, F(0))
    x = x - one
    e = e - np.where(mask, one, F(0))
    x = x + tmp
    z = x * x
    y = np.full_like(x, F(LOG_P[0]))
    for p in LOG_P[1:]:
        y = madd(y, x, F(p), fused)           # y = y*x + p
    y = y * x
    # y = y*z; y = y + e*q1   (GCC: first mul in statement order is fused -> fma(y, z, e*q1))
    y = madd(y, z, e * F(-2.12194440e-4), fused)
    y = madd(-z, F(0.5), y, fused)            # y = y - z*0.5
    x = madd(e, F(0.693359375), x + y, fused)  # x = (x + y) + e*q2
    return np.where(invalid, F(np.nan), x)


def sincos256_ps(x, fused=True):
    x = np.asarray(x, F)
    sign_sin = _bits(x) & np.int32(-0x80000000)
    x = _fl(_bits(x) & np.int32(0x7FFFFFFF))
    y = x * F(1.27323954473516)
    j = y.astype(np.int32)                    # cvttps (truncate)
    j = (j + 1) & ~1
    y = j.astype(F)
    swap_sin = (j & 4) << 29
    poly = (j & 2) == 0
    x = madd(y, F(-0.78515625), x, fused)
    x = madd(y, F(-2.4187564849853515625e-4), x, fused)
    x = madd(y, F(-3.77489497744594108e-8), x, fused)
    sign_cos = (~(j - 2) & 4) << 29
    sign_sin = sign_sin ^ swap_sin
    z = x * x
    yc = madd(F(2.443315711809948E-005), z, F(-1.388731625493765E-003), fused)
    yc = madd(yc, z, F(4.166664568298827E-002), fused)
    yc = yc * z
    # y = y*z; y = y - z*0.5  -> fma(y, z, -(z*0.5)) when fused (first mul fused)
    yc = madd(yc, z, -(z * F(0.5)), fused)
    yc = yc + F(1)
    ys = madd(F(-1.9515295891E-4), z, F(8.3321608736E-3), fused)
    ys = madd(ys, z, F(-1.6666654611E-1), fused)
    ys = ys * z
    ys = madd(ys, x, x, fused)
    ysin2 = np.where(poly, ys, F(0)); ysin1 = np.where(poly, F(0), yc)
    ys2 = ys - ysin2; yc2 = yc - ysin1
    s = _fl(_bits(ysin1 + ysin2) ^ sign_sin)
    c = _fl(_bits(yc2 + ys2) ^ sign_cos)
    return s, c


TWO_PI_F = F(2.0 * math.pi)


def normal_fill_16_avx2(d, mean=0.0, std=1.0, fused=True):
    u1 = F(1) - d[:8]
    u2 = d[8:16]
    radius = np.sqrt(F(-2) * log256_ps(u1, fused)).astype(F)
    theta = TWO_PI_F * u2
    s, c = sincos256_ps(theta, fused)
    out = np.empty(16, F)
    out[:8] = fma32(radius * c, F(std), F(mean))
    out[8:] = fma32(radius * s, F(std), F(mean))
    return out


def normal_scalar_double(g, mean=0.0, std=1.0):
    """at::normal_distribution<double> (used for numel < 16 or non-contiguous)."""
    if g.normal_double is not None:
        r = g.normal_double; g.normal_double = None
        return r * std + mean
    u1 = uniform_f64(g)
    u2 = uniform_f64(g)
    r = math.sqrt(-2.0 * math.log1p(-u2))
    theta = 2.0 * math.pi * u1
    g.normal_double = r * math.sin(theta)
    return r * math.cos(theta) * std + mean


def _to_dtype(x32, dtype):
    if dtype == 'float32':
        return x32.astype(F)
    if dtype == 'float16':
        return x32.astype(F).astype(np.float16)
    if dtype == 'bfloat16':   # round-to-nearest-even on the upper 16 bits; returned as uint16 bit patterns
        u = x32.astype(F).view(np.uint32).astype(np.uint64)
        r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        return r
    raise ValueError(dtype)


def randn(g, numel, dtype='float32', fused=True):
    if numel < 16:
        vals = np.array([normal_scalar_double(g) for _ in range(numel)], dtype=np.float64)
        return _to_dtype(vals.astype(F), dtype)          # double -> float (-> half/bf16)
    if dtype == 'float32':
        data = np.array([uniform_f32(g) for _ in range(numel)], dtype=F)
        for i in range(0, numel - 15, 16):
            data[i:i + 16] = normal_fill_16_avx2(data[i:i + 16], fused=fused)
        if numel % 16:
            tail = np.array([uniform_f32(g) for _ in range(16)], dtype=F)
            data[numel - 16:] = normal_fill_16_avx2(tail, fused=fused)
        return data
    # float16 / bfloat16 (torch >= the NormalFill16/opmath rewrite): per-block float buffer
    out = np.empty(numel, F)
    for i in range(0, numel - 15, 16):
        buf = np.array([uniform_f32(g) for _ in range(16)], dtype=F)
        out[i:i + 16] = normal_fill_16_avx2(buf, fused=fused)
    if numel % 16:
        buf = np.array([uniform_f32(g) for _ in range(16)], dtype=F)
        out[numel - 16:] = normal_fill_16_avx2(buf, fused=fused)
    return _to_dtype(out, dtype)
