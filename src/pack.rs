//! `difflog pack` / `unpack`: carry complete run directories out of an
//! air-gapped box as one zstd-compressed tar.
//!
//! Packing streams (constant memory) and verifies on the way: every media
//! file's bytes are hashed as they are written into the archive and must
//! match its name, and only runs that `verify` passes and that no writer
//! holds go in. Unpacking never writes outside the destination (absolute
//! paths, `..`, links and devices are refused), extracts into a temporary
//! folder, verifies every run, and only then moves the runs into place: a
//! truncated or corrupt archive leaves nothing half-unpacked.

use crate::error::{Error, IoContext, Result};
use crate::format::{MEDIA_DIR, RUN_JSON};
use crate::read::{find_runs, RunDir, RunState};
use crate::verify::{verify_run, verify_run_with};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

/// zstd level used by `pack` (the `zstd -3` default: PNGs barely compress,
/// the logs do).
pub const LEVEL: i32 = 3;

/// What `pack` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackSummary {
    /// Runs packed.
    pub runs: Vec<String>,
    /// Files packed.
    pub files: usize,
    /// Bytes of the files.
    pub bytes: u64,
    /// Bytes of the archive.
    pub archive_bytes: u64,
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn files_of(run: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![run.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .ctx(&d, "list run directory")?
            .collect::<std::io::Result<Vec<_>>>()
            .ctx(&d, "list run directory")?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let ft = e.file_type().ctx(&e.path(), "read file type")?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(crate::format::TMP_PREFIX) {
                continue;
            }
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            } else {
                return Err(Error::archive(
                    e.path(),
                    "not a regular file (a link?); a run directory holds only its own files",
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Packs the runs under `paths` (runs or roots of runs) into `out`.
pub fn pack(paths: &[PathBuf], out: &Path) -> Result<PackSummary> {
    let mut runs = Vec::new();
    for p in paths {
        runs.extend(find_runs(p)?);
    }
    if runs.is_empty() {
        return Err(Error::Invalid("no runs to pack".into()));
    }
    refuse_output_inside(out, paths, &runs)?;
    for r in &runs {
        let rd = RunDir::open(r)?;
        if rd.state() == RunState::Live {
            return Err(Error::archive(
                r,
                "run is still being written; pack it once it ends",
            ));
        }
        // Digests are checked while packing (the bytes are read once).
        let rep = verify_run_with(r, false);
        if rep.damaged() {
            return Err(Error::archive(
                r,
                format!("damaged, not packed: {}", first_damage(&rep)),
            ));
        }
    }
    let tmp = out.with_extension("partial");
    let result = write_archive(&runs, &tmp, out);
    if result.is_err() {
        // Never leave a half-written archive behind.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `pack -o` must not write into a run (it would replace a run's own file
/// with the archive) nor among the runs of a root being packed.
fn refuse_output_inside(out: &Path, roots: &[PathBuf], runs: &[PathBuf]) -> Result<()> {
    let resolve = |p: &Path| -> Option<PathBuf> {
        // The output may not exist yet: resolve its folder.
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        parent
            .canonicalize()
            .ok()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    let Some(target) = resolve(out) else {
        return Ok(()); // its folder does not exist: creating the archive fails, naming it
    };
    if let Some(r) = crate::read::run_containing(out, runs.iter().map(PathBuf::as_path)) {
        return Err(Error::archive(
            out,
            format!(
                "the archive would be written inside run {}; choose a path outside the runs",
                r.display()
            ),
        ));
    }
    for root in roots {
        if let Ok(root) = root.canonicalize() {
            if target.parent() == Some(root.as_path())
                && target.join(crate::format::RUN_JSON).exists()
            {
                return Err(Error::archive(
                    out,
                    "is a run directory; choose an archive path outside the runs",
                ));
            }
        }
    }
    Ok(())
}

fn write_archive(runs: &[PathBuf], tmp: &Path, out: &Path) -> Result<PackSummary> {
    let file = File::create(tmp).ctx(tmp, "create archive")?;
    let mut enc = zstd::Encoder::new(BufWriter::with_capacity(1 << 20, file), LEVEL)
        .ctx(tmp, "start zstd")?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    enc.multithread(workers).ctx(tmp, "start zstd workers")?;
    let mut tar = tar::Builder::new(enc);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut summary = PackSummary {
        runs: Vec::new(),
        files: 0,
        bytes: 0,
        archive_bytes: 0,
    };
    for r in runs {
        let name = r
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::archive(r, "no directory name"))?;
        for f in files_of(r)? {
            let rel = f
                .strip_prefix(r)
                .map_err(|_| Error::archive(&f, "outside its run"))?;
            let in_archive = Path::new(&name).join(rel);
            if entry_cap(&in_archive).is_none() {
                // Not a file of the run (verify calls it a stray file):
                // unpack would refuse it, so it is not packed.
                continue;
            }
            let src = crate::read::open_regular(&f).ctx(&f, "read file to pack")?;
            let len = src.metadata().ctx(&f, "read file to pack")?.len();
            let mut header = tar::Header::new_gnu();
            header.set_size(len);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            let mut reader = Hashing {
                inner: src,
                hash: Sha256::new(),
            };
            tar.append_data(&mut header, &in_archive, &mut reader)
                .ctx(tmp, "write archive")?;
            // Media are named after their digest: check the bytes packed.
            if rel.starts_with(MEDIA_DIR) {
                let stem = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if crate::format::is_digest(&stem) {
                    let got = crate::format::hex(&reader.hash.finalize());
                    if got != stem {
                        let _ = std::fs::remove_file(tmp);
                        return Err(Error::archive(
                            &f,
                            format!("content digest {got} does not match its name; not packed"),
                        ));
                    }
                }
            }
            summary.files += 1;
            summary.bytes += len;
        }
        summary.runs.push(name);
    }
    let enc = tar.into_inner().ctx(tmp, "finish archive")?;
    let mut w = enc.finish().ctx(tmp, "finish zstd")?;
    w.flush().ctx(tmp, "write archive")?;
    let file = w
        .into_inner()
        .map_err(|e| Error::io(tmp, "write archive", e.into_error()))?;
    file.sync_all().ctx(tmp, "sync archive")?;
    std::fs::rename(tmp, out).ctx(out, "move archive into place")?;
    summary.archive_bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(summary)
}

/// Checks that entry `path` of `archive` is `<run>/…` with no way out.
fn safe_entry(archive: &Path, path: &Path) -> Result<()> {
    let mut comps = path.components();
    let first = comps.next();
    let inside = matches!(first, Some(Component::Normal(_)))
        && comps.all(|c| matches!(c, Component::Normal(_)));
    if !inside {
        return Err(Error::archive_entry(
            archive,
            path,
            "points outside its run; refused",
        ));
    }
    // Only run-id-shaped top-level folders are runs: nothing else (such as
    // `.difflog-sync`, where the sync state lives) lands in the root.
    match first {
        Some(Component::Normal(top)) if top.to_str().is_some_and(crate::format::is_run_id) => {
            Ok(())
        }
        _ => Err(Error::archive_entry(
            archive,
            path,
            "is not inside a run folder (the top-level folder must be a run id); refused",
        )),
    }
}

/// Unpacks `archive` into `dest`; returns the run directories created.
/// Runs that already exist in `dest` are left alone if identical, and are an
/// error otherwise.
pub fn unpack(archive: &Path, dest: &Path) -> Result<Vec<PathBuf>> {
    // A missing archive creates nothing.
    let md = std::fs::metadata(archive).ctx(archive, "open archive")?;
    if !md.is_file() {
        return Err(Error::archive(
            archive,
            "not a regular file; an archive is a file made by difflog pack",
        ));
    }
    std::fs::create_dir_all(dest).ctx(dest, "create destination")?;
    remove_stale_staging(dest);
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(dest)
        .ctx(dest, "create staging folder")?;
    let staged = extract_bounded(archive, staging.path(), dest)?;
    // Every destination is checked before anything is moved: a conflict on
    // the second run must not leave the first one moved in.
    let mut moves = Vec::new();
    let mut out = Vec::new();
    for run in staged {
        let name = run.file_name().map(PathBuf::from).unwrap_or_default();
        let target = dest.join(&name);
        if target.exists() {
            if same_tree(&run, &target)? {
                out.push(target);
                continue;
            }
            return Err(Error::archive(
                &target,
                "a different run with this id already exists; nothing was unpacked",
            ));
        }
        moves.push((run, target));
    }
    for (run, target) in moves {
        std::fs::rename(&run, &target).ctx(&target, "move unpacked run into place")?;
        out.push(target);
    }
    Ok(out)
}

/// The most bytes the archive entry at `path` (`RUN/…`) may hold, or `None`
/// when it is not a file a run directory holds.
fn entry_cap(path: &Path) -> Option<u64> {
    let parts: Vec<&str> = path
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<Vec<_>>>()?;
    match parts.as_slice() {
        [_, "run.json"] => Some(1 << 20),
        [_, "events.log"] => Some(8 << 30),
        [_, "media", shard, file] => {
            let (digest, ext) = file.rsplit_once('.')?;
            (crate::format::is_digest(digest)
                && digest.starts_with(shard)
                && shard.len() == 2
                && crate::event::MEDIA_FORMATS.contains(&ext))
            .then_some(1 << 30)
        }
        _ => None,
    }
}

/// Name prefix of unpack's staging folders inside the destination.
const STAGING_PREFIX: &str = ".unpack-";

/// Removes staging folders an unpack killed mid-way left behind (older than
/// an hour, so a concurrent unpack's folder is left alone).
fn remove_stale_staging(dest: &Path) {
    let Ok(entries) = std::fs::read_dir(dest) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(STAGING_PREFIX)
            && e.file_type().is_ok_and(|t| t.is_dir())
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// [`extract`], with errors about writing named after `dest` (a full disk is
/// the destination's problem, not the archive's).
fn extract_bounded(archive: &Path, into: &Path, dest: &Path) -> Result<Vec<PathBuf>> {
    extract(archive, into).map_err(|e| match e {
        Error::Io {
            source,
            action: "write unpacked file",
            ..
        } => Error::Io {
            path: dest.to_path_buf(),
            action: "write unpacked files into the destination",
            source,
        },
        other => other,
    })
}

/// Extracts and verifies an archive into `into`; returns the run directories.
pub fn extract(archive: &Path, into: &Path) -> Result<Vec<PathBuf>> {
    let file = File::open(archive).ctx(archive, "open archive")?;
    let dec = zstd::Decoder::new(file).ctx(archive, "read archive")?;
    let mut tar = tar::Archive::new(dec);
    let bad = |e: std::io::Error| {
        Error::archive(archive, format!("not a complete difflog archive ({e})"))
    };
    let mut runs = std::collections::BTreeSet::new();
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        safe_entry(archive, &path)?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => continue,
            other => {
                return Err(Error::archive_entry(
                    archive,
                    path,
                    format!("is a {other:?}, not a file; refused"),
                ))
            }
        }
        let target = into.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).ctx(parent, "create folder")?;
        }
        let cap = entry_cap(&path).ok_or_else(|| {
            Error::archive_entry(
                archive,
                &path,
                "is not a file of a run (run.json, events.log, media/xx/<sha256>.png); refused",
            )
        })?;
        let mut out = File::create(&target).ctx(&target, "write unpacked file")?;
        // Read errors are the archive's, write errors the destination's; and
        // no entry grows past what its kind of file can be (a small archive
        // must not unpack into gigabytes).
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(bad)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > cap {
                return Err(Error::archive_entry(
                    archive,
                    path,
                    format!("is larger than {cap} bytes, more than such a file can be; refused"),
                ));
            }
            out.write_all(&buf[..n])
                .ctx(&target, "write unpacked file")?;
        }
        if let Some(Component::Normal(run)) = path.components().next() {
            runs.insert(into.join(run));
        }
    }
    let runs: Vec<PathBuf> = runs.into_iter().collect();
    if runs.is_empty() {
        return Err(Error::archive(archive, "the archive holds no runs"));
    }
    for r in &runs {
        let name = r.file_name().map(PathBuf::from).unwrap_or_default();
        if !r.join(RUN_JSON).is_file() {
            return Err(Error::archive_entry(archive, name, "has no run.json"));
        }
        let rep = verify_run(r);
        if rep.damaged() {
            return Err(Error::archive_entry(
                archive,
                name,
                format!("is damaged in the archive: {}", first_damage(&rep)),
            ));
        }
    }
    Ok(runs)
}

/// The first finding that is damage (a report may open with mere notes).
fn first_damage(rep: &crate::verify::Report) -> String {
    rep.findings
        .iter()
        .find(|f| f.severity == crate::verify::Severity::Damage)
        .map(|f| f.message.clone())
        .unwrap_or_else(|| "see difflog verify".into())
}

fn same_tree(a: &Path, b: &Path) -> Result<bool> {
    let fa = files_of(a)?;
    let fb = files_of(b)?;
    if fa.len() != fb.len() {
        return Ok(false);
    }
    for (x, y) in fa.iter().zip(&fb) {
        if x.strip_prefix(a).ok() != y.strip_prefix(b).ok() {
            return Ok(false);
        }
        if std::fs::read(x).ctx(x, "compare")? != std::fs::read(y).ctx(y, "compare")? {
            return Ok(false);
        }
    }
    Ok(true)
}
