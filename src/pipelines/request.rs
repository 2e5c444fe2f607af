//! What every family's pipeline is asked and answers: a call's arguments
//! ([`Request`], where image-to-image starts), its output (images and the
//! latents a next stage takes) and the device a pipeline runs on. The
//! families (SD, FLUX, SD3) and the checks on a request all read these;
//! none of them owns them.

use crate::pipeline::PipelineError;
use candle_core::{Device, Tensor};
use image::RgbImage;
use std::sync::Arc;

/// A pipeline error from a message.
pub(crate) fn err(msg: impl Into<String>) -> PipelineError {
    msg.into().into()
}

/// Latents handed from one stage to the next (SDXL base → refiner), with the
/// decoded image they stand for.
#[derive(Debug, Clone)]
pub struct StageLatents {
    /// Scaled latents, shape (1, 4, h/8, w/8).
    pub latents: Tensor,
    /// The image decoded from them (the refiner's `Input-Image`).
    pub preview: Arc<RgbImage>,
}

/// Where an image-to-image call starts.
#[derive(Debug, Clone)]
pub enum InitImage {
    /// An image, used for every generated image.
    Image(Arc<RgbImage>),
    /// One set of latents per generated image, from a previous stage.
    Latents(Vec<StageLatents>),
}

/// Which random generator a seed drives: the noise a seed means.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Rng {
    /// difflog's own: a ChaCha8 stream per image (the default; the same on
    /// every machine and device).
    #[default]
    Difflog,
    /// PyTorch's CPU generator: image `i`'s noise is what
    /// `torch.Generator("cpu").manual_seed(seed + i)` draws, as diffusers'
    /// `randn_tensor` draws it with one generator per image.
    TorchCpu,
    /// PyTorch's CPU generator restored from a state `get_state()` gave
    /// (5056 bytes; a call recorded from Python whose generator had been
    /// used before): one image's noise, continuing that stream.
    TorchCpuState(Arc<[u8]>),
}

impl Rng {
    /// The names `--rng` takes and a call records.
    pub const NAMES: [&'static str; 2] = ["difflog", "torch-cpu"];

    /// `difflog` or `torch-cpu`.
    pub fn parse(name: &str) -> Option<Rng> {
        match name {
            "difflog" => Some(Rng::Difflog),
            "torch-cpu" => Some(Rng::TorchCpu),
            _ => None,
        }
    }

    /// Records the generator with a call's parameters (`rng`), when it is
    /// not difflog's own (a record without `rng` was drawn by difflog's).
    pub fn record(&self, params: &mut serde_json::Map<String, serde_json::Value>) {
        if *self != Rng::Difflog {
            params.insert("rng".into(), self.name().into());
        }
    }

    /// Its name, as `--rng` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Rng::Difflog => "difflog",
            Rng::TorchCpu | Rng::TorchCpuState(_) => "torch-cpu",
        }
    }
}

/// Skip-layer guidance (SD3.5 medium's recommended setting): during part of
/// the schedule the prediction also moves away from one made with some
/// joint blocks skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct SkipLayerGuidance {
    /// Joint blocks skipped.
    pub layers: Vec<usize>,
    /// Its scale.
    pub scale: f64,
    /// Fraction of the steps where it starts.
    pub start: f64,
    /// Fraction of the steps where it stops.
    pub stop: f64,
}

/// The arguments of one call; `None` means the model's default.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Prompts; each gives `num_images_per_prompt` images.
    pub prompt: Vec<String>,
    /// Negative prompt for every prompt.
    pub negative_prompt: Option<String>,
    /// Second prompt (XL's second text encoder; defaults to the prompt).
    pub prompt_2: Option<String>,
    /// Second negative prompt (defaults to the negative prompt).
    pub negative_prompt_2: Option<String>,
    /// Third prompt: SD3's T5 encoder (defaults to the prompt); refused by
    /// models without a third text encoder.
    pub prompt_3: Option<String>,
    /// Third negative prompt: SD3's T5 encoder (defaults to the negative prompt).
    pub negative_prompt_3: Option<String>,
    /// Images per prompt (default 1).
    pub num_images_per_prompt: Option<usize>,
    /// Inference steps.
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (≤ 1: no guidance).
    pub guidance_scale: Option<f64>,
    /// Width in pixels (multiple of 8).
    pub width: Option<usize>,
    /// Height in pixels (multiple of 8).
    pub height: Option<usize>,
    /// Seed of the first image; image `i` uses `seed + i`.
    pub seed: u64,
    /// The generator the seeds drive.
    pub rng: Rng,
    /// Image-to-image start.
    pub init: Option<InitImage>,
    /// How much of the schedule image-to-image runs, in (0, 1].
    pub strength: Option<f64>,
    /// Inpainting: the mask (white repaints, black keeps), the size of the
    /// image; only for an inpainting model, which needs it.
    pub mask: Option<Arc<RgbImage>>,
    /// SD3's skip-layer guidance: `None` the model's default, `Some(None)`
    /// none, `Some(Some(g))` this one (a replayed call's, as recorded);
    /// refused by other models.
    pub skip_layer_guidance: Option<Option<SkipLayerGuidance>>,
    /// T5's tokens per prompt (FLUX.1, SD3: `max_sequence_length`, 1 to
    /// 512); `None` the model's; refused by models without T5.
    pub max_sequence_length: Option<usize>,
}

impl Request {
    /// The number of images the call makes: one per handed-over latents
    /// (a next stage), else `num_images_per_prompt` per prompt.
    pub fn image_count(&self) -> usize {
        match &self.init {
            Some(InitImage::Latents(l)) => l.len(),
            _ => self.prompt.len() * self.num_images_per_prompt.unwrap_or(1),
        }
    }

    /// The output size: the asked width and height, else the input's size
    /// rounded down to a multiple of `multiple` (8 for SD, 16 for FLUX and
    /// SD3) or the handed-over latents' size, else `default` square.
    pub fn size(&self, default: usize, multiple: usize) -> (usize, usize) {
        let from_init = match &self.init {
            Some(InitImage::Image(img)) => Some((
                img.width() as usize / multiple * multiple,
                img.height() as usize / multiple * multiple,
            )),
            Some(InitImage::Latents(l)) => l.first().and_then(|s| {
                let dims = s.latents.dims();
                (dims.len() == 4).then(|| (dims[3] * 8, dims[2] * 8))
            }),
            None => None,
        };
        let (iw, ih) = from_init.unwrap_or((default, default));
        (self.width.unwrap_or(iw), self.height.unwrap_or(ih))
    }
}

/// What a call returns.
#[derive(Debug, Clone)]
pub struct Output {
    /// The images, in row order.
    pub images: Vec<RgbImage>,
    /// The final latents of each image, for a next stage.
    pub latents: Vec<StageLatents>,
}

/// Parses `cpu` or `cuda:N` (`metal:N` on macOS builds) into a device.
pub fn parse_device(name: &str) -> Result<Device, PipelineError> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = name
        .strip_prefix("cuda:")
        .or(if name == "cuda" { Some("0") } else { None })
    {
        let n: usize = n
            .parse()
            .map_err(|_| err(format!("invalid device {name:?}: expected cuda:N")))?;
        if !cfg!(feature = "cuda") {
            return Err(err(format!(
                "device {name} needs a build with CUDA: rebuild with `cargo build --release --features cuda`"
            )));
        }
        return Device::new_cuda(n).map_err(|e| {
            // candle appends a backtrace when RUST_BACKTRACE is set: the
            // first line is the driver's answer.
            let first = e.to_string().lines().next().unwrap_or("").to_string();
            err(format!(
                "device {name}: the GPU cannot be used ({first}); is the NVIDIA driver \
                 installed and GPU {n} visible (nvidia-smi)? `--device cpu` runs without one"
            ))
        });
    }
    if let Some(n) = name.strip_prefix("metal:") {
        let n: usize = n
            .parse()
            .map_err(|_| err(format!("invalid device {name:?}: expected metal:N")))?;
        if !cfg!(feature = "metal") {
            return Err(err(format!(
                "device {name} needs a build with `--features metal`"
            )));
        }
        return Device::new_metal(n).map_err(|e| {
            let first = e.to_string().lines().next().unwrap_or("").to_string();
            err(format!("device {name}: the GPU cannot be used ({first})"))
        });
    }
    Err(err(format!(
        "invalid device {name:?}: expected cpu or cuda:N"
    )))
}
