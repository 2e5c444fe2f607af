"""tests/python/torch_randn.py against torch itself (issue 33): the values
and the generator's whole state after `torch.randn` for seeds, sizes
around the 16-value block and the tail, a latent-sized tensor, and
float32, float16 and bfloat16; a recorded state restored and continued.

The vectorized path (16 values and more) is PyTorch's AVX2 kernel on x86
CPUs with AVX2 or AVX-512; on others torch takes another kernel (the
platform's libm), so only the generator, the scalar path and the state
are compared there (said in the output).
"""

import os
import sys
import unittest

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import torch_randn as R  # noqa: E402

VECTOR = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_bits(t, dtype):
    t = t.flatten()
    if dtype == "bfloat16":
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy().view(np.uint16 if dtype == "float16" else np.uint32)


def mine_bits(x, dtype):
    if dtype == "bfloat16":
        return x
    return x.view(np.uint16 if dtype == "float16" else np.uint32)


class TorchRandn(unittest.TestCase):
    def compare(self, seed, shape, dtype):
        n = int(np.prod(shape))
        g = torch.Generator().manual_seed(seed)
        want = torch_bits(torch.randn(shape, generator=g, dtype=DTYPES[dtype]), dtype)
        mg = R.MT19937(seed)
        got = mine_bits(R.randn(mg, n, dtype), dtype)
        bad = int((want != got).sum())
        self.assertEqual(bad, 0, f"seed {seed} {shape} {dtype}: {bad} of {n} values differ")
        self.assertEqual(bytes(g.get_state().numpy()), mg.get_state(), f"seed {seed} {shape} {dtype}: state")

    def test_the_generator_and_the_scalar_path(self):
        # Below 16 values: MT19937 and the double Box-Muller, on any CPU.
        for seed in (0, 42, 2**40 + 7):
            for n in (1, 3, 15):
                for dtype in DTYPES:
                    with self.subTest(seed=seed, n=n, dtype=dtype):
                        self.compare(seed, (n,), dtype)
        # Known values: manual_seed(0); randn(4).
        mg = R.MT19937(0)
        self.assertEqual(
            R.randn(mg, 4).view(np.uint32).tolist(), [0x3FC53F5C, 0xBE963C50, 0xC00B7149, 0x3F1184B6]
        )

    def test_the_vectorized_path_its_tail_and_latents(self):
        if not VECTOR:
            print(f"torch's CPU kernel here is {torch.backends.cpu.get_cpu_capability()}: the AVX2 path is not compared")
            return
        for seed in (0, 42, 2**40 + 7):
            for shape in ((16,), (17,), (100,), (1, 4, 64, 64)):
                for dtype in DTYPES:
                    with self.subTest(seed=seed, shape=shape, dtype=dtype):
                        self.compare(seed, shape, dtype)

    def test_a_recorded_state_continues_the_stream(self):
        g = torch.Generator().manual_seed(7)
        torch.randn(3, generator=g)  # leaves a cached second value
        state = bytes(g.get_state().numpy())
        mg = R.MT19937.from_state(state)
        n = 5 if not VECTOR else 40
        want = torch.randn(n, generator=g).numpy().view(np.uint32)
        got = R.randn(mg, n).view(np.uint32)
        self.assertEqual(int((want != got).sum()), 0)
        self.assertEqual(bytes(g.get_state().numpy()), mg.get_state())


if __name__ == "__main__":
    unittest.main()
