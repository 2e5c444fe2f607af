//! The `Pipeline` trait: how any diffusion pipeline — built in or a user's
//! own — describes itself and its calls so that every call is recorded.
//!
//! There is no list of supported classes: whatever implements this trait is
//! recorded the same way (W&B's autolog silently skips pipelines not on its
//! list). A pipeline says what it is ([`PipelineInfo`]), what a request will
//! do before it runs ([`CallSpec`]: every argument with defaults filled in,
//! one seed per image), and while it runs hands each image to the
//! [`CallContext`] and marks its phases for the timings.
//!
//! This layer knows nothing of recording: a [`CallContext`] hands images to
//! an [`ImageSink`] (the recorder's, or none), and running a call recorded
//! into the active run is the recorder's extension of this trait
//! (`difflog::AutologCall`).

use crate::format::names;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Error type returned by pipelines (any error they like).
pub type PipelineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a pipeline instance is; recorded once per run as a `pipeline` event.
/// (Deserialize: the Python package hands it over as JSON.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineInfo {
    /// Class name (`StableDiffusionPipeline`, `StableDiffusionXLImg2ImgPipeline`, a user's own).
    pub class: String,
    /// Model id: hub id, local folder or `tiny`.
    pub model_id: String,
    /// Hub revision (commit) of the weights, if known.
    pub revision: Option<String>,
    /// Digest of the weights, if known.
    pub weights_digest: Option<String>,
    /// Tensor dtype (`f32`, `f16`, …).
    pub dtype: String,
    /// Device (`cpu`, `cuda:0`, …).
    pub device: String,
    /// Components: name → class.
    #[serde(default)]
    pub components: Map<String, Value>,
    /// The full scheduler configuration.
    #[serde(default)]
    pub scheduler: Value,
}

/// What a call will do, known before it runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallSpec {
    /// Every call argument, defaults filled in, generators turned into seeds.
    pub params: Map<String, Value>,
    /// The seed of every image the call will generate, in row order.
    pub seeds: Vec<u64>,
    /// Whether the table has SDXL's `Prompt-2` and `Negative-Prompt-2` columns.
    pub second_prompts: bool,
    /// Whether the table has SD3's `Prompt-3` and `Negative-Prompt-3`
    /// columns (its T5 encoder's), as difflog's Python recorder names them.
    pub third_prompts: bool,
    /// Whether the table has an `Input-Image` column (image-to-image).
    pub input_image: bool,
    /// Whether the table has a `Mask-Image` column (inpainting).
    pub mask_image: bool,
    /// Whether the call makes videos: its rows' media column is
    /// `Generated-Video` ([`CallContext::video`]), not `Generated-Image`.
    pub video: bool,
}

impl CallSpec {
    /// The columns of this call's table, in order: W&B autolog's columns,
    /// then the seed difflog adds.
    pub fn columns(&self) -> Vec<String> {
        let mut c = vec![
            names::PROMPT.to_string(),
            names::NEGATIVE_PROMPT.to_string(),
        ];
        if self.second_prompts {
            c.push(names::PROMPT_2.into());
            c.push(names::NEGATIVE_PROMPT_2.into());
        }
        if self.third_prompts {
            c.push(names::PROMPT_3.into());
            c.push(names::NEGATIVE_PROMPT_3.into());
        }
        if self.input_image {
            c.push(names::INPUT_IMAGE.into());
        }
        if self.mask_image {
            c.push(names::MASK_IMAGE.into());
        }
        if self.video {
            // Autolog's text-to-video tables: the frames, then the video.
            c.push(names::NUMBER_OF_FRAMES.into());
            c.push(names::GENERATED_VIDEO.into());
        } else {
            c.push(names::GENERATED_IMAGE.into());
        }
        c.push(names::SEED.into());
        c
    }
}

/// One generated image with the values of its table row.
#[derive(Debug, Clone)]
pub struct ImageRow {
    /// The generated image.
    pub image: RgbImage,
    /// The prompt it was generated from (also its caption).
    pub prompt: String,
    /// The negative prompt, if any.
    pub negative_prompt: Option<String>,
    /// SDXL's second prompt, if the pipeline has one.
    pub prompt_2: Option<String>,
    /// SDXL's second negative prompt.
    pub negative_prompt_2: Option<String>,
    /// SD3's third prompt (T5's), if the pipeline has one.
    pub prompt_3: Option<String>,
    /// SD3's third negative prompt.
    pub negative_prompt_3: Option<String>,
    /// The input image of image-to-image calls (shared between rows: stored once).
    pub input_image: Option<Arc<RgbImage>>,
    /// The mask of inpainting calls (white: repaint; shared between rows).
    pub mask_image: Option<Arc<RgbImage>>,
    /// The seed this image was generated from.
    pub seed: u64,
}

/// One generated video (its frames) with the values of its table row.
#[derive(Debug, Clone)]
pub struct VideoRow {
    /// The frames in order, all of the first's size.
    pub frames: Vec<RgbImage>,
    /// Frames a second they play at, as the call states it.
    pub fps: f64,
    /// Where that rate came from, in words: the call's argument
    /// (`argument fps`) or the default the pipeline fell back to.
    pub fps_from: String,
    /// The prompt it was generated from (also its caption).
    pub prompt: String,
    /// The negative prompt, if any.
    pub negative_prompt: Option<String>,
    /// The seed it was generated from.
    pub seed: u64,
}

/// A diffusion pipeline whose calls difflog records.
pub trait Pipeline {
    /// The arguments of one call.
    type Request;
    /// What a call returns (images, latents for a refiner, …).
    type Output;

    /// Describes this pipeline instance.
    fn describe(&self) -> PipelineInfo;

    /// Validates a request and says what it will do. An error here means the
    /// call never began; it is returned and not recorded.
    fn prepare(&self, request: &Self::Request) -> Result<CallSpec, PipelineError>;

    /// Runs the call: marks phases with [`CallContext::phase`] and hands every
    /// generated image to [`CallContext::image`].
    fn run(
        &mut self,
        request: &Self::Request,
        ctx: &mut CallContext<'_>,
    ) -> Result<Self::Output, PipelineError>;
}

/// Where a [`CallContext`] hands a call's images: the recorder's writer
/// while a run records the call.
pub trait ImageSink {
    /// Takes the `index`-th image of the call with its row's values.
    fn image(&mut self, index: u32, row: ImageRow);

    /// Takes the `index`-th video of the call with its row's values.
    fn video(&mut self, index: u32, row: VideoRow);
}

/// Where a call shows its intermediate tensors when someone asks to see
/// them (`difflog generate --trace`, the parity tests): the schedule, the
/// text encoders' output, the latents after every step. Values in float32,
/// row-major.
pub trait Tracer {
    /// Takes the tensor `name` of `shape`.
    fn tensor(&mut self, name: &str, shape: &[usize], values: Vec<f32>);
}

/// A pipeline whose calls show their tensors to a [`Tracer`] (none: the
/// pipeline as it is).
pub struct Traced<'p, P> {
    inner: &'p mut P,
    tracer: Option<Box<dyn Tracer>>,
}

impl<'p, P> Traced<'p, P> {
    /// `inner`, traced by `tracer`.
    pub fn new(inner: &'p mut P, tracer: Option<Box<dyn Tracer>>) -> Traced<'p, P> {
        Traced { inner, tracer }
    }
}

impl<P: Pipeline> Pipeline for Traced<'_, P> {
    type Request = P::Request;
    type Output = P::Output;

    fn describe(&self) -> PipelineInfo {
        self.inner.describe()
    }

    fn prepare(&self, request: &Self::Request) -> Result<CallSpec, PipelineError> {
        self.inner.prepare(request)
    }

    fn run(
        &mut self,
        request: &Self::Request,
        ctx: &mut CallContext<'_>,
    ) -> Result<Self::Output, PipelineError> {
        ctx.tracer = self.tracer.take();
        let out = self.inner.run(request, ctx);
        self.tracer = ctx.tracer.take();
        out
    }
}

/// Per-call context handed to [`Pipeline::run`]: phase timings, the sink
/// for generated images and, when asked, a tracer.
pub struct CallContext<'a> {
    sink: Option<Box<dyn ImageSink + 'a>>,
    tracer: Option<Box<dyn Tracer>>,
    started: Instant,
    phase: Option<(String, Instant)>,
    pub(crate) timings: Vec<(String, Duration)>,
    pub(crate) saving: Duration,
    pub(crate) images: u32,
}

impl<'a> CallContext<'a> {
    /// A context handing the call's images to `sink` (none: not recorded).
    pub fn new(sink: Option<Box<dyn ImageSink + 'a>>) -> CallContext<'a> {
        CallContext {
            sink,
            tracer: None,
            started: Instant::now(),
            phase: None,
            timings: Vec::new(),
            saving: Duration::ZERO,
            images: 0,
        }
    }

    /// A context that records nothing (no active run).
    pub fn detached() -> CallContext<'static> {
        CallContext::new(None)
    }

    /// Ends the current phase (if any) and starts `name`
    /// (`text_encoding`, `denoising`, `decoding`, …).
    pub fn phase(&mut self, name: &str) {
        self.end_phase();
        self.phase = Some((name.to_string(), Instant::now()));
    }

    /// Ends the current phase.
    pub fn end_phase(&mut self) {
        if let Some((name, t)) = self.phase.take() {
            let d = t.elapsed();
            match self.timings.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += d,
                None => self.timings.push((name, d)),
            }
        }
    }

    /// Records one generated image as a row of the call's table. Never
    /// encodes on the caller's thread; blocks only if the writer's queue is
    /// full. Recording problems are reported by the run's `finish`, not here.
    pub fn image(&mut self, row: ImageRow) {
        self.hand_over(|sink, index| sink.image(index, row));
    }

    /// Hands the call's next row to the sink (if any), timed as saving.
    fn hand_over(&mut self, give: impl FnOnce(&mut dyn ImageSink, u32)) {
        let t = Instant::now();
        let index = self.images;
        self.images += 1;
        if let Some(r) = self.sink.as_mut() {
            give(r.as_mut(), index);
        }
        self.saving += t.elapsed();
    }

    /// Records one generated video (its frames, played at the rate the
    /// call states) as a row of the call's table; like [`CallContext::image`],
    /// it is encoded off the caller's thread.
    pub fn video(&mut self, row: VideoRow) {
        self.hand_over(|sink, index| sink.video(index, row));
    }

    /// Whether someone looks at the call's tensors ([`Tracer`]): a pipeline
    /// makes them only then.
    pub fn tracing(&self) -> bool {
        self.tracer.is_some()
    }

    /// Shows the tensor `name` to the tracer, if any.
    pub fn trace(&mut self, name: &str, shape: &[usize], values: Vec<f32>) {
        if let Some(t) = self.tracer.as_mut() {
            t.tensor(name, shape, values);
        }
    }

    /// Whether images handed over are being recorded.
    pub fn is_recording(&self) -> bool {
        self.sink.is_some()
    }

    /// Time since the call began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
