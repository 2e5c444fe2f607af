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

/// An open, locked event log.
pub(crate) struct EventLog {
    file: File,
    path: PathBuf,
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
        Ok(EventLog { file, path })
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
        Ok((EventLog { file, path }, run, cut))
    }

    /// Appends whole records (already framed).
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .ctx(&self.path, "append to event log")
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
