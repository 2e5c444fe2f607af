//! The run's videos as W&B plays them (issue 37): W&B's `video-file` is
//! the recorded MP4 itself, as it is; a video kept as an animated PNG goes
//! as a GIF (`sync::clip`), derived from it when a pass first needs it — its digest and size go into history lines and
//! table cells, which must be the same in every pass, so a GIF is made
//! again (deterministically) in a later process rather than stored beside
//! the run. What was derived is remembered by the APNG's digest and rate;
//! the bytes of the latest ones are kept for their upload, within a bound.
//! What was sent is also kept in the run's sync state ([`SentGif`]), so a
//! later pass writes its lines without the video, which may be gone from
//! the run by then (as an uploaded image may).
//!
//! A file that differs from its record stops the pass (as an image's does);
//! one that matches its record but is no video difflog could have written
//! (a frame painting part of the picture, say) is sent as the animated
//! image it is, with a warning, rather than not at all.

use super::*;
use std::collections::{BTreeMap, VecDeque};

/// Bytes of derived GIFs kept for their uploads (older ones are derived
/// again when needed).
const KEPT_BYTES: usize = 256 << 20;

/// A video's file as W&B references it: the recorded MP4, or the GIF made
/// of an animated PNG.
#[derive(Debug)]
pub(super) struct VideoFile {
    /// Its extension (`mp4`, `gif`).
    pub(super) ext: &'static str,
    /// SHA-256 of the file, lower-case hex.
    pub(super) sha256: String,
    /// Its size in bytes.
    pub(super) size: u64,
    /// Width in pixels.
    pub(super) width: u32,
    /// Height in pixels.
    pub(super) height: u32,
}

/// A GIF a pass sent, as the sync state keeps it (`Cursor::gifs`, by
/// APNG digest and rate; `None` for a video no GIF could be made of).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SentGif {
    /// SHA-256 of the GIF, lower-case hex.
    sha256: String,
    /// Its size in bytes.
    size: u64,
    /// Width in pixels.
    width: u32,
    /// Height in pixels.
    height: u32,
}

/// The GIFs derived from runs' videos, by APNG digest and rate.
#[derive(Default)]
pub(super) struct Gifs {
    /// What each video became: its GIF, or `None` when it cannot be one.
    made: Mutex<HashMap<String, Option<Arc<VideoFile>>>>,
    /// The latest GIFs' bytes, oldest first.
    kept: Mutex<VecDeque<(String, Arc<Vec<u8>>)>>,
}

/// What names a derived GIF: the APNG's digest and the recorded rate.
fn name(m: &MediaEvent, fps: f64) -> String {
    format!("{}@{fps}", m.digest)
}

/// The recorded rate of a video W&B is sent as a GIF made of it (one kept
/// as an animated PNG); `None` for an image, or an MP4 (sent as it is).
fn gif_rate(m: &MediaEvent) -> Option<f64> {
    if m.format == crate::event::VIDEO_FORMAT {
        return None;
    }
    m.video.as_ref().map(|v| v.fps)
}

/// Reads a recorded file, checked against its record, and makes its GIF:
/// `Err` when the file differs from its record, `Ok(Err(why))` when it is
/// no video a GIF can be made of.
fn derive(file: &Path, m: &MediaEvent, fps: f64) -> SyncResult<Result<clip::Gif, String>> {
    Ok(clip::gif_of_apng(&read_recorded(file, m)?, fps))
}

impl Gifs {
    /// The video file `m` is sent as: the recorded MP4, or the GIF made of
    /// an animated PNG; `None` for an image, or a video no GIF could be
    /// made of, or one not derived yet ([`Gifs::derive`]).
    pub(super) fn info(&self, m: &MediaEvent) -> Option<Arc<VideoFile>> {
        if m.format == crate::event::VIDEO_FORMAT && m.video.is_some() {
            return Some(Arc::new(VideoFile {
                ext: crate::event::VIDEO_FORMAT,
                sha256: m.digest.clone(),
                size: m.bytes,
                width: m.width,
                height: m.height,
            }));
        }
        let fps = gif_rate(m)?;
        let made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        made.get(&name(m, fps)).cloned().flatten()
    }

    /// Takes what the sync state of remote run `remote` says earlier passes
    /// sent (`sent`, from its cursor): those GIFs are not made again for
    /// their lines. A digest that is no SHA-256 is an error naming the run.
    pub(super) fn remember(
        &self,
        sent: &BTreeMap<String, Option<SentGif>>,
        remote: &str,
    ) -> SyncResult<()> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        for (key, gif) in sent {
            let info = match gif {
                Some(g) => {
                    if !crate::format::is_digest(&g.sha256) {
                        return Err(SyncError::permanent(format!(
                            "corrupt W&B data in the sync state for remote run {remote}: \
                             the GIF sent for {key} has no SHA-256 digest"
                        )));
                    }
                    Some(Arc::new(VideoFile {
                        ext: "gif",
                        sha256: g.sha256.clone(),
                        size: g.size,
                        width: g.width,
                        height: g.height,
                    }))
                }
                None => None,
            };
            made.entry(key.clone()).or_insert(info);
        }
        Ok(())
    }

    /// What the sync state keeps of the GIFs of `media` (those made), by
    /// name.
    pub(super) fn sent<'m>(
        &self,
        media: impl Iterator<Item = &'m MediaEvent>,
    ) -> Vec<(String, Option<SentGif>)> {
        let made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        media
            .filter_map(|m| {
                let key = name(m, gif_rate(m)?);
                let gif = made.get(&key)?.as_ref().map(|v| SentGif {
                    sha256: v.sha256.clone(),
                    size: v.size,
                    width: v.width,
                    height: v.height,
                });
                Some((key, gif))
            })
            .collect()
    }

    /// Makes the GIF of every video among `media` not made yet (on the
    /// blocking pool: a GIF costs about 70 ms a 512² frame), reading each
    /// from run `dir`.
    pub(super) async fn derive(&self, dir: &Path, media: &[&MediaEvent]) -> SyncResult<()> {
        for m in media {
            let Some(fps) = gif_rate(m) else { continue };
            let key = name(m, fps);
            if self
                .made
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&key)
            {
                continue;
            }
            let file = crate::read::run_file(dir, &m.path).map_err(|e| SyncError::local(&e))?;
            self.make(&file, m, fps).await?;
        }
        Ok(())
    }

    /// Makes `m`'s GIF from `file` and remembers it; its bytes, when it
    /// could be made.
    async fn make(
        &self,
        file: &Path,
        m: &MediaEvent,
        fps: f64,
    ) -> SyncResult<Option<Arc<Vec<u8>>>> {
        let (path, media) = (file.to_path_buf(), m.clone());
        let made = tokio::task::spawn_blocking(move || derive(&path, &media, fps))
            .await
            .map_err(|e| SyncError::permanent(format!("making a GIF failed: {e}")))??;
        let key = name(m, fps);
        let (info, bytes) = match made {
            Ok(gif) => {
                let info = VideoFile {
                    ext: "gif",
                    sha256: sha256_hex(&gif.bytes),
                    size: gif.bytes.len() as u64,
                    width: gif.width,
                    height: gif.height,
                };
                (Some(Arc::new(info)), Some(Arc::new(gif.bytes)))
            }
            Err(why) => {
                tracing::warn!(
                    "{}: no GIF can be made of this video ({why}); W&B gets it as the animated image it is",
                    file.display()
                );
                (None, None)
            }
        };
        self.made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), info);
        if let Some(b) = &bytes {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            kept.retain(|(k, _)| *k != key);
            kept.push_back((key, Arc::clone(b)));
            let mut total: usize = kept.iter().map(|(_, b)| b.len()).sum();
            while total > KEPT_BYTES && kept.len() > 1 {
                if let Some((_, old)) = kept.pop_front() {
                    total -= old.len();
                }
            }
        }
        Ok(bytes)
    }

    /// The bytes of `m`'s GIF (made from `file`, the recorded video, when
    /// not kept), checked to be the GIF its references name; `None` when
    /// `m` is sent as it is (an image, an MP4).
    pub(super) async fn bytes(
        &self,
        file: &Path,
        m: &MediaEvent,
    ) -> SyncResult<Option<Arc<Vec<u8>>>> {
        let Some(fps) = gif_rate(m) else {
            return Ok(None);
        };
        let key = name(m, fps);
        let made = self
            .made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(None) = made {
            // Known to be no video a GIF can be made of.
            return Ok(None);
        }
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, b)| Arc::clone(b));
        let known = made.flatten();
        let bytes = match kept {
            Some(b) => Some(b),
            None => self.make(file, m, fps).await?,
        };
        if let (Some(info), Some(b)) = (&known, &bytes) {
            if sha256_hex(b) != info.sha256 {
                return Err(SyncError::permanent(format!(
                    "{}: its GIF came out different the second time it was made; not uploaded",
                    file.display()
                )));
            }
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GIF digest in the sync state that is no SHA-256 (a state edited
    /// or damaged) is refused, naming the remote run, before any line
    /// carries it; a good one is taken as sent.
    #[test]
    fn a_sent_gif_from_the_state_must_carry_a_sha256() {
        let gif = |sha256: &str| SentGif {
            sha256: sha256.into(),
            size: 10,
            width: 24,
            height: 16,
        };
        let gifs = Gifs::default();
        let bad = BTreeMap::from([("ab@12".to_string(), Some(gif("../../x")))]);
        let e = gifs.remember(&bad, "run-1").unwrap_err();
        assert!(e.message.contains("remote run run-1") && e.message.contains("ab@12"));
        let good = BTreeMap::from([("ab@12".to_string(), Some(gif(&"0f".repeat(32))))]);
        gifs.remember(&good, "run-1").unwrap();
        let made = gifs.made.lock().unwrap();
        assert_eq!(made["ab@12"].as_ref().map(|v| v.size), Some(10));
    }
}
