//! A recorded video as W&B plays one: a GIF (issue 37). A run keeps each
//! video as one lossless animated PNG; W&B's `video-file` takes GIF, MP4,
//! WebM or Ogg, and of those only GIF has a pure-Rust encoder (the `gif`
//! crate, which quantises each frame to 256 colours). The GIF is derived
//! at upload time, frame by frame from the APNG (one frame in memory at a
//! time), at the rate the run recorded — never autolog's fixed 4 fps.

/// A video's frames as one GIF.
#[derive(Debug)]
pub struct Gif {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// How many frames it plays.
    pub frames: u32,
}

/// How hard the GIF quantiser works on a frame: 1 (best colours, slowest)
/// to 30; 10 is the `gif` crate's suggested balance.
const GIF_SPEED: i32 = 10;

/// A GIF being written, a frame at a time.
struct GifWriter {
    enc: gif::Encoder<Vec<u8>>,
    width: u16,
    height: u16,
    fps: f64,
    written: u64,
}

impl GifWriter {
    /// A GIF of `width`×`height` frames that loops, playing at `fps`.
    /// Refused: a rate no video has, or a side over GIF's 65535 pixels.
    fn new(width: u32, height: u32, fps: f64) -> Result<GifWriter, String> {
        crate::event::Video::check_fps(fps)?;
        let (w, h) = match (u16::try_from(width), u16::try_from(height)) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
            _ => {
                return Err(format!(
                    "a GIF is 1 to 65535 pixels a side, not {width}x{height}"
                ))
            }
        };
        let gif = |e: gif::EncodingError| format!("GIF encoding failed: {e}");
        let mut enc = gif::Encoder::new(Vec::new(), w, h, &[]).map_err(gif)?;
        enc.set_repeat(gif::Repeat::Infinite).map_err(gif)?;
        Ok(GifWriter {
            enc,
            width: w,
            height: h,
            fps,
            written: 0,
        })
    }

    /// Where frame `i` ends, in GIF's hundredths of a second (rounded).
    fn end(&self, i: u64) -> u64 {
        (i as f64 * 100.0 / self.fps).round() as u64
    }

    /// Adds the next frame (RGB rows of the GIF's size). GIF counts delays
    /// in hundredths of a second, so each frame's is where its end falls
    /// at the rate, rounded, less where the one before ended: 16 frames a
    /// second alternate 6 and 7 hundredths and keep the pace.
    fn push(&mut self, rgb: &[u8]) -> Result<(), String> {
        let expected = usize::from(self.width) * usize::from(self.height) * 3;
        if rgb.len() != expected {
            return Err(format!(
                "frame {} has {} bytes, not {}x{} RGB",
                self.written,
                rgb.len(),
                self.width,
                self.height
            ));
        }
        let mut frame = gif::Frame::from_rgb_speed(self.width, self.height, rgb, GIF_SPEED);
        let i = self.written;
        frame.delay = u16::try_from(self.end(i + 1) - self.end(i)).unwrap_or(u16::MAX);
        self.enc
            .write_frame(&frame)
            .map_err(|e| format!("GIF encoding failed: {e}"))?;
        self.written += 1;
        Ok(())
    }

    /// The finished file.
    fn finish(self) -> Result<Vec<u8>, String> {
        if self.written == 0 {
            return Err("a video needs at least one frame".into());
        }
        self.enc
            .into_inner()
            .map_err(|e| format!("GIF encoding failed: {e}"))
    }
}

/// The frames (RGB rows, each `width`×`height`), in order, as one GIF that
/// loops at `fps`, each quantised to its own 256 colours. Why not: no
/// frames, a frame of another size, a rate no video has, or a side over
/// GIF's 65535 pixels.
pub fn encode_gif(frames: &[&[u8]], width: u32, height: u32, fps: f64) -> Result<Vec<u8>, String> {
    let mut w = GifWriter::new(width, height, fps)?;
    for f in frames {
        w.push(f)?;
    }
    w.finish()
}

/// The video a run recorded as an animated PNG (`apng`, read from the run:
/// untrusted) as a GIF playing at `fps`, decoded and encoded a frame at a
/// time. Why not, naming the frame: see [`crate::read::each_apng_frame`]
/// and [`encode_gif`].
pub fn gif_of_apng(apng: &[u8], fps: f64) -> Result<Gif, String> {
    let mut writer: Option<GifWriter> = None;
    let (width, height, frames) = crate::read::each_apng_frame(apng, |i, (w, h), rgb| {
        let out = match &mut writer {
            Some(out) => out,
            None => writer.insert(GifWriter::new(w, h, fps)?),
        };
        out.push(rgb).map_err(|e| format!("frame {i}: {e}"))
    })?;
    let bytes = writer
        .ok_or_else(|| "a video needs at least one frame".to_string())?
        .finish()?;
    Ok(Gif {
        bytes,
        width,
        height,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame `i` of a 20×12 clip of under 256 colours (so a GIF keeps each
    /// exactly).
    fn frame(i: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for y in 0..12u32 {
            for x in 0..20u32 {
                out.extend_from_slice(&[(x / 4 * 50) as u8, (y / 4 * 80) as u8, (i * 30) as u8]);
            }
        }
        out
    }

    /// An animated PNG of `frames` (each `w`×`h` RGB) at 1/`fps` a frame,
    /// as the `png` crate writes one; `part`: frame 1 paints only its
    /// top-left quarter.
    fn apng(frames: &[Vec<u8>], w: u32, h: u32, fps: u16, part: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_animated(frames.len() as u32, 0).unwrap();
        enc.set_frame_delay(1, fps).unwrap();
        let mut wr = enc.write_header().unwrap();
        for (i, f) in frames.iter().enumerate() {
            if part && i == 1 {
                wr.set_frame_dimension(w / 2, h / 2).unwrap();
                let rows: Vec<u8> = f
                    .chunks_exact(w as usize * 3)
                    .take(h as usize / 2)
                    .flat_map(|r| r[..w as usize / 2 * 3].to_vec())
                    .collect();
                wr.write_image_data(&rows).unwrap();
                wr.reset_frame_dimension().unwrap();
            } else {
                wr.write_image_data(f).unwrap();
            }
        }
        wr.finish().unwrap();
        out
    }

    /// Each frame of a GIF as RGB, its delay (hundredths), and whether it
    /// loops for ever, as the `gif` crate's decoder reads them.
    fn decode_gif(bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<u16>, bool) {
        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::RGBA);
        let mut d = options.read_info(std::io::Cursor::new(bytes)).unwrap();
        let (mut frames, mut delays) = (Vec::new(), Vec::new());
        while let Some(f) = d.read_next_frame().unwrap() {
            let rgb = f
                .buffer
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            frames.push(rgb);
            delays.push(f.delay);
        }
        (frames, delays, d.repeat() == gif::Repeat::Infinite)
    }

    #[test]
    fn a_gif_keeps_frames_of_few_colours_exactly_and_the_pace_of_its_rate() {
        let frames: Vec<Vec<u8>> = (0..8).map(frame).collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let (got, delays, loops) = decode_gif(&encode_gif(&refs, 20, 12, 16.0).unwrap());
        assert_eq!(got, frames);
        assert!(loops);
        // 6.25 hundredths a frame: 6, 7, 6, 6 and again, 50 in all.
        assert_eq!(delays, [6, 7, 6, 6, 6, 7, 6, 6]);
        // W&B's autolog rate, and a slow one, are whole hundredths.
        let (_, delays, _) = decode_gif(&encode_gif(&refs[..2], 20, 12, 4.0).unwrap());
        assert_eq!(delays, [25, 25]);
        let (_, delays, _) = decode_gif(&encode_gif(&refs[..1], 20, 12, 0.5).unwrap());
        assert_eq!(delays, [200]);
    }

    #[test]
    fn no_frames_frames_of_another_size_or_impossible_rates_are_refused_by_name() {
        let f = frame(0);
        let e = encode_gif(&[], 20, 12, 8.0).unwrap_err();
        assert!(e.contains("at least one frame"), "{e}");
        let e = encode_gif(&[&f, &f[..30]], 20, 12, 8.0).unwrap_err();
        assert!(e.contains("frame 1 has 30 bytes"), "{e}");
        for fps in [0.0, -1.0, f64::NAN, f64::INFINITY, 1000.5] {
            let e = encode_gif(&[&f], 20, 12, fps).unwrap_err();
            assert!(e.contains("not one a video can have"), "{fps}: {e}");
        }
        let e = encode_gif(&[&f], 70_000, 1, 8.0).unwrap_err();
        assert!(e.contains("65535"), "{e}");
    }

    #[test]
    fn a_recorded_animated_png_becomes_a_gif_of_its_frames_at_the_recorded_rate() {
        let frames: Vec<Vec<u8>> = (0..5).map(frame).collect();
        let gif = gif_of_apng(&apng(&frames, 20, 12, 8, false), 8.0).unwrap();
        assert_eq!((gif.width, gif.height, gif.frames), (20, 12, 5));
        let (got, delays, loops) = decode_gif(&gif.bytes);
        assert_eq!(got, frames);
        assert_eq!(delays, [13, 12, 13, 12, 13]);
        assert!(loops);
        // The same file makes the same GIF (its digest is in history lines
        // sent in one pass and checked in another).
        assert_eq!(
            gif_of_apng(&apng(&frames, 20, 12, 8, false), 8.0)
                .unwrap()
                .bytes,
            gif.bytes
        );
        // A still PNG is a video of one frame.
        let still = apng(&frames[..1], 20, 12, 8, false);
        assert_eq!(gif_of_apng(&still, 8.0).unwrap().frames, 1);
    }

    #[test]
    fn an_animated_png_difflog_could_not_have_written_is_refused_by_frame() {
        let frames: Vec<Vec<u8>> = (0..3).map(frame).collect();
        let e = gif_of_apng(&apng(&frames, 20, 12, 8, true), 8.0).unwrap_err();
        assert!(e.contains("frame 1 paints 10x6 at (0, 0)"), "{e}");
        let good = apng(&frames, 20, 12, 8, false);
        // Cut short: the frame whose data is missing is named.
        let e = gif_of_apng(&good[..good.len() / 2], 8.0).unwrap_err();
        assert!(e.contains("cannot be decoded"), "{e}");
        let e = gif_of_apng(b"GIF89a not a png", 8.0).unwrap_err();
        assert!(e.contains("PNG header"), "{e}");
        // A count no video has is refused before any frame is read.
        let mut lying = good.clone();
        let at = lying.windows(4).position(|w| w == b"acTL").unwrap() + 4;
        lying[at..at + 4].copy_from_slice(&200_000u32.to_be_bytes());
        let crc = crc32fast::hash(&lying[at - 4..at + 8]).to_be_bytes();
        lying[at + 8..at + 12].copy_from_slice(&crc);
        let e = gif_of_apng(&lying, 8.0).unwrap_err();
        assert!(e.contains("200000 frames"), "{e}");
        let e = gif_of_apng(&good, f64::NAN).unwrap_err();
        assert!(e.contains("not one a video can have"), "{e}");
    }
}
