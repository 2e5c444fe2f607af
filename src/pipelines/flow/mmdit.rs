//! The SD3 / 3.5 transformer (MMDiT) as diffusers' `SD3Transformer2DModel`
//! computes it: candle's patch and vector embedders and joint blocks, with
//! difflog's own timestep embedding, position crop, unpatchifying and last
//! block where candle's differ.
//!
//! candle's timestep embedding always ends in float16, which tied the whole
//! model to f16 even on the CPU, where diffusers runs float32; candle's
//! last joint block makes the text tokens' queries and keys without the
//! RMS norms SD 3.5's checkpoints have there (`norm_added_q/k`), so its
//! image differed from diffusers' for every 3.5 model; and its MMDiT ties
//! the head count to the block count and the patch to 2. Here the
//! embedding is computed in float32 as diffusers does and cast to the
//! model's dtype, the last block reads those norms when the checkpoint has
//! them, and heads and patch size come from the config.
//! Tensor names are candle's (the SAI layout), served from diffusers'
//! files by [`crate::pipelines::load::remap::mmdit_rule`].

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{linear, rms_norm, Linear, RmsNorm, VarBuilder};
use candle_transformers::models::mmdit::blocks::{
    DiTBlock, FinalLayer, JointBlock, LayerNormNoAffine, MMDiTJointBlock, MMDiTXJointBlock,
};
use candle_transformers::models::mmdit::embedding::{PatchEmbedder, VectorEmbedder};
use candle_transformers::models::mmdit::model::Config;
use candle_transformers::models::mmdit::projections::Qkv;

/// Width of the sinusoidal timestep features (diffusers' `Timesteps(256)`).
const FREQUENCIES: usize = 256;

/// An SD3 / 3.5 transformer.
pub struct Mmdit {
    patch: PatchEmbedder,
    patch_size: usize,
    /// (1, side², hidden): the position embedding of a side × side grid.
    position: Tensor,
    side: usize,
    timestep: TimestepEmbedder,
    vector: VectorEmbedder,
    context: Linear,
    blocks: Vec<Box<dyn JointBlock>>,
    last: LastBlock,
    final_layer: FinalLayer,
    out_channels: usize,
}

impl Mmdit {
    /// Builds the transformer of `cfg` with `heads` attention heads from
    /// `vb` (candle's names); a block with a second attention
    /// (`x_block.attn2`) is an MMDiT-X block, and q/k norms are read
    /// wherever the checkpoint has them.
    pub fn new(cfg: &Config, heads: usize, vb: VarBuilder) -> Result<Mmdit> {
        let hidden = cfg.head_size * heads;
        let mut blocks: Vec<Box<dyn JointBlock>> = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth.saturating_sub(1) {
            let b = vb.pp(format!("joint_blocks.{i}"));
            blocks.push(if b.contains_tensor("x_block.attn2.qkv.weight") {
                Box::new(MMDiTXJointBlock::new(hidden, heads, false, b)?)
            } else {
                Box::new(MMDiTJointBlock::new(hidden, heads, false, b)?)
            });
        }
        let last = vb.pp(format!("joint_blocks.{}", cfg.depth.saturating_sub(1)));
        Ok(Mmdit {
            patch: PatchEmbedder::new(
                cfg.patch_size,
                cfg.in_channels,
                hidden,
                vb.pp("x_embedder"),
            )?,
            patch_size: cfg.patch_size,
            position: vb.get(
                (1, cfg.pos_embed_max_size * cfg.pos_embed_max_size, hidden),
                "pos_embed",
            )?,
            side: cfg.pos_embed_max_size,
            timestep: TimestepEmbedder::new(hidden, vb.pp("t_embedder"))?,
            vector: VectorEmbedder::new(cfg.adm_in_channels, hidden, vb.pp("y_embedder"))?,
            context: linear(cfg.context_embed_size, hidden, vb.pp("context_embedder"))?,
            blocks,
            last: LastBlock::new(hidden, heads, last)?,
            final_layer: FinalLayer::new(
                hidden,
                cfg.patch_size,
                cfg.out_channels,
                vb.pp("final_layer"),
            )?,
            out_channels: cfg.out_channels,
        })
    }

    /// The prediction for latents `x` (B, C, H, W) at timesteps `t` (B,
    /// float32: σ × 1000), pooled text vector `y` and text tokens
    /// `context`, skipping the joint blocks in `skip` (skip-layer guidance).
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: &Tensor,
        context: &Tensor,
        skip: Option<&[usize]>,
    ) -> Result<Tensor> {
        let (h, w) = (x.dim(D::Minus2)?, x.dim(D::Minus1)?);
        let (gh, gw) = (h / self.patch_size, w / self.patch_size);
        let mut x = self
            .patch
            .forward(x)?
            .broadcast_add(&self.cropped_position(gh, gw)?)?;
        let c = (self.timestep.forward(t, x.dtype())? + self.vector.forward(y)?)?;
        let mut context = self.context.forward(context)?;
        for (i, block) in self.blocks.iter().enumerate() {
            if skip.is_some_and(|s| s.contains(&i)) {
                continue;
            }
            (context, x) = block.forward(&context, &x, &c)?;
        }
        let x = self.last.forward(&context, &x, &c)?;
        let x = self.final_layer.forward(&x, &c)?;
        self.unpatchify(&x, gh, gw)
    }

    /// The middle gh × gw of the position grid, as (1, gh·gw, hidden)
    /// (diffusers' `cropped_pos_embed`; candle's assumes patches of 2).
    fn cropped_position(&self, gh: usize, gw: usize) -> Result<Tensor> {
        if gh > self.side || gw > self.side {
            candle_core::bail!(
                "{gh}×{gw} patches: the position embedding covers {0}×{0}",
                self.side
            )
        }
        let (top, left) = ((self.side - gh) / 2, (self.side - gw) / 2);
        self.position
            .reshape((1, self.side, self.side, ()))?
            .narrow(1, top, gh)?
            .narrow(2, left, gw)?
            .reshape((1, gh * gw, ()))
    }

    /// Patch tokens (B, gh·gw, p·p·C) back to latents (B, C, gh·p, gw·p).
    fn unpatchify(&self, x: &Tensor, gh: usize, gw: usize) -> Result<Tensor> {
        let (p, c) = (self.patch_size, self.out_channels);
        x.reshape((x.dim(0)?, gh, gw, p, p, c))?
            .permute((0, 5, 1, 3, 2, 4))?
            .reshape((x.dim(0)?, c, gh * p, gw * p))
    }
}

/// The timestep's sinusoidal features and their MLP.
struct TimestepEmbedder {
    first: Linear,
    second: Linear,
}

impl TimestepEmbedder {
    fn new(hidden: usize, vb: VarBuilder) -> Result<TimestepEmbedder> {
        Ok(TimestepEmbedder {
            first: linear(FREQUENCIES, hidden, vb.pp("mlp.0"))?,
            second: linear(hidden, hidden, vb.pp("mlp.2"))?,
        })
    }

    /// diffusers' `get_timestep_embedding` with `flip_sin_to_cos`: cosines
    /// then sines of t · 10000^(−i/half), in float32, then the MLP in
    /// `dtype`.
    fn forward(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        let half = FREQUENCIES / 2;
        // As torch computes it: −ln(10000) · i rounded to float32, divided
        // by half in float32, then exp.
        let scale = -(10000f64.ln()) as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|i| (scale * i as f32 / half as f32).exp())
            .collect();
        let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&freqs)?;
        let features = Tensor::cat(&[args.cos()?, args.sin()?], 1)?.to_dtype(dtype)?;
        let hidden = candle_nn::ops::silu(&self.first.forward(&features)?)?;
        self.second.forward(&hidden)
    }
}

/// The last joint block: the text tokens only give keys and values (and
/// queries nobody reads) to the image tokens' attention, after an adaptive
/// norm of their own and, in SD 3.5, q/k RMS norms.
struct LastBlock {
    x_block: DiTBlock,
    modulation: Linear,
    qkv: Linear,
    norms: Option<(RmsNorm, RmsNorm)>,
    heads: usize,
    head_size: usize,
}

impl LastBlock {
    fn new(hidden: usize, heads: usize, vb: VarBuilder) -> Result<LastBlock> {
        let c = vb.pp("context_block");
        let head_size = hidden / heads;
        let norms = if c.contains_tensor("attn.ln_q.weight") {
            Some((
                rms_norm(head_size, 1e-6, c.pp("attn.ln_q"))?,
                rms_norm(head_size, 1e-6, c.pp("attn.ln_k"))?,
            ))
        } else {
            None
        };
        Ok(LastBlock {
            x_block: DiTBlock::new(hidden, heads, vb.pp("x_block"))?,
            modulation: linear(hidden, 2 * hidden, c.pp("adaLN_modulation.1"))?,
            qkv: linear(hidden, 3 * hidden, c.pp("attn.qkv"))?,
            norms,
            heads,
            head_size,
        })
    }

    /// The image tokens after the block.
    fn forward(&self, context: &Tensor, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let m = self
            .modulation
            .forward(&candle_nn::ops::silu(c)?)?
            .chunk(2, D::Minus1)?;
        let (shift, scale) = (m[0].unsqueeze(1)?, m[1].unsqueeze(1)?);
        let normed = LayerNormNoAffine::new(1e-6).forward(context)?;
        let modulated = normed
            .broadcast_mul(&(scale + 1.0)?)?
            .broadcast_add(&shift)?;
        let text = self.text_qkv(&modulated)?;
        let (image, interm) = self.x_block.pre_attention(x, c)?;
        let n = text.q.dim(1)?;
        let joint = Qkv {
            q: Tensor::cat(&[&text.q, &image.q], 1)?,
            k: Tensor::cat(&[&text.k, &image.k], 1)?,
            v: Tensor::cat(&[&text.v, &image.v], 1)?,
        };
        let attended = attention(&joint, self.heads)?;
        let image_part = attended.narrow(1, n, attended.dim(1)? - n)?;
        self.x_block.post_attention(&image_part, x, &interm)
    }

    /// The text tokens' queries and keys (B, N, hidden) and values (B, N,
    /// heads, head size), shaped as candle's blocks give theirs; the
    /// queries and keys normed per head when the model has the norms.
    fn text_qkv(&self, x: &Tensor) -> Result<Qkv> {
        let (b, n, _) = x.dims3()?;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, self.heads, self.head_size))?;
        let part = |i: usize| qkv.get_on_dim(2, i);
        let (mut q, mut k, v) = (part(0)?, part(1)?, part(2)?);
        if let Some((nq, nk)) = &self.norms {
            q = nq.forward(&q)?;
            k = nk.forward(&k)?;
        }
        let flat = |t: Tensor| t.reshape((b, n, ()));
        Ok(Qkv {
            q: flat(q)?,
            k: flat(k)?,
            v,
        })
    }
}

/// Scaled dot-product attention of `qkv` (queries and keys B, N, heads ×
/// d; values that or B, N, heads, d) over all its tokens; (B, N, heads × d).
fn attention(qkv: &Qkv, heads: usize) -> Result<Tensor> {
    let (b, n, width) = qkv.q.dims3()?;
    let d = width / heads;
    let split = |t: &Tensor| t.reshape((b, n, heads, d))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(&qkv.q)?, split(&qkv.k)?, split(&qkv.v)?);
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let weights = candle_nn::ops::softmax_last_dim(&scores)?;
    weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, width))
}
