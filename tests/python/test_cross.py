"""Runs recorded on one side re-made on the other (issue 33): a call
recorded from Python (diffusers through difflog's autolog, one
`torch.Generator` per image) re-made by `difflog replay` on candle, and a
call made by `difflog generate --rng torch-cpu` re-made in diffusers by
`difflog.remake`; with the tiny SD model, which difflog writes as a
diffusers folder (DIFFLOG_TINY_SD, set by tests/python.rs), and the tiny
FLUX.1 and SD3 ones (DIFFLOG_TINY_FLUX, _FLUX_DEV, _SD3). The pixels
must match within one level of 255 (difflog's parity tolerance: the PNG's
rounding; tests/parity.rs).
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
import difflog  # noqa: E402
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline  # noqa: E402

BIN = os.environ["DIFFLOG_BIN"]
MODEL = os.environ["DIFFLOG_TINY_SD"]
# difflog's tiny FLUX.1 (schnell- and dev-shaped) and SD3 folders.
FLOW = {k: os.environ[f"DIFFLOG_TINY_{k.upper().replace('-', '_')}"] for k in ("flux", "flux-dev", "sd3")}
torch.set_num_threads(1)


def only_run(root):
    runs = [os.path.join(d, x) for d, dirs, _ in os.walk(root) for x in dirs if os.path.isfile(os.path.join(d, x, "run.json"))]
    assert len(runs) == 1, runs
    return runs[0]


class Cross(unittest.TestCase):
    def test_a_python_run_is_replayed_on_candle(self):
        with tempfile.TemporaryDirectory() as root:
            pipe = StableDiffusionPipeline.from_pretrained(MODEL)
            pipe.set_progress_bar_config(disable=True)
            run = difflog.Run(project="cross", root=root)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run.call(
                    pipe,
                    prompt=["a red circle", "a blue square"],
                    negative_prompt=["blurry", "blurry"],
                    num_inference_steps=4,
                    height=64,
                    width=64,
                    generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
                )
                pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
                run.call(pipe, prompt="a green line", num_inference_steps=3, height=64, width=64, generator=torch.Generator().manual_seed(9))
                # torch's global generator: nothing of the image's own to draw from.
                run.call(pipe, prompt="no generator", num_inference_steps=2, height=64, width=64)
                # A generator used before the call: its recorded state.
                g = torch.Generator().manual_seed(11)
                torch.randn(37, generator=g)
                run.call(pipe, prompt="a used generator", num_inference_steps=3, height=64, width=64, generator=[g])
            run.finish()
            d = only_run(root)
            for call, rows in ((1, 2), (2, 1), (4, 1)):
                o = subprocess.run([BIN, "replay", d, "--call", str(call), "--json"], capture_output=True, text=True)
                self.assertEqual(o.returncode, 0, o.stdout + o.stderr)
                v = json.loads(o.stdout)
                self.assertTrue(v["matches"], v)
                self.assertEqual(len(v["rows"]), rows)
                for r in v["rows"]:
                    self.assertLessEqual(r["max_difference"], 1.0, r)
            o = subprocess.run([BIN, "replay", d, "--call", "3"], capture_output=True, text=True)
            self.assertEqual(o.returncode, 2, o.stdout + o.stderr)
            self.assertIn("global generator", o.stderr)

    def test_a_difflog_generate_run_is_remade_in_diffusers(self):
        with tempfile.TemporaryDirectory() as root:
            args = [BIN, "generate", "--model", MODEL, "--prompt", "a red circle", "--prompt", "a blue square",
                    "--negative-prompt", "blurry", "--num-images-per-prompt", "2", "--steps", "3",
                    "--scheduler", "euler-a", "--seed", "21", "--rng", "torch-cpu", "--runs", root]
            o = subprocess.run(args, capture_output=True, text=True)
            self.assertEqual(o.returncode, 0, o.stderr)
            d = only_run(root)
            pipe = StableDiffusionPipeline.from_pretrained(MODEL)
            pipe.set_progress_bar_config(disable=True)
            pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
            made = difflog.remake(d, 1, pipe)
            self.assertEqual(len(made.images), 4)
            self.assertTrue(all(x is not None and x <= 1 for x in made.largest), made.largest)
            one = difflog.remake(d, 1, pipe, row=3)
            self.assertEqual(len(one.images), 1)
            self.assertLessEqual(one.largest[0], 1)
            # Without --rng torch-cpu the noise is difflog's own: refused.
            o = subprocess.run(args[:-4] + ["--runs", os.path.join(root, "own")], capture_output=True, text=True)
            self.assertEqual(o.returncode, 0, o.stderr)
            with self.assertRaisesRegex(ValueError, "rng torch-cpu"):
                difflog.remake(only_run(os.path.join(root, "own")), 1, pipe)

    def test_flux_and_sd3_runs_cross_both_ways(self):
        from diffusers import DiffusionPipeline

        def pipeline(key):
            pipe = DiffusionPipeline.from_pretrained(FLOW[key])
            pipe.set_progress_bar_config(disable=True)
            return pipe

        # Recorded from Python (T5's length as the folder's tokenizer says,
        # or another one the call names), replayed on candle. diffusers
        # records its default guidance for schnell, which has no input for
        # it; SD3 with and without skip-layer guidance (the tiny model's
        # default has it: a call recorded without must replay without).
        slg = dict(skip_guidance_layers=[0], skip_layer_guidance_scale=2.8, skip_layer_guidance_start=0.0, skip_layer_guidance_stop=0.5)
        for key, kw in (
            ("flux", dict(max_sequence_length=48)),
            ("flux-dev", dict(guidance_scale=3.5)),
            ("sd3", dict(guidance_scale=4.5, negative_prompt="blurry", **slg)),
            ("sd3", dict(guidance_scale=4.5)),
        ):
            with self.subTest(key=key, kw=sorted(kw)), tempfile.TemporaryDirectory() as root:
                pipe = pipeline(key)
                kw = dict(kw)
                tokenizer = pipe.tokenizer_2 if key.startswith("flux") else pipe.tokenizer_3
                kw.setdefault("max_sequence_length", tokenizer.model_max_length)
                run = difflog.Run(project="cross", root=root)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    run.call(
                        pipe,
                        prompt=["a red circle", "a blue square"],
                        num_inference_steps=3,
                        height=64,
                        width=64,
                        generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
                        **kw,
                    )
                run.finish()
                o = subprocess.run([BIN, "replay", only_run(root), "--call", "1", "--json"], capture_output=True, text=True)
                self.assertEqual(o.returncode, 0, o.stdout + o.stderr)
                v = json.loads(o.stdout)
                self.assertTrue(v["matches"], v)
                self.assertEqual([r["max_difference"] <= 1.0 for r in v["rows"]], [True, True], v)
        # Made by difflog generate --rng torch-cpu, re-made in diffusers
        # (SD3: with the skip-layer guidance difflog applied and recorded).
        for key, model in (("flux-dev", "tiny-flux-dev"), ("sd3", "tiny-sd3")):
            with self.subTest(key=key), tempfile.TemporaryDirectory() as root:
                args = [BIN, "generate", "--model", model, "--prompt", "a red circle", "--num-images-per-prompt", "2",
                        "--steps", "3", "--seed", "5", "--rng", "torch-cpu", "--runs", root]
                o = subprocess.run(args, capture_output=True, text=True)
                self.assertEqual(o.returncode, 0, o.stderr)
                made = difflog.remake(only_run(root), 1, pipeline(key))
                self.assertEqual(len(made.images), 2)
                self.assertTrue(all(x is not None and x <= 1 for x in made.largest), made.largest)


if __name__ == "__main__":
    unittest.main()
