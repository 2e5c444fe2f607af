//! Diffusion pipelines on candle: Stable Diffusion 1.5, 2.1, XL, SD-Turbo,
//! SDXL-Turbo and the XL refiner, text-to-image and image-to-image, plus the
//! tiny built-in models the demo and the tests run.
//!
//! Everything here implements or feeds [`crate::Pipeline`], so every call is
//! recorded like any user's pipeline would be.

pub mod latent_encoder;
pub mod model;
pub mod noise;
pub mod scheduler;
pub mod stable_diffusion;
pub mod tiny;
pub mod weights;

pub use scheduler::{SchedulerKind, SchedulerSettings};
pub use stable_diffusion::{InitImage, Output, Request, StableDiffusion, StageLatents};
pub use weights::{resolve, ResolvedModel};
