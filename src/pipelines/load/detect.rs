//! Telling a diffusers folder's architecture from its `model_index.json`
//! (pipeline class) and its UNet's or transformer's `config.json`, the way
//! diffusers' `save_pretrained` writes them — before any weight is read.
//! Model folders can come from anyone: every JSON file is read with a bound.

use crate::error::{Error, Result};
use crate::pipelines::arch::Arch;
use crate::pipelines::flow::flux_model::FluxConfig;
use crate::pipelines::flow::sd3_model::Sd3Config;
use crate::pipelines::load::presets::tiny_preset;
use crate::pipelines::sd::model::{Family, ModelConfig};
use serde_json::Value;
use std::path::Path;

/// Reads a diffusers folder's `model_index.json` (and UNet or transformer
/// config) to pick the architecture.
pub(crate) fn detect_config(dir: &Path) -> Result<Arch> {
    let index_path = dir.join("model_index.json");
    let text = read_small(&index_path).map_err(|e| {
        Error::weights(
            dir.display(),
            format!(
                "cannot read model_index.json ({e}); a model folder needs the diffusers layout"
            ),
        )
    })?;
    let index: Value = serde_json::from_str(&text)
        .map_err(|e| Error::weights(index_path.display(), format!("invalid JSON: {e}")))?;
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
        // FLUX.1's published sizes (missing sizes are taken for them) are
        // the presets; any other folder is built from its own configs.
        let size =
            |k: &str, published: u64| transformer[k].as_u64().unwrap_or(published) == published;
        let published = size("num_layers", 19)
            && size("num_single_layers", 38)
            && size("attention_head_dim", 128)
            && size("num_attention_heads", 24);
        if !published && matches!(class, "FluxPipeline" | "FluxImg2ImgPipeline") {
            return FluxConfig::from_configs(&|rel| json_file(&dir.join(rel)))
                .map(|c| Arch::Flux(Box::new(c)))
                .map_err(|(rel, why)| Error::weights(dir.join(rel).display(), why));
        }
        return match (class, transformer["guidance_embeds"].as_bool()) {
            ("FluxPipeline" | "FluxImg2ImgPipeline", Some(true)) => Ok(Arch::Flux(Box::new(FluxConfig::dev()))),
            ("FluxPipeline" | "FluxImg2ImgPipeline", Some(false)) => {
                Ok(Arch::Flux(Box::new(FluxConfig::schnell())))
            }
            _ => Err(Error::weights(dir.display(), format!(
                "pipeline class {class:?} with transformer config guidance_embeds = {}: \
                 supported FLUX models are FLUX.1 schnell and dev (FluxPipeline, transformer/config.json)",
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
        // The published models' sizes (64-wide heads, as many as blocks)
        // are the presets, with their defaults; any other folder is built
        // from its own configs.
        // (A config without head sizes is taken for a published one.)
        let published = transformer["attention_head_dim"].as_u64().unwrap_or(64) == 64
            && transformer["num_attention_heads"].as_u64().or(layers) == layers
            && matches!(layers, Some(24 | 38));
        if !published && class == "StableDiffusion3Pipeline" && !transformer.is_null() {
            return own_sd3(dir).map(|c| Arch::Sd3(Box::new(c)));
        }
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
            _ => Err(Error::weights(
                dir.display(),
                format!(
                    "pipeline class {class:?} with a {} -layer transformer: supported are \
                 StableDiffusion3Pipeline with SD3 medium, SD3.5 medium, large and large turbo",
                    transformer["num_layers"]
                ),
            )),
        };
    }
    let unet = config("unet");
    let cross = unet["cross_attention_dim"].as_u64();
    // An inpainting checkpoint is told by its UNet (9 input channels) as
    // much as by its pipeline class.
    let inpaint = class.contains("Inpaint") || unet["in_channels"].as_u64() == Some(9);
    let preset = match (class, cross, inpaint) {
        ("StableDiffusionXLPipeline" | "StableDiffusionXLInpaintPipeline", _, true) => {
            ModelConfig::sdxl_inpaint()
        }
        ("StableDiffusionXLPipeline", _, false) => ModelConfig::sdxl(),
        ("StableDiffusionXLImg2ImgPipeline", _, _) => ModelConfig::sdxl_refiner(),
        (_, Some(768), true) => ModelConfig::sd15_inpaint(),
        (_, Some(1024), true) => ModelConfig::sd2_inpaint(),
        (_, Some(768), false) => ModelConfig::sd15(),
        (_, Some(1024), false) => ModelConfig::sd21(),
        // No preset's size: the folder's own configs decide, over its
        // family's defaults.
        _ if !unet["block_out_channels"].is_null() => {
            let base = match (class.contains("XL"), class.contains("Img2Img"), inpaint) {
                (true, true, _) => ModelConfig::sdxl_refiner(),
                (true, false, true) => ModelConfig::sdxl_inpaint(),
                (true, false, false) => ModelConfig::sdxl(),
                (false, _, true) => ModelConfig::sd15_inpaint(),
                (false, _, false) => ModelConfig::sd15(),
            };
            return own_configs(dir, base, true).map(Arch::Unet);
        }
        _ => return Err(Error::weights(dir.display(), format!(
            "cannot tell the architecture (pipeline class {class:?}, UNet cross-attention dim {cross:?}, no unet/config.json to build it from); \
             supported: SD 1.x, SD 2.x, SDXL base and refiner, their inpainting checkpoints, FLUX.1 and SD3 / 3.5"
        ))),
    };
    own_configs(dir, preset, false).map(Arch::Unet)
}

/// `cfg` with what the folder's own configs say: its UNet, VAE and
/// scheduler, and its text encoders when `own_text` (no preset's size: a
/// preset's real CLIP encoders are kept). A config that is there but that
/// difflog cannot build is an error naming the file; a missing or partial
/// one leaves `cfg`'s, except an own text encoder's, which is needed.
fn own_configs(dir: &Path, mut cfg: ModelConfig, own_text: bool) -> Result<ModelConfig> {
    use crate::pipelines::sd::diffusers as d;
    let bad = |rel: &str, why: String| Error::weights(dir.join(rel).display(), why);
    let json = |rel: &str| json_file(&dir.join(rel)).map_err(|e| bad(rel, e));
    if let Some(u) = json("unet/config.json")?.filter(|u| !u["block_out_channels"].is_null()) {
        let rel = "unet/config.json";
        let mut unet = d::unet_from_config(&u).map_err(|e| bad(rel, e))?;
        // The class or 9 input channels make an inpainting model.
        cfg.inpaint = match unet.in_channels {
            4 => cfg.inpaint,
            9 => true,
            n => {
                return Err(bad(
                    rel,
                    format!("in_channels = {n}: difflog runs 4 (or 9, inpainting)"),
                ))
            }
        };
        unet.in_channels = 4;
        if let Some(s) = u["sample_size"].as_u64() {
            cfg.default_size = s as usize * 8;
        }
        cfg.unet = unet;
    }
    if let Some(v) = json("vae/config.json")?.filter(|v| !v["block_out_channels"].is_null()) {
        let (vae, scale) = d::vae_from_config(&v).map_err(|e| bad("vae/config.json", e))?;
        cfg.vae = vae;
        cfg.vae_scale = scale;
    }
    if own_text {
        for i in 0..cfg.text.len() {
            let rel = format!("text_encoder{}/config.json", cfg.text_suffix(i));
            let v = json(&rel)?.ok_or_else(|| {
                bad(
                    &rel,
                    "missing: the text encoder is built from its config".into(),
                )
            })?;
            let xl = matches!(cfg.family, Family::Xl | Family::XlRefiner);
            cfg.text[i] = d::text_from_config(&v, xl).map_err(|e| bad(&rel, e))?;
        }
    }
    if let Some(v) = json("scheduler/scheduler_config.json")? {
        cfg.scheduler = d::scheduler_from_config(&v, &cfg.scheduler)
            .map_err(|e| bad("scheduler/scheduler_config.json", e))?;
    }
    Ok(cfg)
}

/// An SD3 folder of no published model's sizes, built from its configs.
fn own_sd3(dir: &Path) -> Result<Sd3Config> {
    Sd3Config::from_configs(&|rel| json_file(&dir.join(rel)))
        .map_err(|(rel, why)| Error::weights(dir.join(rel).display(), why))
}

/// A folder's JSON file, parsed (`None`: there is none); the error says
/// why it cannot be read.
fn json_file(path: &Path) -> std::result::Result<Option<Value>, String> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_small(path).map_err(|e| format!("cannot read: {e}"))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("invalid JSON: {e}"))
}

/// A small JSON file read with a bound (model folders can come from anyone).
pub(crate) fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(16 << 20)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::flow::flux_model::FluxVariant;
    use crate::pipelines::sd::model::Family;
    use serde_json::json;
    use std::path::PathBuf;

    /// Writes `value` as diffusers' `save_pretrained` does (two-space
    /// indent, sorted keys, a final newline) to `dir/rel`.
    fn write_json(dir: &Path, rel: &str, value: Value) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{value:#}\n")).unwrap();
    }

    /// A folder under a fresh temporary one (its name matters to SD3.5 large).
    fn folder(name: &str) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        (tmp, dir)
    }

    /// A `model_index.json` for `class` with the components it names.
    fn index(dir: &Path, class: &str, components: &[(&str, &str, &str)]) {
        let mut v = json!({
            "_class_name": class,
            "_diffusers_version": "0.31.0",
        });
        for (name, lib, cls) in components {
            v[*name] = json!([lib, cls]);
        }
        write_json(dir, "model_index.json", v);
    }

    /// A UNet folder: pipeline class, cross-attention dim, input channels.
    fn unet_folder(
        name: &str,
        class: &str,
        cross: u64,
        in_channels: u64,
    ) -> (tempfile::TempDir, PathBuf) {
        let (tmp, dir) = folder(name);
        index(
            &dir,
            class,
            &[
                ("scheduler", "diffusers", "PNDMScheduler"),
                ("text_encoder", "transformers", "CLIPTextModel"),
                ("tokenizer", "transformers", "CLIPTokenizer"),
                ("unet", "diffusers", "UNet2DConditionModel"),
                ("vae", "diffusers", "AutoencoderKL"),
            ],
        );
        write_json(
            &dir,
            "unet/config.json",
            json!({
                "_class_name": "UNet2DConditionModel",
                "_diffusers_version": "0.31.0",
                "attention_head_dim": 8,
                "block_out_channels": [320, 640, 1280, 1280],
                "cross_attention_dim": cross,
                "in_channels": in_channels,
                "out_channels": 4,
                "sample_size": 64,
            }),
        );
        (tmp, dir)
    }

    fn transformer_folder(
        name: &str,
        class: &str,
        transformer: Value,
    ) -> (tempfile::TempDir, PathBuf) {
        let (tmp, dir) = folder(name);
        index(
            &dir,
            class,
            &[
                ("scheduler", "diffusers", "FlowMatchEulerDiscreteScheduler"),
                ("transformer", "diffusers", "FluxTransformer2DModel"),
                ("vae", "diffusers", "AutoencoderKL"),
            ],
        );
        write_json(&dir, "transformer/config.json", transformer);
        (tmp, dir)
    }

    fn flux(guidance_embeds: Value) -> Value {
        json!({
            "_class_name": "FluxTransformer2DModel",
            "_diffusers_version": "0.31.0",
            "attention_head_dim": 128,
            "guidance_embeds": guidance_embeds,
            "in_channels": 64,
            "joint_attention_dim": 4096,
            "num_attention_heads": 24,
            "num_layers": 19,
            "num_single_layers": 38,
            "patch_size": 1,
            "pooled_projection_dim": 768,
        })
    }

    fn sd3(num_layers: u64, dual_attention_layers: Option<Value>) -> Value {
        let mut v = json!({
            "_class_name": "SD3Transformer2DModel",
            "_diffusers_version": "0.31.0",
            "attention_head_dim": 64,
            "caption_projection_dim": 1536,
            "in_channels": 16,
            "joint_attention_dim": 4096,
            "num_attention_heads": num_layers,
            "num_layers": num_layers,
            "out_channels": 16,
            "patch_size": 2,
            "pooled_projection_dim": 2048,
            "pos_embed_max_size": 192,
            "sample_size": 128,
        });
        if let Some(d) = dual_attention_layers {
            v["dual_attention_layers"] = d;
        }
        v
    }

    fn unet_of(arch: Arch) -> (Family, &'static str, bool) {
        match arch {
            Arch::Unet(c) => (c.family, c.class, c.inpaint),
            Arch::Flux(_) => panic!("a FLUX model, not a UNet one"),
            Arch::Sd3(_) => panic!("an SD3 model, not a UNet one"),
        }
    }

    fn flux_of(arch: Arch) -> FluxVariant {
        match arch {
            Arch::Flux(c) => c.variant,
            _ => panic!("not a FLUX model"),
        }
    }

    fn sd3_of(arch: Arch) -> &'static str {
        match arch {
            Arch::Sd3(c) => c.variant,
            _ => panic!("not an SD3 model"),
        }
    }

    fn refused(dir: &Path) -> String {
        match detect_config(dir) {
            Ok(a) => panic!("{}: detected {a:?}", dir.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sd_unets_are_told_by_class_cross_attention_and_input_channels() {
        let (_t, d) = unet_folder("sd15", "StableDiffusionPipeline", 768, 4);
        assert_eq!(
            unet_of(detect_config(&d).unwrap()),
            (Family::Sd15, "StableDiffusionPipeline", false)
        );
        let (_t, d) = unet_folder("sd21", "StableDiffusionPipeline", 1024, 4);
        assert_eq!(unet_of(detect_config(&d).unwrap()).0, Family::Sd21);
        // A 9-channel UNet is an inpainting one, whatever the class says.
        let (_t, d) = unet_folder("sd15-inp", "StableDiffusionPipeline", 768, 9);
        assert_eq!(
            unet_of(detect_config(&d).unwrap()),
            (Family::Sd15, "StableDiffusionInpaintPipeline", true)
        );
        let (_t, d) = unet_folder("sd2-inp", "StableDiffusionInpaintPipeline", 1024, 4);
        assert_eq!(
            unet_of(detect_config(&d).unwrap()),
            (Family::Sd21, "StableDiffusionInpaintPipeline", true)
        );
        let (_t, d) = unet_folder("xl", "StableDiffusionXLPipeline", 2048, 4);
        assert_eq!(
            unet_of(detect_config(&d).unwrap()),
            (Family::Xl, "StableDiffusionXLPipeline", false)
        );
        let (_t, d) = unet_folder("xl-inp", "StableDiffusionXLPipeline", 2048, 9);
        assert_eq!(
            unet_of(detect_config(&d).unwrap()),
            (Family::Xl, "StableDiffusionXLInpaintPipeline", true)
        );
        let (_t, d) = unet_folder("refiner", "StableDiffusionXLImg2ImgPipeline", 1280, 4);
        assert_eq!(unet_of(detect_config(&d).unwrap()).0, Family::XlRefiner);
    }

    #[test]
    fn flux_dev_and_schnell_are_told_by_guidance_embeds() {
        let (_t, d) = transformer_folder("dev", "FluxPipeline", flux(json!(true)));
        assert_eq!(flux_of(detect_config(&d).unwrap()), FluxVariant::Dev);
        let (_t, d) = transformer_folder("schnell", "FluxPipeline", flux(json!(false)));
        assert_eq!(flux_of(detect_config(&d).unwrap()), FluxVariant::Schnell);
        let (_t, d) = transformer_folder("i2i", "FluxImg2ImgPipeline", flux(json!(false)));
        assert_eq!(flux_of(detect_config(&d).unwrap()), FluxVariant::Schnell);
    }

    #[test]
    fn unsupported_flux_models_are_refused() {
        let (_t, d) = transformer_folder("fill", "FluxFillPipeline", flux(json!(true)));
        let e = refused(&d);
        assert!(e.contains("\"FluxFillPipeline\""), "{e}");
        assert!(e.contains(&d.display().to_string()), "{e}");
        // No transformer/config.json: guidance_embeds cannot be read.
        let (_t, d) = transformer_folder("no-config", "FluxPipeline", json!({}));
        std::fs::remove_file(d.join("transformer/config.json")).unwrap();
        let e = refused(&d);
        assert!(e.contains("guidance_embeds = null"), "{e}");
    }

    #[test]
    fn sd3_variants_are_told_by_layers_dual_attention_and_name() {
        let pipe = "StableDiffusion3Pipeline";
        let (_t, d) = transformer_folder("m", pipe, sd3(24, None));
        assert_eq!(sd3_of(detect_config(&d).unwrap()), "sd3-medium");
        let (_t, d) = transformer_folder("m", pipe, sd3(24, Some(json!([]))));
        assert_eq!(sd3_of(detect_config(&d).unwrap()), "sd3-medium");
        let dual = json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let (_t, d) = transformer_folder("m", pipe, sd3(24, Some(dual)));
        assert_eq!(sd3_of(detect_config(&d).unwrap()), "sd35-medium");
        let (_t, d) = transformer_folder("stable-diffusion-3.5-large", pipe, sd3(38, None));
        assert_eq!(sd3_of(detect_config(&d).unwrap()), "sd35-large");
        let (_t, d) = transformer_folder("SD3.5-Large-Turbo", pipe, sd3(38, None));
        assert_eq!(sd3_of(detect_config(&d).unwrap()), "sd35-large-turbo");
    }

    #[test]
    fn unsupported_sd3_models_are_refused() {
        // No published model's size: built from the folder's configs, and
        // refused naming the file and field it cannot build.
        let (_t, d) = transformer_folder("x", "StableDiffusion3Pipeline", sd3(12, None));
        let e = refused(&d);
        assert!(
            e.contains("transformer/config.json: caption_projection_dim must be"),
            "{e}"
        );
        let (_t, d) = transformer_folder("x", "StableDiffusion3ControlNetPipeline", sd3(24, None));
        let e = refused(&d);
        assert!(e.contains("\"StableDiffusion3ControlNetPipeline\""), "{e}");
    }

    #[test]
    fn the_tiny_models_marker_wins() {
        let (_t, d) = folder("t");
        write_json(
            &d,
            "model_index.json",
            json!({"_class_name": "StableDiffusionPipeline", "_difflog_tiny_model": "tiny-flux-dev"}),
        );
        assert_eq!(flux_of(detect_config(&d).unwrap()), FluxVariant::Dev);
        // An unknown marker falls through to the pipeline class.
        let (_t, d) = unet_folder("u", "StableDiffusionPipeline", 768, 4);
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("model_index.json")).unwrap())
                .unwrap();
        v["_difflog_tiny_model"] = json!("tiny-nothing");
        write_json(&d, "model_index.json", v);
        assert_eq!(unet_of(detect_config(&d).unwrap()).0, Family::Sd15);
    }

    #[test]
    fn unknown_classes_are_refused_with_the_folder() {
        let (_t, d) = folder("kandinsky");
        index(
            &d,
            "KandinskyV22Pipeline",
            &[("unet", "diffusers", "UNet2DConditionModel")],
        );
        let e = refused(&d);
        assert!(e.contains(&d.display().to_string()), "{e}");
        assert!(e.contains("cannot tell the architecture"), "{e}");
        assert!(e.contains("\"KandinskyV22Pipeline\""), "{e}");
        assert!(e.contains("cross-attention dim None"), "{e}");
        // A UNet of no preset's width is built from its own config, and
        // its text encoder from its own: without that config, refused
        // naming it.
        let (_t, d) = unet_folder("odd", "StableDiffusionPipeline", 512, 4);
        let e = refused(&d);
        assert!(e.contains("text_encoder/config.json: missing"), "{e}");
    }

    #[test]
    fn a_missing_or_garbage_model_index_is_refused_naming_it() {
        let (_t, d) = folder("empty");
        let e = refused(&d);
        assert!(
            e.starts_with(&format!("{}: cannot read model_index.json (", d.display())),
            "{e}"
        );
        assert!(e.contains("diffusers layout"), "{e}");
        std::fs::write(d.join("model_index.json"), "{\"_class_name\": ").unwrap();
        let e = refused(&d);
        let index = d.join("model_index.json");
        assert!(
            e.starts_with(&format!("{}: invalid JSON: ", index.display())),
            "{e}"
        );
    }

    #[test]
    fn read_small_reads_at_most_16_mib() {
        let (_t, d) = folder("big");
        let p = d.join("big.json");
        std::fs::write(&p, vec![b' '; (16 << 20) + 10]).unwrap();
        assert_eq!(read_small(&p).unwrap().len(), 16 << 20);
        std::fs::write(&p, "{}").unwrap();
        assert_eq!(read_small(&p).unwrap(), "{}");
        assert!(read_small(&d.join("absent.json")).is_err());
    }
}
