//! How a run keeps a video (issue 37), and the lossless way: its frames
//! as one animated PNG (APNG) at the frame rate the call states. An MP4
//! ([`super::mp4`]) is the default; the animated PNG is kept on request
//! (`DIFFLOG_VIDEO=apng`: every frame exact) and where H.264 cannot hold
//! the video. Every browser plays an APNG where it shows a PNG, so a run's
//! report plays it with nothing more; a viewer that knows only PNG shows
//! its first frame, which is also the poster. The `png` crate (already the
//! recorder's PNG writer, pure Rust) writes it. W&B is sent a GIF made from
//! it at upload time (`sync::clip`).

use super::media::{Pixels, PngEncoding};
use crate::error::{Error, Result};

/// The most frames a second a video may state (the format's own bound,
/// [`crate::event::Video::MAX_FPS`]).
pub const MAX_FPS: f64 = crate::event::Video::MAX_FPS;

/// A frame rate as a fraction of whole numbers (frames per `den` seconds):
/// exact for 24 or 30000/1001, as a pipeline states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRate {
    /// Frames…
    pub num: u32,
    /// …per this many seconds.
    pub den: u32,
}

impl FrameRate {
    /// `fps` frames a second, to a thousandth of a frame: why not, when it
    /// is not a number, not above zero or above [`MAX_FPS`].
    pub fn from_fps(fps: f64) -> std::result::Result<FrameRate, String> {
        crate::event::Video::check_fps(fps)?;
        let thousandths = (fps * 1000.0).round() as u32;
        if thousandths == 0 {
            return Err(format!("a frame rate of {fps} rounds to none"));
        }
        let g = gcd(thousandths, 1000);
        Ok(FrameRate {
            num: thousandths / g,
            den: 1000 / g,
        })
    }

    /// Why this rate is none a video can have: no frames, or none of
    /// seconds, or more than [`MAX_FPS`].
    pub(crate) fn check(&self) -> Result<()> {
        if self.num == 0 || self.den == 0 || self.fps() > MAX_FPS {
            return Err(video_error(format!(
                "a frame rate of {}/{} is not one a video can have",
                self.num, self.den
            )));
        }
        Ok(())
    }

    /// Frames a second.
    pub fn fps(&self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }

    /// How long one frame shows, as APNG's delay: numerator and
    /// denominator of seconds, each at most 65535 (the nearest such
    /// fraction when the exact one is larger).
    fn delay(&self) -> (u16, u16) {
        let (mut n, mut d) = (self.den, self.num);
        let g = gcd(n, d);
        (n, d) = (n / g, d / g);
        while n > u32::from(u16::MAX) || d > u32::from(u16::MAX) {
            (n, d) = (n.div_ceil(2), d.div_ceil(2));
        }
        (n.max(1) as u16, d.max(1) as u16)
    }
}

/// The file a run keeps of each video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoFormat {
    /// H.264 in MP4 ([`super::mp4`]): ~1 % of the animated PNG's bytes,
    /// what W&B's autolog sends; an animated PNG where H.264 cannot hold
    /// the video (odd sides, larger than 3840×2160). The default.
    #[default]
    Mp4,
    /// One animated PNG, every frame exact (`DIFFLOG_VIDEO=apng`).
    Apng,
}

impl VideoFormat {
    /// Reads `DIFFLOG_VIDEO` (`mp4` or unset, or `apng`).
    pub fn from_env() -> Result<VideoFormat> {
        crate::error::env_choice(
            "DIFFLOG_VIDEO",
            VideoFormat::default(),
            &[("mp4", VideoFormat::Mp4), ("apng", VideoFormat::Apng)],
        )
    }
}

/// A video that cannot be written, and why.
pub(crate) fn video_error(why: String) -> Error {
    Error::Media {
        key: "video".into(),
        why,
    }
}

/// The greatest common divisor of `a` and `b` (`a` when `b` is 0).
fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// The frames, in order, as one animated PNG that plays at `rate` and
/// loops: every frame must be as large as the first, and there must be one.
/// Each frame's image data is compressed as `encoding` compresses a still
/// (the recorder's compact encoder by default, [`super::idat`]).
pub fn encode_apng(
    frames: &[&dyn Pixels],
    rate: FrameRate,
    encoding: PngEncoding,
    text: &[crate::recipe::TextChunk],
) -> Result<Vec<u8>> {
    rate.check()?;
    let (width, height) = same_size(frames)?;
    let count = u32::try_from(frames.len()).map_err(|_| video_error("too many frames".into()))?;
    let png = |e: png::EncodingError| video_error(format!("APNG encoding failed: {e}"));
    let (num, den) = rate.delay();
    let mut out = Vec::with_capacity(frames.len() * (width as usize * height as usize) + 1024);
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    // Text before the image data, as a still's (the XMP packet saying a
    // trained model made it).
    super::media::add_text(&mut enc, text).map_err(png)?;
    if encoding == PngEncoding::Fast {
        enc.set_compression(png::Compression::Fast);
        enc.set_filter(png::Filter::Adaptive);
        // Loops for ever (0 plays: no end), as players loop a short clip.
        enc.set_animated(count, 0).map_err(png)?;
        enc.set_frame_delay(num, den).map_err(png)?;
        let mut w = enc.write_header().map_err(png)?;
        for f in frames {
            w.write_image_data(f.rgb()).map_err(png)?;
        }
        w.finish().map_err(png)?;
        return Ok(out);
    }
    // The chunks written here, each frame's data the compact encoder's: the
    // animation's control (frames, 0 plays: for ever), then each frame's
    // control (its sequence number, size, place, delay; nothing disposed,
    // nothing blended) and data — the first frame's as the still image's
    // IDAT, the others' as fdAT, each with the next sequence number.
    let mut w = enc.write_header().map_err(png)?;
    let mut animation = count.to_be_bytes().to_vec();
    animation.extend_from_slice(&0u32.to_be_bytes());
    w.write_chunk(png::chunk::acTL, &animation).map_err(png)?;
    let mut sequence = 0u32;
    for (i, f) in frames.iter().enumerate() {
        let mut control = Vec::with_capacity(26);
        for n in [sequence, width, height, 0, 0] {
            control.extend_from_slice(&n.to_be_bytes());
        }
        control.extend_from_slice(&num.to_be_bytes());
        control.extend_from_slice(&den.to_be_bytes());
        control.extend_from_slice(&[0, 0]);
        w.write_chunk(png::chunk::fcTL, &control).map_err(png)?;
        sequence += 1;
        let data = super::idat::image_data(f.rgb(), width as usize, height as usize, 3);
        // Chunks of at most 1 MiB (a chunk's length must stay below 2³¹).
        for part in data.chunks(1 << 20) {
            if i == 0 {
                w.write_chunk(png::chunk::IDAT, part).map_err(png)?;
            } else {
                let mut chunk = Vec::with_capacity(part.len() + 4);
                chunk.extend_from_slice(&sequence.to_be_bytes());
                chunk.extend_from_slice(part);
                w.write_chunk(png::chunk::fdAT, &chunk).map_err(png)?;
                sequence += 1;
            }
        }
    }
    w.finish().map_err(png)?;
    Ok(out)
}

/// The frames' common size: that of the first, which every other has
/// (with as many bytes); refused by name where there are none, or one
/// differs.
pub(crate) fn same_size(frames: &[&dyn Pixels]) -> Result<(u32, u32)> {
    let first = frames
        .first()
        .ok_or_else(|| video_error("a video needs at least one frame".into()))?;
    let (width, height) = first.dimensions();
    let expected = width as usize * height as usize * 3;
    for (i, f) in frames.iter().enumerate() {
        if f.dimensions() != (width, height) || f.rgb().len() != expected {
            let (w, h) = f.dimensions();
            return Err(video_error(format!(
                "frame {i} is {w}x{h} ({} bytes), not {width}x{height} RGB like the first",
                f.rgb().len()
            )));
        }
    }
    Ok((width, height))
}

/// `n` frames of `w`×`h` pixels of noise (xorshift), which no encoder can
/// compress: the tests' worst case.
#[cfg(test)]
pub(crate) fn noise_clip(n: usize, w: u32, h: u32) -> Vec<image::RgbImage> {
    let mut state = 0x2545_f491_u32;
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as u8
    };
    (0..n)
        .map(|_| image::RgbImage::from_fn(w, h, |_, _| image::Rgb([noise(), noise(), noise()])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn frame(i: u32) -> RgbImage {
        RgbImage::from_fn(24, 16, |x, y| {
            image::Rgb([(x * 10 + i) as u8, (y * 15) as u8, (i * 40) as u8])
        })
    }

    /// Each frame's pixels and delay (numerator, denominator) as the `png`
    /// crate's decoder reads them, and the plays.
    fn decode(apng: &[u8]) -> (Vec<Vec<u8>>, Vec<(u16, u16)>, u32) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(apng))
            .read_info()
            .unwrap();
        let control = reader.info().animation_control.unwrap();
        let mut frames = Vec::new();
        let mut delays = Vec::new();
        for _ in 0..control.num_frames {
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            let info = reader.next_frame(&mut buf).unwrap();
            buf.truncate(info.buffer_size());
            let fc = reader.info().frame_control.unwrap();
            frames.push(buf);
            delays.push((fc.delay_num, fc.delay_den));
        }
        (frames, delays, control.num_plays)
    }

    #[test]
    fn frames_come_back_exact_at_their_rate_and_loop() {
        let frames: Vec<RgbImage> = (0..5).map(frame).collect();
        let refs: Vec<&dyn Pixels> = frames.iter().map(|f| f as &dyn Pixels).collect();
        for encoding in [PngEncoding::Compact, PngEncoding::Fast] {
            let apng =
                encode_apng(&refs, FrameRate::from_fps(16.0).unwrap(), encoding, &[]).unwrap();
            let (got, delays, plays) = decode(&apng);
            assert_eq!(got.len(), 5);
            for (g, f) in got.iter().zip(&frames) {
                assert_eq!(g, f.as_raw());
            }
            assert!(delays.iter().all(|&d| d == (1, 16)), "{delays:?}");
            assert_eq!(plays, 0);
            // A reader that knows only PNG sees the first frame.
            let still = image::load_from_memory(&apng).unwrap().to_rgb8();
            assert_eq!(still, frames[0]);
        }
    }

    #[test]
    fn frames_whose_data_spans_several_chunks_come_back_exact() {
        // Noise does not compress: each frame's data is over 1 MiB, so
        // it is written in two chunks (the second frame's in two fdAT
        // chunks, each with its own sequence number).
        let frames = noise_clip(2, 640, 600);
        let refs: Vec<&dyn Pixels> = frames.iter().map(|f| f as &dyn Pixels).collect();
        let apng = encode_apng(
            &refs,
            FrameRate::from_fps(2.0).unwrap(),
            PngEncoding::Compact,
            &[],
        )
        .unwrap();
        assert!(apng.len() > 2 << 20);
        let (got, delays, _) = decode(&apng);
        assert_eq!(
            got,
            [frames[0].as_raw().clone(), frames[1].as_raw().clone()]
        );
        assert_eq!(delays, [(1, 2), (1, 2)]);
    }

    #[test]
    fn rates_are_kept_as_fractions() {
        let r = FrameRate::from_fps(23.976).unwrap();
        assert_eq!((r.num, r.den), (2997, 125));
        assert_eq!(r.delay(), (125, 2997));
        assert_eq!(FrameRate::from_fps(7.0).unwrap().delay(), (1, 7));
        assert_eq!(FrameRate::from_fps(0.5).unwrap().delay(), (2, 1));
        // A fraction too large for 16 bits is brought within them.
        let odd = FrameRate {
            num: 100_003,
            den: 99_991,
        };
        let (n, d) = odd.delay();
        assert!((f64::from(n) / f64::from(d) - 99_991.0 / 100_003.0).abs() < 1e-3);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1000.5, 0.0001] {
            assert!(FrameRate::from_fps(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_frames_frames_of_another_size_or_impossible_rates_are_refused_by_name() {
        let rate = FrameRate::from_fps(8.0).unwrap();
        let apng = |f: &[&dyn Pixels], r| encode_apng(f, r, PngEncoding::default(), &[]);
        {
            let encode = apng;
            let e = encode(&[], rate).unwrap_err().to_string();
            assert!(e.contains("at least one frame"), "{e}");
            let (a, b) = (frame(0), RgbImage::new(8, 8));
            let e = encode(&[&a, &b], rate).unwrap_err().to_string();
            assert!(e.contains("frame 1 is 8x8"), "{e}");
            for (num, den) in [(0, 1), (1, 0), (1_000_001, 1000)] {
                let e = encode(&[&a], FrameRate { num, den })
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("not one a video can have"), "{e}");
            }
        }
    }
}
