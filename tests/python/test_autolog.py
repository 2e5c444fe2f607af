"""difflog's Python package against real diffusers and torch (issue 16).

Run by tests/python.rs (cargo test), which sets DIFFLOG_BIN to the built
`difflog` binary: what a call recorded is read back the way users read it,
`difflog show --json`, and the stored PNGs are opened from the run
directory. Each test records into its own temporary root.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import warnings
from typing import Optional

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import difflog  # noqa: E402
import tiny  # noqa: E402
from diffusers import DiffusionPipeline, ImagePipelineOutput  # noqa: E402

BIN = os.environ["DIFFLOG_BIN"]
torch.set_num_threads(1)
STEPS = dict(num_inference_steps=2)


def show(run_dir):
    out = subprocess.run([BIN, "show", "--json", run_dir], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def verify(run_dir):
    out = subprocess.run([BIN, "verify", run_dir], capture_output=True, text=True)
    return out.returncode, out.stdout + out.stderr


def report(run_dir, root):
    """The HTML of ``difflog report`` for a run."""
    out = os.path.join(root, "report-" + os.path.basename(run_dir))
    p = subprocess.run([BIN, "report", run_dir, "-o", out], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with open(os.path.join(out, "index.html"), encoding="utf-8") as f:
        return f.read()


def cells(row):
    return {c["column"]: c for c in row["cells"]}


def value(cell):
    return cell.get("value") if cell["type"] in ("text", "number") else None


def stored(run_dir, cell):
    """The pixels of a stored image cell, as RGB bytes."""
    assert cell["type"] == "image", cell
    with Image.open(os.path.join(run_dir, cell["path"])) as im:
        return im.convert("RGB").tobytes(), im.size, dict(im.text)


def pixels(img):
    return img.convert("RGB").tobytes()


def near(a, b):
    """Same size, no channel value off by more than 2, and under 1 % of them
    off at all."""
    if len(a) != len(b):
        return False
    off = [abs(x - y) for x, y in zip(a, b) if x != y]
    return (not off or max(off) <= 2) and len(off) <= len(a) // 100


class Base(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="difflog-py-")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        self.addCleanup(difflog.finish)

    def start(self, **kw):
        return difflog.autolog(init=dict(project="pytest", tags=["py"], config={"lr": 1}), root=self.root, **kw)

    def recorded(self, run):
        difflog.finish()
        return show(run.dir)


class TextToImage(Base):
    def test_table_workflow_seeds_images_and_reproduction(self):
        pipe = tiny.sd()
        # Opted in: one seeded generator per image, passed by difflog.
        run = self.start(seed_images=True)
        out = pipe(["a cat", "a dog"], negative_prompt=["blue", "red"], num_images_per_prompt=2, height=32, width=32, **STEPS)
        v = self.recorded(run)
        self.assertEqual(v["state"], "finished")
        self.assertEqual(v["run"]["project"], "pytest")
        self.assertEqual(v["run"]["tags"], ["py"])
        self.assertEqual(v["config"]["lr"], 1)
        env = v["config"]["environment"]
        self.assertEqual(env["torch"], torch.__version__)
        self.assertEqual(env["diffusers"], __import__("diffusers").__version__)
        [call] = v["calls"]
        started = call["started"]
        self.assertEqual(started["stage"], "Pipeline-Call-1")
        self.assertEqual(started["columns"], ["Prompt", "Negative-Prompt", "Generated-Image", "Seed", "Remake"])
        params = started["params"]
        # Every argument, diffusers' defaults filled in from the signature.
        self.assertEqual(params["guidance_scale"], 7.5)
        self.assertEqual(params["eta"], 0.0)
        self.assertEqual(params["output_type"], "pil")
        self.assertEqual(params["num_inference_steps"], 2)
        self.assertEqual(params["generator_from"], "difflog")
        seeds = [g["seed"] for g in params["generator"]]
        self.assertEqual(len(set(seeds)), 4)
        self.assertEqual(started["seeds"], seeds)
        # The pipeline: class, every component's class, dtype, device, config.
        [p] = v["pipelines"]
        self.assertEqual(p["class"], "StableDiffusionPipeline")
        self.assertEqual(p["dtype"], "float32")
        self.assertEqual(p["device"], "cpu")
        self.assertEqual(p["components"]["unet"]["class"], "UNet2DConditionModel")
        self.assertEqual(p["components"]["unet"]["config"]["block_out_channels"], [32, 64])
        self.assertEqual(p["components"]["text_encoder"]["library"], "transformers")
        self.assertEqual(p["scheduler"]["name"], "DDIMScheduler")
        self.assertEqual(p["scheduler"]["beta_schedule"], "scaled_linear")
        # The workflow entry in autolog's shape.
        [w] = v["workflow"]
        self.assertEqual(w["pipeline"]["pipeline-name"], "StableDiffusionPipeline")
        self.assertEqual(w["stage"], "Pipeline-Call-1")
        self.assertEqual(w["params"]["negative_prompt"], ["blue", "red"])
        # Rows: prompt by image, the seed, the stored PNG = the returned pixels.
        self.assertEqual(call["finished"]["status"], "ok")
        self.assertEqual(call["finished"]["images"], 4)
        t = call["finished"]["timings_ms"]
        for k in ("total", "denoising", "decoding", "saving"):
            self.assertIn(k, t)
        self.assertLess(t["denoising"], t["total"])
        rows = call["rows"]
        self.assertEqual([value(cells(r)["Prompt"]) for r in rows], ["a cat", "a cat", "a dog", "a dog"])
        self.assertEqual([value(cells(r)["Negative-Prompt"]) for r in rows], ["blue", "blue", "red", "red"])
        self.assertEqual([value(cells(r)["Seed"]) for r in rows], seeds)
        self.assertEqual([value(cells(r)["Remake"]) for r in rows], ["alone"] * 4)
        for r, img in zip(rows, out.images):
            px, size, text = stored(run.dir, cells(r)["Generated-Image"])
            self.assertEqual(size, img.size)
            self.assertEqual(px, pixels(img))
            self.assertIn(f"Seed: {value(cells(r)['Seed'])}", text["parameters"])
            self.assertIn("Sampler: DDIM", text["parameters"])
        captions = [m["caption"] for m in call["media"] if m["key"] == "Generated-Image/Pipeline-Call-1"]
        self.assertEqual(captions, ["a cat", "a cat", "a dog", "a dog"])
        self.assertEqual(verify(run.dir)[0], 0)
        # One row made again from its seed alone, in a call of its own.
        again = pipe(
            "a dog",
            negative_prompt="red",
            height=32,
            width=32,
            generator=torch.Generator().manual_seed(seeds[3]),
            **STEPS,
        ).images[0]
        # The same image up to torch's CPU arithmetic: a batch of one and a
        # batch of four take other kernel paths, which can move a channel
        # value by one here and there (seen: 1 byte of 3072). Another seed
        # gives another image.
        self.assertTrue(near(pixels(again), pixels(out.images[3])), "the recorded seed does not reproduce the row")
        self.assertFalse(near(pixels(again), pixels(out.images[2])), "another seed gave the same image")

    def test_a_list_of_generators_and_a_single_generator(self):
        pipe = tiny.sd()
        run = self.start()
        gens = [torch.Generator().manual_seed(s) for s in (11, 12)]
        pipe("a cat", num_images_per_prompt=2, generator=gens, height=32, width=32, **STEPS)
        one = torch.Generator().manual_seed(5)
        pipe(["a cat", "a dog"], generator=one, height=32, width=32, **STEPS)
        v = self.recorded(run)
        first, second = v["calls"]
        self.assertEqual([value(cells(r)["Seed"]) for r in first["rows"]], [11, 12])
        self.assertEqual([g["seed"] for g in first["started"]["params"]["generator"]], [11, 12])
        self.assertNotIn("generator_from", first["started"]["params"])
        # One generator for the batch: its seed on every row, and whether it
        # was fresh (its seed alone gives its numbers).
        self.assertEqual([value(cells(r)["Seed"]) for r in second["rows"]], [5, 5])
        self.assertEqual(second["started"]["params"]["generator"], {"_type": "generator", "seed": 5, "device": "cpu", "fresh": True})
        self.assertEqual([value(cells(r)["Remake"]) for r in first["rows"]], ["alone", "alone"])
        self.assertEqual([value(cells(r)["Remake"]) for r in second["rows"]], ["call", "call"])
        # A row that says `alone` re-made in a call of one image: its own
        # generator and prompt. Up to torch's CPU arithmetic (a batch of one
        # takes other kernel paths than a batch of two: a channel value off
        # by one here and there), the recorded image, not its neighbour's.
        alone = difflog.remake(run.dir, 1, pipe, row=1)
        self.assertEqual(len(alone.images), 1)
        self.assertEqual(alone.output.images[0].size, (32, 32))
        self.assertTrue(near(pixels(alone.images[0]), pixels(alone.recorded[0])), alone.differ)
        self.assertLessEqual(alone.differ[0], 32 * 32 * 3 // 100)
        first_row = stored(run.dir, cells(first["rows"][0])["Generated-Image"])[0]
        self.assertFalse(near(pixels(alone.images[0]), first_row), "row 1 re-made as row 0")
        with self.assertRaisesRegex(ValueError, "row 0 of call 2 cannot be re-made alone .*'call'"):
            difflog.remake(run.dir, 2, pipe, row=0)
        with self.assertRaisesRegex(ValueError, "no row 5"):
            difflog.remake(run.dir, 1, pipe, row=5)

    def test_by_default_a_call_without_generator_is_left_alone(self):
        pipe = tiny.sd()
        torch.manual_seed(0)
        want = pixels(pipe("a cat", height=32, width=32, **STEPS).images[0])
        after = torch.get_rng_state()
        run = self.start()
        torch.manual_seed(0)
        got = pipe("a cat", height=32, width=32, **STEPS).images[0]
        # The same image and the same global generator state as unrecorded.
        self.assertEqual(pixels(got), want)
        self.assertTrue(torch.equal(torch.get_rng_state(), after))
        pipe("a dog", height=32, width=32, **STEPS)
        v = self.recorded(run)
        first, second = v["calls"]
        params = first["started"]["params"]
        self.assertIsNone(params["generator"])
        self.assertNotIn("generator_from", params)
        self.assertEqual(params["difflog_passed"], ["prompt", "height", "width", "num_inference_steps"])
        # What decided the noise: torch's global generator, fresh from seed 0.
        self.assertEqual(params["difflog_rng"]["torch_cpu"], {"_type": "generator", "seed": 0, "device": "cpu", "fresh": True})
        # The second call drew from a used generator: its state is kept.
        self.assertIn("state", second["started"]["params"]["difflog_rng"]["torch_cpu"])
        self.assertEqual(first["started"]["seeds"], [])
        self.assertEqual(cells(first["rows"][0])["Seed"]["type"], "null")
        self.assertEqual(value(cells(first["rows"][0])["Remake"]), "call")
        # Both calls made again from their records, pixel for pixel, and
        # the caller's global generator state is untouched by re-making.
        before = torch.get_rng_state()
        for n in (1, 2):
            again = difflog.remake(run.dir, n, pipe)
            self.assertTrue(again.identical, f"call {n} was not re-made: {again.same}")
        self.assertTrue(torch.equal(torch.get_rng_state(), before))

    def test_seed_images_only_where_it_is_safe(self):
        class Noise(DiffusionPipeline):
            """Hands its generator straight to torch.randn, which takes one."""

            def __call__(self, batch_size: int = 1, generator: Optional[torch.Generator] = None):
                x = torch.randn((batch_size, 8, 8, 3), generator=generator)
                return ImagePipelineOutput(images=((x.clamp(-1, 1) + 1) / 2).numpy())

        torch.manual_seed(3)
        want = Noise()(batch_size=2).images
        run = self.start(seed_images=True)
        torch.manual_seed(3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = Noise()(batch_size=2).images
            Noise()(batch_size=2)
        # Not applied: the call is what it is without difflog, and says why once.
        self.assertTrue(np.array_equal(got, want))
        ours = [str(w.message) for w in caught if "seed_images" in str(w.message)]
        self.assertEqual(len(ours), 1, ours)
        self.assertIn("list of generators", ours[0])
        v = self.recorded(run)
        params = v["calls"][0]["started"]["params"]
        self.assertEqual(params["difflog_seed_images"], "not applied: its signature does not take a list of generators")
        self.assertIsNone(params["generator"])
        self.assertEqual(len(v["calls"][0]["rows"]), 2)
        self.assertEqual(verify(run.dir)[0], 0)

    def test_numpy_torch_and_latent_outputs(self):
        pipe = tiny.sd()
        run = self.start()
        g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
        arr = pipe("a cat", output_type="np", generator=g(), height=32, width=32, **STEPS).images
        ten = pipe("a cat", output_type="pt", generator=g(), height=32, width=32, **STEPS).images
        lat = pipe("a cat", output_type="latent", generator=g(), height=32, width=32, **STEPS).images
        v = self.recorded(run)
        c_np, c_pt, c_lat = v["calls"]
        want = pixels(pipe.numpy_to_pil(arr)[0])
        self.assertEqual(stored(run.dir, cells(c_np["rows"][0])["Generated-Image"])[0], want)
        ten_np = ten.permute(0, 2, 3, 1).float().numpy()
        self.assertEqual(
            stored(run.dir, cells(c_pt["rows"][0])["Generated-Image"])[0], pixels(pipe.numpy_to_pil(ten_np)[0])
        )
        self.assertEqual(tuple(lat.shape[:2]), (1, 4))
        self.assertEqual(c_lat["finished"]["status"], "ok")
        self.assertEqual(cells(c_lat["rows"][0])["Generated-Image"]["type"], "null")
        self.assertIn("latent", c_lat["started"]["params"]["difflog_note"])

    def test_integer_arrays_are_channel_values(self):
        class Ints(DiffusionPipeline):
            def __call__(self, shade: int = 200):
                return ImagePipelineOutput(images=np.full((1, 4, 4, 3), shade, dtype=np.int64))

        run = self.start()
        Ints()(shade=200)
        v = self.recorded(run)
        px = stored(run.dir, cells(v["calls"][0]["rows"][0])["Generated-Image"])[0]
        self.assertEqual(px, bytes([200]) * 48, "an int64 200 is the channel value 200, not white")

    def test_a_pipeline_is_recorded_once_and_again_when_it_changes(self):
        from diffusers import EulerDiscreteScheduler

        pipe = tiny.sd()
        first = pipe.scheduler
        run = self.start()
        for scheduler in (first, first, EulerDiscreteScheduler.from_config(first.config), first):
            pipe.scheduler = scheduler
            pipe("a cat", height=32, width=32, **STEPS)
        v = self.recorded(run)
        self.assertEqual([p["scheduler"]["name"] for p in v["pipelines"]], ["DDIMScheduler", "EulerDiscreteScheduler"])
        self.assertEqual([c["started"]["pipeline"] for c in v["calls"]], [1, 1, 2, 1])

    def test_pil_outputs_are_stored_exactly_whichever_way_they_are_read(self):
        # RGB images are read through Pillow's Arrow export (one copy of
        # their memory); an image Pillow keeps in several blocks, and other
        # modes, through tobytes(). Every way stores the exact pixels, as
        # they were when the call returned, whatever the caller does to the
        # images afterwards.
        rng = np.random.default_rng(5)

        def rgb(w, h):
            return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")

        old = Image.core.get_block_size()
        Image.core.set_block_size(4096)  # 40 rows of 33 RGB pixels a block
        try:
            split = rgb(33, 90)
        finally:
            Image.core.set_block_size(old)
        self.assertIsNone(difflog._native.Image.from_pil(split), "an image in several blocks has no Arrow export")
        made = [rgb(37, 23), split, rgb(8, 8).convert("RGBA"), rgb(9, 7).convert("L"), rgb(1, 1)]
        self.assertIsNotNone(difflog._native.Image.from_pil(made[0]))
        want = [pixels(im) for im in made]

        class Many(DiffusionPipeline):
            def __call__(self, n: int = 5):
                return ImagePipelineOutput(images=list(made))

        run = self.start()
        out = Many()()
        for im in out.images:  # the caller draws on its images at once
            im.paste(0 if im.mode == "L" else (0,) * len(im.mode), (0, 0, im.size[0], im.size[1]))
        v = self.recorded(run)
        rows = v["calls"][0]["rows"]
        self.assertEqual(len(rows), len(want))
        for row, w, im in zip(rows, want, made):
            px, size, _ = stored(run.dir, cells(row)["Generated-Image"])
            self.assertEqual(size, im.size)
            self.assertEqual(px, w, f"{im.mode} {im.size}")

    def test_a_failed_call_is_recorded_and_re_raised(self):
        pipe = tiny.sd()
        run = self.start()
        with self.assertRaises(ValueError) as e:
            pipe("a cat", height=33, width=32, **STEPS)
        v = self.recorded(run)
        [call] = v["calls"]
        self.assertEqual(call["finished"]["status"], "error")
        self.assertIn(str(e.exception)[:40], call["finished"]["error"])
        self.assertIn("ValueError", call["finished"]["error"])


class Families(Base):
    def test_sdxl_two_prompts(self):
        pipe = tiny.sdxl()
        run = self.start()
        out = pipe("a cat", prompt_2="a red cat", negative_prompt="dog", height=32, width=32, generator=torch.Generator().manual_seed(4), **STEPS)
        v = self.recorded(run)
        [call] = v["calls"]
        cols = ["Prompt", "Negative-Prompt", "Prompt-2", "Negative-Prompt-2", "Generated-Image", "Seed", "Remake"]
        self.assertEqual(call["started"]["columns"], cols)
        c = cells(call["rows"][0])
        self.assertEqual(value(c["Prompt-2"]), "a red cat")
        self.assertEqual(value(c["Negative-Prompt"]), "dog")
        self.assertEqual(c["Negative-Prompt-2"]["type"], "null")
        px, _, text = stored(run.dir, c["Generated-Image"])
        self.assertEqual(px, pixels(out.images[0]))
        self.assertIn("Prompt 2: a red cat", text["parameters"])
        self.assertEqual(v["pipelines"][0]["components"]["text_encoder_2"]["class"], "CLIPTextModelWithProjection")

    def test_image_to_image_and_inpainting_inputs_are_cells(self):
        src = Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))
        mask = Image.new("L", (32, 32), 0)
        mask.paste(255, (0, 0, 16, 32))
        run = self.start()
        tiny.img2img()(["a cat", "a dog"], image=src, strength=0.9, **STEPS)
        tiny.inpaint()("a cat", image=src, mask_image=mask, height=32, width=32, **STEPS)
        v = self.recorded(run)
        i2i, inp = v["calls"]
        self.assertEqual(i2i["started"]["columns"], ["Source-Image", "Prompt", "Negative-Prompt", "Generated-Image", "Seed", "Remake"])
        self.assertEqual(
            inp["started"]["columns"],
            ["Source-Image", "Mask-Image", "Prompt", "Negative-Prompt", "Generated-Image", "Seed", "Remake"],
        )
        digests = {cells(r)["Source-Image"]["digest"] for r in i2i["rows"]}
        self.assertEqual(len(digests), 1, "the source image is stored once per call")
        self.assertEqual(stored(run.dir, cells(i2i["rows"][0])["Source-Image"])[0], pixels(src))
        c = cells(inp["rows"][0])
        self.assertEqual(stored(run.dir, c["Source-Image"])[0], pixels(src))
        self.assertEqual(stored(run.dir, c["Mask-Image"])[0], pixels(mask))
        keys = sorted({m["key"] for m in inp["media"]})
        self.assertEqual(keys, ["Generated-Image/Pipeline-Call-2", "Mask-Image/Pipeline-Call-2", "Source-Image/Pipeline-Call-2"])
        self.assertEqual(verify(run.dir)[0], 0)

    def test_controlnet_and_a_model_loaded_from_a_folder(self):
        folder = os.path.join(self.root, "model")
        tiny.sd().save_pretrained(folder)
        loaded = type(tiny.sd()).from_pretrained(folder)
        edges = Image.new("RGB", (32, 32), (0, 0, 0))
        edges.paste((255, 255, 255), (8, 8, 24, 24))
        run = self.start()
        tiny.controlnet()("a cat", image=edges, height=32, width=32, **STEPS)
        loaded("a dog", height=32, width=32, **STEPS)
        v = self.recorded(run)
        ctl, sd = v["calls"]
        self.assertEqual(
            ctl["started"]["columns"], ["Control-Image", "Prompt", "Negative-Prompt", "Generated-Image", "Seed", "Remake"]
        )
        self.assertEqual(stored(run.dir, cells(ctl["rows"][0])["Control-Image"])[0], pixels(edges))
        self.assertEqual(v["pipelines"][0]["components"]["controlnet"]["class"], "ControlNetModel")
        self.assertEqual(v["pipelines"][1]["model_id"], folder)
        self.assertEqual(v["workflow"][1]["pipeline"]["_name_or_path"], folder)

    def test_flow_matching_sd3_is_recorded_without_a_class_list(self):
        pipe = tiny.sd3()
        run = self.start()
        out = pipe("a cat", negative_prompt="dog", prompt_3="a red dog", height=32, width=32, generator=torch.Generator().manual_seed(4), **STEPS)
        v = self.recorded(run)
        [call] = v["calls"]
        self.assertEqual(v["pipelines"][0]["class"], "StableDiffusion3Pipeline")
        self.assertEqual(v["pipelines"][0]["scheduler"]["name"], "FlowMatchEulerDiscreteScheduler")
        self.assertIn("shift", v["pipelines"][0]["scheduler"])
        self.assertEqual(
            call["started"]["columns"],
            ["Prompt", "Negative-Prompt", "Prompt-2", "Negative-Prompt-2", "Prompt-3", "Negative-Prompt-3", "Generated-Image", "Seed", "Remake"],
        )
        self.assertEqual(value(cells(call["rows"][0])["Prompt-3"]), "a red dog")
        px, _, text = stored(run.dir, cells(call["rows"][0])["Generated-Image"])
        self.assertEqual(px, pixels(out.images[0]))
        # The image's recipe has T5's prompt, as the candle SD3 pipeline's do.
        self.assertIn("Prompt 3: a red dog", text["parameters"])
        self.assertEqual(json.loads(text["difflog"])["prompt_3"], "a red dog")

    def test_flux_is_recorded_without_a_class_list(self):
        pipe = tiny.flux()
        run = self.start()
        out = pipe(
            ["a red cat", "a dog"],
            prompt_2="a blue cat",
            height=32,
            width=32,
            guidance_scale=3.5,
            max_sequence_length=16,
            generator=torch.Generator().manual_seed(7),
            **STEPS,
        )
        v = self.recorded(run)
        html = report(run.dir, self.root)
        self.assertIn("size 32×32, steps 2, guidance 3.5, scheduler FlowMatchEulerDiscreteScheduler", html)
        self.assertIn("use_dynamic_shifting", html)
        [call] = v["calls"]
        [pipeline] = v["pipelines"]
        self.assertEqual(pipeline["class"], "FluxPipeline")
        self.assertEqual(pipeline["scheduler"]["name"], "FlowMatchEulerDiscreteScheduler")
        self.assertTrue(pipeline["scheduler"]["use_dynamic_shifting"])
        self.assertEqual(pipeline["components"]["text_encoder_2"]["class"], "T5EncoderModel")
        self.assertEqual(pipeline["components"]["transformer"]["class"], "FluxTransformer2DModel")
        self.assertTrue(pipeline["components"]["transformer"]["config"]["guidance_embeds"])
        params = call["started"]["params"]
        self.assertEqual((params["guidance_scale"], params["max_sequence_length"]), (3.5, 16))
        self.assertEqual(
            call["started"]["columns"],
            ["Prompt", "Negative-Prompt", "Prompt-2", "Negative-Prompt-2", "Generated-Image", "Seed", "Remake"],
        )
        self.assertEqual(len(call["rows"]), 2)
        for row, prompt, img in zip(call["rows"], ["a red cat", "a dog"], out.images):
            c = cells(row)
            self.assertEqual((value(c["Prompt"]), value(c["Prompt-2"])), (prompt, "a blue cat"))
            self.assertEqual(stored(run.dir, c["Generated-Image"])[0], pixels(img))
        self.assertEqual(verify(run.dir)[0], 0)

    def test_a_pipeline_class_defined_after_autolog(self):
        run = self.start()

        class Stripes(DiffusionPipeline):
            """A pipeline the hook has never seen: defined after autolog()."""

            def __init__(self):
                super().__init__()

            def __call__(self, batch_size=1, label="stripes", shade=100, generator=None):
                g = generator[0] if isinstance(generator, list) else generator
                base = int(torch.randint(0, 100, (1,), generator=g))
                imgs = [Image.new("RGB", (8, 8), (shade, base, i)) for i in range(batch_size)]
                return ImagePipelineOutput(images=imgs)

        class Stripes2(Stripes):
            def __call__(self, *args, **kwargs):
                return super().__call__(*args, **kwargs)

        out = Stripes()(batch_size=2, label="x")
        Stripes2()(shade=7)
        v = self.recorded(run)
        # The report shows the size of a pipeline without size arguments
        # (from its images) and the scheduler of diffusers' pipelines.
        html = report(run.dir, self.root)
        self.assertIn("size 8×8", html)
        self.assertNotIn("size -×-", html)
        first, second = v["calls"]
        self.assertEqual([p["class"] for p in v["pipelines"]], ["Stripes", "Stripes2"])
        # Only what the caller passed: shade's default is in params, not a column.
        self.assertEqual(first["started"]["columns"], ["batch_size", "label", "Generated-Image", "Seed", "Remake"])
        self.assertEqual(first["started"]["params"]["shade"], 100)
        self.assertEqual(value(cells(first["rows"][1])["label"]), "x")
        self.assertEqual(first["started"]["seeds"], [])
        self.assertEqual(stored(run.dir, cells(first["rows"][1])["Generated-Image"])[0], pixels(out.images[1]))
        # A subclass calling super().__call__ is one call, not two, bound
        # against the __call__ it forwards to (its defaults filled in).
        self.assertEqual(len(v["calls"]), 2)
        self.assertEqual(second["started"]["params"]["shade"], 7)
        self.assertEqual(second["started"]["params"]["label"], "stripes")
        self.assertEqual(second["started"]["columns"], ["shade", "Generated-Image", "Seed", "Remake"])


class Lifecycle(Base):
    def test_a_recording_problem_never_breaks_the_call(self):
        run = self.start()

        class Odd(DiffusionPipeline):
            def __call__(self, prompt="x"):
                return ImagePipelineOutput(images=["not an image"])

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = Odd()("a cat")
            out2 = Odd()("a dog")
        self.assertEqual(out.images, ["not an image"])
        self.assertEqual(out2.images, ["not an image"])
        ours = [w for w in caught if "difflog could not record" in str(w.message)]
        self.assertEqual(len(ours), 1, "warned once")
        v = self.recorded(run)
        self.assertEqual(len(v["config"]["recording_errors"]), 2)
        # A pipeline without a generator argument gets no generator entry.
        self.assertNotIn("generator", v["workflow"][0]["params"])
        self.assertEqual([c["finished"]["status"] for c in v["calls"]], ["ok", "ok"])

    def test_video_outputs_are_videos_at_the_calls_rate(self):
        # Issue 37: every output type diffusers' video pipelines return (a
        # batch of lists of PIL images, (B, F, H, W, C) floats in numpy,
        # (B, F, C, H, W) in torch) is one row per video, its frames one
        # animated PNG (the lossless file, on request: DIFFLOG_VIDEO=apng),
        # at the rate the call states (else the export default, said as
        # such).
        import numpy as np

        os.environ["DIFFLOG_VIDEO"] = "apng"
        self.addCleanup(os.environ.pop, "DIFFLOG_VIDEO", None)
        run = self.start()

        def frame(i, b):
            return Image.new("RGB", (8, 6), (40 * i, 100 + b, 7))

        class Clip(DiffusionPipeline):
            def __call__(self, prompt="x", num_frames=3, fps=None, output_type="pil", num_videos_per_prompt=1):
                videos = [[frame(i, b) for i in range(num_frames)] for b in range(num_videos_per_prompt)]
                if output_type == "np":
                    videos = np.stack([np.stack([np.asarray(f) / 255.0 for f in v]) for v in videos])
                elif output_type == "pt":
                    videos = torch.from_numpy(np.stack([np.stack([np.asarray(f) for f in v]) for v in videos])).permute(0, 1, 4, 2, 3) / 255.0

                class Out:
                    frames = videos

                return Out()

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = Clip()("a cat")
            Clip()("a dog", num_frames=4, fps=7.5, output_type="np", num_videos_per_prompt=2)
            Clip()("a fox", num_frames=2, output_type="pt")
        self.assertEqual(len(out.frames[0]), 3)
        self.assertEqual([w for w in caught if "difflog" in str(w.message)], [])
        v = self.recorded(run)
        self.assertEqual([c["finished"]["status"] for c in v["calls"]], ["ok"] * 3)
        self.assertEqual(v["calls"][0]["started"]["params"]["num_frames"], 3)
        self.assertFalse([n for n in v["config"].get("notes", []) if "frames" in n])
        want = [[(3, 10.0)], [(4, 7.5), (4, 7.5)], [(2, 10.0)]]
        for call, rows in zip(v["calls"], want):
            self.assertIn("Generated-Video", call["started"]["columns"])
            self.assertNotIn("Generated-Image", call["started"]["columns"])
            cells = [next(c for c in r["cells"] if c["column"] == "Generated-Video") for r in call["rows"]]
            self.assertEqual([(c["video"]["frames"], c["video"]["fps"]) for c in cells], rows)
            # Autolog's column of a text-to-video table, before the video.
            cols = call["started"]["columns"]
            self.assertEqual(cols.index("Number-of-Frames") + 1, cols.index("Generated-Video"))
            counts = [next(c["value"] for c in r["cells"] if c["column"] == "Number-of-Frames") for r in call["rows"]]
            self.assertEqual(counts, [f for f, _ in rows])
            for b, c in enumerate(cells):
                with Image.open(os.path.join(run.dir, c["path"])) as im:
                    self.assertEqual(im.n_frames, c["video"]["frames"])
                    self.assertIn("trainedAlgorithmicMedia", im.info.get("XML:com.adobe.xmp", ""))
                    for i in range(im.n_frames):
                        im.seek(i)
                        self.assertEqual(im.convert("RGB").tobytes(), frame(i, b).tobytes(), (call["started"]["stage"], b, i))
        self.assertEqual(v["calls"][1]["rows"][0]["cells"][-3]["video"]["fps_from"], "argument fps")
        self.assertIn("export_to_video", v["calls"][0]["rows"][0]["cells"][-3]["video"]["fps_from"])
        self.assertAlmostEqual(v["calls"][1]["rows"][1]["cells"][-3]["video"]["duration_s"], 4 / 7.5, places=3)

    def test_videos_are_mp4s_that_ffmpeg_plays_frame_for_frame(self):
        # Issue 37: by default a video is kept as an MP4 (H.264). FFmpeg (in
        # OpenCV's wheel), an independent decoder, reads every frame back
        # close to what the call returned, at the rate the call stated.
        import cv2
        import numpy as np

        run = self.start()

        def frame(i):
            y, x = np.mgrid[0:48, 0:64]
            return Image.fromarray(np.stack([(x * 3 + i * 8) % 256, y * 4, np.full_like(x, 90 + i * 10)], -1).astype(np.uint8))

        class Clip(DiffusionPipeline):
            def __call__(self, prompt="x", num_frames=5, fps=12):
                class Out:
                    frames = [[frame(i) for i in range(num_frames)]]

                return Out()

        Clip()("a gradient drifting")
        v = self.recorded(run)
        [row] = v["calls"][0]["rows"]
        cell = next(c for c in row["cells"] if c["column"] == "Generated-Video")
        self.assertTrue(cell["path"].endswith(".mp4"), cell["path"])
        self.assertEqual((cell["video"]["frames"], cell["video"]["fps"]), (5, 12.0))
        cap = cv2.VideoCapture(os.path.join(run.dir, cell["path"]))
        self.assertTrue(cap.isOpened())
        self.assertAlmostEqual(cap.get(cv2.CAP_PROP_FPS), 12.0, places=3)
        got = []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            got.append(bgr[:, :, ::-1].astype(np.float64))
        self.assertEqual(len(got), 5)
        for i, g in enumerate(got):
            want = np.asarray(frame(i), dtype=np.float64)
            self.assertEqual(g.shape, want.shape)
            psnr = 10 * np.log10(255.0**2 / np.mean((g - want) ** 2))
            self.assertGreater(psnr, 30, f"frame {i}: {psnr:.1f} dB")

    def test_an_unwritable_run_directory_leaves_calls_working(self):
        pipe = tiny.sd()
        run = self.start()
        media = os.path.join(run.dir, "media")
        shutil.rmtree(media)
        with open(media, "w") as f:
            f.write("not a folder")
        g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
        want = pixels(pipe("a cat", generator=g(), height=32, width=32, **STEPS).images[0])
        with self.assertRaises(difflog.RecordingError) as e:
            run.flush()
        self.assertIn("media", str(e.exception))
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            got = pixels(pipe("a cat", generator=g(), height=32, width=32, **STEPS).images[0])
        self.assertEqual(got, want)
        with self.assertRaises(difflog.RecordingError):
            difflog.finish()

    def test_a_run_object_records_only_its_block(self):
        pipe = tiny.sd()
        with difflog.Run(project="ctx", root=self.root) as run:
            pipe("a cat", height=32, width=32, **STEPS)
        pipe("not recorded", height=32, width=32, **STEPS)
        other = difflog.Run(project="explicit", root=self.root)
        other.call(pipe, "a dog", height=32, width=32, **STEPS)
        other.finish()
        v = show(run.dir)
        self.assertEqual(v["state"], "finished")
        self.assertEqual([value(cells(c["rows"][0])["Prompt"]) for c in v["calls"]], ["a cat"])
        w = show(other.dir)
        self.assertEqual([value(cells(c["rows"][0])["Prompt"]) for c in w["calls"]], ["a dog"])
        self.assertEqual(sorted(os.listdir(self.root)), sorted([os.path.basename(run.dir), os.path.basename(other.dir)]))

    def test_disabled_mode_and_exit_without_finish(self):
        script = (
            "import sys, difflog, tiny\n"
            "run = difflog.autolog(init=dict(project='sub'))\n"
            "print(run.dir)\n"
            "out = tiny.sd()('a cat', height=32, width=32, num_inference_steps=1)\n"
            "assert len(out.images) == 1\n"
        )
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ, DIFFLOG_DIR=self.root, PYTHONPATH=here)
        off = subprocess.run([sys.executable, "-c", script], env=dict(env, DIFFLOG_MODE="disabled"), capture_output=True, text=True)
        self.assertEqual(off.returncode, 0, off.stderr)
        self.assertEqual(off.stdout.strip(), "None")
        self.assertEqual(os.listdir(self.root), [])
        on = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        self.assertEqual(on.returncode, 0, on.stderr)
        d = on.stdout.strip()
        self.assertEqual(os.path.dirname(d), self.root)
        v = show(d)
        self.assertEqual(v["state"], "finished", "finished at interpreter exit")
        self.assertEqual(len(v["calls"]), 1)

    def test_forked_children_record_nothing_and_never_block(self):
        script = (
            "import json, os, subprocess, sys, time, warnings, multiprocessing as mp\n"
            "import difflog\n"
            "from diffusers import DiffusionPipeline, ImagePipelineOutput\n"
            "from PIL import Image\n"
            "class Tiles(DiffusionPipeline):\n"
            "    def __call__(self, n=2, shade=0):\n"
            "        return ImagePipelineOutput(images=[Image.new('RGB', (64, 64), (shade % 256, i, 0)) for i in range(n)])\n"
            "def work(i):\n"
            "    return len(Tiles()(n=4, shade=i).images)\n"
            "run = difflog.autolog(init=dict(project='fork'))\n"
            "print(run.dir, flush=True)\n"
            "Tiles()(n=2, shade=1)\n"
            "with mp.get_context('fork').Pool(2) as pool:\n"
            "    print('pool', sum(pool.map(work, range(12))), flush=True)\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    with warnings.catch_warnings(record=True) as w:\n"
            "        warnings.simplefilter('always')\n"
            "        Tiles()(n=2)\n"
            "        Tiles()(n=2)\n"
            "    print('child warnings', sum('forked' in str(x.message) for x in w), flush=True)\n"
            "    own = difflog.autolog(init=dict(project='child'))\n"
            "    Tiles()(n=3)\n"
            "    difflog.finish()\n"
            "    print('child run', own.dir, flush=True)\n"
            "    time.sleep(2)\n"
            "    sys.exit(0)\n"
            "Tiles()(n=2, shade=2)\n"
            "difflog.finish()\n"
            "v = json.loads(subprocess.run([os.environ['DIFFLOG_BIN'], 'show', '--json', run.dir], capture_output=True, text=True).stdout)\n"
            "print('parent state while the child lives', v['state'], flush=True)\n"
            "print('child exit', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)\n"
        )
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ, DIFFLOG_DIR=self.root, PYTHONPATH=here)
        p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertIn("pool 48", lines, "48 images from fork-method pool workers: all returned")
        self.assertIn("child warnings 1", lines)
        self.assertIn("parent state while the child lives finished", lines)
        self.assertIn("child exit 0", lines)
        self.assertNotIn("panic", p.stderr)
        v = show(lines[0])
        self.assertEqual(v["state"], "finished")
        self.assertEqual([len(c["rows"]) for c in v["calls"]], [2, 2], "only the parent's calls")
        self.assertEqual(verify(lines[0])[0], 0)
        # A run of the child's own records its calls.
        [child] = [line.split(" ", 2)[2] for line in lines if line.startswith("child run ")]
        c = show(child)
        self.assertEqual((c["state"], [len(x["rows"]) for x in c["calls"]]), ("finished", [3]))

    def test_an_uncaught_exception_leaves_the_run_crashed(self):
        script = (
            "import difflog, tiny\n"
            "run = difflog.autolog(init=dict(project='sub'))\n"
            "print(run.dir, flush=True)\n"
            "tiny.sd()('a cat', height=32, width=32, num_inference_steps=1)\n"
            "raise KeyError('the config has no lr')\n"
        )
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ, DIFFLOG_DIR=self.root, PYTHONPATH=here)
        p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        # The program's own end is unchanged: its traceback, its exit code.
        self.assertEqual(p.returncode, 1)
        self.assertIn("KeyError: 'the config has no lr'", p.stderr)
        v = show(p.stdout.strip())
        self.assertEqual(v["state"], "crashed")
        self.assertEqual(v["finished"]["error"], "KeyError: 'the config has no lr'")
        self.assertEqual(len(v["calls"]), 1)
        self.assertEqual(verify(p.stdout.strip())[0], 0)


if __name__ == "__main__":
    unittest.main()
