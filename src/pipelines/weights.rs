//! Finding a model's files: the tiny built-in models, the Hugging Face hub
//! cache (`HF_HOME`, `HF_HUB_OFFLINE=1`), or a local folder in the diffusers
//! layout — and recording exactly which weights were used.
//!
//! Air-gapped boxes have no hub: when files are missing the error lists every
//! one of them and says how to fill the cache on a connected machine.

use super::model::{Family, ModelConfig};
use super::tiny::{self, TinyModel};
use crate::error::{Error, Result};
use crate::format::sha256_hex;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

const CLIP_TOKENIZER: (&str, &str) = ("openai/clip-vit-base-patch32", "tokenizer.json");
const BIGG_TOKENIZER: (&str, &str) = ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "tokenizer.json");

/// The model names `--model` knows besides hub ids and folders.
pub const PRESETS: [&str; 13] = [
    "tiny",
    "tiny-xl",
    "tiny-xl-refiner",
    "tiny-inpaint",
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

/// Seed of the `random:<preset>` models (one fixed seed: the same weights
/// everywhere, so runs on different machines compare).
pub const SEEDED_MODEL_SEED: u64 = 0x5eed_5eed;

fn hub_preset(name: &str) -> Option<(&'static str, ModelConfig)> {
    Some(match name {
        "sd15" => (
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            ModelConfig::sd15(),
        ),
        "sd21" => ("stabilityai/stable-diffusion-2-1", ModelConfig::sd21()),
        "sd-turbo" => ("stabilityai/sd-turbo", ModelConfig::sd_turbo()),
        "sdxl" => (
            "stabilityai/stable-diffusion-xl-base-1.0",
            ModelConfig::sdxl(),
        ),
        "sdxl-turbo" => ("stabilityai/sdxl-turbo", ModelConfig::sdxl_turbo()),
        "sdxl-refiner" => (
            "stabilityai/stable-diffusion-xl-refiner-1.0",
            ModelConfig::sdxl_refiner(),
        ),
        "sd15-inpaint" => (
            "stable-diffusion-v1-5/stable-diffusion-inpainting",
            ModelConfig::sd15_inpaint(),
        ),
        "sd2-inpaint" => (
            "stabilityai/stable-diffusion-2-inpainting",
            ModelConfig::sd2_inpaint(),
        ),
        "sdxl-inpaint" => (
            "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
            ModelConfig::sdxl_inpaint(),
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

/// Resolves `--model`: a preset, a local folder, or a hub id.
pub fn resolve(spec: &str) -> Result<ResolvedModel> {
    if let Some(preset) = spec.strip_prefix("random:") {
        return seeded_model(spec, preset);
    }
    if let Some(t) = tiny_preset(spec) {
        let dir = tiny::ensure(t)?;
        return from_folder(&dir, t.config(), t.id().to_string());
    }
    if let Some((repo, cfg)) = hub_preset(spec) {
        return from_hub(repo, cfg);
    }
    let path = Path::new(spec);
    if path.is_dir() {
        let cfg = detect_config(path)?;
        return from_folder(path, cfg, spec.to_string());
    }
    if spec.contains('/')
        && !spec.starts_with('.')
        && !spec.starts_with('/')
        && spec.split('/').count() == 2
    {
        let cache = hf_hub::Cache::from_env();
        let index = cache.model(spec.to_string()).get("model_index.json");
        let cfg = match index {
            Some(p) => detect_config(p.parent().unwrap_or(Path::new(".")))?,
            None => {
                return Err(Error::Weights(format!(
                    "model {spec}: not in the Hugging Face cache ({}); {}",
                    cache.path().display(),
                    fill_cache_help(&[(spec.to_string(), "model_index.json".to_string())])
                )))
            }
        };
        return from_hub_repo(spec, cfg);
    }
    Err(Error::Weights(format!(
        "unknown model {spec:?}: expected one of {}, a Hugging Face id (org/name), or a folder in the diffusers layout",
        PRESETS.join(", ")
    )))
}

/// Reads a diffusers folder's `model_index.json` (and UNet config) to pick the architecture.
fn detect_config(dir: &Path) -> Result<ModelConfig> {
    let index_path = dir.join("model_index.json");
    let text = std::fs::read_to_string(&index_path).map_err(|e| {
        Error::Weights(format!(
            "{}: cannot read model_index.json ({e}); a model folder needs the diffusers layout",
            dir.display()
        ))
    })?;
    let index: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Weights(format!("{}: invalid JSON: {e}", index_path.display())))?;
    if let Some(t) = index["_difflog_tiny_model"].as_str().and_then(tiny_preset) {
        return Ok(t.config());
    }
    let class = index["_class_name"].as_str().unwrap_or("");
    let unet = std::fs::read_to_string(dir.join("unet/config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .unwrap_or(Value::Null);
    let cross = unet["cross_attention_dim"].as_u64();
    // An inpainting checkpoint is told by its UNet (9 input channels) as
    // much as by its pipeline class.
    let inpaint = class.contains("Inpaint") || unet["in_channels"].as_u64() == Some(9);
    match (class, cross, inpaint) {
        ("StableDiffusionXLPipeline" | "StableDiffusionXLInpaintPipeline", _, true) => {
            Ok(ModelConfig::sdxl_inpaint())
        }
        ("StableDiffusionXLPipeline", _, false) => Ok(ModelConfig::sdxl()),
        ("StableDiffusionXLImg2ImgPipeline", _, _) => Ok(ModelConfig::sdxl_refiner()),
        (_, Some(768), true) => Ok(ModelConfig::sd15_inpaint()),
        (_, Some(1024), true) => Ok(ModelConfig::sd2_inpaint()),
        (_, Some(768), false) => Ok(ModelConfig::sd15()),
        (_, Some(1024), false) => Ok(ModelConfig::sd21()),
        _ => Err(Error::Weights(format!(
            "{}: cannot tell the architecture (pipeline class {class:?}, UNet cross-attention dim {cross:?}); \
             supported: SD 1.x, SD 2.x, SDXL base and refiner, and their inpainting checkpoints",
            dir.display()
        ))),
    }
}

fn needed_files(cfg: &ModelConfig) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for i in 0..cfg.text.len() {
        let (w, t) = cfg.text_files(i);
        v.push((format!("text_encoder_{i}"), w));
        v.push((format!("tokenizer_{i}"), t));
    }
    v.push(("unet".into(), ModelConfig::UNET_FILE.into()));
    v.push(("vae".into(), ModelConfig::VAE_FILE.into()));
    v
}

fn from_folder(dir: &Path, cfg: ModelConfig, model_id: String) -> Result<ResolvedModel> {
    let files = needed_files(&cfg);
    let missing: Vec<String> = files
        .iter()
        .filter(|(_, f)| !dir.join(f).is_file())
        .map(|(_, f)| f.clone())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Weights(format!(
            "model folder {} is missing {}: it needs the diffusers layout (text_encoder/, tokenizer/tokenizer.json, unet/, vae/ with .safetensors weights)",
            dir.display(),
            missing.join(", ")
        )));
    }
    let paths: Vec<(String, PathBuf, String)> = files
        .into_iter()
        .map(|(k, f)| {
            let p = dir.join(&f);
            (k, p, f)
        })
        .collect();
    let mut digests = Vec::new();
    for (k, p, f) in &paths {
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, "read model file", e))?;
        digests.push((k.clone(), f.clone(), sha256_hex(&bytes)));
    }
    assemble(cfg, model_id, None, &paths, digests)
}

fn from_hub(repo: &str, cfg: ModelConfig) -> Result<ResolvedModel> {
    from_hub_repo(repo, cfg)
}

fn from_hub_repo(repo: &str, cfg: ModelConfig) -> Result<ResolvedModel> {
    let cache = hf_hub::Cache::from_env();
    let mut wanted: Vec<(String, String, String)> = Vec::new();
    for (k, f) in needed_files(&cfg) {
        let own = cache.model(repo.to_string()).get(&f).is_some();
        if k.starts_with("tokenizer") && !own {
            // The pipelines' repos ship vocab.json/merges.txt; tokenizer.json
            // comes from the CLIP repos, as in candle's examples.
            let big = cfg.family == Family::XlRefiner || k == "tokenizer_1";
            let (r, p) = if big { BIGG_TOKENIZER } else { CLIP_TOKENIZER };
            wanted.push((k, r.to_string(), p.to_string()));
        } else {
            wanted.push((k, repo.to_string(), f));
        }
    }
    let offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| v == "1" || v == "true")
        .unwrap_or(false);
    let mut paths = Vec::new();
    let mut missing = Vec::new();
    for (k, r, f) in &wanted {
        let cached = cache.model(r.clone()).get(f);
        let found = match cached {
            Some(p) => Some(p),
            None if offline => None,
            None => download(r, f),
        };
        match found {
            Some(p) => paths.push((k.clone(), p, format!("{r}/{f}"))),
            None => missing.push((r.clone(), f.clone())),
        }
    }
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|(r, f)| format!("  {r}: {f}")).collect();
        return Err(Error::Weights(format!(
            "model {repo}: {} file(s) missing from the Hugging Face cache {}{}:\n{}\n{}",
            missing.len(),
            cache.path().display(),
            if offline {
                " (HF_HUB_OFFLINE=1)"
            } else {
                " and the hub is unreachable"
            },
            list.join("\n"),
            fill_cache_help(&missing)
        )));
    }
    let revision = paths
        .iter()
        .find(|(k, _, _)| k == "unet")
        .and_then(|(_, p, _)| snapshot_revision(p));
    // A hub file's blob is named after its SHA-256 (LFS) or git hash: record it
    // rather than re-hashing gigabytes on every start.
    let digests = paths
        .iter()
        .map(|(k, p, f)| {
            let blob = std::fs::read_link(p)
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            (k.clone(), f.clone(), blob)
        })
        .collect();
    assemble(cfg, repo.to_string(), revision, &paths, digests)
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
        .map(|(r, fs)| format!("  huggingface-cli download {r} {}", fs.join(" ")))
        .collect();
    format!(
        "on a machine with network, fill the cache:\n{}\nthen copy its hub folder (HF_HOME, default ~/.cache/huggingface) to this machine, \
         set HF_HOME to where it is and HF_HUB_OFFLINE=1; or pass --model DIR with a folder in the diffusers layout",
        cmds.join("\n")
    )
}

fn assemble(
    config: ModelConfig,
    model_id: String,
    revision: Option<String>,
    paths: &[(String, PathBuf, String)],
    digests: Vec<(String, String, String)>,
) -> Result<ResolvedModel> {
    let get = |key: &str| {
        paths
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, p, _)| p.clone())
            .ok_or_else(|| Error::Weights(format!("model {model_id}: no {key} file")))
    };
    let mut text = Vec::new();
    for i in 0..config.text.len() {
        text.push((
            get(&format!("text_encoder_{i}"))?,
            get(&format!("tokenizer_{i}"))?,
        ));
    }
    let mut files = Map::new();
    let mut all = String::new();
    for (k, f, d) in &digests {
        files.insert(k.clone(), json!({"file": f, "sha256": d}));
        all.push_str(&format!("{f}={d}\n"));
    }
    Ok(ResolvedModel {
        unet: get("unet")?,
        vae: get("vae")?,
        config,
        model_id,
        revision,
        text,
        files,
        weights_digest: format!("sha256:{}", sha256_hex(all.as_bytes())),
        seeded: None,
    })
}

/// `random:<preset>` (`random:sd-turbo`, `random:sdxl-turbo`, …): the
/// preset's real architecture with seeded random weights and difflog's
/// byte-level tokenizer, built on the device with no file and no download.
/// For measuring real-size generation where weights cannot be had; the
/// images are noise.
fn seeded_model(spec: &str, preset: &str) -> Result<ResolvedModel> {
    let (_, config) = hub_preset(preset).ok_or_else(|| {
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
