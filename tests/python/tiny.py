"""Tiny random-weight diffusers pipelines built from small configs, with no
hub: the tokenizer's vocabulary is generated here (hub tokenizers are out of
reach). Same seeds, same weights: every machine builds the same pipelines.
The shapes follow the small configurations of diffusers' own test suite.
"""

import atexit
import json
import os
import shutil
import tempfile

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)


def _bytes_to_unicode():
    """CLIP's byte-level alphabet: every byte as a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


_TOKENIZER_DIR = None


def tokenizer():
    """A CLIP tokenizer over single characters (and the words below), from
    files written here."""
    global _TOKENIZER_DIR
    if _TOKENIZER_DIR is None:
        d = tempfile.mkdtemp(prefix="difflog-tok-")
        atexit.register(shutil.rmtree, d, ignore_errors=True)
        chars = _bytes_to_unicode()
        vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
        for c in chars:
            vocab.setdefault(c, len(vocab))
        for c in chars:
            vocab.setdefault(c + "</w>", len(vocab))
        merges = ["#version: 0.2"]
        for word in ("cat", "dog", "red", "blue", "a"):
            # Merge the word's characters left to right.
            parts = list(word[:-1]) + [word[-1] + "</w>"]
            while len(parts) > 1:
                merges.append(f"{parts[0]} {parts[1]}")
                vocab.setdefault(parts[0] + parts[1], len(vocab))
                parts = [parts[0] + parts[1]] + parts[2:]
        with open(os.path.join(d, "vocab.json"), "w") as f:
            json.dump(vocab, f)
        with open(os.path.join(d, "merges.txt"), "w") as f:
            f.write("\n".join(merges) + "\n")
        _TOKENIZER_DIR = d
    d = _TOKENIZER_DIR
    return CLIPTokenizer(
        os.path.join(d, "vocab.json"),
        os.path.join(d, "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )


def _clip_config(**kw):
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        **kw,
    )


def _vae(**kw):
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        **kw,
    )


def _sd_components(in_channels=4, vae=None):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    vae = vae or _vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_config())
    return dict(
        unet=unet,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def sd():
    """Text-to-image (StableDiffusionPipeline)."""
    return StableDiffusionPipeline(**_sd_components())


def sd_large():
    """Text-to-image whose VAE scales by 8, as real SD's does, so that
    512x512 images stay cheap (the benchmark's pipeline)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[8, 16, 32, 32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=8,
    )
    return StableDiffusionPipeline(**_sd_components(vae=vae))


def img2img():
    """Image-to-image (StableDiffusionImg2ImgPipeline)."""
    return StableDiffusionImg2ImgPipeline(**_sd_components())


def inpaint():
    """Inpainting (StableDiffusionInpaintPipeline: a 9-channel UNet)."""
    return StableDiffusionInpaintPipeline(**_sd_components(in_channels=9))


def controlnet():
    """ControlNet (StableDiffusionControlNetPipeline: its `image` is the
    control image)."""
    c = _sd_components()
    torch.manual_seed(0)
    net = ControlNetModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        in_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        cross_attention_dim=32,
        conditioning_embedding_out_channels=(16, 32),
    )
    return StableDiffusionControlNetPipeline(controlnet=net, **c)


def sdxl():
    """SDXL (two text encoders, two prompts)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    vae = _vae(sample_size=128)
    torch.manual_seed(0)
    te = CLIPTextModel(_clip_config(hidden_act="gelu", projection_dim=32))
    torch.manual_seed(0)
    te2 = CLIPTextModelWithProjection(_clip_config(hidden_act="gelu", projection_dim=32))
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te,
        text_encoder_2=te2,
        tokenizer=tokenizer(),
        tokenizer_2=tokenizer(),
        unet=unet,
        scheduler=scheduler,
        image_encoder=None,
        feature_extractor=None,
    )


def _flow_vae(latent_channels):
    """The flow-matching families' small VAE (one block, shift and scale)."""
    torch.manual_seed(0)
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def sd3():
    """Stable Diffusion 3 (MMDiT, flow matching; no T5, as SD3 allows)."""
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    )
    torch.manual_seed(0)
    te = CLIPTextModelWithProjection(_clip_config(hidden_act="gelu", projection_dim=32))
    torch.manual_seed(0)
    te2 = CLIPTextModelWithProjection(_clip_config(hidden_act="gelu", projection_dim=32))
    vae = _flow_vae(latent_channels=4)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=te,
        tokenizer=tokenizer(),
        text_encoder_2=te2,
        tokenizer_2=tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )


def t5_tokenizer():
    """A T5-style unigram tokenizer (<pad> 0, </s> 1 appended, <unk> 2,
    "▁" word starts) over single letters and the words below."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab += [(c, -3.0), ("\u2581" + c, -3.5)]
    for word in ("cat", "dog", "red", "blue", "a"):
        vocab.append(("\u2581" + word, -1.0))
    t = Tokenizer(models.Unigram(vocab, unk_id=2))
    t.pre_tokenizer = pre_tokenizers.Metaspace()
    t.decoder = decoders.Metaspace()
    t.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)


def flux():
    """FLUX.1 (dev-shaped: a guidance input): CLIP pooled + T5, flow matching."""
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    )
    torch.manual_seed(0)
    te = CLIPTextModel(_clip_config(hidden_act="gelu", projection_dim=32))
    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1)
    )
    vae = _flow_vae(latent_channels=1)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=vae,
        text_encoder=te,
        tokenizer=tokenizer(),
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer(),
        transformer=transformer,
    )
