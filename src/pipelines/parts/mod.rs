//! The parts every family is made of: noise, schedulers, flow matching,
//! text encoders (CLIP, T5) and their tokens, the latent encoder, and the
//! description of a loaded pipeline, and what a call shows a tracer.

pub mod clip;
pub mod describe;
pub mod flow_match;
pub mod latent_encoder;
pub mod noise;
pub mod placement;
pub mod prompt;
pub mod scheduler;
pub mod t5;
pub mod torch_rng;
pub mod trace;
pub mod vae;
