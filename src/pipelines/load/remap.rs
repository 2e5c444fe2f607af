//! Loading a model whose code names its tensors one way from files that
//! name them another: candle's FLUX transformer asks for Black Forest Labs'
//! single-file names (`double_blocks.0.img_attn.qkv.weight`), while the
//! diffusers folders people download split that tensor into `to_q`, `to_k`
//! and `to_v`. [`Remap`] answers each request from the diffusers tensors —
//! renamed, concatenated or with halves swapped — so the real files load as
//! they are, with no conversion step and no second copy on disk.
//!
//! The same backend writes the tiny models: over a seeded source it invents
//! each diffusers tensor once and the source saves them under the diffusers
//! names, so the tiny files have the real layout.

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use std::sync::Arc;

/// Where one requested tensor comes from in the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Another name, same shape.
    Name(String),
    /// Rows concatenated from several tensors (dimension 0), each with its
    /// number of rows (`to_q`, `to_k`, `to_v` into one `qkv`).
    Rows(Vec<(String, usize)>),
    /// Another name with its two halves (dimension 0) swapped: diffusers
    /// orders a final modulation as (scale, shift), the originals as
    /// (shift, scale).
    SwapHalves(String),
}

/// The renaming rule: requested name and shape → where it is in the files.
pub type Rule = Arc<dyn Fn(&str, &[usize]) -> Result<Source> + Send + Sync>;

/// A var-builder backend that serves one naming from files in another.
pub struct Remap {
    inner: Box<dyn SimpleBackend>,
    rule: Rule,
}

impl Remap {
    /// Serves requests through `rule` from `inner` (the files, or a seeded source).
    pub fn new(inner: Box<dyn SimpleBackend>, rule: Rule) -> Remap {
        Remap { inner, rule }
    }
}

/// The tensors (name, shape) a source reads for a request of shape `dims`.
pub fn reads(source: &Source, dims: &[usize]) -> Vec<(String, Vec<usize>)> {
    match source {
        Source::Name(n) | Source::SwapHalves(n) => vec![(n.clone(), dims.to_vec())],
        Source::Rows(parts) => parts
            .iter()
            .map(|(n, rows)| {
                let mut d = dims.to_vec();
                if let Some(first) = d.first_mut() {
                    *first = *rows;
                }
                (n.clone(), d)
            })
            .collect(),
    }
}

impl SimpleBackend for Remap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let dims = s.dims().to_vec();
        let source = (self.rule)(name, &dims)?;
        if let Source::Rows(parts) = &source {
            let total: usize = parts.iter().map(|(_, r)| r).sum();
            if dims.first() != Some(&total) {
                candle_core::bail!(
                    "{name}: the parts have {total} rows, the model asks for {dims:?}"
                );
            }
        }
        let t = match source {
            Source::Name(n) => self.inner.get(s.clone(), &n, h, dtype, dev)?,
            Source::SwapHalves(n) => {
                let t = self.inner.get(s.clone(), &n, h, dtype, dev)?;
                let half = dims.first().copied().unwrap_or(0) / 2;
                Tensor::cat(&[t.narrow(0, half, half)?, t.narrow(0, 0, half)?], 0)?
            }
            Source::Rows(_) => {
                let mut pieces = Vec::new();
                for (n, d) in reads(&source, &dims) {
                    pieces.push(self.inner.get(Shape::from(d), &n, h, dtype, dev)?);
                }
                Tensor::cat(&pieces, 0)?
            }
        };
        if t.dims() != dims.as_slice() {
            candle_core::bail!("{name}: shape {:?}, expected {dims:?}", t.dims());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("{name}: requested without a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match (self.rule)(name, &[]) {
            Ok(Source::Name(n)) | Ok(Source::SwapHalves(n)) => self.inner.contains_tensor(&n),
            Ok(Source::Rows(parts)) => parts.iter().all(|(n, _)| self.inner.contains_tensor(n)),
            Err(_) => false,
        }
    }
}

/// Splits `a.b.c.weight` into (`a.b.c`, `weight`).
fn split_param(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap_or(("", name))
}

/// `prefix.N.rest` → (N, rest).
fn indexed<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('.')?;
    let (n, rest) = rest.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

/// The FLUX.1 transformer: Black Forest Labs' names (what candle's
/// `flux::model::Flux` asks for) → diffusers' `FluxTransformer2DModel`
/// names (what `transformer/` holds). `hidden` is the model width; the
/// single blocks' first linear layer is q, k, v (`hidden` rows each) and the
/// MLP's input projection (the rest).
pub fn flux_rule(hidden: usize) -> Rule {
    Arc::new(move |name: &str, dims: &[usize]| {
        let unknown = || candle_core::Error::Msg(format!("FLUX transformer: no rule for {name}"));
        let (module, param) = split_param(name);
        let to = |m: &str| Ok(Source::Name(format!("{m}.{param}")));
        let three = |a: &str, b: &str, c: &str, p: &str| {
            Ok(Source::Rows(
                [a, b, c]
                    .iter()
                    .map(|m| (format!("{p}.{m}.{param}"), hidden))
                    .collect(),
            ))
        };
        let fixed = match module {
            "img_in" => Some("x_embedder"),
            "txt_in" => Some("context_embedder"),
            "time_in.in_layer" => Some("time_text_embed.timestep_embedder.linear_1"),
            "time_in.out_layer" => Some("time_text_embed.timestep_embedder.linear_2"),
            "vector_in.in_layer" => Some("time_text_embed.text_embedder.linear_1"),
            "vector_in.out_layer" => Some("time_text_embed.text_embedder.linear_2"),
            "guidance_in.in_layer" => Some("time_text_embed.guidance_embedder.linear_1"),
            "guidance_in.out_layer" => Some("time_text_embed.guidance_embedder.linear_2"),
            "final_layer.linear" => Some("proj_out"),
            _ => None,
        };
        if let Some(m) = fixed {
            return to(m);
        }
        if module == "final_layer.adaLN_modulation.1" {
            return Ok(Source::SwapHalves(format!("norm_out.linear.{param}")));
        }
        if let Some((i, rest)) = indexed(name, "double_blocks") {
            let p = format!("transformer_blocks.{i}");
            let (m, _) = split_param(rest);
            let local = match m {
                "img_mod.lin" => "norm1.linear",
                "txt_mod.lin" => "norm1_context.linear",
                "img_attn.qkv" => return three("to_q", "to_k", "to_v", &format!("{p}.attn")),
                "txt_attn.qkv" => {
                    return three(
                        "add_q_proj",
                        "add_k_proj",
                        "add_v_proj",
                        &format!("{p}.attn"),
                    )
                }
                "img_attn.norm.query_norm" => "attn.norm_q",
                "img_attn.norm.key_norm" => "attn.norm_k",
                "txt_attn.norm.query_norm" => "attn.norm_added_q",
                "txt_attn.norm.key_norm" => "attn.norm_added_k",
                "img_attn.proj" => "attn.to_out.0",
                "txt_attn.proj" => "attn.to_add_out",
                "img_mlp.0" => "ff.net.0.proj",
                "img_mlp.2" => "ff.net.2",
                "txt_mlp.0" => "ff_context.net.0.proj",
                "txt_mlp.2" => "ff_context.net.2",
                _ => return Err(unknown()),
            };
            return Ok(Source::Name(norm_param(&format!("{p}.{local}"), param)));
        }
        if let Some((i, rest)) = indexed(name, "single_blocks") {
            let p = format!("single_transformer_blocks.{i}");
            let (m, _) = split_param(rest);
            let local = match m {
                "modulation.lin" => "norm.linear",
                "linear1" => {
                    // Without a shape (a `contains` query) the MLP rows are unknown.
                    let mlp = dims.first().map_or(0, |r| r.saturating_sub(3 * hidden));
                    let mut parts: Vec<(String, usize)> = ["to_q", "to_k", "to_v"]
                        .iter()
                        .map(|q| (format!("{p}.attn.{q}.{param}"), hidden))
                        .collect();
                    parts.push((format!("{p}.proj_mlp.{param}"), mlp));
                    return Ok(Source::Rows(parts));
                }
                "linear2" => "proj_out",
                "norm.query_norm" => "attn.norm_q",
                "norm.key_norm" => "attn.norm_k",
                _ => return Err(unknown()),
            };
            return Ok(Source::Name(norm_param(&format!("{p}.{local}"), param)));
        }
        Err(unknown())
    })
}

/// The Stable Diffusion 3 / 3.5 MMDiT: Stability AI's single-file names
/// (what candle's `mmdit::model::MMDiT` asks for) → diffusers'
/// `SD3Transformer2DModel` names (what `transformer/` holds). `hidden` is
/// the model width, `depth` its number of joint blocks (the last one's
/// context half only makes q, k and v, and its modulation is stored with
/// the halves swapped, like the final layer's).
pub fn mmdit_rule(hidden: usize, depth: usize) -> Rule {
    Arc::new(move |name: &str, _dims: &[usize]| {
        let unknown = || candle_core::Error::Msg(format!("SD3 transformer: no rule for {name}"));
        if name == "pos_embed" {
            return Ok(Source::Name("pos_embed.pos_embed".into()));
        }
        let (module, param) = split_param(name);
        let to = |m: &str| Ok(Source::Name(format!("{m}.{param}")));
        let fixed = match module {
            "x_embedder.proj" => Some("pos_embed.proj"),
            "t_embedder.mlp.0" => Some("time_text_embed.timestep_embedder.linear_1"),
            "t_embedder.mlp.2" => Some("time_text_embed.timestep_embedder.linear_2"),
            "y_embedder.mlp.0" => Some("time_text_embed.text_embedder.linear_1"),
            "y_embedder.mlp.2" => Some("time_text_embed.text_embedder.linear_2"),
            "context_embedder" => Some("context_embedder"),
            "final_layer.linear" => Some("proj_out"),
            _ => None,
        };
        if let Some(m) = fixed {
            return to(m);
        }
        if module == "final_layer.adaLN_modulation.1" {
            return Ok(Source::SwapHalves(format!("norm_out.linear.{param}")));
        }
        let Some((i, rest)) = indexed(name, "joint_blocks") else {
            return Err(unknown());
        };
        let p = format!("transformer_blocks.{i}");
        let (m, _) = split_param(rest);
        let qkv = |attn: &str, q: &str, k: &str, v: &str| {
            Ok(Source::Rows(
                [q, k, v]
                    .iter()
                    .map(|x| (format!("{p}.{attn}.{x}.{param}"), hidden))
                    .collect(),
            ))
        };
        let local = match m {
            "x_block.attn.qkv" => return qkv("attn", "to_q", "to_k", "to_v"),
            "context_block.attn.qkv" => {
                return qkv("attn", "add_q_proj", "add_k_proj", "add_v_proj")
            }
            "x_block.attn2.qkv" => return qkv("attn2", "to_q", "to_k", "to_v"),
            "context_block.adaLN_modulation.1" if i + 1 == depth => {
                return Ok(Source::SwapHalves(format!(
                    "{p}.norm1_context.linear.{param}"
                )))
            }
            "x_block.attn.ln_q" => "attn.norm_q",
            "x_block.attn.ln_k" => "attn.norm_k",
            "context_block.attn.ln_q" => "attn.norm_added_q",
            "context_block.attn.ln_k" => "attn.norm_added_k",
            "x_block.attn2.ln_q" => "attn2.norm_q",
            "x_block.attn2.ln_k" => "attn2.norm_k",
            "x_block.attn.proj" => "attn.to_out.0",
            "context_block.attn.proj" => "attn.to_add_out",
            "x_block.attn2.proj" => "attn2.to_out.0",
            "x_block.adaLN_modulation.1" => "norm1.linear",
            "context_block.adaLN_modulation.1" => "norm1_context.linear",
            "x_block.mlp.fc1" => "ff.net.0.proj",
            "x_block.mlp.fc2" => "ff.net.2",
            "context_block.mlp.fc1" => "ff_context.net.0.proj",
            "context_block.mlp.fc2" => "ff_context.net.2",
            _ => return Err(unknown()),
        };
        Ok(Source::Name(format!("{p}.{local}.{param}")))
    })
}

/// RMS-norm scales are `scale` in the originals and `weight` in diffusers.
fn norm_param(module: &str, param: &str) -> String {
    let param = if param == "scale" { "weight" } else { param };
    format!("{module}.{param}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pipelines::sd::model::tests::Lazy;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    /// Answers candle's requests with zero broadcasts and records, in
    /// `files`, what the rule reads from the files for each: a real-size
    /// transformer is checked against its files' layout without allocating
    /// it. A tensor exists when every file tensor it is made of is in
    /// `published` (all exist when it is `None`).
    pub(crate) struct Planned {
        pub(crate) rule: Rule,
        pub(crate) files: Lazy,
        pub(crate) published: Option<BTreeSet<String>>,
    }

    impl SimpleBackend for Planned {
        fn get(&self, s: Shape, name: &str, h: Init, dt: DType, dev: &Device) -> Result<Tensor> {
            let source = (self.rule)(name, s.dims())?;
            for (n, d) in reads(&source, s.dims()) {
                self.files.get(Shape::from(d), &n, h, dt, dev)?;
            }
            Tensor::zeros((), dt, dev)?.broadcast_as(s)
        }
        fn get_unchecked(&self, n: &str, _: DType, _: &Device) -> Result<Tensor> {
            candle_core::bail!("{n}")
        }
        fn contains_tensor(&self, name: &str) -> bool {
            let Some(published) = &self.published else {
                return true;
            };
            match (self.rule)(name, &[]) {
                Ok(source) => reads(&source, &[0])
                    .iter()
                    .all(|(n, _)| published.contains(n)),
                Err(_) => false,
            }
        }
    }

    /// Tensors by name, each row filled with its row number plus an offset
    /// per name, so a concatenation's order is visible.
    #[derive(Default)]
    struct Store(Mutex<BTreeMap<String, Vec<usize>>>);

    impl SimpleBackend for Store {
        fn get(&self, s: Shape, name: &str, _: Init, dt: DType, dev: &Device) -> Result<Tensor> {
            self.0
                .lock()
                .unwrap()
                .insert(name.to_string(), s.dims().to_vec());
            let rows = s.dims()[0];
            let base = name.len() as f32 * 100.0;
            let v: Vec<f32> = (0..rows).map(|r| base + r as f32).collect();
            Tensor::from_vec(v, rows, dev)?.to_dtype(dt)?.reshape(s)
        }
        fn get_unchecked(&self, n: &str, _: DType, _: &Device) -> Result<Tensor> {
            candle_core::bail!("{n}")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    fn rule(name: &str, dims: &[usize]) -> Source {
        flux_rule(4)(name, dims).unwrap()
    }

    #[test]
    fn flux_names_map_to_diffusers_names() {
        assert_eq!(
            rule("img_in.weight", &[4, 64]),
            Source::Name("x_embedder.weight".into())
        );
        assert_eq!(
            rule("double_blocks.3.txt_attn.norm.key_norm.scale", &[2]),
            Source::Name("transformer_blocks.3.attn.norm_added_k.weight".into())
        );
        assert_eq!(
            rule("double_blocks.0.img_attn.qkv.bias", &[12]),
            Source::Rows(vec![
                ("transformer_blocks.0.attn.to_q.bias".into(), 4),
                ("transformer_blocks.0.attn.to_k.bias".into(), 4),
                ("transformer_blocks.0.attn.to_v.bias".into(), 4),
            ])
        );
        assert_eq!(
            rule("single_blocks.7.linear1.weight", &[28, 4]),
            Source::Rows(vec![
                ("single_transformer_blocks.7.attn.to_q.weight".into(), 4),
                ("single_transformer_blocks.7.attn.to_k.weight".into(), 4),
                ("single_transformer_blocks.7.attn.to_v.weight".into(), 4),
                ("single_transformer_blocks.7.proj_mlp.weight".into(), 16),
            ])
        );
        assert_eq!(
            rule("final_layer.adaLN_modulation.1.bias", &[8]),
            Source::SwapHalves("norm_out.linear.bias".into())
        );
        assert!(flux_rule(4)("double_blocks.0.nonsense.weight", &[1]).is_err());
        assert!(flux_rule(4)("something_else.weight", &[1]).is_err());
    }

    #[test]
    fn mmdit_names_map_to_diffusers_names() {
        let r = |n: &str| mmdit_rule(8, 3)(n, &[24, 8]).unwrap();
        assert_eq!(r("pos_embed"), Source::Name("pos_embed.pos_embed".into()));
        assert_eq!(
            r("x_embedder.proj.weight"),
            Source::Name("pos_embed.proj.weight".into())
        );
        assert_eq!(
            r("joint_blocks.1.context_block.attn.ln_k.weight"),
            Source::Name("transformer_blocks.1.attn.norm_added_k.weight".into())
        );
        assert_eq!(
            r("joint_blocks.0.x_block.attn2.qkv.bias"),
            Source::Rows(vec![
                ("transformer_blocks.0.attn2.to_q.bias".into(), 8),
                ("transformer_blocks.0.attn2.to_k.bias".into(), 8),
                ("transformer_blocks.0.attn2.to_v.bias".into(), 8),
            ])
        );
        // Only the last block's context modulation is stored swapped.
        assert_eq!(
            r("joint_blocks.1.context_block.adaLN_modulation.1.weight"),
            Source::Name("transformer_blocks.1.norm1_context.linear.weight".into())
        );
        assert_eq!(
            r("joint_blocks.2.context_block.adaLN_modulation.1.weight"),
            Source::SwapHalves("transformer_blocks.2.norm1_context.linear.weight".into())
        );
        assert!(mmdit_rule(8, 3)("joint_blocks.0.x_block.nope.weight", &[1]).is_err());
    }

    #[test]
    fn rows_are_concatenated_in_order_and_halves_swapped() {
        let r = Remap::new(Box::new(Store::default()), flux_rule(2));
        let get = |n: &str, d: &[usize]| {
            r.get(
                Shape::from(d.to_vec()),
                n,
                Init::Const(0.),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
        };
        let q = "transformer_blocks.0.attn.to_q.bias".len() as f32 * 100.0;
        let k = "transformer_blocks.0.attn.to_k.bias".len() as f32 * 100.0;
        assert_eq!(
            get("double_blocks.0.img_attn.qkv.bias", &[6]),
            [q, q + 1.0, k, k + 1.0, k, k + 1.0],
            "q's rows, then k's, then v's (k and v names have the same length)"
        );
        let n = "norm_out.linear.bias".len() as f32 * 100.0;
        assert_eq!(
            get("final_layer.adaLN_modulation.1.bias", &[4]),
            [n + 2.0, n + 3.0, n, n + 1.0]
        );
        let e = r
            .get(
                Shape::from(vec![5]),
                "double_blocks.0.img_attn.qkv.bias",
                Init::Const(0.),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap_err();
        assert!(e.to_string().contains("6 rows"), "{e}");
    }
}
