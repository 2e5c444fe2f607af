//! Following output folders as they fill (`difflog-sync watch --import
//! TOOL:PATH`): a ComfyUI or A1111 box's images reach MLflow or W&B, with
//! their tables, as they are made. Each folder gets a thread of its own
//! that looks again whenever the folder changes (file-system events, a
//! short quiet spell to let a batch finish), soon while a file is still
//! being written, and every half minute in case an event was missed; its
//! run stays open while the daemon runs, so the sync daemon sends it call
//! by call like any live run.

use super::{ImportOpts, ImportReport, Importer};
use crate::error::{Error, Result};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Quiet needed after a change before the folder is read (a batch's files
/// are saved one after another).
const QUIET: Duration = Duration::from_millis(400);
/// The longest a busy folder waits for quiet.
const QUIET_MAX: Duration = Duration::from_secs(3);
/// How soon a folder with a file still being written is read again.
const INCOMPLETE_RETRY: Duration = Duration::from_secs(1);
/// How often a folder is read even without events.
const RESCAN: Duration = Duration::from_secs(30);

/// One folder to follow: `TOOL:PATH`, with TOOL `auto` or one of
/// [`super::TOOLS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSpec {
    /// What `difflog import --from` takes.
    pub from: String,
    /// The folder.
    pub dir: PathBuf,
}

impl FromStr for ImportSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<ImportSpec, String> {
        let (from, dir) = s
            .split_once(':')
            .filter(|(_, dir)| !dir.is_empty())
            .ok_or_else(|| {
                format!(
                    "expected TOOL:FOLDER (TOOL: auto, {})",
                    super::TOOLS.map(|t| t.0).join(", ")
                )
            })?;
        if super::wanted(from).is_err() {
            return Err(format!(
                "unknown tool {}: expected auto, {}",
                crate::terminal::escape(from),
                super::TOOLS.map(|t| t.0).join(", ")
            ));
        }
        Ok(ImportSpec {
            from: from.to_string(),
            dir: PathBuf::from(dir),
        })
    }
}

enum Msg {
    Changed,
    Stop,
}

/// The folders being followed; [`Following::stop`] ends them.
pub struct Following {
    threads: Vec<(Sender<Msg>, JoinHandle<Result<()>>)>,
}

/// Starts following each folder, recording into runs under `root`. Every
/// folder is checked (it exists, the tool is known) before any thread
/// starts; each then imports what is new at once.
pub fn follow(specs: &[ImportSpec], root: &Path) -> Result<Following> {
    let mut importers = Vec::new();
    for s in specs {
        let opts = ImportOpts {
            from: s.from.clone(),
            dir: s.dir.clone(),
            root: root.to_path_buf(),
        };
        importers.push(Importer::new(opts, true)?);
    }
    let mut threads = Vec::new();
    for importer in importers {
        let (tx, rx) = channel();
        let events = tx.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            use notify::event::{AccessKind, AccessMode, EventKind};
            if let Ok(ev) = res {
                if matches!(
                    ev.kind,
                    EventKind::Create(_)
                        | EventKind::Modify(_)
                        | EventKind::Any
                        | EventKind::Access(AccessKind::Close(AccessMode::Write))
                ) {
                    let _ = events.send(Msg::Changed);
                }
            }
        })
        .map_err(|e| Error::System {
            what: "watch files",
            why: e.to_string(),
        })?;
        watcher
            .watch(importer.folder(), RecursiveMode::Recursive)
            .map_err(|e| Error::System {
                what: "watch an output folder",
                why: format!("{}: {e}", importer.folder().display()),
            })?;
        let thread = std::thread::Builder::new()
            .name("difflog-import".into())
            .spawn(move || {
                let _watcher = watcher;
                follow_one(importer, &rx)
            })
            .map_err(|e| Error::System {
                what: "start an import thread",
                why: e.to_string(),
            })?;
        threads.push((tx, thread));
    }
    Ok(Following { threads })
}

/// One folder's loop: look, wait for a change (or the next timed look),
/// until told to stop; then the run is finished.
fn follow_one(mut importer: Importer, rx: &std::sync::mpsc::Receiver<Msg>) -> Result<()> {
    let folder = importer.folder().to_path_buf();
    loop {
        match importer.scan() {
            Ok(r) => say(&folder, &r),
            // The folder gone or unreadable for now: said, and tried again.
            Err(e) => tracing::warn!("import from {}: {e}", folder.display()),
        }
        let wait = if importer.waiting() {
            INCOMPLETE_RETRY
        } else {
            RESCAN
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Msg::Changed) => {
                let until = Instant::now() + QUIET_MAX;
                let mut stop = false;
                while Instant::now() < until {
                    match rx.recv_timeout(QUIET) {
                        Ok(Msg::Changed) => {}
                        Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                            stop = true;
                            break;
                        }
                        Err(RecvTimeoutError::Timeout) => break,
                    }
                }
                if stop {
                    break;
                }
            }
        }
    }
    importer.finish()
}

/// Logs what a look did, when it did anything.
fn say(folder: &Path, r: &ImportReport) {
    if let Some(run) = &r.run_dir {
        tracing::info!(
            "imported {} image(s) in {} call(s) from {} into {}",
            r.imported,
            r.calls,
            folder.display(),
            run.display()
        );
    }
    for (path, why) in &r.unreadable {
        tracing::warn!(
            "import: {} not imported: {}",
            crate::terminal::escape(&path.to_string_lossy()),
            crate::terminal::escape(why)
        );
    }
}

impl Following {
    /// Stops every folder's thread and finishes its run; the first error
    /// any of them met is returned.
    pub fn stop(self) -> Result<()> {
        let mut first = Ok(());
        for (tx, thread) in self.threads {
            let _ = tx.send(Msg::Stop);
            let done = thread
                .join()
                .unwrap_or_else(|_| Err(Error::Invalid("an import thread panicked".into())));
            if first.is_ok() {
                first = done;
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_known_tool_and_a_folder() {
        let s: ImportSpec = "comfyui:/data/out".parse().unwrap();
        assert_eq!(s.from, "comfyui");
        assert_eq!(s.dir, PathBuf::from("/data/out"));
        // Only the first colon separates.
        let s: ImportSpec = "auto:C:/x".parse().unwrap();
        assert_eq!(s.dir, PathBuf::from("C:/x"));
        for bad in ["comfyui", "comfyui:", "photoshop:/x", ":/x"] {
            let e = bad.parse::<ImportSpec>().unwrap_err();
            assert!(
                e.contains("TOOL") || e.contains("unknown tool"),
                "{bad}: {e}"
            );
        }
    }
}
