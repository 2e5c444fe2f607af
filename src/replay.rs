//! `difflog replay`: re-runs a recorded call from its record — model and
//! weights digest, scheduler, every argument, each image's seed — and says,
//! per image, whether the new PNG is byte-identical to the recorded one.
//!
//! This is the reproducibility promise made checkable: a recorded seed and
//! the same weights give the same bytes. Weights that differ from the
//! recorded digest are refused up front (naming the file), since a
//! comparison against other weights proves nothing.
//!
//! A call recorded from Python (diffusers, through difflog's Python
//! package) is re-made on candle too, when each of its images had a CPU
//! `torch.Generator` of its own, fresh or with its state recorded (difflog
//! then draws the same noise, `--rng torch-cpu`) and its scheduler is one difflog has: its PNG cannot be
//! byte-identical (diffusers computed it), so its pixels are compared, and
//! match when no value differs by more than one level of 255 (the parity
//! tolerance of tests/parity.rs).

use crate::error::{Error, Result};
use crate::event::{Cell, PipelineEvent, RowEvent};
use crate::format::names;
use crate::pipeline::Pipeline;
use crate::pipelines::SchedulerKind;
use crate::pipelines::{
    resolve_any, AnyModel, Generator, InitImage, Request, Rng, SkipLayerGuidance,
};
use crate::read::{CallView, RunDir, RunView};
use crate::run::media::{encode_png_using, sha256_hex, PngEncoding};
use image::RgbImage;
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;

/// The verdict for one image.
#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    /// Row index in the call's table.
    pub row: u32,
    /// The seed it was generated from.
    pub seed: u64,
    /// SHA-256 of the recorded PNG.
    pub recorded: String,
    /// SHA-256 of the regenerated PNG.
    pub replayed: String,
    /// Whether they are byte-identical.
    pub identical: bool,
    /// The largest difference of any pixel value, in levels of 255 (0 when
    /// identical).
    pub max_difference: f64,
    /// The verdict: byte-identical for a call difflog's pipelines made;
    /// pixels within one level for a call recorded from Python.
    pub matches: bool,
    /// The recorded file was signed (C2PA): a signature has random parts,
    /// so `recorded` is the digest of the file without its manifest, and
    /// "identical" means identical but for the manifest.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub without_manifest: bool,
}

/// Parameters only difflog's Python recorder writes (the arguments the
/// caller passed): the call was made by diffusers, not by difflog.
const FROM_PYTHON: &str = "difflog_passed";

/// The most a pixel value may differ, in levels of 255, for an image
/// diffusers made to match its re-making on candle.
pub const PIXEL_TOLERANCE: f64 = 1.0;

/// The scheduler a call recorded, as difflog's kind: its own names, or the
/// diffusers class the Python recorder wrote.
fn scheduler_kind(recorded: &Value) -> Option<std::result::Result<SchedulerKind, String>> {
    let name = recorded["name"]
        .as_str()
        .or(recorded["_class_name"].as_str())?;
    Some(match name {
        "DDIMScheduler" => Ok(SchedulerKind::Ddim),
        "EulerAncestralDiscreteScheduler" => Ok(SchedulerKind::EulerAncestral),
        other => SchedulerKind::parse(other).ok_or_else(|| other.to_string()),
    })
}

/// The random generator of row `index` of a call: the recorded `rng`; for
/// a call recorded from Python, PyTorch's when that image had a CPU
/// `torch.Generator` of its own: fresh (the row's seed is its seed) or
/// restored from the state the recorder kept.
fn row_rng(
    params: &serde_json::Map<String, Value>,
    index: u32,
    images: usize,
) -> std::result::Result<Rng, String> {
    if !params.contains_key(FROM_PYTHON) {
        return match params.get("rng").and_then(Value::as_str) {
            None => Ok(Rng::Difflog),
            Some(name) => Rng::parse(name).ok_or_else(|| {
                format!(
                    "it records random generator {name:?}, which this difflog does not know (it knows {})",
                    Rng::NAMES.join(", ")
                )
            }),
        };
    }
    let generator = match params.get("generator") {
        Some(Value::Array(list)) => list.get(index as usize),
        Some(g @ Value::Object(_)) if images == 1 => Some(g),
        Some(Value::Object(_)) => {
            return Err("one generator made all its images (a stream difflog draws per image): pass one generator per image, generator=[torch.Generator().manual_seed(s) for s in seeds]".into())
        }
        _ => None,
    };
    let Some(g) = generator else {
        return Err(
            "its noise came from torch's global generator, not from a generator of the image's own"
                .into(),
        );
    };
    if g["device"].as_str() != Some("cpu") {
        return Err(format!(
            "its generator was on {} (difflog draws PyTorch's CPU generator's noise)",
            g["device"]
        ));
    }
    if g["fresh"].as_bool() == Some(true) {
        return Ok(Rng::TorchCpu);
    }
    // Used before the call: its state then, as the recorder kept it.
    use base64::Engine as _;
    let state = g["state"]
        .as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or("its generator had been used before the call and its state was not recorded")?;
    crate::pipelines::parts::torch_rng::TorchGenerator::from_state(&state)
        .map_err(|e| format!("its generator's recorded state: {e}"))?;
    Ok(Rng::TorchCpuState(state.into()))
}

fn bad(run: &Path, why: impl Into<String>) -> Error {
    Error::Replay {
        run: run.to_path_buf(),
        why: why.into(),
    }
}

fn text(cells: &[Cell], column: &str) -> Option<String> {
    cells.iter().find_map(|c| match c {
        Cell::Text { column: col, value } if col == column => Some(value.clone()),
        _ => None,
    })
}

/// Replays call `call` of the run at `dir` (all rows, or only `row`) on `device`.
pub fn replay(dir: &Path, call: u32, row: Option<u32>, device: &str) -> Result<Vec<RowResult>> {
    let run = RunDir::open(dir)?;
    let view = run.view();
    let (c, p) = find_call(&view, dir, call)?;
    let model = resolve_any(&p.model_id)
        .map_err(|e| bad(dir, format!("the recorded model is not available: {e}")))?;
    let (digest, files) = match &model {
        AnyModel::Unet(m) => (&m.weights_digest, &m.files),
        AnyModel::Flux(m) => (&m.weights_digest, &m.files),
        AnyModel::Sd3(m) => (&m.weights_digest, &m.files),
    };
    check_weights(dir, p, digest, files)?;
    let mut pipe = Generator::load(&p.model_id, device)?;
    if let (Generator::Sd(_), Some(kind)) = (&pipe, scheduler_kind(&p.scheduler)) {
        let kind = kind.map_err(|name| {
            bad(
                dir,
                format!("call {call} used the scheduler {name}, which difflog does not have (it has DDIM, Euler ancestral and UniPC); nothing to compare"),
            )
        })?;
        pipe.set_scheduler(kind)
            .map_err(|e| Error::pipeline(&p.model_id, e))?;
    }
    let mut results = Vec::new();
    for r in c
        .rows
        .iter()
        .filter(|r| row.is_none_or(|want| want == r.index))
    {
        results.push(replay_row(&mut pipe, dir, (&run.meta.id, p), c, r)?);
    }
    if results.is_empty() {
        return Err(bad(
            dir,
            format!(
                "call {call} has no row {}",
                row.map_or("at all".into(), |r| r.to_string())
            ),
        ));
    }
    Ok(results)
}

/// The call to replay and the pipeline that made it; refused when the call
/// did not finish successfully (nothing to compare).
fn find_call<'v>(
    view: &'v RunView,
    dir: &Path,
    call: u32,
) -> Result<(&'v CallView, &'v PipelineEvent)> {
    let c = view.calls.get(&call).ok_or_else(|| {
        bad(
            dir,
            format!("no call {call} (the run has {} call(s))", view.calls.len()),
        )
    })?;
    if !c.ok() {
        return Err(bad(
            dir,
            format!("call {call} did not finish successfully; nothing to compare"),
        ));
    }
    let p = view.pipelines.get(&c.started.pipeline).ok_or_else(|| {
        bad(
            dir,
            format!(
                "call {call} names pipeline {} that is not recorded",
                c.started.pipeline
            ),
        )
    })?;
    Ok((c, p))
}

/// Refuses weights that differ from the recorded digest, naming the files
/// that changed: a comparison against other weights proves nothing.
fn check_weights(
    dir: &Path,
    p: &PipelineEvent,
    digest: &str,
    files: &serde_json::Map<String, Value>,
) -> Result<()> {
    let Some(recorded) = &p.weights_digest else {
        return Ok(());
    };
    if recorded == digest {
        return Ok(());
    }
    // A component's files: one {file, sha256}, or a list of shards.
    let each = |v: &Value| -> Vec<Value> {
        match v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        }
    };
    let mut changed = Vec::new();
    for (k, entry) in files {
        for now in each(entry) {
            let then = p.components.values().find_map(|comp| {
                ["weights", "tokenizer"].iter().find_map(|w| {
                    each(&comp[*w])
                        .into_iter()
                        .find(|f| f["file"] == now["file"])
                        .map(|f| f["sha256"].clone())
                })
            });
            if then.as_ref() != Some(&now["sha256"]) {
                changed.push(format!("{k} ({})", now["file"].as_str().unwrap_or("?")));
            }
        }
    }
    Err(bad(
        dir,
        format!(
            "the weights of {} differ from the recorded ones ({recorded}, now {}); changed: {}",
            p.model_id,
            digest,
            if changed.is_empty() {
                "unknown".to_string()
            } else {
                changed.join(", ")
            }
        ),
    ))
}

/// The image a row's `column` cell refers to (the input image, the mask),
/// read as a regular file inside the run and bounded like every image read.
fn recorded_image(dir: &Path, r: &RowEvent, column: &str) -> Result<Option<Arc<RgbImage>>> {
    let Some(rel) = r.cells.iter().find_map(|x| match x {
        Cell::Image {
            column: c, path, ..
        } if c == column => Some(path.clone()),
        _ => None,
    }) else {
        return Ok(None);
    };
    let path = crate::read::run_file(dir, &rel)?;
    crate::read::decode_image(&path)
        .map(|img| Some(Arc::new(img)))
        .map_err(|e| Error::file(&path, format!("the recorded {column}: {e}")))
}

/// The skip-layer guidance a call ran with, as recorded (diffusers' SD3
/// names, difflog's and the Python recorder's alike): none when
/// `skip_guidance_layers` is null, those blocks when it lists them (scale,
/// start and stop as recorded, else diffusers' defaults), the model's
/// default when the call recorded nothing of it. Anything else recorded
/// there, or a scale, start or stop that is not a number, is refused with
/// the field named: the call cannot be re-made as it ran.
fn skip_layer_guidance(
    params: &Map<String, Value>,
) -> std::result::Result<Option<Option<SkipLayerGuidance>>, String> {
    let layers = match params.get("skip_guidance_layers") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(None)),
        Some(v) => v
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|b| b.as_u64().and_then(|b| usize::try_from(b).ok()))
                    .collect::<Option<Vec<usize>>>()
            })
            .ok_or_else(|| {
                format!("skip_guidance_layers is {v}, neither null nor a list of block numbers")
            })?,
    };
    let num = |k: &str, default: f64| match params.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("{k} is {v}, not a number")),
    };
    Ok(Some(Some(SkipLayerGuidance {
        layers,
        scale: num("skip_layer_guidance_scale", 2.8)?,
        start: num("skip_layer_guidance_start", 0.01)?,
        stop: num("skip_layer_guidance_stop", 0.2)?,
    })))
}

/// Regenerates one row from its seed and the call's arguments and compares
/// the PNG with the recorded one.
fn replay_row(
    pipe: &mut Generator,
    dir: &Path,
    (run_id, p): (&str, &PipelineEvent),
    c: &CallView,
    r: &RowEvent,
) -> Result<RowResult> {
    let call = c.started.call;
    let params = &c.started.params;
    let num = |k: &str| params.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let opt_text = |k: &str| params.get(k).and_then(Value::as_str).map(str::to_string);
    let rng = row_rng(params, r.index, c.rows.len()).map_err(|why| {
        bad(
            dir,
            format!("call {call}, row {} cannot be re-made: {why}", r.index),
        )
    })?;
    let seed = r
        .cells
        .iter()
        .find_map(|x| match x {
            Cell::Number { column, value } if column == names::SEED => value.as_u64(),
            _ => None,
        })
        .ok_or_else(|| bad(dir, format!("call {call}, row {} has no seed", r.index)))?;
    let (recorded, recorded_path) = r
        .cells
        .iter()
        .find_map(|x| match x {
            Cell::Image {
                column,
                digest,
                path,
                ..
            } if column == names::GENERATED_IMAGE => Some((digest.clone(), path.clone())),
            _ => None,
        })
        .ok_or_else(|| {
            bad(
                dir,
                format!("call {call}, row {} has no generated image", r.index),
            )
        })?;
    let init = match recorded_image(dir, r, names::INPUT_IMAGE)? {
        None => None,
        Some(_) if params.get("image").and_then(|i| i.get("latents")).is_some() => {
            return Err(bad(dir, format!(
                "call {call} refined latents handed over from a previous stage; replay that stage's call instead"
            )))
        }
        Some(img) => Some(InitImage::Image(img)),
    };
    let mask = recorded_image(dir, r, names::MASK_IMAGE)?;
    let req = Request {
        prompt: vec![text(&r.cells, names::PROMPT).unwrap_or_default()],
        negative_prompt: text(&r.cells, names::NEGATIVE_PROMPT)
            .or_else(|| opt_text("negative_prompt")),
        prompt_2: opt_text("prompt_2"),
        negative_prompt_2: opt_text("negative_prompt_2"),
        prompt_3: opt_text("prompt_3"),
        negative_prompt_3: opt_text("negative_prompt_3"),
        num_images_per_prompt: Some(1),
        steps: num("num_inference_steps"),
        // diffusers records its default guidance for a FLUX.1 schnell-shaped
        // call, which the model has no input for (difflog refuses one).
        guidance_scale: params
            .get("guidance_scale")
            .and_then(Value::as_f64)
            .filter(|_| pipe.takes_guidance()),
        width: num("width"),
        height: num("height"),
        seed,
        rng,
        init,
        strength: params.get("strength").and_then(Value::as_f64),
        mask,
        skip_layer_guidance: skip_layer_guidance(params).map_err(|why| {
            bad(
                dir,
                format!("call {call}, row {} cannot be re-made: {why}", r.index),
            )
        })?,
        max_sequence_length: num("max_sequence_length"),
    };
    pipe.prepare(&req)
        .map_err(|e| Error::pipeline(&p.model_id, format!("call {call}, row {}: {e}", r.index)))?;
    let out = pipe
        .run(&req, &mut crate::pipeline::CallContext::detached())
        .map_err(|e| Error::pipeline(&p.model_id, format!("call {call}, row {}: {e}", r.index)))?;
    let img = out
        .images
        .first()
        .ok_or_else(|| Error::pipeline(&p.model_id, "the pipeline returned no image"))?;
    // The recipe the recorder wrote into the PNG, rebuilt from the record.
    let [negative, prompt_2, negative_2, prompt_3, negative_3] = [
        names::NEGATIVE_PROMPT,
        names::PROMPT_2,
        names::NEGATIVE_PROMPT_2,
        names::PROMPT_3,
        names::NEGATIVE_PROMPT_3,
    ]
    .map(|column| text(&r.cells, column));
    let chunks = crate::recipe::chunks(&crate::recipe::RecipeInput {
        run_id,
        call,
        row: r.index,
        prompts: crate::recipe::RowPrompts {
            prompt: &req.prompt[0],
            negative_prompt: negative.as_deref(),
            prompt_2: prompt_2.as_deref(),
            negative_prompt_2: negative_2.as_deref(),
            prompt_3: prompt_3.as_deref(),
            negative_prompt_3: negative_3.as_deref(),
        },
        seed,
        size: img.dimensions(),
        params,
        model_id: &p.model_id,
        weights_digest: p.weights_digest.as_deref(),
        scheduler: &p.scheduler,
    });
    // The run may have been recorded with any PNG encoding, and before
    // difflog wrote XMP (2026-12-06): the same pixels give that encoding's
    // bytes with those chunks. The default's digest is reported when none
    // matches.
    // The marks the recorded file was given: its watermark is made again
    // (the method is deterministic); its manifest is left out of both
    // sides of the comparison (a signature is not).
    let marks = c
        .media
        .iter()
        .find(|m| m.digest == recorded)
        .and_then(|m| m.provenance.clone())
        .unwrap_or_default();
    let marked;
    let img: &RgbImage = match &marks.watermark {
        Some(w) => {
            let message = crate::provenance::watermark::Message::from_bits(&w.bits)
                .map_err(|why| bad(dir, format!("call {call}, row {}: {why}", r.index)))?;
            let (width, height) = img.dimensions();
            marked = crate::provenance::watermark::embed(img.as_raw(), width, height, &message)
                .ok()
                .and_then(|px| RgbImage::from_raw(width, height, px))
                .ok_or_else(|| {
                    bad(
                        dir,
                        format!(
                            "call {call}, row {}: the recorded watermark cannot be made again",
                            r.index
                        ),
                    )
                })?;
            &marked
        }
        None => img,
    };
    let without_manifest = marks.c2pa.is_some();
    let recorded = if without_manifest {
        let path = crate::read::run_file(dir, &recorded_path)?;
        let bytes = crate::read::read_regular(&path, crate::read::MAX_IMAGE_BYTES)
            .map_err(|e| Error::file(&path, e.to_string()))?;
        match crate::provenance::sign::without_manifest(&bytes) {
            Some(rest) => sha256_hex(&rest),
            None => {
                return Err(Error::file(
                    &path,
                    "recorded as signed, but it carries no C2PA manifest",
                ))
            }
        }
    } else {
        recorded
    };
    let default = PngEncoding::default();
    let mut replayed = sha256_hex(&encode_png_using(img, &chunks, default)?);
    let without_xmp: Vec<_> = chunks
        .iter()
        .filter(|c| c.0 != crate::recipe::XMP)
        .cloned()
        .collect();
    let others = PngEncoding::ALL.into_iter().filter(|e| *e != default);
    let tries = others
        .map(|e| (e, &chunks))
        .chain(PngEncoding::ALL.into_iter().map(|e| (e, &without_xmp)));
    for (encoding, chunks) in tries {
        if replayed == recorded {
            break;
        }
        let digest = sha256_hex(&encode_png_using(img, chunks, encoding)?);
        if digest == recorded {
            replayed = digest;
        }
    }
    let identical = replayed == recorded;
    let max_difference = if identical {
        0.0
    } else {
        match recorded_image(dir, r, names::GENERATED_IMAGE)? {
            Some(then) if then.dimensions() == img.dimensions() => then
                .as_raw()
                .iter()
                .zip(img.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .map_or(0.0, f64::from),
            _ => 255.0,
        }
    };
    let from_python = params.contains_key(FROM_PYTHON);
    Ok(RowResult {
        row: r.index,
        seed,
        identical,
        max_difference,
        matches: identical || (from_python && max_difference <= PIXEL_TOLERANCE),
        recorded,
        replayed,
        without_manifest,
    })
}
