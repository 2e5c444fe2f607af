//! What a difflog run looks like in W&B, as pure functions of its event
//! log: run names, file paths, table files, history lines, the summary and
//! the run files W&B's client writes.

use super::*;
use crate::format::names;

/// The W&B run id of a difflog run: its id in lower case, with every
/// character W&B does not take in run ids (`/ \ # ? % :` and others) turned
/// into `-`. The same difflog run always gets the same W&B run.
pub fn run_name(difflog_id: &str) -> String {
    difflog_id
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// The W&B run name of the `n`th run made for a difflog run whose earlier
/// W&B runs were deleted (`--recreate-deleted`): `<name>-<n>`, within W&B's
/// 64 characters.
pub(super) fn recreated_name(base: &str, n: usize) -> String {
    let suffix = format!("-{n}");
    let keep: String = base.chars().take(64 - suffix.len()).collect();
    format!("{keep}{suffix}")
}

/// Where an image goes in the W&B run.
pub(super) fn image_path(m: &MediaEvent) -> String {
    format!("media/images/{}.{}", m.digest, m.format)
}

/// An image as W&B references it from history and tables.
pub(super) fn image_file(m: &MediaEvent) -> Value {
    let mut v = json!({
        "_type": "image-file", "path": image_path(m), "sha256": m.digest, "size": m.bytes,
        "format": m.format, "width": m.width, "height": m.height,
    });
    if let Some(c) = &m.caption {
        v["caption"] = json!(c);
    }
    v
}

/// Where a media file goes in the W&B run: a video's MP4 or GIF under
/// `media/videos/` (named by the recorded file's digest, so a GIF's name
/// is known before it is made), an image under `media/images/`.
pub(super) fn media_path(m: &MediaEvent, gifs: &Gifs) -> String {
    match gifs.info(m) {
        Some(v) => format!("media/videos/{}.{}", m.digest, v.ext),
        None => image_path(m),
    }
}

/// A media file as W&B references it from history and tables: a video as
/// the `video-file` `wandb.Video` logs (its MP4's or GIF's digest, size
/// and picture size, and the caption), an image as an `image-file`.
pub(super) fn media_file(m: &MediaEvent, gifs: &Gifs) -> Value {
    let Some(gif) = gifs.info(m) else {
        return image_file(m);
    };
    let mut v = json!({
        "_type": "video-file", "path": media_path(m, gifs), "sha256": gif.sha256,
        "size": gif.size, "width": gif.width, "height": gif.height,
    });
    if let Some(c) = &m.caption {
        v["caption"] = json!(c);
    }
    v
}

/// Whether a call's media is what the call made (its `Generated-Image` or
/// `Generated-Video`), which autolog logs to the media panel; what it was
/// given (an input image, a mask, an input video) shows only in its table.
pub(super) fn is_output(m: &MediaEvent) -> bool {
    names::is_generated(m.key.split('/').next().unwrap_or_default())
}

/// A table column as autolog names it: difflog's `Input-Image` is the
/// `Source-Image` of autolog's image-to-image and inpainting tables.
pub(super) fn column_name(column: &str) -> &str {
    match column {
        names::INPUT_IMAGE => names::SOURCE_IMAGE,
        c => c,
    }
}

/// A call's table as a W&B table file: bytes, run path and reference.
pub(super) struct TableFile {
    pub(super) path: String,
    pub(super) bytes: Vec<u8>,
    pub(super) reference: Value,
}

pub(super) fn table_file(call: &CallView, gifs: &Gifs) -> TableFile {
    let columns = &call.started.columns;
    let mut data = Vec::new();
    for row in &call.rows {
        let cells: Vec<Value> = columns
            .iter()
            .map(|col| match row.cells.iter().find(|c| c.column() == col) {
                Some(Cell::Text { value, .. }) => json!(value),
                Some(Cell::Number { value, .. }) => Value::Number(value.clone()),
                Some(Cell::Image { digest, .. }) => call
                    .media
                    .iter()
                    .find(|m| &m.digest == digest)
                    .map(|m| {
                        let mut v = media_file(m, gifs);
                        // A cell shows the image; the caption is in the row.
                        if let Value::Object(o) = &mut v {
                            o.remove("caption");
                        }
                        v
                    })
                    .unwrap_or(Value::Null),
                // Autolog writes an empty string for an absent value (no
                // negative prompt), not null.
                Some(Cell::Null { .. }) | None => json!(""),
            })
            .collect();
        data.push(Value::Array(cells));
    }
    let (ncols, nrows) = (columns.len(), data.len());
    let names: Vec<&str> = columns.iter().map(|c| column_name(c)).collect();
    let table = json!({
        "_type": "table", "columns": names, "data": data, "ncols": ncols, "nrows": nrows,
    });
    let bytes = serde_json::to_vec(&table).unwrap_or_default();
    let sha = sha256_hex(&bytes);
    let path = format!(
        "media/table/Result-Table/{}_{}.table.json",
        call.started.stage,
        &sha[..20]
    );
    let reference = json!({
        "_type": "table-file", "path": path, "sha256": sha, "size": bytes.len(),
        "ncols": ncols, "nrows": nrows,
    });
    TableFile {
        path,
        bytes,
        reference,
    }
}

/// One history line: its values, the run files it references, and the call
/// it belongs to (its files are uploaded when that call is).
pub(super) struct Line {
    pub(super) value: Map<String, Value>,
    pub(super) files: Vec<String>,
    pub(super) call: Option<u32>,
}

/// Autolog's caption for an image of a pipeline with two prompts:
/// `Prompt-1: …\nPrompt-2: …` (from the image's row); `None` otherwise.
pub(super) fn sdxl_caption(call: &CallView, digest: &str) -> Option<String> {
    if !call.started.columns.iter().any(|c| c == names::PROMPT_2) {
        return None;
    }
    let row = call.rows.iter().find(|r| {
        r.cells
            .iter()
            .any(|c| matches!(c, Cell::Image { digest: d, .. } if d == digest))
    })?;
    let text = |col: &str| {
        row.cells.iter().find_map(|c| match c {
            Cell::Text { column, value } if column == col => Some(value.clone()),
            _ => None,
        })
    };
    Some(format!(
        "Prompt-1: {}\nPrompt-2: {}",
        text(names::PROMPT).unwrap_or_default(),
        text(names::PROMPT_2).unwrap_or_default()
    ))
}

/// The run's W&B config: each key as `{"value": …}`, autolog's
/// `workflow` list, and where the run came from (`difflog`).
pub(super) fn run_config(run: &Snapshot<'_>) -> Map<String, Value> {
    let mut config = Map::new();
    for (k, v) in &run.view.config {
        config.insert(k.clone(), json!({"value": v}));
    }
    config.insert(
        "workflow".into(),
        json!({"value": Value::Array(run.view.workflow())}),
    );
    config.insert(
        "difflog".into(),
        json!({"value": {"run_id": run.meta.id, "host": run.meta.host, "version": run.meta.difflog_version}}),
    );
    config
}

/// The run files W&B's client writes beside the history: `wandb-metadata.json`
/// (what recorded the run, where and when, on which device), `config.yaml`
/// (the config in W&B's YAML form; JSON values are valid YAML) and
/// `requirements.txt` (here: difflog's version and every model with its
/// revision and weights digest, what reproducing the run needs).
pub(super) fn run_files(run: &Snapshot<'_>, config: &Map<String, Value>) -> Vec<(String, Vec<u8>)> {
    let pipelines: Vec<_> = run.view.pipelines.values().collect();
    let devices: std::collections::BTreeSet<&str> =
        pipelines.iter().map(|p| p.device.as_str()).collect();
    let program = run
        .view
        .config
        .get("command")
        .and_then(Value::as_str)
        .unwrap_or("difflog");
    let metadata = json!({
        "program": program,
        "host": run.meta.host,
        "startedAt": run.meta.created,
        "difflog_version": run.meta.difflog_version,
        "devices": devices,
        "gpu": devices.iter().find(|d| d.starts_with("cuda")),
        "models": pipelines.iter().map(|p| json!({
            "class": p.class, "model_id": p.model_id, "revision": p.revision,
            "weights_digest": p.weights_digest, "dtype": p.dtype, "device": p.device,
        })).collect::<Vec<_>>(),
    });
    let mut yaml = String::from("wandb_version: 1\n");
    for (k, v) in config {
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        yaml.push_str(&format!(
            "\n{}:\n  desc: null\n  value: {}\n",
            json!(k),
            value
        ));
    }
    let mut req = format!("difflog=={}\n", run.meta.difflog_version);
    for p in &pipelines {
        req.push_str(&format!(
            "# model {} ({}) revision {} weights {}\n",
            p.model_id,
            p.class,
            p.revision.as_deref().unwrap_or("-"),
            p.weights_digest.as_deref().unwrap_or("-")
        ));
    }
    vec![
        (
            "wandb-metadata.json".into(),
            serde_json::to_vec_pretty(&metadata).unwrap_or_default(),
        ),
        ("config.yaml".into(), yaml.into_bytes()),
        ("requirements.txt".into(), req.into_bytes()),
    ]
}

/// Every history line the log gives, in order (see the module comment).
pub(super) fn history_lines(run: &Snapshot<'_>, gifs: &Gifs) -> Vec<Line> {
    let start = rfc3339_ms(&run.meta.created);
    let mut out: Vec<Line> = Vec::new();
    // Each image line carries the time its image was logged (autolog logs
    // them one by one), not the time its call finished.
    let media_ts: std::collections::HashMap<(Option<u32>, &str), i64> = run
        .records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Media(m) => Some(((m.call, m.digest.as_str()), rfc3339_ms(&r.ts))),
            _ => None,
        })
        .collect();
    let mut push = |mut value: Map<String, Value>, files: Vec<String>, call, ts: i64| {
        value.insert("_step".into(), json!(out.len()));
        value.insert(
            "_runtime".into(),
            json!((ts - start).max(0) as f64 / 1000.0),
        );
        value.insert("_timestamp".into(), json!(ts as f64 / 1000.0));
        out.push(Line { value, files, call });
    };
    for r in run.records {
        let ts = rfc3339_ms(&r.ts);
        match &r.event {
            Event::Media(m) if m.call.is_none() => {
                let mut v = Map::new();
                v.insert(m.key.clone(), media_file(m, gifs));
                push(v, vec![media_path(m, gifs)], None, ts);
            }
            Event::Metric(m) => {
                let mut v = Map::new();
                v.insert(m.name.clone(), json!(m.value));
                push(v, Vec::new(), None, ts);
            }
            Event::CallFinished(f) => {
                let Some(call) = run.view.calls.get(&f.call) else {
                    continue;
                };
                // Generated images and videos go to the media panel, one
                // line each, as autolog logs them; what the call was given
                // only in the table's cells (autolog logs no line for it),
                // so its files go with the table's line.
                let mut input_files = Vec::new();
                for m in &call.media {
                    if !is_output(m) {
                        input_files.push(media_path(m, gifs));
                        continue;
                    }
                    let mut image = media_file(m, gifs);
                    if let Some(c) = sdxl_caption(call, &m.digest) {
                        image["caption"] = json!(c);
                    }
                    let at = media_ts
                        .get(&(m.call, m.digest.as_str()))
                        .copied()
                        .unwrap_or(ts);
                    let mut v = Map::new();
                    v.insert(m.key.clone(), image);
                    push(v, vec![media_path(m, gifs)], Some(f.call), at);
                }
                let table = table_file(call, gifs);
                let key = names::table(&call.started.stage);
                let mut reference = table.reference;
                for (k, val) in artifact::artifact_fields(&run_name(&run.meta.id), &key) {
                    reference[k] = val;
                }
                let mut v = Map::new();
                v.insert(key, reference);
                for (phase, ms) in &f.timings_ms {
                    if ms.is_number() {
                        v.insert(format!("timings/{phase}_ms"), ms.clone());
                    }
                }
                let mut files = vec![table.path];
                files.extend(input_files);
                push(v, files, Some(f.call), ts);
            }
            _ => {}
        }
    }
    out
}

/// The largest summary line sent: W&B's client (`core/internal/filestream`)
/// drops a summary over its line limit rather than have the server refuse
/// the request (a run with many thousands of calls has that many keys).
pub(super) const MAX_SUMMARY_BYTES: usize = (2 << 20) - (100 << 10);

/// The summary as W&B keeps it: each key's last value, and `_wandb.runtime`
/// (whole seconds, as W&B's client writes it). `None` when it is too large.
pub(super) fn summary_line(lines: &[Line]) -> Option<String> {
    let mut summary = Map::new();
    for l in lines {
        for (k, v) in &l.value {
            summary.insert(k.clone(), v.clone());
        }
    }
    let runtime = summary
        .get("_runtime")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    summary.insert("_wandb".into(), json!({"runtime": runtime.floor() as i64}));
    let text = Value::Object(summary).to_string();
    if text.len() > MAX_SUMMARY_BYTES {
        tracing::warn!(
            "W&B summary of {} bytes is over the {MAX_SUMMARY_BYTES}-byte line limit; not sent (as W&B's client does)",
            text.len()
        );
        return None;
    }
    Some(text)
}

/// Splits W&B's `uploadHeaders` (`"Name:value"` strings) into the headers
/// an upload must carry.
pub(super) fn headers_of(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}
