//! Synthetic roots for the scale benchmark: many finished runs with a given
//! number of events each, written straight in the run format (no encoding,
//! no media), so that 10,000 runs and a million events take seconds.
//!
//! Each run holds a `run_started`, a `config`, a `pipeline`, calls of three
//! events each (`call_started`, a text-only `row`, `call_finished`), metrics
//! to fill up to the requested count, and `run_finished`. Every record is a
//! valid format-v1 record, so the readers do the work they do on real runs.

use crate::error::{Error, Result};
use crate::event::encode_record;
use crate::event::{
    CallFinished, CallStarted, CallStatus, Cell, ConfigEvent, Event, MetricEvent, PipelineEvent,
    RowEvent, RunFinished, RunStarted, RunStatus,
};
use crate::format::names;
use crate::format::{RunMeta, EVENTS_LOG, FORMAT_VERSION, RUN_JSON};
use serde::Serialize;
use serde_json::{json, Map};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone)]
pub struct ScaleRoot {
    /// Root to create the runs in.
    pub root: PathBuf,
    /// Number of runs.
    pub runs: usize,
    /// Events per run (at least 7).
    pub events_per_run: usize,
    /// Calls per run.
    pub calls_per_run: usize,
    /// Targets every run is recorded as uploaded to, in the root's sync
    /// state (as `difflog-sync upload` leaves it), for `status` over a
    /// fleet of several targets; 0: none (runs uploaded nowhere).
    pub targets: usize,
}

/// What was generated.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleFigures {
    /// Runs written.
    pub runs: usize,
    /// Events written in all.
    pub events: usize,
    /// Bytes of event logs in all.
    pub log_bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Seconds of that spent writing the sync state (`targets` > 0).
    pub state_seconds: f64,
}

fn events_of(run_id: &str, i: usize, opts: &ScaleRoot) -> Vec<Event> {
    let calls = opts
        .calls_per_run
        .min(opts.events_per_run.saturating_sub(4) / 3);
    let mut ev = vec![
        Event::RunStarted(RunStarted {
            run_id: run_id.to_string(),
            format: FORMAT_VERSION,
            pid: 1,
            host: "bench".into(),
            difflog_version: env!("CARGO_PKG_VERSION").into(),
            run_json_sha256: None,
        }),
        Event::Config(ConfigEvent {
            values: json!({"sweep": i % 17, "sampler": {"steps": 20}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }),
        Event::Pipeline(Box::new(PipelineEvent {
            pipeline: 1,
            class: "SyntheticPipeline".into(),
            model_id: "bench".into(),
            revision: None,
            weights_digest: None,
            dtype: "f32".into(),
            device: "cpu".into(),
            components: Map::new(),
            scheduler: json!({"name": "ddim"}),
        })),
    ];
    let columns = vec![names::PROMPT.to_string(), names::SEED.to_string()];
    for c in 1..=calls as u32 {
        let stage = names::stage(c);
        ev.push(Event::CallStarted(CallStarted {
            call: c,
            stage: stage.clone(),
            pipeline: 1,
            params: json!({"prompt": format!("prompt {i}/{c}")})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            seeds: vec![u64::from(c)],
            columns: columns.clone(),
        }));
        ev.push(Event::Row(RowEvent {
            call: c,
            table: names::table(&stage),
            index: 0,
            cells: vec![
                Cell::Text {
                    column: names::PROMPT.into(),
                    value: format!("prompt {i}/{c}"),
                },
                Cell::Number {
                    column: names::SEED.into(),
                    value: c.into(),
                },
            ],
        }));
        ev.push(Event::CallFinished(CallFinished {
            call: c,
            status: CallStatus::Ok,
            error: None,
            images: 0,
            timings_ms: json!({"total": 12.5})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }));
    }
    let mut step = 0u64;
    while ev.len() + 1 < opts.events_per_run.max(7) {
        ev.push(Event::Metric(MetricEvent {
            name: "loss".into(),
            value: 1.0 / (step as f64 + 1.0),
            step: Some(step),
        }));
        step += 1;
    }
    ev.push(Event::RunFinished(RunFinished {
        status: RunStatus::Finished,
        error: None,
        crashed: false,
    }));
    ev
}

/// Writes the runs; ids sort in creation order and are valid run ids.
pub fn generate(opts: &ScaleRoot) -> Result<ScaleFigures> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&opts.root).map_err(|e| Error::io(&opts.root, "create root", e))?;
    let (mut events, mut log_bytes) = (0usize, 0u64);
    for i in 0..opts.runs {
        let id = format!("20260101T000000.000Z-{i:06x}");
        let dir = opts.root.join(&id);
        let media = dir.join("media");
        std::fs::create_dir_all(&media).map_err(|e| Error::io(&media, "create", e))?;
        let ts = "2026-01-01T00:00:00.000Z";
        let meta = RunMeta {
            format: FORMAT_VERSION,
            id: id.clone(),
            project: "scale".into(),
            name: format!("scale {i}"),
            tags: Vec::new(),
            host: "bench".into(),
            created: ts.into(),
            difflog_version: env!("CARGO_PKG_VERSION").into(),
        };
        let meta_path = dir.join(RUN_JSON);
        let text = serde_json::to_vec_pretty(&meta).map_err(|e| Error::encode("run.json", e))?;
        std::fs::write(&meta_path, text).map_err(|e| Error::io(&meta_path, "write", e))?;
        let mut buf = Vec::new();
        for (seq, ev) in events_of(&id, i, opts).iter().enumerate() {
            let line = encode_record(seq as u64 + 1, ts, ev)
                .map_err(|e| Error::encode("a synthetic image", e))?;
            buf.extend_from_slice(&line);
            events += 1;
        }
        log_bytes += buf.len() as u64;
        let log = dir.join(EVENTS_LOG);
        std::fs::File::create(&log)
            .and_then(|mut f| f.write_all(&buf))
            .map_err(|e| Error::io(&log, "write", e))?;
    }
    let state_started = std::time::Instant::now();
    if opts.targets > 0 {
        seed_state(opts)?;
    }
    Ok(ScaleFigures {
        runs: opts.runs,
        events,
        log_bytes,
        seconds: started.elapsed().as_secs_f64(),
        state_seconds: state_started.elapsed().as_secs_f64(),
    })
}

/// The name of bench target `k` (a server that does not exist: `status`
/// reads the state only).
pub fn target_key(k: usize) -> String {
    format!("mlflow+http://bench-target-{k}.invalid")
}

/// Records every run as completely uploaded to each bench target: its
/// remote run, every call done, the status and the log position sent.
fn seed_state(opts: &ScaleRoot) -> Result<()> {
    let state = crate::sync::state::State::open(&opts.root)?;
    let calls = opts
        .calls_per_run
        .min(opts.events_per_run.saturating_sub(4) / 3);
    let items: Vec<String> = (1..=calls)
        .flat_map(|c| [format!("call:{c}"), format!("table:{c}")])
        .collect();
    let seq = opts.events_per_run.max(7) as u64;
    for k in 0..opts.targets {
        let key = target_key(k);
        for i in 0..opts.runs {
            let id = format!("20260101T000000.000Z-{i:06x}");
            state.set_remote(&key, &id, &format!("bench{k:02}{i:06x}"), "{}")?;
            state.mark_done_many(&key, &id, &items)?;
            state.set_status(&key, &id, "FINISHED")?;
            state.set_synced_seq(&key, &id, seq)?;
        }
    }
    Ok(())
}

/// Where [`generate`] puts run `i` (for tests).
pub fn run_path(root: &Path, i: usize) -> PathBuf {
    root.join(format!("20260101T000000.000Z-{i:06x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_runs_read_back_finished_with_the_requested_events() {
        let d = tempfile::tempdir().unwrap();
        let f = generate(&ScaleRoot {
            root: d.path().to_path_buf(),
            runs: 3,
            events_per_run: 100,
            calls_per_run: 4,
            targets: 2,
        })
        .unwrap();
        assert_eq!((f.runs, f.events), (3, 300));
        // Every run is complete at both targets, as after an upload.
        let state = crate::sync::state::State::open_for_reading(d.path()).unwrap();
        let id = "20260101T000000.000Z-000002";
        assert_eq!(state.targets_of(id).unwrap().len(), 2);
        let rec = state.run(&target_key(1), id).unwrap();
        assert_eq!(rec.status_sent.as_deref(), Some("FINISHED"));
        assert_eq!(state.count_done(&target_key(0), id, "call:").unwrap(), 4);
        let run = crate::read::RunDir::open(run_path(d.path(), 2)).unwrap();
        assert_eq!(run.records().len(), 100);
        assert_eq!(run.state(), crate::read::RunState::Finished);
        assert_eq!(run.view().calls.len(), 4);
    }
}
