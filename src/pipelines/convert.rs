//! Images to tensors and back, and the few checks every pipeline makes on a
//! request before it runs (memory, prompt length messages): shared by the
//! Stable Diffusion and FLUX pipelines so both treat inputs the same way.

use candle_core::{DType, Device, IndexOp, Tensor};
use image::RgbImage;
use std::sync::Arc;

use crate::pipelines::request::{InitImage, Request};

/// An RGB image as a (1, 3, h, w) tensor in [-1, 1] on `device`, resized
/// (Catmull-Rom) to `w`×`h` when it has another size.
pub fn image_tensor(
    img: &RgbImage,
    w: usize,
    h: usize,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let img = if (img.width() as usize, img.height() as usize) == (w, h) {
        img.clone()
    } else {
        image::imageops::resize(
            img,
            w as u32,
            h as u32,
            image::imageops::FilterType::CatmullRom,
        )
    };
    Tensor::from_vec(img.into_raw(), (h, w, 3), &Device::Cpu)?
        .permute((2, 0, 1))?
        .to_dtype(DType::F32)?
        .affine(2. / 255., -1.)?
        .unsqueeze(0)?
        .to_device(device)?
        .to_dtype(dtype)
}

/// An image-to-image request's input image (`None` without one, or with
/// refiner latents instead) and its tensor at the output size `w`×`h`.
pub fn input_image(
    r: &Request,
    w: usize,
    h: usize,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Option<(Arc<RgbImage>, Tensor)>> {
    match &r.init {
        Some(InitImage::Image(img)) => Ok(Some((
            Arc::clone(img),
            image_tensor(img, w, h, device, dtype)?,
        ))),
        _ => Ok(None),
    }
}

/// A decoded (1, 3, h, w) tensor in [-1, 1] as an RGB image (rounded, clamped).
pub fn tensor_image(img: &Tensor) -> candle_core::Result<RgbImage> {
    let img = ((img / 2.)? + 0.5)?.clamp(0f32, 1f32)?;
    let img = (img.to_dtype(DType::F32)? * 255.)?
        .round()?
        .to_dtype(DType::U8)?;
    let img = img.i(0)?.permute((1, 2, 0))?.to_device(&Device::Cpu)?;
    let (h, w, _) = img.dims3()?;
    let data = img.flatten_all()?.to_vec1::<u8>()?;
    RgbImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| candle_core::Error::Msg("decoded image has the wrong size".into()))
}

/// A prompt cut to 60 characters for an error message.
pub fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Memory available to a new allocation (Linux `MemAvailable`), in bytes.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a call whose largest attention (`need` bytes) cannot fit in the
/// memory this CPU has free: the allocator would abort the process mid-call.
/// GPU allocation failures are errors candle returns, so they are not checked.
pub fn check_memory(device: &Device, need: u128, w: usize, h: usize) -> Result<(), String> {
    if !device.is_cpu() {
        return Ok(());
    }
    let Some(avail) = available_memory() else {
        return Ok(());
    };
    if need > u128::from(avail) {
        let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
        return Err(format!(
            "{w}×{h} needs about {:.1} GiB for the model's attention, and {:.1} GiB of memory are available: choose a smaller size",
            gib(need),
            gib(u128::from(avail))
        ));
    }
    Ok(())
}

/// What a flow-transformer pipeline (FLUX.1, SD3) accepts for its image
/// inputs and output size: its family's name for messages, the model's id,
/// and the largest side (with why, when it is the model's own limit).
pub struct FlowLimits<'a> {
    /// "FLUX.1" or "SD3".
    pub family: &'a str,
    /// The model id, first in messages.
    pub model: &'a str,
    /// The largest width or height.
    pub max_side: usize,
    /// Why the largest side is what it is ("" when it is only a bound).
    pub why_max: &'a str,
}

/// The flow-transformer pipelines' checks on a request's images and size
/// `(w, h)`: no mask (no inpainting), no refiner latents, an input image of
/// at least 16 px, sides in multiples of 16 up to the limit.
pub fn check_flow_request(
    r: &Request,
    (w, h): (usize, usize),
    l: &FlowLimits<'_>,
) -> Result<(), String> {
    let (family, model) = (l.family, l.model);
    if r.mask.is_some() {
        return Err(format!(
            "{model}: a mask needs an inpainting model (sd15-inpaint, sd2-inpaint, sdxl-inpaint, tiny-inpaint); {family} inpainting is not supported"
        ));
    }
    match &r.init {
        Some(InitImage::Latents(_)) => {
            return Err(format!(
                "{model}: {family} has no refiner stage; give it an image instead"
            ))
        }
        Some(InitImage::Image(img)) if w == 0 || h == 0 => {
            return Err(format!(
                "the input image is {}×{} pixels: {family} needs at least 16×16 (its size, rounded down to multiples of 16, is the output size)",
                img.width(),
                img.height()
            ))
        }
        _ => {}
    }
    for (name, v) in [("width", w), ("height", h)] {
        if v == 0 || v % 16 != 0 || v > l.max_side {
            return Err(format!(
                "{name} {v}: {model} needs a positive multiple of 16, at most {}{}",
                l.max_side, l.why_max
            ));
        }
    }
    Ok(())
}

/// Refuses a third prompt on a model without a third text encoder (only
/// SD3 has one, its T5), rather than ignoring it.
pub fn no_third_prompt(r: &Request, model: &str) -> Result<(), String> {
    if r.prompt_3.is_some() || r.negative_prompt_3.is_some() {
        return Err(format!(
            "{model}: a third prompt (prompt_3, negative_prompt_3) is for SD3's third text encoder (T5); this model has none"
        ));
    }
    Ok(())
}

/// Refuses a T5 length on a model without T5 (SD 1.x/2.x/XL), rather than
/// ignoring it.
pub fn no_t5(r: &Request, model: &str) -> Result<(), String> {
    if r.max_sequence_length.is_some() {
        return Err(format!(
            "{model}: max_sequence_length is T5's (FLUX.1, SD3); this model has no T5"
        ));
    }
    Ok(())
}

/// Refuses skip-layer guidance on a model other than SD3's.
pub fn no_skip_layer_guidance(r: &Request, model: &str) -> Result<(), String> {
    if let Some(Some(_)) = r.skip_layer_guidance {
        return Err(format!(
            "{model}: skip-layer guidance is SD3's (it skips MMDiT blocks); this model has none"
        ));
    }
    Ok(())
}

/// The checks every request gets: at least one prompt and one image per
/// prompt. Returns the images per prompt.
pub fn check_counts(prompts: usize, per: Option<usize>) -> Result<usize, String> {
    if prompts == 0 {
        return Err("no prompt given: pass at least one prompt".into());
    }
    let per = per.unwrap_or(1);
    if per == 0 {
        return Err("num_images_per_prompt must be at least 1".into());
    }
    Ok(per)
}

/// Steps between 1 and the sampler's training timesteps.
pub fn check_steps(steps: usize, max: usize) -> Result<(), String> {
    if steps == 0 || steps > max {
        return Err(format!("steps {steps} must be between 1 and {max}"));
    }
    Ok(())
}

/// A guidance scale is a finite number ≥ 0.
pub fn check_guidance(g: f64) -> Result<(), String> {
    if !g.is_finite() || g < 0.0 {
        return Err(format!("guidance scale {g} must be a finite number ≥ 0"));
    }
    Ok(())
}
