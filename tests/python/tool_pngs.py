"""PNGs with generation metadata written the way each tool writes it
(issue 35), each writer following its tool's own source at the version
named beside it, and what each file says (the values handed to the
writer) in `expected.json`:

- ComfyUI (nodes.py `SaveImage.save_images`, commit e60e19b): PngInfo
  `add_text("prompt", json.dumps(prompt))`, then each `extra_pnginfo` key
  (the frontend sends `workflow`) as `json.dumps`; compress_level 4. The
  API graph is ComfyUI's `script_examples/basic_api_example.py` graph; the
  `workflow` is the LiteGraph serialisation the frontend sends (nodes,
  links as `[id, from node, from slot, to node, to slot, type]`).
- AUTOMATIC1111 (`processing.create_infotext` and
  `images.save_image_with_geninfo`, v1.10): the prompt, `Negative prompt:`
  line, then `Key: value` pairs joined with ", ", values with a comma,
  colon or line break JSON-quoted (`infotext_utils.quote`), as the
  `parameters` text chunk; Forge (70d6e10) the same with its `f…` version.
- Fooocus (v2.5.5 `modules/meta_parser.py`, `private_logger.log`):
  `parameters` = `json.dumps(dict(sorted(...)))` of its scheme, then
  `fooocus_scheme` = "fooocus".
- InvokeAI (6.14 `image_files_disk.py`, `CoreMetadataInvocation`):
  `invokeai_metadata` = pydantic's compact JSON (no spaces), fields in
  declaration order, `app_version` last; compress_level 1.
- SwarmUI (062407c, `T2IParamInput.GenRawMetadata`, ImageSharp): an
  uncompressed tEXt `parameters` holding Newtonsoft's indented JSON
  (two-space indent, non-ASCII escaped) with `sui_image_params`.
- AUTOMATIC1111's JPEG and WebP (`images.save_image_with_geninfo`, v1.10):
  the image saved, then `piexif.insert` of `piexif.dump({"Exif":
  {UserComment: piexif.helper.UserComment.dump(geninfo,
  encoding="unicode")}})` (piexif 1.1.3: "UNICODE\0" and UTF-16BE).
- Fooocus's JPEG (v2.5.5 `private_logger.log`): `image.getexif()` with
  0x9286 (UserComment) the parameters, 0x927C (MakerNote) the scheme,
  0x0131 (Software) "Fooocus v2.5.5", saved with `exif=`.
- NovelAI: `Title`, `Description` (the prompt), `Software` "NovelAI",
  `Source` (model and hash), `Comment` (JSON) — the chunk set sd-parsers'
  NovelAI parser and its test images use.

    usage: python tool_pngs.py OUT_DIR
"""

import json
import os
import sys

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def picture(seed):
    """A small deterministic picture (the metadata is what matters)."""
    img = Image.new("RGB", (64, 48))
    img.putdata([((x * 4 + seed) % 256, (y * 5) % 256, (seed * 37) % 256) for y in range(48) for x in range(64)])
    return img


def save(out, name, chunks, expected, compress_level=6, seed=0):
    info = PngInfo()
    for key, text in chunks:
        info.add_text(key, text)  # tEXt when Latin-1, else iTXt: what every Python tool does
    picture(seed).save(os.path.join(out, name), pnginfo=info, compress_level=compress_level)
    return name, expected


# ComfyUI's output slot types, for the workflow's links.
SLOT_TYPES = {
    "CheckpointLoaderSimple": ["MODEL", "CLIP", "VAE"],
    "CLIPTextEncode": ["CONDITIONING"],
    "EmptyLatentImage": ["LATENT"],
    "KSampler": ["LATENT"],
    "VAEDecode": ["IMAGE"],
    "LoraLoader": ["MODEL", "CLIP"],
}


def litegraph(prompt):
    """The frontend's `workflow` for an API graph: nodes and links."""
    links, nodes = [], []
    for node_id in sorted(prompt, key=int):
        node = prompt[node_id]
        inputs = []
        for slot, (name, value) in enumerate(node["inputs"].items()):
            if isinstance(value, list):
                src, src_slot = value
                kind = SLOT_TYPES[prompt[src]["class_type"]][src_slot]
                links.append([len(links) + 1, int(src), src_slot, int(node_id), slot, kind])
                inputs.append({"name": name, "type": kind, "link": len(links)})
        widgets = [v for v in node["inputs"].values() if not isinstance(v, list)]
        nodes.append({"id": int(node_id), "type": node["class_type"], "pos": [0, 0], "size": [300, 100],
                      "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs,
                      "outputs": [{"name": t, "type": t, "links": []} for t in SLOT_TYPES.get(node["class_type"], [])],
                      "properties": {}, "widgets_values": widgets})
    return {"last_node_id": max(int(k) for k in prompt), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def comfyui(out):
    prompt = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 8566257, "steps": 20, "cfg": 8, "sampler_name": "euler",
                                                    "scheduler": "normal", "denoise": 1, "model": ["4", 0],
                                                    "positive": ["6", 0], "negative": ["7", 0],
                                                    "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "masterpiece best quality girl, \u00e9t\u00e9",
                                                          "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "bad hands", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    base = {"tool": "ComfyUI", "prompt": "masterpiece best quality girl, \u00e9t\u00e9",
                "negative_prompt": "bad hands", "seed": 8566257, "steps": 20, "cfg": 8.0, "sampler": "euler",
                "scheduler": "normal", "width": 512, "height": 512,
                "model": "v1-5-pruned-emaonly.safetensors", "denoise": 1.0}
    yield save(out, "ComfyUI_00001_.png",
               [("prompt", json.dumps(prompt)), ("workflow", json.dumps(litegraph(prompt)))],
               base, compress_level=4, seed=1)
    # The same with two LoRAs between the checkpoint and the sampler.
    lora = json.loads(json.dumps(prompt))
    lora["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                          "lora_name": "add_detail.safetensors",
                                                          "strength_model": 0.6, "strength_clip": 1.0}}
    lora["11"] = {"class_type": "LoraLoader", "inputs": {"model": ["10", 0], "clip": ["10", 1],
                                                          "lora_name": "film.safetensors",
                                                          "strength_model": 1.0, "strength_clip": 1.0}}
    lora["3"]["inputs"]["model"] = ["11", 0]
    lora["6"]["inputs"]["clip"] = ["11", 1]
    lora["7"]["inputs"]["clip"] = ["11", 1]
    expected = dict(base, loras=[{"name": "add_detail.safetensors", "weight": 0.6},
                                     {"name": "film.safetensors", "weight": 1.0}])
    yield save(out, "ComfyUI_00002_.png",
               [("prompt", json.dumps(lora)), ("workflow", json.dumps(litegraph(lora)))],
               expected, compress_level=4, seed=2)
    # A batch of two: one graph (batch_size 2, one seed), two files.
    batch = json.loads(json.dumps(prompt))
    batch["5"]["inputs"]["batch_size"] = 2
    batch["3"]["inputs"]["seed"] = 77
    expected = dict(base, seed=77)
    for n in (3, 4):
        yield save(out, f"ComfyUI_0000{n}_.png",
                   [("prompt", json.dumps(batch)), ("workflow", json.dumps(litegraph(batch)))],
                   expected, compress_level=4, seed=10 + n)


def quote(text):
    """A1111's infotext_utils.quote."""
    text = str(text)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def infotext(prompt, negative, params):
    """A1111's create_infotext: the last lines."""
    settings = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative_text = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{settings}".strip()


def a1111(out):
    prompt = "a cat in a hat, <lora:film_grain:0.8>\nstudio light"
    params = {"Steps": 28, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 6.5,
              "Seed": 1234567890, "Size": "768x512", "Model hash": "6ce0161689",
              "Model": "v1-5-pruned-emaonly", "Denoising strength": None,
              "Lora hashes": "film_grain: 9d1b0b3e", "Version": "v1.10.1"}
    expected = {"tool": "AUTOMATIC1111", "tool_version": "v1.10.1", "prompt": prompt,
                "negative_prompt": "blurry, lowres", "seed": 1234567890, "steps": 28, "cfg": 6.5,
                "sampler": "DPM++ 2M", "scheduler": "Karras", "width": 768, "height": 512,
                "model": "v1-5-pruned-emaonly", "model_hash": "6ce0161689",
                "loras": [{"name": "film_grain", "weight": 0.8, "hash": "9d1b0b3e"}]}
    yield save(out, "00000-1234567890.png", [("parameters", infotext(prompt, "blurry, lowres", params))],
               expected, seed=3)
    # Forge: the same function, its own version; a prompt that is not Latin-1 (iTXt).
    params = {"Steps": 20, "Sampler": "Euler", "Schedule type": "Simple", "CFG scale": 1,
              "Distilled CFG Scale": 3.5, "Seed": 42, "Size": "1024x1024", "Model hash": "bea01d51bd",
              "Model": "flux1-dev-bnb-nf4-v2", "Version": "f2.0.1v1.10.1-previous-669-gdfdcbab6",
              "Diffusion in Low Bits": "Automatic (fp16 LoRA)"}
    expected = {"tool": "Forge", "tool_version": "f2.0.1v1.10.1-previous-669-gdfdcbab6",
                "prompt": "\u732b\u3068\u5e3d\u5b50", "seed": 42, "steps": 20, "cfg": 1.0, "sampler": "Euler",
                "scheduler": "Simple", "width": 1024, "height": 1024, "model": "flux1-dev-bnb-nf4-v2",
                "model_hash": "bea01d51bd"}
    yield save(out, "00001-42.png", [("parameters", infotext("\u732b\u3068\u5e3d\u5b50", "", params))],
               expected, seed=4)


def fooocus(out):
    res = {"prompt": "a lighthouse at dusk", "negative_prompt": "", "prompt_expansion": "a lighthouse at dusk, glowing",
           "styles": "['Fooocus V2', 'Fooocus Enhance']", "performance": "Speed", "steps": 30,
           "resolution": "(1152, 896)", "guidance_scale": 4.0, "sharpness": 2.0,
           "adm_guidance": "(1.5, 0.8, 0.3)", "base_model": "juggernautXL_v8Rundiffusion",
           "refiner_model": "None", "refiner_switch": 0.5, "sampler": "dpmpp_2m_sde_gpu",
           "scheduler": "karras", "vae": "Default (model)", "seed": "3074918239",
           "lora_combined_1": "sd_xl_offset_example-lora_1.0 : 0.1", "metadata_scheme": "fooocus",
           "version": "Fooocus v2.5.5", "full_prompt": ["a lighthouse at dusk, glowing"], "full_negative_prompt": [],
           "base_model_hash": "aeb7e9e689",
           "loras": [["sd_xl_offset_example-lora_1.0", 0.1, "4852686128"]]}
    expected = {"tool": "Fooocus", "tool_version": "v2.5.5", "prompt": "a lighthouse at dusk",
                "seed": 3074918239, "steps": 30, "cfg": 4.0, "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras",
                "width": 1152, "height": 896, "model": "juggernautXL_v8Rundiffusion", "model_hash": "aeb7e9e689",
                "loras": [{"name": "sd_xl_offset_example-lora_1.0", "weight": 0.1, "hash": "4852686128"}]}
    yield save(out, "2026-12-05_18-00-00_1234.png",
               [("parameters", json.dumps(dict(sorted(res.items())))), ("fooocus_scheme", "fooocus")],
               expected, seed=5)


def invokeai(out):
    meta = {"generation_mode": "sdxl_txt2img", "positive_prompt": "a red fox in snow", "negative_prompt": "",
            "width": 1024, "height": 1024, "seed": 42, "rand_device": "cpu", "cfg_scale": 7.5,
            "cfg_rescale_multiplier": 0, "steps": 30, "scheduler": "euler",
            "model": {"key": "c3f1", "hash": "blake3:9a4e", "name": "Juggernaut XL", "base": "sdxl", "type": "main"},
            "loras": [{"model": {"key": "d1", "hash": "blake3:77aa", "name": "pixel-art", "base": "sdxl", "type": "lora"},
                       "weight": 0.75}],
            "app_version": "6.14.0-alpha"}
    expected = {"tool": "InvokeAI", "tool_version": "6.14.0-alpha", "prompt": "a red fox in snow", "seed": 42,
                "steps": 30, "cfg": 7.5, "scheduler": "euler", "width": 1024, "height": 1024,
                "model": "Juggernaut XL", "model_hash": "blake3:9a4e",
                "loras": [{"name": "pixel-art", "weight": 0.75, "hash": "blake3:77aa"}]}
    yield save(out, "5e1f4c8a-6b0e-4f3c-9d1a-2b7c8e9f0a1b.png",
               [("invokeai_metadata", json.dumps(meta, separators=(",", ":"), ensure_ascii=False))],
               expected, compress_level=1, seed=6)


def swarmui(out):
    params = {"prompt": "a castle on a hill", "negativeprompt": "fog", "model": "OfficialStableDiffusion/sd_xl_base_1.0",
              "seed": 12345, "steps": 20, "cfgscale": 7.0, "aspectratio": "1:1", "width": 1024, "height": 1024,
              "sampler": "euler", "scheduler": "normal", "swarm_version": "0.9.6.2"}
    expected = {"tool": "SwarmUI", "tool_version": "0.9.6.2", "prompt": "a castle on a hill",
                "negative_prompt": "fog", "seed": 12345, "steps": 20, "cfg": 7.0, "sampler": "euler",
                "scheduler": "normal", "width": 1024, "height": 1024,
                "model": "OfficialStableDiffusion/sd_xl_base_1.0"}
    text = json.dumps({"sui_image_params": params, "sui_extra_data": {"date": "2026-12-05", "prep_time": "0.01 sec"}},
                      indent=2, ensure_ascii=True)
    yield save(out, "1830001-a castle on a hill-sd_xl_base_1.0.png", [("parameters", text)], expected,
               compress_level=1, seed=7)


def exif_files(out):
    import piexif
    import piexif.helper

    prompt = "a watercolor fox, <lora:wc:0.5>"
    params = {"Steps": 24, "Sampler": "Euler a", "Schedule type": "Automatic", "CFG scale": 5,
              "Seed": 987654321, "Size": "64x48", "Model hash": "31e35c80fc", "Model": "sd_xl_base_1.0",
              "Version": "v1.10.1"}
    expected = {"tool": "AUTOMATIC1111", "tool_version": "v1.10.1", "prompt": prompt, "negative_prompt": "muddy",
                "seed": 987654321, "steps": 24, "cfg": 5.0, "sampler": "Euler a", "scheduler": "Automatic",
                "width": 64, "height": 48, "model": "sd_xl_base_1.0", "model_hash": "31e35c80fc",
                "loras": [{"name": "wc", "weight": 0.5}]}
    geninfo = infotext(prompt, "muddy", params)
    for name, fmt in (("00002-987654321.jpg", "JPEG"), ("00003-987654321.webp", "WEBP")):
        path = os.path.join(out, name)
        picture(9).save(path, format=fmt, quality=80, lossless=False)
        exif_bytes = piexif.dump({"Exif": {piexif.ExifIFD.UserComment:
                                           piexif.helper.UserComment.dump(geninfo, encoding="unicode")}})
        piexif.insert(exif_bytes, path)
        yield name, expected
    res = {"prompt": "a paper boat", "negative_prompt": "", "steps": 30, "resolution": "(64, 48)",
           "guidance_scale": 4.0, "base_model": "juggernautXL_v8Rundiffusion", "base_model_hash": "aeb7e9e689",
           "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras", "seed": "555", "metadata_scheme": "fooocus",
           "version": "Fooocus v2.5.5", "loras": []}
    img = picture(10)
    exif = img.getexif()
    exif[0x9286] = json.dumps(dict(sorted(res.items())))
    exif[0x927C] = "fooocus"
    exif[0x0131] = "Fooocus v2.5.5"
    img.save(os.path.join(out, "2026-12-05_18-00-01_5678.jpg"), quality=95, optimize=True, progressive=True,
             exif=exif)
    yield "2026-12-05_18-00-01_5678.jpg", {"tool": "Fooocus", "tool_version": "v2.5.5", "prompt": "a paper boat",
                                           "seed": 555, "steps": 30, "cfg": 4.0, "width": 64, "height": 48,
                                           "model": "juggernautXL_v8Rundiffusion", "model_hash": "aeb7e9e689"}


def novelai(out):
    comment = {"prompt": "1girl, cherry blossoms", "steps": 28, "height": 832, "width": 1216, "scale": 5.0,
               "uncond_scale": 1.0, "cfg_rescale": 0.0, "seed": 2283921781, "n_samples": 1, "strength": 0.7,
               "noise": 0.0, "noise_schedule": "native", "sampler": "k_euler_ancestral",
               "uc": "lowres, bad anatomy"}
    expected = {"tool": "NovelAI", "prompt": "1girl, cherry blossoms", "negative_prompt": "lowres, bad anatomy",
                "seed": 2283921781, "steps": 28, "cfg": 5.0, "sampler": "k_euler_ancestral",
                "scheduler": "native", "width": 1216, "height": 832, "model": "Stable Diffusion XL",
                "model_hash": "C1E1DE52", "denoise": 0.7}
    chunks = [("Title", "AI generated image"), ("Description", "1girl, cherry blossoms"),
              ("Software", "NovelAI"), ("Source", "Stable Diffusion XL C1E1DE52"),
              ("Comment", json.dumps(comment))]
    # NovelAI writes both copies: the text chunks and the one in the alpha
    # channel. A service that re-saves the pixels keeps only the latter.
    image = hide_in_alpha(picture(8), chunks)
    info = PngInfo()
    for key, text in chunks:
        info.add_text(key, text)
    image.save(os.path.join(out, "novelai.png"), "PNG", pnginfo=info)
    yield "novelai.png", expected
    image.save(os.path.join(out, "novelai-alpha.png"), "PNG")
    yield "novelai-alpha.png", dict(expected, hidden_copy="stealth_pngcomp")


def hide_in_alpha(img, chunks):
    """The copy of its text chunks NovelAI hides in the alpha channel, laid
    out as NovelAI's own writer does (novelai-image-metadata,
    nai_meta_writer.py, 2026-02): the chunks but Title as a JSON object,
    gzip-compressed (time stamp 0 here, so the fixture is the same each
    run), after the signature `stealth_pngcomp` and the payload's length in
    bits (32-bit big-endian); one bit per pixel in the alpha's lowest bit,
    most significant bit first, pixels column by column; every other alpha
    value 255, the data pixels' 254 or 255; red, green and blue untouched."""
    import gzip
    import numpy as np

    data = {key: text for key, text in chunks if key != "Title"}
    payload = gzip.compress(json.dumps(data).encode("utf-8"), mtime=0)
    stream = b"stealth_pngcomp" + (len(payload) * 8).to_bytes(4, "big") + payload
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8))
    rgba = np.array(img.convert("RGBA"))
    columns = np.full(rgba.shape[1] * rgba.shape[0], 0xFF, dtype=np.uint8)
    columns[:len(bits)] = 0xFE | bits
    rgba[..., 3] = columns.reshape(rgba.shape[1], rgba.shape[0]).T
    return Image.fromarray(rgba, "RGBA")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    expected = {}
    for writer in (comfyui, a1111, fooocus, invokeai, swarmui, novelai, exif_files):
        for name, values in writer(out):
            expected[name] = values
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
