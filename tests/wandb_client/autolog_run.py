"""Records, with W&B's own client offline, what W&B's diffusers autolog logs
for a list of pipeline calls, so that `wandb sync` of it can be compared with
difflog's upload of the same calls (tests/sync_wandb_client.rs).

W&B's real `wandb.integration.diffusers.autolog` runs; only `diffusers`
itself is a stand-in (torch and real weights cannot run in this test): a
module whose pipeline classes have diffusers' `__call__` signature and return
the images (or, for a video pipeline, the frames) difflog recorded for the
same call, and a generator with torch's
`initial_seed()` / `device` / `get_state()`.

usage: python autolog_run.py SPEC.json OUT_DIR   (prints the offline run dir)
"""

import inspect
import json
import os
import sys
import types


class _State:
    def __init__(self, values):
        self._values = values

    def cpu(self):
        return self

    def numpy(self):
        return self

    def tolist(self):
        return list(self._values)


class Generator:
    """What autolog reads of a torch.Generator."""

    def __init__(self, seed, device="cpu"):
        self._seed = seed
        self.device = device

    def initial_seed(self):
        return self._seed

    def get_state(self):
        return _State([self._seed & 0xFF, (self._seed >> 8) & 0xFF])


class _Output:
    def __init__(self, images=None, frames=None):
        self.images = images
        self.frames = frames


def _frames(path):
    """The frames of a video difflog recorded, as PIL images: an MP4's as
    FFmpeg decodes them (imageio-ffmpeg, which MoviePy brings), an animated
    PNG's as PIL reads them."""
    from PIL import Image, ImageSequence

    if path.endswith(".mp4"):
        import imageio

        with imageio.get_reader(path, "ffmpeg") as r:
            return [Image.fromarray(f).convert("RGB") for f in r]
    with Image.open(path) as im:
        return [f.convert("RGB") for f in ImageSequence.Iterator(im)]


def _call(self, prompt=None, prompt_2=None, image=None, mask_image=None,
          height=None, width=None, num_inference_steps=50, guidance_scale=7.5,
          negative_prompt=None, negative_prompt_2=None, num_images_per_prompt=1,
          eta=0.0, generator=None, latents=None, output_type="pil",
          return_dict=True, strength=0.8, num_frames=16):
    from PIL import Image

    if self._video:
        # A video pipeline's output: `frames`, a list of videos, each a
        # list of PIL frames (diffusers' "pil" output type).
        return _Output(frames=[_frames(p) for p in self._next_images])
    return _Output([Image.open(p).convert("RGB") for p in self._next_images])


class DiffusionPipeline:
    """A stand-in with diffusers' call signature; `config` as diffusers has it."""

    def __init__(self, config):
        self.config = dict(config)
        self._next_images = []
        self._video = False

    __call__ = _call


def _stand_in_diffusers():
    mod = types.ModuleType("diffusers")
    mod.DiffusionPipeline = DiffusionPipeline
    classes = {}

    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in classes:
            classes[name] = type(name, (DiffusionPipeline,), {"__call__": _call})
        return classes[name]

    mod.__getattr__ = getattr_
    sys.modules["diffusers"] = mod
    return mod


def main():
    spec_path, out = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    diffusers = _stand_in_diffusers()
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb
    from wandb.integration.diffusers import autolog

    autolog(init=dict(project=spec["project"], dir=out, config=spec.get("config", {})))
    for call in spec["calls"]:
        pipe = getattr(diffusers, call["class"])(call.get("config", {}))
        pipe._next_images = call["images"]
        pipe._video = bool(call.get("video"))
        kwargs = dict(call["kwargs"])
        if "seed" in kwargs:
            kwargs["generator"] = Generator(kwargs.pop("seed"))
        for k in ("image", "mask_image"):
            if k in kwargs:
                from PIL import Image

                kwargs[k] = Image.open(kwargs[k]).convert("RGB")
        # autolog patched the classes' __call__ on the module's classes.
        getattr(diffusers, call["class"]).__call__(pipe, **kwargs)
    run_dir = wandb.run.dir
    wandb.finish()
    print(os.path.dirname(run_dir))


if __name__ == "__main__":
    main()
