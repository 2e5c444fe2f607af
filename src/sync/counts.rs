//! What each run holds, remembered between `difflog-sync status` calls.
//!
//! Over a fleet of thousands of runs, decoding every event log is nearly
//! all of `status`'s time, and most logs have not changed since the last
//! look. So `status` keeps each run's counts (recorded calls and media, how
//! it ended) in a cache, and reads a run's log again only when its files
//! changed.
//!
//! The cache is kept outside the runs and their root, under difflog's cache
//! folder (one SQLite file per root), so `status` still writes nothing into
//! a root. An entry is used only while the run's `events.log` and
//! `run.json` are the very files it was made from: same device, inode,
//! size, modification and change time (the change time is set by the
//! kernel on every write, rename or `touch`; nobody can set it back). It is
//! an optimisation only: a cache that cannot be opened, read or written is
//! ignored, and every run is read as before.

use crate::format::{is_run_id, EVENTS_LOG, RUN_JSON};
use crate::read::RunState;
use rusqlite::{params, Connection, OpenFlags};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A run's counts as `status` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// The run's id (from `run.json`).
    pub run_id: String,
    /// Finished calls.
    pub calls: usize,
    /// Distinct media an upload sends.
    pub media: usize,
    /// How the log says it ended when no writer holds it (never live).
    pub ended: RunState,
}

/// One run's entry to store: its folder name, the stamp of its files, its
/// counts.
pub type Fresh = (String, String, Counts);

/// The cache of one root, read whole when opened.
pub struct CountsCache {
    root: PathBuf,
    file: Option<PathBuf>,
    known: HashMap<String, (String, Counts)>,
    settle: std::time::Duration,
}

/// A run whose files changed less than this long ago is not stored: a
/// rewrite of the same size within the file system's timestamp tick would
/// leave its stamp as it was (git's "racily clean" entries, avoided the
/// same way).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Waiting for another `status` writing the same cache: short, since
/// giving up only means the counts are not stored this time.
const BUSY: std::time::Duration = std::time::Duration::from_millis(500);

impl CountsCache {
    /// The cache of `root` (the folder the runs are in), or an empty one
    /// when there is none or it cannot be read; `use_cache` false: an
    /// empty one that still stores what is read (`status --fresh`).
    pub fn open(root: &Path, use_cache: bool) -> CountsCache {
        let mut cache = CountsCache {
            root: root.to_path_buf(),
            file: cache_file(root),
            known: HashMap::new(),
            settle: SETTLE,
        };
        if use_cache {
            if let Some(file) = cache.file.as_deref().filter(|f| f.is_file()) {
                match read_entries(file, root) {
                    Ok(known) => cache.known = known,
                    Err(e) => tracing::debug!("status cache {} not used: {e}", file.display()),
                }
            }
        }
        cache
    }

    /// The counts of the run in `dir` if the cache has them for its files
    /// as they are now; and the stamp of those files (`None`: not to be
    /// cached, for example a run outside the root or a log that is not a
    /// regular file).
    pub fn lookup(&self, dir: &Path) -> (Option<Counts>, Option<String>) {
        let Some(name) = self.name_of(dir) else {
            return (None, None);
        };
        let Some(stamp) = stamp(dir, self.settle) else {
            return (None, None);
        };
        let hit = self
            .known
            .get(&name)
            .filter(|(s, _)| *s == stamp)
            .map(|(_, c)| c.clone());
        (hit, Some(stamp))
    }

    /// The name `dir` is cached under: its folder name, when it is directly
    /// in the root.
    pub fn name_of(&self, dir: &Path) -> Option<String> {
        if dir.parent()? != self.root {
            return None;
        }
        dir.file_name()?.to_str().map(str::to_string)
    }

    /// Stores the entries read afresh, and forgets runs whose folder is
    /// gone; `listed` are the runs this look found (they exist, and are
    /// not probed again). Failing to write is logged, never an error.
    pub fn save(&self, fresh: &[Fresh], listed: &[PathBuf]) {
        let present: std::collections::HashSet<String> =
            listed.iter().filter_map(|d| self.name_of(d)).collect();
        let gone: Vec<&String> = self
            .known
            .keys()
            .filter(|n| !present.contains(*n) && !self.root.join(n).join(RUN_JSON).exists())
            .collect();
        if fresh.is_empty() && gone.is_empty() {
            return;
        }
        let Some(file) = &self.file else { return };
        if let Err(e) = write_entries(file, &self.root, fresh, &gone) {
            // A damaged cache would stay damaged: made again from scratch.
            tracing::debug!(
                "status cache {} not written ({e}); made anew",
                file.display()
            );
            let _ = std::fs::remove_file(file);
            if let Err(e) = write_entries(file, &self.root, fresh, &[]) {
                tracing::debug!("status cache {} not written: {e}", file.display());
            }
        }
    }
}

/// The cache file of `root`: named by a digest of its canonical path.
fn cache_file(root: &Path) -> Option<PathBuf> {
    use sha2::Digest;
    let canonical = root.canonicalize().ok()?;
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Some(
        crate::paths::cache_root()
            .join("status")
            .join(format!("{hex}.db")),
    )
}

/// The identity of a run's two files as they are now, or `None` when
/// either is not a regular file (a link, a FIFO) or changed less than
/// `settle` ago: such a run is read, not cached. A missing log (a writer
/// that died before its first record) has a stamp of its own.
pub fn stamp(dir: &Path, settle: std::time::Duration) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let settled = |md: &std::fs::Metadata| {
        let changed = std::time::Duration::new(
            u64::try_from(md.ctime()).unwrap_or(u64::MAX),
            u32::try_from(md.ctime_nsec()).unwrap_or(0),
        );
        now.checked_sub(changed).is_some_and(|age| age >= settle)
    };
    let one = |name: &str| -> Option<String> {
        match std::fs::symlink_metadata(dir.join(name)) {
            Ok(md) if md.file_type().is_file() && settled(&md) => Some(format!(
                "{}.{}.{}.{}.{}.{}.{}",
                md.dev(),
                md.ino(),
                md.size(),
                md.mtime(),
                md.mtime_nsec(),
                md.ctime(),
                md.ctime_nsec()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == EVENTS_LOG => {
                Some("absent".into())
            }
            _ => None,
        }
    };
    Some(format!("{}/{}", one(RUN_JSON)?, one(EVENTS_LOG)?))
}

fn connect(file: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(file, flags)?;
    conn.busy_timeout(BUSY)?;
    Ok(conn)
}

fn ended_from(s: &str) -> Option<RunState> {
    match s {
        "finished" => Some(RunState::Finished),
        "failed" => Some(RunState::Failed),
        "crashed" => Some(RunState::Crashed),
        _ => None,
    }
}

/// Reads every entry; rows that do not check out (a cache edited by hand)
/// are skipped, and a cache made for another root is not used at all.
fn read_entries(file: &Path, root: &Path) -> rusqlite::Result<HashMap<String, (String, Counts)>> {
    let conn = connect(file, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let owner: Option<String> = conn
        .query_row("SELECT root FROM owner", [], |r| r.get(0))
        .ok();
    let canonical = root.canonicalize().ok().map(|p| p.display().to_string());
    if owner.is_none() || owner != canonical {
        return Ok(HashMap::new());
    }
    let mut st = conn.prepare("SELECT name, stamp, run_id, calls, media, ended FROM runs")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let Ok((name, stamp, run_id, calls, media, ended)) = row else {
            continue;
        };
        let (Ok(calls), Ok(media), Some(ended)) = (
            usize::try_from(calls),
            usize::try_from(media),
            ended_from(&ended),
        ) else {
            continue;
        };
        if !is_run_id(&run_id) {
            continue;
        }
        let counts = Counts {
            run_id,
            calls,
            media,
            ended,
        };
        out.insert(name, (stamp, counts));
    }
    Ok(out)
}

fn write_entries(
    file: &Path,
    root: &Path,
    fresh: &[Fresh],
    gone: &[&String],
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let canonical = root.canonicalize()?.display().to_string();
    let mut conn = connect(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    // A cache: a write lost to a power cut costs one more read, so no
    // syncs (a damaged file is ignored, and rewritten at the next save).
    conn.execute_batch(
        "PRAGMA synchronous=OFF;
         CREATE TABLE IF NOT EXISTS owner (root TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS runs (
            name TEXT PRIMARY KEY NOT NULL, stamp TEXT NOT NULL,
            run_id TEXT NOT NULL, calls INTEGER NOT NULL,
            media INTEGER NOT NULL, ended TEXT NOT NULL);",
    )?;
    let tx = conn.transaction()?;
    let owner: Option<String> = tx
        .query_row("SELECT root FROM owner", [], |r| r.get(0))
        .ok();
    if owner.as_deref() != Some(canonical.as_str()) {
        // New, or (a digest collision) another root's: start over.
        tx.execute("DELETE FROM owner", [])?;
        tx.execute("DELETE FROM runs", [])?;
        tx.execute("INSERT INTO owner (root) VALUES (?1)", [&canonical])?;
    }
    {
        let mut put = tx.prepare(
            "INSERT OR REPLACE INTO runs (name, stamp, run_id, calls, media, ended)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (name, stamp, c) in fresh {
            put.execute(params![
                name,
                stamp,
                c.run_id,
                i64::try_from(c.calls)?,
                i64::try_from(c.media)?,
                c.ended.as_str()
            ])?;
        }
        let mut drop = tx.prepare("DELETE FROM runs WHERE name = ?1")?;
        for name in gone {
            drop.execute([name])?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(id: &str, calls: usize) -> Counts {
        Counts {
            run_id: id.into(),
            calls,
            media: 2 * calls,
            ended: RunState::Finished,
        }
    }

    /// A folder that looks like a run to the stamp: a run.json and a log.
    fn fake_run(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(RUN_JSON), "{}").unwrap();
        std::fs::write(dir.join(EVENTS_LOG), "x\n").unwrap();
        dir
    }

    #[test]
    fn an_entry_is_used_only_while_the_runs_files_are_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("runs");
        let cache_dir = tmp.path().join("cache");
        let file = cache_dir.join("c.db");
        let a = fake_run(&root, "a");
        let b = fake_run(&root, "b");
        let mut cache = CountsCache {
            root: root.clone(),
            file: Some(file.clone()),
            known: HashMap::new(),
            settle: std::time::Duration::ZERO,
        };
        let (hit, sa) = cache.lookup(&a);
        assert_eq!(hit, None);
        let sb = cache.lookup(&b).1.unwrap();
        cache.save(
            &[
                ("a".into(), sa.unwrap(), counts("run-a", 1)),
                ("b".into(), sb, counts("run-b", 2)),
            ],
            &[a.clone(), b.clone()],
        );
        cache.known = read_entries(&file, &root).unwrap();
        assert_eq!(cache.lookup(&a).0, Some(counts("run-a", 1)));
        assert_eq!(cache.lookup(&b).0, Some(counts("run-b", 2)));

        // Appended to, rewritten in place with the same size, replaced:
        // each is a miss.
        std::fs::OpenOptions::new()
            .append(true)
            .open(a.join(EVENTS_LOG))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"y\n"))
            .unwrap();
        assert_eq!(cache.lookup(&a).0, None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(b.join(RUN_JSON), "[]").unwrap();
        assert_eq!(cache.lookup(&b).0, None);

        // A log that is a link or missing run.json: never cached.
        std::fs::remove_file(a.join(EVENTS_LOG)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", a.join(EVENTS_LOG)).unwrap();
        assert_eq!(cache.lookup(&a), (None, None));
        // A run outside the root (an unpacked archive's) is not cached.
        let elsewhere = fake_run(tmp.path(), "c");
        assert_eq!(cache.lookup(&elsewhere), (None, None));

        // A run folder removed is forgotten at the next save.
        std::fs::remove_dir_all(&b).unwrap();
        cache.save(&[], std::slice::from_ref(&a));
        let left = read_entries(&file, &root).unwrap();
        assert_eq!(left.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn files_changed_a_moment_ago_are_not_stamped() {
        let tmp = tempfile::tempdir().unwrap();
        let a = fake_run(tmp.path(), "a");
        assert_eq!(stamp(&a, std::time::Duration::from_secs(60)), None);
        assert!(stamp(&a, std::time::Duration::ZERO).is_some());
    }

    #[test]
    fn a_damaged_or_foreign_cache_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("runs");
        let a = fake_run(&root, "a");
        let file = tmp.path().join("c.db");
        let cache = CountsCache {
            root: root.clone(),
            file: Some(file.clone()),
            known: HashMap::new(),
            settle: std::time::Duration::ZERO,
        };
        let s = cache.lookup(&a).1.unwrap();
        cache.save(&[("a".into(), s.clone(), counts("run-a", 1))], &[]);
        // Rows edited by hand are skipped, not trusted.
        let conn = Connection::open(&file).unwrap();
        conn.execute_batch(
            "UPDATE runs SET calls = -3;
             INSERT INTO runs VALUES ('b', 's', '../x', 1, 1, 'finished');
             INSERT INTO runs VALUES ('c', 's', 'ok-id', 1, 1, 'live');",
        )
        .unwrap();
        assert!(read_entries(&file, &root).unwrap().is_empty());
        // Made for another root: not used.
        conn.execute("UPDATE owner SET root = '/elsewhere'", [])
            .unwrap();
        conn.execute("UPDATE runs SET calls = 1", []).unwrap();
        assert!(read_entries(&file, &root).unwrap().is_empty());
        // Not a database at all: nothing is used (an error `open` logs).
        drop(conn);
        std::fs::write(&file, b"not sqlite at all, just some bytes here..").unwrap();
        assert!(read_entries(&file, &root).map_or(true, |m| m.is_empty()));
        // And the next save starts it over.
        cache.save(&[("a".into(), s, counts("run-a", 1))], &[]);
        assert_eq!(read_entries(&file, &root).unwrap().len(), 1);
    }
}
