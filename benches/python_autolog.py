"""W&B's offline diffusers autolog (the real one) vs difflog.autolog, on the
same 512x512 outputs of the same tiny StableDiffusionPipeline (issues 16, 30).

Three processes -- no recorder (the baseline), W&B's autolog, difflog's --
each hold the same pipeline, and take turns call by call (baseline, W&B,
difflog, baseline, ...), so that the machine's load falls on all three
alike. Before any hook is installed, the pipeline's own `__call__` is
wrapped in a timer, so per call: time in the caller's thread for recording
= the call's whole time minus the pipeline's own time. Each process also
reports its whole CPU time (every thread: difflog's background encoding and
W&B's included, and the processes it ran: W&B's ffmpeg) over the measured calls and the run's finish, less the
caller thread's CPU inside the pipeline (torch runs on one thread here, so
that is all of the pipeline's work); a side's recording CPU per call is
that minus the same figure of the side with no recorder.

`--video F` makes each call a video call instead (issue 37): a real
diffusers AnimateDiffPipeline (tiny) whose own work is replaced by handing
back one ready video of F frames panning across a smooth picture (the tiny
model itself takes minutes a call at 512² here, and what a recorder costs
depends only on what the call returns), which W&B's autolog encodes as an
MP4 twice in the caller (the media panel's and the table's `wandb.Video`,
through MoviePy and ffmpeg, installed beside wandb) and difflog hands to
its writer threads, which encode it as one MP4 (the run's default). The pipeline's own time is then
nil, and only the caller and CPU ratios mean anything.

By default the calls pass no generator (the default path: difflog changes
nothing, W&B passes nothing either); `--generator one` passes one seeded
generator per call.

Printed: the times and the issue's ratios -- difflog / W&B in the caller
(target <= 1/40), difflog / the pipeline's own time (target <= 2 %), and
whole-process recording CPU difflog / W&B (target <= 1).

    python benches/python_autolog.py [--calls 8] [--images 4] [--size 512] [--generator none|one] [--video F] [--json]
    (run with .venv-diffusers/bin/python; scripts/bench installs wandb there)
"""

import argparse
import atexit
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from statistics import median

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "..", "tests", "python")
SIDES = ("none", "wandb", "difflog")


def cpu_s():
    """CPU seconds of this process and of the children it waited for
    (W&B's MoviePy runs ffmpeg to encode each video)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _ready_video(real, frames, size):
    """A stand-in for AnimateDiffPipeline's own work (`real`, whose
    signature it keeps: recorders bind the call's arguments to it): the
    video of `frames` frames of `size`² each call (each call's starting a
    pixel further along: a recorder may store equal videos once), as
    diffusers returns one."""
    import numpy as np
    from diffusers.pipelines.animatediff.pipeline_output import AnimateDiffPipelineOutput
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0 : size + 2 * frames + 64].astype(np.float32)
    wide = np.stack(
        [
            (np.sin(xx / 23.0) + np.cos(yy / 17.0) + 2.0) * 60.0,
            (np.sin((xx + yy) / 31.0) + 1.0) * 120.0,
            (np.cos(xx / 41.0 - yy / 29.0) + 1.0) * 110.0 + (xx % 7),
        ],
        axis=-1,
    ).clip(0, 255).astype(np.uint8)
    calls = [0]

    @functools.wraps(real)
    def own(self, *a, **k):
        at = calls[0] % 64
        calls[0] += 1
        video = [Image.fromarray(np.ascontiguousarray(wide[:, at + 2 * i : at + 2 * i + size])) for i in range(frames)]
        return AnimateDiffPipelineOutput(frames=[video])

    return own


def child(mode, images, size, generator, video):
    """One side: answers each line on stdin ("call N" or "finish") with a
    JSON line."""
    sys.path.insert(0, TESTS)
    import torch
    from diffusers import AnimateDiffPipeline, StableDiffusionPipeline

    import tiny

    Pipeline = AnimateDiffPipeline if video else StableDiffusionPipeline

    # One torch thread: the pipeline's own work is then all in the caller's
    # thread, and its CPU time is that thread's during the call.
    torch.set_num_threads(1)
    own = []
    own_cpu = []
    original = Pipeline.__dict__["__call__"]
    if video:
        original = _ready_video(original, video, size)

    @functools.wraps(original)
    def timed(self, *a, **k):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return original(self, *a, **k)
        finally:
            own.append(time.perf_counter() - t)
            own_cpu.append(time.thread_time() - c)

    Pipeline.__call__ = timed
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
    if video:
        import zoo

        pipe = zoo._animatediff()
    else:
        pipe = tiny.sd_large()
    cpu0 = None
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "call":
            i = int(cmd[1])
            if i == 1:
                cpu0 = cpu_s()  # call 0 warms up (imports, the W&B run's start): not counted
            kw = {}
            if generator == "one":
                # One generator for the batch: W&B's resolver fails on a list.
                kw["generator"] = torch.Generator().manual_seed(i)
            t = time.perf_counter()
            if video:
                # Every argument autolog's AnimateDiff table reads, given
                # (it reads them from the call's keywords only).
                pipe("a cat", negative_prompt="", num_frames=video, height=size, width=size, num_inference_steps=2, **kw)
            else:
                pipe("a cat", num_images_per_prompt=images, height=size, width=size, num_inference_steps=2, **kw)
            whole = time.perf_counter() - t
            print(json.dumps({"whole_s": whole, "own_s": own[-1], "own_cpu_s": own_cpu[-1]}), flush=True)
        elif cmd[0] == "finish":
            t = time.perf_counter()
            finish()
            fin = time.perf_counter() - t
            cpu = cpu_s() - (cpu0 if cpu0 is not None else 0.0)
            # What the side stored: a W&B autolog that failed on the call
            # logs nothing, and its cost would be no cost.
            media = sum(1 for d, _, fs in os.walk(work) for f in fs if "media" in d and f.endswith((".png", ".gif", ".mp4")))
            print(json.dumps({"finish_s": fin, "cpu_s": cpu, "files": media}), flush=True)
            return


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--generator", choices=["none", "one"], default="none")
    ap.add_argument("--video", type=int, default=0, metavar="F", help="video calls of F frames (AnimateDiff)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=SIDES)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.images, a.size, a.generator, a.video)
        return
    procs = {
        mode: subprocess.Popen(
            [sys.executable, __file__, "--child", mode, "--images", str(a.images), "--size", str(a.size), "--generator", a.generator, "--video", str(a.video)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode in SIDES
    }

    def ask(mode, cmd):
        p = procs[mode]
        p.stdin.write(cmd + "\n")
        p.stdin.flush()
        line = p.stdout.readline()
        if not line:
            sys.exit(f"the {mode} side failed (exit {p.wait()})")
        return json.loads(line)

    got = {m: [] for m in SIDES}
    for i in range(a.calls + 1):
        for mode in SIDES:
            r = ask(mode, f"call {i}")
            if i > 0:
                got[mode].append(r)
    end = {m: ask(m, "finish") for m in SIDES}
    for p in procs.values():
        p.wait()
    if a.video:
        # W&B's run holds the videos it encoded (two a call), difflog's
        # run one animated PNG a call: neither side skipped its work.
        for m in ("wandb", "difflog"):
            if end[m]["files"] < a.calls:
                sys.exit(f"the {m} side stored {end[m]['files']} files for {a.calls} video calls")
    # Medians: a call now and then waits on the machine (2 cores shared
    # with torch's threads), on every side.
    rec = {m: median(r["whole_s"] - r["own_s"] for r in got[m]) for m in SIDES}
    own = median(r["own_s"] for r in got["difflog"])
    # CPU of everything but the pipeline's own work, per call: the whole
    # process (every thread, the finish included) minus the caller's thread
    # inside the pipeline; the side with no recorder gives what is left
    # without recording (the progress bar, the interpreter), subtracted.
    cpu = {m: (end[m]["cpu_s"] - sum(r["own_cpu_s"] for r in got[m])) / a.calls for m in SIDES}
    w, d = rec["wandb"], rec["difflog"]
    cw, cd = cpu["wandb"] - cpu["none"], cpu["difflog"] - cpu["none"]
    figures = {
        "calls": a.calls,
        "images_per_call": 0 if a.video else a.images,
        "video_frames": a.video,
        "size": a.size,
        "generator": a.generator,
        "wandb_caller_ms_per_call": round(w * 1000, 2),
        "difflog_caller_ms_per_call": round(d * 1000, 2),
        "pipeline_own_ms_per_call": round(own * 1000, 1),
        "difflog_over_wandb": round(d / w, 4),
        "difflog_over_pipeline": round(d / own, 4),
        "cpu_outside_pipeline_ms_per_call": {m: round(cpu[m] * 1000, 1) for m in SIDES},
        "wandb_recording_cpu_ms_per_call": round(cw * 1000, 1),
        "difflog_recording_cpu_ms_per_call": round(cd * 1000, 1),
        "difflog_over_wandb_cpu": round(cd / cw, 4) if cw > 0 else None,
        "wandb_finish_s": round(end["wandb"]["finish_s"], 2),
        "difflog_finish_s": round(end["difflog"]["finish_s"], 2),
    }
    if a.json:
        print(json.dumps(figures))
        return
    what = f"1 video of {a.video} frames" if a.video else f"{a.images} images"
    pipeline = "AnimateDiffPipeline" if a.video else "StableDiffusionPipeline"
    print(f"{a.calls} calls x {what} of {a.size}x{a.size}, tiny {pipeline}, 2 steps, "
          f"generator: {a.generator}; the three sides take turns call by call")
    print(f"median time in the caller's thread per call: W&B autolog {figures['wandb_caller_ms_per_call']} ms, "
          f"difflog {figures['difflog_caller_ms_per_call']} ms")
    print(f"difflog / W&B: {figures['difflog_over_wandb']} (target <= {1 / 40})")
    print(f"difflog / the pipeline's own {figures['pipeline_own_ms_per_call']} ms: "
          f"{figures['difflog_over_pipeline']} (target <= 0.02)")
    c = figures["cpu_outside_pipeline_ms_per_call"]
    print(f"whole-process CPU per call outside the pipeline (all threads): none {c['none']} ms, "
          f"W&B {c['wandb']} ms, difflog {c['difflog']} ms")
    print(f"recording CPU per call (side - none): W&B {figures['wandb_recording_cpu_ms_per_call']} ms, "
          f"difflog {figures['difflog_recording_cpu_ms_per_call']} ms; difflog / W&B: "
          f"{figures['difflog_over_wandb_cpu']} (target <= 1)")
    print(f"finish: W&B {figures['wandb_finish_s']} s, difflog {figures['difflog_finish_s']} s (waits for the writer)")


if __name__ == "__main__":
    main()
