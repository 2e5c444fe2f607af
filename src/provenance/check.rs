//! Checking the marks an image carries: its C2PA manifest (validated by
//! [`crate::meta::c2pa`]) and the watermarks it may hold — for `difflog
//! inspect` (one file) and `difflog verify --provenance` (every generated
//! image of a run, against what its `media` record says it was given).

use super::watermark::{self, Message};
use crate::error::Result;
use crate::event::Marks;
use crate::format::names;
use crate::meta::c2pa::Credentials;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A watermark looked for, and what was read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatermarkCheck {
    /// Whose mark: `diffusers SDXL`, `recorded`, `given`.
    pub name: String,
    /// The bits looked for.
    pub bits: String,
    /// The bits read, as many.
    pub read: String,
    /// Whether they are the bits looked for.
    pub found: bool,
    /// How much the image's blocks agree on what they say (0.5: not at
    /// all, as in an unmarked image; 1: every block).
    pub agreement: f64,
}

/// An image's pixels, decoded within the limits of images read from runs.
pub fn pixels_of(bytes: &[u8]) -> std::result::Result<image::RgbImage, String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    reader.limits(crate::read::image_limits());
    let img = reader
        .decode()
        .map_err(|e| format!("not a readable image: {e}"))?;
    Ok(img.into_rgb8())
}

/// Reads each of `looked_for` (a name and the message) from `img`; an
/// image too small to carry one is an error saying so.
pub fn watermarks(
    img: &image::RgbImage,
    looked_for: &[(String, Message)],
) -> std::result::Result<Vec<WatermarkCheck>, String> {
    let (w, h) = img.dimensions();
    looked_for
        .iter()
        .map(|(name, m)| {
            let r = watermark::read(img.as_raw(), w, h, m.len())?;
            Ok(WatermarkCheck {
                name: name.clone(),
                bits: m.as_bits(),
                found: r.bits == m.as_bits(),
                read: r.bits,
                agreement: (r.agreement * 1000.0).round() / 1000.0,
            })
        })
        .collect()
}

/// The watermarks everyone may look for: diffusers' SDXL mark.
pub fn well_known() -> Vec<(String, Message)> {
    Message::from_bits(watermark::SDXL_BITS)
        .map(|m| vec![("diffusers SDXL".to_string(), m)])
        .unwrap_or_default()
}

/// One generated image of a run, checked.
#[derive(Debug, Clone, Serialize)]
pub struct ImageCheck {
    /// Its media key.
    pub key: String,
    /// Its file, relative to the run.
    pub path: String,
    /// What its record says it was given (`None`: no marks recorded).
    pub recorded: Option<Marks>,
    /// Its Content Credentials as validated now, if it carries any.
    pub c2pa: Option<Credentials>,
    /// The recorded watermark, as read now.
    pub watermark: Option<WatermarkCheck>,
    /// What does not hold: a mark recorded but missing or broken.
    pub problems: Vec<String>,
}

/// Every generated image of the run at `dir`, its marks checked against
/// its record; `anchors`: the PEM trust anchors its signer must chain to
/// (without them a valid signature is enough).
pub fn check_run(dir: &Path, anchors: Option<&str>) -> Result<Vec<ImageCheck>> {
    let run = crate::read::RunDir::open(dir)?;
    let view = run.view();
    let prefix = format!("{}/", names::GENERATED_IMAGE);
    let mut out = Vec::new();
    for m in view.media.iter() {
        if !m.key.starts_with(&prefix) && m.provenance.is_none() {
            continue;
        }
        let mut c = ImageCheck {
            key: m.key.clone(),
            path: m.path.clone(),
            recorded: m.provenance.clone(),
            c2pa: None,
            watermark: None,
            problems: Vec::new(),
        };
        let bytes = match read_media(dir, &m.path) {
            Ok(b) => b,
            Err(why) => {
                c.problems.push(why);
                out.push(c);
                continue;
            }
        };
        check_file(&bytes, anchors, &mut c);
        out.push(c);
    }
    Ok(out)
}

fn read_media(dir: &Path, rel: &str) -> std::result::Result<Vec<u8>, String> {
    let path: PathBuf = crate::read::run_file(dir, rel).map_err(|e| e.to_string())?;
    crate::read::read_regular(&path, crate::read::MAX_IMAGE_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn check_file(bytes: &[u8], anchors: Option<&str>, c: &mut ImageCheck) {
    let recorded = c.recorded.clone().unwrap_or_default();
    match crate::meta::c2pa::read(bytes, anchors) {
        Ok(Some(cred)) => {
            if cred.state == "invalid" {
                c.problems.push(format!(
                    "its C2PA manifest does not validate: {}",
                    cred.failures.join("; ")
                ));
            } else if anchors.is_some() && cred.state != "trusted" {
                c.problems
                    .push("its C2PA signer chains to none of the trust anchors given".into());
            }
            c.c2pa = Some(cred);
        }
        Ok(None) if recorded.c2pa.is_some() => c
            .problems
            .push("recorded as signed, but it carries no C2PA manifest".into()),
        Ok(None) => {}
        Err(why) => c.problems.push(why),
    }
    if let Some(w) = &recorded.watermark {
        let message = match Message::from_bits(&w.bits) {
            Ok(m) => m,
            Err(why) => {
                c.problems.push(format!("its recorded watermark: {why}"));
                return;
            }
        };
        let read =
            pixels_of(bytes).and_then(|img| watermarks(&img, &[("recorded".to_string(), message)]));
        match read {
            Ok(mut found) => {
                let wm = found.remove(0);
                if !wm.found {
                    c.problems.push(format!(
                        "its watermark does not read back: {} of {} bits differ",
                        wm.bits
                            .chars()
                            .zip(wm.read.chars())
                            .filter(|(a, b)| a != b)
                            .count(),
                        wm.bits.len()
                    ));
                }
                c.watermark = Some(wm);
            }
            Err(why) => c
                .problems
                .push(format!("its watermark cannot be read: {why}")),
        }
    }
}

impl ImageCheck {
    /// The check of a run that cannot be read: one problem, `why`.
    pub fn unreadable(why: &dyn std::fmt::Display) -> ImageCheck {
        ImageCheck {
            key: "(the run)".into(),
            path: String::new(),
            recorded: None,
            c2pa: None,
            watermark: None,
            problems: vec![format!("its images cannot be checked: {why}")],
        }
    }

    /// The marks it carries intact, in words (`none` without any).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.c2pa {
            parts.push(format!("C2PA {}", c.state));
        }
        if let Some(w) = &self.watermark {
            parts.push(if w.found {
                format!("watermark {} bits", w.bits.len())
            } else {
                "watermark unreadable".into()
            });
        }
        let r = self.recorded.clone().unwrap_or_default();
        if let Some(why) = &r.c2pa_error {
            parts.push(format!("not signed ({why})"));
        }
        if let Some(why) = &r.watermark_skipped {
            parts.push(format!("no watermark ({why})"));
        }
        if parts.is_empty() {
            "no marks".into()
        } else {
            parts.join(", ")
        }
    }
}
