"""Types of difflog's extension module (python/src/lib.rs)."""

from os import PathLike
from typing import Dict, List, Optional, Sequence, Tuple, Union

__version__: str
NAMES: Dict[str, str]

def read_call(run_dir: Union[str, PathLike[str]], call: int) -> str: ...

class RecordingError(RuntimeError):
    """difflog could not record (the run directory cannot be written, or the run is finished)."""

class Image:
    """RGB pixels, 8 bits a channel: ``width * height * 3`` bytes, rows top to bottom."""
    def __init__(self, width: int, height: int, data: bytes) -> None: ...
    @staticmethod
    def from_pil(image: object) -> Optional["Image"]: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...

class Generated:
    """A generated image, its caption and recipe (``{"prompt", "negative_prompt", "prompt_2", "negative_prompt_2", "prompt_3", "negative_prompt_3", "seed"}`` as JSON)."""
    def __init__(self, image: Image, caption: Optional[str] = None, recipe_json: Optional[str] = None) -> None: ...

class Video:
    """A generated video: its frames (all of the first's size), the rate they play at, where that rate came from, and its caption."""
    def __init__(self, frames: Sequence[Image], fps: float, fps_from: Optional[str] = None, caption: Optional[str] = None, generated: bool = True) -> None: ...
    def mp4(self) -> bytes:
        """The MP4 the recorder keeps of these frames (the same frames give the same bytes)."""
    @property
    def frames(self) -> int: ...

Cell = Union[None, bool, int, float, str, Image, Generated, Video]

class Call:
    """A call being recorded: ``row`` per image, then ``finish``."""
    @property
    def number(self) -> int: ...
    def row(self, index: int, cells: Sequence[Tuple[str, Cell]]) -> None: ...
    def finish(self, error: Optional[str] = None, timings: Dict[str, float] = ...) -> None: ...

class Recorder:
    """One run directory being recorded by difflog's Rust recorder."""
    def __init__(
        self,
        project: str,
        name: Optional[str] = None,
        tags: List[str] = ...,
        config_json: Optional[str] = None,
        root: Union[str, PathLike[str], None] = None,
        disabled: bool = False,
        resume: Optional[str] = None,
    ) -> None: ...
    @property
    def run_id(self) -> Optional[str]: ...
    @property
    def dir(self) -> Optional[str]: ...
    @property
    def recording(self) -> bool: ...
    def log_config(self, config_json: str) -> None: ...
    def begin_call(self, info_json: str, params_json: str, seeds: List[int], columns: List[str]) -> Call: ...
    def abandon_after_fork(self) -> None: ...
    def flush(self) -> None: ...
    def finish(self, error: Optional[str] = None, crashed: bool = False) -> None: ...
