//! The CLIP text encoders of Stable Diffusion XL and 3 (CLIP-L and CLIP-G,
//! with their text projections where they have one), one implementation for
//! the real sizes and the tiny one. Both read the *penultimate* layer's
//! hidden states and the (projected) pooled output, which candle's CLIP models do not both give for
//! both activations (candle's configurable CLIP has no exact GELU, its
//! Stable Diffusion CLIP cannot be configured to a small size); the layout
//! is transformers' `CLIPTextModelWithProjection`, so real files load as
//! they are.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_nn::{embedding, layer_norm, linear, linear_no_bias, Embedding, LayerNorm, Linear};

/// A CLIP text encoder's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Width (`hidden_size`).
    pub width: usize,
    /// Layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Positions (77).
    pub positions: usize,
    /// `quick_gelu` (CLIP-L) rather than exact `gelu` (CLIP-G).
    pub quick_gelu: bool,
    /// `projection_dim` of the text projection.
    pub projection: usize,
    /// Whether it has the text projection (`CLIPTextModelWithProjection`;
    /// SDXL's first encoder is a plain `CLIPTextModel`).
    pub projected: bool,
    /// The padding token (`<|endoftext|>` for CLIP-L, `!` for CLIP-G).
    pub pad: String,
}

impl ClipConfig {
    /// openai/clip-vit-large-patch14's text model (SD3's `text_encoder`).
    pub fn large() -> ClipConfig {
        ClipConfig {
            vocab: 49408,
            width: 768,
            layers: 12,
            heads: 12,
            intermediate: 3072,
            positions: 77,
            quick_gelu: true,
            projection: 768,
            projected: true,
            pad: "<|endoftext|>".into(),
        }
    }

    /// laion's CLIP ViT-bigG text model (SD3's `text_encoder_2`).
    pub fn big_g() -> ClipConfig {
        ClipConfig {
            vocab: 49408,
            width: 1280,
            layers: 32,
            heads: 20,
            intermediate: 5120,
            positions: 77,
            quick_gelu: false,
            projection: 1280,
            projected: true,
            pad: "!".into(),
        }
    }
}

struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A loaded CLIP text encoder with projection.
pub struct Clip {
    cfg: ClipConfig,
    tokens: Embedding,
    positions: Embedding,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    projection: Option<Linear>,
}

/// What SD3 takes from one CLIP: the penultimate layer's hidden states
/// (batch, seq, width) and the projected pooled output (batch, projection).
pub struct ClipOutput {
    /// Hidden states after the second-to-last layer (not normalised).
    pub penultimate: Tensor,
    /// Hidden states after the last layer and the final norm
    /// (transformers' `last_hidden_state`: what SD 1.x/2.x read).
    pub last: Tensor,
    /// The final-normalised state at the end token, projected (when the
    /// encoder has a projection).
    pub pooled: Tensor,
}

impl Clip {
    /// Builds the encoder; `vb` is the root of its weight file.
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Clip> {
        let t = vb.pp("text_model");
        let w = cfg.width;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let l = t.pp(format!("encoder.layers.{i}"));
            let a = l.pp("self_attn");
            layers.push(Layer {
                ln1: layer_norm(w, 1e-5, l.pp("layer_norm1"))?,
                q: linear(w, w, a.pp("q_proj"))?,
                k: linear(w, w, a.pp("k_proj"))?,
                v: linear(w, w, a.pp("v_proj"))?,
                out: linear(w, w, a.pp("out_proj"))?,
                ln2: layer_norm(w, 1e-5, l.pp("layer_norm2"))?,
                fc1: linear(w, cfg.intermediate, l.pp("mlp.fc1"))?,
                fc2: linear(cfg.intermediate, w, l.pp("mlp.fc2"))?,
            });
        }
        Ok(Clip {
            tokens: embedding(cfg.vocab, w, t.pp("embeddings.token_embedding"))?,
            positions: embedding(cfg.positions, w, t.pp("embeddings.position_embedding"))?,
            layers,
            final_ln: layer_norm(w, 1e-5, t.pp("final_layer_norm"))?,
            projection: if cfg.projected {
                Some(linear_no_bias(w, cfg.projection, vb.pp("text_projection"))?)
            } else {
                None
            },
            cfg: cfg.clone(),
        })
    }

    fn attention(&self, l: &Layer, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, n, w) = x.dims3()?;
        let h = self.cfg.heads;
        let d = w / h;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, h, d))?.transpose(1, 2)?.contiguous()
        };
        let q = split((l.q.forward(x)? * (d as f64).powf(-0.5))?)?;
        let k = split(l.k.forward(x)?)?;
        let v = split(l.v.forward(x)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        let o = p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, w))?;
        l.out.forward(&o)
    }

    fn mlp(&self, l: &Layer, x: &Tensor) -> Result<Tensor> {
        let x = l.fc1.forward(x)?;
        let x = if self.cfg.quick_gelu {
            (&x * candle_nn::ops::sigmoid(&(&x * 1.702)?)?)?
        } else {
            x.gelu_erf()?
        };
        l.fc2.forward(&x)
    }

    /// Encodes token ids (batch, seq); `eos` is the end token's position.
    pub fn encode(&self, ids: &Tensor, eos: usize) -> Result<ClipOutput> {
        let (_, n) = ids.dims2()?;
        let dev = ids.device();
        let pos = Tensor::arange(0u32, n as u32, dev)?;
        let mut x = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.positions.forward(&pos)?)?;
        let mask = causal_mask(n, x.dtype(), dev)?;
        let mut penultimate = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            let a = self.attention(l, &l.ln1.forward(&x)?, &mask)?;
            x = (x + a)?;
            let m = self.mlp(l, &l.ln2.forward(&x)?)?;
            x = (x + m)?;
            if i + 2 == self.layers.len() {
                penultimate = x.clone();
            }
        }
        let last = self.final_ln.forward(&x)?;
        let end = last.narrow(1, eos, 1)?.squeeze(1)?;
        let pooled = match &self.projection {
            Some(p) => p.forward(&end)?,
            None => end,
        };
        Ok(ClipOutput {
            penultimate,
            pooled,
            last,
        })
    }
}

fn causal_mask(n: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(v, (n, n), dev)?
        .to_dtype(dtype)?
        .unsqueeze(0)?
        .unsqueeze(0)
}
