//! `difflog._native`: the Rust recorder as the Python package sees it.
//!
//! The Python side (python/difflog/) hooks diffusers and turns each call
//! into a description (JSON), rows of cells and images; this module hands
//! them to difflog's recorder, which writes the same run directory the Rust
//! pipelines write. Pixels are copied once into Rust and encoded, hashed and
//! written by the recorder's background threads; the GIL is released while
//! a row waits for room in the writer's queue.

mod arrow;

use difflog::recipe::{CallRecipe, RowPrompts, TextChunk};
use difflog::run::media::Pixels;
use difflog::run::{CallStart, Mode, OpenCall, RowValue};
use difflog::{Init, PipelineInfo, Run};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pyo3::create_exception!(
    _native,
    RecordingError,
    PyRuntimeError,
    "difflog could not record (the run directory cannot be written, or the run is finished)."
);

fn recording_error(e: difflog::Error) -> PyErr {
    RecordingError::new_err(e.to_string())
}

fn parse_object(what: &str, json: &str) -> PyResult<Map<String, Value>> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(PyValueError::new_err(format!(
            "{what}: expected a JSON object"
        ))),
        Err(e) => Err(PyValueError::new_err(format!("{what}: not JSON: {e}"))),
    }
}

/// One run directory being recorded.
#[pyclass(module = "difflog._native", frozen)]
struct Recorder {
    run: std::sync::Mutex<Option<Arc<Run>>>,
    /// The last pipeline description as given and as read: a pipeline
    /// called again (the usual case) is neither parsed nor compared anew.
    last_info: std::sync::Mutex<Option<(String, Arc<PipelineInfo>)>>,
    id: Option<String>,
    dir: Option<PathBuf>,
}

impl Recorder {
    fn pipeline_info(&self, info_json: &str) -> PyResult<Arc<PipelineInfo>> {
        let mut last = self.last_info.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((text, info)) = last.as_ref() {
            if text == info_json {
                return Ok(Arc::clone(info));
            }
        }
        let info: Arc<PipelineInfo> = Arc::new(
            serde_json::from_str(info_json)
                .map_err(|e| PyValueError::new_err(format!("pipeline: {e}")))?,
        );
        *last = Some((info_json.to_string(), Arc::clone(&info)));
        Ok(info)
    }

    fn run(&self) -> PyResult<Arc<Run>> {
        let g = self.run.lock().unwrap_or_else(|p| p.into_inner());
        g.clone()
            .ok_or_else(|| RecordingError::new_err("the run is finished"))
    }
}

#[pymethods]
impl Recorder {
    /// Creates a run directory under `root` (default: `DIFFLOG_DIR` or
    /// `./runs`) — or, with `resume` (or `DIFFLOG_RESUME`), goes on
    /// recording into the run with that id there, creating it under that id
    /// when it is not; with `disabled` (or `DIFFLOG_MODE=disabled`) nothing
    /// is created and every method records nothing.
    #[new]
    #[pyo3(signature = (project, name=None, tags=Vec::new(), config_json=None, root=None, disabled=false, resume=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        project: String,
        name: Option<String>,
        tags: Vec<String>,
        config_json: Option<String>,
        root: Option<PathBuf>,
        disabled: bool,
        resume: Option<String>,
    ) -> PyResult<Recorder> {
        let mut init = Init::project(project);
        if let Some(n) = name {
            init = init.name(n);
        }
        for t in tags {
            init = init.tag(t);
        }
        if let Some(c) = config_json {
            init = init.config(Value::Object(parse_object("config", &c)?));
        }
        if let Some(r) = root {
            init = init.root(r);
        }
        if disabled {
            init = init.mode(Mode::Disabled);
        }
        if let Some(id) = resume {
            init = init.resume(id);
        }
        let run = py.detach(|| Run::create(init)).map_err(recording_error)?;
        Ok(Recorder {
            id: run.id().map(str::to_string),
            dir: run.dir().map(|d| d.to_path_buf()),
            run: std::sync::Mutex::new(Some(Arc::new(run))),
            last_info: std::sync::Mutex::new(None),
        })
    }

    /// The run id (`None` when recording is disabled).
    #[getter]
    fn run_id(&self) -> Option<String> {
        self.id.clone()
    }

    /// The run directory (`None` when recording is disabled).
    #[getter]
    fn dir(&self) -> Option<PathBuf> {
        self.dir.clone()
    }

    /// Whether anything is recorded.
    #[getter]
    fn recording(&self) -> bool {
        self.id.is_some()
    }

    /// Merges run-level config (a JSON object) over earlier config.
    fn log_config(&self, config_json: &str) -> PyResult<()> {
        let values = parse_object("config", config_json)?;
        self.run()?
            .log_config(Value::Object(values))
            .map_err(recording_error)
    }

    /// Begins recording a call: `info_json` describes the pipeline (class,
    /// model_id, revision, weights_digest, dtype, device, components,
    /// scheduler), `params_json` every argument; `seeds` one per image.
    fn begin_call(
        &self,
        py: Python<'_>,
        info_json: &str,
        params_json: &str,
        seeds: Vec<u64>,
        columns: Vec<String>,
    ) -> PyResult<Call> {
        let info = self.pipeline_info(info_json)?;
        let params = parse_object("params", params_json)?;
        let run = self.run()?;
        let recipe = CallRecipe {
            run_id: run.id().unwrap_or_default().to_string(),
            params: params.clone(),
            model_id: info.model_id.clone(),
            weights_digest: info.weights_digest.clone(),
            scheduler: info.scheduler.clone(),
        };
        let start = CallStart {
            info,
            params,
            seeds,
            columns,
        };
        let open = py.detach(|| OpenCall::begin(run, start));
        Ok(Call {
            number: open.call(),
            open: Some(open),
            recipe,
        })
    }

    /// Waits until everything recorded so far is on disk; raises the first
    /// recording error, if any.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let run = self.run()?;
        py.detach(|| run.flush()).map_err(recording_error)
    }

    /// In a child process after `fork()`: lets the run go without ending
    /// it. The recorder's writer threads do not survive a fork, so ending
    /// (or dropping) the run here would wait on threads that do not exist;
    /// the parent goes on recording it. Later calls record nothing.
    fn abandon_after_fork(&self) {
        // try_lock: a lock held by a thread of the parent at the fork is
        // held forever here; then the run is left where it is.
        if let Ok(mut g) = self.run.try_lock() {
            if let Some(run) = g.take() {
                std::mem::forget(run);
            }
        }
    }

    /// Ends the run (as failed when `error` is given; as crashed when
    /// `crashed`: the program is dying of `error`), durably; raises the
    /// first recording error, if any. A second call does nothing.
    #[pyo3(signature = (error=None, crashed=false))]
    fn finish(&self, py: Python<'_>, error: Option<String>, crashed: bool) -> PyResult<()> {
        let run = self.run.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(run) = run else { return Ok(()) };
        py.detach(|| match (error, crashed) {
            (Some(e), true) => run.crash(e),
            (error, _) => run.end(error),
        })
        .map_err(recording_error)
    }
}

/// RGB pixels (8 bits a channel) handed to the recorder: an input of the
/// call (shown in many rows, stored once) or, wrapped in [`Generated`], a
/// generated image.
#[pyclass(module = "difflog._native", frozen)]
struct Image {
    pixels: Arc<dyn Pixels>,
}

/// Pixels in a Python `bytes` object, kept alive and read in place: the
/// caller's thread does not copy them (`bytes` are immutable, so what is
/// encoded later is what was handed over).
struct PyPixels {
    width: u32,
    height: u32,
    data: PyBackedBytes,
}

impl Pixels for PyPixels {
    fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn rgb(&self) -> &[u8] {
        &self.data
    }
}

#[pymethods]
impl Image {
    /// `data`: `width * height * 3` bytes, rows top to bottom, RGB (a
    /// `bytes` object is kept as it is; anything else is copied).
    #[new]
    fn new(width: u32, height: u32, data: PyBackedBytes) -> PyResult<Image> {
        let expected = width as usize * height as usize * 3;
        if width == 0 || height == 0 || data.len() != expected {
            return Err(PyValueError::new_err(format!(
                "an RGB image of {width}x{height} needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(Image {
            pixels: Arc::new(PyPixels {
                width,
                height,
                data,
            }),
        })
    }

    /// The pixels of a PIL image in mode `RGB`, copied from its Arrow
    /// export (one copy of its memory, no packing in this thread); `None`
    /// when Pillow has no such export for it (then pass `tobytes()` to
    /// `Image(...)`).
    #[staticmethod]
    fn from_pil(image: &Bound<'_, PyAny>) -> PyResult<Option<Image>> {
        let (width, height): (u32, u32) = image.getattr("size")?.extract()?;
        if image.getattr("mode")?.extract::<String>()? != "RGB" {
            return Ok(None);
        }
        Ok(arrow::rgb_from_pil(image, width, height).map(|p| Image {
            pixels: Arc::new(p),
        }))
    }

    /// Width in pixels.
    #[getter]
    fn width(&self) -> u32 {
        self.pixels.dimensions().0
    }

    /// Height in pixels.
    #[getter]
    fn height(&self) -> u32 {
        self.pixels.dimensions().1
    }
}

/// A generated image with its caption and, when its seed is known, the
/// recipe its PNG carries (prompts and seed; the rest comes from the call).
#[pyclass(module = "difflog._native", frozen)]
struct Generated {
    pixels: Arc<dyn Pixels>,
    caption: Option<String>,
    recipe: Option<Map<String, Value>>,
}

#[pymethods]
impl Generated {
    /// `recipe_json`: `{"prompt", "negative_prompt", "prompt_2",
    /// "negative_prompt_2", "prompt_3", "negative_prompt_3", "seed"}` (a
    /// recipe needs a prompt and a seed).
    #[new]
    #[pyo3(signature = (image, caption=None, recipe_json=None))]
    fn new(
        image: &Image,
        caption: Option<String>,
        recipe_json: Option<&str>,
    ) -> PyResult<Generated> {
        let recipe = recipe_json.map(|j| parse_object("recipe", j)).transpose()?;
        Ok(Generated {
            pixels: Arc::clone(&image.pixels),
            caption,
            recipe,
        })
    }
}

/// A generated video: its frames (each an [`Image`], all of the first's
/// size), the rate they play at, where that rate came from, and its
/// caption. The recorder encodes it off the caller's thread as one MP4
/// (or animated PNG: `DIFFLOG_VIDEO=apng`).
#[pyclass(module = "difflog._native", frozen)]
struct Video {
    frames: Vec<Arc<dyn Pixels>>,
    fps: f64,
    fps_from: Option<String>,
    caption: Option<String>,
    generated: bool,
}

#[pymethods]
impl Video {
    /// `frames`: the frames in order; `fps`: frames a second (above 0, at
    /// most 1000); `fps_from`: where that rate came from; `generated`:
    /// whether the call made it (False: a video it was given).
    #[new]
    #[pyo3(signature = (frames, fps, fps_from=None, caption=None, generated=true))]
    fn new(
        frames: Vec<PyRef<'_, Image>>,
        fps: f64,
        fps_from: Option<String>,
        caption: Option<String>,
        generated: bool,
    ) -> PyResult<Video> {
        let Some(first) = frames.first() else {
            return Err(PyValueError::new_err("a video needs at least one frame"));
        };
        let size = first.pixels.dimensions();
        if let Some((i, f)) = frames
            .iter()
            .enumerate()
            .find(|(_, f)| f.pixels.dimensions() != size)
        {
            let (w, h) = f.pixels.dimensions();
            return Err(PyValueError::new_err(format!(
                "frame {i} is {w}x{h}, not {}x{} as the first",
                size.0, size.1
            )));
        }
        difflog::run::video::FrameRate::from_fps(fps).map_err(PyValueError::new_err)?;
        Ok(Video {
            frames: frames.iter().map(|f| Arc::clone(&f.pixels)).collect(),
            fps,
            fps_from,
            caption,
            generated,
        })
    }

    /// The MP4 the recorder's encoder writes of these frames (the same
    /// encoder and settings: the same frames give the same bytes), for
    /// `remake` to compare a re-made video with one kept as MP4 (by what
    /// each plays: [`mp4_stream_digest`]). Raises
    /// `ValueError` where H.264 cannot hold them.
    fn mp4<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let refs: Vec<&dyn Pixels> = self.frames.iter().map(|f| f.as_ref()).collect();
        let rate =
            difflog::run::video::FrameRate::from_fps(self.fps).map_err(PyValueError::new_err)?;
        let bytes = py
            .detach(|| difflog::run::mp4::encode_mp4(&refs, rate))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(pyo3::types::PyBytes::new(py, &bytes))
    }

    /// How many frames it has.
    #[getter]
    fn frames(&self) -> usize {
        self.frames.len()
    }
}

/// The chunks of a generated image whose recipe names a prompt and a seed;
/// otherwise (a recipe without its seed would not make the image) only the
/// XMP packet that says a trained model made it (issue 36).
fn recipe_chunks(
    base: &CallRecipe,
    call: u32,
    row: u32,
    image: &dyn Pixels,
    r: &Map<String, Value>,
) -> Vec<TextChunk> {
    let s = |k: &str| r.get(k).and_then(Value::as_str);
    let (Some(prompt), Some(seed)) = (s("prompt"), r.get("seed").and_then(Value::as_u64)) else {
        return source_type_chunk(base);
    };
    let prompts = RowPrompts {
        prompt,
        negative_prompt: s("negative_prompt"),
        prompt_2: s("prompt_2"),
        negative_prompt_2: s("negative_prompt_2"),
        prompt_3: s("prompt_3"),
        negative_prompt_3: s("negative_prompt_3"),
    };
    base.chunks(call, row, prompts, seed, image.dimensions())
}

/// The chunks of a generated image without a recipe: the XMP packet alone.
fn source_type_chunk(base: &CallRecipe) -> Vec<TextChunk> {
    vec![difflog::recipe::xmp_chunk(&base.params)]
}

/// A call being recorded: `row` per image, then `finish`.
#[pyclass(module = "difflog._native")]
struct Call {
    open: Option<OpenCall<Arc<Run>>>,
    number: u32,
    recipe: CallRecipe,
}

/// A Python cell value as the recorder stores it.
fn cell_value(call: u32, row: u32, base: &CallRecipe, v: &Bound<'_, PyAny>) -> PyResult<RowValue> {
    if v.is_none() {
        return Ok(RowValue::Null);
    }
    if v.is_instance_of::<PyBool>() {
        return Ok(RowValue::Text(v.extract::<bool>()?.to_string()));
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(RowValue::Number(i.into()));
        }
        if let Ok(u) = v.extract::<u64>() {
            return Ok(RowValue::Number(u.into()));
        }
        return Ok(RowValue::Text(v.str()?.to_string()));
    }
    if v.is_instance_of::<PyFloat>() {
        let f = v.extract::<f64>()?;
        return Ok(Number::from_f64(f).map_or(RowValue::Text(f.to_string()), RowValue::Number));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(RowValue::Text(s.to_cow()?.into_owned()));
    }
    if let Ok(img) = v.cast::<Image>() {
        return Ok(RowValue::Input(Arc::clone(&img.get().pixels)));
    }
    if let Ok(g) = v.cast::<Generated>() {
        let g = g.get();
        let text = match &g.recipe {
            Some(r) => recipe_chunks(base, call, row, g.pixels.as_ref(), r),
            None => source_type_chunk(base),
        };
        return Ok(RowValue::Generated {
            image: Arc::clone(&g.pixels),
            caption: g.caption.clone(),
            text,
        });
    }
    if let Ok(v) = v.cast::<Video>() {
        let v = v.get();
        return Ok(RowValue::Video {
            frames: v.frames.clone(),
            fps: v.fps,
            fps_from: v.fps_from.clone(),
            caption: v.caption.clone(),
            generated: v.generated,
            // A generated video's file says a trained model made it.
            text: if v.generated {
                source_type_chunk(base)
            } else {
                Vec::new()
            },
        });
    }
    Err(PyTypeError::new_err(format!(
        "a table cell must be None, bool, int, float, str, Image, Generated or Video, not {}",
        v.get_type().name()?
    )))
}

#[pymethods]
impl Call {
    /// The call's number in its run (`Pipeline-Call-N`; 0 when disabled).
    #[getter]
    fn number(&self) -> u32 {
        self.number
    }

    /// Records row `index`: `(column, value)` pairs in the table's order.
    fn row(
        &mut self,
        py: Python<'_>,
        index: u32,
        cells: Vec<(String, Bound<'_, PyAny>)>,
    ) -> PyResult<()> {
        let mut values = Vec::with_capacity(cells.len());
        for (column, v) in &cells {
            values.push((
                column.clone(),
                cell_value(self.number, index, &self.recipe, v)?,
            ));
        }
        let open = self
            .open
            .as_mut()
            .ok_or_else(|| RecordingError::new_err("the call is finished"))?;
        py.detach(|| open.row(index, values))
            .map_err(recording_error)
    }

    /// Records how the call ended (`error`: the exception's text) and its
    /// timings in milliseconds. A second call does nothing.
    #[pyo3(signature = (error=None, timings=HashMap::new()))]
    fn finish(&mut self, py: Python<'_>, error: Option<String>, timings: HashMap<String, f64>) {
        let Some(open) = self.open.take() else { return };
        let mut t = Map::new();
        let mut named: Vec<_> = timings.into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in named {
            if let Some(n) = Number::from_f64((v * 1000.0).round() / 1000.0) {
                t.insert(k, Value::Number(n));
            }
        }
        py.detach(|| open.finish(error, t));
    }
}

/// One recorded call of the run directory `run_dir`, as JSON:
/// `{"run", "started", "rows", "media", "finished", "pipeline"}` (the
/// reader's view of it; image cells name their file inside the run). The
/// run is read by difflog's reader, bounded and checked like every run;
/// raises `ValueError` naming the run when it cannot be read or has no
/// such call.
#[pyfunction]
fn read_call(py: Python<'_>, run_dir: PathBuf, call: u32) -> PyResult<String> {
    let json = py.detach(|| -> Result<String, String> {
        let run = difflog::read::RunDir::open(&run_dir).map_err(|e| e.to_string())?;
        let view = run.view();
        let c = view.calls.get(&call).ok_or_else(|| {
            format!(
                "{}: no call {call} (Pipeline-Call-{call}) in this run",
                run_dir.display()
            )
        })?;
        let v = serde_json::json!({
            "run": run.meta.id,
            "started": c.started,
            "rows": c.rows,
            "media": c.media,
            "finished": c.finished,
            "pipeline": view.pipelines.get(&c.started.pipeline),
        });
        Ok(v.to_string())
    });
    json.map_err(PyValueError::new_err)
}

/// SHA-256 (hex) of the video an MP4 plays: its H.264 samples and their
/// times, whatever boxes were added around them (the recorder's XMP box,
/// a C2PA manifest) — for `remake` to compare a kept MP4 with frames
/// encoded again by [`Video::mp4`]. Raises `ValueError` for bytes that are
/// no such MP4.
#[pyfunction]
fn mp4_stream_digest(py: Python<'_>, data: &[u8]) -> PyResult<String> {
    py.detach(|| difflog::read::mp4_stream_digest(data))
        .map_err(PyValueError::new_err)
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_call, m)?)?;
    m.add_function(wrap_pyfunction!(mp4_stream_digest, m)?)?;
    m.add_class::<Recorder>()?;
    m.add_class::<Call>()?;
    m.add_class::<Image>()?;
    m.add_class::<Generated>()?;
    m.add_class::<Video>()?;
    m.add("RecordingError", m.py().get_type::<RecordingError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The names of columns, stages and tables, from the one place the
    // Rust side takes them (difflog::format::names).
    let names = pyo3::types::PyDict::new(m.py());
    for (k, v) in difflog::format::names::ALL {
        names.set_item(k, v)?;
    }
    m.add("NAMES", names)?;
    Ok(())
}
