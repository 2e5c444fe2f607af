"""Writes what torch's own CPU generator draws, for tests/python.rs to hold
difflog's Rust port (src/pipelines/parts/torch_rng.rs) against (issue 33).

    python torch_randn_dump.py OUT.json

Each case: a seed, the draws made in turn (count and dtype) and, for each,
the values' bit patterns (hex, little endian) and the generator's state
after it; one case restores a recorded state and continues from it.
`vector` says whether torch runs its AVX2 kernel here (else the
vectorized path is another kernel, and only the scalar path is exact).
"""
import json
import sys

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def bits(t):
    return t.flatten().contiguous().view(torch.uint8).numpy().tobytes().hex()


def state(g):
    return bytes(g.get_state().numpy()).hex()


def case(seed, draws, restore_after=None):
    g = torch.Generator().manual_seed(seed)
    out = {"seed": seed, "draws": []}
    for i, (n, dtype) in enumerate(draws):
        if restore_after is not None and i == restore_after:
            out["restored_state"] = state(g)
        t = torch.randn(n, generator=g, dtype=DTYPES[dtype])
        out["draws"].append({"n": n, "dtype": dtype, "bits": bits(t), "state": state(g)})
    return out


def main():
    cases = []
    for seed in (0, 42, 2**40 + 7, 2**64 - 1):
        for n in (1, 3, 15, 16, 17, 31, 100, 4 * 8 * 8, 4 * 64 * 64):
            for dtype in DTYPES:
                cases.append(case(seed, [(n, dtype)]))
    # A stream drawn in turn, as a pipeline draws it (initial latents, then
    # an ancestral sampler's noise each step), and one continued from a
    # recorded state with a cached scalar value in it.
    cases.append(case(1234, [(256, "float32"), (256, "float32"), (3, "float32"), (700, "float32")]))
    cases.append(case(7, [(3, "float32"), (5, "float32"), (40, "float32")], restore_after=1))
    vector = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    json.dump({"torch": torch.__version__, "vector": vector, "cases": cases}, open(sys.argv[1], "w"))


if __name__ == "__main__":
    main()
