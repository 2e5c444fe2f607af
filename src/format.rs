//! Run directory format v1: names, the record framing, media addressing and
//! `run.json`.
//!
//! This module is the code form of `schemas/README.md`. The framing is one
//! record per line: `CCCCCCCC {json}\n`, where `CCCCCCCC` is the CRC-32C of the
//! JSON bytes in lower-case hex and the JSON is
//! `{"seq":N,"ts":"…","kind":"…","data":{…}}`. A line is self-delimiting
//! (JSON text never holds a raw newline), checksummed, and readable with
//! `cut -c10- events.log | jq`.

use crate::event::{Event, Record};
use serde::{Deserialize, Serialize};

/// The run format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// File holding the run's identity.
pub const RUN_JSON: &str = "run.json";
/// The append-only event log.
pub const EVENTS_LOG: &str = "events.log";
/// Directory of content-addressed media.
pub const MEDIA_DIR: &str = "media";
/// Prefix of temporary files (media being written, `run.json` being replaced).
pub const TMP_PREFIX: &str = ".tmp-";

/// The contents of `run.json`: who the run is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Run format version.
    pub format: u32,
    /// Run id: sortable, UTC time plus a random suffix.
    pub id: String,
    /// Project (the tracker's experiment / project).
    pub project: String,
    /// Display name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Host that created the run.
    pub host: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// difflog version that created the run.
    pub difflog_version: String,
}

#[derive(Serialize)]
struct OutRecord<'a> {
    seq: u64,
    ts: &'a str,
    kind: &'static str,
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct InRecord<'a> {
    seq: u64,
    ts: String,
    kind: &'a str,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
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
    let raw: InRecord = serde_json::from_slice(json).map_err(|e| format!("bad JSON: {e}"))?;
    let event = Event::from_kind_and_data(raw.kind, raw.data.get())
        .map_err(|e| format!("bad {} event: {e}", raw.kind))?;
    Ok(Record {
        seq: raw.seq,
        ts: raw.ts,
        event,
    })
}

/// The path, relative to the run directory, of the media file with `digest`.
pub fn media_rel_path(digest: &str, ext: &str) -> String {
    format!("{MEDIA_DIR}/{}/{digest}.{ext}", &digest[..2])
}

/// Percent-encodes a URL path segment or query value (RFC 3986 unreserved
/// characters stay as they are).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Whether `s` is a lower-case hex SHA-256 digest.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Current time as RFC 3339 UTC with microseconds (`2026-11-27T10:32:19.123456Z`).
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// A time as records write it (RFC 3339, UTC, microseconds).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Milliseconds since the Unix epoch of a record timestamp (0 if unparsable).
pub fn rfc3339_ms(ts: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|d| d.timestamp_millis())
        .unwrap_or(0)
}

/// A new run id: UTC time to the millisecond plus 24 random bits, so ids sort
/// by creation time (`20261127T103219.482Z-5f2c1a`).
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let suffix: u32 = rand::random::<u32>() & 0x00ff_ffff;
    format!("{}-{suffix:06x}", now.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// Whether `id` has the shape of a run id (safe as a directory name).
pub fn is_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{MetricEvent, RunFinished, RunStatus};

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

    #[test]
    fn run_ids_sort_by_time_and_are_safe_names() {
        let a = new_run_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_run_id();
        assert!(a < b, "{a} !< {b}");
        assert!(is_run_id(&a));
        assert!(!is_run_id("../x"));
        assert!(!is_run_id(".hidden"));
    }
}
