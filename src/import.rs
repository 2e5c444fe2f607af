//! `difflog import`: another tool's output folder recorded as a run (issue
//! 35). Most images on a diffusion box come from ComfyUI, A1111, InvokeAI,
//! Fooocus, SwarmUI or NovelAI, not from scripts that call difflog; this
//! turns such a folder into a run with tables — one call per generation
//! batch, one row per image — that `report`, `compare` and `difflog-sync`
//! treat like any other.
//!
//! Design: one run per import of a folder (project `import`, named after
//! the folder, its config naming the folder and the tool). An import reads
//! every PNG under the folder (never through a link), keeps each file byte
//! for byte — the tool's metadata stays inside it — and skips the files
//! whose digest a previous import of the same folder (under the same root)
//! already holds: importing again adds nothing, and a new file makes a new
//! run with just the new images. Consecutive files (by modification time,
//! then name) whose generation settings agree but for the seed are one
//! call; the settings are the call's parameters, and each row has the
//! prompt, negative prompt, seed and source file.

use crate::error::{Error, Result};
use crate::format::{names, sha256_hex};
use crate::meta::{self, Generation};
use crate::pipeline::PipelineInfo;
use crate::read::{files_under, find_runs, has_extension, read_meta, read_regular, RunDir};
use crate::recipe::{read_text_chunks, MAX_PNG_BYTES};
use crate::run::{CallStart, Init, OpenCall, RowValue, Run};
use serde::Serialize;
use serde_json::{json, Map, Number, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The project import runs are recorded under.
pub const PROJECT: &str = "import";

/// The tools `--from` names, and the `Generation::tool`s each takes.
pub const TOOLS: [(&str, &[&str]); 7] = [
    ("comfyui", &["ComfyUI"]),
    ("a1111", &["AUTOMATIC1111", "Forge"]),
    ("invokeai", &["InvokeAI"]),
    ("fooocus", &["Fooocus"]),
    ("swarmui", &["SwarmUI"]),
    ("novelai", &["NovelAI"]),
    ("difflog", &["difflog"]),
];

/// The most files one import reads.
pub const MAX_FILES: usize = 1_000_000;

/// Settings of `difflog import`.
#[derive(Debug, Clone)]
pub struct ImportOpts {
    /// `auto` (every image, with whatever metadata it has) or one tool of
    /// [`TOOLS`] (only its images).
    pub from: String,
    /// The output folder.
    pub dir: PathBuf,
    /// The root the run is created in.
    pub root: PathBuf,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// The run made, if any file was new.
    pub run_dir: Option<PathBuf>,
    /// Images recorded.
    pub imported: usize,
    /// Calls (generation batches) they made.
    pub calls: usize,
    /// Files an earlier import of this folder already holds.
    pub already_imported: usize,
    /// Files with another tool's metadata (skipped with a named tool).
    pub other_tool: usize,
    /// Files with no tool's metadata (recorded with `auto`, else skipped).
    pub without_metadata: usize,
    /// JPEG and WebP files (not imported yet: the media store keeps PNGs).
    pub not_png: usize,
    /// Files that could not be read, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// One file read.
struct Found {
    path: PathBuf,
    png: Vec<u8>,
    digest: String,
    width: u32,
    height: u32,
    generation: Option<Generation>,
}

/// Every PNG file under `dir` (not through links), by modification time
/// then path, and how many JPEG and WebP files there are besides.
fn png_files(dir: &Path) -> Result<(Vec<PathBuf>, usize)> {
    let all = files_under(dir, &["png", "jpg", "jpeg", "webp"], MAX_FILES)?;
    let (pngs, others): (Vec<PathBuf>, Vec<PathBuf>) =
        all.into_iter().partition(|p| has_extension(p, &["png"]));
    let mut files: Vec<_> = pngs
        .into_iter()
        .map(|p| {
            (
                std::fs::symlink_metadata(&p)
                    .and_then(|m| m.modified())
                    .ok(),
                p,
            )
        })
        .collect();
    files.sort();
    Ok((files.into_iter().map(|(_, p)| p).collect(), others.len()))
}

/// Reads one file: its bytes, size and metadata.
fn read_file(path: &Path) -> std::result::Result<Found, String> {
    let png = read_regular(path, MAX_PNG_BYTES).map_err(|e| e.to_string())?;
    let mut decoder = png::Decoder::new(std::io::Cursor::new(&png[..]));
    decoder.set_ignore_text_chunk(true);
    let (width, height) = {
        let reader = decoder
            .read_info()
            .map_err(|e| format!("not a readable PNG: {e}"))?;
        (reader.info().width, reader.info().height)
    };
    let chunks = read_text_chunks(&png)?;
    Ok(Found {
        path: path.to_path_buf(),
        digest: sha256_hex(&png),
        width,
        height,
        generation: meta::read(&chunks),
        png,
    })
}

/// The digests earlier imports of `folder` under `root` hold.
fn imported_before(root: &Path, folder: &str) -> Result<HashSet<String>> {
    let mut digests = HashSet::new();
    if !root.exists() {
        return Ok(digests);
    }
    for dir in find_runs(root)? {
        // run.json first: only import runs are read whole.
        if read_meta(&dir)
            .map(|m| m.project != PROJECT)
            .unwrap_or(true)
        {
            continue;
        }
        let Ok(run) = RunDir::open(&dir) else {
            continue;
        };
        let view = run.view();
        if view.config.get("import").and_then(|i| i.get("folder")) == Some(&json!(folder)) {
            digests.extend(view.media.iter().map(|m| m.digest.clone()));
        }
    }
    Ok(digests)
}

/// What a call's images share: everything but the seed.
fn batch_key(g: Option<&Generation>) -> Value {
    match g {
        Some(g) => {
            let mut v = serde_json::to_value(g).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.remove("seed");
            }
            v
        }
        None => Value::Null,
    }
}

/// The call's parameters: the generation settings (steps, CFG and denoise
/// under diffusers' names, as difflog's own calls record them, so that
/// `compare` and `report` read them alike).
fn params(g: Option<&Generation>, folder: &str) -> Map<String, Value> {
    let mut p = match batch_key(g) {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    // Row values, not call parameters.
    p.remove("prompt");
    p.remove("negative_prompt");
    for (ours, diffusers) in [
        ("steps", "num_inference_steps"),
        ("cfg", "guidance_scale"),
        ("denoise", "strength"),
    ] {
        if let Some(v) = p.remove(ours) {
            p.insert(diffusers.into(), v);
        }
    }
    p.insert("source_folder".into(), json!(folder));
    p
}

/// Runs `difflog import`.
pub fn import(opts: &ImportOpts) -> Result<ImportReport> {
    let wanted: Option<&[&str]> = match opts.from.as_str() {
        "auto" => None,
        name => Some(
            TOOLS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, tools)| *tools)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "--from {}: expected auto, {}",
                        crate::terminal::escape(name),
                        TOOLS.map(|t| t.0).join(", ")
                    ))
                })?,
        ),
    };
    let folder =
        std::fs::canonicalize(&opts.dir).map_err(|e| Error::io(&opts.dir, "find the folder", e))?;
    if !folder.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: not a folder",
            folder.display()
        )));
    }
    let folder_text = folder.to_string_lossy().into_owned();
    let before = imported_before(&opts.root, &folder_text)?;
    let mut report = ImportReport::default();
    let mut digests = HashSet::new();
    let (files, others) = png_files(&folder)?;
    report.not_png = others;
    // Streamed: each image goes to the run's writer as it is read (its
    // queue bounds the memory), the run made at the first new file.
    let mut run: Option<Arc<Run>> = None;
    let mut batch: Option<Batch> = None;
    for path in files {
        let f = match read_file(&path) {
            Ok(f) => f,
            Err(why) => {
                report.unreadable.push((path, why));
                continue;
            }
        };
        if before.contains(&f.digest) || !digests.insert(f.digest.clone()) {
            report.already_imported += 1;
            continue;
        }
        match (&f.generation, wanted) {
            (None, Some(_)) => {
                report.without_metadata += 1;
                continue;
            }
            (None, None) => report.without_metadata += 1,
            (Some(g), Some(tools)) if !tools.contains(&g.tool.as_str()) => {
                report.other_tool += 1;
                continue;
            }
            _ => {}
        }
        let run = match &run {
            Some(r) => Arc::clone(r),
            None => {
                let r = Arc::new(create_run(opts, &folder, &folder_text)?);
                report.run_dir = r.dir().map(Path::to_path_buf);
                run = Some(Arc::clone(&r));
                r
            }
        };
        let key = batch_key(f.generation.as_ref());
        if batch.as_ref().is_none_or(|b| b.key != key) {
            if let Some(done) = batch.take() {
                done.call.finish(None, Map::new());
            }
            batch = Some(Batch::begin(run, key, f.generation.as_ref(), &folder_text));
            report.calls += 1;
        }
        if let Some(b) = batch.as_mut() {
            b.row(f, &folder)?;
            report.imported += 1;
        }
    }
    if let Some(done) = batch.take() {
        done.call.finish(None, Map::new());
    }
    if let Some(run) = run {
        Arc::try_unwrap(run)
            .map_err(|_| Error::Invalid("the import run is still in use".into()))?
            .finish()?;
    }
    Ok(report)
}

/// The run an import records into.
fn create_run(opts: &ImportOpts, folder: &Path, folder_text: &str) -> Result<Run> {
    let name = folder.file_name().map_or(folder_text.to_string(), |n| {
        n.to_string_lossy().into_owned()
    });
    let run = Run::create(
        Init::project(PROJECT)
            .name(name)
            .root(&opts.root)
            .config(json!({"import": {"folder": folder_text, "from": opts.from}})),
    )?;
    if run.dir().is_none() {
        return Err(Error::Invalid(
            "recording is disabled (DIFFLOG_MODE=disabled): unset it to import".into(),
        ));
    }
    Ok(run)
}

/// The call of a batch being recorded.
struct Batch {
    key: Value,
    call: OpenCall<Arc<Run>>,
    rows: u32,
}

impl Batch {
    /// Begins a call for the batch whose first image says `first`.
    fn begin(run: Arc<Run>, key: Value, first: Option<&Generation>, folder_text: &str) -> Batch {
        let tool = first.map_or("unknown", |g| g.tool.as_str());
        let info = Arc::new(PipelineInfo {
            class: format!("{tool} (imported)"),
            model_id: first
                .and_then(|g| g.model.clone())
                .unwrap_or_else(|| "unknown".into()),
            revision: None,
            weights_digest: None,
            dtype: "unknown".into(),
            device: "unknown".into(),
            components: Map::new(),
            scheduler: json!({"name": first.and_then(|g| g.scheduler.clone())}),
        });
        let columns = [
            names::PROMPT,
            names::NEGATIVE_PROMPT,
            names::GENERATED_IMAGE,
            names::SEED,
            SOURCE_FILE,
        ]
        .map(String::from)
        .to_vec();
        let call = OpenCall::begin(
            run,
            CallStart {
                info,
                params: params(first, folder_text),
                // Not known before the batch is read to its end.
                seeds: Vec::new(),
                columns,
            },
        );
        Batch { key, call, rows: 0 }
    }

    /// Records one image as the batch's next row.
    fn row(&mut self, f: Found, folder: &Path) -> Result<()> {
        let g = f.generation.as_ref();
        let text = |v: Option<&String>| v.map_or(RowValue::Null, |s| RowValue::Text(s.clone()));
        let source = f
            .path
            .strip_prefix(folder)
            .unwrap_or(&f.path)
            .to_string_lossy()
            .into_owned();
        let cells = vec![
            (
                names::PROMPT.to_string(),
                text(g.and_then(|g| g.prompt.as_ref())),
            ),
            (
                names::NEGATIVE_PROMPT.to_string(),
                text(g.and_then(|g| g.negative_prompt.as_ref())),
            ),
            (
                names::GENERATED_IMAGE.to_string(),
                RowValue::Encoded {
                    caption: g.and_then(|g| g.prompt.clone()),
                    png: f.png,
                    width: f.width,
                    height: f.height,
                },
            ),
            (
                names::SEED.to_string(),
                g.and_then(|g| g.seed)
                    .map_or(RowValue::Null, |s| RowValue::Number(Number::from(s))),
            ),
            (SOURCE_FILE.to_string(), RowValue::Text(source)),
        ];
        self.call.row(self.rows, cells)?;
        self.rows += 1;
        Ok(())
    }
}

/// The column naming the file a row's image came from (relative to the
/// folder).
pub const SOURCE_FILE: &str = "Source-File";
