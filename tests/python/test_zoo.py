"""The diffusers pipeline zoo (tests/python/zoo.py) with and without difflog
(issue 30): a recorder must be invisible.

Each pipeline class is built twice from the same tiny random components and
called with the same arguments and the same global seeds -- once with no
run active, once recorded by ``difflog.autolog`` -- and checked:

- identical outputs (every array, bit for bit), or the identical exception
  (type and message);
- identical global random states after the call: torch's CPU generator,
  numpy's and Python's ``random``;
- the run is accepted by ``difflog verify``, has one row per returned
  image, and every image is re-made by ``difflog.remake`` pixel for pixel
  (arguments the record does not hold -- tensors -- passed again, as its
  ``Remake`` cells say).

Pipelines whose ``__call__`` takes a generator are also called with a
generator of the caller's, which must end in the same state.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import difflog  # noqa: E402
import zoo  # noqa: E402

BIN = os.environ["DIFFLOG_BIN"]
torch.set_num_threads(1)


def arrays(x):
    """Every array in an output, as numpy arrays, in order."""
    out = []
    if x is None or isinstance(x, (str, int, float, bool)):
        return out
    mod = type(x).__module__
    if mod.startswith("PIL."):
        out.append(np.asarray(x))
    elif mod.startswith("torch") and hasattr(x, "detach"):
        out.append(x.detach().cpu().float().numpy() if x.dtype == torch.bfloat16 else x.detach().cpu().numpy())
    elif mod.startswith("numpy"):
        out.append(np.asarray(x))
    elif isinstance(x, (list, tuple)):
        for v in x:
            out.extend(arrays(v))
    elif isinstance(x, dict):
        for v in x.values():
            out.extend(arrays(v))
    elif hasattr(x, "__dict__"):
        for v in vars(x).values():
            out.extend(arrays(v))
    return out


def video_frames(path):
    """How many frames a recorded video has, as FFmpeg (in OpenCV's wheel)
    decodes an MP4, or PIL an animated PNG."""
    if path.endswith(".mp4"):
        import cv2

        cap = cv2.VideoCapture(path)
        n = 0
        while cap.read()[0]:
            n += 1
        return n
    with Image.open(path) as im:
        return getattr(im, "n_frames", 1)


def same_arrays(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b))


def global_states():
    return (torch.get_rng_state(), random.getstate(), np.random.get_state())


def same_states(a, b):
    ta, ra, na = a
    tb, rb, nb = b
    return torch.equal(ta, tb) and ra == rb and na[0] == nb[0] and np.array_equal(na[1], nb[1]) and na[2:] == nb[2:]


def seed_everything():
    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)


def call(case, pipe, extra):
    """The call as a user makes it: (output, exception, states after,
    generator state after)."""
    kwargs = case.inputs()
    if case.steps is not None:
        kwargs["num_inference_steps"] = case.steps
    kwargs.update(extra)
    seed_everything()
    out = err = None
    try:
        out = pipe(**kwargs)
    except Exception as e:  # the call's own exception, compared below
        err = (type(e), str(e))
    gen = kwargs.get("generator")
    return out, err, global_states(), None if gen is None else gen.get_state()


def takes_generator(pipe):
    import inspect

    try:
        return "generator" in inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return False


class Zoo(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="difflog-zoo-")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        self.addCleanup(difflog.finish)

    def test_the_zoo_is_large_enough_and_the_docs_list_it(self):
        classes = {c.name.split("[")[0] for c in zoo.CASES}
        self.assertGreaterEqual(len(classes), 30, sorted(classes))
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "python.md"), encoding="utf-8") as f:
            docs = f.read()
        missing = [c.name for c in zoo.CASES if f"`{c.name}`" not in docs]
        self.assertEqual(missing, [], "cases the zoo list of docs/python.md does not name")
        self.assertIn(f"builds {len(zoo.CASES)} pipelines of {len(classes)} diffusers classes", docs)

    def test_every_pipeline_unchanged_recorded_and_remade(self):
        times = []
        for case in zoo.CASES:
            with self.subTest(case.name):
                t = time.perf_counter()
                self.one(case)
                times.append((time.perf_counter() - t, case.name))
        slow = sorted(times, reverse=True)[:5]
        print(f"\nzoo: {len(times)} cases in {sum(t for t, _ in times):.1f} s; slowest {[(n, round(t, 1)) for t, n in slow]}", file=sys.stderr)

    def one(self, case):
        variants = [{}]
        plain_pipe = case.build()
        if takes_generator(plain_pipe):
            variants.append({"generator": "caller"})
        for variant in variants:
            extra = {"generator": torch.Generator().manual_seed(77)} if variant else {}
            plain = call(case, plain_pipe if not variant else case.build(), extra)
            run = difflog.autolog(init=dict(project="zoo", name=case.name), root=self.root)
            extra = {"generator": torch.Generator().manual_seed(77)} if variant else {}
            recorded = call(case, case.build(), extra)
            difflog.finish()
            what = f"{case.name} {'with' if variant else 'without'} a generator"
            out_a, err_a, states_a, gen_a = plain
            out_b, err_b, states_b, gen_b = recorded
            self.assertEqual(err_b, err_a, f"{what}: the exception changed")
            self.assertTrue(same_arrays(arrays(out_a), arrays(out_b)), f"{what}: the output changed")
            self.assertTrue(same_states(states_a, states_b), f"{what}: a global random state changed")
            if gen_a is not None:
                self.assertTrue(torch.equal(gen_a, gen_b), f"{what}: the caller's generator changed")
            code = subprocess.run([BIN, "verify", run.dir], capture_output=True, text=True)
            self.assertEqual(code.returncode, 0, f"{what}: {code.stdout}{code.stderr}")
            v = json.loads(subprocess.run([BIN, "show", "--json", run.dir], capture_output=True, text=True).stdout)
            self.assertEqual(v["state"], "finished")
            [c] = v["calls"]
            if err_a is not None:
                self.assertEqual(c["finished"]["status"], "error", what)
                continue
            self.assertEqual(c["finished"]["status"], "ok", what)
            images = [x for x in c["rows"] if any(cell["column"] == "Generated-Image" and cell["type"] == "image" for cell in x["cells"])]
            other = difflog._call._other_media(out_b)
            if case.kind == "video":
                # Issue 37: one row per video, its frames one MP4 (an
                # animated PNG where H.264 cannot hold them: odd sides).
                frames = out_b.frames if other == "frames" else difflog._call._output(out_b)
                counts = difflog._call.output_videos(frames, None, lambda f: len(difflog._call.rgb_pixels(f)))
                videos = [next(x for x in r["cells"] if x["column"] == "Generated-Video") for r in c["rows"]]
                self.assertEqual([x["type"] for x in videos], ["image"] * len(counts), what)
                self.assertEqual([x["video"]["frames"] for x in videos], counts, f"{what}: frames per video")
                # Autolog's Number-of-Frames column says the same.
                said = [next(x.get("value") for x in r["cells"] if x["column"] == "Number-of-Frames") for r in c["rows"]]
                self.assertEqual(said, counts, f"{what}: Number-of-Frames")
                self.assertEqual(images, [], f"{what}: no image column")
                for x in videos:
                    self.assertEqual(video_frames(os.path.join(run.dir, x["path"])), x["video"]["frames"], what)
                    self.assertGreater(x["video"]["fps"], 0, what)
            elif other is not None:
                # Sound, a prior's embeddings: a call without rows, and the
                # run's notes say so.
                self.assertEqual(c["rows"], [], f"{what}: {other} is not stored as images")
                self.assertTrue(any(other in n for n in v["config"]["notes"]), what)
                continue
            else:
                self.assertEqual(len(images), len(c["rows"]), f"{what}: a row has no image")
                self.assertEqual(len(c["rows"]), len(difflog._call._output(out_b)), f"{what}: one row per returned image")
            # Re-made from the record (tensors passed again, as the Remake cells ask).
            needs = {}
            for row in c["rows"]:
                for cell in row["cells"]:
                    if cell["column"] == "Remake" and str(cell.get("value", "")).startswith("needs "):
                        for name in cell["value"][len("needs ") :].split(", "):
                            needs[name] = case.inputs()[name]
            again = difflog.remake(run.dir, 1, case.build(), **needs)
            self.assertTrue(again.identical, f"{what}: not re-made: {again.same}")


def case(name):
    [c] = [c for c in zoo.CASES if c.name == name]
    return c


def cells(row):
    return {c["column"]: c for c in row["cells"]}


class Specifics(unittest.TestCase):
    """What the issue names: rows of DiT's labels and of image lists, the
    prompt of a forwarding subclass, embeddings instead of a prompt."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="difflog-zoo-")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        self.addCleanup(difflog.finish)

    def record(self, name, **extra):
        c = case(name)
        pipe = c.build()
        run = difflog.autolog(init=dict(project="zoo"), root=self.root)
        kwargs = dict(c.inputs(), **extra)
        if c.steps is not None:
            kwargs["num_inference_steps"] = c.steps
        out = pipe(**kwargs)
        difflog.finish()
        v = json.loads(subprocess.run([BIN, "show", "--json", run.dir], capture_output=True, text=True).stdout)
        return run, pipe, out, v["calls"][0]

    def test_dit_class_labels_are_rows_with_their_names(self):
        gens = [torch.Generator().manual_seed(s) for s in (4, 5, 6)]
        run, pipe, out, c = self.record("DiTPipeline", generator=gens)
        self.assertEqual(len(out.images), 3)
        self.assertEqual(len(c["rows"]), 3)
        rows = [cells(r) for r in c["rows"]]
        self.assertEqual([r["class_labels"]["value"] for r in rows], [1, 3, 5])
        # Every name id2label gives the class, as the pipeline lists them.
        names = {}
        for name, i in pipe.labels.items():
            names.setdefault(i, []).append(name)
        self.assertEqual([r["Class-Name"]["value"] for r in rows], [", ".join(names[i]) for i in (1, 3, 5)])
        self.assertIn(", ", rows[2]["Class-Name"]["value"], "a class with two names shows both")
        self.assertEqual([r["Seed"]["value"] for r in rows], [4, 5, 6])
        self.assertEqual(c["started"]["seeds"], [4, 5, 6])

    def test_a_list_of_images_gives_each_row_its_image(self):
        c = case("StableDiffusionImageVariationPipeline")
        run, pipe, out, call = self.record(c.name)
        images = c.inputs()["image"]
        self.assertEqual(len(call["rows"]), len(images))
        digests = [cells(r)["image"]["digest"] for r in call["rows"]]
        self.assertEqual(len(set(digests)), len(images), "each row shows its own input image")
        self.assertTrue(difflog.remake(run.dir, 1, c.build()).identical)

    def test_a_forwarding_subclass_records_its_prompt_and_seed(self):
        run, pipe, out, c = self.record("ForwardingSD", generator=torch.Generator().manual_seed(9))
        row = cells(c["rows"][0])
        self.assertEqual(row["Prompt"]["value"], case("ForwardingSD").inputs()["prompt"])
        self.assertEqual(row["Seed"]["value"], 9)
        self.assertIn("guidance_scale", c["started"]["params"], "defaults of the __call__ it forwards to")

    def test_embeddings_instead_of_a_prompt(self):
        c = case("StableDiffusionPipeline[prompt_embeds]")
        run, pipe, out, call = self.record(c.name, generator=torch.Generator().manual_seed(3))
        embeds = c.inputs()["prompt_embeds"]
        row = cells(call["rows"][0])
        self.assertEqual(row["Prompt"]["type"], "null")
        described = call["started"]["params"]["prompt_embeds"]
        self.assertEqual(described["shape"], list(embeds.shape))
        self.assertIn(described["sha256"], row["Prompt-Embeds"]["value"])
        # The PNG's recipe says the embeddings, not a prompt it never had.
        from PIL import Image as PILImage

        with PILImage.open(os.path.join(run.dir, row["Generated-Image"]["path"])) as im:
            params = im.text["parameters"]
        self.assertTrue(params.startswith("[prompt_embeds: tensor "), params)
        self.assertIn(described["sha256"], params)
        self.assertTrue(row["Remake"]["value"].startswith("needs "), row["Remake"])
        self.assertIn("prompt_embeds", row["Remake"]["value"])
        with self.assertRaisesRegex(ValueError, "prompt_embeds"):
            difflog.remake(run.dir, 1, c.build())
        with self.assertRaisesRegex(ValueError, "not the recorded one"):
            difflog.remake(run.dir, 1, c.build(), **dict(c.inputs(), prompt_embeds=embeds + 1))
        self.assertTrue(difflog.remake(run.dir, 1, c.build(), **{k: v for k, v in c.inputs().items() if k.endswith("_embeds")}).identical)


if __name__ == "__main__":
    unittest.main()
