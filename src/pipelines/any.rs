//! One pipeline type for whatever `--model` names: a Stable Diffusion
//! (UNet) model, a FLUX.1 or an SD3 / 3.5 one. `generate`, `replay` and `bench` load a
//! [`Generator`] and record it like any pipeline; what differs between the
//! families stays inside their own modules.

use crate::pipeline::{CallContext, CallSpec, Pipeline, PipelineError, PipelineInfo};
use crate::pipelines::flow::flux::FluxPipeline;
use crate::pipelines::flow::sd3::Sd3Pipeline;
use crate::pipelines::load::weights::{refiner_for, resolve_any, AnyModel};
use crate::pipelines::parts::scheduler::{SchedulerKind, SchedulerSettings};
use crate::pipelines::request::{Output, Request};
use crate::pipelines::sd::pipeline::StableDiffusion;

/// A loaded pipeline of any architecture.
pub enum Generator {
    /// Stable Diffusion 1.5, 2.1, XL, Turbo, refiner, inpainting.
    Sd(Box<StableDiffusion>),
    /// FLUX.1 schnell or dev.
    Flux(Box<FluxPipeline>),
    /// Stable Diffusion 3 / 3.5.
    Sd3(Box<Sd3Pipeline>),
}

impl Generator {
    /// Resolves `spec` (preset, hub id, folder) and loads it onto `device`.
    pub fn load(spec: &str, device: &str) -> crate::error::Result<Generator> {
        let invalid = |e: PipelineError| crate::error::Error::pipeline(spec, e);
        Ok(match resolve_any(spec)? {
            AnyModel::Unet(m) => {
                Generator::Sd(Box::new(StableDiffusion::load(m, device).map_err(invalid)?))
            }
            AnyModel::Flux(m) => {
                Generator::Flux(Box::new(FluxPipeline::load(*m, device).map_err(invalid)?))
            }
            AnyModel::Sd3(m) => {
                Generator::Sd3(Box::new(Sd3Pipeline::load(*m, device).map_err(invalid)?))
            }
        })
    }

    /// Uses another scheduler (`--scheduler`); FLUX's sampler is fixed.
    pub fn set_scheduler(&mut self, kind: SchedulerKind) -> Result<(), PipelineError> {
        match self {
            Generator::Sd(p) => {
                let cur = p.scheduler().clone();
                p.set_scheduler(SchedulerSettings { kind, ..cur });
                Ok(())
            }
            Generator::Flux(_) | Generator::Sd3(_) => Err(
                "FLUX.1 and SD3 sample with their flow-matching Euler sampler: --scheduler applies to the UNet models (SD 1.x, 2.x, XL) only"
                    .into(),
            ),
        }
    }

    /// The refiner that goes with model `spec`, if it has one.
    pub fn refiner(&self, spec: &str) -> Option<&'static str> {
        match self {
            Generator::Sd(p) => refiner_for(spec, p.config().family),
            Generator::Flux(_) | Generator::Sd3(_) => None,
        }
    }

    /// Whether the model takes a guidance scale (all but FLUX.1
    /// schnell-shaped models, which have no guidance input).
    pub fn takes_guidance(&self) -> bool {
        match self {
            Generator::Flux(p) => p.config().takes_guidance(),
            Generator::Sd(_) | Generator::Sd3(_) => true,
        }
    }
}

impl Pipeline for Generator {
    type Request = Request;
    type Output = Output;

    fn describe(&self) -> PipelineInfo {
        match self {
            Generator::Sd(p) => p.describe(),
            Generator::Flux(p) => p.describe(),
            Generator::Sd3(p) => p.describe(),
        }
    }

    fn prepare(&self, r: &Request) -> Result<CallSpec, PipelineError> {
        match self {
            Generator::Sd(p) => p.prepare(r),
            Generator::Flux(p) => p.prepare(r),
            Generator::Sd3(p) => p.prepare(r),
        }
    }

    fn run(&mut self, r: &Request, ctx: &mut CallContext<'_>) -> Result<Output, PipelineError> {
        match self {
            Generator::Sd(p) => p.run(r, ctx),
            Generator::Flux(p) => p.run(r, ctx),
            Generator::Sd3(p) => p.run(r, ctx),
        }
    }
}
