//! `difflog bench video`: how fast a video's frames are written on one
//! core (issue 37: frames a second a core at 512²) — as an MP4 (H.264,
//! what a run keeps by default and W&B is sent), as an animated PNG
//! (lossless, kept on request), as a GIF (what W&B is sent of an animated
//! PNG), and the recorded APNG made into that GIF (what `difflog-sync`
//! does per such video) — beside the
//! recorder's still PNG of each frame, measured in the same process so a
//! noisy machine shows in every figure alike.

use crate::error::Result;
use crate::run::media::{encode_png_using, Pixels, PngEncoding};
use crate::run::video::{encode_apng, FrameRate};
use crate::sync::clip::{encode_gif, gif_of_apng};
use image::RgbImage;
use serde::Serialize;
use std::time::Instant;

/// Settings of `bench video`.
#[derive(Debug, Clone)]
pub struct VideoBench {
    /// Frames in the clip.
    pub frames: usize,
    /// Width and height in pixels.
    pub size: u32,
    /// The clip's frame rate (frames a second).
    pub fps: f64,
}

/// Figures of `bench video`: each way of writing the clip, best of three.
#[derive(Debug, Clone, Serialize)]
pub struct VideoFigures {
    /// Frames in the clip.
    pub frames: usize,
    /// Width and height in pixels.
    pub size: u32,
    /// The frame rate written.
    pub fps: f64,
    /// Each way: its name, frames a second on one core, and bytes.
    pub ways: Vec<Way>,
}

/// One way of writing the clip.
#[derive(Debug, Clone, Serialize)]
pub struct Way {
    /// `png stills` (the baseline), `mp4`, `apng`, `gif` or `apng→gif`.
    pub name: String,
    /// Frames written a second on one core (best of three).
    pub frames_per_s: f64,
    /// Bytes written.
    pub bytes: usize,
}

/// A clip that pans across one natural-looking picture, two pixels a
/// frame: motion an encoder meets in a real video, not unrelated stills.
fn clip(frames: usize, size: u32) -> Vec<RgbImage> {
    let wide = super::natural_image(7, size + 2 * frames as u32);
    (0..frames as u32)
        .map(|i| image::imageops::crop_imm(&wide, 2 * i, i, size, size).to_image())
        .collect()
}

/// Writes the clip each way and times it.
pub fn run(opts: &VideoBench) -> Result<VideoFigures> {
    let rate = FrameRate::from_fps(opts.fps).map_err(crate::Error::Invalid)?;
    let frames = clip(opts.frames.max(1), opts.size.max(8));
    let refs: Vec<&dyn Pixels> = frames.iter().map(|f| f as &dyn Pixels).collect();
    let best = |write: &dyn Fn() -> Result<usize>| -> Result<(f64, usize)> {
        let (mut best, mut bytes) = (f64::INFINITY, 0);
        for _ in 0..3 {
            let t = Instant::now();
            bytes = write()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok((refs.len() as f64 / best.max(1e-9), bytes))
    };
    let stills = best(&|| {
        refs.iter().try_fold(0, |n, f| {
            Ok(n + encode_png_using(*f, &[], PngEncoding::default())?.len())
        })
    })?;
    let mp4 = best(&|| Ok(crate::run::mp4::encode_mp4(&refs, rate)?.len()))?;
    let apng = best(&|| Ok(encode_apng(&refs, rate, PngEncoding::default(), &[])?.len()))?;
    let rgb: Vec<&[u8]> = frames.iter().map(|f| f.as_raw().as_slice()).collect();
    let (side, fps) = (frames[0].width(), rate.fps());
    let gif = best(&|| {
        Ok(encode_gif(&rgb, side, side, fps)
            .map_err(crate::Error::Invalid)?
            .len())
    })?;
    // What `difflog-sync` does per video for W&B: the recorded APNG
    // decoded and written as a GIF, a frame at a time.
    let recorded = encode_apng(&refs, rate, PngEncoding::default(), &[])?;
    let derived = best(&|| {
        Ok(gif_of_apng(&recorded, fps)
            .map_err(crate::Error::Invalid)?
            .bytes
            .len())
    })?;
    let ways = [
        ("png stills", stills),
        ("mp4", mp4),
        ("apng", apng),
        ("gif", gif),
        ("apng→gif", derived),
    ]
    .into_iter()
    .map(|(name, (frames_per_s, bytes))| Way {
        name: name.into(),
        frames_per_s,
        bytes,
    })
    .collect();
    Ok(VideoFigures {
        frames: refs.len(),
        size: opts.size.max(8),
        fps: rate.fps(),
        ways,
    })
}

/// The text `bench video` prints.
pub fn render(f: &VideoFigures) -> String {
    let mut out = format!(
        "difflog bench video: {} frames of {s}x{s} px panning across one picture, at {} fps; one core, best of 3\n\
         {:<12} {:>14} {:>12} {:>14}\n",
        f.frames,
        f.fps,
        "way",
        "frames/s",
        "bytes",
        "/ png stills",
        s = f.size
    );
    let base = f.ways.first().map_or(1.0, |w| w.frames_per_s.max(1e-9));
    for w in &f.ways {
        out.push_str(&format!(
            "{:<12} {:>14.1} {:>12} {:>13.2}×\n",
            w.name,
            w.frames_per_s,
            w.bytes,
            w.frames_per_s / base
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_writes_the_clip_and_is_timed() {
        let f = run(&VideoBench {
            frames: 3,
            size: 32,
            fps: 8.0,
        })
        .unwrap();
        let names: Vec<&str> = f.ways.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["png stills", "mp4", "apng", "gif", "apng→gif"]);
        assert!(f
            .ways
            .iter()
            .all(|w| w.bytes > 100 && w.frames_per_s.is_finite() && w.frames_per_s > 0.0));
        assert!(render(&f).contains("gif"));
        // The clip moves: no two frames are the same picture.
        let c = clip(3, 32);
        assert!(c[0] != c[1] && c[1] != c[2]);
        assert!(run(&VideoBench {
            frames: 2,
            size: 32,
            fps: 0.0
        })
        .is_err());
    }
}
