//! An in-memory target, so the engine can be tested without a server: it
//! keeps what a tracker would show and counts every request, and can be told
//! to fail requests (transiently) or to lose an answer after doing the work.
//! Like a real tracker, it shows each item once however often it is sent.

use super::{Remote, RemoteStatus, Snapshot, Target};
use crate::event::{MediaEvent, MetricEvent};
use crate::read::CallView;
use crate::sync::error::{SyncError, SyncResult};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

/// What the "server" shows of one run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Shown {
    /// The difflog run id it was created for.
    pub difflog_id: String,
    /// Whether run-level data arrived.
    pub meta: bool,
    /// Media digests.
    pub media: BTreeSet<String>,
    /// Calls whose table arrived.
    pub tables: BTreeSet<u32>,
    /// Calls finished (timings sent).
    pub finished: BTreeSet<u32>,
    /// Metrics as (key, value, timestamp ms).
    pub metrics: BTreeSet<(String, String, i64)>,
    /// The last status set.
    pub status: Option<RemoteStatus>,
}

/// The in-memory server's state.
#[derive(Debug, Default)]
pub struct Server {
    /// Runs by remote id.
    pub runs: BTreeMap<String, Shown>,
    /// Every request, by operation name, in order.
    pub requests: Vec<&'static str>,
    /// Fail the request with this (0-based) number transiently, doing
    /// nothing.
    pub fail_at: Option<usize>,
    /// Do the work of the request with this number, then lose its answer.
    pub lose_at: Option<usize>,
}

/// The in-memory target.
#[derive(Debug, Default)]
pub struct Memory {
    /// The server; tests read and change it.
    pub server: Mutex<Server>,
    /// Its key (default `memory://test`): several in-memory targets are
    /// several targets to the engine and the state.
    pub name: Option<String>,
}

impl Memory {
    /// An in-memory target with its own key.
    pub fn named(key: &str) -> Memory {
        Memory {
            name: Some(key.to_string()),
            ..Memory::default()
        }
    }

    fn request(&self, op: &'static str, work: impl FnOnce(&mut Server)) -> SyncResult<()> {
        let mut s = self.server.lock().unwrap_or_else(|p| p.into_inner());
        let n = s.requests.len();
        s.requests.push(op);
        if s.fail_at == Some(n) {
            return Err(SyncError::transient(format!("{op}: injected failure")));
        }
        work(&mut s);
        if s.lose_at == Some(n) {
            return Err(SyncError::transient(format!("{op}: answer lost")));
        }
        Ok(())
    }

    /// A request about one remote run: `work` changes what it shows.
    fn on_run(
        &self,
        op: &'static str,
        remote: &Remote,
        work: impl FnOnce(&mut Shown),
    ) -> SyncResult<()> {
        self.request(op, |s| work(s.runs.entry(remote.id.clone()).or_default()))
    }

    /// A copy of what the server shows.
    pub fn runs(&self) -> BTreeMap<String, Shown> {
        self.server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .runs
            .clone()
    }

    /// Requests made so far.
    pub fn requests(&self) -> usize {
        self.server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
            .len()
    }
}

impl Target for Memory {
    fn key(&self) -> &str {
        self.name.as_deref().unwrap_or("memory://test")
    }

    async fn open_run(&self, run: &Snapshot<'_>, known: Option<&Remote>) -> SyncResult<Remote> {
        if let Some(k) = known {
            return Ok(k.clone());
        }
        let id = run.meta.id.clone();
        let mut found = None;
        self.request("find_or_create", |s| {
            let existing = s.runs.iter().find(|(_, r)| r.difflog_id == id);
            let remote_id = match existing {
                Some((rid, _)) => rid.clone(),
                None => {
                    let rid = format!("remote-{}", s.runs.len() + 1);
                    s.runs.insert(
                        rid.clone(),
                        Shown {
                            difflog_id: id.clone(),
                            ..Shown::default()
                        },
                    );
                    rid
                }
            };
            found = Some(remote_id);
        })?;
        Ok(Remote {
            id: found.unwrap_or_default(),
            data: "{}".into(),
        })
    }

    async fn sync_meta(&self, remote: &Remote, _run: &Snapshot<'_>) -> SyncResult<()> {
        self.on_run("meta", remote, |r| r.meta = true)
    }

    async fn upload_media(
        &self,
        remote: &Remote,
        media: &MediaEvent,
        _file: &Path,
    ) -> SyncResult<()> {
        self.on_run("media", remote, |r| {
            r.media.insert(media.digest.clone());
        })
    }

    async fn upload_table(
        &self,
        remote: &Remote,
        _run: &Snapshot<'_>,
        call: &CallView,
    ) -> SyncResult<()> {
        self.on_run("table", remote, |r| {
            r.tables.insert(call.started.call);
        })
    }

    async fn finish_calls(
        &self,
        remote: &mut Remote,
        _run: &Snapshot<'_>,
        calls: &[&CallView],
    ) -> SyncResult<()> {
        self.on_run("finish_calls", remote, |r| {
            r.finished.extend(calls.iter().map(|c| c.started.call));
        })
    }

    async fn log_metrics(
        &self,
        remote: &mut Remote,
        _run: &Snapshot<'_>,
        metrics: &[(MetricEvent, i64)],
    ) -> SyncResult<()> {
        self.on_run("metrics", remote, |r| {
            for (m, ts) in metrics {
                r.metrics.insert((m.name.clone(), m.value.to_string(), *ts));
            }
        })
    }

    async fn set_status(
        &self,
        remote: &mut Remote,
        _run: &Snapshot<'_>,
        status: RemoteStatus,
        _end_ms: Option<i64>,
    ) -> SyncResult<()> {
        self.on_run("status", remote, |r| r.status = Some(status))
    }

    fn network_changed(&self) {}

    fn last_answer(&self) -> Option<std::time::SystemTime> {
        None
    }
}
