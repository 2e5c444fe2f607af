//! Resolving `--model` to a model's files: the tiny built-in models, the
//! hub presets and hub ids (through the Hugging Face cache), `random:<preset>`
//! and local folders in the diffusers layout — and recording exactly which
//! weights were used. The preset table (`presets`), telling a folder's
//! architecture (`detect`), the files each architecture needs (`files`) and
//! the hub cache (`hub`) live beside this file; here are the entry points
//! and what they answer.

use crate::error::{Error, Result};
use crate::format::sha256_hex;
use crate::pipelines::arch::Arch;
use crate::pipelines::flow::flux_model::{FluxConfig, FluxFiles};
use crate::pipelines::flow::sd3_model::{Sd3Config, Sd3Files};
use crate::pipelines::load::detect::detect_config;
use crate::pipelines::load::files::{file_sha256, find, needed_files, Missing};
use crate::pipelines::load::hub::{self, fill_cache_help};
use crate::pipelines::load::presets::{hub_preset, tiny_preset};
use crate::pipelines::sd::model::ModelConfig;
use crate::pipelines::tiny;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

pub use crate::pipelines::load::presets::{refiner_for, PRESETS};

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

/// Resolves `--model` to a Stable Diffusion (UNet) model; a FLUX model is
/// refused with a pointer to [`resolve_any`].
pub fn resolve(spec: &str) -> Result<ResolvedModel> {
    match resolve_any(spec)? {
        AnyModel::Unet(m) => Ok(m),
        AnyModel::Flux(m) => Err(Error::weights(
            &m.model_id,
            "a FLUX.1 model, not a UNet one",
        )),
        AnyModel::Sd3(m) => Err(Error::weights(
            &m.model_id,
            "a Stable Diffusion 3 model, not a UNet one",
        )),
    }
}

/// Resolves `--model`: a preset, a local folder, or a hub id, of any architecture.
pub fn resolve_any(spec: &str) -> Result<AnyModel> {
    if let Some(preset) = spec.strip_prefix("random:") {
        return seeded_model(spec, preset).map(AnyModel::Unet);
    }
    if spec == crate::pipelines::tiny::shapes::NAME {
        let dir = crate::pipelines::tiny::shapes::ensure()?;
        return from_folder(&dir, detect_config(&dir)?, spec.to_string());
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
                return Err(Error::weights(
                    spec,
                    format!(
                        "not in the Hugging Face cache ({}); {}",
                        cache.path().display(),
                        fill_cache_help(&[(spec.to_string(), "model_index.json".to_string())])
                    ),
                ))
            }
        };
        return from_hub_repo(spec, arch);
    }
    Err(Error::weights(spec, format!(
        "unknown model: expected one of {}, a Hugging Face id (org/name), or a folder in the diffusers layout",
        PRESETS.join(", ")
    )))
}

/// A local folder's model: every file it needs, hashed, assembled.
fn from_folder(dir: &Path, arch: Arch, model_id: String) -> Result<AnyModel> {
    let wants = needed_files(&arch);
    let get = |rel: &str| Some(dir.join(rel)).filter(|p| p.is_file());
    let (found, missing) = find(&wants, &get)?;
    if !missing.is_empty() {
        return Err(Error::weights(dir.display(), format!(
            "the model folder is missing {}: it needs the diffusers layout ({})",
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

/// A hub repo's model: its files from the cache (see [`hub::from_hub_repo`]), assembled.
fn from_hub_repo(repo: &str, arch: Arch) -> Result<AnyModel> {
    let hub = hub::from_hub_repo(repo, &arch)?;
    assemble(
        arch,
        repo.to_string(),
        hub.revision,
        &hub.found,
        hub.digests,
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
            .ok_or_else(|| Error::weights(&model_id, format!("no {key} file")))
    };
    let one = |key: &str| -> Result<PathBuf> {
        all_of(key)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::weights(&model_id, format!("no {key} file")))
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
        Error::weights(spec, format!(
            "unknown preset {preset:?} (random: takes sd15, sd21, sdxl, sdxl-refiner, sd-turbo, sdxl-turbo, sd15-inpaint, sd2-inpaint, sdxl-inpaint)"
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
