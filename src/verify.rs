//! `difflog verify`: checks that a run directory is what its log says.
//!
//! Checksums and sequence of every record, every media file's size and
//! SHA-256, every reference from a row to a stored image, and that every
//! successfully finished call has all its rows. A finding is *damage* (data
//! recorded earlier is wrong or missing: exit code non-zero), a *warning*
//! (something unexpected that loses nothing, e.g. a stray file), or a *note*
//! (normal after a crash, e.g. a torn tail that readers ignore).

use crate::error::Result;
use crate::event::{Cell, Event};
use crate::format::sha256_hex;
use crate::format::{is_digest, media_rel_path, MEDIA_DIR, TMP_PREFIX};
use crate::read::{find_runs, LogProblemKind, RunDir, RunState};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Normal after a crash; nothing is lost.
    Note,
    /// Unexpected but harmless.
    Warning,
    /// Recorded data is wrong or missing.
    Damage,
}

/// One thing `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// What and where (file, byte offset, sequence number).
    pub message: String,
}

/// The result of verifying one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run directory.
    pub path: PathBuf,
    /// The run id, if `run.json` could be read.
    pub id: Option<String>,
    /// Live, finished, failed or crashed, if readable.
    pub state: Option<RunState>,
    /// Valid records read.
    pub records: usize,
    /// Media files checked.
    pub media_checked: usize,
    /// What was found.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is damage.
    pub fn damaged(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Damage)
    }
}

/// Verifies every run under `path` (or `path` itself if it is a run).
pub fn verify_path(path: &Path) -> Result<Vec<Report>> {
    let runs = find_runs(path)?;
    if runs.is_empty() {
        return Err(crate::Error::NotARun {
            path: path.to_path_buf(),
            why: "it has no run.json and no run directories under it".into(),
        });
    }
    Ok(runs.iter().map(|r| verify_run(r)).collect())
}

/// Verifies one run directory.
pub fn verify_run(dir: &Path) -> Report {
    verify_run_with(dir, true)
}

/// Verifies one run directory; `hash_media: false` checks media sizes but
/// not their digests (for callers that hash the bytes themselves, as `pack`).
pub fn verify_run_with(dir: &Path, hash_media: bool) -> Report {
    let mut rep = Report {
        path: dir.to_path_buf(),
        id: None,
        state: None,
        records: 0,
        media_checked: 0,
        findings: Vec::new(),
    };
    let run = match RunDir::open(dir) {
        Ok(r) => r,
        Err(e) => {
            rep.findings.push(damage(e.to_string()));
            return rep;
        }
    };
    rep.id = Some(run.meta.id.clone());
    let state = run.state();
    rep.state = Some(state);
    rep.records = run.log.records.len();
    check_log(&run, state, &mut rep.findings);
    let referenced = check_records(&run, &mut rep, hash_media);
    check_media_dir(dir, state, &referenced, &mut rep.findings);
    rep
}

fn damage(message: String) -> Finding {
    Finding {
        severity: Severity::Damage,
        message,
    }
}

fn warning(message: String) -> Finding {
    Finding {
        severity: Severity::Warning,
        message,
    }
}

fn note(message: String) -> Finding {
    Finding {
        severity: Severity::Note,
        message,
    }
}

fn check_log(run: &RunDir, state: RunState, out: &mut Vec<Finding>) {
    if let Some(p) = &run.log.problem {
        let tail = run.log.file_len - p.offset;
        match p.kind {
            LogProblemKind::Corrupt { valid_after } => out.push(damage(format!(
                "events.log: byte {}: {}; {valid_after} well-formed record(s) after it are unreadable",
                p.offset, p.why
            ))),
            LogProblemKind::TornTail if state == RunState::Live => out.push(note(format!(
                "events.log: byte {}: {tail} bytes of a record still being written",
                p.offset
            ))),
            // A crash can tear only a run that was still being written.
            LogProblemKind::TornTail if matches!(state, RunState::Finished | RunState::Failed) => {
                out.push(damage(format!(
                    "events.log: byte {}: {tail} bytes after the run finished; a finished run is never appended to",
                    p.offset
                )))
            }
            LogProblemKind::TornTail => out.push(note(format!(
                "events.log: byte {}: torn tail of {tail} bytes ({}), left by a crash; readers ignore it and reopening the run cuts it",
                p.offset, p.why
            ))),
        }
    }
    match run.log.records.first().map(|r| &r.event) {
        Some(Event::RunStarted(s)) if s.run_id == run.meta.id => {}
        Some(Event::RunStarted(s)) => out.push(damage(format!(
            "events.log: run_started names run {:?} but run.json says {:?}",
            s.run_id, run.meta.id
        ))),
        Some(e) => out.push(damage(format!(
            "events.log: first record is {} instead of run_started",
            e.kind()
        ))),
        None if run.log.file_len == 0 => out.push(note(
            "events.log: empty (the writer stopped before recording anything)".into(),
        )),
        None => {}
    }
    let finished_at = run
        .log
        .records
        .iter()
        .position(|r| matches!(r.event, Event::RunFinished(_)));
    if let Some(after) = finished_at.and_then(|i| run.log.records.get(i + 1)) {
        out.push(damage(format!(
            "events.log: record {} ({}) follows run_finished; a finished run is never appended to",
            after.seq,
            after.event.kind()
        )));
    }
    check_identity(run, out);
}

/// `run.json` is never changed after the run is created: its SHA-256, kept
/// in `run_started`, must still match (runs from before 2026-11-29 have none).
fn check_identity(run: &RunDir, out: &mut Vec<Finding>) {
    let Some(Event::RunStarted(s)) = run.log.records.first().map(|r| &r.event) else {
        return;
    };
    let Some(want) = &s.run_json_sha256 else {
        return;
    };
    let path = run.path.join(crate::format::RUN_JSON);
    match crate::read::read_regular(&path, 1 << 20) {
        Ok(bytes) if &sha256_hex(&bytes) == want => {}
        Ok(_) => out.push(damage(
            "run.json: changed since the run was created (its SHA-256 is not the one run_started recorded)"
                .into(),
        )),
        Err(e) => out.push(damage(format!("run.json: cannot read it again: {e}"))),
    }
}

/// Checks media files and references; returns the media paths referenced.
fn check_records(run: &RunDir, rep: &mut Report, hash_media: bool) -> HashSet<String> {
    let mut stored: HashMap<String, bool> = HashMap::new();
    let mut referenced = HashSet::new();
    let mut started = HashSet::new();
    let mut rows: HashMap<u32, u32> = HashMap::new();
    for rec in &run.log.records {
        let at = format!("events.log: record {}", rec.seq);
        match &rec.event {
            Event::CallStarted(c) => {
                started.insert(c.call);
            }
            Event::Media(m) => {
                let expect = if is_digest(&m.digest) {
                    media_rel_path(&m.digest, &m.format)
                } else {
                    rep.findings.push(damage(format!(
                        "{at}: media digest {:?} is not a SHA-256",
                        m.digest
                    )));
                    continue;
                };
                if m.path != expect {
                    rep.findings.push(damage(format!(
                        "{at}: media path {:?} should be {expect:?}",
                        m.path
                    )));
                    continue;
                }
                referenced.insert(m.path.clone());
                if !stored.contains_key(&m.digest) {
                    rep.media_checked += 1;
                    let ok =
                        match check_media_file(&run.path, &m.path, &m.digest, m.bytes, hash_media)
                            .and_then(|content| media_matches_record(content.as_deref(), m))
                        {
                            Ok(()) => true,
                            Err(why) => {
                                rep.findings
                                    .push(damage(format!("{}: {why} ({at})", m.path)));
                                false
                            }
                        };
                    stored.insert(m.digest.clone(), ok);
                }
            }
            Event::Row(r) => {
                if !started.contains(&r.call) {
                    rep.findings.push(damage(format!(
                        "{at}: row of call {} that has no call_started",
                        r.call
                    )));
                }
                *rows.entry(r.call).or_default() += 1;
                for cell in &r.cells {
                    if let Cell::Image { digest, path, .. } = cell {
                        if !stored.contains_key(digest) {
                            rep.findings.push(damage(format!(
                                "{at}: row {} of call {} references image {digest} with no media record before it",
                                r.index, r.call
                            )));
                        } else if !path.starts_with(&format!("{MEDIA_DIR}/"))
                            || !path.contains(digest.as_str())
                        {
                            rep.findings.push(damage(format!(
                                "{at}: image cell path {path:?} does not match its digest"
                            )));
                        }
                    }
                }
            }
            Event::CallFinished(f) => {
                if !started.contains(&f.call) {
                    rep.findings.push(damage(format!(
                        "{at}: call_finished for call {} that has no call_started",
                        f.call
                    )));
                }
                let have = rows.get(&f.call).copied().unwrap_or(0);
                if f.status == crate::event::CallStatus::Ok && have != f.images {
                    rep.findings.push(damage(format!(
                        "{at}: call {} finished with {} image(s) but {have} row(s) are recorded",
                        f.call, f.images
                    )));
                }
            }
            _ => {}
        }
    }
    referenced
}

/// A media file that is not of its record's format, or whose header gives
/// another size than its record (issue 32, item 5: a record saying 64×64
/// for a 16384² image makes readers that trust the record allocate for one
/// and decode the other). Only the header is read.
fn media_matches_record(
    content: Option<&[u8]>,
    m: &crate::event::MediaEvent,
) -> Result<(), String> {
    let Some(c) = content else { return Ok(()) };
    let (kind, name) = match m.format.as_str() {
        "png" => (image::ImageFormat::Png, "PNG"),
        "jpg" => (image::ImageFormat::Jpeg, "JPEG"),
        "webp" => (image::ImageFormat::WebP, "WebP"),
        crate::event::VIDEO_FORMAT => return mp4_matches_record(c, m),
        _ => return Ok(()),
    };
    if image::guess_format(c).ok() != Some(kind) {
        return Err(format!("its record says {name}, but the file is not one"));
    }
    let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(c), kind)
        .into_dimensions()
        .map_err(|e| format!("its {name} header cannot be read: {e}"))?;
    if (w, h) != (m.width, m.height) {
        return Err(format!(
            "its {name} is {w}×{h}, but its record says {}×{}",
            m.width, m.height
        ));
    }
    if let Some(v) = &m.video {
        if m.format != "png" {
            return Err(format!("its record says a video, but a {name} is none"));
        }
        let frames = crate::read::apng_frames(c)?;
        if frames != v.frames {
            return Err(format!(
                "its animated PNG has {frames} frame(s), but its record says {}",
                v.frames
            ));
        }
    }
    Ok(())
}

/// An MP4 that is not one video track of H.264 of its record's size and
/// frame count (only its boxes are read).
fn mp4_matches_record(c: &[u8], m: &crate::event::MediaEvent) -> Result<(), String> {
    let Some(v) = &m.video else {
        return Err("its record says MP4 but nothing of the video".into());
    };
    let got = crate::read::mp4_video(c)?;
    if (got.width, got.height) != (m.width, m.height) {
        return Err(format!(
            "its MP4 is {}×{}, but its record says {}×{}",
            got.width, got.height, m.width, m.height
        ));
    }
    if got.frames != v.frames {
        return Err(format!(
            "its MP4 has {} frame(s), but its record says {}",
            got.frames, v.frames
        ));
    }
    Ok(())
}

/// Checks a media file; with `hash`, also its digest, and gives back its
/// bytes.
fn check_media_file(
    run: &Path,
    rel: &str,
    digest: &str,
    bytes: u64,
    hash: bool,
) -> Result<Option<Vec<u8>>, String> {
    // The same answer as sync, pack and report: only a regular file really
    // inside the run (no link, no FIFO, no linked shard folder) is media.
    let path = crate::read::run_file(run, rel).map_err(|e| match e {
        crate::Error::UnsafeFile { why, .. } if why.starts_with("cannot read it") => {
            format!("missing media file: {why}")
        }
        crate::Error::UnsafeFile { why, .. } => format!("{why}: not a file inside the run"),
        other => other.to_string(),
    })?;
    let md = std::fs::metadata(&path).map_err(|e| format!("cannot read: {e}"))?;
    if md.len() != bytes {
        return Err(format!("size {} but {bytes} recorded", md.len()));
    }
    if !hash {
        return Ok(None);
    }
    let content =
        crate::read::read_regular(&path, bytes).map_err(|e| format!("cannot read: {e}"))?;
    let got = sha256_hex(&content);
    if got != digest {
        return Err(format!("content digest {got} does not match its name"));
    }
    Ok(Some(content))
}

fn check_media_dir(
    run: &Path,
    state: RunState,
    referenced: &HashSet<String>,
    out: &mut Vec<Finding>,
) {
    let media = run.join(MEDIA_DIR);
    let Ok(shards) = std::fs::read_dir(&media) else {
        return;
    };
    for shard in shards.flatten() {
        let name = shard.file_name().to_string_lossy().into_owned();
        let Ok(ft) = shard.file_type() else { continue };
        if !ft.is_dir() {
            out.push(warning(format!(
                "{MEDIA_DIR}/{name}: unexpected file in media/"
            )));
            continue;
        }
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for f in files.flatten() {
            let fname = f.file_name().to_string_lossy().into_owned();
            let rel = format!("{MEDIA_DIR}/{name}/{fname}");
            if referenced.contains(&rel) {
                continue;
            }
            if fname.starts_with(TMP_PREFIX) {
                out.push(note(format!(
                    "{rel}: temporary file left by a crash (removed when the run is reopened)"
                )));
            } else if f.file_type().map(|t| t.is_symlink()).unwrap_or(false) {
                out.push(warning(format!(
                    "{rel}: symbolic link in media/ (never uploaded)"
                )));
            } else if matches!(state, RunState::Live | RunState::Crashed) {
                // Media are stored before the record that names them: a live
                // writer is about to record it, a crashed one never did.
                out.push(note(format!(
                    "{rel}: stored but not (yet) recorded by the writer"
                )));
            } else {
                out.push(warning(format!(
                    "{rel}: file not referenced by any record (not part of the run)"
                )));
            }
        }
    }
}
