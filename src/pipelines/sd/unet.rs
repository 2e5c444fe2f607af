//! difflog's own UNet: diffusers' `UNet2DConditionModel` as the SD 1.x,
//! 2.x and XL checkpoints use it, built from a diffusers-style config.
//!
//! Why not candle's: candle's `DownBlock2D` and `UpBlock2D` (and the
//! cross-attention blocks built on them) give their resnets 32 norm groups
//! whatever the config says, so a UNet with other groups (the tiny models
//! have 8) computes something else than diffusers with the same weights;
//! its transformers' feed-forward uses an approximate GELU
//! ([`super::transformer`]); and candle's UNet has no SDXL
//! micro-conditioning (`add_embedding`). The pieces candle gets right
//! (resnets, the timestep embedding) are used as they are; the blocks and
//! the assembly are written here, after diffusers' `unet_2d_condition.py` and
//! `unet_2d_blocks.py` (read for the facts: block order, skip connections,
//! tensor names). Tensor names are diffusers', so checkpoints load as they
//! are.

use super::transformer::{SpatialTransformer, TransformerConfig};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{self as nn, VarBuilder};
use candle_transformers::models::stable_diffusion::{
    embeddings::{TimestepEmbedding, Timesteps},
    resnet::{ResnetBlock2D, ResnetBlock2DConfig},
};
use serde_json::{json, Value};

/// One down block (and the up block that mirrors it).
#[derive(Debug, Clone, PartialEq)]
pub struct UnetBlock {
    /// Output channels.
    pub out_channels: usize,
    /// Transformer layers per attention (`Some`: a cross-attention block,
    /// `CrossAttnDownBlock2D` / `CrossAttnUpBlock2D`; `None`: resnets only).
    pub cross_attention: Option<usize>,
    /// Attention heads.
    pub heads: usize,
}

/// SDXL's micro-conditioning (`addition_embed_type = "text_time"`): the
/// pooled text embedding and six size numbers, embedded and added to the
/// timestep embedding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextTime {
    /// Channels of each size number's sinusoidal embedding (256).
    pub time_embed_dim: usize,
    /// Input width of `add_embedding` (pooled text width + 6 × time_embed_dim).
    pub input_dim: usize,
}

/// A UNet's architecture, with diffusers' config fields.
#[derive(Debug, Clone, PartialEq)]
pub struct UnetConfig {
    /// Latent channels in (4; 9 for inpainting).
    pub in_channels: usize,
    /// Channels out (4).
    pub out_channels: usize,
    /// The down blocks, first to last.
    pub blocks: Vec<UnetBlock>,
    /// Resnets per down block (an up block has one more).
    pub layers_per_block: usize,
    /// Width of the text embeddings attended to.
    pub cross_attention_dim: usize,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Epsilon of the resnets' group norms and of the output norm.
    pub norm_eps: f64,
    /// Linear (not 1×1 convolution) projections in and out of attention.
    pub use_linear_projection: bool,
    /// Timestep embedding: cosine first.
    pub flip_sin_to_cos: bool,
    /// Timestep embedding: frequency shift.
    pub freq_shift: f64,
    /// Padding of the downsampling convolutions.
    pub downsample_padding: usize,
    /// Output scale of the mid block's resnets.
    pub mid_block_scale_factor: f64,
    /// Scale the input from [0, 1] to [-1, 1] first.
    pub center_input_sample: bool,
    /// SDXL's micro-conditioning, if the UNet has it.
    pub text_time: Option<TextTime>,
}

impl UnetConfig {
    /// The config as diffusers writes it (`unet/config.json`).
    pub fn to_diffusers(&self) -> Value {
        let down: Vec<&str> = self
            .blocks
            .iter()
            .map(|b| match b.cross_attention {
                Some(_) => "CrossAttnDownBlock2D",
                None => "DownBlock2D",
            })
            .collect();
        let up: Vec<&str> = self
            .blocks
            .iter()
            .rev()
            .map(|b| match b.cross_attention {
                Some(_) => "CrossAttnUpBlock2D",
                None => "UpBlock2D",
            })
            .collect();
        let mut v = json!({
            "_class_name": "UNet2DConditionModel",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": down,
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "up_block_types": up,
            "block_out_channels": self.blocks.iter().map(|b| b.out_channels).collect::<Vec<_>>(),
            "layers_per_block": self.layers_per_block,
            "attention_head_dim": self.blocks.iter().map(|b| b.heads).collect::<Vec<_>>(),
            "transformer_layers_per_block": self.blocks.iter().map(|b| b.cross_attention.unwrap_or(1)).collect::<Vec<_>>(),
            "cross_attention_dim": self.cross_attention_dim,
            "norm_num_groups": self.norm_num_groups,
            "norm_eps": self.norm_eps,
            "use_linear_projection": self.use_linear_projection,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "freq_shift": self.freq_shift,
            "downsample_padding": self.downsample_padding,
            "mid_block_scale_factor": self.mid_block_scale_factor,
            "center_input_sample": self.center_input_sample,
            "act_fn": "silu",
        });
        if let Some(t) = self.text_time {
            v["addition_embed_type"] = json!("text_time");
            v["addition_time_embed_dim"] = json!(t.time_embed_dim);
            v["projection_class_embeddings_input_dim"] = json!(t.input_dim);
        }
        v
    }

    /// Width of the timestep embedding.
    fn time_embed_dim(&self) -> usize {
        self.blocks.first().map_or(0, |b| b.out_channels) * 4
    }
}

/// A downsampling convolution (stride 2).
struct Downsample {
    conv: nn::Conv2d,
    pad_after: bool,
}

impl Downsample {
    fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Downsample> {
        let cfg = nn::Conv2dConfig {
            stride: 2,
            padding,
            ..Default::default()
        };
        Ok(Downsample {
            conv: nn::conv2d(channels, channels, 3, cfg, vb.pp("conv"))?,
            pad_after: padding == 0,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_after {
            // diffusers pads right and bottom by one when the conv has none.
            let x = x
                .pad_with_zeros(D::Minus1, 0, 1)?
                .pad_with_zeros(D::Minus2, 0, 1)?;
            return self.conv.forward(&x);
        }
        self.conv.forward(x)
    }
}

/// Nearest-neighbour upsampling (to twice the size, or a given size) and a
/// convolution.
struct Upsample {
    conv: nn::Conv2d,
}

impl Upsample {
    fn new(vb: VarBuilder, channels: usize) -> Result<Upsample> {
        let cfg = nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Upsample {
            conv: nn::conv2d(channels, channels, 3, cfg, vb.pp("conv"))?,
        })
    }

    fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (h, w) = match size {
            Some(s) => s,
            None => {
                let (_, _, h, w) = x.dims4()?;
                (2 * h, 2 * w)
            }
        };
        self.conv.forward(&x.upsample_nearest2d(h, w)?)
    }
}

/// A down or up block: resnets, each followed by a spatial transformer in a
/// cross-attention block, and a down- or upsampler.
struct Block {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialTransformer>,
    down: Option<Downsample>,
    up: Option<Upsample>,
}

fn resnet(
    vb: VarBuilder,
    cfg: &UnetConfig,
    in_channels: usize,
    out_channels: usize,
    scale: f64,
) -> Result<ResnetBlock2D> {
    let rc = ResnetBlock2DConfig {
        out_channels: Some(out_channels),
        temb_channels: Some(cfg.time_embed_dim()),
        groups: cfg.norm_num_groups,
        groups_out: None,
        eps: cfg.norm_eps,
        use_in_shortcut: None,
        output_scale_factor: scale,
    };
    ResnetBlock2D::new(vb, in_channels, rc)
}

fn transformer(
    vb: VarBuilder,
    cfg: &UnetConfig,
    channels: usize,
    block: &UnetBlock,
    depth: usize,
) -> Result<SpatialTransformer> {
    let tc = TransformerConfig {
        channels,
        heads: block.heads,
        depth,
        groups: cfg.norm_num_groups,
        context_dim: cfg.cross_attention_dim,
        linear: cfg.use_linear_projection,
    };
    SpatialTransformer::new(vb, tc)
}

/// Layer `j` of a block: a resnet from `cin` channels to the block's, and
/// its transformer in a cross-attention block.
fn layer(
    vb: &VarBuilder,
    cfg: &UnetConfig,
    b: &UnetBlock,
    j: usize,
    cin: usize,
) -> Result<(ResnetBlock2D, Option<SpatialTransformer>)> {
    let r = resnet(vb.pp("resnets").pp(j), cfg, cin, b.out_channels, 1.0)?;
    let a = match b.cross_attention {
        Some(depth) => Some(transformer(
            vb.pp("attentions").pp(j),
            cfg,
            b.out_channels,
            b,
            depth,
        )?),
        None => None,
    };
    Ok((r, a))
}

/// difflog's UNet (see the module's comment).
pub struct Unet {
    config: UnetConfig,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    add_time_proj: Option<Timesteps>,
    add_embedding: Option<TimestepEmbedding>,
    conv_in: nn::Conv2d,
    down: Vec<Block>,
    /// The mid block: a resnet, a transformer, a resnet.
    mid: (ResnetBlock2D, SpatialTransformer, ResnetBlock2D),
    up: Vec<Block>,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2d,
}

impl Unet {
    /// Builds the UNet of `cfg` from `vb` (the root of its weight file).
    pub fn new(vb: VarBuilder, cfg: &UnetConfig) -> Result<Unet> {
        let n = cfg.blocks.len();
        let Some(first) = cfg.blocks.first() else {
            candle_core::bail!("a UNet needs at least one block");
        };
        let Some(last) = cfg.blocks.last() else {
            candle_core::bail!("a UNet needs at least one block");
        };
        let pad1 = nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let c0 = first.out_channels;
        let temb = cfg.time_embed_dim();
        let conv_in = nn::conv2d(cfg.in_channels, c0, 3, pad1, vb.pp("conv_in"))?;
        let time_proj = Timesteps::new(c0, cfg.flip_sin_to_cos, cfg.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), c0, temb)?;
        let (add_time_proj, add_embedding) = match cfg.text_time {
            Some(t) => (
                Some(Timesteps::new(
                    t.time_embed_dim,
                    cfg.flip_sin_to_cos,
                    cfg.freq_shift,
                )),
                Some(TimestepEmbedding::new(
                    vb.pp("add_embedding"),
                    t.input_dim,
                    temb,
                )?),
            ),
            None => (None, None),
        };
        let mut down = Vec::with_capacity(n);
        let mut channels = c0;
        for (i, b) in cfg.blocks.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..cfg.layers_per_block {
                let cin = if j == 0 { channels } else { b.out_channels };
                let (r, a) = layer(&vb, cfg, b, j, cin)?;
                resnets.push(r);
                attentions.extend(a);
            }
            let sampler = (i + 1 < n)
                .then(|| {
                    Downsample::new(
                        vb.pp("downsamplers").pp(0),
                        b.out_channels,
                        cfg.downsample_padding,
                    )
                })
                .transpose()?;
            channels = b.out_channels;
            down.push(Block {
                resnets,
                attentions,
                down: sampler,
                up: None,
            });
        }
        let vm = vb.pp("mid_block");
        let cl = last.out_channels;
        let scale = cfg.mid_block_scale_factor;
        let mid = (
            resnet(vm.pp("resnets").pp(0), cfg, cl, cl, scale)?,
            transformer(
                vm.pp("attentions").pp(0),
                cfg,
                cl,
                last,
                last.cross_attention.unwrap_or(1),
            )?,
            resnet(vm.pp("resnets").pp(1), cfg, cl, cl, scale)?,
        );
        let mut up = Vec::with_capacity(n);
        let reversed: Vec<&UnetBlock> = cfg.blocks.iter().rev().collect();
        let mut prev = last.out_channels;
        for (i, b) in reversed.iter().enumerate() {
            let vb = vb.pp("up_blocks").pp(i);
            // The skip connections come from the down block mirrored here
            // and, for the last resnet, from the one before it.
            let skip_in = reversed[(i + 1).min(n - 1)].out_channels;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            let layers = cfg.layers_per_block + 1;
            for j in 0..layers {
                let skip = if j + 1 == layers {
                    skip_in
                } else {
                    b.out_channels
                };
                let cin = if j == 0 { prev } else { b.out_channels };
                let (r, a) = layer(&vb, cfg, b, j, cin + skip)?;
                resnets.push(r);
                attentions.extend(a);
            }
            let sampler = (i + 1 < n)
                .then(|| Upsample::new(vb.pp("upsamplers").pp(0), b.out_channels))
                .transpose()?;
            prev = b.out_channels;
            up.push(Block {
                resnets,
                attentions,
                down: None,
                up: sampler,
            });
        }
        let conv_norm_out = nn::group_norm(
            cfg.norm_num_groups,
            c0,
            cfg.norm_eps,
            vb.pp("conv_norm_out"),
        )?;
        let conv_out = nn::conv2d(c0, cfg.out_channels, 3, pad1, vb.pp("conv_out"))?;
        Ok(Unet {
            config: cfg.clone(),
            time_proj,
            time_embedding,
            add_time_proj,
            add_embedding,
            conv_in,
            down,
            mid,
            up,
            conv_norm_out,
            conv_out,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &UnetConfig {
        &self.config
    }

    /// The predicted noise (or v) for latents `x` at `timestep`, attending
    /// to `context`; `added` is SDXL's (pooled text embedding, six size
    /// numbers) per batch row, which a UNet with micro-conditioning needs.
    pub fn forward(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<(&Tensor, &Tensor)>,
    ) -> Result<Tensor> {
        let (batch, _, h, w) = x.dims4()?;
        let n = self.down.len();
        let x = if self.config.center_input_sample {
            ((x * 2.0)? - 1.0)?
        } else {
            x.clone()
        };
        let t = (Tensor::ones(batch, x.dtype(), x.device())? * timestep)?;
        let mut emb = self.time_embedding.forward(&self.time_proj.forward(&t)?)?;
        match (&self.add_time_proj, &self.add_embedding, added) {
            (Some(proj), Some(embed), Some((text, sizes))) => {
                let sizes = proj.forward(&sizes.flatten_all()?)?.reshape((batch, ()))?;
                let joined = Tensor::cat(&[text, &sizes.to_dtype(text.dtype())?], D::Minus1)?;
                emb = (emb + embed.forward(&joined.to_dtype(x.dtype())?)?)?;
            }
            (Some(_), _, None) => candle_core::bail!(
                "this UNet has SDXL's micro-conditioning: it needs the pooled text embedding and the size numbers"
            ),
            _ => {}
        }
        let mut x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for b in &self.down {
            for (j, r) in b.resnets.iter().enumerate() {
                x = r.forward(&x, Some(&emb))?;
                if let Some(a) = b.attentions.get(j) {
                    x = a.forward(&x, context)?;
                }
                skips.push(x.clone());
            }
            if let Some(d) = &b.down {
                x = d.forward(&x)?;
                skips.push(x.clone());
            }
        }
        x = self.mid.0.forward(&x, Some(&emb))?;
        x = self.mid.1.forward(&x, context)?;
        x = self.mid.2.forward(&x, Some(&emb))?;
        // Sizes that do not halve evenly are upsampled to the skip's size.
        let uneven = h % (1 << (n - 1)) != 0 || w % (1 << (n - 1)) != 0;
        for b in &self.up {
            for (j, r) in b.resnets.iter().enumerate() {
                let Some(skip) = skips.pop() else {
                    candle_core::bail!("the UNet's skip connections ran out");
                };
                x = Tensor::cat(&[&x, &skip], 1)?;
                x = r.forward(&x, Some(&emb))?;
                if let Some(a) = b.attentions.get(j) {
                    x = a.forward(&x, context)?;
                }
            }
            if let Some(u) = &b.up {
                let size = match (uneven, skips.last()) {
                    (true, Some(s)) => {
                        let (_, _, sh, sw) = s.dims4()?;
                        Some((sh, sw))
                    }
                    _ => None,
                };
                x = u.forward(&x, size)?;
            }
        }
        let x = nn::ops::silu(&self.conv_norm_out.forward(&x)?)?;
        self.conv_out.forward(&x)
    }
}
