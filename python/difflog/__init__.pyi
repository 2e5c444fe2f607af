"""The public API of difflog's Python package (see __init__.py)."""

from os import PathLike
from typing import Any, Dict, Iterable, Optional, TypedDict, Union

from ._native import RecordingError as RecordingError

__version__: str

class InitArgs(TypedDict, total=False):
    """``autolog(init=...)``, as W&B's ``init``."""

    project: str
    name: str
    tags: Iterable[str]
    config: Dict[str, Any]

class Run:
    seed_images: bool
    def __init__(
        self,
        project: str = "diffusers_logging",
        name: Optional[str] = None,
        tags: Iterable[str] = (),
        config: Optional[Dict[str, Any]] = None,
        root: Union[str, PathLike[str], None] = None,
        *,
        seed_images: bool = True,
        disabled: bool = False,
    ) -> None: ...
    @property
    def id(self) -> Optional[str]: ...
    @property
    def dir(self) -> Optional[str]: ...
    @property
    def recording(self) -> bool: ...
    def log_config(self, config: Dict[str, Any]) -> None: ...
    def call(self, pipeline: Any, *args: Any, **kwargs: Any) -> Any: ...
    def flush(self) -> None: ...
    def finish(self, error: Optional[str] = None) -> None: ...
    def __enter__(self) -> "Run": ...
    def __exit__(self, kind: Any, value: Any, tb: Any) -> None: ...

def autolog(
    init: Optional[InitArgs] = None,
    root: Union[str, PathLike[str], None] = None,
    *,
    seed_images: bool = True,
) -> Run: ...
def finish() -> None: ...
def active_run() -> Optional[Run]: ...
