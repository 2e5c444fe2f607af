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
//! system. When one is slow (seconds: another program's large files), the
//! barrier syncs each path on its own for the rest of the run.
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
use std::time::{Duration, Instant};

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
    /// before the records that name them. The default on Linux. It also flushes what other programs wrote to the same file
    /// system, so a box that writes much else there may prefer `file`.
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

/// A `syncfs` slower than this means the file system holds much else to
/// write (another program's large files, flushed with ours): from then on
/// the barrier syncs only the paths it is given, one by one, so that the
/// recorder never waits for another program's writes again.
const SLOW_SYNCFS: Duration = Duration::from_secs(2);

/// The real barrier: `syncfs` on the run directory, or each path on its
/// own once a `syncfs` was slow.
pub(crate) struct SyncFs {
    dir: PathBuf,
    handle: Option<File>,
    slow_after: Duration,
    /// Whether a `syncfs` took longer than `slow_after`.
    slow: bool,
}

impl SyncFs {
    /// A barrier for the run at `dir` (opened at its first use).
    pub(crate) fn new(dir: &Path) -> SyncFs {
        SyncFs {
            dir: dir.to_path_buf(),
            handle: None,
            slow_after: SLOW_SYNCFS,
            slow: false,
        }
    }
}

impl Barrier for SyncFs {
    fn make_durable(&mut self, paths: &[PathBuf]) -> Result<()> {
        if self.slow {
            for p in paths {
                File::open(p)
                    .and_then(|f| f.sync_all())
                    .ctx(p, "sync media file")?;
            }
            return Ok(());
        }
        let handle = match &self.handle {
            Some(f) => f,
            None => self
                .handle
                .insert(File::open(&self.dir).ctx(&self.dir, "open run directory")?),
        };
        let start = Instant::now();
        syncfs(handle).ctx(&self.dir, "sync the run's file system")?;
        if start.elapsed() > self.slow_after {
            self.slow = true;
            tracing::warn!(
                dir = %self.dir.display(),
                seconds = start.elapsed().as_secs_f64(),
                "syncing the run's file system was slow (other writes on it?): syncing each media file from now on"
            );
        }
        Ok(())
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

    /// After a slow `syncfs` the barrier syncs the paths it is given, one
    /// by one — a path that is not there is an error naming it, which a
    /// `syncfs` would never give.
    #[test]
    fn a_slow_syncfs_turns_the_barrier_to_single_files() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a.png");
        std::fs::write(&file, b"png").unwrap();
        let gone = tmp.path().join("gone.png");
        let mut b = SyncFs::new(tmp.path());
        b.make_durable(std::slice::from_ref(&gone)).unwrap();
        assert!(!b.slow);
        b.slow_after = Duration::ZERO;
        b.make_durable(&[]).unwrap();
        assert!(b.slow);
        b.make_durable(std::slice::from_ref(&file)).unwrap();
        let e = b.make_durable(&[file, gone.clone()]).unwrap_err();
        assert!(e.to_string().contains("gone.png"), "{e}");
    }
}
