//! Which architecture a model folder or preset is: what the weight loader
//! detects and the tiny builders make, above the three families' model
//! descriptions (no family's file names another's).

/// A model's architecture: a UNet (Stable Diffusion 1.x, 2.x, XL) or a
/// flow transformer (FLUX.1, Stable Diffusion 3 / 3.5).
// Built once per model load: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Arch {
    /// Stable Diffusion 1.x, 2.x, XL, their Turbo, refiner and inpainting models.
    Unet(crate::pipelines::sd::model::ModelConfig),
    /// FLUX.1 schnell or dev.
    Flux(Box<crate::pipelines::flow::flux_model::FluxConfig>),
    /// Stable Diffusion 3 / 3.5.
    Sd3(Box<crate::pipelines::flow::sd3_model::Sd3Config>),
}
