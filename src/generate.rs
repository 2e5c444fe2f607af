//! `difflog generate`: load a model, generate, record the run, say where
//! everything is.
//!
//! The recording goes through the same public API a user's program uses
//! (a [`Run`] and [`Pipeline`] calls), so `generate` is also the reference
//! example of recording a workflow: the SDXL base → refiner handover is two
//! calls of one run, `Pipeline-Call-1` and `Pipeline-Call-2`.

use crate::error::{Error, Result};
use crate::event::Cell;
use crate::format::names;
use crate::pipeline::{Pipeline, Traced, Tracer};
use crate::pipelines::SchedulerKind;
use crate::pipelines::{Generator, InitImage, Request, Rng};
use crate::read::RunDir;
use crate::run::{Init, Run};
use image::RgbImage;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What `difflog generate` was asked to do.
#[derive(Debug, Clone)]
pub struct GenerateArgs {
    /// `tiny`, a preset, a hub id or a folder.
    pub model: String,
    /// Prompts (at least one).
    pub prompts: Vec<String>,
    /// Negative prompt.
    pub negative_prompt: Option<String>,
    /// Second prompt (XL's and SD3's CLIP-G, FLUX.1's T5).
    pub prompt_2: Option<String>,
    /// Third prompt (SD3's T5).
    pub prompt_3: Option<String>,
    /// Images per prompt.
    pub num_images_per_prompt: usize,
    /// Inference steps (model default if `None`).
    pub steps: Option<usize>,
    /// Guidance scale (model default if `None`).
    pub guidance_scale: Option<f64>,
    /// Width in pixels.
    pub width: Option<usize>,
    /// Height in pixels.
    pub height: Option<usize>,
    /// Seed of the first image.
    pub seed: u64,
    /// The random generator the seed drives.
    pub rng: Rng,
    /// `ddim`, `euler-a` or `unipc` (model default if `None`).
    pub scheduler: Option<String>,
    /// Input image for image-to-image.
    pub image: Option<PathBuf>,
    /// Image-to-image strength.
    pub strength: Option<f64>,
    /// Inpainting mask (white repaints, black keeps), with `image`.
    pub mask: Option<PathBuf>,
    /// Refine with this model (`Some(None)`: the base model's refiner).
    pub refiner: Option<Option<String>>,
    /// Project of the run.
    pub project: String,
    /// Root of runs.
    pub runs: PathBuf,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Also write the PNGs here.
    pub out: Option<PathBuf>,
    /// Print per-phase timings.
    pub verbose: bool,
    /// Write each call's tensors (schedule, text states, every step's
    /// latents) into this safetensors file.
    pub trace: Option<PathBuf>,
    /// T5's tokens per prompt (FLUX.1, SD3); the model's if `None`.
    pub max_sequence_length: Option<usize>,
    /// The provenance configuration marking every image
    /// (`DIFFLOG_PROVENANCE`'s if `None`).
    pub provenance: Option<PathBuf>,
}

/// The tensors of a `generate --trace`, in the order they came, each name
/// prefixed by its call (`call1.`, `call2.` for a refiner).
type Traces = Arc<Mutex<Vec<(String, Vec<usize>, Vec<f32>)>>>;

/// One call's tracer: names prefixed by the call.
struct CallTrace {
    call: u32,
    traces: Traces,
}

impl Tracer for CallTrace {
    fn tensor(&mut self, name: &str, shape: &[usize], values: Vec<f32>) {
        let name = format!("call{}.{name}", self.call);
        let mut t = self.traces.lock().unwrap_or_else(|p| p.into_inner());
        t.push((name, shape.to_vec(), values));
    }
}

/// The tracer of call `call`, when tracing.
fn tracer(traces: &Option<Traces>, call: u32) -> Option<Box<dyn Tracer>> {
    traces.as_ref().map(|t| {
        Box::new(CallTrace {
            call,
            traces: Arc::clone(t),
        }) as Box<dyn Tracer>
    })
}

/// Writes the traced tensors to `path` as safetensors (float32).
fn write_trace(path: &std::path::Path, traces: &Traces) -> Result<()> {
    // Taken, not copied: the values are written once.
    let taken = std::mem::take(&mut *traces.lock().unwrap_or_else(|p| p.into_inner()));
    let mut tensors = std::collections::HashMap::new();
    for (name, shape, values) in taken {
        let tensor =
            candle_core::Tensor::from_vec(values, shape.as_slice(), &candle_core::Device::Cpu)
                .map_err(|e| fail(format!("trace tensor {name}: {e}")))?;
        tensors.insert(name, tensor);
    }
    candle_core::safetensors::save(&tensors, path).map_err(|e| {
        Error::io(
            path,
            "write the trace",
            std::io::Error::other(e.to_string()),
        )
    })
}

fn fail(e: impl std::fmt::Display) -> Error {
    Error::Invalid(e.to_string())
}

/// Runs `difflog generate`, printing progress and results to `out`.
pub fn generate(args: &GenerateArgs, out: &mut dyn Write) -> Result<PathBuf> {
    let started = Instant::now();
    let scheduler = match &args.scheduler {
        None => None,
        Some(s) => Some(SchedulerKind::parse(s).ok_or_else(|| {
            fail(format!(
                "unknown scheduler {s:?}: expected ddim, euler-a or unipc"
            ))
        })?),
    };
    let (init, mask) = input_images(args)?;
    check_destinations(args)?;
    let mut base = load(&args.model, &args.device, scheduler)?;
    let refiner = load_refiner(args, &base, scheduler)?;
    let load_s = started.elapsed().as_secs_f64();
    let request = request_of(args, init, mask);
    // An invalid request never starts a run.
    base.prepare(&request)
        .map_err(|e| Error::pipeline(&args.model, e))?;

    let mut init = Init::project(&args.project).root(&args.runs).config(json!({
        "command": "difflog generate",
        "model": args.model,
        "refiner": args.refiner.as_ref().map(|r| r.clone().unwrap_or_else(|| "default".into())),
        "device": args.device,
    }));
    if let Some(p) = &args.provenance {
        init = init.provenance(p);
    }
    let run = Run::create(init)?;
    // A signed manifest keeps the input file (and its own credentials).
    if let Some(p) = &args.image {
        let bytes = crate::read::read_regular(p, crate::read::MAX_IMAGE_BYTES)
            .map_err(|e| Error::file(p, format!("cannot read the input image: {e}")))?;
        let name = p.file_name().map_or_else(
            || "input image".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        run.set_input_file(Some((name, bytes)));
    }
    let traces: Option<Traces> = args.trace.as_ref().map(|_| Traces::default());
    let first = run
        .record(&mut Traced::new(&mut base, tracer(&traces, 1)), &request)
        .map_err(|e| Error::pipeline(&args.model, e))?;
    let mut images = first.images.clone();
    if let Some(mut refiner) = refiner {
        let req = Request {
            init: Some(InitImage::Latents(first.latents)),
            width: None,
            height: None,
            strength: None,
            steps: args.steps,
            ..request.clone()
        };
        run.set_input_file(None);
        images = run
            .record(&mut Traced::new(&mut refiner, tracer(&traces, 2)), &req)
            .map_err(|e| Error::pipeline(refiner_name(args), e))?
            .images;
    }
    let dir = run.dir().map(PathBuf::from);
    run.finish()?;

    if let Some(o) = &args.out {
        // The files the run stored (recipe and marks in them) when there
        // is one with every image; else the pixels as the pipeline gave them.
        match dir.as_deref().map(stored_images).transpose()? {
            Some(files) if files.len() == images.len() => copy_images(o, &files, out)?,
            _ => write_images(o, &images, out)?,
        }
    }
    if let (Some(path), Some(t)) = (&args.trace, &traces) {
        write_trace(path, t)?;
    }
    let Some(dir) = dir else {
        return Ok(PathBuf::new());
    };
    report(
        &dir,
        args.verbose,
        load_s,
        started.elapsed().as_secs_f64(),
        out,
    )?;
    Ok(dir)
}

/// The refiner's name, as `--refiner` gave it.
fn refiner_name(args: &GenerateArgs) -> String {
    match &args.refiner {
        Some(Some(n)) => n.clone(),
        _ => format!("{}'s refiner", args.model),
    }
}

/// The input image (`--image`) and mask (`--mask`, which needs an image).
fn input_images(args: &GenerateArgs) -> Result<(Option<InitImage>, Option<Arc<RgbImage>>)> {
    let read = |p: &PathBuf, what: &str| {
        image::open(p)
            .map(|i| Arc::new(i.to_rgb8()))
            .map_err(|e| Error::file(p, format!("cannot read the {what}: {e}")))
    };
    let init = match &args.image {
        None => None,
        Some(p) => Some(InitImage::Image(read(p, "input image")?)),
    };
    let mask = match (&args.mask, &args.image) {
        (Some(_), None) => {
            return Err(fail(
                "--mask needs --image: the mask says which part of the image to repaint",
            ))
        }
        (Some(p), Some(_)) => Some(read(p, "mask image")?),
        (None, _) => None,
    };
    Ok((init, mask))
}

/// Fails before a model is loaded when the images would have nowhere to
/// go; makes the output folder (or finds it unusable) before anything is
/// generated or recorded.
fn check_destinations(args: &GenerateArgs) -> Result<()> {
    if crate::run::Mode::from_env()? == crate::run::Mode::Disabled && args.out.is_none() {
        return Err(fail(
            "recording is disabled (DIFFLOG_MODE=disabled) and no --out was given: the images would be lost",
        ));
    }
    if let Some(t) = &args.trace {
        let parent = t.parent().filter(|p| !p.as_os_str().is_empty());
        if parent.is_some_and(|p| !p.is_dir()) || t.is_dir() {
            return Err(Error::file(
                t,
                "--trace: not a file in an existing folder".to_string(),
            ));
        }
    }
    if let Some(o) = &args.out {
        std::fs::create_dir_all(o).map_err(|e| {
            Error::file(
                o,
                format!("--out: cannot use it as the output folder ({e})"),
            )
        })?;
    }
    Ok(())
}

/// The refiner `--refiner` asks for: the one named, or the base model's own.
fn load_refiner(
    args: &GenerateArgs,
    base: &Generator,
    scheduler: Option<SchedulerKind>,
) -> Result<Option<Generator>> {
    let Some(name) = &args.refiner else {
        return Ok(None);
    };
    let name = match name {
        Some(n) => n.clone(),
        None => base
            .refiner(&args.model)
            .ok_or_else(|| {
                fail(format!(
                    "model {} has no refiner: --refiner works with SDXL base models (sdxl, tiny-xl) or names one (--refiner MODEL)",
                    args.model
                ))
            })?
            .to_string(),
    };
    Ok(Some(load(&name, &args.device, scheduler)?))
}

/// The first stage's request from the arguments.
fn request_of(
    args: &GenerateArgs,
    init: Option<InitImage>,
    mask: Option<Arc<RgbImage>>,
) -> Request {
    Request {
        prompt: args.prompts.clone(),
        negative_prompt: args.negative_prompt.clone(),
        prompt_2: args.prompt_2.clone(),
        negative_prompt_2: None,
        prompt_3: args.prompt_3.clone(),
        negative_prompt_3: None,
        num_images_per_prompt: Some(args.num_images_per_prompt),
        steps: args.steps,
        guidance_scale: args.guidance_scale,
        width: args.width,
        height: args.height,
        seed: args.seed,
        rng: args.rng.clone(),
        init,
        strength: args.strength,
        mask,
        skip_layer_guidance: None,
        max_sequence_length: args.max_sequence_length,
    }
}

/// `--out`: the final images as `image-N.png`, each said on `out`.
/// The generated images of a run's last call, as stored, in row order.
fn stored_images(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let run = RunDir::open(dir)?;
    let view = run.view();
    let Some(call) = view.calls.values().last() else {
        return Ok(Vec::new());
    };
    let mut rows: Vec<_> = call.rows.iter().collect();
    rows.sort_by_key(|r| r.index);
    rows.iter()
        .filter_map(|r| {
            r.cells.iter().find_map(|c| match c {
                Cell::Image { column, path, .. } if column == names::GENERATED_IMAGE => {
                    Some(crate::read::run_file(dir, path))
                }
                _ => None,
            })
        })
        .collect()
}

/// `--out`: each stored file copied as `image-N.png`.
fn copy_images(o: &std::path::Path, files: &[PathBuf], out: &mut dyn Write) -> Result<()> {
    std::fs::create_dir_all(o).map_err(|e| Error::io(o, "create output folder", e))?;
    for (i, f) in files.iter().enumerate() {
        let p = o.join(format!("image-{i}.png"));
        std::fs::copy(f, &p).map_err(|e| Error::io(&p, "write image", e))?;
        writeln!(out, "wrote {}", p.display()).map_err(|e| Error::io("<stdout>", "write", e))?;
    }
    Ok(())
}

fn write_images(o: &std::path::Path, images: &[RgbImage], out: &mut dyn Write) -> Result<()> {
    std::fs::create_dir_all(o).map_err(|e| Error::io(o, "create output folder", e))?;
    for (i, img) in images.iter().enumerate() {
        let p = o.join(format!("image-{i}.png"));
        std::fs::write(&p, crate::run::media::encode_png(img)?)
            .map_err(|e| Error::io(&p, "write image", e))?;
        writeln!(out, "wrote {}", p.display()).map_err(|e| Error::io("<stdout>", "write", e))?;
    }
    Ok(())
}

fn load(model: &str, device: &str, scheduler: Option<SchedulerKind>) -> Result<Generator> {
    let mut p = Generator::load(model, device)?;
    if let Some(kind) = scheduler {
        p.set_scheduler(kind)
            .map_err(|e| Error::pipeline(model, e))?;
    }
    Ok(p)
}

fn report(
    dir: &std::path::Path,
    verbose: bool,
    load_s: f64,
    total_s: f64,
    out: &mut dyn Write,
) -> Result<()> {
    let w = |out: &mut dyn Write, s: String| {
        writeln!(out, "{s}").map_err(|e| Error::io("<stdout>", "write", e))
    };
    let run = RunDir::open(dir)?;
    let view = run.view();
    w(out, format!("run {}  ({})", run.meta.id, dir.display()))?;
    for call in view.calls.values() {
        w(
            out,
            format!("{} ({} image(s)):", call.started.stage, call.rows.len()),
        )?;
        for row in &call.rows {
            for cell in &row.cells {
                if let Cell::Image { column, path, .. } = cell {
                    if column == names::GENERATED_IMAGE {
                        w(out, format!("  {}", dir.join(path).display()))?;
                    }
                }
            }
        }
        if verbose {
            if let Some(f) = &call.finished {
                w(out, format!("  timings: {}", f.timings_text()))?;
            }
        }
    }
    if verbose {
        w(
            out,
            format!("model loading {:.3} s, total {:.3} s", load_s, total_s),
        )?;
    }
    w(out, format!("see it with: difflog show {}", dir.display()))
}
