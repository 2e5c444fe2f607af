//! The sync daemon's memory: what each target has acknowledged, per run.
//!
//! SQLite (WAL) in `ROOT/.difflog-sync/state.db`, beside the runs and never
//! inside one. A row is written only after the server acknowledged what it
//! records, each change in its own transaction, so a kill at any instant
//! leaves a state that is behind the server at worst — and every upload is
//! idempotent on the server side, so catching up never duplicates anything.

use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Name of the state folder beside the runs.
pub const STATE_DIR: &str = ".difflog-sync";

/// What the state remembers of one run at one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRecord {
    /// The remote run's id.
    pub remote_id: Option<String>,
    /// Target-specific data about the remote run (JSON).
    pub remote_data: Option<String>,
    /// The last status sent (`RUNNING`, `FINISHED`, …).
    pub status_sent: Option<String>,
    /// Events up to this sequence number have been handled.
    pub synced_seq: u64,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When this row last changed.
    pub updated: Option<String>,
    /// The run's files (sizes, modification times) when a pass last
    /// completed without error.
    pub fingerprint: Option<String>,
    /// Set right before a pass sends a request that makes the remote run
    /// (`<rfc3339> <pid>`), cleared when the remote run is recorded: a
    /// process killed in between may have a create in flight that lands
    /// later.
    pub opening: Option<String>,
}

/// What `watch` last knew of a target's reachability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// The target's key (its URL, credentials never part of it).
    pub target: String,
    /// When the target last answered (RFC 3339), if ever.
    pub last_reachable: Option<String>,
    /// While it is unreachable: when the daemon tries again (RFC 3339).
    pub next_attempt: Option<String>,
}

/// The state database.
pub struct State {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// A state folder found already there must be this user's own folder and
/// writable by nobody else: in a runs folder others may write to (the
/// Debian package's group-writable one), someone could create it first,
/// and then the state — what was uploaded, where — would live in a folder
/// they control. A link is refused as well.
fn check_own_folder(dir: &Path) -> crate::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = match std::fs::symlink_metadata(dir) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(crate::Error::io(dir, "read sync state folder", e)),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let why = if !md.is_dir() {
        Some("it is not a folder (a link or a file)".to_string())
    } else if md.uid() != me {
        Some(format!(
            "it belongs to user id {}, not to this user ({me})",
            md.uid()
        ))
    } else if md.permissions().mode() & 0o022 != 0 {
        Some(format!(
            "others may write to it (mode {:o})",
            md.permissions().mode() & 0o7777
        ))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(crate::Error::file(
            dir,
            format!(
                "the sync state folder is refused: {why}; remove it (or fix it) and start again"
            ),
        )),
    }
}

fn err(path: &Path, e: rusqlite::Error) -> crate::Error {
    crate::Error::State {
        path: path.to_path_buf(),
        source: e,
    }
}

/// What [`State::forget`] forgets.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Forget {
    /// Done items (`call:3`, `media:<digest>`, `table:3`).
    pub items: Vec<String>,
    /// Done items starting with these (`meta:`).
    pub prefixes: Vec<String>,
    /// How far the log's metrics were sent (all are sent again).
    pub metrics: bool,
    /// The status sent.
    pub status: bool,
}

impl RunRecord {
    /// The record in a row's columns from `at` on: remote_id, remote_data,
    /// status_sent, synced_seq, last_error, updated, fingerprint, opening.
    fn from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<RunRecord> {
        Ok(RunRecord {
            remote_id: r.get(at)?,
            remote_data: r.get(at + 1)?,
            status_sent: r.get(at + 2)?,
            synced_seq: r.get::<_, i64>(at + 3)? as u64,
            last_error: r.get(at + 4)?,
            updated: r.get(at + 5)?,
            fingerprint: r.get(at + 6)?,
            opening: r.get(at + 7)?,
        })
    }
}

/// One run at one target, as [`State::summaries`] reads it.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The target's key.
    pub target: String,
    /// The run's record there.
    pub record: RunRecord,
    /// Calls done there (`call:` items).
    pub calls_done: u64,
    /// Media done there (`media:` items).
    pub media_done: u64,
}

impl State {
    /// Opens (creating if needed) the state of the runs under `root`.
    pub fn open(root: &Path) -> crate::Result<State> {
        let dir = root.join(STATE_DIR);
        check_own_folder(&dir)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| crate::Error::io(&dir, "create sync state folder", e))?;
        let path = dir.join("state.db");
        let conn = Connection::open(&path).map_err(|e| err(&path, e))?;
        State::init(conn, path)
    }

    /// The state of the runs under `root` for reading: the one there, or
    /// an empty one in memory when nothing was ever synced from it
    /// (`status` creates no files).
    pub fn open_for_reading(root: &Path) -> crate::Result<State> {
        let path = root.join(STATE_DIR).join("state.db");
        if path.is_file() {
            return State::open(root);
        }
        let conn = Connection::open_in_memory().map_err(|e| err(&path, e))?;
        State::init(conn, path)
    }

    fn init(conn: Connection, path: PathBuf) -> crate::Result<State> {
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| err(&path, e))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS runs (
                target TEXT NOT NULL, run_id TEXT NOT NULL,
                remote_id TEXT, remote_data TEXT, status_sent TEXT,
                synced_seq INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated TEXT,
                PRIMARY KEY (target, run_id));
             CREATE TABLE IF NOT EXISTS done (
                target TEXT NOT NULL, run_id TEXT NOT NULL, item TEXT NOT NULL,
                PRIMARY KEY (target, run_id, item));
             CREATE TABLE IF NOT EXISTS targets (
                target TEXT PRIMARY KEY NOT NULL,
                last_reachable TEXT, next_attempt TEXT);
             -- A run's targets (`status`): without it each lookup reads
             -- every row, quadratic over a fleet with several targets.
             CREATE INDEX IF NOT EXISTS runs_by_run_id ON runs (run_id);",
        )
        .map_err(|e| err(&path, e))?;
        // Added after the first release: older state files get the columns.
        for column in ["fingerprint", "opening"] {
            let has = conn
                .prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name=?1")
                .and_then(|mut st| st.exists([column]))
                .map_err(|e| err(&path, e))?;
            if !has {
                conn.execute(&format!("ALTER TABLE runs ADD COLUMN {column} TEXT"), [])
                    .map_err(|e| err(&path, e))?;
            }
        }
        Ok(State {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> crate::Result<T> {
        let c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&c).map_err(|e| err(&self.path, e))
    }

    /// The record of `run_id` at `target`.
    pub fn run(&self, target: &str, run_id: &str) -> crate::Result<RunRecord> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT remote_id, remote_data, status_sent, synced_seq, last_error, updated,
                        fingerprint, opening
                 FROM runs WHERE target=?1 AND run_id=?2",
            )?
            .query_row(params![target, run_id], |r| RunRecord::from_row(r, 0))
            .optional()
            .map(|o| o.unwrap_or_default())
        })
    }

    fn upsert(
        &self,
        target: &str,
        run_id: &str,
        set: &str,
        value: &dyn rusqlite::ToSql,
    ) -> crate::Result<()> {
        let now = crate::format::now_rfc3339();
        // One statement, and no write at all when the value is unchanged.
        self.with(|c| {
            c.execute(
                &format!(
                    "INSERT INTO runs (target, run_id, {set}, updated) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(target, run_id) DO UPDATE
                     SET {set}=excluded.{set}, updated=excluded.updated
                     WHERE {set} IS NOT excluded.{set}"
                ),
                params![target, run_id, value, now],
            )?;
            Ok(())
        })
    }

    /// Records the remote run (after the server created or returned it).
    /// A remote run that replaces another (the old one was deleted on the
    /// server and re-created when asked) starts from nothing: what was
    /// uploaded to the old one is forgotten, in the same transaction.
    pub fn set_remote(
        &self,
        target: &str,
        run_id: &str,
        remote_id: &str,
        data: &str,
    ) -> crate::Result<()> {
        let now = crate::format::now_rfc3339();
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let old: Option<String> = tx
                .query_row(
                    "SELECT remote_id FROM runs WHERE target=?1 AND run_id=?2",
                    params![target, run_id],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            if old.as_deref().is_some_and(|o| o != remote_id) {
                tx.execute(
                    "DELETE FROM done WHERE target=?1 AND run_id=?2",
                    params![target, run_id],
                )?;
                tx.execute(
                    "UPDATE runs SET status_sent=NULL, synced_seq=0, fingerprint=NULL
                     WHERE target=?1 AND run_id=?2",
                    params![target, run_id],
                )?;
            }
            tx.execute(
                "INSERT INTO runs (target, run_id, remote_id, remote_data, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(target, run_id) DO UPDATE
                 SET remote_id=excluded.remote_id, remote_data=excluded.remote_data,
                     updated=excluded.updated, opening=NULL
                 WHERE remote_id IS NOT excluded.remote_id
                    OR remote_data IS NOT excluded.remote_data",
                params![target, run_id, remote_id, data, now],
            )?;
            tx.commit()
        })
    }

    /// Marks a request that makes the remote run as about to be sent
    /// (`<rfc3339> <pid>`; [`State::set_remote`] clears the mark).
    pub fn set_opening(&self, target: &str, run_id: &str, mark: &str) -> crate::Result<()> {
        self.upsert(target, run_id, "opening", &mark)
    }

    /// Records the status the server acknowledged.
    pub fn set_status(&self, target: &str, run_id: &str, status: &str) -> crate::Result<()> {
        self.upsert(target, run_id, "status_sent", &status)
    }

    /// Records how far the event log has been handled.
    pub fn set_synced_seq(&self, target: &str, run_id: &str, seq: u64) -> crate::Result<()> {
        self.upsert(target, run_id, "synced_seq", &(seq as i64))
    }

    /// Records (or clears) the last error.
    pub fn set_error(&self, target: &str, run_id: &str, error: Option<&str>) -> crate::Result<()> {
        self.upsert(target, run_id, "last_error", &error)
    }

    /// Records the run's fingerprint after a pass without error.
    pub fn set_fingerprint(&self, target: &str, run_id: &str, fp: &str) -> crate::Result<()> {
        self.upsert(target, run_id, "fingerprint", &fp)
    }

    /// Forgets what `forget` names as sent, so that the next pass sends it
    /// again (`verify --repair`), and the run's fingerprint (so that the
    /// pass reads the run), in one transaction.
    pub fn forget(&self, target: &str, run_id: &str, forget: &Forget) -> crate::Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            for item in &forget.items {
                tx.execute(
                    "DELETE FROM done WHERE target=?1 AND run_id=?2 AND item=?3",
                    params![target, run_id, item],
                )?;
            }
            for prefix in &forget.prefixes {
                tx.execute(
                    "DELETE FROM done WHERE target=?1 AND run_id=?2 AND substr(item, 1, length(?3))=?3",
                    params![target, run_id, prefix],
                )?;
            }
            tx.execute(
                "UPDATE runs SET fingerprint=NULL,
                    synced_seq=CASE WHEN ?3 THEN 0 ELSE synced_seq END,
                    status_sent=CASE WHEN ?4 THEN NULL ELSE status_sent END
                 WHERE target=?1 AND run_id=?2",
                params![target, run_id, forget.metrics, forget.status],
            )?;
            tx.commit()
        })
    }

    /// Whether `item` (`call:3`, `media:<digest>`, …) is done.
    pub fn is_done(&self, target: &str, run_id: &str, item: &str) -> crate::Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM done WHERE target=?1 AND run_id=?2 AND item=?3",
                params![target, run_id, item],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
        })
    }

    /// Marks `item` done (after the server acknowledged it).
    pub fn mark_done(&self, target: &str, run_id: &str, item: &str) -> crate::Result<()> {
        self.mark_done_many(target, run_id, &[item.to_string()])
    }

    /// Marks several items done in one transaction (one commit instead of
    /// one per item).
    pub fn mark_done_many(
        &self,
        target: &str,
        run_id: &str,
        items: &[String],
    ) -> crate::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO done (target, run_id, item) VALUES (?1, ?2, ?3)",
                )?;
                for item in items {
                    st.execute(params![target, run_id, item])?;
                }
            }
            tx.commit()
        })
    }

    /// Number of done items of `run_id` at `target` whose name starts with `prefix`.
    pub fn count_done(&self, target: &str, run_id: &str, prefix: &str) -> crate::Result<u64> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT COUNT(*) FROM done WHERE target=?1 AND run_id=?2 AND item LIKE ?3 || '%'",
            )?
            .query_row(params![target, run_id, prefix], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
        })
    }

    /// Records what `watch` knows of `target`: when it last answered
    /// (RFC 3339; `None` keeps what was recorded) and, while it is
    /// unreachable, when the next attempt is due (`None`: none pending).
    pub fn set_reachability(
        &self,
        target: &str,
        reached: Option<&str>,
        next_attempt: Option<&str>,
    ) -> crate::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO targets (target, last_reachable, next_attempt) VALUES (?1, ?2, ?3)
                 ON CONFLICT(target) DO UPDATE
                 SET last_reachable=COALESCE(excluded.last_reachable, last_reachable),
                     next_attempt=excluded.next_attempt",
                params![target, reached, next_attempt],
            )?;
            Ok(())
        })
    }

    /// What the daemon last knew of each target's reachability, by target.
    pub fn reachability(&self) -> crate::Result<Vec<Reachability>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT target, last_reachable, next_attempt FROM targets ORDER BY target",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Reachability {
                    target: r.get(0)?,
                    last_reachable: r.get(1)?,
                    next_attempt: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Every run's record at every target, with how many calls and media
    /// are done there, by run id: what `status` shows of a whole root, in
    /// two reads (one lookup per run and target is slow over a fleet).
    pub fn summaries(&self) -> crate::Result<HashMap<String, Vec<Summary>>> {
        self.with(|c| {
            let mut counts: HashMap<(String, String), (u64, u64)> = HashMap::new();
            let mut st = c.prepare(
                "SELECT target, run_id,
                        SUM(item LIKE 'call:%'), SUM(item LIKE 'media:%')
                 FROM done GROUP BY target, run_id",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                counts.insert(
                    (r.get(0)?, r.get(1)?),
                    (
                        r.get::<_, i64>(2)?.max(0) as u64,
                        r.get::<_, i64>(3)?.max(0) as u64,
                    ),
                );
            }
            let mut out: HashMap<String, Vec<Summary>> = HashMap::new();
            let mut st = c.prepare(
                "SELECT target, run_id, remote_id, remote_data, status_sent, synced_seq,
                        last_error, updated, fingerprint, opening
                 FROM runs ORDER BY target",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let (target, run_id): (String, String) = (r.get(0)?, r.get(1)?);
                let (calls_done, media_done) = counts
                    .get(&(target.clone(), run_id.clone()))
                    .copied()
                    .unwrap_or_default();
                out.entry(run_id).or_default().push(Summary {
                    target,
                    record: RunRecord::from_row(r, 2)?,
                    calls_done,
                    media_done,
                });
            }
            Ok(out)
        })
    }

    /// Every target that has state for `run_id`.
    pub fn targets_of(&self, run_id: &str) -> crate::Result<Vec<String>> {
        self.with(|c| {
            let mut st =
                c.prepare_cached("SELECT target FROM runs WHERE run_id=?1 ORDER BY target")?;
            let rows = st.query_map(params![run_id], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `summaries` reads what one lookup per run and target reads.
    #[test]
    fn summaries_agree_with_the_lookups_per_run_and_target() {
        let root = tempfile::tempdir().unwrap();
        let s = State::open(root.path()).unwrap();
        for (t, r, calls, media) in [("a", "r1", 3, 2), ("b", "r1", 1, 0), ("a", "r2", 0, 5)] {
            s.set_remote(t, r, &format!("{t}-{r}"), "{}").unwrap();
            let mut items: Vec<String> = (1..=calls).map(|c| format!("call:{c}")).collect();
            items.extend((0..media).map(|m| format!("media:{m:064}")));
            items.push("meta:config".into());
            s.mark_done_many(t, r, &items).unwrap();
        }
        s.set_status("b", "r1", "FINISHED").unwrap();
        s.set_error("a", "r2", Some("refused")).unwrap();
        let all = s.summaries().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["r1"].len(), 2);
        for (run, list) in &all {
            for x in list {
                assert_eq!(x.calls_done, s.count_done(&x.target, run, "call:").unwrap());
                assert_eq!(
                    x.media_done,
                    s.count_done(&x.target, run, "media:").unwrap()
                );
                let rec = s.run(&x.target, run).unwrap();
                assert_eq!(x.record.remote_id, rec.remote_id);
                assert_eq!(x.record.status_sent, rec.status_sent);
                assert_eq!(x.record.last_error, rec.last_error);
            }
        }
        let b = all["r1"].iter().find(|x| x.target == "b").unwrap();
        assert_eq!((b.calls_done, b.media_done), (1, 0));
        assert_eq!(b.record.status_sent.as_deref(), Some("FINISHED"));
    }

    /// A remote run replaced by another (re-created after a delete on the
    /// server) starts from nothing; the same remote with new data keeps
    /// what was done.
    #[test]
    fn a_replaced_remote_forgets_what_went_to_the_old_one() {
        let root = tempfile::tempdir().unwrap();
        let s = State::open(root.path()).unwrap();
        s.set_remote("t", "r", "old", "{}").unwrap();
        s.mark_done("t", "r", "call:1").unwrap();
        s.set_status("t", "r", "KILLED").unwrap();
        s.set_synced_seq("t", "r", 9).unwrap();
        s.set_remote("t", "r", "old", "{\"x\":1}").unwrap();
        assert!(s.is_done("t", "r", "call:1").unwrap());
        s.set_remote("t", "r", "new", "{}").unwrap();
        assert!(!s.is_done("t", "r", "call:1").unwrap());
        let rec = s.run("t", "r").unwrap();
        assert_eq!(rec.remote_id.as_deref(), Some("new"));
        assert_eq!(rec.status_sent, None);
        assert_eq!(rec.synced_seq, 0);
    }

    #[test]
    fn a_state_folder_others_may_write_to_or_that_is_a_link_is_refused() {
        // Issue 32, item 4: a group member pre-creating .difflog-sync.
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(STATE_DIR);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = State::open(root.path()).err().unwrap().to_string();
        assert!(e.contains("others may write to it"), "{e}");
        std::fs::remove_dir(&dir).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), &dir).unwrap();
        let e = State::open(root.path()).err().unwrap().to_string();
        assert!(e.contains("not a folder"), "{e}");
        std::fs::remove_file(&dir).unwrap();
        State::open(root.path()).unwrap();
    }

    /// Issue 12: the remote id and its data are written in one statement: a
    /// failure in the middle leaves the old pair, never a new id with old data.
    #[test]
    fn set_remote_changes_id_and_data_together_or_not_at_all() {
        let root = tempfile::tempdir().unwrap();
        let st = State::open(root.path()).unwrap();
        st.set_remote("t", "r", "id1", "d1").unwrap();
        let raw = Connection::open(root.path().join(STATE_DIR).join("state.db")).unwrap();
        raw.execute_batch(
            "CREATE TRIGGER refuse_data BEFORE UPDATE OF remote_data ON runs
             BEGIN SELECT RAISE(ABORT, 'no'); END;",
        )
        .unwrap();
        assert!(st.set_remote("t", "r", "id2", "d2").is_err());
        let rec = st.run("t", "r").unwrap();
        assert_eq!(
            (rec.remote_id.as_deref(), rec.remote_data.as_deref()),
            (Some("id1"), Some("d1"))
        );
    }

    #[test]
    fn a_state_from_before_fingerprints_opens_and_gains_the_column() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(STATE_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        // The schema of the first release, with one run in it.
        let old = Connection::open(dir.join("state.db")).unwrap();
        old.execute_batch(
            "CREATE TABLE runs (
                target TEXT NOT NULL, run_id TEXT NOT NULL,
                remote_id TEXT, remote_data TEXT, status_sent TEXT,
                synced_seq INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated TEXT,
                PRIMARY KEY (target, run_id));
             CREATE TABLE done (
                target TEXT NOT NULL, run_id TEXT NOT NULL, item TEXT NOT NULL,
                PRIMARY KEY (target, run_id, item));
             INSERT INTO runs (target, run_id, remote_id, status_sent, synced_seq)
                VALUES ('t', 'r', 'remote-1', 'FINISHED', 7);",
        )
        .unwrap();
        drop(old);
        let s = State::open(root.path()).unwrap();
        let rec = s.run("t", "r").unwrap();
        assert_eq!(rec.remote_id.as_deref(), Some("remote-1"));
        assert_eq!(rec.synced_seq, 7);
        assert_eq!(rec.fingerprint, None);
        s.set_fingerprint("t", "r", "fp").unwrap();
        assert_eq!(s.run("t", "r").unwrap().fingerprint.as_deref(), Some("fp"));
        drop(s);
        // Opening it again (column already there) works too.
        let s = State::open(root.path()).unwrap();
        assert_eq!(s.run("t", "r").unwrap().fingerprint.as_deref(), Some("fp"));
    }

    /// Issue 22: reachability is kept per target; an outage keeps the last
    /// time the target answered and adds the next attempt, which a later
    /// answer clears.
    #[test]
    fn reachability_keeps_the_last_answer_through_an_outage() {
        let root = tempfile::tempdir().unwrap();
        let s = State::open(root.path()).unwrap();
        assert!(s.reachability().unwrap().is_empty());
        s.set_reachability("t", None, Some("2026-01-01T00:00:10Z"))
            .unwrap();
        let r = &s.reachability().unwrap()[0];
        assert_eq!(
            (r.last_reachable.as_deref(), r.next_attempt.as_deref()),
            (None, Some("2026-01-01T00:00:10Z"))
        );
        s.set_reachability("t", Some("2026-01-01T00:00:11Z"), None)
            .unwrap();
        let reached = s.reachability().unwrap()[0].last_reachable.clone();
        assert_eq!(reached.as_deref(), Some("2026-01-01T00:00:11Z"));
        assert_eq!(s.reachability().unwrap()[0].next_attempt, None);
        s.set_reachability("t", None, Some("2026-01-01T00:01:00Z"))
            .unwrap();
        let r = &s.reachability().unwrap()[0];
        assert_eq!(r.last_reachable, reached);
        assert_eq!(r.next_attempt.as_deref(), Some("2026-01-01T00:01:00Z"));
    }

    #[test]
    fn setting_a_value_again_writes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let s = State::open(root.path()).unwrap();
        s.set_status("t", "r", "RUNNING").unwrap();
        let changes = |s: &State| s.with(|c| Ok(c.total_changes())).unwrap();
        let before = changes(&s);
        s.set_status("t", "r", "RUNNING").unwrap();
        s.set_error("t", "r", None).unwrap();
        assert_eq!(changes(&s), before, "unchanged values were written");
        s.set_status("t", "r", "FINISHED").unwrap();
        assert_eq!(changes(&s), before + 1);
        assert_eq!(
            s.run("t", "r").unwrap().status_sent.as_deref(),
            Some("FINISHED")
        );
    }
}
