"""W&B's offline diffusers autolog (the real one) vs difflog.autolog, on the
same 512x512 outputs of the same tiny StableDiffusionPipeline (issue 16).

Each side runs in a process of its own (both hook the same class). Before
either hook is installed, the pipeline's own `__call__` is wrapped in a
timer, so per call: time in the caller's thread for recording = the call's
whole time minus the pipeline's own time. Printed: both times, and the two
ratios the issue sets: difflog / W&B (target <= 1/40) and difflog / the
pipeline's own time (target <= 2 %).

    python benches/python_autolog.py [--calls 8] [--images 4] [--size 512] [--json]
    (run with .venv-diffusers/bin/python; scripts/bench installs wandb there)
"""

import argparse
import atexit
import shutil
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from statistics import median

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "..", "tests", "python")


def child(mode, calls, images, size):
    sys.path.insert(0, TESTS)
    import torch
    from diffusers import StableDiffusionPipeline

    import tiny

    torch.set_num_threads(2)
    own = []
    original = StableDiffusionPipeline.__dict__["__call__"]

    @functools.wraps(original)
    def timed(self, *a, **k):
        t = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            own.append(time.perf_counter() - t)

    StableDiffusionPipeline.__call__ = timed
    work = tempfile.mkdtemp(prefix=f"difflog-bench-{mode}-")
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    finish = lambda: None  # noqa: E731
    if mode == "wandb":
        os.environ["WANDB_DIR"] = work
        os.environ["WANDB_MODE"] = "offline"
        os.environ["WANDB_SILENT"] = "true"
        import wandb
        from wandb.integration.diffusers import autolog

        autolog(init=dict(project="difflog-bench", mode="offline"))
        finish = wandb.finish
    elif mode == "difflog":
        import difflog

        difflog.autolog(init=dict(project="difflog-bench"), root=work)
        finish = difflog.finish
    pipe = tiny.sd_large()
    whole = []
    for i in range(calls + 1):
        # One generator for the batch: W&B's resolver fails on a list.
        g = torch.Generator().manual_seed(i)
        t = time.perf_counter()
        pipe("a cat", num_images_per_prompt=images, height=size, width=size, num_inference_steps=2, generator=g)
        whole.append(time.perf_counter() - t)
    t = time.perf_counter()
    finish()
    fin = time.perf_counter() - t
    # The first call warms both up (imports, the W&B run's start): not counted.
    rec = [w - o for w, o in zip(whole[1:], own[1:])]
    print(json.dumps({"recording_s": rec, "own_s": own[1:], "finish_s": fin}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=["wandb", "difflog"])
    a = ap.parse_args()
    if a.child:
        child(a.child, a.calls, a.images, a.size)
        return
    got = {}
    for mode in ("wandb", "difflog"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--calls", str(a.calls), "--images", str(a.images), "--size", str(a.size)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            sys.exit(f"{mode} side failed:\n{out.stderr[-3000:]}")
        got[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    # Medians: a call now and then waits on the machine (2 cores shared
    # with torch's threads), on both sides.
    w, d = median(got["wandb"]["recording_s"]), median(got["difflog"]["recording_s"])
    own = median(got["difflog"]["own_s"])
    figures = {
        "calls": a.calls,
        "images_per_call": a.images,
        "size": a.size,
        "wandb_caller_ms_per_call": round(w * 1000, 2),
        "difflog_caller_ms_per_call": round(d * 1000, 2),
        "pipeline_own_ms_per_call": round(own * 1000, 1),
        "difflog_over_wandb": round(d / w, 4),
        "difflog_over_pipeline": round(d / own, 4),
        "wandb_finish_s": round(got["wandb"]["finish_s"], 2),
        "difflog_finish_s": round(got["difflog"]["finish_s"], 2),
    }
    if a.json:
        print(json.dumps(figures))
        return
    print(f"{a.calls} calls x {a.images} images of {a.size}x{a.size}, tiny StableDiffusionPipeline, 2 steps")
    print(f"median time in the caller's thread per call: W&B autolog {figures['wandb_caller_ms_per_call']} ms, "
          f"difflog {figures['difflog_caller_ms_per_call']} ms")
    print(f"difflog / W&B: {figures['difflog_over_wandb']} (target <= {1 / 40})")
    print(f"difflog / the pipeline's own {figures['pipeline_own_ms_per_call']} ms: "
          f"{figures['difflog_over_pipeline']} (target <= 0.02)")
    print(f"finish: W&B {figures['wandb_finish_s']} s, difflog {figures['difflog_finish_s']} s (waits for the writer)")


if __name__ == "__main__":
    main()
