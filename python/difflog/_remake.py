"""Making a recorded call again: :func:`remake`.

A call is re-made from what its record holds: the arguments the caller
passed (``difflog_passed``; defaults are left to the pipeline, as in the
original call), its generators rebuilt from their seed or recorded state,
torch's global generators set to their recorded state for the call (and
put back afterwards), input images read back from the run's media by the
digest of their pixels. What the record does not hold (tensors such as
``prompt_embeds`` or ``latents``, arbitrary objects, callbacks) must be
passed again; a tensor passed again is checked against its recorded
SHA-256. The re-made call is not recorded.

A call made by ``difflog generate --rng torch-cpu`` (candle, from Rust) is
re-made the same way in diffusers: its arguments come from difflog's own
record (prompts, negative prompt, images per prompt, steps, guidance,
size, input image, mask, strength) and each image gets
``torch.Generator("cpu").manual_seed(seed)`` with its recorded seed, the
noise difflog drew for it. Its pixels then equal the recorded ones within
a level or two of 255 (``Remade.largest``), not bit for bit: the two
computations differ in the last float bits.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import warnings
from typing import Any, Dict, List, Optional, Tuple

from . import _call, _native
from ._native import NAMES, read_call


@dataclasses.dataclass
class Remade:
    """A re-made call: the pipeline's output, its images as RGB PIL images,
    the recorded images of the same rows, per row whether the two are
    identical pixel for pixel, and how many channel values differ (None
    when the sizes differ or the row has no stored image)."""

    output: Any
    images: List[Any]
    recorded: List[Any]
    same: List[bool]
    differ: List[Optional[int]]
    largest: List[Optional[int]] = dataclasses.field(default_factory=list)
    """Per row, the largest difference of any channel value, in levels of
    255 (None when not comparable)."""

    @property
    def identical(self) -> bool:
        """Every row's pixels are the recorded ones."""
        return bool(self.same) and all(self.same) and len(self.images) == len(self.recorded)


def remake(run_dir: "str | os.PathLike[str]", call: int, pipeline: Any, row: Optional[int] = None, **given: Any) -> Remade:
    """Calls ``pipeline`` again as call ``call`` (``Pipeline-Call-N``) of the
    run in ``run_dir`` was made, and compares the images with the recorded
    ones. ``row``: only that row's image, in a call of one image (rows whose
    ``Remake`` cell says ``alone``: its own generator, its own prompts and
    input images). ``given``: arguments the record does not hold (named in
    the rows' ``Remake`` cells as ``needs NAME``), or any argument to
    replace. Raises ``ValueError`` when an argument the call needs is
    missing or differs from the recorded one, or the row cannot be re-made
    alone."""
    import torch

    rec = json.loads(read_call(os.fspath(run_dir), call))
    params: Dict[str, Any] = rec["started"]["params"]
    recorded_class = (rec.get("pipeline") or {}).get("class")
    if recorded_class and recorded_class != type(pipeline).__name__:
        warnings.warn(
            f"difflog.remake: call {call} was made by a {recorded_class}, not a {type(pipeline).__name__}",
            RuntimeWarning,
            stacklevel=2,
        )
    passed = params.get("difflog_passed")
    images = _input_images(os.fspath(run_dir), rec)
    if not isinstance(passed, list):
        if params.get("rng") != "torch-cpu":
            raise ValueError(
                f"{os.fspath(run_dir)}: call {call} does not say which arguments were passed "
                "(recorded by an older difflog, or by difflog generate without --rng torch-cpu, "
                "whose noise torch cannot draw): it cannot be re-made"
            )
        return _remade(run_dir, rec, pipeline, _from_generate(os.fspath(run_dir), call, rec, pipeline, images, row, given), row)
    kwargs: Dict[str, Any] = {}
    for name in passed:
        if name in given:
            _check_given(call, name, params.get(name), given[name])
            kwargs[name] = given[name]
        else:
            kwargs[name] = _rebuild(call, name, params.get(name), images)
    for name, value in given.items():
        kwargs.setdefault(name, value)
    if params.get("generator_from") == "difflog" and "generator" not in kwargs:
        # seed_images=True: the generators difflog passed.
        kwargs["generator"] = _rebuild(call, "generator", params.get("generator"), images)
    rows = rec["rows"]
    if row is not None:
        kwargs = _alone(os.fspath(run_dir), call, row, rows, params, kwargs)
        rows = [rows[row]]

    rng = params.get("difflog_rng") or {}
    saved = torch.get_rng_state()
    cuda_saved = None
    try:
        cpu = rng.get("torch_cpu")
        if cpu:
            torch.set_rng_state(_state(cpu))
        cuda = rng.get("torch_cuda")
        if cuda and torch.cuda.is_available():
            cuda_saved = torch.cuda.get_rng_state_all()
            torch.cuda.set_rng_state_all([_state(g) for g in cuda])
        from . import _hook

        out = _hook.unrecorded(pipeline, kwargs)
    finally:
        torch.set_rng_state(saved)
        if cuda_saved is not None:
            torch.cuda.set_rng_state_all(cuda_saved)
    return _compared(run_dir, rows, out)


def _compared(run_dir: Any, rows: List[Any], out: Any) -> Remade:
    """The pipeline's output beside the recorded images of ``rows``."""
    from PIL import Image

    def pil(images: Any) -> List[Any]:
        return [Image.frombytes("RGB", (w, h), data) for w, h, data in _call.rgb_pixels(images)]

    frames = _call._other_media(out) == "frames"
    video = any(c.get("video") for r in rows for c in r.get("cells", []) if c.get("column") in _MADE)
    src = out.frames if frames else _call._output(out)
    videos: List[Any] = []
    if video or frames:
        # A video row compares as its frames stacked top to bottom.
        videos = _call.output_videos(src, None, pil)
        made = [_strip(v) for v in videos]
    else:
        made = pil(src)
    recorded = [_recorded_image(os.fspath(run_dir), r) for r in rows]
    differ = [_differ(a, b) for a, b in zip(made, recorded)]
    largest = [_largest(a, b) for a, b in zip(made, recorded)]
    same = [d == 0 for d in differ]
    for i, (row, frames_made) in enumerate(zip(rows, videos)):
        kept = _recorded_mp4(os.fspath(run_dir), row)
        if kept is not None:
            # A video kept as MP4 (lossy) is compared by what it plays: the
            # re-made frames encoded as the recorder encodes them give the
            # same H.264 samples only when they are the same frames (the
            # XMP box and a C2PA manifest around them left aside).
            data, fps = kept
            again = _native.Video([_native.Image(f.width, f.height, f.tobytes()) for f in frames_made], fps).mp4()
            try:
                same[i] = _native.mp4_stream_digest(again) == _native.mp4_stream_digest(data)
            except ValueError:
                same[i] = False
    return Remade(output=out, images=made, recorded=recorded, same=same, differ=differ, largest=largest)


def _remade(run_dir: Any, rec: Dict[str, Any], pipeline: Any, kwargs: Dict[str, Any], row: Optional[int]) -> Remade:
    """Calls ``pipeline`` with ``kwargs`` (torch's global generators left
    alone: every image has its own) and compares."""
    from . import _hook

    rows = rec["rows"] if row is None else [rec["rows"][row]]
    return _compared(run_dir, rows, _hook.unrecorded(pipeline, kwargs))


# difflog's schedulers and the diffusers classes that compute them.
_SCHEDULERS = {"ddim": "DDIMScheduler", "euler-a": "EulerAncestralDiscreteScheduler"}


def _from_generate(
    run_dir: str, call: int, rec: Dict[str, Any], pipeline: Any, images: Dict[str, Any], row: Optional[int], given: Dict[str, Any]
) -> Dict[str, Any]:
    """The diffusers arguments of a call ``difflog generate --rng
    torch-cpu`` made, from its record: one CPU generator per image, seeded
    as difflog seeded that image's noise."""
    import torch

    params: Dict[str, Any] = rec["started"]["params"]
    rows = rec["rows"]
    want = _SCHEDULERS.get(str((rec.get("pipeline") or {}).get("scheduler", {}).get("name")))
    have = type(getattr(pipeline, "scheduler", None)).__name__
    if want is not None and want != have:
        warnings.warn(
            f"difflog.remake: call {call} sampled with diffusers' {want}; the pipeline has a {have}",
            RuntimeWarning,
            stacklevel=3,
        )
    seeds = rec["started"].get("seeds") or []
    if len(seeds) != len(rows):
        raise ValueError(f"{run_dir}: call {call} records {len(seeds)} seeds for {len(rows)} images")
    prompts = params.get("prompt")
    prompts = prompts if isinstance(prompts, list) else [prompts]
    per = int(params.get("num_images_per_prompt") or 1)
    kwargs: Dict[str, Any] = {
        "num_inference_steps": params.get("num_inference_steps"),
        "guidance_scale": params.get("guidance_scale"),
        "height": params.get("height"),
        "width": params.get("width"),
    }
    if kwargs["guidance_scale"] is None:
        del kwargs["guidance_scale"]  # FLUX.1 schnell: no guidance input
    names = ["prompt_2", "negative_prompt_2", "prompt_3", "negative_prompt_3", "max_sequence_length"]
    if params.get("skip_guidance_layers") is not None:
        # SD3's skip-layer guidance, which diffusers takes per call.
        names += ["skip_guidance_layers", "skip_layer_guidance_scale", "skip_layer_guidance_start", "skip_layer_guidance_stop"]
    for name in names:
        if params.get(name) is not None:
            kwargs[name] = params[name]
    if params.get("strength") is not None:
        kwargs["strength"] = params["strength"]
    for column, name in ((NAMES["INPUT_IMAGE"], "image"), (NAMES["MASK_IMAGE"], "mask_image")):
        cell = next((c for c in rows[0].get("cells", []) if c.get("column") == column and c.get("type") == "image"), None)
        if cell is not None:
            from PIL import Image

            with Image.open(os.path.join(run_dir, cell["path"])) as im:
                kwargs[name] = im.convert("RGB")
    picked = range(len(rows)) if row is None else [row]
    if row is not None and not 0 <= row < len(rows):
        raise ValueError(f"{run_dir}: call {call} has {len(rows)} rows; there is no row {row}")
    if row is None:
        kwargs["prompt"] = prompts
        kwargs["num_images_per_prompt"] = per
        negative = params.get("negative_prompt")
        if negative is not None:
            kwargs["negative_prompt"] = [negative] * len(prompts)
    else:
        kwargs["prompt"] = prompts[row // per]
        kwargs["num_images_per_prompt"] = 1
        if params.get("negative_prompt") is not None:
            kwargs["negative_prompt"] = params["negative_prompt"]
    kwargs["generator"] = [torch.Generator("cpu").manual_seed(int(seeds[i])) for i in picked]
    kwargs.update(given)
    return kwargs


def _largest(a: Any, b: Any) -> Optional[int]:
    """The largest difference of any channel value of two RGB images."""
    if a is None or b is None or a.size != b.size:
        return None
    import numpy as np

    x = np.frombuffer(a.tobytes(), dtype=np.uint8).astype(np.int16)
    y = np.frombuffer(b.tobytes(), dtype=np.uint8).astype(np.int16)
    return int(np.abs(x - y).max()) if x.size else 0


def _differ(a: Any, b: Any) -> Optional[int]:
    """How many channel values of two RGB images differ (None: not comparable)."""
    if a is None or b is None or a.size != b.size:
        return None
    import numpy as np

    x = np.frombuffer(a.tobytes(), dtype=np.uint8)
    y = np.frombuffer(b.tobytes(), dtype=np.uint8)
    return int(np.count_nonzero(x != y))


# Arguments with one item per prompt or per image, picked for one row.
_PER_ROW = [name for _, name in _call._TEXT_ARGS + _call._IMAGE_ARGS]


def _alone(run_dir: str, call: int, row: int, rows: List[Any], params: Dict[str, Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The arguments of a call of one image that makes row ``row`` again:
    its generator, its prompts and input images, one image per prompt."""
    n = len(rows)
    if not 0 <= row < n:
        raise ValueError(f"{run_dir}: call {call} has {n} rows; there is no row {row}")
    how = next((c.get("value") for c in rows[row].get("cells", []) if c.get("column") == _call.REMAKE), None)
    if how != "alone":
        raise ValueError(
            f"{run_dir}: row {row} of call {call} cannot be re-made alone (its Remake cell says {how!r}); "
            "re-make the whole call: remake(run_dir, call, pipeline)"
        )
    out = dict(kwargs)
    gens = out.get("generator")
    if isinstance(gens, (list, tuple)):
        if len(gens) != n:
            raise ValueError(f"{run_dir}: call {call} has {len(gens)} generators for {n} images")
        out["generator"] = [gens[row]]
    elif n != 1:
        raise ValueError(f"{run_dir}: call {call} has no generator per image")
    per = params.get("num_images_per_prompt")
    per = per if isinstance(per, int) and not isinstance(per, bool) and per > 0 else 1
    for name in _PER_ROW:
        v = out.get(name)
        if isinstance(v, (list, tuple)):
            out[name] = _call._pick(v, row, row // per, n)
    if "num_images_per_prompt" in params:
        out["num_images_per_prompt"] = 1
    return out


def _state(g: Dict[str, Any]) -> Any:
    """A recorded generator's state as torch takes it."""
    import torch

    if g.get("state"):
        return torch.frombuffer(bytearray(base64.b64decode(g["state"])), dtype=torch.uint8)
    return torch.Generator(device=g.get("device", "cpu")).manual_seed(int(g["seed"])).get_state()


def _generator(g: Dict[str, Any]) -> Any:
    import torch

    gen = torch.Generator(device=g.get("device", "cpu"))
    gen.manual_seed(int(g["seed"]))
    if g.get("state"):
        gen.set_state(_state(g))
    return gen


def _rebuild(call: int, name: str, d: Any, images: Dict[str, Any]) -> Any:
    """An argument from its record."""
    if isinstance(d, list):
        return [_rebuild(call, name, x, images) for x in d]
    if not isinstance(d, dict):
        return d
    kind = d.get("_type")
    if kind is None:
        return {k: _rebuild(call, name, v, images) for k, v in d.items()}
    if kind == "generator" and "seed" in d:
        return _generator(d)
    if kind == "dict" and isinstance(d.get("items"), list):
        return {_key(_rebuild(call, name, k, images)): _rebuild(call, name, v, images) for k, v in d["items"]}
    if kind == "image":
        img = images.get(str(d.get("sha256")))
        if img is not None:
            return img.convert(d["mode"]) if img.mode != d["mode"] else img
        raise ValueError(
            f"call {call}: the image passed as {name} ({d.get('width')}x{d.get('height')} {d.get('mode')}) is not "
            f"among the run's stored images with its pixels; pass it: remake(..., {name}=...)"
        )
    what = _call._tensor_text(d) if kind in ("tensor", "array") else f"a {kind}"
    raise ValueError(f"call {call} was given {name} ({what}), which is not stored in the run; pass it: remake(..., {name}=...)")


def _key(k: Any) -> Any:
    """A rebuilt dict key: lists (tuples before JSON) become tuples again."""
    return tuple(_key(x) for x in k) if isinstance(k, list) else k


def _check_given(call: int, name: str, d: Any, value: Any) -> None:
    """A tensor passed again must be the recorded one."""
    if isinstance(d, dict) and d.get("_type") in ("tensor", "array") and d.get("sha256"):
        got = _call.describe(value)
        if not isinstance(got, dict) or got.get("sha256") != d["sha256"]:
            raise ValueError(
                f"call {call}: {name} is not the recorded one (recorded {_call._tensor_text(d)}, "
                f"given {_call._tensor_text(got) if isinstance(got, dict) else type(value).__name__})"
            )


def _input_images(run_dir: str, rec: Dict[str, Any]) -> Dict[str, Any]:
    """The call's stored input images (and input videos' frames) by the
    SHA-256 of their pixels, in RGB and in the grey mode a mask is given in."""
    from PIL import Image, ImageSequence

    out: Dict[str, Any] = {}
    seen = set()
    for row in rec["rows"]:
        for cell in row.get("cells", []):
            if cell.get("type") != "image" or cell.get("column") in _MADE:
                continue
            path = cell.get("path")
            if not isinstance(path, str) or path in seen:
                continue
            seen.add(path)
            with Image.open(os.path.join(run_dir, path)) as im:
                # An input video: each of its frames.
                frames = [f.convert("RGB") for f in ImageSequence.Iterator(im)] if cell.get("video") else [im.convert("RGB")]
            for rgb in frames:
                for mode in ("RGB", "L", "1"):
                    img = rgb if mode == "RGB" else rgb.convert(mode)
                    if mode != "RGB" and img.convert("RGB").tobytes() != rgb.tobytes():
                        continue
                    out.setdefault(_call.image_digest(img), img)
    return out


# The columns of what a call made (its images, or its videos).
_MADE = (_call.GENERATED_IMAGE, _call.GENERATED_VIDEO)


def _recorded_image(run_dir: str, row: Dict[str, Any]) -> Optional[Any]:
    """The row's stored image, or its stored video's frames stacked top to
    bottom (as :func:`_strip`)."""
    from PIL import Image, ImageSequence

    for cell in row.get("cells", []):
        if cell.get("column") in _MADE and cell.get("type") == "image":
            if cell["path"].endswith(".mp4"):
                # Lossy: compared as its file (_recorded_mp4), not as pixels.
                return None
            with Image.open(os.path.join(run_dir, cell["path"])) as im:
                if not cell.get("video"):
                    return im.convert("RGB")
                return _strip([f.convert("RGB") for f in ImageSequence.Iterator(im)])
    return None


def _recorded_mp4(run_dir: str, row: Dict[str, Any]) -> Optional[Tuple[bytes, float]]:
    """The bytes and frame rate of the row's video, where it is kept as an
    MP4; None otherwise."""
    for cell in row.get("cells", []):
        if cell.get("column") in _MADE and cell.get("type") == "image" and cell["path"].endswith(".mp4"):
            with open(os.path.join(run_dir, cell["path"]), "rb") as f:
                return f.read(), float(cell["video"]["fps"])
    return None


def _strip(frames: Any) -> Any:
    """A video's frames (RGB PIL images, all one size) as one PIL image,
    stacked top to bottom."""
    from PIL import Image

    w, h = frames[0].size
    out = Image.new("RGB", (w, h * len(frames)))
    for i, f in enumerate(frames):
        out.paste(f, (0, i * h))
    return out
