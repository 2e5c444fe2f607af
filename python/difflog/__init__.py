"""difflog for Python: every diffusers pipeline call recorded offline.

Two lines, as with W&B's diffusers autolog::

    import difflog
    difflog.autolog(init=dict(project="diffusers_logging"))

From then on every call of any ``diffusers.DiffusionPipeline`` subclass --
including classes imported later and your own -- is recorded into
``./runs/<run-id>/`` (or ``DIFFLOG_DIR``) in difflog's run format, the same
directory difflog's Rust recorder writes: ``difflog report`` shows it and
``difflog-sync`` uploads it to MLflow or W&B. Nothing here uses the network.

For code that wants no global state, a :class:`Run` records the calls made
inside its ``with`` block (or passed to :meth:`Run.call`) instead.

Recording changes nothing the program can observe: outputs, exceptions and
the states of torch's, numpy's and Python's random generators are what
they are without difflog. :func:`remake` makes a recorded call again.
"""

from __future__ import annotations

import atexit
import contextvars
import sys
import json
import logging
import os
import threading
import warnings
import weakref
from typing import Any, Dict, Iterable, Optional, TypedDict, Union

from ._call import describe
from ._native import RecordingError, Recorder
from ._remake import Remade, remake

__all__ = ["Run", "InitArgs", "autolog", "finish", "active_run", "remake", "Remade", "RecordingError"]
__version__ = "0.1.0"

log = logging.getLogger("difflog")


class InitArgs(TypedDict, total=False):
    """``autolog(init=...)``, as W&B's ``init``."""

    project: str
    name: str
    tags: Iterable[str]
    config: Dict[str, Any]
    resume: str


# The run hooked pipelines record into: the innermost `with Run(...)` of this
# thread or task, else the one `autolog()` started.
_context_run: contextvars.ContextVar[Optional["Run"]] = contextvars.ContextVar(
    "difflog_run", default=None
)
_autolog_run: Optional["Run"] = None
_autolog_lock = threading.Lock()
_open_runs: "weakref.WeakSet[Run]" = weakref.WeakSet()


class Run:
    """One run directory being recorded.

    ``project``, ``name``, ``tags`` and ``config`` are those of W&B's
    ``init``; ``root`` is where run directories go (default ``DIFFLOG_DIR``
    or ``./runs``). ``disabled=True`` (or ``DIFFLOG_MODE=disabled``) records
    nothing. ``resume="ID"`` (or ``DIFFLOG_RESUME=ID``) goes on recording
    into the run ``ID`` under the root -- a job killed by its scheduler and
    started again -- and starts it under that id when it is not there; a
    finished run, or one another process records, is an error.

    ``seed_images=True`` (off by default: it changes the call) passes one
    CPU generator per image, seeded from the system's entropy, to calls that
    pass no generator, so that every image can be made again from its own
    seed -- only where that is safe (the pipeline's signature takes a list
    of generators, the number of images is known before the call, no
    ``latents``); elsewhere the call is left alone and a warning says why.
    Without it, a call that passes no generator draws from torch's global
    generator, whose state at the call's start is recorded.

    Use it as a context manager (calls of hooked pipelines inside the block
    are recorded into it, in this thread or task), or call :meth:`call`.
    The run finishes on :meth:`finish`, at the end of the ``with`` block, or
    at interpreter exit.
    """

    def __init__(
        self,
        project: str = "diffusers_logging",
        name: Optional[str] = None,
        tags: Iterable[str] = (),
        config: Optional[Dict[str, Any]] = None,
        root: Union[str, "os.PathLike[str]", None] = None,
        *,
        seed_images: bool = False,
        disabled: bool = False,
        resume: Optional[str] = None,
    ) -> None:
        config_json = json.dumps(describe(config)) if config else None
        self._recorder = Recorder(
            project,
            name,
            [str(t) for t in tags],
            config_json,
            os.fspath(root) if root is not None else None,
            bool(disabled),
            None if resume is None else str(resume),
        )
        self.seed_images = bool(seed_images)
        self._errors: list = []
        self._warned: set = set()
        self._notes: list = []
        self._lock = threading.Lock()
        self._tokens: list = []
        self._environment_logged = False
        self._finished = False
        self._forked = False
        _open_runs.add(self)

    @property
    def id(self) -> Optional[str]:
        """The run id (``None`` when recording is disabled)."""
        return self._recorder.run_id

    @property
    def dir(self) -> Optional[str]:
        """The run directory (``None`` when recording is disabled)."""
        d = self._recorder.dir
        return None if d is None else os.fspath(d)

    @property
    def recording(self) -> bool:
        """Whether calls are being recorded."""
        return self._recorder.recording and not self._finished

    def log_config(self, config: Dict[str, Any]) -> None:
        """Merges run-level config over what was recorded before."""
        self._recorder.log_config(json.dumps(describe(config)))

    def call(self, pipeline: Any, *args: Any, **kwargs: Any) -> Any:
        """Calls ``pipeline(*args, **kwargs)`` and records the call into
        this run, whatever run is active elsewhere."""
        from . import _hook

        token = _context_run.set(self)
        try:
            return _hook.install().call(pipeline, args, kwargs)
        finally:
            _context_run.reset(token)

    def flush(self) -> None:
        """Waits until everything recorded so far is on disk."""
        self._recorder.flush()

    def finish(self, error: Optional[str] = None, *, crashed: bool = False) -> None:
        """Ends the run (failed, with ``error``'s text, if given; crashed,
        when the program is dying of ``error``) and waits until it is
        durable. A second call does nothing."""
        global _autolog_run
        with self._lock:
            if self._finished:
                return
            self._finished = True
        with _autolog_lock:
            if _autolog_run is self:
                _autolog_run = None
        self._recorder.finish(error, crashed and error is not None)

    def __enter__(self) -> "Run":
        from . import _hook

        _hook.install()
        self._tokens.append(_context_run.set(self))
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if self._tokens:
            _context_run.reset(self._tokens.pop())
        self.finish(None if value is None else f"{kind.__name__}: {value}")

    def _note(self, text: str) -> None:
        """Something the run should say about a call that is not an error
        (a media kind not stored yet): kept in the config's ``notes``."""
        with self._lock:
            self._notes.append(text)
            notes = list(self._notes[-50:])
        try:
            self._recorder.log_config(json.dumps({"notes": notes}))
        except Exception as e:
            log.warning("difflog: %s", e)

    def _abandon_after_fork(self) -> None:
        """In a forked child: this process records nothing into the run
        (its writer threads stayed in the parent), and lets go of the
        run's event log, whose lock it inherited -- holding it would make
        the parent's run look live for as long as the child lives. Closing
        the inherited descriptors does not release the parent's lock."""
        self._forked = True
        self._finished = True
        self._warned = set()
        # A lock some thread of the parent held at the fork stays held here.
        self._lock = threading.Lock()
        self._recorder.abandon_after_fork()
        d = self.dir
        if d is not None:
            _close_inherited(os.path.join(d, "events.log"))

    def _warn_once(self, key: str, text: str) -> None:
        """A warning about how a call was recorded, once per kind."""
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(text, RuntimeWarning, stacklevel=4)

    def _report(self, what: str, error: BaseException) -> None:
        """A recording problem: warned once, logged, and kept in the run's
        config (``recording_errors``); never raised into the caller."""
        text = f"{what}: {type(error).__name__}: {error}"
        log.warning("difflog: %s", text)
        with self._lock:
            first = not self._errors
            self._errors.append(text)
            errors = list(self._errors[-20:])
        if first:
            warnings.warn(
                f"difflog could not record a pipeline call ({text}); the call's "
                "output is returned untouched. Further problems go to the "
                "'difflog' logger.",
                RuntimeWarning,
                stacklevel=3,
            )
        try:
            self._recorder.log_config(json.dumps({"recording_errors": errors}))
        except Exception:  # the run itself cannot be written: warned above
            pass


def autolog(
    init: Optional[InitArgs] = None,
    root: Union[str, "os.PathLike[str]", None] = None,
    *,
    seed_images: bool = False,
) -> Run:
    """Starts a run and records every diffusers pipeline call into it, as
    ``wandb.integration.diffusers.autolog(init=...)`` does. ``init`` takes
    ``project``, ``name``, ``tags``, ``config`` and ``resume`` (a run id:
    see :class:`Run`). Returns the run; it
    finishes on :func:`finish` or at interpreter exit (crashed, with the
    exception, when an uncaught exception ends the program).
    ``seed_images``: see :class:`Run`. Raises if an autolog run is already
    active."""
    global _autolog_run
    from . import _hook

    _hook.install()
    given: Dict[str, Any] = dict(init or {})
    unknown = set(given) - {"project", "name", "tags", "config", "resume"}
    if unknown:
        raise TypeError(f"autolog(init=...): unknown keys {sorted(unknown)}")
    with _autolog_lock:
        if _autolog_run is not None and not _autolog_run._forked:
            raise RuntimeError(
                f"difflog.autolog is already active (run {_autolog_run.id}); "
                "call difflog.finish() first"
            )
        _autolog_run = Run(
            project=given.get("project") or "diffusers_logging",
            name=given.get("name"),
            tags=given.get("tags") or (),
            config=given.get("config"),
            root=root,
            seed_images=seed_images,
            resume=given.get("resume"),
        )
        return _autolog_run


def finish() -> None:
    """Finishes the autolog run, if one is active."""
    run = _autolog_run
    if run is not None:
        run.finish()


def active_run() -> Optional[Run]:
    """The run a hooked pipeline call would record into now, if any."""
    return _context_run.get() or _autolog_run


def _close_inherited(path: str) -> None:
    """Closes this process's descriptors of ``path`` (Linux: /proc)."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == path:
                os.close(int(fd))
        except (OSError, ValueError):
            pass


def _after_fork_in_child() -> None:
    global _autolog_lock
    _autolog_lock = threading.Lock()
    for run in list(_open_runs):
        try:
            run._abandon_after_fork()
        except Exception as e:  # never the child's problem
            log.warning("difflog: %s", e)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# The exception that is ending the program, if one is: set by the hook
# below, which then hands it on to the hook that was there before.
_dying_of: Optional[str] = None
_previous_excepthook = sys.excepthook


def _excepthook(kind: Any, value: Any, tb: Any) -> None:
    global _dying_of
    _dying_of = f"{getattr(kind, '__name__', kind)}: {value}"
    _previous_excepthook(kind, value, tb)


sys.excepthook = _excepthook


@atexit.register
def _finish_at_exit() -> None:
    # An uncaught exception ends the program: its runs end crashed, with it.
    for run in list(_open_runs):
        try:
            run.finish(_dying_of, crashed=True)
        except Exception as e:  # nobody is left to raise it to
            log.error("difflog: %s", e)
