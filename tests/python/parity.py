"""diffusers' side of the parity tests (issue 33), run by tests/python.rs.

    python parity.py CASES.json OUT.safetensors

CASES.json: {"cases": [...], "components": {...}}. Each case is one call
as `difflog generate` makes it — a diffusers-layout model folder (difflog's
tiny models are written as diffusers writes a pipeline), prompts, seed,
steps, guidance, size, scheduler, optional input image / mask / strength —
run here through diffusers' own pipeline, loaded with `from_pretrained`,
with one `torch.Generator("cpu").manual_seed(seed + i)` per image (as
`difflog generate --rng torch-cpu` draws). Written: `case{k}` the images
(N, H, W, 3, float32 in [0, 1], diffusers' `output_type="np"`), in
`case{k}_timesteps` the scheduler's timesteps (the base's, with a
refiner), and from the step callback of the (first) call, under the names
`difflog generate --trace` uses, `case{k}.image{i}.step{s}` image i's
latents after step s and `case{k}.image{i}.prompt_embeds` the text states
its prompt conditions the model with.

FLUX.1 cases (difflog's tiny FLUX folders, configs included) run
diffusers' `FluxPipeline` (`FluxImg2ImgPipeline` with an input image),
with T5's length from the folder's tokenizer config; SD3 / 3.5 cases
`StableDiffusion3Pipeline` (`StableDiffusion3Img2ImgPipeline`), T5's
length likewise, and the case's skip-layer guidance (`slg`: the layers,
scale, start and stop difflog records) when it has one.

"folders": diffusers pipelines made here with random weights and saved
with `save_pretrained` before the cases run (`sd`: tests/python/tiny.py's
SD pipeline, whose UNet, VAE and text encoder have no preset's sizes, with
a VAE that scales by 8 and its tokenizer saved in the fast format a `tokenizer.json` holds;
`sd2`: the same with SD 2.x's traits — v-prediction, linear projections,
per-block heads and transformer depths, a text encoder with exact GELU as
OpenCLIP's — and a trailing DDIM schedule), so that a
folder difflog did not write is built from its own configs; `sd3-medium`:
a copy of the folder `from` (difflog's tiny SD3, which is SD3.5
medium-shaped) whose transformer has SD3 medium's traits instead — no
second attentions, no q/k norms: those tensors dropped, its config saying
so; `sd3-saved`: an SD3 pipeline of no published model's sizes made with
diffusers' and transformers' classes and saved by `save_pretrained` (the
tokenizers of the folder `from`), which difflog builds from its configs;
`flux-saved`: the same for FLUX.1.

"components": one model folder and the seed of fixed random inputs; each
module is run on them alone: `text` (the text encoder's last hidden state
for the tokenized prompt), `unet` (the UNet's prediction for random latents,
a timestep and random text states) and `vae` (the VAE's decoding of random
latents); inputs and outputs are written for Rust to run its own modules on
the same inputs.
"""

import json
import sys
import tempfile

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    EulerAncestralDiscreteScheduler,
    FluxImg2ImgPipeline,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusionImg2ImgPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image
from safetensors.torch import save_file

torch.set_num_threads(1)
SCHEDULERS = {
    "ddim": DDIMScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}


def run_case(c):
    pipe = DiffusionPipeline.from_pretrained(c["model"])
    if c.get("scheduler"):
        pipe.scheduler = SCHEDULERS[c["scheduler"]].from_config(pipe.scheduler.config)
    kw = {}
    if c.get("image"):
        kw["image"] = Image.open(c["image"]).convert("RGB")
        if c.get("mask"):
            kw["mask_image"] = Image.open(c["mask"]).convert("RGB")
        elif type(pipe).__name__ == "FluxPipeline":
            pipe = FluxImg2ImgPipeline.from_pipe(pipe)
        elif type(pipe).__name__ == "StableDiffusion3Pipeline":
            pipe = StableDiffusion3Img2ImgPipeline.from_pipe(pipe)
        elif "Inpaint" not in type(pipe).__name__:
            pipe = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
        if c.get("strength") is not None:
            kw["strength"] = c["strength"]
    if type(pipe).__name__.startswith("Flux"):
        # T5's length as difflog reads it from the folder (the tokenizer's
        # `model_max_length`); the pipeline's own default is 512.
        kw["max_sequence_length"] = pipe.tokenizer_2.model_max_length
    if type(pipe).__name__.startswith("StableDiffusion3"):
        kw["max_sequence_length"] = pipe.tokenizer_3.model_max_length
    if c.get("slg"):
        g = c["slg"]
        kw["skip_guidance_layers"] = g["layers"]
        kw["skip_layer_guidance_scale"] = g["scale"]
        kw["skip_layer_guidance_start"] = g["start"]
        kw["skip_layer_guidance_stop"] = g["stop"]
    n = len(c["prompt"]) * c["images_per_prompt"]

    def generators():
        return [torch.Generator("cpu").manual_seed(c["seed"] + i) for i in range(n)]

    common = dict(
        negative_prompt=[c["negative_prompt"]] * len(c["prompt"]) if c.get("negative_prompt") else None,
        num_images_per_prompt=c["images_per_prompt"],
        num_inference_steps=c["steps"],
        guidance_scale=c["guidance"],
    )
    refiner = c.get("refiner")
    trace = {}

    def on_step(_pipe, i, _t, tensors):
        # Each image's latents after step i and, once, the text states its
        # prompt conditions with (the second half of a guided batch).
        latents = tensors["latents"]
        n = latents.shape[0]
        for b in range(n):
            trace[f"image{b}.step{i}"] = latents[b : b + 1].float().clone()
        if i == 0:
            states = tensors["prompt_embeds"]
            guided = states.shape[0] == 2 * n
            for b in range(n):
                row = n + b if guided else b
                trace[f"image{b}.prompt_embeds"] = states[row : row + 1].float().clone()
        return {}

    kw["callback_on_step_end"] = on_step
    kw["callback_on_step_end_tensor_inputs"] = ["latents", "prompt_embeds"]
    out = pipe(
        c["prompt"],
        height=c["height"],
        width=c["width"],
        generator=generators(),
        output_type="latent" if refiner else "np",
        **common,
        **kw,
    )
    trace_timesteps = pipe.scheduler.timesteps.float()
    if refiner:
        # The base's latents to the refiner, which draws from fresh
        # generators of the same seeds (as difflog generate --refiner).
        ref = DiffusionPipeline.from_pretrained(refiner)
        if c.get("scheduler"):
            ref.scheduler = SCHEDULERS[c["scheduler"]].from_config(ref.scheduler.config)
        out = ref(c["prompt"], image=out.images, generator=generators(), output_type="np", **common)
        pipe = ref
    images = torch.from_numpy(np.ascontiguousarray(out.images, dtype=np.float32))
    # The first call's schedule (the base's, with a refiner), as it traced.
    timesteps = pipe.scheduler.timesteps.float() if not refiner else trace_timesteps
    return images, timesteps, trace


def components(c):
    pipe = DiffusionPipeline.from_pretrained(c["model"])
    g = torch.Generator("cpu").manual_seed(c["seed"])
    ids = pipe.tokenizer(
        c["prompt"], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    size = c["latent_size"]
    ch = pipe.unet.config.in_channels
    x = torch.randn((2, ch, size, size), generator=g)
    ctx = torch.randn((2, ids.shape[1], pipe.unet.config.cross_attention_dim), generator=g)
    z = torch.randn((1, pipe.vae.config.latent_channels, size, size), generator=g)
    t = torch.tensor(float(c["timestep"]))
    with torch.no_grad():
        text = pipe.text_encoder(ids)[0]
        unet = pipe.unet(x, t, encoder_hidden_states=ctx).sample
        vae = pipe.vae.decode(z).sample
    return {"ids": ids.to(torch.int64), "x": x, "ctx": ctx, "z": z, "t": t, "text": text, "unet": unet, "vae": vae}


def sd3_medium_shaped(source, path):
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(source, path)
    weights = f"{path}/transformer/diffusion_pytorch_model.safetensors"
    kept = {
        k: v
        for k, v in load_file(weights).items()
        if ".attn2." not in k and not any(f".{n}." in k for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"))
    }
    config_path = f"{path}/transformer/config.json"
    config = json.load(open(config_path))
    # A block with one attention modulates with 6 vectors, not 9: the
    # first 6 are the same ones (shift, scale, gate; shift, scale, gate).
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    for k, v in kept.items():
        if ".norm1.linear." in k and v.shape[0] == 9 * inner:
            kept[k] = v[: 6 * inner].contiguous()
    save_file(kept, weights)
    config["dual_attention_layers"] = []
    config["qk_norm"] = None
    json.dump(config, open(config_path, "w"), indent=2)


def _flow_vae(scaling_factor, shift_factor):
    # A small VAE as FLUX.1's and SD3's are made: scales by 8, no quant
    # convs, a shift factor; 4 latent channels.
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16, 16, 16], down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=8,
        layers_per_block=1, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=scaling_factor, shift_factor=shift_factor,
    )


def sd3_saved(source, path):
    # An SD3 pipeline of no published model's sizes, made with diffusers'
    # and transformers' own classes (random weights) and saved by
    # `save_pretrained`: more heads than blocks, patches of 1, 4 latent
    # channels, a second attention in its first block only, q/k norms, a
    # shift of 2. The tokenizers are those of `source` (difflog's tiny
    # SD3: the hub's are out of reach here).
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(3)
    clips = []
    for sub, act in (("text_encoder", "quick_gelu"), ("text_encoder_2", "gelu")):
        cfg = CLIPTextConfig.from_pretrained(f"{source}/{sub}")
        cfg.update(dict(hidden_size=12, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                        hidden_act=act, projection_dim=16))
        clips.append(CLIPTextModelWithProjection(cfg).eval())
    t5 = T5Config.from_pretrained(f"{source}/text_encoder_3")
    t5.update(dict(d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2))
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(
            sample_size=8, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8,
            num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32,
            pooled_projection_dim=32, out_channels=4, pos_embed_max_size=16,
            dual_attention_layers=(0,), qk_norm="rms_norm",
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0),
        vae=_flow_vae(1.5305, 0.0609),
        text_encoder=clips[0],
        text_encoder_2=clips[1],
        text_encoder_3=T5EncoderModel(t5).eval(),
        tokenizer=PreTrainedTokenizerFast.from_pretrained(f"{source}/tokenizer"),
        tokenizer_2=PreTrainedTokenizerFast.from_pretrained(f"{source}/tokenizer_2"),
        tokenizer_3=PreTrainedTokenizerFast.from_pretrained(f"{source}/tokenizer_3"),
    )
    pipe.save_pretrained(path)


def flux_saved(source, path):
    # A FLUX pipeline of no published model's sizes, made with diffusers'
    # and transformers' own classes (random weights) and saved by
    # `save_pretrained`: 2 heads of 16 with rotary axes 4 + 6 + 6, one block
    # of each kind, 4 latent channels, a guidance input, a dynamic shift of
    # its own range. The tokenizers are those of `source` (difflog's tiny
    # FLUX).
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(4)
    clip = CLIPTextConfig.from_pretrained(f"{source}/text_encoder")
    clip.update(dict(hidden_size=20, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2))
    t5 = T5Config.from_pretrained(f"{source}/text_encoder_2")
    t5.update(dict(d_model=24, d_kv=6, num_heads=4, d_ff=40, num_layers=2))
    pipe = FluxPipeline(
        transformer=FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=20,
            guidance_embeds=True, axes_dims_rope=(4, 6, 6),
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(
            use_dynamic_shifting=True, base_shift=0.3, max_shift=1.0, base_image_seq_len=16, max_image_seq_len=256
        ),
        vae=_flow_vae(0.3611, 0.1159),
        text_encoder=CLIPTextModel(clip).eval(),
        text_encoder_2=T5EncoderModel(t5).eval(),
        tokenizer=PreTrainedTokenizerFast.from_pretrained(f"{source}/tokenizer"),
        tokenizer_2=PreTrainedTokenizerFast.from_pretrained(f"{source}/tokenizer_2"),
    )
    pipe.save_pretrained(path)


def make_folder(kind, path, source=None):
    if kind == "sd3-medium":
        return sd3_medium_shaped(source, path)
    if kind == "sd3-saved":
        return sd3_saved(source, path)
    if kind == "flux-saved":
        return flux_saved(source, path)
    import tiny
    from transformers import CLIPTokenizerFast

    from diffusers import AutoencoderKL

    from diffusers import DDIMScheduler, UNet2DConditionModel

    assert kind in ("sd", "sd2"), kind
    pipe = tiny.sd()
    if kind == "sd2":
        # SD 2.x's traits: v-prediction, linear projections, heads and
        # transformer depths per block; a trailing schedule (as the Turbo
        # models').
        torch.manual_seed(2)
        pipe.unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=8,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=[2, 4],
            transformer_layers_per_block=[1, 2],
            use_linear_projection=True,
            norm_num_groups=16,
        )
        pipe.scheduler = DDIMScheduler.from_config(
            pipe.scheduler.config, prediction_type="v_prediction", timestep_spacing="trailing"
        )
        # SD 2.x's text encoder kind (OpenCLIP): exact GELU, read at its
        # last layer.
        from transformers import CLIPTextModel

        torch.manual_seed(5)
        pipe.text_encoder = CLIPTextModel(tiny._clip_config(hidden_act="gelu")).eval()
    # A VAE that scales by 8, as every Stable Diffusion VAE does (tiny.py's
    # scales by 2), with its own sizes.
    torch.manual_seed(1)
    pipe.vae = AutoencoderKL(
        block_out_channels=[16, 24, 24, 32],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    )
    slow = pipe.tokenizer
    with tempfile.TemporaryDirectory() as d:
        slow.save_pretrained(d)
        pipe.tokenizer = CLIPTokenizerFast.from_pretrained(d)
    pipe.save_pretrained(path)


def main():
    spec = json.load(open(sys.argv[1]))
    for f in spec.get("folders", []):
        make_folder(f["kind"], f["path"], f.get("from"))
    out = {}
    for k, c in enumerate(spec["cases"]):
        images, timesteps, trace = run_case(c)
        out[f"case{k}"] = images
        out[f"case{k}_timesteps"] = timesteps
        for name, t in trace.items():
            out[f"case{k}.{name}"] = t.contiguous()
    if spec.get("components"):
        for name, t in components(spec["components"]).items():
            out[f"components_{name}"] = t.contiguous()
    save_file(out, sys.argv[2])


if __name__ == "__main__":
    main()
