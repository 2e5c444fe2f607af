//! The flow-matching transformers: FLUX.1 and Stable Diffusion 3 / 3.5,
//! each a pipeline and its model description (and SD3's transformer).

pub mod flux;
pub mod flux_model;
pub mod mmdit;
pub mod sd3;
pub mod sd3_model;
pub(crate) mod shared;
