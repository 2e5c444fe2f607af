"""One diffusers call turned into difflog's record of it.

The rule: recording never changes the call. The arguments reach the
pipeline as the caller passed them (one exception: a step callback for the
timings, only for diffusers' own classes and only where the caller passed
none; it returns what it is given). Nothing here draws from any random
generator: torch's, numpy's or Python's global ones, or the caller's.

Before the call: the arguments bound against the ``__call__`` the call
really reaches (a subclass's ``__call__(*args, **kwargs)`` forwarding to
diffusers' is followed down the class's MRO), every argument with the
signature's defaults filled in (the ``workflow`` entry's ``params``), the
names the caller passed (``difflog_passed``), and what makes the call
re-makeable as it ran: the seed and, when it was used before, the state of
every generator the caller passed, and of torch's global generators
(``difflog_rng``). Tensors are recorded by shape, dtype and SHA-256,
images by size, mode and the SHA-256 of their pixels.

After it: one row per image the call returned (per video, for a video
pipeline: its frames one MP4 at the call's frame rate, or one animated PNG
with ``DIFFLOG_VIDEO=apng``) -- the
batch is what came back, not a guess from the arguments -- with each row's seed where it has
its own generator and a ``Remake`` cell saying how it can be made again
(``alone``: from its own generator and inputs; ``call``: only with its
whole call; ``needs NAME``: the call was given a tensor or object that is
not stored -- pass it to :func:`difflog.remake`; ``no``).

Columns: W&B autolog's names where a pipeline takes a prompt
(Source-Image, Mask-Image, Control-Image, Prompt, Negative-Prompt,
Prompt-2, Negative-Prompt-2, Prompt-3, Negative-Prompt-3 -- those its
signature has -- then Generated-Image and Seed), chosen from the signature,
not from a list of class names; for any other pipeline, the text, number
and image arguments the caller passed. Per-image list arguments (class
labels, lists of images) give each row its own item; DiT's class labels
get their names from the pipeline's ``id2label``.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import math
import secrets
import sys
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._native import NAMES, Generated, Image, Video

# Arguments shown as image columns, in autolog's column order.
# Column names come from the Rust side (difflog::format::names), the one
# place every reader of a run takes them from.
GENERATED_IMAGE, SEED, REMAKE = NAMES["GENERATED_IMAGE"], NAMES["SEED"], NAMES["REMAKE"]
GENERATED_VIDEO = NAMES["GENERATED_VIDEO"]
NUMBER_OF_FRAMES = NAMES["NUMBER_OF_FRAMES"]
_IMAGE_ARGS = [(NAMES["SOURCE_IMAGE"], "image"), (NAMES["MASK_IMAGE"], "mask_image"), (NAMES["CONTROL_IMAGE"], "control_image")]
# Prompt arguments and their columns.
_TEXT_ARGS = [
    (NAMES["PROMPT"], "prompt"),
    (NAMES["NEGATIVE_PROMPT"], "negative_prompt"),
    (NAMES["PROMPT_2"], "prompt_2"),
    (NAMES["NEGATIVE_PROMPT_2"], "negative_prompt_2"),
    (NAMES["PROMPT_3"], "prompt_3"),
    (NAMES["NEGATIVE_PROMPT_3"], "negative_prompt_3"),
]
# Arguments never shown as columns.
_NOT_COLUMNS = {
    "generator",
    "latents",
    "output_type",
    "return_dict",
    "callback",
    "callback_steps",
    "callback_on_step_end",
    "callback_on_step_end_tensor_inputs",
    "cross_attention_kwargs",
    "joint_attention_kwargs",
    "attention_kwargs",
}
_SEED_RANGE_BITS = 32
# The columns every table ends with (a video pipeline's: Generated-Video
# in place of Generated-Image).
TAIL_COLUMNS = [GENERATED_IMAGE, SEED, REMAKE]
# Arguments only video pipelines take: their calls' rows are videos.
_VIDEO_ARGS = ("num_frames", "video_length", "video")
# The rate a video plays at, by the names diffusers' video pipelines give
# the argument that states it (SVD's fps, LTX's frame_rate, I2VGen-XL's
# target_fps) ...
_FPS_ARGS = ("fps", "frame_rate", "target_fps")
# ... else the rate diffusers' own documentation exports the class's frames
# at (by class-name prefix) ...
_EXAMPLE_FPS = (("Wan", 16.0), ("HunyuanVideo", 15.0), ("CogVideoX", 8.0), ("LTX", 24.0))
# ... else the default of diffusers' export_to_video and export_to_gif.
_EXPORT_FPS = 10.0

_SIGNATURES: Dict[Any, inspect.Signature] = {}


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    sig = _SIGNATURES.get(fn)
    if sig is None:
        sig = _SIGNATURES[fn] = inspect.signature(fn)
    return sig


def _forwards(sig: inspect.Signature) -> bool:
    return any(
        p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) for p in sig.parameters.values()
    )


def _own_call(cls: type) -> Optional[Callable[..., Any]]:
    """The ``__call__`` a class defines itself, unwrapped from the hook."""
    f = cls.__dict__.get("__call__")
    if f is None or not callable(f):
        return None
    return getattr(f, "__wrapped__", f)


def bind(fn: Callable[..., Any], pipeline: Any, args: tuple, kwargs: dict) -> Tuple[Callable[..., Any], inspect.BoundArguments]:
    """The ``__call__`` the arguments really reach and their binding to it.

    A ``__call__`` taking ``*args`` / ``**kwargs`` is taken to forward them
    to the next ``__call__`` in the class's MRO (``super().__call__``); the
    arguments are bound against that one while they fit it."""
    sig = _signature(fn)
    bound = sig.bind(pipeline, *args, **kwargs)
    if not _forwards(sig):
        return fn, bound
    mro = type(pipeline).__mro__
    start = next((i + 1 for i, c in enumerate(mro) if _own_call(c) is fn), len(mro))
    for cls in mro[start:]:
        f = _own_call(cls)
        if f is None:
            continue
        try:
            b = _signature(f).bind(pipeline, *args, **kwargs)
        except (TypeError, ValueError):
            break
        fn, bound = f, b
        if not _forwards(_signature(f)):
            break
    return fn, bound


def _flatten(sig: inspect.Signature, arguments: Dict[str, Any]) -> Dict[str, Any]:
    """Bound arguments by name, ``**kwargs`` spread out, ``self`` left out."""
    out: Dict[str, Any] = {}
    for name, value in list(arguments.items())[1:]:
        if sig.parameters[name].kind == inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


def _takes_generator_list(fn: Callable[..., Any]) -> bool:
    p = _signature(fn).parameters.get("generator")
    return p is not None and "list" in str(p.annotation).lower()


class Recording:
    """A call being recorded (see the module's comment)."""

    def __init__(self, run: Any, fn: Callable[..., Any], pipeline: Any, args: tuple, kwargs: dict) -> None:
        t0 = time.perf_counter()
        self.run = run
        self.t0 = t0
        self.last_step: Optional[float] = None
        self.args, self.kwargs = args, kwargs
        target, call = bind(fn, pipeline, args, kwargs)
        sig = _signature(target)
        names = list(sig.parameters)[1:]
        passed = _flatten(sig, call.arguments)
        # The same binding with the defaults filled in (not bound twice).
        full = inspect.BoundArguments(sig, dict(call.arguments))  # type: ignore[arg-type]
        full.apply_defaults()
        params = _flatten(sig, full.arguments)
        self.params = params
        self.passed = list(passed)
        self.per_prompt = _int(params.get("num_images_per_prompt", params.get("num_videos_per_prompt")), 1)
        self.prompts = _count_prompts(params)
        batch = None if self.prompts is None else self.prompts * self.per_prompt
        if "prompt" not in names and "prompt_embeds" not in names:
            batch = _int(params.get("batch_size"), 1) if "batch_size" in names else None

        # What decides the noise: the caller's generators (seed, and state
        # when used before), else torch's global generators.
        gen = params.get("generator")
        self.generators: List[Any] = list(gen) if isinstance(gen, (list, tuple)) else ([] if gen is None else [gen])
        described = describe(params)
        described["difflog_passed"] = self.passed
        rng = _global_rng()
        if rng:
            described["difflog_rng"] = rng
        self.injected = False
        if run.seed_images and gen is None and "generator" in names:
            why = self._inject_why_not(target, batch, params)
            if why is None:
                assert batch is not None
                seeds = [secrets.randbits(_SEED_RANGE_BITS) for _ in range(batch)]
                import torch

                gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
                self.kwargs = dict(kwargs)
                self.kwargs["generator"] = gens
                self.generators = gens
                described["generator"] = [describe(g) for g in gens]
                described["generator_from"] = "difflog"
                self.injected = True
            else:
                described["difflog_seed_images"] = f"not applied: {why}"
                run._warn_once(f"seed_images: {why}", f"difflog: seed_images was not applied to a {type(pipeline).__name__} call: {why}")
        self.seeds: List[Optional[int]] = [_seed_of(g) for g in self.generators]

        # Timings: our step callback, only in diffusers' own pipelines and
        # only where the caller passed none (it returns what it is given).
        if (
            "callback_on_step_end" in names
            and params.get("callback_on_step_end") is None
            and getattr(target, "__module__", "").startswith("diffusers.")
        ):
            if self.kwargs is kwargs:
                self.kwargs = dict(kwargs)
            self.kwargs["callback_on_step_end"] = self._step

        self.needs = [n for n in self.passed if _not_stored(described.get(n))]
        self.labels = _label_names(pipeline) if "class_labels" in names else None
        self.columns, self.inputs, self.texts = _columns(pipeline, names, params, self.passed, self.labels)
        self.output_type = params.get("output_type")
        self.video = any(a in names for a in _VIDEO_ARGS)
        self.media_column = GENERATED_VIDEO if self.video else GENERATED_IMAGE
        self.fps, self.fps_from = _frame_rate(type(pipeline).__name__, params)
        if self.output_type == "latent":
            described["difflog_note"] = "output_type='latent': the images are not stored (latents are not media)"
        info = pipeline_info_json(pipeline)
        if not run._environment_logged:
            run._environment_logged = True
            run.log_config({"environment": environment()})
        known = [s for s in self.seeds if s is not None]
        if len(known) == len(self.seeds) and len(known) == 1 and batch is not None:
            known = known * batch
        elif len(known) != len(self.seeds):
            known = []
        self.call = run._recorder.begin_call(
            info,
            json.dumps(described),
            known,
            self.columns + ([NUMBER_OF_FRAMES] if self.video else []) + [self.media_column, SEED, REMAKE],
        )
        self.prepare_s = time.perf_counter() - t0

    def _inject_why_not(self, target: Callable[..., Any], batch: Optional[int], params: Dict[str, Any]) -> Optional[str]:
        """Why difflog's per-image generators cannot be passed to this call
        safely (None: they can)."""
        if not _takes_generator_list(target):
            return "its signature does not take a list of generators"
        if batch is None:
            return "the number of images cannot be told before the call"
        if params.get("latents") is not None:
            return "it was given latents"
        return None

    def _step(self, pipe: Any, step: int, timestep: Any, callback_kwargs: Dict[str, Any]) -> Dict[str, Any]:
        self.last_step = time.perf_counter()
        return callback_kwargs

    def _timings(self, end: float) -> Dict[str, float]:
        t = {"total": (end - self.t0) * 1000.0}
        if self.last_step is not None:
            t["denoising"] = (self.last_step - self.t0) * 1000.0
            t["decoding"] = (end - self.last_step) * 1000.0
        return t

    def failed(self, error: BaseException) -> None:
        """The call raised: recorded with the exception's text."""
        try:
            end = time.perf_counter()
            self.call.finish(f"{type(error).__name__}: {error}", self._timings(end))
        except Exception as e:
            self.run._report("recording a failed call", e)

    def succeeded(self, out: Any) -> None:
        """The call returned: its rows and images."""
        end = time.perf_counter()
        timings = self._timings(end)
        try:
            kind = _other_media(out)
            if kind == "frames":
                images = output_videos(out.frames, self.output_type)
            elif kind is not None:
                self.run._note(f"{NAMES['STAGE_PREFIX']}{self.call.number}: the output holds {kind}, not images: not stored (yet)")
                images = []
            elif self.video:
                # A video pipeline whose output names its frames `images`
                # (Text2Video-Zero's): they are one video's frames.
                images = output_videos(_output(out), self.output_type)
            else:
                images = output_images(out, self.output_type)
            inputs: Dict[int, Any] = {}
            for i, img in enumerate(images):
                self.call.row(i, self._row(i, len(images), img, inputs))
        except Exception as e:
            self.run._report("recording the call's images", e)
        timings["saving"] = (time.perf_counter() - end) * 1000.0 + self.prepare_s * 1000.0
        try:
            self.call.finish(None, timings)
        except Exception as e:
            self.run._report("recording a call's end", e)

    def _input_video(self, v: Any, cache: Dict[int, Any]) -> Any:
        """The call's input video (a list of frames) as the recorder takes
        it, converted once per call; its description when it cannot be."""
        key = id(v)
        if key not in cache:
            try:
                cache[key] = Video(_to_rgb(v), self.fps, self.fps_from, None, False)
            except Exception:
                d = describe(v)
                cache[key] = json.dumps(d) if not isinstance(d, str) else d
        return cache[key]

    def _remake(self, i: int, n: int) -> str:
        """How row ``i`` of ``n`` can be made again."""
        if self.needs:
            return "needs " + ", ".join(self.needs)
        if any(_generator_record(g) is None for g in self.generators):
            return "no"
        if len(self.generators) == n and self.prompts is not None:
            return "alone"
        return "call"

    def _row(self, i: int, n: int, img: Any, inputs: Dict[int, Any]) -> List[Tuple[str, Any]]:
        """Row ``i`` of ``n``: its inputs and texts, then ``img`` (an
        :class:`Image`, a video's frames as a list of them, or None), its
        seed and how it can be made again."""
        p = i // self.per_prompt if self.prompts is not None else i
        seed = None
        if len(self.seeds) == n:
            seed = self.seeds[i]
        elif len(self.seeds) == 1:
            seed = self.seeds[0]
        cells: List[Tuple[str, Any]] = []
        for column, name in self.inputs:
            v = self.params.get(name)
            if self.video and name == "video":
                # A video-to-video call's input video: its frames, stored
                # as one video at the call's rate.
                cells.append((column, self._input_video(v, inputs)))
                continue
            cells.append((column, _input_image(_pick(v, i, p, n), inputs)))
        texts: Dict[str, Any] = {}
        for column, name in self.texts:
            v = self.params.get(name)
            if name == "class_labels:names":
                label = _pick(self.params.get("class_labels"), i, p, n)
                v = self.labels.get(label) if self.labels and isinstance(label, int) else None
            elif _is_tensor(v):
                v = _tensor_text(describe(v))
            else:
                v = _pick(v, i, p, n)
                v = v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(describe(v))
            texts[name] = v
            cells.append((column, v))
        if self.video:
            # Autolog's text-to-video column: here the frames the row's
            # video has (what the call returned, not what it asked for).
            cells.append((NUMBER_OF_FRAMES, len(img) if isinstance(img, list) else None))
        if img is None:
            cells.append((self.media_column, None))
        elif isinstance(img, list):
            prompt = texts.get("prompt")
            caption = prompt if isinstance(prompt, str) else None
            cells.append((self.media_column, Video(img, self.fps, self.fps_from, caption)))
        else:
            prompt = texts.get("prompt")
            recipe = None
            # Embeddings given instead of a prompt are said as such in the
            # recipe: by shape, dtype and digest, never as a made-up text.
            embeds = texts.get("prompt_embeds")
            said = prompt if isinstance(prompt, str) else (f"[prompt_embeds: {embeds}]" if isinstance(embeds, str) else None)
            if said is not None and seed is not None:
                recipe = json.dumps(
                    {
                        "prompt": said,
                        "negative_prompt": _str(texts.get("negative_prompt")),
                        "prompt_2": _str(texts.get("prompt_2")),
                        "negative_prompt_2": _str(texts.get("negative_prompt_2")),
                        "prompt_3": _str(texts.get("prompt_3")),
                        "negative_prompt_3": _str(texts.get("negative_prompt_3")),
                        "seed": seed,
                    }
                )
            caption = prompt if isinstance(prompt, str) else None
            cells.append((self.media_column, Generated(img, caption, recipe)))
        cells.append((SEED, seed))
        cells.append((REMAKE, self._remake(i, n)))
        return cells


def _str(v: Any) -> Optional[str]:
    return v if isinstance(v, str) else None


def _int(v: Any, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else default


def _count_prompts(params: Dict[str, Any]) -> Optional[int]:
    """How many prompts the call has (its batch before num_images_per_prompt),
    or None when it cannot be told."""
    prompt = params.get("prompt")
    if isinstance(prompt, str):
        return 1
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return len(prompt)
    embeds = params.get("prompt_embeds")
    shape = getattr(embeds, "shape", None)
    if prompt is None and shape is not None and len(shape) >= 1:
        return int(shape[0])
    return None


def _pick(value: Any, i: int, p: int, n: int) -> Any:
    """Row ``i``'s value of an argument: its item when the argument is a
    list with one item per image (``n``) or per prompt, else the argument."""
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        if len(value) == n:
            return value[i]
        if p < len(value) and n % len(value) == 0:
            return value[p]
        return value
    return value


def _seed_of(g: Any) -> Optional[int]:
    try:
        return int(g.initial_seed())
    except Exception:
        return None


def _label_names(pipeline: Any) -> Optional[Dict[int, str]]:
    """Class id -> its names, from a DiT-style pipeline's ``labels``
    (name -> id, built from ``id2label``)."""
    labels = getattr(pipeline, "labels", None)
    if not isinstance(labels, dict) or not labels:
        return None
    out: Dict[int, List[str]] = {}
    for name, idx in labels.items():
        if isinstance(idx, int):
            out.setdefault(idx, []).append(str(name))
    return {k: ", ".join(v) for k, v in out.items()}


def _columns(
    pipeline: Any, names: List[str], params: Dict[str, Any], passed: List[str], labels: Optional[Dict[int, str]]
) -> Tuple[List[str], list, list]:
    """The table's columns before the tail: (all, image columns with their
    argument, text columns with their argument)."""
    inputs: List[Tuple[str, str]] = []
    texts: List[Tuple[str, str]] = []
    if "prompt" in names:
        controlnet = getattr(pipeline, "controlnet", None) is not None
        for column, name in _IMAGE_ARGS:
            if controlnet and name == "image" and "control_image" not in names:
                column = NAMES["CONTROL_IMAGE"]
            if name in names and params.get(name) is not None:
                inputs.append((column, name))
        inputs.sort(key=lambda c: [a for a, _ in _IMAGE_ARGS].index(c[0]))
        texts = [(c, n) for c, n in _TEXT_ARGS if n in names]
        taken = {n for _, n in inputs} | {n for _, n in texts}
        # What the caller gave instead of prompts: embeddings, by digest.
        for name in passed:
            if name.endswith("_embeds") and name not in taken and _is_tensor(params.get(name)):
                texts.append(("-".join(w.capitalize() for w in name.split("_")), name))
        rest = [n for n in passed if n not in taken and not n.endswith("_embeds")]
    else:
        rest = passed
    for name in rest:
        v = params.get(name)
        if name in _NOT_COLUMNS or v is None:
            continue
        if _is_image(v):
            inputs.append((name, name))
        elif _scalars(v) or ("prompt" not in names and isinstance(v, (str, int, float, bool))):
            texts.append((name, name))
            if name == "class_labels" and labels:
                texts.append(("Class-Name", "class_labels:names"))
    return [c for c, _ in inputs] + [c for c, _ in texts], inputs, texts


def _scalars(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, (str, int, float, bool)) for x in v)


def _is_image(v: Any) -> bool:
    return type(v).__module__.startswith("PIL.") or (
        isinstance(v, (list, tuple)) and bool(v) and type(v[0]).__module__.startswith("PIL.")
    )


def _is_tensor(v: Any) -> bool:
    mod = type(v).__module__
    return (mod.startswith("torch") or mod.startswith("numpy")) and getattr(v, "ndim", 0) > 0


def _tensor_text(d: Any) -> Optional[str]:
    """A tensor's record as one cell: ``tensor 1x77x32 float32 sha256:…``."""
    if not isinstance(d, dict):
        return None
    shape = "x".join(str(s) for s in d.get("shape", []))
    return f"{d.get('_type')} {shape} {d.get('dtype')} sha256:{d.get('sha256')}"


def _not_stored(d: Any) -> bool:
    """Whether a described argument is something difflog does not keep
    (a tensor, an array, an arbitrary object): re-making needs it again."""
    if isinstance(d, list):
        return any(_not_stored(x) for x in d)
    if isinstance(d, dict):
        t = d.get("_type")
        if t in ("tensor", "array"):
            return True
        if t == "dict":
            return _not_stored(d.get("items"))
        if t in ("image", "generator"):
            return False
        if t is not None:
            return True
        return any(_not_stored(x) for x in d.values())
    return False


def _input_image(v: Any, cache: Dict[int, Any]) -> Any:
    """An input image as the recorder takes it, converted once per object."""
    if v is None:
        return None
    key = id(v)
    if key not in cache:
        try:
            imgs = _to_rgb(v)
            cache[key] = imgs[0] if len(imgs) == 1 else None
        except Exception:
            cache[key] = None
        if cache[key] is None:
            d = describe(v)
            cache[key] = json.dumps(d) if not isinstance(d, str) else d
    return cache[key]


# Outputs that are not images: video, sound, the embeddings of a prior
# pipeline (Kandinsky's, Würstchen's), which a decoder turns into images in
# a call of its own, and Marigold's depth or normals predictions.
_OTHER_OUTPUTS = ("frames", "audios", "image_embeds", "image_embeddings", "prediction")


def _other_media(out: Any) -> Optional[str]:
    """What the output holds when it is not images (``frames``,
    ``audios``, ``image_embeds``, ...)."""
    if isinstance(out, tuple) or getattr(out, "images", None) is not None or getattr(out, "rgb", None) is not None:
        return None
    for kind in _OTHER_OUTPUTS:
        if getattr(out, kind, None) is not None:
            return kind
    return None


def output_images(out: Any, output_type: Any) -> List[Optional[Image]]:
    """The generated images of a call's output, as RGB images (None for
    each output that is not an image: latents)."""
    images = _output(out)
    if output_type == "latent":
        n = len(images) if hasattr(images, "__len__") else 0
        return [None] * n
    return list(_to_rgb(images))


def output_videos(frames: Any, output_type: Any = None, convert: Optional[Callable[[Any], List[Any]]] = None) -> List[Any]:
    """A video pipeline's ``frames`` as videos, each a list of RGB frames
    (None for each video when they are latents): a list (the batch) of
    lists of PIL images, a (B, F, H, W, C) numpy array or a (B, F, C, H, W)
    torch tensor -- diffusers' three output types -- or one video: a list
    of PIL images, a (F, H, W, C) array or a (F, C, H, W) tensor.
    ``convert`` turns one video's frames into the list returned for it
    (:func:`_to_rgb` unless given)."""
    convert = convert or _to_rgb
    if output_type == "latent":
        n = len(frames) if hasattr(frames, "__len__") else 0
        return [None] * n
    if isinstance(frames, (list, tuple)):
        if frames and all(type(f).__module__.startswith("PIL.") for f in frames):
            return [convert(list(frames))]
        return [v for one in frames for v in output_videos(one, None, convert)]
    mod = type(frames).__module__
    ndim = getattr(frames, "ndim", None)
    if mod.startswith(("torch", "numpy")) and ndim == 5:
        return [convert(frames[b]) for b in range(frames.shape[0])]
    if mod.startswith(("torch", "numpy")) and ndim == 4:
        return [convert(frames)]
    raise TypeError(f"cannot store {type(frames).__name__} (ndim {ndim}) as a video's frames")


def _frame_rate(cls: str, params: Dict[str, Any]) -> Tuple[float, str]:
    """The rate a call's videos play at and where it came from: the call's
    own argument, else diffusers' documented rate for the class, else
    diffusers' export default."""
    for name in _FPS_ARGS:
        v = params.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1000:
            return float(v), f"argument {name}"
    for prefix, fps in _EXAMPLE_FPS:
        if cls.startswith(prefix):
            return fps, f"diffusers' documented rate for {prefix} pipelines"
    return _EXPORT_FPS, "diffusers' export_to_video default"


def _output(out: Any) -> Any:
    """The images of a pipeline's output (``.images`` or the tuple's first)."""
    if isinstance(out, tuple):
        images = out[0] if out else None
    else:
        images = getattr(out, "images", None)
        if images is None:
            # LDM3D: colour images in `rgb` (its depth maps are not stored).
            images = getattr(out, "rgb", None)
    if images is None:
        raise ValueError(f"no images in the output ({type(out).__name__})")
    return images


def _to_rgb(images: Any) -> List[Image]:
    """PIL images, numpy arrays (N,H,W,C or H,W,C, floats in [0, 1] or
    uint8) and torch tensors (N,C,H,W or C,H,W) as RGB images."""
    if isinstance(images, (list, tuple)):
        return [x for one in images for x in _to_rgb(one)]
    if type(images).__module__.startswith("PIL.") and images.mode == "RGB":
        # Pipelines' usual output: read through Pillow's Arrow export (one
        # copy of the image's memory, no packing here) where it has one.
        fast = Image.from_pil(images)
        if fast is not None:
            return [fast]
    return [Image(w, h, data) for w, h, data in rgb_pixels(images)]


def rgb_pixels(images: Any) -> List[Tuple[int, int, bytes]]:
    """:func:`_to_rgb`'s pixels: (width, height, RGB bytes) per image."""
    mod = type(images).__module__
    if mod.startswith("PIL."):
        img = images if images.mode == "RGB" else images.convert("RGB")
        return [(img.size[0], img.size[1], img.tobytes())]
    if isinstance(images, (list, tuple)):
        out: List[Tuple[int, int, bytes]] = []
        for x in images:
            out.extend(rgb_pixels(x))
        return out
    if mod.startswith("torch"):
        t = images.detach().float().cpu()
        t = t.unsqueeze(0) if t.dim() == 3 else t
        return _numpy(t.permute(0, 2, 3, 1).numpy())
    if mod.startswith("numpy"):
        return _numpy(images)
    raise TypeError(f"cannot store {type(images).__name__} as an image")


def _numpy(a: Any) -> List[Tuple[int, int, bytes]]:
    import numpy as np

    a = np.asarray(a)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"an image array has 3 or 4 dimensions, not {a.ndim}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.integer) and a.dtype != np.uint8:
        # Integers are channel values already (0..255), not fractions.
        a = np.clip(a, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        # As diffusers turns its float output into PIL images.
        a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
    c = a.shape[3]
    if c == 1:
        a = np.repeat(a, 3, axis=3)
    elif c == 4:
        a = a[..., :3]
    elif c != 3:
        raise ValueError(f"an image has 1, 3 or 4 channels, not {c}")
    return [(int(x.shape[1]), int(x.shape[0]), np.ascontiguousarray(x).tobytes()) for x in a]


# By the pipeline object itself (weakly): an id could be reused by a new
# pipeline once the old one is gone.
_INFO_CACHE: "weakref.WeakKeyDictionary[Any, Tuple[Any, str]]" = weakref.WeakKeyDictionary()


def _is_component(key: str, value: Any) -> bool:
    """Whether a pipeline config entry names a component (``[library, class]``)."""
    return not key.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2


def pipeline_info_json(p: Any) -> str:
    """:func:`pipeline_info` as JSON, described again only when the pipeline
    changed: another component or scheduler, its config, or where its
    modules are (``.to(...)``)."""
    cfg = getattr(p, "config", None) or {}
    sched = getattr(p, "scheduler", None)
    key = (
        # Components only: reading a plain config key as an attribute
        # makes diffusers warn.
        tuple((k, id(getattr(p, k, None))) for k, v in cfg.items() if _is_component(k, v)),
        id(sched),
        id(getattr(sched, "config", None)),
        id(getattr(p, "config", None)),
        tuple(sorted(_placement(p).items())),
    )
    try:
        hit = _INFO_CACHE.get(p)
    except TypeError:  # not weakly referable or not hashable: not cached
        return json.dumps(pipeline_info(p))
    if hit is not None and hit[0] == key:
        return hit[1]
    text = json.dumps(pipeline_info(p))
    _INFO_CACHE[p] = (key, text)
    return text


def pipeline_info(p: Any) -> Dict[str, Any]:
    """What the pipeline is: class, model id, revision, dtype and device,
    every component (library, class, dtype, device, config) and the
    scheduler's full config."""
    cfg = dict(getattr(p, "config", {}) or {})
    components: Dict[str, Any] = {}
    revision = None
    for key, value in cfg.items():
        if key.startswith("_"):
            continue
        if _is_component(key, value):
            comp = getattr(p, key, None)
            entry: Dict[str, Any] = {"library": value[0], "class": value[1]}
            if comp is not None:
                entry.update(_placement(comp))
                conf = getattr(comp, "config", None)
                if conf is not None:
                    revision = revision or getattr(conf, "_commit_hash", None)
                    conf = conf.to_dict() if hasattr(conf, "to_dict") else dict(conf)
                    entry["config"] = describe(conf)
            components[key] = entry
        else:
            components[key] = describe(value)
    scheduler = getattr(p, "scheduler", None)
    sched: Any = None
    if scheduler is not None:
        sched = {"name": type(scheduler).__name__}
        sched.update(describe(dict(getattr(scheduler, "config", {}) or {})))
    placement = _placement(p)
    return {
        "class": type(p).__name__,
        "model_id": getattr(p, "name_or_path", None) or cfg.get("_name_or_path") or "(built in memory)",
        "revision": revision if isinstance(revision, str) else None,
        "weights_digest": None,
        "dtype": placement.get("dtype", "unknown"),
        "device": placement.get("device", "unknown"),
        "components": components,
        "scheduler": sched,
    }


def _placement(obj: Any) -> Dict[str, str]:
    """dtype and device of a torch module (its first parameter's: diffusers'
    own properties walk every module), or of a pipeline (its first module)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        # Not `getattr(obj, "parameters")` on anything else: on a pipeline
        # that is diffusers' property, which reads its signature each time.
        try:
            p = next(iter(obj.parameters()), None)
        except Exception:
            p = None
        if p is not None:
            return {"dtype": str(p.dtype).replace("torch.", ""), "device": str(p.device)}
        return {}
    for name in ("unet", "transformer", "prior", "decoder", "vae", "text_encoder"):
        comp = getattr(obj, name, None)
        if torch is not None and isinstance(comp, torch.nn.Module):
            found = _placement(comp)
            if found:
                return found
    return {}


def environment() -> Dict[str, Any]:
    """Versions of Python and the libraries that made the images."""
    env: Dict[str, Any] = {"python": sys.version.split()[0], "platform": sys.platform}
    for name in ("torch", "diffusers", "transformers", "numpy", "PIL"):
        mod = sys.modules.get(name)
        if mod is not None:
            env[name if name != "PIL" else "pillow"] = getattr(mod, "__version__", None)
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            env["cuda"] = torch.version.cuda
            env["cuda_available"] = bool(torch.cuda.is_available())
        except Exception:
            pass
    return env


def describe(v: Any, depth: int = 0) -> Any:
    """A value as JSON holds it: plain values as they are, generators as
    their seed and device (and their state, when they were used before and
    their seed alone no longer gives their numbers), images by size, mode
    and the SHA-256 of their pixels, tensors and arrays by shape, dtype and
    the SHA-256 of their bytes, anything else by its type and a short repr."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**64 else str(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if depth > 8:
        return repr(v)[:200]
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v):
            return {k: describe(x, depth + 1) for k, x in v.items()}
        # Keys that are not text (Attend-and-Excite's {step: threshold})
        # kept as they are: JSON would turn them into text.
        return {"_type": "dict", "items": [[describe(k, depth + 1), describe(x, depth + 1)] for k, x in v.items()]}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [describe(x, depth + 1) for x in list(v)[:10000]]
    mod = type(v).__module__
    name = type(v).__name__
    if mod.startswith("torch"):
        if name == "Generator":
            return _generator_record(v) or {"_type": "generator", "repr": repr(v)[:200]}
        if name in ("dtype", "device"):
            return str(v).replace("torch.", "")
        if hasattr(v, "shape"):
            return {
                "_type": "tensor",
                "shape": list(v.shape),
                "dtype": str(v.dtype).replace("torch.", ""),
                "sha256": _tensor_digest(v),
            }
    if mod.startswith("numpy"):
        if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
            import numpy as np

            raw = np.ascontiguousarray(v).tobytes()
            return {"_type": "array", "shape": list(v.shape), "dtype": str(v.dtype), "sha256": hashlib.sha256(raw).hexdigest()}
        if hasattr(v, "item"):
            return describe(v.item(), depth + 1)
    if mod.startswith("PIL."):
        return {
            "_type": "image",
            "width": v.size[0],
            "height": v.size[1],
            "mode": v.mode,
            "sha256": image_digest(v),
        }
    if hasattr(v, "__fspath__"):
        return str(v)
    if callable(v):
        return {"_type": "callable", "name": getattr(v, "__qualname__", name)}
    return {"_type": name, "repr": repr(v)[:200]}


def image_digest(img: Any) -> str:
    """SHA-256 of a PIL image's pixels (``tobytes()`` in its own mode)."""
    return hashlib.sha256(img.tobytes()).hexdigest()


def _tensor_digest(t: Any) -> Optional[str]:
    """SHA-256 of a tensor's bytes (row-major, its own dtype); copied to
    the CPU when it lives elsewhere. Reading it changes nothing."""
    try:
        import torch

        b = t.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes()
        return hashlib.sha256(b).hexdigest()
    except Exception:
        return None


# A generator's state (bytes) right after manual_seed(seed), by (device,
# seed): the test of whether a generator is fresh, computed once per seed.
_FRESH: Dict[Tuple[str, int], bytes] = {}


def _generator_record(g: Any) -> Optional[Dict[str, Any]]:
    """A torch generator as it stood: seed, device, whether it was fresh
    (its seed alone gives its numbers) and, when not, its state (base64),
    which restores its stream exactly. None when it cannot be read."""
    import torch

    try:
        seed = int(g.initial_seed())
        device = str(g.device)
        state = g.get_state().numpy().tobytes()
        fresh = _FRESH.get((device, seed))
        if fresh is None:
            fresh = torch.Generator(device=g.device).manual_seed(seed).get_state().numpy().tobytes()
            if len(_FRESH) > 64:
                _FRESH.clear()
            _FRESH[(device, seed)] = fresh
    except Exception:
        return None
    d: Dict[str, Any] = {"_type": "generator", "seed": seed, "device": device, "fresh": state == fresh}
    if not d["fresh"]:
        d["state"] = base64.b64encode(state).decode("ascii")
    return d


def _global_rng() -> Dict[str, Any]:
    """torch's global generators as they stand (CPU; CUDA devices only when
    CUDA is already initialised: never initialised here)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    out: Dict[str, Any] = {}
    cpu = _generator_record(torch.default_generator)
    if cpu is not None:
        out["torch_cpu"] = cpu
    try:
        if torch.cuda.is_initialized():
            out["torch_cuda"] = [_generator_record(g) for g in torch.cuda.default_generators]
    except Exception:
        pass
    return out
