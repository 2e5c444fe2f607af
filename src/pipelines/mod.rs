//! Diffusion pipelines on candle: Stable Diffusion 1.5, 2.1, XL, SD-Turbo,
//! SDXL-Turbo, the XL refiner and the inpainting checkpoints, FLUX.1
//! schnell and dev, Stable Diffusion 3 medium and 3.5 medium, large and
//! large turbo, text-to-image and image-to-image, plus the tiny built-in
//! models the demo and the tests run.
//!
//! Everything here implements or feeds [`crate::Pipeline`], so every call is
//! recorded like any user's pipeline would be.

pub mod any;
pub mod clip;
pub mod convert;
pub mod describe;
pub mod flow_match;
pub mod flux;
pub mod flux_model;
pub mod latent_encoder;
pub mod mapped;
pub mod model;
pub mod noise;
pub mod prompt;
pub mod remap;
pub mod request;
pub mod scheduler;
pub mod sd3;
pub mod sd3_model;
pub mod stable_diffusion;
pub mod t5;
pub mod tiny;
pub mod weights;

pub use any::Generator;
pub use flux::FluxPipeline;
pub use scheduler::{SchedulerKind, SchedulerSettings};
pub use sd3::Sd3Pipeline;
pub use request::{InitImage, Output, Request, StageLatents};
pub use stable_diffusion::StableDiffusion;
pub use weights::{resolve, resolve_any, AnyModel, ResolvedFlux, ResolvedModel, ResolvedSd3};
