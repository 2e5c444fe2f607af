//! The typed events of a run's event log (format v1).
//!
//! These types are the contract between the recorder, which writes them, and
//! every reader (sync, report, verify). Their JSON shape is specified by
//! `schemas/event.schema.json`; a field added here must be added there, and a
//! field may only be added as optional within format v1.
//!
//! The framing of a record is here too: one record per line,
//! `CCCCCCCC {json}\n`, where `CCCCCCCC` is the CRC-32C of the JSON bytes in
//! lower-case hex and the JSON is `{"seq":N,"ts":"…","kind":"…","data":{…}}`.
//! A line is self-delimiting (JSON text never holds a raw newline),
//! checksummed, and readable with `cut -c10- events.log | jq`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// One event of the log with its envelope: sequence number and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Sequence number: 1 for the first record, +1 for each next one.
    pub seq: u64,
    /// When the event happened, RFC 3339 UTC with microseconds.
    pub ts: String,
    /// The event itself.
    pub event: Event,
}

/// Every kind of event a run's log can hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A writer created the run.
    RunStarted(RunStarted),
    /// A writer reopened a run that had no writer (after a crash) to append.
    RunResumed(RunResumed),
    /// Run-level settings, merged in log order (later keys win).
    Config(ConfigEvent),
    /// A pipeline instance, described once per run before its first call
    /// (boxed: it is the largest event and the rarest, and every record
    /// read moves an `Event`).
    Pipeline(Box<PipelineEvent>),
    /// A pipeline call began.
    CallStarted(CallStarted),
    /// A media file was stored under `media/`.
    Media(MediaEvent),
    /// One row of a call's table.
    Row(RowEvent),
    /// A pipeline call ended (successfully or not).
    CallFinished(CallFinished),
    /// A free-form scalar.
    Metric(MetricEvent),
    /// The run ended.
    RunFinished(RunFinished),
}

impl Event {
    /// The `kind` string of this event in the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted(_) => "run_started",
            Event::RunResumed(_) => "run_resumed",
            Event::Config(_) => "config",
            Event::Pipeline(_) => "pipeline",
            Event::CallStarted(_) => "call_started",
            Event::Media(_) => "media",
            Event::Row(_) => "row",
            Event::CallFinished(_) => "call_finished",
            Event::Metric(_) => "metric",
            Event::RunFinished(_) => "run_finished",
        }
    }

    /// The payload as a JSON value (the record's `data`).
    pub fn data(&self) -> serde_json::Result<Value> {
        match self {
            Event::RunStarted(e) => serde_json::to_value(e),
            Event::RunResumed(e) => serde_json::to_value(e),
            Event::Config(e) => serde_json::to_value(e),
            Event::Pipeline(e) => serde_json::to_value(e),
            Event::CallStarted(e) => serde_json::to_value(e),
            Event::Media(e) => serde_json::to_value(e),
            Event::Row(e) => serde_json::to_value(e),
            Event::CallFinished(e) => serde_json::to_value(e),
            Event::Metric(e) => serde_json::to_value(e),
            Event::RunFinished(e) => serde_json::to_value(e),
        }
    }

    /// Builds an event from its `kind` and the JSON text of its `data`.
    pub fn from_kind_and_data(kind: &str, data: &str) -> Result<Event, String> {
        fn parse<T: for<'de> Deserialize<'de>>(data: &str) -> Result<T, String> {
            serde_json::from_str(data).map_err(|e| e.to_string())
        }
        Ok(match kind {
            "run_started" => Event::RunStarted(parse(data)?),
            "run_resumed" => Event::RunResumed(parse(data)?),
            "config" => Event::Config(parse(data)?),
            "pipeline" => Event::Pipeline(parse(data)?),
            "call_started" => Event::CallStarted(parse(data)?),
            "media" => Event::Media(parse(data)?),
            "row" => Event::Row(parse(data)?),
            "call_finished" => Event::CallFinished(parse(data)?),
            "metric" => Event::Metric(parse(data)?),
            "run_finished" => Event::RunFinished(parse(data)?),
            other => return Err(format!("unknown event kind {other:?}")),
        })
        .and_then(|e| e.check().map(|()| e))
    }

    /// Checks the fields later layers build paths and upload names from: a
    /// media record's digest (64 lower-case hex), format (one difflog
    /// writes) and path (the one its digest and format give), and the same
    /// for every image cell. A run directory can come from anyone, so a
    /// record that fails this is damage, even with a valid checksum.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Event::Media(m) => check_media_ref(&m.digest, &m.format, &m.path)
                .and_then(|()| m.video.as_ref().map_or(Ok(()), Video::check))
                .and_then(|()| match (&m.video, m.format.as_str()) {
                    (None, VIDEO_FORMAT) => {
                        Err("an MP4 media record that says nothing of the video".into())
                    }
                    _ => Ok(()),
                }),
            Event::Row(r) => r.cells.iter().try_for_each(|c| match c {
                Cell::Image {
                    digest,
                    path,
                    video,
                    ..
                } => path
                    .rsplit_once('.')
                    .map_or(
                        Err(format!("media path {path:?} has no extension")),
                        |(_, ext)| check_media_ref(digest, ext, path),
                    )
                    .and_then(|()| video.as_ref().map_or(Ok(()), Video::check))
                    .map_err(|e| format!("cell {:?}: {e}", c.column())),
                _ => Ok(()),
            }),
            Event::RunStarted(s) if !crate::format::is_run_id(&s.run_id) => {
                Err(format!("run id {:?} is not a run id", s.run_id))
            }
            _ => Ok(()),
        }
    }
}

/// The media formats difflog writes (file extensions): PNG for every image
/// it makes (and a video's animated PNG); JPEG and WebP only for files
/// imported as they are; MP4 for videos (since 2026-12-07).
pub const MEDIA_FORMATS: &[&str] = &["png", "jpg", "webp", VIDEO_FORMAT];

/// The format (extension) of a video kept as H.264: never an image's.
pub const VIDEO_FORMAT: &str = "mp4";

fn check_media_ref(digest: &str, format: &str, path: &str) -> Result<(), String> {
    if !crate::format::is_digest(digest) {
        return Err(format!(
            "media digest {digest:?} is not a lower-case hex SHA-256"
        ));
    }
    if !MEDIA_FORMATS.contains(&format) {
        return Err(format!("media format {format:?} is not one difflog writes"));
    }
    let want = crate::format::media_rel_path(digest, format);
    if path != want {
        return Err(format!("media path {path:?} should be {want:?}"));
    }
    Ok(())
}

/// `run_started`: the first record of every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    /// The run id (same as `run.json`).
    pub run_id: String,
    /// Run format version.
    pub format: u32,
    /// Process id of the writer.
    pub pid: u32,
    /// Host name of the writer.
    pub host: String,
    /// difflog version of the writer.
    pub difflog_version: String,
    /// SHA-256 of `run.json` as written (it is never changed afterwards), so
    /// an edit of the run's identity is found. Absent in runs written before
    /// 2026-11-29.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_json_sha256: Option<String>,
}

/// `run_resumed`: a writer reopened the run after it had been left without one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResumed {
    /// Process id of the new writer.
    pub pid: u32,
    /// Host name of the new writer.
    pub host: String,
    /// difflog version of the new writer.
    pub difflog_version: String,
    /// Bytes of torn tail that were cut from the log before appending.
    pub truncated_bytes: u64,
}

/// `config`: run-level settings (the user's own too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigEvent {
    /// Keys and values; merged over earlier `config` events.
    pub values: Map<String, Value>,
}

/// `pipeline`: what a pipeline instance is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineEvent {
    /// Index of this pipeline within the run (1, 2, …), referenced by calls.
    pub pipeline: u32,
    /// Class name (`StableDiffusionXLPipeline`, or a user's own).
    pub class: String,
    /// Model id (hub id, local path or `tiny`).
    pub model_id: String,
    /// Hub revision (commit) of the weights, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Digest of the weights, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_digest: Option<String>,
    /// Tensor dtype (`f32`, `f16`, …).
    pub dtype: String,
    /// Device (`cpu`, `cuda:0`, …).
    pub device: String,
    /// Components: name → class (`unet` → `UNet2DConditionModel`, …).
    pub components: Map<String, Value>,
    /// The full scheduler configuration.
    pub scheduler: Value,
}

/// `call_started`: a pipeline call with every argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallStarted {
    /// Call number within the run (1, 2, …).
    pub call: u32,
    /// Stage name, `Pipeline-Call-N`.
    pub stage: String,
    /// Index of the `pipeline` event describing the pipeline.
    pub pipeline: u32,
    /// Every call argument, defaults filled in, generators as seeds.
    pub params: Map<String, Value>,
    /// The seed of every image the call will generate, in row order.
    pub seeds: Vec<u64>,
    /// The columns of this call's table, in order.
    pub columns: Vec<String>,
}

/// `media`: a stored media file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaEvent {
    /// Media key (`Generated-Image/Pipeline-Call-N`, `Input-Image/…`, or a user's own).
    pub key: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub digest: String,
    /// Path relative to the run directory: `media/<digest[..2]>/<digest>.png`.
    pub path: String,
    /// File size in bytes.
    pub bytes: u64,
    /// File format (`png`; `mp4` for a video; `jpg`, `webp` for imported
    /// files).
    pub format: String,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Caption (the prompt, for generated images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// The call this media belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<u32>,
    /// The marks the file carries, for a generated image of a run that
    /// was configured to mark them (issue 36).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Marks>,
    /// What the file plays, when it is a video (an MP4 or animated PNG of
    /// a video pipeline's frames; since 2026-12-07).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<Video>,
}

/// A stored video's timing: its frames play at `fps` for `duration_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Video {
    /// How many frames it has.
    pub frames: u32,
    /// Frames a second, as the call stated it (to a thousandth).
    pub fps: f64,
    /// Where the frame rate came from, in words: the call's argument
    /// (`argument fps`, `argument frame_rate`), or the default it fell back
    /// to (`diffusers' documented rate for Wan pipelines`, `diffusers'
    /// export_to_video default`); whatever the recording program said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps_from: Option<String>,
    /// How long it plays once, in seconds (`frames / fps`).
    pub duration_s: f64,
}

impl Video {
    /// The most frames a second a video may state: more is a mistake, not
    /// a video (and would not fit an animated PNG's 16-bit frame delay).
    pub const MAX_FPS: f64 = 1000.0;

    /// Why `fps` is no rate a video can have: not a number, not above 0,
    /// or above [`Video::MAX_FPS`].
    pub fn check_fps(fps: f64) -> Result<(), String> {
        if fps.is_finite() && fps > 0.0 && fps <= Video::MAX_FPS {
            return Ok(());
        }
        Err(format!(
            "a frame rate of {fps} is not one a video can have (above 0, at most {} frames a second)",
            Video::MAX_FPS
        ))
    }

    /// Why these timings are none a video can have (a reader's check: a
    /// run directory can come from anyone).
    pub fn check(&self) -> Result<(), String> {
        if self.frames == 0 {
            return Err("a video with no frames".into());
        }
        if Video::check_fps(self.fps).is_err() {
            return Err(format!("a video at {} frames a second", self.fps));
        }
        if !(self.duration_s.is_finite() && self.duration_s >= 0.0) {
            return Err(format!("a video lasting {} s", self.duration_s));
        }
        Ok(())
    }
}

/// The provenance marks a generated image's file was given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    /// Who signed its C2PA manifest (the certificate's common name and
    /// organisation), when one is embedded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c2pa: Option<String>,
    /// Why signing failed, when it did (the file is stored unsigned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c2pa_error: Option<String>,
    /// The invisible watermark embedded in its pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<WatermarkMark>,
    /// Why no watermark was embedded though one was configured (an image
    /// under 256×256 pixels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_skipped: Option<String>,
}

/// An invisible watermark as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkMark {
    /// The method, as `invisible-watermark` names it (`dwtDct`).
    pub method: String,
    /// The message's bits, `0`s and `1`s.
    pub bits: String,
}

/// `row`: one row of a call's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowEvent {
    /// The call the row belongs to.
    pub call: u32,
    /// Table name, `Result-Table/Pipeline-Call-N`.
    pub table: String,
    /// Row index within the table, from 0.
    pub index: u32,
    /// Cells in column order.
    pub cells: Vec<Cell>,
}

/// A typed table cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cell {
    /// A text value.
    Text {
        /// Column name.
        column: String,
        /// The text.
        value: String,
    },
    /// A number (integers keep full 64-bit precision).
    Number {
        /// Column name.
        column: String,
        /// The number.
        value: Number,
    },
    /// A reference to a stored image.
    Image {
        /// Column name.
        column: String,
        /// SHA-256 of the image file (a `media` event with this digest precedes the row).
        digest: String,
        /// Path relative to the run directory.
        path: String,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// What it plays, when the file is a video (its `media` record
        /// says the same).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        video: Option<Video>,
    },
    /// No value (e.g. no negative prompt was given).
    Null {
        /// Column name.
        column: String,
    },
}

impl Cell {
    /// The column this cell belongs to.
    pub fn column(&self) -> &str {
        match self {
            Cell::Text { column, .. }
            | Cell::Number { column, .. }
            | Cell::Image { column, .. }
            | Cell::Null { column } => column,
        }
    }
}

/// Outcome of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// The call returned its images.
    Ok,
    /// The call failed (see `error`).
    Error,
}

/// `call_finished`: the end of a call, its status and timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallFinished {
    /// The call number.
    pub call: u32,
    /// Whether the call succeeded.
    pub status: CallStatus,
    /// Error text of a failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Number of rows (images) recorded for this call.
    pub images: u32,
    /// Milliseconds per phase (`text_encoding`, `denoising`, `decoding`, `saving`, `total`, …).
    pub timings_ms: Map<String, Value>,
}

impl CallFinished {
    /// The timings as one line: `denoising 120 ms, decoding 30 ms, …`.
    pub fn timings_text(&self) -> String {
        self.timings_ms
            .iter()
            .map(|(k, v)| format!("{k} {v} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `metric`: a free-form scalar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvent {
    /// Metric name.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Optional step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Ended normally.
    Finished,
    /// Ended with an error (the writer panicked or recording failed).
    Failed,
}

/// `run_finished`: the last record of a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinished {
    /// How the run ended.
    pub status: RunStatus,
    /// Error text, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The recorded program died (an uncaught exception ended it) and
    /// recorded this on its way down: readers show the run as crashed,
    /// with `error` saying why. Status is then `failed`, which is what a
    /// reader that does not know this field shows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub crashed: bool,
}

#[derive(Serialize)]
struct OutRecord<'a> {
    seq: u64,
    ts: &'a str,
    kind: &'static str,
    data: serde_json::Value,
}

/// A record read in one pass: `data` is parsed straight into the event of
/// `kind` when `kind` comes first (as difflog writes it), and kept as raw
/// JSON to parse afterwards otherwise. Unknown fields are skipped.
struct InRecord(Record);

impl<'de> Deserialize<'de> for InRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<InRecord, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> serde::de::Visitor<'de> for RecordVisitor {
    type Value = InRecord;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a record object with seq, ts, kind and data")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<InRecord, A::Error> {
        use serde::de::Error as _;
        let (mut seq, mut ts, mut kind) = (None::<u64>, None::<String>, None::<&'de str>);
        let mut event = None::<Event>;
        let mut early = None::<&'de serde_json::value::RawValue>;
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "seq" if seq.is_none() => seq = Some(map.next_value()?),
                "ts" if ts.is_none() => ts = Some(map.next_value()?),
                "kind" if kind.is_none() => kind = Some(map.next_value()?),
                "data" if event.is_none() && early.is_none() => match kind {
                    Some(k) => event = Some(map.next_value_seed(EventSeed(k))?),
                    None => early = Some(map.next_value()?),
                },
                "seq" | "ts" | "kind" | "data" => {
                    return Err(A::Error::custom(format_args!("duplicate field `{key}`")))
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let seq = seq.ok_or_else(|| A::Error::missing_field("seq"))?;
        let ts = ts.ok_or_else(|| A::Error::missing_field("ts"))?;
        let kind = kind.ok_or_else(|| A::Error::missing_field("kind"))?;
        let event = match (event, early) {
            (Some(e), _) => {
                e.check().map_err(A::Error::custom)?;
                e
            }
            // `from_kind_and_data` checks the event itself.
            (None, Some(raw)) => Event::from_kind_and_data(kind, raw.get())
                .map_err(|e| A::Error::custom(format_args!("bad {kind} event: {e}")))?,
            (None, None) => return Err(A::Error::missing_field("data")),
        };
        Ok(InRecord(Record { seq, ts, event }))
    }
}

/// Parses a record's `data` as the event its `kind` names.
struct EventSeed<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Event;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Event, D::Error> {
        use serde::de::Error as _;
        fn typed<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
            kind: &str,
            d: D,
            wrap: fn(T) -> Event,
        ) -> Result<Event, D::Error> {
            T::deserialize(d)
                .map(wrap)
                .map_err(|e| D::Error::custom(format_args!("bad {kind} event: {e}")))
        }
        let k = self.0;
        match k {
            "run_started" => typed(k, d, Event::RunStarted),
            "run_resumed" => typed(k, d, Event::RunResumed),
            "config" => typed(k, d, Event::Config),
            "pipeline" => typed(k, d, Event::Pipeline),
            "call_started" => typed(k, d, Event::CallStarted),
            "media" => typed(k, d, Event::Media),
            "row" => typed(k, d, Event::Row),
            "call_finished" => typed(k, d, Event::CallFinished),
            "metric" => typed(k, d, Event::Metric),
            "run_finished" => typed(k, d, Event::RunFinished),
            other => Err(D::Error::custom(format_args!(
                "unknown event kind {other:?}"
            ))),
        }
    }
}

/// Encodes one record as a framed line (with its trailing newline).
pub fn encode_record(seq: u64, ts: &str, event: &Event) -> serde_json::Result<Vec<u8>> {
    let json = serde_json::to_vec(&OutRecord {
        seq,
        ts,
        kind: event.kind(),
        data: event.data()?,
    })?;
    let mut line = Vec::with_capacity(json.len() + 10);
    line.extend_from_slice(format!("{:08x} ", crc32c::crc32c(&json)).as_bytes());
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// Decodes one framed line (without its newline). The error says what is wrong.
pub fn decode_record(line: &[u8]) -> Result<Record, String> {
    if line.len() < 11 || line[8] != b' ' {
        return Err("not a record line (expected 8 hex digits, a space, JSON)".into());
    }
    let crc_text = std::str::from_utf8(&line[..8]).map_err(|_| "checksum is not hex")?;
    let want = u32::from_str_radix(crc_text, 16).map_err(|_| "checksum is not hex")?;
    let json = &line[9..];
    let got = crc32c::crc32c(json);
    if got != want {
        return Err(format!(
            "checksum mismatch (stored {want:08x}, computed {got:08x})"
        ));
    }
    let InRecord(record) = serde_json::from_slice(json).map_err(|e| format!("bad record: {e}"))?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_video_record_with_timings_no_video_has_is_damage() {
        let d = "ab".repeat(32);
        let media = |video: &str| {
            format!(
                r#"{{"key":"Generated-Video/Pipeline-Call-1","digest":"{d}","path":"media/ab/{d}.png","bytes":9,"format":"png","width":8,"height":8,"video":{video}}}"#
            )
        };
        let ok = r#"{"frames":16,"fps":7.5,"duration_s":2.133}"#;
        assert!(Event::from_kind_and_data("media", &media(ok)).is_ok());
        for (bad, why) in [
            (r#"{"frames":0,"fps":8,"duration_s":0}"#, "no frames"),
            (
                r#"{"frames":2,"fps":0,"duration_s":1}"#,
                "0 frames a second",
            ),
            (
                r#"{"frames":2,"fps":1e9,"duration_s":1}"#,
                "1000000000 frames",
            ),
            (r#"{"frames":2,"fps":8,"duration_s":-1}"#, "lasting -1"),
        ] {
            let e = Event::from_kind_and_data("media", &media(bad)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let row = format!(
            r#"{{"call":1,"table":"t","index":0,"cells":[{{"type":"image","column":"Generated-Video","digest":"{d}","path":"media/ab/{d}.png","width":8,"height":8,"video":{{"frames":0,"fps":8,"duration_s":0}}}}]}}"#
        );
        let e = Event::from_kind_and_data("row", &row).unwrap_err();
        assert!(
            e.contains("Generated-Video") && e.contains("no frames"),
            "{e}"
        );
    }

    #[test]
    fn record_line_round_trips_and_detects_flips() {
        let ev = Event::Metric(MetricEvent {
            name: "loss".into(),
            value: 0.5,
            step: Some(3),
        });
        let line = encode_record(7, "2026-11-27T10:00:00.000000Z", &ev).unwrap();
        assert_eq!(*line.last().unwrap(), b'\n');
        let rec = decode_record(&line[..line.len() - 1]).unwrap();
        assert_eq!(rec.seq, 7);
        assert_eq!(rec.event, ev);
        for i in 0..line.len() - 1 {
            let mut bad = line[..line.len() - 1].to_vec();
            bad[i] ^= 0x01;
            assert!(decode_record(&bad).is_err(), "flip at {i} not detected");
        }
    }

    /// Frames `json` as a record line with a valid checksum.
    fn framed(json: &str) -> Vec<u8> {
        format!("{:08x} {json}", crc32c::crc32c(json.as_bytes())).into_bytes()
    }

    #[test]
    fn fields_in_any_order_read_alike_and_duplicates_are_damage() {
        let data = r#"{"name":"loss","value":0.5,"step":3}"#;
        let want = Event::Metric(MetricEvent {
            name: "loss".into(),
            value: 0.5,
            step: Some(3),
        });
        // As difflog writes it (one pass), data before kind (kept raw and
        // parsed after), and with a field this version does not know.
        for json in [
            format!(r#"{{"seq":2,"ts":"t","kind":"metric","data":{data}}}"#),
            format!(r#"{{"data":{data},"ts":"t","seq":2,"kind":"metric"}}"#),
            format!(r#"{{"seq":2,"later":[1,{{"a":2}}],"ts":"t","kind":"metric","data":{data}}}"#),
        ] {
            let rec = decode_record(&framed(&json)).unwrap();
            assert_eq!(
                (rec.seq, rec.ts.as_str(), &rec.event),
                (2, "t", &want),
                "{json}"
            );
        }
        for (json, why) in [
            (
                format!(r#"{{"seq":2,"ts":"t","kind":"metric","kind":"row","data":{data}}}"#),
                "duplicate field `kind`",
            ),
            (
                format!(r#"{{"seq":2,"ts":"t","kind":"metric","data":{data},"data":{data}}}"#),
                "duplicate field `data`",
            ),
            (
                r#"{"seq":2,"ts":"t","kind":"metric"}"#.into(),
                "missing field `data`",
            ),
            (
                r#"{"seq":2,"ts":"t","kind":"metric","data":{"name":"loss"}}"#.into(),
                "bad metric event",
            ),
            (
                r#"{"data":{"name":"loss"},"seq":2,"ts":"t","kind":"metric"}"#.into(),
                "bad metric event",
            ),
            (format!(r#"[2,"t","metric",{data}]"#), "a record object"),
        ] {
            let err = decode_record(&framed(&json)).unwrap_err();
            assert!(err.contains(why), "{json}: {err}");
        }
    }

    #[test]
    fn unknown_kind_is_an_error_not_a_panic() {
        let ev = Event::RunFinished(RunFinished {
            status: RunStatus::Finished,
            error: None,
            crashed: false,
        });
        let line = encode_record(1, "t", &ev).unwrap();
        let text = String::from_utf8(line).unwrap();
        let json = text[9..].trim_end().replace("run_finished", "run_exploded");
        let forged = format!("{:08x} {json}", crc32c::crc32c(json.as_bytes()));
        let err = decode_record(forged.as_bytes()).unwrap_err();
        assert!(err.contains("unknown event kind"), "{err}");
    }
}
