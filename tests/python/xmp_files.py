"""Images carrying XMP as exiv2 writes it (through pyexiv2 2.16, exiv2
0.28: the XMP toolkit darktable, GIMP and digiKam use), in PNG (iTXt
`XML:com.adobe.xmp`), JPEG (APP1) and WebP (`XMP ` chunk), with the
properties a generative image carries by IPTC's rules: the digital source
type, the creator tool, a title and a description in two languages, and
its creators. Prints, per file, what exiv2 reads back (the oracle); with
--read, only what exiv2 reads from the files given (difflog's own PNGs).

    usage: python xmp_files.py OUT_DIR
           python xmp_files.py --read FILE...
"""

import json
import os
import sys

import pyexiv2
from PIL import Image

PROPERTIES = {
    "Xmp.iptcExt.DigitalSourceType":
        "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
    "Xmp.xmp.CreatorTool": "Image Creator & Co 2.1",
    "Xmp.dc.description": {'lang="x-default"': "a lighthouse at dusk <oil>", 'lang="de-DE"': "ein Leuchtturm"},
    "Xmp.dc.title": {'lang="x-default"': "Lighthouse \u00e9t\u00e9"},
    "Xmp.dc.creator": ["Ann", "Bo"],
}


def read(path):
    with pyexiv2.Image(path) as img:
        return img.read_xmp()


def main():
    if sys.argv[1] == "--read":
        for path in sys.argv[2:]:
            print(json.dumps({"file": path, "xmp": read(path)}, ensure_ascii=False))
        return
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for ext, fmt in (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")):
        path = os.path.join(out, f"xmp.{ext}")
        Image.new("RGB", (40, 30), (90, 120, 200)).save(path, format=fmt)
        with pyexiv2.Image(path) as img:
            img.modify_xmp(PROPERTIES)
        print(json.dumps({"file": os.path.basename(path), "xmp": read(path)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
