//! `difflog import`: another tool's output folder recorded as a run (issue
//! 35). Most images on a diffusion box come from ComfyUI, A1111, InvokeAI,
//! Fooocus, SwarmUI or NovelAI, not from scripts that call difflog; this
//! turns such a folder into a run with tables — one call per generation
//! batch, one row per image — that `report`, `compare` and `difflog-sync`
//! treat like any other.
//!
//! Design: one run per import of a folder (project `import`, named after
//! the folder, its config naming the folder and the tool). An import reads
//! every PNG, JPEG and WebP file under the folder (never through a link),
//! keeps each byte for byte — the tool's metadata stays inside it, and a
//! JPEG is not made a PNG — and skips the files
//! whose digest a previous import of the same folder (under the same root)
//! already holds: importing again adds nothing, and a new file makes a new
//! run with just the new images. Consecutive files (by modification time,
//! then name) whose generation settings agree but for the seed are one
//! call; the settings are the call's parameters, and each row has the
//! prompt, negative prompt, seed and source file.
//!
//! Following a folder as it fills ([`follow`], `difflog-sync watch
//! --import`) keeps one run open per session and day instead: each new
//! file becomes a row of it as it appears, and the run ends when the
//! daemon stops or the (UTC) date changes. A file still being written (a
//! PNG without its closing chunk yet, a JPEG without its end marker, a
//! WebP shorter than its header says) waits for the next look.

use crate::error::{Error, Result};
use crate::format::{names, sha256_hex};
use crate::meta::exif::Format;
use crate::meta::{self, Generation};
use crate::pipeline::PipelineInfo;
use crate::read::{files_under, find_runs, read_meta, read_regular, RunDir};
use crate::recipe::MAX_PNG_BYTES;
use crate::run::{CallStart, Init, OpenCall, RowValue, Run};
use serde::Serialize;
use serde_json::{json, Map, Number, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[cfg(feature = "sync")]
mod follow;
#[cfg(feature = "sync")]
pub use follow::{follow, Following, ImportSpec};

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
    /// Files that could not be read, with why.
    pub unreadable: Vec<(PathBuf, String)>,
    /// Files still being written, left for the next look (following only).
    #[serde(skip_serializing_if = "is_zero")]
    pub pending: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How long a following import waits for a PNG that stays incomplete and
/// unchanged before it says the file is cut short.
pub const INCOMPLETE_GRACE: Duration = Duration::from_secs(30);

/// A PNG's last chunk, IEND, as every encoder writes it: a file that does
/// not end with it is still being written or was cut short.
const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82];

/// The image file extensions an import reads.
const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// Whether `file` (of `format`) is whole: a PNG ends with IEND, a JPEG with
/// its end-of-image marker (zero padding after it allowed), a WebP is as
/// long as its RIFF header says.
fn is_whole(file: &[u8], format: Format) -> bool {
    match format {
        Format::Png => file.ends_with(&IEND),
        Format::Jpeg => {
            let end = file.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            file[..end].ends_with(&[0xff, 0xd9])
        }
        Format::Webp => file
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .is_some_and(|n| (n as usize).checked_add(8) == Some(file.len())),
    }
}

/// One file read.
struct Found {
    path: PathBuf,
    file: Vec<u8>,
    format: &'static str,
    digest: String,
    width: u32,
    height: u32,
    generation: Option<Generation>,
}

/// Every image file under `dir` (not through links), by modification time
/// then path.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<_> = files_under(dir, &EXTENSIONS, MAX_FILES)?
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
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Why a file was not read.
enum Unread {
    /// It is not whole yet ([`is_whole`]).
    Incomplete,
    /// Anything else, said.
    Bad(String),
}

/// Reads one file: its bytes, format, size and metadata. The format is
/// the one its bytes say, whatever its name.
fn read_file(path: &Path) -> std::result::Result<Found, Unread> {
    let file = read_regular(path, MAX_PNG_BYTES).map_err(|e| Unread::Bad(e.to_string()))?;
    // Not even a signature yet: a file just created.
    if file.len() < 12 {
        return Err(Unread::Incomplete);
    }
    let (format, ext) = match meta::exif::format_of(&file) {
        Some(Format::Png) => (Format::Png, "png"),
        Some(Format::Jpeg) => (Format::Jpeg, "jpg"),
        Some(Format::Webp) => (Format::Webp, "webp"),
        None => return Err(Unread::Bad("neither a PNG, a JPEG nor a WebP file".into())),
    };
    if !is_whole(&file, format) {
        return Err(Unread::Incomplete);
    }
    let (width, height) = image::ImageReader::new(std::io::Cursor::new(&file[..]))
        .with_guessed_format()
        .map_err(|e| Unread::Bad(e.to_string()))?
        .into_dimensions()
        .map_err(|e| Unread::Bad(format!("not a readable {}: {e}", ext.to_uppercase())))?;
    let texts = meta::texts_of_file(&file).map_err(Unread::Bad)?;
    Ok(Found {
        path: path.to_path_buf(),
        digest: sha256_hex(&file),
        format: ext,
        width,
        height,
        generation: meta::generation_of_file(&file, &texts),
        file,
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

/// Runs `difflog import`: every new file of the folder into one new run.
pub fn import(opts: &ImportOpts) -> Result<ImportReport> {
    let mut importer = Importer::new(opts.clone(), false)?;
    let report = importer.scan()?;
    importer.finish()?;
    Ok(report)
}

/// The tools `--from` takes images of (`None`: every image).
fn wanted(from: &str) -> Result<Option<&'static [&'static str]>> {
    match from {
        "auto" => Ok(None),
        name => TOOLS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, tools)| Some(*tools))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "--from {}: expected auto, {}",
                    crate::terminal::escape(name),
                    TOOLS.map(|t| t.0).join(", ")
                ))
            }),
    }
}

/// A file's size and modification time: while they are unchanged the file
/// is not read again.
type Stamp = (u64, Option<SystemTime>);

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

/// An import of one folder, which may look again as the folder fills:
/// what it read is remembered, so each look reads only new or changed
/// files, and its run stays open between looks.
pub struct Importer {
    opts: ImportOpts,
    wanted: Option<&'static [&'static str]>,
    folder: PathBuf,
    folder_text: String,
    /// Following: the run is kept open and named after the day.
    follow: bool,
    /// Digests earlier imports and this one hold.
    seen: HashSet<String>,
    /// Files read (or refused) already, as they were then.
    handled: HashMap<PathBuf, Stamp>,
    /// Incomplete files, as first seen so, and since when.
    incomplete: HashMap<PathBuf, (Stamp, Instant)>,
    /// The run recorded into, with its UTC date.
    run: Option<(Arc<Run>, String)>,
}

impl Importer {
    /// Checks the settings and reads what earlier imports of the folder
    /// hold. `follow`: the run stays open between looks and a new one
    /// begins each day.
    pub fn new(opts: ImportOpts, follow: bool) -> Result<Importer> {
        let wanted = wanted(&opts.from)?;
        let folder = std::fs::canonicalize(&opts.dir)
            .map_err(|e| Error::io(&opts.dir, "find the folder", e))?;
        if !folder.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: not a folder",
                folder.display()
            )));
        }
        let root = std::fs::canonicalize(&opts.root)
            .or_else(|_| std::path::absolute(&opts.root))
            .map_err(|e| Error::io(&opts.root, "find the runs root", e))?;
        if root.starts_with(&folder) {
            return Err(Error::Invalid(format!(
                "the runs root {} is inside the folder imported, {}: its runs' images would be imported too; choose a runs root outside it",
                root.display(),
                folder.display()
            )));
        }
        let folder_text = folder.to_string_lossy().into_owned();
        let seen = imported_before(&opts.root, &folder_text)?;
        Ok(Importer {
            opts,
            wanted,
            folder,
            folder_text,
            follow,
            seen,
            handled: HashMap::new(),
            incomplete: HashMap::new(),
            run: None,
        })
    }

    /// The folder, resolved.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Whether some file was incomplete at the last look (look again soon).
    pub fn waiting(&self) -> bool {
        !self.incomplete.is_empty()
    }

    /// Records every file not read before. Consecutive files whose
    /// settings agree but for the seed are one call, finished at the end of
    /// the look.
    pub fn scan(&mut self) -> Result<ImportReport> {
        let mut report = ImportReport::default();
        let files = image_files(&self.folder)?;
        // A file removed while incomplete (a tool's temporary file) is
        // waited for no more.
        let present: HashSet<&PathBuf> = files.iter().collect();
        self.incomplete.retain(|p, _| present.contains(p));
        // Streamed: each image goes to the run's writer as it is read (its
        // queue bounds the memory), the run made at the first new file.
        let mut run: Option<Arc<Run>> = None;
        let mut batch: Option<Batch> = None;
        for path in files {
            let now = stamp(&path);
            if now.is_some_and(|s| self.handled.get(&path) == Some(&s)) {
                continue;
            }
            let f = match read_file(&path) {
                Ok(f) => f,
                Err(Unread::Incomplete) if self.follow && !self.cut_short(&path, now) => {
                    report.pending += 1;
                    continue;
                }
                Err(why) => {
                    let why = match why {
                        Unread::Bad(why) => why,
                        Unread::Incomplete => "cut short (or still being written): it does not end where its format says".into(),
                    };
                    self.incomplete.remove(&path);
                    if let Some(s) = now {
                        self.handled.insert(path.clone(), s);
                    }
                    report.unreadable.push((path, why));
                    continue;
                }
            };
            self.incomplete.remove(&path);
            if let Some(s) = now {
                self.handled.insert(path.clone(), s);
            }
            if !self.seen.insert(f.digest.clone()) {
                report.already_imported += 1;
                continue;
            }
            match (&f.generation, self.wanted) {
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
                    let r = self.open_run()?;
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
                batch = Some(Batch::begin(
                    run,
                    key,
                    f.generation.as_ref(),
                    &self.folder_text,
                ));
                report.calls += 1;
            }
            if let Some(b) = batch.as_mut() {
                b.row(f, &self.folder)?;
                report.imported += 1;
            }
        }
        if let Some(done) = batch.take() {
            done.call.finish(None, Map::new());
        }
        if let Some(run) = run {
            run.flush()?;
        }
        Ok(report)
    }

    /// Whether an incomplete file has stayed so, unchanged, past
    /// [`INCOMPLETE_GRACE`] (a writer that died half way).
    fn cut_short(&mut self, path: &Path, now: Option<Stamp>) -> bool {
        let Some(now) = now else { return true };
        match self.incomplete.get(path) {
            Some((was, since)) if *was == now => since.elapsed() >= INCOMPLETE_GRACE,
            _ => {
                self.incomplete
                    .insert(path.to_path_buf(), (now, Instant::now()));
                false
            }
        }
    }

    /// The run this look records into: the open one, unless following and
    /// its day is over (then it is finished and a new one begun).
    fn open_run(&mut self) -> Result<Arc<Run>> {
        let today = crate::format::now_rfc3339()[..10].to_string();
        if self.follow && self.run.as_ref().is_some_and(|(_, day)| *day != today) {
            self.finish_run()?;
        }
        if let Some((run, _)) = &self.run {
            return Ok(Arc::clone(run));
        }
        let name = self
            .folder
            .file_name()
            .map_or(self.folder_text.clone(), |n| {
                n.to_string_lossy().into_owned()
            });
        let mut config = json!({"folder": self.folder_text, "from": self.opts.from});
        let name = if self.follow {
            config["follow"] = json!(true);
            format!("{name} {today}")
        } else {
            name
        };
        let run = Run::create(
            Init::project(PROJECT)
                .name(name)
                .root(&self.opts.root)
                .config(json!({ "import": config })),
        )?;
        if run.dir().is_none() {
            return Err(Error::Invalid(
                "recording is disabled (DIFFLOG_MODE=disabled): unset it to import".into(),
            ));
        }
        let run = Arc::new(run);
        self.run = Some((Arc::clone(&run), today));
        Ok(run)
    }

    fn finish_run(&mut self) -> Result<()> {
        match self.run.take() {
            Some((run, _)) => Arc::try_unwrap(run)
                .map_err(|_| Error::Invalid("the import run is still in use".into()))?
                .finish(),
            None => Ok(()),
        }
    }

    /// Ends the import: its run is finished.
    pub fn finish(mut self) -> Result<()> {
        self.finish_run()
    }
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
                    file: f.file,
                    format: f.format,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Following: a file still being written waits (and one removed then
    /// is waited for no more); a whole one is imported once, into the same
    /// run look after look.
    #[test]
    fn a_followed_folder_waits_for_whole_files_and_reads_each_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, root) = (tmp.path().join("out"), tmp.path().join("runs"));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = ImportOpts {
            from: "auto".into(),
            dir: dir.clone(),
            root,
        };
        let mut i = Importer::new(opts, true).unwrap();
        let png = crate::run::media::encode_png(&crate::bench::natural_image(1, 16)).unwrap();
        std::fs::write(dir.join("a.png"), &png[..png.len() / 2]).unwrap();
        std::fs::write(dir.join("b.png"), b"").unwrap();
        let r = i.scan().unwrap();
        assert_eq!((r.pending, r.imported), (2, 0), "{r:?}");
        assert!(i.waiting());
        std::fs::remove_file(dir.join("b.png")).unwrap();
        std::fs::write(dir.join("a.png"), &png).unwrap();
        let r = i.scan().unwrap();
        assert_eq!((r.pending, r.imported), (0, 1), "{r:?}");
        assert!(!i.waiting(), "a removed file is still waited for");
        let first = r.run_dir.unwrap();
        std::fs::write(dir.join("c.png"), &png).unwrap();
        let r = i.scan().unwrap();
        assert_eq!((r.imported, r.already_imported), (0, 1), "{r:?}");
        let png2 = crate::run::media::encode_png(&crate::bench::natural_image(2, 16)).unwrap();
        std::fs::write(dir.join("d.png"), &png2).unwrap();
        let r = i.scan().unwrap();
        assert_eq!(r.imported, 1, "{r:?}");
        assert_eq!(r.run_dir.unwrap(), first, "a new run for a new look");
        i.finish().unwrap();
    }
}
