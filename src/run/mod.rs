//! Recording runs: the [`Run`] handle, its settings ([`Init`]) and the
//! recording of pipeline calls.
//!
//! A `Run` owns one run directory: it writes `run.json` atomically, holds the
//! event log's lock, and feeds the background writer. Every method takes
//! `&self`, so one run can be shared between threads (the global autolog run
//! is an `Arc<Run>`). Recording never fails a pipeline call: a write error is
//! kept and reported by [`Run::flush`] and [`Run::finish`].

pub mod autolog;
pub mod call;
pub mod durable;
pub(crate) mod idat;
mod log;
pub(crate) mod marks;
pub mod media;
pub mod mp4;
pub mod video;
mod writer;

use crate::error::{Error, IoContext, Result, WriteError};
use crate::event::{
    ConfigEvent, Event, MetricEvent, PipelineEvent, RunFinished, RunResumed, RunStarted, RunStatus,
};
use crate::format::names;
use crate::format::{
    new_run_id, now_rfc3339, RunMeta, FORMAT_VERSION, MEDIA_DIR, RUN_JSON, TMP_PREFIX,
};
use crate::pipeline::{CallContext, ImageRow, Pipeline, PipelineError, PipelineInfo, VideoRow};
use crate::recipe::{CallRecipe, RowPrompts};
pub use call::{CallStart, OpenCall, RowValue};
use image::RgbImage;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, RwLock};
use writer::{Cmd, Writer};

/// Default number of raw images the writer queues before a caller waits.
pub const DEFAULT_QUEUE_CAPACITY: usize = 16;

/// Whether difflog records (`DIFFLOG_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Record into run directories (the default; difflog never uses the network).
    Offline,
    /// Record nothing; every recording call is a no-op.
    Disabled,
}

impl Mode {
    /// Reads `DIFFLOG_MODE` (`offline` or unset, or `disabled`).
    pub fn from_env() -> Result<Mode> {
        crate::error::env_choice(
            "DIFFLOG_MODE",
            Mode::Offline,
            &[("offline", Mode::Offline), ("disabled", Mode::Disabled)],
        )
    }
}

/// The root directory for runs: `DIFFLOG_DIR`, or `./runs`.
pub fn default_root() -> PathBuf {
    std::env::var_os("DIFFLOG_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("runs"))
}

/// Settings of a new run, like the `init` dict of W&B's `autolog`.
#[derive(Debug, Clone)]
pub struct Init {
    project: String,
    name: Option<String>,
    tags: Vec<String>,
    config: Map<String, Value>,
    root: Option<PathBuf>,
    mode: Option<Mode>,
    queue_capacity: usize,
    encoders: Option<usize>,
    png: Option<media::PngEncoding>,
    video: Option<video::VideoFormat>,
    sync: Option<durable::SyncMode>,
    resume: Option<String>,
    provenance: Option<PathBuf>,
}

impl Init {
    /// A run in `project`.
    pub fn project(project: impl Into<String>) -> Init {
        Init {
            project: project.into(),
            name: None,
            tags: Vec::new(),
            config: Map::new(),
            root: None,
            mode: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            encoders: None,
            png: None,
            video: None,
            sync: None,
            resume: None,
            provenance: None,
        }
    }

    /// Display name (default: the run id).
    pub fn name(mut self, name: impl Into<String>) -> Init {
        self.name = Some(name.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Init {
        self.tags.push(tag.into());
        self
    }

    /// Adds run-level config (a JSON object; other values are stored under `value`).
    pub fn config(mut self, config: Value) -> Init {
        match config {
            Value::Object(m) => self.config.extend(m),
            other => {
                self.config.insert("value".into(), other);
            }
        }
        self
    }

    /// Directory the run is created in (default: `DIFFLOG_DIR` or `./runs`).
    pub fn root(mut self, root: impl Into<PathBuf>) -> Init {
        self.root = Some(root.into());
        self
    }

    /// Overrides `DIFFLOG_MODE`.
    pub fn mode(mut self, mode: Mode) -> Init {
        self.mode = Some(mode);
        self
    }

    /// How PNGs are compressed; overrides `DIFFLOG_PNG`.
    pub fn png(mut self, encoding: media::PngEncoding) -> Init {
        self.png = Some(encoding);
        self
    }

    /// The file a video is kept as; overrides `DIFFLOG_VIDEO`.
    pub fn video(mut self, format: video::VideoFormat) -> Init {
        self.video = Some(format);
        self
    }

    /// Records into the run with this id under the root: resumes it when it
    /// is there (a job stopped by a scheduler's time limit, started again),
    /// else starts it under this id. Overrides `DIFFLOG_RESUME`. A finished
    /// run, or one another writer holds, is an error.
    pub fn resume(mut self, id: impl Into<String>) -> Init {
        self.resume = Some(id.into());
        self
    }

    /// How stored media are made durable; overrides `DIFFLOG_SYNC`.
    pub fn sync(mut self, mode: durable::SyncMode) -> Init {
        self.sync = Some(mode);
        self
    }

    /// Marks every generated image as the provenance configuration at
    /// `path` says (a signed C2PA manifest, a watermark: see
    /// [`crate::provenance`]); overrides `DIFFLOG_PROVENANCE`.
    pub fn provenance(mut self, path: impl Into<PathBuf>) -> Init {
        self.provenance = Some(path.into());
        self
    }

    /// Raw images queued for encoding before a caller waits (default 16).
    pub fn queue_capacity(mut self, n: usize) -> Init {
        self.queue_capacity = n.max(1);
        self
    }

    /// Encoder threads (default: one per core).
    pub fn encoders(mut self, n: usize) -> Init {
        self.encoders = Some(n.max(1));
        self
    }
}

/// The id of the run to resume or start: `Init::resume`'s, else
/// `DIFFLOG_RESUME`'s (unset or empty: none); one that is not a run id (a
/// path, say) is an error naming the setting.
fn resume_id(init: &Init) -> Result<Option<String>> {
    let (name, id) = match &init.resume {
        Some(id) => ("resume", id.clone()),
        None => match std::env::var("DIFFLOG_RESUME") {
            Ok(v) if !v.is_empty() => ("DIFFLOG_RESUME", v),
            _ => return Ok(None),
        },
    };
    if !crate::format::is_run_id(&id) {
        return Err(Error::Setting {
            name: name.into(),
            value: id,
            why: "not a run id: letters, digits, '-', '_' and '.', at most 128, not starting with '.'"
                .into(),
        });
    }
    Ok(Some(id))
}

fn default_encoders() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// A run being recorded. Finishes on drop (as failed if the thread panics).
pub struct Run {
    active: Option<Active>,
}

struct Active {
    id: String,
    dir: PathBuf,
    writer: RwLock<Option<Writer>>,
    next_call: AtomicU32,
    pipelines: Mutex<Pipelines>,
    input_file: Mutex<Option<Arc<marks::InputFile>>>,
    /// The file each video is kept as.
    video: video::VideoFormat,
}

/// The pipelines a run has recorded, with their numbers, and the next number.
type Pipelines = (Vec<(Arc<PipelineInfo>, u32)>, u32);

impl Run {
    /// Creates a new run directory under the root and starts recording.
    /// With `DIFFLOG_MODE=disabled` nothing is created and nothing recorded.
    pub fn create(init: Init) -> Result<Run> {
        let mode = match init.mode {
            Some(m) => m,
            None => Mode::from_env()?,
        };
        if mode == Mode::Disabled {
            return Ok(Run { active: None });
        }
        let png = match init.png {
            Some(p) => p,
            None => media::PngEncoding::from_env()?,
        };
        let video = match init.video {
            Some(v) => v,
            None => video::VideoFormat::from_env()?,
        };
        let sync = durable::SyncMode::given_or_env(init.sync)?;
        let marker = marks::marker(init.provenance.as_deref())?;
        if init.project.trim().is_empty() {
            return Err(Error::Invalid(
                "a run needs a non-empty project name".into(),
            ));
        }
        let root = init.root.clone().unwrap_or_else(default_root);
        std::fs::create_dir_all(&root).ctx(&root, "create runs root directory")?;
        let (id, dir) = match resume_id(&init)? {
            Some(id) => {
                let dir = root.join(&id);
                match std::fs::create_dir(&dir) {
                    Ok(()) => (id, dir),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let capacity = init.queue_capacity;
                        let encoders = init.encoders.unwrap_or_else(default_encoders);
                        let run = Run::reopen_with(
                            &dir,
                            (capacity, encoders),
                            (png, video, marker),
                            sync,
                        )?;
                        if !init.config.is_empty() {
                            run.log_config(Value::Object(init.config))?;
                        }
                        return Ok(run);
                    }
                    Err(e) => return Err(Error::io(&dir, "create run directory", e)),
                }
            }
            None => loop {
                let id = new_run_id();
                let dir = root.join(&id);
                match std::fs::create_dir(&dir) {
                    Ok(()) => break (id, dir),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(Error::io(&dir, "create run directory", e)),
                }
            },
        };
        // Until its log exists, a half-created run folder (a full disk) is
        // removed rather than left behind holding only a temporary file.
        let started = Run::start_files(&dir, &id, &init);
        let (meta, run_json_sha256, log) = match started {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let writer = Writer::start(
            dir.clone(),
            log,
            1,
            init.queue_capacity,
            init.encoders.unwrap_or_else(default_encoders),
            (png, marker),
            sync,
        );
        let run = Run {
            active: Some(Active {
                id: id.clone(),
                dir,
                writer: RwLock::new(Some(writer)),
                next_call: AtomicU32::new(1),
                pipelines: Mutex::new((Vec::new(), 1)),
                input_file: Mutex::new(None),
                video,
            }),
        };
        run.emit(Event::RunStarted(RunStarted {
            run_id: id,
            format: FORMAT_VERSION,
            pid: std::process::id(),
            host: meta.host,
            difflog_version: meta.difflog_version,
            run_json_sha256: Some(run_json_sha256),
        }))?;
        if !init.config.is_empty() {
            run.log_config(Value::Object(init.config))?;
        }
        Ok(run)
    }

    /// The files of a new run: `media/`, `run.json` (returning its SHA-256)
    /// and the locked, empty event log.
    fn start_files(dir: &Path, id: &str, init: &Init) -> Result<(RunMeta, String, log::EventLog)> {
        let media = dir.join(MEDIA_DIR);
        std::fs::create_dir(&media).ctx(&media, "create media directory")?;
        let meta = RunMeta {
            format: FORMAT_VERSION,
            id: id.to_string(),
            project: init.project.clone(),
            name: init.name.clone().unwrap_or_else(|| id.to_string()),
            tags: init.tags.clone(),
            host: host(),
            created: now_rfc3339(),
            difflog_version: env!("CARGO_PKG_VERSION").into(),
        };
        let sha = write_json_atomic(dir, RUN_JSON, &meta)?;
        let log = log::EventLog::create(dir)?;
        Ok((meta, sha, log))
    }

    /// Reopens an existing run (one whose writer is gone) to append to it:
    /// cuts a torn tail, removes leftover temporary files, and continues the
    /// sequence and the call numbering.
    pub fn reopen(dir: impl AsRef<Path>) -> Result<Run> {
        Run::reopen_with(
            dir,
            (DEFAULT_QUEUE_CAPACITY, default_encoders()),
            (
                media::PngEncoding::from_env()?,
                video::VideoFormat::from_env()?,
                marks::marker(None)?,
            ),
            durable::SyncMode::from_env()?,
        )
    }

    fn reopen_with(
        dir: impl AsRef<Path>,
        (capacity, encoders): (usize, usize),
        (png, video, marker): (media::PngEncoding, video::VideoFormat, marks::Marker),
        sync: durable::SyncMode,
    ) -> Result<Run> {
        let dir = dir.as_ref().to_path_buf();
        let (log, read, cut) = log::EventLog::reopen(&dir)?;
        let view = read.view();
        if view.finished.is_some() {
            return Err(Error::Invalid(format!(
                "{}: run is already finished; start a new run instead",
                dir.display()
            )));
        }
        media::remove_leftovers(&dir);
        let next_call = view.calls.keys().max().map_or(1, |n| n + 1);
        let next_pipeline = view.pipelines.keys().max().map_or(1, |n| n + 1);
        let next_seq = read.log.records.len() as u64 + 1;
        let writer = Writer::start(
            dir.clone(),
            log,
            next_seq,
            capacity,
            encoders,
            (png, marker),
            sync,
        );
        let run = Run {
            active: Some(Active {
                id: read.meta.id.clone(),
                dir,
                writer: RwLock::new(Some(writer)),
                next_call: AtomicU32::new(next_call),
                pipelines: Mutex::new((Vec::new(), next_pipeline)),
                input_file: Mutex::new(None),
                video,
            }),
        };
        if read.log.records.is_empty() {
            // The first writer died before its first record: the log must
            // still open with run_started (the contract's first record).
            // (run.json was read as a regular file by the reopen above.)
            let run_json_sha256 = std::fs::read(read.path.join(RUN_JSON))
                .ok()
                .map(|b| crate::format::sha256_hex(&b));
            run.emit(Event::RunStarted(RunStarted {
                run_id: read.meta.id.clone(),
                format: FORMAT_VERSION,
                pid: std::process::id(),
                host: host(),
                difflog_version: env!("CARGO_PKG_VERSION").into(),
                run_json_sha256,
            }))?;
        } else {
            run.emit(Event::RunResumed(RunResumed {
                pid: std::process::id(),
                host: host(),
                difflog_version: env!("CARGO_PKG_VERSION").into(),
                truncated_bytes: cut,
            }))?;
        }
        Ok(run)
    }

    /// The run id, or `None` when recording is disabled.
    pub fn id(&self) -> Option<&str> {
        self.active.as_ref().map(|a| a.id.as_str())
    }

    /// The run directory, or `None` when recording is disabled.
    pub fn dir(&self) -> Option<&Path> {
        self.active.as_ref().map(|a| a.dir.as_path())
    }

    /// Whether this run records anything.
    pub fn is_recording(&self) -> bool {
        self.active.is_some()
    }

    /// Records run-level config (a JSON object), merged over earlier config.
    pub fn log_config(&self, values: Value) -> Result<()> {
        let values = match values {
            Value::Object(m) => m,
            other => Map::from_iter([("value".to_string(), other)]),
        };
        self.emit(Event::Config(ConfigEvent { values }))
    }

    /// Records a scalar.
    pub fn log_metric(&self, name: &str, value: f64, step: Option<u64>) -> Result<()> {
        if !value.is_finite() {
            // JSON has no NaN or infinity; refuse rather than record a null.
            return Err(Error::Invalid(format!(
                "metric {name:?}: value {value} is not a finite number"
            )));
        }
        self.emit(Event::Metric(MetricEvent {
            name: name.into(),
            value,
            step,
        }))
    }

    /// Records an image under `key` (encoded in the background).
    pub fn log_image(&self, key: &str, image: RgbImage, caption: Option<&str>) -> Result<()> {
        let Some(a) = &self.active else { return Ok(()) };
        a.with_writer(|w| {
            let slot = w.encode(Arc::new(image))?;
            w.send(Cmd::Media {
                ts: now_rfc3339(),
                key: key.into(),
                caption: caption.map(str::to_string),
                call: None,
                slot,
            })
        })
    }

    /// Names the file the input image of the calls recorded from here on
    /// was read from (`difflog generate --image`), `None` for none: when
    /// the run signs its images, their manifests keep the file as their
    /// parent ingredient, with any Content Credentials it carries. Without
    /// it the ingredient is the input's pixels as the run stores them.
    pub fn set_input_file(&self, file: Option<(String, Vec<u8>)>) {
        if let Some(a) = &self.active {
            let file = file.map(|(name, bytes)| Arc::new(marks::InputFile { name, bytes }));
            *a.input_file.lock().unwrap_or_else(|p| p.into_inner()) = file;
        }
    }

    /// Runs a pipeline call and records it: the pipeline (once), the call with
    /// every argument and seed, one table row and media entry per image, and
    /// how the call ended with its timings. The call's result is returned as
    /// the pipeline gave it; recording problems never change it.
    pub fn record<P: Pipeline>(
        &self,
        pipeline: &mut P,
        request: &P::Request,
    ) -> Result<P::Output, PipelineError> {
        let spec = pipeline.prepare(request)?;
        let Some(a) = &self.active else {
            return pipeline.run(request, &mut CallContext::detached());
        };
        let info = pipeline.describe();
        let recipe = CallRecipe {
            run_id: a.id.clone(),
            params: spec.params.clone(),
            model_id: info.model_id.clone(),
            weights_digest: info.weights_digest.clone(),
            scheduler: info.scheduler.clone(),
        };
        let mut open = OpenCall::begin(
            self,
            CallStart {
                info: Arc::new(info),
                params: spec.params.clone(),
                seeds: spec.seeds.clone(),
                columns: spec.columns(),
            },
        );
        open.set_input_file(
            a.input_file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        );
        let mut ctx = CallContext::new(Some(Box::new(CallRecorder {
            open: &mut open,
            recipe,
            second_prompts: spec.second_prompts,
            third_prompts: spec.third_prompts,
            input_image: spec.input_image,
            mask_image: spec.mask_image,
        })));
        let result = pipeline.run(request, &mut ctx);
        ctx.end_phase();
        let mut timings = Map::new();
        for (name, d) in &ctx.timings {
            timings.insert(name.clone(), ms(*d));
        }
        timings.insert("saving".into(), ms(ctx.saving));
        timings.insert("total".into(), ms(ctx.elapsed()));
        drop(ctx);
        open.finish(result.as_ref().err().map(|e| e.to_string()), timings);
        result
    }

    /// Waits until everything recorded so far is on disk and synced;
    /// reports the first recording error, if any.
    pub fn flush(&self) -> Result<()> {
        let Some(a) = &self.active else { return Ok(()) };
        a.with_writer(|w| w.flush())
    }

    /// How many times a caller had to wait for room in the writer's queues.
    pub fn backpressure_waits(&self) -> u64 {
        let Some(a) = &self.active else { return 0 };
        a.with_writer(|w| Ok(w.waits())).unwrap_or(0)
    }

    /// Ends the run: records `run_finished`, waits until everything is
    /// durable, and reports the first recording error, if any.
    pub fn finish(self) -> Result<()> {
        self.close(RunStatus::Finished, None)
    }

    /// Ends the run as failed, with an error text.
    pub fn fail(self, error: &str) -> Result<()> {
        self.close(RunStatus::Failed, Some(error.to_string()))
    }

    /// Ends the run through a shared handle (an `Arc<Run>` that others may
    /// still hold): finished, or failed with `error`. Later recording
    /// through any handle fails with "finished"; a second end does nothing.
    pub fn end(&self, error: Option<String>) -> Result<()> {
        match error {
            None => self.close(RunStatus::Finished, None),
            Some(e) => self.close(RunStatus::Failed, Some(e)),
        }
    }

    /// Ends the run as crashed: the program is dying of `error` (an
    /// uncaught exception) and records so on its way down. Readers show the
    /// run as crashed with that text.
    pub fn crash(&self, error: String) -> Result<()> {
        self.close_as(RunFinished {
            status: RunStatus::Failed,
            error: Some(error),
            crashed: true,
        })
    }

    pub(crate) fn close(&self, status: RunStatus, error: Option<String>) -> Result<()> {
        self.close_as(RunFinished {
            status,
            error,
            crashed: false,
        })
    }

    fn close_as(&self, finished: RunFinished) -> Result<()> {
        let Some(a) = &self.active else { return Ok(()) };
        let writer = a.writer.write().unwrap_or_else(|p| p.into_inner()).take();
        let Some(writer) = writer else { return Ok(()) };
        let sent = writer.send(Cmd::Event {
            ts: now_rfc3339(),
            event: Box::new(Event::RunFinished(finished)),
        });
        let closed = writer.close();
        sent.and(closed).map_err(|source| Error::Recording {
            run: a.id.clone(),
            source,
        })
    }

    fn pipeline_index(&self, a: &Active, info: Arc<PipelineInfo>) -> u32 {
        let mut g = a.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, idx)) =
            g.0.iter()
                .find(|(i, _)| Arc::ptr_eq(i, &info) || *i == info)
        {
            return *idx;
        }
        let idx = g.1;
        g.1 += 1;
        g.0.push((Arc::clone(&info), idx));
        let info = Arc::unwrap_or_clone(info);
        // Queued while the lock is held: a thread that finds this pipeline
        // already listed waits here, so its call_started cannot overtake
        // the pipeline record (the order the contract promises).
        self.emit_quiet(Event::Pipeline(Box::new(PipelineEvent {
            pipeline: idx,
            class: info.class,
            model_id: info.model_id,
            revision: info.revision,
            weights_digest: info.weights_digest,
            dtype: info.dtype,
            device: info.device,
            components: info.components,
            scheduler: info.scheduler,
        })));
        drop(g);
        idx
    }

    fn emit(&self, event: Event) -> Result<()> {
        let Some(a) = &self.active else { return Ok(()) };
        a.with_writer(|w| {
            w.send(Cmd::Event {
                ts: now_rfc3339(),
                event: Box::new(event),
            })
        })
    }

    /// Emits during a pipeline call: a failure is reported at finish, not here.
    fn emit_quiet(&self, event: Event) {
        if let Err(e) = self.emit(event) {
            tracing::warn!("{e}");
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let result = if std::thread::panicking() {
            self.close(
                RunStatus::Failed,
                Some("the recording thread panicked".into()),
            )
        } else {
            self.close(RunStatus::Finished, None)
        };
        if let Err(e) = result {
            // Nobody is left to return this to; say it rather than lose it.
            eprintln!("difflog: {e}");
        }
    }
}

impl Active {
    fn with_writer<T>(&self, f: impl FnOnce(&Writer) -> Result<T, WriteError>) -> Result<T> {
        let g = self.writer.read().unwrap_or_else(|p| p.into_inner());
        let Some(w) = g.as_ref() else {
            return Err(Error::Recording {
                run: self.id.clone(),
                source: WriteError::Finished,
            });
        };
        f(w).map_err(|source| Error::Recording {
            run: self.id.clone(),
            source,
        })
    }
}

/// Hands the images of a [`Pipeline`]'s call to its [`OpenCall`] (inside
/// [`CallContext`]): one row per image in the columns [`crate::CallSpec`]
/// declared, with the image's recipe.
struct CallRecorder<'a, 'r> {
    open: &'a mut OpenCall<&'r Run>,
    recipe: CallRecipe,
    second_prompts: bool,
    third_prompts: bool,
    input_image: bool,
    mask_image: bool,
}

impl crate::pipeline::ImageSink for CallRecorder<'_, '_> {
    fn image(&mut self, index: u32, row: ImageRow) {
        let second = self.second_prompts;
        let text = |column: &str, v: Option<&str>| (column.to_string(), text_value(v));
        let mut cells = vec![
            text(names::PROMPT, Some(&row.prompt)),
            text(names::NEGATIVE_PROMPT, row.negative_prompt.as_deref()),
        ];
        if second {
            cells.push(text(names::PROMPT_2, row.prompt_2.as_deref()));
            cells.push(text(
                names::NEGATIVE_PROMPT_2,
                row.negative_prompt_2.as_deref(),
            ));
        }
        let third = self.third_prompts;
        if third {
            cells.push(text(names::PROMPT_3, row.prompt_3.as_deref()));
            cells.push(text(
                names::NEGATIVE_PROMPT_3,
                row.negative_prompt_3.as_deref(),
            ));
        }
        let input = |column: &str, img: &Option<Arc<RgbImage>>| {
            let v = img
                .as_ref()
                .map_or(RowValue::Null, |i| RowValue::Input(i.clone()));
            (column.to_string(), v)
        };
        if self.input_image {
            cells.push(input(names::INPUT_IMAGE, &row.input_image));
        }
        if self.mask_image {
            cells.push(input(names::MASK_IMAGE, &row.mask_image));
        }
        let chunks = self.recipe.chunks(
            self.open.call(),
            index,
            RowPrompts {
                prompt: &row.prompt,
                negative_prompt: row.negative_prompt.as_deref(),
                // Only what the table records, so the recipe is a function
                // of the record (replay rebuilds it from there).
                prompt_2: row.prompt_2.as_deref().filter(|_| second),
                negative_prompt_2: row.negative_prompt_2.as_deref().filter(|_| second),
                prompt_3: row.prompt_3.as_deref().filter(|_| third),
                negative_prompt_3: row.negative_prompt_3.as_deref().filter(|_| third),
            },
            row.seed,
            row.image.dimensions(),
        );
        cells.push((
            names::GENERATED_IMAGE.into(),
            RowValue::Generated {
                image: Arc::new(row.image),
                caption: Some(row.prompt),
                text: chunks,
            },
        ));
        cells.push((names::SEED.into(), RowValue::Number(row.seed.into())));
        if let Err(e) = self.open.row(index, cells) {
            tracing::warn!("{e}");
        }
    }

    fn video(&mut self, index: u32, row: VideoRow) {
        let cells = vec![
            (
                names::PROMPT.to_string(),
                RowValue::Text(row.prompt.clone()),
            ),
            (
                names::NEGATIVE_PROMPT.to_string(),
                text_value(row.negative_prompt.as_deref()),
            ),
            (
                names::NUMBER_OF_FRAMES.into(),
                RowValue::Number(row.frames.len().into()),
            ),
            (
                names::GENERATED_VIDEO.into(),
                RowValue::Video {
                    frames: row
                        .frames
                        .into_iter()
                        .map(|f| Arc::new(f) as Arc<dyn media::Pixels>)
                        .collect(),
                    fps: row.fps,
                    fps_from: Some(row.fps_from),
                    caption: Some(row.prompt),
                    generated: true,
                    text: vec![crate::recipe::xmp_chunk(&self.recipe.params)],
                },
            ),
            (names::SEED.into(), RowValue::Number(row.seed.into())),
        ];
        if let Err(e) = self.open.row(index, cells) {
            tracing::warn!("{e}");
        }
    }
}

fn text_value(value: Option<&str>) -> RowValue {
    value.map_or(RowValue::Null, |v| RowValue::Text(v.into()))
}

fn ms(d: std::time::Duration) -> Value {
    let v = (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Writes `name` in `dir` atomically: temporary file, fsync, rename, fsync dir.
/// Writes `name` atomically; returns the SHA-256 of the bytes written.
fn write_json_atomic<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> Result<String> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Encode {
        what: "a run's JSON file",
        why: format!("{name}: {e}"),
    })?;
    bytes.push(b'\n');
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).ctx(&tmp, "create temporary file")?;
        f.write_all(&bytes).ctx(&tmp, "write temporary file")?;
        f.sync_all().ctx(&tmp, "sync temporary file")?;
    }
    std::fs::rename(&tmp, &path).ctx(&path, "move file into place")?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(dir, "sync run directory")?;
    Ok(crate::format::sha256_hex(&bytes))
}
