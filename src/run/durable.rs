//! When the media files a run stores reach the disk for good.
//!
//! The crash rule says a record may name a media file only once that file
//! is durable, and a final name only ever holds complete bytes. difflog
//! used to fsync each file and its folder as it was stored: two journal
//! commits an image, the largest part of what recording costs over
//! encoding and writing the files (issue 38). By default
//! ([`SyncMode::Group`]) the files are now written under temporary names
//! without a sync; the writer's placer makes a batch of them durable with
//! one `syncfs` of the run's file system and renames them into place, and
//! the appender makes the renames durable with one more before it writes
//! any record that names one of them. `DIFFLOG_SYNC=file` keeps the sync
//! per file.
//!
//! A `syncfs` also writes what other programs wrote to the same file
//! system, and can take seconds (another program's large files), during
//! which no record reaches the log — a SIGKILL then would lose every call
//! of those seconds. So the barrier waits for one at most
//! [`SYNCFS_WAIT`], then syncs its own paths one by one while the `syncfs`
//! finishes on its own thread; after [`SLOW_TRIES`] slow ones it stops
//! trying them.
//!
//! The write-back of each file is left to the barrier: starting it per file
//! (`sync_file_range`) was measured slower — many small writes instead of
//! one merged batch.
//!
//! What a power loss can leave is what it left before: temporary files
//! (removed when the run is reopened) and, at worst, files under their
//! final names that no record names yet.

use crate::error::{IoContext, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::Duration;

/// How media files are made durable (`DIFFLOG_SYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Each file and its folder are synced as the file is stored (two
    /// journal commits an image): `DIFFLOG_SYNC=file`, and the only mode
    /// where `syncfs` does not exist (not Linux).
    File,
    /// Files are stored under temporary names without a sync; one `syncfs`
    /// makes a batch durable before the renames, one more the renames
    /// before the records that name them. The default on Linux. It also
    /// flushes what other programs wrote to the same file system, so a box
    /// that writes much else there may prefer `file`.
    Group,
}

impl Default for SyncMode {
    fn default() -> SyncMode {
        if cfg!(target_os = "linux") {
            SyncMode::Group
        } else {
            SyncMode::File
        }
    }
}

impl SyncMode {
    /// Both modes.
    pub const ALL: [SyncMode; 2] = [SyncMode::File, SyncMode::Group];

    /// Reads `DIFFLOG_SYNC` (`group` or unset, or `file`); `group` where
    /// the system has no `syncfs` is refused with an error that says so.
    pub fn from_env() -> Result<SyncMode> {
        let mode = crate::error::env_choice(
            "DIFFLOG_SYNC",
            SyncMode::default(),
            &[("file", SyncMode::File), ("group", SyncMode::Group)],
        )?;
        mode.check()
    }

    /// `given`, checked, else `DIFFLOG_SYNC`'s.
    pub fn given_or_env(given: Option<SyncMode>) -> Result<SyncMode> {
        match given {
            Some(s) => s.check(),
            None => SyncMode::from_env(),
        }
    }

    /// `self`, or an error when this system cannot do it.
    pub fn check(self) -> Result<SyncMode> {
        if self == SyncMode::Group && !cfg!(target_os = "linux") {
            return Err(crate::Error::Setting {
                name: "DIFFLOG_SYNC".into(),
                value: "group".into(),
                why: "group syncs need Linux's syncfs; use \"file\"".into(),
            });
        }
        Ok(self)
    }

    /// Whether the store syncs each file itself.
    pub(crate) fn per_file(self) -> bool {
        self == SyncMode::File
    }
}

/// Makes what a run stored durable, in one call.
pub(crate) trait Barrier: Send {
    /// Returns once `paths` (files or folders, written before the call)
    /// are on disk; the real barrier makes everything written to the file
    /// system before the call durable.
    fn make_durable(&mut self, paths: &[PathBuf]) -> Result<()>;
}

/// How long a barrier waits for a `syncfs`. An idle disk takes a few
/// milliseconds; one that holds another program's large writes (a model
/// just downloaded, a build, a checkpoint) can take seconds, and while the
/// barrier waits no record reaches the log, so a killed process would lose
/// every call of those seconds. Past this the barrier syncs its own paths
/// one by one and lets the `syncfs` finish in the background.
const SYNCFS_WAIT: Duration = Duration::from_millis(100);

/// After this many `syncfs` calls outlived [`SYNCFS_WAIT`], the barrier
/// stops trying them for the rest of the run.
const SLOW_TRIES: u32 = 3;

/// What the syncing thread calls (the real `syncfs`, or a test's).
type SyncFn = fn(&File) -> std::io::Result<()>;

/// A thread that runs `syncfs` for a barrier, so that the barrier can stop
/// waiting for one.
struct Syncer {
    ask: Sender<()>,
    done: Receiver<std::io::Result<()>>,
    /// Whether a `syncfs` was asked for and its answer not yet taken.
    busy: bool,
}

impl Syncer {
    fn start(dir: &Path, sync: SyncFn) -> Result<Syncer> {
        let handle = File::open(dir).ctx(dir, "open run directory")?;
        let (ask, asked) = mpsc::channel::<()>();
        let (answer, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("difflog-syncfs".into())
            .spawn(move || {
                for () in asked {
                    if answer.send(sync(&handle)).is_err() {
                        break;
                    }
                }
            })
            .ctx(dir, "start the syncing thread")?;
        Ok(Syncer {
            ask,
            done,
            busy: false,
        })
    }
}

/// The real barrier: `syncfs` on the run directory, or each path on its
/// own while a `syncfs` is slow.
pub(crate) struct SyncFs {
    dir: PathBuf,
    syncer: Option<Syncer>,
    sync: SyncFn,
    wait: Duration,
    /// How many `syncfs` calls outlived `wait`.
    slow: u32,
}

impl SyncFs {
    /// A barrier for the run at `dir` (its thread started at first use).
    pub(crate) fn new(dir: &Path) -> SyncFs {
        SyncFs {
            dir: dir.to_path_buf(),
            syncer: None,
            sync: syncfs,
            wait: SYNCFS_WAIT,
            slow: 0,
        }
    }

    /// Syncs each of `paths` (files and folders) on its own.
    fn each(paths: &[PathBuf]) -> Result<()> {
        for p in paths {
            File::open(p)
                .and_then(|f| f.sync_all())
                .ctx(p, "sync media file")?;
        }
        Ok(())
    }

    /// Takes the answer of a `syncfs` the barrier stopped waiting for, if
    /// it came; whether the syncing thread is free.
    fn settle(&mut self) -> bool {
        let Some(s) = self.syncer.as_mut() else {
            return true;
        };
        if !s.busy {
            return true;
        }
        match s.done.try_recv() {
            Ok(r) => {
                s.busy = false;
                if let Err(e) = r {
                    // Our own files were synced one by one meanwhile.
                    tracing::warn!(dir = %self.dir.display(), error = %e, "a late syncfs of the run's file system failed");
                }
                true
            }
            Err(TryRecvError::Empty) => false,
            Err(TryRecvError::Disconnected) => {
                self.slow = SLOW_TRIES;
                false
            }
        }
    }
}

impl Barrier for SyncFs {
    fn make_durable(&mut self, paths: &[PathBuf]) -> Result<()> {
        if self.slow >= SLOW_TRIES || !self.settle() {
            return SyncFs::each(paths);
        }
        let dir = &self.dir;
        let s = match &mut self.syncer {
            Some(s) => s,
            None => self.syncer.insert(Syncer::start(dir, self.sync)?),
        };
        if s.ask.send(()).is_err() {
            self.slow = SLOW_TRIES;
            return SyncFs::each(paths);
        }
        match s.done.recv_timeout(self.wait) {
            Ok(r) => r.ctx(dir, "sync the run's file system"),
            Err(RecvTimeoutError::Timeout) => {
                s.busy = true;
                self.slow += 1;
                tracing::warn!(
                    dir = %dir.display(),
                    waited_ms = self.wait.as_millis() as u64,
                    "syncing the run's file system is slow (other writes on it?): syncing each media file until it is done"
                );
                SyncFs::each(paths)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.slow = SLOW_TRIES;
                SyncFs::each(paths)
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn syncfs(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open file descriptor for the whole call; syncfs
    // takes no pointers.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(f: &File) -> std::io::Result<()> {
    // Not reached: `SyncMode::check` refuses group syncs here. A full sync
    // of the folder is the closest there is.
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `syncfs` that outlives the wait leaves the barrier syncing the
    /// paths it is given, one by one (a path that is not there is an error
    /// naming it, which a `syncfs` never gives), at once while that
    /// `syncfs` runs, and back to `syncfs` once it ended; after
    /// `SLOW_TRIES` slow ones, paths one by one for good.
    #[test]
    fn a_slow_syncfs_is_not_waited_for() {
        use std::sync::Mutex;
        use std::time::Instant;
        // The test's syncfs blocks while this lock is held.
        static GATE: Mutex<()> = Mutex::new(());
        fn gated(_: &File) -> std::io::Result<()> {
            drop(GATE.lock());
            Ok(())
        }
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a.png");
        std::fs::write(&file, b"png").unwrap();
        let gone = tmp.path().join("gone.png");
        let mut b = SyncFs::new(tmp.path());
        b.sync = gated;
        b.wait = Duration::from_millis(50);
        b.make_durable(std::slice::from_ref(&gone)).unwrap();
        for round in 1..=SLOW_TRIES {
            let gate = GATE.lock().unwrap();
            let start = Instant::now();
            let e = b.make_durable(&[file.clone(), gone.clone()]).unwrap_err();
            assert!(e.to_string().contains("gone.png"), "{e}");
            assert!(start.elapsed() < Duration::from_secs(5));
            // Still blocked: no second wait.
            let start = Instant::now();
            b.make_durable(std::slice::from_ref(&file)).unwrap();
            assert!(start.elapsed() < b.wait, "waited for a busy syncfs");
            assert_eq!(b.slow, round);
            drop(gate);
            if round < SLOW_TRIES {
                // Once it ended, `syncfs` again: the missing path is fine.
                while !b.settle() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                b.make_durable(std::slice::from_ref(&gone)).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        let e = b.make_durable(std::slice::from_ref(&gone)).unwrap_err();
        assert!(e.to_string().contains("gone.png"), "{e}");
    }
}
