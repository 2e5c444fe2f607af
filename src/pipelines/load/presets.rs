//! The model names `--model` knows: the tiny built-in models and the hub
//! presets (each a Hugging Face repo and its architecture), and which
//! refiner goes with a base model. A table, so adding a model is one line
//! here and nothing in the loader.

use crate::pipelines::arch::Arch;
use crate::pipelines::flow::flux_model::FluxConfig;
use crate::pipelines::flow::sd3_model::Sd3Config;
use crate::pipelines::sd::model::{Family, ModelConfig};
use crate::pipelines::tiny::TinyModel;

/// The model names `--model` knows besides hub ids and folders.
pub const PRESETS: [&str; 23] = [
    "tiny-shapes",
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

/// A hub preset's Hugging Face repo and architecture (`sd15`, `flux-dev`, …).
pub(crate) fn hub_preset(name: &str) -> Option<(&'static str, Arch)> {
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

/// The tiny built-in model a name stands for (`tiny`, `tiny-flux`, …).
pub(crate) fn tiny_preset(name: &str) -> Option<TinyModel> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The preset names of one kind, in `PRESETS` order.
    fn names(tiny: bool) -> Vec<&'static str> {
        PRESETS
            .iter()
            .copied()
            .filter(|n| tiny_preset(n).is_some() == tiny)
            .collect()
    }

    #[test]
    fn every_preset_is_a_tiny_model_or_a_hub_repo_and_not_both() {
        for name in PRESETS {
            if name == crate::pipelines::tiny::shapes::NAME {
                // The trained demo model, shipped in the binary.
                assert!(tiny_preset(name).is_none() && hub_preset(name).is_none());
                continue;
            }
            let tiny = tiny_preset(name).is_some();
            let hub = hub_preset(name).is_some();
            assert!(tiny != hub, "{name}: tiny {tiny}, hub {hub}");
        }
        assert_eq!(
            names(true),
            [
                "tiny",
                "tiny-xl",
                "tiny-xl-refiner",
                "tiny-inpaint",
                "tiny-flux",
                "tiny-flux-dev",
                "tiny-sd3"
            ]
        );
        assert_eq!(names(false).len(), 16);
    }

    #[test]
    fn tiny_presets_name_their_model() {
        for name in names(true) {
            assert_eq!(tiny_preset(name).map(TinyModel::id), Some(name));
        }
    }

    #[test]
    fn hub_presets_point_at_org_name_repos_of_their_architecture() {
        for name in names(false)
            .into_iter()
            .filter(|n| *n != crate::pipelines::tiny::shapes::NAME)
        {
            let (repo, arch) = hub_preset(name).unwrap();
            assert_eq!(repo.split('/').count(), 2, "{name}: {repo}");
            assert!(!repo.starts_with('/') && !repo.ends_with('/'), "{repo}");
            let kind = match arch {
                Arch::Unet(_) => "unet",
                Arch::Flux(_) => "flux",
                Arch::Sd3(_) => "sd3",
            };
            let want = if name.starts_with("flux") {
                "flux"
            } else if name.starts_with("sd3") {
                "sd3"
            } else {
                "unet"
            };
            assert_eq!(kind, want, "{name}");
        }
        let (repo, arch) = hub_preset("flux-dev").unwrap();
        assert_eq!(repo, "black-forest-labs/FLUX.1-dev");
        assert!(matches!(arch, Arch::Flux(c)
            if c.variant == crate::pipelines::flow::flux_model::FluxVariant::Dev));
        let (repo, arch) = hub_preset("sd35-large-turbo").unwrap();
        assert_eq!(repo, "stabilityai/stable-diffusion-3.5-large-turbo");
        assert!(matches!(arch, Arch::Sd3(c) if c.variant == "sd35-large-turbo"));
        let (repo, arch) = hub_preset("sdxl-refiner").unwrap();
        assert_eq!(repo, "stabilityai/stable-diffusion-xl-refiner-1.0");
        assert!(matches!(arch, Arch::Unet(c) if c.family == Family::XlRefiner));
        let (_, arch) = hub_preset("sd15-inpaint").unwrap();
        assert!(matches!(arch, Arch::Unet(c) if c.family == Family::Sd15 && c.inpaint));
    }

    #[test]
    fn unknown_names_are_no_preset() {
        for name in [
            "",
            "Tiny",
            "tiny ",
            "sdxl-base",
            "flux",
            "sd3",
            "random:sd15",
            "stabilityai/sdxl-turbo",
        ] {
            assert!(tiny_preset(name).is_none(), "{name:?}");
            assert!(hub_preset(name).is_none(), "{name:?}");
            assert!(!PRESETS.contains(&name), "{name:?}");
        }
    }

    #[test]
    fn an_xl_base_gets_its_refiner_and_nothing_else_does() {
        assert_eq!(refiner_for("sdxl", Family::Xl), Some("sdxl-refiner"));
        assert_eq!(refiner_for("sdxl-turbo", Family::Xl), Some("sdxl-refiner"));
        assert_eq!(refiner_for("org/my-xl", Family::Xl), Some("sdxl-refiner"));
        assert_eq!(refiner_for("tiny-xl", Family::Xl), Some("tiny-xl-refiner"));
        // The tiny XL base is told by its name, whatever the family says.
        assert_eq!(
            refiner_for("tiny-xl", Family::Sd15),
            Some("tiny-xl-refiner")
        );
        assert_eq!(refiner_for("sd15", Family::Sd15), None);
        assert_eq!(refiner_for("sd21", Family::Sd21), None);
        assert_eq!(refiner_for("tiny", Family::Sd15), None);
        assert_eq!(refiner_for("sdxl-refiner", Family::XlRefiner), None);
        assert_eq!(refiner_for("tiny-xl-refiner", Family::XlRefiner), None);
    }
}
