//! The folded view of a run: what `show`, `ls`, the report and the sync
//! targets want (calls with their tables, merged config, the workflow list),
//! computed once from the typed records.

use crate::event::{
    CallFinished, CallStarted, CallStatus, Cell, Event, MediaEvent, MetricEvent, PipelineEvent,
    Record, RowEvent, RunFinished,
};
use crate::format::names;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One pipeline call with everything recorded for it.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    /// The `call_started` record.
    pub started: CallStarted,
    /// Rows of the call's table, in log order.
    pub rows: Vec<RowEvent>,
    /// Media recorded for the call.
    pub media: Vec<MediaEvent>,
    /// The `call_finished` record, if the call finished.
    pub finished: Option<CallFinished>,
    /// When the call finished (the record's timestamp).
    pub finished_ts: Option<String>,
}

impl CallView {
    /// Whether the call finished successfully.
    pub fn ok(&self) -> bool {
        matches!(&self.finished, Some(f) if f.status == CallStatus::Ok)
    }

    /// The output size: the call's `width` × `height` params, else the
    /// size of its first generated image or video (pipelines without size
    /// arguments: unconditional, class-conditional, image variation).
    pub fn size(&self) -> Option<(u64, u64)> {
        let p = &self.started.params;
        if let (Some(w), Some(h)) = (
            p.get("width").and_then(Value::as_u64),
            p.get("height").and_then(Value::as_u64),
        ) {
            return Some((w, h));
        }
        self.media
            .iter()
            .find(|m| {
                m.key
                    .split_once('/')
                    .is_some_and(|(column, _)| names::is_generated(column))
            })
            .map(|m| (u64::from(m.width), u64::from(m.height)))
    }
}

/// [`RunView::scheduler_name`] from a call's params and its pipeline.
pub fn scheduler_name(
    params: &Map<String, Value>,
    pipeline: Option<&PipelineEvent>,
) -> Option<String> {
    let plain = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    params
        .get("scheduler")
        .filter(|v| !v.is_null())
        .map(plain)
        .or_else(|| {
            let s = &pipeline?.scheduler;
            ["name", "kind", "class", "_class_name"]
                .iter()
                .find_map(|k| s.get(*k).filter(|v| !v.is_null()).map(plain))
        })
}

/// A run's records folded into their meaning.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunView {
    /// Config, merged over all `config` events.
    pub config: Map<String, Value>,
    /// Pipelines by index.
    pub pipelines: BTreeMap<u32, PipelineEvent>,
    /// Calls by number.
    pub calls: BTreeMap<u32, CallView>,
    /// Every media event, in log order.
    pub media: Vec<MediaEvent>,
    /// Metrics, in log order.
    pub metrics: Vec<MetricEvent>,
    /// The `run_finished` record, if any.
    pub finished: Option<RunFinished>,
}

impl RunView {
    /// Folds `records` (a valid prefix of a log).
    pub fn build(records: &[Record]) -> RunView {
        let mut v = RunView::default();
        for rec in records {
            match &rec.event {
                Event::Config(c) => {
                    for (k, val) in &c.values {
                        v.config.insert(k.clone(), val.clone());
                    }
                }
                Event::Pipeline(p) => {
                    v.pipelines.insert(p.pipeline, PipelineEvent::clone(p));
                }
                Event::CallStarted(c) => {
                    v.calls.insert(
                        c.call,
                        CallView {
                            started: c.clone(),
                            rows: Vec::new(),
                            media: Vec::new(),
                            finished: None,
                            finished_ts: None,
                        },
                    );
                }
                Event::Media(m) => {
                    if let Some(call) = m.call.and_then(|n| v.calls.get_mut(&n)) {
                        call.media.push(m.clone());
                    }
                    v.media.push(m.clone());
                }
                Event::Row(r) => {
                    if let Some(call) = v.calls.get_mut(&r.call) {
                        call.rows.push(r.clone());
                    }
                }
                Event::CallFinished(f) => {
                    if let Some(call) = v.calls.get_mut(&f.call) {
                        call.finished = Some(f.clone());
                        call.finished_ts = Some(rec.ts.clone());
                    }
                }
                Event::Metric(m) => v.metrics.push(m.clone()),
                Event::RunFinished(f) => v.finished = Some(f.clone()),
                Event::RunStarted(_) | Event::RunResumed(_) => {}
            }
        }
        v
    }

    /// The scheduler a call ran with, by name: its own `scheduler` param
    /// (difflog's pipelines), else its pipeline's scheduler record
    /// (`name`, as Python's recorder writes it, or `kind`/`class`/
    /// `_class_name`).
    pub fn scheduler_name(&self, call: &CallView) -> Option<String> {
        scheduler_name(
            &call.started.params,
            self.pipelines.get(&call.started.pipeline),
        )
    }

    /// Number of generated images stored over all calls.
    pub fn image_count(&self) -> usize {
        self.rows_with(names::GENERATED_IMAGE)
    }

    /// Number of generated videos stored over all calls.
    pub fn video_count(&self) -> usize {
        self.rows_with(names::GENERATED_VIDEO)
    }

    /// Rows over all calls whose `column` holds stored media: a row whose
    /// media could not be stored (a full disk) holds a null cell instead.
    fn rows_with(&self, column: &str) -> usize {
        self.calls
            .values()
            .flat_map(|c| &c.rows)
            .filter(|r| {
                r.cells
                    .iter()
                    .any(|c| matches!(c, Cell::Image { column: col, .. } if col == column))
            })
            .count()
    }

    /// The pipeline description as the workflow shows it.
    pub fn pipeline_json(&self, index: u32) -> Value {
        match self.pipelines.get(&index) {
            Some(p) => serde_json::to_value(p).unwrap_or(Value::Null),
            None => Value::Null,
        }
    }

    /// The `workflow` list as W&B's autolog builds it in the run config: one
    /// entry per call, `{pipeline, params, stage}`.
    ///
    /// Besides difflog's own fields it carries every key autolog gives, in
    /// autolog's shape, so filters written for W&B's autolog runs match:
    /// `pipeline["pipeline-name"]` (the class) and `params["generator"]`
    /// (`{"seed", "device"}`: autolog turns the generator into its seed).
    pub fn workflow(&self) -> Vec<Value> {
        self.calls
            .values()
            .map(|c| {
                let mut pipeline = self.pipeline_json(c.started.pipeline);
                let device = pipeline.get("device").cloned().unwrap_or(Value::Null);
                if let Value::Object(p) = &mut pipeline {
                    // The keys of a diffusers pipeline's config that autolog
                    // records and W&B users filter on.
                    if let Some(class) = p.get("class").cloned() {
                        p.insert("pipeline-name".into(), class.clone());
                        p.insert("_class_name".into(), class);
                    }
                    if let Some(id) = p.get("model_id").cloned() {
                        p.insert("_name_or_path".into(), id);
                    }
                }
                let mut params = c.started.params.clone();
                // Only where the call had a seed: a call without one (a
                // Python call that passed no generator) is not given a
                // `{seed: null}` it never had.
                let seed = params
                    .get("seed")
                    .filter(|s| !s.is_null())
                    .cloned()
                    .or_else(|| c.started.seeds.first().map(|s| json!(s)));
                if let Some(seed) = seed {
                    params
                        .entry("generator")
                        .or_insert_with(|| json!({"seed": seed, "device": device}));
                }
                json!({
                    "pipeline": pipeline,
                    "params": params,
                    "stage": c.started.stage,
                })
            })
            .collect()
    }
}
