//! Run directory format v1: names, media addressing, ids and `run.json`.
//!
//! This module is, with the record framing in [`crate::event`], the code
//! form of `schemas/README.md`.

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

/// The names a run's stages, tables, media and columns carry: W&B's
/// diffusers autolog's, kept so that runs from either tool read alike.
/// Written here once; the recorder, the readers, the targets and the
/// Python package (as `difflog._native.NAMES`) take them from here.
pub mod names {
    /// The prompt column.
    pub const PROMPT: &str = "Prompt";
    /// The negative prompt column.
    pub const NEGATIVE_PROMPT: &str = "Negative-Prompt";
    /// The second prompt (SDXL's and SD3's CLIP-G, FLUX.1's T5).
    pub const PROMPT_2: &str = "Prompt-2";
    /// The second negative prompt.
    pub const NEGATIVE_PROMPT_2: &str = "Negative-Prompt-2";
    /// The third prompt (SD3's T5).
    pub const PROMPT_3: &str = "Prompt-3";
    /// The third negative prompt.
    pub const NEGATIVE_PROMPT_3: &str = "Negative-Prompt-3";
    /// An image-to-image call's input image (difflog's pipelines).
    pub const INPUT_IMAGE: &str = "Input-Image";
    /// An image-to-image call's input image as diffusers names it (W&B's
    /// column, the Python package's).
    pub const SOURCE_IMAGE: &str = "Source-Image";
    /// An inpainting call's mask.
    pub const MASK_IMAGE: &str = "Mask-Image";
    /// A ControlNet call's control image.
    pub const CONTROL_IMAGE: &str = "Control-Image";
    /// The generated image of a row.
    pub const GENERATED_IMAGE: &str = "Generated-Image";
    /// The generated video of a row (a video pipeline's; W&B autolog's
    /// media key for one).
    pub const GENERATED_VIDEO: &str = "Generated-Video";
    /// How many frames a row's video has (W&B autolog's column of a
    /// text-to-video table).
    pub const NUMBER_OF_FRAMES: &str = "Number-of-Frames";
    /// The seed of a row's image.
    pub const SEED: &str = "Seed";
    /// How a row's image can be made again (Python runs).
    pub const REMAKE: &str = "Remake";
    /// The prefix of a call's stage name.
    pub const STAGE_PREFIX: &str = "Pipeline-Call-";
    /// The folder of the calls' tables.
    pub const TABLES: &str = "Result-Table";

    /// Every name above by its constant's name, for the Python package.
    pub const ALL: [(&str, &str); 17] = [
        ("PROMPT", PROMPT),
        ("NEGATIVE_PROMPT", NEGATIVE_PROMPT),
        ("PROMPT_2", PROMPT_2),
        ("NEGATIVE_PROMPT_2", NEGATIVE_PROMPT_2),
        ("PROMPT_3", PROMPT_3),
        ("NEGATIVE_PROMPT_3", NEGATIVE_PROMPT_3),
        ("INPUT_IMAGE", INPUT_IMAGE),
        ("SOURCE_IMAGE", SOURCE_IMAGE),
        ("MASK_IMAGE", MASK_IMAGE),
        ("CONTROL_IMAGE", CONTROL_IMAGE),
        ("GENERATED_IMAGE", GENERATED_IMAGE),
        ("GENERATED_VIDEO", GENERATED_VIDEO),
        ("NUMBER_OF_FRAMES", NUMBER_OF_FRAMES),
        ("SEED", SEED),
        ("REMAKE", REMAKE),
        ("STAGE_PREFIX", STAGE_PREFIX),
        ("TABLES", TABLES),
    ];

    /// Whether `column` holds what a call made: its image or its video.
    pub fn is_generated(column: &str) -> bool {
        column == GENERATED_IMAGE || column == GENERATED_VIDEO
    }

    /// Call `n`'s stage: `Pipeline-Call-N`.
    pub fn stage(call: u32) -> String {
        format!("{STAGE_PREFIX}{call}")
    }

    /// The key of a stage's table: `Result-Table/Pipeline-Call-N`.
    pub fn table(stage: &str) -> String {
        format!("{TABLES}/{stage}")
    }

    /// The key of a column's media in a stage: `Generated-Image/Pipeline-Call-N`.
    pub fn media_key(column: &str, stage: &str) -> String {
        format!("{column}/{stage}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_autologs_and_listed_once() {
        assert_eq!(names::stage(3), "Pipeline-Call-3");
        assert_eq!(
            names::table("Pipeline-Call-3"),
            "Result-Table/Pipeline-Call-3"
        );
        assert_eq!(
            names::media_key(names::GENERATED_IMAGE, "Pipeline-Call-3"),
            "Generated-Image/Pipeline-Call-3"
        );
        let keys: std::collections::BTreeSet<_> = names::ALL.iter().map(|(k, _)| *k).collect();
        let values: std::collections::BTreeSet<_> = names::ALL.iter().map(|(_, v)| *v).collect();
        assert_eq!(
            (keys.len(), values.len()),
            (names::ALL.len(), names::ALL.len())
        );
        assert!(names::ALL.contains(&("SEED", "Seed")));
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
