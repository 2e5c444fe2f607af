"""The hook: every ``diffusers.DiffusionPipeline`` subclass's ``__call__``.

There is no list of class names. Classes that exist when the hook is
installed are found by walking ``DiffusionPipeline``'s subclasses; classes
created later (diffusers imports its pipelines lazily; a user defines their
own) are wrapped as they are created, by ``__init_subclass__``. Only the
outermost pipeline call of a thread is recorded: a pipeline that calls
another (a combined pipeline, a subclass calling ``super().__call__``) is
one call.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Optional

_state = threading.local()
_installed: Optional["Hook"] = None
_install_lock = threading.Lock()


class Hook:
    """The installed hook (one per process)."""

    def __init__(self, base: type) -> None:
        self.base = base

    def call(self, pipeline: Any, args: tuple, kwargs: dict) -> Any:
        """Calls ``pipeline``; recorded by its wrapped ``__call__`` when it
        is a diffusers pipeline, else recorded here."""
        fn = getattr(type(pipeline), "__call__", None)
        if fn is None:
            raise TypeError(f"{type(pipeline).__name__} is not callable")
        if getattr(fn, "_difflog_wrapped", False):
            return pipeline(*args, **kwargs)
        return record(fn, pipeline, args, kwargs)


def install() -> Hook:
    """Hooks diffusers (once); raises ImportError without it."""
    global _installed
    with _install_lock:
        if _installed is not None:
            return _installed
        try:
            from diffusers import DiffusionPipeline
        except ImportError as e:
            raise ImportError(
                "difflog records diffusers pipelines: install diffusers (pip install diffusers)"
            ) from e
        original = DiffusionPipeline.__dict__.get("__init_subclass__")

        def __init_subclass__(cls: type, **kw: Any) -> None:
            if original is not None:
                original.__get__(None, cls)(**kw)
            else:
                super(DiffusionPipeline, cls).__init_subclass__(**kw)  # type: ignore[misc]
            wrap(cls)

        DiffusionPipeline.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]
        todo = [DiffusionPipeline]
        while todo:
            cls = todo.pop()
            wrap(cls)
            todo.extend(cls.__subclasses__())
        _installed = Hook(DiffusionPipeline)
        return _installed


def wrap(cls: type) -> None:
    """Wraps the ``__call__`` that ``cls`` itself defines (inherited ones
    are wrapped where they are defined)."""
    fn = cls.__dict__.get("__call__")
    if fn is None or getattr(fn, "_difflog_wrapped", False) or not callable(fn):
        return

    @functools.wraps(fn)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        return record(fn, self, args, kwargs)

    __call__._difflog_wrapped = True  # type: ignore[attr-defined]
    type.__setattr__(cls, "__call__", __call__)


def record(fn: Callable[..., Any], pipeline: Any, args: tuple, kwargs: dict) -> Any:
    """Runs one pipeline call, recorded into the active run when there is
    one and this is the outermost call of the thread. A recording problem is
    reported by the run and never changes what the call does or returns."""
    from . import active_run
    from ._call import Recording

    run = active_run()
    depth = getattr(_state, "depth", 0)
    if run is not None and run._forked and depth == 0:
        run._warn_once(
            "fork",
            f"difflog: this process was forked from the one recording run {run.id}; "
            "its pipeline calls are not recorded (start a run of its own here to record them)",
        )
    if run is None or depth > 0 or not run.recording:
        return _inner(fn, pipeline, args, kwargs)
    try:
        rec: Optional[Recording] = Recording(run, fn, pipeline, args, kwargs)
        args, kwargs = rec.args, rec.kwargs  # type: ignore[union-attr]
    except Exception as e:  # never the caller's problem
        run._report(f"{type(pipeline).__name__} call", e)
        rec = None
    try:
        out = _inner(fn, pipeline, args, kwargs)
    except BaseException as e:
        if rec is not None:
            rec.failed(e)
        raise
    if rec is not None:
        rec.succeeded(out)
    return out


def unrecorded(pipeline: Any, kwargs: dict) -> Any:
    """Calls ``pipeline(**kwargs)`` without recording it (a re-made call)."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        return pipeline(**kwargs)
    finally:
        _state.depth -= 1


def _inner(fn: Callable[..., Any], pipeline: Any, args: tuple, kwargs: dict) -> Any:
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        return fn(pipeline, *args, **kwargs)
    finally:
        _state.depth -= 1
