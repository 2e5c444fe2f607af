//! Showing a call's tensors to a tracer ([`crate::pipeline::Tracer`]):
//! what every pipeline shows, under the same names, so that one comparison
//! (the parity tests, `difflog generate --trace`) reads every family.
//!
//! Names: `timesteps` (the whole schedule, before an image-to-image
//! strength cuts it, as diffusers' `scheduler.timesteps`), and for image
//! `i` of the call `image{i}.prompt_embeds` (the text states its prompt
//! conditions the model with, the guided side) and `image{i}.step{s}` (its
//! latents after step `s`, in the layout diffusers' step callback sees).
//! Nothing is copied unless a tracer is set.

use crate::pipeline::{CallContext, PipelineError};
use candle_core::{DType, Tensor};

/// Shows `t` as `name` (made only when someone traces).
pub fn tensor(
    ctx: &mut CallContext<'_>,
    name: impl FnOnce() -> String,
    t: &Tensor,
) -> Result<(), PipelineError> {
    if ctx.tracing() {
        let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        ctx.trace(&name(), t.dims(), values);
    }
    Ok(())
}

/// Shows the schedule's timesteps.
pub fn timesteps(ctx: &mut CallContext<'_>, timesteps: impl Iterator<Item = f64>) {
    if ctx.tracing() {
        let values: Vec<f32> = timesteps.map(|t| t as f32).collect();
        ctx.trace("timesteps", &[values.len()], values);
    }
}

/// Shows image `i`'s latents after step `s`.
pub fn step(
    ctx: &mut CallContext<'_>,
    i: usize,
    s: usize,
    latents: &Tensor,
) -> Result<(), PipelineError> {
    tensor(ctx, || format!("image{i}.step{s}"), latents)
}

/// Shows image `i`'s text states.
pub fn prompt_embeds(
    ctx: &mut CallContext<'_>,
    i: usize,
    states: &Tensor,
) -> Result<(), PipelineError> {
    tensor(ctx, || format!("image{i}.prompt_embeds"), states)
}
