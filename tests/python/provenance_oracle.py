"""The independent checks of the marks difflog puts on its images (issue
36): the CAI's own SDK (c2pa-python) validates the C2PA manifest under a
test CA, and the `invisible-watermark` package (what diffusers' SDXL
pipelines use) decodes the watermark.

    usage: python provenance_oracle.py ca OUT_DIR
             writes root.pem, other-root.pem, chain.pem and key.pem (mode
             0600): an ES256 signer under a test CA made as c2pa_files.py
             makes it
           python provenance_oracle.py check ROOT_PEM BITS FILE...
             prints one JSON line per file: what c2pa-python reads (null
             without a manifest) and the BITS-long message
             invisible-watermark decodes (null for an image it refuses)
           python provenance_oracle.py edit IN OUT_DIR
             writes tampered.png (one pixel byte changed, the file
             otherwise the same) and resized.png (scaled to 5/4 by PIL)
"""

import io
import json
import os
import sys

import c2pa
import cv2
from imwatermark import WatermarkDecoder
from PIL import Image

from c2pa_files import PEM, leaf, oracle, root, tamper


def make_ca(out):
    os.makedirs(out, exist_ok=True)
    ca_key, ca_cert = root("Difflog Test")
    _, other = root("Somebody Else")
    with open(os.path.join(out, "root.pem"), "wb") as f:
        f.write(ca_cert.public_bytes(PEM))
    with open(os.path.join(out, "other-root.pem"), "wb") as f:
        f.write(other.public_bytes(PEM))
    chain, key = leaf(ca_key, ca_cert, "Difflog Test", "difflog test signer")
    with open(os.path.join(out, "chain.pem"), "wb") as f:
        f.write(chain)
    fd = os.open(os.path.join(out, "key.pem"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)


def credentials(data, anchors):
    settings = c2pa.Settings.from_dict({"verify": {"remote_manifest_fetch": False}})
    try:
        with c2pa.Reader(io.BytesIO(data), context=c2pa.Context(settings=settings)) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError as e:
        if "ManifestNotFound" in str(e) or "JumbfNotFound" in str(e):
            return None
        return {"error": str(e)}
    found = oracle(data, anchors)
    m = store["manifests"][store["active_manifest"]]
    for a in m.get("assertions", []):
        if a["label"] == "org.difflog.recipe":
            found["recipe"] = a["data"]
        if a["label"].startswith("c2pa.actions"):
            found["software_agents"] = [x.get("softwareAgent") for x in a["data"]["actions"]]
    return found


def watermark(path, bits):
    img = cv2.imread(path)
    if img is None or img.shape[0] * img.shape[1] < 256 * 256:
        return None
    got = WatermarkDecoder("bits", bits).decode(img, "dwtDct")
    return "".join("1" if b else "0" for b in got)


def check(anchors_path, bits, files):
    with open(anchors_path) as f:
        anchors = f.read()
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        print(json.dumps({"file": os.path.basename(path), "c2pa": credentials(data, anchors),
                          "watermark": watermark(path, bits)}))


def edit(src, out):
    with open(src, "rb") as f:
        data = f.read()
    with open(os.path.join(out, "tampered.png"), "wb") as f:
        f.write(tamper(data))
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img.resize((img.width * 5 // 4, img.height * 5 // 4), Image.BICUBIC).save(
        os.path.join(out, "resized.png"))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "ca":
        make_ca(sys.argv[2])
    elif mode == "check":
        check(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    elif mode == "edit":
        edit(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
