//! The UNet's spatial transformer (diffusers' `Transformer2DModel` with
//! `BasicTransformerBlock`s), as diffusers computes it.
//!
//! Why not candle's: its feed-forward gate uses the tanh approximation of
//! GELU where diffusers' GEGLU uses the exact one (`F.gelu`), a difference
//! of about 1e-3 in every transformer layer. The attention itself is
//! candle's `CrossAttention` (the same computation as diffusers').

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{self as nn, VarBuilder};
use candle_transformers::models::stable_diffusion::attention::CrossAttention;

/// The feed-forward layer: GEGLU (a linear layer to twice the inner width,
/// one half gated by the exact GELU of the other) and a linear layer back.
struct FeedForward {
    proj: nn::Linear,
    out: nn::Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<FeedForward> {
        let inner = dim * 4;
        Ok(FeedForward {
            proj: nn::linear(dim, inner * 2, vb.pp("net.0.proj"))?,
            out: nn::linear(inner, dim, vb.pp("net.2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let both = self.proj.forward(x)?;
        let halves = both.chunk(2, D::Minus1)?;
        let (hidden, gate) = (&halves[0], &halves[1]);
        self.out.forward(&(hidden * gate.gelu_erf()?)?)
    }
}

/// Self-attention, cross-attention to the text, feed-forward; each after a
/// layer norm and added to its input.
struct Block {
    norm1: nn::LayerNorm,
    attn1: CrossAttention,
    norm2: nn::LayerNorm,
    attn2: CrossAttention,
    norm3: nn::LayerNorm,
    ff: FeedForward,
}

impl Block {
    fn new(vb: VarBuilder, dim: usize, heads: usize, context_dim: usize) -> Result<Block> {
        let head = dim / heads;
        Ok(Block {
            norm1: nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: CrossAttention::new(vb.pp("attn1"), dim, None, heads, head, None, false)?,
            norm2: nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: CrossAttention::new(
                vb.pp("attn2"),
                dim,
                Some(context_dim),
                heads,
                head,
                None,
                false,
            )?,
            norm3: nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context))?
            + x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + x
    }
}

/// Projection in and out of the transformer: a 1×1 convolution (SD 1.x)
/// or a linear layer (SD 2.x, XL).
enum Proj {
    Conv(nn::Conv2d),
    Linear(nn::Linear),
}

/// A spatial transformer over a feature map (`attentions.N` of a block).
pub struct SpatialTransformer {
    norm: nn::GroupNorm,
    proj_in: Proj,
    blocks: Vec<Block>,
    proj_out: Proj,
}

/// What a spatial transformer is built from.
#[derive(Debug, Clone, Copy)]
pub struct TransformerConfig {
    /// Channels of the feature map (and the transformer's width).
    pub channels: usize,
    /// Attention heads.
    pub heads: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Groups of its group norm.
    pub groups: usize,
    /// Width of the text embeddings.
    pub context_dim: usize,
    /// Linear projections (else 1×1 convolutions).
    pub linear: bool,
}

impl SpatialTransformer {
    /// Builds it from `vb` (its `attentions.N` prefix).
    pub fn new(vb: VarBuilder, c: TransformerConfig) -> Result<SpatialTransformer> {
        let proj = |name: &str| -> Result<Proj> {
            Ok(if c.linear {
                Proj::Linear(nn::linear(c.channels, c.channels, vb.pp(name))?)
            } else {
                Proj::Conv(nn::conv2d(
                    c.channels,
                    c.channels,
                    1,
                    Default::default(),
                    vb.pp(name),
                )?)
            })
        };
        let blocks = (0..c.depth)
            .map(|i| {
                Block::new(
                    vb.pp("transformer_blocks").pp(i),
                    c.channels,
                    c.heads,
                    c.context_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SpatialTransformer {
            norm: nn::group_norm(c.groups, c.channels, 1e-6, vb.pp("norm"))?,
            proj_in: proj("proj_in")?,
            blocks,
            proj_out: proj("proj_out")?,
        })
    }

    /// The feature map `x` (batch, channels, h, w) attended over itself and
    /// `context`, added to `x`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let y = self.norm.forward(x)?;
        // (b, c, h, w) → (b, h·w, c), projected before or after.
        let tokens = |t: &Tensor| t.permute((0, 2, 3, 1))?.reshape((b, h * w, c));
        let mut y = match &self.proj_in {
            Proj::Conv(p) => tokens(&p.forward(&y)?)?,
            Proj::Linear(p) => p.forward(&tokens(&y)?)?,
        };
        for block in &self.blocks {
            y = block.forward(&y, context)?;
        }
        let map = |t: &Tensor| t.reshape((b, h, w, c))?.permute((0, 3, 1, 2));
        let y = match &self.proj_out {
            Proj::Conv(p) => p.forward(&map(&y)?.contiguous()?)?,
            Proj::Linear(p) => map(&p.forward(&y)?)?,
        };
        y + x
    }
}
