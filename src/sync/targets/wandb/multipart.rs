//! Multipart uploads of large artifact files, made as W&B's released client
//! makes them (wandb 0.31: the `CreateArtifactFiles` and
//! `CompleteMultipartUploadArtifact` operations in its `wandb-core`; the
//! sizes in `core/pkg/artifacts/multipart.go`).
//!
//! A file of 2 GiB or more is declared with one MD5 (hex) per part; the
//! server answers with one upload URL per part and an upload id. Each part
//! is PUT with its `Content-MD5`, the `ETag` of each answer is kept, and
//! `CompleteMultipartUploadArtifact` joins the parts in order. A failure
//! anywhere fails the file's upload, and the next attempt starts again with
//! a fresh `CreateArtifactFiles` (W&B's client aborts nothing either).

use super::*;
use base64::Engine;
use md5::{Digest, Md5};

const COMPLETE_MULTIPART: &str = "mutation CompleteMultipartUploadArtifact(\
$completeMultipartAction: CompleteMultipartAction!, $completedParts: [UploadPartsInput!]!, \
$artifactID: ID!, $storagePath: String!, $uploadID: String!) { \
completeMultipartUploadArtifact(input: {completeMultipartAction: $completeMultipartAction, \
completedParts: $completedParts, artifactID: $artifactID, storagePath: $storagePath, \
uploadID: $uploadID}) { digest } }";

/// Files this large or larger go in parts (W&B's `S3MinMultiUploadSize`).
const MIN_BYTES: u64 = 2 << 30;
/// The size of a part (`S3DefaultChunkSize`), unless that would make more
/// than [`MAX_PARTS`].
const PART_BYTES: u64 = 100 << 20;
/// At most this many parts (`S3MaxParts`, S3's own limit).
const MAX_PARTS: u64 = 10_000;
/// Parts of files too large for [`PART_BYTES`] are multiples of this.
const PART_ALIGN: u64 = 4096;

/// When a file goes in parts, and how large they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Files of this many bytes or more go in parts.
    pub min: u64,
    /// The part size (the last part is the rest).
    pub part: u64,
}

impl Sizes {
    /// W&B's sizes, or `DIFFLOG_WANDB_MULTIPART=MIN:PART` (bytes; for
    /// tests, and for a server whose storage wants other sizes).
    pub fn from_env() -> Sizes {
        let given = std::env::var("DIFFLOG_WANDB_MULTIPART").ok();
        let parsed = given.as_deref().and_then(|v| {
            let (min, part) = v.split_once(':')?;
            let (min, part) = (min.trim().parse().ok()?, part.trim().parse().ok()?);
            (part > 0).then_some(Sizes { min, part })
        });
        if given.is_some() && parsed.is_none() {
            tracing::warn!(
                "DIFFLOG_WANDB_MULTIPART is not MIN:PART in bytes; W&B's sizes are used"
            );
        }
        parsed.unwrap_or(Sizes {
            min: MIN_BYTES,
            part: PART_BYTES,
        })
    }

    /// The byte ranges of the parts of a file of `len` bytes, or `None`
    /// when it goes whole: W&B's rule, parts of [`Sizes::part`] bytes,
    /// larger (a multiple of 4 KiB) when that would make more than 10,000.
    pub fn parts(self, len: u64) -> Option<Vec<std::ops::Range<usize>>> {
        if len == 0 || len < self.min {
            return None;
        }
        let part = if len < self.part.saturating_mul(MAX_PARTS) {
            self.part
        } else {
            len.div_ceil(MAX_PARTS).div_ceil(PART_ALIGN) * PART_ALIGN
        };
        let len = usize::try_from(len).ok()?;
        let part = usize::try_from(part).ok()?;
        Some(
            (0..len)
                .step_by(part)
                .map(|start| start..(start + part).min(len))
                .collect(),
        )
    }
}

/// The hex MD5 of each part, as `CreateArtifactFiles`' `uploadPartsInput`
/// declares them: `[{partNumber, hexMD5}]`, numbered from 1.
pub(super) fn parts_input(bytes: &[u8], parts: &[std::ops::Range<usize>]) -> Vec<Value> {
    parts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let hex = crate::format::hex(&Md5::digest(&bytes[r.clone()]));
            json!({"partNumber": i + 1, "hexMD5": hex})
        })
        .collect()
}

/// At most this many parts of one file in flight.
const PARTS_AT_ONCE: usize = 4;

impl Wandb {
    /// Uploads `bytes` in `parts` to the URLs `node` (an answer of
    /// `CreateArtifactFiles`) hands out, then completes the upload.
    pub(super) async fn upload_parts(
        &self,
        collection: &str,
        name: &str,
        node: &Value,
        bytes: &[u8],
        parts: &[std::ops::Range<usize>],
    ) -> SyncResult<()> {
        use futures_util::StreamExt;
        let what = format!("W&B multipart upload of {name} ({collection})");
        let urls = &node["uploadMultipartUrls"];
        let upload_id = urls["uploadID"]
            .as_str()
            .ok_or_else(|| SyncError::permanent(format!("{what}: no upload id in the answer")))?;
        let storage_path = node["storagePath"]
            .as_str()
            .ok_or_else(|| SyncError::permanent(format!("{what}: no storage path")))?;
        let artifact_id = node["artifact"]["id"]
            .as_str()
            .ok_or_else(|| SyncError::permanent(format!("{what}: no artifact id")))?;
        // Each part's URL by its number; every part must have exactly one.
        let mut url_of: Vec<Option<&str>> = vec![None; parts.len()];
        for p in urls["uploadUrlParts"].as_array().into_iter().flatten() {
            let n = p["partNumber"].as_u64().unwrap_or(0);
            let slot = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| url_of.get_mut(i));
            match (slot, p["uploadUrl"].as_str()) {
                (Some(s @ None), Some(u)) => *s = Some(u),
                _ => {
                    return Err(SyncError::permanent(format!(
                        "{what}: part {n} is not one of parts 1..={} or is listed twice",
                        parts.len()
                    )))
                }
            }
        }
        if let Some(i) = url_of.iter().position(Option::is_none) {
            return Err(SyncError::permanent(format!(
                "{what}: no upload URL for part {}",
                i + 1
            )));
        }
        // The content type the file's headers name, if any (W&B's client
        // sends that one header of them with each part).
        let content_type = headers_of(&node["uploadHeaders"])
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v);
        // Owned jobs: a stream of futures over borrowed items is not `Send`.
        let jobs: Vec<(usize, std::ops::Range<usize>, String)> = parts
            .iter()
            .zip(url_of)
            .enumerate()
            .map(|(i, (r, u))| (i, r.clone(), u.unwrap_or_default().to_string()))
            .collect();
        let puts = jobs.into_iter().map(|(i, range, url)| {
            let chunk = bytes::Bytes::copy_from_slice(&bytes[range]);
            let content_type = content_type.clone();
            let what = what.clone();
            async move {
                let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&chunk));
                let mut headers = reqwest::header::HeaderMap::new();
                let value = |v: &str| {
                    reqwest::header::HeaderValue::from_str(v)
                        .map_err(|_| SyncError::permanent(format!("{what}: bad header value")))
                };
                headers.insert("content-md5", value(&md5)?);
                if let Some(ct) = &content_type {
                    headers.insert(reqwest::header::CONTENT_TYPE, value(ct)?);
                }
                let (status, answer, _) = self
                    .storage
                    .exchange(Method::PUT, &url, &headers, chunk)
                    .await?;
                if !status.is_success() {
                    return Err(SyncError::permanent(format!(
                        "{what}: part {} refused by storage ({status})",
                        i + 1
                    )));
                }
                let etag = answer
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        SyncError::permanent(format!("{what}: no ETag for part {}", i + 1))
                    })?;
                Ok(json!({"partNumber": i + 1, "hexMD5": etag}))
            }
        });
        let mut done: Vec<Value> = futures_util::stream::iter(puts)
            .buffer_unordered(PARTS_AT_ONCE)
            .collect::<Vec<SyncResult<Value>>>()
            .await
            .into_iter()
            .collect::<SyncResult<_>>()?;
        done.sort_by_key(|p| p["partNumber"].as_u64());
        self.gql(
            "CompleteMultipartUploadArtifact",
            COMPLETE_MULTIPART,
            json!({"completeMultipartAction": "Complete", "completedParts": done,
                   "artifactID": artifact_id, "storagePath": storage_path,
                   "uploadID": upload_id}),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_follow_wandbs_sizes() {
        let w = Sizes {
            min: MIN_BYTES,
            part: PART_BYTES,
        };
        assert_eq!(w.parts(0), None);
        assert_eq!(w.parts(MIN_BYTES - 1), None);
        let p = w.parts(MIN_BYTES).unwrap();
        // 2 GiB in 100 MiB parts: 20 whole parts and the rest.
        assert_eq!(p.len(), 21);
        assert!(p[..20].iter().all(|r| r.len() as u64 == PART_BYTES));
        assert_eq!(p[20].len() as u64, MIN_BYTES - 20 * PART_BYTES);
        assert_eq!(p.last().unwrap().end as u64, MIN_BYTES);
        // Small sizes (as the tests set them): whole parts and the rest.
        let t = Sizes { min: 10, part: 4 };
        assert_eq!(t.parts(9), None);
        assert_eq!(t.parts(10).unwrap(), vec![0..4, 4..8, 8..10]);
        assert_eq!(t.parts(12).unwrap(), vec![0..4, 4..8, 8..12]);
        // Past 10,000 parts of the default size, parts grow (4 KiB steps).
        let huge = Sizes { min: 1, part: 1 };
        let parts = huge.parts(40_961).unwrap();
        assert_eq!(
            (parts.len(), parts[0].len(), parts[10].len()),
            (11, 4096, 1)
        );
        let parts = huge.parts(50_000_000).unwrap();
        // 5,000 bytes a part would do; 8 KiB is the next multiple of 4 KiB.
        assert_eq!((parts.len(), parts[0].len()), (6104, 8192));
    }

    #[test]
    fn part_digests_are_hex_md5s_numbered_from_one() {
        let bytes = b"hello world";
        let v = parts_input(bytes, &[0..5, 5..11]);
        assert_eq!(v[0]["partNumber"], 1);
        // MD5("hello") and MD5(" world").
        assert_eq!(v[0]["hexMD5"], "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(v[1]["partNumber"], 2);
        assert_eq!(v[1]["hexMD5"], crate::format::hex(&Md5::digest(b" world")));
    }
}
