"""One diffusers call turned into difflog's record of it.

Before the call: every argument with diffusers' defaults filled in from the
signature (the ``workflow`` entry's ``params``), the seed of every image,
the table's columns, and two additions to the call's arguments -- one
seeded CPU generator per image when the caller passed none (so each image
has a seed that makes it again), and a step callback for the timings when
the caller passed none. After it: one row per image, the images handed to
the Rust recorder as RGB bytes.

Columns: W&B autolog's names where a pipeline takes a prompt
(Source-Image, Mask-Image, Control-Image, Prompt, Negative-Prompt,
Prompt-2, Negative-Prompt-2, Prompt-3, Negative-Prompt-3 -- those its
signature has -- then Generated-Image and Seed), chosen from the signature,
not from a list of class names; for any other pipeline, the text, number
and image arguments it was called with.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import sys
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._native import Generated, Image

# Arguments shown as image columns, in autolog's column order.
_IMAGE_ARGS = [("Source-Image", "image"), ("Mask-Image", "mask_image"), ("Control-Image", "control_image")]
# Prompt arguments and their columns.
_TEXT_ARGS = [
    ("Prompt", "prompt"),
    ("Negative-Prompt", "negative_prompt"),
    ("Prompt-2", "prompt_2"),
    ("Negative-Prompt-2", "negative_prompt_2"),
    ("Prompt-3", "prompt_3"),
    ("Negative-Prompt-3", "negative_prompt_3"),
]
# Arguments never shown as columns of a pipeline without a prompt.
_NOT_COLUMNS = {"generator", "latents", "output_type", "return_dict", "callback_on_step_end"}
_SEED_RANGE = 2**32


_SIGNATURES: Dict[Any, inspect.Signature] = {}


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    sig = _SIGNATURES.get(fn)
    if sig is None:
        sig = _SIGNATURES[fn] = inspect.signature(fn)
    return sig


class Recording:
    """A call being recorded (see the module's comment)."""

    def __init__(self, run: Any, fn: Callable[..., Any], pipeline: Any, args: tuple, kwargs: dict) -> None:
        t0 = time.perf_counter()
        self.run = run
        self.t0 = t0
        self.last_step: Optional[float] = None
        sig = _signature(fn)
        names = list(sig.parameters)[1:]
        call = sig.bind(pipeline, *args, **kwargs)
        bound = sig.bind(pipeline, *args, **kwargs)
        bound.apply_defaults()
        params: Dict[str, Any] = {}
        for name, value in list(bound.arguments.items())[1:]:
            kind = sig.parameters[name].kind
            if kind == inspect.Parameter.VAR_KEYWORD:
                params.update(value)
            else:
                params[name] = value
        self.params = params
        self.per_prompt = _int(params.get("num_images_per_prompt"), 1)
        self.prompts = _count_prompts(params)
        batch = None if self.prompts is None else self.prompts * self.per_prompt

        # Seeds: the caller's generators, or one of ours per image.
        gen = params.get("generator")
        self.seeds: List[Optional[int]] = []
        injected = False
        if (
            gen is None
            and "generator" in names
            and run.seed_images
            and batch is not None
            and params.get("latents") is None
        ):
            import torch

            seeds = [random.randrange(_SEED_RANGE) for _ in range(batch)]
            gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
            call.arguments["generator"] = gens
            params["generator"] = gens
            self.seeds = list(seeds)
            injected = True
        elif isinstance(gen, (list, tuple)):
            self.seeds = [_seed_of(g) for g in gen]
        elif gen is not None and batch is not None:
            self.seeds = [_seed_of(gen)] * batch
        described = describe(params)
        if injected:
            # The call passed no generator: these are difflog's (see above).
            described["generator_from"] = "difflog"

        # Timings: our step callback, unless the caller has one.
        if "callback_on_step_end" in names and params.get("callback_on_step_end") is None:
            call.arguments["callback_on_step_end"] = self._step
        self.args = call.args[1:]
        self.kwargs = call.kwargs

        self.columns, self.inputs, self.texts = _columns(pipeline, names, params)
        self.output_type = params.get("output_type")
        if self.output_type == "latent":
            described["difflog_note"] = "output_type='latent': the images are not stored (latents are not media)"
        info = pipeline_info_json(pipeline)
        if not run._environment_logged:
            run._environment_logged = True
            run.log_config({"environment": environment()})
        seeds = [s for s in self.seeds if s is not None]
        self.call = run._recorder.begin_call(
            info,
            json.dumps(described),
            seeds if len(seeds) == len(self.seeds) else [],
            self.columns + ["Generated-Image", "Seed"],
        )
        self.prepare_s = time.perf_counter() - t0

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
            if kind is not None:
                self.run._note(f"Pipeline-Call-{self.call.number}: the output holds {kind}; that media kind is not stored yet")
            images = [] if kind is not None else output_images(out, self.output_type)
            inputs: Dict[int, Any] = {}
            for i, img in enumerate(images):
                self.call.row(i, self._row(i, img, inputs))
        except Exception as e:
            self.run._report("recording the call's images", e)
        timings["saving"] = (time.perf_counter() - end) * 1000.0 + self.prepare_s * 1000.0
        try:
            self.call.finish(None, timings)
        except Exception as e:
            self.run._report("recording a call's end", e)

    def _row(self, i: int, img: Optional[Image], inputs: Dict[int, Any]) -> List[Tuple[str, Any]]:
        p = i // self.per_prompt if self.prompts is not None else i
        seed = self.seeds[i] if i < len(self.seeds) else None
        cells: List[Tuple[str, Any]] = []
        for column, name in self.inputs:
            cells.append((column, _input_image(_pick(self.params.get(name), p, self.prompts), inputs)))
        texts: Dict[str, Any] = {}
        for column, name in self.texts:
            v = _pick(self.params.get(name), p, self.prompts)
            v = v if isinstance(v, (str, int, float, bool)) or v is None else None
            texts[name] = v
            cells.append((column, v))
        if img is None:
            cells.append(("Generated-Image", None))
        else:
            prompt = texts.get("prompt")
            recipe = None
            if isinstance(prompt, str) and seed is not None:
                recipe = json.dumps(
                    {
                        "prompt": prompt,
                        "negative_prompt": _str(texts.get("negative_prompt")),
                        "prompt_2": _str(texts.get("prompt_2")),
                        "negative_prompt_2": _str(texts.get("negative_prompt_2")),
                        "prompt_3": _str(texts.get("prompt_3")),
                        "negative_prompt_3": _str(texts.get("negative_prompt_3")),
                        "seed": seed,
                    }
                )
            caption = prompt if isinstance(prompt, str) else None
            cells.append(("Generated-Image", Generated(img, caption, recipe)))
        cells.append(("Seed", seed))
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
    if "prompt" not in params:
        return _int(params.get("batch_size"), 1)
    return None


def _pick(value: Any, p: int, prompts: Optional[int]) -> Any:
    """A row's value of an argument: the item for the row's prompt when the
    argument is a list (one per prompt), else the argument."""
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        if prompts is not None and len(value) == prompts:
            return value[p]
        return value[p % len(value)]
    return value


def _seed_of(g: Any) -> Optional[int]:
    try:
        return int(g.initial_seed())
    except Exception:
        return None


def _columns(pipeline: Any, names: List[str], params: Dict[str, Any]) -> Tuple[List[str], list, list]:
    """The table's columns before Generated-Image and Seed: (all, image
    columns with their argument, text columns with their argument)."""
    inputs: List[Tuple[str, str]] = []
    texts: List[Tuple[str, str]] = []
    if "prompt" in names:
        controlnet = getattr(pipeline, "controlnet", None) is not None
        for column, name in _IMAGE_ARGS:
            if controlnet and name == "image" and "control_image" not in names:
                column = "Control-Image"
            if name in names and params.get(name) is not None:
                inputs.append((column, name))
        inputs.sort(key=lambda c: [a for a, _ in _IMAGE_ARGS].index(c[0]))
        texts = [(c, n) for c, n in _TEXT_ARGS if n in names]
    else:
        for name in names:
            v = params.get(name)
            if name in _NOT_COLUMNS or v is None:
                continue
            if isinstance(v, (str, int, float, bool)):
                texts.append((name, name))
            elif _is_image(v):
                inputs.append((name, name))
    return [c for c, _ in inputs] + [c for c, _ in texts], inputs, texts


def _is_image(v: Any) -> bool:
    return type(v).__module__.startswith("PIL.") or (
        isinstance(v, (list, tuple)) and bool(v) and type(v[0]).__module__.startswith("PIL.")
    )


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


def _other_media(out: Any) -> Optional[str]:
    """``frames`` or ``audios`` when the output holds video or sound."""
    if isinstance(out, tuple) or getattr(out, "images", None) is not None:
        return None
    for kind in ("frames", "audios"):
        if getattr(out, kind, None) is not None:
            return kind
    return None


def output_images(out: Any, output_type: Any) -> List[Optional[Image]]:
    """The generated images of a call's output, as RGB images (None for
    each output that is not an image: latents)."""
    if isinstance(out, tuple):
        images = out[0] if out else None
    else:
        images = getattr(out, "images", None)
    if images is None:
        raise ValueError(f"no images in the output ({type(out).__name__})")
    if output_type == "latent":
        n = len(images) if hasattr(images, "__len__") else 0
        return [None] * n
    return list(_to_rgb(images))


def _to_rgb(images: Any) -> List[Image]:
    """PIL images, numpy arrays (N,H,W,C or H,W,C, floats in [0, 1] or
    uint8) and torch tensors (N,C,H,W or C,H,W) as RGB images."""
    mod = type(images).__module__
    if mod.startswith("PIL."):
        return [_pil(images)]
    if isinstance(images, (list, tuple)):
        out: List[Image] = []
        for x in images:
            out.extend(_to_rgb(x))
        return out
    if mod.startswith("torch"):
        t = images.detach().float().cpu()
        t = t.unsqueeze(0) if t.dim() == 3 else t
        return _numpy(t.permute(0, 2, 3, 1).numpy())
    if mod.startswith("numpy"):
        return _numpy(images)
    raise TypeError(f"cannot store {type(images).__name__} as an image")


def _pil(img: Any) -> Image:
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    return Image(w, h, img.tobytes())


def _numpy(a: Any) -> List[Image]:
    import numpy as np

    a = np.asarray(a)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"an image array has 3 or 4 dimensions, not {a.ndim}")
    if a.dtype != np.uint8:
        # As diffusers turns its float output into PIL images.
        a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
    c = a.shape[3]
    if c == 1:
        a = np.repeat(a, 3, axis=3)
    elif c == 4:
        a = a[..., :3]
    elif c != 3:
        raise ValueError(f"an image has 1, 3 or 4 channels, not {c}")
    return [Image(int(x.shape[1]), int(x.shape[0]), np.ascontiguousarray(x).tobytes()) for x in a]


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
    params = getattr(obj, "parameters", None)
    if callable(params):
        try:
            p = next(iter(params()), None)
        except Exception:
            p = None
        if p is not None:
            return {"dtype": str(p.dtype).replace("torch.", ""), "device": str(p.device)}
        return {}
    for name in ("unet", "transformer", "prior", "decoder", "vae", "text_encoder"):
        comp = getattr(obj, name, None)
        if comp is not None and callable(getattr(comp, "parameters", None)):
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
    their seed and device (and whether they were used before, when their
    seed alone no longer gives their numbers), images and tensors by their
    shape, anything else by its type and a short repr."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**64 else str(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if depth > 8:
        return repr(v)[:200]
    if isinstance(v, dict):
        return {str(k): describe(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [describe(x, depth + 1) for x in list(v)[:10000]]
    mod = type(v).__module__
    name = type(v).__name__
    if mod.startswith("torch"):
        if name == "Generator":
            return _generator(v)
        if name in ("dtype", "device"):
            return str(v).replace("torch.", "")
        if hasattr(v, "shape"):
            return {"_type": "tensor", "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
    if mod.startswith("numpy"):
        if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
            return {"_type": "array", "shape": list(v.shape), "dtype": str(v.dtype)}
        if hasattr(v, "item"):
            return describe(v.item(), depth + 1)
    if mod.startswith("PIL."):
        return {"_type": "image", "width": v.size[0], "height": v.size[1], "mode": v.mode}
    if hasattr(v, "__fspath__"):
        return str(v)
    if callable(v):
        return {"_type": "callable", "name": getattr(v, "__qualname__", name)}
    return {"_type": name, "repr": repr(v)[:200]}


def _generator(g: Any) -> Dict[str, Any]:
    import torch

    d: Dict[str, Any] = {"seed": int(g.initial_seed()), "device": str(g.device)}
    try:
        fresh = torch.Generator(device=g.device).manual_seed(g.initial_seed())
        d["fresh"] = bool(torch.equal(fresh.get_state(), g.get_state()))
    except Exception:
        pass
    return d
