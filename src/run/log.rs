//! The writer's side of `events.log`: exclusive lock, torn-tail repair on
//! reopen, appends and syncs.
//!
//! One writer per run is enforced with an OS file lock (`flock`) on the log
//! itself, held for the writer's life and released by the kernel when the
//! process dies, so a crashed writer never leaves a stale lock behind.

use crate::error::{Error, IoContext, Result};
use crate::format::EVENTS_LOG;
use crate::read::RunDir;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a writer retries a busy lock before reporting the holder: long
/// enough to outlast a reader's liveness probe, short enough to fail fast.
const LOCK_PATIENCE: Duration = Duration::from_millis(250);

/// Space kept allocated past the end of the log (without growing it), so
/// that when the disk fills up — media are far larger than records, so they
/// usually hit it first — the records saying so (failed calls, the failed
/// end of the run) can still be written.
const RESERVE: u64 = 1 << 20;

/// An open, locked event log.
pub(crate) struct EventLog {
    file: File,
    path: PathBuf,
    /// Bytes of whole records in the file.
    len: u64,
}

impl EventLog {
    /// Creates the log of a new run and locks it.
    pub(crate) fn create(dir: &Path) -> Result<EventLog> {
        let path = dir.join(EVENTS_LOG);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .ctx(&path, "create event log")?;
        lock(&file, dir)?;
        let log = EventLog { file, path, len: 0 };
        log.reserve();
        Ok(log)
    }

    /// Opens the log of an existing run for appending: locks it, cuts a torn
    /// tail, and returns the log with the run as read and the bytes cut.
    pub(crate) fn reopen(dir: &Path) -> Result<(EventLog, RunDir, u64)> {
        let path = dir.join(EVENTS_LOG);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ctx(&path, "open event log")?;
        lock(&file, dir)?;
        // Read only once the lock is ours, so no writer can be appending.
        let run = RunDir::open(dir)?;
        if let Some(p) = &run.log.problem {
            if p.kind != crate::read::LogProblemKind::TornTail {
                return Err(Error::CorruptLog {
                    path,
                    offset: p.offset,
                    why: format!("{}; refusing to append after damage", p.why),
                });
            }
        }
        let cut = run.log.file_len - run.log.valid_len;
        if cut > 0 {
            file.set_len(run.log.valid_len)
                .ctx(&path, "truncate torn tail of event log")?;
            file.sync_all().ctx(&path, "sync event log")?;
        }
        let log = EventLog {
            file,
            path,
            len: run.log.valid_len,
        };
        log.reserve();
        Ok((log, run, cut))
    }

    /// Appends whole records (already framed). On failure (a full disk)
    /// the file is cut back to its last whole record, so the log never ends
    /// in a partial record that a later append would bury.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.reserve();
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(Error::io(&self.path, "append to event log", e))
            }
        }
    }

    /// Keeps [`RESERVE`] bytes allocated past the end (best effort: a full
    /// disk leaves whatever reserve is still there).
    fn reserve(&self) {
        use std::os::fd::AsRawFd;
        let (Ok(at), Ok(n)) = (
            libc::off_t::try_from(self.len),
            libc::off_t::try_from(RESERVE),
        ) else {
            return;
        };
        // SAFETY: a valid open file descriptor; KEEP_SIZE only allocates
        // blocks past the end and never changes the file's contents or size.
        unsafe {
            libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, at, n);
        }
    }

    /// Makes everything appended so far durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.file.sync_data().ctx(&self.path, "sync event log")
    }
}

fn lock(file: &File, dir: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_PATIENCE => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = RunDir::open(dir)
                    .ok()
                    .and_then(|r| r.last_writer())
                    .unwrap_or_else(|| "another process".into());
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(dir.join(EVENTS_LOG), "lock event log", e))
            }
        }
    }
}
