//! Finding a model's files: the tiny built-in models, the Hugging Face hub
//! cache (`HF_HOME`, `HF_HUB_OFFLINE=1`), or a local folder in the diffusers
//! layout — and recording exactly which weights were used.
//!
//! Air-gapped boxes have no hub: when files are missing the error lists every
//! one of them and says how to fill the cache on a connected machine.

use crate::error::{Error, Result};
use crate::format::sha256_hex;
use crate::pipelines::arch::Arch;
use crate::pipelines::flow::flux_model::{FluxConfig, FluxFiles};
use crate::pipelines::flow::sd3_model::{Sd3Config, Sd3Files};
use crate::pipelines::sd::model::{Family, ModelConfig};
use crate::pipelines::tiny::{self, TinyModel};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

const CLIP_TOKENIZER: (&str, &str) = ("openai/clip-vit-base-patch32", "tokenizer.json");
const BIGG_TOKENIZER: (&str, &str) = ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "tokenizer.json");

/// The model names `--model` knows besides hub ids and folders.
pub const PRESETS: [&str; 22] = [
    "tiny",
    "tiny-xl",
    "tiny-xl-refiner",
    "tiny-inpaint",
    "tiny-flux",
    "tiny-flux-dev",
    "tiny-sd3",
    "flux-schnell",
    "flux-dev",
    "sd3-medium",
    "sd35-medium",
    "sd35-large",
    "sd35-large-turbo",
    "sd15",
    "sd21",
    "sdxl",
    "sdxl-refiner",
    "sd-turbo",
    "sdxl-turbo",
    "sd15-inpaint",
    "sd2-inpaint",
    "sdxl-inpaint",
];

/// A model's files and what they are.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// Architecture and defaults.
    pub config: ModelConfig,
    /// The id as recorded (`tiny`, a hub id, or a folder path).
    pub model_id: String,
    /// Hub revision (commit), when loaded from the hub cache.
    pub revision: Option<String>,
    /// Text encoder weights and tokenizers, in order.
    pub text: Vec<(PathBuf, PathBuf)>,
    /// UNet weights.
    pub unet: PathBuf,
    /// VAE weights.
    pub vae: PathBuf,
    /// Per component: file and SHA-256 (`unet` → {file, sha256}, …).
    pub files: Map<String, Value>,
    /// One digest over every weight and tokenizer file.
    pub weights_digest: String,
    /// `random:<preset>`: no weight files; the modules are built with
    /// seeded random weights on the device (this seed).
    pub seeded: Option<u64>,
}

/// A FLUX model's files and what they are.
#[derive(Debug, Clone)]
pub struct ResolvedFlux {
    /// Architecture and defaults.
    pub config: FluxConfig,
    /// The id as recorded.
    pub model_id: String,
    /// Hub revision (commit), when loaded from the hub cache.
    pub revision: Option<String>,
    /// Where each component's files are.
    pub paths: FluxFiles,
    /// Per component: file(s) and SHA-256.
    pub files: Map<String, Value>,
    /// One digest over every weight and tokenizer file.
    pub weights_digest: String,
}

/// An SD3 / SD3.5 model's files and what they are.
#[derive(Debug, Clone)]
pub struct ResolvedSd3 {
    /// Architecture and defaults.
    pub config: Sd3Config,
    /// The id as recorded.
    pub model_id: String,
    /// Hub revision (commit), when loaded from the hub cache.
    pub revision: Option<String>,
    /// Where each component's files are.
    pub paths: Sd3Files,
    /// Per component: file(s) and SHA-256.
    pub files: Map<String, Value>,
    /// One digest over every weight and tokenizer file.
    pub weights_digest: String,
}

/// A resolved model of any architecture.
// Built once per model load: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum AnyModel {
    /// A Stable Diffusion (UNet) model.
    Unet(ResolvedModel),
    /// A FLUX.1 model.
    Flux(Box<ResolvedFlux>),
    /// An SD3 / SD3.5 model.
    Sd3(Box<ResolvedSd3>),
}

/// Seed of the `random:<preset>` models (one fixed seed: the same weights
/// everywhere, so runs on different machines compare).
pub const SEEDED_MODEL_SEED: u64 = 0x5eed_5eed;

fn hub_preset(name: &str) -> Option<(&'static str, Arch)> {
    let flux = |c: FluxConfig| Arch::Flux(Box::new(c));
    let sd3 = |c: Sd3Config| Arch::Sd3(Box::new(c));
    let unet = Arch::Unet;
    Some(match name {
        "sd15" => (
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            unet(ModelConfig::sd15()),
        ),
        "sd21" => (
            "stabilityai/stable-diffusion-2-1",
            unet(ModelConfig::sd21()),
        ),
        "sd-turbo" => ("stabilityai/sd-turbo", unet(ModelConfig::sd_turbo())),
        "sdxl" => (
            "stabilityai/stable-diffusion-xl-base-1.0",
            unet(ModelConfig::sdxl()),
        ),
        "sdxl-turbo" => ("stabilityai/sdxl-turbo", unet(ModelConfig::sdxl_turbo())),
        "sdxl-refiner" => (
            "stabilityai/stable-diffusion-xl-refiner-1.0",
            unet(ModelConfig::sdxl_refiner()),
        ),
        "sd15-inpaint" => (
            "stable-diffusion-v1-5/stable-diffusion-inpainting",
            unet(ModelConfig::sd15_inpaint()),
        ),
        "sd2-inpaint" => (
            "stabilityai/stable-diffusion-2-inpainting",
            unet(ModelConfig::sd2_inpaint()),
        ),
        "sdxl-inpaint" => (
            "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
            unet(ModelConfig::sdxl_inpaint()),
        ),
        "flux-schnell" => (
            "black-forest-labs/FLUX.1-schnell",
            flux(FluxConfig::schnell()),
        ),
        "flux-dev" => ("black-forest-labs/FLUX.1-dev", flux(FluxConfig::dev())),
        "sd3-medium" => (
            "stabilityai/stable-diffusion-3-medium-diffusers",
            sd3(Sd3Config::sd3_medium()),
        ),
        "sd35-medium" => (
            "stabilityai/stable-diffusion-3.5-medium",
            sd3(Sd3Config::sd35_medium()),
        ),
        "sd35-large" => (
            "stabilityai/stable-diffusion-3.5-large",
            sd3(Sd3Config::sd35_large()),
        ),
        "sd35-large-turbo" => (
            "stabilityai/stable-diffusion-3.5-large-turbo",
            sd3(Sd3Config::sd35_large_turbo()),
        ),
        _ => return None,
    })
}

fn tiny_preset(name: &str) -> Option<TinyModel> {
    match name {
        "tiny" => Some(TinyModel::Sd),
        "tiny-xl" => Some(TinyModel::Xl),
        "tiny-xl-refiner" => Some(TinyModel::XlRefiner),
        "tiny-inpaint" => Some(TinyModel::Inpaint),
        "tiny-flux" => Some(TinyModel::Flux),
        "tiny-flux-dev" => Some(TinyModel::FluxDev),
        "tiny-sd3" => Some(TinyModel::Sd3),
        _ => None,
    }
}

/// The refiner that goes with a base model, if it has one.
pub fn refiner_for(model: &str, family: Family) -> Option<&'static str> {
    match (model, family) {
        ("tiny-xl", _) => Some("tiny-xl-refiner"),
        (_, Family::Xl) => Some("sdxl-refiner"),
        _ => None,
    }
}

/// Resolves `--model` to a Stable Diffusion (UNet) model; a FLUX model is
/// refused with a pointer to [`resolve_any`].
pub fn resolve(spec: &str) -> Result<ResolvedModel> {
    match resolve_any(spec)? {
        AnyModel::Unet(m) => Ok(m),
        AnyModel::Flux(m) => Err(Error::Weights(format!(
            "model {}: a FLUX.1 model, not a UNet one",
            m.model_id
        ))),
        AnyModel::Sd3(m) => Err(Error::Weights(format!(
            "model {}: a Stable Diffusion 3 model, not a UNet one",
            m.model_id
        ))),
    }
}

/// Resolves `--model`: a preset, a local folder, or a hub id, of any architecture.
pub fn resolve_any(spec: &str) -> Result<AnyModel> {
    if let Some(preset) = spec.strip_prefix("random:") {
        return seeded_model(spec, preset).map(AnyModel::Unet);
    }
    if let Some(t) = tiny_preset(spec) {
        let dir = tiny::ensure(t)?;
        return from_folder(&dir, t.arch(), t.id().to_string());
    }
    if let Some((repo, arch)) = hub_preset(spec) {
        return from_hub_repo(repo, arch);
    }
    let path = Path::new(spec);
    if path.is_dir() {
        let arch = detect_config(path)?;
        return from_folder(path, arch, spec.to_string());
    }
    if spec.contains('/')
        && !spec.starts_with('.')
        && !spec.starts_with('/')
        && spec.split('/').count() == 2
    {
        let cache = hf_hub::Cache::from_env();
        let index = cache.model(spec.to_string()).get("model_index.json");
        let arch = match index {
            Some(p) => detect_config(p.parent().unwrap_or(Path::new(".")))?,
            None => {
                return Err(Error::Weights(format!(
                    "model {spec}: not in the Hugging Face cache ({}); {}",
                    cache.path().display(),
                    fill_cache_help(&[(spec.to_string(), "model_index.json".to_string())])
                )))
            }
        };
        return from_hub_repo(spec, arch);
    }
    Err(Error::Weights(format!(
        "unknown model {spec:?}: expected one of {}, a Hugging Face id (org/name), or a folder in the diffusers layout",
        PRESETS.join(", ")
    )))
}

/// Reads a diffusers folder's `model_index.json` (and UNet or transformer
/// config) to pick the architecture.
fn detect_config(dir: &Path) -> Result<Arch> {
    let index_path = dir.join("model_index.json");
    let text = read_small(&index_path).map_err(|e| {
        Error::Weights(format!(
            "{}: cannot read model_index.json ({e}); a model folder needs the diffusers layout",
            dir.display()
        ))
    })?;
    let index: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Weights(format!("{}: invalid JSON: {e}", index_path.display())))?;
    if let Some(t) = index["_difflog_tiny_model"].as_str().and_then(tiny_preset) {
        return Ok(t.arch());
    }
    let class = index["_class_name"].as_str().unwrap_or("");
    let config = |part: &str| {
        read_small(&dir.join(part).join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .unwrap_or(Value::Null)
    };
    if class.starts_with("Flux") {
        let transformer = config("transformer");
        return match (class, transformer["guidance_embeds"].as_bool()) {
            ("FluxPipeline" | "FluxImg2ImgPipeline", Some(true)) => Ok(Arch::Flux(Box::new(FluxConfig::dev()))),
            ("FluxPipeline" | "FluxImg2ImgPipeline", Some(false)) => {
                Ok(Arch::Flux(Box::new(FluxConfig::schnell())))
            }
            _ => Err(Error::Weights(format!(
                "{}: pipeline class {class:?} with transformer config guidance_embeds = {}: \
                 supported FLUX models are FLUX.1 schnell and dev (FluxPipeline, transformer/config.json)",
                dir.display(),
                transformer["guidance_embeds"]
            ))),
        };
    }
    if class.starts_with("StableDiffusion3") {
        let transformer = config("transformer");
        let layers = transformer["num_layers"].as_u64();
        let dual = transformer["dual_attention_layers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let name = dir.to_string_lossy().to_lowercase();
        return match (class, layers, dual) {
            ("StableDiffusion3Pipeline", Some(24), false) => {
                Ok(Arch::Sd3(Box::new(Sd3Config::sd3_medium())))
            }
            ("StableDiffusion3Pipeline", Some(24), true) => {
                Ok(Arch::Sd3(Box::new(Sd3Config::sd35_medium())))
            }
            // Large and large turbo share the architecture; the turbo's
            // defaults (4 steps, no guidance) go with its name.
            ("StableDiffusion3Pipeline", Some(38), _) if name.contains("turbo") => {
                Ok(Arch::Sd3(Box::new(Sd3Config::sd35_large_turbo())))
            }
            ("StableDiffusion3Pipeline", Some(38), _) => {
                Ok(Arch::Sd3(Box::new(Sd3Config::sd35_large())))
            }
            _ => Err(Error::Weights(format!(
                "{}: pipeline class {class:?} with a {} -layer transformer: supported are \
                 StableDiffusion3Pipeline with SD3 medium, SD3.5 medium, large and large turbo",
                dir.display(),
                transformer["num_layers"]
            ))),
        };
    }
    let unet = config("unet");
    let cross = unet["cross_attention_dim"].as_u64();
    // An inpainting checkpoint is told by its UNet (9 input channels) as
    // much as by its pipeline class.
    let inpaint = class.contains("Inpaint") || unet["in_channels"].as_u64() == Some(9);
    let cfg = match (class, cross, inpaint) {
        ("StableDiffusionXLPipeline" | "StableDiffusionXLInpaintPipeline", _, true) => {
            ModelConfig::sdxl_inpaint()
        }
        ("StableDiffusionXLPipeline", _, false) => ModelConfig::sdxl(),
        ("StableDiffusionXLImg2ImgPipeline", _, _) => ModelConfig::sdxl_refiner(),
        (_, Some(768), true) => ModelConfig::sd15_inpaint(),
        (_, Some(1024), true) => ModelConfig::sd2_inpaint(),
        (_, Some(768), false) => ModelConfig::sd15(),
        (_, Some(1024), false) => ModelConfig::sd21(),
        _ => return Err(Error::Weights(format!(
            "{}: cannot tell the architecture (pipeline class {class:?}, UNet cross-attention dim {cross:?}); \
             supported: SD 1.x, SD 2.x, SDXL base and refiner, their inpainting checkpoints, FLUX.1 and SD3 / 3.5",
            dir.display()
        ))),
    };
    Ok(Arch::Unet(cfg))
}

/// A small JSON file read with a bound (model folders can come from anyone).
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(16 << 20)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// One file (or sharded set) a model needs.
struct Want {
    /// Component key (`unet`, `text_encoder_0`, `tokenizer_1`, …).
    key: String,
    /// Path in the folder; for a sharded weight, the stem (`transformer/diffusion_pytorch_model`).
    rel: String,
    /// Weights that may be split into shards listed by `<stem>.safetensors.index.json`.
    sharded: bool,
}

fn want(key: impl Into<String>, rel: impl Into<String>, sharded: bool) -> Want {
    Want {
        key: key.into(),
        rel: rel.into(),
        sharded,
    }
}

fn needed_files(arch: &Arch) -> Vec<Want> {
    let mut v = Vec::new();
    match arch {
        Arch::Unet(cfg) => {
            for i in 0..cfg.text.len() {
                let (w, t) = cfg.text_files(i);
                v.push(want(format!("text_encoder_{i}"), w, false));
                v.push(want(format!("tokenizer_{i}"), t, false));
            }
            v.push(want("unet", ModelConfig::UNET_FILE, false));
        }
        Arch::Flux(_) => {
            v.push(want("text_encoder_0", "text_encoder/model", true));
            v.push(want("tokenizer_0", "tokenizer/tokenizer.json", false));
            v.push(want("text_encoder_1", "text_encoder_2/model", true));
            v.push(want("tokenizer_1", "tokenizer_2/tokenizer.json", false));
            v.push(want(
                "transformer",
                "transformer/diffusion_pytorch_model",
                true,
            ));
        }
        Arch::Sd3(_) => {
            for (i, n) in ["", "_2", "_3"].iter().enumerate() {
                v.push(want(
                    format!("text_encoder_{i}"),
                    format!("text_encoder{n}/model"),
                    true,
                ));
                v.push(want(
                    format!("tokenizer_{i}"),
                    format!("tokenizer{n}/tokenizer.json"),
                    false,
                ));
            }
            v.push(want(
                "transformer",
                "transformer/diffusion_pytorch_model",
                true,
            ));
        }
    }
    v.push(want("vae", ModelConfig::VAE_FILE, false));
    v
}

/// The shard file names an index lists (`weight_map` values), in order,
/// each a plain `.safetensors` name in the index's folder.
fn shard_names(index: &Path) -> std::result::Result<Vec<String>, String> {
    let text = read_small(index).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
    let map = v["weight_map"].as_object().ok_or("no weight_map object")?;
    let mut names: Vec<String> = Vec::new();
    for f in map.values() {
        let f = f.as_str().ok_or("a weight_map value is not a string")?;
        let plain =
            !f.is_empty() && !f.contains(['/', '\\']) && f != ".." && f.ends_with(".safetensors");
        if !plain {
            return Err(format!(
                "shard {f:?} is not a .safetensors file name in this folder"
            ));
        }
        if !names.iter().any(|n| n == f) {
            names.push(f.to_string());
        }
    }
    names.sort();
    if names.is_empty() {
        return Err("it lists no shard".into());
    }
    Ok(names)
}

/// A file (or a sharded weight: its stem) that could not be found.
struct Missing {
    rel: String,
    sharded: bool,
}

impl Missing {
    fn describe(&self) -> String {
        if self.sharded {
            format!(
                "{0}.safetensors (or {0}.safetensors.index.json and the shards it lists)",
                self.rel
            )
        } else {
            self.rel.clone()
        }
    }
}

/// Finds every wanted file with `get` (relative path → local file, if
/// present): single files as they are, sharded weights as one file or the
/// shards their index lists. Returns the files per key (with the name to
/// record) and what is missing.
#[allow(clippy::type_complexity)]
fn find(
    wants: &[Want],
    get: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<(Vec<(String, Vec<(PathBuf, String)>)>, Vec<Missing>)> {
    let missing_file = |rel: &str| Missing {
        rel: rel.to_string(),
        sharded: false,
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for w in wants {
        if !w.sharded {
            match get(&w.rel) {
                Some(p) => found.push((w.key.clone(), vec![(p, w.rel.clone())])),
                None => missing.push(missing_file(&w.rel)),
            }
            continue;
        }
        let single = format!("{}.safetensors", w.rel);
        if let Some(p) = get(&single) {
            found.push((w.key.clone(), vec![(p, single)]));
            continue;
        }
        let index_rel = format!("{single}.index.json");
        let Some(index) = get(&index_rel) else {
            missing.push(Missing {
                rel: w.rel.clone(),
                sharded: true,
            });
            continue;
        };
        let names =
            shard_names(&index).map_err(|e| Error::Weights(format!("{}: {e}", index.display())))?;
        let folder = w.rel.rsplit_once('/').map_or("", |(d, _)| d);
        let mut files = Vec::new();
        for n in names {
            let rel = format!("{folder}/{n}");
            match get(&rel) {
                Some(p) => files.push((p, rel)),
                None => missing.push(missing_file(&rel)),
            }
        }
        found.push((w.key.clone(), files));
    }
    Ok((found, missing))
}

/// SHA-256 of a file, read in pieces (weights can be many gigabytes).
fn file_sha256(p: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, "read model file", e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(p, "read model file", e))?;
    Ok(format!("{:x}", h.finalize()))
}

fn from_folder(dir: &Path, arch: Arch, model_id: String) -> Result<AnyModel> {
    let wants = needed_files(&arch);
    let get = |rel: &str| Some(dir.join(rel)).filter(|p| p.is_file());
    let (found, missing) = find(&wants, &get)?;
    if !missing.is_empty() {
        return Err(Error::Weights(format!(
            "model folder {} is missing {}: it needs the diffusers layout ({})",
            dir.display(),
            missing.iter().map(Missing::describe).collect::<Vec<_>>().join(", "),
            match arch {
                Arch::Unet(_) => "text_encoder/, tokenizer/tokenizer.json, unet/, vae/ with .safetensors weights",
                Arch::Flux(_) => "text_encoder/, tokenizer/tokenizer.json, text_encoder_2/, tokenizer_2/tokenizer.json, transformer/, vae/ with .safetensors weights",
                Arch::Sd3(_) => "text_encoder/, text_encoder_2/, text_encoder_3/, tokenizer/, tokenizer_2/, tokenizer_3/ (tokenizer.json each), transformer/, vae/ with .safetensors weights",
            }
        )));
    }
    let mut digests = Vec::new();
    for (k, files) in &found {
        for (p, rel) in files {
            digests.push((k.clone(), rel.clone(), file_sha256(p)?));
        }
    }
    assemble(arch, model_id, None, &found, digests)
}

fn from_hub_repo(repo: &str, arch: Arch) -> Result<AnyModel> {
    let cache = hf_hub::Cache::from_env();
    let offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| v == "1" || v == "true")
        .unwrap_or(false);
    let fetch = |r: &str, f: &str| match cache.model(r.to_string()).get(f) {
        Some(p) => Some(p),
        None if offline => None,
        None => download(r, f),
    };
    let wants = needed_files(&arch);
    // The pipelines' repos ship vocab.json/merges.txt for CLIP; its
    // tokenizer.json comes from the CLIP repos, as in candle's examples.
    let fallback = |rel: &str| -> Option<(&'static str, &'static str)> {
        let k = wants.iter().find(|w| w.rel == rel)?.key.as_str();
        let clip = match &arch {
            Arch::Unet(_) => k.starts_with("tokenizer"),
            Arch::Flux(_) => k == "tokenizer_0",
            Arch::Sd3(_) => k == "tokenizer_0" || k == "tokenizer_1",
        };
        if !clip {
            return None;
        }
        let big = match &arch {
            Arch::Unet(c) => c.family == Family::XlRefiner || k == "tokenizer_1",
            Arch::Flux(_) => false,
            Arch::Sd3(_) => k == "tokenizer_1",
        };
        Some(if big { BIGG_TOKENIZER } else { CLIP_TOKENIZER })
    };
    let used_fallback = std::cell::RefCell::new(Vec::new());
    let get = |rel: &str| -> Option<PathBuf> {
        if let Some(p) = fetch(repo, rel) {
            return Some(p);
        }
        let (r, f) = fallback(rel)?;
        let p = fetch(r, f)?;
        used_fallback
            .borrow_mut()
            .push((rel.to_string(), format!("{r}/{f}")));
        Some(p)
    };
    let (mut found, missing) = find(&wants, &get)?;
    if !missing.is_empty() {
        // What to download, from which repo: a sharded weight as its
        // folder's files (`--include`), a tokenizer from its CLIP repo.
        let lost: Vec<(String, String)> = missing
            .iter()
            .map(|m| match (m.sharded, fallback(&m.rel)) {
                (true, _) => (repo.to_string(), format!("{}*", m.rel)),
                (false, Some((r, f))) => (r.to_string(), f.to_string()),
                (false, None) => (repo.to_string(), m.rel.clone()),
            })
            .collect();
        let list: Vec<String> = missing
            .iter()
            .zip(&lost)
            .map(|(m, (r, f))| match m.sharded {
                true => format!("  {r}: {}", m.describe()),
                false => format!("  {r}: {f}"),
            })
            .collect();
        return Err(Error::Weights(format!(
            "model {repo}: {} file(s) missing from the Hugging Face cache {}{}:\n{}\n{}",
            lost.len(),
            cache.path().display(),
            if offline {
                " (HF_HUB_OFFLINE=1)"
            } else {
                " and the hub is unreachable"
            },
            list.join("\n"),
            fill_cache_help(&lost)
        )));
    }
    // Record the repo a file came from.
    let used = used_fallback.into_inner();
    for (_, files) in &mut found {
        for (_, rel) in files.iter_mut() {
            *rel = match used.iter().find(|(r, _)| r == rel) {
                Some((_, from)) => from.clone(),
                None => format!("{repo}/{rel}"),
            };
        }
    }
    let revision = found
        .iter()
        .find(|(k, _)| k == "unet" || k == "transformer")
        .and_then(|(_, f)| f.first())
        .and_then(|(p, _)| snapshot_revision(p));
    // A hub file's blob is named after its SHA-256 (LFS) or git hash: record it
    // rather than re-hashing gigabytes on every start.
    let mut digests = Vec::new();
    for (k, files) in &found {
        for (p, rel) in files {
            let blob = std::fs::read_link(p)
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            digests.push((k.clone(), rel.clone(), blob));
        }
    }
    assemble(arch, repo.to_string(), revision, &found, digests)
}

fn download(repo: &str, file: &str) -> Option<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::from_env().build().ok()?;
    api.model(repo.to_string()).get(file).ok()
}

fn snapshot_revision(p: &Path) -> Option<String> {
    let mut cur = p.parent();
    while let Some(d) = cur {
        if d.parent()
            .and_then(|pp| pp.file_name())
            .map(|n| n == "snapshots")
            .unwrap_or(false)
        {
            return d.file_name().map(|n| n.to_string_lossy().into_owned());
        }
        cur = d.parent();
    }
    None
}

fn fill_cache_help(missing: &[(String, String)]) -> String {
    let mut by_repo: Vec<(String, Vec<String>)> = Vec::new();
    for (r, f) in missing {
        match by_repo.iter_mut().find(|(rr, _)| rr == r) {
            Some((_, fs)) => fs.push(f.clone()),
            None => by_repo.push((r.clone(), vec![f.clone()])),
        }
    }
    let cmds: Vec<String> = by_repo
        .iter()
        .map(|(r, fs)| {
            let args: Vec<String> = fs
                .iter()
                .map(|f| match f.contains('*') {
                    true => format!("--include '{f}'"),
                    false => f.clone(),
                })
                .collect();
            format!("  huggingface-cli download {r} {}", args.join(" "))
        })
        .collect();
    format!(
        "on a machine with network, fill the cache:\n{}\nthen copy its hub folder (HF_HOME, default ~/.cache/huggingface) to this machine, \
         set HF_HOME to where it is and HF_HUB_OFFLINE=1; or pass --model DIR with a folder in the diffusers layout",
        cmds.join("\n")
    )
}

#[allow(clippy::type_complexity)]
fn assemble(
    arch: Arch,
    model_id: String,
    revision: Option<String>,
    found: &[(String, Vec<(PathBuf, String)>)],
    digests: Vec<(String, String, String)>,
) -> Result<AnyModel> {
    let all_of = |key: &str| -> Result<Vec<PathBuf>> {
        found
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, f)| f.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>())
            .filter(|f| !f.is_empty())
            .ok_or_else(|| Error::Weights(format!("model {model_id}: no {key} file")))
    };
    let one = |key: &str| -> Result<PathBuf> {
        all_of(key)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Weights(format!("model {model_id}: no {key} file")))
    };
    let mut files = Map::new();
    let mut all = String::new();
    for (k, f, d) in &digests {
        let entry = json!({"file": f, "sha256": d});
        match files.get_mut(k) {
            // Shards: the component's files as a list.
            Some(Value::Array(list)) => list.push(entry),
            Some(first) => *first = json!([first.clone(), entry]),
            None => {
                files.insert(k.clone(), entry);
            }
        }
        all.push_str(&format!("{f}={d}\n"));
    }
    let weights_digest = format!("sha256:{}", sha256_hex(all.as_bytes()));
    Ok(match arch {
        Arch::Unet(config) => {
            let mut text = Vec::new();
            for i in 0..config.text.len() {
                text.push((
                    one(&format!("text_encoder_{i}"))?,
                    one(&format!("tokenizer_{i}"))?,
                ));
            }
            AnyModel::Unet(ResolvedModel {
                unet: one("unet")?,
                vae: one("vae")?,
                config,
                model_id,
                revision,
                text,
                files,
                weights_digest,
                seeded: None,
            })
        }
        Arch::Flux(config) => {
            let paths = FluxFiles {
                clip: (all_of("text_encoder_0")?, one("tokenizer_0")?),
                t5: (all_of("text_encoder_1")?, one("tokenizer_1")?),
                transformer: all_of("transformer")?,
                vae: all_of("vae")?,
            };
            AnyModel::Flux(Box::new(ResolvedFlux {
                config: *config,
                model_id,
                revision,
                paths,
                files,
                weights_digest,
            }))
        }
        Arch::Sd3(config) => {
            let mut text = Vec::new();
            for i in 0..3 {
                text.push((
                    all_of(&format!("text_encoder_{i}"))?,
                    one(&format!("tokenizer_{i}"))?,
                ));
            }
            let paths = Sd3Files {
                text,
                transformer: all_of("transformer")?,
                vae: all_of("vae")?,
            };
            AnyModel::Sd3(Box::new(ResolvedSd3 {
                config: *config,
                model_id,
                revision,
                paths,
                files,
                weights_digest,
            }))
        }
    })
}

/// `random:<preset>` (`random:sd-turbo`, `random:sdxl-turbo`, …): the
/// preset's real architecture with seeded random weights and difflog's
/// byte-level tokenizer, built on the device with no file and no download.
/// For measuring real-size generation where weights cannot be had; the
/// images are noise.
fn seeded_model(spec: &str, preset: &str) -> Result<ResolvedModel> {
    let config = match hub_preset(preset) {
        Some((_, Arch::Unet(c))) => Some(c),
        _ => None,
    };
    let config = config.ok_or_else(|| {
        Error::Weights(format!(
            "model {spec}: unknown preset {preset:?} (random: takes sd15, sd21, sdxl, sdxl-refiner, sd-turbo, sdxl-turbo, sd15-inpaint, sd2-inpaint, sdxl-inpaint)"
        ))
    })?;
    let tokenizer = tiny::ensure_tokenizer()?;
    let text = (0..config.text.len())
        .map(|_| (PathBuf::new(), tokenizer.clone()))
        .collect();
    Ok(ResolvedModel {
        config,
        model_id: spec.to_string(),
        revision: None,
        text,
        unet: PathBuf::new(),
        vae: PathBuf::new(),
        files: Map::new(),
        weights_digest: format!("seeded:{SEEDED_MODEL_SEED:x}"),
        seeded: Some(SEEDED_MODEL_SEED),
    })
}
