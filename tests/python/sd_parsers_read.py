"""What sd-parsers (the independent reader, PyPI `sd-parsers`) reads from
each PNG given: one JSON object per line, keyed by file name.

    usage: python sd_parsers_read.py FILE...
"""

import json
import os
import sys

from sd_parsers import Eagerness, ParserManager
from sd_parsers.extractors import _jpeg_usercomment


def main():
    manager = ParserManager()
    # The copy NovelAI hides in the alpha channel is read only when asked
    # to look hard (sd-parsers 0.6's `EAGER`).
    eager = ParserManager(eagerness=Eagerness.EAGER)
    for path in sys.argv[1:]:
        # sd-parsers 0.6 keeps the last JPEG/WebP UserComment in a module
        # global keyed by id(image); Python reuses an id once an image is
        # freed, so a later file could be given an earlier file's text.
        # Each file starts with that cache cleared.
        _jpeg_usercomment._image_id = None
        info = (eager if "alpha" in os.path.basename(path) else manager).parse(path)
        out = {"file": os.path.basename(path), "read": info is not None}
        if info is not None:
            sampler = info.samplers[0] if info.samplers else None
            model = sampler.model if sampler else None
            out.update({
                "generator": info.generator.value,
                "prompt": "\n".join(p.value for p in sampler.prompts) if sampler else None,
                "negative_prompt": "\n".join(p.value for p in sampler.negative_prompts) if sampler else None,
                "sampler": sampler.name if sampler else None,
                "params": sampler.parameters if sampler else {},
                "model": model.name if model else None,
                "model_hash": model.hash if model else None,
                "size": info.metadata.get("Size"),
            })
        print(json.dumps(out, default=str, ensure_ascii=False))


if __name__ == "__main__":
    main()
