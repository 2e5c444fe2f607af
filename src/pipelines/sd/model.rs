//! Model architectures: the Stable Diffusion presets and the tiny built-in
//! models, as plain configurations, and the modules built from them.
//!
//! A real checkpoint and a tiny one differ only in these numbers; both are
//! loaded by [`Modules::load`] from the same diffusers folder layout with
//! `VarBuilder::from_mmaped_safetensors`.

use super::unet::{TextTime, Unet, UnetBlock, UnetConfig};
use crate::pipelines::parts::clip::{Clip, ClipConfig};
use crate::pipelines::parts::scheduler::{Prediction, SchedulerKind, SchedulerSettings, Spacing};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{
    Activation as SmallActivation, ClipTextConfig, ClipTextTransformer as SmallClip,
};
use candle_transformers::models::stable_diffusion::{
    clip::{ClipTextTransformer as SdClip, Config as SdClipConfig},
    vae::{AutoEncoderKL, AutoEncoderKLConfig},
};
use std::path::Path;

/// Which family a model belongs to; decides text encoders and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Stable Diffusion 1.x (one CLIP text encoder).
    Sd15,
    /// Stable Diffusion 2.x, including SD-Turbo.
    Sd21,
    /// Stable Diffusion XL base, including SDXL-Turbo (two text encoders).
    Xl,
    /// The SDXL refiner (second text encoder only, image-to-image).
    XlRefiner,
}

/// How to build one text encoder.
#[derive(Debug, Clone)]
pub enum TextConfig {
    /// A real CLIP text encoder, as candle's Stable Diffusion presets define it.
    Sd(SdClipConfig),
    /// A small CLIP text encoder (the tiny models), same tensor names.
    Small(ClipTextConfig),
    /// SDXL's encoders: CLIP read at its penultimate layer, with its pooled
    /// (projected) output for the UNet's micro-conditioning.
    Clip(ClipConfig),
    /// A CLIP of any size read at its last layer, after the final norm, as
    /// SD 1.x/2.x read theirs: a folder's own encoder with exact GELU (SD
    /// 2.x's OpenCLIP kind), built from its config.
    ClipLast(ClipConfig),
}

impl TextConfig {
    /// Maximum tokens, start and end tokens included.
    pub fn max_tokens(&self) -> usize {
        match self {
            TextConfig::Sd(c) => c.max_position_embeddings,
            TextConfig::Small(c) => c.max_position_embeddings,
            TextConfig::Clip(c) | TextConfig::ClipLast(c) => c.positions,
        }
    }

    /// The class recorded for it.
    pub fn class_name(&self) -> &'static str {
        match self {
            TextConfig::Sd(_) => "CLIPTextModel",
            TextConfig::Small(_) => "CLIPTextModel (tiny)",
            TextConfig::Clip(c) if c.projected => "CLIPTextModelWithProjection",
            TextConfig::Clip(_) | TextConfig::ClipLast(_) => "CLIPTextModel",
        }
    }

    /// The padding token (`<|endoftext|>` unless the config says otherwise).
    pub fn pad_token(&self) -> String {
        let pad = match self {
            TextConfig::Sd(c) => c.pad_with.clone(),
            TextConfig::Small(c) => c.pad_with.clone(),
            TextConfig::Clip(c) | TextConfig::ClipLast(c) => Some(c.pad.clone()),
        };
        pad.unwrap_or_else(|| "<|endoftext|>".into())
    }
}

/// A model's complete architecture and defaults.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Family.
    pub family: Family,
    /// Pipeline class name, as diffusers calls it.
    pub class: &'static str,
    /// Text encoders, in order (`text_encoder`, `text_encoder_2`).
    pub text: Vec<TextConfig>,
    /// Whether the first text encoder lives in `text_encoder_2/` (the refiner).
    pub text_starts_at_2: bool,
    /// UNet (4 input channels; [`ModelConfig::unet_config`] gives an
    /// inpainting model's 9).
    pub unet: UnetConfig,
    /// VAE.
    pub vae: AutoEncoderKLConfig,
    /// Latent scaling factor of the VAE.
    pub vae_scale: f64,
    /// Default image size in pixels.
    pub default_size: usize,
    /// Default number of inference steps.
    pub default_steps: usize,
    /// Default guidance scale (≤ 1 disables classifier-free guidance).
    pub default_guidance: f64,
    /// Default image-to-image strength.
    pub default_strength: f64,
    /// Default scheduler settings.
    pub scheduler: SchedulerSettings,
    /// An inpainting model: its UNet takes 9 channels (latents, the mask,
    /// the masked image's latents) and every call needs an image and a mask.
    pub inpaint: bool,
}

fn bc(out_channels: usize, cross_attention: Option<usize>, heads: usize) -> UnetBlock {
    UnetBlock {
        out_channels,
        cross_attention,
        heads,
    }
}

fn unet(
    blocks: Vec<UnetBlock>,
    cross: usize,
    layers: usize,
    groups: usize,
    linear: bool,
) -> UnetConfig {
    UnetConfig {
        in_channels: 4,
        out_channels: 4,
        blocks,
        layers_per_block: layers,
        cross_attention_dim: cross,
        norm_num_groups: groups,
        norm_eps: 1e-5,
        use_linear_projection: linear,
        flip_sin_to_cos: true,
        freq_shift: 0.,
        downsample_padding: 1,
        mid_block_scale_factor: 1.,
        center_input_sample: false,
        text_time: None,
    }
}

fn vae(channels: Vec<usize>, layers: usize, groups: usize) -> AutoEncoderKLConfig {
    AutoEncoderKLConfig {
        block_out_channels: channels,
        layers_per_block: layers,
        latent_channels: 4,
        norm_num_groups: groups,
        use_quant_conv: true,
        use_post_quant_conv: true,
    }
}

fn small_clip(width: usize, heads: usize) -> TextConfig {
    TextConfig::Small(ClipTextConfig {
        vocab_size: crate::pipelines::tiny::vocab::VOCAB_SIZE,
        embed_dim: width,
        activation: SmallActivation::QuickGelu,
        intermediate_size: width * 2,
        max_position_embeddings: 77,
        pad_with: None,
        num_hidden_layers: 2,
        num_attention_heads: heads,
        projection_dim: width,
    })
}

/// A tiny XL text encoder: SDXL's CLIP at the tiny sizes.
fn xl_clip(width: usize, projected: bool) -> TextConfig {
    TextConfig::Clip(ClipConfig {
        vocab: crate::pipelines::tiny::vocab::VOCAB_SIZE,
        width,
        layers: 2,
        heads: 4,
        intermediate: width * 2,
        positions: 77,
        quick_gelu: true,
        projection: width,
        projected,
        pad: "<|endoftext|>".into(),
    })
}

fn ddim(prediction: Prediction) -> SchedulerSettings {
    SchedulerSettings::new(SchedulerKind::Ddim, prediction, Spacing::Leading)
}

fn turbo() -> SchedulerSettings {
    SchedulerSettings::new(
        SchedulerKind::EulerAncestral,
        Prediction::Epsilon,
        Spacing::Trailing,
    )
}

impl ModelConfig {
    /// Stable Diffusion 1.5.
    pub fn sd15() -> ModelConfig {
        ModelConfig {
            family: Family::Sd15,
            class: "StableDiffusionPipeline",
            text: vec![TextConfig::Sd(SdClipConfig::v1_5())],
            text_starts_at_2: false,
            unet: unet(
                vec![
                    bc(320, Some(1), 8),
                    bc(640, Some(1), 8),
                    bc(1280, Some(1), 8),
                    bc(1280, None, 8),
                ],
                768,
                2,
                32,
                false,
            ),
            vae: vae(vec![128, 256, 512, 512], 2, 32),
            vae_scale: 0.18215,
            default_size: 512,
            default_steps: 30,
            default_guidance: 7.5,
            default_strength: 0.8,
            scheduler: ddim(Prediction::Epsilon),
            inpaint: false,
        }
    }

    /// Stable Diffusion 2.1 (768 px, v-prediction).
    pub fn sd21() -> ModelConfig {
        ModelConfig {
            family: Family::Sd21,
            class: "StableDiffusionPipeline",
            text: vec![TextConfig::Sd(SdClipConfig::v2_1())],
            text_starts_at_2: false,
            unet: unet(
                vec![
                    bc(320, Some(1), 5),
                    bc(640, Some(1), 10),
                    bc(1280, Some(1), 20),
                    bc(1280, None, 20),
                ],
                1024,
                2,
                32,
                true,
            ),
            vae: vae(vec![128, 256, 512, 512], 2, 32),
            vae_scale: 0.18215,
            default_size: 768,
            default_steps: 30,
            default_guidance: 7.5,
            default_strength: 0.8,
            scheduler: ddim(Prediction::VPrediction),
            inpaint: false,
        }
    }

    /// SD-Turbo: the SD 2.1 architecture at 512 px, one step, no guidance.
    pub fn sd_turbo() -> ModelConfig {
        ModelConfig {
            default_size: 512,
            default_steps: 1,
            default_guidance: 0.0,
            default_strength: 0.5,
            scheduler: turbo(),
            ..ModelConfig::sd21()
        }
    }

    /// Stable Diffusion XL base 1.0.
    pub fn sdxl() -> ModelConfig {
        ModelConfig {
            family: Family::Xl,
            class: "StableDiffusionXLPipeline",
            text: vec![
                TextConfig::Clip(ClipConfig {
                    projected: false,
                    ..ClipConfig::large()
                }),
                TextConfig::Clip(ClipConfig::big_g()),
            ],
            text_starts_at_2: false,
            unet: UnetConfig {
                text_time: Some(TextTime {
                    time_embed_dim: 256,
                    input_dim: 1280 + 6 * 256,
                }),
                ..unet(
                    vec![
                        bc(320, None, 5),
                        bc(640, Some(2), 10),
                        bc(1280, Some(10), 20),
                    ],
                    2048,
                    2,
                    32,
                    true,
                )
            },
            vae: vae(vec![128, 256, 512, 512], 2, 32),
            vae_scale: 0.13025,
            default_size: 1024,
            default_steps: 30,
            default_guidance: 5.0,
            default_strength: 0.3,
            scheduler: ddim(Prediction::Epsilon),
            inpaint: false,
        }
    }

    /// SDXL-Turbo: the XL architecture at 512 px, one step, no guidance.
    pub fn sdxl_turbo() -> ModelConfig {
        ModelConfig {
            default_size: 512,
            default_steps: 1,
            default_guidance: 0.0,
            default_strength: 0.5,
            scheduler: turbo(),
            ..ModelConfig::sdxl()
        }
    }

    /// The SDXL refiner 1.0 (published configuration; candle has no preset).
    pub fn sdxl_refiner() -> ModelConfig {
        ModelConfig {
            family: Family::XlRefiner,
            class: "StableDiffusionXLImg2ImgPipeline",
            text: vec![TextConfig::Clip(ClipConfig::big_g())],
            text_starts_at_2: true,
            unet: UnetConfig {
                // Five numbers: the original size, the crop and the
                // aesthetic score.
                text_time: Some(TextTime {
                    time_embed_dim: 256,
                    input_dim: 1280 + 5 * 256,
                }),
                ..unet(
                    vec![
                        bc(384, None, 6),
                        bc(768, Some(4), 12),
                        bc(1536, Some(4), 24),
                        bc(1536, None, 24),
                    ],
                    1280,
                    2,
                    32,
                    true,
                )
            },
            ..ModelConfig::sdxl()
        }
    }

    /// Stable Diffusion 1.5 inpainting (9-channel UNet; runwayml's
    /// `stable-diffusion-inpainting`, published configuration).
    pub fn sd15_inpaint() -> ModelConfig {
        ModelConfig {
            class: "StableDiffusionInpaintPipeline",
            default_strength: 1.0,
            inpaint: true,
            ..ModelConfig::sd15()
        }
    }

    /// Stable Diffusion 2 inpainting (`stabilityai/stable-diffusion-2-inpainting`:
    /// the SD 2 architecture at 512 px, epsilon prediction).
    pub fn sd2_inpaint() -> ModelConfig {
        ModelConfig {
            class: "StableDiffusionInpaintPipeline",
            default_size: 512,
            default_strength: 1.0,
            scheduler: ddim(Prediction::Epsilon),
            inpaint: true,
            ..ModelConfig::sd21()
        }
    }

    /// SDXL inpainting (`diffusers/stable-diffusion-xl-1.0-inpainting-0.1`:
    /// the XL base architecture with a 9-channel UNet).
    pub fn sdxl_inpaint() -> ModelConfig {
        ModelConfig {
            class: "StableDiffusionXLInpaintPipeline",
            default_strength: 0.9999,
            inpaint: true,
            ..ModelConfig::sdxl()
        }
    }

    /// The tiny inpainting model, shaped like SD 1.5 inpainting.
    pub fn tiny_inpaint() -> ModelConfig {
        ModelConfig {
            class: "StableDiffusionInpaintPipeline",
            default_strength: 1.0,
            inpaint: true,
            ..ModelConfig::tiny()
        }
    }

    /// The tiny built-in model, shaped like SD 1.5.
    pub fn tiny() -> ModelConfig {
        ModelConfig {
            family: Family::Sd15,
            class: "StableDiffusionPipeline",
            text: vec![small_clip(32, 4)],
            text_starts_at_2: false,
            unet: unet(vec![bc(32, Some(1), 4), bc(64, None, 4)], 32, 1, 8, false),
            vae: vae(vec![16, 16, 32, 32], 1, 8),
            vae_scale: 0.18215,
            default_size: 64,
            default_steps: 10,
            default_guidance: 7.5,
            default_strength: 0.8,
            scheduler: ddim(Prediction::Epsilon),
            inpaint: false,
        }
    }

    /// The tiny built-in model, shaped like SDXL base (two text encoders).
    pub fn tiny_xl() -> ModelConfig {
        ModelConfig {
            family: Family::Xl,
            class: "StableDiffusionXLPipeline",
            text: vec![xl_clip(32, false), xl_clip(48, true)],
            text_starts_at_2: false,
            unet: UnetConfig {
                text_time: Some(TextTime {
                    time_embed_dim: 8,
                    input_dim: 48 + 6 * 8,
                }),
                ..unet(vec![bc(32, None, 4), bc(64, Some(1), 4)], 80, 1, 8, true)
            },
            vae_scale: 0.13025,
            default_strength: 0.3,
            ..ModelConfig::tiny()
        }
    }

    /// The tiny built-in refiner for `tiny-xl`.
    pub fn tiny_xl_refiner() -> ModelConfig {
        ModelConfig {
            family: Family::XlRefiner,
            class: "StableDiffusionXLImg2ImgPipeline",
            text: vec![xl_clip(48, true)],
            text_starts_at_2: true,
            unet: UnetConfig {
                text_time: Some(TextTime {
                    time_embed_dim: 8,
                    input_dim: 48 + 5 * 8,
                }),
                ..unet(vec![bc(32, Some(1), 4), bc(64, Some(1), 4)], 48, 1, 8, true)
            },
            ..ModelConfig::tiny_xl()
        }
    }

    /// The UNet's configuration as built: 9 input channels for an
    /// inpainting model (latents, mask, masked image's latents).
    pub fn unet_config(&self) -> UnetConfig {
        UnetConfig {
            in_channels: if self.inpaint { 9 } else { 4 },
            ..self.unet.clone()
        }
    }

    /// `""` or `"_2"`: the folder suffix of text encoder `i`
    /// (`text_encoder`, `text_encoder_2`; the refiner's only one is `_2`).
    pub fn text_suffix(&self, i: usize) -> String {
        match if self.text_starts_at_2 { i + 2 } else { i + 1 } {
            1 => String::new(),
            n => format!("_{n}"),
        }
    }

    /// Whether text encoder `i` has a text projection
    /// (`CLIPTextModelWithProjection`: SDXL's second encoder).
    pub fn text_projected(&self, i: usize) -> bool {
        matches!(&self.text[i], TextConfig::Clip(c) if c.projected)
    }

    /// Folder and file name of text encoder `i` and its tokenizer, relative to the model folder.
    pub fn text_files(&self, i: usize) -> (String, String) {
        let suffix = self.text_suffix(i);
        (
            format!("text_encoder{suffix}/model.safetensors"),
            format!("tokenizer{suffix}/tokenizer.json"),
        )
    }

    /// The UNet's and VAE's weight files, relative to the model folder.
    pub const UNET_FILE: &'static str = "unet/diffusion_pytorch_model.safetensors";
    /// See [`ModelConfig::UNET_FILE`].
    pub const VAE_FILE: &'static str = "vae/diffusion_pytorch_model.safetensors";
}

/// A text encoder of either kind.
pub enum TextEncoder {
    /// candle's Stable Diffusion CLIP.
    Sd(SdClip),
    /// The small CLIP of the tiny models.
    Small(SmallClip),
    /// SDXL's CLIP (penultimate layer and pooled output).
    Clip(Clip),
    /// A CLIP read at its last layer (SD 1.x/2.x, built from its config).
    ClipLast(Clip),
}

impl TextEncoder {
    /// Builds the encoder; `vb` is the root of its weight file. Files
    /// saved by transformers 5 name the tensors without the `text_model.`
    /// prefix earlier versions (and the hub's checkpoints) have; both load.
    pub fn new(vb: VarBuilder, cfg: &TextConfig) -> Result<TextEncoder> {
        let vb = if !vb.contains_tensor("text_model.embeddings.token_embedding.weight")
            && vb.contains_tensor("embeddings.token_embedding.weight")
        {
            vb.rename_f(|name| name.strip_prefix("text_model.").unwrap_or(name).to_string())
        } else {
            vb
        };
        Ok(match cfg {
            TextConfig::Sd(c) => TextEncoder::Sd(SdClip::new(vb, c)?),
            TextConfig::Small(c) => TextEncoder::Small(SmallClip::new(vb.pp("text_model"), c)?),
            TextConfig::Clip(c) => TextEncoder::Clip(Clip::new(vb, c)?),
            TextConfig::ClipLast(c) => TextEncoder::ClipLast(Clip::new(vb, c)?),
        })
    }

    /// The hidden states the UNet attends to for token ids (batch, seq),
    /// and the pooled output when the encoder gives one (SDXL's: the
    /// penultimate layer, and the state at `eos`, the end token's position).
    pub fn encode_pooled(&self, ids: &Tensor, eos: usize) -> Result<(Tensor, Option<Tensor>)> {
        match self {
            TextEncoder::Clip(m) => {
                let out = m.encode(ids, eos)?;
                Ok((out.penultimate, Some(out.pooled)))
            }
            other => Ok((other.encode(ids)?, None)),
        }
    }

    /// Hidden states of the last layer for token ids of shape (batch, seq).
    pub fn encode(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            TextEncoder::Sd(m) => m.forward(ids),
            TextEncoder::Small(m) => m.forward_with_mask(ids, usize::MAX),
            TextEncoder::Clip(m) => m.encode(ids, ids.dim(1)? - 1).map(|o| o.penultimate),
            TextEncoder::ClipLast(m) => m.encode(ids, ids.dim(1)? - 1).map(|o| o.last),
        }
    }
}

/// The neural parts of a pipeline.
pub struct Modules {
    /// Text encoders, in order.
    pub text: Vec<TextEncoder>,
    /// The UNet.
    pub unet: Unet,
    /// The VAE.
    pub vae: AutoEncoderKL,
}

impl Modules {
    /// Builds every module of `cfg` from per-module var builders.
    pub fn build(
        cfg: &ModelConfig,
        text: Vec<VarBuilder>,
        unet_vb: VarBuilder,
        vae_vb: VarBuilder,
    ) -> Result<Modules> {
        let text = text
            .into_iter()
            .zip(&cfg.text)
            .map(|(vb, c)| TextEncoder::new(vb, c))
            .collect::<Result<Vec<_>>>()?;
        let unet = Unet::new(unet_vb, &cfg.unet_config())?;
        let vae = AutoEncoderKL::new(vae_vb, 3, 3, cfg.vae.clone())?;
        Ok(Modules { text, unet, vae })
    }

    /// Loads the modules of `cfg` from the weight files (memory-mapped safetensors).
    pub fn load(
        cfg: &ModelConfig,
        text_files: &[&Path],
        unet: &Path,
        vae: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Modules> {
        let mmap = |p: &Path| crate::pipelines::load::mapped::mapped_vb(&[p], dtype, device);
        let text = text_files
            .iter()
            .map(|p| mmap(p))
            .collect::<Result<Vec<_>>>()?;
        Modules::build(cfg, text, mmap(unet)?, mmap(vae)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Shape;
    use candle_nn::var_builder::SimpleBackend;
    use candle_nn::Init;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    /// Records every tensor a model asks for and hands out a zero broadcast
    /// to its shape (nothing allocated): a real-size architecture is
    /// checked name by name and shape by shape in milliseconds.
    #[derive(Clone, Default)]
    pub(crate) struct Lazy(pub(crate) Arc<Mutex<BTreeMap<String, Vec<usize>>>>);

    impl SimpleBackend for Lazy {
        fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
            self.0
                .lock()
                .unwrap()
                .insert(name.to_string(), s.dims().to_vec());
            Tensor::zeros((), dtype, dev)?.broadcast_as(s)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
            candle_core::bail!("no shape for {name}")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    fn unet_tensors(cfg: &ModelConfig) -> BTreeMap<String, Vec<usize>> {
        let lazy = Lazy::default();
        let vb = || VarBuilder::from_backend(Box::new(lazy.clone()), DType::F32, Device::Cpu);
        let texts = cfg.text.iter().map(|_| vb()).collect();
        // The text encoders and VAE go to the same recorder under other
        // prefixes; only the UNet's names are compared.
        Modules::build(cfg, texts, vb().pp("unet"), vb().pp("vae")).unwrap();
        let all = lazy.0.lock().unwrap().clone();
        all.into_iter()
            .filter_map(|(k, v)| k.strip_prefix("unet.").map(|k| (k.to_string(), v)))
            .collect()
    }

    #[test]
    fn inpainting_unets_are_their_base_with_a_nine_channel_input() {
        for (name, base, inpaint) in [
            (
                "sd15-inpaint",
                ModelConfig::sd15(),
                ModelConfig::sd15_inpaint(),
            ),
            (
                "sd2-inpaint",
                ModelConfig::sd21(),
                ModelConfig::sd2_inpaint(),
            ),
            (
                "sdxl-inpaint",
                ModelConfig::sdxl(),
                ModelConfig::sdxl_inpaint(),
            ),
            (
                "tiny-inpaint",
                ModelConfig::tiny(),
                ModelConfig::tiny_inpaint(),
            ),
        ] {
            let (b, i) = (unet_tensors(&base), unet_tensors(&inpaint));
            assert_eq!(
                b.keys().collect::<Vec<_>>(),
                i.keys().collect::<Vec<_>>(),
                "{name}: the same tensors by name"
            );
            let differing: Vec<&String> = b.keys().filter(|k| b[*k] != i[*k]).collect();
            assert_eq!(differing, ["conv_in.weight"], "{name}");
            let first = base.unet.blocks[0].out_channels;
            // The published inpainting checkpoints: conv_in takes latents (4),
            // the mask (1) and the masked image's latents (4).
            assert_eq!(i["conv_in.weight"], [first, 9, 3, 3], "{name}");
            assert!(
                inpaint.inpaint && inpaint.class.contains("Inpaint"),
                "{name}"
            );
        }
        // Real sizes checked without allocating them: SD 1.5's UNet has
        // 859,520,964 parameters (diffusers' count), the inpainting one 5,760 more.
        let count = |t: &BTreeMap<String, Vec<usize>>| -> usize {
            t.values().map(|d| d.iter().product::<usize>()).sum()
        };
        let (b, i) = (
            unet_tensors(&ModelConfig::sd15()),
            unet_tensors(&ModelConfig::sd15_inpaint()),
        );
        assert_eq!(count(&b), 859_520_964);
        assert_eq!(count(&i) - count(&b), 320 * 5 * 9);
    }
}
