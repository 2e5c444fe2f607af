//! Diffusion pipelines on candle: Stable Diffusion 1.5, 2.1, XL, SD-Turbo,
//! SDXL-Turbo, the XL refiner and the inpainting checkpoints, FLUX.1
//! schnell and dev, Stable Diffusion 3 medium and 3.5 medium, large and
//! large turbo, text-to-image and image-to-image, plus the tiny built-in
//! models the demo and the tests run.
//!
//! Everything here implements or feeds [`crate::Pipeline`], so every call is
//! recorded like any user's pipeline would be.

pub mod any;
pub mod arch;
pub mod convert;
pub mod flow;
pub mod load;
pub mod parts;
pub mod request;
pub mod sd;
pub mod tiny;

pub use any::Generator;
pub use flow::flux::FluxPipeline;
pub use flow::sd3::Sd3Pipeline;
pub use load::weights::{resolve, resolve_any, AnyModel, ResolvedFlux, ResolvedModel, ResolvedSd3};
pub use parts::scheduler::{SchedulerKind, SchedulerSettings};
pub use request::{InitImage, Output, Request, Rng, SkipLayerGuidance, StageLatents};
pub use sd::pipeline::StableDiffusion;
