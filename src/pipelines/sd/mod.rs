//! Stable Diffusion 1.x, 2.x and XL with their Turbo, refiner and
//! inpainting models: the pipeline and the model description.

pub mod diffusers;
pub mod model;
pub mod pipeline;
pub mod transformer;
pub mod unet;
